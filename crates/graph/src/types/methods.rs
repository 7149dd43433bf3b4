//! The authentication methods policy, its per-method configurations and the registration
//! campaign (graph-facts §1, §2; schemas `authenticationMethodsPolicy`,
//! `authenticationMethodConfiguration` and derived types, `authenticationMethodTarget`,
//! `excludeTarget`, `registrationEnforcement`, `authenticationMethodsRegistrationCampaign`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::de::null_default;

/// The group id that stands for every user in method targets (graph-facts §1: "Group id
/// `all_users` means everyone").
pub const ALL_USERS: &str = "all_users";

/// Microsoft Authenticator target `authenticationMode`: push or passwordless (schema
/// `microsoftAuthenticatorAuthenticationMode`).
pub const AUTHENTICATOR_MODE_ANY: &str = "any";
/// Microsoft Authenticator target `authenticationMode`: push notifications only.
pub const AUTHENTICATOR_MODE_PUSH: &str = "push";
/// Microsoft Authenticator target `authenticationMode`: device-based (passwordless) push only.
pub const AUTHENTICATOR_MODE_DEVICE_BASED_PUSH: &str = "deviceBasedPush";

/// The only `targetedAuthenticationMethod` v1.0 accepts in the registration campaign
/// (graph-facts §2).
pub const CAMPAIGN_METHOD_AUTHENTICATOR: &str = "microsoftAuthenticator";

/// The longest registration-campaign snooze, in days (graph-facts §2: "Snooze 0–14 days").
pub const MAX_SNOOZE_DAYS: i32 = 14;

/// `authenticationMethodsPolicy.policyMigrationState` (graph-facts §1).
///
/// Values Graph may add later decode as [`PolicyMigrationState::UnknownFutureValue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PolicyMigrationState {
    /// The policy covers authentication only; legacy MFA and SSPR policies govern the rest.
    PreMigration,
    /// The policy covers authentication and SSPR; legacy policies are still honoured.
    MigrationInProgress,
    /// Legacy method policies are ignored.
    MigrationComplete,
    /// Graph's evolvable-enum sentinel, and any value this crate does not know.
    #[serde(other)]
    UnknownFutureValue,
}

/// `GET /policies/authenticationMethodsPolicy` (graph-facts §1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationMethodsPolicy {
    /// Always `authenticationMethodsPolicy`.
    #[serde(default)]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// When the policy last changed.
    #[serde(default)]
    pub last_modified_date_time: Option<DateTime<Utc>>,
    /// Policy schema version, e.g. `1.4`.
    #[serde(default)]
    pub policy_version: Option<String>,
    /// Migration from the legacy MFA/SSPR method policies; `None` when Graph sends null.
    #[serde(default)]
    pub policy_migration_state: Option<PolicyMigrationState>,
    /// Undocumented in v1.0; possibly the SSPR re-confirmation period (unverified, graph-facts §1).
    #[serde(default)]
    pub reconfirmation_in_days: Option<i32>,
    /// The registration campaign settings.
    #[serde(default)]
    pub registration_enforcement: Option<RegistrationEnforcement>,
    /// The per-method configurations (inlined by GET).
    #[serde(default, deserialize_with = "null_default")]
    pub authentication_method_configurations: Vec<MethodConfiguration>,
}

impl AuthenticationMethodsPolicy {
    /// The configuration of one method, matched case-insensitively.
    pub fn configuration(&self, method: MethodId) -> Option<&MethodConfiguration> {
        self.authentication_method_configurations.iter().find(|c| method.matches(&c.id))
    }

    /// The registration campaign, if the policy carries one.
    pub fn registration_campaign(&self) -> Option<&RegistrationCampaign> {
        self.registration_enforcement
            .as_ref()?
            .authentication_methods_registration_campaign
            .as_ref()
    }
}

/// `authenticationMethodState`: whether a method is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MethodState {
    /// The method can be used by its include targets.
    Enabled,
    /// The method is off.
    Disabled,
}

/// `authenticationMethodTargetType`.
///
/// Unknown values decode as [`TargetType::UnknownFutureValue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetType {
    /// A user (user targeting was removed from the portal; prefer groups, graph-facts §1).
    User,
    /// A group, or [`ALL_USERS`].
    Group,
    /// Graph's evolvable-enum sentinel, and any value this crate does not know.
    #[serde(other)]
    UnknownFutureValue,
}

/// One `includeTargets` entry of a method configuration (`authenticationMethodTarget` and its
/// derived Authenticator and SMS targets).
///
/// Properties of other derived targets (e.g. the passkey target's `allowedPasskeyProfiles`)
/// stay in [`MethodTarget::extra`] so they survive a write-back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodTarget {
    /// User or group.
    pub target_type: TargetType,
    /// The group or user id, or [`ALL_USERS`].
    pub id: String,
    /// Whether the targets must register the method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_registration_required: Option<bool>,
    /// Authenticator targets only: `deviceBasedPush`, `push` or `any` (see the
    /// `AUTHENTICATOR_MODE_*` constants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_mode: Option<String>,
    /// SMS targets only: whether SMS sign-in (not just MFA) is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_usable_for_sign_in: Option<bool>,
    /// Every other property, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MethodTarget {
    /// A target of kind `target_type` and id `id`, with no optional property set.
    pub fn new(target_type: TargetType, id: impl Into<String>) -> Self {
        Self {
            target_type,
            id: id.into(),
            is_registration_required: None,
            authentication_mode: None,
            is_usable_for_sign_in: None,
            extra: Map::new(),
        }
    }

    /// A group target.
    pub fn group(id: impl Into<String>) -> Self {
        Self::new(TargetType::Group, id)
    }

    /// The [`ALL_USERS`] group target.
    pub fn all_users() -> Self {
        Self::group(ALL_USERS)
    }

    /// Sets `isRegistrationRequired`.
    pub fn registration_required(mut self, required: bool) -> Self {
        self.is_registration_required = Some(required);
        self
    }

    /// Sets the Authenticator `authenticationMode`.
    pub fn authentication_mode(mut self, mode: impl Into<String>) -> Self {
        self.authentication_mode = Some(mode.into());
        self
    }

    /// Sets the SMS `isUsableForSignIn`.
    pub fn usable_for_sign_in(mut self, usable: bool) -> Self {
        self.is_usable_for_sign_in = Some(usable);
        self
    }

    /// Whether this target is the [`ALL_USERS`] group.
    pub fn is_all_users(&self) -> bool {
        self.target_type == TargetType::Group && self.id.eq_ignore_ascii_case(ALL_USERS)
    }
}

/// One `excludeTargets` entry (`excludeTarget`): used by method configurations and the
/// registration campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExcludeTarget {
    /// The group or user id.
    pub id: String,
    /// User or group.
    pub target_type: TargetType,
}

impl ExcludeTarget {
    /// A group exclusion.
    pub fn group(id: impl Into<String>) -> Self {
        Self { id: id.into(), target_type: TargetType::Group }
    }
}

/// One authentication method configuration, as GET returns it (inlined in the policy or from
/// `…/authenticationMethodConfigurations/{id}`).
///
/// Faithful for PATCH round-trips: the base properties are typed and every type-specific
/// property (`featureSettings`, `isSoftwareOathEnabled`, `allowExternalIdToUseEmailOtp`,
/// `isOfficePhoneAllowed`, `keyRestrictions`, ...) is kept in [`MethodConfiguration::extra`].
/// `includeTargets` and `excludeTargets` are always serialized: GET inlines `includeTargets`
/// (graph-facts §1), so a configuration read from Graph and written back keeps its targets, but
/// one built without targets would clear them; use [`MethodConfigPatch`] for partial updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodConfiguration {
    /// The derived type, e.g. `#microsoft.graph.smsAuthenticationMethodConfiguration`; PATCH
    /// requires it (graph-facts §1).
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    /// The method id as Graph returns it (PascalCase, e.g. `Sms`); see [`MethodId::matches`].
    pub id: String,
    /// Whether the method is on.
    pub state: MethodState,
    /// Who may use the method.
    #[serde(default, deserialize_with = "null_default")]
    pub include_targets: Vec<MethodTarget>,
    /// Who may not use the method.
    #[serde(default, deserialize_with = "null_default")]
    pub exclude_targets: Vec<ExcludeTarget>,
    /// Every other property, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MethodConfiguration {
    /// The known method this configuration is for, if any.
    pub fn method_id(&self) -> Option<MethodId> {
        MethodId::from_id(&self.id)
    }

    /// Whether the method is enabled.
    pub fn is_enabled(&self) -> bool {
        self.state == MethodState::Enabled
    }

    /// Whether the include targets name `group_id` (case-insensitively) or [`ALL_USERS`].
    pub fn includes_group(&self, group_id: &str) -> bool {
        self.include_targets.iter().any(|t| {
            t.target_type == TargetType::Group
                && (t.is_all_users() || t.id.eq_ignore_ascii_case(group_id))
        })
    }

    /// The whole configuration as a PATCH body (the CIPP pattern: GET, change, PATCH the whole
    /// object, graph-facts §1). Top-level OData control annotations other than `@odata.type`
    /// (e.g. `@odata.context`, `includeTargets@odata.context`) are dropped, since they describe a
    /// response rather than the resource \[I\].
    pub fn to_patch_json(&self) -> Value {
        let mut body = json!(self);
        if let Value::Object(map) = &mut body {
            map.retain(|key, _| key == "@odata.type" || !key.contains('@'));
        }
        body
    }
}

/// The method configurations sspr-fleet manages (graph-facts §1, "Per-method configs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MethodId {
    /// Microsoft Authenticator (push, passwordless, and its OATH codes).
    MicrosoftAuthenticator,
    /// SMS one-time codes.
    Sms,
    /// Email one-time passcodes.
    Email,
    /// Voice calls.
    Voice,
    /// Third-party software OATH tokens.
    SoftwareOath,
    /// FIDO2 security keys and passkeys.
    Fido2,
    /// Temporary Access Pass.
    TemporaryAccessPass,
    /// Certificate-based authentication.
    X509Certificate,
}

impl MethodId {
    /// Every method, in a fixed order.
    pub const ALL: [MethodId; 8] = [
        MethodId::MicrosoftAuthenticator,
        MethodId::Sms,
        MethodId::Email,
        MethodId::Voice,
        MethodId::SoftwareOath,
        MethodId::Fido2,
        MethodId::TemporaryAccessPass,
        MethodId::X509Certificate,
    ];

    /// The id as GET returns it (PascalCase, e.g. `Sms`, `Fido2`), used as the path segment of
    /// `…/authenticationMethodConfigurations/{id}`.
    pub fn as_path_segment(self) -> &'static str {
        match self {
            MethodId::MicrosoftAuthenticator => "MicrosoftAuthenticator",
            MethodId::Sms => "Sms",
            MethodId::Email => "Email",
            MethodId::Voice => "Voice",
            MethodId::SoftwareOath => "SoftwareOath",
            MethodId::Fido2 => "Fido2",
            MethodId::TemporaryAccessPass => "TemporaryAccessPass",
            MethodId::X509Certificate => "X509Certificate",
        }
    }

    /// The id as the docs spell it (camelCase, e.g. `sms`, `microsoftAuthenticator`); also the
    /// prefix of the configuration's `@odata.type`.
    pub fn doc_id(self) -> &'static str {
        match self {
            MethodId::MicrosoftAuthenticator => "microsoftAuthenticator",
            MethodId::Sms => "sms",
            MethodId::Email => "email",
            MethodId::Voice => "voice",
            MethodId::SoftwareOath => "softwareOath",
            MethodId::Fido2 => "fido2",
            MethodId::TemporaryAccessPass => "temporaryAccessPass",
            MethodId::X509Certificate => "x509Certificate",
        }
    }

    /// The configuration's `@odata.type`, e.g. `#microsoft.graph.smsAuthenticationMethodConfiguration`
    /// (the discriminator mapping of `authenticationMethodConfiguration`).
    pub fn odata_type(self) -> &'static str {
        match self {
            MethodId::MicrosoftAuthenticator => {
                "#microsoft.graph.microsoftAuthenticatorAuthenticationMethodConfiguration"
            }
            MethodId::Sms => "#microsoft.graph.smsAuthenticationMethodConfiguration",
            MethodId::Email => "#microsoft.graph.emailAuthenticationMethodConfiguration",
            MethodId::Voice => "#microsoft.graph.voiceAuthenticationMethodConfiguration",
            MethodId::SoftwareOath => {
                "#microsoft.graph.softwareOathAuthenticationMethodConfiguration"
            }
            MethodId::Fido2 => "#microsoft.graph.fido2AuthenticationMethodConfiguration",
            MethodId::TemporaryAccessPass => {
                "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration"
            }
            MethodId::X509Certificate => {
                "#microsoft.graph.x509CertificateAuthenticationMethodConfiguration"
            }
        }
    }

    /// Whether `id` names this method, ignoring ASCII case: GET returns `Sms`, the docs say
    /// `sms`, others send `SMS` (graph-facts §1).
    pub fn matches(self, id: &str) -> bool {
        id.eq_ignore_ascii_case(self.as_path_segment())
    }

    /// The method `id` names, ignoring ASCII case.
    pub fn from_id(id: &str) -> Option<MethodId> {
        Self::ALL.into_iter().find(|m| m.matches(id))
    }

    /// The include target sspr-fleet uses for this method: `isRegistrationRequired: false`,
    /// plus `authenticationMode: "any"` for Microsoft Authenticator (graph-facts §1, "Guide
    /// mapping" \[I\]).
    pub fn default_target(self, target_type: TargetType, id: impl Into<String>) -> MethodTarget {
        let target = MethodTarget::new(target_type, id).registration_required(false);
        match self {
            MethodId::MicrosoftAuthenticator => target.authentication_mode(AUTHENTICATOR_MODE_ANY),
            _ => target,
        }
    }
}

impl fmt::Display for MethodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_path_segment())
    }
}

/// The body of `PATCH …/authenticationMethodConfigurations/{id}` for one method.
///
/// The body always carries `@odata.type` and `id` (graph-facts §1: PATCH "must include
/// `@odata.type`"); `state`, `includeTargets` (a full replacement of the list) and
/// `excludeTargets` only when set.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodConfigPatch {
    method: MethodId,
    state: Option<MethodState>,
    include_targets: Option<Vec<MethodTarget>>,
    exclude_targets: Option<Vec<ExcludeTarget>>,
    properties: Map<String, Value>,
}

impl MethodConfigPatch {
    /// A patch that changes nothing yet.
    pub fn new(method: MethodId) -> Self {
        Self {
            method,
            state: None,
            include_targets: None,
            exclude_targets: None,
            properties: Map::new(),
        }
    }

    /// The method this patch is for.
    pub fn method(&self) -> MethodId {
        self.method
    }

    /// Sets `state`.
    pub fn state(mut self, state: MethodState) -> Self {
        self.state = Some(state);
        self
    }

    /// Replaces the include targets with `targets`.
    pub fn include_targets(mut self, targets: Vec<MethodTarget>) -> Self {
        self.include_targets = Some(targets);
        self
    }

    /// Adds a group to the include targets this patch sends (with the method's
    /// [`MethodId::default_target`] shape). The patch still replaces Graph's whole list.
    pub fn include_group(mut self, group_id: impl Into<String>) -> Self {
        let target = self.method.default_target(TargetType::Group, group_id);
        self.include_targets.get_or_insert_with(Vec::new).push(target);
        self
    }

    /// Replaces the include targets with the single [`ALL_USERS`] target.
    pub fn include_all_users(mut self) -> Self {
        self.include_targets = Some(vec![self.method.default_target(TargetType::Group, ALL_USERS)]);
        self
    }

    /// Replaces the exclude targets with `targets`.
    pub fn exclude_targets(mut self, targets: Vec<ExcludeTarget>) -> Self {
        self.exclude_targets = Some(targets);
        self
    }

    /// Sets a type-specific property, e.g. `isSoftwareOathEnabled` or
    /// `allowExternalIdToUseEmailOtp`. The typed settings above win over a property of the same
    /// name, and `@odata.type` and `id` cannot be overridden.
    pub fn property(mut self, name: impl Into<String>, value: Value) -> Self {
        self.properties.insert(name.into(), value);
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> Value {
        let mut body = self.properties.clone();
        body.insert("@odata.type".into(), Value::from(self.method.odata_type()));
        body.insert("id".into(), Value::from(self.method.as_path_segment()));
        if let Some(state) = self.state {
            body.insert("state".into(), json!(state));
        }
        if let Some(targets) = &self.include_targets {
            body.insert("includeTargets".into(), json!(targets));
        }
        if let Some(targets) = &self.exclude_targets {
            body.insert("excludeTargets".into(), json!(targets));
        }
        Value::Object(body)
    }
}

/// `registrationEnforcement` of the methods policy (graph-facts §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationEnforcement {
    /// The Authenticator registration nudge; nullable in the schema.
    #[serde(default)]
    pub authentication_methods_registration_campaign: Option<RegistrationCampaign>,
}

/// `advancedConfigState`: the registration campaign's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AdvancedConfigState {
    /// Microsoft-managed (the campaign's documented default behaves as disabled, graph-facts §2).
    #[default]
    Default,
    /// On.
    Enabled,
    /// Off.
    Disabled,
    /// Graph's evolvable-enum sentinel, and any value this crate does not know.
    #[serde(other)]
    UnknownFutureValue,
}

/// `authenticationMethodsRegistrationCampaign`: nudges users to register Microsoft
/// Authenticator after they complete MFA (graph-facts §2). Not the legacy SSPR
/// "register at sign-in" setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationCampaign {
    /// On, off, or Microsoft-managed.
    #[serde(default)]
    pub state: AdvancedConfigState,
    /// Days a user may postpone, 0–14 (0 asks at every MFA).
    #[serde(default)]
    pub snooze_duration_in_days: i32,
    /// Who is nudged, and to which method.
    #[serde(default, deserialize_with = "null_default")]
    pub include_targets: Vec<CampaignIncludeTarget>,
    /// Who is never nudged.
    #[serde(default, deserialize_with = "null_default")]
    pub exclude_targets: Vec<ExcludeTarget>,
}

impl RegistrationCampaign {
    /// An enabled campaign nudging `include_targets`, excluding nobody.
    pub fn enabled(
        snooze_duration_in_days: i32,
        include_targets: Vec<CampaignIncludeTarget>,
    ) -> Self {
        Self {
            state: AdvancedConfigState::Enabled,
            snooze_duration_in_days,
            include_targets,
            exclude_targets: Vec::new(),
        }
    }

    /// Checks what v1.0 documents: snooze 0–14 days and Authenticator as the only targeted
    /// method (graph-facts §2).
    pub fn validate(&self) -> Result<(), CampaignError> {
        if !(0..=MAX_SNOOZE_DAYS).contains(&self.snooze_duration_in_days) {
            return Err(CampaignError::SnoozeOutOfRange(self.snooze_duration_in_days));
        }
        if let Some(t) = self
            .include_targets
            .iter()
            .find(|t| t.targeted_authentication_method != CAMPAIGN_METHOD_AUTHENTICATOR)
        {
            return Err(CampaignError::UnsupportedMethod(t.targeted_authentication_method.clone()));
        }
        Ok(())
    }
}

/// `authenticationMethodsRegistrationCampaignIncludeTarget`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CampaignIncludeTarget {
    /// The group or user id, or [`ALL_USERS`].
    pub id: String,
    /// User or group.
    pub target_type: TargetType,
    /// The method to register; v1.0 accepts only [`CAMPAIGN_METHOD_AUTHENTICATOR`].
    #[serde(default, deserialize_with = "null_default")]
    pub targeted_authentication_method: String,
}

impl CampaignIncludeTarget {
    /// A group nudged to register Microsoft Authenticator.
    pub fn authenticator_for_group(group_id: impl Into<String>) -> Self {
        Self {
            id: group_id.into(),
            target_type: TargetType::Group,
            targeted_authentication_method: CAMPAIGN_METHOD_AUTHENTICATOR.to_owned(),
        }
    }
}

/// Why a registration campaign cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignError {
    /// `snoozeDurationInDays` outside 0–14.
    #[error("snoozeDurationInDays must be between 0 and {MAX_SNOOZE_DAYS}, not {0}")]
    SnoozeOutOfRange(i32),
    /// A target names a method other than `microsoftAuthenticator`, which v1.0 rejects.
    #[error(
        "v1.0 only accepts targetedAuthenticationMethod {CAMPAIGN_METHOD_AUTHENTICATOR:?}, not {0:?}"
    )]
    UnsupportedMethod(String),
}

/// The documented `PATCH /policies/authenticationMethodsPolicy` body that sets the registration
/// campaign: `{"registrationEnforcement":{"authenticationMethodsRegistrationCampaign":{...}}}`
/// (graph-facts §2), after [`RegistrationCampaign::validate`].
pub fn registration_campaign_patch(
    campaign: &RegistrationCampaign,
) -> Result<Value, CampaignError> {
    campaign.validate()?;
    Ok(
        json!({ "registrationEnforcement": { "authenticationMethodsRegistrationCampaign": campaign } }),
    )
}
