//! The SQLite write path: a forwarded batch as one `BEGIN IMMEDIATE` transaction of
//! multi-row statements in power-of-two chunks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::SqliteStore;
use crate::clock;
use crate::store::StoreError;
use crate::store::decide::{HistoryInsert, HistoryRef, fold_devices, plan_transitions};
use crate::store::rows::current_row;
use crate::store::types::{DeviceUpsert, ReportRow, SettingRow, WriteBatch, WriteOutcome};

/// Rows per multi-row statement: powers of two up to this many, so the statement cache holds a
/// handful of shapes; 1024 × 12 columns stays under SQLite's 32,766 bound parameters.
const MAX_ROWS: usize = 1024;

impl SqliteStore {
    pub async fn write_batch(&self, b: &WriteBatch) -> Result<WriteOutcome, StoreError> {
        self.before_write().await?;
        let out = self.write_batch_tx(b).await?;
        self.after_write();
        Ok(out)
    }

    async fn write_batch_tx(&self, b: &WriteBatch) -> Result<WriteOutcome, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let now = clock::now_ms();
        let mut out = WriteOutcome::default();

        // Dedup: against what is stored, and within the batch (first occurrence wins).
        let existing = existing_ids(
            &mut tx,
            "compliance_reports",
            b.reports.iter().map(|r| r.message_id.as_str()),
        )
        .await?;
        let mut seen = HashSet::with_capacity(b.reports.len());
        let reports: Vec<&ReportRow> = b
            .reports
            .iter()
            .filter(|r| !existing.contains(&r.message_id) && seen.insert(r.message_id.as_str()))
            .collect();
        out.reports_duplicate = (b.reports.len() - reports.len()) as u64;
        out.reports_inserted = reports.len() as u64;
        out.critical_events = crate::store::events::critical_events(reports.iter().copied());

        upsert_devices(&mut tx, &fold_devices(&b.devices)).await?;

        let base: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(report_id), 0) FROM compliance_reports")
                .fetch_one(&mut *tx)
                .await?;
        let numbered: Vec<(i64, &ReportRow)> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| (base + 1 + i as i64, *r))
            .collect();
        insert_reports(&mut tx, "compliance_reports", &numbered, now).await?;
        out.settings_inserted = insert_settings(&mut tx, "setting_results", &numbered).await?;

        apply_transitions(&mut tx, &reports, now).await?;

        for chunk in pow2_chunks(&b.acceptances, MAX_ROWS / 2) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO terms_acceptances (message_id, device_id, user_name, terms_version, \
                 accepted_ms, received_ms, relay_id) ",
            );
            qb.push_values(chunk, |mut q, a| {
                q.push_bind(a.message_id.as_str())
                    .push_bind(a.device_id.as_str())
                    .push_bind(a.user.as_str())
                    .push_bind(a.terms_version as i64)
                    .push_bind(a.accepted_ms)
                    .push_bind(a.received_ms)
                    .push_bind(a.relay_id.as_str());
            });
            qb.push(" ON CONFLICT(message_id) DO NOTHING");
            out.acceptances_inserted += qb.build().execute(&mut *tx).await?.rows_affected();
        }

        for chunk in pow2_chunks(&b.quarantined, 64) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO quarantined_records (relay_id, spool_id, seq, message_id, received_ms, \
                 reason, payload, stored_ms) ",
            );
            qb.push_values(chunk, |mut q, r| {
                q.push_bind(b.relay_id.as_str())
                    .push_bind(b.spool_id.as_str())
                    .push_bind(r.seq as i64)
                    .push_bind(r.message_id.as_str())
                    .push_bind(r.received_ms)
                    .push_bind(r.reason.as_str())
                    .push_bind(r.payload.as_slice())
                    .push_bind(now);
            });
            qb.push(" ON CONFLICT DO NOTHING");
            out.quarantined += qb.build().execute(&mut *tx).await?.rows_affected();
        }

        sqlx::query(
            "INSERT INTO relay_cursors (relay_id, spool_id, through_seq, url, last_pull_ms, \
             last_seq, pending_records, pending_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT(relay_id) DO UPDATE SET spool_id = excluded.spool_id, \
             through_seq = excluded.through_seq, url = excluded.url, \
             last_pull_ms = excluded.last_pull_ms, last_seq = excluded.last_seq, \
             pending_records = excluded.pending_records, pending_bytes = excluded.pending_bytes",
        )
        .bind(b.relay_id.as_str())
        .bind(b.spool_id.as_str())
        .bind(b.through_seq as i64)
        .bind(b.relay_url.as_str())
        .bind(now)
        .bind(b.last_seq as i64)
        .bind(b.pending_records as i64)
        .bind(b.pending_bytes as i64)
        .execute(&mut *tx)
        .await?;

        tx.commit().await?;
        Ok(out)
    }
}

/// Inserts report rows into `table` (`compliance_reports`, or a bare table of the same columns
/// for the benchmark's ceiling).
pub(crate) async fn insert_reports<'a>(
    conn: &mut SqliteConnection,
    table: &str,
    numbered: &'a [(i64, &'a ReportRow)],
    now: i64,
) -> Result<(), StoreError> {
    let mut strings = Interner::default();
    let build = |chunk: &'a [(i64, &'a ReportRow)], strings: &mut Interner<'a>| {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "INSERT INTO {table} (report_id, message_id, device_id, baseline_id, \
             baseline_revision, baseline_name, created_ms, evaluated_ms, received_ms, stored_ms, \
             relay_id, state, max_severity, n_compliant, n_non_compliant, n_error, \
             n_not_applicable, n_unknown, signature, signed_bytes) "
        ));
        qb.push_values(chunk, |mut q, (id, r)| {
            let ru = &r.rollup;
            q.push_bind(*id)
                .push_bind(r.message_id.as_str())
                .push_bind(strings.get(&r.device_id))
                .push_bind(strings.get(&r.baseline_id))
                .push_bind(r.baseline_revision as i64)
                .push_bind(strings.get(&r.baseline_name))
                .push_bind(r.created_ms)
                .push_bind(r.evaluated_ms)
                .push_bind(r.received_ms)
                .push_bind(now)
                .push_bind(strings.get(&r.relay_id))
                .push_bind(strings.get(ru.state().as_str()))
                .push_bind(strings.get(ru.max_severity.as_str()))
                .push_bind(ru.compliant as i64)
                .push_bind(ru.non_compliant as i64)
                .push_bind(ru.error as i64)
                .push_bind(ru.not_applicable as i64)
                .push_bind(ru.unknown as i64)
                .push_bind(r.signature.as_slice())
                .push_bind(r.signed_bytes.as_slice());
        });
        qb
    };
    insert_chunks(
        conn,
        pow2_chunks(numbered, MAX_ROWS / 2),
        &mut strings,
        build,
    )
    .await?;
    Ok(())
}

/// Inserts the setting results of `numbered` into `table`; returns how many rows it wrote.
pub(crate) async fn insert_settings(
    conn: &mut SqliteConnection,
    table: &str,
    numbered: &[(i64, &ReportRow)],
) -> Result<u64, StoreError> {
    let settings: Vec<(i64, i64, &SettingRow)> = numbered
        .iter()
        .flat_map(|(id, r)| {
            r.settings
                .iter()
                .enumerate()
                .map(move |(k, s)| (*id, k as i64, s))
        })
        .collect();
    insert_setting_rows(conn, table, &settings).await?;
    Ok(settings.len() as u64)
}

async fn insert_setting_rows<'a>(
    conn: &mut SqliteConnection,
    table: &str,
    settings: &'a [(i64, i64, &'a SettingRow)],
) -> Result<(), StoreError> {
    let mut strings = Interner::default();
    let build = |chunk: &'a [(i64, i64, &'a SettingRow)], strings: &mut Interner<'a>| {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "INSERT INTO {table} (report_id, ordinal, ci_id, ci_revision, setting_id, \
             state, severity, expected, observed_before, observed_after, remediated, error) "
        ));
        qb.push_values(chunk, |mut q, (id, k, s)| {
            q.push_bind(*id)
                .push_bind(*k)
                .push_bind(strings.get(&s.ci_id))
                .push_bind(s.ci_revision as i64)
                .push_bind(strings.get(&s.setting_id))
                .push_bind(strings.get(s.state.as_str()))
                .push_bind(strings.get(s.severity.as_str()))
                .push_bind(strings.get(&s.expected))
                .push_bind(s.observed_before.as_deref().map(|v| strings.get(v)))
                .push_bind(s.observed_after.as_deref().map(|v| strings.get(v)))
                .push_bind(s.remediated)
                .push_bind(strings.get(&s.error));
        });
        qb
    };
    insert_chunks(conn, pow2_chunks(settings, MAX_ROWS), &mut strings, build).await?;
    Ok(())
}

/// Runs one multi-row statement per chunk, building the next chunk's statement while SQLite
/// (on sqlx's worker thread) executes the current one, so the two cores share the work.
async fn insert_chunks<'a, T: 'a>(
    conn: &mut SqliteConnection,
    mut chunks: impl Iterator<Item = &'a [T]>,
    strings: &mut Interner<'a>,
    build: impl Fn(&'a [T], &mut Interner<'a>) -> QueryBuilder<Sqlite>,
) -> Result<u64, StoreError> {
    let Some(first) = chunks.next() else {
        return Ok(0);
    };
    let mut current = build(first, strings);
    let mut rows = 0;
    loop {
        let following = chunks.next();
        let (done, next) = tokio::join!(current.build().execute(&mut *conn), async {
            following.map(|c| build(c, strings))
        });
        rows += done?.rows_affected();
        match next {
            Some(qb) => current = qb,
            None => return Ok(rows),
        }
    }
}

/// Shares one allocation per distinct string of a batch: setting ids, expected values and
/// observed values repeat across the devices reporting the same baseline, and sqlx would
/// otherwise copy every bound string into an allocation of its own.
#[derive(Default)]
struct Interner<'a>(HashMap<&'a str, Arc<str>>);

impl<'a> Interner<'a> {
    fn get(&mut self, s: &'a str) -> Arc<str> {
        self.0.entry(s).or_insert_with(|| Arc::from(s)).clone()
    }
}

async fn existing_ids<'a>(
    conn: &mut SqliteConnection,
    table: &'static str,
    ids: impl Iterator<Item = &'a str>,
) -> Result<HashSet<String>, StoreError> {
    let ids: Vec<&str> = ids.collect();
    let mut found = HashSet::new();
    for chunk in pow2_chunks(&ids, MAX_ROWS) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT message_id FROM {table} WHERE message_id IN ("
        ));
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        qb.push(")");
        for row in qb.build().fetch_all(&mut *conn).await? {
            found.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(found)
}

async fn upsert_devices(
    conn: &mut SqliteConnection,
    devices: &[DeviceUpsert],
) -> Result<(), StoreError> {
    for chunk in pow2_chunks(devices, MAX_ROWS / 2) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO devices (device_id, public_key, key_epoch, hostname, os, agent_version, \
             hardware_id, enrolled_ms, last_seen_ms, last_relay) ",
        );
        qb.push_values(chunk, |mut q, d| {
            let det = d.details.as_ref();
            q.push_bind(d.device_id.as_str())
                .push_bind(d.public_key.as_slice())
                .push_bind(d.key_epoch as i64)
                .push_bind(det.map(|x| x.hostname.as_str()).unwrap_or(""))
                .push_bind(det.map(|x| x.os.as_str()).unwrap_or(""))
                .push_bind(det.map(|x| x.agent_version.as_str()).unwrap_or(""))
                .push_bind(det.map(|x| x.hardware_id.as_str()).unwrap_or(""))
                .push_bind(det.map(|_| d.seen_ms))
                .push_bind(d.seen_ms)
                .push_bind(d.relay_id.as_str());
        });
        qb.push(
            " ON CONFLICT(device_id) DO UPDATE SET \
             key_epoch = CASE WHEN excluded.enrolled_ms IS NOT NULL THEN excluded.key_epoch ELSE devices.key_epoch END, \
             hostname = CASE WHEN excluded.enrolled_ms IS NOT NULL THEN excluded.hostname ELSE devices.hostname END, \
             os = CASE WHEN excluded.enrolled_ms IS NOT NULL THEN excluded.os ELSE devices.os END, \
             agent_version = CASE WHEN excluded.enrolled_ms IS NOT NULL THEN excluded.agent_version ELSE devices.agent_version END, \
             hardware_id = CASE WHEN excluded.enrolled_ms IS NOT NULL THEN excluded.hardware_id ELSE devices.hardware_id END, \
             enrolled_ms = COALESCE(devices.enrolled_ms, excluded.enrolled_ms), \
             last_relay = CASE WHEN excluded.last_seen_ms >= devices.last_seen_ms THEN excluded.last_relay ELSE devices.last_relay END, \
             last_seen_ms = MAX(devices.last_seen_ms, excluded.last_seen_ms)",
        );
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Loads current rows for the reports' pairs, plans, and executes the plan.
async fn apply_transitions(
    conn: &mut SqliteConnection,
    reports: &[&ReportRow],
    now: i64,
) -> Result<(), StoreError> {
    if reports.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<(&str, &str)> = reports
        .iter()
        .map(|r| (r.device_id.as_str(), r.baseline_id.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut current = Vec::new();
    for chunk in pow2_chunks(&keys, MAX_ROWS / 2) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT device_id, baseline_id, state, evaluated_ms, message_id, open_history_id \
             FROM current_compliance WHERE (device_id, baseline_id) IN (VALUES ",
        );
        let mut sep = qb.separated(", ");
        for (d, b) in chunk {
            sep.push("(");
            sep.push_bind_unseparated(*d);
            sep.push_unseparated(", ");
            sep.push_bind_unseparated(*b);
            sep.push_unseparated(")");
        }
        qb.push(")");
        for row in qb.build().fetch_all(&mut *conn).await? {
            current.push(current_row(&row)?);
        }
    }
    let plan = plan_transitions(reports, &current);

    for chunk in pow2_chunks(&plan.history_closes, MAX_ROWS / 2) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("UPDATE compliance_history SET ended_ms = v.column2 FROM (VALUES ");
        let mut sep = qb.separated(", ");
        for (id, ended) in chunk {
            sep.push("(");
            sep.push_bind_unseparated(*id);
            sep.push_unseparated(", ");
            sep.push_bind_unseparated(*ended);
            sep.push_unseparated(")");
        }
        qb.push(") AS v WHERE compliance_history.history_id = v.column1");
        qb.build().execute(&mut *conn).await?;
    }

    let base: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(history_id), 0) FROM compliance_history")
            .fetch_one(&mut *conn)
            .await?;
    let numbered: Vec<(i64, &HistoryInsert)> = plan
        .history_inserts
        .iter()
        .enumerate()
        .map(|(k, h)| (base + 1 + k as i64, h))
        .collect();
    for chunk in pow2_chunks(&numbered, MAX_ROWS / 2) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO compliance_history (history_id, device_id, baseline_id, state, started_ms, \
             ended_ms, started_message_id) ",
        );
        qb.push_values(chunk, |mut q, (id, h)| {
            q.push_bind(*id)
                .push_bind(h.device_id.as_str())
                .push_bind(h.baseline_id.as_str())
                .push_bind(h.state.as_str())
                .push_bind(h.started_ms)
                .push_bind(h.ended_ms)
                .push_bind(h.started_message_id.as_str());
        });
        qb.build().execute(&mut *conn).await?;
    }

    for chunk in pow2_chunks(&plan.current, MAX_ROWS / 2) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO current_compliance (device_id, baseline_id, baseline_revision, \
             baseline_name, state, max_severity, evaluated_ms, message_id, n_compliant, \
             n_non_compliant, n_error, n_not_applicable, n_unknown, open_history_id, updated_ms) ",
        );
        qb.push_values(chunk, |mut q, c| {
            let r = reports[c.report];
            let ru = &r.rollup;
            let open = match c.open_history {
                HistoryRef::Existing(id) => id,
                HistoryRef::New(k) => base + 1 + k as i64,
            };
            q.push_bind(r.device_id.as_str())
                .push_bind(r.baseline_id.as_str())
                .push_bind(r.baseline_revision as i64)
                .push_bind(r.baseline_name.as_str())
                .push_bind(ru.state().as_str())
                .push_bind(ru.max_severity.as_str())
                .push_bind(r.evaluated_ms)
                .push_bind(r.message_id.as_str())
                .push_bind(ru.compliant as i64)
                .push_bind(ru.non_compliant as i64)
                .push_bind(ru.error as i64)
                .push_bind(ru.not_applicable as i64)
                .push_bind(ru.unknown as i64)
                .push_bind(open)
                .push_bind(now);
        });
        qb.push(
            " ON CONFLICT(device_id, baseline_id) DO UPDATE SET \
             baseline_revision = excluded.baseline_revision, baseline_name = excluded.baseline_name, \
             state = excluded.state, max_severity = excluded.max_severity, \
             evaluated_ms = excluded.evaluated_ms, message_id = excluded.message_id, \
             n_compliant = excluded.n_compliant, n_non_compliant = excluded.n_non_compliant, \
             n_error = excluded.n_error, n_not_applicable = excluded.n_not_applicable, \
             n_unknown = excluded.n_unknown, open_history_id = excluded.open_history_id, \
             updated_ms = excluded.updated_ms",
        );
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Splits `items` into power-of-two chunks of at most `max`.
pub(crate) fn pow2_chunks<T>(mut items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let n = (1usize << (usize::BITS - 1 - items.len().leading_zeros())).min(max);
        let (head, tail) = items.split_at(n);
        items = tail;
        Some(head)
    })
}
