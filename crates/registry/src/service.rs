//! The registry service: onboarding, updates, offboarding, credential rotation and verification,
//! on top of the store, the vault and the Graph client.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use sspr_domain::{Clock, CredentialId, TenantId};
use sspr_graph::{
    Credential, DEFAULT_PORTAL_URL, GraphClient, PortalClient, PortalConfig, SizeClass,
    Tenant as GraphTenant,
};
use sspr_store::{
    NewCredential, NewTenant, Store, StoreError, StoredCredential, Tenant, TenantFilter,
    TenantPatch, TenantStatus, VerificationRecord,
};
use tokio::sync::Semaphore;

use crate::{
    onboarding::{
        CredentialInput, EntraTenantRef, FieldProblem, ValidTenant, certificate_thumbprint_s256,
        check_display_name, check_external_refs, check_tags, failure_code,
    },
    report::{Facts, ReadinessReport},
    vault::{Aad, Vault, VaultError},
};

/// Tuning of the registry.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Most tenants verified at once (the Graph client's limits apply within each).
    pub verify_concurrency: usize,
    /// A tenant is verified again when its last check is older than this.
    pub reverify_after: Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self { verify_concurrency: 16, reverify_after: Duration::from_secs(24 * 3600) }
    }
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The input failed validation; one problem per field.
    #[error("the tenant input is not valid")]
    Invalid(Vec<FieldProblem>),
    /// No active tenant has that id.
    #[error("tenant not found")]
    NotFound,
    /// The Entra tenant is already registered.
    #[error("the Entra tenant is already registered as {existing}")]
    AlreadyRegistered {
        /// The tenant that has it.
        existing: String,
    },
    /// New credentials were refused by the identity platform; the old ones are kept.
    #[error("the identity platform refused the new credentials ({code}): {detail}")]
    CredentialsRejected {
        /// Stable code (`credentials_invalid`, `consent_missing`, ...).
        code: &'static str,
        /// The identity platform's answer.
        detail: String,
    },
    /// A stored secret cannot be opened (wrong or missing master key).
    #[error("the tenant's stored credentials cannot be decrypted")]
    Vault(#[source] VaultError),
    /// The database failed.
    #[error("database error")]
    Store(#[from] StoreError),
}

/// The registry. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    pub(crate) store: Store,
    pub(crate) vault: Arc<Vault>,
    graph: GraphClient,
    pub(crate) clock: Arc<dyn Clock>,
    settings: RegistrySettings,
    verify_slots: Arc<Semaphore>,
    pub(crate) portal: PortalClient,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("vault", &self.vault)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What [`Registry::upsert`] did with one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// A new tenant was registered.
    Created,
    /// An existing tenant's details or credentials changed.
    Updated,
    /// The tenant was registered with exactly these details and credentials.
    Unchanged,
}

/// Changes to a tenant's details (absent fields stay as they are).
#[derive(Debug, Clone, Default)]
pub struct TenantUpdate {
    /// New display name.
    pub display_name: Option<String>,
    /// New tags (replace the old ones).
    pub tags: Option<Vec<String>>,
    /// New external references (replace the old ones).
    pub external_refs: Option<BTreeMap<String, String>>,
}

/// What re-sealing every credential under the current master key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapReport {
    /// Credentials stored.
    pub total: usize,
    /// Credentials re-sealed now.
    pub rewrapped: u64,
}

fn secret_kind(c: &CredentialInput) -> (&'static str, &'static str) {
    match c {
        CredentialInput::ClientSecret { .. } => ("client_secret", "client_secret"),
        CredentialInput::Certificate { .. } => ("certificate", "private_key"),
        CredentialInput::DelegatedRefreshToken { .. } => {
            ("delegated_refresh_token", "refresh_token")
        }
    }
}

fn aad_for(tenant: &TenantId, stored_kind: &str, cred: &CredentialId) -> Aad {
    let secret = match stored_kind {
        "certificate" => "private_key",
        "delegated_refresh_token" => "refresh_token",
        _ => "client_secret",
    };
    Aad { tenant_id: tenant.to_string(), kind: secret.into(), row_id: cred.to_string() }
}

impl Registry {
    /// A registry over `store`, sealing with `vault` and checking tenants through `graph`.
    pub fn new(
        store: Store,
        vault: Arc<Vault>,
        graph: GraphClient,
        clock: Arc<dyn Clock>,
        settings: RegistrySettings,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(settings.verify_concurrency.max(1)));
        let portal_cfg = PortalConfig::new(&graph.config().login_url, DEFAULT_PORTAL_URL);
        let portal = PortalClient::new(portal_cfg).unwrap_or_else(|_| {
            // Building an HTTP client fails only without a TLS backend, which the Graph client
            // already needed; fall back to its defaults rather than refuse to start.
            PortalClient::new(PortalConfig::default()).expect("an HTTP client")
        });
        Self { store, vault, graph, clock, settings, verify_slots: slots, portal }
    }

    /// The same registry reaching the portal's API (the unsupported `portal` scope mode)
    /// through `portal`.
    pub fn with_portal(mut self, portal: PortalClient) -> Self {
        self.portal = portal;
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The Graph client (one per process, so that its rate limits cover every caller).
    pub fn graph(&self) -> &GraphClient {
        &self.graph
    }

    /// The settings.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// Seals credentials for a new row of `tenant`.
    fn seal(
        &self,
        tenant: &TenantId,
        input: &CredentialInput,
    ) -> Result<NewCredential, RegistryError> {
        let id = CredentialId::new();
        let (kind, _) = secret_kind(input);
        let aad = aad_for(tenant, kind, &id);
        let (client_id, secret, thumbprint, certificate) = match input {
            CredentialInput::ClientSecret { client_id, client_secret } => {
                (client_id, client_secret.expose_secret().as_bytes(), None, None)
            }
            CredentialInput::Certificate { client_id, certificate_pem, private_key_pem } => (
                client_id,
                private_key_pem.expose_secret().as_bytes(),
                certificate_thumbprint_s256(certificate_pem).ok(),
                crate::onboarding::certificate_only(certificate_pem).ok(),
            ),
            CredentialInput::DelegatedRefreshToken { client_id, refresh_token } => {
                (client_id, refresh_token.expose_secret().as_bytes(), None, None)
            }
        };
        let sealed = self.vault.seal(secret, &aad).map_err(RegistryError::Vault)?;
        Ok(NewCredential {
            id,
            kind: kind.to_owned(),
            client_id: client_id.trim().to_ascii_lowercase(),
            thumbprint_s256: thumbprint,
            certificate_pem: certificate,
            sealed,
            key_id: self.vault.current_key_id().to_owned(),
            created_at: self.clock.now(),
        })
    }

    /// Opens a stored credential into what the Graph client signs in with.
    fn open(&self, stored: &StoredCredential) -> Result<Credential, RegistryError> {
        let aad = aad_for(&stored.tenant_id, &stored.summary.kind, &stored.summary.id);
        let secret = self.vault.open(&stored.sealed, &aad).map_err(RegistryError::Vault)?;
        let text = String::from_utf8(secret.expose_secret().clone())
            .map_err(|_| RegistryError::Vault(VaultError::Malformed))?;
        let client_id = stored.summary.client_id.clone();
        Ok(match stored.summary.kind.as_str() {
            "certificate" => Credential::Certificate {
                client_id,
                thumbprint_s256: stored.summary.thumbprint_s256.clone().unwrap_or_default(),
                private_key_pem: SecretString::from(text),
            },
            _ => Credential::ClientSecret { client_id, secret: SecretString::from(text) },
        })
    }

    /// Whether the stored credential holds exactly `input`.
    fn same_credential(&self, stored: &StoredCredential, input: &CredentialInput) -> bool {
        let (kind, _) = secret_kind(input);
        let (client_id, secret) = match input {
            CredentialInput::ClientSecret { client_id, client_secret } => {
                (client_id, client_secret)
            }
            CredentialInput::Certificate { client_id, private_key_pem, .. } => {
                (client_id, private_key_pem)
            }
            CredentialInput::DelegatedRefreshToken { client_id, refresh_token } => {
                (client_id, refresh_token)
            }
        };
        let thumbprint_same = match input {
            CredentialInput::Certificate { certificate_pem, .. } => {
                certificate_thumbprint_s256(certificate_pem).ok() == stored.summary.thumbprint_s256
            }
            _ => true,
        };
        let aad = aad_for(&stored.tenant_id, &stored.summary.kind, &stored.summary.id);
        stored.summary.kind == kind
            && stored.summary.client_id.eq_ignore_ascii_case(client_id.trim())
            && thumbprint_same
            && self
                .vault
                .open(&stored.sealed, &aad)
                .is_ok_and(|s| s.expose_secret().as_slice() == secret.expose_secret().as_bytes())
    }

    /// Registers a validated tenant.
    pub async fn onboard(&self, valid: ValidTenant) -> Result<Tenant, RegistryError> {
        if let Some(existing) = self.store.find_active_tenant(valid.entra.as_str()).await? {
            return Err(RegistryError::AlreadyRegistered { existing: existing.id.to_string() });
        }
        let id = TenantId::new();
        let credential = self.seal(&id, &valid.credentials)?;
        let entra_tenant_id = match &valid.entra {
            EntraTenantRef::Id(guid) => Some(guid.clone()),
            EntraTenantRef::Domain(_) => None,
        };
        let tenant = NewTenant {
            id,
            entra_ref: valid.entra.as_str().to_owned(),
            entra_tenant_id,
            display_name: valid.display_name,
            tags: valid.tags,
            external_refs: valid.external_refs,
            created_at: self.clock.now(),
            credential,
        };
        match self.store.insert_tenant(tenant).await {
            Ok(t) => Ok(t),
            // Registered concurrently between the lookup and the insert.
            Err(StoreError::Conflict { .. }) => {
                let existing = self.store.find_active_tenant(valid.entra.as_str()).await?;
                Err(RegistryError::AlreadyRegistered {
                    existing: existing
                        .map_or_else(|| "another tenant".into(), |t| t.id.to_string()),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Registers the tenant, or brings an already registered one to exactly these details and
    /// credentials. Used by import, which must be idempotent.
    pub async fn upsert(&self, valid: ValidTenant) -> Result<(Tenant, Upserted), RegistryError> {
        let Some(existing) = self.store.find_active_tenant(valid.entra.as_str()).await? else {
            return match self.onboard(valid.clone()).await {
                Ok(t) => Ok((t, Upserted::Created)),
                // Lost a race with a concurrent import of the same row: update instead.
                Err(RegistryError::AlreadyRegistered { .. }) => Box::pin(self.upsert(valid)).await,
                Err(e) => Err(e),
            };
        };
        let mut changed = false;
        let details_differ = existing.display_name != valid.display_name
            || existing.tags != valid.tags
            || existing.external_refs != valid.external_refs;
        let mut tenant = existing.clone();
        if details_differ {
            let patch = TenantPatch {
                display_name: Some(valid.display_name.clone()),
                tags: Some(valid.tags.clone()),
                external_refs: Some(valid.external_refs.clone()),
                updated_at: self.clock.now(),
            };
            tenant = self
                .store
                .update_tenant(&existing.id, patch)
                .await?
                .ok_or(RegistryError::NotFound)?;
            changed = true;
        }
        let stored = self.store.tenant_credential(&existing.id).await?;
        if !stored.as_ref().is_some_and(|s| self.same_credential(s, &valid.credentials)) {
            let credential = self.seal(&existing.id, &valid.credentials)?;
            if !self.store.replace_credential(&existing.id, credential).await? {
                return Err(RegistryError::NotFound);
            }
            tenant = self.store.get_tenant(&existing.id).await?.ok_or(RegistryError::NotFound)?;
            changed = true;
        }
        Ok((tenant, if changed { Upserted::Updated } else { Upserted::Unchanged }))
    }

    /// An active tenant by id.
    pub async fn get(&self, id: &TenantId) -> Result<Tenant, RegistryError> {
        self.store.get_tenant(id).await?.ok_or(RegistryError::NotFound)
    }

    /// Changes a tenant's details.
    pub async fn update(
        &self,
        id: &TenantId,
        update: TenantUpdate,
    ) -> Result<Tenant, RegistryError> {
        let mut problems = Vec::new();
        let patch = TenantPatch {
            display_name: update
                .display_name
                .map(|n| check_display_name("display_name", &n, &mut problems)),
            tags: update.tags.map(|t| check_tags("tags", &t, &mut problems)),
            external_refs: update
                .external_refs
                .map(|r| check_external_refs("external_refs", &r, &mut problems)),
            updated_at: self.clock.now(),
        };
        if !problems.is_empty() {
            return Err(RegistryError::Invalid(problems));
        }
        self.store.update_tenant(id, patch).await?.ok_or(RegistryError::NotFound)
    }

    /// Offboards a tenant: its credentials are deleted, its row and history kept. Offboarding
    /// an offboarded tenant returns it unchanged.
    pub async fn offboard(&self, id: &TenantId) -> Result<Tenant, RegistryError> {
        match self.store.offboard_tenant(id, self.clock.now()).await? {
            Some(t) => Ok(t),
            None => match self.store.get_tenant(id).await? {
                Some(t) if t.status == TenantStatus::Offboarded => Ok(t),
                _ => Err(RegistryError::NotFound),
            },
        }
    }

    /// Replaces a tenant's credentials. With `check`, the new credentials must first obtain a
    /// token; if they do not, the old ones stay and nothing changes. Work in flight keeps the
    /// credentials it started with, so rotation needs no downtime.
    pub async fn rotate_credentials(
        &self,
        id: &TenantId,
        input: CredentialInput,
        check: bool,
    ) -> Result<Tenant, RegistryError> {
        let mut problems = input.problems("credentials");
        if matches!(input, CredentialInput::DelegatedRefreshToken { .. }) {
            problems.push(FieldProblem {
                field: "credentials.kind".into(),
                code: "not_app_only",
                message: "Graph calls need client_secret or certificate credentials".into(),
            });
        }
        if !problems.is_empty() {
            return Err(RegistryError::Invalid(problems));
        }
        let tenant = self.get(id).await?;
        if tenant.status == TenantStatus::Offboarded {
            return Err(RegistryError::NotFound);
        }
        let credential = self.seal(id, &input)?;
        if check {
            let stored = StoredCredential {
                summary: sspr_store::CredentialSummary {
                    id: credential.id.clone(),
                    kind: credential.kind.clone(),
                    client_id: credential.client_id.clone(),
                    thumbprint_s256: credential.thumbprint_s256.clone(),
                    key_id: credential.key_id.clone(),
                    created_at: credential.created_at,
                },
                tenant_id: id.clone(),
                certificate_pem: credential.certificate_pem.clone(),
                sealed: credential.sealed.clone(),
            };
            let graph_tenant = GraphTenant {
                id: tenant.entra_tenant_id.clone().unwrap_or_else(|| tenant.entra_ref.clone()),
                credential: Arc::new(self.open(&stored)?),
                size: SizeClass::Small,
            };
            if let Err(e) = self.graph.probe_token(&graph_tenant).await {
                return Err(RegistryError::CredentialsRejected {
                    code: failure_code(&e),
                    detail: e.reason(),
                });
            }
        }
        if !self.store.replace_credential(id, credential).await? {
            return Err(RegistryError::NotFound);
        }
        self.get(id).await
    }

    /// The Graph identity of an active tenant, with its credentials opened.
    pub async fn graph_tenant(&self, tenant: &Tenant) -> Result<GraphTenant, RegistryError> {
        let stored =
            self.store.tenant_credential(&tenant.id).await?.ok_or(RegistryError::NotFound)?;
        let users = tenant
            .readiness
            .as_ref()
            .and_then(|r| r.pointer("/users/total"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        Ok(GraphTenant {
            id: tenant.entra_tenant_id.clone().unwrap_or_else(|| tenant.entra_ref.clone()),
            credential: Arc::new(self.open(&stored)?),
            size: SizeClass::from_users(users),
        })
    }

    /// Checks a tenant against Graph, records the readiness report and returns it with the
    /// updated tenant. At most `verify_concurrency` checks run at once across the process.
    pub async fn verify(&self, id: &TenantId) -> Result<(Tenant, ReadinessReport), RegistryError> {
        let _slot = self.verify_slots.acquire().await.map_err(|_| RegistryError::NotFound)?;
        let tenant = self.get(id).await?;
        if tenant.status == TenantStatus::Offboarded {
            return Err(RegistryError::NotFound);
        }
        let graph_tenant = self.graph_tenant(&tenant).await?;
        let facts = self.collect(&graph_tenant).await;
        let (mut report, conclusion) = facts.conclude();
        let mut record = VerificationRecord {
            status: conclusion.status,
            status_reason: conclusion.reason.clone(),
            licence: conclusion.licence,
            entra_tenant_id: report.entra_tenant_id.clone(),
            default_domain: report.default_domain.as_deref().map(str::to_ascii_lowercase),
            readiness: serde_json::to_value(&report).unwrap_or_default(),
            verified_at: report.checked_at,
        };
        let recorded = match self.store.record_verification(id, record.clone()).await {
            Err(StoreError::Conflict { .. }) => {
                // The resolved Entra tenant is registered under another id already.
                let other = match &report.entra_tenant_id {
                    Some(e) => self.store.find_active_tenant(e).await?.map(|t| t.id.to_string()),
                    None => None,
                };
                report.blockers.insert(
                    0,
                    crate::report::Finding {
                        code: "duplicate_tenant".into(),
                        message: format!(
                            "this Entra tenant is already registered as {}; offboard one of them",
                            other.as_deref().unwrap_or("another tenant")
                        ),
                    },
                );
                report.status = TenantStatus::NotReady.as_str().into();
                record.status = TenantStatus::NotReady;
                record.status_reason = Some("duplicate_tenant".into());
                record.entra_tenant_id = None;
                record.readiness = serde_json::to_value(&report).unwrap_or_default();
                self.store.record_verification(id, record).await?
            }
            other => other?,
        };
        if !recorded {
            return Err(RegistryError::NotFound);
        }
        tracing::info!(
            tenant_id = %id,
            status = %report.status,
            reason = conclusion.reason.as_deref().unwrap_or(""),
            "tenant verified"
        );
        Ok((self.get(id).await?, report))
    }

    async fn collect(&self, t: &GraphTenant) -> Facts {
        let checked_at = self.clock.now();
        let token = self.graph.probe_token(t).await;
        if token.is_err() {
            return Facts {
                checked_at,
                token,
                organization: None,
                skus: None,
                methods: None,
                admins_allowed: None,
                users: None,
            };
        }
        let g = &self.graph;
        let (organization, skus, methods, admins, users) = tokio::join!(
            g.organization(t),
            g.subscribed_skus(t),
            g.methods_policy(t),
            g.authorization_policy(t),
            g.users_registered_by_feature(t, sspr_graph::ReportPriority::Normal),
        );
        Facts {
            checked_at,
            token,
            organization: Some(organization),
            skus: Some(skus),
            methods: Some(methods),
            admins_allowed: Some(admins.map(|p| p.allowed_to_use_sspr)),
            users: Some(users),
        }
    }

    /// Verifies the tenants whose last check is older than the re-verify interval (never
    /// checked first), at most `limit`, in parallel within the verification slots. Returns how
    /// many were checked.
    pub async fn verify_due(&self, limit: u32) -> Result<usize, RegistryError> {
        let age = chrono::TimeDelta::from_std(self.settings.reverify_after)
            .unwrap_or(chrono::TimeDelta::days(1));
        let due = self.store.tenants_due_for_verification(self.clock.now() - age, limit).await?;
        let count = due.len();
        let mut tasks = tokio::task::JoinSet::new();
        for id in due {
            let registry = self.clone();
            tasks.spawn(async move {
                if let Err(e) = registry.verify(&id).await {
                    tracing::warn!(tenant_id = %id, error = %e, "background verification failed");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(count)
    }

    /// Every active tenant within `within` (every active tenant when `None`), oldest check
    /// first (never checked first, then by id): all of them, read from the store `page_size`
    /// at a time, so that a fleet larger than one page is covered whole. Only ids and check
    /// times are kept (tens of bytes per tenant).
    pub async fn tenants_to_verify(
        &self,
        within: Option<&BTreeSet<String>>,
        page_size: u32,
    ) -> Result<Vec<TenantId>, RegistryError> {
        let page_size = page_size.max(1);
        let mut all = Vec::new();
        let mut after_id = None;
        loop {
            let filter = TenantFilter {
                within: within.cloned(),
                after_id: after_id.take(),
                limit: page_size,
                ..TenantFilter::default()
            };
            let page = self.store.list_tenants(&filter).await?;
            let last_page = page.len() < page_size as usize;
            after_id = page.last().map(|t| t.id.to_string());
            all.extend(page.into_iter().map(|t| (t.verified_at, t.id)));
            if last_page || after_id.is_none() {
                break;
            }
        }
        // Stable: equal times stay in id order.
        all.sort_by_key(|(verified_at, _)| *verified_at);
        Ok(all.into_iter().map(|(_, id)| id).collect())
    }

    /// Verifies `ids` in parallel (at most `verify_concurrency` at once, each within the Graph
    /// limits) and returns each tenant's outcome in the order given.
    pub async fn verify_many(
        &self,
        ids: Vec<TenantId>,
    ) -> Vec<(TenantId, Result<ReadinessReport, RegistryError>)> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, id) in ids.into_iter().enumerate() {
            let registry = self.clone();
            tasks.spawn(async move {
                let result = registry.verify(&id).await.map(|(_, report)| report);
                (i, id, result)
            });
        }
        let mut results = Vec::new();
        while let Some(done) = tasks.join_next().await {
            // A panicking check loses only its own answer.
            if let Ok(done) = done {
                results.push(done);
            }
        }
        results.sort_by_key(|(i, _, _)| *i);
        results.into_iter().map(|(_, id, r)| (id, r)).collect()
    }

    /// Re-seals every stored credential that names an older master key with the current one.
    /// Rows changed concurrently are left for the next run.
    pub async fn rewrap_all(store: &Store, vault: &Vault) -> Result<RewrapReport, RegistryError> {
        let all = store.all_credentials().await?;
        let mut changes = Vec::new();
        for c in &all {
            if vault.needs_rewrap(&c.sealed) {
                let aad = aad_for(&c.tenant_id, &c.summary.kind, &c.summary.id);
                let sealed = vault.rewrap(&c.sealed, &aad).map_err(RegistryError::Vault)?;
                changes.push((
                    c.summary.id.clone(),
                    c.sealed.clone(),
                    sealed,
                    vault.current_key_id().to_owned(),
                ));
            }
        }
        let rewrapped =
            if changes.is_empty() { 0 } else { store.rewrap_credentials(&changes).await? };
        let (portal_total, portal_rewrapped) = Self::rewrap_portal(store, vault).await?;
        Ok(RewrapReport {
            total: all.len() + portal_total,
            rewrapped: rewrapped + portal_rewrapped,
        })
    }
}
