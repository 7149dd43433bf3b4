//! Who may do what: roles and the tenant scope of an API key.

use std::{collections::BTreeSet, fmt, str::FromStr};

/// The role of an API key. Roles are ordered: each includes everything the ones below it may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything in its scope; changes nothing.
    Viewer,
    /// Runs rollouts, attests tasks, onboards tenants.
    Operator,
    /// Everything, including API keys and webhooks.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The lowercase name used in the API and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role includes `required`.
    pub fn includes(self, required: Role) -> bool {
        self >= required
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of `admin`, `operator`, `viewer`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role: expected one of admin, operator, viewer")]
pub struct RoleParseError(pub String);

impl FromStr for Role {
    type Err = RoleParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| RoleParseError(s.to_owned()))
    }
}

/// Which tenants an API key reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    /// Every tenant, present and future.
    All,
    /// Only these tenants (by the tenant's id in sspr-fleet). An empty set reaches nothing.
    Only(BTreeSet<String>),
}

impl TenantScope {
    /// Whether the scope reaches `tenant_id`.
    pub fn reaches(&self, tenant_id: &str) -> bool {
        match self {
            TenantScope::All => true,
            TenantScope::Only(set) => set.contains(tenant_id),
        }
    }

    /// Whether every tenant `other` reaches is also reached by `self`.
    pub fn covers(&self, other: &TenantScope) -> bool {
        match (self, other) {
            (TenantScope::All, _) => true,
            (TenantScope::Only(_), TenantScope::All) => false,
            (TenantScope::Only(mine), TenantScope::Only(theirs)) => theirs.is_subset(mine),
        }
    }

    /// The restricted set, or `None` when unrestricted.
    pub fn restricted_to(&self) -> Option<&BTreeSet<String>> {
        match self {
            TenantScope::All => None,
            TenantScope::Only(set) => Some(set),
        }
    }
}

/// What an authenticated caller may do: its role and its tenant scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The role of the key.
    pub role: Role,
    /// The tenants the key reaches.
    pub tenants: TenantScope,
}

impl Access {
    /// Whether the caller may create a key with `role` and `tenants`: never more than it has.
    pub fn may_grant(&self, role: Role, tenants: &TenantScope) -> bool {
        self.role.includes(Role::Admin) && self.role.includes(role) && self.tenants.covers(tenants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(ids: &[&str]) -> TenantScope {
        TenantScope::Only(ids.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn roles_are_ordered_viewer_operator_admin() {
        assert!(Role::Admin.includes(Role::Operator));
        assert!(Role::Operator.includes(Role::Viewer));
        assert!(!Role::Viewer.includes(Role::Operator));
        assert!(!Role::Operator.includes(Role::Admin));
    }

    #[test]
    fn role_names_round_trip_and_unknown_names_fail() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn restricted_scope_reaches_only_its_tenants() {
        let scope = only(&["a", "b"]);
        assert!(scope.reaches("a"));
        assert!(!scope.reaches("c"));
        assert!(TenantScope::All.reaches("c"));
        assert!(!only(&[]).reaches("a"));
    }

    #[test]
    fn a_key_cannot_grant_more_than_it_has() {
        let restricted_admin = Access { role: Role::Admin, tenants: only(&["a", "b"]) };
        assert!(restricted_admin.may_grant(Role::Viewer, &only(&["a"])));
        assert!(!restricted_admin.may_grant(Role::Viewer, &only(&["a", "c"])));
        assert!(!restricted_admin.may_grant(Role::Viewer, &TenantScope::All));
        let operator = Access { role: Role::Operator, tenants: TenantScope::All };
        assert!(!operator.may_grant(Role::Viewer, &TenantScope::All));
        let admin = Access { role: Role::Admin, tenants: TenantScope::All };
        assert!(admin.may_grant(Role::Admin, &only(&["x"])));
    }
}
