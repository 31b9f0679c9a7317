//! A throwaway database per test, for the tests of every crate that needs
//! Postgres (feature `test-support`).
//!
//! [`TestDatabase::create`] makes `tracelab_test_<uuid>` on the server named
//! by `TRACELAB_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; its database name is
//! ignored), the same names and variable the end-to-end tests use, applies
//! the migrations, and drops the database when the value is dropped, also
//! when the test panics.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};

/// A migrated database that exists for as long as this value.
pub struct TestDatabase {
    pool: PgPool,
    url: String,
    name: String,
    server: PgConnectOptions,
}

impl TestDatabase {
    /// Creates and migrates a fresh database.
    ///
    /// Panics, saying how to start Postgres, when the server is unreachable:
    /// a test that needs Postgres must fail without it, never pass.
    pub async fn create() -> Self {
        let server_url = std::env::var("TRACELAB_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let server: PgConnectOptions = server_url
            .parse()
            .unwrap_or_else(|e| panic!("TRACELAB_TEST_DATABASE_URL {server_url:?}: {e}"));
        let name = format!("tracelab_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = server
            .clone()
            .database("postgres")
            .connect()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs Postgres at {}:{} (TRACELAB_TEST_DATABASE_URL), \
                     user postgres without a password: {e}",
                    server.get_host(),
                    server.get_port()
                )
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        let _ = admin.close().await;
        let options = server.clone().database(&name);
        let url = format!(
            "postgres://{}@{}:{}/{name}",
            options.get_username(),
            options.get_host(),
            options.get_port()
        );
        let pool = crate::connect_with(
            options,
            5,
            crate::DEFAULT_ACQUIRE_TIMEOUT,
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("connecting to test database {name}: {e}"));
        crate::migrate(&pool)
            .await
            .unwrap_or_else(|e| panic!("migrating test database {name}: {e}"));
        Self {
            pool,
            url,
            name,
            server,
        }
    }

    /// A pool of up to 5 connections to the database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The database's URL (without a password), e.g. for [`DbTarget`]
    /// (`tracelab_telemetry::db::DbTarget`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Dropping needs async I/O, and the test's runtime may be a
        // current-thread one that cannot block: use a runtime of our own on
        // a thread of our own. FORCE ends the pool's open sessions.
        let server = self.server.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = server
                    .database("postgres")
                    .connect()
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = dropped.map_err(|_| "panicked".to_string()) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}
