//! JSON batching: `POST /v1.0/$batch` (graph-facts §10; schemas `BatchRequest`,
//! `BatchRequestItem`, `BatchResponse`, `BatchResponseItem`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{GraphErrorBody, de::header_map, de::null_default};

/// At most this many requests per batch (graph-facts §10).
pub const MAX_BATCH_REQUESTS: usize = 20;

/// One request of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRequestItem {
    /// Unique within the batch.
    pub id: String,
    /// `GET`, `POST`, `PATCH`, `PUT` or `DELETE`.
    pub method: String,
    /// Relative to the version, e.g. `/groups/{id}/members/$ref`.
    pub url: String,
    /// Request headers; a body needs `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Ids of requests that must succeed first; if one fails, this one gets 424.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
}

impl BatchRequestItem {
    /// A request without body, headers or dependencies.
    pub fn new(id: impl Into<String>, method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            method: method.into(),
            url: url.into(),
            headers: None,
            body: None,
            depends_on: None,
        }
    }

    /// A `GET`.
    pub fn get(id: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(id, "GET", url)
    }

    /// Sets a JSON body and its `Content-Type: application/json` header.
    pub fn json_body(mut self, body: Value) -> Self {
        self.headers
            .get_or_insert_with(BTreeMap::new)
            .insert("Content-Type".into(), "application/json".into());
        self.body = Some(body);
        self
    }

    /// Sets a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.get_or_insert_with(BTreeMap::new).insert(name.into(), value.into());
        self
    }

    /// Makes this request depend on others.
    pub fn depends_on<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends_on = Some(ids.into_iter().map(Into::into).collect());
        self
    }

    fn has_content_type(&self) -> bool {
        self.headers
            .as_ref()
            .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("content-type")))
    }
}

/// Why a batch cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// No requests.
    #[error("a batch needs at least one request")]
    Empty,
    /// More than 20 requests.
    #[error("a batch holds at most {MAX_BATCH_REQUESTS} requests, not {0}")]
    TooMany(usize),
    /// Two requests share an id (Graph answers 400).
    #[error("batch request id {0:?} appears more than once")]
    DuplicateId(String),
    /// `dependsOn` names an id that is not in the batch.
    #[error("batch request {id:?} depends on {depends_on:?}, which is not in the batch")]
    UnknownDependency {
        /// The dependent request.
        id: String,
        /// The missing id.
        depends_on: String,
    },
    /// An absolute URL; batch URLs are relative.
    #[error("batch request {0:?} has an absolute URL; batch URLs are relative")]
    AbsoluteUrl(String),
    /// A body without a `Content-Type` header.
    #[error("batch request {0:?} has a body but no Content-Type header")]
    MissingContentType(String),
}

/// A `$batch` request body: 1 to 20 requests with unique ids, relative URLs, known
/// dependencies, and a `Content-Type` on every body (graph-facts §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchRequest {
    requests: Vec<BatchRequestItem>,
}

impl BatchRequest {
    /// Checks and wraps the requests.
    pub fn new(requests: Vec<BatchRequestItem>) -> Result<Self, BatchError> {
        if requests.is_empty() {
            return Err(BatchError::Empty);
        }
        if requests.len() > MAX_BATCH_REQUESTS {
            return Err(BatchError::TooMany(requests.len()));
        }
        let mut ids = BTreeSet::new();
        for r in &requests {
            if !ids.insert(r.id.as_str()) {
                return Err(BatchError::DuplicateId(r.id.clone()));
            }
        }
        for r in &requests {
            let url = r.url.to_ascii_lowercase();
            if url.starts_with("http://") || url.starts_with("https://") {
                return Err(BatchError::AbsoluteUrl(r.id.clone()));
            }
            if r.body.is_some() && !r.has_content_type() {
                return Err(BatchError::MissingContentType(r.id.clone()));
            }
            if let Some(missing) = r.depends_on.iter().flatten().find(|d| !ids.contains(d.as_str()))
            {
                return Err(BatchError::UnknownDependency {
                    id: r.id.clone(),
                    depends_on: missing.clone(),
                });
            }
        }
        Ok(Self { requests })
    }

    /// The requests.
    pub fn requests(&self) -> &[BatchRequestItem] {
        &self.requests
    }

    /// The requests, by value.
    pub fn into_requests(self) -> Vec<BatchRequestItem> {
        self.requests
    }
}

/// One answer of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponseItem {
    /// The request's id.
    pub id: String,
    /// HTTP status (e.g. 429 throttled, 424 failed dependency).
    pub status: u16,
    /// Response headers (values that arrive as numbers are kept as their text).
    #[serde(default, deserialize_with = "header_map")]
    pub headers: BTreeMap<String, String>,
    /// JSON body.
    #[serde(default)]
    pub body: Option<Value>,
}

impl BatchResponseItem {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header, by name ignoring ASCII case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// `Retry-After` in seconds, if present and numeric.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.header("retry-after")?.trim().parse().ok()
    }

    /// The body as Graph's error body, for failed items.
    pub fn error(&self) -> Option<GraphErrorBody> {
        serde_json::from_value(self.body.clone()?).ok()
    }
}

/// A `$batch` answer: `{"responses": [...]}`, in any order (graph-facts §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// The answers, in any order.
    #[serde(default, deserialize_with = "null_default")]
    pub responses: Vec<BatchResponseItem>,
    /// A next page of responses (the schema allows one).
    #[serde(rename = "@odata.nextLink", default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

impl BatchResponse {
    /// The answers by request id.
    pub fn by_id(&self) -> BTreeMap<&str, &BatchResponseItem> {
        self.responses.iter().map(|r| (r.id.as_str(), r)).collect()
    }
}
