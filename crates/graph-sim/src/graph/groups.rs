//! Groups and their members, with Graph's validation, eventual consistency (new groups are
//! invisible to reads by id for the replication delay) and the exact member-reference errors.

use serde_json::{Map, Value, json};

use super::{Ctx, HResult, body_object, perms, query::Query};
use crate::{
    World,
    model::{Group, Tenant},
    response::SimResponse,
};

const NICKNAME_FORBIDDEN: &[char] =
    &['@', '(', ')', '\\', '[', ']', '"', ';', ':', '.', '<', '>', ',', ' '];

const DYNAMIC: &str = "DynamicMembership";

/// The 400 for dynamic membership in a tenant without Entra ID P1 or P2.
fn needs_premium() -> SimResponse {
    SimResponse::bad_request(
        "Dynamic membership requires an Azure AD Premium P1 license in the tenant.",
    )
}

fn dynamic_has_no_members() -> SimResponse {
    SimResponse::bad_request("Members cannot be added to a group with dynamic membership.")
}

fn needs_rule() -> SimResponse {
    SimResponse::bad_request("A dynamic group needs a membershipRule.")
}

fn is_dynamic_type(t: &str) -> bool {
    t.eq_ignore_ascii_case(DYNAMIC)
}

/// `membershipRuleProcessingState` from a body: absent, or `On` / `Paused` (400 otherwise).
fn processing_state(body: &Map<String, Value>) -> Result<Option<String>, SimResponse> {
    match body.get("membershipRuleProcessingState") {
        None => Ok(None),
        Some(Value::String(s)) if s == "On" || s == "Paused" => Ok(Some(s.clone())),
        Some(_) => Err(SimResponse::bad_request(
            "Invalid value specified for property 'membershipRuleProcessingState' of resource 'Group': must be On or Paused.",
        )),
    }
}

fn group_json(g: &Group) -> Value {
    json!({
        "id": g.id,
        "displayName": g.display_name,
        "description": g.description,
        "mailEnabled": g.mail_enabled,
        "mailNickname": g.mail_nickname,
        "securityEnabled": g.security_enabled,
        "groupTypes": g.group_types,
        "membershipRule": g.membership_rule,
        "membershipRuleProcessingState": g.processing_state,
        "createdDateTime": g.created_at_ms_rfc3339(),
        "visibility": Value::Null,
        "isAssignableToRole": Value::Null,
    })
}

impl Group {
    fn created_at_ms_rfc3339(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.created_at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

/// The visible group with this id (404 while not replicated).
fn visible<'a>(t: &'a Tenant, id: &str, now_ms: i64) -> Result<&'a Group, SimResponse> {
    t.group(id).filter(|g| g.visible_at_ms <= now_ms).ok_or_else(|| SimResponse::not_found(id))
}

fn group_index(t: &Tenant, id: &str, now_ms: i64) -> Result<usize, SimResponse> {
    t.groups
        .iter()
        .position(|g| g.id.eq_ignore_ascii_case(id) && g.visible_at_ms <= now_ms)
        .ok_or_else(|| SimResponse::not_found(id))
}

pub(super) fn list(world: &mut World, ctx: &Ctx<'_>, q: &Query, path: &str) -> HResult {
    ctx.require(perms::GROUP_READ)?;
    q.only_filter_on(&["displayName", "mailNickname", "id", "securityEnabled", "mailEnabled"])?;
    let t = &world.tenants[ctx.tenant];
    let all: Vec<Value> = t
        .groups
        .iter()
        .filter(|g| g.visible_at_ms <= ctx.now_ms)
        .map(group_json)
        .filter(|v| q.matches(v))
        .collect();
    page(all, q, ctx, path, "groups")
}

/// Pages an already-filtered list.
fn page(all: Vec<Value>, q: &Query, ctx: &Ctx<'_>, path: &str, context: &str) -> HResult {
    let start = q.start()?;
    let size = q.page_size(ctx.settings.page_size);
    let end = (start + size).min(all.len());
    let items: Vec<Value> =
        all.get(start..end).unwrap_or(&[]).iter().cloned().map(|v| q.project(v)).collect();
    let mut body = json!({"@odata.context": ctx.context(context), "value": items});
    if end < all.len() {
        body["@odata.nextLink"] = json!(q.next_link(ctx.base_url, path, end));
    }
    Ok(SimResponse::json(200, body))
}

fn required_bool(body: &Map<String, Value>, key: &str) -> Result<bool, SimResponse> {
    match body.get(key) {
        Some(Value::Bool(b)) => Ok(*b),
        None | Some(Value::Null) => Err(SimResponse::bad_request(format!(
            "A value is required for property '{key}' of resource 'Group'."
        ))),
        Some(_) => Err(SimResponse::bad_request(format!(
            "Invalid value specified for property '{key}' of resource 'Group'."
        ))),
    }
}

/// Parses `members@odata.bind` URLs into user indexes (at most 20; all must exist).
fn parse_binds(t: &Tenant, body: &Map<String, Value>, key: &str) -> Result<Vec<u32>, SimResponse> {
    let Some(value) = body.get(key) else { return Ok(Vec::new()) };
    let Some(urls) = value.as_array() else {
        return Err(SimResponse::bad_request(format!("Invalid value for '{key}'.")));
    };
    if urls.len() > 20 {
        return Err(SimResponse::bad_request(format!(
            "Invalid request: '{key}' accepts at most 20 references per request."
        )));
    }
    urls.iter()
        .map(|u| {
            let url = u.as_str().unwrap_or("");
            let id = object_id_from_url(url).ok_or_else(|| {
                SimResponse::bad_request(format!(
                    "Invalid URL format specified in @odata.bind for {key}"
                ))
            })?;
            t.user_index(id).ok_or_else(|| SimResponse::not_found(id))
        })
        .collect()
}

/// The object id at the end of `https://graph.microsoft.com/v1.0/directoryObjects/{id}`
/// (or `/users/{id}`).
fn object_id_from_url(url: &str) -> Option<&str> {
    let (collection, id) = url
        .trim_end_matches('/')
        .rsplit_once('/')
        .map(|(a, id)| (a.rsplit('/').next().unwrap_or(""), id))?;
    (["directoryObjects", "users"].iter().any(|c| c.eq_ignore_ascii_case(collection))
        && !id.is_empty())
    .then_some(id)
}

pub(super) fn create(world: &mut World, ctx: &Ctx<'_>, body: Option<Value>) -> HResult {
    ctx.require(perms::GROUP_CREATE)?;
    let body = body_object(body)?;
    let faults = world.faults[ctx.tenant].clone();
    let t = &mut world.tenants[ctx.tenant];
    let display_name = match body.get("displayName") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 256 => s.clone(),
        None | Some(Value::Null) => {
            return Err(SimResponse::bad_request(
                "A value is required for property 'displayName' of resource 'Group'.",
            ));
        }
        Some(_) => {
            return Err(SimResponse::bad_request(
                "Invalid value specified for property 'displayName' of resource 'Group'.",
            ));
        }
    };
    let mail_enabled = required_bool(&body, "mailEnabled")?;
    let security_enabled = required_bool(&body, "securityEnabled")?;
    let nickname = match body.get("mailNickname") {
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 64
                && s.is_ascii()
                && !s.contains(NICKNAME_FORBIDDEN) =>
        {
            s.clone()
        }
        None | Some(Value::Null) => {
            return Err(SimResponse::bad_request(
                "A value is required for property 'mailNickname' of resource 'Group'.",
            ));
        }
        Some(_) => {
            return Err(SimResponse::bad_request(
                "Invalid value specified for property 'mailNickname' of resource 'Group'.",
            ));
        }
    };
    let group_types: Vec<String> = match body.get("groupTypes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        Some(_) => {
            return Err(SimResponse::bad_request(
                "Invalid value specified for property 'groupTypes' of resource 'Group'.",
            ));
        }
    };
    let unified = group_types.iter().any(|g| g.eq_ignore_ascii_case("Unified"));
    if mail_enabled && !unified {
        return Err(SimResponse::bad_request(
            "Creating mail-enabled security groups is not supported through Graph.",
        ));
    }
    let dynamic = group_types.iter().any(|g| is_dynamic_type(g));
    let membership_rule = body.get("membershipRule").and_then(Value::as_str).map(str::to_owned);
    let state = processing_state(&body)?;
    if dynamic {
        if !t.has_premium() {
            return Err(needs_premium());
        }
        if membership_rule.as_deref().is_none_or(str::is_empty) {
            return Err(needs_rule());
        }
        if body.contains_key("members@odata.bind") {
            return Err(dynamic_has_no_members());
        }
    }
    let members = parse_binds(t, &body, "members@odata.bind")?;
    if body.get("owners@odata.bind").and_then(Value::as_array).is_some_and(|a| a.len() > 20) {
        return Err(SimResponse::bad_request(
            "Invalid request: 'owners@odata.bind' accepts at most 20 references per request.",
        ));
    }
    let group = Group {
        id: uuid::Uuid::new_v4().to_string(),
        display_name,
        mail_nickname: nickname,
        description: body.get("description").and_then(Value::as_str).map(str::to_owned),
        mail_enabled,
        security_enabled,
        group_types,
        membership_rule,
        processing_state: if dynamic { Some(state.unwrap_or_else(|| "On".into())) } else { state },
        created_at_ms: ctx.now_ms,
        visible_at_ms: ctx.now_ms + (faults.replication_delay_secs as i64) * 1000,
        members: members.into_iter().collect(),
    };
    let mut body = group_json(&group);
    body["@odata.context"] = json!(ctx.context("groups/$entity"));
    t.groups.push(group);
    t.refresh_scope(ctx.now_secs());
    Ok(SimResponse::json(201, body))
}

pub(super) fn get(world: &mut World, ctx: &Ctx<'_>, id: &str) -> HResult {
    ctx.require(perms::GROUP_READ)?;
    let g = visible(&world.tenants[ctx.tenant], id, ctx.now_ms)?;
    let mut body = group_json(g);
    body["@odata.context"] = json!(ctx.context("groups/$entity"));
    Ok(SimResponse::json(200, body))
}

/// `PATCH /groups/{id}`: names, description, `members@odata.bind` (at most 20, atomic), and the
/// membership type. Adding `DynamicMembership` to `groupTypes` needs P1/P2 and a rule; the
/// assigned members are replaced by the rule's result. Removing it keeps the members the rule
/// produced at that moment as assigned members and clears the rule (unless the body sets one).
/// Pausing a rule freezes the members it produced; resuming evaluates it again.
pub(super) fn patch(world: &mut World, ctx: &Ctx<'_>, id: &str, body: Option<Value>) -> HResult {
    ctx.require(perms::GROUP_WRITE)?;
    let body = body_object(body)?;
    let t = &mut world.tenants[ctx.tenant];
    let i = group_index(t, id, ctx.now_ms)?;
    let invalid = |k: &str| {
        SimResponse::bad_request(format!(
            "Invalid value specified for property '{k}' of resource 'Group'."
        ))
    };
    for (k, v) in &body {
        match k.as_str() {
            "members@odata.bind" | "membershipRuleProcessingState" => {}
            "displayName" | "mailNickname" => {
                if !v.is_string() {
                    return Err(invalid(k));
                }
            }
            "description" | "membershipRule" => {
                if !(v.is_string() || v.is_null()) {
                    return Err(invalid(k));
                }
            }
            "groupTypes" => {
                let strings = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                if !strings {
                    return Err(invalid(k));
                }
            }
            other => {
                return Err(SimResponse::bad_request(format!(
                    "Property '{other}' cannot be updated on resource 'Group'."
                )));
            }
        }
    }
    let state = processing_state(&body)?;
    let group = &t.groups[i];
    let was_dynamic = group.is_dynamic();
    let new_types: Option<Vec<String>> = body
        .get("groupTypes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    if let Some(types) = &new_types {
        // Only the membership type can change; `Unified` and the rest are fixed at creation.
        let others = |ts: &[String]| -> std::collections::BTreeSet<String> {
            ts.iter().filter(|t| !is_dynamic_type(t)).map(|t| t.to_ascii_lowercase()).collect()
        };
        if others(types) != others(&group.group_types) {
            return Err(SimResponse::bad_request(
                "Only DynamicMembership can be added to or removed from groupTypes.",
            ));
        }
    }
    let dynamic =
        new_types.as_ref().map_or(was_dynamic, |ts| ts.iter().any(|t| is_dynamic_type(t)));
    let rule_in_body = body.get("membershipRule");
    if dynamic {
        if !was_dynamic && !t.has_premium() {
            return Err(needs_premium());
        }
        let rule = match rule_in_body {
            Some(v) => v.as_str(),
            None => group.membership_rule.as_deref(),
        };
        if rule.is_none_or(|r| r.trim().is_empty()) {
            return Err(needs_rule());
        }
        if body.contains_key("members@odata.bind") {
            return Err(dynamic_has_no_members());
        }
    }
    let new_members = parse_binds(t, &body, "members@odata.bind")?;
    // The members the group has right now: the rule's result for a dynamic group.
    let current: std::collections::BTreeSet<u32> = t.members_of(&t.groups[i]).into_iter().collect();
    // The bind is atomic: one existing member fails the whole request.
    if new_members.iter().any(|m| current.contains(m)) {
        return Err(SimResponse::bad_request(
            "One or more added object references already exist for the following modified properties: 'members'.",
        ));
    }
    let g = &mut t.groups[i];
    if let Some(v) = body.get("displayName").and_then(Value::as_str) {
        g.display_name = v.to_owned();
    }
    if let Some(v) = body.get("description") {
        g.description = v.as_str().map(str::to_owned);
    }
    if let Some(v) = body.get("mailNickname").and_then(Value::as_str) {
        g.mail_nickname = v.to_owned();
    }
    let was_evaluating = g.evaluates_rule();
    match (was_dynamic, dynamic) {
        (false, true) => {
            // Assigned members are replaced by the rule's result.
            g.members.clear();
            g.processing_state = Some(state.unwrap_or_else(|| "On".into()));
        }
        (true, false) => {
            // The members the rule produced stay, as assigned members.
            g.members = current;
            g.membership_rule = None;
            g.processing_state = state;
        }
        (true, true) => {
            if let Some(state) = state {
                let paused = state == "Paused";
                if paused && was_evaluating {
                    // Paused: the membership stays as the rule last produced it.
                    g.members = current;
                } else if !paused {
                    g.members.clear();
                }
                g.processing_state = Some(state);
            }
        }
        (false, false) => {
            if state.is_some() {
                g.processing_state = state;
            }
        }
    }
    if let Some(types) = new_types {
        g.group_types = types;
    }
    if let Some(v) = rule_in_body {
        g.membership_rule = v.as_str().map(str::to_owned);
    }
    g.members.extend(new_members);
    t.refresh_scope(ctx.now_secs());
    Ok(SimResponse::empty(204))
}

pub(super) fn delete(world: &mut World, ctx: &Ctx<'_>, id: &str) -> HResult {
    ctx.require(perms::GROUP_CREATE)?;
    let t = &mut world.tenants[ctx.tenant];
    let i = group_index(t, id, ctx.now_ms)?;
    t.groups.remove(i);
    Ok(SimResponse::empty(204))
}

pub(super) fn members(
    world: &mut World,
    ctx: &Ctx<'_>,
    id: &str,
    q: &Query,
    path: &str,
) -> HResult {
    ctx.require(perms::GROUP_READ)?;
    let t = &world.tenants[ctx.tenant];
    let g = visible(t, id, ctx.now_ms)?;
    let start = q.start()?;
    let size = q.page_size(ctx.settings.page_size);
    let members = t.members_of(g);
    let end = (start + size).min(members.len());
    let items: Vec<Value> = members
        .get(start..end)
        .unwrap_or(&[])
        .iter()
        .map(|&i| q.project(super::directory::user_json(t, i)))
        .collect();
    let mut body = json!({"@odata.context": ctx.context("directoryObjects"), "value": items});
    if end < members.len() {
        body["@odata.nextLink"] = json!(q.next_link(ctx.base_url, path, end));
    }
    Ok(SimResponse::json(200, body))
}

pub(super) fn add_member(
    world: &mut World,
    ctx: &Ctx<'_>,
    id: &str,
    body: Option<Value>,
) -> HResult {
    ctx.require(perms::GROUP_WRITE)?;
    let body = body_object(body)?;
    let t = &mut world.tenants[ctx.tenant];
    let i = group_index(t, id, ctx.now_ms)?;
    let url = body.get("@odata.id").and_then(Value::as_str).unwrap_or("");
    let object = object_id_from_url(url).ok_or_else(|| {
        SimResponse::bad_request("Invalid URL format specified in @odata.id for members")
    })?;
    let user = t.user_index(object).ok_or_else(|| SimResponse::not_found(object))?;
    if t.groups[i].is_dynamic() {
        return Err(dynamic_has_no_members());
    }
    if !t.groups[i].members.insert(user) {
        return Err(SimResponse::bad_request(
            "One or more added object references already exist for the following modified properties: 'members'.",
        ));
    }
    t.refresh_scope(ctx.now_secs());
    Ok(SimResponse::empty(204))
}

pub(super) fn remove_member(world: &mut World, ctx: &Ctx<'_>, id: &str, member: &str) -> HResult {
    ctx.require(perms::GROUP_WRITE)?;
    let t = &mut world.tenants[ctx.tenant];
    let i = group_index(t, id, ctx.now_ms)?;
    let user = t.user_index(member).ok_or_else(|| SimResponse::not_found(member))?;
    if !t.groups[i].members.remove(&user) {
        return Err(SimResponse::not_found(member));
    }
    Ok(SimResponse::empty(204))
}
