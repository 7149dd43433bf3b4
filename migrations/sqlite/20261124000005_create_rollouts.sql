-- Rollouts: one desired SSPR state (the spec, immutable once created) applied to a set of
-- tenants in waves, the pilot wave first. Each tenant of a rollout moves through its own
-- state machine; every transition is appended to rollout_events. Before a step changes a
-- tenant setting, its previous value is kept in rollout_snapshots so the rollout can be rolled
-- back; what sspr-fleet cannot do itself becomes a rollout_tasks row for an operator to attest.
-- Times are Unix milliseconds (BIGINT), taken from the daemon's clock.
CREATE TABLE rollouts (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    -- JSON desired state; never updated.
    spec             TEXT NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state IN ('running', 'paused', 'completed', 'cancelled',
                                      'rolling_back', 'rolled_back')),
    state_reason     TEXT,
    -- The wave being worked on, from 0 (the pilot wave).
    current_wave     INTEGER NOT NULL DEFAULT 0,
    wave_count       INTEGER NOT NULL,
    created_by       TEXT NOT NULL,
    -- Creating a rollout again with the same key returns the first one.
    idempotency_key  TEXT UNIQUE,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    -- When the rollout reached completed, cancelled or rolled_back.
    finished_at      BIGINT
);

CREATE TABLE rollout_tenants (
    rollout_id       TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    tenant_id        TEXT NOT NULL,
    wave             INTEGER NOT NULL,
    -- Order within the wave.
    position         INTEGER NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state IN ('pending', 'preflight', 'blocked', 'ready',
                                      'pilot_applying', 'pilot_verifying', 'gate',
                                      'all_applying', 'all_verifying', 'completed', 'failed',
                                      'paused', 'cancelled', 'rolled_back')),
    -- While paused, the state to resume to.
    paused_from      TEXT,
    reason           TEXT,
    last_error       TEXT,
    -- The group the SSPR scope was set to, once created or chosen.
    scope_group_id   TEXT,
    gate_entered_at  BIGINT,
    approved_at      BIGINT,
    approved_by      TEXT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, tenant_id)
);
CREATE INDEX rollout_tenants_wave_state_idx ON rollout_tenants (rollout_id, wave, state);
CREATE INDEX rollout_tenants_tenant_idx ON rollout_tenants (tenant_id);

-- The append-only history of a rollout; events with no tenant are rollout-wide.
CREATE TABLE rollout_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id  TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    tenant_id   TEXT,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT,
    -- JSON.
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX rollout_events_rollout_idx ON rollout_events (rollout_id, seq);

-- A tenant setting as it was before a rollout step changed it.
CREATE TABLE rollout_snapshots (
    id           TEXT PRIMARY KEY NOT NULL,
    rollout_id   TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    tenant_id    TEXT NOT NULL,
    step         TEXT NOT NULL,
    -- What was captured: method:sms, campaign, group:<id>:members, group:<id>:created, ...
    target       TEXT NOT NULL,
    -- JSON.
    before       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    restored_at  BIGINT
);
CREATE INDEX rollout_snapshots_tenant_idx ON rollout_snapshots (rollout_id, tenant_id, created_at);

-- Manual work a rollout needs from an operator (e.g. a consent only a human can give), at most
-- one of each kind per tenant of a rollout.
CREATE TABLE rollout_tasks (
    id            TEXT PRIMARY KEY NOT NULL,
    rollout_id    TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    tenant_id     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    -- JSON.
    instructions  TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'open'
                  CHECK (state IN ('open', 'attested', 'cancelled')),
    attested_by   TEXT,
    attested_at   BIGINT,
    note          TEXT,
    created_at    BIGINT NOT NULL,
    UNIQUE (rollout_id, tenant_id, kind)
);
CREATE INDEX rollout_tasks_state_idx ON rollout_tasks (state, created_at);
