//! A problem with one field of client input, with a stable code: what every validation in the
//! service crates returns, and what the API turns into `errors[]` of a 422.

/// A problem with one field of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Path of the field, e.g. `credentials.client_id` or `policy.pilot_group.members[2]`.
    pub field: String,
    /// Stable code: `required`, `invalid_format`, `too_long`, `out_of_range`, ...
    pub code: &'static str,
    /// For a human; never contains a value the client sent (it may be a secret).
    pub message: String,
}

impl FieldProblem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self { field: field.into(), code, message: message.into() }
    }
}
