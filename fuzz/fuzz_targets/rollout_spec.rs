//! A rollout spec as `POST /v1/rollouts` receives it: any bytes, decoded as JSON into the spec
//! and, when that works, validated field by field. Neither step may panic, and a spec whose
//! validation passes must survive a round trip through JSON unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sspr_domain::RolloutSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<RolloutSpec>(data) else { return };
    let problems = spec.problems();
    let _ = spec.policy.problems("policy");
    if problems.is_empty() {
        let text = serde_json::to_vec(&spec).expect("a valid spec serialises");
        let again: RolloutSpec = serde_json::from_slice(&text).expect("and reads back");
        assert_eq!(again, spec);
    }
});
