//! Subscribed SKUs. The premium SKU list is Microsoft's licensing reference (copied from the
//! shared Graph facts into `data/`); plans are matched by service-plan GUID, as a client must.

use serde_json::{Value, json};

/// Entra ID P1 service plan (`AAD_PREMIUM`).
pub const PLAN_P1: &str = "41781fb2-bc02-4b7c-bd55-b576c07bb09d";
/// Entra ID P2 service plan (`AAD_PREMIUM_P2`).
pub const PLAN_P2: &str = "eec0eb4f-6444-4f95-aba0-50c24d67f998";
/// Exchange Online plan, present in most business SKUs (for realistic plan lists).
const PLAN_EXCHANGE: &str = "9aaf7827-d63c-4b61-89c3-182f06f82e5c";

const SKU_MAP: &str = include_str!("../data/entra-premium-sku-map.csv");

/// SKUs without Entra premium plans that tenants commonly hold (from the Graph facts).
const NON_PREMIUM: &[(&str, &str, &str)] = &[
    (
        "O365_BUSINESS_PREMIUM",
        "Microsoft 365 Business Standard",
        "f245ecc8-75af-4f8e-b61f-27d8114de5f3",
    ),
    (
        "O365_BUSINESS_ESSENTIALS",
        "Microsoft 365 Business Basic",
        "3b555118-da6a-4418-894f-7df1e2096870",
    ),
];

/// One subscribed SKU of a tenant.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sku {
    /// e.g. `SPB`.
    pub part_number: String,
    /// The SKU GUID.
    pub sku_id: String,
    /// `Enabled`, `Warning`, `Suspended`, `Deleted` or `LockedOut`.
    pub capability_status: String,
    /// Paid seats.
    pub enabled_units: u32,
    /// Assigned seats.
    pub consumed_units: u32,
    /// Whether the SKU includes Entra ID P1 and P2.
    pub p1: bool,
    /// Whether the SKU includes Entra ID P2.
    pub p2: bool,
    /// Provisioning status of the premium plans (`Success`, `Disabled`, ...).
    pub plan_status: String,
}

impl Sku {
    /// The SKU with `part_number` (case-insensitive), with `units` seats, all plans working.
    pub fn by_part_number(part_number: &str, units: u32) -> Option<Self> {
        let premium = SKU_MAP.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split(',').collect();
            (cols.len() >= 5 && cols[0].eq_ignore_ascii_case(part_number)).then(|| {
                (cols[0].to_owned(), cols[2].to_owned(), cols[3] == "true", cols[4] == "true")
            })
        });
        let (part, id, p1, p2) = premium.or_else(|| {
            NON_PREMIUM
                .iter()
                .find(|(p, _, _)| p.eq_ignore_ascii_case(part_number))
                .map(|(p, _, id)| ((*p).to_owned(), (*id).to_owned(), false, false))
        })?;
        Some(Self {
            part_number: part,
            sku_id: id,
            capability_status: "Enabled".into(),
            enabled_units: units,
            consumed_units: units.saturating_sub(units / 10),
            p1,
            p2,
            plan_status: "Success".into(),
        })
    }

    /// Whether this SKU gives the tenant a working Entra ID P1 (or P2) plan.
    pub fn grants_premium(&self) -> bool {
        self.p1
            && self.capability_status == "Enabled"
            && self.enabled_units > 0
            && self.plan_status == "Success"
    }

    /// The `subscribedSku` resource.
    pub(crate) fn to_json(&self, tenant_id: &str) -> Value {
        let mut plans = vec![json!({
            "servicePlanId": PLAN_EXCHANGE, "servicePlanName": "EXCHANGE_S_STANDARD",
            "provisioningStatus": "Success", "appliesTo": "User"
        })];
        if self.p1 {
            plans.push(json!({
                "servicePlanId": PLAN_P1, "servicePlanName": "AAD_PREMIUM",
                "provisioningStatus": self.plan_status, "appliesTo": "User"
            }));
        }
        if self.p2 {
            plans.push(json!({
                "servicePlanId": PLAN_P2, "servicePlanName": "AAD_PREMIUM_P2",
                "provisioningStatus": self.plan_status, "appliesTo": "User"
            }));
        }
        json!({
            "id": format!("{tenant_id}_{}", self.sku_id),
            "accountId": tenant_id,
            "accountName": "sim",
            "appliesTo": "User",
            "capabilityStatus": self.capability_status,
            "consumedUnits": self.consumed_units,
            "prepaidUnits": {"enabled": self.enabled_units, "lockedOut": 0, "suspended": 0, "warning": 0},
            "servicePlans": plans,
            "skuId": self.sku_id,
            "skuPartNumber": self.part_number,
            "subscriptionIds": [],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn premium_is_read_from_the_licensing_reference() {
        let spb = Sku::by_part_number("SPB", 10).unwrap();
        assert!(spb.p1 && !spb.p2 && spb.grants_premium());
        let e5 = Sku::by_part_number("spe_e5", 10).unwrap();
        assert!(e5.p1 && e5.p2);
        let standard = Sku::by_part_number("O365_BUSINESS_PREMIUM", 10).unwrap();
        assert!(!standard.grants_premium());
        assert!(Sku::by_part_number("NOPE", 1).is_none());
    }

    #[test]
    fn suspended_or_unprovisioned_plans_do_not_count() {
        let mut sku = Sku::by_part_number("AAD_PREMIUM", 5).unwrap();
        sku.capability_status = "Suspended".into();
        assert!(!sku.grants_premium());
        let mut sku = Sku::by_part_number("AAD_PREMIUM", 5).unwrap();
        sku.plan_status = "Disabled".into();
        assert!(!sku.grants_premium());
        let mut sku = Sku::by_part_number("AAD_PREMIUM", 5).unwrap();
        sku.enabled_units = 0;
        assert!(!sku.grants_premium());
    }
}
