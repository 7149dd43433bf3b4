-- API keys. Only the SHA-256 of a key is stored; the key itself is shown once at creation.
-- Times are Unix milliseconds (BIGINT) in both dialects so the store code is shared.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    -- JSON array of tenant ids the key is restricted to; NULL means every tenant.
    tenant_ids    TEXT,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
