//! The plan of a rollout: for each selected tenant, what each step would change, compared with
//! what the tenant has now, and which tenants are blocked and why. Made with Graph reads only:
//! planning never writes to a tenant.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sspr_domain::{
    RolloutSpec, ScopeMode, TenantId,
    methods_plan::{Stage, plan_campaign, plan_methods},
    rollout::plan_waves,
};
use sspr_graph::{
    GraphClient, GraphError,
    types::{Group, ReportPopulation},
};
use sspr_registry::{Registry, RegistryError, failure_code};
use sspr_store::{Store, StoreError, Tenant, TenantFilter, TenantStatus};
use tokio::sync::Semaphore;
use utoipa::ToSchema;

/// Planning reads reports at normal priority: ahead of scheduled readiness refreshes, behind
/// the verification and gates of rollouts already running (a plan of 10,000 tenants is
/// 10,000 report reads).
const PLANNING: sspr_graph::ReportPriority = sspr_graph::ReportPriority::Normal;

use crate::{
    SCOPE_GROUP_DESCRIPTION,
    graph_state::{
        Coverage, SCOPE_WOULD_NARROW, ScopeDecision, campaign_now, governed_and_enabled,
        methods_now, narrowing_message, scope_decision,
    },
};

/// Why a plan could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The database failed.
    #[error("database error")]
    Store(#[from] StoreError),
}

/// One step of a tenant's rollout, as it would run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlannedStep {
    /// The step: `scope_group`, `pilot_members`, `methods_pilot`, `campaign_pilot`,
    /// `scope_task`, `pilot_verify`, `gate`, `methods_all`, `campaign_all`, `scope_all`.
    pub step: String,
    /// What it would do: `create`, `reuse`, `use_existing`, `add`, `update`, `none`, `skip`,
    /// `task`, `adapter`, `wait`, `dynamic_rule`, `kept_by_sspr_fleet`.
    pub action: String,
    /// One line for people.
    pub summary: String,
    /// The facts: current and desired values, ids, counts.
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// A reason a tenant cannot start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Blocker {
    /// Stable code: the tenant's readiness reason (`license_missing`, `consent_missing`, ...),
    /// `not_verified`, `pilot_group_not_found`, `pilot_group_name_taken`,
    /// `pilot_group_ambiguous`, `pilot_user_not_found`, `exclude_group_not_found`, or a Graph
    /// failure code.
    pub code: String,
    /// For people.
    pub message: String,
}

/// Something the people running a rollout should know that does not stop it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Advisory {
    /// Stable code: `sms_voice_retirement` (a tenant's users who can reset today only thanks
    /// to a phone method), `sms_stops_counting` (the policy turns SMS on).
    pub code: String,
    /// For people.
    pub message: String,
    /// The figures behind it.
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// The day Microsoft-provided SMS and voice stop counting for SSPR (graph-facts §11).
pub const SMS_VOICE_RETIREMENT: &str = "2027-02-01";

/// The advisory for a tenant whose last readiness report (its stored `figures`) shows users
/// who can reset only thanks to a phone method; `None` when there are none or no figures.
pub fn sms_voice_advisory(figures: &Value) -> Option<Advisory> {
    let count = |population: &str, field: &str| figures[population][field].as_u64();
    let dependent = count("all", "phone_dependent").filter(|n| *n > 0)?;
    let mut by_population = serde_json::Map::new();
    for population in ["members", "guests", "admins", "non_admins"] {
        by_population.insert(population.into(), json!(count(population, "phone_dependent")));
    }
    Some(Advisory {
        code: "sms_voice_retirement".into(),
        message: format!(
            "{dependent} users can reset their password today only thanks to SMS or voice, which stop counting on {SMS_VOICE_RETIREMENT}: have them register Microsoft Authenticator or another non-phone method (the registration campaign does this), or give the tenant a telecom provider"
        ),
        detail: json!({
            "phone_dependent": dependent,
            "sspr_capable": count("all", "sspr_capable"),
            "capable_without_phone": count("all", "capable_without_phone"),
            "phone_dependent_by_population": by_population,
            "methods_required": figures["methods_required"],
            "retirement_date": SMS_VOICE_RETIREMENT,
        }),
    })
}

/// The warning for a policy that turns SMS on.
fn sms_warning(spec: &RolloutSpec) -> Option<Advisory> {
    spec.policy.methods.sms.then(|| Advisory {
        code: "sms_stops_counting".into(),
        message: format!(
            "the policy turns SMS on: SMS and voice stop counting for self-service password reset on {SMS_VOICE_RETIREMENT} unless a tenant has its own telecom provider; users relying on it will not be able to reset"
        ),
        detail: json!({"retirement_date": SMS_VOICE_RETIREMENT}),
    })
}

/// What the rollout would do in one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantPlan {
    /// The tenant.
    pub tenant_id: String,
    /// Its name.
    pub display_name: String,
    /// Its wave (0 is the canaries, if any).
    pub wave: usize,
    /// `ready` or `blocked`.
    pub status: String,
    /// Why it is blocked.
    pub blocker: Option<Blocker>,
    /// The steps, in order (empty when blocked before any Graph read).
    pub steps: Vec<PlannedStep>,
    /// What does not block it but should be acted on (`sms_voice_retirement`), from the
    /// tenant's last readiness report.
    pub advisories: Vec<Advisory>,
}

/// The plan of a whole rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    /// Tenants by wave, in order.
    pub waves: Vec<Vec<String>>,
    /// Every selected tenant's plan, in wave order.
    pub tenants: Vec<TenantPlan>,
    /// Tenants that can start.
    pub ready: usize,
    /// Tenants that cannot.
    pub blocked: usize,
    /// Ids in the selector that name no active tenant within the caller's reach.
    pub not_found: Vec<String>,
    /// What the spec itself should reconsider (`sms_stops_counting`).
    pub warnings: Vec<Advisory>,
}

/// Makes plans.
#[derive(Debug, Clone)]
pub struct Planner {
    registry: Registry,
    graph: GraphClient,
    concurrency: usize,
}

/// The `exclude_groups` step: every exclusion group looked up in the tenant; `None` when the
/// policy names none, `exclude_group_not_found` when one is missing.
async fn exclusion_step(
    g: &GraphClient,
    t: &sspr_graph::Tenant,
    policy: &sspr_domain::SsprPolicy,
) -> Result<Option<PlannedStep>, Blocker> {
    let excludes = policy.exclude_group_ids();
    if excludes.is_empty() {
        return Ok(None);
    }
    let mut found = Vec::new();
    for id in &excludes {
        match g.group(t, id).await {
            Ok(Some(group)) => {
                found.push(json!({"id": group.id, "display_name": group.display_name}));
            }
            Ok(None) => {
                return Err(blocker(
                    "exclude_group_not_found",
                    format!("no group has the id {id} (policy.exclude_groups)"),
                ));
            }
            Err(e) => return Err(graph_blocker(&e)),
        }
    }
    let summary = if policy.exclude_groups_from_methods {
        format!(
            "{} groups are excluded from the registration campaign and the managed methods",
            found.len()
        )
    } else {
        format!(
            "{} groups are excluded from the registration campaign (the methods' targets are left to them)",
            found.len()
        )
    };
    Ok(Some(step(
        "exclude_groups",
        "exclude",
        summary,
        json!({"groups": found, "from_methods": policy.exclude_groups_from_methods}),
    )))
}

fn blocker(code: &str, message: impl Into<String>) -> Blocker {
    Blocker { code: code.to_owned(), message: message.into() }
}

fn step(step: &str, action: &str, summary: impl Into<String>, detail: Value) -> PlannedStep {
    PlannedStep { step: step.into(), action: action.into(), summary: summary.into(), detail }
}

fn graph_blocker(e: &GraphError) -> Blocker {
    blocker(failure_code(e), format!("Microsoft Graph refused a read: {}", e.reason()))
}

/// The tenants a selector names, within `within`, in order: listed ids first, then tagged or
/// all tenants in onboarding order; and the listed ids that name no active tenant in reach.
pub async fn select_tenants(
    store: &Store,
    spec: &RolloutSpec,
    within: Option<&BTreeSet<String>>,
) -> Result<(Vec<Tenant>, Vec<String>), StoreError> {
    select_tenants_as(store, spec, within, |t| t).await
}

/// [`select_tenants`], keeping of each tenant only what `keep` takes from it: the rows are
/// read a page at a time, so a selection of 10,000 tenants never holds 10,000 whole rows
/// (each with its readiness report) at once.
pub async fn select_tenants_as<T>(
    store: &Store,
    spec: &RolloutSpec,
    within: Option<&BTreeSet<String>>,
    keep: impl Fn(Tenant) -> T,
) -> Result<(Vec<T>, Vec<String>), StoreError> {
    let mut seen = HashSet::new();
    let mut selected = Vec::new();
    let mut not_found = Vec::new();
    for id in &spec.selector.tenant_ids {
        let reachable = within.is_none_or(|w| w.contains(id));
        let tenant = match id.parse::<TenantId>() {
            Ok(tid) if reachable => store.get_tenant(&tid).await?,
            _ => None,
        };
        match tenant {
            Some(t) if t.status != TenantStatus::Offboarded => {
                if seen.insert(t.id.to_string()) {
                    selected.push(keep(t));
                }
            }
            _ => not_found.push(id.clone()),
        }
    }
    let tags: Vec<Option<String>> = if spec.selector.all {
        vec![None]
    } else {
        spec.selector.tags.iter().map(|t| Some(t.trim().to_ascii_lowercase())).collect()
    };
    let mut more = Vec::new();
    for tag in tags {
        let mut after = None;
        loop {
            let filter = TenantFilter {
                tag: tag.clone(),
                within: within.cloned(),
                after_id: after.clone(),
                limit: 1000,
                ..TenantFilter::default()
            };
            let page = store.list_tenants(&filter).await?;
            let done = page.len() < 1000;
            after = page.last().map(|t| t.id.to_string());
            for t in page {
                let id = t.id.to_string();
                if seen.insert(id.clone()) {
                    more.push((id, keep(t)));
                }
            }
            if done {
                break;
            }
        }
    }
    more.sort_by(|a, b| a.0.cmp(&b.0));
    selected.extend(more.into_iter().map(|(_, t)| t));
    Ok((selected, not_found))
}

impl Planner {
    /// A planner reading tenants and Graph through `registry` (and its one Graph client),
    /// checking at most `concurrency` tenants at once.
    pub fn new(registry: Registry, concurrency: usize) -> Self {
        let graph = registry.graph().clone();
        Self { registry, graph, concurrency: concurrency.max(1) }
    }

    /// Plans `spec` over the tenants it selects within `within` (a restricted key's tenants).
    pub async fn plan(
        &self,
        spec: &RolloutSpec,
        within: Option<&BTreeSet<String>>,
    ) -> Result<Plan, PlanError> {
        let (tenants, not_found) = select_tenants(self.registry.store(), spec, within).await?;
        let ids: Vec<String> = tenants.iter().map(|t| t.id.to_string()).collect();
        let waves = plan_waves(&ids, spec.waves.canary.as_ref(), spec.waves.batches);
        let wave_of = |id: &str| waves.iter().position(|w| w.iter().any(|t| t == id)).unwrap_or(0);
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, tenant) in tenants.into_iter().enumerate() {
            let planner = self.clone();
            let spec = spec.clone();
            let slots = slots.clone();
            let wave = wave_of(tenant.id.as_str());
            tasks.spawn(async move {
                let _slot = slots.acquire().await;
                (i, planner.plan_tenant(&tenant, &spec, wave).await)
            });
        }
        let mut plans = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(done) = done {
                plans.push(done);
            }
        }
        plans.sort_by_key(|(i, p)| (p.wave, *i));
        let tenants: Vec<TenantPlan> = plans.into_iter().map(|(_, p)| p).collect();
        let blocked = tenants.iter().filter(|t| t.blocker.is_some()).count();
        let warnings = sms_warning(spec).into_iter().collect();
        Ok(Plan { waves, ready: tenants.len() - blocked, blocked, tenants, not_found, warnings })
    }

    /// Plans one tenant.
    pub async fn plan_tenant(
        &self,
        tenant: &Tenant,
        spec: &RolloutSpec,
        wave: usize,
    ) -> TenantPlan {
        let mut plan = TenantPlan {
            tenant_id: tenant.id.to_string(),
            display_name: tenant.display_name.clone(),
            wave,
            status: "ready".into(),
            blocker: None,
            steps: Vec::new(),
            advisories: Vec::new(),
        };
        match self.registry.store().sspr_report(&tenant.id).await {
            Ok(report) => plan
                .advisories
                .extend(report.and_then(|r| r.figures).as_ref().and_then(sms_voice_advisory)),
            Err(e) => {
                tracing::warn!(tenant = %tenant.id, error = %e, "cannot read the readiness report for the plan")
            }
        }
        match self.steps(tenant, spec).await {
            Ok(steps) => plan.steps = steps,
            Err((b, steps)) => {
                plan.status = "blocked".into();
                plan.blocker = Some(b);
                plan.steps = steps;
            }
        }
        plan
    }

    async fn steps(
        &self,
        tenant: &Tenant,
        spec: &RolloutSpec,
    ) -> Result<Vec<PlannedStep>, (Blocker, Vec<PlannedStep>)> {
        let none = Vec::new;
        match tenant.status {
            TenantStatus::Ready => {}
            TenantStatus::Unverified => {
                return Err((
                    blocker(
                        "not_verified",
                        "verify the tenant first (POST /v1/tenants/{id}/verify)",
                    ),
                    none(),
                ));
            }
            _ => {
                let code = tenant.status_reason.clone().unwrap_or_else(|| "not_ready".into());
                return Err((
                    blocker(
                        &code,
                        "the tenant's last verification found it not ready; see its readiness report",
                    ),
                    none(),
                ));
            }
        }
        let graph_tenant = match self.registry.graph_tenant(tenant).await {
            Ok(t) => t,
            Err(RegistryError::Vault(_)) => {
                return Err((
                    blocker(
                        "credentials_unreadable",
                        "the stored credentials cannot be decrypted with the configured master key",
                    ),
                    none(),
                ));
            }
            Err(e) => return Err((blocker("credentials_missing", e.to_string()), none())),
        };
        if spec.policy.scope_mode == ScopeMode::Portal {
            match self.registry.store().portal_credential(&tenant.id).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err((
                        blocker(
                            "portal_credentials_missing",
                            "scope_mode portal needs the tenant's portal credential (PUT /v1/tenants/{id}/portal-credentials)",
                        ),
                        none(),
                    ));
                }
                Err(e) => return Err((blocker("database_error", e.to_string()), none())),
            }
        }
        let g = &self.graph;
        let t = &graph_tenant;
        let policy = &spec.policy;
        let group_lookup = async {
            match (&policy.pilot_group.id, &policy.pilot_group.name) {
                (Some(id), _) => {
                    g.group(t, id.trim()).await.map(|g| g.into_iter().collect::<Vec<Group>>())
                }
                (None, Some(name)) => g.groups_named(t, name.trim()).await,
                (None, None) => Ok(Vec::new()),
            }
        };
        let (methods, groups, users) = tokio::join!(
            g.methods_policy(t),
            group_lookup,
            g.users_registered_by_feature_in(t, ReportPopulation::MEMBER_USERS, PLANNING)
        );
        let methods = methods.map_err(|e| (graph_blocker(&e), none()))?;
        let groups = groups.map_err(|e| (graph_blocker(&e), none()))?;
        // Reports need P1/P2; without them, how far SSPR reaches is unknown.
        let coverage = users.as_ref().ok().and_then(Coverage::of);
        let mut steps = Vec::new();

        // The scope group.
        let (group_id, group_exists) = match (&policy.pilot_group.id, groups.as_slice()) {
            (Some(id), [found]) => {
                steps.push(step(
                    "scope_group",
                    "use_existing",
                    format!("use the group {}", found.display_name.as_deref().unwrap_or(id)),
                    json!({"group_id": found.id}),
                ));
                (found.id.clone(), true)
            }
            (Some(id), _) => {
                return Err((
                    blocker("pilot_group_not_found", format!("no group has the id {id}")),
                    steps,
                ));
            }
            (None, []) => {
                let name = policy.pilot_group.name.clone().unwrap_or_default();
                steps.push(step(
                    "scope_group",
                    "create",
                    format!("create the security group \"{}\"", name.trim()),
                    json!({"display_name": name.trim(), "description": SCOPE_GROUP_DESCRIPTION}),
                ));
                ("(new group)".to_owned(), false)
            }
            (None, [found]) if found.description.as_deref() == Some(SCOPE_GROUP_DESCRIPTION) => {
                steps.push(step(
                    "scope_group",
                    "reuse",
                    "reuse the scope group sspr-fleet created before",
                    json!({"group_id": found.id}),
                ));
                (found.id.clone(), true)
            }
            (None, [found]) => {
                return Err((
                    blocker(
                        "pilot_group_name_taken",
                        format!(
                            "a group named like the pilot group exists ({}) and sspr-fleet did not create it: name its id in the policy to use it, or choose another name",
                            found.id
                        ),
                    ),
                    steps,
                ));
            }
            (None, _) => {
                return Err((
                    blocker(
                        "pilot_group_ambiguous",
                        "several groups have the pilot group's name: name the one to use by its id",
                    ),
                    steps,
                ));
            }
        };

        // Pilot members.
        let mut members_now: HashSet<String> = HashSet::new();
        if group_exists {
            let listed = g
                .group_members(t, &group_id)
                .await
                .map_err(|e| (graph_blocker(&e), steps.clone()))?;
            members_now.extend(listed.into_iter().map(|m| m.id.to_ascii_lowercase()));
        }
        let mut to_add = Vec::new();
        let mut already = 0usize;
        let mut unresolved = Vec::new();
        let mut resolved = Vec::new();
        let Some(pilot_members) = policy.pilot_group.members_for(tenant.default_domain.as_deref())
        else {
            return Err((
                blocker(
                    "pilot_user_not_found",
                    "pilot members use {domain} but the tenant's default domain is not known yet",
                ),
                steps,
            ));
        };
        for member in &pilot_members {
            match g.user(t, member).await {
                Ok(Some(u)) if members_now.contains(&u.id.to_ascii_lowercase()) => {
                    already += 1;
                    resolved.push(u.id);
                }
                Ok(Some(u)) => {
                    to_add.push(json!({"id": u.id, "user_principal_name": u.user_principal_name}));
                    resolved.push(u.id);
                }
                Ok(None) => unresolved.push(member.clone()),
                Err(e) => return Err((graph_blocker(&e), steps)),
            }
        }
        if !unresolved.is_empty() {
            return Err((
                blocker(
                    "pilot_user_not_found",
                    format!("{} pilot users are not in the tenant", unresolved.len()),
                ),
                {
                    steps.push(step(
                        "pilot_members",
                        "add",
                        "some pilot users were not found",
                        json!({"not_found": unresolved}),
                    ));
                    steps
                },
            ));
        }
        // Never narrow SSPR: decide what selecting the pilot group would do to its reach.
        let mut pilot_enabled = None;
        if coverage.is_some_and(|c| c.is_partial()) {
            let mut n = 0;
            for id in &resolved {
                match g.registration_details_of(t, id, PLANNING).await {
                    Ok(d) if governed_and_enabled(&d) => n += 1,
                    Ok(_) => {}
                    Err(e) if e.status() == Some(404) => {}
                    Err(e) => return Err((graph_blocker(&e), steps)),
                }
            }
            pilot_enabled = Some(n);
        }
        let decision = scope_decision(coverage, pilot_enabled);
        steps.push(coverage_step(coverage, decision, resolved.len() as u64));
        if let ScopeDecision::WouldNarrow { enabled_now, kept } = decision {
            return Err((blocker(SCOPE_WOULD_NARROW, narrowing_message(enabled_now, kept)), steps));
        }
        let already_all = decision == ScopeDecision::AlreadyAll;
        if already_all {
            steps.push(step(
                "pilot_members",
                "skip",
                "SSPR is already enabled for every user: the scope steps are skipped",
                json!({}),
            ));
        } else {
            steps.push(step(
                "pilot_members",
                if to_add.is_empty() { "none" } else { "add" },
                format!("add {} pilot users ({} already members)", to_add.len(), already),
                json!({"add": to_add, "already_members": already}),
            ));
        }

        // The exclusion groups (break-glass, service accounts): each must be in the tenant,
        // or the campaign could nudge the very accounts it was told to leave alone.
        let excludes = policy.exclude_group_ids();
        // Boxed: the planner's future stays small (it runs inside every preflight step).
        match Box::pin(exclusion_step(g, t, policy)).await {
            Ok(Some(s)) => steps.push(s),
            Ok(None) => {}
            Err(b) => return Err((b, steps)),
        }

        // Methods and campaign, pilot then all.
        let unless = if excludes.is_empty() {
            String::new()
        } else {
            format!(", excluding {} groups", excludes.len())
        };
        let current = methods_now(&methods);
        let pilot = Stage::Pilot { group_id: group_id.clone() };
        let pilot_changes = plan_methods(policy, &current, &pilot);
        steps.push(step(
            "methods_pilot",
            if pilot_changes.is_empty() { "none" } else { "update" },
            format!("{} methods to enable or widen for the pilot group", pilot_changes.len()),
            serde_json::to_value(&pilot_changes).unwrap_or_default(),
        ));
        let campaign = campaign_now(&methods);
        let campaign_pilot = plan_campaign(policy, &campaign, &pilot);
        steps.push(step(
            "campaign_pilot",
            if campaign_pilot.is_some() { "update" } else { "none" },
            if policy.registration_campaign.enabled {
                format!("target the registration campaign (register Microsoft Authenticator) at the pilot group{unless}")
            } else {
                "the registration campaign is not managed".to_owned()
            },
            serde_json::to_value(&campaign_pilot).unwrap_or_default(),
        ));
        if !already_all {
            let checklist = json!({
                "self_service_password_reset_enabled": "Selected",
                "selected_group": {"name": policy.pilot_group.name, "id": group_id},
                "number_of_methods_required": policy.methods_required,
                "require_users_to_register_when_signing_in": policy.register_at_sign_in,
                "days_before_users_are_asked_to_reconfirm": policy.reconfirm_days,
                "security_questions": "off",
                "password_writeback": if tenant.licence.is_premium() { "on, if users are synced from on-premises" } else { "not licensed" },
            });
            match policy.scope_mode {
                ScopeMode::Manual => steps.push(step("scope_task", "task", "a technician sets SSPR to Selected = the scope group in the Entra admin center and attests it", checklist)),
                ScopeMode::Portal => steps.push(step("scope_task", "adapter", "the unsupported portal adapter sets SSPR to Selected = the scope group", checklist)),
            }
        }
        steps.push(step(
            "pilot_verify",
            "wait",
            "wait until the pilot users show isSsprEnabled",
            json!({"pilot_users": policy.pilot_group.members.len()}),
        ));
        steps.push(step(
            "gate",
            "wait",
            "wait for the gates",
            serde_json::to_value(&spec.gates).unwrap_or_default(),
        ));
        // What the all stage would change, once the pilot changes are in place.
        let mut after_pilot = current.clone();
        for c in &pilot_changes {
            if let Some(m) = after_pilot.iter_mut().find(|m| m.key == c.key) {
                *m = c.after.clone();
            }
        }
        let all_changes = plan_methods(policy, &after_pilot, &Stage::All);
        steps.push(step(
            "methods_all",
            if all_changes.is_empty() { "none" } else { "update" },
            format!("{} methods to open to all users", all_changes.len()),
            serde_json::to_value(&all_changes).unwrap_or_default(),
        ));
        let campaign_after = campaign_pilot.map(|c| c.after).unwrap_or(campaign);
        let campaign_all = plan_campaign(policy, &campaign_after, &Stage::All);
        steps.push(step(
            "campaign_all",
            if campaign_all.is_some() { "update" } else { "none" },
            if policy.registration_campaign.enabled {
                format!("open the registration campaign (register Microsoft Authenticator) to all users{unless}")
            } else {
                "the registration campaign is not managed".to_owned()
            },
            serde_json::to_value(&campaign_all).unwrap_or_default(),
        ));
        if !already_all {
            let dynamic = tenant.licence.is_premium();
            steps.push(step(
                "scope_all",
                if dynamic { "dynamic_rule" } else { "kept_by_sspr_fleet" },
                if dynamic {
                    "the scope group takes every enabled member user by a dynamic membership rule"
                } else {
                    "no Entra ID P1: sspr-fleet adds every enabled member user to the scope group and keeps it current"
                },
                json!({"group_id": group_id, "licence": tenant.licence.as_str()}),
            ));
        }
        Ok(steps)
    }
}

/// The plan's statement of how many member users SSPR reaches now and after each stage (the
/// users its None/Selected/All setting governs: members who are not administrators).
fn coverage_step(
    coverage: Option<Coverage>,
    decision: ScopeDecision,
    pilot_users: u64,
) -> PlannedStep {
    let Some(c) = coverage else {
        return step(
            "sspr_coverage",
            "unknown",
            "how many users SSPR reaches cannot be read without Entra ID P1/P2; the scope task tells the technician to leave an All setting as it is",
            json!({"now": null, "after_pilot": null, "after_all": null}),
        );
    };
    let (action, summary, after_pilot) = match decision {
        ScopeDecision::AlreadyAll => (
            "keep",
            format!(
                "SSPR already reaches all {} member users: nothing to widen, nothing to narrow",
                c.users
            ),
            c.enabled,
        ),
        ScopeDecision::Proceed => (
            "widen",
            format!(
                "SSPR reaches {} of {} member users now, the pilot users after the pilot stage, every enabled member user after the all stage",
                c.enabled, c.users
            ),
            c.enabled.max(pilot_users),
        ),
        ScopeDecision::WouldNarrow { kept, .. } => (
            "would_narrow",
            format!(
                "SSPR reaches {} of {} member users now; Selected = the pilot group would keep it for {kept}",
                c.enabled, c.users
            ),
            kept,
        ),
    };
    step(
        "sspr_coverage",
        action,
        summary,
        json!({"member_users": c.users, "now": c.enabled, "after_pilot": after_pilot, "after_all": c.users}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sms_advisory_carries_the_stored_counts_and_only_when_someone_depends_on_phone() {
        let figures = json!({
            "all": {"sspr_capable": 40, "capable_without_phone": 31, "phone_dependent": 9},
            "members": {"phone_dependent": 8}, "guests": {"phone_dependent": 0},
            "admins": {"phone_dependent": 1}, "non_admins": {"phone_dependent": 8},
            "methods_required": {"value": 2, "source": "inferred"},
        });
        let a = sms_voice_advisory(&figures).unwrap();
        assert_eq!(a.code, "sms_voice_retirement");
        assert_eq!(a.detail["phone_dependent"], 9);
        assert_eq!(a.detail["capable_without_phone"], 31);
        assert_eq!(a.detail["phone_dependent_by_population"]["admins"], 1);
        assert_eq!(a.detail["methods_required"]["source"], "inferred");
        assert!(a.message.contains("9 users"), "{}", a.message);
        let none =
            json!({"all": {"sspr_capable": 40, "capable_without_phone": 40, "phone_dependent": 0}});
        assert_eq!(sms_voice_advisory(&none), None);
        // Figures stored before the retirement figures existed: no advisory, no guess.
        assert_eq!(sms_voice_advisory(&json!({"all": {"sspr_capable": 40}})), None);
    }
}
