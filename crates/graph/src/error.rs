//! Errors of Graph and token calls, keeping Graph's code and request ids.

use std::time::Duration;

/// A failed Graph or token call.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Graph answered with an error status.
    #[error(
        "Graph answered {status} {code}: {message} (request-id {request_id:?}, client-request-id {client_request_id})"
    )]
    Graph {
        /// HTTP status.
        status: u16,
        /// Graph's error code, e.g. `Request_ResourceNotFound`. Branch on this, not the message.
        code: String,
        /// Graph's message.
        message: String,
        /// Graph's `request-id`.
        request_id: Option<String>,
        /// The `client-request-id` this client sent.
        client_request_id: String,
        /// `Retry-After`, if Graph gave one.
        retry_after: Option<Duration>,
    },
    /// The token endpoint refused to issue a token.
    #[error("the identity platform refused a token: {error} {codes:?}: {description}")]
    Token {
        /// HTTP status.
        status: u16,
        /// OAuth error, e.g. `invalid_client`.
        error: String,
        /// AADSTS codes, e.g. `[7000215]`.
        codes: Vec<u64>,
        /// The first line of `error_description`.
        description: String,
    },
    /// The Azure portal's undocumented API (the legacy SSPR policy) answered with an error
    /// status. Its error shape is not documented; code and message are read where found.
    #[error(
        "the portal API answered {status} {code}: {message} (x-ms-client-request-id {client_request_id})"
    )]
    Portal {
        /// HTTP status.
        status: u16,
        /// The error code, when the body has one (else empty).
        code: String,
        /// The error message, when the body has one (else empty).
        message: String,
        /// The `x-ms-client-request-id` this client sent.
        client_request_id: String,
    },
    /// The request could not be sent or the response not read.
    #[error("transport error talking to {endpoint}")]
    Transport {
        /// Endpoint template.
        endpoint: &'static str,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// No answer within the request timeout.
    #[error("no answer from {endpoint} within {timeout:?}")]
    Timeout {
        /// Endpoint template.
        endpoint: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// The answer was not what the API documents.
    #[error("unexpected response from {endpoint}: {detail}")]
    Decode {
        /// Endpoint template.
        endpoint: &'static str,
        /// What did not parse.
        detail: String,
    },
    /// The tenant's circuit is open: it kept failing and is set aside for a while.
    #[error("tenant {tenant} is set aside until {until_secs}s from now: {reason}")]
    CircuitOpen {
        /// The tenant.
        tenant: String,
        /// The failure that opened the circuit.
        reason: String,
        /// Seconds until a call is tried again.
        until_secs: u64,
    },
    /// A credential could not be used (bad private key, ...).
    #[error(transparent)]
    Credential(#[from] crate::CredentialError),
    /// The request itself is invalid (over 20 batch items, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The endpoint answered with a redirect. Redirects are never followed: a token request
    /// carries the client secret (or assertion) and a Graph request the bearer token, and
    /// neither may be re-sent to wherever a `Location` header points.
    #[error("{endpoint} answered {status} (a redirect, which is not followed)")]
    Redirect {
        /// Endpoint template.
        endpoint: &'static str,
        /// HTTP status (3xx).
        status: u16,
    },
    /// A listing's paging links could not be followed safely.
    #[error("paging of {endpoint} stopped: {problem}")]
    Paging {
        /// Endpoint template.
        endpoint: &'static str,
        /// What was wrong with the links.
        problem: PagingProblem,
    },
}

/// Why a listing stopped following `@odata.nextLink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PagingProblem {
    /// More pages than the configured `max_pages` (a listing that never ends).
    #[error("more than {0} pages")]
    TooManyPages(usize),
    /// A `@odata.nextLink` repeated one already followed (a listing going in circles).
    #[error("a paging link repeats an earlier one")]
    Loop,
    /// A `@odata.nextLink` points outside the configured Graph base URL (the bearer token
    /// would go there).
    #[error("a paging link points outside the configured Graph base URL")]
    ForeignHost,
}

impl PagingProblem {
    /// A short, stable code.
    pub fn code(self) -> &'static str {
        match self {
            PagingProblem::TooManyPages(_) => "paging_too_many_pages",
            PagingProblem::Loop => "paging_loop",
            PagingProblem::ForeignHost => "paging_foreign_host",
        }
    }
}

impl GraphError {
    /// Graph's error code, or the OAuth error of a token failure.
    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::Graph { code, .. } | GraphError::Portal { code, .. } => Some(code),
            GraphError::Token { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The HTTP status, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Graph { status, .. }
            | GraphError::Token { status, .. }
            | GraphError::Portal { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying later can succeed (throttling, outages, network).
    pub fn is_transient(&self) -> bool {
        match self {
            GraphError::Graph { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
            GraphError::Token { status, .. } | GraphError::Portal { status, .. } => {
                matches!(status, 429 | 500 | 502 | 503 | 504)
            }
            GraphError::Transport { .. } | GraphError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// A short, stable reason for logs and the circuit breaker.
    pub fn reason(&self) -> String {
        match self {
            GraphError::Graph { status, code, .. } => format!("graph_{status}_{code}"),
            GraphError::Token { error, codes, .. } => {
                format!(
                    "token_{error}_{}",
                    codes.first().map_or_else(String::new, ToString::to_string)
                )
            }
            GraphError::Portal { status, code, .. } if code.is_empty() => {
                format!("portal_{status}")
            }
            GraphError::Portal { status, code, .. } => format!("portal_{status}_{code}"),
            GraphError::Transport { .. } => "transport".into(),
            GraphError::Timeout { .. } => "timeout".into(),
            GraphError::Decode { .. } => "decode".into(),
            GraphError::CircuitOpen { reason, .. } => reason.clone(),
            GraphError::Credential(_) => "credential".into(),
            GraphError::Invalid(_) => "invalid".into(),
            GraphError::Redirect { status, .. } => format!("redirect_{status}"),
            GraphError::Paging { problem, .. } => problem.code().into(),
        }
    }
}
