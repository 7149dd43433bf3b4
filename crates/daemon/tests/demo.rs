//! `sspr-fleet demo` as a newcomer runs it: one process, no configuration, a staged rollout
//! over a simulated fleet, a summary, exit 0.

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_sspr-fleet");

#[test]
fn the_demo_rolls_out_to_ten_simulated_tenants_and_ends_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path());
    for (name, _) in std::env::vars() {
        if name.starts_with("SSPR_FLEET_") || name.starts_with("OTEL_") {
            cmd.env_remove(name);
        }
    }
    let started = Instant::now();
    let mut child = cmd
        .args(["demo", "--tenants", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Two minutes is the promise; a debug build on a busy machine gets some slack.
    let deadline = Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline {
            child.kill().unwrap();
            panic!("the demo did not finish in {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(status.success(), "exit {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");

    // What it prints while it runs: where the API is, a key, the status page.
    assert!(stdout.contains("10 simulated tenants"), "{stdout}");
    let key = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Admin key:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no admin key in\n{stdout}"));
    assert!(key.starts_with("sfk_") && key.len() > 40, "{key}");
    assert!(stdout.contains("/status"), "{stdout}");
    assert!(stdout.contains("real tenants need"), "the demo says it plays the technician");

    // The summary: one row per tenant, totals that add up to the fleet, and a completed rollout.
    assert!(
        stdout.contains("Summary of rollout rol_") && stdout.contains(": completed"),
        "{stdout}"
    );
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Tenant "))
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("Totals:"))
        .collect();
    assert_eq!(table.len(), 10, "{stdout}");
    let totals: BTreeMap<String, u64> = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Totals: "))
        .unwrap()
        .split(", ")
        .map(|part| {
            let (state, n) = part.rsplit_once(' ').unwrap();
            (state.to_owned(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(totals.values().sum::<u64>(), 10, "{totals:?}");
    assert!(totals.get("completed").copied().unwrap_or(0) >= 1, "{totals:?}");
    // Every row is in a final state, and as many rows say so as the totals.
    for (state, n) in &totals {
        assert!(["completed", "blocked", "failed"].contains(&state.as_str()), "{state}");
        let rows = table.iter().filter(|l| l.split_whitespace().any(|w| w == state)).count();
        assert_eq!(rows as u64, *n, "{state} in\n{stdout}");
    }
    assert!(stdout.contains("Finished in"), "{stdout}");
}
