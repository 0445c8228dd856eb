-- Password changes within one second must still be ordered: a per-user
-- sequence number, since creation times are whole seconds.
ALTER TABLE password_history ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
