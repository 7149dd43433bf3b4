//! The built-in status page: `/status` (the newest rollouts) and `/status/rollouts/{id}` (one
//! rollout: its waves, blocked and failed reasons, and its tenants), server-rendered HTML that
//! refreshes itself every few seconds.
//!
//! The pages are for people with a browser, so they are not part of the JSON API: they are not
//! in the OpenAPI document, they answer errors with HTML, and they accept the API key as the
//! password of HTTP Basic authentication (a browser cannot send a bearer header when it
//! navigates; a bearer key works too). What a key sees is exactly what the API shows it: the
//! rollout views come from [`crate::v1::rollouts::view`] and [`crate::v1::rollouts::visible`],
//! so a restricted key sees only rollouts with a tenant in its reach, and only those tenants.
//!
//! Every value is escaped; the pages load nothing (no script, no external resource) and are
//! served with a Content-Security-Policy that forbids everything but inline styles.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::{
    HttpRequest, HttpResponse,
    http::{StatusCode, header},
    web,
};
use chrono::{DateTime, Utc};
use sspr_domain::{Role, rollout::TenantState};
use sspr_store::{RolloutFilter, RolloutTenant, TenantFilter};

use crate::{
    AppState,
    auth::{self, Caller},
    error::{ApiError, ErrorChain},
    middleware::KeepErrorBody,
    v1::rollouts::{RolloutView, view, visible},
};

/// The list of rollouts.
pub(crate) const LIST_PATH: &str = "/status";
/// One rollout.
pub(crate) const ROLLOUT_PATH: &str = "/status/rollouts/{id}";

/// How many rollouts the list shows, newest first.
const MAX_ROLLOUTS: u32 = 50;
/// How many tenants the rollout page lists; larger rollouts get a note.
const MAX_TENANT_ROWS: u32 = 500;
/// Seconds between refreshes.
const REFRESH_SECS: u32 = 5;
/// The Basic challenge; browsers show the realm in their prompt.
const CHALLENGE: &str = "Basic realm=\"sspr-fleet status\", charset=\"UTF-8\"";

/// Registers both pages (GET; HEAD is routed as GET by the request middleware).
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(LIST_PATH, web::get().to(list_page)).route(ROLLOUT_PATH, web::get().to(rollout_page));
}

async fn list_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    respond(render_list(&req, &state).await)
}

async fn rollout_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let id = req.match_info().get("id").unwrap_or_default().to_owned();
    respond(render_rollout(&req, &state, &id).await)
}

/// The key of the request, as a caller with at least the viewer role.
async fn page_caller(req: &HttpRequest, state: &AppState) -> Result<Caller, ApiError> {
    let peer = req.peer_addr().map(|a| a.ip());
    let refuse = |err| crate::ratelimit::refuse(state, peer, err);
    let token = auth::page_token(req.headers()).ok_or_else(|| refuse(ApiError::Unauthorized))?;
    let caller = auth::caller_for_token(state, &token).await.map_err(refuse)?;
    tracing::Span::current().record("key_id", tracing::field::display(&caller.key_id));
    state.rate_limits.check_key(caller.key_id.as_str())?;
    caller.require(Role::Viewer)?;
    Ok(caller)
}

async fn render_list(req: &HttpRequest, state: &AppState) -> Result<String, ApiError> {
    let caller = page_caller(req, state).await?;
    let filter = RolloutFilter {
        within: caller.access.tenants.restricted_to().cloned(),
        state: None,
        after_id: None,
        limit: MAX_ROLLOUTS + 1,
    };
    let mut rows = state.store.list_rollouts(&filter).await?;
    let more = rows.len() > MAX_ROLLOUTS as usize;
    rows.truncate(MAX_ROLLOUTS as usize);
    let mut views = Vec::with_capacity(rows.len());
    for r in rows {
        views.push(view(state, &caller, r).await?);
    }
    let now = state.clock.now();
    let mut html = Html::default();
    html.open_page("Rollouts", now, &caller);
    html.raw("<h1>Rollouts</h1>\n");
    if views.is_empty() {
        html.raw("<p class=\"muted\">No rollout within your reach yet.</p>\n");
    }
    for v in &views {
        html.raw("<section class=\"rollout\">\n");
        html.rollout_header(v, true);
        html.raw("</section>\n");
    }
    if more {
        html.raw("<p class=\"note\">Showing the ");
        html.text(&MAX_ROLLOUTS.to_string());
        html.raw(" newest rollouts; older ones are listed by <code>GET /v1/rollouts</code>.</p>\n");
    }
    html.close_page();
    Ok(html.0)
}

async fn render_rollout(req: &HttpRequest, state: &AppState, id: &str) -> Result<String, ApiError> {
    let caller = page_caller(req, state).await?;
    let rollout = visible(state, &caller, id).await?;
    let rollout_id = rollout.id.clone();
    let v = view(state, &caller, rollout).await?;
    let within = caller.access.tenants.restricted_to();
    let mut tenants = state
        .store
        .list_rollout_tenants(&rollout_id, None, None, within, None, MAX_TENANT_ROWS + 1)
        .await?;
    let more = tenants.len() > MAX_TENANT_ROWS as usize;
    tenants.truncate(MAX_TENANT_ROWS as usize);
    let names = display_names(state, &tenants).await?;

    let now = state.clock.now();
    let mut html = Html::default();
    html.open_page(&v.name, now, &caller);
    html.raw("<p><a href=\"/status\">&larr; All rollouts</a></p>\n");
    html.rollout_header(&v, false);
    html.waves(&v);
    html.reasons("Blocked tenants by reason", "blocked-reasons", &v.blocked_reasons);
    html.reasons("Failed tenants by reason", "failed-reasons", &v.failed_reasons);
    html.tenants(&tenants, &names);
    if more {
        html.raw("<p class=\"note\">Showing the first ");
        html.text(&MAX_TENANT_ROWS.to_string());
        html.raw(" of ");
        html.text(&v.tenants.to_string());
        html.raw(" tenants, in wave order; all of them are listed by <code>GET /v1/rollouts/");
        html.text(&v.id);
        html.raw("/tenants</code>.</p>\n");
    }
    html.close_page();
    Ok(html.0)
}

/// The display names of `tenants`, in one query.
async fn display_names(
    state: &AppState,
    tenants: &[RolloutTenant],
) -> Result<BTreeMap<String, String>, ApiError> {
    if tenants.is_empty() {
        return Ok(BTreeMap::new());
    }
    let ids: BTreeSet<String> = tenants.iter().map(|t| t.tenant_id.clone()).collect();
    let filter = TenantFilter {
        limit: u32::try_from(ids.len()).unwrap_or(u32::MAX),
        within: Some(ids),
        // A tenant offboarded during its rollout still has a name.
        include_offboarded: true,
        ..TenantFilter::default()
    };
    let found = state.store.list_tenants(&filter).await?;
    Ok(found.into_iter().map(|t| (t.id.to_string(), t.display_name)).collect())
}

/// The page, or the error as a short HTML page with the right status.
fn respond(outcome: Result<String, ApiError>) -> HttpResponse {
    let err = match outcome {
        Ok(body) => return page_response(StatusCode::OK, body),
        Err(err) => err,
    };
    let (status, title, message) = match &err {
        ApiError::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "Sign in",
            "This page needs an sspr-fleet API key: give it as the password (any user name).",
        ),
        ApiError::ForbiddenRole { .. } => {
            (StatusCode::FORBIDDEN, "Forbidden", "This key may not read rollouts.")
        }
        ApiError::NotFound(_) => {
            (StatusCode::NOT_FOUND, "Not found", "There is no such rollout within your reach.")
        }
        ApiError::RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            "This key (or address) sent too many requests; the page will load again shortly.",
        ),
        other => {
            // The cause goes to the log only.
            tracing::error!(error = %ErrorChain(other), code = other.code(), "status page failed");
            let status = if matches!(other, ApiError::Unavailable(_)) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (status, "Unavailable", "The status cannot be shown right now; try again shortly.")
        }
    };
    let mut html = Html::default();
    html.raw("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    html.text(title);
    html.raw(" - sspr-fleet status</title></head>\n<body><h1>");
    html.text(title);
    html.raw("</h1><p>");
    html.text(message);
    html.raw("</p><p><a href=\"/status\">All rollouts</a></p></body></html>\n");
    let mut response = page_response(status, html.0);
    response.extensions_mut().insert(KeepErrorBody);
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static(CHALLENGE));
    }
    if let ApiError::RateLimited { retry_after_secs } = err {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after_secs));
    }
    response
}

/// An HTML response with the pages' security headers.
fn page_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'",
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The CSS class of a rollout state: only the known states, so a class name never carries an
/// arbitrary value.
fn rollout_state_class(state: &str) -> &'static str {
    match state {
        "running" => "s-working",
        "paused" => "s-paused",
        "completed" => "s-completed",
        "cancelled" | "rolling_back" | "rolled_back" => "s-stopped",
        _ => "s-other",
    }
}

/// The order of the progress bar: finished work from the left, waiting work on the right.
const BAR_ORDER: [TenantState; 14] = [
    TenantState::Completed,
    TenantState::AllVerifying,
    TenantState::AllApplying,
    TenantState::Gate,
    TenantState::PilotVerifying,
    TenantState::PilotApplying,
    TenantState::Ready,
    TenantState::Preflight,
    TenantState::Paused,
    TenantState::Blocked,
    TenantState::Failed,
    TenantState::Cancelled,
    TenantState::RolledBack,
    TenantState::Pending,
];

/// The CSS class of a tenant state: only the known states, so a class name never carries an
/// arbitrary value.
fn state_class(state: &str) -> &'static str {
    TenantState::parse(state).map_or("s-other", |s| match s {
        TenantState::Pending => "s-pending",
        TenantState::Completed => "s-completed",
        TenantState::Blocked => "s-blocked",
        TenantState::Failed => "s-failed",
        TenantState::Gate => "s-gate",
        TenantState::Paused => "s-paused",
        TenantState::Cancelled | TenantState::RolledBack => "s-stopped",
        _ => "s-working",
    })
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1c2330;background:#f6f7f9}\
h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.15rem;margin:.2rem 0}h3{font-size:1rem;margin:1.2rem 0 .4rem}\
a{color:#1f5fbf}.muted{color:#667}.note{background:#fff6dc;border:1px solid #e8d18a;padding:.4rem .6rem}\
header.top{display:flex;justify-content:space-between;align-items:baseline;border-bottom:1px solid #d5d9e0;margin-bottom:1rem}\
section.rollout,.card{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:.8rem 1rem;margin-bottom:1rem}\
dl.facts{display:flex;flex-wrap:wrap;gap:.2rem 1.5rem;margin:.4rem 0}dl.facts dt{color:#667}dl.facts dd{margin:0 0 0 .3rem;font-weight:600}\
dl.facts div{display:flex}.bar{display:flex;height:14px;border-radius:3px;overflow:hidden;background:#e4e7ec;min-width:120px}\
.bar span{display:block;height:100%}ul.counts{list-style:none;padding:0;margin:.3rem 0;display:flex;flex-wrap:wrap;gap:.2rem 1rem}\
.dot{display:inline-block;width:.7em;height:.7em;border-radius:2px;margin-right:.3em}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e4e7ec;vertical-align:top}\
th{background:#eef1f5;font-weight:600}td.num{text-align:right}tr.current td{background:#f0f6ff}\
.badge{display:inline-block;padding:0 .45em;border-radius:3px;color:#fff;font-size:.85em;background:#5b6575}\
.s-pending{background:#aab2bf}.s-working{background:#2f7ed8}.s-gate{background:#d99a1e}.s-completed{background:#2e9d53}\
.s-blocked{background:#d9602b}.s-failed{background:#c62f3d}.s-paused{background:#8a5cc2}.s-stopped{background:#4a4f57}.s-other{background:#5b6575}\
code{font-size:.9em}small.id{display:block;color:#778;font-size:.8em}";

/// A page under construction: [`Html::raw`] for markup written here, [`Html::text`] for every
/// value, escaped.
#[derive(Default)]
struct Html(String);

impl Html {
    fn raw(&mut self, markup: &str) {
        self.0.push_str(markup);
    }

    fn text(&mut self, value: &str) {
        self.0.push_str(&escape(value));
    }

    fn open_page(&mut self, title: &str, now: DateTime<Utc>, caller: &Caller) {
        self.raw("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        self.raw("<meta http-equiv=\"refresh\" content=\"");
        self.text(&REFRESH_SECS.to_string());
        self.raw("\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
        self.raw("<title>");
        self.text(title);
        self.raw(" - sspr-fleet status</title><style>");
        self.raw(STYLE);
        self.raw(
            "</style></head>\n<body>\n<header class=\"top\"><strong>sspr-fleet status</strong>",
        );
        self.raw("<span class=\"muted\" id=\"rendered\">Rendered at ");
        self.text(&time(now));
        self.raw(" &middot; refreshes every ");
        self.text(&REFRESH_SECS.to_string());
        self.raw(" s &middot; key ");
        self.text(&caller.key_name);
        self.raw("</span></header>\n<main>\n");
    }

    fn close_page(&mut self) {
        self.raw("</main>\n</body></html>\n");
    }

    /// Name, state and reason, wave, progress and times; the name links to the rollout's page
    /// when `link`.
    fn rollout_header(&mut self, v: &RolloutView, link: bool) {
        self.raw("<h2 class=\"rollout-name\">");
        if link {
            self.raw("<a href=\"/status/rollouts/");
            self.text(&v.id);
            self.raw("\">");
            self.text(&v.name);
            self.raw("</a>");
        } else {
            self.text(&v.name);
        }
        self.raw(" <span class=\"badge rollout-state ");
        self.raw(rollout_state_class(&v.state));
        self.raw("\">");
        self.text(&v.state);
        self.raw("</span></h2>\n<small class=\"id\">");
        self.text(&v.id);
        self.raw("</small>\n");
        if let Some(reason) = &v.state_reason {
            self.raw("<p class=\"rollout-reason\">");
            self.text(reason);
            self.raw("</p>\n");
        }
        self.raw("<dl class=\"facts\"><div><dt>Wave</dt><dd class=\"wave\">");
        // Waves are numbered from 0, as in the API and the tables below.
        if v.wave_count == 0 {
            self.raw("none");
        } else if v.current_wave >= v.wave_count {
            self.text(&format!("all {} done", v.wave_count));
        } else {
            self.text(&format!("{} of {}", v.current_wave, v.wave_count));
            self.raw(" <span class=\"muted\">(from 0)</span>");
        }
        self.raw("</dd></div><div><dt>Tenants</dt><dd>");
        self.text(&v.tenants.to_string());
        self.raw("</dd></div><div><dt>Completed</dt><dd>");
        let completed = v.counts.get(TenantState::Completed.as_str()).copied().unwrap_or(0);
        self.text(&format!("{completed} ({}%)", percent(completed, v.tenants)));
        self.raw("</dd></div><div><dt>Pace</dt><dd class=\"pace\">");
        match v.progress.throughput_per_hour {
            Some(rate) => self.text(&format!("{rate} tenants/h")),
            None => self.raw("&mdash;"),
        }
        self.raw("</dd></div><div><dt>Started</dt><dd>");
        self.text(&time(v.created_at));
        self.raw("</dd></div><div><dt>Finished</dt><dd>");
        match (v.finished_at, v.progress.eta) {
            (Some(t), _) => self.text(&time(t)),
            (None, Some(eta)) => self.text(&format!("expected {}", time(eta))),
            (None, None) => self.raw("&mdash;"),
        }
        self.raw("</dd></div></dl>\n");
        self.bar(&v.counts, v.tenants);
        self.raw("<ul class=\"counts\">");
        for (state, n) in ordered(&v.counts) {
            self.raw("<li><span class=\"dot ");
            self.raw(state_class(state));
            self.raw("\"></span>");
            self.text(state);
            self.raw(" <b>");
            self.text(&n.to_string());
            self.raw("</b></li>");
        }
        self.raw("</ul>\n");
    }

    /// A bar of the tenants by state, finished work from the left.
    fn bar(&mut self, counts: &BTreeMap<String, u64>, total: u64) {
        self.raw("<div class=\"bar\" role=\"img\" aria-label=\"progress by tenant state\">");
        let mut segments: Vec<(&str, u64)> = BAR_ORDER
            .iter()
            .filter_map(|s| counts.get(s.as_str()).map(|n| (s.as_str(), *n)))
            .collect();
        segments
            .extend(ordered(counts).into_iter().filter(|(s, _)| TenantState::parse(s).is_none()));
        for (state, n) in segments {
            // Hundredths of a percent, so small shares still show.
            let Some(width) = n.saturating_mul(10_000).checked_div(total).filter(|_| n > 0) else {
                continue;
            };
            self.raw("<span class=\"");
            self.raw(state_class(state));
            self.raw("\" style=\"width:");
            self.text(&format!("{}.{:02}%", width / 100, width % 100));
            self.raw("\" title=\"");
            self.text(&format!("{state}: {n}"));
            self.raw("\"></span>");
        }
        self.raw("</div>\n");
    }

    /// One row per wave: its tenants, a bar, and counts per state.
    fn waves(&mut self, v: &RolloutView) {
        let states: Vec<&str> = ordered(&v.counts).into_iter().map(|(s, _)| s).collect();
        self.raw("<h3>Waves</h3>\n<table class=\"waves\"><thead><tr><th>Wave</th><th>Tenants</th><th>Progress</th>");
        for s in &states {
            self.raw("<th>");
            self.text(s);
            self.raw("</th>");
        }
        self.raw("</tr></thead><tbody>\n");
        for w in &v.waves {
            let current = w.wave == v.current_wave;
            self.raw(if current { "<tr class=\"wave current\"" } else { "<tr class=\"wave\"" });
            self.raw(" data-wave=\"");
            self.text(&w.wave.to_string());
            self.raw("\"><td>");
            self.text(&w.wave.to_string());
            if current {
                self.raw(" <span class=\"muted\">(current)</span>");
            }
            self.raw("</td><td class=\"num\">");
            self.text(&w.tenants.to_string());
            self.raw("</td><td>");
            self.bar(&w.counts, w.tenants);
            self.raw("</td>");
            for s in &states {
                self.raw("<td class=\"num\">");
                self.text(&w.counts.get(*s).copied().unwrap_or(0).to_string());
                self.raw("</td>");
            }
            self.raw("</tr>\n");
        }
        self.raw("</tbody></table>\n");
    }

    /// Tenants by reason, when there are any.
    fn reasons(&mut self, title: &str, class: &str, reasons: &BTreeMap<String, u64>) {
        if reasons.is_empty() {
            return;
        }
        self.raw("<h3>");
        self.text(title);
        self.raw("</h3>\n<table class=\"");
        self.text(class);
        self.raw("\"><thead><tr><th>Reason</th><th>Tenants</th></tr></thead><tbody>\n");
        let mut rows: Vec<(&String, &u64)> = reasons.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (reason, n) in rows {
            self.raw("<tr><td><code>");
            self.text(reason);
            self.raw("</code></td><td class=\"num\">");
            self.text(&n.to_string());
            self.raw("</td></tr>\n");
        }
        self.raw("</tbody></table>\n");
    }

    /// The tenants, in wave order.
    fn tenants(&mut self, tenants: &[RolloutTenant], names: &BTreeMap<String, String>) {
        self.raw("<h3>Tenants</h3>\n<table class=\"tenants\"><thead><tr><th>Tenant</th><th>Wave</th><th>State</th><th>Reason</th><th>Last error</th><th>Last update</th></tr></thead><tbody>\n");
        for t in tenants {
            self.raw("<tr class=\"tenant\" data-tenant=\"");
            self.text(&t.tenant_id);
            self.raw("\"><td><span class=\"tenant-name\">");
            self.text(names.get(&t.tenant_id).map_or("(unknown tenant)", String::as_str));
            self.raw("</span><small class=\"id\">");
            self.text(&t.tenant_id);
            self.raw("</small></td><td class=\"num\">");
            self.text(&t.wave.to_string());
            self.raw("</td><td><span class=\"badge tenant-state ");
            self.raw(state_class(&t.state));
            self.raw("\">");
            self.text(&t.state);
            self.raw("</span></td><td class=\"tenant-reason\">");
            self.text(t.reason.as_deref().unwrap_or(""));
            self.raw("</td><td><code>");
            self.text(t.last_error.as_deref().unwrap_or(""));
            self.raw("</code></td><td>");
            self.text(&time(t.updated_at));
            self.raw("</td></tr>\n");
        }
        if tenants.is_empty() {
            self.raw(
                "<tr><td colspan=\"6\" class=\"muted\">No tenant within your reach.</td></tr>\n",
            );
        }
        self.raw("</tbody></table>\n");
    }
}

/// The states with a count, in rollout order; unknown states (none today) last.
fn ordered(counts: &BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    let mut out: Vec<(&str, u64)> = TenantState::ALL
        .iter()
        .filter_map(|s| counts.get(s.as_str()).map(|n| (s.as_str(), *n)))
        .collect();
    for (s, n) in counts {
        if TenantState::parse(s).is_none() {
            out.push((s.as_str(), *n));
        }
    }
    out
}

fn percent(part: u64, total: u64) -> u64 {
    part.saturating_mul(100).checked_div(total).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralises_markup_quotes_and_ampersands() {
        assert_eq!(
            escape("<script>alert(\"x\")</script>"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
        );
        assert_eq!(escape("Smith & Sons' \"Ltd\""), "Smith &amp; Sons&#39; &quot;Ltd&quot;");
        // Already-escaped text is escaped again, not trusted.
        assert_eq!(escape("&lt;"), "&amp;lt;");
        assert_eq!(escape("Zürich GmbH"), "Zürich GmbH");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn state_classes_come_only_from_known_states() {
        assert_eq!(state_class("completed"), "s-completed");
        assert_eq!(state_class("pilot_applying"), "s-working");
        assert_eq!(state_class("\" onclick=\"x"), "s-other");
        assert_eq!(rollout_state_class("running"), "s-working");
        assert_eq!(rollout_state_class("<b>"), "s-other");
        // The bar covers every state.
        for s in TenantState::ALL {
            assert!(BAR_ORDER.contains(&s), "{s:?}");
        }
    }

    #[test]
    fn states_are_ordered_as_the_rollout_moves() {
        let counts: BTreeMap<String, u64> =
            [("completed", 2), ("blocked", 1), ("pending", 3), ("gate", 1)]
                .into_iter()
                .map(|(s, n)| (s.to_owned(), n))
                .collect();
        let order: Vec<&str> = ordered(&counts).into_iter().map(|(s, _)| s).collect();
        assert_eq!(order, ["pending", "blocked", "gate", "completed"]);
    }

    #[test]
    fn every_rendered_value_is_escaped() {
        const EVIL: &str = "<script>x()</script>\"'&";
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let counts: BTreeMap<String, u64> =
            [("blocked".to_owned(), 1), (EVIL.to_owned(), 1)].into();
        let reasons: BTreeMap<String, u64> = [(EVIL.to_owned(), 1)].into();
        let v = RolloutView {
            id: EVIL.into(),
            name: EVIL.into(),
            state: EVIL.into(),
            state_reason: Some(EVIL.into()),
            current_wave: 0,
            wave_count: 1,
            tenants: 2,
            counts: counts.clone(),
            waves: vec![crate::v1::rollouts::WaveView { wave: 0, tenants: 2, counts }],
            blocked_reasons: reasons.clone(),
            failed_reasons: reasons.clone(),
            progress: sspr_reporting::progress::Progress {
                finished: 1,
                remaining: 1,
                percent: 50.0,
                throughput_per_hour: None,
                throughput_basis: None,
                eta: None,
            },
            spec: serde_json::json!({}),
            created_by: EVIL.into(),
            created_at: at,
            updated_at: at,
            finished_at: Some(at),
        };
        let tenant = RolloutTenant {
            rollout_id: sspr_domain::RolloutId::new(),
            tenant_id: EVIL.into(),
            wave: 0,
            position: 0,
            state: EVIL.into(),
            paused_from: None,
            reason: Some(EVIL.into()),
            last_error: Some(EVIL.into()),
            scope_group_id: None,
            gate_entered_at: None,
            approved_at: None,
            approved_by: None,
            updated_at: at,
        };
        let names: BTreeMap<String, String> = [(EVIL.to_owned(), EVIL.to_owned())].into();
        let mut html = Html::default();
        html.rollout_header(&v, true);
        html.waves(&v);
        html.reasons("Blocked", "blocked-reasons", &v.blocked_reasons);
        html.tenants(std::slice::from_ref(&tenant), &names);
        let out = html.0;
        assert!(!out.contains("<script"), "{out}");
        assert!(!out.contains("x()</"), "{out}");
        // Only markup written here has quotes; the value's own are entities.
        assert!(out.contains("&lt;script&gt;x()&lt;/script&gt;&quot;&#39;&amp;"), "{out}");
        assert!(!out.contains("\"'&"), "{out}");
    }

    #[test]
    fn error_pages_keep_their_html_and_challenge_for_a_key() {
        let response = respond(Err(ApiError::Unauthorized));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = response.headers().get(header::WWW_AUTHENTICATE);
        assert_eq!(challenge.and_then(|v| v.to_str().ok()), Some(CHALLENGE));
        assert!(response.extensions().get::<KeepErrorBody>().is_some());
        let response = respond(Err(ApiError::Internal("postgres://u:pw@h".into())));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let csp = response.headers().get(header::CONTENT_SECURITY_POLICY);
        assert!(csp.is_some());
    }
}
