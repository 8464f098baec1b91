//! The PostgreSQL backend, for sites that outgrow one machine: several site servers (each pulling
//! its own relays) can write one database at the same time.
//!
//! - `write`: one forwarded batch as one transaction of a few set-based statements (binary
//!   `COPY` for reports and setting results, `UNNEST` arrays for the rest), and the locks that
//!   keep two site servers writing the same devices consistent and free of deadlocks.
//! - `partitions`: reports and setting results are partitioned by the UTC day they were
//!   received (the scheme is described in `migrations/postgres/0001_intake.sql`);
//!   [`PostgresStore::ensure_partitions`] makes the days ahead at connect and then from the site
//!   server's maintenance task, hourly.
//! - `copy`: the binary `COPY` encoder.
//! - `retention`: deleting aged data by whole day partitions, and the advisory run lock.
//! - `compliance`, `reads`: the policy row lock, and where a report and its setting results are
//!   (through `report_message_ids` and the day partition).
//!
//! After a batch commits, the block ranges it filled in `setting_results` are summarized in the
//! background (one summarization at a time), so finding a report's settings stays a few page
//! reads.
//!
//! # Adding tables and queries
//!
//! A new migration goes into `migrations/postgres/NNNN_name.sql` and its SQLite twin into
//! `migrations/sqlite/` (both embedded at build time). A read query both dialects can say is one
//! method of [`crate::store::Store`] in the file of its area, run with `read!` (see
//! [`crate::store`]); only SQL PostgreSQL must say its own way is a method here, in a sibling
//! file with its own `impl PostgresStore` block. Writes of many rows bind one array per column
//! and `INSERT … SELECT FROM UNNEST(…)`. A new day-partitioned table needs a
//! `received_ms` partition key, a `<table>_default` partition in its migration, and its name in
//! `partitions::PARTITIONED`. Identifier columns take `COLLATE "C"`.

pub(crate) mod compliance;
pub(crate) mod copy;
pub(crate) mod partitions;
mod reads;
pub(crate) mod retention;
pub(crate) mod write;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tracing::{instrument, warn};

use crate::clock;
use crate::store::migrate::{RECORDED_SCHEMA, check_schema, embedded, migrator};
use crate::store::{StoreError, WriteBatch, WriteOutcome, describe};

/// Connections per site server: one per relay being written, and a few for reports.
const POOL_SIZE: u32 = 12;

#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// Held while a summarization of setting_results ranges runs: one at a time is enough
    /// (each takes every range still unsummarized), and more would only queue for connections.
    summarizing: Arc<tokio::sync::Mutex<()>>,
    /// The days whose partitions batches may be written into directly.
    known_days: partitions::KnownDays,
}

/// How long opening waits for a PostgreSQL server that refuses connections or is starting up
/// (a site server started beside its database).
const WAIT_FOR_SERVER: Duration = Duration::from_secs(30);

/// A pool on `url` whose sessions are named `app` and run with the server setting `session`.
/// While the server cannot be reached it retries for up to [`WAIT_FOR_SERVER`], saying why,
/// and then fails with the server's own reason (not the pool's "timed out").
async fn open_pool(
    url: &str,
    app: &str,
    session: (&str, &str),
    max_connections: u32,
) -> Result<PgPool, StoreError> {
    let open_err = |cause| StoreError::Open {
        url: redact_url(url),
        cause,
    };
    let opts = PgConnectOptions::from_str(url)
        .map_err(open_err)?
        .application_name(app)
        .options([session]);
    let deadline = tokio::time::Instant::now() + WAIT_FOR_SERVER;
    let mut said = false;
    loop {
        match PgConnection::connect_with(&opts).await {
            Ok(c) => {
                let _ = c.close().await;
                break;
            }
            Err(e) if not_up_yet(&e) && tokio::time::Instant::now() < deadline => {
                if !said {
                    warn!(url = %redact_url(url), error = %describe(&e),
                        "waiting for PostgreSQL");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(open_err(e)),
        }
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(opts)
        .await
        .map_err(open_err)
}

/// Whether a failed connection may succeed shortly: the server refused or dropped it, or is
/// starting up or shutting down (SQLSTATE class 57P).
fn not_up_yet(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("57P")),
        _ => false,
    }
}

impl PostgresStore {
    /// Connects, applies the migrations and makes the day partitions around today.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // A site server that vanished mid-batch (a partition without a reset) must not hold its
        // device locks until TCP notices: the server ends such a session.
        let session = ("idle_in_transaction_session_timeout", "60s");
        let store = Self::new(open_pool(url, "mprelay-site", session, POOL_SIZE).await?);
        // sqlx holds an advisory lock while migrating: two site servers starting together apply
        // each migration once.
        migrator(embedded::POSTGRES).run(&store.pool).await?;
        store.ensure_partitions(clock::now_ms()).await?;
        Ok(store)
    }

    /// Connects for reading only: no migration, no partition made, every transaction read-only,
    /// after checking the schema is this binary's (see [`crate::store::Store::open_read_only`]). A role with
    /// `SELECT` on the site's tables is enough.
    pub async fn connect_read_only(url: &str) -> Result<Self, StoreError> {
        let session = ("default_transaction_read_only", "on");
        let pool = open_pool(url, "mprelay-report", session, 4).await?;
        let has_table: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&pool)
                .await?;
        let recorded = match has_table {
            true => Some(sqlx::query_as(RECORDED_SCHEMA).fetch_one(&pool).await?),
            false => None,
        };
        check_schema(&redact_url(url), recorded, embedded::POSTGRES)?;
        Ok(Self::new(pool))
    }

    fn new(pool: PgPool) -> Self {
        Self {
            pool,
            summarizing: Arc::default(),
            known_days: Default::default(),
        }
    }

    /// The connection pool, for sibling modules of the store.
    /// A transaction that changes what the policy holds: it takes the `policy_state` row lock
    /// first ([`compliance::lock_policy`]), which serialises such changes across site servers
    /// and command-line processes.
    pub(crate) async fn begin_policy_change(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        compliance::lock_policy(&mut tx).await?;
        Ok(tx)
    }

    /// A write transaction (row locks are taken by its statements).
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// A read-only transaction on one snapshot (repeatable read).
    pub(crate) async fn snapshot(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// The pool reads go to (the one pool).
    pub(crate) fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// The pool batches are written with (the one pool).
    pub(crate) fn writer_pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The days whose partitions batches may be written into directly, for sibling modules.
    pub(crate) fn known_days(&self) -> &partitions::KnownDays {
        &self.known_days
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Makes the missing day partitions around `now_ms`; returns how many it made.
    pub async fn ensure_partitions(&self, now_ms: i64) -> Result<u32, StoreError> {
        partitions::ensure(&self.pool, &self.known_days, now_ms).await
    }

    #[instrument(skip_all, fields(relay_id = %b.relay_id, reports = b.reports.len()))]
    pub async fn write_batch(&self, b: &WriteBatch) -> Result<WriteOutcome, StoreError> {
        let (out, days) = write::write_batch(&self.pool, &self.known_days, b).await?;
        if days.is_empty() {
            return Ok(out);
        }
        if let Ok(running) = self.summarizing.clone().try_lock_owned() {
            // Off the writer's path: the batch is committed and the relay can be acknowledged.
            let store = self.clone();
            tokio::spawn(async move {
                store.summarize_settings(&days).await;
                drop(running);
            });
        }
        Ok(out)
    }

    /// Waits for the background work earlier writes started (the summarization of block ranges).
    pub async fn settle(&self) {
        let _done = self.summarizing.lock().await;
    }

    /// Summarizes the block ranges of `setting_results_report` that a committed batch filled,
    /// in the partitions of the days it wrote, so finding a report's settings stays a few page
    /// reads. Unsummarized ranges are only slower to search, never wrong: a failure is logged
    /// and the next batch (or autovacuum) summarizes them.
    async fn summarize_settings(&self, days: &BTreeSet<i64>) {
        let mut tables: Vec<String> = days
            .iter()
            .map(|day| partitions::partition_name("setting_results", *day))
            .collect();
        tables.push("setting_results_default".into());
        let done = sqlx::query(
            "SELECT brin_summarize_new_values(i.indexrelid) FROM pg_index i \
             JOIN pg_class t ON t.oid = i.indrelid \
             JOIN pg_inherits h ON h.inhrelid = i.indexrelid \
             WHERE t.relname = ANY($1) AND t.relnamespace = to_regnamespace(current_schema()) \
             AND h.inhparent = 'setting_results_report'::regclass",
        )
        .bind(&tables)
        .execute(&self.pool)
        .await;
        if let Err(e) = done {
            warn!(error = %e, "summarizing setting_results block ranges failed");
        }
    }
}

/// `url` with any password (in the authority or a `password=` parameter) replaced, for messages
/// and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!("{}:***{}", &authority[..colon], &authority[at..]),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://site:s3cr3t@db.example:5432/mprelay"),
            "postgres://site:***@db.example:5432/mprelay"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(
            redact_url("postgres:///x?host=/run"),
            "postgres:///x?host=/run"
        );
    }
}
