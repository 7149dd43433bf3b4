//! `Idempotency-Key` on every POST under `/v1`: a client that repeats a POST with the same
//! key (after a timeout, say) gets the first answer again, marked `Idempotency-Replayed:
//! true`, instead of a second effect. The same key with another request (method, path, query
//! or body) is 422 `idempotency_key_reused`; a repeat while the first request still runs is
//! 409 `idempotency_key_in_use`. Keys are per API key and kept for 24 hours. Server errors are
//! not recorded, so a retry after a 5xx runs again.
//!
//! Two rules keep the record from becoming a liability:
//!
//! - **No secret is recorded.** A handler whose answer carries a secret (a new API key, a
//!   webhook signing secret) marks it with [`carries_secret`], naming the top-level JSON
//!   fields that hold it. The answer is recorded with those fields `null` and replayed so, with
//!   `Idempotency-Secret-Withheld` naming them: a secret is shown once, to the first answer. As
//!   a second line of defence, an answer that still looks like it holds a key or a signing
//!   secret is not recorded at all.
//! - **Nothing is buffered before authorisation, nor beyond the route's limit.** Every POST
//!   under `/v1` needs at least the operator role, so a viewer's is refused (403) before its
//!   body is read; the body is then read up to the route's own limit (`max_body_bytes`, or
//!   `max_import_bytes` for the import) and refused with 413 as soon as it passes it (at once
//!   when `Content-Length` says so).

use actix_web::{
    HttpMessage, HttpRequest, HttpResponse,
    body::{BoxBody, MessageBody, to_bytes},
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::Next,
    web,
};
use chrono::TimeDelta;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use sspr_domain::Role;
use sspr_store::{IdempotencyClaim, IdempotentRequest, StoredAnswer};

use crate::{ApiSettings, AppState, auth::Caller, error::ApiError};

/// The request header.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a replayed answer.
pub(crate) const REPLAYED: &str = "idempotency-replayed";
/// Set on a replayed answer whose secret fields were withheld: their names, comma-separated.
pub(crate) const SECRET_WITHHELD: &str = "idempotency-secret-withheld";
/// The one route whose body may exceed `max_body_bytes` (up to `max_import_bytes`).
pub(crate) const IMPORT_PATH: &str = "/v1/tenants:import";
/// The least role that may make any POST under `/v1`: checked before a body is read.
const LEAST_ROLE_TO_POST: Role = Role::Operator;
/// Prefixes of the secrets this API hands out (API keys, webhook signing secrets): an answer
/// that still holds one after its marked fields were withheld is not recorded.
const SECRET_PREFIXES: [&str; 2] = [crate::auth::TOKEN_PREFIX, "whsec_"];
/// How long a key is remembered.
const TTL: TimeDelta = TimeDelta::hours(24);
/// How long a first request may run before its claim is taken to be abandoned (its process
/// died); well above any request's timeout.
const ABANDONED_AFTER: TimeDelta = TimeDelta::minutes(10);
/// Longest key accepted.
const MAX_KEY: usize = 255;

/// Marks the answer to a request as carrying a secret in `fields` (top-level fields of its
/// JSON body). Kept with the request, never sent: the middleware records such an answer with
/// those fields `null`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CarriesSecret(&'static [&'static str]);

/// Marks the answer to `req` as carrying a secret in the top-level JSON `fields`; call it from
/// every handler whose answer carries one, before answering.
pub(crate) fn carries_secret(req: &HttpRequest, fields: &'static [&'static str]) {
    req.extensions_mut().insert(CarriesSecret(fields));
}

/// The most bytes of body a POST to `path` (as routed) may carry.
pub(crate) fn body_limit(settings: &ApiSettings, path: &str) -> usize {
    if path == IMPORT_PATH { settings.max_import_bytes } else { settings.max_body_bytes }
}

/// Reads `payload` whole, failing with 413 as soon as it passes `limit` (before reading
/// anything when `declared`, the `Content-Length`, is over it already).
pub(crate) async fn read_limited<S, E>(
    declared: Option<u64>,
    mut payload: S,
    limit: usize,
) -> Result<web::Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<web::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Whether `text` holds something shaped like a secret this API hands out: a prefix followed
/// by at least 32 base64 characters.
fn looks_like_secret(text: &str) -> bool {
    SECRET_PREFIXES.iter().any(|prefix| {
        text.match_indices(prefix).any(|(at, _)| {
            text[at + prefix.len()..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/'))
                .count()
                >= 32
        })
    })
}

/// What to record of an answer: its body with the `marked` fields `null`, and the names of
/// the fields withheld. `None` when it cannot be recorded without a secret (the body is not a
/// JSON object although marked, or it still looks like it holds one): then it is not recorded.
fn recordable(body: &[u8], marked: Option<CarriesSecret>) -> Option<(String, Option<String>)> {
    let text = std::str::from_utf8(body).ok()?;
    let (text, withheld) = match marked {
        None => (text.to_owned(), None),
        Some(CarriesSecret(fields)) => {
            let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
            let object = value.as_object_mut()?;
            let mut withheld = Vec::new();
            for field in fields {
                if let Some(v) = object.get_mut(*field)
                    && !v.is_null()
                {
                    *v = serde_json::Value::Null;
                    withheld.push(*field);
                }
            }
            let withheld = (!withheld.is_empty()).then(|| withheld.join(","));
            (serde_json::to_string(&value).ok()?, withheld)
        }
    };
    (!looks_like_secret(&text)).then_some((text, withheld))
}

fn invalid(message: &str) -> ApiError {
    ApiError::Idempotency { code: "invalid_idempotency_key", message: message.to_owned() }
}

fn fail(req: ServiceRequest, e: ApiError) -> ServiceResponse<BoxBody> {
    req.error_response(e).map_into_boxed_body()
}

/// Forgets a claim, so that a retry runs the request again.
async fn release(state: &AppState, r: &IdempotentRequest) {
    if let Err(e) = state.store.release_idempotency_key(&r.api_key_id, &r.key).await {
        tracing::warn!(error = %e, "cannot release an idempotency key");
    }
}

/// The middleware.
pub(crate) async fn idempotency(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.method() != Method::POST || !req.headers().contains_key(IDEMPOTENCY_KEY) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let key = match req.headers().get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        Some(Ok(k))
            if !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            k.to_owned()
        }
        _ => {
            return Ok(fail(
                req,
                invalid("Idempotency-Key must be 1 to 255 visible ASCII characters"),
            ));
        }
    };
    let (Some(state), Some(caller)) =
        (req.app_data::<web::Data<AppState>>().cloned(), req.extensions().get::<Caller>().cloned())
    else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    // Every POST needs at least this role: refuse before reading a byte of the body.
    if !caller.access.role.includes(LEAST_ROLE_TO_POST) {
        return Ok(fail(req, ApiError::ForbiddenRole { required: LEAST_ROLE_TO_POST }));
    }
    // Read the body to fingerprint it, within the route's own limit, then hand it on unchanged.
    let limit = body_limit(&state.settings, req.match_info().as_str());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = match read_limited(declared, req.take_payload(), limit).await {
        Ok(body) => body,
        Err(e) => return Ok(fail(req, e)),
    };
    let mut hash = Sha256::new();
    hash.update(&body);
    let request = IdempotentRequest {
        api_key_id: caller.key_id.to_string(),
        key,
        method: req.method().to_string(),
        path: req.uri().path_and_query().map_or_else(|| req.path().to_owned(), |p| p.to_string()),
        request_hash: hex::encode(hash.finalize()),
    };
    req.set_payload(Payload::from(body));

    let claim =
        state.store.claim_idempotency_key(&request, state.clock.now(), TTL, ABANDONED_AFTER);
    match claim.await {
        Err(e) => Ok(fail(req, e.into())),
        Ok(IdempotencyClaim::Mismatch) => Ok(fail(
            req,
            ApiError::Idempotency {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used for another request".into(),
            },
        )),
        Ok(IdempotencyClaim::InFlight) => Ok(fail(
            req,
            ApiError::Idempotency {
                code: "idempotency_key_in_use",
                message:
                    "the first request with this Idempotency-Key is still running; retry later"
                        .into(),
            },
        )),
        Ok(IdempotencyClaim::Replay(answer)) => {
            let status = actix_web::http::StatusCode::from_u16(answer.status)
                .unwrap_or(actix_web::http::StatusCode::OK);
            let mut res = HttpResponse::build(status);
            if let Some(ct) = &answer.content_type {
                res.insert_header((header::CONTENT_TYPE, ct.as_str()));
            }
            if let Some(location) = &answer.location {
                res.insert_header((header::LOCATION, location.as_str()));
            }
            if let Some(withheld) = &answer.withheld {
                res.insert_header((SECRET_WITHHELD, withheld.as_str()));
            }
            res.insert_header((REPLAYED, "true"));
            Ok(req.into_response(res.body(answer.body)))
        }
        Ok(IdempotencyClaim::Claimed) => {
            let res = next.call(req).await;
            let res = match res {
                Ok(res) => res,
                Err(e) => {
                    release(&state, &request).await;
                    return Err(e);
                }
            };
            if res.status().is_server_error() {
                release(&state, &request).await;
                return Ok(res.map_into_boxed_body());
            }
            let (http_req, http_res) = res.into_parts();
            let (head, body) = http_res.into_parts();
            let bytes = match to_bytes(body).await {
                Ok(b) => b,
                Err(_) => {
                    let res = ServiceResponse::new(http_req, head.set_body(BoxBody::new(())));
                    release(&state, &request).await;
                    return Ok(res);
                }
            };
            let marked = http_req.extensions().get::<CarriesSecret>().copied();
            if let Some((body, withheld)) = recordable(&bytes, marked) {
                let header_text = |name: header::HeaderName| {
                    head.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
                };
                let answer = StoredAnswer {
                    status: head.status().as_u16(),
                    content_type: header_text(header::CONTENT_TYPE),
                    location: header_text(header::LOCATION),
                    body,
                    withheld,
                };
                if let Err(e) = state
                    .store
                    .complete_idempotency_key(&request.api_key_id, &request.key, &answer)
                    .await
                {
                    tracing::warn!(error = %e, "cannot record an idempotent answer");
                }
            } else {
                // Not recordable without a secret: a retry runs again rather than replay one.
                release(&state, &request).await;
            }
            Ok(ServiceResponse::new(http_req, head.set_body(BoxBody::new(bytes))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(sizes: &[usize]) -> impl futures_util::Stream<Item = Result<web::Bytes, String>> {
        futures_util::stream::iter(
            sizes.iter().map(|n| Ok(web::Bytes::from(vec![b' '; *n]))).collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_the_routes_limit_only() {
        let mut settings = ApiSettings::default();
        (settings.max_body_bytes, settings.max_import_bytes) = (1024, 16 * 1024);
        let limit = body_limit(&settings, "/v1/tenants");
        assert_eq!(limit, 1024);
        assert_eq!(body_limit(&settings, IMPORT_PATH), 16 * 1024);
        // Over max_body_bytes, under max_import_bytes: refused at max_body_bytes.
        let e = read_limited(None, chunks(&[1000, 1000, 1000]), limit).await.unwrap_err();
        assert!(matches!(e, ApiError::PayloadTooLarge { limit: 1024 }), "{e:?}");
        // Refused before reading when the declared length is over.
        let never = futures_util::stream::pending::<Result<web::Bytes, String>>();
        let e = read_limited(Some(5 << 20), never, limit).await.unwrap_err();
        assert!(matches!(e, ApiError::PayloadTooLarge { limit: 1024 }), "{e:?}");
        let body = read_limited(Some(1024), chunks(&[1000, 24]), limit).await.unwrap();
        assert_eq!(body.len(), 1024);
        let import = body_limit(&settings, IMPORT_PATH);
        assert_eq!(read_limited(None, chunks(&[8000, 8000]), import).await.unwrap().len(), 16000);
    }

    const KEY: &str = "sfk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn marked_fields_are_withheld_and_nothing_secret_looking_is_recorded() {
        let body = format!(r#"{{"key":"{KEY}","api_key":{{"id":"key_1"}}}}"#);
        let (text, withheld) =
            recordable(body.as_bytes(), Some(CarriesSecret(&["key"]))).expect("recordable");
        assert_eq!(text, r#"{"api_key":{"id":"key_1"},"key":null}"#);
        assert_eq!(withheld.as_deref(), Some("key"));
        // Unmarked, or marked with the wrong field: the secret is seen and nothing is recorded.
        assert_eq!(recordable(body.as_bytes(), None), None);
        assert_eq!(recordable(body.as_bytes(), Some(CarriesSecret(&["secret"]))), None);
        let hook = r#"{"secret":"whsec_MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI="}"#;
        assert_eq!(recordable(hook.as_bytes(), None), None);
        let (text, withheld) =
            recordable(hook.as_bytes(), Some(CarriesSecret(&["secret"]))).expect("recordable");
        assert_eq!((text.as_str(), withheld.as_deref()), (r#"{"secret":null}"#, Some("secret")));
        // Marked but not a JSON object: not recorded.
        assert_eq!(recordable(KEY.as_bytes(), Some(CarriesSecret(&["key"]))), None);
        assert_eq!(recordable(b"[1]", Some(CarriesSecret(&["key"]))), None);
        // An error answer of a marked route has no secret: recorded as it is.
        let problem = r#"{"code":"validation_failed"}"#;
        let recorded = recordable(problem.as_bytes(), Some(CarriesSecret(&["key"])));
        assert_eq!(recorded, Some((problem.to_owned(), None)));
        // Ordinary answers are recorded unchanged; names that merely mention a prefix too.
        let plain = r#"{"name":"sfk_ rotation notes","id":"rol_1"}"#;
        assert_eq!(recordable(plain.as_bytes(), None), Some((plain.to_owned(), None)));
        assert_eq!(recordable(&[0xff, 0xfe], None), None);
    }
}
