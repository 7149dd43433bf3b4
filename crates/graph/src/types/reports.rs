//! Reports: registration details, registration summaries and directory audits (graph-facts §6;
//! schemas `userRegistrationDetails`, `userRegistrationFeatureSummary`,
//! `userRegistrationMethodSummary`, `directoryAudit`, `auditActivityInitiator`,
//! `targetResource`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::de::null_default;

/// `loggedByService` of SSPR audit events (graph-facts §6).
pub const SSPR_SERVICE: &str = "Self-service Password Management";

/// SSPR audit activity: a user was blocked from SSPR.
pub const ACTIVITY_BLOCKED_FROM_SSPR: &str = "Blocked from self-service password reset";
/// SSPR audit activity: a user changed their password.
pub const ACTIVITY_CHANGE_PASSWORD_SELF_SERVICE: &str = "Change password (self-service)";
/// SSPR audit activity: an administrator reset a password.
pub const ACTIVITY_RESET_PASSWORD_BY_ADMIN: &str = "Reset password (by admin)";
/// SSPR audit activity: a user reset their password.
pub const ACTIVITY_RESET_PASSWORD_SELF_SERVICE: &str = "Reset password (self-service)";
/// SSPR audit activity: a step of the reset flow.
pub const ACTIVITY_SSPR_FLOW_PROGRESS: &str = "Self-service password reset flow activity progress";
/// SSPR audit activity: a user unlocked their account.
pub const ACTIVITY_UNLOCK_SELF_SERVICE: &str = "Unlock user account (self-service)";
/// SSPR audit activity: a user registered for SSPR.
pub const ACTIVITY_SSPR_REGISTERED: &str = "User registered for self-service password reset";

/// Every SSPR audit activity of graph-facts §6.
pub const SSPR_ACTIVITIES: [&str; 7] = [
    ACTIVITY_BLOCKED_FROM_SSPR,
    ACTIVITY_CHANGE_PASSWORD_SELF_SERVICE,
    ACTIVITY_RESET_PASSWORD_BY_ADMIN,
    ACTIVITY_RESET_PASSWORD_SELF_SERVICE,
    ACTIVITY_SSPR_FLOW_PROGRESS,
    ACTIVITY_UNLOCK_SELF_SERVICE,
    ACTIVITY_SSPR_REGISTERED,
];

/// `usersRegisteredByFeature` feature: users with enough methods for SSPR.
pub const FEATURE_SSPR_REGISTERED: &str = "ssprRegistered";
/// `usersRegisteredByFeature` feature: users SSPR policy allows.
pub const FEATURE_SSPR_ENABLED: &str = "ssprEnabled";
/// `usersRegisteredByFeature` feature: users both enabled and registered for SSPR.
pub const FEATURE_SSPR_CAPABLE: &str = "ssprCapable";
/// `usersRegisteredByFeature` feature: passwordless-capable users.
pub const FEATURE_PASSWORDLESS_CAPABLE: &str = "passwordlessCapable";
/// `usersRegisteredByFeature` feature: MFA-capable users.
pub const FEATURE_MFA_CAPABLE: &str = "mfaCapable";

/// Whom a summary function (`usersRegisteredByFeature`, `usersRegisteredByMethod`) counts:
/// its `includedUserTypes` (`all|member|guest`) and `includedUserRoles`
/// (`all|privilegedAdmin|admin|user`) arguments (graph-facts §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportPopulation {
    /// `includedUserTypes`.
    pub user_types: &'static str,
    /// `includedUserRoles`.
    pub user_roles: &'static str,
}

impl ReportPopulation {
    /// Every user, guests and administrators included.
    pub const ALL: Self = Self { user_types: "all", user_roles: "all" };
    /// Member users who are not administrators: the users the tenant's SSPR setting
    /// (None/Selected/All) governs. Guests are never enabled by it; administrators follow
    /// `authorizationPolicy.allowedToUseSSPR` (graph-facts §4, §11).
    pub const MEMBER_USERS: Self = Self { user_types: "member", user_roles: "user" };

    /// The function call's argument list, e.g. `(includedUserTypes='member',includedUserRoles='user')`.
    pub fn arguments(&self) -> String {
        format!("(includedUserTypes='{}',includedUserRoles='{}')", self.user_types, self.user_roles)
    }
}

/// One user's row of `GET /reports/authenticationMethods/userRegistrationDetails`
/// (graph-facts §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistrationDetails {
    /// The user's object id.
    pub id: String,
    /// Sign-in name.
    #[serde(default, deserialize_with = "null_default")]
    pub user_principal_name: String,
    /// Display name.
    #[serde(default, deserialize_with = "null_default")]
    pub user_display_name: String,
    /// `member` or `guest`.
    #[serde(default)]
    pub user_type: Option<String>,
    /// Whether the user holds an admin role (nullable in the schema).
    #[serde(default)]
    pub is_admin: Option<bool>,
    /// Registered a strong method the MFA policy allows.
    #[serde(default, deserialize_with = "null_default")]
    pub is_mfa_capable: bool,
    /// Registered a strong method.
    #[serde(default, deserialize_with = "null_default")]
    pub is_mfa_registered: bool,
    /// Registered a passwordless method the policy allows.
    #[serde(default, deserialize_with = "null_default")]
    pub is_passwordless_capable: bool,
    /// SSPR-enabled and SSPR-registered.
    #[serde(default, deserialize_with = "null_default")]
    pub is_sspr_capable: bool,
    /// Allowed to use SSPR by policy.
    #[serde(default, deserialize_with = "null_default")]
    pub is_sspr_enabled: bool,
    /// Registered enough methods for SSPR.
    #[serde(default, deserialize_with = "null_default")]
    pub is_sspr_registered: bool,
    /// Whether system-preferred MFA is on for the user (nullable in the schema).
    #[serde(default)]
    pub is_system_preferred_authentication_method_enabled: Option<bool>,
    /// When the row was last refreshed.
    #[serde(default)]
    pub last_updated_date_time: Option<DateTime<Utc>>,
    /// Registered methods, e.g. `mobilePhone`, `email`, `microsoftAuthenticatorPush`.
    #[serde(default, deserialize_with = "null_default")]
    pub methods_registered: Vec<String>,
    /// The system-preferred methods.
    #[serde(default, deserialize_with = "null_default")]
    pub system_preferred_authentication_methods: Vec<String>,
    /// The user's default MFA method (`push`, `sms`, ..., `none`; Graph also sends `""`).
    #[serde(default)]
    pub user_preferred_method_for_secondary_authentication: Option<String>,
}

/// One `{feature, userCount}` of a feature summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistrationFeatureCount {
    /// `ssprRegistered`, `ssprEnabled`, `ssprCapable`, `passwordlessCapable`, `mfaCapable`, ...
    pub feature: String,
    /// Users with the feature.
    #[serde(default)]
    pub user_count: i64,
}

/// `usersRegisteredByFeature(...)` (graph-facts §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistrationFeatureSummary {
    /// Users counted.
    #[serde(default)]
    pub total_user_count: i64,
    /// `all`, `member` or `guest`.
    #[serde(default)]
    pub user_types: Option<String>,
    /// `all`, `privilegedAdmin`, `admin` or `user`.
    #[serde(default)]
    pub user_roles: Option<String>,
    /// Count per feature.
    #[serde(default, deserialize_with = "null_default")]
    pub user_registration_feature_counts: Vec<UserRegistrationFeatureCount>,
}

impl UserRegistrationFeatureSummary {
    /// The count of `feature` (e.g. [`FEATURE_SSPR_CAPABLE`]), ignoring ASCII case.
    pub fn count(&self, feature: &str) -> Option<i64> {
        self.user_registration_feature_counts
            .iter()
            .find(|c| c.feature.eq_ignore_ascii_case(feature))
            .map(|c| c.user_count)
    }
}

/// One `{authenticationMethod, userCount}` of a method summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistrationMethodCount {
    /// The method, e.g. `mobilePhone`.
    pub authentication_method: String,
    /// Users who registered it.
    #[serde(default)]
    pub user_count: i64,
}

/// `usersRegisteredByMethod(...)` (graph-facts §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistrationMethodSummary {
    /// Users counted.
    #[serde(default)]
    pub total_user_count: i64,
    /// `all`, `member` or `guest`.
    #[serde(default)]
    pub user_types: Option<String>,
    /// `all`, `privilegedAdmin`, `admin` or `user`.
    #[serde(default)]
    pub user_roles: Option<String>,
    /// Count per method.
    #[serde(default, deserialize_with = "null_default")]
    pub user_registration_method_counts: Vec<UserRegistrationMethodCount>,
}

impl UserRegistrationMethodSummary {
    /// The count of `method`, ignoring ASCII case.
    pub fn count(&self, method: &str) -> Option<i64> {
        self.user_registration_method_counts
            .iter()
            .find(|c| c.authentication_method.eq_ignore_ascii_case(method))
            .map(|c| c.user_count)
    }
}

/// The user who initiated an audited activity (`userIdentity`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditUser {
    /// Object id.
    #[serde(default)]
    pub id: Option<String>,
    /// Sign-in name.
    #[serde(default)]
    pub user_principal_name: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `auditActivityInitiator`: a user or an app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditInitiator {
    /// The user, if a user acted.
    #[serde(default)]
    pub user: Option<AuditUser>,
    /// The app (`appIdentity`), if an app acted; kept as JSON.
    #[serde(default)]
    pub app: Option<Value>,
}

/// `targetResource`: what an audited activity acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetResource {
    /// Object id.
    #[serde(default)]
    pub id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The resource type, e.g. `User` (Graph's `type`).
    #[serde(rename = "type", default)]
    pub resource_type: Option<String>,
    /// Sign-in name, for users.
    #[serde(default)]
    pub user_principal_name: Option<String>,
}

/// One event of `GET /auditLogs/directoryAudits` (graph-facts §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryAudit {
    /// Event id.
    pub id: String,
    /// When it happened.
    pub activity_date_time: DateTime<Utc>,
    /// The activity, e.g. [`ACTIVITY_RESET_PASSWORD_SELF_SERVICE`].
    #[serde(default, deserialize_with = "null_default")]
    pub activity_display_name: String,
    /// The category, e.g. `UserManagement`.
    #[serde(default, deserialize_with = "null_default")]
    pub category: String,
    /// Correlates events of one flow.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// The service, e.g. [`SSPR_SERVICE`].
    #[serde(default)]
    pub logged_by_service: Option<String>,
    /// `success`, `failure`, `timeout` or `unknownFutureValue`.
    #[serde(default)]
    pub result: Option<String>,
    /// Why, e.g. `FuzzyPolicyViolationInvalidPassword`.
    #[serde(default)]
    pub result_reason: Option<String>,
    /// Who acted.
    #[serde(default, deserialize_with = "null_default")]
    pub initiated_by: AuditInitiator,
    /// What was acted on.
    #[serde(default, deserialize_with = "null_default")]
    pub target_resources: Vec<TargetResource>,
}

impl DirectoryAudit {
    /// Whether the event was logged by SSPR.
    pub fn is_sspr(&self) -> bool {
        self.logged_by_service.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(SSPR_SERVICE))
    }

    /// Whether the result is `success`.
    pub fn succeeded(&self) -> bool {
        self.result.as_deref().is_some_and(|r| r.eq_ignore_ascii_case("success"))
    }
}

/// An OData string literal: `value` in single quotes, embedded quotes doubled.
pub fn odata_string_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The `$filter` for audits of one activity since a time:
/// `activityDisplayName eq '<activity>' and activityDateTime ge <RFC 3339, UTC, seconds>`.
/// The caller still percent-encodes it into the URL.
pub fn audit_filter(activity: &str, since: DateTime<Utc>) -> String {
    format!(
        "activityDisplayName eq {} and activityDateTime ge {}",
        odata_string_literal(activity),
        since.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}
