//! The OpenAPI document: its fixed parts, the error responses every operation shares, and its
//! canonical (sorted, pretty) text.

use utoipa::{
    OpenApi,
    openapi::{
        ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder, Type,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::error::{FieldError, PROBLEM_JSON, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sspr-fleet",
        description = "Staged Self-Service Password Reset rollouts across Microsoft 365 customer tenants. \
                       Every error is `application/problem+json` with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem, FieldError)),
    tags(
        (name = "ops", description = "Liveness and readiness probes"),
        (name = "api-keys", description = "API keys and the calling key"),
        (name = "audit", description = "The audit log of writes"),
        (name = "tenants", description = "Customer tenants: onboarding, verification, import"),
        (name = "rollouts", description = "Staged SSPR rollouts: plan, start, follow, operate"),
        (name = "tasks", description = "Manual steps a rollout waits for, and their attestation"),
        (name = "reports", description = "SSPR readiness per tenant and across the fleet, JSON or CSV"),
        (name = "webhooks", description = "Signed webhooks for PSA tools and automation, and their delivery log"),
    ),
    security(("bearer" = []))
)]
struct ApiDoc;

pub(crate) fn base() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key, `sfk_...`, from `sspr-fleet keys create` or `POST /v1/api-keys`"))
                    .build(),
            ),
        );
    }
    doc
}

fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build(),
    )
}

/// 429 `rate_limited`, with the seconds to wait in `Retry-After`.
fn rate_limited_response() -> RefOr<utoipa::openapi::Response> {
    let mut response = problem_response(
        "Too many requests from this API key (or, without a valid key, from this address); \
         `code` is `rate_limited`",
    );
    if let RefOr::T(r) = &mut response {
        r.headers.insert(
            "Retry-After".to_owned(),
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
                .description(Some("Seconds to wait before the next request"))
                .build()
                .into(),
        );
    }
    response
}

/// Makes every error response problem+json and adds the errors every operation can return.
pub(crate) fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for (path, item) in doc.paths.paths.iter_mut() {
        let authenticated = path.starts_with("/v1/");
        for op in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch]
            .into_iter()
            .flatten()
        {
            let has_body = op.request_body.is_some();
            let has_query = op.parameters.iter().flatten().any(|p| {
                matches!(p, RefOr::T(p) if matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
            });
            let responses = &mut op.responses.responses;
            for (status, response) in responses.iter_mut() {
                let is_error = status.parse::<u16>().map_or(status == "default", |s| s >= 400);
                if let (true, RefOr::T(r)) = (is_error, &*response) {
                    let (description, headers) = (r.description.clone(), r.headers.clone());
                    *response = problem_response(&description);
                    // Headers an operation documents (`Retry-After`) stay.
                    if let RefOr::T(r) = response {
                        r.headers = headers;
                    }
                }
            }
            let mut add = |status: &str, description: &str| {
                responses.entry(status.to_owned()).or_insert_with(|| problem_response(description));
            };
            if authenticated {
                add("401", "No API key, or an unknown or revoked one");
                add("403", "The key's role or tenants do not allow this");
                add("503", "The database is unavailable");
            }
            if has_query {
                // Query strings are parsed strictly: an unknown or malformed parameter is 400,
                // a value out of range (a page size, a cursor) 422.
                add("400", "A query parameter is unknown or malformed");
                add("422", "A query parameter is out of range");
            }
            if has_body {
                add("400", "The body is not well-formed JSON");
                add("413", "The body is larger than the limit");
                add("415", "The body is not application/json");
                add("422", "A field is invalid");
            }
            add("500", "Unexpected error; the body says nothing more, the log does");
            if !crate::ratelimit::is_exempt(path) {
                responses.entry("429".to_owned()).or_insert_with(rate_limited_response);
            }
        }
    }
    doc
}

/// The OpenAPI document of this build.
pub fn openapi() -> utoipa::openapi::OpenApi {
    crate::documented_routes()
}

/// The OpenAPI document as canonical text: keys sorted at every level, pretty, ending in a
/// newline. This is what `openapi/openapi.json` holds.
pub fn openapi_json() -> String {
    let value = serde_json::to_value(openapi()).unwrap_or_default();
    let mut text = serde_json::to_string_pretty(&sorted(value)).unwrap_or_default();
    text.push('\n');
    text
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_response_is_problem_json() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    if status.parse::<u16>().unwrap_or(0) >= 400 {
                        let content = response["content"].as_object();
                        let types: Vec<_> =
                            content.map(|c| c.keys().cloned().collect()).unwrap_or_default();
                        assert_eq!(
                            types,
                            vec![PROBLEM_JSON.to_owned()],
                            "{method} {path} {status}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10, "only {checked} error responses found");
    }

    #[test]
    fn document_is_openapi_3_1_with_explicit_operation_ids() {
        let doc = serde_json::to_value(openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or("");
                assert!(id.starts_with("v1.") || id.starts_with("ops."), "{method} {path}: {id}");
            }
        }
    }
}
