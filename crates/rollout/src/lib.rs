//! The rollout engine of sspr-fleet: what a rollout would change in each tenant (the plan, made
//! with Graph reads only), and, as it lands, the staged apply on top of the durable queue.
//!
//! This crate must not depend on actix-web. It reaches the database only through `sspr-store`,
//! Microsoft only through `sspr-graph`, and tenants' credentials only through `sspr-registry`.

pub mod engine;
mod graph_state;
pub mod plan;

pub use engine::{CreateOutcome, Engine, EngineSettings, OpError, PilotDetailsRead, RollbackScope};
pub use plan::{
    Advisory, Plan, PlanError, PlannedStep, Planner, SMS_VOICE_RETIREMENT, TenantPlan,
    sms_voice_advisory,
};

/// The description sspr-fleet gives the scope groups it creates. A group with the pilot group's
/// name is reused only if it carries this (or the rollout names its id): sspr-fleet never takes
/// over a group someone else made.
pub const SCOPE_GROUP_DESCRIPTION: &str =
    "SSPR scope group managed by sspr-fleet. Members can reset their own password.";
