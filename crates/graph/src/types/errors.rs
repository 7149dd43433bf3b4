//! Error bodies of Graph and the identity platform, and the token answer (graph-facts §9, §10;
//! schemas `odata.error`, `microsoft.graph.InnerError`, `TokenResponse`, `TokenError`).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::de::{int_or_string, null_default};

/// Graph's error body: `{"error": {"code", "message", "innerError": {...}}}` (graph-facts §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphErrorBody {
    /// The error.
    pub error: GraphErrorDetail,
}

impl GraphErrorBody {
    /// Graph's error code, e.g. `Authorization_RequestDenied`. Branch on this, never on the
    /// message.
    pub fn code(&self) -> &str {
        &self.error.code
    }

    /// The `request-id` of the inner error, if any.
    pub fn request_id(&self) -> Option<&str> {
        self.error.inner_error.as_ref()?.request_id.as_deref()
    }
}

/// `odata.error.main`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphErrorDetail {
    /// The error code, e.g. `TooManyRequests`, `Request_ResourceNotFound`.
    #[serde(default, deserialize_with = "null_default")]
    pub code: String,
    /// A human-readable message (may change; do not branch on it).
    #[serde(default, deserialize_with = "null_default")]
    pub message: String,
    /// The target of the error, when Graph names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Diagnostics; Graph sends `innerError` (some services `innererror`).
    #[serde(
        rename = "innerError",
        alias = "innererror",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inner_error: Option<InnerError>,
}

/// `microsoft.graph.InnerError`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InnerError {
    /// Graph's request id (quote it to Microsoft support).
    #[serde(rename = "request-id", default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The `client-request-id` the client sent.
    #[serde(rename = "client-request-id", default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    /// When the error happened, as Graph wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Anything else (a 429 adds `code`, `message`, `status`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The identity platform's error body (graph-facts §9). Branch on `error` and `error_codes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenErrorBody {
    /// The OAuth error, e.g. `invalid_client`, `unauthorized_client`, `invalid_scope`.
    pub error: String,
    /// `AADSTSnnnn: ...` with trace and correlation ids.
    #[serde(default)]
    pub error_description: Option<String>,
    /// AADSTS codes, e.g. `[7000215]`.
    #[serde(default, deserialize_with = "null_default")]
    pub error_codes: Vec<u64>,
    /// Trace id.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// When, as the platform wrote it.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// A help URL.
    #[serde(default)]
    pub error_uri: Option<String>,
}

impl TokenErrorBody {
    /// Whether `code` is among the AADSTS codes.
    pub fn has_code(&self, code: u64) -> bool {
        self.error_codes.contains(&code)
    }

    /// The first line of `error_description` (the rest repeats trace ids and timestamps).
    pub fn summary(&self) -> &str {
        self.error_description.as_deref().and_then(|d| d.lines().next()).unwrap_or("")
    }
}

/// A successful client-credentials token answer: `{"token_type":"Bearer","expires_in":3599,
/// "access_token":"..."}` (graph-facts §9).
///
/// The token is a [`SecretString`]: its `Debug` output is redacted and it has no `Serialize`,
/// so it cannot reach a log by accident. Read it with `secrecy::ExposeSecret`.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    /// `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds (a number, or a string from the v1 endpoint).
    #[serde(deserialize_with = "int_or_string")]
    pub expires_in: i64,
    /// The bearer token.
    pub access_token: SecretString,
}
