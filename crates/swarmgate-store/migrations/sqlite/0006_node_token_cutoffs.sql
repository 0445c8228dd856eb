-- An operator's "stop every token of this node": tokens of the node issued
-- at or before revoked_at are refused (issue 6, node tokens).
CREATE TABLE node_token_cutoffs (
    node_id TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX node_token_cutoffs_revoked_at ON node_token_cutoffs (revoked_at);
