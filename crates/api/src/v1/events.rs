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
//! On PostgreSQL, history entries get their `seq` when inserted but become visible when their
//! transaction commits, so a later `seq` can become visible before an earlier one. The stream
//! therefore only sends entries older than a short settle time there (SQLite has a single
//! writer, and none is needed).

use std::{collections::VecDeque, time::Duration};

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::TimeDelta;
use futures_util::stream;
use serde::Deserialize;
use sspr_domain::{Role, RolloutId};
use sspr_store::Backend;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, FieldError},
    v1::rollouts::{TimelineEntry, visible},
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(rollout_events);
}

/// How often the store is asked for new entries.
const POLL: Duration = Duration::from_millis(500);
/// How often an idle stream gets a comment line.
const KEEPALIVE: Duration = Duration::from_secs(15);
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
