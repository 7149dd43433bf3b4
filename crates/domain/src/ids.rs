//! Prefixed identifiers. Each kind of object has its own prefix so an id pasted into the wrong
//! place is rejected at the boundary instead of silently matching nothing.

use std::fmt;

/// An id string did not have the expected prefix or shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an id of the form {prefix}<32 hex digits>")]
pub struct IdParseError {
    /// The prefix the id must start with, including the underscore.
    pub prefix: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new random id. UUIDv7 keeps ids roughly ordered by creation time, which keeps
            /// B-tree inserts local and makes ids sort like their creation order.
            pub fn new() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// The id as text, prefix included.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = IdParseError { prefix: $prefix };
                let rest = s.strip_prefix($prefix).ok_or(err.clone())?;
                if rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(err)
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdParseError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// Identifies an API key. It is public: it appears in the audit log and in key listings.
    ApiKeyId,
    "key_"
);
prefixed_id!(
    /// Identifies a customer tenant registered in sspr-fleet (not its Entra tenant id).
    TenantId,
    "ten_"
);
prefixed_id!(
    /// Identifies one audit log entry.
    AuditId,
    "aud_"
);
prefixed_id!(
    /// Identifies a credential stored for a tenant (an app secret, a certificate or a delegated
    /// refresh token). Public: it names the credential, never holds it.
    CredentialId,
    "cred_"
);
prefixed_id!(
    /// Identifies a job in the durable job queue.
    JobId,
    "job_"
);
prefixed_id!(
    /// Identifies a rollout: one desired SSPR state applied to a set of tenants in waves.
    RolloutId,
    "rol_"
);
prefixed_id!(
    /// Identifies a snapshot of a tenant setting taken before a rollout step changed it, kept
    /// so that the rollout can be rolled back.
    SnapshotId,
    "snap_"
);
prefixed_id!(
    /// Identifies a manual task a rollout raised for an operator to carry out and attest.
    TaskId,
    "task_"
);

prefixed_id!(
    /// Identifies a webhook subscription: a URL that receives signed events.
    WebhookId,
    "whk_"
);
prefixed_id!(
    /// Identifies one delivery of one event to one webhook subscription (retried until it
    /// succeeds or its attempts are spent).
    DeliveryId,
    "whd_"
);
prefixed_id!(
    /// Identifies a webhook message as its receiver sees it (the `webhook-id` header). Stable
    /// across retries and manual redelivery, so receivers can drop duplicates.
    MessageId,
    "msg_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_round_trip_through_text() {
        let id = ApiKeyId::new();
        let parsed: ApiKeyId = id.as_str().parse().expect("own id parses");
        assert_eq!(parsed, id);
        let cred = CredentialId::new();
        assert!(cred.as_str().starts_with("cred_"));
        assert_eq!(cred.as_str().parse::<CredentialId>(), Ok(cred.clone()));
        assert!(cred.as_str().parse::<TenantId>().is_err());
    }

    #[test]
    fn rollout_ids_have_their_own_prefixes() {
        assert!(RolloutId::new().as_str().starts_with("rol_"));
        assert!(SnapshotId::new().as_str().starts_with("snap_"));
        let task = TaskId::new();
        assert!(task.as_str().starts_with("task_"));
        assert_eq!(task.as_str().parse::<TaskId>(), Ok(task.clone()));
        assert!(task.as_str().parse::<SnapshotId>().is_err());
    }

    #[test]
    fn ids_of_another_kind_or_shape_are_rejected() {
        let audit = AuditId::new();
        assert!(audit.as_str().parse::<ApiKeyId>().is_err());
        for bad in [
            "",
            "key_",
            "key_xyz",
            "key_0123456789abcdef0123456789ABCDEF",
            "KEY_0123456789abcdef0123456789abcdef",
        ] {
            assert!(bad.parse::<ApiKeyId>().is_err(), "{bad:?} must be rejected");
        }
    }
}
