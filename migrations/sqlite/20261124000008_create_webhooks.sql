-- Webhook subscriptions: a URL that receives signed events (PSA tools, automation), and the
-- outbox of their deliveries. A delivery row and the job that sends it are inserted in the
-- same transaction as the rollout event they come from, so no event is lost or sent for a
-- change that was rolled back. Times are Unix milliseconds (BIGINT) from the daemon's clock.
CREATE TABLE webhook_subscriptions (
    id                      TEXT PRIMARY KEY NOT NULL,
    url                     TEXT NOT NULL,
    description             TEXT NOT NULL DEFAULT '',
    -- JSON array of event type names, never empty.
    event_types             TEXT NOT NULL,
    -- JSON array of tenant ids the subscription reaches (the creating key's restriction), or
    -- NULL for every tenant.
    tenant_scope            TEXT,
    -- Vault ciphertext (v1:<key id>:...) of the signing secret, bound to this row; never clear.
    secret_sealed           TEXT NOT NULL,
    secret_key_id           TEXT NOT NULL,
    -- After a rotation, the previous secret keeps signing (beside the new one) until
    -- previous_secret_until.
    previous_secret_sealed  TEXT,
    previous_secret_until   BIGINT,
    enabled                 BOOLEAN NOT NULL,
    created_by              TEXT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY NOT NULL,
    subscription_id  TEXT NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    -- The webhook-id header: the same for every attempt and every manual redelivery.
    message_id       TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    -- The tenant the event concerns, if any.
    tenant_id        TEXT,
    -- JSON body sent.
    payload          TEXT NOT NULL,
    -- Set for events sent at most once per subscription (a tenant's gate wait for approval).
    dedup_key        TEXT,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    last_attempt_at  BIGINT,
    delivered_at     BIGINT
);
CREATE INDEX webhook_deliveries_subscription_idx ON webhook_deliveries (subscription_id, id);
CREATE INDEX webhook_deliveries_state_idx ON webhook_deliveries (state, subscription_id);
CREATE UNIQUE INDEX webhook_deliveries_dedup_idx ON webhook_deliveries (subscription_id, dedup_key)
    WHERE dedup_key IS NOT NULL;

-- The delivery log: one row per HTTP attempt.
CREATE TABLE webhook_delivery_attempts (
    delivery_id  TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    at           BIGINT NOT NULL,
    -- The HTTP status answered, NULL when no answer came (timeout, refused connection).
    status       INTEGER,
    error        TEXT,
    duration_ms  BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
