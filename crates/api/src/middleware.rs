//! Cross-cutting middleware: request ids and spans, the audit log, and turning every error
//! response into problem+json.

use std::time::Instant;

use actix_web::{
    HttpMessage,
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{Method, StatusCode, header},
    middleware::{ErrorHandlerResponse, Next},
    web,
};
use sspr_store::NewAuditEntry;
use tracing::Instrument;

use crate::{
    AppState,
    auth::Caller,
    error::{ErrorChain, PROBLEM_JSON, problem_for_status, problem_response},
};

/// The header that carries the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the current request, in request extensions.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

/// Set by a handler (through request extensions) to record which tenant a write concerned.
#[derive(Debug, Clone)]
pub(crate) struct AuditTenant(pub String);

/// Set by a handler to add facts (never secrets) to the audit entry of a write.
#[derive(Debug, Clone)]
pub(crate) struct AuditDetails(pub serde_json::Value);

/// Accepts a caller's request id only if it is short and plain, so it is safe in logs.
fn acceptable_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Outermost middleware: assigns the request id, opens the request span, logs the outcome and
/// echoes the id in `x-request-id`.
pub(crate) async fn request_context(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_request_id(v))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "http_request",
        http.method = %req.method(),
        http.route = tracing::field::Empty,
        http.status = tracing::field::Empty,
        request_id = %request_id,
        key_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    // HEAD is answered wherever GET is (RFC 9110 section 9.3.2): route it as GET; the HTTP
    // layer remembers the request was HEAD and sends the headers without the body.
    if method == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    // Inner middleware answers its own errors with responses (see `auth::authenticate`), so
    // every response passes here and gets the request id.
    let mut response = next.call(req).instrument(span.clone()).await?;
    let status = response.status();
    if let Some(route) = response.request().match_pattern() {
        span.record("http.route", route.as_str());
    }
    span.record("http.status", status.as_u16());
    let elapsed_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    span.in_scope(|| {
        tracing::info!(%method, %path, status = status.as_u16(), elapsed_ms, "request finished");
    });
    if let Ok(value) = header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(header::HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(response)
}

/// Largest request head (the sum of header names and values) the application accepts. The
/// HTTP codec itself refuses heads over 128 KiB or with more than 96 headers, with a bare 431
/// this middleware never sees; below that, this limit answers with a problem.
pub(crate) const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses requests whose headers together exceed [`MAX_HEADER_BYTES`]: 431
/// `request_header_fields_too_large`.
pub(crate) async fn limit_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let size: usize =
        req.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if size <= MAX_HEADER_BYTES {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let problem = problem_for_status(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Some(format!("the request headers are larger than {MAX_HEADER_BYTES} bytes")),
    );
    Ok(req.into_response(problem_response(&problem)).map_into_right_body())
}

fn is_write(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// Inside authentication on `/v1`: appends every write (successful or refused) to the audit
/// log with the key that made it.
pub(crate) async fn audit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let write = is_write(req.method());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let response = next.call(req).await?;
    if !write {
        return Ok(response);
    }
    let Some(state) = state else { return Ok(response) };
    let entry = {
        let request = response.request();
        let extensions = request.extensions();
        let caller = extensions.get::<Caller>();
        let route = request.match_pattern().unwrap_or_else(|| request.path().to_owned());
        caller.map(|caller| NewAuditEntry {
            at: state.clock.now(),
            actor: caller.key_id.to_string(),
            action: format!("{} {route}", request.method()),
            target: request.path().to_owned(),
            tenant_id: extensions.get::<AuditTenant>().map(|t| t.0.clone()),
            status: response.status().as_u16(),
            request_id: extensions.get::<RequestId>().map(|r| r.0.clone()),
            details: extensions
                .get::<AuditDetails>()
                .map_or_else(|| serde_json::json!({}), |d| d.0.clone()),
        })
    };
    let Some(entry) = entry else { return Ok(response) };
    if let Err(err) = state.store.append_audit(entry).await {
        // The write itself has happened; failing the response now would invite a retry that
        // repeats it. Log loudly instead.
        tracing::error!(error = %ErrorChain(&err), "cannot append to the audit log");
    }
    Ok(response)
}

/// Marks a response (in its extensions) whose error body is meant for a person and must stay
/// as it is: the HTML pages of `crate::status`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeepErrorBody;

/// Rewrites any error response that is not already problem+json (router 404/405s, extractor
/// errors, framework errors) into problem+json with a stable code. Responses marked with
/// [`KeepErrorBody`] pass unchanged.
pub(crate) fn problemize<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    if is_problem || res.response().extensions().get::<KeepErrorBody>().is_some() {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let detail = res.response().error().map(|e| e.to_string());
    if let (true, Some(detail)) = (status.is_server_error(), &detail) {
        tracing::error!(error = %detail, status = status.as_u16(), "request failed");
    }
    let mut replacement = problem_response(&problem_for_status(status, detail));
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replacement.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let (req, _) = res.into_parts();
    let res = ServiceResponse::new(req, replacement).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_callers_are_accepted_only_when_plain() {
        assert!(acceptable_request_id("3f2c-ab.9:x_1"));
        assert!(!acceptable_request_id(""));
        assert!(!acceptable_request_id("with space"));
        assert!(!acceptable_request_id("line\nbreak"));
        assert!(!acceptable_request_id(&"a".repeat(129)));
    }
}
