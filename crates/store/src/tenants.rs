//! The tenant registry: customer tenants, their tags and the one credential each is reached with.
//!
//! A tenant is *active* until it is offboarded (`offboarded_at IS NULL`). Offboarding keeps the
//! row, its tags and its last readiness report as history, and deletes its credential. At most
//! one active tenant may point at a given Entra tenant, whether by the reference it was
//! registered with or by the Entra tenant id learnt when it was verified.
//!
//! Reading tenants takes a fixed number of queries whatever the number of tenants: one for the
//! rows (the credential summary comes through a `LEFT JOIN`) and one per [`TAG_BATCH`] tenants
//! for their tags.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    str::FromStr,
};

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use sspr_domain::{CredentialId, TenantId};

use crate::{
    Store, StoreError,
    pool::{with_reader, with_writer},
    time::{from_ms, to_ms},
};

/// Where a tenant stands, as far as sspr-fleet knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantStatus {
    /// Registered, not verified yet.
    Unverified,
    /// The last verification found the tenant ready for an SSPR rollout.
    Ready,
    /// The last verification reached the tenant but found a blocker (see the status reason).
    NotReady,
    /// The last verification could not reach the tenant with its credential.
    Unreachable,
    /// Removed from management; kept as history.
    Offboarded,
}

impl TenantStatus {
    /// Every status, in the order of the lifecycle.
    pub const ALL: [TenantStatus; 5] = [
        TenantStatus::Unverified,
        TenantStatus::Ready,
        TenantStatus::NotReady,
        TenantStatus::Unreachable,
        TenantStatus::Offboarded,
    ];

    /// The status as stored and shown: `unverified`, `ready`, `not_ready`, `unreachable` or
    /// `offboarded`.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Unverified => "unverified",
            TenantStatus::Ready => "ready",
            TenantStatus::NotReady => "not_ready",
            TenantStatus::Unreachable => "unreachable",
            TenantStatus::Offboarded => "offboarded",
        }
    }
}

impl FromStr for TenantStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            format!(
                "unknown tenant status {s:?}; expected one of: {}",
                Self::ALL.map(Self::as_str).join(", ")
            )
        })
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Entra ID licence level of a tenant, which decides which SSPR features it can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenceLevel {
    /// Not known yet (never verified, or the licences could not be read).
    Unknown,
    /// No licence that includes SSPR.
    None,
    /// SSPR for cloud users only (e.g. Microsoft 365 Business Standard).
    CloudOnly,
    /// Entra ID P1.
    P1,
    /// Entra ID P2.
    P2,
}

impl LicenceLevel {
    /// Entra ID P1 or P2: dynamic groups, password writeback and the registration reports.
    pub fn is_premium(self) -> bool {
        matches!(self, LicenceLevel::P1 | LicenceLevel::P2)
    }

    /// Every level, from least to most capable.
    pub const ALL: [LicenceLevel; 5] = [
        LicenceLevel::Unknown,
        LicenceLevel::None,
        LicenceLevel::CloudOnly,
        LicenceLevel::P1,
        LicenceLevel::P2,
    ];

    /// The level as stored and shown: `unknown`, `none`, `cloud_only`, `p1` or `p2`.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenceLevel::Unknown => "unknown",
            LicenceLevel::None => "none",
            LicenceLevel::CloudOnly => "cloud_only",
            LicenceLevel::P1 => "p1",
            LicenceLevel::P2 => "p2",
        }
    }
}

impl FromStr for LicenceLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            format!(
                "unknown licence level {s:?}; expected one of: {}",
                Self::ALL.map(Self::as_str).join(", ")
            )
        })
    }
}

impl fmt::Display for LicenceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What may be shown about a tenant's credential: everything but the sealed secret and the
/// certificate body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSummary {
    /// Public id of the credential.
    pub id: CredentialId,
    /// `client_secret`, `certificate` or `delegated_refresh_token`.
    pub kind: String,
    /// The application (client) id the credential belongs to.
    pub client_id: String,
    /// Base64url SHA-256 thumbprint of the certificate, for certificate credentials.
    pub thumbprint_s256: Option<String>,
    /// Id of the master key that sealed the secret.
    pub key_id: String,
    /// When the credential was stored.
    pub created_at: DateTime<Utc>,
}

/// A credential as stored, sealed secret included. Its `Debug` output omits the sealed value.
#[derive(Clone)]
pub struct StoredCredential {
    /// What may be shown about it.
    pub summary: CredentialSummary,
    /// The tenant it reaches.
    pub tenant_id: TenantId,
    /// The public certificate (PEM), for certificate credentials.
    pub certificate_pem: Option<String>,
    /// Vault ciphertext (`v1:<key id>:...`); never the clear secret.
    pub sealed: String,
}

impl fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredential")
            .field("summary", &self.summary)
            .field("tenant_id", &self.tenant_id)
            .field("certificate_pem", &self.certificate_pem.as_ref().map(|_| "<pem>"))
            .finish_non_exhaustive()
    }
}

/// A credential to store for a tenant. Its `Debug` output omits the sealed value.
#[derive(Clone)]
pub struct NewCredential {
    /// Public id of the credential.
    pub id: CredentialId,
    /// `client_secret`, `certificate` or `delegated_refresh_token` (the database rejects
    /// anything else).
    pub kind: String,
    /// The application (client) id.
    pub client_id: String,
    /// Base64url SHA-256 thumbprint, for certificate credentials.
    pub thumbprint_s256: Option<String>,
    /// The public certificate (PEM), for certificate credentials.
    pub certificate_pem: Option<String>,
    /// Vault ciphertext (`v1:<key id>:...`); never the clear secret.
    pub sealed: String,
    /// Id of the master key that sealed it.
    pub key_id: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewCredential")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("thumbprint_s256", &self.thumbprint_s256)
            .field("certificate_pem", &self.certificate_pem.as_ref().map(|_| "<pem>"))
            .field("key_id", &self.key_id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A registered customer tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// sspr-fleet's id of the tenant.
    pub id: TenantId,
    /// The reference it was registered with: an Entra tenant id (GUID) or a domain, lowercase.
    pub entra_ref: String,
    /// The Entra tenant id (GUID, lowercase) once known.
    pub entra_tenant_id: Option<String>,
    /// Human name.
    pub display_name: String,
    /// Tags, sorted and without duplicates.
    pub tags: Vec<String>,
    /// Ids of the tenant in other systems (PSA, RMM), by system name.
    pub external_refs: BTreeMap<String, String>,
    /// Where the tenant stands.
    pub status: TenantStatus,
    /// Why, when the status is not `ready` (a blocker code).
    pub status_reason: Option<String>,
    /// Licence level found by the last verification.
    pub licence: LicenceLevel,
    /// The tenant's default domain, once verified.
    pub default_domain: Option<String>,
    /// The readiness report of the last verification.
    pub readiness: Option<serde_json::Value>,
    /// When the tenant was last verified.
    pub verified_at: Option<DateTime<Utc>>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was offboarded; `None` while active.
    pub offboarded_at: Option<DateTime<Utc>>,
    /// Its credential; `None` once offboarded.
    pub credential: Option<CredentialSummary>,
}

/// A tenant to register, with the credential to reach it.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// sspr-fleet's id of the tenant.
    pub id: TenantId,
    /// GUID or domain, as registered; stored lowercase.
    pub entra_ref: String,
    /// The Entra tenant id when already known (equal to `entra_ref` when that is a GUID);
    /// stored lowercase.
    pub entra_tenant_id: Option<String>,
    /// Human name.
    pub display_name: String,
    /// Tags; duplicates are dropped.
    pub tags: Vec<String>,
    /// Ids in other systems.
    pub external_refs: BTreeMap<String, String>,
    /// Registration time.
    pub created_at: DateTime<Utc>,
    /// The credential to reach the tenant with.
    pub credential: NewCredential,
}

/// Which tenants to list or count. Every set field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    /// Only tenants with exactly this tag.
    pub tag: Option<String>,
    /// Only tenants with this status (`Offboarded` lists offboarded tenants).
    pub status: Option<TenantStatus>,
    /// Only tenants with this licence level.
    pub licence: Option<LicenceLevel>,
    /// Case-insensitive substring of the display name, Entra reference, Entra tenant id,
    /// default domain or external references. `%` and `_` match themselves.
    pub search: Option<String>,
    /// Only these tenant ids (a restricted API key's reach); an empty set matches nothing.
    pub within: Option<BTreeSet<String>>,
    /// Also list offboarded tenants.
    pub include_offboarded: bool,
    /// Only tenants whose id sorts after this one (the cursor of the previous page).
    pub after_id: Option<String>,
    /// At most this many tenants (lists only).
    pub limit: u32,
}

/// Changes to a tenant's registration; `None` fields are left alone.
#[derive(Debug, Clone)]
pub struct TenantPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New tags, replacing all the current ones.
    pub tags: Option<Vec<String>>,
    /// New external references, replacing all the current ones.
    pub external_refs: Option<BTreeMap<String, String>>,
    /// When the change is made.
    pub updated_at: DateTime<Utc>,
}

/// The outcome of a verification, to store on the tenant.
#[derive(Debug, Clone)]
pub struct VerificationRecord {
    /// The tenant's new status (not `Offboarded`: use [`Store::offboard_tenant`]).
    pub status: TenantStatus,
    /// Why, when not ready.
    pub status_reason: Option<String>,
    /// Licence level found.
    pub licence: LicenceLevel,
    /// The Entra tenant id, when found; `None` keeps the one already known.
    pub entra_tenant_id: Option<String>,
    /// The default domain, when found; `None` keeps the one already known.
    pub default_domain: Option<String>,
    /// The readiness report.
    pub readiness: serde_json::Value,
    /// When the verification ran (also the tenant's new `updated_at`).
    pub verified_at: DateTime<Utc>,
}

/// How many tenant ids one tag query binds: well under every backend's parameter limit.
const TAG_BATCH: usize = 500;

/// The columns [`TenantRow`] reads, the credential summary through a `LEFT JOIN`.
const SELECT_TENANTS: &str = "SELECT t.id, t.entra_ref, t.entra_tenant_id, t.display_name, \
     t.external_refs, t.status, t.status_reason, t.licence, t.default_domain, t.readiness, \
     t.verified_at, t.created_at, t.updated_at, t.offboarded_at, \
     c.id AS cred_id, c.kind AS cred_kind, c.client_id AS cred_client_id, \
     c.thumbprint_s256 AS cred_thumbprint_s256, c.key_id AS cred_key_id, \
     c.created_at AS cred_created_at \
     FROM tenants t LEFT JOIN tenant_credentials c ON c.tenant_id = t.id";

/// The columns [`CredentialRow`] reads.
macro_rules! credential_columns {
    () => {
        "id, tenant_id, kind, client_id, thumbprint_s256, certificate_pem, sealed, key_id, created_at"
    };
}

/// Reads the tenants `$selection` picks, tags included, on the connection `$conn` (a
/// `&mut` connection of either backend, possibly inside a transaction), as `Vec<Tenant>`.
/// A macro so that it expands inside each arm of `with_reader!`/`with_writer!`.
macro_rules! load_tenants {
    ($conn:expr, $selection:expr) => {{
        let conn = $conn;
        let mut qb = QueryBuilder::new(SELECT_TENANTS);
        push_selection(&mut qb, $selection);
        let rows: Vec<TenantRow> = qb.build_query_as().fetch_all(&mut *conn).await?;
        let mut tags: Vec<TagRow> = Vec::new();
        for batch in rows.chunks(TAG_BATCH) {
            let mut qb = tags_query(batch.iter().map(|r| r.id.as_str()));
            tags.extend(qb.build_query_as::<TagRow>().fetch_all(&mut *conn).await?);
        }
        assemble(rows, tags)?
    }};
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    entra_ref: String,
    entra_tenant_id: Option<String>,
    display_name: String,
    external_refs: String,
    status: String,
    status_reason: Option<String>,
    licence: String,
    default_domain: Option<String>,
    readiness: Option<String>,
    verified_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    offboarded_at: Option<i64>,
    cred_id: Option<String>,
    cred_kind: Option<String>,
    cred_client_id: Option<String>,
    cred_thumbprint_s256: Option<String>,
    cred_key_id: Option<String>,
    cred_created_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct TagRow {
    tenant_id: String,
    tag: String,
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    id: String,
    tenant_id: String,
    kind: String,
    client_id: String,
    thumbprint_s256: Option<String>,
    certificate_pem: Option<String>,
    sealed: String,
    key_id: String,
    created_at: i64,
}

fn corrupt_tenant(detail: String) -> StoreError {
    StoreError::Corrupt { what: "tenant", detail }
}

fn corrupt_credential(detail: String) -> StoreError {
    StoreError::Corrupt { what: "credential", detail }
}

/// The tenant without its tags, which come from another query.
impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;
    fn try_from(row: TenantRow) -> Result<Self, StoreError> {
        let corrupt = corrupt_tenant;
        let credential = match row.cred_id {
            None => None,
            Some(id) => {
                let missing = |col: &str| corrupt(format!("credential {id}: {col} is NULL"));
                Some(CredentialSummary {
                    kind: row.cred_kind.ok_or_else(|| missing("kind"))?,
                    client_id: row.cred_client_id.ok_or_else(|| missing("client_id"))?,
                    thumbprint_s256: row.cred_thumbprint_s256,
                    key_id: row.cred_key_id.ok_or_else(|| missing("key_id"))?,
                    created_at: from_ms(
                        row.cred_created_at.ok_or_else(|| missing("created_at"))?,
                        "credential",
                    )?,
                    id: id.parse().map_err(|e| corrupt_credential(format!("id: {e}")))?,
                })
            }
        };
        let readiness = row
            .readiness
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|e| corrupt(format!("readiness: {e}")))?;
        Ok(Tenant {
            id: row.id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
            entra_ref: row.entra_ref,
            entra_tenant_id: row.entra_tenant_id,
            display_name: row.display_name,
            tags: Vec::new(),
            external_refs: serde_json::from_str(&row.external_refs)
                .map_err(|e| corrupt(format!("external_refs: {e}")))?,
            status: row.status.parse().map_err(|e| corrupt(format!("status: {e}")))?,
            status_reason: row.status_reason,
            licence: row.licence.parse().map_err(|e| corrupt(format!("licence: {e}")))?,
            default_domain: row.default_domain,
            readiness,
            verified_at: row.verified_at.map(|t| from_ms(t, "tenant")).transpose()?,
            created_at: from_ms(row.created_at, "tenant")?,
            updated_at: from_ms(row.updated_at, "tenant")?,
            offboarded_at: row.offboarded_at.map(|t| from_ms(t, "tenant")).transpose()?,
            credential,
        })
    }
}

impl TryFrom<CredentialRow> for StoredCredential {
    type Error = StoreError;
    fn try_from(row: CredentialRow) -> Result<Self, StoreError> {
        let corrupt = corrupt_credential;
        Ok(StoredCredential {
            summary: CredentialSummary {
                id: row.id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
                kind: row.kind,
                client_id: row.client_id,
                thumbprint_s256: row.thumbprint_s256,
                key_id: row.key_id,
                created_at: from_ms(row.created_at, "credential")?,
            },
            tenant_id: row.tenant_id.parse().map_err(|e| corrupt(format!("tenant_id: {e}")))?,
            certificate_pem: row.certificate_pem,
            sealed: row.sealed,
        })
    }
}

/// Joins tenant rows with their tags, keeping the rows' order; tags end up sorted bytewise
/// (whatever the database's collation).
fn assemble(rows: Vec<TenantRow>, tags: Vec<TagRow>) -> Result<Vec<Tenant>, StoreError> {
    let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
    for TagRow { tenant_id, tag } in tags {
        by_tenant.entry(tenant_id).or_default().push(tag);
    }
    rows.into_iter()
        .map(|row| {
            let mut tags = by_tenant.remove(&row.id).unwrap_or_default();
            tags.sort_unstable();
            let mut tenant = Tenant::try_from(row)?;
            tenant.tags = tags;
            Ok(tenant)
        })
        .collect()
}

/// Which tenants [`load_tenants`] reads.
enum Selection<'a> {
    /// One tenant by id, offboarded or not.
    Id(&'a str),
    /// The active tenant registered as, or resolved to, this (lowercase) Entra reference, or
    /// whose default domain (stored lowercase) it is.
    ActiveEntra(&'a str),
    /// A page of a listing.
    Page(&'a TenantFilter),
}

/// Pushes the WHERE, ORDER BY and LIMIT clauses of `selection` onto [`SELECT_TENANTS`].
fn push_selection<DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, selection: &Selection<'_>)
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    match selection {
        Selection::Id(id) => {
            qb.push(" WHERE t.id = ").push_bind((*id).to_owned());
        }
        Selection::ActiveEntra(entra) => {
            qb.push(" WHERE t.offboarded_at IS NULL AND (t.entra_ref = ")
                .push_bind((*entra).to_owned())
                .push(" OR t.entra_tenant_id = ")
                .push_bind((*entra).to_owned())
                .push(" OR t.default_domain = ")
                .push_bind((*entra).to_owned())
                .push(") ORDER BY t.id LIMIT 1");
        }
        Selection::Page(filter) => {
            push_filter(qb, filter);
            if let Some(after) = &filter.after_id {
                qb.push(" AND t.id > ").push_bind(after.clone());
            }
            qb.push(" ORDER BY t.id LIMIT ").push_bind(i64::from(filter.limit));
        }
    }
}

/// Escapes the LIKE metacharacters of user text for `LIKE ... ESCAPE '\'`.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for ch in text.chars() {
        if matches!(ch, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Pushes the WHERE clause of `filter`, without paging (shared by lists and counts).
fn push_filter<DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, filter: &TenantFilter)
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    qb.push(" WHERE 1 = 1");
    if !filter.include_offboarded && filter.status != Some(TenantStatus::Offboarded) {
        qb.push(" AND t.offboarded_at IS NULL");
    }
    if let Some(status) = filter.status {
        qb.push(" AND t.status = ").push_bind(status.as_str().to_owned());
    }
    if let Some(licence) = filter.licence {
        qb.push(" AND t.licence = ").push_bind(licence.as_str().to_owned());
    }
    if let Some(tag) = &filter.tag {
        qb.push(" AND EXISTS (SELECT 1 FROM tenant_tags g WHERE g.tenant_id = t.id AND g.tag = ")
            .push_bind(tag.clone())
            .push(")");
    }
    if let Some(search) = &filter.search {
        // LOWER on both sides: PostgreSQL's LIKE is case-sensitive. (SQLite's LOWER folds ASCII
        // only, so there non-ASCII capitals match only themselves.)
        let pattern = format!("%{}%", escape_like(&search.to_lowercase()));
        qb.push(" AND (");
        let columns = [
            "t.display_name",
            "t.entra_ref",
            "t.entra_tenant_id",
            "t.default_domain",
            "t.external_refs",
        ];
        for (i, column) in columns.into_iter().enumerate() {
            if i > 0 {
                qb.push(" OR ");
            }
            qb.push("LOWER(")
                .push(column)
                .push(") LIKE ")
                .push_bind(pattern.clone())
                .push(" ESCAPE '\\'");
        }
        qb.push(")");
    }
    if let Some(within) = &filter.within {
        if within.is_empty() {
            qb.push(" AND 1 = 0");
        } else {
            qb.push(" AND t.id IN (");
            let mut ids = qb.separated(", ");
            for id in within {
                ids.push_bind(id.clone());
            }
            qb.push(")");
        }
    }
}

/// The tags of the tenants `ids` (a non-empty batch of at most [`TAG_BATCH`]).
fn tags_query<'a, DB: sqlx::Database>(ids: impl Iterator<Item = &'a str>) -> QueryBuilder<DB>
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    let mut qb = QueryBuilder::new("SELECT tenant_id, tag FROM tenant_tags WHERE tenant_id IN (");
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(id.to_owned());
    }
    qb.push(")");
    qb
}

/// Inserts `tags` (non-empty, deduplicated) for the tenant `id`.
fn insert_tags_query<DB: sqlx::Database>(id: &str, tags: &BTreeSet<String>) -> QueryBuilder<DB>
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    let mut qb = QueryBuilder::new("INSERT INTO tenant_tags (tenant_id, tag) ");
    qb.push_values(tags, |mut row, tag| {
        row.push_bind(id.to_owned()).push_bind(tag.clone());
    });
    qb
}

/// Inserts the credential `c` for the tenant `tenant_id`.
fn insert_credential_query<DB: sqlx::Database>(
    tenant_id: &str,
    c: &NewCredential,
) -> QueryBuilder<DB>
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    let mut qb = QueryBuilder::new(concat!(
        "INSERT INTO tenant_credentials (",
        credential_columns!(),
        ") VALUES ("
    ));
    let mut values = qb.separated(", ");
    values
        .push_bind(c.id.as_str().to_owned())
        .push_bind(tenant_id.to_owned())
        .push_bind(c.kind.clone())
        .push_bind(c.client_id.clone())
        .push_bind(c.thumbprint_s256.clone())
        .push_bind(c.certificate_pem.clone())
        .push_bind(c.sealed.clone())
        .push_bind(c.key_id.clone())
        .push_bind(to_ms(c.created_at));
    qb.push(")");
    qb
}

fn refs_json(refs: &BTreeMap<String, String>) -> Result<String, StoreError> {
    serde_json::to_string(refs).map_err(|e| corrupt_tenant(format!("external_refs: {e}")))
}

impl Store {
    /// Registers a tenant with its tags and credential, in one transaction. The tenant starts
    /// `unverified` with licence `unknown`; `entra_ref` and `entra_tenant_id` are stored
    /// lowercase. [`StoreError::Conflict`] (`"tenant"`) when an active tenant already has the
    /// same Entra reference or Entra tenant id (in either column).
    pub async fn insert_tenant(&self, t: NewTenant) -> Result<Tenant, StoreError> {
        let id = t.id.as_str();
        let entra_ref = t.entra_ref.to_lowercase();
        let entra_tenant_id = t.entra_tenant_id.as_deref().map(str::to_lowercase);
        let tags: BTreeSet<String> = t.tags.iter().cloned().collect();
        let external_refs = refs_json(&t.external_refs)?;
        let created_at = to_ms(t.created_at);
        let mut tenants = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            // The unique indexes catch a clash within one column; this also catches a domain
            // registration whose tenant id is another registration's reference, and vice versa.
            let clash: Option<String> = sqlx::query_scalar(
                "SELECT id FROM tenants WHERE offboarded_at IS NULL
                 AND (entra_ref = $1 OR entra_tenant_id = $1 OR entra_ref = $2 OR entra_tenant_id = $2)
                 LIMIT 1",
            )
            .bind(&entra_ref)
            .bind(&entra_tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
            if clash.is_some() {
                return Err(StoreError::Conflict { what: "tenant" });
            }
            sqlx::query(
                "INSERT INTO tenants (id, entra_ref, entra_tenant_id, display_name, external_refs,
                     status, licence, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'unverified', 'unknown', $6, $6)",
            )
            .bind(id)
            .bind(&entra_ref)
            .bind(&entra_tenant_id)
            .bind(&t.display_name)
            .bind(&external_refs)
            .bind(created_at)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::on_unique("tenant"))?;
            if !tags.is_empty() {
                insert_tags_query(id, &tags).build().execute(&mut *tx).await?;
            }
            insert_credential_query(id, &t.credential)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(StoreError::on_unique("credential"))?;
            let tenants = load_tenants!(&mut *tx, &Selection::Id(id));
            tx.commit().await?;
            tenants
        });
        tenants.pop().ok_or_else(|| corrupt_tenant(format!("{id} not found after insert")))
    }

    /// Any tenant by id, offboarded included, with its tags and credential summary (`None`
    /// once offboarded).
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        let mut tenants = with_reader!(self, pool => {
            let mut conn = pool.acquire().await?;
            load_tenants!(&mut *conn, &Selection::Id(id.as_str()))
        });
        Ok(tenants.pop())
    }

    /// The active tenant whose Entra reference or Entra tenant id is `entra` (compared
    /// lowercase).
    pub async fn find_active_tenant(&self, entra: &str) -> Result<Option<Tenant>, StoreError> {
        let entra = entra.to_lowercase();
        let mut tenants = with_reader!(self, pool => {
            let mut conn = pool.acquire().await?;
            load_tenants!(&mut *conn, &Selection::ActiveEntra(&entra))
        });
        Ok(tenants.pop())
    }

    /// A page of the tenants matching `f`, by id ascending (creation order): those after
    /// `f.after_id`, at most `f.limit`. Offboarded tenants are left out unless
    /// `f.include_offboarded` is set or `f.status` is `Offboarded`.
    pub async fn list_tenants(&self, f: &TenantFilter) -> Result<Vec<Tenant>, StoreError> {
        Ok(with_reader!(self, pool => {
            let mut conn = pool.acquire().await?;
            load_tenants!(&mut *conn, &Selection::Page(f))
        }))
    }

    /// How many tenants match `f`, ignoring `after_id` and `limit`.
    pub async fn count_tenants(&self, f: &TenantFilter) -> Result<u64, StoreError> {
        let n: i64 = with_reader!(self, pool => {
            let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM tenants t");
            push_filter(&mut qb, f);
            qb.build_query_scalar().fetch_one(pool).await?
        });
        u64::try_from(n).map_err(|e| corrupt_tenant(format!("count: {e}")))
    }

    /// Applies the `Some` fields of `p` to an active tenant, in one transaction; tags are
    /// replaced wholesale. `None` when no active tenant has that id.
    pub async fn update_tenant(
        &self,
        id: &TenantId,
        p: TenantPatch,
    ) -> Result<Option<Tenant>, StoreError> {
        let id = id.as_str();
        let external_refs = p.external_refs.as_ref().map(refs_json).transpose()?;
        let tags: Option<BTreeSet<String>> = p.tags.map(|tags| tags.into_iter().collect());
        let mut tenants = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE tenants SET display_name = COALESCE($1, display_name),
                     external_refs = COALESCE($2, external_refs), updated_at = $3
                 WHERE id = $4 AND offboarded_at IS NULL",
            )
            .bind(&p.display_name)
            .bind(&external_refs)
            .bind(to_ms(p.updated_at))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(None);
            }
            if let Some(tags) = &tags {
                sqlx::query("DELETE FROM tenant_tags WHERE tenant_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if !tags.is_empty() {
                    insert_tags_query(id, tags).build().execute(&mut *tx).await?;
                }
            }
            let tenants = load_tenants!(&mut *tx, &Selection::Id(id));
            tx.commit().await?;
            tenants
        });
        Ok(tenants.pop())
    }

    /// Stores the outcome of a verification on an active tenant and sets its `updated_at` to
    /// `v.verified_at`. `Ok(false)` when no active tenant has that id.
    /// [`StoreError::Conflict`] (`"tenant"`) when `v.entra_tenant_id` is another active
    /// tenant's Entra tenant id or reference.
    pub async fn record_verification(
        &self,
        id: &TenantId,
        v: VerificationRecord,
    ) -> Result<bool, StoreError> {
        let id = id.as_str();
        let entra_tenant_id = v.entra_tenant_id.as_deref().map(str::to_lowercase);
        let readiness = v.readiness.to_string();
        let verified_at = to_ms(v.verified_at);
        let updated = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            if let Some(tid) = &entra_tenant_id {
                let clash: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM tenants WHERE offboarded_at IS NULL AND id <> $1
                     AND (entra_tenant_id = $2 OR entra_ref = $2) LIMIT 1",
                )
                .bind(id)
                .bind(tid)
                .fetch_optional(&mut *tx)
                .await?;
                if clash.is_some() {
                    return Err(StoreError::Conflict { what: "tenant" });
                }
            }
            let updated = sqlx::query(
                "UPDATE tenants SET status = $1, status_reason = $2, licence = $3,
                     entra_tenant_id = COALESCE($4, entra_tenant_id),
                     default_domain = COALESCE($5, default_domain),
                     readiness = $6, verified_at = $7, updated_at = $7
                 WHERE id = $8 AND offboarded_at IS NULL",
            )
            .bind(v.status.as_str())
            .bind(&v.status_reason)
            .bind(v.licence.as_str())
            .bind(&entra_tenant_id)
            .bind(&v.default_domain)
            .bind(&readiness)
            .bind(verified_at)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::on_unique("tenant"))?
            .rows_affected();
            tx.commit().await?;
            updated
        });
        Ok(updated == 1)
    }

    /// Offboards an active tenant in one transaction: deletes its credentials (portal included), sets its status
    /// to `offboarded`, `offboarded_at` and `updated_at` to `at`, and clears the status reason.
    /// The row, tags and readiness report stay as history. Returns the offboarded tenant;
    /// `None` when no active tenant has that id.
    pub async fn offboard_tenant(
        &self,
        id: &TenantId,
        at: DateTime<Utc>,
    ) -> Result<Option<Tenant>, StoreError> {
        let id = id.as_str();
        let mut tenants = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE tenants SET status = 'offboarded', status_reason = NULL,
                     offboarded_at = $1, updated_at = $1
                 WHERE id = $2 AND offboarded_at IS NULL",
            )
            .bind(to_ms(at))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(None);
            }
            for sql in [
                "DELETE FROM tenant_credentials WHERE tenant_id = $1",
                "DELETE FROM tenant_portal_credentials WHERE tenant_id = $1",
            ] {
                sqlx::query(sql).bind(id).execute(&mut *tx).await?;
            }
            let tenants = load_tenants!(&mut *tx, &Selection::Id(id));
            tx.commit().await?;
            tenants
        });
        Ok(tenants.pop())
    }

    /// Replaces an active tenant's credential with `c` in one transaction, and sets the
    /// tenant's `updated_at` to `c.created_at`. `Ok(false)` when no active tenant has that id.
    pub async fn replace_credential(
        &self,
        id: &TenantId,
        c: NewCredential,
    ) -> Result<bool, StoreError> {
        let id = id.as_str();
        let replaced = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE tenants SET updated_at = $1 WHERE id = $2 AND offboarded_at IS NULL",
            )
            .bind(to_ms(c.created_at))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(false);
            }
            sqlx::query("DELETE FROM tenant_credentials WHERE tenant_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            insert_credential_query(id, &c)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(StoreError::on_unique("credential"))?;
            tx.commit().await?;
            true
        });
        Ok(replaced)
    }

    /// The tenant's credential, sealed value included.
    pub async fn tenant_credential(
        &self,
        id: &TenantId,
    ) -> Result<Option<StoredCredential>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            credential_columns!(),
            " FROM tenant_credentials WHERE tenant_id = $1"
        );
        let row: Option<CredentialRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(id.as_str()).fetch_optional(pool).await?
        });
        row.map(StoredCredential::try_from).transpose()
    }

    /// Every stored credential, by id (for master-key rotation).
    pub async fn all_credentials(&self) -> Result<Vec<StoredCredential>, StoreError> {
        const SQL: &str =
            concat!("SELECT ", credential_columns!(), " FROM tenant_credentials ORDER BY id");
        let rows: Vec<CredentialRow> =
            with_reader!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await?);
        rows.into_iter().map(StoredCredential::try_from).collect()
    }

    /// Rewraps credentials in one transaction: each `(id, old sealed, new sealed, new key id)`
    /// is applied only if the credential still holds `old sealed`, so a credential replaced
    /// meanwhile is skipped rather than overwritten. Returns how many were rewrapped.
    pub async fn rewrap_credentials(
        &self,
        changes: &[(CredentialId, String, String, String)],
    ) -> Result<u64, StoreError> {
        if changes.is_empty() {
            return Ok(0);
        }
        let rewrapped = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut rewrapped = 0;
            for (id, old_sealed, new_sealed, new_key_id) in changes {
                rewrapped += sqlx::query(
                    "UPDATE tenant_credentials SET sealed = $1, key_id = $2
                     WHERE id = $3 AND sealed = $4",
                )
                .bind(new_sealed)
                .bind(new_key_id)
                .bind(id.as_str())
                .bind(old_sealed)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            rewrapped
        });
        Ok(rewrapped)
    }

    /// Ids of the active tenants never verified or last verified before `before`: never
    /// verified first, then the oldest verification, at most `limit`.
    pub async fn tenants_due_for_verification(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        let ids: Vec<String> = with_reader!(self, pool => {
            sqlx::query_scalar(
                "SELECT id FROM tenants
                 WHERE offboarded_at IS NULL AND (verified_at IS NULL OR verified_at < $1)
                 ORDER BY verified_at NULLS FIRST, id LIMIT $2",
            )
            .bind(to_ms(before))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        ids.into_iter()
            .map(|id| id.parse().map_err(|e| corrupt_tenant(format!("id: {e}"))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_levels_round_trip_through_text() {
        for status in TenantStatus::ALL {
            assert_eq!(status.as_str().parse::<TenantStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        for level in LicenceLevel::ALL {
            assert_eq!(level.as_str().parse::<LicenceLevel>(), Ok(level));
            assert_eq!(level.to_string(), level.as_str());
        }
        let err = "Ready".parse::<TenantStatus>().unwrap_err();
        assert!(err.contains("not_ready") && err.contains("offboarded"), "{err}");
        let err = "p3".parse::<LicenceLevel>().unwrap_err();
        assert!(err.contains("cloud_only"), "{err}");
    }

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(escape_like(r"50%_a\b"), r"50\%\_a\\b");
        assert_eq!(escape_like("plain"), "plain");
    }

    #[test]
    fn debug_output_never_shows_the_sealed_value() {
        let c = NewCredential {
            id: CredentialId::new(),
            kind: "client_secret".into(),
            client_id: "app".into(),
            thumbprint_s256: None,
            certificate_pem: None,
            sealed: "v1:k1:SECRET".into(),
            key_id: "k1".into(),
            created_at: Utc::now(),
        };
        assert!(!format!("{c:?}").contains("SECRET"));
        let stored = StoredCredential {
            summary: CredentialSummary {
                id: c.id.clone(),
                kind: c.kind.clone(),
                client_id: c.client_id.clone(),
                thumbprint_s256: None,
                key_id: c.key_id.clone(),
                created_at: c.created_at,
            },
            tenant_id: TenantId::new(),
            certificate_pem: None,
            sealed: c.sealed.clone(),
        };
        assert!(!format!("{stored:?}").contains("SECRET"));
    }
}
