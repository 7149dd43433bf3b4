//! The HTTP face of the simulator: Graph under `/v1.0`, the token endpoints (v2 for Graph, v1
//! for the portal's delegated tokens), the portal's undocumented SSPR policy endpoint, and the
//! control API under `/_sim` (what a technician does in the portal, plus clock, statistics
//! and the write log).

use std::time::Duration;

use actix_web::{
    App, HttpRequest, HttpResponse, HttpServer,
    dev::ServerHandle,
    http::{StatusCode, header::HeaderName},
    web,
};
use serde_json::{Value, json};

use crate::{
    Faults, GraphSim, LegacySspr, SimError,
    graph::{GraphRequest, Outcome},
    portal::{POLICY_PATH, PortalRequest},
    response::SimResponse,
};

/// A simulator serving on a socket.
#[derive(Debug)]
pub struct RunningSim {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningSim {
    /// `http://addr`, the base for both the Graph and the login URL settings.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and waits for the server to finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

pub(crate) fn serve(sim: GraphSim, listener: std::net::TcpListener) -> std::io::Result<RunningSim> {
    let addr = listener.local_addr()?;
    let data = web::Data::new(sim);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
            .route("/{tenant}/oauth2/v2.0/token", web::post().to(token))
            .route("/{tenant}/oauth2/token", web::post().to(portal_token))
            .route(POLICY_PATH, web::get().to(portal))
            .route(POLICY_PATH, web::put().to(portal))
            .route("/v1.0/{tail:.*}", web::route().to(graph))
            .service(
                web::scope("/_sim")
                    .route("/tenants", web::get().to(list_tenants))
                    .route("/tenants/{id}", web::get().to(tenant_state))
                    .route("/tenants/{id}/legacy-sspr", web::put().to(set_legacy))
                    .route("/tenants/{id}/legacy-sspr", web::get().to(get_legacy))
                    .route("/tenants/{id}/faults", web::put().to(set_faults))
                    .route("/tenants/{id}/resets", web::post().to(record_reset))
                    .route("/tenants/{id}/stats", web::get().to(tenant_stats))
                    .route("/tenants/{id}/writes", web::get().to(tenant_writes))
                    .route("/stats", web::get().to(total_stats))
                    .route("/clock", web::get().to(clock))
                    .route("/clock/advance", web::post().to(advance)),
            )
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(json!({"error": {"code": "BadRequest", "message": "Unsupported path.", "innerError": {}}}))
            }))
    })
    .disable_signals()
    .workers(2)
    .shutdown_timeout(2)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    Ok(RunningSim { addr, handle, task })
}

fn to_http(r: SimResponse) -> HttpResponse {
    let mut builder = HttpResponse::build(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    for (k, v) in &r.headers {
        if let Ok(name) = HeaderName::try_from(k.as_str()) {
            builder.insert_header((name, v.as_str()));
        }
    }
    match r.body {
        Some(body) => builder.content_type("application/json").body(body.to_string()),
        None => builder.finish(),
    }
}

fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

async fn token(
    sim: web::Data<GraphSim>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    to_http(sim.token(&path, &form))
}

async fn portal_token(
    sim: web::Data<GraphSim>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    to_http(sim.portal_token(&path, &form))
}

async fn portal(sim: web::Data<GraphSim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let header =
        |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let client_request_id = header("x-ms-client-request-id");
    let body = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(b) => Some(b),
            Err(e) => {
                let mut r = SimResponse::bad_request(format!("The request body is not JSON: {e}"));
                r.stamp(
                    &uuid::Uuid::new_v4().to_string(),
                    client_request_id.as_deref(),
                    &sim.clock().now().to_rfc3339(),
                );
                sim.record_unreadable_write(
                    header("authorization").as_deref(),
                    req.method().as_str(),
                    POLICY_PATH,
                    r.status,
                );
                return to_http(r);
            }
        }
    };
    to_http(sim.portal(PortalRequest {
        method: req.method().as_str().to_owned(),
        query: req.query_string().to_owned(),
        authorization: header("authorization"),
        client_request_id,
        body,
    }))
}

async fn graph(sim: web::Data<GraphSim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let tail = req.match_info().get("tail").unwrap_or("").to_owned();
    let header =
        |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let parsed =
        if body.is_empty() { Ok(None) } else { serde_json::from_slice::<Value>(&body).map(Some) };
    let body = match parsed {
        Ok(b) => b,
        Err(e) => {
            let mut r = SimResponse::error(
                400,
                "BadRequest",
                format!("Unable to read JSON request payload: {e}"),
            );
            r.stamp(
                &uuid::Uuid::new_v4().to_string(),
                header("client-request-id").as_deref(),
                &sim.clock().now().to_rfc3339(),
            );
            sim.record_unreadable_write(
                header("authorization").as_deref(),
                req.method().as_str(),
                &format!("/{tail}"),
                r.status,
            );
            return to_http(r);
        }
    };
    let request = GraphRequest {
        method: req.method().as_str().to_owned(),
        path: format!("/{tail}"),
        query: req.query_string().to_owned(),
        authorization: header("authorization"),
        client_request_id: header("client-request-id"),
        body,
        base_url: base_url(&req),
    };
    match sim.graph(request) {
        Outcome::Respond { delay_ms, response } => {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            to_http(response)
        }
        Outcome::Drop { delay_ms } => {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            // Promise a body, then fail it: the server closes the connection mid-response,
            // which the client sees as a dropped connection.
            let broken = futures_util::stream::once(async {
                Err::<web::Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "dropped",
                ))
            });
            HttpResponse::Ok().insert_header(("content-length", "4096")).streaming(broken)
        }
    }
}

fn control_error(e: SimError) -> HttpResponse {
    match e {
        SimError::UnknownTenant(_) => {
            HttpResponse::NotFound().json(json!({"error": e.to_string()}))
        }
        SimError::Invalid(_) => HttpResponse::BadRequest().json(json!({"error": e.to_string()})),
    }
}

async fn list_tenants(sim: web::Data<GraphSim>) -> HttpResponse {
    let world = sim.inner.world.lock();
    let tenants: Vec<Value> = world
        .tenants
        .iter()
        .map(|t| json!({"id": t.id, "displayName": t.display_name, "domain": t.primary_domain(), "users": t.users.len(), "premium": t.has_premium(), "legacySspr": t.legacy.enablement}))
        .collect();
    HttpResponse::Ok().json(json!({"tenants": tenants}))
}

async fn tenant_state(sim: web::Data<GraphSim>, id: web::Path<String>) -> HttpResponse {
    sim.tenant_state(&id).map_or_else(control_error, |s| HttpResponse::Ok().json(s))
}

async fn set_legacy(
    sim: web::Data<GraphSim>,
    id: web::Path<String>,
    body: web::Json<LegacySspr>,
) -> HttpResponse {
    sim.set_legacy_sspr(&id, body.into_inner())
        .map_or_else(control_error, |()| HttpResponse::NoContent().finish())
}

async fn get_legacy(sim: web::Data<GraphSim>, id: web::Path<String>) -> HttpResponse {
    sim.legacy_sspr(&id).map_or_else(control_error, |l| HttpResponse::Ok().json(l))
}

async fn set_faults(
    sim: web::Data<GraphSim>,
    id: web::Path<String>,
    body: web::Json<Faults>,
) -> HttpResponse {
    sim.set_faults(&id, body.into_inner())
        .map_or_else(control_error, |()| HttpResponse::NoContent().finish())
}

#[derive(serde::Deserialize)]
struct ResetBody {
    user: String,
}

async fn record_reset(
    sim: web::Data<GraphSim>,
    id: web::Path<String>,
    body: web::Json<ResetBody>,
) -> HttpResponse {
    sim.record_reset(&id, &body.user)
        .map_or_else(control_error, |()| HttpResponse::NoContent().finish())
}

async fn tenant_stats(sim: web::Data<GraphSim>, id: web::Path<String>) -> HttpResponse {
    sim.stats(&id).map_or_else(control_error, |s| HttpResponse::Ok().json(s))
}

async fn tenant_writes(sim: web::Data<GraphSim>, id: web::Path<String>) -> HttpResponse {
    sim.writes(&id).map_or_else(control_error, |w| HttpResponse::Ok().json(json!({"writes": w})))
}

async fn total_stats(sim: web::Data<GraphSim>) -> HttpResponse {
    HttpResponse::Ok().json(sim.total_stats())
}

async fn clock(sim: web::Data<GraphSim>) -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({"now": sim.clock().now(), "elapsedMs": sim.clock().elapsed_ms()}))
}

#[derive(serde::Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance(sim: web::Data<GraphSim>, body: web::Json<Advance>) -> HttpResponse {
    sim.clock().advance(chrono::TimeDelta::seconds(body.seconds));
    HttpResponse::Ok().json(json!({"now": sim.clock().now()}))
}
