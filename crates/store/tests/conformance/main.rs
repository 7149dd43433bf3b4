//! The store conformance suite: every case runs on SQLite always, and on PostgreSQL when
//! `SSPR_FLEET_TEST_DATABASE_URL` or `DATABASE_URL` is set. Each case gets a fresh database
//! (a new SQLite file, or a new PostgreSQL schema).

#![allow(clippy::unwrap_used)]

mod cases;
mod support;
mod webhook_cases;

/// Expands each case into one test per backend.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = crate::support::TestDb::sqlite().await;
                    crate::cases::$case(&db.store).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(db) = crate::support::TestDb::postgres().await else { return };
                    crate::cases::$case(&db.store).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    migrations_apply_once_and_are_idempotent,
    ping_answers,
    api_key_round_trips_and_is_found_by_hash_only,
    api_key_hash_is_unique,
    revoked_key_is_not_found,
    touch_updates_last_used_at_most_once_per_granularity,
    audit_entries_append_in_order_and_filter,
    audit_pages_with_cursor_without_gaps_or_repeats,
    audit_restricted_scope_sees_only_its_tenants,
    tenant_round_trips_with_tags_refs_and_credential,
    tenant_duplicates_conflict_until_offboarded,
    tenant_list_filters,
    tenant_pages_with_cursor_without_gaps_or_repeats,
    tenant_update_applies_the_patch,
    tenant_verification_is_recorded_and_tenant_ids_stay_unique,
    tenant_offboarding_keeps_history_and_drops_the_credential,
    tenant_credential_is_replaced_atomically,
    portal_credentials_are_one_per_tenant_resealed_fenced_and_offboarded,
    credentials_rewrap_skips_rows_changed_meanwhile,
    tenants_due_for_verification_never_verified_first_then_oldest,
    jobs_enqueue_is_idempotent_by_unique_key,
    jobs_claim_returns_each_job_once_across_concurrent_claimers,
    jobs_claim_in_run_at_order_and_not_before_run_at,
    jobs_outcomes_are_fenced_by_attempt,
    jobs_expired_leases_are_reaped,
    jobs_snooze_requeues_without_spending_an_attempt_and_wake_brings_forward,
    jobs_claim_plan_uses_the_claim_index,
    rollout_round_trips_with_pending_tenants_and_a_created_event,
    rollout_tenants_page_by_wave_and_position,
    rollout_idempotency_key_conflicts_and_is_found,
    rollout_list_newest_first_with_cursor_and_within,
    rollout_tenant_counts_per_wave_and_state,
    rollout_reason_counts_group_blocked_and_failed_tenants,
    idempotency_keys_claim_replay_mismatch_expire_and_take_over,
    progress_aggregates_count_states_jobs_and_finish_times,
    rollout_tenant_transitions_are_fenced,
    rollout_state_changes_are_fenced_and_set_finished_at,
    rollout_wave_advances_are_fenced,
    rollout_approvals_are_idempotent,
    rollout_events_page_in_order_and_respect_within,
    rollout_snapshots_newest_first_and_restored_once,
    rollout_tasks_are_ensured_once_attested_once_and_filtered,
    sspr_report_failures_keep_the_last_good_figures,
    sspr_reports_page_by_tenant_within_reach,
    tenants_due_for_sspr_report_missing_first_then_oldest,
    webhooks_round_trip_page_patch_rotate_and_delete,
    webhook_fan_out_is_transactional_and_follows_types_and_scope,
    webhook_sms_risk_is_sent_once_per_rollout_and_tenant,
    webhook_attempts_redelivery_and_counts,
);

/// Both dialects must carry the same migrations under the same names, so that a database can
/// move between them and a reviewer can diff the two.
#[test]
fn migration_files_have_the_same_names_in_both_dialects() {
    let names = |dialect: &str| {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let sqlite = names("sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, names("postgres"));
}
