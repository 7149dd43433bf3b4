//! `/v1/tasks`: the manual steps a rollout waits for (setting the SSPR enablement policy in the
//! portal, which has no API), with exact instructions, and their attestation.
//!
//! A key restricted to some tenants sees and attests only those tenants' tasks; any other task
//! is 404, as if it did not exist.

use actix_web::{HttpRequest, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sspr_domain::{Role, TaskId};
use sspr_store::{Task, TaskFilter};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, FieldError},
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(list_tasks).service(get_task).service(attest_task);
}

const TASK_STATES: [&str; 3] = ["open", "attested", "cancelled"];

/// A manual step of a rollout.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TaskView {
    /// Id, `task_...`.
    pub id: String,
    /// The rollout.
    pub rollout_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// `scope_selected` (enable SSPR for the scope group) or `scope_revert` (after a rollback).
    pub kind: String,
    /// What to do, where, and the exact values.
    #[schema(value_type = Object)]
    pub instructions: Value,
    /// `open`, `attested` or `cancelled`.
    pub state: String,
    /// Who attested it (`api_key:<id>`).
    pub attested_by: Option<String>,
    /// When.
    pub attested_at: Option<DateTime<Utc>>,
    /// The note given with the attestation.
    pub note: Option<String>,
    /// When the rollout created it.
    pub created_at: DateTime<Utc>,
}

impl From<Task> for TaskView {
    fn from(t: Task) -> Self {
        Self {
            id: t.id.to_string(),
            rollout_id: t.rollout_id.to_string(),
            tenant_id: t.tenant_id,
            kind: t.kind,
            instructions: t.instructions,
            state: t.state,
            attested_by: t.attested_by,
            attested_at: t.attested_at,
            note: t.note,
            created_at: t.created_at,
        }
    }
}

/// A page of tasks.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TaskPage {
    /// Oldest first.
    pub items: Vec<TaskView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of the task list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskQuery {
    /// Only this rollout's tasks.
    rollout_id: Option<String>,
    /// Only this tenant's tasks.
    tenant_id: Option<String>,
    /// `open`, `attested` or `cancelled`.
    state: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
}

/// List tasks.
#[utoipa::path(
    operation_id = "v1.task.list",
    tag = "tasks",
    params(TaskQuery),
    responses((status = 200, description = "A page of tasks", body = TaskPage))
)]
#[get("/tasks")]
async fn list_tasks(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<TaskQuery>,
) -> Result<web::Json<TaskPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let q = query.into_inner();
    let mut errors = Vec::new();
    let (limit, after_id) = super::page_params(q.limit, 100, 500, q.cursor.as_deref(), &mut errors);
    if q.state.as_deref().is_some_and(|s| !TASK_STATES.contains(&s)) {
        errors.push(FieldError::new(
            "state",
            "invalid_value",
            format!("expected one of {}", TASK_STATES.join(", ")),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let filter = TaskFilter {
        rollout_id: q.rollout_id,
        tenant_id: q.tenant_id,
        state: q.state,
        within: caller.access.tenants.restricted_to().cloned(),
        after_id,
        limit: limit + 1,
    };
    let mut rows = state.store.list_tasks(&filter).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor =
        if more { rows.last().map(|t| super::cursor::encode_text(t.id.as_str())) } else { None };
    Ok(web::Json(TaskPage { items: rows.into_iter().map(TaskView::from).collect(), next_cursor }))
}

async fn visible_task(state: &AppState, caller: &Caller, id: &str) -> Result<Task, ApiError> {
    let id: TaskId = id.parse().map_err(|_| ApiError::NotFound("task"))?;
    let task = state.store.get_task(&id).await?.ok_or(ApiError::NotFound("task"))?;
    if !caller.access.tenants.reaches(&task.tenant_id) {
        return Err(ApiError::NotFound("task"));
    }
    Ok(task)
}

/// Get a task.
#[utoipa::path(
    operation_id = "v1.task.get",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id, `task_...`")),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 404, description = "No such task within your reach"),
    )
)]
#[get("/tasks/{id}")]
async fn get_task(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<web::Json<TaskView>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(web::Json(visible_task(&state, &caller, &path).await?.into()))
}

/// An attestation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Attestation {
    /// A note for the record (who did it in the portal, a ticket number), up to 1000
    /// characters.
    #[serde(default)]
    pub note: Option<String>,
}

/// Attest a task as done.
///
/// Records that a technician did what the task says, with the key that attests it. The tenant
/// waiting on it checks again at once; in manual scope mode it proceeds once the pilot users
/// also show `isSsprEnabled` (where the tenant's licence lets Graph report it). Attesting an
/// attested task changes nothing.
#[utoipa::path(
    operation_id = "v1.task.attest",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    request_body(content = Attestation, description = "Optional note; empty body allowed", content_type = "application/json"),
    responses(
        (status = 200, description = "The attested task", body = TaskView),
        (status = 404, description = "No such task within your reach"),
        (status = 409, description = "`task_not_open`"),
    )
)]
#[post("/tasks/{id}/attest")]
async fn attest_task(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<web::Json<TaskView>, ApiError> {
    caller.require(Role::Operator)?;
    let task = visible_task(&state, &caller, &path).await?;
    let a: Attestation = crate::extract::optional_json(&req, &body)?;
    let note = a.note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 1000 || n.chars().any(char::is_control)) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "note",
            "invalid_value",
            "note must be at most 1000 characters without control characters",
        )]));
    }
    let actor = format!("api_key:{}", caller.key_id.as_str());
    let t = state.engine.attest(&task.id, &actor, note.as_deref()).await.map_err(|e| match e {
        sspr_rollout::OpError::NotFound => ApiError::NotFound("task"),
        e => e.into(),
    })?;
    Ok(web::Json(t.into()))
}
