-- Tokens of every LLM call, per caller (user, API key) and model.
CREATE TABLE usage_events (
    at BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    key_id TEXT,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    estimated BIGINT NOT NULL DEFAULT 0,
    streamed BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX usage_events_user_at ON usage_events (user_id, at);
CREATE INDEX usage_events_at ON usage_events (at);
