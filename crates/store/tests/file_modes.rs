//! The SQLite database holds the tenants' sealed credentials, the API keys' hashes and the audit
//! log: it and its WAL and shared-memory files must be readable by their owner only (0600),
//! whatever the process umask, as the master key beside them is.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use sspr_store::{Store, StoreOptions};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{} should exist: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The process umask, from `/proc/self/status` (Linux); `None` elsewhere.
fn umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
}

/// Opens the store, migrates (writes in WAL mode) and checks the three files while the
/// connections are still open (SQLite removes the -wal file on the last close).
async fn open_write_and_check(db: &Path) {
    let url = format!("sqlite://{}", db.display());
    let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    let wal = sidecar(db, "-wal");
    let shm = sidecar(db, "-shm");
    assert!(wal.exists(), "WAL mode: {} should exist after writes", wal.display());
    for path in [db, &wal, &shm] {
        assert_eq!(mode(path), 0o600, "{} has mode {:o}", path.display(), mode(path));
    }
    store.close().await;
}

#[tokio::test]
async fn a_new_database_and_its_wal_and_shm_are_owner_only() {
    // With the usual umask 022 a file created without an explicit mode would be 0644; say which
    // umask this run had so a pass under umask 077 is not mistaken for proof.
    if let Some(mask) = umask() {
        eprintln!("process umask {mask:04o}");
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fleet.db");
    open_write_and_check(&db).await;
}

#[tokio::test]
async fn an_existing_world_readable_database_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fleet.db");
    // A database created by an older version: the files exist and are 0644.
    let url = format!("sqlite://{}", db.display());
    let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    for path in [db.clone(), sidecar(&db, "-wal"), sidecar(&db, "-shm")] {
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let before = std::fs::read(&db).unwrap();
    open_write_and_check(&db).await;
    // Not truncated or replaced: the migrations are still there.
    let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.migrate().await.unwrap().applied_now, 0);
    store.close().await;
    assert!(!before.is_empty());
}

#[tokio::test]
async fn a_stricter_existing_mode_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fleet.db");
    let url = format!("sqlite://{}", db.display());
    let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
    // Only the mode matters here (the open may fail for a user other than root): a read-only
    // file stays 0400, not widened to 0600.
    if let Ok(store) = Store::connect(&url, &StoreOptions::default()).await {
        store.close().await;
    }
    assert_eq!(mode(&db), 0o400);
}
