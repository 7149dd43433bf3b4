//! Aggregates for the progress read model and `/metrics`: how many rollouts, rollout tenants
//! and jobs are in each state, and when a rollout's tenants finished.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use sspr_domain::RolloutId;

use crate::{
    Store, StoreError,
    pool::with_reader,
    rollouts::push_within,
    time::{from_ms, to_ms},
};

/// Tenant states a rollout tenant does not leave by itself.
pub const FINISHED_TENANT_STATES: [&str; 5] =
    ["completed", "failed", "blocked", "cancelled", "rolled_back"];

/// Rollout states in which the engine still works on a rollout.
pub const ACTIVE_ROLLOUT_STATES: [&str; 3] = ["running", "paused", "rolling_back"];

/// How many of a rollout's tenants have finished, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FinishStats {
    /// Tenants in a finished state.
    pub finished: u64,
    /// Of those, how many got there at or after the `since` asked for.
    pub finished_since: u64,
    /// When the last one finished.
    pub last_finished_at: Option<DateTime<Utc>>,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn push_in_list<DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, column: &str, values: &[&str])
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    qb.push(" AND ").push(column).push(" IN (");
    let mut list = qb.separated(", ");
    for v in values {
        list.push_bind((*v).to_owned());
    }
    qb.push(")");
}

impl Store {
    /// Rollouts per state. With `within`, only rollouts with a tenant among those.
    pub async fn count_rollouts_by_state(
        &self,
        within: Option<&BTreeSet<String>>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> = with_reader!(self, pool => {
            let mut qb = QueryBuilder::new("SELECT r.state, COUNT(*) FROM rollouts r WHERE 1 = 1");
            if let Some(within) = within {
                qb.push(" AND EXISTS (SELECT 1 FROM rollout_tenants rt WHERE rt.rollout_id = r.id");
                push_within(&mut qb, "rt.tenant_id", within);
                qb.push(")");
            }
            qb.push(" GROUP BY r.state");
            qb.build_query_as().fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|(s, n)| (s, count(n))).collect())
    }

    /// Tenants of active rollouts ([`ACTIVE_ROLLOUT_STATES`]) per tenant state. With
    /// `within`, only those tenants.
    pub async fn count_active_rollout_tenants_by_state(
        &self,
        within: Option<&BTreeSet<String>>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> = with_reader!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT rt.state, COUNT(*) FROM rollout_tenants rt
                 JOIN rollouts r ON r.id = rt.rollout_id WHERE 1 = 1",
            );
            push_in_list(&mut qb, "r.state", &ACTIVE_ROLLOUT_STATES);
            if let Some(within) = within {
                push_within(&mut qb, "rt.tenant_id", within);
            }
            qb.push(" GROUP BY rt.state");
            qb.build_query_as().fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|(s, n)| (s, count(n))).collect())
    }

    /// Jobs of `queue` per (kind, state).
    pub async fn count_jobs_by_kind_and_state(
        &self,
        queue: &str,
    ) -> Result<BTreeMap<(String, String), u64>, StoreError> {
        let rows: Vec<(String, String, i64)> = with_reader!(self, pool => {
            sqlx::query_as(
                "SELECT kind, state, COUNT(*) FROM jobs WHERE queue = $1 GROUP BY kind, state",
            )
            .bind(queue)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|(k, s, n)| ((k, s), count(n))).collect())
    }

    /// How many of the rollout's tenants (within `within`) are finished, how many of them
    /// finished at or after `since`, and when the last one did. A tenant's last change is when
    /// it reached its finished state.
    pub async fn rollout_finish_stats(
        &self,
        id: &RolloutId,
        within: Option<&BTreeSet<String>>,
        since: DateTime<Utc>,
    ) -> Result<FinishStats, StoreError> {
        let row: (i64, i64, Option<i64>) = with_reader!(self, pool => {
            let mut qb = QueryBuilder::new("SELECT COUNT(*), COALESCE(SUM(CASE WHEN updated_at >= ");
            qb.push_bind(to_ms(since));
            qb.push(" THEN 1 ELSE 0 END), 0), MAX(updated_at) FROM rollout_tenants WHERE rollout_id = ");
            qb.push_bind(id.as_str().to_owned());
            push_in_list(&mut qb, "state", &FINISHED_TENANT_STATES);
            if let Some(within) = within {
                push_within(&mut qb, "tenant_id", within);
            }
            qb.build_query_as().fetch_one(pool).await?
        });
        Ok(FinishStats {
            finished: count(row.0),
            finished_since: count(row.1),
            last_finished_at: row.2.map(|ms| from_ms(ms, "rollout tenant")).transpose()?,
        })
    }
}
