//! Licences: `GET /subscribedSkus` and whether they cover SSPR (graph-facts §5; schemas
//! `subscribedSku`, `licenseUnitsDetail`, `servicePlanInfo`).

use serde::{Deserialize, Serialize};

use super::de::null_default;

/// Service plan id of Microsoft Entra ID P1 (`AAD_PREMIUM`), graph-facts §5 "Identifiers".
pub const ENTRA_ID_P1_PLAN_ID: &str = "41781fb2-bc02-4b7c-bd55-b576c07bb09d";

/// Service plan id of Microsoft Entra ID P2 (`AAD_PREMIUM_P2`), graph-facts §5 "Identifiers".
pub const ENTRA_ID_P2_PLAN_ID: &str = "eec0eb4f-6444-4f95-aba0-50c24d67f998";

/// SKU id of Microsoft 365 Business Standard (`O365_BUSINESS_PREMIUM`), which carries neither
/// premium plan but includes cloud-only SSPR reset (graph-facts §5 table and "Contradicts the
/// guide").
pub const BUSINESS_STANDARD_SKU_ID: &str = "f245ecc8-75af-4f8e-b61f-27d8114de5f3";

/// `licenseUnitsDetail`: licence counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LicenseUnitsDetail {
    /// Active units.
    #[serde(default)]
    pub enabled: Option<i32>,
    /// Suspended units.
    #[serde(default)]
    pub suspended: Option<i32>,
    /// Units in the warning (grace) state.
    #[serde(default)]
    pub warning: Option<i32>,
    /// Locked-out units.
    #[serde(default)]
    pub locked_out: Option<i32>,
}

/// `servicePlanInfo`: one service plan of a SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePlan {
    /// The plan GUID (compare with [`ENTRA_ID_P1_PLAN_ID`] / [`ENTRA_ID_P2_PLAN_ID`],
    /// ignoring case).
    #[serde(default)]
    pub service_plan_id: Option<String>,
    /// The plan name, e.g. `AAD_PREMIUM`.
    #[serde(default)]
    pub service_plan_name: Option<String>,
    /// `Success`, `Disabled`, `PendingInput`, `PendingActivation` or `PendingProvisioning`.
    #[serde(default)]
    pub provisioning_status: Option<String>,
    /// `User` or `Company`.
    #[serde(default)]
    pub applies_to: Option<String>,
}

impl ServicePlan {
    /// Whether the plan id is `plan_id`, ignoring case.
    pub fn is(&self, plan_id: &str) -> bool {
        self.service_plan_id.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(plan_id))
    }

    /// Whether the plan is provisioned (`provisioningStatus == "Success"`).
    pub fn is_provisioned(&self) -> bool {
        self.provisioning_status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("Success"))
    }
}

/// `subscribedSku`: one subscription of the tenant (graph-facts §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribedSku {
    /// `<tenantId>_<skuId>`.
    #[serde(default)]
    pub id: String,
    /// The SKU GUID.
    #[serde(default)]
    pub sku_id: Option<String>,
    /// The SKU part number, e.g. `SPE_E5` (do not decide licensing on it, graph-facts §5).
    #[serde(default)]
    pub sku_part_number: Option<String>,
    /// `Enabled`, `Warning`, `Suspended`, `Deleted` or `LockedOut`.
    #[serde(default)]
    pub capability_status: Option<String>,
    /// Assigned units.
    #[serde(default)]
    pub consumed_units: Option<i32>,
    /// Purchased units by state.
    #[serde(default)]
    pub prepaid_units: Option<LicenseUnitsDetail>,
    /// The service plans the SKU includes.
    #[serde(default, deserialize_with = "null_default")]
    pub service_plans: Vec<ServicePlan>,
}

impl SubscribedSku {
    /// `capabilityStatus == "Enabled"` and `prepaidUnits.enabled > 0`: the subscription is
    /// active and paid (graph-facts §5 "Recommended check").
    pub fn is_active(&self) -> bool {
        self.capability_status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("Enabled"))
            && self.enabled_units() > 0
    }

    /// `prepaidUnits.enabled`, 0 when absent.
    pub fn enabled_units(&self) -> i32 {
        self.prepaid_units.and_then(|p| p.enabled).unwrap_or(0)
    }

    /// The plan with id `plan_id` (ignoring case), if the SKU includes it.
    pub fn plan(&self, plan_id: &str) -> Option<&ServicePlan> {
        self.service_plans.iter().find(|p| p.is(plan_id))
    }

    /// Whether the SKU id is `sku_id`, ignoring case.
    pub fn is_sku(&self, sku_id: &str) -> bool {
        self.sku_id.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(sku_id))
    }

    fn label(&self) -> String {
        format!(
            "{} ({})",
            self.sku_part_number.as_deref().unwrap_or("?"),
            self.sku_id.as_deref().unwrap_or(&self.id)
        )
    }
}

/// What a tenant's licences allow, with the evidence for each conclusion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenceReadiness {
    /// Entra ID P1 features are licensed: an active SKU with the P1 plan, or the P2 plan (every
    /// P2 SKU of graph-facts §5 also carries P1), provisioned. This is graph-facts §5's
    /// "Recommended check", and also what SSPR with on-premises writeback needs.
    pub premium_p1: bool,
    /// An active SKU carries the provisioned P2 plan.
    pub premium_p2: bool,
    /// Cloud-only SSPR reset is licensed: P1/P2, or an active Business Standard SKU
    /// (graph-facts §5 "Contradicts the guide").
    pub cloud_sspr: bool,
    /// One line per SKU that counted, and per SKU with a premium plan that did not, saying why.
    pub evidence: Vec<String>,
}

/// Evaluates graph-facts §5's "Recommended check" over `GET /subscribedSkus`: a SKU counts when
/// `capabilityStatus == "Enabled"`, `prepaidUnits.enabled > 0` and it has the P1 or P2 service
/// plan (matched by GUID, ignoring case, never by part number) with
/// `provisioningStatus == "Success"`.
pub fn licence_readiness(skus: &[SubscribedSku]) -> LicenceReadiness {
    let mut readiness = LicenceReadiness::default();
    for sku in skus {
        let label = sku.label();
        let premium_plans: Vec<(&str, &ServicePlan)> =
            [("P1", ENTRA_ID_P1_PLAN_ID), ("P2", ENTRA_ID_P2_PLAN_ID)]
                .into_iter()
                .filter_map(|(name, id)| sku.plan(id).map(|plan| (name, plan)))
                .collect();
        let business_standard = sku.is_sku(BUSINESS_STANDARD_SKU_ID);
        if premium_plans.is_empty() && !business_standard {
            continue;
        }
        if !sku.is_active() {
            readiness.evidence.push(format!(
                "{label}: not counted, capabilityStatus {} with {} enabled units",
                sku.capability_status.as_deref().unwrap_or("absent"),
                sku.enabled_units()
            ));
            continue;
        }
        for (name, plan) in premium_plans {
            if plan.is_provisioned() {
                readiness.premium_p1 = true;
                readiness.premium_p2 |= name == "P2";
                readiness.cloud_sspr = true;
                readiness.evidence.push(format!("{label}: Entra ID {name} plan provisioned"));
            } else {
                readiness.evidence.push(format!(
                    "{label}: Entra ID {name} plan not counted, provisioningStatus {}",
                    plan.provisioning_status.as_deref().unwrap_or("absent")
                ));
            }
        }
        if business_standard {
            readiness.cloud_sspr = true;
            readiness
                .evidence
                .push(format!("{label}: Business Standard includes cloud-only SSPR reset"));
        }
    }
    readiness
}
