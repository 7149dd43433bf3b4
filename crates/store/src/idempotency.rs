//! Idempotency records: the first answer to each POST sent with an `Idempotency-Key`, per API
//! key, kept for a day. A record is claimed `in_flight` before the request runs, so a
//! concurrent retry is refused instead of run twice, and completed with the answer.
//!
//! An answer that carried a secret is recorded without it: the API layer replaces the secret's
//! fields by `null` before it calls [`Store::complete_idempotency_key`] and names them in
//! [`StoredAnswer::withheld`].

use chrono::{DateTime, Utc};

use crate::{
    Store, StoreError,
    pool::{with_reader, with_writer},
    time::{from_ms, to_ms},
};

/// What a request with an idempotency key is, to tell a retry from another request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRequest {
    /// The API key's id (keys are per API key).
    pub api_key_id: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// The method.
    pub method: String,
    /// The path with its query string.
    pub path: String,
    /// SHA-256 of the body, hex.
    pub request_hash: String,
}

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Location`.
    pub location: Option<String>,
    /// The body (UTF-8).
    pub body: String,
    /// Top-level JSON fields of the body that carried a secret and are stored as `null`,
    /// comma-separated; `None` when nothing was withheld.
    pub withheld: Option<String>,
}

/// What [`Store::claim_idempotency_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is new (or its record expired, or its first request was abandoned): run the
    /// request and record its answer.
    Claimed,
    /// The first request with the key is still running.
    InFlight,
    /// The key was used for this same request: its answer.
    Replay(StoredAnswer),
    /// The key was used for another request.
    Mismatch,
}

#[derive(sqlx::FromRow)]
struct Row {
    method: String,
    path: String,
    request_hash: String,
    state: String,
    status: Option<i32>,
    content_type: Option<String>,
    location: Option<String>,
    body: Option<String>,
    withheld: Option<String>,
    created_at: i64,
    expires_at: i64,
}

impl Store {
    /// Claims `r`'s key at `now` for `ttl`; an `in_flight` record older than `abandon_after`
    /// (its process died) is taken over.
    pub async fn claim_idempotency_key(
        &self,
        r: &IdempotentRequest,
        now: DateTime<Utc>,
        ttl: chrono::TimeDelta,
        abandon_after: chrono::TimeDelta,
    ) -> Result<IdempotencyClaim, StoreError> {
        for _ in 0..3 {
            let inserted = with_writer!(self, pool => {
                sqlx::query(
                    "INSERT INTO idempotency_keys
                         (api_key_id, idem_key, method, path, request_hash, state, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, 'in_flight', $6, $7)
                     ON CONFLICT (api_key_id, idem_key) DO NOTHING",
                )
                .bind(&r.api_key_id)
                .bind(&r.key)
                .bind(&r.method)
                .bind(&r.path)
                .bind(&r.request_hash)
                .bind(to_ms(now))
                .bind(to_ms(now + ttl))
                .execute(pool)
                .await?
                .rows_affected()
            });
            if inserted == 1 {
                return Ok(IdempotencyClaim::Claimed);
            }
            let row: Option<Row> = with_reader!(self, pool => {
                sqlx::query_as(
                    "SELECT method, path, request_hash, state, status, content_type, location, body,
                            withheld, created_at, expires_at
                     FROM idempotency_keys WHERE api_key_id = $1 AND idem_key = $2",
                )
                .bind(&r.api_key_id)
                .bind(&r.key)
                .fetch_optional(pool)
                .await?
            });
            let Some(row) = row else { continue };
            let expired = row.expires_at <= to_ms(now);
            let abandoned = row.state == "in_flight"
                && from_ms(row.created_at, "idempotency key")? + abandon_after <= now;
            if expired || abandoned {
                // Removed only as read, so two takers cannot both remove a fresh claim.
                with_writer!(self, pool => {
                    sqlx::query(
                        "DELETE FROM idempotency_keys
                         WHERE api_key_id = $1 AND idem_key = $2 AND created_at = $3 AND state = $4",
                    )
                    .bind(&r.api_key_id)
                    .bind(&r.key)
                    .bind(row.created_at)
                    .bind(&row.state)
                    .execute(pool)
                    .await?
                    .rows_affected()
                });
                continue;
            }
            if row.method != r.method || row.path != r.path || row.request_hash != r.request_hash {
                return Ok(IdempotencyClaim::Mismatch);
            }
            if row.state == "in_flight" {
                return Ok(IdempotencyClaim::InFlight);
            }
            return Ok(IdempotencyClaim::Replay(StoredAnswer {
                status: row.status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
                content_type: row.content_type,
                location: row.location,
                body: row.body.unwrap_or_default(),
                withheld: row.withheld,
            }));
        }
        // Three races lost in a row: let the client retry.
        Ok(IdempotencyClaim::InFlight)
    }

    /// Records the answer of the request that claimed the key.
    pub async fn complete_idempotency_key(
        &self,
        api_key_id: &str,
        key: &str,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        with_writer!(self, pool => {
            sqlx::query(
                "UPDATE idempotency_keys SET state = 'done', status = $1, content_type = $2,
                     location = $3, body = $4, withheld = $5
                 WHERE api_key_id = $6 AND idem_key = $7 AND state = 'in_flight'",
            )
            .bind(i32::from(answer.status))
            .bind(answer.content_type.as_deref())
            .bind(answer.location.as_deref())
            .bind(&answer.body)
            .bind(answer.withheld.as_deref())
            .bind(api_key_id)
            .bind(key)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Forgets a claim whose request did not produce an answer worth replaying (a server
    /// error), so that a retry runs again.
    pub async fn release_idempotency_key(
        &self,
        api_key_id: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        with_writer!(self, pool => {
            sqlx::query(
                "DELETE FROM idempotency_keys
                 WHERE api_key_id = $1 AND idem_key = $2 AND state = 'in_flight'",
            )
            .bind(api_key_id)
            .bind(key)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Deletes records that expired before `now`; returns how many.
    pub async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let n = with_writer!(self, pool => {
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
                .bind(to_ms(now))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n)
    }
}
