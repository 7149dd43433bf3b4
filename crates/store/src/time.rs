//! Times are stored as Unix milliseconds in both dialects.

use chrono::{DateTime, Utc};

use crate::StoreError;

pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64, what: &'static str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt { what, detail: format!("timestamp {ms} out of range") })
}
