//! PostgreSQL over TLS: `sslmode` and `sslrootcert` in `DATABASE_URL` reach the driver, and the
//! driver verifies the server's certificate.
//!
//! The test makes a CA and a server certificate for `localhost`/127.0.0.1 with rcgen, starts a
//! throwaway PostgreSQL server of its own (`initdb` into a temporary folder, `ssl = on`, TLS-only
//! `hostssl` rules, a free port; never the machine's main server) and connects through
//! `Store::connect`, the daemon's own path. Without PostgreSQL's server binaries the test is
//! skipped, except under `CI=true`, where it fails.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::{
    net::TcpListener,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use sspr_store::{Store, StoreError, StoreOptions};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The folder holding `initdb` and `pg_ctl`: Debian and Ubuntu keep them out of `PATH`, one
/// folder per major version (the newest is taken); elsewhere they are on `PATH`.
fn pg_bindir() -> Option<PathBuf> {
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn output(mut command: Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn id_of(flag: &str, user: &str) -> u32 {
    let out = output({
        let mut c = Command::new("id");
        c.args([flag, user]);
        c
    });
    assert!(out.status.success(), "id {flag} {user}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A certificate authority made for this test.
fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A throwaway PostgreSQL server owned by the test, stopped on drop.
struct TestServer {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    /// Root may not run the server: it then runs as the `postgres` OS user.
    as_postgres: Option<(u32, u32)>,
    port: u16,
    started: bool,
}

impl TestServer {
    fn command(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        if self.as_postgres.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file the server reads, owned by the server's user, with `mode`.
    fn write_server_file(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        if let Some((uid, gid)) = self.as_postgres {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        }
        path
    }

    /// Creates the cluster and starts it with TLS on, serving `cert_pem`/`key_pem`.
    fn start(bindir: PathBuf, cert_pem: &str, key_pem: &str) -> Self {
        let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        // The server's user must reach the folder: under /tmp when it is not us.
        let dir = if root {
            tempfile::Builder::new().prefix("sspr-pg-tls").tempdir_in("/tmp").unwrap()
        } else {
            tempfile::Builder::new().prefix("sspr-pg-tls").tempdir().unwrap()
        };
        let as_postgres = root.then(|| (id_of("-u", "postgres"), id_of("-g", "postgres")));
        if let Some((uid, gid)) = as_postgres {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Self { dir, bindir, as_postgres, port, started: false };

        let mut initdb = server.command("initdb");
        initdb.arg("-D").arg(server.data()).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--no-locale",
        ]);
        let out = output(initdb);
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let cert = server.write_server_file("server.crt", cert_pem, 0o644);
        let key = server.write_server_file("server.key", key_pem, 0o600);
        let dir = server.dir.path().display().to_string();
        let conf = format!(
            "\n# sspr-fleet tls test\n\
             listen_addresses = '127.0.0.1,127.0.0.2'\n\
             port = {port}\n\
             unix_socket_directories = '{dir}'\n\
             ssl = on\n\
             ssl_cert_file = '{cert}'\n\
             ssl_key_file = '{key}'\n\
             fsync = off\n",
            cert = cert.display(),
            key = key.display(),
        );
        let conf_path = server.data().join("postgresql.conf");
        let mut contents = std::fs::read_to_string(&conf_path).unwrap();
        contents.push_str(&conf);
        std::fs::write(&conf_path, contents).unwrap();
        // TCP only over TLS, so a connection that succeeds is a TLS connection.
        std::fs::write(
            server.data().join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.0/8 trust\n",
        )
        .unwrap();

        let log = server.path("server.log");
        let mut pg_ctl = server.command("pg_ctl");
        pg_ctl.arg("-D").arg(server.data()).arg("-l").arg(&log).args(["-w", "-t", "60", "start"]);
        let out = output(pg_ctl);
        server.started = out.status.success();
        assert!(
            server.started,
            "pg_ctl start failed:\n{}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        server
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.started {
            let mut pg_ctl = self.command("pg_ctl");
            pg_ctl.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]);
            let _ = pg_ctl.output();
        }
    }
}

async fn connect(url: &str) -> Result<Store, StoreError> {
    Store::connect(url, &StoreOptions { max_connections: 1, ..StoreOptions::default() }).await
}

/// The error and its causes, as one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether the connection the pool hands out runs over TLS, as the server sees it.
async fn server_sees_tls(url: &str) -> bool {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    ssl
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let Some(bindir) = pg_bindir() else {
        assert!(
            !in_ci(),
            "CI=true but PostgreSQL's server binaries (initdb, pg_ctl) were not found in \
             /usr/lib/postgresql/*/bin or on PATH: install the postgresql package"
        );
        eprintln!(
            "skipped: PostgreSQL's server binaries (initdb, pg_ctl) not found in \
             /usr/lib/postgresql/*/bin or on PATH"
        );
        return;
    };

    let ca = make_ca("sspr-fleet test CA");
    let other_ca = make_ca("some other CA");
    let server_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &*ca).unwrap();

    let server = TestServer::start(bindir, &server_cert.pem(), &server_key.serialize_pem());
    let ca_pem = server.path("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let other_ca_pem = server.path("other-ca.pem");
    std::fs::write(&other_ca_pem, other_ca.pem()).unwrap();
    let verify_full = |host: &str, ca: &Path| {
        server.url(host, &format!("sslmode=verify-full&sslrootcert={}", ca.display()))
    };

    // verify-full with the CA that signed the server's certificate: connects, over TLS.
    let url = verify_full("127.0.0.1", &ca_pem);
    let store = connect(&url).await.unwrap_or_else(|e| panic!("verify-full: {}", chain(&e)));
    store.ping().await.unwrap();
    store.close().await;
    assert!(server_sees_tls(&url).await, "verify-full connection is not TLS");

    // verify-full with a CA that did not sign it: refused, for the certificate.
    let err = connect(&verify_full("127.0.0.1", &other_ca_pem))
        .await
        .expect_err("verify-full must refuse a server certificate from another CA");
    let text = chain(&err);
    assert!(text.to_lowercase().contains("certificate"), "not a certificate error: {text}");
    assert!(text.contains("UnknownIssuer"), "expected an unknown issuer: {text}");

    // verify-full checks the name: 127.0.0.2 is the same server, not in the certificate...
    if cfg!(target_os = "linux") {
        let err = connect(&verify_full("127.0.0.2", &ca_pem))
            .await
            .expect_err("verify-full must refuse a certificate for another name");
        let text = chain(&err);
        assert!(text.contains("not valid for name"), "expected a name mismatch: {text}");
        // ...which verify-ca does not check.
        let url =
            server.url("127.0.0.2", &format!("sslmode=verify-ca&sslrootcert={}", ca_pem.display()));
        connect(&url).await.unwrap_or_else(|e| panic!("verify-ca: {}", chain(&e))).close().await;
    }

    // require: TLS without verification.
    let url = server.url("127.0.0.1", "sslmode=require");
    let store = connect(&url).await.unwrap_or_else(|e| panic!("require: {}", chain(&e)));
    store.ping().await.unwrap();
    store.close().await;
    assert!(server_sees_tls(&url).await, "sslmode=require connection is not TLS");

    // The server takes TLS only, so the successes above were TLS: without it, refused.
    let err = connect(&server.url("127.0.0.1", "sslmode=disable"))
        .await
        .expect_err("the test server accepts TLS connections only");
    assert!(chain(&err).contains("pg_hba.conf"), "{}", chain(&err));
}
