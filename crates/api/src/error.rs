//! The one error type of the HTTP layer, rendered as `application/problem+json` (RFC 9457).

use actix_web::{HttpResponse, ResponseError, http::StatusCode, http::header};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error body as described by RFC 9457, with a stable machine-readable `code`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema, PartialEq)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:sspr-fleet:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, human summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence, for a human.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable snake_case code; program against this, not the text.
    pub code: String,
    /// One entry per invalid field, when the request body or query was invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// A problem with one field of the request.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema, PartialEq)]
pub struct FieldError {
    /// JSON pointer-like path of the field, e.g. `tenant_ids[2]`.
    pub field: String,
    /// Stable snake_case code, e.g. `required`, `too_long`, `invalid_format`.
    pub code: String,
    /// What is wrong with the field, for a human.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self { field: field.into(), code: code.to_owned(), message: message.into() }
    }
}

/// Every way a request can fail. Each variant has a fixed status and code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No key, a malformed key, or a key that is unknown or revoked.
    #[error("a valid API key is required")]
    Unauthorized,
    /// The key's role does not allow this operation.
    #[error("this operation requires the {required} role")]
    ForbiddenRole {
        /// The least role that would have been allowed.
        required: sspr_domain::Role,
    },
    /// The key may not create a key with more rights than its own.
    #[error("a key cannot grant more than its own role and tenants")]
    GrantExceedsOwn,
    /// The object does not exist (or is outside the caller's reach).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The object already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The Entra tenant is already registered, under the tenant id given.
    #[error("this Entra tenant is already registered as {0}")]
    TenantExists(String),
    /// The operation does not apply in the resource's current state (409 with its own code).
    #[error("{message}")]
    StateConflict {
        /// Stable code, e.g. `rollout_not_running`.
        code: &'static str,
        /// For people.
        message: String,
    },
    /// An `Idempotency-Key` problem: `invalid_idempotency_key` (400), `idempotency_key_in_use`
    /// (409: the first request with the key is still running) or `idempotency_key_reused`
    /// (422: the key was used for another request).
    #[error("{message}")]
    Idempotency {
        /// One of the three codes.
        code: &'static str,
        /// For people.
        message: String,
    },
    /// The key is restricted to tenants, and the operation would reach beyond them.
    #[error("a key restricted to tenants cannot onboard or import tenants")]
    RestrictedKey,
    /// An import file cannot be read at all.
    #[error("the import file cannot be read: {0}")]
    ImportFile(String),
    /// The body has a content type this endpoint does not accept; it accepts the one named.
    #[error("expected Content-Type: {0}")]
    UnsupportedMediaTypeOf(&'static str),
    /// The body or query parsed but is not valid.
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    /// The body is not JSON, or not well formed.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// A query string or path parameter could not be parsed.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than the configured limit.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body has a content type this endpoint does not accept.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// No media type the `Accept` header allows can be produced; the ones that can are named.
    #[error("cannot answer in a media type the Accept header allows; available: {0}")]
    NotAcceptable(&'static str),
    /// Too many requests from this key (or, without a valid key, from this address).
    #[error("too many requests; retry after {retry_after_secs} seconds")]
    RateLimited {
        /// Seconds until a request will be accepted again (`Retry-After`).
        retry_after_secs: u64,
    },
    /// The database is unreachable or a query failed; details go to the log only.
    #[error("the database is unavailable")]
    Unavailable(#[source] sspr_store::StoreError),
    /// Anything else unexpected; details go to the log only.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<sspr_store::StoreError> for ApiError {
    fn from(err: sspr_store::StoreError) -> Self {
        match err {
            sspr_store::StoreError::Conflict { what } => ApiError::Conflict(what.to_owned()),
            other => ApiError::Unavailable(other),
        }
    }
}

impl ApiError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::ForbiddenRole { .. } => "forbidden_role",
            ApiError::GrantExceedsOwn => "grant_exceeds_own",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TenantExists(_) => "tenant_exists",
            ApiError::StateConflict { code, .. } | ApiError::Idempotency { code, .. } => code,
            ApiError::RestrictedKey => "restricted_key",
            ApiError::ImportFile(_) => "import_file_invalid",
            ApiError::UnsupportedMediaTypeOf(_) => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::NotAcceptable(_) => "not_acceptable",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The problem body for this error. 5xx bodies say nothing about the cause.
    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let errors = match self {
            ApiError::Validation(errors) => errors.clone(),
            _ => Vec::new(),
        };
        Problem {
            kind: format!("urn:sspr-fleet:problem:{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(self.to_string()),
            code: self.code().to_owned(),
            errors,
        }
    }
}

/// Builds the response for a problem.
pub(crate) fn problem_response(problem: &Problem) -> HttpResponse {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    HttpResponse::build(status).content_type(PROBLEM_JSON).body(body)
}

/// A problem for a bare status, used where no [`ApiError`] exists (router fallbacks).
pub(crate) fn problem_for_status(status: StatusCode, detail: Option<String>) -> Problem {
    let code = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        429 => "too_many_requests",
        431 => "request_header_fields_too_large",
        503 => "service_unavailable",
        s if s >= 500 => "internal_error",
        _ => "client_error",
    };
    Problem {
        kind: format!("urn:sspr-fleet:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        // A server error never describes itself to the client.
        detail: if status.is_server_error() { None } else { detail },
        code: code.to_owned(),
        errors: Vec::new(),
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ForbiddenRole { .. }
            | ApiError::RestrictedKey
            | ApiError::GrantExceedsOwn => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::TenantExists(_) | ApiError::StateConflict { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Idempotency { code, .. } => match *code {
                "idempotency_key_in_use" => StatusCode::CONFLICT,
                "idempotency_key_reused" => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::BAD_REQUEST,
            },
            ApiError::MalformedJson(_) | ApiError::BadRequest(_) | ApiError::ImportFile(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType | ApiError::UnsupportedMediaTypeOf(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            // The cause chain goes to the log, never to the client.
            tracing::error!(error = %ErrorChain(self), code = self.code(), "request failed");
        }
        let mut response = problem_response(&self.problem());
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"sspr-fleet\""),
            );
        }
        if let ApiError::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(*retry_after_secs));
        }
        response
    }
}

/// Formats an error with its whole `source()` chain on one line.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_cause_from_the_body() {
        let err = ApiError::Internal("secret connection string postgres://u:pw@h".into());
        let problem = err.problem();
        assert_eq!(problem.status, 500);
        assert_eq!(problem.code, "internal_error");
        assert!(!serde_json::to_string(&problem).unwrap_or_default().contains("pw@h"));
    }

    #[test]
    fn validation_errors_carry_every_field() {
        let err = ApiError::Validation(vec![
            FieldError::new("name", "required", "name is required"),
            FieldError::new("role", "invalid_value", "unknown role"),
        ]);
        let problem = err.problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors.len(), 2);
        assert_eq!(problem.kind, "urn:sspr-fleet:problem:validation_failed");
    }
}
