//! End-to-end tests: each test starts the real daemon on its own port with its own database
//! (see `sspr_fleet_tests::spawn_app`) and talks HTTP to it.

#![allow(clippy::unwrap_used)]

mod api_keys;
mod audit;
mod auth;
mod engine;
mod errors;
mod exclusions;
mod idempotency;
mod limits;
mod live;
mod narrowing;
mod ops;
mod reach;
mod report_budget;
mod reports;
mod rollouts;
mod shutdown;
mod sms_retirement;
mod status;
mod streams;
mod tenants;
mod webhooks;
