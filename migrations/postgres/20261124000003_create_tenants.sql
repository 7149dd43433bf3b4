-- Customer tenants registered in sspr-fleet, their tags and their credential.
-- Times are Unix milliseconds (BIGINT) in both dialects so the store code is shared.
-- An offboarded tenant keeps its row, tags and last readiness report as history; only its
-- credential is deleted. "Active" means offboarded_at IS NULL.
-- Ids use the "C" collation so that they sort bytewise, as on SQLite: lists page by id, and
-- UUIDv7 ids then sort in creation order whatever the database's locale.
CREATE TABLE tenants (
    id               TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    -- As registered: the Entra tenant id (GUID) or a verified domain, lowercase.
    entra_ref        TEXT NOT NULL,
    -- The Entra tenant id once known (at registration when entra_ref is a GUID).
    entra_tenant_id  TEXT,
    display_name     TEXT NOT NULL,
    -- JSON object of string to string (PSA/RMM ids and the like).
    external_refs    TEXT NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL DEFAULT 'unverified'
                     CHECK (status IN ('unverified', 'ready', 'not_ready', 'unreachable', 'offboarded')),
    status_reason    TEXT,
    licence          TEXT NOT NULL DEFAULT 'unknown'
                     CHECK (licence IN ('unknown', 'none', 'cloud_only', 'p1', 'p2')),
    default_domain   TEXT,
    -- JSON readiness report of the last verification.
    readiness        TEXT,
    verified_at      BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    offboarded_at    BIGINT,
    -- The status says offboarded exactly when the tenant is offboarded.
    CHECK ((status = 'offboarded') = (offboarded_at IS NOT NULL))
);
-- One active registration per Entra tenant, however it was registered.
CREATE UNIQUE INDEX tenants_active_entra_ref_idx ON tenants (entra_ref)
    WHERE offboarded_at IS NULL;
CREATE UNIQUE INDEX tenants_active_entra_tenant_id_idx ON tenants (entra_tenant_id)
    WHERE offboarded_at IS NULL AND entra_tenant_id IS NOT NULL;
-- The re-verification scan: active tenants, never verified first, then oldest verification.
CREATE INDEX tenants_verified_at_idx ON tenants (verified_at NULLS FIRST, id)
    WHERE offboarded_at IS NULL;

CREATE TABLE tenant_tags (
    tenant_id  TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, tag)
);
CREATE INDEX tenant_tags_tag_idx ON tenant_tags (tag, tenant_id);

-- The credential sspr-fleet uses to reach a tenant. `sealed` is vault ciphertext
-- (v1:<key id>:...), never the clear secret; `certificate_pem` is a public certificate.
CREATE TABLE tenant_credentials (
    id               TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant_id        TEXT COLLATE "C" NOT NULL UNIQUE REFERENCES tenants (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL
                     CHECK (kind IN ('client_secret', 'certificate', 'delegated_refresh_token')),
    client_id        TEXT NOT NULL,
    thumbprint_s256  TEXT,
    certificate_pem  TEXT,
    sealed           TEXT NOT NULL,
    -- The id of the master key that sealed it, to find what a key rotation must rewrap.
    key_id           TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);
