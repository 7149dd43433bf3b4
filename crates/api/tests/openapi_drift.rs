//! `openapi/openapi.json` is generated and committed; this fails when it differs from what the
//! code generates. Rewrite it with: `UPDATE_OPENAPI=1 cargo test -p sspr-api --test openapi_drift`
//! (or `cargo run -p sspr-fleet -- openapi > openapi/openapi.json`).

#[test]
fn committed_openapi_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json");
    let generated = sspr_api::openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write openapi/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date with the code; rewrite it with\n    \
         UPDATE_OPENAPI=1 cargo test -p sspr-api --test openapi_drift\nand commit the result"
    );
}
