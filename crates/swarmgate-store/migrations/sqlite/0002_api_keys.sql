-- API keys (only a SHA-256 hash of the secret is kept; look-up is by the
-- unique index on key_hash), and a feed of administrative changes to users
-- that every instance polls to drop what it has cached about them.

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    permissions TEXT NOT NULL,
    models TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_user ON api_keys (user_id);
CREATE INDEX api_keys_revoked ON api_keys (revoked_at);

CREATE TABLE user_events (
    user_id TEXT NOT NULL,
    change TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX user_events_at ON user_events (at);

CREATE INDEX audit_events_event ON audit_events (event, id);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
CREATE INDEX users_updated ON users (updated_at);
