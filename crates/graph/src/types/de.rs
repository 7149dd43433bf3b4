//! Lenient deserializers shared by the wire types.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, de};
use serde_json::Value;

/// Decodes `null` (as well as an absent field, with `#[serde(default)]`) as the type's default.
pub(super) fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Decodes an integer sent either as a JSON number or as a decimal string (the v1 token
/// endpoint sends `"3599"`, v2 sends `3599`).
pub(super) fn int_or_string<'de, D>(deserializer: D) -> Result<i64, D::Error>
where
    D: Deserializer<'de>,
{
    match Value::deserialize(deserializer)? {
        Value::Number(n) => {
            n.as_i64().ok_or_else(|| de::Error::custom(format!("{n} is not an integer")))
        }
        Value::String(s) => {
            s.trim().parse().map_err(|_| de::Error::custom(format!("{s:?} is not an integer")))
        }
        other => Err(de::Error::custom(format!("expected an integer, got {other}"))),
    }
}

/// Decodes a header map whose values are documented as strings but may arrive as numbers or
/// booleans (e.g. `Retry-After`); `null` gives an empty map.
pub(super) fn header_map<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Option::<BTreeMap<String, Value>>::deserialize(deserializer)?.unwrap_or_default();
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect())
}
