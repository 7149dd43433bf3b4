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
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sspr_domain::{
    Clock, JobId, TenantId,
    reset_methods::{RESET_METHODS, enough_without_phone},
};
use sspr_graph::{GraphClient, GraphError, types::UserRegistrationDetails};
use sspr_queue::{Enqueuer, Job, JobDone, JobError, JobFuture, JobHandler, NewJob};
use sspr_registry::{Registry, RegistryError};
use sspr_store::{
    RolloutFilter, SsprReport, SsprReportFilter, SsprReportRow, Store, StoreError, TaskFilter,
    TenantStatus,
};
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

/// Kind of the rollout task asking a technician to set SSPR's scope and settings in the portal
/// (`sspr_rollout::engine::SCOPE_TASK`; its instructions carry `settings.methods_required`).
pub const SCOPE_TASK: &str = "scope_selected";
/// Kind of the rollout task asking to put the scope back (`sspr_rollout::engine::SCOPE_REVERT_TASK`).
pub const SCOPE_REVERT_TASK: &str = "scope_revert";

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
    /// Capable users who stay capable without phone methods: their registered methods that
    /// count for SSPR, leaving out `mobilePhone`, `officePhone` and `alternateMobilePhone`
    /// and counting Authenticator notification and code as one, are at least the methods
    /// required for them (administrators 2, others the tenant's `methods_required`).
    /// 0 in figures stored before this figure existed (`methods_required` is then `null`).
    #[serde(default)]
    pub capable_without_phone: u64,
    /// Capable users who depend on SMS or voice (retired for SSPR on 1 February 2027):
    /// `sspr_capable` − `capable_without_phone`.
    #[serde(default)]
    pub phone_dependent: u64,
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
        self.capable_without_phone += other.capable_without_phone;
        self.phone_dependent += other.phone_dependent;
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
    /// The number of methods required to reset that the non-administrators' phone figures
    /// used, and where it came from; `None` in figures stored before these figures existed
    /// (their `capable_without_phone` and `phone_dependent` are 0 until the next refresh).
    #[serde(default)]
    pub methods_required: Option<MethodsRequired>,
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

/// Where a tenant's [`MethodsRequired`] value comes from, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MethodsRequiredSource {
    /// The `settings.methods_required` of the tenant's last attested scope task (a technician
    /// attested setting it in the portal).
    Attested,
    /// Inferred from the report itself: a non-administrator with exactly one registered
    /// method that counts for SSPR who is `isSsprRegistered` means 1 is required; such users
    /// all showing `false` mean 2.
    Inferred,
    /// The `policy.methods_required` of the newest rollout that includes the tenant.
    RolloutPolicy,
    /// Nothing says: Microsoft's default, 2.
    Default,
}

impl MethodsRequiredSource {
    /// The name as JSON and CSV show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attested => "attested",
            Self::Inferred => "inferred",
            Self::RolloutPolicy => "rollout_policy",
            Self::Default => "default",
        }
    }
}

/// The number of methods required to reset (1 or 2) that a tenant's non-administrator
/// figures used, and its source. Graph cannot read this legacy setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MethodsRequired {
    /// 1 or 2.
    pub value: u8,
    /// Where it comes from.
    pub source: MethodsRequiredSource,
}

/// What the store knows about a tenant's methods required, besides the report itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MethodsRequiredHints {
    /// The last attested value.
    pub attested: Option<u8>,
    /// The newest rollout's policy value.
    pub rollout_policy: Option<u8>,
}

/// `n` if it is a possible number of methods required (1 or 2).
fn valid_required(n: u8) -> Option<u8> {
    (1..=2).contains(&n).then_some(n)
}

/// The registered methods that count for `u`'s reset, by the rule of
/// [`sspr_domain::reset_methods`] (graph-facts §11), and how many distinct names of them there
/// are. Security questions never count for administrators (their reset policy does not offer
/// them), so they are left out of an administrator's list.
fn counted_methods(u: &UserRegistrationDetails, admin: bool) -> (Cow<'_, [String]>, usize) {
    let question = |m: &String| m.eq_ignore_ascii_case("securityQuestion");
    let methods: Cow<'_, [String]> = if admin && u.methods_registered.iter().any(question) {
        Cow::Owned(u.methods_registered.iter().filter(|m| !question(m)).cloned().collect())
    } else {
        Cow::Borrowed(&u.methods_registered)
    };
    let names =
        RESET_METHODS.iter().filter(|r| methods.iter().any(|m| m.eq_ignore_ascii_case(r))).count();
    (methods, names)
}

/// Population slots of [`Aggregator::without_phone`].
const ALL: usize = 0;
const ADMINS: usize = 1;
const NON_ADMINS: usize = 2;
const MEMBERS: usize = 3;
const GUESTS: usize = 4;

/// Counts `userRegistrationDetails` page by page, keeping nothing of a page once counted.
///
/// The non-administrators' phone figures depend on the tenant's methods required, which is
/// inferred from the same pages: both variants (1 and 2 required) are counted and the one
/// resolved at [`Aggregator::finish_with`] is kept. Only counters, never a user.
#[derive(Debug, Clone, Default)]
pub struct Aggregator {
    figures: ReadinessFigures,
    pages: u64,
    /// Capable users without phone, per population, if 1 (`[0]`) or 2 (`[1]`) are required.
    without_phone: [[u64; 2]; 5],
    /// Non-administrators with exactly one eligible method: `isSsprRegistered` true, false.
    single_method: [u64; 2],
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
        let admin = u.is_admin == Some(true);
        if admin { &mut f.admins } else { &mut f.non_admins }.add_user(u);
        let guest = u.user_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("guest"));
        if guest { &mut f.guests } else { &mut f.members }.add_user(u);
        // A method listed twice for one user counts once.
        for (i, name) in u.methods_registered.iter().enumerate() {
            if !u.methods_registered[..i].contains(name) {
                f.count_method(name, 1);
            }
        }
        let (methods, names) = counted_methods(u, admin);
        if u.is_sspr_capable {
            for (variant, required) in [1u8, 2].into_iter().enumerate() {
                // Administrators need 2 whatever `required` is.
                if enough_without_phone(&methods, required, admin) {
                    let population = if admin { ADMINS } else { NON_ADMINS };
                    let kind = if guest { GUESTS } else { MEMBERS };
                    for slot in [ALL, population, kind] {
                        self.without_phone[slot][variant] += 1;
                    }
                }
            }
        }
        // Evidence of the tenant's setting: one method (by name, so that Authenticator
        // notification + code, counted as one or two, is no evidence either way).
        if !admin && names == 1 {
            self.single_method[usize::from(!u.is_sspr_registered)] += 1;
        }
    }

    /// Pages counted so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// What the pages say about the methods required: 1 when a non-administrator with one
    /// eligible method is registered (with 2 required, one method never is), 2 when such
    /// users exist and none is, `None` without such users.
    pub fn inferred_methods_required(&self) -> Option<u8> {
        match self.single_method {
            [registered, _] if registered > 0 => Some(1),
            [0, unregistered] if unregistered > 0 => Some(2),
            _ => None,
        }
    }

    /// The methods required, in this order: attested, inferred, newest rollout's policy, 2.
    pub fn resolve(&self, hints: MethodsRequiredHints) -> MethodsRequired {
        let attested = hints.attested.and_then(valid_required);
        let policy = hints.rollout_policy.and_then(valid_required);
        let (value, source) = if let Some(v) = attested {
            (v, MethodsRequiredSource::Attested)
        } else if let Some(v) = self.inferred_methods_required() {
            (v, MethodsRequiredSource::Inferred)
        } else if let Some(v) = policy {
            (v, MethodsRequiredSource::RolloutPolicy)
        } else {
            (2, MethodsRequiredSource::Default)
        };
        MethodsRequired { value, source }
    }

    /// The figures and the number of pages read, the phone figures computed with the methods
    /// required resolved from `hints` and the pages.
    pub fn finish_with(self, hints: MethodsRequiredHints) -> (ReadinessFigures, u64) {
        let required = self.resolve(hints);
        let variant = usize::from(required.value == 2);
        let mut f = self.figures;
        for (slot, counts) in [
            (ALL, &mut f.all),
            (ADMINS, &mut f.admins),
            (NON_ADMINS, &mut f.non_admins),
            (MEMBERS, &mut f.members),
            (GUESTS, &mut f.guests),
        ] {
            counts.capable_without_phone = self.without_phone[slot][variant];
            counts.phone_dependent =
                counts.sspr_capable.saturating_sub(counts.capable_without_phone);
        }
        f.methods_required = Some(required);
        (f, self.pages)
    }

    /// [`Aggregator::finish_with`] without hints from the store.
    pub fn finish(self) -> (ReadinessFigures, u64) {
        self.finish_with(MethodsRequiredHints::default())
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
    /// The methods required to reset that the non-administrators' `capable_without_phone`
    /// used (administrators always need 2), and its source. `null` in figures read before
    /// this figure existed (their phone figures are 0 until the next refresh), and always
    /// `null` in fleet totals (see `tenants_by_methods_required`).
    pub methods_required: Option<MethodsRequired>,
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
            methods_required: figures.methods_required,
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
    /// Tenants with figures per methods required their phone figures used: `"1"`, `"2"`,
    /// and `"unknown"` for figures read before these figures existed (summed as 0).
    #[serde(default)]
    pub tenants_by_methods_required: BTreeMap<String, u64>,
}

/// The key of `tenants_by_methods_required` for `figures`.
fn methods_required_key(figures: &ReadinessFigures) -> String {
    figures.methods_required.map_or_else(|| "unknown".to_owned(), |m| m.value.to_string())
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
    // Added later, at the end so that earlier columns keep their places.
    h.push("methods_required".into());
    h.push("methods_required_source".into());
    for prefix in POPULATION_PREFIXES {
        h.push(format!("{prefix}capable_without_phone"));
        h.push(format!("{prefix}phone_dependent"));
    }
    h
}

/// CSV column prefixes of the populations, in column order (`all` has none).
const POPULATION_PREFIXES: [&str; 5] = ["", "admins_", "non_admins_", "members_", "guests_"];

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
        // Empty for figures read before `methods_required` existed.
        r.push(f.methods_required.map(|m| m.value.to_string()).unwrap_or_default());
        r.push(f.methods_required.map(|m| m.source.as_str().to_owned()).unwrap_or_default());
        for part in [&f.all, &f.admins, &f.non_admins, &f.members, &f.guests] {
            r.push(part.counts.capable_without_phone.to_string());
            r.push(part.counts.phone_dependent.to_string());
        }
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
                    .registration_details(&graph_tenant, sspr_graph::ReportPriority::Low, |page| {
                        aggregator.add_page(page)
                    })
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
                let hints = self.methods_required_hints(id).await?;
                let (figures, pages) = aggregator.finish_with(hints);
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

    /// What the store says about the tenant's methods required: the `settings.methods_required`
    /// of its last attested scope task (unless a scope revert task was attested after it),
    /// and the policy of the newest rollout that includes it. The portal scope mode stores no
    /// value it read (only the policy as it was before writing), so it is no source here.
    pub async fn methods_required_hints(
        &self,
        id: &TenantId,
    ) -> Result<MethodsRequiredHints, ReportError> {
        const PAGE: u32 = 500;
        let store = &self.inner.store;
        // (attested_at, task id) of the newest attested task of each kind.
        let mut scope: Option<(DateTime<Utc>, String, Option<u8>)> = None;
        let mut revert: Option<(DateTime<Utc>, String)> = None;
        let mut after = None;
        loop {
            let f = TaskFilter {
                tenant_id: Some(id.to_string()),
                state: Some("attested".into()),
                after_id: after,
                limit: PAGE,
                ..TaskFilter::default()
            };
            let tasks = store.list_tasks(&f).await?;
            after = tasks.last().map(|t| t.id.to_string());
            let done = tasks.len() < PAGE as usize;
            for t in tasks {
                let at = (t.attested_at.unwrap_or(t.created_at), t.id.to_string());
                if t.kind == SCOPE_TASK
                    && scope.as_ref().is_none_or(|s| (s.0, &s.1) < (at.0, &at.1))
                {
                    let value = t.instructions["settings"]["methods_required"]
                        .as_u64()
                        .and_then(|n| u8::try_from(n).ok())
                        .and_then(valid_required);
                    scope = Some((at.0, at.1, value));
                } else if t.kind == SCOPE_REVERT_TASK && revert.as_ref().is_none_or(|r| *r < at) {
                    revert = Some(at);
                }
            }
            if done {
                break;
            }
        }
        let attested = scope.and_then(|(at, task, value)| {
            let reverted = revert.is_some_and(|r| r > (at, task));
            if reverted { None } else { value }
        });
        let newest = store
            .list_rollouts(&RolloutFilter {
                within: Some(BTreeSet::from([id.to_string()])),
                state: None,
                after_id: None,
                limit: 1,
            })
            .await?;
        let rollout_policy = newest.first().map(|r| {
            // The policy's default when the stored spec leaves it out.
            r.spec["policy"]["methods_required"]
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .unwrap_or(2)
        });
        Ok(MethodsRequiredHints {
            attested,
            rollout_policy: rollout_policy.and_then(valid_required),
        })
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
            tenants_by_methods_required: BTreeMap::new(),
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
                *totals
                    .tenants_by_methods_required
                    .entry(methods_required_key(&figures))
                    .or_insert(0) += 1;
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
            Counts {
                users: 4,
                sspr_enabled: 2,
                sspr_registered: 2,
                sspr_capable: 1,
                capable_without_phone: 0,
                phone_dependent: 1,
            }
        );
        assert_eq!(
            f.admins,
            Counts {
                users: 1,
                sspr_enabled: 1,
                sspr_registered: 1,
                sspr_capable: 1,
                capable_without_phone: 0,
                phone_dependent: 1,
            }
        );
        assert_eq!(f.non_admins.users, 3);
        assert_eq!(
            f.guests,
            Counts {
                users: 1,
                sspr_enabled: 0,
                sspr_registered: 1,
                sspr_capable: 0,
                ..Counts::default()
            }
        );
        assert_eq!(f.members.users, 3);
        assert_eq!(f.method("email"), 2);
        assert_eq!(f.method("fido2"), 1, "a method listed twice counts once");
        assert_eq!(f.unknown_methods(), 1);
        assert_eq!(f.all.percent().sspr_capable, Some(25.0));
        assert_eq!(Counts::default().percent().sspr_capable, None);
    }

    fn aggregate(users: &[Value], hints: MethodsRequiredHints) -> ReadinessFigures {
        let page: Vec<UserRegistrationDetails> =
            serde_json::from_value(Value::Array(users.to_vec())).unwrap();
        let mut a = Aggregator::new();
        a.add_page(page);
        a.finish_with(hints).0
    }

    /// A capable non-administrator member.
    fn capable(methods: &[&str]) -> Value {
        user(false, false, true, true, methods)
    }

    fn phone(c: &Counts) -> (u64, u64, u64) {
        (c.sspr_capable, c.capable_without_phone, c.phone_dependent)
    }

    const ATTESTED_1: MethodsRequiredHints =
        MethodsRequiredHints { attested: Some(1), rollout_policy: None };
    const ATTESTED_2: MethodsRequiredHints =
        MethodsRequiredHints { attested: Some(2), rollout_policy: None };

    #[test]
    fn phone_only_users_are_phone_dependent_whatever_is_required() {
        let users = [
            capable(&["mobilePhone"]),
            capable(&["officePhone", "mobilePhone"]),
            capable(&["alternateMobilePhone", "mobilePhone"]),
        ];
        for hints in [ATTESTED_1, ATTESTED_2] {
            let f = aggregate(&users, hints);
            assert_eq!(phone(&f.all), (3, 0, 3));
            assert_eq!(phone(&f.members), (3, 0, 3));
            assert_eq!(phone(&f.non_admins), (3, 0, 3));
        }
    }

    #[test]
    fn authenticator_push_and_code_count_as_one_method() {
        let users = [capable(&["microsoftAuthenticatorPush", "softwareOneTimePasscode"])];
        // With 1 required, the Authenticator alone is enough.
        assert_eq!(phone(&aggregate(&users, ATTESTED_1).all), (1, 1, 0));
        // With 2 required, notification and code together are one method: not enough
        // without a phone (even when Graph calls the user capable).
        assert_eq!(phone(&aggregate(&users, ATTESTED_2).all), (1, 0, 1));
        // Authenticator and email are two.
        let users = [capable(&["microsoftAuthenticatorPush", "email", "mobilePhone"])];
        assert_eq!(phone(&aggregate(&users, ATTESTED_2).all), (1, 1, 0));
    }

    #[test]
    fn email_and_phone_is_phone_dependent_only_when_two_are_required() {
        let users = [capable(&["email", "mobilePhone"])];
        assert_eq!(phone(&aggregate(&users, ATTESTED_2).all), (1, 0, 1));
        assert_eq!(phone(&aggregate(&users, ATTESTED_1).all), (1, 1, 0));
    }

    #[test]
    fn methods_that_do_not_count_for_sspr_are_left_out() {
        let users = [
            capable(&["fido2", "windowsHelloForBusiness", "mobilePhone"]),
            capable(&["temporaryAccessPass", "microsoftAuthenticatorPasswordless", "officePhone"]),
            capable(&["hardwareOneTimePasscode", "alternateMobilePhone", "mobilePhone"]),
            capable(&["securityQuestion", "mobilePhone"]),
        ];
        let f = aggregate(&users, ATTESTED_1);
        assert_eq!(phone(&f.all), (4, 1, 3), "only the security question counts");
    }

    #[test]
    fn administrators_always_need_two_methods_without_security_questions() {
        let admin = |methods: &[&str]| user(true, false, true, true, methods);
        let users = [
            admin(&["email", "microsoftAuthenticatorPush"]),
            admin(&["email", "mobilePhone"]),
            admin(&["microsoftAuthenticatorPush", "softwareOneTimePasscode", "officePhone"]),
            admin(&["email", "securityQuestion", "mobilePhone"]),
            // Not capable: never counted.
            user(true, false, true, false, &["email", "microsoftAuthenticatorPush"]),
            capable(&["email", "mobilePhone"]),
        ];
        let f = aggregate(&users, ATTESTED_1);
        assert_eq!(phone(&f.admins), (4, 1, 3), "tenant requires 1, admins still 2");
        assert_eq!(phone(&f.non_admins), (1, 1, 0));
        assert_eq!(phone(&f.all), (5, 2, 3));
        assert_eq!(phone(&f.members), (5, 2, 3));
        assert_eq!(f.methods_required.map(|m| m.value), Some(1));
    }

    #[test]
    fn guests_are_counted_apart_from_members() {
        let guest = |methods: &[&str]| user(false, true, true, true, methods);
        let users = [
            guest(&["email"]),
            guest(&["mobilePhone"]),
            guest(&["email", "mobilePhone"]),
            user(false, true, false, true, &["email"]),
            capable(&["email", "securityQuestion"]),
        ];
        let f = aggregate(&users, ATTESTED_2);
        assert_eq!(f.guests.users, 4);
        // Graph calls the one-method guests capable: then 2 are not required, whatever the
        // attestation says; the figures follow the attested value still.
        assert_eq!(phone(&f.guests), (3, 0, 3));
        assert_eq!(phone(&f.members), (1, 1, 0));
        let f = aggregate(&users, ATTESTED_1);
        assert_eq!(phone(&f.guests), (3, 2, 1));
        assert_eq!(phone(&f.all), (4, 3, 1));
    }

    #[test]
    fn methods_required_is_inferred_from_one_method_users() {
        let none = MethodsRequiredHints::default();
        // A registered non-administrator with exactly one method: 1 is required.
        let users = [
            user(false, false, true, true, &["email"]),
            user(false, false, true, false, &["mobilePhone"]),
            capable(&["email", "mobilePhone"]),
        ];
        let f = aggregate(&users, none);
        let inferred_1 = MethodsRequired { value: 1, source: MethodsRequiredSource::Inferred };
        assert_eq!(f.methods_required, Some(inferred_1));
        assert_eq!(phone(&f.all), (2, 2, 0));
        // Such users all unregistered: 2.
        let users = [
            user(false, false, true, false, &["email"]),
            user(false, true, true, false, &["softwareOneTimePasscode", "fido2"]),
            capable(&["email", "mobilePhone"]),
            // Administrators and push + code users are no evidence.
            user(true, false, true, true, &["email"]),
            capable(&["microsoftAuthenticatorPush", "softwareOneTimePasscode"]),
        ];
        let f = aggregate(&users, none);
        assert_eq!(
            f.methods_required,
            Some(MethodsRequired { value: 2, source: MethodsRequiredSource::Inferred })
        );
        assert_eq!(phone(&f.non_admins), (2, 0, 2));
        // No evidence: the newest rollout's policy, else 2.
        let users = [capable(&["email", "mobilePhone"]), user(true, false, true, true, &["email"])];
        let policy = MethodsRequiredHints { attested: None, rollout_policy: Some(1) };
        let f = aggregate(&users, policy);
        assert_eq!(
            f.methods_required,
            Some(MethodsRequired { value: 1, source: MethodsRequiredSource::RolloutPolicy })
        );
        assert_eq!(phone(&f.non_admins), (1, 1, 0));
        let f = aggregate(&users, none);
        assert_eq!(
            f.methods_required,
            Some(MethodsRequired { value: 2, source: MethodsRequiredSource::Default })
        );
        assert_eq!(phone(&f.non_admins), (1, 0, 1));
        // An attested value goes before the inferred one; an impossible one is ignored.
        let users = [user(false, false, true, true, &["email"])];
        let f = aggregate(&users, ATTESTED_2);
        assert_eq!(
            f.methods_required,
            Some(MethodsRequired { value: 2, source: MethodsRequiredSource::Attested })
        );
        let odd = MethodsRequiredHints { attested: Some(3), rollout_policy: Some(0) };
        assert_eq!(aggregate(&users, odd).methods_required, Some(inferred_1));
    }

    #[test]
    fn both_variants_are_counted_across_pages_and_picked_at_the_end() {
        // The evidence comes on the last page; the figures of the first page follow it.
        let mut a = Aggregator::new();
        for _ in 0..3 {
            a.add_page(
                serde_json::from_value(json!([capable(&["email", "mobilePhone"])])).unwrap(),
            );
        }
        a.add_page(
            serde_json::from_value(json!([user(false, false, true, true, &["email"])])).unwrap(),
        );
        let (f, pages) = a.finish();
        assert_eq!(pages, 4);
        assert_eq!(phone(&f.all), (4, 4, 0));
        assert_eq!(f.methods_required.map(|m| m.source), Some(MethodsRequiredSource::Inferred));
    }

    #[test]
    fn figures_stored_before_the_phone_figures_still_load() {
        let old = json!({
            "all": {"users": 3, "sspr_enabled": 2, "sspr_registered": 2, "sspr_capable": 1},
            "admins": {"users": 0, "sspr_enabled": 0, "sspr_registered": 0, "sspr_capable": 0},
            "non_admins": {"users": 3, "sspr_enabled": 2, "sspr_registered": 2, "sspr_capable": 1},
            "members": {"users": 3, "sspr_enabled": 2, "sspr_registered": 2, "sspr_capable": 1},
            "guests": {"users": 0, "sspr_enabled": 0, "sspr_registered": 0, "sspr_capable": 0},
            "methods": {"email": 2},
        });
        let f: ReadinessFigures = serde_json::from_value(old).unwrap();
        assert_eq!(f.methods_required, None);
        assert_eq!((f.all.capable_without_phone, f.all.phone_dependent), (0, 0));
        assert_eq!(methods_required_key(&f), "unknown");
        let view = serde_json::to_value(FiguresView::new(f.clone(), Utc::now())).unwrap();
        assert_eq!(view["methods_required"], Value::Null);
        assert_eq!(view["all"]["phone_dependent"], 0);
        let report = TenantReport {
            tenant_id: "ten_x".into(),
            display_name: "x".into(),
            status: "ok".into(),
            reason: None,
            attempted_at: None,
            pages: Some(1),
            duration_ms: Some(1),
            figures: Some(FiguresView::new(f, Utc::now())),
        };
        let header = csv_header();
        let record = report.csv_record();
        let col = |name: &str| &record[header.iter().position(|h| h == name).unwrap()];
        assert_eq!(col("methods_required"), "");
        assert_eq!(col("methods_required_source"), "");
        assert_eq!(col("phone_dependent"), "0");
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
        assert_eq!(col("methods_required"), "");
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
