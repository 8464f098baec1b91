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
//!
//! After a batch commits, the block ranges it filled in `setting_results` are summarized in the
//! background (one summarization at a time), so finding a report's settings stays a few page
//! reads.
//!
//! # Adding tables and queries
//!
//! A new migration goes into `migrations/postgres/NNNN_name.sql` (embedded at build time). A read
//! query is a method of [`PostgresStore`], here or in a sibling file with its own
//! `impl PostgresStore` block using `PostgresStore::pool`; writes of many rows bind one array
//! per column and `INSERT … SELECT FROM UNNEST(…)`. A new day-partitioned table needs a
//! `received_ms` partition key, a `<table>_default` partition in its migration, and its name in
//! `partitions::PARTITIONED`. Identifier columns take `COLLATE "C"`.

pub(crate) mod compliance;
pub(crate) mod console;
pub(crate) mod copy;
pub(crate) mod maintenance;
pub(crate) mod partitions;
pub(crate) mod retention;
pub(crate) mod terms;
pub(crate) mod write;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tracing::{instrument, warn};

use super::rows::{baseline_summary_row, current_row, cursor_row, history_view_row};
use super::sqlite::{embedded, migrator};
use super::*;
use crate::clock;

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
    /// after checking the schema is this binary's (see [`Store::open_read_only`]). A role with
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

    pub async fn relay_cursor(&self, relay_id: &str) -> Result<Option<RelayCursor>, StoreError> {
        let row = sqlx::query(
            "SELECT relay_id, spool_id, through_seq, url, last_pull_ms, last_seq, \
             pending_records, pending_bytes FROM relay_cursors WHERE relay_id = $1",
        )
        .bind(relay_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| cursor_row(&r)).transpose()
    }

    pub async fn relay_cursors(&self) -> Result<Vec<RelayCursor>, StoreError> {
        let rows = sqlx::query(
            "SELECT relay_id, spool_id, through_seq, url, last_pull_ms, last_seq, \
             pending_records, pending_bytes FROM relay_cursors ORDER BY relay_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(cursor_row).collect()
    }

    pub async fn counts(&self) -> Result<Counts, StoreError> {
        let (devices, reports, settings, acceptances, quarantined): (i64, i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM devices), (SELECT COUNT(*) FROM compliance_reports), \
                 (SELECT COUNT(*) FROM setting_results), (SELECT COUNT(*) FROM terms_acceptances), \
                 (SELECT COUNT(*) FROM quarantined_records)",
            )
            .fetch_one(&self.pool)
            .await?;
        Ok(Counts {
            devices: devices as u64,
            reports: reports as u64,
            settings: settings as u64,
            acceptances: acceptances as u64,
            quarantined: quarantined as u64,
        })
    }

    pub async fn baseline_summaries(&self) -> Result<Vec<BaselineSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT baseline_id, MAX(baseline_name), COUNT(*), \
             COUNT(*) FILTER (WHERE state = 'compliant'), \
             COUNT(*) FILTER (WHERE state = 'non_compliant'), \
             COUNT(*) FILTER (WHERE state = 'error'), \
             COUNT(*) FILTER (WHERE state = 'unknown'), \
             COUNT(*) FILTER (WHERE state = 'not_applicable') \
             FROM current_compliance GROUP BY baseline_id ORDER BY baseline_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(baseline_summary_row).collect()
    }

    /// Where a report lives: its number and its received time (which names its partition).
    async fn locate(&self, message_id: &str) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT report_id, received_ms FROM report_message_ids WHERE message_id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn report(&self, message_id: &str) -> Result<Option<ReportView>, StoreError> {
        let Some((id, received)) = self.locate(message_id).await? else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT message_id, device_id, baseline_id, baseline_revision, baseline_name, \
             evaluated_ms, received_ms, relay_id, state, max_severity, n_compliant, \
             n_non_compliant, n_error, n_not_applicable, n_unknown, signature, signed_bytes \
             FROM compliance_reports WHERE report_id = $1 AND received_ms = $2",
        )
        .bind(id)
        .bind(received)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ReportView {
                message_id: r.try_get(0)?,
                device_id: r.try_get(1)?,
                baseline_id: r.try_get(2)?,
                baseline_revision: r.try_get::<i32, _>(3)? as u32,
                baseline_name: r.try_get(4)?,
                evaluated_ms: r.try_get(5)?,
                received_ms: r.try_get(6)?,
                relay_id: r.try_get(7)?,
                state: r.try_get(8)?,
                max_severity: r.try_get(9)?,
                n_compliant: r.try_get::<i32, _>(10)? as u32,
                n_non_compliant: r.try_get::<i32, _>(11)? as u32,
                n_error: r.try_get::<i32, _>(12)? as u32,
                n_not_applicable: r.try_get::<i32, _>(13)? as u32,
                n_unknown: r.try_get::<i32, _>(14)? as u32,
                signature: r.try_get(15)?,
                signed_bytes: r.try_get(16)?,
            })
        })
        .transpose()
    }

    pub async fn report_settings(&self, message_id: &str) -> Result<Vec<SettingView>, StoreError> {
        let Some((id, received)) = self.locate(message_id).await? else {
            return Ok(vec![]);
        };
        let rows = sqlx::query(
            "SELECT ci_id, ci_revision, setting_id, state, severity, expected, observed_before, \
             observed_after, remediated, error FROM setting_results \
             WHERE report_id = $1 AND received_ms = $2 ORDER BY ordinal",
        )
        .bind(id)
        .bind(received)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SettingView {
                    ci_id: r.try_get(0)?,
                    ci_revision: r.try_get::<i32, _>(1)? as u32,
                    setting_id: r.try_get(2)?,
                    state: r.try_get(3)?,
                    severity: r.try_get(4)?,
                    expected: r.try_get(5)?,
                    observed_before: r.try_get(6)?,
                    observed_after: r.try_get(7)?,
                    remediated: r.try_get(8)?,
                    error: r.try_get(9)?,
                })
            })
            .collect()
    }

    pub async fn device(&self, device_id: &str) -> Result<Option<DeviceView>, StoreError> {
        let row = sqlx::query(
            "SELECT device_id, hostname, os, agent_version, hardware_id, key_epoch, enrolled_ms, \
             last_seen_ms, last_relay, blocked FROM devices WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(DeviceView {
                device_id: r.try_get(0)?,
                hostname: r.try_get(1)?,
                os: r.try_get(2)?,
                agent_version: r.try_get(3)?,
                hardware_id: r.try_get(4)?,
                key_epoch: r.try_get::<i32, _>(5)? as u32,
                enrolled_ms: r.try_get(6)?,
                last_seen_ms: r.try_get(7)?,
                last_relay: r.try_get(8)?,
                blocked: r.try_get(9)?,
            })
        })
        .transpose()
    }

    pub async fn current(
        &self,
        device_id: &str,
        baseline_id: &str,
    ) -> Result<Option<CurrentRow>, StoreError> {
        let row = sqlx::query(
            "SELECT device_id, baseline_id, state, evaluated_ms, message_id, open_history_id \
             FROM current_compliance WHERE device_id = $1 AND baseline_id = $2",
        )
        .bind(device_id)
        .bind(baseline_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| current_row(&r)).transpose()
    }

    pub async fn history(
        &self,
        device_id: &str,
        baseline_id: &str,
    ) -> Result<Vec<HistoryView>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, started_ms, ended_ms FROM compliance_history \
             WHERE device_id = $1 AND baseline_id = $2 ORDER BY started_ms, history_id",
        )
        .bind(device_id)
        .bind(baseline_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(history_view_row).collect()
    }

    pub async fn report_message_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT message_id FROM report_message_ids ORDER BY report_id")
                .fetch_all(&self.pool)
                .await?,
        )
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
