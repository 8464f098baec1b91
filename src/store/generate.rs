//! A generated site database for `mprelay bench site`: devices, their reports and setting
//! results, history intervals and current state, written set-based (`INSERT … SELECT` over a
//! recursive number series, which both dialects run) in the same tables and with the same
//! meaning the writer gives them, so every page reads it as real data.
//!
//! The shape ([`SiteShape`]): `devices` devices, `baselines` baselines of `settings` settings,
//! each device reporting every baseline every 4 hours for `days` days from `start_ms` (a UTC
//! midnight). Slot `t` (0 … 6·days−1) of device `d` and baseline `b` is evaluated and received
//! at `start + t·4 h + (d·7919 mod 4 h)`, so a slot's reports spread over its 4 hours and stay in
//! its day. Its report id is `(t·devices + d)·baselines + b + 1`, ascending with slot as the
//! writer's are. Devices whose number is a multiple of 10 flap: on day `k` they are
//! non-compliant with baseline `b` when `days − 1 − k + b` is even (the first setting fails:
//! on the last day, with the even baselines), so their history has one interval per day; every other device is compliant throughout, one open
//! interval. Only what differs between the dialects (hex and decimal padding, blobs, the
//! partition key and dedup table of PostgreSQL) is written per backend.

use sqlx::{AssertSqlSafe, SqlSafeStr};

use super::{Store, StoreError};

/// Milliseconds between two reports of a device for a baseline.
pub const SLOT_MS: i64 = 4 * 3_600_000;
/// Reports per device and baseline per day.
pub const SLOTS_PER_DAY: i64 = 6;

/// What [`Store::generate_slot`] and friends generate.
#[derive(Debug, Clone, Copy)]
pub struct SiteShape {
    pub devices: i64,
    pub days: i64,
    pub baselines: i64,
    pub settings: i64,
    /// Settings per configuration item (ci `c` of baseline `b` is `bench-b{b}-ci{c}`, its
    /// settings `s0` …).
    pub per_ci: i64,
    /// A UTC midnight.
    pub start_ms: i64,
    /// Length of each report's signature and signed bytes (as a real report's).
    pub signature_len: i64,
    pub signed_len: i64,
}

impl SiteShape {
    pub fn slots(&self) -> i64 {
        self.days * SLOTS_PER_DAY
    }

    /// Report ids of slot `t`: `(first, last)`.
    pub fn slot_ids(&self, t: i64) -> (i64, i64) {
        let per = self.devices * self.baselines;
        (t * per + 1, (t + 1) * per)
    }

    /// The configuration item `c` of baseline `b` (its id).
    pub fn ci_id(b: i64, c: i64) -> String {
        format!("bench-b{b}-ci{c}")
    }

    pub fn baseline_id(b: i64) -> String {
        format!("bench-b{b}")
    }
}

/// SQL the dialects spell differently.
struct Dialect {
    postgres: bool,
}

impl Dialect {
    fn of(store: &Store) -> Self {
        Self {
            postgres: matches!(store, Store::Postgres(_)),
        }
    }

    /// `e` as `width` lower-case hex digits.
    fn hex(&self, e: &str, width: u32) -> String {
        if self.postgres {
            format!("lpad(to_hex({e}), {width}, '0')")
        } else {
            format!("printf('%0{width}x', {e})")
        }
    }

    /// `e` as `width` decimal digits.
    fn dec(&self, e: &str, width: u32) -> String {
        if self.postgres {
            format!("lpad(CAST({e} AS TEXT), {width}, '0')")
        } else {
            format!("printf('%0{width}d', {e})")
        }
    }

    /// `n` bytes that do not compress (as a signature does not).
    fn blob(&self, n: i64) -> String {
        if self.postgres {
            format!("decode(repeat('a5', {n}), 'hex')")
        } else {
            format!("randomblob({n})")
        }
    }

    /// The message id of report `e` (a UUID-shaped string).
    fn message_id(&self, e: &str) -> String {
        format!("'00000000-0000-7000-8000-' || {}", self.hex(e, 12))
    }
}

/// `n(i)` from 0 to `last` (a recursive series both dialects run).
fn series(name: &str, last: i64) -> String {
    format!("{name}(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM {name} WHERE i < {last})")
}

/// When device `d` (an SQL expression) reports in slot `t` (an SQL expression).
fn at(shape: &SiteShape, t: &str, d: &str) -> String {
    format!(
        "({} + CAST({t} AS BIGINT) * {SLOT_MS} + (({d}) * 7919) % {SLOT_MS})",
        shape.start_ms
    )
}

/// The state of device `d` for baseline `b` on day `k` (SQL expressions).
fn state(shape: &SiteShape, d: &str, b: &str, k: &str) -> String {
    format!(
        "CASE WHEN ({d}) % 10 = 0 AND ({} - ({k}) + ({b})) % 2 = 0 \
         THEN 'non_compliant' ELSE 'compliant' END",
        shape.days - 1
    )
}

impl Store {
    /// Writes the devices; returns how many.
    pub async fn generate_devices(&self, shape: &SiteShape) -> Result<u64, StoreError> {
        let x = Dialect::of(self);
        let last = at(shape, &(shape.slots() - 1).to_string(), "d.i");
        let sql = format!(
            "WITH RECURSIVE {} \
             INSERT INTO devices (device_id, public_key, key_epoch, hostname, os, agent_version, \
                 hardware_id, enrolled_ms, last_seen_ms, last_relay, blocked) \
             SELECT {}, {}, 1, 'bench-' || {}, \
                 CASE d.i % 3 WHEN 0 THEN 'Debian 12' WHEN 1 THEN 'Ubuntu 24.04' \
                 ELSE 'Rocky Linux 9' END, '0.9.0', '', {}, {last}, 'bench-relay', 0 = 1 \
             FROM d",
            series("d", shape.devices - 1),
            x.hex("d.i", 32),
            x.blob(32),
            x.dec("d.i", 6),
            shape.start_ms,
        );
        execute(self, sql).await
    }

    /// Writes the reports of slot `t` and their setting results; returns the setting rows.
    pub async fn generate_slot(&self, shape: &SiteShape, t: i64) -> Result<u64, StoreError> {
        let x = Dialect::of(self);
        let k = t / SLOTS_PER_DAY;
        let (lo, hi) = shape.slot_ids(t);
        let id = format!(
            "({t} * {} + d.i) * {} + b.i + 1",
            shape.devices, shape.baselines
        );
        let when = at(shape, &t.to_string(), "d.i");
        let st = state(shape, "d.i", "b.i", &k.to_string());
        let failing = format!("(CASE WHEN {st} = 'non_compliant' THEN 1 ELSE 0 END)");
        let reports = format!(
            "WITH RECURSIVE {}, {} \
             INSERT INTO compliance_reports (report_id, message_id, device_id, baseline_id, \
                 baseline_revision, baseline_name, created_ms, evaluated_ms, received_ms, \
                 stored_ms, relay_id, state, max_severity, n_compliant, n_non_compliant, n_error, \
                 n_not_applicable, n_unknown, signature, signed_bytes) \
             SELECT {id}, {}, {}, 'bench-b' || b.i, 1, 'Bench baseline ' || b.i, \
                 {when}, {when}, {when}, {when}, 'bench-relay', {st}, \
                 CASE WHEN {st} = 'non_compliant' THEN 'warning' ELSE 'none' END, \
                 {} - {failing}, {failing}, 0, 0, 0, {}, {} \
             FROM d CROSS JOIN b",
            series("d", shape.devices - 1),
            series("b", shape.baselines - 1),
            x.message_id(&id),
            x.hex("d.i", 32),
            shape.settings,
            x.blob(shape.signature_len),
            x.blob(shape.signed_len),
        );
        let (day_lo, day_hi) = (
            shape.start_ms + k * super::DAY_MS,
            shape.start_ms + (k + 1) * super::DAY_MS,
        );
        let (key_col, key_val, in_day) = if x.postgres {
            (
                "received_ms, ",
                "r.received_ms, ",
                format!("AND r.received_ms >= {day_lo} AND r.received_ms < {day_hi}"),
            )
        } else {
            ("", "", String::new())
        };
        let settings = format!(
            "WITH RECURSIVE {} \
             INSERT INTO setting_results (report_id, {key_col}ordinal, ci_id, ci_revision, \
                 setting_id, state, severity, expected, observed_before, observed_after, \
                 remediated, error) \
             SELECT r.report_id, {key_val}o.i, r.baseline_id || '-ci' || (o.i / {}), 1, \
                 's' || (o.i % {}), \
                 CASE WHEN o.i = 0 THEN r.state ELSE 'compliant' END, 'warning', '== 0', \
                 CASE WHEN o.i = 0 AND r.state = 'non_compliant' THEN '1' ELSE '0' END, \
                 NULL, 0 = 1, '' \
             FROM compliance_reports r CROSS JOIN o \
             WHERE r.report_id BETWEEN {lo} AND {hi} {in_day}",
            series("o", shape.settings - 1),
            shape.per_ci,
            shape.per_ci,
        );
        let mut statements = vec![reports, settings];
        if x.postgres {
            statements.push(format!(
                "INSERT INTO report_message_ids (message_id, report_id, received_ms) \
                 SELECT r.message_id, r.report_id, r.received_ms FROM compliance_reports r \
                 WHERE r.report_id BETWEEN {lo} AND {hi} {in_day}"
            ));
        }
        let n = execute_all(self, statements).await?;
        Ok(n[1])
    }

    /// Writes the history intervals and the current state the generated reports imply, and
    /// moves PostgreSQL's report id sequence past the generated ids.
    pub async fn generate_state(&self, shape: &SiteShape) -> Result<(), StoreError> {
        let x = Dialect::of(self);
        let last_day = shape.days - 1;
        let first = at(shape, "k.i * 6", "d.i");
        let next = at(shape, "(k.i + 1) * 6", "d.i");
        let id = format!(
            "(k.i * 6 * {} + d.i) * {} + b.i + 1",
            shape.devices, shape.baselines
        );
        let history = format!(
            "WITH RECURSIVE {}, {}, {} \
             INSERT INTO compliance_history (device_id, baseline_id, state, started_ms, \
                 ended_ms, started_message_id) \
             SELECT {}, 'bench-b' || b.i, {}, {first}, \
                 CASE WHEN d.i % 10 = 0 AND k.i < {last_day} THEN {next} ELSE NULL END, {} \
             FROM d CROSS JOIN b CROSS JOIN k \
             WHERE d.i % 10 = 0 OR k.i = 0",
            series("d", shape.devices - 1),
            series("b", shape.baselines - 1),
            series("k", last_day),
            x.hex("d.i", 32),
            state(shape, "d.i", "b.i", "k.i"),
            x.message_id(&id),
        );
        let (lo, hi) = shape.slot_ids(shape.slots() - 1);
        let in_day = if x.postgres {
            format!(
                "AND r.received_ms >= {}",
                shape.start_ms + last_day * super::DAY_MS
            )
        } else {
            String::new()
        };
        let current = format!(
            "INSERT INTO current_compliance (device_id, baseline_id, baseline_revision, \
                 baseline_name, state, max_severity, evaluated_ms, message_id, n_compliant, \
                 n_non_compliant, n_error, n_not_applicable, n_unknown, open_history_id, \
                 updated_ms) \
             SELECT r.device_id, r.baseline_id, r.baseline_revision, r.baseline_name, r.state, \
                 r.max_severity, r.evaluated_ms, r.message_id, r.n_compliant, \
                 r.n_non_compliant, r.n_error, r.n_not_applicable, r.n_unknown, h.history_id, \
                 r.stored_ms \
             FROM compliance_reports r JOIN compliance_history h \
                 ON h.device_id = r.device_id AND h.baseline_id = r.baseline_id \
                 AND h.ended_ms IS NULL \
             WHERE r.report_id BETWEEN {lo} AND {hi} {in_day}"
        );
        let mut statements = vec![history, current];
        if x.postgres {
            statements.push(format!(
                "SELECT setval('compliance_reports_report_id_seq', {hi})"
            ));
            // As the writer does after each batch: summarize the block ranges filled, or
            // finding a report's settings reads its whole day.
            statements.push(
                "SELECT brin_summarize_new_values(i.indexrelid) FROM pg_index i \
                 JOIN pg_inherits h ON h.inhrelid = i.indexrelid \
                 WHERE h.inhparent = 'setting_results_report'::regclass"
                    .to_string(),
            );
        }
        statements.push("ANALYZE".to_string());
        execute_all(self, statements).await?;
        Ok(())
    }

    /// Rows per table of the site schema, by table name.
    pub async fn table_rows(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut out = vec![];
        for t in TABLES {
            let sql = AssertSqlSafe(format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {t}"));
            let n: i64 =
                read!(self, p => sqlx::query_scalar(sql.into_sql_str()).fetch_one(p).await?);
            out.push((t.to_string(), n));
        }
        Ok(out)
    }

    /// The database's size on disk in bytes (SQLite: its pages, after a checkpoint moved the
    /// log into the file; PostgreSQL: `pg_database_size`).
    pub async fn size_on_disk(&self) -> Result<i64, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(s.writer_pool())
                    .await?;
                sqlx::query_scalar(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                )
                .fetch_one(s.reader())
                .await?
            }
            Store::Postgres(s) => {
                sqlx::query_scalar("SELECT CAST(pg_database_size(current_database()) AS BIGINT)")
                    .fetch_one(s.pool())
                    .await?
            }
        })
    }
}

/// The tables [`Store::table_rows`] counts.
const TABLES: &[&str] = &[
    "devices",
    "compliance_reports",
    "setting_results",
    "current_compliance",
    "compliance_history",
    "configuration_items",
    "baselines",
    "baseline_members",
];

async fn execute(store: &Store, sql: String) -> Result<u64, StoreError> {
    Ok(execute_all(store, vec![sql]).await?[0])
}

/// Runs the statements in one transaction; returns the rows each touched. Only statements
/// built above from constants and numbers.
async fn execute_all(store: &Store, statements: Vec<String>) -> Result<Vec<u64>, StoreError> {
    let mut n = vec![];
    match store {
        Store::Sqlite(s) => {
            s.before_write().await?;
            let mut tx = s.writer_pool().begin_with("BEGIN IMMEDIATE").await?;
            for sql in statements {
                let sql = AssertSqlSafe(sql).into_sql_str();
                n.push(sqlx::query(sql).execute(&mut *tx).await?.rows_affected());
            }
            tx.commit().await?;
            s.after_write();
        }
        Store::Postgres(s) => {
            let mut tx = s.pool().begin().await?;
            for sql in statements {
                let sql = AssertSqlSafe(sql).into_sql_str();
                n.push(sqlx::query(sql).execute(&mut *tx).await?.rows_affected());
            }
            tx.commit().await?;
        }
    }
    Ok(n)
}
