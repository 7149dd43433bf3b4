//! `GET /v1/rollouts/{id}/events`: a rollout's history as server-sent events, for dashboards.
//!
//! Each event is one entry of the rollout's history (`id:` its `seq`, `event:` its kind,
//! `data:` the JSON entry). A client that reconnects with `Last-Event-ID` (browsers'
//! `EventSource` does so by itself) or `?after=` gets everything after that entry, so nothing
//! is lost across a dropped connection. Once the rollout has finished and every entry was
//! sent, an `end` event closes the stream. A comment line is sent every 15 seconds so proxies
//! keep an idle stream open. When the process shuts down, the stream ends so the graceful
//! stop need not wait for it; the client reconnects with `Last-Event-ID`.
//!
//! Streams are capped: at most `api.max_streams_per_key` open per API key (beyond, 429
//! `too_many_streams`) and `api.max_streams` per process (beyond, 503 `stream_capacity`), both
//! with `Retry-After`. Each stream holds a [`StreamSlot`] that is given back when the stream's
//! body is dropped: it ended, the client went away, or the process stopped. Every few seconds
//! the stream reads its key again: once the key is revoked, or no longer reaches any tenant of
//! the rollout, the stream ends with an `error` event (`unauthorized` or `not_found`, what a
//! new request would get); a narrowed tenant list applies from then on.
//!
//! On PostgreSQL, history entries get their `seq` when inserted but become visible when their
//! transaction commits, so a later `seq` can become visible before an earlier one. The stream
//! therefore only sends entries older than a short settle time there (SQLite has a single
//! writer, and none is needed).

use std::{collections::VecDeque, time::Duration};

use actix_web::{HttpRequest, HttpResponse, get, http::header, web};
use chrono::TimeDelta;
use futures_util::stream;
use serde::Deserialize;
use sspr_domain::{Access, ApiKeyId, Role, RolloutId};
use sspr_store::Backend;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, FieldError, Problem, problem_response},
    streams::{Refused, StreamSlot},
    v1::rollouts::{TimelineEntry, visible},
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(rollout_events);
}

/// How often the store is asked for new entries.
const POLL: Duration = Duration::from_millis(500);
/// How often an idle stream gets a comment line.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often an open stream reads its key again (revoked, or its reach changed).
const RECHECK: Duration = Duration::from_secs(5);
/// `Retry-After` of a refused stream, in seconds.
const RETRY_AFTER_SECS: u32 = 5;
/// Entries read per query.
const BATCH: u32 = 500;
/// Rollout states after which no entry is added by the engine.
const FINAL: [&str; 3] = ["completed", "cancelled", "rolled_back"];

/// Where to start.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    /// Send entries after this `seq` (the `Last-Event-ID` header wins when both are given).
    after: Option<i64>,
}

struct Cursor {
    state: web::Data<AppState>,
    rollout: RolloutId,
    within: Option<std::collections::BTreeSet<String>>,
    after: i64,
    settle: TimeDelta,
    buffer: VecDeque<web::Bytes>,
    idle: Duration,
    done: bool,
    /// The key the stream was opened with, read again every [`RECHECK`].
    key_id: ApiKeyId,
    next_check: tokio::time::Instant,
    /// This stream's place under the caps, given back when the stream is dropped.
    _slot: StreamSlot,
}

/// Whether the stream's key still may read it.
enum KeyCheck {
    /// Yes, with this (possibly changed) tenant restriction.
    Valid(Option<std::collections::BTreeSet<String>>),
    /// No: the stream ends with an `error` event carrying this code.
    Ended(&'static str),
}

fn frame(e: &TimelineEntry) -> web::Bytes {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    web::Bytes::from(format!("id: {}\nevent: {}\ndata: {data}\n\n", e.seq, e.kind))
}

impl Cursor {
    /// The next chunk to send, or `None` to close the stream.
    async fn next(&mut self) -> Option<web::Bytes> {
        loop {
            if let Some(b) = self.buffer.pop_front() {
                return Some(b);
            }
            if self.done || self.state.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                // Shutting down: the client reconnects (to another replica) with Last-Event-ID.
                return None;
            }
            if tokio::time::Instant::now() >= self.next_check {
                self.next_check = tokio::time::Instant::now() + RECHECK;
                match self.check_key().await {
                    Ok(KeyCheck::Valid(within)) => self.within = within,
                    Ok(KeyCheck::Ended(code)) => {
                        tracing::info!(rollout = %self.rollout, key_id = %self.key_id, code, "event stream closed: the key may no longer read it");
                        self.done = true;
                        return Some(web::Bytes::from(format!(
                            "event: error\ndata: {{\"code\":\"{code}\"}}\n\n"
                        )));
                    }
                    Err(e) => {
                        tracing::warn!(rollout = %self.rollout, error = %e, "event stream key check failed");
                        self.done = true;
                        return Some(web::Bytes::from(
                            "event: error\ndata: {\"code\":\"database_unavailable\"}\n\n",
                        ));
                    }
                }
            }
            match self.fill().await {
                Ok(true) => {
                    self.idle = Duration::ZERO;
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    // The client reconnects with Last-Event-ID; tell it why the stream ends.
                    tracing::warn!(rollout = %self.rollout, error = %e, "event stream read failed");
                    self.done = true;
                    return Some(web::Bytes::from(
                        "event: error\ndata: {\"code\":\"database_unavailable\"}\n\n",
                    ));
                }
            }
            if self.idle >= KEEPALIVE {
                self.idle = Duration::ZERO;
                return Some(web::Bytes::from_static(b": keepalive\n\n"));
            }
            actix_web::rt::time::sleep(POLL).await;
            self.idle += POLL;
        }
    }

    /// Reads the stream's key again: it must be unrevoked, at least a viewer, and still reach
    /// the rollout (the same check as opening a stream).
    async fn check_key(&self) -> Result<KeyCheck, ApiError> {
        let Some(key) = self.state.store.get_api_key(&self.key_id).await? else {
            return Ok(KeyCheck::Ended("unauthorized"));
        };
        if key.revoked_at.is_some() {
            return Ok(KeyCheck::Ended("unauthorized"));
        }
        let caller = Caller {
            key_id: key.id,
            key_name: key.name,
            access: Access { role: key.role, tenants: key.tenants },
        };
        if caller.require(Role::Viewer).is_err() {
            return Ok(KeyCheck::Ended("forbidden_role"));
        }
        match visible(&self.state, &caller, self.rollout.as_str()).await {
            Ok(_) => Ok(KeyCheck::Valid(caller.access.tenants.restricted_to().cloned())),
            Err(ApiError::NotFound(_)) => Ok(KeyCheck::Ended("not_found")),
            Err(e) => Err(e),
        }
    }

    /// Reads new entries into the buffer; `Ok(false)` when there were none.
    async fn fill(&mut self) -> Result<bool, sspr_store::StoreError> {
        let store = &self.state.store;
        // Read the rollout's state first: entries written before it finished are then all
        // visible to the read that follows.
        let finished = store
            .get_rollout(&self.rollout)
            .await?
            .is_none_or(|r| FINAL.contains(&r.state.as_str()));
        let rows = store
            .list_rollout_events(&self.rollout, Some(self.after), None, self.within.as_ref(), BATCH)
            .await?;
        let horizon = self.state.clock.now() - self.settle;
        let mut added = false;
        let full = rows.len() == BATCH as usize;
        for e in rows {
            if !finished && e.at > horizon {
                break;
            }
            self.after = e.seq;
            self.buffer.push_back(frame(&TimelineEntry::seen_by(e, self.within.as_ref())));
            added = true;
        }
        if finished && !added && !full {
            self.buffer.push_back(web::Bytes::from(format!(
                "event: end\ndata: {{\"last_event_id\":{}}}\n\n",
                self.after
            )));
            self.done = true;
            return Ok(true);
        }
        Ok(added)
    }
}

/// A rollout's history as server-sent events.
///
/// `text/event-stream`: every history entry after `Last-Event-ID` (or `?after=`, or from the
/// start), then new ones as they happen; `id:` is the entry's `seq`, `event:` its kind, `data:`
/// the entry as in `/history`. Ends with an `end` event once the rollout is completed,
/// cancelled or rolled back. A restricted key gets only its tenants' entries and the
/// rollout-wide ones.
///
/// Open streams are capped per API key (`api.max_streams_per_key`, 429 `too_many_streams`)
/// and per process (`api.max_streams`, 503 `stream_capacity`), both with `Retry-After`. An open
/// stream ends with an `error` event (`data: {"code": ...}`) within seconds of its key being
/// revoked (`unauthorized`) or losing reach to the rollout (`not_found`).
#[utoipa::path(
    operation_id = "v1.rollout.events",
    tag = "rollouts",
    params(
        ("id" = String, Path, description = "Rollout id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this entry (its `seq`)"),
        StreamQuery,
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "`Last-Event-ID` is not an entry's `seq`"),
        (status = 404, description = "No such rollout within your reach"),
        (status = 429, description = "Too many requests (`rate_limited`), or this key already has `api.max_streams_per_key` streams open (`too_many_streams`)",
            headers(("Retry-After" = u32, description = "Seconds to wait before the next request"))),
        (status = 503, description = "The database is unavailable (`service_unavailable`), or the server has `api.max_streams` streams open (`stream_capacity`)",
            headers(("Retry-After" = u32, description = "Seconds to wait before the next request (with `stream_capacity`)"))),
    )
)]
#[get("/rollouts/{id}/events")]
async fn rollout_events(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let rollout = visible(&state, &caller, &path).await?;
    let header = req.headers().get("last-event-id");
    let after = match header {
        Some(v) => {
            Some(v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()).ok_or_else(|| {
                ApiError::Validation(vec![FieldError::new(
                    "Last-Event-ID",
                    "invalid_format",
                    "Last-Event-ID must be the seq of an entry (an integer)",
                )])
            })?)
        }
        None => query.after,
    };
    let after = after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::Validation(vec![FieldError::new(
            "after",
            "out_of_range",
            "after must not be negative",
        )]));
    }
    let slot = match state.streams.acquire(caller.key_id.as_str()) {
        Ok(slot) => slot,
        Err(refused) => return Ok(refusal(refused)),
    };
    let settle = match state.store.backend() {
        Backend::Postgres => TimeDelta::seconds(2),
        Backend::Sqlite => TimeDelta::zero(),
    };
    let cursor = Cursor {
        within: caller.access.tenants.restricted_to().cloned(),
        state: state.clone(),
        rollout: rollout.id,
        after,
        settle,
        buffer: VecDeque::new(),
        idle: Duration::ZERO,
        done: false,
        key_id: caller.key_id.clone(),
        next_check: tokio::time::Instant::now() + RECHECK,
        _slot: slot,
    };
    let body = stream::unfold(cursor, |mut c| async move {
        c.next().await.map(|b| (Ok::<_, actix_web::Error>(b), c))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// The answer to a stream request over a cap: 429 `too_many_streams` (the key's cap) or 503
/// `stream_capacity` (the process's), with `Retry-After`.
fn refusal(refused: Refused) -> HttpResponse {
    let (status, code, detail) = match refused {
        Refused::KeyFull => (
            actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            "this API key has as many event streams open as it may; close one first",
        ),
        Refused::ProcessFull => (
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "stream_capacity",
            "this server has as many event streams open as it may; retry later",
        ),
    };
    let mut response = problem_response(&Problem {
        kind: format!("urn:sspr-fleet:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: Some(detail.to_owned()),
        code: code.to_owned(),
        errors: Vec::new(),
    });
    response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(RETRY_AFTER_SECS));
    response
}
