//! The Graph calls sspr-fleet makes, typed. Each names its endpoint template for metrics.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    GraphClient, GraphConfig, GraphError, MemberAdd, PagingProblem, ReportPriority, Tenant,
    client::{Call, Reply},
    types::{
        AuthenticationMethodsPolicy, AuthorizationPolicy, Collection, DirectoryAudit, Group,
        MAX_BIND_MEMBERS, MethodConfigPatch, MethodConfiguration, MethodId, NewSecurityGroup,
        Organization, ReportPopulation, SubscribedSku, User, UserRegistrationDetails,
        UserRegistrationFeatureSummary, members_bind_body,
    },
};

/// What adding a member did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddMember {
    /// The user was added.
    Added,
    /// The user already was a member (Graph's 400 for an existing reference).
    AlreadyMember,
}

/// The answer to one item of a `$batch`.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    /// The item's id.
    pub id: String,
    /// Its final status (after per-item retries of 429 and 503).
    pub status: u16,
    /// Its body.
    pub body: Option<Value>,
}

impl BatchOutcome {
    /// Whether the item succeeded.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Graph's error code of a failed item.
    pub fn error_code(&self) -> Option<&str> {
        self.body.as_ref()?.get("error")?.get("code")?.as_str()
    }
}

/// One item of a `$batch`.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// Unique id within the batch.
    pub id: String,
    /// HTTP method.
    pub method: Method,
    /// URL relative to `/v1.0`, e.g. `/groups/{id}/members/$ref`.
    pub url: String,
    /// JSON body (sent with `Content-Type: application/json`).
    pub body: Option<Value>,
    /// Ids of items that must succeed first; if one fails, Graph answers this one 424.
    pub depends_on: Vec<String>,
}

impl BatchItem {
    /// A GET item.
    pub fn get(id: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            method: Method::GET,
            url: url.into(),
            body: None,
            depends_on: Vec::new(),
        }
    }

    /// An item with a method and a JSON body.
    pub fn with_body(
        id: impl Into<String>,
        method: Method,
        url: impl Into<String>,
        body: Value,
    ) -> Self {
        Self { id: id.into(), method, url: url.into(), body: Some(body), depends_on: Vec::new() }
    }

    /// Makes this item depend on others.
    pub fn depends_on(mut self, ids: &[&str]) -> Self {
        self.depends_on = ids.iter().map(|s| (*s).to_owned()).collect();
        self
    }
}

const ALREADY_MEMBER: &str = "One or more added object references already exist";

fn decode<T: DeserializeOwned>(reply: Reply, endpoint: &'static str) -> Result<T, GraphError> {
    let body =
        reply.body.ok_or_else(|| GraphError::Decode { endpoint, detail: "empty body".into() })?;
    serde_json::from_value(body).map_err(|e| GraphError::Decode { endpoint, detail: e.to_string() })
}

/// The paging links of one listing: at most `max_pages` pages, no link followed twice (a
/// listing going in circles), and only links under the configured Graph base URL (the bearer
/// token goes wherever the link points). Each refusal is a [`GraphError::Paging`].
pub(crate) struct Pager {
    endpoint: &'static str,
    graph_url: String,
    max_pages: usize,
    pages: usize,
    /// SHA-256 of every link followed: 32 bytes each, however long the links.
    seen: HashSet<[u8; 32]>,
}

impl Pager {
    pub(crate) fn new(cfg: &GraphConfig, endpoint: &'static str) -> Self {
        Self {
            endpoint,
            graph_url: cfg.graph_url.clone(),
            max_pages: cfg.max_pages.max(1),
            pages: 0,
            seen: HashSet::new(),
        }
    }

    /// Counts the page just read and checks its `@odata.nextLink`: the link to follow next,
    /// `None` at the end of the listing.
    pub(crate) fn follow(&mut self, link: Option<String>) -> Result<Option<String>, GraphError> {
        self.pages += 1;
        let Some(link) = link else { return Ok(None) };
        let refuse = |problem| GraphError::Paging { endpoint: self.endpoint, problem };
        if self.pages >= self.max_pages {
            return Err(refuse(PagingProblem::TooManyPages(self.max_pages)));
        }
        if !within_base(&self.graph_url, &link) {
            return Err(refuse(PagingProblem::ForeignHost));
        }
        if !self.seen.insert(Sha256::digest(link.as_bytes()).into()) {
            return Err(refuse(PagingProblem::Loop));
        }
        Ok(Some(link))
    }
}

/// Whether the absolute URL `link` is under `base` (the Graph base URL): same scheme, host and
/// port, and a path below the base's path. Compared parsed, so user information, a different
/// port or a look-alike prefix (`https://graph.microsoft.com.evil.example/`) never passes.
pub(crate) fn within_base(base: &str, link: &str) -> bool {
    let (Ok(base), Ok(link)) = (reqwest::Url::parse(base), reqwest::Url::parse(link)) else {
        return false;
    };
    let base_path = base.path().trim_end_matches('/');
    link.scheme() == base.scheme()
        && link.host() == base.host()
        && link.port_or_known_default() == base.port_or_known_default()
        && link.username().is_empty()
        && link.password().is_none()
        && link.path().strip_prefix(base_path).is_some_and(|rest| rest.starts_with('/'))
}

/// Percent-encodes an OData query value.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An OData string literal: single quotes, embedded quotes doubled.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl GraphClient {
    async fn get<T: DeserializeOwned>(
        &self,
        tenant: &Tenant,
        path: String,
        endpoint: &'static str,
    ) -> Result<T, GraphError> {
        decode(self.send(tenant, Call::new(Method::GET, path, endpoint)).await?, endpoint)
    }

    /// Reads every page of a collection, handing each page to `page` as it arrives, so memory
    /// stays bounded by one page whatever the size of the collection.
    pub(crate) async fn for_each_page<T: DeserializeOwned>(
        &self,
        tenant: &Tenant,
        path: String,
        endpoint: &'static str,
        page: impl FnMut(Vec<T>),
    ) -> Result<(), GraphError> {
        self.pages(tenant, path, endpoint, None, page).await
    }

    /// One read of the reporting APIs, paced by the report limiter at `priority`.
    async fn get_report<T: DeserializeOwned>(
        &self,
        tenant: &Tenant,
        path: String,
        endpoint: &'static str,
        priority: ReportPriority,
    ) -> Result<T, GraphError> {
        let call = Call::new(Method::GET, path, endpoint).report(priority);
        decode(self.send(tenant, call).await?, endpoint)
    }

    /// Reads every page of a collection; each page is a report read of `report`'s priority
    /// when given.
    async fn pages<T: DeserializeOwned>(
        &self,
        tenant: &Tenant,
        path: String,
        endpoint: &'static str,
        report: Option<ReportPriority>,
        mut page: impl FnMut(Vec<T>),
    ) -> Result<(), GraphError> {
        let mut pager = Pager::new(self.config(), endpoint);
        let mut next = Some(path);
        while let Some(path) = next.take() {
            let collection: Collection<T> = match report {
                Some(priority) => self.get_report(tenant, path, endpoint, priority).await?,
                None => self.get(tenant, path, endpoint).await?,
            };
            next = pager.follow(collection.next_link)?;
            page(collection.value);
        }
        Ok(())
    }

    /// Reads every page of a collection into one list.
    async fn get_all<T: DeserializeOwned>(
        &self,
        tenant: &Tenant,
        path: String,
        endpoint: &'static str,
    ) -> Result<Vec<T>, GraphError> {
        let mut all = Vec::new();
        self.for_each_page(tenant, path, endpoint, |items| all.extend(items)).await?;
        Ok(all)
    }

    /// `GET /policies/authenticationMethodsPolicy` (configurations inlined).
    pub async fn methods_policy(
        &self,
        tenant: &Tenant,
    ) -> Result<AuthenticationMethodsPolicy, GraphError> {
        self.get(
            tenant,
            "/policies/authenticationMethodsPolicy".into(),
            "GET /policies/authenticationMethodsPolicy",
        )
        .await
    }

    /// `GET …/authenticationMethodConfigurations/{id}`.
    pub async fn method_configuration(
        &self,
        tenant: &Tenant,
        id: MethodId,
    ) -> Result<MethodConfiguration, GraphError> {
        self.get(
            tenant,
            format!(
                "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{}",
                id.as_path_segment()
            ),
            "GET /policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{id}",
        )
        .await
    }

    /// `PATCH …/authenticationMethodConfigurations/{id}` (the body always carries `@odata.type`).
    pub async fn patch_method_configuration(
        &self,
        tenant: &Tenant,
        id: MethodId,
        patch: &MethodConfigPatch,
    ) -> Result<(), GraphError> {
        let body = patch.to_json();
        let refs = group_refs(&body);
        let call = Call::new(
            Method::PATCH,
            format!(
                "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{}",
                id.as_path_segment()
            ),
            "PATCH /policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{id}",
        )
        .body(body)
        .refs(refs);
        self.send(tenant, call).await.map(|_| ())
    }

    /// `PATCH /policies/authenticationMethodsPolicy` with a body such as the registration
    /// campaign's; answers the policy (Graph documents 200 with the body; 204 is accepted).
    pub async fn patch_methods_policy(
        &self,
        tenant: &Tenant,
        body: Value,
    ) -> Result<(), GraphError> {
        let refs = group_refs(&body);
        let call = Call::new(
            Method::PATCH,
            "/policies/authenticationMethodsPolicy",
            "PATCH /policies/authenticationMethodsPolicy",
        )
        .body(body)
        .refs(refs);
        self.send(tenant, call).await.map(|_| ())
    }

    /// `GET /policies/authorizationPolicy`.
    pub async fn authorization_policy(
        &self,
        tenant: &Tenant,
    ) -> Result<AuthorizationPolicy, GraphError> {
        self.get(
            tenant,
            "/policies/authorizationPolicy".into(),
            "GET /policies/authorizationPolicy",
        )
        .await
    }

    /// `GET /organization` (the tenant's one organization).
    pub async fn organization(&self, tenant: &Tenant) -> Result<Organization, GraphError> {
        let orgs: Collection<Organization> =
            self.get(tenant, "/organization".into(), "GET /organization").await?;
        orgs.value.into_iter().next().ok_or(GraphError::Decode {
            endpoint: "GET /organization",
            detail: "no organization".into(),
        })
    }

    /// `GET /subscribedSkus` (no `$filter`: Graph does not support it there).
    pub async fn subscribed_skus(&self, tenant: &Tenant) -> Result<Vec<SubscribedSku>, GraphError> {
        self.get_all(tenant, "/subscribedSkus".into(), "GET /subscribedSkus").await
    }

    /// Groups whose display name is exactly `name`.
    pub async fn groups_named(
        &self,
        tenant: &Tenant,
        name: &str,
    ) -> Result<Vec<Group>, GraphError> {
        let filter = encode(&format!("displayName eq {}", literal(name)));
        self.get_all(tenant, format!("/groups?$filter={filter}"), "GET /groups").await
    }

    /// `GET /groups/{id}`; `None` when it does not exist (after replication retries for
    /// groups this client just created).
    pub async fn group(&self, tenant: &Tenant, id: &str) -> Result<Option<Group>, GraphError> {
        let call = Call::new(Method::GET, format!("/groups/{id}"), "GET /groups/{id}")
            .refs([id.to_owned()]);
        match self.send(tenant, call).await {
            Ok(reply) => decode(reply, "GET /groups/{id}").map(Some),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /groups`: creates a security group (with up to 20 initial members).
    pub async fn create_security_group(
        &self,
        tenant: &Tenant,
        group: &NewSecurityGroup,
    ) -> Result<Group, GraphError> {
        let body = group
            .to_json(&self.config().graph_url)
            .map_err(|e| GraphError::Invalid(e.to_string()))?;
        let reply = self
            .send(tenant, Call::new(Method::POST, "/groups", "POST /groups").body(body))
            .await?;
        let created: Group = decode(reply, "POST /groups")?;
        self.created(&created.id);
        Ok(created)
    }

    /// `DELETE /groups/{id}` (204); a group that is already gone (404) is not an error. A group
    /// this client just created is waited for (replication delay) rather than taken as gone.
    pub async fn delete_group(&self, tenant: &Tenant, id: &str) -> Result<(), GraphError> {
        let call = Call::new(Method::DELETE, format!("/groups/{id}"), "DELETE /groups/{id}")
            .refs([id.to_owned()])
            .refs_in_path();
        match self.send(tenant, call).await {
            Ok(_) => {
                self.forget_created(id);
                Ok(())
            }
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Makes a security group's membership dynamic with `rule` (`PATCH /groups/{id}` with
    /// `groupTypes: ["DynamicMembership"]`, the rule and processing `On`; 204). Entra replaces
    /// the assigned members with the rule's result; the tenant needs Entra ID P1 or P2 (Graph
    /// answers 400 otherwise). `groupTypes` is sent whole, so this is for security groups,
    /// whose only other type is none.
    pub async fn set_group_dynamic(
        &self,
        tenant: &Tenant,
        id: &str,
        rule: &str,
    ) -> Result<(), GraphError> {
        let body = json!({
            "groupTypes": [crate::types::DYNAMIC_MEMBERSHIP],
            "membershipRule": rule,
            "membershipRuleProcessingState": "On",
        });
        self.patch_group(tenant, id, body).await
    }

    /// Makes a security group's membership assigned again (`PATCH /groups/{id}` with
    /// `groupTypes: []`; 204). Entra keeps the members the rule had produced as assigned
    /// members. For security groups only, like [`GraphClient::set_group_dynamic`].
    pub async fn set_group_assigned(&self, tenant: &Tenant, id: &str) -> Result<(), GraphError> {
        self.patch_group(tenant, id, json!({"groupTypes": []})).await
    }

    async fn patch_group(&self, tenant: &Tenant, id: &str, body: Value) -> Result<(), GraphError> {
        let call = Call::new(Method::PATCH, format!("/groups/{id}"), "PATCH /groups/{id}")
            .body(body)
            .refs([id.to_owned()])
            .refs_in_path();
        self.send(tenant, call).await.map(|_| ())
    }

    /// Every user matching `filter` (an OData `$filter`, e.g.
    /// `accountEnabled eq true and userType eq 'Member'`), with the properties `select` names
    /// (`$select`, e.g. `id,userPrincipalName,accountEnabled,userType`; empty for Graph's
    /// default set), page by page: memory stays bounded by one page.
    pub async fn for_each_user(
        &self,
        tenant: &Tenant,
        filter: Option<&str>,
        select: &str,
        page: impl FnMut(Vec<User>),
    ) -> Result<(), GraphError> {
        let mut query = Vec::new();
        if !select.is_empty() {
            query.push(format!("$select={}", encode(select)));
        }
        if let Some(filter) = filter {
            query.push(format!("$filter={}", encode(filter)));
        }
        let path = if query.is_empty() {
            "/users".to_owned()
        } else {
            format!("/users?{}", query.join("&"))
        };
        self.for_each_page(tenant, path, "GET /users", page).await
    }

    /// Members of a group, every page.
    pub async fn group_members(
        &self,
        tenant: &Tenant,
        group_id: &str,
    ) -> Result<Vec<crate::types::DirectoryObject>, GraphError> {
        let mut all = Vec::new();
        let mut pager = Pager::new(self.config(), "GET /groups/{id}/members");
        let mut next =
            Some(format!("/groups/{group_id}/members?$select=id,userPrincipalName,displayName"));
        while let Some(path) = next.take() {
            let call = Call::new(Method::GET, path, "GET /groups/{id}/members")
                .refs([group_id.to_owned()]);
            let page: Collection<crate::types::DirectoryObject> =
                decode(self.send(tenant, call).await?, "GET /groups/{id}/members")?;
            next = pager.follow(page.next_link)?;
            all.extend(page.value);
        }
        Ok(all)
    }

    /// `POST /groups/{id}/members/$ref`; an existing membership is not an error.
    pub async fn add_group_member(
        &self,
        tenant: &Tenant,
        group_id: &str,
        object_id: &str,
    ) -> Result<AddMember, GraphError> {
        let body = json!({"@odata.id": format!("{}/v1.0/directoryObjects/{object_id}", self.config().graph_url)});
        let call = Call::new(
            Method::POST,
            format!("/groups/{group_id}/members/$ref"),
            "POST /groups/{id}/members/$ref",
        )
        .body(body)
        .refs([group_id.to_owned()])
        // A new group not replicated yet answers 404; the 400 for an existing member is final.
        .refs_in_path();
        match self.send(tenant, call).await {
            Ok(_) => Ok(AddMember::Added),
            Err(GraphError::Graph { status: 400, message, .. })
                if message.starts_with(ALREADY_MEMBER) =>
            {
                Ok(AddMember::AlreadyMember)
            }
            Err(e) => Err(e),
        }
    }

    /// Adds many members, as [`crate::GraphConfig::member_add`] says: by `members@odata.bind`
    /// (20 members per `PATCH /groups/{id}`, up to 20 of those per `$batch`), or by one `$ref`
    /// addition per member (20 per `$batch`). Items are retried on 429 on their own. Returns
    /// one result per object id, in order; an existing membership is
    /// [`AddMember::AlreadyMember`].
    pub async fn add_group_members(
        &self,
        tenant: &Tenant,
        group_id: &str,
        object_ids: &[String],
    ) -> Result<Vec<(String, Result<AddMember, String>)>, GraphError> {
        match self.config().member_add {
            MemberAdd::Ref => self.add_group_members_by_ref(tenant, group_id, object_ids).await,
            MemberAdd::Bind => self.add_group_members_by_bind(tenant, group_id, object_ids).await,
        }
    }

    /// `PATCH /groups/{id}` with `members@odata.bind`, 20 members a request, 20 requests a
    /// `$batch`. The bind is atomic: a request refused because one of its members already is
    /// one adds nobody, so its members are added again one by one by `$ref`.
    async fn add_group_members_by_bind(
        &self,
        tenant: &Tenant,
        group_id: &str,
        object_ids: &[String],
    ) -> Result<Vec<(String, Result<AddMember, String>)>, GraphError> {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<String> =
            object_ids.iter().filter(|id| seen.insert(id.to_ascii_lowercase())).cloned().collect();
        let base = &self.config().graph_url;
        let mut results: Vec<(String, Result<AddMember, String>)> = Vec::new();
        let mut one_by_one: Vec<String> = Vec::new();
        let requests: Vec<&[String]> = unique.chunks(MAX_BIND_MEMBERS).collect();
        for batch in requests.chunks(20) {
            let mut items = Vec::with_capacity(batch.len());
            for (i, chunk) in batch.iter().enumerate() {
                let body = members_bind_body(base, chunk)
                    .map_err(|e| GraphError::Invalid(format!("invalid member list: {e}")))?;
                items.push(BatchItem {
                    id: i.to_string(),
                    method: Method::PATCH,
                    url: format!("/groups/{group_id}"),
                    body: Some(body),
                    depends_on: Vec::new(),
                });
            }
            let outcomes = self.batch(tenant, items).await?;
            for (i, chunk) in batch.iter().enumerate() {
                match outcomes.iter().find(|o| o.id == i.to_string()) {
                    Some(o) if o.is_success() => {
                        results.extend(chunk.iter().map(|id| (id.clone(), Ok(AddMember::Added))));
                    }
                    Some(o) if already_member(o) => one_by_one.extend(chunk.iter().cloned()),
                    Some(o) => {
                        let e = format!("{} {}", o.status, o.error_code().unwrap_or(""));
                        results.extend(chunk.iter().map(|id| (id.clone(), Err(e.clone()))));
                    }
                    None => results.extend(
                        chunk
                            .iter()
                            .map(|id| (id.clone(), Err("missing from the batch response".into()))),
                    ),
                }
            }
        }
        if !one_by_one.is_empty() {
            results.extend(self.add_group_members_by_ref(tenant, group_id, &one_by_one).await?);
        }
        // One result per id given, in the order given.
        let by_id: std::collections::HashMap<String, Result<AddMember, String>> =
            results.into_iter().map(|(id, r)| (id.to_ascii_lowercase(), r)).collect();
        Ok(object_ids
            .iter()
            .map(|id| {
                let r = by_id
                    .get(&id.to_ascii_lowercase())
                    .cloned()
                    .unwrap_or_else(|| Err("not sent".into()));
                (id.clone(), r)
            })
            .collect())
    }

    /// One `POST /groups/{id}/members/$ref` per member, 20 per `$batch`.
    async fn add_group_members_by_ref(
        &self,
        tenant: &Tenant,
        group_id: &str,
        object_ids: &[String],
    ) -> Result<Vec<(String, Result<AddMember, String>)>, GraphError> {
        let mut results = Vec::new();
        for chunk in object_ids.chunks(20) {
            let items: Vec<BatchItem> = chunk
                .iter()
                .enumerate()
                .map(|(i, id)| BatchItem {
                    id: i.to_string(),
                    method: Method::POST,
                    url: format!("/groups/{group_id}/members/$ref"),
                    body: Some(json!({"@odata.id": format!("{}/v1.0/directoryObjects/{id}", self.config().graph_url)})),
                    depends_on: Vec::new(),
                })
                .collect();
            let outcomes = self.batch(tenant, items).await?;
            for (i, id) in chunk.iter().enumerate() {
                let o = outcomes.iter().find(|o| o.id == i.to_string());
                let result = match o {
                    Some(o) if o.is_success() => Ok(AddMember::Added),
                    Some(o) if already_member(o) => Ok(AddMember::AlreadyMember),
                    Some(o) => Err(format!("{} {}", o.status, o.error_code().unwrap_or(""))),
                    None => Err("missing from the batch response".into()),
                };
                results.push((id.clone(), result));
            }
        }
        Ok(results)
    }

    /// `DELETE /groups/{id}/members/{objectId}/$ref`; a non-member (404: already removed) is
    /// not an error.
    pub async fn remove_group_member(
        &self,
        tenant: &Tenant,
        group_id: &str,
        object_id: &str,
    ) -> Result<(), GraphError> {
        let call = Call::new(
            Method::DELETE,
            format!("/groups/{group_id}/members/{object_id}/$ref"),
            "DELETE /groups/{id}/members/{id}/$ref",
        );
        match self.send(tenant, call).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A user by id or user principal name; `None` when it does not exist.
    pub async fn user(&self, tenant: &Tenant, id_or_upn: &str) -> Result<Option<User>, GraphError> {
        match self
            .send(
                tenant,
                Call::new(Method::GET, format!("/users/{}", encode(id_or_upn)), "GET /users/{id}"),
            )
            .await
        {
            Ok(reply) => decode(reply, "GET /users/{id}").map(Some),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every user's registration details, page by page (memory bounded by one page). Each page
    /// is a report read of `priority` (the reporting APIs' limits: 5 per 10 s per tenant).
    pub async fn registration_details(
        &self,
        tenant: &Tenant,
        priority: ReportPriority,
        page: impl FnMut(Vec<UserRegistrationDetails>),
    ) -> Result<(), GraphError> {
        self.pages(
            tenant,
            "/reports/authenticationMethods/userRegistrationDetails".into(),
            "GET /reports/authenticationMethods/userRegistrationDetails",
            Some(priority),
            page,
        )
        .await
    }

    /// One user's registration details (a report read of `priority`).
    pub async fn registration_details_of(
        &self,
        tenant: &Tenant,
        user_id: &str,
        priority: ReportPriority,
    ) -> Result<UserRegistrationDetails, GraphError> {
        self.get_report(
            tenant,
            format!("/reports/authenticationMethods/userRegistrationDetails/{user_id}"),
            "GET /reports/authenticationMethods/userRegistrationDetails/{id}",
            priority,
        )
        .await
    }

    /// Counts by feature (`ssprEnabled`, `ssprCapable`, ...) over all users (a report read of
    /// `priority`).
    pub async fn users_registered_by_feature(
        &self,
        tenant: &Tenant,
        priority: ReportPriority,
    ) -> Result<UserRegistrationFeatureSummary, GraphError> {
        self.users_registered_by_feature_in(tenant, ReportPopulation::ALL, priority).await
    }

    /// Counts by feature over the users of `population` (a report read of `priority`).
    pub async fn users_registered_by_feature_in(
        &self,
        tenant: &Tenant,
        population: ReportPopulation,
        priority: ReportPriority,
    ) -> Result<UserRegistrationFeatureSummary, GraphError> {
        self.get_report(
            tenant,
            format!(
                "/reports/authenticationMethods/usersRegisteredByFeature{}",
                population.arguments()
            ),
            "GET /reports/authenticationMethods/usersRegisteredByFeature",
            priority,
        )
        .await
    }

    /// SSPR audit events of one activity since a time, newest first; each page a report read
    /// of `priority`.
    pub async fn directory_audits(
        &self,
        tenant: &Tenant,
        activity: &str,
        since: chrono::DateTime<chrono::Utc>,
        priority: ReportPriority,
    ) -> Result<Vec<DirectoryAudit>, GraphError> {
        let filter = format!(
            "activityDisplayName eq {} and activityDateTime ge {}",
            literal(activity),
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let mut all = Vec::new();
        self.pages(
            tenant,
            format!("/auditLogs/directoryAudits?$filter={}", encode(&filter)),
            "GET /auditLogs/directoryAudits",
            Some(priority),
            |items| all.extend(items),
        )
        .await?;
        Ok(all)
    }

    /// Sends up to 20 requests as one `$batch`, retrying items answered 429 or 503 (and their
    /// dependents, answered 424) after the longest `Retry-After`, until they succeed, fail
    /// otherwise, or the retry budget runs out. `refs` names objects the items refer to.
    pub async fn batch(
        &self,
        tenant: &Tenant,
        items: Vec<BatchItem>,
    ) -> Result<Vec<BatchOutcome>, GraphError> {
        if items.len() > 20 {
            return Err(GraphError::Invalid(format!(
                "a batch holds at most 20 requests, not {}",
                items.len()
            )));
        }
        let mut ids = std::collections::BTreeSet::new();
        if let Some(dup) = items.iter().find(|i| !ids.insert(i.id.clone())) {
            return Err(GraphError::Invalid(format!("batch item id {} appears twice", dup.id)));
        }
        // Path segments stand for the objects the items refer to (replication-delay retries).
        let refs: Vec<String> = items
            .iter()
            .flat_map(|i| i.url.split(['/', '?']).map(str::to_owned).collect::<Vec<_>>())
            .filter(|s| s.len() >= 32)
            .collect();
        let refs = refs.as_slice();
        let cfg = self.config().clone();
        let started = std::time::Instant::now();
        let mut pending = items;
        let mut done: BTreeMap<String, BatchOutcome> = BTreeMap::new();
        let mut round = 0u32;
        while !pending.is_empty() {
            round += 1;
            let requests: Vec<Value> = pending
                .iter()
                .map(|i| {
                    let mut r = json!({"id": i.id, "method": i.method.as_str(), "url": i.url});
                    if let Some(b) = &i.body {
                        r["body"] = b.clone();
                        r["headers"] = json!({"Content-Type": "application/json"});
                    }
                    if !i.depends_on.is_empty() {
                        r["dependsOn"] = json!(i.depends_on);
                    }
                    r
                })
                .collect();
            // The limits count a batch's items, not the envelope.
            let charge = pending.iter().map(|i| crate::client::charge_of(&i.method, &i.url)).sum();
            let call = Call::new(Method::POST, "/$batch", "POST /$batch")
                .body(json!({"requests": requests}))
                .refs(refs.iter().cloned())
                .charge(charge);
            let reply = self.send(tenant, call).await?;
            let responses = reply
                .body
                .as_ref()
                .and_then(|b| b.get("responses"))
                .and_then(Value::as_array)
                .cloned()
                .ok_or(GraphError::Decode {
                    endpoint: "POST /$batch",
                    detail: "no responses".into(),
                })?;
            // The longest Retry-After Graph gave an item binds the tenant's next request
            // whether or not the items are retried here: `send` has held the tenant for it.
            let mut wait = Duration::ZERO;
            // Report items' 429s hold report reads only (`send` put that hold in place): the
            // tenant is not held for them, this batch just waits before its next round.
            let mut report_wait = Duration::ZERO;
            let mut retry_ids = Vec::new();
            for r in &responses {
                let id = r["id"].as_str().unwrap_or("").to_owned();
                let status = r["status"].as_u64().unwrap_or(0) as u16;
                let retryable = matches!(status, 429 | 503 | 504)
                    || (status == 404 && self.recently_created(refs));
                if retryable {
                    let after = crate::client::item_retry_after(r)
                        .unwrap_or_else(|| Duration::from_millis(500 * 2u64.pow(round.min(6))));
                    if status == 429 && crate::client::is_report_item_throttled(r) {
                        report_wait = report_wait.max(after);
                    } else {
                        wait = wait.max(after);
                    }
                    retry_ids.push(id.clone());
                }
                done.insert(id.clone(), BatchOutcome { id, status, body: r.get("body").cloned() });
            }
            // Dependents that failed only because what they depend on will be retried go again.
            let retry_set: std::collections::BTreeSet<String> = retry_ids.iter().cloned().collect();
            let next: Vec<BatchItem> = pending
                .into_iter()
                .filter(|i| {
                    retry_set.contains(&i.id)
                        || (done.get(&i.id).is_some_and(|o| o.status == 424)
                            && i.depends_on.iter().any(|d| retry_set.contains(d)))
                })
                .collect();
            if next.is_empty() {
                break;
            }
            if round >= cfg.retry.max_attempts
                || started.elapsed() + wait.max(report_wait) > cfg.retry.budget
            {
                break;
            }
            self.block_tenant(&tenant.id, wait);
            if report_wait > wait {
                tokio::time::sleep(report_wait).await;
            }
            pending = next;
        }
        Ok(done.into_values().collect())
    }
}

/// Whether a `$batch` item was refused because a member it adds already is one (Graph's 400
/// "One or more added object references already exist ...").
fn already_member(o: &BatchOutcome) -> bool {
    o.status == 400
        && o.body
            .as_ref()
            .and_then(|b| b["error"]["message"].as_str())
            .is_some_and(|m| m.starts_with(ALREADY_MEMBER))
}

/// Group ids a policy or configuration body targets (for replication-delay retries).
fn group_refs(body: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    fn walk(v: &Value, ids: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                let is_group = map.get("targetType").and_then(Value::as_str) == Some("group");
                if let (true, Some(id)) = (is_group, map.get("id").and_then(Value::as_str)) {
                    ids.push(id.to_owned());
                }
                map.values().for_each(|v| walk(v, ids));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, ids)),
            _ => {}
        }
    }
    walk(body, &mut ids);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_links_must_stay_under_the_graph_base_url() {
        let base = "https://graph.microsoft.com";
        assert!(within_base(base, "https://graph.microsoft.com/v1.0/users?$skiptoken=x"));
        assert!(within_base(base, "https://GRAPH.microsoft.com:443/v1.0/users"));
        for link in [
            "https://graph.microsoft.com.evil.example/v1.0/users",
            "https://evil.example/v1.0/users",
            "http://graph.microsoft.com/v1.0/users",
            "https://graph.microsoft.com:8443/v1.0/users",
            "https://graph.microsoft.com@evil.example/v1.0/users",
            "https://user:pw@graph.microsoft.com/v1.0/users",
            "//evil.example/v1.0/users",
            "not a url",
        ] {
            assert!(!within_base(base, link), "{link}");
        }
        // A base with a path: links must be below it, not beside it.
        assert!(within_base("http://127.0.0.1:9/graph", "http://127.0.0.1:9/graph/v1.0/users"));
        assert!(!within_base("http://127.0.0.1:9/graph", "http://127.0.0.1:9/graphx/v1.0/users"));
        assert!(!within_base("http://127.0.0.1:9/graph", "http://127.0.0.1:9/v1.0/users"));
    }

    fn pager(max_pages: usize) -> Pager {
        let cfg = GraphConfig { max_pages, ..GraphConfig::new("https://graph.microsoft.com", "x") };
        Pager::new(&cfg, "GET /users")
    }

    fn link(n: usize) -> Option<String> {
        Some(format!("https://graph.microsoft.com/v1.0/users?$skiptoken={n}"))
    }

    fn problem(result: Result<Option<String>, GraphError>) -> PagingProblem {
        match result {
            Err(GraphError::Paging { endpoint: "GET /users", problem }) => problem,
            other => panic!("expected a paging error, got {other:?}"),
        }
    }

    #[test]
    fn a_pager_follows_new_links_and_stops_at_the_end() {
        let mut p = pager(10);
        for n in 0..9 {
            assert_eq!(p.follow(link(n)).unwrap(), link(n));
        }
        assert_eq!(p.follow(None).unwrap(), None);
        assert_eq!(GraphConfig::default().max_pages, crate::MAX_PAGES);
    }

    #[test]
    fn a_pager_refuses_more_pages_than_the_cap() {
        let mut p = pager(3);
        assert!(p.follow(link(1)).is_ok() && p.follow(link(2)).is_ok());
        // The third page is the last one allowed: a link beyond it is refused.
        assert_eq!(problem(p.follow(link(3))), PagingProblem::TooManyPages(3));
        // The last page of a listing that ends there is fine.
        let mut p = pager(3);
        assert!(p.follow(link(1)).is_ok() && p.follow(link(2)).is_ok());
        assert_eq!(p.follow(None).unwrap(), None);
    }

    #[test]
    fn a_pager_refuses_a_link_it_followed_before() {
        let mut p = pager(100);
        assert!(p.follow(link(1)).is_ok() && p.follow(link(2)).is_ok());
        assert_eq!(problem(p.follow(link(1))), PagingProblem::Loop);
        let mut p = pager(100);
        assert!(p.follow(link(7)).is_ok());
        assert_eq!(problem(p.follow(link(7))), PagingProblem::Loop);
    }

    #[test]
    fn a_pager_refuses_a_link_to_another_host() {
        let mut p = pager(100);
        let foreign = Some("https://evil.example/v1.0/users?$skiptoken=1".to_owned());
        assert_eq!(problem(p.follow(foreign)), PagingProblem::ForeignHost);
        let err = GraphError::Paging { endpoint: "GET /users", problem: PagingProblem::Loop };
        assert_eq!(err.reason(), "paging_loop");
    }

    #[test]
    fn odata_literals_and_encoding() {
        assert_eq!(literal("O'Brien"), "'O''Brien'");
        assert_eq!(encode("displayName eq 'a b'"), "displayName%20eq%20%27a%20b%27");
    }

    #[test]
    fn group_refs_are_found_in_targets() {
        let body = json!({"includeTargets": [{"targetType": "group", "id": "g1"}, {"targetType": "user", "id": "u1"}],
            "registrationEnforcement": {"authenticationMethodsRegistrationCampaign": {"includeTargets": [{"targetType": "group", "id": "g2"}]}}});
        assert_eq!(group_refs(&body), vec!["g1".to_owned(), "g2".to_owned()]);
    }
}
