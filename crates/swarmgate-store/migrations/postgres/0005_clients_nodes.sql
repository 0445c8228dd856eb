-- OAuth2 clients (issue 6). Deleting one sets deleted_at, so instances can
-- learn of it from updated_at and its tokens stop at once.
CREATE TABLE oauth_clients (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    scopes TEXT NOT NULL,
    auth_method TEXT NOT NULL,
    secret_hash TEXT,
    jwks TEXT,
    jwks_uri TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX oauth_clients_updated_at ON oauth_clients (updated_at);

-- Access tokens revoked one by one (RFC 7009), by jti, kept until expiry.
CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_revoked_at ON revoked_tokens (revoked_at);

-- Worker nodes of the swarm and the metrics they last reported.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    address TEXT,
    labels TEXT NOT NULL,
    registered_at BIGINT,
    last_seen_at BIGINT NOT NULL,
    last_report_at BIGINT,
    metrics TEXT
);
