//! Request extractors that fail with precise problem+json errors.

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// A JSON body, checked for content type and size, whose deserialisation errors name the
/// field that failed (`tenant_ids[2]`, not "line 1 column 57").
#[derive(Debug)]
pub(crate) struct ValidJson<T>(pub T);

pub(crate) fn is_json(req: &HttpRequest) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Classifies a serde data error into a stable field code.
fn field_code(message: &str) -> &'static str {
    if message.starts_with("unknown field") {
        "unknown_field"
    } else if message.starts_with("missing field") {
        "required"
    } else if message.starts_with("invalid type") {
        "invalid_type"
    } else {
        "invalid_value"
    }
}

/// Turns a deserialisation failure into the matching [`ApiError`].
pub(crate) fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            // serde appends the position; the field path says more.
            let message = inner.to_string();
            // A value in the wrong place may be a secret: never echo it.
            let message = sspr_domain::redact_serde_message(&message);
            let field = match (path.as_str(), message.strip_prefix("missing field `")) {
                // A missing field is reported at its parent; name the field itself.
                (".", Some(rest)) => rest.trim_end_matches('`').to_owned(),
                (parent, Some(rest)) => format!("{parent}.{}", rest.trim_end_matches('`')),
                (p, None) => p.to_owned(),
            };
            let field = sspr_domain::redact_field_path(field.trim_start_matches('.'));
            ApiError::Validation(vec![FieldError::new(field, field_code(&message), message)])
        }
        _ => ApiError::MalformedJson(inner.to_string()),
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for ValidJson<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !json {
                return Err(ApiError::UnsupportedMediaType.into());
            }
            // Overflow and read errors surface as actix errors and are turned into
            // problem+json (413, 400) by the error handler middleware.
            let bytes = bytes.await?;
            if bytes.is_empty() {
                return Err(ApiError::MalformedJson("the body is empty".into()).into());
            }
            let mut de = serde_json::Deserializer::from_slice(&bytes);
            let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
            // Anything after the value (a second object, stray text) makes the body invalid.
            de.end().map_err(|e| ApiError::MalformedJson(e.to_string()))?;
            Ok(ValidJson(value))
        })
    }
}

/// An optional JSON body: empty means the defaults; otherwise it must be valid JSON of `T`.
pub(crate) fn optional_json<T: serde::de::DeserializeOwned + Default>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if !is_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        tags: Vec<String>,
    }

    fn parse(text: &str) -> ApiError {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, Body>(de).map_err(json_error).unwrap_err()
    }

    fn single_field(err: ApiError) -> FieldError {
        match err {
            ApiError::Validation(mut errors) if errors.len() == 1 => errors.remove(0),
            other => panic!("expected one field error, got {other:?}"),
        }
    }

    #[test]
    fn field_errors_name_the_field_and_a_stable_code() {
        let e = single_field(parse(r#"{"name": "a", "tags": ["x", 3]}"#));
        assert_eq!((e.field.as_str(), e.code.as_str()), ("tags[1]", "invalid_type"));
        let e = single_field(parse(r#"{"tags": []}"#));
        assert_eq!((e.field.as_str(), e.code.as_str()), ("name", "required"));
        let e = single_field(parse(r#"{"name": "a", "tags": [], "extra": 1}"#));
        assert_eq!(e.code, "unknown_field");
    }

    #[test]
    fn string_values_in_the_wrong_place_are_not_echoed() {
        let e = single_field(parse(r#"{"name": "a", "tags": "s3cret-value"}"#));
        assert_eq!(e.code, "invalid_type");
        assert!(!e.message.contains("s3cret"), "{}", e.message);
        assert!(e.message.contains("expected"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        assert!(matches!(parse(r#"{"name": "#), ApiError::MalformedJson(_)));
        assert!(matches!(parse("not json"), ApiError::MalformedJson(_)));
    }
}
