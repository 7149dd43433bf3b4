-- The second, optional credential of a tenant: an administrator's delegated refresh token for
-- the Azure portal's undocumented SSPR policy API (the opt-in, unsupported `portal` scope
-- mode). It is kept apart from tenant_credentials, which hold the app-only credential every
-- Graph call uses, so that each table keeps one row per tenant. `sealed` is vault ciphertext
-- (v1:<key id>:...), bound to this row; the identity platform may answer a new refresh token
-- with each use, and the row is then re-sealed in place (fenced on the old ciphertext).
CREATE TABLE tenant_portal_credentials (
    id               TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant_id        TEXT COLLATE "C" NOT NULL UNIQUE REFERENCES tenants (id) ON DELETE CASCADE,
    -- The client id the refresh token was issued to, when the token endpoint needs it.
    client_id        TEXT,
    sealed           TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    -- When the sealed value last changed (a refresh token rotated by the identity platform).
    updated_at       BIGINT NOT NULL
);
