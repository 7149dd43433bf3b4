//! The events webhook subscriptions can receive, and which rollout history entries they come
//! from.

use std::{fmt, str::FromStr};

/// The type of the event sent by `POST /v1/webhooks/{id}/test`. It is not subscribable: a
/// test goes to the one subscription it was asked for.
pub const TEST_EVENT_TYPE: &str = "webhook.test";

/// The kind of the tenant history entry that stands for [`WebhookEventType::TenantSmsRisk`].
pub const SMS_RISK_EVENT: &str = "sms_risk";

/// An event a webhook subscription can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookEventType {
    /// A tenant was blocked in preflight (a licence, consent or credential is missing).
    TenantBlocked,
    /// A tenant reached its pilot gate and waits for a manual approval (sent once per gate
    /// wait, however often the other unmet gates change).
    TenantGateWaitingApproval,
    /// A tenant completed its rollout.
    TenantCompleted,
    /// A tenant failed (a step's attempts were spent, a gate deadline passed, ...).
    TenantFailed,
    /// A tenant passed preflight with users who can reset only thanks to SMS or voice, which
    /// stop counting on 1 February 2027 (the counts are in the detail).
    TenantSmsRisk,
    /// A rollout was paused, by an operator or because its failure budget was exceeded.
    RolloutPaused,
    /// A rollout finished its last wave.
    RolloutCompleted,
}

/// An event type name that is not one of [`WebhookEventType::as_str`]'s values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type")]
pub struct WebhookEventTypeParseError;

impl WebhookEventType {
    /// Every event type, in documentation order.
    pub const ALL: [WebhookEventType; 7] = [
        WebhookEventType::TenantBlocked,
        WebhookEventType::TenantGateWaitingApproval,
        WebhookEventType::TenantCompleted,
        WebhookEventType::TenantFailed,
        WebhookEventType::TenantSmsRisk,
        WebhookEventType::RolloutPaused,
        WebhookEventType::RolloutCompleted,
    ];

    /// The name used in the API and in the payload's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEventType::TenantBlocked => "tenant.blocked",
            WebhookEventType::TenantGateWaitingApproval => "tenant.gate_waiting_approval",
            WebhookEventType::TenantCompleted => "tenant.completed",
            WebhookEventType::TenantFailed => "tenant.failed",
            WebhookEventType::TenantSmsRisk => "tenant.sms_risk",
            WebhookEventType::RolloutPaused => "rollout.paused",
            WebhookEventType::RolloutCompleted => "rollout.completed",
        }
    }

    /// Whether the event concerns one tenant (as opposed to a whole rollout).
    pub fn is_tenant_event(self) -> bool {
        !matches!(self, WebhookEventType::RolloutPaused | WebhookEventType::RolloutCompleted)
    }

    /// The webhook event a rollout history entry stands for, if any.
    ///
    /// `kind`, `to_state` are the entry's; `tenant` says whether it concerns one tenant; and
    /// `waiting_for` is what a `waiting` entry waits for. A tenant entry whose new state is
    /// `blocked`, `completed` or `failed` is that tenant event; a `waiting` entry in state
    /// `gate` whose list of unmet gates names an approval is
    /// [`WebhookEventType::TenantGateWaitingApproval`]; a rollout-wide entry moving the
    /// rollout to `paused` or `completed` is that rollout event.
    pub fn from_rollout_event(
        kind: &str,
        tenant: bool,
        to_state: Option<&str>,
        waiting_for: Option<&str>,
    ) -> Option<Self> {
        if tenant {
            if kind == SMS_RISK_EVENT {
                return Some(WebhookEventType::TenantSmsRisk);
            }
            if kind == "waiting" {
                let approval = waiting_for.is_some_and(|w| w.contains("approval"));
                return (to_state == Some("gate") && approval)
                    .then_some(WebhookEventType::TenantGateWaitingApproval);
            }
            match to_state? {
                "blocked" => Some(WebhookEventType::TenantBlocked),
                "completed" => Some(WebhookEventType::TenantCompleted),
                "failed" => Some(WebhookEventType::TenantFailed),
                _ => None,
            }
        } else {
            match to_state? {
                "paused" => Some(WebhookEventType::RolloutPaused),
                "completed" => Some(WebhookEventType::RolloutCompleted),
                _ => None,
            }
        }
    }
}

impl fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WebhookEventType {
    type Err = WebhookEventTypeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WebhookEventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(WebhookEventTypeParseError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_fail() {
        for t in WebhookEventType::ALL {
            assert_eq!(t.as_str().parse::<WebhookEventType>(), Ok(t));
        }
        assert!("tenant.unknown".parse::<WebhookEventType>().is_err());
        assert!(TEST_EVENT_TYPE.parse::<WebhookEventType>().is_err());
    }

    #[test]
    fn rollout_history_entries_map_to_their_events() {
        use WebhookEventType as W;
        let map = WebhookEventType::from_rollout_event;
        assert_eq!(map("blocked", true, Some("blocked"), None), Some(W::TenantBlocked));
        assert_eq!(map("verified", true, Some("completed"), None), Some(W::TenantCompleted));
        assert_eq!(map("failed", true, Some("failed"), None), Some(W::TenantFailed));
        assert_eq!(map("pilot_started", true, Some("pilot_applying"), None), None);
        assert_eq!(
            map("waiting", true, Some("gate"), Some("soak_time, approval")),
            Some(W::TenantGateWaitingApproval)
        );
        assert_eq!(map("waiting", true, Some("gate"), Some("soak_time")), None);
        assert_eq!(map("waiting", true, Some("pilot_verifying"), Some("approval")), None);
        assert_eq!(map("paused", false, Some("paused"), None), Some(W::RolloutPaused));
        assert_eq!(map("completed", false, Some("completed"), None), Some(W::RolloutCompleted));
        assert_eq!(map("resumed", false, Some("running"), None), None);
        assert_eq!(map(SMS_RISK_EVENT, true, None, None), Some(W::TenantSmsRisk));
        assert_eq!(map(SMS_RISK_EVENT, false, None, None), None);
        // A tenant paused with its rollout is not a rollout event.
        assert_eq!(map("paused", true, Some("paused"), None), None);
        assert!(W::TenantBlocked.is_tenant_event());
        assert!(!W::RolloutPaused.is_tenant_event());
    }
}
