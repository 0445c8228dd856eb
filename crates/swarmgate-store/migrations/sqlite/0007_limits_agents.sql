-- Limit sets (issue 5): a user's and an API key's, as JSON; absent = none.
ALTER TABLE users ADD COLUMN limits TEXT;
ALTER TABLE api_keys ADD COLUMN limits TEXT;

-- Short-lived agent identities spawned by a user, each with a slice of
-- its parent's budget. released_at is set on release (explicit or idle);
-- the shared state holds what is live, this table what happened.
CREATE TABLE agent_sessions (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    key_id TEXT,
    name TEXT NOT NULL,
    model TEXT,
    budget TEXT NOT NULL,
    permissions TEXT NOT NULL,
    carved TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    released_at BIGINT,
    release_reason TEXT,
    tokens_used BIGINT
);
CREATE INDEX agent_sessions_parent ON agent_sessions (parent_id, created_at);
CREATE INDEX agent_sessions_live ON agent_sessions (released_at, expires_at);
