//! Reports: `userRegistrationDetails` (streamed by index, filtered), the per-feature and
//! per-method summaries, and the directory audit log of SSPR activities.

use serde_json::{Value, json};

use super::{Ctx, HResult, perms, query::Query};
use crate::{
    World,
    model::{Tenant, flag, unit},
    response::SimResponse,
};

const SSPR_SERVICE: &str = "Self-service Password Management";

fn premium_required(t: &Tenant) -> Result<(), SimResponse> {
    if t.has_premium() {
        Ok(())
    } else {
        Err(SimResponse::error(
            403,
            "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
            "Neither tenant is B2C or tenant doesn't have premium license",
        ))
    }
}

pub(super) fn list_details(world: &mut World, ctx: &Ctx<'_>, q: &Query, path: &str) -> HResult {
    ctx.require(perms::REPORTS)?;
    let t = &world.tenants[ctx.tenant];
    premium_required(t)?;
    q.only_filter_on(&[
        "isSsprEnabled",
        "isSsprRegistered",
        "isSsprCapable",
        "isMfaCapable",
        "isMfaRegistered",
        "isPasswordlessCapable",
        "isAdmin",
        "userType",
        "userPrincipalName",
        "id",
    ])?;
    let start = q.start()?;
    let size = q.page_size(ctx.settings.page_size);
    let now_secs = ctx.now_secs();
    let mut items = Vec::new();
    let mut next = None;
    for i in start..t.users.len() {
        let d = t.registration_details(i as u32, now_secs, &ctx.now);
        if !q.matches(&d) {
            continue;
        }
        if items.len() == size {
            next = Some(i);
            break;
        }
        items.push(q.project(d));
    }
    let mut body = json!({"@odata.context": ctx.context("reports/authenticationMethods/userRegistrationDetails"), "value": items});
    if let Some(n) = next {
        body["@odata.nextLink"] = json!(q.next_link(ctx.base_url, path, n));
    }
    Ok(SimResponse::json(200, body))
}

pub(super) fn get_details(world: &mut World, ctx: &Ctx<'_>, id: &str) -> HResult {
    ctx.require(perms::REPORTS)?;
    let t = &world.tenants[ctx.tenant];
    premium_required(t)?;
    let i = t.user_index(id).ok_or_else(|| SimResponse::not_found(id))?;
    let mut d = t.registration_details(i, ctx.now_secs(), &ctx.now);
    d["@odata.context"] =
        json!(ctx.context("reports/authenticationMethods/userRegistrationDetails/$entity"));
    Ok(SimResponse::json(200, d))
}

/// Parses `name(includedUserTypes='all',includedUserRoles='all')` (or `name()`).
fn summary_args(segment: &str) -> Result<(String, String), SimResponse> {
    let inner = segment.split_once('(').map(|(_, r)| r.trim_end_matches(')')).unwrap_or("");
    let mut types = "all".to_owned();
    let mut roles = "all".to_owned();
    for part in inner.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| SimResponse::bad_request("Invalid function arguments."))?;
        let v = v.trim().trim_matches('\'').to_owned();
        match k.trim() {
            "includedUserTypes" if ["all", "member", "guest"].contains(&v.as_str()) => types = v,
            "includedUserRoles"
                if ["all", "privilegedAdmin", "admin", "user"].contains(&v.as_str()) =>
            {
                roles = v
            }
            _ => {
                return Err(SimResponse::bad_request(format!(
                    "Invalid function argument '{}'.",
                    part.trim()
                )));
            }
        }
    }
    Ok((types, roles))
}

fn in_summary(t: &Tenant, i: u32, types: &str, roles: &str) -> bool {
    let u = t.users[i as usize];
    let guest = u.flags & flag::GUEST != 0;
    let admin = u.flags & flag::ADMIN != 0;
    let type_ok = match types {
        "member" => !guest,
        "guest" => guest,
        _ => true,
    };
    let role_ok = match roles {
        "admin" | "privilegedAdmin" => admin,
        "user" => !admin,
        _ => true,
    };
    type_ok && role_ok
}

/// What both summary functions share: permission, licence, arguments, and the users counted.
fn summary_users<'w>(
    world: &'w World,
    ctx: &Ctx<'_>,
    segment: &str,
) -> Result<(&'w Tenant, String, String, Vec<u32>), SimResponse> {
    ctx.require(perms::REPORTS)?;
    let t = &world.tenants[ctx.tenant];
    premium_required(t)?;
    let (types, roles) = summary_args(segment)?;
    let users = (0..t.users.len() as u32).filter(|&i| in_summary(t, i, &types, &roles)).collect();
    Ok((t, types, roles, users))
}

pub(super) fn by_feature(world: &mut World, ctx: &Ctx<'_>, segment: &str) -> HResult {
    let (t, types, roles, users) = summary_users(world, ctx, segment)?;
    let now_secs = ctx.now_secs();
    let total = users.len();
    let mut counts = [0u64; 5];
    let features =
        ["ssprRegistered", "ssprEnabled", "ssprCapable", "passwordlessCapable", "mfaCapable"];
    let keys = [
        "isSsprRegistered",
        "isSsprEnabled",
        "isSsprCapable",
        "isPasswordlessCapable",
        "isMfaCapable",
    ];
    for i in users {
        let d = t.registration_details(i, now_secs, "");
        for (c, k) in counts.iter_mut().zip(keys) {
            if d[k] == Value::Bool(true) {
                *c += 1;
            }
        }
    }
    let feature_counts: Vec<Value> =
        features.iter().zip(counts).map(|(f, c)| json!({"feature": f, "userCount": c})).collect();
    Ok(SimResponse::json(
        200,
        json!({
            "@odata.context": ctx.context("microsoft.graph.userRegistrationFeatureSummary"),
            "@odata.type": "#microsoft.graph.userRegistrationFeatureSummary",
            "totalUserCount": total,
            "userTypes": types,
            "userRoles": roles,
            "userRegistrationFeatureCounts": feature_counts,
        }),
    ))
}

pub(super) fn by_method(world: &mut World, ctx: &Ctx<'_>, segment: &str) -> HResult {
    let (t, types, roles, users) = summary_users(world, ctx, segment)?;
    let now_secs = ctx.now_secs();
    let total = users.len();
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    for (_, name) in crate::model::method::NAMES {
        counts.insert(name, 0);
    }
    for i in users {
        let methods = t.methods_at(i, now_secs);
        for (bit, name) in crate::model::method::NAMES {
            if methods & bit != 0 {
                *counts.entry(name).or_default() += 1;
            }
        }
    }
    let method_counts: Vec<Value> = counts
        .into_iter()
        .map(|(m, c)| json!({"authenticationMethod": m, "userCount": c}))
        .collect();
    Ok(SimResponse::json(
        200,
        json!({
            "@odata.context": ctx.context("microsoft.graph.userRegistrationMethodSummary"),
            "@odata.type": "#microsoft.graph.userRegistrationMethodSummary",
            "totalUserCount": total,
            "userTypes": types,
            "userRoles": roles,
            "userRegistrationMethodCounts": method_counts,
        }),
    ))
}

/// A stable id for a derived event.
fn event_id(t: &Tenant, user: u32, kind: &str) -> String {
    let a = (unit(t.seed, user, kind) * 4_294_967_295.0) as u64;
    let b = (unit(t.seed, user, &format!("{kind}-b")) * 281_474_976_710_655.0) as u64;
    format!("SSPR_{:08x}-{:04x}-{:04x}-{:012x}", a, user & 0xffff, (a >> 16) & 0xffff, b)
}

fn audit_json(
    t: &Tenant,
    ctx: &Ctx<'_>,
    id: String,
    at_secs: i64,
    activity: &str,
    user: u32,
    result: &str,
) -> Value {
    let at = ctx.clock_at(at_secs);
    json!({
        "id": id,
        "category": "UserManagement",
        "correlationId": uuid::Uuid::from_u128(u128::from(user) << 64 | at_secs as u128).to_string(),
        "result": result,
        "resultReason": "",
        "activityDisplayName": activity,
        "activityDateTime": at,
        "loggedByService": SSPR_SERVICE,
        "operationType": "Update",
        "initiatedBy": {"app": null, "user": {"id": t.user_id(user), "displayName": t.display_name(user), "userPrincipalName": t.upn(user), "ipAddress": "", "userType": null}},
        "targetResources": [{"id": t.user_id(user), "displayName": t.display_name(user), "type": "User", "userPrincipalName": t.upn(user), "groupPropertyName": null, "modifiedProperties": []}],
        "additionalDetails": [],
    })
}

impl Ctx<'_> {
    /// RFC 3339 of a simulated-seconds timestamp.
    fn clock_at(&self, secs: i64) -> String {
        let now_secs = self.now_secs();
        let now = chrono::DateTime::parse_from_rfc3339(&self.now)
            .map(|d| d.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        (now - chrono::TimeDelta::seconds(now_secs - secs))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

/// Every SSPR audit event of the tenant up to now, newest first.
fn all_audits(t: &Tenant, ctx: &Ctx<'_>) -> Vec<Value> {
    let now_secs = ctx.now_secs();
    let mut events: Vec<(i64, Value)> = Vec::new();
    for i in 0..t.users.len() as u32 {
        // Registration for SSPR is logged only once SSPR was enabled for the user.
        if let Some(at) =
            t.registered_at(i, now_secs).filter(|&at| t.users[i as usize].enabled_at <= at)
        {
            events.push((
                at,
                audit_json(
                    t,
                    ctx,
                    event_id(t, i, "reg"),
                    at,
                    "User registered for self-service password reset",
                    i,
                    "success",
                ),
            ));
        }
    }
    for (i, at) in t.derived_resets(now_secs) {
        events.push((
            at,
            audit_json(
                t,
                ctx,
                event_id(t, i, "reset"),
                at,
                "Reset password (self-service)",
                i,
                "success",
            ),
        ));
    }
    for e in &t.audits {
        if e.at_secs <= now_secs {
            events.push((
                e.at_secs,
                audit_json(t, ctx, e.id.clone(), e.at_secs, &e.activity, e.user, e.result),
            ));
        }
    }
    events.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1["id"].as_str().cmp(&b.1["id"].as_str())));
    events.into_iter().map(|(_, v)| v).collect()
}

pub(super) fn list_audits(world: &mut World, ctx: &Ctx<'_>, q: &Query, path: &str) -> HResult {
    ctx.require(perms::AUDITS)?;
    q.only_filter_on(&[
        "activityDisplayName",
        "activityDateTime",
        "loggedByService",
        "category",
        "result",
        "initiatedBy/user/id",
        "initiatedBy/user/userPrincipalName",
        "id",
    ])?;
    let t = &world.tenants[ctx.tenant];
    let all: Vec<Value> = all_audits(t, ctx).into_iter().filter(|e| q.matches(e)).collect();
    let start = q.start()?;
    let size = q.page_size(ctx.settings.page_size);
    let end = (start + size).min(all.len());
    let items: Vec<Value> =
        all.get(start..end).unwrap_or(&[]).iter().cloned().map(|v| q.project(v)).collect();
    let mut body =
        json!({"@odata.context": ctx.context("auditLogs/directoryAudits"), "value": items});
    if end < all.len() {
        body["@odata.nextLink"] = json!(q.next_link(ctx.base_url, path, end));
    }
    Ok(SimResponse::json(200, body))
}

pub(super) fn get_audit(world: &mut World, ctx: &Ctx<'_>, id: &str) -> HResult {
    ctx.require(perms::AUDITS)?;
    let t = &world.tenants[ctx.tenant];
    let mut e = all_audits(t, ctx)
        .into_iter()
        .find(|e| e["id"].as_str() == Some(id))
        .ok_or_else(|| SimResponse::not_found(id))?;
    e["@odata.context"] = json!(ctx.context("auditLogs/directoryAudits/$entity"));
    Ok(SimResponse::json(200, e))
}
