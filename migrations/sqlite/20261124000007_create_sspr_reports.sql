-- The SSPR readiness report of each tenant: counters read from Graph's userRegistrationDetails
-- (never per-user rows). One row per tenant, replaced at each refresh.
--
-- Two halves with their own times:
--   * the last attempt: status ('ok', 'unavailable' = the tenant has no Entra ID P1/P2 so
--     Graph refuses the report, 'error' = any other failure), reason (a stable code, NULL when
--     ok), started_at, attempted_at (when it ended), pages read and duration_ms;
--   * the last good figures: figures (JSON text) and read_at (when they were read from Graph).
--     Only an 'ok' attempt writes them; a failed attempt keeps the previous ones, so a
--     transient failure never wipes a tenant's report.
-- Times are Unix milliseconds (BIGINT). Offboarded tenants keep their row as history.
CREATE TABLE sspr_reports (
    tenant_id     TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    status        TEXT NOT NULL CHECK (status IN ('ok', 'unavailable', 'error')),
    reason        TEXT,
    figures       TEXT,
    read_at       BIGINT,
    started_at    BIGINT NOT NULL,
    attempted_at  BIGINT NOT NULL,
    pages         BIGINT NOT NULL,
    duration_ms   BIGINT NOT NULL,
    -- Figures and their read time come and go together.
    CHECK ((figures IS NULL) = (read_at IS NULL))
);
-- The refresh scheduler: reports whose last attempt is oldest.
CREATE INDEX sspr_reports_attempted_at_idx ON sspr_reports (attempted_at, tenant_id);
