//! `Idempotency-Key` on every POST under `/v1`: a client that repeats a POST with the same
//! key (after a timeout, say) gets the first answer again, marked `Idempotency-Replayed:
//! true`, instead of a second effect. The same key with another request (method, path, query
//! or body) is 422 `idempotency_key_reused`; a repeat while the first request still runs is
//! 409 `idempotency_key_in_use`. Keys are per API key and kept for 24 hours. Server errors are
//! not recorded, so a retry after a 5xx runs again.

use actix_web::{
    HttpMessage, HttpResponse,
    body::{BoxBody, MessageBody, to_bytes},
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::Next,
    web,
};
use chrono::TimeDelta;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use sspr_store::{IdempotencyClaim, IdempotentRequest, StoredAnswer};

use crate::{AppState, auth::Caller, error::ApiError};

/// The request header.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a replayed answer.
pub(crate) const REPLAYED: &str = "idempotency-replayed";
/// How long a key is remembered.
const TTL: TimeDelta = TimeDelta::hours(24);
/// How long a first request may run before its claim is taken to be abandoned (its process
/// died); well above any request's timeout.
const ABANDONED_AFTER: TimeDelta = TimeDelta::minutes(10);
/// Longest key accepted.
const MAX_KEY: usize = 255;

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
    // Read the body to fingerprint it, then hand it on unchanged.
    let limit = state.settings.max_import_bytes.max(state.settings.max_body_bytes);
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Ok(fail(req, ApiError::PayloadTooLarge { limit }));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
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
            if let Ok(text) = String::from_utf8(bytes.to_vec()) {
                let header_text = |name: header::HeaderName| {
                    head.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
                };
                let answer = StoredAnswer {
                    status: head.status().as_u16(),
                    content_type: header_text(header::CONTENT_TYPE),
                    location: header_text(header::LOCATION),
                    body: text,
                };
                if let Err(e) = state
                    .store
                    .complete_idempotency_key(&request.api_key_id, &request.key, &answer)
                    .await
                {
                    tracing::warn!(error = %e, "cannot record an idempotent answer");
                }
            } else {
                release(&state, &request).await;
            }
            Ok(ServiceResponse::new(http_req, head.set_body(BoxBody::new(bytes))))
        }
    }
}
