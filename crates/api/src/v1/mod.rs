//! The `/v1` API, one module per resource.

pub(crate) mod api_keys;
pub(crate) mod audit;
pub(crate) mod events;
pub(crate) mod reports;
pub(crate) mod rollouts;
pub(crate) mod tasks;
pub(crate) mod tenants;
pub(crate) mod webhooks;

use utoipa_actix_web::service_config::ServiceConfig;

/// Registers every `/v1` handler; paths are collected into the OpenAPI document as they are.
pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    api_keys::configure(cfg);
    audit::configure(cfg);
    events::configure(cfg);
    reports::configure(cfg);
    rollouts::configure(cfg);
    tasks::configure(cfg);
    tenants::configure(cfg);
    webhooks::configure(cfg);
}

/// Checks a human name: 1 to `max` characters after trimming, no control characters.
pub(crate) fn check_name(
    field: &str,
    value: &str,
    max: usize,
    errors: &mut Vec<crate::error::FieldError>,
) -> String {
    use crate::error::FieldError;
    let trimmed = value.trim();
    if trimmed.is_empty() {
        errors.push(FieldError::new(field, "required", format!("{field} must not be empty")));
    } else if trimmed.chars().count() > max {
        errors.push(FieldError::new(
            field,
            "too_long",
            format!("{field} is longer than {max} characters"),
        ));
    } else if trimmed.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "invalid_format",
            format!("{field} contains control characters"),
        ));
    }
    trimmed.to_owned()
}

/// Checks a page size (1 to `max`, `default` when absent) and decodes an id cursor, adding a
/// field error for each that is wrong. Returns the size and the id to continue after.
pub(crate) fn page_params(
    limit: Option<u32>,
    default: u32,
    max: u32,
    cursor: Option<&str>,
    errors: &mut Vec<crate::error::FieldError>,
) -> (u32, Option<String>) {
    use crate::error::FieldError;
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        errors.push(FieldError::new("limit", "out_of_range", format!("limit must be 1 to {max}")));
    }
    let after = match cursor.map(cursor::decode_text) {
        Some(None) => {
            errors.push(FieldError::new("cursor", "invalid_format", "not a cursor from this API"));
            None
        }
        Some(id) => id,
        None => None,
    };
    (limit, after)
}

/// An opaque paging cursor wrapping a position.
pub(crate) mod cursor {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    pub(crate) fn encode(seq: i64) -> String {
        URL_SAFE_NO_PAD.encode(format!("s:{seq}"))
    }

    pub(crate) fn decode(text: &str) -> Option<i64> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        std::str::from_utf8(&bytes).ok()?.strip_prefix("s:")?.parse().ok()
    }

    /// A cursor after an object id (ids sort in creation order).
    pub(crate) fn encode_text(id: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("i:{id}"))
    }

    pub(crate) fn decode_text(text: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let id = std::str::from_utf8(&bytes).ok()?.strip_prefix("i:")?;
        (!id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| id.to_owned())
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn cursors_round_trip_and_garbage_is_rejected() {
            assert_eq!(super::decode(&super::encode(42)), Some(42));
            assert_eq!(super::decode("not-a-cursor"), None);
            assert_eq!(super::decode(""), None);
            assert_eq!(
                super::decode_text(&super::encode_text("ten_01ab")),
                Some("ten_01ab".into())
            );
            assert_eq!(super::decode_text(&super::encode(3)), None);
            assert_eq!(super::decode_text(&super::encode_text("x' OR 1=1")), None);
        }
    }
}
