//! The Graph surface: authentication, faults, throttling, routing and `$batch`. Handlers are
//! plain functions over the world, so `$batch` items run through exactly the same code as
//! single requests.

mod directory;
mod groups;
mod policy;
mod query;
mod reports;

use serde_json::{Value, json};

pub(crate) use policy::policy_json;

/// Defaults of a fresh tenant's policies, for building scenarios.
pub(crate) mod policy_defaults {
    pub(crate) use super::policy::{default_authorization, default_configs, default_policy};
}

use crate::{
    GraphSim, World,
    faults::Injected,
    response::SimResponse,
    throttle::{self},
};

/// One request to the simulated Graph (after `/v1.0`).
#[derive(Debug, Clone)]
pub(crate) struct GraphRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) authorization: Option<String>,
    pub(crate) client_request_id: Option<String>,
    pub(crate) body: Option<Value>,
    /// `scheme://host` the client used, for `@odata.nextLink` and `@odata.context`.
    pub(crate) base_url: String,
}

/// What the HTTP layer should do.
#[derive(Debug)]
pub(crate) enum Outcome {
    Respond { delay_ms: u64, response: SimResponse },
    Drop { delay_ms: u64 },
}

/// Everything a handler may need besides the world.
pub(crate) struct Ctx<'a> {
    pub(crate) tenant: usize,
    pub(crate) roles: &'a std::collections::BTreeSet<String>,
    pub(crate) now_ms: i64,
    pub(crate) now: String,
    pub(crate) base_url: &'a str,
    pub(crate) settings: &'a crate::SimSettings,
}

impl Ctx<'_> {
    pub(crate) fn now_secs(&self) -> i64 {
        self.now_ms.div_euclid(1000)
    }

    /// 403 unless the token carries one of `roles`.
    pub(crate) fn require(&self, roles: &[&str]) -> Result<(), SimResponse> {
        if roles.iter().any(|r| self.roles.contains(*r)) {
            Ok(())
        } else {
            Err(SimResponse::error(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ))
        }
    }

    pub(crate) fn context(&self, fragment: &str) -> String {
        format!("{}/v1.0/$metadata#{fragment}", self.base_url)
    }
}

/// Read and write permissions of the endpoints (from the subset's `x-permissions`).
pub(crate) mod perms {
    pub(crate) const POLICY_READ: &[&str] = &[
        "Policy.Read.AuthenticationMethod",
        "Policy.ReadWrite.AuthenticationMethod",
        "Policy.Read.All",
    ];
    pub(crate) const POLICY_WRITE: &[&str] = &["Policy.ReadWrite.AuthenticationMethod"];
    pub(crate) const AUTHZ_READ: &[&str] = &["Policy.Read.All", "Policy.ReadWrite.Authorization"];
    pub(crate) const AUTHZ_WRITE: &[&str] = &["Policy.ReadWrite.Authorization"];
    pub(crate) const ORG_READ: &[&str] = &["Organization.Read.All", "Directory.Read.All"];
    pub(crate) const REPORTS: &[&str] = &["AuditLog.Read.All"];
    pub(crate) const AUDITS: &[&str] = &["AuditLog.Read.All", "Directory.Read.All"];
    pub(crate) const GROUP_READ: &[&str] = &[
        "GroupMember.Read.All",
        "Group.Read.All",
        "Directory.Read.All",
        "GroupMember.ReadWrite.All",
        "Group.ReadWrite.All",
        "Directory.ReadWrite.All",
    ];
    pub(crate) const GROUP_CREATE: &[&str] =
        &["Group.Create", "Group.ReadWrite.All", "Directory.ReadWrite.All"];
    pub(crate) const GROUP_WRITE: &[&str] =
        &["GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"];
    pub(crate) const USER_READ: &[&str] =
        &["User.Read.All", "Directory.Read.All", "User.ReadWrite.All"];
}

/// The endpoint template of a path, for statistics: ids become `{id}`.
fn template(method: &str, path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = String::new();
    for (i, s) in segs.iter().enumerate() {
        let fixed = i == 0
            || matches!(
                s.to_ascii_lowercase().as_str(),
                "members"
                    | "$ref"
                    | "authenticationmethodspolicy"
                    | "authenticationmethodconfigurations"
                    | "authorizationpolicy"
                    | "authenticationmethods"
                    | "userregistrationdetails"
                    | "directoryaudits"
                    | "onpremisessynchronization"
            )
            || s.contains('(');
        out.push('/');
        if fixed {
            out.push_str(s.split('(').next().unwrap_or(s));
        } else {
            out.push_str("{id}");
        }
    }
    format!("{} {}", method.to_ascii_uppercase(), if out.is_empty() { "/" } else { &out })
}

impl GraphSim {
    /// Handles one Graph request from the wire.
    pub(crate) fn graph(&self, req: GraphRequest) -> Outcome {
        let clock = &self.inner.clock;
        let now_ms = clock.elapsed_ms();
        let now = clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let at = self.stamp_ms(now_ms);
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut world = self.inner.world.lock();
        let is_write = !req.method.eq_ignore_ascii_case("GET");
        // Records a write in the tenant's log, whatever it was answered.
        let log = |world: &mut World, ti: usize, status: u16| {
            if is_write {
                world.record_write(ti, &at, &req.method, &req.path, status, req.body.clone());
            }
        };
        let Some(token) = world.bearer(req.authorization.as_deref(), now_ms).cloned() else {
            let issued = world.issued(req.authorization.as_deref()).cloned();
            let message = match &issued {
                None if req.authorization.is_none() => "Access token is empty.",
                Some(t) if t.audience == crate::token::Audience::Portal => {
                    "Access token validation failure. Invalid audience."
                }
                _ => "Access token has expired or is not yet valid.",
            };
            let mut r = SimResponse::error(401, "InvalidAuthenticationToken", message);
            r.stamp(&request_id, req.client_request_id.as_deref(), &now);
            if let Some(t) = issued {
                log(&mut world, t.tenant, r.status);
            }
            return Outcome::Respond { delay_ms: 0, response: r };
        };
        let ti = token.tenant;
        if world.faults[ti].consent_revoked {
            let mut r = SimResponse::error(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid: consent was revoked.",
            );
            r.stamp(&request_id, req.client_request_id.as_deref(), &now);
            log(&mut world, ti, r.status);
            return Outcome::Respond { delay_ms: 0, response: r };
        }
        let delay_ms = {
            let (lo, hi) = world.faults[ti].latency_ms;
            if hi > lo { rand::Rng::random_range(&mut world.rng, lo..=hi) } else { lo }
        };
        let delay_ms = clock.real_ms_for(delay_ms);
        if req.path.eq_ignore_ascii_case("/$batch") && req.method.eq_ignore_ascii_case("POST") {
            let mut response = self.batch(&mut world, &token, &req, now_ms, &now);
            response.stamp(&request_id, req.client_request_id.as_deref(), &now);
            // A batch that ran is logged as its items; one refused as a whole, as itself.
            if !response.is_success() {
                log(&mut world, ti, response.status);
            }
            return Outcome::Respond { delay_ms, response };
        }
        match self.inject(&mut world, ti) {
            Injected::Drop => {
                log(&mut world, ti, 0);
                return Outcome::Drop { delay_ms };
            }
            Injected::Status { status, retry_after } => {
                let mut r = fault_response(status, retry_after);
                self.count(&mut world, &token, &req.method, &req.path, now_ms);
                if let Some(secs) = retry_after {
                    let tenant_id = world.tenants[ti].id.clone();
                    world.throttle.told_to_wait(&token.client_id, &tenant_id, now_ms, secs);
                }
                r.stamp(&request_id, req.client_request_id.as_deref(), &now);
                log(&mut world, ti, r.status);
                return Outcome::Respond { delay_ms, response: r };
            }
            Injected::None => {}
        }
        let mut response = self.single(
            &mut world,
            &token,
            &req.method,
            &req.path,
            &req.query,
            req.body.clone(),
            &req.base_url,
            now_ms,
            &now,
        );
        response.stamp(&request_id, req.client_request_id.as_deref(), &now);
        log(&mut world, ti, response.status);
        Outcome::Respond { delay_ms, response }
    }

    fn count(
        &self,
        world: &mut World,
        token: &crate::token::IssuedToken,
        method: &str,
        path: &str,
        now_ms: i64,
    ) {
        self.count_as(world, token, method, template(method, path), now_ms);
    }

    /// Counts one request of `token`'s tenant under the endpoint name `endpoint`.
    pub(crate) fn count_as(
        &self,
        world: &mut World,
        token: &crate::token::IssuedToken,
        method: &str,
        endpoint: String,
        now_ms: i64,
    ) {
        let ti = token.tenant;
        let tenant_id = world.tenants[ti].id.clone();
        let mut early = world.throttle.early_by_ms(&token.client_id, &tenant_id, now_ms);
        // A report read is early inside a report `Retry-After` too (of the pair or the app).
        let report = endpoint.split_once(' ').is_some_and(|(m, p)| throttle::is_report_read(m, p));
        if report && self.inner.settings.throttle.reports {
            early =
                early.max(world.throttle.report_early_by_ms(&token.client_id, &tenant_id, now_ms));
        }
        let stats = &mut world.stats[ti];
        stats.requests += 1;
        if !method.eq_ignore_ascii_case("GET") {
            stats.writes += 1;
        }
        if let Some(ms) = early {
            stats.early_requests += 1;
            stats.early_ms_max = stats.early_ms_max.max(ms);
            *stats.early_by_endpoint.entry(endpoint.clone()).or_default() += 1;
        }
        *stats.by_endpoint.entry(endpoint).or_default() += 1;
    }

    /// Picks the fault for the next request of tenant `ti`, if any.
    fn inject(&self, world: &mut World, ti: usize) -> Injected {
        let World { faults, rng, stats, .. } = world;
        let f = &mut faults[ti];
        let injected = if let Some(s) = f.script.pop_front() {
            if s.status == 0 {
                Injected::Drop
            } else {
                Injected::Status { status: s.status, retry_after: s.retry_after }
            }
        } else {
            let roll: f64 = rand::Rng::random(rng);
            if roll < f.rate_drop {
                Injected::Drop
            } else if roll < f.rate_drop + f.rate_503 {
                Injected::Status { status: 503, retry_after: Some(f.retry_after_503_secs.max(1)) }
            } else if roll < f.rate_drop + f.rate_503 + f.rate_504 {
                Injected::Status { status: 504, retry_after: None }
            } else {
                Injected::None
            }
        };
        if injected != Injected::None {
            stats[ti].faults += 1;
        }
        injected
    }

    /// Counts, throttles and routes one request (a single call or a `$batch` item).
    #[allow(clippy::too_many_arguments)]
    fn single(
        &self,
        world: &mut World,
        token: &crate::token::IssuedToken,
        method: &str,
        path: &str,
        query: &str,
        body: Option<Value>,
        base_url: &str,
        now_ms: i64,
        now: &str,
    ) -> SimResponse {
        let ti = token.tenant;
        self.count(world, token, method, path, now_ms);
        let tenant_id = world.tenants[ti].id.clone();
        let (ru, write) = throttle::cost(method, path, query);
        let users = world.tenants[ti].users.len();
        let settings = &self.inner.settings.throttle;
        // Report reads are charged to the reporting buckets only, never resource units.
        let report = settings.reports && throttle::is_report_read(method, path);
        let charged = if report {
            match world.throttle.charge_report(settings, &token.client_id, &tenant_id, now_ms) {
                Ok(()) => None,
                Err((t, bound)) => {
                    world.stats[ti].throttled += 1;
                    world.throttle.told(bound, now_ms, t.retry_after_secs);
                    return too_many_requests(t);
                }
            }
        } else {
            Some(
                match world.throttle.charge(
                    &self.inner.settings.throttle,
                    &token.client_id,
                    &tenant_id,
                    users,
                    ru,
                    write,
                    now_ms,
                ) {
                    Ok(c) => c,
                    Err(t) => {
                        world.stats[ti].throttled += 1;
                        if write {
                            world.stats[ti].throttled_writes += 1;
                        }
                        world.throttle.told_to_wait(
                            &token.client_id,
                            &tenant_id,
                            now_ms,
                            t.retry_after_secs,
                        );
                        return too_many_requests(t);
                    }
                },
            )
        };
        let ctx = Ctx {
            tenant: ti,
            roles: &token.roles,
            now_ms,
            now: now.to_owned(),
            base_url,
            settings: &self.inner.settings,
        };
        let mut response = route(world, &ctx, method, path, query, body);
        if let Some(charged) = charged.filter(|_| response.is_success()) {
            response = response.header("x-ms-resource-unit", charged.resource_units.to_string());
            if let Some(p) = charged.limit_percentage {
                response = response.header("x-ms-throttle-limit-percentage", format!("{p:.1}"));
            }
        }
        response
    }

    /// `POST /$batch`: up to 20 requests with unique ids, `dependsOn`, per-item throttling,
    /// 424 for dependents of failed items, answers in any order.
    fn batch(
        &self,
        world: &mut World,
        token: &crate::token::IssuedToken,
        req: &GraphRequest,
        now_ms: i64,
        now: &str,
    ) -> SimResponse {
        let Some(requests) =
            req.body.as_ref().and_then(|b| b.get("requests")).and_then(Value::as_array)
        else {
            return SimResponse::error(400, "BadRequest", "Invalid batch payload format.");
        };
        if requests.is_empty() || requests.len() > 20 {
            return SimResponse::error(
                400,
                "BadRequest",
                "Invalid batch payload format: the number of requests must be between 1 and 20.",
            );
        }
        let mut ids = Vec::new();
        for r in requests {
            let id = r.get("id").and_then(|v| {
                v.as_str().map(str::to_owned).or_else(|| v.as_u64().map(|n| n.to_string()))
            });
            let Some(id) = id else {
                return SimResponse::error(400, "BadRequest", "Each request needs an id.");
            };
            if ids.contains(&id) {
                return SimResponse::error(
                    400,
                    "BadRequest",
                    format!("Request id '{id}' is not unique."),
                );
            }
            let url = r.get("url").and_then(Value::as_str).unwrap_or("");
            if url.starts_with("http") || r.get("method").and_then(Value::as_str).is_none() {
                return SimResponse::error(
                    400,
                    "BadRequest",
                    "Each request needs a method and a relative url.",
                );
            }
            if r.get("body").is_some() && !has_json_content_type(r) {
                return SimResponse::error(
                    400,
                    "BadRequest",
                    "Content-Type header is required for a request with a body.",
                );
            }
            ids.push(id);
        }
        let depends: Vec<Vec<String>> = requests
            .iter()
            .map(|r| {
                r.get("dependsOn")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default()
            })
            .collect();
        for d in depends.iter().flatten() {
            if !ids.contains(d) {
                return SimResponse::error(
                    400,
                    "BadRequest",
                    format!("dependsOn refers to unknown request id '{d}'."),
                );
            }
        }
        let at = self.stamp_ms(now_ms);
        let mut status: Vec<Option<u16>> = vec![None; requests.len()];
        world.throttle.begin_batch();
        let mut out: Vec<Value> = Vec::new();
        // Run in dependency order; a cycle leaves items that never become ready.
        loop {
            let ready: Vec<usize> = (0..requests.len())
                .filter(|&i| status[i].is_none())
                .filter(|&i| {
                    depends[i].iter().all(|d| {
                        ids.iter().position(|x| x == d).is_some_and(|j| status[j].is_some())
                    })
                })
                .collect();
            if ready.is_empty() {
                break;
            }
            for i in ready {
                let failed_dep = depends[i].iter().any(|d| {
                    ids.iter()
                        .position(|x| x == d)
                        .and_then(|j| status[j])
                        .is_some_and(|s| s >= 400)
                });
                let r = &requests[i];
                let method =
                    r.get("method").and_then(Value::as_str).unwrap_or("GET").to_ascii_uppercase();
                let url = r.get("url").and_then(Value::as_str).unwrap_or("");
                let url = if url.starts_with('/') { url.to_owned() } else { format!("/{url}") };
                let (path, query) = url
                    .split_once('?')
                    .map_or((url.clone(), String::new()), |(p, q)| (p.to_owned(), q.to_owned()));
                let response = if failed_dep {
                    SimResponse::error(
                        424,
                        "FailedDependency",
                        "The request failed because it depends on a request that failed.",
                    )
                } else {
                    match self.inject(world, token.tenant) {
                        Injected::Status { status, retry_after } => {
                            self.count(world, token, &method, &path, now_ms);
                            if let Some(secs) = retry_after {
                                let tenant_id = world.tenants[token.tenant].id.clone();
                                world.throttle.told_to_wait(
                                    &token.client_id,
                                    &tenant_id,
                                    now_ms,
                                    secs,
                                );
                            }
                            fault_response(status, retry_after)
                        }
                        // A dropped connection cannot happen to one item; treat it as a 503.
                        Injected::Drop => fault_response(503, Some(1)),
                        Injected::None => self.single(
                            world,
                            token,
                            &method,
                            &path,
                            &query,
                            r.get("body").cloned(),
                            &req.base_url,
                            now_ms,
                            now,
                        ),
                    }
                };
                status[i] = Some(response.status);
                if method != "GET" {
                    world.record_write(
                        token.tenant,
                        &at,
                        &method,
                        &path,
                        response.status,
                        r.get("body").cloned(),
                    );
                }
                let mut item = json!({"id": ids[i], "status": response.status});
                let headers: serde_json::Map<String, Value> = response
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                let mut headers = headers;
                if response.body.is_some() {
                    headers.insert("Content-Type".into(), Value::String("application/json".into()));
                }
                item["headers"] = Value::Object(headers);
                if let Some(body) = response.body {
                    item["body"] = body;
                }
                out.push(item);
            }
        }
        for (i, s) in status.iter().enumerate() {
            if s.is_none() {
                let r = &requests[i];
                let method =
                    r.get("method").and_then(Value::as_str).unwrap_or("GET").to_ascii_uppercase();
                if method != "GET" {
                    let url = r.get("url").and_then(Value::as_str).unwrap_or("");
                    let path = url.split('?').next().unwrap_or("");
                    let path =
                        if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
                    world.record_write(
                        token.tenant,
                        &at,
                        &method,
                        &path,
                        424,
                        r.get("body").cloned(),
                    );
                }
                out.push(json!({"id": ids[i], "status": 424, "headers": {}, "body": {"error": {"code": "FailedDependency", "message": "Circular dependsOn.", "innerError": {}}}}));
            }
        }
        world.throttle.end_batch();
        rand::seq::SliceRandom::shuffle(out.as_mut_slice(), &mut world.rng);
        SimResponse::json(200, json!({"responses": out}))
    }
}

fn has_json_content_type(r: &Value) -> bool {
    r.get("headers").and_then(Value::as_object).is_some_and(|h| {
        h.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("content-type") && v.as_str().is_some_and(|v| v.contains("json"))
        })
    })
}

/// Graph's 429: the error body, `Retry-After`, `x-ms-throttle-scope` and, where known,
/// `x-ms-throttle-information`.
fn too_many_requests(t: throttle::Throttled) -> SimResponse {
    let mut r = SimResponse::json(
        429,
        json!({"error": {"code": "TooManyRequests", "message": "Please retry again later.", "innerError": {"code": "429", "message": "Please retry after", "status": "429"}}}),
    )
    .header("Retry-After", t.retry_after_secs.to_string())
    .header("x-ms-throttle-scope", t.scope);
    if let Some(info) = t.information {
        r = r.header("x-ms-throttle-information", info);
    }
    r
}

fn fault_response(status: u16, retry_after: Option<u64>) -> SimResponse {
    let (code, message) = match status {
        429 => ("TooManyRequests", "Please retry again later."),
        503 => ("serviceNotAvailable", "Service is temporarily unavailable. Please retry later."),
        504 => ("GatewayTimeout", "The gateway timed out."),
        _ => ("generalException", "An unexpected error occurred."),
    };
    let mut r = SimResponse::error(status, code, message);
    if let Some(secs) = retry_after {
        r = r.header("Retry-After", secs.to_string());
    }
    r
}

/// Routes a request to its handler.
fn route(
    world: &mut World,
    ctx: &Ctx<'_>,
    method: &str,
    path: &str,
    query: &str,
    body: Option<Value>,
) -> SimResponse {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let m = method.to_ascii_uppercase();
    let q = match query::Query::parse(query) {
        Ok(q) => q,
        Err(e) => return e,
    };
    let result = match (m.as_str(), l.as_slice()) {
        ("GET", ["policies", "authenticationmethodspolicy"]) => policy::get_policy(world, ctx),
        ("PATCH", ["policies", "authenticationmethodspolicy"]) => {
            policy::patch_policy(world, ctx, body)
        }
        (
            "GET",
            ["policies", "authenticationmethodspolicy", "authenticationmethodconfigurations"],
        ) => policy::list_configs(world, ctx),
        (
            "GET",
            ["policies", "authenticationmethodspolicy", "authenticationmethodconfigurations", _],
        ) => policy::get_config(world, ctx, segs[3]),
        (
            "PATCH",
            ["policies", "authenticationmethodspolicy", "authenticationmethodconfigurations", _],
        ) => policy::patch_config(world, ctx, segs[3], body),
        (
            "DELETE",
            ["policies", "authenticationmethodspolicy", "authenticationmethodconfigurations", _],
        ) => policy::delete_config(world, ctx, segs[3]),
        ("GET", ["policies", "authorizationpolicy"]) => policy::get_authorization(world, ctx),
        ("PATCH", ["policies", "authorizationpolicy"]) => {
            policy::patch_authorization(world, ctx, body)
        }
        ("GET", ["subscribedskus"]) => directory::list_skus(world, ctx, &q),
        ("GET", ["subscribedskus", _]) => directory::get_sku(world, ctx, segs[1]),
        ("GET", ["organization"]) => directory::list_organization(world, ctx),
        ("GET", ["organization", _]) => directory::get_organization(world, ctx, segs[1]),
        ("GET", ["directory", "onpremisessynchronization", ..]) => Err(SimResponse::error(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation. This API does not support application permissions.",
        )),
        ("GET", ["reports", "authenticationmethods", "userregistrationdetails"]) => {
            reports::list_details(world, ctx, &q, path)
        }
        ("GET", ["reports", "authenticationmethods", "userregistrationdetails", _]) => {
            reports::get_details(world, ctx, segs[3])
        }
        ("GET", ["reports", "authenticationmethods", f])
            if f.starts_with("usersregisteredbyfeature") =>
        {
            reports::by_feature(world, ctx, segs[2])
        }
        ("GET", ["reports", "authenticationmethods", f])
            if f.starts_with("usersregisteredbymethod") =>
        {
            reports::by_method(world, ctx, segs[2])
        }
        ("GET", ["auditlogs", "directoryaudits"]) => reports::list_audits(world, ctx, &q, path),
        ("GET", ["auditlogs", "directoryaudits", _]) => reports::get_audit(world, ctx, segs[2]),
        ("GET", ["groups"]) => groups::list(world, ctx, &q, path),
        ("POST", ["groups"]) => groups::create(world, ctx, body),
        ("GET", ["groups", _]) => groups::get(world, ctx, segs[1]),
        ("PATCH", ["groups", _]) => groups::patch(world, ctx, segs[1], body),
        ("DELETE", ["groups", _]) => groups::delete(world, ctx, segs[1]),
        ("GET", ["groups", _, "members"]) => groups::members(world, ctx, segs[1], &q, path),
        ("POST", ["groups", _, "members", "$ref"]) => groups::add_member(world, ctx, segs[1], body),
        ("DELETE", ["groups", _, "members", _, "$ref"]) => {
            groups::remove_member(world, ctx, segs[1], segs[3])
        }
        ("GET", ["users"]) => directory::list_users(world, ctx, &q, path),
        ("GET", ["users", _]) => directory::get_user(world, ctx, segs[1]),
        _ => {
            let known = matches!(
                l.first().copied(),
                Some(
                    "policies"
                        | "subscribedskus"
                        | "organization"
                        | "directory"
                        | "reports"
                        | "auditlogs"
                        | "groups"
                        | "users"
                )
            );
            if known {
                Err(SimResponse::error(
                    405,
                    "Request_BadRequest",
                    format!("The HTTP method '{m}' is not allowed for this resource."),
                ))
            } else {
                Err(SimResponse::error(
                    400,
                    "BadRequest",
                    format!(
                        "Resource not found for the segment '{}'.",
                        segs.first().copied().unwrap_or("")
                    ),
                ))
            }
        }
    };
    result.unwrap_or_else(|e| e)
}

/// Handler result: the response, or an error response.
pub(crate) type HResult = Result<SimResponse, SimResponse>;

/// A JSON body object, or 400.
pub(crate) fn body_object(
    body: Option<Value>,
) -> Result<serde_json::Map<String, Value>, SimResponse> {
    match body {
        Some(Value::Object(map)) => Ok(map),
        _ => Err(SimResponse::bad_request("Empty Payload. JSON content expected.")),
    }
}

#[cfg(test)]
mod tests {
    use super::template;

    #[test]
    fn templates_hide_ids_but_keep_fixed_segments() {
        assert_eq!(template("get", "/groups/abc/members"), "GET /groups/{id}/members");
        assert_eq!(template("POST", "/groups/abc/members/$ref"), "POST /groups/{id}/members/$ref");
        assert_eq!(
            template(
                "PATCH",
                "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/Sms"
            ),
            "PATCH /policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{id}"
        );
        assert_eq!(
            template(
                "GET",
                "/reports/authenticationMethods/usersRegisteredByFeature(includedUserTypes='all')"
            ),
            "GET /reports/authenticationMethods/usersRegisteredByFeature"
        );
    }
}
