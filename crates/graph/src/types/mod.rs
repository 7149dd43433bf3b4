//! The typed wire model of the Microsoft Graph v1.0 resources sspr-fleet reads and writes, and
//! of the identity platform's token answers.
//!
//! Written from `shared/reference/graph-facts.md` (cited as "graph-facts §n") and the
//! `components/schemas` of `crates/openapi-check/data/graph-v1.0-sspr-subset.openapi.yaml`
//! (generated from Graph's CSDL). Conventions:
//!
//! - Names are Graph's camelCase (`#[serde(rename_all = "camelCase")]`); unknown fields are
//!   ignored on reads, so new Graph properties never break decoding.
//! - Properties the schema marks nullable are `Option`s; collections default to empty (and
//!   tolerate `null`).
//! - Types that are written back to Graph after a read (method configurations, their targets,
//!   the authorization policy) keep every property they do not model in an `extra` map, so a
//!   read–change–write cycle loses nothing.
//! - Request bodies are built by functions that validate what Graph documents (at most 20
//!   `$batch` items or `members@odata.bind` entries, snooze 0–14 days, `mailNickname` rules) and
//!   answer typed errors.
//!
//! Nothing here does I/O; the client in the rest of the crate sends these bodies.

mod batch;
mod de;
mod directory;
mod errors;
mod licensing;
mod methods;
mod reports;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use batch::{
    BatchError, BatchRequest, BatchRequestItem, BatchResponse, BatchResponseItem,
    MAX_BATCH_REQUESTS,
};
pub use directory::{
    ALL_MEMBERS_RULE, AuthorizationPolicy, DYNAMIC_MEMBERSHIP, DirectoryObject, Group, GroupError,
    MAX_BIND_MEMBERS, MAX_DISPLAY_NAME_CHARS, MAX_MAIL_NICKNAME_LEN, NewSecurityGroup,
    Organization, User, VerifiedDomain, allowed_to_use_sspr_patch, directory_object_url,
    mail_nickname_from, member_ref_body, members_bind_body, validate_mail_nickname,
};
pub use errors::{GraphErrorBody, GraphErrorDetail, InnerError, TokenErrorBody, TokenResponse};
pub use licensing::{
    BUSINESS_STANDARD_SKU_ID, ENTRA_ID_P1_PLAN_ID, ENTRA_ID_P2_PLAN_ID, LicenceReadiness,
    LicenseUnitsDetail, ServicePlan, SubscribedSku, licence_readiness,
};
pub use methods::{
    ALL_USERS, AUTHENTICATOR_MODE_ANY, AUTHENTICATOR_MODE_DEVICE_BASED_PUSH,
    AUTHENTICATOR_MODE_PUSH, AdvancedConfigState, AuthenticationMethodsPolicy,
    CAMPAIGN_METHOD_AUTHENTICATOR, CampaignError, CampaignIncludeTarget, ExcludeTarget,
    MAX_SNOOZE_DAYS, MethodConfigPatch, MethodConfiguration, MethodId, MethodState, MethodTarget,
    PolicyMigrationState, RegistrationCampaign, RegistrationEnforcement, TargetType,
    registration_campaign_patch,
};
pub use reports::{
    ACTIVITY_BLOCKED_FROM_SSPR, ACTIVITY_CHANGE_PASSWORD_SELF_SERVICE,
    ACTIVITY_RESET_PASSWORD_BY_ADMIN, ACTIVITY_RESET_PASSWORD_SELF_SERVICE,
    ACTIVITY_SSPR_FLOW_PROGRESS, ACTIVITY_SSPR_REGISTERED, ACTIVITY_UNLOCK_SELF_SERVICE,
    AuditInitiator, AuditUser, DirectoryAudit, FEATURE_MFA_CAPABLE, FEATURE_PASSWORDLESS_CAPABLE,
    FEATURE_SSPR_CAPABLE, FEATURE_SSPR_ENABLED, FEATURE_SSPR_REGISTERED, ReportPopulation,
    SSPR_ACTIVITIES, SSPR_SERVICE, TargetResource, UserRegistrationDetails,
    UserRegistrationFeatureCount, UserRegistrationFeatureSummary, UserRegistrationMethodCount,
    UserRegistrationMethodSummary, audit_filter, odata_string_literal,
};

/// One page of a Graph collection: `{"value": [...], "@odata.nextLink": "..."}`.
///
/// Follow [`Collection::next_link`] (an opaque absolute URL) until it is `None` to read every
/// page (graph-facts §6, §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: DeserializeOwned"))]
pub struct Collection<T> {
    /// The items of this page.
    #[serde(default = "Vec::new", deserialize_with = "de::null_default")]
    pub value: Vec<T>,
    /// The URL of the next page, absent on the last page.
    #[serde(rename = "@odata.nextLink", default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
    /// The total count, when `$count=true` was asked for.
    #[serde(rename = "@odata.count", default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}

impl<T> Default for Collection<T> {
    fn default() -> Self {
        Self { value: Vec::new(), next_link: None, count: None }
    }
}

impl<T> Collection<T> {
    /// Whether this is the last page.
    pub fn is_last_page(&self) -> bool {
        self.next_link.is_none()
    }
}
