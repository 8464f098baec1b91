//! Site databases for tests, on either backend: SQLite in a temporary directory, or a fresh
//! PostgreSQL database on `postgres://postgres@127.0.0.1:5432/` (override the server with
//! `MPRELAY_TEST_POSTGRES`), created for one test, named after it, and dropped when the test
//! ends — also when it fails, since the drop runs in the guard's `Drop`.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use mprelay::store::Store;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection, SqlSafeStr};
use tempfile::TempDir;

/// The two backends every store test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server the PostgreSQL tests use (its maintenance database).
pub fn postgres_server() -> String {
    std::env::var("MPRELAY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A site database that exists for one test.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    dir: Option<TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    /// An empty database for test `name` (no schema yet: `store()` applies it).
    pub async fn create(backend: Backend, name: &str) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("site.db").display());
                Self {
                    backend,
                    url,
                    dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                static N: AtomicU32 = AtomicU32::new(0);
                let slug: String = name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        }
                    })
                    .take(40)
                    .collect();
                let db = format!(
                    "t_{slug}_{}_{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                );
                let server = postgres_server();
                let mut conn = sqlx::PgConnection::connect(&server)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {server} is needed: {e}"));
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {db}")).into_sql_str())
                    .execute(&mut conn)
                    .await
                    .expect("CREATE DATABASE");
                let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
                Self {
                    backend,
                    url: format!("{base}/{db}"),
                    dir: None,
                    pg_name: Some(db),
                }
            }
        }
    }

    /// A store on this database (each call is another connection pool, like another site
    /// server).
    pub async fn store(&self) -> Store {
        Store::connect(&self.url).await.expect("store opens")
    }

    /// Runs SQL directly (to inject faults or look at what the store API does not show).
    pub async fn exec(&self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_string()).into_sql_str();
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    /// One integer from SQL.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let sql = AssertSqlSafe(sql.to_string()).into_sql_str();
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(db) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its own
        // with a runtime of its own drops the database (FORCE ends the store's connections).
        let server = postgres_server();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&server)
                    .await?;
                sqlx::query(
                    AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                        .into_sql_str(),
                )
                .execute(&pool)
                .await?;
                pool.close().await;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("could not drop the test database: {e}");
        }
    }
}

/// Defines a test module named like the async test function `$name(db: TestDb)`, with one
/// `#[tokio::test]` per backend, each running the function on a fresh database named after it.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::db::TestDb::create($crate::db::Backend::Sqlite, stringify!($name))
                    .await;
                $name(db).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db =
                    $crate::db::TestDb::create($crate::db::Backend::Postgres, stringify!($name))
                        .await;
                $name(db).await
            }
        }
    };
}
