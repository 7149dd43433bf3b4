//! The transport: every Graph call goes through [`GraphClient::send`], which takes a token,
//! waits for the tenant's gate and the rate limiters, sends with a `client-request-id` and a
//! timeout, and retries what can succeed later.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use rand::Rng;
use reqwest::{Method, header::HeaderMap};
use serde_json::Value;
use tracing::Instrument;

use crate::{
    Credential, GraphConfig, GraphError, MetricsSnapshot, SizeClass,
    breaker::Breakers,
    limits::{Charge, Limits},
    metrics::Metrics,
    report_limits::{
        REPORT_MARGIN, REPORT_WINDOW, REPORTS_PER_APP, REPORTS_PER_TENANT, ReportGrant,
        ReportLimits, ReportPriority,
    },
    token::{AccessToken, TokenCache, TokenInfo},
};

/// A customer tenant as the client needs it.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Entra tenant id (GUID) or a verified domain.
    pub id: String,
    /// The app's credential in this tenant.
    pub credential: Arc<Credential>,
    /// Size class, which sizes its rate limit.
    pub size: SizeClass,
}

/// One request to Graph.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) method: Method,
    /// Path after `/v1.0` (with its query), or an absolute `@odata.nextLink`.
    pub(crate) path: String,
    pub(crate) body: Option<Value>,
    /// Endpoint template for metrics and spans, e.g. `GET /groups/{id}/members`.
    pub(crate) endpoint: &'static str,
    /// Ids of objects the request refers to (for telling replication delay from absence).
    pub(crate) refs: Vec<String>,
    /// Whether only a 404 can mean a referred object is not replicated yet (the object is the
    /// resource the URL names); otherwise a 400 can too (an object named in the body).
    pub(crate) refs_in_path: bool,
    /// What the request costs against the limits, when not its own method and path (a
    /// `$batch` costs its items).
    pub(crate) charge: Option<Charge>,
    /// A read of the reporting APIs, with its priority: paced by the report limiter instead of
    /// resource units, and held only by report 429s.
    pub(crate) report: Option<ReportPriority>,
}

impl Call {
    pub(crate) fn new(method: Method, path: impl Into<String>, endpoint: &'static str) -> Self {
        Self {
            method,
            path: path.into(),
            body: None,
            endpoint,
            refs: Vec::new(),
            refs_in_path: false,
            charge: None,
            report: None,
        }
    }

    /// Marks the call as a report read of `priority`.
    pub(crate) fn report(mut self, priority: ReportPriority) -> Self {
        self.report = Some(priority);
        self
    }

    /// Charges the request as `charge` instead of by its own method and path.
    pub(crate) fn charge(mut self, charge: Charge) -> Self {
        self.charge = Some(charge);
        self
    }

    /// The referred objects are the resource the URL names: a 400 about it is a refusal, never
    /// replication delay.
    pub(crate) fn refs_in_path(mut self) -> Self {
        self.refs_in_path = true;
        self
    }

    pub(crate) fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    pub(crate) fn refs(mut self, refs: impl IntoIterator<Item = String>) -> Self {
        self.refs.extend(refs);
        self
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) body: Option<Value>,
}

/// Resource-unit cost and write flag of a request, from the published cost table.
pub(crate) fn cost(method: &Method, path: &str) -> (u32, bool) {
    let write = method != Method::GET;
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let path = path.to_ascii_lowercase();
    let mut cost: i32 = if write {
        1
    } else if path.ends_with("/users") {
        2
    } else if path.ends_with("/subscribedskus") {
        3
    } else if path.ends_with("/transitivemembers") {
        5
    } else if path.ends_with("/members") {
        3
    } else {
        1
    };
    let query = query.to_ascii_lowercase();
    if query.contains("%24select=") || query.contains("$select=") {
        cost -= 1;
    }
    if query.contains("%24expand=") || query.contains("$expand=") {
        cost += 1;
    }
    let top = query
        .split('&')
        .find_map(|p| p.strip_prefix("$top=").or_else(|| p.strip_prefix("%24top=")))
        .and_then(|t| t.parse::<u32>().ok());
    if top.is_some_and(|t| t < 20) {
        cost -= 1;
    }
    (cost.max(1) as u32, write)
}

/// What a request costs against the limits, from its method and path.
pub(crate) fn charge_of(method: &Method, path: &str) -> Charge {
    let (resource_units, write) = cost(method, path);
    Charge { resource_units, writes: u32::from(write) }
}

/// The `Retry-After` of each `$batch` item answered 429 or 503, and the scope of each 429.
fn batch_throttling(body: Option<&Value>) -> Vec<(Option<Duration>, Option<String>)> {
    let Some(items) = body.and_then(|b| b.get("responses")).and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|r| matches!(r["status"].as_u64(), Some(429 | 503)))
        .map(|r| {
            let scope = r["headers"].as_object().and_then(|h| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("x-ms-throttle-scope"))
                    .and_then(|(_, v)| v.as_str().map(str::to_owned))
            });
            (item_retry_after(r), scope)
        })
        .collect()
}

/// Whether a `$batch` item's 429 came from the reporting APIs' limits (its scope is
/// `<kind>/Read/...`).
pub(crate) fn is_report_item_throttled(item: &Value) -> bool {
    item["headers"].as_object().is_some_and(|h| {
        h.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("x-ms-throttle-scope")
                && v.as_str().and_then(report_scope).is_some()
        })
    })
}

/// The `Retry-After` header of one `$batch` item (seconds, as a string or a number).
pub(crate) fn item_retry_after(item: &Value) -> Option<Duration> {
    item["headers"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.as_str().and_then(|s| s.trim().parse::<u64>().ok()).or(v.as_u64()))
        .map(Duration::from_secs)
}

/// Whether a throttling scope (`x-ms-throttle-scope`) is the app as a whole, and whether only
/// its writes: `Application/Write/<app>/` holds writes, `Application/ReadWrite/...` everything.
fn app_scope(scope: &str) -> Option<bool> {
    let mut parts = scope.split('/');
    if !parts.next()?.eq_ignore_ascii_case("Application") {
        return None;
    }
    Some(parts.next().is_some_and(|kind| kind.eq_ignore_ascii_case("Write")))
}

/// Whether a throttling scope is one of the reporting APIs' buckets (`<kind>/Read/...`), and
/// whether it is the app's (`Application/Read/<app>/`) rather than a tenant's.
fn report_scope(scope: &str) -> Option<bool> {
    let mut parts = scope.split('/');
    let kind = parts.next()?;
    parts
        .next()
        .filter(|access| access.eq_ignore_ascii_case("Read"))
        .map(|_| kind.eq_ignore_ascii_case("Application"))
}

/// Reads `Retry-After` (seconds or an HTTP date).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds().max(0);
    Some(Duration::from_millis(secs as u64))
}

/// The HTTP client every Microsoft endpoint is called with (rustls, pooled, sspr-fleet's user
/// agent).
pub(crate) fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, GraphError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("sspr-fleet/", env!("CARGO_PKG_VERSION")))
        // Never follow a redirect: a 307/308 would re-send a token request's client secret
        // (or a Graph request's bearer token) to wherever `Location` points. A 3xx is an
        // error (`GraphError::Redirect`).
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| GraphError::Invalid(format!("cannot build the HTTP client: {e}")))
}

/// The identity platform's refusal of a token request, from its OAuth error body (`error`,
/// `error_codes`, the first line of `error_description`).
pub(crate) fn token_refusal(status: u16, body: &Value) -> GraphError {
    let description = body.get("error_description").and_then(Value::as_str).unwrap_or("");
    GraphError::Token {
        status,
        error: body.get("error").and_then(Value::as_str).unwrap_or("unknown").to_owned(),
        codes: body
            .get("error_codes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default(),
        description: description.lines().next().unwrap_or("").to_owned(),
    }
}

struct Inner {
    http: reqwest::Client,
    cfg: GraphConfig,
    tokens: TokenCache,
    limits: Limits,
    reports: ReportLimits,
    breakers: Breakers,
    metrics: Metrics,
    created: Mutex<HashMap<String, Instant>>,
}

/// The Graph client. Cheap to clone; clones share tokens, limits and metrics.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("graph_url", &self.inner.cfg.graph_url)
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Done(Reply),
    Retry {
        error: GraphError,
        wait: Duration,
        /// `attempt` already put a hold for `wait` in place (on the tenant, or for a report
        /// 429 on its report reads) that the retry waits for, so `send` does not sleep.
        block_tenant: bool,
    },
    /// A new object is not visible yet: retried while it is within the replication window.
    Replicating {
        error: GraphError,
        wait: Duration,
    },
    Fail(GraphError),
}

impl GraphClient {
    /// A client with the given configuration.
    pub fn new(cfg: GraphConfig) -> Result<Self, GraphError> {
        let http = http_client(cfg.connect_timeout)?;
        let limits = Limits::new(&cfg);
        let reports = ReportLimits::new(
            REPORTS_PER_TENANT * cfg.limits_scale,
            REPORTS_PER_APP * cfg.report_share * cfg.limits_scale,
            REPORT_WINDOW,
            REPORT_MARGIN,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                cfg,
                tokens: TokenCache::default(),
                limits,
                reports,
                breakers: Breakers::default(),
                metrics: Metrics::default(),
                created: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GraphConfig {
        &self.inner.cfg
    }

    /// Every counter so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// When the tenant may be called again, if a `Retry-After` holds it.
    pub fn blocked_until(&self, tenant: &str) -> Option<Instant> {
        self.inner.limits.blocked_until(tenant)
    }

    /// Holds every call of the tenant for `wait` (a `Retry-After` from a `$batch` item).
    pub(crate) fn block_tenant(&self, tenant: &str, wait: Duration) {
        self.inner.limits.block(tenant, Instant::now() + wait);
    }

    /// Forgets that this client created `id` (it was deleted: a 404 about it is final now).
    pub(crate) fn forget_created(&self, id: &str) {
        self.inner.created.lock().remove(&id.to_ascii_lowercase());
    }

    /// Remembers that this client created `id` now (new objects may be invisible for a while).
    pub(crate) fn created(&self, id: &str) {
        let mut created = self.inner.created.lock();
        let window = self.inner.cfg.replication_window;
        created.retain(|_, at| at.elapsed() < window);
        created.insert(id.to_ascii_lowercase(), Instant::now());
    }

    pub(crate) fn recently_created(&self, refs: &[String]) -> bool {
        let created = self.inner.created.lock();
        let window = self.inner.cfg.replication_window;
        refs.iter()
            .any(|r| created.get(&r.to_ascii_lowercase()).is_some_and(|at| at.elapsed() < window))
    }

    /// A valid token for the tenant (single flight per tenant and app).
    pub(crate) async fn token(&self, tenant: &Tenant) -> Result<AccessToken, GraphError> {
        let cfg = &self.inner.cfg;
        self.inner
            .tokens
            .get(&tenant.id, tenant.credential.client_id(), cfg.token_refresh_ahead, || {
                self.fetch_token(tenant)
            })
            .await
    }

    /// Requests a new token for `tenant` now, bypassing the cache, to check its credentials;
    /// returns what the token's claims say (granted permissions, tenant id). Failures are the
    /// identity platform's answer as [`GraphError::Token`].
    pub async fn probe_token(&self, tenant: &Tenant) -> Result<TokenInfo, GraphError> {
        let token = self.fetch_token(tenant).await?;
        Ok(TokenInfo::from_token(&token.value))
    }

    async fn fetch_token(&self, tenant: &Tenant) -> Result<AccessToken, GraphError> {
        let cfg = &self.inner.cfg;
        let url = format!("{}/{}/oauth2/v2.0/token", cfg.login_url, tenant.id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut form = vec![
                ("client_id", tenant.credential.client_id().to_owned()),
                ("scope", cfg.scope.clone()),
                ("grant_type", "client_credentials".to_owned()),
            ];
            form.extend(tenant.credential.form_fields(&url, chrono::Utc::now().timestamp())?);
            self.inner.metrics.token_request(&tenant.id);
            let sent = tokio::time::timeout(
                cfg.request_timeout,
                self.inner.http.post(&url).form(&form).send(),
            )
            .await;
            let result = match sent {
                Err(_) => Err(GraphError::Timeout {
                    endpoint: "POST /oauth2/v2.0/token",
                    timeout: cfg.request_timeout,
                }),
                Ok(Err(e)) => {
                    Err(GraphError::Transport { endpoint: "POST /oauth2/v2.0/token", source: e })
                }
                Ok(Ok(resp)) if resp.status().is_redirection() => {
                    return Err(GraphError::Redirect {
                        endpoint: "POST /oauth2/v2.0/token",
                        status: resp.status().as_u16(),
                    });
                }
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.map_err(|e| GraphError::Transport {
                        endpoint: "POST /oauth2/v2.0/token",
                        source: e,
                    })?;
                    if (200..300).contains(&status) {
                        let value =
                            body.get("access_token").and_then(Value::as_str).ok_or_else(|| {
                                GraphError::Decode {
                                    endpoint: "POST /oauth2/v2.0/token",
                                    detail: "no access_token".into(),
                                }
                            })?;
                        let expires_in =
                            body.get("expires_in").and_then(Value::as_i64).unwrap_or(3599).max(60);
                        return Ok(AccessToken {
                            value: Arc::from(value),
                            expires_at: Instant::now() + Duration::from_secs(expires_in as u64),
                        });
                    }
                    Err(token_refusal(status, &body))
                }
            };
            match result {
                Err(e) if e.is_transient() && attempt < 3 => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Exponential backoff with "equal jitter" for attempt `n` (1-based): half the ceiling
    /// plus a random share of the other half, so retries spread out but never collapse to
    /// nothing (with full jitter a run of tiny waits can use up every attempt).
    fn backoff(&self, n: u32) -> Duration {
        let r = &self.inner.cfg.retry;
        let ceiling = r
            .base_delay
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16)))
            .min(r.max_delay);
        let half = (ceiling.as_millis() as u64 / 2).max(1);
        Duration::from_millis(half + rand::rng().random_range(0..=half))
    }

    /// Sends a call with pacing, retries and the circuit breaker; returns the 2xx answer.
    pub(crate) async fn send(&self, tenant: &Tenant, call: Call) -> Result<Reply, GraphError> {
        let cfg = &self.inner.cfg;
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            if let Err((reason, remaining)) = self.inner.breakers.check(&tenant.id) {
                return Err(GraphError::CircuitOpen {
                    tenant: tenant.id.clone(),
                    reason,
                    until_secs: remaining.as_secs(),
                });
            }
            let outcome = self.attempt(tenant, &call, attempt).await;
            let (error, wait, block_tenant, replicating) = match outcome {
                Attempt::Done(reply) => {
                    self.inner.breakers.success(&tenant.id);
                    return Ok(reply);
                }
                Attempt::Fail(error) => {
                    // A 403 that is the tenant's licence speaking (reports need P1/P2) is a
                    // definitive answer about that resource, not a sign the tenant is unusable.
                    let licence_refusal = error.code()
                        == Some("Authentication_RequestFromNonPremiumTenantOrB2CTenant");
                    if (matches!(error.status(), Some(401 | 403)) && !licence_refusal)
                        || matches!(error, GraphError::Token { .. })
                    {
                        self.inner.breakers.failure(&tenant.id, &error.reason(), &cfg.breaker);
                    }
                    return Err(error);
                }
                Attempt::Retry { error, wait, block_tenant } => (error, wait, block_tenant, false),
                Attempt::Replicating { error, wait } => (error, wait, false, true),
            };
            // With `block_tenant`, `attempt` has already held the whole tenant for `wait`
            // (before giving its slot back), whether or not this call retries: a Retry-After
            // binds the tenant's next call too, and this retry passes the gate only after it.
            // (A report 429 holds only the report limiter, which the retry passes first.)
            // Replication delay is retried for as long as the object is new (the replication
            // window); other failures for a number of attempts; both within the time budget.
            let out_of_attempts = !replicating && attempt >= cfg.retry.max_attempts;
            let out_of_budget = out_of_attempts || started.elapsed() + wait > cfg.retry.budget;
            if out_of_budget {
                if error.is_transient() {
                    self.inner.breakers.failure(&tenant.id, &error.reason(), &cfg.breaker);
                }
                return Err(error);
            }
            tracing::debug!(tenant = %tenant.id, endpoint = call.endpoint, attempt, wait_ms = wait.as_millis() as u64, reason = %error.reason(), "retrying");
            if !block_tenant {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// A report read's turn: its budget from the report limiter (by priority), then the
    /// tenant's slot. The budget is taken before the slot, so a read waiting for budget never
    /// keeps the tenant's other calls out; if a report 429 arrived in between, the budget is
    /// given back and the read waits again.
    async fn report_turn(
        &self,
        tenant: &Tenant,
        priority: ReportPriority,
    ) -> (tokio::sync::OwnedSemaphorePermit, ReportGrant) {
        let app = tenant.credential.client_id();
        let reports = &self.inner.reports;
        loop {
            let asked = tokio::time::Instant::now();
            let grant = reports.acquire(app, &tenant.id, priority).await;
            self.inner.metrics.report_wait(priority.as_str(), asked.elapsed());
            let slot = self.inner.limits.tenant_slot(&tenant.id).await;
            if !reports.held(app, &tenant.id) {
                return (slot, grant);
            }
            drop(slot);
            reports.give_back(grant);
        }
    }

    async fn attempt(&self, tenant: &Tenant, call: &Call, attempt: u32) -> Attempt {
        let cfg = &self.inner.cfg;
        let (slot, grant) = match call.report {
            Some(priority) => {
                let (slot, grant) = self.report_turn(tenant, priority).await;
                (slot, Some(grant))
            }
            None => (self.inner.limits.tenant_slot(&tenant.id).await, None),
        };
        let token = match self.token(tenant).await {
            Ok(t) => t,
            Err(e) if e.is_transient() => {
                return Attempt::Retry {
                    wait: self.backoff(attempt),
                    error: e,
                    block_tenant: false,
                };
            }
            Err(e) => return Attempt::Fail(e),
        };
        let url = if call.path.starts_with("http://") || call.path.starts_with("https://") {
            // Follow paging links only to Graph itself: the token must not go anywhere else.
            // (`Pager` refuses such links first; this holds for every absolute URL.)
            if !crate::calls::within_base(&cfg.graph_url, &call.path) {
                return Attempt::Fail(GraphError::Paging {
                    endpoint: call.endpoint,
                    problem: crate::PagingProblem::ForeignHost,
                });
            }
            call.path.clone()
        } else {
            format!("{}/v1.0{}", cfg.graph_url, call.path)
        };
        // A report read costs no resource units: the report limiter paced it.
        let charge = if call.report.is_some() {
            Charge { resource_units: 0, writes: 0 }
        } else {
            call.charge.unwrap_or_else(|| charge_of(&call.method, &call.path))
        };
        let app = tenant.credential.client_id();
        // Held until this function returns: every hold a `Retry-After` puts on the tenant is
        // in place before its next request can take the slot.
        let _permits = self.inner.limits.ready(app, &tenant.id, tenant.size, charge, slot).await;
        if let Some(grant) = &grant {
            self.inner.reports.sent(grant);
        }
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::info_span!(
            "graph.call",
            tenant = %tenant.id,
            endpoint = call.endpoint,
            client_request_id = %client_request_id,
            attempt,
            status = tracing::field::Empty,
            request_id = tracing::field::Empty,
        );
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), &url)
            .bearer_auth(&*token.value)
            .header("client-request-id", &client_request_id)
            .header("return-client-request-id", "true");
        if let Some(priority) = call.report.and_then(ReportPriority::header) {
            request = request.header("x-ms-throttle-priority", priority);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let sent_at = Instant::now();
        let result = tokio::time::timeout(cfg.request_timeout, async {
            let resp = request.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        })
        .instrument(span.clone())
        .await;
        let latency_ms = sent_at.elapsed().as_secs_f64() * 1000.0;
        let retry = attempt > 1;
        let (status, headers, bytes) = match result {
            Err(_) => {
                self.inner.metrics.record(call.endpoint, None, latency_ms, retry);
                let error =
                    GraphError::Timeout { endpoint: call.endpoint, timeout: cfg.request_timeout };
                return self.retry_holding(&tenant.id, error, self.backoff(attempt));
            }
            Ok(Err(e)) => {
                self.inner.metrics.record(call.endpoint, None, latency_ms, retry);
                let error = GraphError::Transport { endpoint: call.endpoint, source: e };
                return self.retry_holding(&tenant.id, error, self.backoff(attempt));
            }
            Ok(Ok(parts)) => parts,
        };
        self.inner.metrics.record(call.endpoint, Some(status), latency_ms, retry);
        if (300..400).contains(&status) {
            span.in_scope(|| tracing::info!(status, "Graph answered a redirect; not followed"));
            return Attempt::Fail(GraphError::Redirect { endpoint: call.endpoint, status });
        }
        let body: Option<Value> =
            if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
        let request_id = headers.get("request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        span.record("status", status);
        if let Some(id) = &request_id {
            span.record("request_id", id.as_str());
        }
        if (200..300).contains(&status) {
            if call.endpoint == "POST /$batch" {
                // Items of a `$batch` answered 429 or 503: their `Retry-After` binds the tenant
                // (and, for an app-wide scope, the app) whatever the caller does with them.
                let mut told = Duration::ZERO;
                for (after, scope) in batch_throttling(body.as_ref()) {
                    let after = after.unwrap_or_default();
                    // A report item's 429 holds report reads only.
                    if let Some(whole_app) = scope.as_deref().and_then(report_scope) {
                        self.hold_reports(app, &tenant.id, whole_app, after);
                        continue;
                    }
                    told = told.max(after);
                    if let Some(writes_only) = scope.as_deref().and_then(app_scope) {
                        self.inner.limits.block_app(app, Instant::now() + after, writes_only);
                    }
                }
                if !told.is_zero() {
                    self.inner.limits.block(&tenant.id, Instant::now() + told);
                }
            }
            return Attempt::Done(Reply { body });
        }
        let error_code =
            body.as_ref().and_then(|b| b["error"]["code"].as_str()).unwrap_or("").to_owned();
        let message =
            body.as_ref().and_then(|b| b["error"]["message"].as_str()).unwrap_or("").to_owned();
        let after = retry_after(&headers);
        span.in_scope(|| {
            tracing::info!(status, code = %error_code, request_id = ?request_id, "Graph answered an error");
        });
        let error = GraphError::Graph {
            status,
            code: error_code,
            message,
            request_id,
            client_request_id,
            retry_after: after,
        };
        if status == 429 && call.report.is_some() {
            // The reporting APIs' own limits: only report reads wait (the tenant's, or the
            // app's in every tenant), never writes or identity reads. The hold is in place
            // before the slot is given back; the retry waits for it in the report limiter.
            let wait = after.unwrap_or_else(|| self.backoff(attempt));
            let whole_app = headers
                .get("x-ms-throttle-scope")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|scope| scope.split('/').next() == Some("Application"));
            self.hold_reports(app, &tenant.id, whole_app, wait);
            return Attempt::Retry { error, wait, block_tenant: true };
        }
        if status == 429
            && let Some(writes_only) =
                headers.get("x-ms-throttle-scope").and_then(|v| v.to_str().ok()).and_then(app_scope)
        {
            // The app as a whole is over a limit: every tenant's next request (or next write)
            // would be refused too, so all of them wait.
            let wait = after.unwrap_or_else(|| self.backoff(attempt));
            self.inner.limits.block_app(app, Instant::now() + wait, writes_only);
        }
        match status {
            401 if attempt == 1 => {
                self.inner
                    .tokens
                    .invalidate(&tenant.id, tenant.credential.client_id(), &token)
                    .await;
                Attempt::Retry { error, wait: Duration::ZERO, block_tenant: false }
            }
            429 | 503 | 500 | 502 | 504 => self.retry_holding(
                &tenant.id,
                error,
                after.unwrap_or_else(|| self.backoff(attempt)),
            ),
            400 | 404
                if (status == 404 || !call.refs_in_path) && self.recently_created(&call.refs) =>
            {
                Attempt::Replicating { error, wait: self.backoff(attempt.min(4)) }
            }
            _ => Attempt::Fail(error),
        }
    }

    /// Holds report reads for `wait`: the tenant's, or the app's in every tenant.
    fn hold_reports(&self, app: &str, tenant: &str, whole_app: bool, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        if whole_app {
            self.inner.reports.hold_app(app, until);
        } else {
            self.inner.reports.hold_tenant(app, tenant, until);
        }
    }

    /// A retry after `wait` that holds the whole tenant for it. Called by `attempt` while it
    /// still holds the tenant's slot, so the hold is in place before the tenant's next request
    /// can take the slot.
    fn retry_holding(&self, tenant: &str, error: GraphError, wait: Duration) -> Attempt {
        self.inner.limits.block(tenant, Instant::now() + wait);
        Attempt::Retry { error, wait, block_tenant: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_the_published_table() {
        assert_eq!(cost(&Method::GET, "/users"), (2, false));
        assert_eq!(cost(&Method::GET, "/users?$select=id"), (1, false));
        assert_eq!(cost(&Method::GET, "/subscribedSkus"), (3, false));
        assert_eq!(cost(&Method::GET, "/groups/x/members?$top=10"), (2, false));
        assert_eq!(cost(&Method::PATCH, "/policies/authenticationMethodsPolicy"), (1, true));
    }

    #[test]
    fn report_scopes_are_recognised() {
        assert_eq!(report_scope("Tenant_Application/Read/app/tenant"), Some(false));
        assert_eq!(report_scope("Application/Read/app/"), Some(true));
        assert_eq!(report_scope("Tenant_Application/ReadWrite/app/tenant"), None);
        assert_eq!(report_scope("Application/Write/app/"), None);
        assert_eq!(report_scope(""), None);
    }

    #[test]
    fn throttling_scopes_of_the_whole_app_are_recognised() {
        assert_eq!(app_scope("Application/Write/app-id/"), Some(true));
        assert_eq!(app_scope("Application/ReadWrite/app-id/"), Some(false));
        assert_eq!(app_scope("Tenant_Application/ReadWrite/app-id/tenant"), None);
        assert_eq!(app_scope("Tenant/Write//tenant"), None);
        assert_eq!(app_scope(""), None);
    }

    #[test]
    fn a_batchs_throttled_items_are_read_with_their_waits_and_scopes() {
        let body = serde_json::json!({"responses": [
            {"id": "1", "status": 204, "headers": {}},
            {"id": "2", "status": 429, "headers": {"Retry-After": "7", "x-ms-throttle-scope": "Application/Write/a/"}},
            {"id": "3", "status": 503, "headers": {"retry-after": 3}},
            {"id": "4", "status": 424},
        ]});
        let found = batch_throttling(Some(&body));
        assert_eq!(
            found,
            vec![
                (Some(Duration::from_secs(7)), Some("Application/Write/a/".to_owned())),
                (Some(Duration::from_secs(3)), None),
            ]
        );
        assert!(batch_throttling(None).is_empty());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = (chrono::Utc::now() + chrono::TimeDelta::seconds(30)).to_rfc2822();
        h.insert(reqwest::header::RETRY_AFTER, later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
    }
}
