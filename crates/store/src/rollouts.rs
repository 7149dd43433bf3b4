//! Rollouts: one desired SSPR state (the spec) applied to a set of tenants in waves, the pilot
//! wave first, with the history, snapshots and manual tasks that go with them.
//!
//! The store knows the states only as text: the rollout's and each tenant's state machine live
//! in the domain crate, and the database's CHECK constraints are the only validation here.
//! Every state change is *fenced*: it applies only if the row is still in the state the caller
//! read, and appends its event in the same transaction, so two workers racing on one tenant
//! cannot both move it, and the history never records a change that did not happen.
//!
//! Events (`rollout_events`) are append-only and numbered by a database sequence (`seq`);
//! events without a tenant are rollout-wide. Snapshots keep a tenant setting as it was before a
//! step changed it, for rollback in reverse order. Tasks are the manual work a rollout needs
//! from an operator, at most one of each kind per tenant of a rollout, open until attested.
//! Times come from the caller's clock, never the database server's.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use sspr_domain::{RolloutId, SnapshotId, TaskId};

use crate::{
    Store, StoreError,
    pool::{with_reader, with_writer},
    time::{from_ms, to_ms},
    webhooks::{FanOut, fan_out_webhooks},
};

/// Rollout states in which a rollout is over; entering one sets `finished_at`.
const FINISHED_STATES: [&str; 3] = ["completed", "cancelled", "rolled_back"];

/// How many rows one multi-row `INSERT` carries: well under every backend's parameter limit.
const INSERT_BATCH: usize = 500;

/// A rollout to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRollout {
    /// Id of the rollout.
    pub id: RolloutId,
    /// Human name.
    pub name: String,
    /// The desired SSPR state, as JSON; never changed afterwards.
    pub spec: serde_json::Value,
    /// How many waves the tenants are spread over (wave 0 is the pilot wave).
    pub wave_count: i32,
    /// Who created it (an API key id or `cli`); the actor of the `created` event.
    pub created_by: String,
    /// When set, a second creation with the same key is refused with
    /// [`StoreError::Conflict`] and the first can be found with
    /// [`Store::find_rollout_by_idempotency_key`].
    pub idempotency_key: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// The tenants it applies to and their place in the waves.
    pub tenants: Vec<NewRolloutTenant>,
}

/// A tenant of a rollout to create, and its place in the waves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRolloutTenant {
    /// The tenant (a tenant id).
    pub tenant_id: String,
    /// The wave it belongs to, from 0 (the pilot wave).
    pub wave: i32,
    /// Its order within the wave.
    pub position: i32,
}

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Id of the rollout.
    pub id: RolloutId,
    /// Human name.
    pub name: String,
    /// The desired SSPR state, as JSON.
    pub spec: serde_json::Value,
    /// `running`, `paused`, `completed`, `cancelled`, `rolling_back` or `rolled_back`.
    pub state: String,
    /// Why it is in that state, when that needs saying (e.g. why it paused).
    pub state_reason: Option<String>,
    /// The wave being worked on, from 0.
    pub current_wave: i32,
    /// How many waves there are.
    pub wave_count: i32,
    /// Who created it.
    pub created_by: String,
    /// The idempotency key it was created with, if any.
    pub idempotency_key: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change of the rollout row (not of its tenants).
    pub updated_at: DateTime<Utc>,
    /// When it reached `completed`, `cancelled` or `rolled_back`; `None` otherwise.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One tenant of a rollout, where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutTenant {
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The tenant (a tenant id).
    pub tenant_id: String,
    /// Its wave, from 0.
    pub wave: i32,
    /// Its order within the wave.
    pub position: i32,
    /// One of the tenant states (`pending`, `preflight`, ..., `rolled_back`).
    pub state: String,
    /// While paused, the state to resume to.
    pub paused_from: Option<String>,
    /// Why it is in that state (e.g. a blocker code).
    pub reason: Option<String>,
    /// The error of the last failed step.
    pub last_error: Option<String>,
    /// The group the SSPR scope was set to, once created or chosen.
    pub scope_group_id: Option<String>,
    /// When it reached the pilot gate.
    pub gate_entered_at: Option<DateTime<Utc>>,
    /// When its gate was approved.
    pub approved_at: Option<DateTime<Utc>>,
    /// Who approved its gate.
    pub approved_by: Option<String>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One entry of a rollout's history.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutEvent {
    /// Position in the history of all rollouts; increases with every event appended.
    pub seq: i64,
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The tenant it concerns; `None` for rollout-wide events.
    pub tenant_id: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who or what caused it (an API key id, `cli`, `engine`, ...).
    pub actor: String,
    /// What happened, e.g. `created`, `transition`, `approved`.
    pub kind: String,
    /// The state before, for state changes.
    pub from_state: Option<String>,
    /// The state after, for state changes.
    pub to_state: Option<String>,
    /// Anything else worth keeping, as JSON.
    pub detail: serde_json::Value,
}

/// An event to append to a rollout's history.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The tenant it concerns; `None` for rollout-wide events.
    pub tenant_id: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who or what caused it.
    pub actor: String,
    /// What happened.
    pub kind: String,
    /// The state before, for state changes.
    pub from_state: Option<String>,
    /// The state after, for state changes.
    pub to_state: Option<String>,
    /// Anything else worth keeping, as JSON.
    pub detail: serde_json::Value,
}

/// A change of a rollout tenant's state, with the fields that change with it. For the
/// `Option<Option<_>>` fields, `None` leaves the field as it is, `Some(None)` clears it and
/// `Some(Some(v))` sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantUpdate {
    /// The new state.
    pub to_state: String,
    /// The state to resume to after a pause.
    pub paused_from: Option<Option<String>>,
    /// Why the tenant is in the new state.
    pub reason: Option<Option<String>>,
    /// The error of the last failed step.
    pub last_error: Option<Option<String>>,
    /// The group the SSPR scope was set to.
    pub scope_group_id: Option<Option<String>>,
    /// When the tenant reached the pilot gate.
    pub gate_entered_at: Option<Option<DateTime<Utc>>>,
    /// When the change is made (the tenant's new `updated_at`).
    pub at: DateTime<Utc>,
}

/// A tenant setting as it was before a rollout step changed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Id of the snapshot. Snapshots taken within the same millisecond are ordered by id, so
    /// ids should come from [`SnapshotId::new`] in the order the snapshots are taken.
    pub id: SnapshotId,
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The tenant whose setting it is.
    pub tenant_id: String,
    /// The rollout step that took it.
    pub step: String,
    /// What was captured: `method:sms`, `campaign`, `group:<id>:members`,
    /// `group:<id>:created`, ...
    pub target: String,
    /// The setting before the change, as JSON.
    pub before: serde_json::Value,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// When the setting was put back to `before`; `None` until then.
    pub restored_at: Option<DateTime<Utc>>,
}

/// Manual work a rollout needs from an operator for one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Id of the task.
    pub id: TaskId,
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The tenant it is for.
    pub tenant_id: String,
    /// What to do, e.g. `grant_consent`; at most one task of each kind per tenant of a rollout.
    pub kind: String,
    /// How to do it, as JSON.
    pub instructions: serde_json::Value,
    /// `open`, `attested` or `cancelled`.
    pub state: String,
    /// Who attested that it was done.
    pub attested_by: Option<String>,
    /// When it was attested.
    pub attested_at: Option<DateTime<Utc>>,
    /// The attester's note.
    pub note: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Which rollouts to list. Every set field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutFilter {
    /// The tenant ids a restricted API key reaches: only rollouts with at least one of these
    /// tenants. An empty set matches nothing.
    pub within: Option<BTreeSet<String>>,
    /// Only rollouts in this state.
    pub state: Option<String>,
    /// Only rollouts listed after this id, newest first: ids sorting *before* it (the cursor
    /// of the previous page).
    pub after_id: Option<String>,
    /// At most this many rollouts.
    pub limit: u32,
}

/// Which tasks to list. Every set field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only the tasks of this rollout.
    pub rollout_id: Option<String>,
    /// Only the tasks for this tenant.
    pub tenant_id: Option<String>,
    /// Only tasks in this state.
    pub state: Option<String>,
    /// The tenant ids a restricted API key reaches: only tasks for these tenants. An empty set
    /// matches nothing.
    pub within: Option<BTreeSet<String>>,
    /// Only tasks whose id sorts after this one (the cursor of the previous page).
    pub after_id: Option<String>,
    /// At most this many tasks.
    pub limit: u32,
}

macro_rules! rollout_columns {
    () => {
        "id, name, spec, state, state_reason, current_wave, wave_count, created_by, \
         idempotency_key, created_at, updated_at, finished_at"
    };
}

macro_rules! rollout_tenant_columns {
    () => {
        "rollout_id, tenant_id, wave, position, state, paused_from, reason, last_error, \
         scope_group_id, gate_entered_at, approved_at, approved_by, updated_at"
    };
}

macro_rules! event_columns {
    () => {
        "seq, rollout_id, tenant_id, at, actor, kind, from_state, to_state, detail"
    };
}

macro_rules! snapshot_columns {
    () => {
        "id, rollout_id, tenant_id, step, target, before, created_at, restored_at"
    };
}

macro_rules! task_columns {
    () => {
        "id, rollout_id, tenant_id, kind, instructions, state, attested_by, attested_at, note, \
         created_at"
    };
}

#[derive(sqlx::FromRow)]
struct RolloutRow {
    id: String,
    name: String,
    spec: String,
    state: String,
    state_reason: Option<String>,
    current_wave: i32,
    wave_count: i32,
    created_by: String,
    idempotency_key: Option<String>,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct RolloutTenantRow {
    rollout_id: String,
    tenant_id: String,
    wave: i32,
    position: i32,
    state: String,
    paused_from: Option<String>,
    reason: Option<String>,
    last_error: Option<String>,
    scope_group_id: Option<String>,
    gate_entered_at: Option<i64>,
    approved_at: Option<i64>,
    approved_by: Option<String>,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    rollout_id: String,
    tenant_id: Option<String>,
    at: i64,
    actor: String,
    kind: String,
    from_state: Option<String>,
    to_state: Option<String>,
    detail: String,
}

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    id: String,
    rollout_id: String,
    tenant_id: String,
    step: String,
    target: String,
    before: String,
    created_at: i64,
    restored_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct TaskRow {
    id: String,
    rollout_id: String,
    tenant_id: String,
    kind: String,
    instructions: String,
    state: String,
    attested_by: Option<String>,
    attested_at: Option<i64>,
    note: Option<String>,
    created_at: i64,
}

fn corrupt(what: &'static str) -> impl Fn(String) -> StoreError {
    move |detail| StoreError::Corrupt { what, detail }
}

fn json_text(
    what: &'static str,
    field: &str,
    value: &serde_json::Value,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt(what)(format!("{field}: {e}")))
}

fn parse_json(
    what: &'static str,
    field: &str,
    text: &str,
) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(what)(format!("{field}: {e}")))
}

fn opt_ms(ms: Option<i64>, what: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(|t| from_ms(t, what)).transpose()
}

impl TryFrom<RolloutRow> for Rollout {
    type Error = StoreError;
    fn try_from(row: RolloutRow) -> Result<Self, StoreError> {
        const WHAT: &str = "rollout";
        Ok(Rollout {
            id: row.id.parse().map_err(|e| corrupt(WHAT)(format!("id: {e}")))?,
            name: row.name,
            spec: parse_json(WHAT, "spec", &row.spec)?,
            state: row.state,
            state_reason: row.state_reason,
            current_wave: row.current_wave,
            wave_count: row.wave_count,
            created_by: row.created_by,
            idempotency_key: row.idempotency_key,
            created_at: from_ms(row.created_at, WHAT)?,
            updated_at: from_ms(row.updated_at, WHAT)?,
            finished_at: opt_ms(row.finished_at, WHAT)?,
        })
    }
}

impl TryFrom<RolloutTenantRow> for RolloutTenant {
    type Error = StoreError;
    fn try_from(row: RolloutTenantRow) -> Result<Self, StoreError> {
        const WHAT: &str = "rollout tenant";
        Ok(RolloutTenant {
            rollout_id: row
                .rollout_id
                .parse()
                .map_err(|e| corrupt(WHAT)(format!("rollout_id: {e}")))?,
            tenant_id: row.tenant_id,
            wave: row.wave,
            position: row.position,
            state: row.state,
            paused_from: row.paused_from,
            reason: row.reason,
            last_error: row.last_error,
            scope_group_id: row.scope_group_id,
            gate_entered_at: opt_ms(row.gate_entered_at, WHAT)?,
            approved_at: opt_ms(row.approved_at, WHAT)?,
            approved_by: row.approved_by,
            updated_at: from_ms(row.updated_at, WHAT)?,
        })
    }
}

impl TryFrom<EventRow> for RolloutEvent {
    type Error = StoreError;
    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        const WHAT: &str = "rollout event";
        Ok(RolloutEvent {
            seq: row.seq,
            rollout_id: row
                .rollout_id
                .parse()
                .map_err(|e| corrupt(WHAT)(format!("rollout_id: {e}")))?,
            tenant_id: row.tenant_id,
            at: from_ms(row.at, WHAT)?,
            actor: row.actor,
            kind: row.kind,
            from_state: row.from_state,
            to_state: row.to_state,
            detail: parse_json(WHAT, "detail", &row.detail)?,
        })
    }
}

impl TryFrom<SnapshotRow> for Snapshot {
    type Error = StoreError;
    fn try_from(row: SnapshotRow) -> Result<Self, StoreError> {
        const WHAT: &str = "snapshot";
        Ok(Snapshot {
            id: row.id.parse().map_err(|e| corrupt(WHAT)(format!("id: {e}")))?,
            rollout_id: row
                .rollout_id
                .parse()
                .map_err(|e| corrupt(WHAT)(format!("rollout_id: {e}")))?,
            tenant_id: row.tenant_id,
            step: row.step,
            target: row.target,
            before: parse_json(WHAT, "before", &row.before)?,
            created_at: from_ms(row.created_at, WHAT)?,
            restored_at: opt_ms(row.restored_at, WHAT)?,
        })
    }
}

impl TryFrom<TaskRow> for Task {
    type Error = StoreError;
    fn try_from(row: TaskRow) -> Result<Self, StoreError> {
        const WHAT: &str = "task";
        Ok(Task {
            id: row.id.parse().map_err(|e| corrupt(WHAT)(format!("id: {e}")))?,
            rollout_id: row
                .rollout_id
                .parse()
                .map_err(|e| corrupt(WHAT)(format!("rollout_id: {e}")))?,
            tenant_id: row.tenant_id,
            kind: row.kind,
            instructions: parse_json(WHAT, "instructions", &row.instructions)?,
            state: row.state,
            attested_by: row.attested_by,
            attested_at: opt_ms(row.attested_at, WHAT)?,
            note: row.note,
            created_at: from_ms(row.created_at, WHAT)?,
        })
    }
}

/// Pushes ` AND <column> IN (...)` for a restricted key's reach; an empty set matches nothing.
pub(crate) fn push_within<DB: sqlx::Database>(
    qb: &mut QueryBuilder<DB>,
    column: &str,
    ids: &BTreeSet<String>,
) where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    if ids.is_empty() {
        qb.push(" AND 1 = 0");
        return;
    }
    qb.push(" AND ").push(column).push(" IN (");
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(id.clone());
    }
    qb.push(")");
}

/// An event ready to insert: its JSON detail already serialised.
struct EventValues {
    tenant_id: Option<String>,
    at: i64,
    actor: String,
    kind: String,
    from_state: Option<String>,
    to_state: Option<String>,
    detail: String,
}

impl EventValues {
    fn new(event: &NewEvent) -> Result<Self, StoreError> {
        Ok(Self {
            tenant_id: event.tenant_id.clone(),
            at: to_ms(event.at),
            actor: event.actor.clone(),
            kind: event.kind.clone(),
            from_state: event.from_state.clone(),
            to_state: event.to_state.clone(),
            detail: json_text("rollout event", "detail", &event.detail)?,
        })
    }
}

/// Inserts `events` (non-empty, at most [`INSERT_BATCH`]) into the history of `rollout_id`.
/// Multi-row `VALUES` lists are inserted in order, so their `seq`s follow the slice's order.
fn insert_events_query<DB: sqlx::Database>(
    rollout_id: &str,
    events: &[EventValues],
) -> QueryBuilder<DB>
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    let mut qb = QueryBuilder::new(
        "INSERT INTO rollout_events (rollout_id, tenant_id, at, actor, kind, from_state, \
         to_state, detail) ",
    );
    qb.push_values(events, |mut row, e| {
        row.push_bind(rollout_id.to_owned())
            .push_bind(e.tenant_id.clone())
            .push_bind(e.at)
            .push_bind(e.actor.clone())
            .push_bind(e.kind.clone())
            .push_bind(e.from_state.clone())
            .push_bind(e.to_state.clone())
            .push_bind(e.detail.clone());
    });
    qb
}

/// A fenced change and its event in one transaction: `$update` (run on `$tx`, giving the rows
/// it changed), then, only if it changed a row, the event `$event` of rollout `$id` and its
/// webhook deliveries (`$fan_out`). Returns `Ok(false)`, with nothing written, when the fence
/// did not hold.
macro_rules! fenced_change {
    ($self:ident, $tx:ident => $update:expr, $id:expr, $event:expr, $fan_out:expr) => {{
        let applied = with_writer!($self, pool => {
            let mut $tx = pool.begin().await?;
            let updated: u64 = $update;
            if updated == 0 {
                return Ok(false);
            }
            insert_events_query($id, std::slice::from_ref($event))
                .build()
                .execute(&mut *$tx)
                .await?;
            fan_out_webhooks!($tx, $fan_out);
            $tx.commit().await?;
            true
        });
        Ok(applied)
    }};
}

/// The fenced `UPDATE` of [`Store::transition_rollout_tenant`]: only the fields `update` sets.
fn transition_query<DB: sqlx::Database>(
    rollout_id: &str,
    tenant_id: &str,
    from: &str,
    update: &TenantUpdate,
) -> QueryBuilder<DB>
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    let mut qb = QueryBuilder::new("UPDATE rollout_tenants SET state = ");
    qb.push_bind(update.to_state.clone()).push(", updated_at = ").push_bind(to_ms(update.at));
    let text_fields = [
        ("paused_from", &update.paused_from),
        ("reason", &update.reason),
        ("last_error", &update.last_error),
        ("scope_group_id", &update.scope_group_id),
    ];
    for (column, value) in text_fields {
        if let Some(value) = value {
            qb.push(", ").push(column).push(" = ").push_bind(value.clone());
        }
    }
    if let Some(gate_entered_at) = update.gate_entered_at {
        qb.push(", gate_entered_at = ").push_bind(gate_entered_at.map(to_ms));
    }
    qb.push(" WHERE rollout_id = ")
        .push_bind(rollout_id.to_owned())
        .push(" AND tenant_id = ")
        .push_bind(tenant_id.to_owned())
        .push(" AND state = ")
        .push_bind(from.to_owned());
    qb
}

/// The fenced `UPDATE` of [`Store::set_rollout_state`] (`from` non-empty).
fn rollout_state_query<DB: sqlx::Database>(
    rollout_id: &str,
    from: &[&str],
    to: &str,
    reason: Option<&str>,
    at: i64,
) -> QueryBuilder<DB>
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    let finished_at = FINISHED_STATES.contains(&to).then_some(at);
    let mut qb = QueryBuilder::new("UPDATE rollouts SET state = ");
    qb.push_bind(to.to_owned())
        .push(", state_reason = ")
        .push_bind(reason.map(str::to_owned))
        .push(", updated_at = ")
        .push_bind(at)
        .push(", finished_at = ")
        .push_bind(finished_at)
        .push(" WHERE id = ")
        .push_bind(rollout_id.to_owned())
        .push(" AND state IN (");
    let mut states = qb.separated(", ");
    for state in from {
        states.push_bind((*state).to_owned());
    }
    qb.push(")");
    qb
}

/// The `UPDATE ... RETURNING` of [`Store::approve_rollout_tenants`].
fn approve_query<DB: sqlx::Database>(
    rollout_id: &str,
    tenant_ids: Option<&[String]>,
    wave: Option<i32>,
    actor: &str,
    at: i64,
) -> QueryBuilder<DB>
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    i32: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    let mut qb = QueryBuilder::new("UPDATE rollout_tenants SET approved_at = ");
    qb.push_bind(at)
        .push(", approved_by = ")
        .push_bind(actor.to_owned())
        .push(", updated_at = ")
        .push_bind(at)
        .push(" WHERE rollout_id = ")
        .push_bind(rollout_id.to_owned())
        .push(" AND approved_at IS NULL");
    if let Some(wave) = wave {
        qb.push(" AND wave = ").push_bind(wave);
    }
    if let Some(ids) = tenant_ids {
        let ids: BTreeSet<String> = ids.iter().cloned().collect();
        push_within(&mut qb, "tenant_id", &ids);
    }
    qb.push(" RETURNING tenant_id, wave");
    qb
}

impl Store {
    /// Creates a rollout in one transaction: the rollout row (state `running`, wave 0), one
    /// row per tenant (state `pending`) and a rollout-wide `created` event by `created_by`
    /// (to state `running`, detail `{"tenants": n, "wave_count": w}`).
    /// [`StoreError::Conflict`] (`"rollout"`) when the id or the idempotency key is taken;
    /// (`"rollout tenant"`) when a tenant appears twice in `r.tenants`.
    pub async fn insert_rollout(&self, r: NewRollout) -> Result<Rollout, StoreError> {
        const INSERT: &str = concat!(
            "INSERT INTO rollouts (id, name, spec, state, current_wave, wave_count, created_by,
                 idempotency_key, created_at, updated_at)
             VALUES ($1, $2, $3, 'running', 0, $4, $5, $6, $7, $7)
             RETURNING ",
            rollout_columns!()
        );
        let id = r.id.as_str();
        let spec = json_text("rollout", "spec", &r.spec)?;
        let created_at = to_ms(r.created_at);
        let created = EventValues::new(&NewEvent {
            tenant_id: None,
            at: r.created_at,
            actor: r.created_by.clone(),
            kind: "created".into(),
            from_state: None,
            to_state: Some("running".into()),
            detail: serde_json::json!({ "tenants": r.tenants.len(), "wave_count": r.wave_count }),
        })?;
        let row: RolloutRow = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: RolloutRow = sqlx::query_as(INSERT)
                .bind(id)
                .bind(&r.name)
                .bind(&spec)
                .bind(r.wave_count)
                .bind(&r.created_by)
                .bind(&r.idempotency_key)
                .bind(created_at)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::on_unique("rollout"))?;
            for batch in r.tenants.chunks(INSERT_BATCH) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO rollout_tenants (rollout_id, tenant_id, wave, position, state, \
                     updated_at) ",
                );
                qb.push_values(batch, |mut values, t| {
                    values
                        .push_bind(id.to_owned())
                        .push_bind(t.tenant_id.clone())
                        .push_bind(t.wave)
                        .push_bind(t.position)
                        .push("'pending'")
                        .push_bind(created_at);
                });
                qb.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::on_unique("rollout tenant"))?;
            }
            insert_events_query(id, std::slice::from_ref(&created))
                .build()
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            row
        });
        row.try_into()
    }

    /// The rollout created with this idempotency key, if any.
    pub async fn find_rollout_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<Rollout>, StoreError> {
        const SQL: &str =
            concat!("SELECT ", rollout_columns!(), " FROM rollouts WHERE idempotency_key = $1");
        // On the writer: it is read right after an insert that clashed, which a SQLite reader
        // could not see yet.
        let row: Option<RolloutRow> = with_writer!(self, pool => {
            sqlx::query_as(SQL).bind(key).fetch_optional(pool).await?
        });
        row.map(Rollout::try_from).transpose()
    }

    /// One rollout by id.
    pub async fn get_rollout(&self, id: &RolloutId) -> Result<Option<Rollout>, StoreError> {
        const SQL: &str = concat!("SELECT ", rollout_columns!(), " FROM rollouts WHERE id = $1");
        let row: Option<RolloutRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(id.as_str()).fetch_optional(pool).await?
        });
        row.map(Rollout::try_from).transpose()
    }

    /// A page of the rollouts matching `f`, newest first (id descending, which is creation
    /// order for UUIDv7 ids): those listed after `f.after_id`, at most `f.limit`.
    pub async fn list_rollouts(&self, f: &RolloutFilter) -> Result<Vec<Rollout>, StoreError> {
        let rows: Vec<RolloutRow> = with_reader!(self, pool => {
            let mut qb = QueryBuilder::new(concat!(
                "SELECT ",
                rollout_columns!(),
                " FROM rollouts r WHERE 1 = 1"
            ));
            if let Some(state) = &f.state {
                qb.push(" AND r.state = ").push_bind(state.clone());
            }
            if let Some(after) = &f.after_id {
                qb.push(" AND r.id < ").push_bind(after.clone());
            }
            if let Some(within) = &f.within {
                qb.push(
                    " AND EXISTS (SELECT 1 FROM rollout_tenants rt WHERE rt.rollout_id = r.id",
                );
                push_within(&mut qb, "rt.tenant_id", within);
                qb.push(")");
            }
            qb.push(" ORDER BY r.id DESC LIMIT ").push_bind(i64::from(f.limit));
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(Rollout::try_from).collect()
    }

    /// How many tenants of the rollout are in each wave and state, as `(wave, state, count)`
    /// sorted by wave then state (bytewise); pairs with no tenant are absent. With `within`,
    /// only those tenants count.
    pub async fn rollout_tenant_counts(
        &self,
        id: &RolloutId,
        within: Option<&BTreeSet<String>>,
    ) -> Result<Vec<(i32, String, u64)>, StoreError> {
        let rows: Vec<(i32, String, i64)> = with_reader!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT wave, state, COUNT(*) FROM rollout_tenants WHERE rollout_id = ",
            );
            qb.push_bind(id.as_str().to_owned());
            if let Some(within) = within {
                push_within(&mut qb, "tenant_id", within);
            }
            qb.push(" GROUP BY wave, state");
            qb.build_query_as().fetch_all(pool).await?
        });
        let mut counts = rows
            .into_iter()
            .map(|(wave, state, n)| {
                u64::try_from(n)
                    .map(|n| (wave, state, n))
                    .map_err(|e| corrupt("rollout tenant")(format!("count: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Sorted here rather than in SQL: PostgreSQL would sort the states by its locale.
        counts.sort();
        Ok(counts)
    }

    /// How many tenants of the rollout are in each of `states` for each reason, as `(state,
    /// reason, count)` sorted by state then reason (bytewise); a tenant without a reason counts
    /// under `"unknown"`. With `within`, only those tenants count. One grouped query, so that
    /// the rollout view does not load every blocked or failed tenant to count its reasons.
    pub async fn rollout_reason_counts(
        &self,
        id: &RolloutId,
        states: &[&str],
        within: Option<&BTreeSet<String>>,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String, i64)> = with_reader!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT state, COALESCE(reason, 'unknown'), COUNT(*) FROM rollout_tenants \
                 WHERE rollout_id = ",
            );
            qb.push_bind(id.as_str().to_owned());
            qb.push(" AND state IN (");
            let mut list = qb.separated(", ");
            for state in states {
                list.push_bind((*state).to_owned());
            }
            qb.push(")");
            if let Some(within) = within {
                push_within(&mut qb, "tenant_id", within);
            }
            qb.push(" GROUP BY state, COALESCE(reason, 'unknown')");
            qb.build_query_as().fetch_all(pool).await?
        });
        let mut counts = rows
            .into_iter()
            .map(|(state, reason, n)| {
                u64::try_from(n)
                    .map(|n| (state, reason, n))
                    .map_err(|e| corrupt("rollout tenant")(format!("count: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Sorted here rather than in SQL: PostgreSQL would sort by its locale.
        counts.sort();
        Ok(counts)
    }

    /// A page of the rollout's tenants, in wave order and by position within a wave (tenant
    /// id breaking ties), optionally only those of `wave`, in `state` or in `within`.
    ///
    /// The cursor is the tenant id of the last row of the previous page: the page continues
    /// after that tenant's `(wave, position, tenant_id)`, so it stays stable while tenants
    /// change state. A cursor naming no tenant of the rollout yields an empty page.
    pub async fn list_rollout_tenants(
        &self,
        id: &RolloutId,
        wave: Option<i32>,
        state: Option<&str>,
        within: Option<&BTreeSet<String>>,
        after_tenant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RolloutTenant>, StoreError> {
        let rows: Vec<RolloutTenantRow> = with_reader!(self, pool => {
            let mut qb = QueryBuilder::new(concat!(
                "SELECT ",
                rollout_tenant_columns!(),
                " FROM rollout_tenants WHERE rollout_id = "
            ));
            qb.push_bind(id.as_str().to_owned());
            if let Some(wave) = wave {
                qb.push(" AND wave = ").push_bind(wave);
            }
            if let Some(state) = state {
                qb.push(" AND state = ").push_bind(state.to_owned());
            }
            if let Some(within) = within {
                push_within(&mut qb, "tenant_id", within);
            }
            if let Some(after) = after_tenant_id {
                qb.push(
                    " AND (wave, position, tenant_id) > (SELECT c.wave, c.position, c.tenant_id \
                     FROM rollout_tenants c WHERE c.rollout_id = ",
                )
                .push_bind(id.as_str().to_owned())
                .push(" AND c.tenant_id = ")
                .push_bind(after.to_owned());
                // A cursor naming a tenant out of reach finds no row (and so an empty page):
                // it must not tell a restricted caller where that tenant stands.
                if let Some(within) = within {
                    push_within(&mut qb, "c.tenant_id", within);
                }
                qb.push(")");
            }
            qb.push(" ORDER BY wave, position, tenant_id LIMIT ").push_bind(i64::from(limit));
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(RolloutTenant::try_from).collect()
    }

    /// One tenant of a rollout.
    pub async fn get_rollout_tenant(
        &self,
        id: &RolloutId,
        tenant_id: &str,
    ) -> Result<Option<RolloutTenant>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            rollout_tenant_columns!(),
            " FROM rollout_tenants WHERE rollout_id = $1 AND tenant_id = $2"
        );
        let row: Option<RolloutTenantRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(id.as_str()).bind(tenant_id).fetch_optional(pool).await?
        });
        row.map(RolloutTenant::try_from).transpose()
    }

    /// Moves a tenant of a rollout to `update.to_state` and applies the other fields of
    /// `update`, only if the tenant is still in state `from`, and appends `event` in the same
    /// transaction. `Ok(false)` (and no event) when the tenant's state had moved on or the
    /// tenant is not in the rollout.
    pub async fn transition_rollout_tenant(
        &self,
        id: &RolloutId,
        tenant_id: &str,
        from: &str,
        update: TenantUpdate,
        event: NewEvent,
    ) -> Result<bool, StoreError> {
        // The webhook payload names the tenant's reason: the one this change sets, else the
        // one it keeps (read only for the few events that go to webhooks).
        let mut fan_out = FanOut::of(id.as_str(), &event, None);
        if let Some(f) = fan_out.as_mut() {
            f.reason = match &update.reason {
                Some(reason) => reason.clone(),
                None => self.get_rollout_tenant(id, tenant_id).await?.and_then(|t| t.reason),
            };
        }
        let event = EventValues::new(&event)?;
        let id = id.as_str();
        fenced_change!(self, tx => transition_query(id, tenant_id, from, &update)
            .build()
            .execute(&mut *tx)
            .await?
            .rows_affected(), id, &event, fan_out.as_ref())
    }

    /// Moves the rollout to state `to` with reason `reason` (cleared when `None`), only if its
    /// state is one of `from`, and appends `event` in the same transaction. `event.at` becomes
    /// the rollout's `updated_at`, and its `finished_at` when `to` is `completed`, `cancelled`
    /// or `rolled_back`; any other state clears `finished_at`. `Ok(false)` (and no event) when
    /// the state is none of `from` (always so for an empty `from`) or the rollout does not
    /// exist.
    pub async fn set_rollout_state(
        &self,
        id: &RolloutId,
        from: &[&str],
        to: &str,
        reason: Option<&str>,
        event: NewEvent,
    ) -> Result<bool, StoreError> {
        if from.is_empty() {
            return Ok(false);
        }
        let fan_out = FanOut::of(id.as_str(), &event, reason);
        let event = EventValues::new(&event)?;
        let id = id.as_str();
        fenced_change!(self, tx => rollout_state_query(id, from, to, reason, event.at)
            .build()
            .execute(&mut *tx)
            .await?
            .rows_affected(), id, &event, fan_out.as_ref())
    }

    /// Sets the rollout's current wave to `to`, only if it is `from`, and appends `event` in
    /// the same transaction; `event.at` becomes the rollout's `updated_at`. `Ok(false)` (and
    /// no event) when the current wave is not `from` or the rollout does not exist.
    pub async fn advance_rollout_wave(
        &self,
        id: &RolloutId,
        from: i32,
        to: i32,
        event: NewEvent,
    ) -> Result<bool, StoreError> {
        let event = EventValues::new(&event)?;
        let id = id.as_str();
        // A wave change is no webhook event.
        let no_fan_out: Option<&crate::webhooks::FanOut> = None;
        fenced_change!(self, tx => sqlx::query(
                "UPDATE rollouts SET current_wave = $1, updated_at = $2
                 WHERE id = $3 AND current_wave = $4",
            )
            .bind(to)
            .bind(event.at)
            .bind(id)
            .bind(from)
            .execute(&mut *tx)
            .await?
            .rows_affected(), id, &event, no_fan_out)
    }

    /// Approves the gate of the rollout's tenants not approved yet, in one transaction:
    /// `tenant_ids` (`None`: all of them), optionally only those of `wave`. Sets their
    /// `approved_at`, `approved_by` and `updated_at`, whatever their state, and appends one
    /// `approved` event per tenant approved (by `actor`, detail `{"wave": w}`, in tenant id
    /// order). Returns how many were approved; approving again approves none.
    pub async fn approve_rollout_tenants(
        &self,
        id: &RolloutId,
        tenant_ids: Option<&[String]>,
        wave: Option<i32>,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let id = id.as_str();
        let at_ms = to_ms(at);
        let approved = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut approved: Vec<(String, i32)> = approve_query(id, tenant_ids, wave, actor, at_ms)
                .build_query_as()
                .fetch_all(&mut *tx)
                .await?;
            // RETURNING gives no order.
            approved.sort();
            let events = approved
                .iter()
                .map(|(tenant_id, wave)| {
                    EventValues::new(&NewEvent {
                        tenant_id: Some(tenant_id.clone()),
                        at,
                        actor: actor.to_owned(),
                        kind: "approved".into(),
                        from_state: None,
                        to_state: None,
                        detail: serde_json::json!({ "wave": wave }),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            for batch in events.chunks(INSERT_BATCH) {
                insert_events_query(id, batch).build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            approved.len()
        });
        Ok(approved as u64)
    }

    /// Appends an event to the rollout's history and returns its `seq`.
    pub async fn append_rollout_event(
        &self,
        id: &RolloutId,
        event: NewEvent,
    ) -> Result<i64, StoreError> {
        let fan_out = FanOut::of(id.as_str(), &event, None);
        let event = EventValues::new(&event)?;
        let seq: i64 = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let seq: i64 = insert_events_query(id.as_str(), std::slice::from_ref(&event))
                .push(" RETURNING seq")
                .build_query_scalar()
                .fetch_one(&mut *tx)
                .await?;
            fan_out_webhooks!(tx, fan_out.as_ref());
            tx.commit().await?;
            seq
        });
        Ok(seq)
    }

    /// The `seq` of the rollout's newest history entry (0 when it has none). Every change of
    /// a rollout tenant's state, wave or approval appends one, so an unchanged value means an
    /// unchanged rollout (on PostgreSQL, up to entries still committing out of order).
    pub async fn rollout_last_seq(&self, id: &RolloutId) -> Result<i64, StoreError> {
        let seq: Option<i64> = with_reader!(self, pool => {
            sqlx::query_scalar("SELECT MAX(seq) FROM rollout_events WHERE rollout_id = $1")
                .bind(id.as_str().to_owned())
                .fetch_one(pool)
                .await?
        });
        Ok(seq.unwrap_or(0))
    }

    /// A page of the rollout's history, oldest first: events after `after_seq`, at most
    /// `limit`. With `tenant_id`, only that tenant's events (rollout-wide ones excluded). With
    /// `within`, other tenants' events are left out but rollout-wide events are kept: whoever
    /// may see the rollout sees them (checking that is the caller's business).
    pub async fn list_rollout_events(
        &self,
        id: &RolloutId,
        after_seq: Option<i64>,
        tenant_id: Option<&str>,
        within: Option<&BTreeSet<String>>,
        limit: u32,
    ) -> Result<Vec<RolloutEvent>, StoreError> {
        let rows: Vec<EventRow> = with_reader!(self, pool => {
            let mut qb = QueryBuilder::new(concat!(
                "SELECT ",
                event_columns!(),
                " FROM rollout_events WHERE rollout_id = "
            ));
            qb.push_bind(id.as_str().to_owned());
            if let Some(after) = after_seq {
                qb.push(" AND seq > ").push_bind(after);
            }
            if let Some(tenant) = tenant_id {
                qb.push(" AND tenant_id = ").push_bind(tenant.to_owned());
            }
            if let Some(within) = within {
                if within.is_empty() {
                    qb.push(" AND tenant_id IS NULL");
                } else {
                    qb.push(" AND (tenant_id IS NULL OR tenant_id IN (");
                    let mut list = qb.separated(", ");
                    for t in within {
                        list.push_bind(t.clone());
                    }
                    qb.push("))");
                }
            }
            qb.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(RolloutEvent::try_from).collect()
    }

    /// Stores a snapshot. [`StoreError::Conflict`] (`"snapshot"`) when the id is taken.
    pub async fn insert_snapshot(&self, s: Snapshot) -> Result<(), StoreError> {
        let before = json_text("snapshot", "before", &s.before)?;
        with_writer!(self, pool => {
            sqlx::query(concat!(
                "INSERT INTO rollout_snapshots (",
                snapshot_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .bind(s.id.as_str())
            .bind(s.rollout_id.as_str())
            .bind(&s.tenant_id)
            .bind(&s.step)
            .bind(&s.target)
            .bind(&before)
            .bind(to_ms(s.created_at))
            .bind(s.restored_at.map(to_ms))
            .execute(pool)
            .await
            .map_err(StoreError::on_unique("snapshot"))?
            .rows_affected()
        });
        Ok(())
    }

    /// Every snapshot of one tenant of the rollout, newest first (creation time, then id,
    /// descending): the order to restore them in. Restored snapshots are included.
    pub async fn list_snapshots(
        &self,
        id: &RolloutId,
        tenant_id: &str,
    ) -> Result<Vec<Snapshot>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            snapshot_columns!(),
            " FROM rollout_snapshots WHERE rollout_id = $1 AND tenant_id = $2
             ORDER BY created_at DESC, id DESC"
        );
        let rows: Vec<SnapshotRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(id.as_str()).bind(tenant_id).fetch_all(pool).await?
        });
        rows.into_iter().map(Snapshot::try_from).collect()
    }

    /// Marks a snapshot restored at `at`, if it was not already. `Ok(false)` when it was, or
    /// when no snapshot has that id.
    pub async fn mark_snapshot_restored(
        &self,
        id: &SnapshotId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = with_writer!(self, pool => {
            sqlx::query(
                "UPDATE rollout_snapshots SET restored_at = $1 WHERE id = $2 AND restored_at IS NULL",
            )
            .bind(to_ms(at))
            .bind(id.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Stores `task` unless the rollout already has a task of that kind for that tenant.
    /// Returns the stored task, and `true` when it is `task`, `false` when it is the one that
    /// already existed (whatever its state). [`StoreError::Conflict`] (`"task"`) when the id
    /// is taken by another task.
    pub async fn ensure_task(&self, task: Task) -> Result<(Task, bool), StoreError> {
        const INSERT: &str = concat!(
            "INSERT INTO rollout_tasks (",
            task_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (rollout_id, tenant_id, kind) DO NOTHING
             RETURNING ",
            task_columns!()
        );
        const EXISTING: &str = concat!(
            "SELECT ",
            task_columns!(),
            " FROM rollout_tasks WHERE rollout_id = $1 AND tenant_id = $2 AND kind = $3"
        );
        let instructions = json_text("task", "instructions", &task.instructions)?;
        let (row, created): (TaskRow, bool) = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let inserted: Option<TaskRow> = sqlx::query_as(INSERT)
                .bind(task.id.as_str())
                .bind(task.rollout_id.as_str())
                .bind(&task.tenant_id)
                .bind(&task.kind)
                .bind(&instructions)
                .bind(&task.state)
                .bind(&task.attested_by)
                .bind(task.attested_at.map(to_ms))
                .bind(&task.note)
                .bind(to_ms(task.created_at))
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::on_unique("task"))?;
            let found = match inserted {
                Some(row) => (row, true),
                None => {
                    // Tasks are never deleted but with their rollout, so the clash is there.
                    let row: TaskRow = sqlx::query_as(EXISTING)
                        .bind(task.rollout_id.as_str())
                        .bind(&task.tenant_id)
                        .bind(&task.kind)
                        .fetch_one(&mut *tx)
                        .await?;
                    (row, false)
                }
            };
            tx.commit().await?;
            found
        });
        Ok((row.try_into()?, created))
    }

    /// One task by id.
    pub async fn get_task(&self, id: &TaskId) -> Result<Option<Task>, StoreError> {
        const SQL: &str = concat!("SELECT ", task_columns!(), " FROM rollout_tasks WHERE id = $1");
        let row: Option<TaskRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(id.as_str()).fetch_optional(pool).await?
        });
        row.map(Task::try_from).transpose()
    }

    /// A page of the tasks matching `f`, by id ascending (creation order): those after
    /// `f.after_id`, at most `f.limit`.
    pub async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let rows: Vec<TaskRow> = with_reader!(self, pool => {
            let mut qb =
                QueryBuilder::new(concat!("SELECT ", task_columns!(), " FROM rollout_tasks WHERE 1 = 1"));
            if let Some(rollout) = &f.rollout_id {
                qb.push(" AND rollout_id = ").push_bind(rollout.clone());
            }
            if let Some(tenant) = &f.tenant_id {
                qb.push(" AND tenant_id = ").push_bind(tenant.clone());
            }
            if let Some(state) = &f.state {
                qb.push(" AND state = ").push_bind(state.clone());
            }
            if let Some(within) = &f.within {
                push_within(&mut qb, "tenant_id", within);
            }
            if let Some(after) = &f.after_id {
                qb.push(" AND id > ").push_bind(after.clone());
            }
            qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(f.limit));
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(Task::try_from).collect()
    }

    /// Marks an open task attested by `actor` at `at`, with an optional note. `Ok(false)` when
    /// the task is not open (already attested, or cancelled) or does not exist.
    pub async fn attest_task(
        &self,
        id: &TaskId,
        actor: &str,
        note: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = with_writer!(self, pool => {
            sqlx::query(
                "UPDATE rollout_tasks SET state = 'attested', attested_by = $1, attested_at = $2,
                     note = $3
                 WHERE id = $4 AND state = 'open'",
            )
            .bind(actor)
            .bind(to_ms(at))
            .bind(note)
            .bind(id.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// The rollout's task of `kind` for the tenant, if any.
    pub async fn find_task(
        &self,
        id: &RolloutId,
        tenant_id: &str,
        kind: &str,
    ) -> Result<Option<Task>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            task_columns!(),
            " FROM rollout_tasks WHERE rollout_id = $1 AND tenant_id = $2 AND kind = $3"
        );
        let row: Option<TaskRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL)
                .bind(id.as_str())
                .bind(tenant_id)
                .bind(kind)
                .fetch_optional(pool)
                .await?
        });
        row.map(Task::try_from).transpose()
    }
}
