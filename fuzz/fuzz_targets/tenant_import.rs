//! A tenant import file as `POST /v1/tenants:import` and `sspr-fleet tenants import` receive
//! it: the same bytes through the CSV and the JSON parser. Any input must give rows or a typed
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sspr_registry::parse_csv(data);
    let _ = sspr_registry::parse_json(data);
});
