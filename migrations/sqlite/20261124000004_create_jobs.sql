-- The durable job queue. A job is claimed by one worker at a time under a lease that the
-- worker renews by heartbeat; a job whose lease expires is rescued (queued again, or failed
-- once its attempts are spent). Every completion names the attempt it finishes, so a worker
-- that lost its lease cannot overwrite the outcome of a later attempt.
-- Times are Unix milliseconds (BIGINT), taken from the daemon's clock, never the database's.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY NOT NULL,
    -- What to run, e.g. rollout.tenant_step; selects the handler.
    kind              TEXT NOT NULL,
    queue             TEXT NOT NULL DEFAULT 'default',
    -- JSON arguments of the handler.
    payload           TEXT NOT NULL,
    state             TEXT NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- Not claimed before this time.
    run_at            BIGINT NOT NULL,
    -- Attempts started so far; the current attempt's number while running.
    attempt           INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_expires_at  BIGINT,
    claimed_by        TEXT,
    last_error        TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    finished_at       BIGINT,
    tenant_id         TEXT,
    -- Enqueueing a job whose key is already queued or running returns that job instead.
    unique_key        TEXT
);
-- The claim (state = 'queued' AND run_at <= now ORDER BY run_at, id) and the lease reaper
-- (state = 'running'). SQLite's planner ignores a Postgres-style partial index here and scans
-- the table in rowid order, so the state is the index's first column instead; the conformance
-- suite asserts the claim's plan.
CREATE INDEX jobs_state_run_at_idx ON jobs (state, run_at, id);
CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (unique_key)
    WHERE state IN ('queued', 'running');
CREATE INDEX jobs_tenant_idx ON jobs (tenant_id) WHERE tenant_id IS NOT NULL;
