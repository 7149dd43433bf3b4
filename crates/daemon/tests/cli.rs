//! The `sspr-fleet` binary as an operator runs it: a real process, real sockets, real signals.

#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

const BIN: &str = env!("CARGO_BIN_EXE_sspr-fleet");

/// The binary with no SSPR_FLEET_* variables from the caller's environment, run in `dir`.
fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("SSPR_FLEET_") || name.starts_with("OTEL_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `serve` and returns once it logs that it is serving, with the lines logged so far.
fn start_serve(dir: &Path, port: u16) -> (Child, Vec<String>) {
    let mut child = command(dir)
        .arg("serve")
        .env("SSPR_FLEET_LISTEN", format!("127.0.0.1:{port}"))
        .env("SSPR_FLEET_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stderr);
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "serve exited before serving; log:\n{}", lines.join(""));
        lines.push(line.clone());
        if line.contains("serving the API") {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    (child, lines)
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    child.wait().unwrap()
}

#[test]
fn help_explains_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for sub in ["serve", "migrate", "openapi", "keys", "config"] {
        assert!(text.contains(sub), "--help does not mention {sub}:\n{text}");
    }
    let out = command(dir.path()).args(["keys", "create", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--name", "--role", "--tenant"] {
        assert!(text.contains(flag), "keys create --help lacks {flag}");
    }
}

#[test]
fn openapi_command_prints_the_committed_document() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("openapi").output().unwrap();
    assert!(out.status.success());
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), std::fs::read_to_string(committed).unwrap());
}

#[test]
fn keys_create_prints_only_the_key_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .args(["keys", "create", "--name", "ci", "--role", "admin"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.strip_suffix('\n').expect("one line");
    assert!(!key.contains('\n'));
    assert!(key.starts_with("sfk_") && key.len() == 47, "{key:?}");
    // The database (and its write-ahead log) must not contain the key in clear.
    for file in ["sspr-fleet.db", "sspr-fleet.db-wal"] {
        let path = dir.path().join(file);
        if path.exists() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "{file} holds the key");
        }
    }
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [
        ("SSPR_FLEET_LISTEN", "not-an-address"),
        ("SSPR_FLEET_MASTER_KEY", "c2hvcnQ="),
        ("SSPR_FLEET_DATABASE_URL", "mysql://db/x"),
        ("SSPR_FLEET_API__MAX_BODY_BYTES", "lots"),
        ("SSPR_FLEET_GRAPH_URL", "graph.microsoft.com"),
        ("SSPR_FLEET_LOG_FORMAT", "xml"),
    ] {
        let out = command(dir.path()).arg("serve").env(name, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(name), "{name} not named in: {stderr}");
    }
    // A secret value is never echoed back.
    let out =
        command(dir.path()).arg("serve").env("SSPR_FLEET_MASTER_KEY", "c2hvcnQ=").output().unwrap();
    assert!(!String::from_utf8(out.stderr).unwrap().contains("c2hvcnQ="));
}

#[test]
fn an_unknown_key_in_the_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cfg.toml");
    std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = command(dir.path()).arg("--config").arg(&file).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("lisen"));
}

#[tokio::test]
async fn serve_starts_on_a_fresh_sqlite_file_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, log) = start_serve(dir.path(), port);
    let log = log.join("");
    assert!(log.contains("generated a new master key"), "{log}");
    assert!(dir.path().join("sspr-fleet.db").exists());
    assert!(dir.path().join("master.key").exists());

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    let unauthorized = http.get(format!("{base}/v1/tenants")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);

    // A key made by the CLI while the daemon runs is accepted by it.
    let out = command(dir.path())
        .args(["keys", "create", "--name", "ci", "--role", "admin"])
        .output()
        .unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let me = http.get(format!("{base}/v1/me")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(me.status(), 200);

    let status = terminate(&mut child);
    assert!(status.success(), "exit status {status:?}");

    // The second start finds the same master key instead of generating another.
    let (mut child, log) = start_serve(dir.path(), port);
    let log = log.join("");
    assert!(log.contains("master key loaded from the data directory"), "{log}");
    assert!(terminate(&mut child).success());
}

#[test]
fn migrate_applies_migrations_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let migrations =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/sqlite"))
            .unwrap()
            .count();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("applied={migrations}")), "{stderr}");
    let again = command(dir.path()).arg("migrate").output().unwrap();
    assert!(String::from_utf8(again.stderr).unwrap().contains("applied=0"));
}

#[tokio::test]
async fn graph_sim_serves_a_generated_fleet_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = command(dir.path())
        .args([
            "graph-sim",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--tenants",
            "3",
            "--seed",
            "5",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "graph-sim exited early");
        if line.contains("Graph simulator serving") {
            break;
        }
    }
    std::thread::spawn(move || for _ in reader.lines() {});
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let fleet: serde_json::Value =
        http.get(format!("{base}/_sim/tenants")).send().await.unwrap().json().await.unwrap();
    let tenants = fleet["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 3);
    let tenant = tenants[0]["id"].as_str().unwrap();
    let token: serde_json::Value = http
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("client_id", sspr_graph_sim::scenario::DEFAULT_CLIENT_ID),
            ("client_secret", sspr_graph_sim::scenario::DEFAULT_CLIENT_SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let org = http
        .get(format!("{base}/v1.0/organization"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(org.status(), 200);
    assert!(terminate(&mut child).success());
}

#[test]
fn graph_sim_refuses_a_bad_scenario_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, "[[tenants]]\nusers = 1\nadmins = 3\n").unwrap();
    let out = command(dir.path()).arg("graph-sim").arg("--scenario").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("admins and guests exceed users"), "{stderr}");
}

/// Database URLs with a password in each place one can be written, and the password.
const DATABASE_URLS: [(&str, &str); 5] = [
    ("postgres://fleet:s3cretpw@db.example:5432/fleet", "s3cretpw"),
    ("postgres://fleet@db.example/fleet?sslmode=require&password=s3cretpw", "s3cretpw"),
    ("postgresql://db.example/fleet?PASSWORD=s3cretpw&user=fleet", "s3cretpw"),
    ("postgres://fleet:p%40ss%2Fw0rd@db.example/fleet", "p%40ss%2Fw0rd"),
    ("postgres://fleet:p@ss@db.example/fleet?application_name=a@b", "p@ss"),
];

#[test]
fn config_never_prints_the_database_password() {
    let dir = tempfile::tempdir().unwrap();
    for (url, password) in DATABASE_URLS {
        let out =
            command(dir.path()).arg("config").env("SSPR_FLEET_DATABASE_URL", url).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{url}: {stderr}");
        assert!(
            !stdout.contains(password) && !stderr.contains(password),
            "{url}:\n{stdout}{stderr}"
        );
        assert!(!stdout.contains("ss@") && !stdout.contains("0rd"), "{url}:\n{stdout}");
        // What is left still says where the database is.
        assert!(stdout.contains("db.example"), "{url}:\n{stdout}");
    }
}

#[test]
fn a_database_that_cannot_be_reached_is_reported_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let urls =
        ["postgres://u:s3cretpw@127.0.0.1:1/db", "postgres://u@127.0.0.1:1/db?password=s3cretpw"];
    for url in urls {
        for subcommand in ["migrate", "serve"] {
            let out = command(dir.path())
                .arg(subcommand)
                .env("SSPR_FLEET_DATABASE_URL", url)
                .env("SSPR_FLEET_LISTEN", "127.0.0.1:0")
                .env("SSPR_FLEET_DATABASE__ACQUIRE_TIMEOUT_SECS", "1")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{subcommand} {url} succeeded");
            assert!(stderr.contains("127.0.0.1:1"), "{subcommand} {url}:\n{stderr}");
            assert!(
                !stdout.contains("s3cretpw") && !stderr.contains("s3cretpw"),
                "{subcommand} {url}:\n{stdout}{stderr}"
            );
        }
    }
}
