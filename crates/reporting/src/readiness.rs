//! The SSPR readiness report: per tenant, how many users SSPR policy allows
//! (`isSsprEnabled`), how many registered enough methods (`isSsprRegistered`), how many can
//! reset (`isSsprCapable`), split admins / non-admins and members / guests, and how many users
//! registered each method, all counted from Graph's `userRegistrationDetails`.
//!
//! The report is read page by page and only counters are kept ([`Aggregator`]), so memory is
//! bounded by one page whatever the tenant's size. A tenant without Entra ID P1/P2 cannot be
//! reported on (Graph answers 403 `Authentication_RequestFromNonPremiumTenantOrB2CTenant`):
//! its report is `unavailable` with reason [`REASON_NEEDS_PREMIUM`]. Any other failure is
//! `error` with the registry's stable failure code; either way the last good figures stay,
//! with the time they were read (see `sspr_store::SsprReport`).
//!
//! Refreshes run as `report.refresh` jobs on the durable queue, one per tenant at a time
//! (unique key `report:{tenant_id}`), so on-demand and scheduled refreshes coalesce.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sspr_domain::{Clock, JobId, TenantId};
use sspr_graph::{GraphClient, GraphError, types::UserRegistrationDetails};
use sspr_queue::{Enqueuer, Job, JobDone, JobError, JobFuture, JobHandler, NewJob};
use sspr_registry::{Registry, RegistryError};
use sspr_store::{SsprReport, SsprReportFilter, SsprReportRow, Store, StoreError, TenantStatus};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// Job kind of one tenant's refresh.
pub const REFRESH_KIND: &str = "report.refresh";

/// Graph's error code for a report asked of a tenant without Entra ID P1/P2 (graph-facts §6).
pub const PREMIUM_ERROR_CODE: &str = "Authentication_RequestFromNonPremiumTenantOrB2CTenant";

/// Reason of an `unavailable` report: Graph's reports need Entra ID P1/P2.
pub const REASON_NEEDS_PREMIUM: &str = "reports_need_premium";

/// Reason of an `error` report whose tenant's stored credentials cannot be opened.
pub const REASON_CREDENTIALS_UNREADABLE: &str = "credentials_unreadable";

/// Status of a report whose last refresh succeeded.
pub const STATUS_OK: &str = "ok";
/// Status of a report Graph refuses for the tenant's licence.
pub const STATUS_UNAVAILABLE: &str = "unavailable";
/// Status of a report whose last refresh failed otherwise.
pub const STATUS_ERROR: &str = "error";
/// Status shown for a tenant with no report yet (never stored).
pub const STATUS_PENDING: &str = "pending";

/// The methods of `methodsRegistered` with a fixed CSV column each, in column order. Names
/// from Graph's `userRegistrationDetails` documentation; any other name is counted in JSON
/// under its own name and in CSV in `methods_other`.
pub const KNOWN_METHODS: [&str; 12] = [
    "microsoftAuthenticatorPush",
    "microsoftAuthenticatorPasswordless",
    "softwareOneTimePasscode",
    "hardwareOneTimePasscode",
    "mobilePhone",
    "alternateMobilePhone",
    "officePhone",
    "email",
    "fido2",
    "windowsHelloForBusiness",
    "temporaryAccessPass",
    "securityQuestion",
];

/// Most distinct method names counted one by one; further names are added to
/// `methods_other`, so a misbehaving answer cannot grow the counters without bound.
pub const MAX_METHOD_NAMES: usize = 64;

/// User counts of one population.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    /// Users in the report.
    pub users: u64,
    /// Users SSPR policy allows (`isSsprEnabled`).
    pub sspr_enabled: u64,
    /// Users with enough methods registered (`isSsprRegistered`).
    pub sspr_registered: u64,
    /// Users both enabled and registered (`isSsprCapable`).
    pub sspr_capable: u64,
}

impl Counts {
    fn add_user(&mut self, u: &UserRegistrationDetails) {
        self.users += 1;
        self.sspr_enabled += u64::from(u.is_sspr_enabled);
        self.sspr_registered += u64::from(u.is_sspr_registered);
        self.sspr_capable += u64::from(u.is_sspr_capable);
    }

    fn add(&mut self, other: &Counts) {
        self.users += other.users;
        self.sspr_enabled += other.sspr_enabled;
        self.sspr_registered += other.sspr_registered;
        self.sspr_capable += other.sspr_capable;
    }

    /// The shares of `users`, in percent.
    pub fn percent(&self) -> Percent {
        Percent {
            sspr_enabled: percent(self.sspr_enabled, self.users),
            sspr_registered: percent(self.sspr_registered, self.users),
            sspr_capable: percent(self.sspr_capable, self.users),
        }
    }
}

/// `part` of `whole` in percent, rounded to one decimal; `None` when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

/// Shares of a population's users, in percent with one decimal (`null` with no users).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Percent {
    /// Share SSPR policy allows.
    pub sspr_enabled: Option<f64>,
    /// Share registered.
    pub sspr_registered: Option<f64>,
    /// Share capable.
    pub sspr_capable: Option<f64>,
}

/// A tenant's figures as stored: counters only, never a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadinessFigures {
    /// Every user of the report.
    pub all: Counts,
    /// Users with `isAdmin` true.
    pub admins: Counts,
    /// Users with `isAdmin` false or absent.
    pub non_admins: Counts,
    /// Users whose `userType` is not `guest` (members, and the rare absent type).
    pub members: Counts,
    /// Users whose `userType` is `guest`.
    pub guests: Counts,
    /// Users per registered method name (`methodsRegistered`).
    pub methods: BTreeMap<String, u64>,
    /// Registrations of method names beyond [`MAX_METHOD_NAMES`] distinct ones.
    #[serde(default)]
    pub methods_other: u64,
}

impl ReadinessFigures {
    /// Adds another tenant's figures (fleet totals).
    pub fn add(&mut self, other: &ReadinessFigures) {
        self.all.add(&other.all);
        self.admins.add(&other.admins);
        self.non_admins.add(&other.non_admins);
        self.members.add(&other.members);
        self.guests.add(&other.guests);
        for (name, n) in &other.methods {
            self.count_method(name, *n);
        }
        self.methods_other += other.methods_other;
    }

    fn count_method(&mut self, name: &str, n: u64) {
        if let Some(count) = self.methods.get_mut(name) {
            *count += n;
        } else if self.methods.len() < MAX_METHOD_NAMES {
            self.methods.insert(name.to_owned(), n);
        } else {
            self.methods_other += n;
        }
    }

    /// Users who registered `method` (0 if none).
    pub fn method(&self, method: &str) -> u64 {
        self.methods.get(method).copied().unwrap_or(0)
    }

    /// Registrations of methods outside [`KNOWN_METHODS`] (the CSV's `methods_other`).
    pub fn unknown_methods(&self) -> u64 {
        self.methods_other
            + self
                .methods
                .iter()
                .filter(|(name, _)| !KNOWN_METHODS.contains(&name.as_str()))
                .map(|(_, n)| n)
                .sum::<u64>()
    }
}

/// Counts `userRegistrationDetails` page by page, keeping nothing of a page once counted.
#[derive(Debug, Clone, Default)]
pub struct Aggregator {
    figures: ReadinessFigures,
    pages: u64,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one page and drops it.
    pub fn add_page(&mut self, page: Vec<UserRegistrationDetails>) {
        self.pages += 1;
        for user in &page {
            self.add_user(user);
        }
    }

    /// Counts one user.
    pub fn add_user(&mut self, u: &UserRegistrationDetails) {
        let f = &mut self.figures;
        f.all.add_user(u);
        if u.is_admin == Some(true) { &mut f.admins } else { &mut f.non_admins }.add_user(u);
        let guest = u.user_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("guest"));
        if guest { &mut f.guests } else { &mut f.members }.add_user(u);
        // A method listed twice for one user counts once.
        for (i, name) in u.methods_registered.iter().enumerate() {
            if !u.methods_registered[..i].contains(name) {
                f.count_method(name, 1);
            }
        }
    }

    /// Pages counted so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The figures and the number of pages read.
    pub fn finish(self) -> (ReadinessFigures, u64) {
        (self.figures, self.pages)
    }
}

/// One population's figures as the API shows them: counts and shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CountsView {
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// The shares of `users`, in percent.
    pub percent: Percent,
}

impl From<Counts> for CountsView {
    fn from(counts: Counts) -> Self {
        Self { counts, percent: counts.percent() }
    }
}

/// A tenant's (or the fleet's) figures as the API shows them, with the time they were read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FiguresView {
    /// When these figures were read from Graph (for fleet totals: the oldest of them).
    pub read_at: DateTime<Utc>,
    /// Every user.
    pub all: CountsView,
    /// Administrators (`isAdmin`).
    pub admins: CountsView,
    /// Everyone else.
    pub non_admins: CountsView,
    /// Members (`userType` not `guest`).
    pub members: CountsView,
    /// Guests.
    pub guests: CountsView,
    /// Users per registered method.
    pub methods: BTreeMap<String, u64>,
    /// Registrations of method names beyond the distinct names counted one by one.
    pub methods_other: u64,
}

impl FiguresView {
    /// The view of `figures` read at `read_at`.
    pub fn new(figures: ReadinessFigures, read_at: DateTime<Utc>) -> Self {
        Self {
            read_at,
            all: figures.all.into(),
            admins: figures.admins.into(),
            non_admins: figures.non_admins.into(),
            members: figures.members.into(),
            guests: figures.guests.into(),
            methods: figures.methods,
            methods_other: figures.methods_other,
        }
    }
}

/// One tenant's readiness report as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantReport {
    /// sspr-fleet's tenant id, `ten_...`.
    pub tenant_id: String,
    /// The tenant's display name.
    pub display_name: String,
    /// The last refresh: `ok`, `unavailable` (the tenant has no Entra ID P1/P2), `error`, or
    /// `pending` (no refresh has ended yet).
    pub status: String,
    /// Why the last refresh did not succeed: `reports_need_premium`, `consent_missing`,
    /// `permission_missing`, `graph_unavailable`, ...
    pub reason: Option<String>,
    /// When the last refresh ended.
    pub attempted_at: Option<DateTime<Utc>>,
    /// Pages of `userRegistrationDetails` the last refresh read.
    pub pages: Option<u64>,
    /// How long the last refresh took, in milliseconds.
    pub duration_ms: Option<u64>,
    /// The last good figures, with the time they were read; kept when a later refresh fails.
    pub figures: Option<FiguresView>,
}

impl TenantReport {
    /// The view of a stored row.
    pub fn from_row(row: SsprReportRow) -> Self {
        let tenant_id = row.tenant_id.to_string();
        match row.report {
            None => Self {
                tenant_id,
                display_name: row.display_name,
                status: STATUS_PENDING.into(),
                reason: None,
                attempted_at: None,
                pages: None,
                duration_ms: None,
                figures: None,
            },
            Some(r) => {
                let figures = match (r.figures, r.read_at) {
                    (Some(f), Some(at)) => serde_json::from_value::<ReadinessFigures>(f)
                        .ok()
                        .map(|f| FiguresView::new(f, at)),
                    _ => None,
                };
                Self {
                    tenant_id,
                    display_name: row.display_name,
                    status: r.status,
                    reason: r.reason,
                    attempted_at: Some(r.attempted_at),
                    pages: Some(r.pages),
                    duration_ms: Some(r.duration_ms),
                    figures,
                }
            }
        }
    }
}

/// The fleet's totals: the sum of every tenant's last good figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetTotals {
    /// Active tenants (within the caller's reach).
    pub tenants: u64,
    /// Tenants per status of their last refresh (`ok`, `unavailable`, `error`, `pending`).
    pub by_status: BTreeMap<String, u64>,
    /// Tenants whose figures are summed: those with good figures, whatever their last
    /// refresh's outcome (each figure is as old as its `read_at`).
    pub tenants_with_figures: u64,
    /// The oldest `read_at` among the summed figures.
    pub oldest_read_at: Option<DateTime<Utc>>,
    /// The newest `read_at` among the summed figures.
    pub newest_read_at: Option<DateTime<Utc>>,
    /// The summed figures (`read_at` is the oldest one); `null` when no tenant has figures.
    pub figures: Option<FiguresView>,
}

/// The CSV header of the readiness report: one column per figure, methods in fixed columns.
pub fn csv_header() -> Vec<String> {
    let mut h: Vec<String> = [
        "tenant_id",
        "display_name",
        "status",
        "reason",
        "read_at",
        "attempted_at",
        "users",
        "sspr_enabled",
        "sspr_registered",
        "sspr_capable",
        "sspr_capable_percent",
        "admins",
        "admins_sspr_enabled",
        "admins_sspr_registered",
        "admins_sspr_capable",
        "non_admins",
        "non_admins_sspr_enabled",
        "non_admins_sspr_registered",
        "non_admins_sspr_capable",
        "members",
        "members_sspr_enabled",
        "members_sspr_registered",
        "members_sspr_capable",
        "guests",
        "guests_sspr_enabled",
        "guests_sspr_registered",
        "guests_sspr_capable",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    h.extend(KNOWN_METHODS.iter().map(|m| format!("method_{m}")));
    h.push("methods_other".into());
    h
}

impl TenantReport {
    /// The report's CSV record, in [`csv_header`] order; figure columns are empty without
    /// figures. Every cell is passed through [`crate::spreadsheet::cell`] (CSV injection).
    pub fn csv_record(&self) -> Vec<String> {
        let time = |t: Option<DateTime<Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default()
        };
        let mut r = vec![
            self.tenant_id.clone(),
            self.display_name.clone(),
            self.status.clone(),
            self.reason.clone().unwrap_or_default(),
            time(self.figures.as_ref().map(|f| f.read_at)),
            time(self.attempted_at),
        ];
        let width = csv_header().len();
        let Some(f) = &self.figures else {
            r.resize(width, String::new());
            return crate::spreadsheet::record(r);
        };
        let counts = |c: &Counts| {
            [c.users, c.sspr_enabled, c.sspr_registered, c.sspr_capable].map(|n| n.to_string())
        };
        let all = counts(&f.all.counts);
        r.extend(all);
        r.push(f.all.percent.sspr_capable.map(|p| format!("{p:.1}")).unwrap_or_default());
        for part in [&f.admins, &f.non_admins, &f.members, &f.guests] {
            r.extend(counts(&part.counts));
        }
        r.extend(KNOWN_METHODS.iter().map(|m| f.methods.get(*m).copied().unwrap_or(0).to_string()));
        let other = f.methods_other
            + f.methods
                .iter()
                .filter(|(name, _)| !KNOWN_METHODS.contains(&name.as_str()))
                .map(|(_, n)| n)
                .sum::<u64>();
        r.push(other.to_string());
        crate::spreadsheet::record(r)
    }
}

/// Writes `rows` as CSV (with the header line first when `header`).
pub fn csv_chunk(rows: &[TenantReport], header: bool) -> Result<Vec<u8>, ReportError> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    if header {
        w.write_record(crate::spreadsheet::record(csv_header())).map_err(ReportError::Csv)?;
    }
    for row in rows {
        // `csv_record` already defused its cells; a second pass leaves them as they are.
        w.write_record(row.csv_record()).map_err(ReportError::Csv)?;
    }
    w.into_inner().map_err(|e| ReportError::Csv(e.into_error().into()))
}

/// What can go wrong in reporting.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No active tenant has that id.
    #[error("tenant not found")]
    NotFound,
    /// The database failed.
    #[error("database error")]
    Store(#[from] StoreError),
    /// The CSV could not be written.
    #[error("cannot write CSV")]
    Csv(#[source] csv::Error),
}

/// How reports are refreshed.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// The queue refresh jobs go to.
    pub queue: String,
    /// A report older than this is refreshed by the scheduler.
    pub refresh_after: Duration,
    /// How often the scheduler looks for reports to refresh.
    pub check_every: Duration,
    /// Attempts of a refresh job (transient Graph failures are retried).
    pub attempts: i32,
    /// Most refreshes the scheduler enqueues per round.
    pub batch: u32,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            queue: "default".into(),
            refresh_after: Duration::from_secs(24 * 3600),
            check_every: Duration::from_secs(60),
            attempts: 3,
            batch: 1000,
        }
    }
}

/// What one refresh did.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// The report as recorded.
    pub report: SsprReport,
    /// Whether the failure, if any, may pass on its own (throttling, outages).
    pub transient: bool,
}

/// The readiness reports: refresh, schedule and total. Cheap to clone.
#[derive(Clone)]
pub struct Reports {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    store: Store,
    graph: GraphClient,
    enqueuer: Enqueuer,
    clock: Arc<dyn Clock>,
    settings: ReportSettings,
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reports").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

fn earlier(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d).ok().and_then(|d| now.checked_sub_signed(d)).unwrap_or(now)
}

/// The outcome of a failed read: (`status`, `reason`).
pub fn classify(error: &GraphError) -> (&'static str, &'static str) {
    match error {
        GraphError::Graph { status: 403, code, .. } if code == PREMIUM_ERROR_CODE => {
            (STATUS_UNAVAILABLE, REASON_NEEDS_PREMIUM)
        }
        e => (STATUS_ERROR, sspr_registry::failure_code(e)),
    }
}

impl Reports {
    /// Reports read through `registry` (its store, Graph client and vault), with refresh jobs
    /// queued through `enqueuer`.
    pub fn new(
        registry: Registry,
        enqueuer: Enqueuer,
        clock: Arc<dyn Clock>,
        settings: ReportSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: registry.store().clone(),
                graph: registry.graph().clone(),
                registry,
                enqueuer,
                clock,
                settings,
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ReportSettings {
        &self.inner.settings
    }

    /// Reads one tenant's report from Graph now and records it. A failure of Graph is not an
    /// error here: it is recorded (status `unavailable` or `error`) and returned.
    pub async fn refresh(&self, id: &TenantId) -> Result<Refreshed, ReportError> {
        let store = &self.inner.store;
        let tenant = store.get_tenant(id).await?.ok_or(ReportError::NotFound)?;
        if tenant.status == TenantStatus::Offboarded {
            return Err(ReportError::NotFound);
        }
        let started_at = self.inner.clock.now();
        let started = Instant::now();
        let mut aggregator = Aggregator::new();
        let (outcome, transient) = match self.inner.registry.graph_tenant(&tenant).await {
            Err(RegistryError::Store(e)) => return Err(e.into()),
            Err(RegistryError::Vault(e)) => {
                tracing::error!(tenant_id = %id, error = %e, "cannot open the tenant's credentials");
                (Err((STATUS_ERROR, REASON_CREDENTIALS_UNREADABLE)), false)
            }
            Err(_) => return Err(ReportError::NotFound),
            Ok(graph_tenant) => {
                let read = self
                    .inner
                    .graph
                    .registration_details(&graph_tenant, |page| aggregator.add_page(page))
                    .await;
                match read {
                    Ok(()) => (Ok(()), false),
                    Err(e) => {
                        let (status, reason) = classify(&e);
                        if status == STATUS_ERROR {
                            tracing::warn!(tenant_id = %id, reason, error = %e, "readiness report failed");
                        }
                        (Err((status, reason)), e.is_transient())
                    }
                }
            }
        };
        let attempted_at = self.inner.clock.now();
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let pages = aggregator.pages();
        let report = match outcome {
            Ok(()) => {
                let (figures, pages) = aggregator.finish();
                SsprReport {
                    tenant_id: id.clone(),
                    status: STATUS_OK.into(),
                    reason: None,
                    figures: Some(json!(figures)),
                    read_at: Some(attempted_at),
                    started_at,
                    attempted_at,
                    pages,
                    duration_ms,
                }
            }
            Err((status, reason)) => SsprReport {
                tenant_id: id.clone(),
                status: status.into(),
                reason: Some(reason.into()),
                figures: None,
                read_at: None,
                started_at,
                attempted_at,
                pages,
                duration_ms,
            },
        };
        if !store.record_sspr_report(&report).await? {
            // Offboarded meanwhile, or a newer refresh recorded first: nothing to keep.
            return Err(ReportError::NotFound);
        }
        let report = store.sspr_report(id).await?.ok_or(ReportError::NotFound)?;
        Ok(Refreshed { report, transient })
    }

    /// Queues a refresh of the tenant, unless one is queued or running already. Returns
    /// whether a job was created.
    pub async fn enqueue_refresh(&self, id: &TenantId) -> Result<bool, ReportError> {
        let now = self.inner.clock.now();
        let job = NewJob {
            id: JobId::new(),
            kind: REFRESH_KIND.into(),
            queue: self.inner.settings.queue.clone(),
            payload: json!({ "tenant_id": id.as_str() }),
            run_at: now,
            max_attempts: self.inner.settings.attempts.max(1),
            tenant_id: Some(id.to_string()),
            unique_key: Some(format!("report:{id}")),
            created_at: now,
        };
        let (_, created) = self.inner.enqueuer.enqueue(job).await?;
        Ok(created)
    }

    /// The job handlers to give the queue's workers.
    pub fn handlers(&self) -> Vec<Arc<dyn JobHandler>> {
        vec![Arc::new(RefreshHandler { reports: self.clone() })]
    }

    /// One scheduler round: queues a refresh for every active tenant whose report is missing
    /// or older than `refresh_after` (at most `batch`). Returns how many jobs were created.
    pub async fn tick(&self) -> Result<usize, ReportError> {
        let before = earlier(self.inner.clock.now(), self.inner.settings.refresh_after);
        let due =
            self.inner.store.tenants_due_for_sspr_report(before, self.inner.settings.batch).await?;
        let mut created = 0;
        for id in due {
            created += usize::from(self.enqueue_refresh(&id).await?);
        }
        Ok(created)
    }

    /// Runs scheduler rounds every `check_every` until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                done = self.tick() => match done {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(enqueued = n, "readiness report refreshes queued"),
                    Err(e) => tracing::warn!(error = %e, "readiness report scheduling failed"),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.inner.settings.check_every) => {}
            }
        }
    }

    /// One tenant's report as the API shows it (`pending` without one yet). `NotFound` for a
    /// tenant that is not active.
    pub async fn tenant_report(&self, id: &TenantId) -> Result<TenantReport, ReportError> {
        let tenant = self.inner.store.get_tenant(id).await?.ok_or(ReportError::NotFound)?;
        if tenant.status == TenantStatus::Offboarded {
            return Err(ReportError::NotFound);
        }
        let report = self.inner.store.sspr_report(id).await?;
        Ok(TenantReport::from_row(SsprReportRow {
            tenant_id: tenant.id,
            display_name: tenant.display_name,
            report,
        }))
    }

    /// A page of the fleet report: active tenants (within `within`) by id, after
    /// `after_tenant_id`, at most `limit`.
    pub async fn page(
        &self,
        within: Option<&BTreeSet<String>>,
        after_tenant_id: Option<String>,
        limit: u32,
    ) -> Result<Vec<TenantReport>, ReportError> {
        let f = SsprReportFilter { within: within.cloned(), after_tenant_id, limit };
        let rows = self.inner.store.list_sspr_reports(&f).await?;
        Ok(rows.into_iter().map(TenantReport::from_row).collect())
    }

    /// The fleet's totals over the active tenants within `within`, read page by page.
    pub async fn totals(
        &self,
        within: Option<&BTreeSet<String>>,
    ) -> Result<FleetTotals, ReportError> {
        const PAGE: u32 = 500;
        let mut totals = FleetTotals {
            tenants: 0,
            by_status: BTreeMap::new(),
            tenants_with_figures: 0,
            oldest_read_at: None,
            newest_read_at: None,
            figures: None,
        };
        let mut sum = ReadinessFigures::default();
        let mut after = None;
        loop {
            let f =
                SsprReportFilter { within: within.cloned(), after_tenant_id: after, limit: PAGE };
            let rows = self.inner.store.list_sspr_reports(&f).await?;
            after = rows.last().map(|r| r.tenant_id.to_string());
            let done = rows.len() < PAGE as usize;
            for row in rows {
                totals.tenants += 1;
                let status = row.report.as_ref().map_or(STATUS_PENDING, |r| r.status.as_str());
                *totals.by_status.entry(status.to_owned()).or_insert(0) += 1;
                let Some(report) = row.report else { continue };
                let (Some(figures), Some(read_at)) = (report.figures, report.read_at) else {
                    continue;
                };
                let Ok(figures) = serde_json::from_value::<ReadinessFigures>(figures) else {
                    tracing::warn!(tenant_id = %row.tenant_id, "stored readiness figures cannot be read");
                    continue;
                };
                sum.add(&figures);
                totals.tenants_with_figures += 1;
                totals.oldest_read_at =
                    Some(totals.oldest_read_at.map_or(read_at, |t| t.min(read_at)));
                totals.newest_read_at =
                    Some(totals.newest_read_at.map_or(read_at, |t| t.max(read_at)));
            }
            if done {
                break;
            }
        }
        totals.figures = totals.oldest_read_at.map(|at| FiguresView::new(sum, at));
        Ok(totals)
    }
}

/// Runs `report.refresh` jobs.
struct RefreshHandler {
    reports: Reports,
}

#[derive(Deserialize)]
struct RefreshPayload {
    tenant_id: String,
}

impl JobHandler for RefreshHandler {
    fn kind(&self) -> &'static str {
        REFRESH_KIND
    }

    fn run<'a>(&'a self, job: &'a Job) -> JobFuture<'a> {
        Box::pin(async move {
            let payload: RefreshPayload = serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::permanent(format!("invalid payload: {e}")))?;
            let id: TenantId = payload
                .tenant_id
                .parse()
                .map_err(|_| JobError::permanent("invalid tenant id in the payload"))?;
            match self.reports.refresh(&id).await {
                Ok(Refreshed { report, transient: true }) => Err(JobError::retryable(format!(
                    "readiness report failed: {}",
                    report.reason.as_deref().unwrap_or("graph_error")
                ))),
                Ok(_) => Ok(JobDone::Finished),
                // The tenant is gone: nothing to report.
                Err(ReportError::NotFound) => Ok(JobDone::Finished),
                Err(e) => Err(JobError::retryable(e.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn user(admin: bool, guest: bool, enabled: bool, registered: bool, methods: &[&str]) -> Value {
        json!({
            "id": "u", "userType": if guest { "guest" } else { "member" }, "isAdmin": admin,
            "isSsprEnabled": enabled, "isSsprRegistered": registered,
            "isSsprCapable": enabled && registered, "methodsRegistered": methods,
        })
    }

    use serde_json::Value;

    #[test]
    fn the_aggregator_counts_by_population_and_method() {
        let page: Vec<UserRegistrationDetails> = serde_json::from_value(json!([
            user(true, false, true, true, &["email", "mobilePhone"]),
            user(false, false, true, false, &["email"]),
            user(false, true, false, true, &["fido2", "fido2", "somethingNew"]),
            {"id": "x", "methodsRegistered": null, "isAdmin": null},
        ]))
        .unwrap();
        let mut a = Aggregator::new();
        a.add_page(page);
        a.add_page(Vec::new());
        let (f, pages) = a.finish();
        assert_eq!(pages, 2);
        assert_eq!(
            f.all,
            Counts { users: 4, sspr_enabled: 2, sspr_registered: 2, sspr_capable: 1 }
        );
        assert_eq!(
            f.admins,
            Counts { users: 1, sspr_enabled: 1, sspr_registered: 1, sspr_capable: 1 }
        );
        assert_eq!(f.non_admins.users, 3);
        assert_eq!(
            f.guests,
            Counts { users: 1, sspr_enabled: 0, sspr_registered: 1, sspr_capable: 0 }
        );
        assert_eq!(f.members.users, 3);
        assert_eq!(f.method("email"), 2);
        assert_eq!(f.method("fido2"), 1, "a method listed twice counts once");
        assert_eq!(f.unknown_methods(), 1);
        assert_eq!(f.all.percent().sspr_capable, Some(25.0));
        assert_eq!(Counts::default().percent().sspr_capable, None);
    }

    #[test]
    fn method_names_are_bounded() {
        let mut f = ReadinessFigures::default();
        for n in 0..(MAX_METHOD_NAMES + 10) {
            f.count_method(&format!("m{n}"), 1);
        }
        assert_eq!(f.methods.len(), MAX_METHOD_NAMES);
        assert_eq!(f.methods_other, 10);
    }

    #[test]
    fn every_text_cell_of_the_csv_is_defused() {
        let report = TenantReport {
            tenant_id: "ten_x".into(),
            display_name: "\u{FF1D}HYPERLINK(\"http://x\")".into(),
            status: "@status".into(),
            reason: Some("-reason".into()),
            attempted_at: None,
            pages: None,
            duration_ms: None,
            figures: None,
        };
        let text = String::from_utf8(csv_chunk(&[report], true).unwrap()).unwrap();
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
        let row = reader.records().next().unwrap().unwrap();
        assert_eq!(&row[0], "ten_x");
        assert_eq!(&row[1], "'\u{FF1D}HYPERLINK(\"http://x\")");
        assert_eq!(&row[2], "'@status");
        assert_eq!(&row[3], "'-reason");
        // No cell of the file starts like a formula any more.
        for record in csv::Reader::from_reader(text.as_bytes()).records() {
            for field in &record.unwrap() {
                assert_eq!(crate::spreadsheet::cell(field), field);
            }
        }
    }

    #[test]
    fn csv_records_match_the_header_and_defuse_formulas() {
        let mut figures = ReadinessFigures::default();
        figures.all.users = 3;
        figures.all.sspr_capable = 1;
        figures.methods.insert("email".into(), 2);
        figures.methods.insert("brandNew".into(), 5);
        let report = TenantReport {
            tenant_id: "ten_x".into(),
            display_name: "=cmd()".into(),
            status: "ok".into(),
            reason: None,
            attempted_at: None,
            pages: Some(1),
            duration_ms: Some(1),
            figures: Some(FiguresView::new(figures, Utc::now())),
        };
        let header = csv_header();
        let record = report.csv_record();
        assert_eq!(record.len(), header.len());
        let col = |name: &str| &record[header.iter().position(|h| h == name).unwrap()];
        assert_eq!(col("display_name"), "'=cmd()");
        assert_eq!(col("users"), "3");
        assert_eq!(col("sspr_capable_percent"), "33.3");
        assert_eq!(col("method_email"), "2");
        assert_eq!(col("methods_other"), "5");
        let pending = TenantReport { figures: None, status: "pending".into(), ..report };
        assert_eq!(pending.csv_record().len(), header.len());
        let text = String::from_utf8(csv_chunk(&[pending], true).unwrap()).unwrap();
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn the_premium_refusal_is_unavailable_and_other_failures_are_errors() {
        let graph = |status: u16, code: &str| GraphError::Graph {
            status,
            code: code.into(),
            message: String::new(),
            request_id: None,
            client_request_id: "c".into(),
            retry_after: None,
        };
        assert_eq!(
            classify(&graph(403, PREMIUM_ERROR_CODE)),
            ("unavailable", "reports_need_premium")
        );
        assert_eq!(
            classify(&graph(403, "Authorization_RequestDenied")),
            ("error", "permission_missing")
        );
        assert_eq!(classify(&graph(503, "ServiceUnavailable")), ("error", "graph_unavailable"));
    }
}
