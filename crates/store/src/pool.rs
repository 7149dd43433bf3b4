use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    ConnectOptions,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use crate::StoreError;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend's name for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The backend a URL selects, from its scheme alone.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres" | "postgresql") => Ok(Backend::Postgres),
            Some(other) => Err(StoreError::InvalidUrl { reason: format!("scheme {other:?}") }),
            None => Err(StoreError::InvalidUrl { reason: "no scheme".into() }),
        }
    }
}

/// Tuning for the connection pools.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections a PostgreSQL pool opens.
    pub max_connections: u32,
    /// Most read connections a SQLite pool opens (writes always use one connection).
    pub sqlite_readers: u32,
    /// How long to wait for a pooled connection, and on SQLite how long to wait on a lock.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { max_connections: 10, sqlite_readers: 4, acquire_timeout: Duration::from_secs(5) }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Db {
    /// SQLite allows one writer at a time. A pool of one write connection queues writers in
    /// the pool instead of in SQLite's busy handler, which keeps tail latency low; reads run
    /// in parallel on their own pool thanks to WAL.
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
    },
    Postgres(PgPool),
}

/// The handle to the database. Cheap to clone; clones share the pools.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) db: Db,
}

/// Runs `$body` with `$pool` bound to a pool fit for reads, on whichever backend is in use.
/// The body is compiled once per backend, so it must type-check against both drivers.
macro_rules! with_reader {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            $crate::pool::Db::Sqlite { read: $pool, .. } => $body,
            $crate::pool::Db::Postgres($pool) => $body,
        }
    };
}

/// Like [`with_reader`], with a pool fit for writes (SQLite's single writer).
macro_rules! with_writer {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            $crate::pool::Db::Sqlite { write: $pool, .. } => $body,
            $crate::pool::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use {with_reader, with_writer};

impl Store {
    /// Opens the database at `url` (creating a SQLite file if it does not exist). Does not
    /// migrate; call [`Store::migrate`].
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        match Backend::from_url(url)? {
            Backend::Sqlite => Self::connect_sqlite(url, options).await,
            Backend::Postgres => Self::connect_postgres(url, options).await,
        }
    }

    async fn connect_sqlite(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = |source| StoreError::Connect { backend: "sqlite", source };
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl { reason: e.to_string() })?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(options.acquire_timeout)
            .log_statements(tracing::log::LevelFilter::Trace);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if in_memory {
            // Each in-memory connection would be its own database: use exactly one.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(base)
                .await
                .map_err(connect)?;
            return Ok(Self { db: Db::Sqlite { write: pool.clone(), read: pool } });
        }
        // The file holds sealed credentials, key hashes and the audit log: owner-only, like the
        // master key. Created here with mode 0600 before SQLite opens it (SQLite gives the -wal
        // and -shm files the main file's mode), and tightened if an older version left it open.
        if !read_only_url(url) {
            create_owner_only(base.get_filename()).map_err(|e| connect(sqlx::Error::Io(e)))?;
        }
        tighten_sqlite_files(base.get_filename());
        // NORMAL in WAL mode never corrupts the database; a power cut may lose the last commits.
        let base = base.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(base.clone())
            .await
            .map_err(connect)?;
        let read = SqlitePoolOptions::new()
            .max_connections(options.sqlite_readers.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(base.read_only(true))
            .await
            .map_err(connect)?;
        Ok(Self { db: Db::Sqlite { write, read } })
    }

    async fn connect_postgres(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect_options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl { reason: e.to_string() })?
            .application_name("sspr-fleet")
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect_options)
            .await
            .map_err(|source| StoreError::Connect { backend: "postgres", source })?;
        Ok(Self { db: Db::Postgres(pool) })
    }

    /// Which backend this store uses.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies every migration not yet applied. Safe to run from several processes at once on
    /// PostgreSQL (sqlx takes an advisory lock) and on SQLite (one writer).
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        let migrator = self.migrator();
        // Counting applied migrations only serves the report; no table yet means none applied.
        let before = with_writer!(self, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await
                .map_or(0, |n| usize::try_from(n).unwrap_or(0))
        });
        with_writer!(self, pool => migrator.run(pool).await?);
        let total = migrator.iter().count();
        Ok(MigrationReport { applied_now: total.saturating_sub(before), total })
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend() {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Names of the migrations compiled into this binary for the store's backend, in order.
    pub fn migration_names(&self) -> Vec<String> {
        self.migrator().iter().map(|m| format!("{}_{}", m.version, m.description)).collect()
    }

    /// Checks that the database answers a trivial query (for readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_reader!(self, pool => sqlx::query("SELECT 1").execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// Whether a SQLite URL opens the database read-only (`mode=ro` or `immutable`), in which case
/// no file may be created.
fn read_only_url(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else { return false };
    query.split('&').any(|pair| {
        matches!(pair.split_once('='), Some(("mode", "ro")) | Some(("immutable", "true" | "1")))
    })
}

/// Creates the database file, empty, with mode 0600 (less the umask) if it does not exist yet;
/// an existing file is left as it is (never truncated). SQLite takes an empty file for a new
/// database.
#[cfg(unix)]
fn create_owner_only(db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(db) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn create_owner_only(_db: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Removes the group and other permission bits from the database file and its `-wal` and `-shm`
/// files where they are set (a database created by an older version, or by hand), with one
/// warning. A failure is logged, not fatal: the database still works.
#[cfg(unix)]
fn tighten_sqlite_files(db: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut tightened = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = std::path::PathBuf::from(name);
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => {
                tightened.push(format!("{} ({mode:o} -> {:o})", path.display(), mode & 0o700))
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "the SQLite database file is readable by other users and its mode could not be changed"
            ),
        }
    }
    if !tightened.is_empty() {
        tracing::warn!(
            files = %tightened.join(", "),
            "the SQLite database files were readable by other users; their mode is now owner-only"
        );
    }
}

#[cfg(not(unix))]
fn tighten_sqlite_files(_db: &Path) {}

/// What [`Store::migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migrations applied by this call.
    pub applied_now: usize,
    /// Migrations known to this binary.
    pub total: usize,
}
