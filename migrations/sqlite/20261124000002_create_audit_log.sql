-- Every write made through the API (and by the CLI), with the key that made it.
CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    tenant_id    TEXT,
    status       INTEGER NOT NULL,
    request_id   TEXT,
    details      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at_idx ON audit_log (at, seq);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, seq);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, seq);
