//! Responses in Graph's shapes: the error body every non-2xx carries, and the headers.

use serde_json::{Value, json};

/// A response from the simulated Graph, before it is written to the wire (or into a `$batch`
/// item).
#[derive(Debug, Clone)]
pub(crate) struct SimResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<Value>,
}

impl SimResponse {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self { status, headers: Vec::new(), body: Some(body) }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: None }
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// A Graph error: `{"error":{"code","message","innerError":{date, request-id, client-request-id}}}`.
    /// The request ids are filled in by the dispatcher.
    pub(crate) fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::json(
            status,
            json!({"error": {"code": code, "message": message.into(), "innerError": {}}}),
        )
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::error(
            404,
            "Request_ResourceNotFound",
            format!(
                "Resource '{what}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::error(400, "Request_BadRequest", message)
    }

    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Fills `innerError` with the date and request ids, as Graph does on every error.
    pub(crate) fn stamp(&mut self, request_id: &str, client_request_id: Option<&str>, date: &str) {
        if let Some(inner) = self
            .body
            .as_mut()
            .and_then(|b| b.get_mut("error"))
            .and_then(|e| e.get_mut("innerError"))
            .and_then(Value::as_object_mut)
        {
            inner.insert("date".into(), Value::String(date.to_owned()));
            inner.insert("request-id".into(), Value::String(request_id.to_owned()));
            inner.insert(
                "client-request-id".into(),
                Value::String(client_request_id.unwrap_or(request_id).to_owned()),
            );
        }
        self.headers.push(("request-id".into(), request_id.to_owned()));
        if let Some(id) = client_request_id {
            self.headers.push(("client-request-id".into(), id.to_owned()));
        }
    }
}
