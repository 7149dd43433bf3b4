use sspr_store::{Store, StoreOptions};

/// A fresh, migrated database for one test.
pub(crate) struct TestDb {
    pub(crate) store: Store,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, schema: String },
}

/// The PostgreSQL URL for tests, if configured.
pub(crate) fn postgres_url() -> Option<String> {
    std::env::var("SSPR_FLEET_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .ok()
        .filter(|u| u.starts_with("postgres"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl TestDb {
    pub(crate) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        Self { store, cleanup: Cleanup::Sqlite(dir) }
    }

    /// `None` (the test is skipped, and says so) when no PostgreSQL URL is set outside CI. In CI
    /// a missing URL fails the test: the PostgreSQL suite must run there.
    pub(crate) async fn postgres() -> Option<Self> {
        let Some(admin_url) = postgres_url() else {
            assert!(
                !in_ci(),
                "CI=true but neither SSPR_FLEET_TEST_DATABASE_URL nor DATABASE_URL is set"
            );
            eprintln!("skipped: set SSPR_FLEET_TEST_DATABASE_URL to run the PostgreSQL suite");
            return None;
        };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL for the store suite: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-c%20search_path%3D{schema}");
        let store =
            Store::connect(&url, &StoreOptions { max_connections: 4, ..Default::default() })
                .await
                .unwrap();
        store.migrate().await.unwrap();
        Some(Self { store, cleanup: Cleanup::Postgres { admin_url, schema } })
    }

    pub(crate) async fn cleanup(self) {
        self.store.close().await;
        if let Cleanup::Postgres { admin_url, schema } = self.cleanup {
            let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
        }
    }
}
