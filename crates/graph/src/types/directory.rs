//! Directory objects: the authorization policy, the organization, groups and users
//! (graph-facts §4, §7, §8; schemas `authorizationPolicy`, `organization`, `verifiedDomain`,
//! `group`, `directoryObject`, `user`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::de::null_default;

/// At most this many `members@odata.bind` (or `owners@odata.bind`) entries per request
/// (graph-facts §8).
pub const MAX_BIND_MEMBERS: usize = 20;

/// The longest group `displayName`, in characters (graph-facts §8).
pub const MAX_DISPLAY_NAME_CHARS: usize = 256;

/// The longest group `mailNickname`, in ASCII characters (graph-facts §8).
pub const MAX_MAIL_NICKNAME_LEN: usize = 64;

/// The `groupTypes` entry of a dynamic-membership group.
pub const DYNAMIC_MEMBERSHIP: &str = "DynamicMembership";

/// The dynamic membership rule that takes in every enabled member user (no guests, no
/// disabled accounts), in the `-and` form Microsoft's rule syntax documents first.
pub const ALL_MEMBERS_RULE: &str =
    r#"(user.accountEnabled -eq true) -and (user.userType -eq "Member")"#;

/// Characters a `mailNickname` may not contain besides non-ASCII ones: ``@ () \ [] " ; : . <> ,``
/// and space (graph-facts §8).
const NICKNAME_FORBIDDEN: &[char] =
    &['@', '(', ')', '\\', '[', ']', '"', ';', ':', '.', '<', '>', ',', ' '];

/// `GET /policies/authorizationPolicy` (graph-facts §4).
///
/// Only `allowedToUseSSPR` is typed; every other property is kept in
/// [`AuthorizationPolicy::extra`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    /// Always `authorizationPolicy`.
    #[serde(default)]
    pub id: String,
    /// Whether **administrators** may use SSPR. It does not control end-user SSPR
    /// (graph-facts §4).
    #[serde(rename = "allowedToUseSSPR")]
    pub allowed_to_use_sspr: bool,
    /// Every other property, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `PATCH /policies/authorizationPolicy` body that sets `allowedToUseSSPR` (administrator
/// SSPR only; needs `Policy.ReadWrite.Authorization`, graph-facts §4).
pub fn allowed_to_use_sspr_patch(allowed: bool) -> Value {
    json!({ "allowedToUseSSPR": allowed })
}

/// One of the tenant's verified domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedDomain {
    /// The domain name, e.g. `contoso.com`.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether it is the default domain for new users.
    #[serde(default)]
    pub is_default: Option<bool>,
    /// Whether it is the initial `*.onmicrosoft.com` domain.
    #[serde(default)]
    pub is_initial: Option<bool>,
}

/// `GET /organization` (one per tenant; graph-facts §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    /// The tenant id.
    pub id: String,
    /// The organization's name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// `Some(true)` synced from on-premises, `Some(false)` formerly synced, `None` never synced.
    #[serde(default)]
    pub on_premises_sync_enabled: Option<bool>,
    /// The last directory sync.
    #[serde(default)]
    pub on_premises_last_sync_date_time: Option<DateTime<Utc>>,
    /// The verified domains.
    #[serde(default, deserialize_with = "null_default")]
    pub verified_domains: Vec<VerifiedDomain>,
}

impl Organization {
    /// The default verified domain's name.
    pub fn default_domain(&self) -> Option<&str> {
        self.verified_domains
            .iter()
            .find(|d| d.is_default == Some(true))
            .and_then(|d| d.name.as_deref())
    }

    /// The initial `*.onmicrosoft.com` domain's name.
    pub fn initial_domain(&self) -> Option<&str> {
        self.verified_domains
            .iter()
            .find(|d| d.is_initial == Some(true))
            .and_then(|d| d.name.as_deref())
    }
}

/// A group as Graph returns it (graph-facts §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// The object id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether the group is mail-enabled (`false` for security groups).
    #[serde(default)]
    pub mail_enabled: Option<bool>,
    /// Mail alias.
    #[serde(default)]
    pub mail_nickname: Option<String>,
    /// Whether it is a security group.
    #[serde(default)]
    pub security_enabled: Option<bool>,
    /// `[]` for a static security group; `Unified`, `DynamicMembership`, ...
    #[serde(default, deserialize_with = "null_default")]
    pub group_types: Vec<String>,
    /// The dynamic membership rule.
    #[serde(default)]
    pub membership_rule: Option<String>,
    /// `On` or `Paused` for dynamic groups.
    #[serde(default)]
    pub membership_rule_processing_state: Option<String>,
    /// When the group was created.
    #[serde(default)]
    pub created_date_time: Option<DateTime<Utc>>,
}

impl Group {
    /// Whether membership is rule-based.
    pub fn is_dynamic(&self) -> bool {
        self.group_types.iter().any(|t| t.eq_ignore_ascii_case(DYNAMIC_MEMBERSHIP))
    }
}

/// Why a group request body cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// `displayName` is empty or longer than 256 characters.
    #[error("displayName must be 1 to {MAX_DISPLAY_NAME_CHARS} characters, not {0}")]
    DisplayNameLength(usize),
    /// `mailNickname` breaks Graph's rules.
    #[error("invalid mailNickname {nickname:?}: {reason}")]
    MailNickname {
        /// The nickname.
        nickname: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More than 20 members in one bind.
    #[error("at most {MAX_BIND_MEMBERS} members can be bound in one request, not {0}")]
    TooManyMembers(usize),
    /// A bind with no members.
    #[error("no members to bind")]
    NoMembers,
    /// An object id that cannot be put in a URL.
    #[error("invalid directory object id {0:?}")]
    InvalidObjectId(String),
    /// Members of a dynamic group come from its rule and cannot be bound.
    #[error("a dynamic-membership group cannot have members bound at creation")]
    DynamicWithMembers,
    /// An empty dynamic membership rule.
    #[error("the dynamic membership rule is empty")]
    EmptyRule,
}

/// Checks a `mailNickname`: 1 to 64 ASCII characters, none of ``@ () \ [] " ; : . <> ,`` or space
/// (graph-facts §8); control characters are refused too \[I\].
pub fn validate_mail_nickname(nickname: &str) -> Result<(), GroupError> {
    let bad = |reason| Err(GroupError::MailNickname { nickname: nickname.to_owned(), reason });
    if nickname.is_empty() {
        return bad("empty");
    }
    if !nickname.is_ascii() {
        return bad("not ASCII");
    }
    if nickname.len() > MAX_MAIL_NICKNAME_LEN {
        return bad("longer than 64 characters");
    }
    if nickname.chars().any(|c| NICKNAME_FORBIDDEN.contains(&c) || c.is_ascii_control()) {
        return bad("contains one of @ ( ) \\ [ ] \" ; : . < > , space or a control character");
    }
    Ok(())
}

/// Derives a valid `mailNickname` from a display name: keeps the ASCII characters Graph allows,
/// drops the rest, and caps the result at 64 characters. A name with nothing usable gives
/// `group`.
pub fn mail_nickname_from(name: &str) -> String {
    let nickname: String = name
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && !NICKNAME_FORBIDDEN.contains(c))
        .take(MAX_MAIL_NICKNAME_LEN)
        .collect();
    if nickname.is_empty() { "group".to_owned() } else { nickname }
}

/// The Graph base URL without a trailing slash or `/v1.0`.
fn graph_root(graph_base: &str) -> &str {
    let base = graph_base.trim_end_matches('/');
    base.strip_suffix("/v1.0").unwrap_or(base)
}

/// `<graph_base>/v1.0/directoryObjects/<id>`, the reference `$ref` and `@odata.bind` take
/// (graph-facts §8). `graph_base` is e.g. `https://graph.microsoft.com` (a trailing `/` or
/// `/v1.0` is accepted).
pub fn directory_object_url(graph_base: &str, object_id: &str) -> Result<String, GroupError> {
    let valid = !object_id.is_empty()
        && object_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !valid {
        return Err(GroupError::InvalidObjectId(object_id.to_owned()));
    }
    Ok(format!("{}/v1.0/directoryObjects/{object_id}", graph_root(graph_base)))
}

/// The `POST /groups/{id}/members/$ref` body: `{"@odata.id": "<base>/v1.0/directoryObjects/<id>"}`
/// (graph-facts §8).
pub fn member_ref_body(graph_base: &str, object_id: &str) -> Result<Value, GroupError> {
    Ok(json!({ "@odata.id": directory_object_url(graph_base, object_id)? }))
}

fn bind_urls(graph_base: &str, object_ids: &[String]) -> Result<Vec<String>, GroupError> {
    if object_ids.len() > MAX_BIND_MEMBERS {
        return Err(GroupError::TooManyMembers(object_ids.len()));
    }
    object_ids.iter().map(|id| directory_object_url(graph_base, id)).collect()
}

/// The `PATCH /groups/{id}` body adding up to 20 members at once (atomic, graph-facts §8):
/// `{"members@odata.bind": ["<base>/v1.0/directoryObjects/<id>", ...]}`.
pub fn members_bind_body(graph_base: &str, object_ids: &[String]) -> Result<Value, GroupError> {
    if object_ids.is_empty() {
        return Err(GroupError::NoMembers);
    }
    Ok(json!({ "members@odata.bind": bind_urls(graph_base, object_ids)? }))
}

/// A security group to create with `POST /groups` (graph-facts §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSecurityGroup {
    /// Display name, 1–256 characters.
    pub display_name: String,
    /// Mail alias; see [`validate_mail_nickname`] and [`mail_nickname_from`].
    pub mail_nickname: String,
    /// Optional description.
    pub description: Option<String>,
    /// Object ids of initial members (at most 20), sent as `members@odata.bind`.
    pub members: Vec<String>,
    /// A dynamic membership rule; makes the group `DynamicMembership` with processing `On`.
    pub dynamic_rule: Option<String>,
}

impl NewSecurityGroup {
    /// A static security group with no description or members.
    pub fn new(display_name: impl Into<String>, mail_nickname: impl Into<String>) -> Self {
        Self {
            display_name: display_name.into(),
            mail_nickname: mail_nickname.into(),
            description: None,
            members: Vec::new(),
            dynamic_rule: None,
        }
    }

    /// A static security group whose `mailNickname` is derived from its name.
    pub fn named(display_name: impl Into<String>) -> Self {
        let display_name = display_name.into();
        let nickname = mail_nickname_from(&display_name);
        Self::new(display_name, nickname)
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Sets the initial members (object ids).
    pub fn members(mut self, object_ids: Vec<String>) -> Self {
        self.members = object_ids;
        self
    }

    /// Makes the group dynamic with this membership rule.
    pub fn dynamic_rule(mut self, rule: impl Into<String>) -> Self {
        self.dynamic_rule = Some(rule.into());
        self
    }

    /// The request body: `{"displayName", "mailEnabled": false, "mailNickname",
    /// "securityEnabled": true, "groupTypes": []}`, plus `description`, `members@odata.bind`
    /// (full URLs under `graph_base`, e.g. `https://graph.microsoft.com`), or for a dynamic group
    /// `groupTypes: ["DynamicMembership"]`, `membershipRule` and
    /// `membershipRuleProcessingState: "On"`.
    pub fn to_json(&self, graph_base: &str) -> Result<Value, GroupError> {
        let name_chars = self.display_name.chars().count();
        if name_chars == 0 || name_chars > MAX_DISPLAY_NAME_CHARS {
            return Err(GroupError::DisplayNameLength(name_chars));
        }
        validate_mail_nickname(&self.mail_nickname)?;
        let mut body = Map::new();
        body.insert("displayName".into(), json!(self.display_name));
        body.insert("mailEnabled".into(), json!(false));
        body.insert("mailNickname".into(), json!(self.mail_nickname));
        body.insert("securityEnabled".into(), json!(true));
        if let Some(description) = &self.description {
            body.insert("description".into(), json!(description));
        }
        match &self.dynamic_rule {
            Some(rule) => {
                if rule.trim().is_empty() {
                    return Err(GroupError::EmptyRule);
                }
                if !self.members.is_empty() {
                    return Err(GroupError::DynamicWithMembers);
                }
                body.insert("groupTypes".into(), json!([DYNAMIC_MEMBERSHIP]));
                body.insert("membershipRule".into(), json!(rule));
                body.insert("membershipRuleProcessingState".into(), json!("On"));
            }
            None => {
                body.insert("groupTypes".into(), json!([]));
                if !self.members.is_empty() {
                    body.insert(
                        "members@odata.bind".into(),
                        json!(bind_urls(graph_base, &self.members)?),
                    );
                }
            }
        }
        Ok(Value::Object(body))
    }
}

/// A directory object as collections such as `/groups/{id}/members` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryObject {
    /// The object id.
    pub id: String,
    /// The derived type, e.g. `#microsoft.graph.user` or `#microsoft.graph.group`.
    #[serde(rename = "@odata.type", default)]
    pub odata_type: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Users only.
    #[serde(default)]
    pub user_principal_name: Option<String>,
}

impl DirectoryObject {
    /// Whether the object is a user (by its `@odata.type`).
    pub fn is_user(&self) -> bool {
        self.odata_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("#microsoft.graph.user"))
    }
}

/// A user (graph-facts §8; the properties sspr-fleet reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// The object id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Sign-in name.
    #[serde(default)]
    pub user_principal_name: Option<String>,
    /// Whether the account can sign in.
    #[serde(default)]
    pub account_enabled: Option<bool>,
    /// `Member` or `Guest`.
    #[serde(default)]
    pub user_type: Option<String>,
    /// Primary SMTP address.
    #[serde(default)]
    pub mail: Option<String>,
}
