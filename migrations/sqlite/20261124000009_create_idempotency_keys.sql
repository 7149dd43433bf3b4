-- The first answer to each POST sent with an Idempotency-Key, so that a client retrying the
-- request (after a timeout, say) gets that answer again instead of a second effect. Keys are
-- per API key; a record expires after 24 hours. While the first request runs, the row is
-- 'in_flight' and a concurrent retry is refused rather than run twice.
CREATE TABLE idempotency_keys (
    api_key_id    TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    -- What the key was first used for: method, path with query, SHA-256 of the body (hex).
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    status        INTEGER,
    content_type  TEXT,
    location      TEXT,
    body          TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (api_key_id, idem_key)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
