//! Subscribed SKUs, the organization (hybrid flag) and users.

use serde_json::{Value, json};

use super::{Ctx, HResult, perms, query::Query};
use crate::{
    World,
    model::{Tenant, flag, unit},
    response::SimResponse,
};

pub(super) fn list_skus(world: &mut World, ctx: &Ctx<'_>, q: &Query) -> HResult {
    ctx.require(perms::ORG_READ)?;
    if q.filter.is_some() {
        return Err(SimResponse::error(
            400,
            "Request_UnsupportedQuery",
            "The $filter query option is not supported for subscribedSkus.",
        ));
    }
    let t = &world.tenants[ctx.tenant];
    let value: Vec<Value> = t.skus.iter().map(|s| q.project(s.to_json(&t.id))).collect();
    Ok(SimResponse::json(
        200,
        json!({"@odata.context": ctx.context("subscribedSkus"), "value": value}),
    ))
}

pub(super) fn get_sku(world: &mut World, ctx: &Ctx<'_>, id: &str) -> HResult {
    ctx.require(perms::ORG_READ)?;
    let t = &world.tenants[ctx.tenant];
    let sku = t
        .skus
        .iter()
        .map(|s| s.to_json(&t.id))
        .find(|s| s["id"].as_str().is_some_and(|v| v.eq_ignore_ascii_case(id)))
        .ok_or_else(|| SimResponse::not_found(id))?;
    Ok(SimResponse::json(200, sku))
}

fn organization_json(t: &Tenant, ctx: &Ctx<'_>) -> Value {
    let domains: Vec<Value> = t
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| json!({"name": d, "isDefault": i == 0, "isInitial": d.ends_with(".onmicrosoft.com"), "type": "Managed", "capabilities": "Email, OfficeCommunicationsOnline"}))
        .collect();
    json!({
        "id": t.id,
        "displayName": t.display_name,
        "tenantType": "AAD",
        "countryLetterCode": "US",
        "createdDateTime": "2019-03-01T09:00:00Z",
        "onPremisesSyncEnabled": t.on_premises_sync_enabled,
        "onPremisesLastSyncDateTime": if t.on_premises_sync_enabled == Some(true) { Value::String(ctx.now.clone()) } else { Value::Null },
        "verifiedDomains": domains,
    })
}

pub(super) fn list_organization(world: &mut World, ctx: &Ctx<'_>) -> HResult {
    ctx.require(perms::ORG_READ)?;
    let org = organization_json(&world.tenants[ctx.tenant], ctx);
    Ok(SimResponse::json(
        200,
        json!({"@odata.context": ctx.context("organization"), "value": [org]}),
    ))
}

pub(super) fn get_organization(world: &mut World, ctx: &Ctx<'_>, id: &str) -> HResult {
    ctx.require(perms::ORG_READ)?;
    let t = &world.tenants[ctx.tenant];
    if !t.id.eq_ignore_ascii_case(id) {
        return Err(SimResponse::not_found(id));
    }
    let mut org = organization_json(t, ctx);
    org["@odata.context"] = json!(ctx.context("organization/$entity"));
    Ok(SimResponse::json(200, org))
}

/// A user's directory contact attributes: `mobilePhone` (about 65 % of members),
/// `businessPhones` (about half) and `otherMails` (about 30 %), drawn from the tenant's seed
/// independently of the methods the user registered. They are not authentication methods and
/// never count towards SSPR registration (MC1325414).
pub(crate) fn directory_contacts(
    t: &Tenant,
    index: u32,
) -> (Option<String>, Vec<String>, Vec<String>) {
    if t.users[index as usize].flags & flag::GUEST != 0 {
        return (None, Vec::new(), Vec::new());
    }
    let n = index % 10_000;
    let mobile = (unit(t.seed, index, "dir-mobile") < 0.65).then(|| format!("+1 425 555 {n:04}"));
    let business = if unit(t.seed, index, "dir-business") < 0.5 {
        vec![format!("+1 206 555 {n:04}")]
    } else {
        Vec::new()
    };
    let other = if unit(t.seed, index, "dir-other-mail") < 0.3 {
        vec![format!("user{index:05}.home@example.net")]
    } else {
        Vec::new()
    };
    (mobile, business, other)
}

/// A user resource.
pub(crate) fn user_json(t: &Tenant, index: u32) -> Value {
    let u = t.users[index as usize];
    let (mobile_phone, business_phones, other_mails) = directory_contacts(t, index);
    json!({
        "@odata.type": "#microsoft.graph.user",
        "id": t.user_id(index),
        "displayName": t.display_name(index),
        "userPrincipalName": t.upn(index),
        "mail": t.upn(index),
        "accountEnabled": u.flags & flag::DISABLED == 0,
        "userType": if u.flags & flag::GUEST != 0 { "Guest" } else { "Member" },
        "onPremisesSyncEnabled": if u.flags & flag::SYNCED != 0 { Value::Bool(true) } else { Value::Null },
        "mobilePhone": mobile_phone,
        "businessPhones": business_phones,
        "otherMails": other_mails,
    })
}

pub(super) fn list_users(world: &mut World, ctx: &Ctx<'_>, q: &Query, path: &str) -> HResult {
    ctx.require(perms::USER_READ)?;
    q.only_filter_on(&[
        "userPrincipalName",
        "accountEnabled",
        "userType",
        "displayName",
        "id",
        "mail",
    ])?;
    let t = &world.tenants[ctx.tenant];
    let start = q.start()?;
    let size = q.page_size(ctx.settings.page_size);
    let mut items = Vec::new();
    let mut next = None;
    for i in start..t.users.len() {
        let u = user_json(t, i as u32);
        if !q.matches(&u) {
            continue;
        }
        if items.len() == size {
            next = Some(i);
            break;
        }
        items.push(q.project(u));
    }
    let mut body = json!({"@odata.context": ctx.context("users"), "value": items});
    if let Some(n) = next {
        body["@odata.nextLink"] = json!(q.next_link(ctx.base_url, path, n));
    }
    Ok(SimResponse::json(200, body))
}

pub(super) fn get_user(world: &mut World, ctx: &Ctx<'_>, id: &str) -> HResult {
    ctx.require(perms::USER_READ)?;
    let t = &world.tenants[ctx.tenant];
    let i = t.find_user(id).ok_or_else(|| SimResponse::not_found(id))?;
    let mut u = user_json(t, i);
    u["@odata.context"] = json!(ctx.context("users/$entity"));
    Ok(SimResponse::json(200, u))
}
