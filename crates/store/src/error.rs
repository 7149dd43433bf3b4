/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is neither `sqlite:` nor `postgres:`/`postgresql:`, or cannot be parsed.
    #[error("unsupported database URL (expected sqlite:... or postgres://...): {reason}")]
    InvalidUrl {
        /// Why the URL was rejected; never contains the URL itself, which may hold a password.
        reason: String,
    },
    /// The database could not be reached or opened.
    #[error("cannot connect to the {backend} database")]
    Connect {
        /// Which backend was being connected to.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed to apply.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    /// A unique constraint was violated.
    #[error("{what} already exists")]
    Conflict {
        /// The kind of object that already exists.
        what: &'static str,
    },
    /// A stored value could not be turned back into its domain type.
    #[error("stored {what} is not valid: {detail}")]
    Corrupt {
        /// The kind of object that was being read.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}

impl StoreError {
    /// Maps a unique-violation error to [`StoreError::Conflict`], anything else to `Query`.
    pub(crate) fn on_unique(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |err| match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict { what },
            _ => StoreError::Query(err),
        }
    }
}
