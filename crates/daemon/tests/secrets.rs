//! Customer secrets never leak. `sspr-fleet serve` and the CLI run as real processes against the
//! Graph simulator; they receive client secrets and a private key in every way the API and the
//! CLI accept them (onboarding, rotation, CSV and JSON import) and in many wrong places (bad
//! fields, bad rows, query strings). Afterwards no secret may be found in any response (body or
//! header), in the daemon's log, in any CLI output, in the raw bytes of the SQLite database and
//! its `-wal`/`-shm` files, or in any other file of the data directory (the master key and the
//! keys kept beside it after a rotation).
//!
//! `keys rotate-master` runs with the daemon stopped (the documented way: rotate, then start the
//! daemon again); the restarted daemon must still open every re-encrypted secret.

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};
use sspr_graph_sim::{GraphSim, Scenario};

const BIN: &str = env!("CARGO_BIN_EXE_sspr-fleet");
const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;

/// Every secret of this test contains the marker, so a leak is found however it is cut or cased.
const MARKER: &str = "LEAKCHECK";
const SECRET_ONE: &str = "LEAKCHECK~secret-one~7f3a9c2e4b1d8f60a5c3e9b7d2f4a6c8";
const SECRET_TWO: &str = "LEAKCHECK~secret-two~1b9d7f5e3c2a0e8d6f4b2a9c7e5d3b1f";
const WRONG_SECRET: &str = "LEAKCHECK~wrong~9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
/// Alpha's portal refresh token (the unsupported portal scope mode's credential).
const PORTAL_TOKEN: &str = "LEAKCHECK~portal-rt~4d2b8f6a0c9e7d5b3a1f8e6c4a2d0b9f";
/// The tail of every secret sent in a wrong place (see [`misplaced`]).
const MISPLACED_TAIL: &str = "5e1f0c7a9b3d";
const PRIVATE_KEY: &str = include_str!("../../graph-sim/tests/data/test-app-key.pem");
const PUBLIC_KEY: &str = include_str!("../../graph-sim/tests/data/test-app-key.pub.pem");

const CLIENT_ID: &str = "6c1e2a3b-4d5f-4a6b-8c7d-9e0f1a2b3c4d";
/// Onboarded with a client secret and `?verify=true`; rotated to the second secret.
const ALPHA: &str = "a1a1a1a1-0000-4000-8000-000000000001";
/// Onboarded with a certificate and `?verify=true`.
const BRAVO: &str = "b2b2b2b2-0000-4000-8000-000000000002";
/// Imported through the API (client secret); offboarded.
const CHARLIE: &str = "c3c3c3c3-0000-4000-8000-000000000003";
/// Imported through the API (certificate).
const DELTA: &str = "d4d4d4d4-0000-4000-8000-000000000004";
/// Imported by `sspr-fleet tenants import` (CSV); verified only in the background.
const ECHO: &str = "e5e5e5e5-0000-4000-8000-000000000005";
/// Not consented: verification and rotation fail at the token endpoint.
const FOXTROT: &str = "f6f6f6f6-0000-4000-8000-000000000006";
/// Onboarded with a certificate PEM that is a bundle: certificate and private key.
const GOLF: &str = "a7a7a7a7-0000-4000-8000-000000000007";
/// Imported by `sspr-fleet tenants import` (JSON).
const HOTEL: &str = "b8b8b8b8-0000-4000-8000-000000000008";

/// A distinct secret for one wrong place, so that a finding names the place it was sent in.
fn misplaced(place: &str) -> String {
    format!("{MARKER}~{place}~{MISPLACED_TAIL}")
}

/// A tenant id that is in no simulated tenant and is never stored (its row is invalid).
fn unused_tenant(n: u32) -> String {
    format!("0000{n:04x}-0000-4000-8000-00000000ffff")
}

fn certificate_pem() -> String {
    PUBLIC_KEY.replace("PUBLIC KEY", "CERTIFICATE")
}

fn scenario() -> String {
    let thumbprint = sspr_registry::certificate_thumbprint_s256(&certificate_pem()).unwrap();
    let mut text = format!(
        "seed = 11\n[settings]\ntime_speed = 1.0\n\
         [[apps]]\nclient_id = \"{CLIENT_ID}\"\n\
         secrets = [\"{SECRET_ONE}\", \"{SECRET_TWO}\"]\n\
         [[apps.certificates]]\nx5t_s256 = \"{thumbprint}\"\n\
         public_key_pem = '''\n{PUBLIC_KEY}'''\n"
    );
    for (id, name) in [
        (ALPHA, "Alpha"),
        (BRAVO, "Bravo"),
        (CHARLIE, "Charlie"),
        (DELTA, "Delta"),
        (ECHO, "Echo"),
        (GOLF, "Golf"),
        (HOTEL, "Hotel"),
    ] {
        text.push_str(&format!("[[tenants]]\nid = \"{id}\"\nname = \"{name}\"\nusers = 12\n"));
        if id == ALPHA {
            text.push_str(&format!("portal_refresh_token = \"{PORTAL_TOKEN}\"\n"));
        }
    }
    text.push_str(&format!(
        "[[tenants]]\nid = \"{FOXTROT}\"\nname = \"Foxtrot\"\nusers = 12\nconsented = false\n"
    ));
    text
}

/// Where the daemon and the CLI keep their files, and the Graph they talk to.
struct Env {
    data: PathBuf,
    work: PathBuf,
    graph: String,
}

impl Env {
    /// The binary with this test's settings only (none from the caller's environment).
    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(&self.work);
        for (name, _) in std::env::vars() {
            if name.starts_with("SSPR_FLEET_") || name.starts_with("OTEL_") {
                cmd.env_remove(name);
            }
        }
        let db = self.data.join("sspr-fleet.db");
        cmd.env("SSPR_FLEET_DATA_DIR", &self.data)
            .env("SSPR_FLEET_DATABASE_URL", format!("sqlite://{}", db.display()))
            .env("SSPR_FLEET_LISTEN", "127.0.0.1:0")
            .env("SSPR_FLEET_GRAPH_URL", &self.graph)
            .env("SSPR_FLEET_LOGIN_URL", &self.graph)
            .env("SSPR_FLEET_PORTAL_URL", &self.graph)
            // sqlx logs statements at trace: the strictest setting shows they carry no values.
            .env("SSPR_FLEET_LOG", "debug,sqlx=trace")
            .env("SSPR_FLEET_LOG_FORMAT", "json")
            .env("SSPR_FLEET_REGISTRY__BACKGROUND_VERIFY", "true");
        cmd
    }

    /// Runs a CLI command to completion; returns its exit code and its stdout and stderr.
    async fn run(&self, args: &[&str], outputs: &mut Vec<(String, Vec<u8>)>) -> (i32, String) {
        let mut cmd = tokio::process::Command::from(self.command());
        let out = cmd.args(args).output().await.unwrap();
        let label = format!("sspr-fleet {}", args.join(" "));
        outputs.push((format!("stdout of {label}"), out.stdout.clone()));
        outputs.push((format!("stderr of {label}"), out.stderr.clone()));
        let stdout = String::from_utf8(out.stdout).unwrap();
        (out.status.code().unwrap_or(-1), stdout)
    }

    /// Starts `serve` with its stdout and stderr in `log`; returns once it serves, with its
    /// address.
    async fn serve(&self, log: &Path) -> (Daemon, String) {
        let file = std::fs::File::create(log).unwrap();
        let mut daemon = Daemon(
            self.command()
                .arg("serve")
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let addr = text.lines().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                (v["message"] == "serving the API")
                    .then(|| v["addr"].as_str().map(str::to_owned))?
            });
            if let Some(addr) = addr {
                return (daemon, format!("http://{addr}"));
            }
            assert!(daemon.0.try_wait().unwrap().is_none(), "serve exited before serving:\n{text}");
            assert!(Instant::now() < deadline, "serve did not start in time:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running `serve`, killed if the test fails before it is stopped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends SIGTERM and waits for the exit.
async fn terminate(Daemon(child): &mut Daemon) -> std::process::ExitStatus {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "serve did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every file of the data directory (database, WAL, master key and its neighbours), labelled.
fn data_files(dir: &Path, when: &str, into: &mut Vec<(String, Vec<u8>)>) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_file() {
            into.push((format!("data file {name} ({when})"), std::fs::read(entry.path()).unwrap()));
            names.push(name);
        }
    }
    names
}

/// The database and its write-ahead log as one text, to look for sealed values.
fn database_text(dir: &Path) -> String {
    let mut bytes = std::fs::read(dir.join("sspr-fleet.db")).unwrap();
    if let Ok(wal) = std::fs::read(dir.join("sspr-fleet.db-wal")) {
        bytes.extend(wal);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The HTTP client of the test: keeps every response, headers and body, for the leak check.
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
    seen: Vec<(String, Vec<u8>)>,
}

impl Api {
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key)
    }

    /// Sends any request; keeps the response.
    async fn call(&mut self, what: &str, req: reqwest::RequestBuilder) -> (u16, Value) {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let mut text = format!("{status}\n");
        for (name, value) in res.headers() {
            text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
        }
        let body = res.bytes().await.unwrap();
        text.push_str(&String::from_utf8_lossy(&body));
        self.seen.push((format!("the response to {what}"), text.into_bytes()));
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Sends `body` (if any) as JSON; returns the status and the answer.
    async fn send(
        &mut self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.req(method, path);
        if let Some(body) = body {
            req = req.json(body);
        }
        self.call(what, req).await
    }

    /// [`Api::send`], which must answer `expected`.
    async fn expect(
        &mut self,
        what: &str,
        expected: u16,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Value {
        let (status, answer) = self.send(what, method, path, body).await;
        assert_eq!(status, expected, "{what}: {answer}");
        answer
    }
}

fn secret_credentials(secret: &str) -> Value {
    json!({"kind": "client_secret", "client_id": CLIENT_ID, "client_secret": secret})
}

fn certificate_credentials(certificate_pem: &str, private_key_pem: &str) -> Value {
    json!({"kind": "certificate", "client_id": CLIENT_ID,
           "certificate_pem": certificate_pem, "private_key_pem": private_key_pem})
}

fn tenant_body(entra: &str, name: &str, credentials: Value) -> Value {
    json!({"entra_tenant": entra, "display_name": name, "tags": ["leak-test"],
           "external_refs": {"psa": "1001"}, "credentials": credentials})
}

/// A valid onboarding body for a tenant that is never stored, with `value` set as `key` of the
/// object at `parent` (a JSON pointer): a secret in a wrong place.
fn body_with(n: u32, parent: &str, key: &str, value: Value) -> Value {
    let mut body = tenant_body(&unused_tenant(n), "Bad body", secret_credentials(SECRET_ONE));
    body.pointer_mut(parent).unwrap()[key] = value;
    body
}

use sspr_registry::import::CSV_COLUMNS;

/// One CSV line, its fields quoted when they need to be.
fn csv_row(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                (*f).to_owned()
            }
        })
        .collect();
    format!("{}\n", quoted.join(","))
}

/// A CSV file: the header, then the rows.
fn csv_file(rows: &[String]) -> String {
    format!("{}{}", csv_row(CSV_COLUMNS), rows.concat())
}

/// A client-secret row for a tenant that is never stored, with `value` in `column`.
fn row_with(n: u32, column: &str, value: &str) -> String {
    let tenant = unused_tenant(n);
    let mut fields =
        [tenant.as_str(), "Bad row", "", "", "client_secret", CLIENT_ID, SECRET_ONE, "", ""];
    fields[CSV_COLUMNS.iter().position(|c| *c == column).unwrap()] = value;
    csv_row(&fields)
}

/// A tenant id from an answer.
fn id_of(tenant: &Value) -> String {
    tenant["id"].as_str().unwrap().to_owned()
}

/// Asserts that a verification obtained a token: the tenant is ready or not ready (for reasons
/// in the tenant), not unreachable.
fn assert_token_obtained(what: &str, tenant: &Value) {
    let status = tenant["status"].as_str().unwrap();
    assert!(matches!(status, "ready" | "not_ready"), "{what}: {tenant}");
}

/// What must never be found, as (name, lowercase bytes); matching is case-insensitive.
fn needles() -> Vec<(String, Vec<u8>)> {
    let mut needles: Vec<(String, String)> = vec![
        ("the secret marker".into(), MARKER.into()),
        ("the tail of SECRET_ONE".into(), SECRET_ONE.rsplit('~').next().unwrap().into()),
        ("the tail of SECRET_TWO".into(), SECRET_TWO.rsplit('~').next().unwrap().into()),
        ("the tail of WRONG_SECRET".into(), WRONG_SECRET.rsplit('~').next().unwrap().into()),
        ("the tail of PORTAL_TOKEN".into(), PORTAL_TOKEN.rsplit('~').next().unwrap().into()),
        ("the tail of a misplaced secret".into(), MISPLACED_TAIL.into()),
        ("the marker in base64".into(), "TEVBS0NIRUNL".into()),
        ("the marker in hex".into(), "4c45414b434845434b".into()),
        ("the marker as Debug bytes".into(), "76, 69, 65, 75, 67, 72, 69, 67, 75".into()),
        ("a private key PEM header".into(), "-----BEGIN PRIVATE KEY-----".into()),
    ];
    // Slices of the private key's base64 from its second half (private exponent and primes;
    // the modulus, which the certificate shares, comes first).
    let body: Vec<&str> = PRIVATE_KEY.lines().filter(|l| !l.starts_with("-----")).collect();
    for line in body.iter().skip(body.len() / 2).step_by(3).take(4) {
        let run = line.split(|c: char| !c.is_ascii_alphanumeric()).max_by_key(|s| s.len()).unwrap();
        assert!(run.len() >= 16, "{line}");
        needles.push(("a slice of the private key".into(), run[..16].to_owned()));
    }
    let public = certificate_pem().to_ascii_lowercase();
    needles
        .into_iter()
        .map(|(name, text)| {
            let lower = text.to_ascii_lowercase();
            // The certificate is stored and shown in clear: no needle may be part of it.
            assert!(!public.contains(&lower), "{name} is part of the certificate");
            (name, lower.into_bytes())
        })
        .collect()
}

/// One line per haystack that holds any needle: which needles, and the first one in context.
fn findings(needles: &[(String, Vec<u8>)], haystacks: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (place, bytes) in haystacks {
        let lower = bytes.to_ascii_lowercase();
        let hits: Vec<(&str, usize, usize)> = needles
            .iter()
            .filter_map(|(name, needle)| {
                let at = lower.windows(needle.len()).position(|w| w == needle)?;
                Some((name.as_str(), at, needle.len()))
            })
            .collect();
        if let Some(&(_, at, len)) = hits.first() {
            let mut names: Vec<&str> = hits.iter().map(|h| h.0).collect();
            names.dedup();
            // Which of the test's secrets: the word after the marker names it.
            let mut secrets: Vec<String> = String::from_utf8_lossy(&lower)
                .split("leakcheck~")
                .skip(1)
                .map(|rest| rest.split('~').next().unwrap_or_default().chars().take(40).collect())
                .collect();
            secrets.sort();
            secrets.dedup();
            let context = &bytes[at.saturating_sub(100)..(at + len + 100).min(bytes.len())];
            let context = String::from_utf8_lossy(context).replace('\n', "\\n");
            let which = if secrets.is_empty() {
                String::new()
            } else {
                format!(" (secrets sent as {})", secrets.join(", "))
            };
            out.push(format!("- {place}: {}{which}; at byte {at}: …{context}…", names.join(", ")));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customer_secrets_never_leak_into_responses_logs_cli_output_or_files() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let sim = GraphSim::from_scenario(&Scenario::parse(&scenario()).unwrap()).unwrap();
    let running = sim.serve(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let env = Env {
        data: data.path().to_owned(),
        work: work.path().to_owned(),
        graph: running.base_url(),
    };
    // Everything the processes said and wrote, and every file they left.
    let mut logs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut cli: Vec<(String, Vec<u8>)> = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();

    // ---- First run of the daemon.
    let log1 = work.path().join("serve-1.log");
    let (mut daemon, base) = env.serve(&log1).await;
    let (code, stdout) =
        env.run(&["keys", "create", "--name", "leak", "--role", "admin"], &mut cli).await;
    assert_eq!(code, 0);
    let admin_key = stdout.trim().to_owned();
    let mut api =
        Api { http: reqwest::Client::new(), base, key: admin_key.clone(), seen: Vec::new() };
    let cert = certificate_pem();

    // Onboarding with each kind of secret, verified at once.
    let body = tenant_body(ALPHA, "Alpha", secret_credentials(SECRET_ONE));
    let alpha =
        api.expect("onboard Alpha", 201, POST, "/v1/tenants?verify=true", Some(&body)).await;
    assert_token_obtained("Alpha", &alpha);
    let alpha_id = id_of(&alpha);
    let body = tenant_body(BRAVO, "Bravo", certificate_credentials(&cert, PRIVATE_KEY));
    let bravo =
        api.expect("onboard Bravo", 201, POST, "/v1/tenants?verify=true", Some(&body)).await;
    assert_token_obtained("Bravo", &bravo);
    assert!(bravo["credentials"]["thumbprint_s256"].is_string(), "{bravo}");
    let bravo_id = id_of(&bravo);
    let body = tenant_body(FOXTROT, "Foxtrot", secret_credentials(SECRET_ONE));
    let foxtrot =
        api.expect("onboard Foxtrot", 201, POST, "/v1/tenants?verify=true", Some(&body)).await;
    assert_eq!(foxtrot["status"], "unreachable", "{foxtrot}");
    let foxtrot_id = id_of(&foxtrot);
    // A certificate PEM that is a bundle of the certificate and its private key, as many .pem
    // files are: accepted, but the private key must not be stored or shown in clear.
    let bundle = format!("{cert}{PRIVATE_KEY}");
    let body = tenant_body(GOLF, "Golf", certificate_credentials(&bundle, PRIVATE_KEY));
    let golf = api.expect("onboard Golf (bundle)", 201, POST, "/v1/tenants", Some(&body)).await;
    let golf_id = id_of(&golf);

    // Verification and rotation.
    let alpha_verify = format!("/v1/tenants/{alpha_id}/verify");
    let verified = api.expect("verify Alpha", 200, POST, &alpha_verify, None).await;
    assert_token_obtained("Alpha", &verified);
    let alpha_credentials = format!("/v1/tenants/{alpha_id}/credentials");
    let body = secret_credentials(SECRET_TWO);
    let rotated = api.expect("rotate Alpha", 200, PUT, &alpha_credentials, Some(&body)).await;
    assert_ne!(rotated["credentials"]["id"], alpha["credentials"]["id"]);
    let body = secret_credentials(WRONG_SECRET);
    let refused =
        api.expect("rotate Alpha, wrong secret", 422, PUT, &alpha_credentials, Some(&body)).await;
    assert_eq!(refused["errors"][0]["code"], "credentials_invalid", "{refused}");
    let path = format!("/v1/tenants/{foxtrot_id}/credentials");
    let body = secret_credentials(SECRET_TWO);
    let refused = api.expect("rotate Foxtrot", 422, PUT, &path, Some(&body)).await;
    assert_eq!(refused["errors"][0]["code"], "consent_missing", "{refused}");
    let path = format!("/v1/tenants/{bravo_id}/credentials");
    let body = certificate_credentials(&cert, PRIVATE_KEY);
    api.expect("rotate Bravo", 200, PUT, &path, Some(&body)).await;
    let verified = api.expect("verify Alpha after rotation", 200, POST, &alpha_verify, None).await;
    assert_token_obtained("Alpha after rotation", &verified);

    // The portal credential: stored once it obtains a portal token; a wrong one is refused.
    let path = format!("/v1/tenants/{alpha_id}/portal-credentials");
    let body = json!({"refresh_token": PORTAL_TOKEN});
    let stored = api.expect("put Alpha's portal credential", 200, PUT, &path, Some(&body)).await;
    assert_eq!(stored["unsupported"], true, "{stored}");
    let body = json!({"refresh_token": misplaced("wrong-portal-token")});
    let refused = api.expect("put a refused portal credential", 422, PUT, &path, Some(&body)).await;
    assert_eq!(refused["errors"][0]["code"], "refresh_token_invalid", "{refused}");
    let body = json!({"refresh_token": PORTAL_TOKEN, "extra": misplaced("portal-unknown-field")});
    api.expect("portal credential with an unknown field", 422, PUT, &path, Some(&body)).await;
    api.expect("get Alpha's portal credential", 200, GET, &path, None).await;

    // Import through the API: CSV with good rows and rows with a secret in a wrong column.
    let short_row = csv_row(&[&unused_tenant(7), "Short row", &misplaced("csv-short-row")]);
    let csv = csv_file(&[
        csv_row(&[CHARLIE, "Charlie", "w1", "psa=7", "", CLIENT_ID, SECRET_ONE, "", ""]),
        csv_row(&[DELTA, "Delta", "w1", "", "certificate", CLIENT_ID, "", &cert, PRIVATE_KEY]),
        row_with(1, "tags", &misplaced("csv-tags")),
        row_with(2, "kind", &misplaced("csv-kind")),
        row_with(3, "entra_tenant", &misplaced("csv-entra")),
        row_with(4, "client_id", &misplaced("csv-client-id")),
        row_with(5, "external_refs", &misplaced("csv-refs")),
        // A base64 secret ends with '=': in this column it reads as a reference name.
        row_with(6, "external_refs", &format!("{}=", misplaced("csv-refs-key"))),
        csv_row(&[
            &unused_tenant(8),
            "Swapped",
            "",
            "",
            "certificate",
            CLIENT_ID,
            "",
            PRIVATE_KEY,
            &cert,
        ]),
        csv_row(&[
            &unused_tenant(9),
            "Key",
            "",
            "",
            "certificate",
            CLIENT_ID,
            "",
            &cert,
            &misplaced("csv-key"),
        ]),
        short_row,
        csv_row(&[CHARLIE, "Charlie again", "", "", "", CLIENT_ID, SECRET_TWO, "", ""]),
    ]);
    let mut reports = Vec::new();
    for dry_run in [true, false] {
        let req = api
            .req(POST, &format!("/v1/tenants:import?dry_run={dry_run}"))
            .header("content-type", "text/csv")
            .body(csv.clone());
        let (status, report) = api.call(&format!("import CSV, dry run {dry_run}"), req).await;
        assert_eq!(status, 200, "{report}");
        reports.push(report);
    }
    let report = reports.pop().unwrap();
    assert_eq!(reports[0]["counts"], json!({"valid": 2, "invalid": 10}), "{}", reports[0]);
    assert_eq!(report["counts"], json!({"created": 2, "invalid": 10}), "{report}");
    let charlie_id = report["rows"][0]["tenant_id"].as_str().unwrap().to_owned();
    let delta_id = report["rows"][1]["tenant_id"].as_str().unwrap().to_owned();

    // Import through the API: JSON with a secret in wrong fields.
    let rows = json!([
        tenant_body(ALPHA, "Alpha", secret_credentials(SECRET_TWO)),
        body_with(10, "", "tags", json!(misplaced("json-import-tags"))),
        body_with(11, "", "credentials", json!(misplaced("json-import-credentials"))),
        body_with(12, "/credentials", "kind", json!(misplaced("json-import-kind"))),
        body_with(13, "/credentials", "secret", json!(misplaced("json-import-unknown-field"))),
    ]);
    let report = api.expect("import JSON", 200, POST, "/v1/tenants:import", Some(&rows)).await;
    assert_eq!(report["rows"][0]["outcome"], "unchanged", "{report}");
    assert_eq!(report["counts"]["invalid"], 4, "{report}");
    let path = format!("/v1/tenants:import?dry_run={}", misplaced("query-import-dry-run"));
    let req = api.req(POST, &path).header("content-type", "text/csv").body(csv_row(CSV_COLUMNS));
    let (status, _) = api.call("import with a secret in ?dry_run", req).await;
    assert_eq!(status, 400);

    // Import by the CLI, CSV and JSON, while the daemon runs.
    let file = work.path().join("tenants.csv");
    std::fs::write(
        &file,
        csv_file(&[
            csv_row(&[ECHO, "Echo", "wave-2", "", "client_secret", CLIENT_ID, SECRET_TWO, "", ""]),
            row_with(14, "tags", &misplaced("cli-csv-tags")),
            row_with(15, "kind", &misplaced("cli-csv-kind")),
            row_with(16, "entra_tenant", &misplaced("cli-csv-entra")),
        ]),
    )
    .unwrap();
    let (code, stdout) = env.run(&["tenants", "import", file.to_str().unwrap()], &mut cli).await;
    assert_eq!(code, 1, "invalid rows fail the import: {stdout}");
    assert!(stdout.contains("1 created"), "{stdout}");
    let file = work.path().join("tenants.json");
    let rows = json!([
        tenant_body(HOTEL, "Hotel", secret_credentials(SECRET_ONE)),
        body_with(17, "", "tags", json!(misplaced("cli-json-tags"))),
        body_with(18, "", "credentials", json!(misplaced("cli-json-credentials"))),
        body_with(19, "/credentials", "kind", json!(misplaced("cli-json-kind"))),
    ]);
    std::fs::write(&file, rows.to_string()).unwrap();
    let (code, stdout) = env.run(&["tenants", "import", file.to_str().unwrap()], &mut cli).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("1 created"), "{stdout}");

    // Bodies with a secret in a wrong place.
    let m = |place: &str| json!(misplaced(place));
    let refresh = json!({"kind": "delegated_refresh_token", "client_id": CLIENT_ID,
                         "refresh_token": misplaced("json-refresh-token")});
    let bad_bodies = [
        ("json-tags", body_with(20, "", "tags", m("json-tags"))),
        ("json-credentials", body_with(21, "", "credentials", m("json-credentials"))),
        ("json-unknown-field", body_with(22, "", "client_secret", m("json-unknown-field"))),
        ("json-unknown-nested", body_with(23, "/credentials", "secret", m("json-unknown-nested"))),
        ("json-kind", body_with(24, "/credentials", "kind", m("json-kind"))),
        ("json-entra", body_with(25, "", "entra_tenant", m("json-entra"))),
        ("json-client-id", body_with(26, "/credentials", "client_id", m("json-client-id"))),
        ("json-tag-item", body_with(27, "", "tags", json!([misplaced("json-tag-item")]))),
        ("json-refs", body_with(28, "", "external_refs", m("json-refs"))),
        ("json-ref-name", body_with(29, "/external_refs", &misplaced("json-ref-name"), json!("1"))),
        ("json-refresh-token", body_with(30, "", "credentials", refresh)),
        (
            "json-swapped-pems",
            body_with(31, "", "credentials", certificate_credentials(PRIVATE_KEY, &cert)),
        ),
        (
            "json-key",
            body_with(
                32,
                "",
                "credentials",
                certificate_credentials(&cert, &misplaced("json-key")),
            ),
        ),
    ];
    for (what, body) in bad_bodies {
        let (status, _) = api.send(what, POST, "/v1/tenants", Some(&body)).await;
        assert!(matches!(status, 400 | 422), "{what}: {status}");
    }
    let good = tenant_body(&unused_tenant(33), "X", secret_credentials(SECRET_ONE));
    let raw_bodies = [
        (
            "json-truncated",
            format!("{{\"credentials\": {{\"client_secret\": \"{}\"", misplaced("json-truncated")),
            "application/json",
        ),
        ("json-trailing", format!("{good} \"{}\"", misplaced("json-trailing")), "application/json"),
        ("json-bare-string", format!("\"{}\"", misplaced("json-bare-string")), "application/json"),
        ("wrong-content-type", misplaced("wrong-content-type"), "text/plain"),
    ];
    for (what, body, content_type) in raw_bodies {
        let req = api.req(POST, "/v1/tenants").header("content-type", content_type).body(body);
        let (status, _) = api.call(what, req).await;
        assert!(matches!(status, 400 | 415 | 422), "{what}: {status}");
    }
    let req = api.http.get(format!("{}/v1/tenants", api.base)).bearer_auth(misplaced("bearer"));
    let (status, _) = api.call("a secret as the bearer key", req).await;
    assert_eq!(status, 401);
    let alpha_path = format!("/v1/tenants/{alpha_id}");
    let rotation = secret_credentials(SECRET_TWO);
    let mut unknown = secret_credentials(SECRET_TWO);
    unknown["secret"] = m("rotate-unknown-field");
    let mut kind = secret_credentials(SECRET_TWO);
    kind["kind"] = m("rotate-kind");
    let bad_requests = [
        ("rotate-unknown-field", 422, PUT, alpha_credentials.clone(), Some(unknown)),
        ("rotate-kind", 422, PUT, alpha_credentials.clone(), Some(kind)),
        ("rotate-string", 422, PUT, alpha_credentials.clone(), Some(m("rotate-string"))),
        (
            "patch-tags",
            422,
            PATCH,
            alpha_path.clone(),
            Some(json!({"tags": misplaced("patch-tags")})),
        ),
        (
            "patch-tag-item",
            422,
            PATCH,
            alpha_path.clone(),
            Some(json!({"tags": [misplaced("patch-tag-item")]})),
        ),
        (
            "patch-unknown-field",
            422,
            PATCH,
            alpha_path.clone(),
            Some(json!({"secret": misplaced("patch-unknown-field")})),
        ),
        // Secrets in query strings.
        (
            "query-onboard-verify",
            400,
            POST,
            format!("/v1/tenants?verify={}", misplaced("query-onboard-verify")),
            Some(good.clone()),
        ),
        (
            "query-onboard-unknown",
            400,
            POST,
            format!("/v1/tenants?client_secret={}", misplaced("query-onboard-unknown")),
            Some(good),
        ),
        (
            "query-rotate-check",
            400,
            PUT,
            format!("{alpha_credentials}?check={}", misplaced("query-rotate-check")),
            Some(rotation),
        ),
        ("query-list-q", 200, GET, format!("/v1/tenants?q={}", misplaced("query-list-q")), None),
        (
            "query-list-tag",
            200,
            GET,
            format!("/v1/tenants?tag={}", misplaced("query-list-tag")),
            None,
        ),
        (
            "query-list-status",
            422,
            GET,
            format!("/v1/tenants?status={}", misplaced("query-list-status")),
            None,
        ),
        (
            "query-list-licence",
            422,
            GET,
            format!("/v1/tenants?licence={}", misplaced("query-list-licence")),
            None,
        ),
        (
            "query-list-cursor",
            422,
            GET,
            format!("/v1/tenants?cursor={}", misplaced("query-list-cursor")),
            None,
        ),
        (
            "query-list-limit",
            400,
            GET,
            format!("/v1/tenants?limit={}", misplaced("query-list-limit")),
            None,
        ),
        (
            "query-list-unknown",
            400,
            GET,
            format!("/v1/tenants?secret={}", misplaced("query-list-unknown")),
            None,
        ),
    ];
    for (what, expected, method, path, body) in bad_requests {
        let (status, answer) = api.send(what, method, &path, body.as_ref()).await;
        assert_eq!(status, expected, "{what}: {answer}");
    }

    // Many tenants verified at once, reads, and an offboarding.
    let body = json!({"tenant_ids": [delta_id, bravo_id]});
    let many = api.expect("verify many", 200, POST, "/v1/tenants:verify", Some(&body)).await;
    assert!(many.to_string().contains("ready"), "{many}");
    let path = format!("/v1/tenants/{charlie_id}");
    let offboarded = api.expect("offboard Charlie", 200, DELETE, &path, None).await;
    assert_eq!(offboarded["status"], "offboarded");
    assert!(offboarded["credentials"].is_null(), "{offboarded}");
    api.expect("offboard Charlie again", 200, DELETE, &path, None).await;
    let list = api.expect("list tenants", 200, GET, "/v1/tenants", None).await;
    assert_eq!(list["total"], 7, "{list}");
    api.expect("list all", 200, GET, "/v1/tenants?include_offboarded=true", None).await;
    for id in [&alpha_id, &bravo_id, &charlie_id, &delta_id, &foxtrot_id, &golf_id] {
        api.expect(&format!("get {id}"), 200, GET, &format!("/v1/tenants/{id}"), None).await;
    }
    api.expect("audit log", 200, GET, "/v1/audit", None).await;

    // The files while the daemon runs (the WAL holds the recent writes).
    data_files(data.path(), "first run, daemon running", &mut files);
    assert!(database_text(data.path()).contains("v1:"), "no sealed value in the database");
    let status = terminate(&mut daemon).await;
    assert!(status.success(), "first run: exit status {status:?}");
    data_files(data.path(), "first run, daemon stopped", &mut files);

    // ---- Master key rotation, daemon stopped.
    let (code, stdout) = env.run(&["keys", "rotate-master"], &mut cli).await;
    assert_eq!(code, 0, "{stdout}");
    // "master key rotated: OLD -> NEW; N of M stored credentials re-encrypted; ..."
    let (old_id, rest) =
        stdout.trim_start_matches("master key rotated: ").split_once(" -> ").unwrap();
    let (new_id, rest) = rest.split_once(';').unwrap();
    let counts: Vec<&str> = rest.split_whitespace().take(3).collect();
    assert_eq!(counts[0], counts[2], "every credential re-encrypted: {stdout}");
    assert!(counts[0].parse::<u32>().unwrap() >= 7, "{stdout}");
    let names = data_files(data.path(), "after rotate-master", &mut files);
    assert!(names.contains(&format!("master.key.retired.{old_id}")), "{names:?}");
    assert!(
        database_text(data.path()).contains(&format!("v1:{new_id}:")),
        "nothing sealed under the new key"
    );

    // ---- Second run: the re-encrypted secrets open.
    let log2 = work.path().join("serve-2.log");
    let (mut daemon, base) = env.serve(&log2).await;
    api.base = base;
    let alpha = api.expect("verify Alpha after restart", 200, POST, &alpha_verify, None).await;
    assert_token_obtained("Alpha after restart", &alpha);
    let path = format!("/v1/tenants/{bravo_id}/verify");
    let bravo = api.expect("verify Bravo after restart", 200, POST, &path, None).await;
    assert_token_obtained("Bravo after restart", &bravo);
    // Echo was imported by the CLI and never verified on request: background verification
    // does it, with its secret re-encrypted under the new key.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = api.expect("list after restart", 200, GET, "/v1/tenants?tag=wave-2", None).await;
        let echo = &list["items"][0];
        if echo["status"] != "unverified" {
            assert_token_obtained("Echo, verified in the background", echo);
            break;
        }
        assert!(Instant::now() < deadline, "Echo was not verified in the background: {echo}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    data_files(data.path(), "second run, daemon running", &mut files);
    let status = terminate(&mut daemon).await;
    assert!(status.success(), "second run: exit status {status:?}");
    data_files(data.path(), "second run, daemon stopped", &mut files);
    running.stop().await;

    // ---- The checks would fail if logging were off or nothing were stored.
    for log in [&log1, &log2] {
        let bytes = std::fs::read(log).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for expected in
            ["serving the API", "tenant verified", "request finished", "\"target\":\"sqlx"]
        {
            assert!(text.contains(expected), "{} lacks {expected:?}", log.display());
        }
        logs.push((format!("daemon log {}", log.display()), bytes));
    }
    // Foxtrot's verification failed at the token endpoint, and the log says why.
    let log1_text = std::fs::read_to_string(&log1).unwrap();
    assert!(log1_text.contains("\"reason\":\"consent_missing\""), "no failed verification logged");

    let haystacks: Vec<(String, Vec<u8>)> =
        api.seen.into_iter().chain(logs.clone()).chain(cli).chain(files.clone()).collect();
    let mut found = findings(&needles(), &haystacks);
    // The admin key is a secret too: it is printed once by `keys create`, and is neither in the
    // logs nor in the files.
    let key = [("the admin API key".to_owned(), admin_key.to_ascii_lowercase().into_bytes())];
    found.extend(findings(&key, &logs.into_iter().chain(files).collect::<Vec<_>>()));
    assert!(found.is_empty(), "secrets leaked ({} findings):\n{}", found.len(), found.join("\n"));
}
