//! Writing one forward batch into PostgreSQL: one transaction of seven statements whatever the
//! batch size (every round trip is a wait for the server, so they are kept few):
//!
//! 1. `BEGIN` and the locks, in one simple query (see below);
//! 2. dedup: the message ids go into `report_message_ids` (`INSERT … SELECT FROM UNNEST … ON
//!    CONFLICT DO NOTHING RETURNING`), which answers which reports are new and numbers them;
//! 3. the new reports, then 4. their setting results, streamed with binary `COPY` (straight into
//!    the day's partitions when all of them were received on one day whose partitions are known
//!    to exist, see [`KnownDays`]; else into the parent tables, which route each row);
//! 5. the current rows of the batch's (device, baseline) pairs;
//! 6. one statement of data-modifying CTEs carrying out the [`plan_transitions`] plan (history
//!    intervals closed and opened, current compliance updated or inserted), the devices upsert
//!    and the relay cursor;
//! 7. `COMMIT`.
//!
//! Terms acceptances and quarantined records, rare, take one more statement each when present.
//!
//! # Locks
//!
//! Deciding the next current state of a (device, baseline) needs its current row to stay put
//! until commit: two site servers pulling different relays can both hold reports of the same
//! device. The first round trip takes a transaction-scoped advisory lock per device the batch
//! touches (its reports, device sightings and terms acceptances), in ascending key order, after
//! a shared "global" advisory lock; a batch touching more than [`MAX_DEVICE_LOCKS`] devices takes
//! the global lock exclusively instead, so it never fills the server's shared lock table
//! (`max_locks_per_transaction` × connections slots). The current rows are read by a later
//! statement, whose snapshot is taken after the locks are held.
//!
//! Every row a batch changes that another site server could change too belongs to one of the
//! batch's devices (current compliance, history, the device row, a report's or acceptance's
//! message id — a message id is signed by its device), so while a batch holds its device locks
//! nobody else writes those rows: the advisory locks, taken in key order, are the only thing two
//! writers ever wait for, and they cannot wait in a cycle. Quarantined records and relay cursors
//! belong to the batch's own relay.

use std::collections::{BTreeSet, HashMap, HashSet};

use sqlx::{AssertSqlSafe, PgConnection, PgPool, SqlSafeStr};

use super::copy::CopyWriter;
use super::partitions::{self, KnownDays};
use crate::clock;
use crate::compliance::Rollup;
use crate::store::rows::current_row;
use crate::store::{
    AcceptanceRow, DeviceDetails, HistoryRef, Plan, ReportRow, StoreError, WriteBatch,
    WriteOutcome, fold_devices, plan_transitions,
};

/// Above this many devices in one batch, the batch locks all devices at once (each advisory lock
/// takes a slot of the server's shared lock table, 64 × max_connections by default).
pub const MAX_DEVICE_LOCKS: usize = 1024;

/// The advisory lock every batch takes before its device locks: shared normally, exclusive when
/// the batch locks all devices ("mprelay:d").
const ALL_DEVICES_LOCK: i64 = 0x6d70_7265_6c61_7964;

/// SQLSTATE of a missing table.
const UNDEFINED_TABLE: &str = "42P01";

/// Names the advisory locks of devices, so they cannot meet other users' keys.
const DEVICE_LOCK_DOMAIN: &[u8] = b"mprelay/v1/device\0";

/// Writes `b` in one transaction. Returns the outcome and the UTC days of the setting results
/// it wrote (whose block ranges want summarizing).
pub(crate) async fn write_batch(
    pool: &PgPool,
    known: &KnownDays,
    b: &WriteBatch,
) -> Result<(WriteOutcome, BTreeSet<i64>), StoreError> {
    let now = clock::now_ms();
    let mut out = WriteOutcome::default();

    // Dedup within the batch (first occurrence wins); sorted by message id, time-ordered UUIDs,
    // so the dedup index grows at its right edge.
    let mut seen = HashSet::with_capacity(b.reports.len());
    let mut unique: Vec<&ReportRow> = b
        .reports
        .iter()
        .filter(|r| seen.insert(r.message_id.as_str()))
        .collect();
    unique.sort_unstable_by(|x, y| x.message_id.cmp(&y.message_id));
    let devices: BTreeSet<&str> = b
        .reports
        .iter()
        .map(|r| r.device_id.as_str())
        .chain(b.devices.iter().map(|d| d.device_id.as_str()))
        .chain(b.acceptances.iter().map(|a| a.device_id.as_str()))
        .collect();

    let mut tx = pool
        .begin_with(AssertSqlSafe(begin_and_lock(&devices)).into_sql_str())
        .await?;
    let numbered = number_new_reports(&mut tx, &unique).await?;
    out.reports_inserted = numbered.len() as u64;
    out.critical_events = crate::store::events::critical_events(numbered.iter().map(|(_, r)| *r));
    out.reports_duplicate = (b.reports.len() - numbered.len()) as u64;

    // Straight into the day's partitions when every new report falls in one known day.
    let day = numbered
        .first()
        .map(|(_, r)| partitions::day_of(r.received_ms));
    let day = day.filter(|d| {
        known.contains(*d)
            && numbered
                .iter()
                .all(|(_, r)| partitions::day_of(r.received_ms) == *d)
    });
    let table = |parent: &str| match day {
        Some(d) => partitions::partition_name(parent, d),
        None => parent.to_string(),
    };
    let copied = async {
        copy_reports(&mut tx, &table("compliance_reports"), &numbered, now).await?;
        let n = copy_settings(&mut tx, &table("setting_results"), &numbered).await?;
        Ok::<_, StoreError>(n)
    }
    .await;
    out.settings_inserted = match (copied, day) {
        (Err(StoreError::Db(sqlx::Error::Database(e))), Some(d))
            if e.code().as_deref() == Some(UNDEFINED_TABLE) =>
        {
            // Dropped by another site server's retention: the batch fails (nothing of it is
            // kept) and its retry goes through the parent.
            known.forget(d);
            return Err(StoreError::Db(sqlx::Error::Database(e)));
        }
        (copied, _) => copied?,
    };

    let reports: Vec<&ReportRow> = numbered.iter().map(|(_, r)| *r).collect();
    let (plan, existing) = plan_with_current(&mut tx, &reports).await?;
    write_state(&mut tx, b, &reports, &plan, &existing, now).await?;
    out.acceptances_inserted = insert_acceptances(&mut tx, &b.acceptances).await?;
    out.quarantined = insert_quarantined(&mut tx, b, now).await?;
    tx.commit().await?;

    let days = numbered
        .iter()
        .filter(|(_, r)| !r.settings.is_empty())
        .map(|(_, r)| partitions::day_of(r.received_ms))
        .collect();
    Ok((out, days))
}

/// `BEGIN` and the batch's locks, as one simple query. The keys are numbers this function
/// computed, so writing them into the text is safe.
fn begin_and_lock(devices: &BTreeSet<&str>) -> String {
    if devices.len() > MAX_DEVICE_LOCKS {
        return format!("BEGIN; SELECT pg_advisory_xact_lock({ALL_DEVICES_LOCK})");
    }
    let mut keys: Vec<i64> = devices.iter().map(|d| device_lock_key(d)).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut sql = format!("BEGIN; SELECT pg_advisory_xact_lock_shared({ALL_DEVICES_LOCK});");
    if !keys.is_empty() {
        let list: Vec<String> = keys.iter().map(i64::to_string).collect();
        // UNNEST yields the array in order: the locks are taken in ascending key order.
        sql.push_str(&format!(
            " SELECT pg_advisory_xact_lock(k) FROM UNNEST('{{{}}}'::bigint[]) AS k",
            list.join(",")
        ));
    }
    sql
}

/// The advisory lock key of a device: the first 8 bytes of a SHA-256, the same in every build and
/// on every site server (unlike Rust's hashers). Two devices sharing a key only means their
/// batches wait for each other.
fn device_lock_key(device_id: &str) -> i64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(DEVICE_LOCK_DOMAIN);
    ctx.update(device_id.as_bytes());
    let d = ctx.finish();
    let mut k = [0u8; 8];
    k.copy_from_slice(&d.as_ref()[..8]);
    i64::from_be_bytes(k)
}

/// Records the message ids of `reports` (unique, sorted by message id) and returns the reports
/// not stored before, each with its new number, in ascending number order.
async fn number_new_reports<'r>(
    conn: &mut PgConnection,
    reports: &[&'r ReportRow],
) -> Result<Vec<(i64, &'r ReportRow)>, StoreError> {
    if reports.is_empty() {
        return Ok(vec![]);
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO report_message_ids (message_id, received_ms) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
         ON CONFLICT (message_id) DO NOTHING RETURNING message_id, report_id",
    )
    .bind(
        reports
            .iter()
            .map(|r| r.message_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(reports.iter().map(|r| r.received_ms).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let ids: HashMap<String, i64> = rows.into_iter().collect();
    let mut numbered: Vec<(i64, &ReportRow)> = reports
        .iter()
        .filter_map(|r| ids.get(&r.message_id).map(|id| (*id, *r)))
        .collect();
    // Ascending numbers: every index insert is an append at the right edge, and the block
    // ranges of setting_results stay narrow.
    numbered.sort_unstable_by_key(|(id, _)| *id);
    Ok(numbered)
}

/// Streams report rows into `table` (`compliance_reports`, or a bare table of the same columns
/// for the benchmark's ceiling).
pub(crate) async fn copy_reports(
    conn: &mut PgConnection,
    table: &str,
    reports: &[(i64, &ReportRow)],
    now: i64,
) -> Result<u64, StoreError> {
    if reports.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "COPY {table} (report_id, received_ms, created_ms, evaluated_ms, stored_ms, \
         baseline_revision, n_compliant, n_non_compliant, n_error, n_not_applicable, n_unknown, \
         message_id, device_id, baseline_id, baseline_name, relay_id, state, max_severity, \
         signature, signed_bytes) FROM STDIN (FORMAT binary)"
    );
    let mut w = CopyWriter::begin(conn, &sql).await?;
    for (id, r) in reports {
        let ru = &r.rollup;
        w.row(20)
            .await?
            .i64(*id)
            .i64(r.received_ms)
            .i64(r.created_ms)
            .i64(r.evaluated_ms)
            .i64(now)
            .i32(int4(r.baseline_revision)?)
            .i32(int4(ru.compliant)?)
            .i32(int4(ru.non_compliant)?)
            .i32(int4(ru.error)?)
            .i32(int4(ru.not_applicable)?)
            .i32(int4(ru.unknown)?)
            .text(&r.message_id)
            .text(&r.device_id)
            .text(&r.baseline_id)
            .text(&r.baseline_name)
            .text(&r.relay_id)
            .text(ru.state().as_str())
            .text(ru.max_severity.as_str())
            .bytes(&r.signature)
            .bytes(&r.signed_bytes);
    }
    Ok(w.finish().await?)
}

/// Streams the setting results of `reports` into `table`; returns how many rows it wrote.
pub(crate) async fn copy_settings(
    conn: &mut PgConnection,
    table: &str,
    reports: &[(i64, &ReportRow)],
) -> Result<u64, StoreError> {
    if reports.iter().all(|(_, r)| r.settings.is_empty()) {
        return Ok(0);
    }
    let sql = format!(
        "COPY {table} (report_id, received_ms, ci_revision, ordinal, remediated, ci_id, \
         setting_id, state, severity, expected, observed_before, observed_after, error) \
         FROM STDIN (FORMAT binary)"
    );
    let mut w = CopyWriter::begin(conn, &sql).await?;
    for (id, r) in reports {
        for (k, s) in r.settings.iter().enumerate() {
            w.row(13)
                .await?
                .i64(*id)
                .i64(r.received_ms)
                .i32(int4(s.ci_revision)?)
                .i32(int4(k)?)
                .bool(s.remediated)
                .text(&s.ci_id)
                .text(&s.setting_id)
                .text(s.state.as_str())
                .text(s.severity.as_str())
                .text(&s.expected)
                .opt_text(s.observed_before.as_deref())
                .opt_text(s.observed_after.as_deref())
                .text(&s.error);
        }
    }
    Ok(w.finish().await?)
}

/// Reads the current rows of the reports' pairs (their devices are locked since `BEGIN`) and
/// plans. Returns the
/// plan and the pairs that have a current row.
async fn plan_with_current(
    conn: &mut PgConnection,
    reports: &[&ReportRow],
) -> Result<(Plan, HashSet<(String, String)>), StoreError> {
    if reports.is_empty() {
        return Ok(Default::default());
    }
    let mut pairs: Vec<(&str, &str)> = reports
        .iter()
        .map(|r| (r.device_id.as_str(), r.baseline_id.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let rows = sqlx::query(
        "SELECT c.device_id, c.baseline_id, c.state, c.evaluated_ms, c.message_id, \
         c.open_history_id FROM current_compliance c \
         JOIN UNNEST($1::text[], $2::text[]) AS k (d, b) ON c.device_id = k.d AND c.baseline_id = k.b",
    )
    .bind(pairs.iter().map(|p| p.0).collect::<Vec<_>>())
    .bind(pairs.iter().map(|p| p.1).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let current = rows
        .iter()
        .map(current_row)
        .collect::<Result<Vec<_>, _>>()?;
    let plan = plan_transitions(reports, &current);
    let existing = current
        .into_iter()
        .map(|c| (c.device_id, c.baseline_id))
        .collect();
    Ok((plan, existing))
}

/// Carries out `plan` and upserts the batch's devices and the relay cursor, in one statement.
///
/// The plan's new history intervals are numbered by the database; the current row of a pair
/// whose open interval is new finds it as the one open interval inserted for that pair.
async fn write_state(
    conn: &mut PgConnection,
    b: &WriteBatch,
    reports: &[&ReportRow],
    plan: &Plan,
    existing: &HashSet<(String, String)>,
    now: i64,
) -> Result<(), StoreError> {
    let h = &plan.history_inserts;
    let cur: Vec<(&ReportRow, Option<i64>)> = plan
        .current
        .iter()
        .map(|c| {
            let open = match c.open_history {
                HistoryRef::Existing(id) => Some(id),
                HistoryRef::New(_) => None,
            };
            (reports[c.report], open)
        })
        .collect();
    // Whether the pair has a current row: then it is updated, else inserted. The device locks
    // guarantee nobody inserts it meanwhile, and a plain UPDATE costs less than an upsert.
    let exists: Vec<bool> = cur
        .iter()
        .map(|(r, _)| existing.contains(&(r.device_id.clone(), r.baseline_id.clone())))
        .collect();
    let counts = |f: fn(&Rollup) -> u32| -> Result<Vec<i32>, StoreError> {
        cur.iter().map(|(r, _)| int4(f(&r.rollup))).collect()
    };
    let devices = fold_devices(&b.devices);
    let det = |f: fn(&DeviceDetails) -> &str| -> Vec<&str> {
        devices
            .iter()
            .map(|d| d.details.as_ref().map(f).unwrap_or(""))
            .collect()
    };
    sqlx::query(WRITE_STATE)
        .bind(plan.history_closes.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(plan.history_closes.iter().map(|c| c.1).collect::<Vec<_>>())
        .bind(h.iter().map(|x| x.device_id.as_str()).collect::<Vec<_>>())
        .bind(h.iter().map(|x| x.baseline_id.as_str()).collect::<Vec<_>>())
        .bind(h.iter().map(|x| x.state.as_str()).collect::<Vec<_>>())
        .bind(h.iter().map(|x| x.started_ms).collect::<Vec<_>>())
        .bind(h.iter().map(|x| x.ended_ms).collect::<Vec<_>>())
        .bind(
            h.iter()
                .map(|x| x.started_message_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            cur.iter()
                .map(|(r, _)| r.device_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            cur.iter()
                .map(|(r, _)| r.baseline_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            cur.iter()
                .map(|(r, _)| int4(r.baseline_revision))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .bind(
            cur.iter()
                .map(|(r, _)| r.baseline_name.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            cur.iter()
                .map(|(r, _)| r.rollup.state().as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            cur.iter()
                .map(|(r, _)| r.rollup.max_severity.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(cur.iter().map(|(r, _)| r.evaluated_ms).collect::<Vec<_>>())
        .bind(
            cur.iter()
                .map(|(r, _)| r.message_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(counts(|r| r.compliant)?)
        .bind(counts(|r| r.non_compliant)?)
        .bind(counts(|r| r.error)?)
        .bind(counts(|r| r.not_applicable)?)
        .bind(counts(|r| r.unknown)?)
        .bind(cur.iter().map(|(_, open)| *open).collect::<Vec<_>>())
        .bind(exists)
        .bind(now)
        .bind(
            devices
                .iter()
                .map(|d| d.device_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            devices
                .iter()
                .map(|d| d.public_key.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(
            devices
                .iter()
                .map(|d| int4(d.key_epoch))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .bind(det(|x| x.hostname.as_str()))
        .bind(det(|x| x.os.as_str()))
        .bind(det(|x| x.agent_version.as_str()))
        .bind(det(|x| x.hardware_id.as_str()))
        .bind(
            devices
                .iter()
                .map(|d| d.details.as_ref().map(|_| d.seen_ms))
                .collect::<Vec<_>>(),
        )
        .bind(devices.iter().map(|d| d.seen_ms).collect::<Vec<_>>())
        .bind(
            devices
                .iter()
                .map(|d| d.relay_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(b.relay_id.as_str())
        .bind(b.spool_id.as_str())
        .bind(b.through_seq as i64)
        .bind(b.relay_url.as_str())
        .bind(b.last_seq as i64)
        .bind(b.pending_records as i64)
        .bind(b.pending_bytes as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// History closes ($1-$2), history inserts ($3-$8), current rows ($9-$23: pair, report fields,
/// open interval if it exists already, whether the row exists), now ($24), devices ($25-$34),
/// relay cursor ($35-$41). Devices arrive sorted by id and are upserted in that order.
const WRITE_STATE: &str = "\
WITH closed AS (
    UPDATE compliance_history h SET ended_ms = v.ended
    FROM UNNEST($1::bigint[], $2::bigint[]) AS v (id, ended) WHERE h.history_id = v.id
), opened AS (
    INSERT INTO compliance_history
        (device_id, baseline_id, state, started_ms, ended_ms, started_message_id)
    SELECT * FROM UNNEST($3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
        $8::text[])
    RETURNING history_id, device_id, baseline_id, ended_ms
), cur AS (
    SELECT v.*, COALESCE(v.oh, o.history_id) AS open_id
    FROM UNNEST($9::text[], $10::text[], $11::int[], $12::text[], $13::text[], $14::text[],
        $15::bigint[], $16::text[], $17::int[], $18::int[], $19::int[], $20::int[], $21::int[],
        $22::bigint[], $23::bool[])
        AS v (d, b, rev, name, st, sev, ev, m, nc, nn, ne, na, nu, oh, ex)
    LEFT JOIN opened o ON v.oh IS NULL AND o.ended_ms IS NULL
        AND o.device_id = v.d AND o.baseline_id = v.b
), updated AS (
    UPDATE current_compliance c SET baseline_revision = cur.rev, baseline_name = cur.name,
        state = cur.st, max_severity = cur.sev, evaluated_ms = cur.ev, message_id = cur.m,
        n_compliant = cur.nc, n_non_compliant = cur.nn, n_error = cur.ne,
        n_not_applicable = cur.na, n_unknown = cur.nu, open_history_id = cur.open_id,
        updated_ms = $24
    FROM cur WHERE cur.ex AND c.device_id = cur.d AND c.baseline_id = cur.b
), inserted AS (
    INSERT INTO current_compliance (device_id, baseline_id, baseline_revision, baseline_name,
        state, max_severity, evaluated_ms, message_id, n_compliant, n_non_compliant, n_error,
        n_not_applicable, n_unknown, open_history_id, updated_ms)
    SELECT d, b, rev, name, st, sev, ev, m, nc, nn, ne, na, nu, open_id, $24
    FROM cur WHERE NOT cur.ex
), seen AS (
    -- Known devices get a plain UPDATE (cheaper than an upsert, which locks the row first),
    -- in id order; only the devices not found are upserted.
    UPDATE devices d SET
        key_epoch = CASE WHEN v.enrolled IS NOT NULL THEN v.epoch ELSE d.key_epoch END,
        hostname = CASE WHEN v.enrolled IS NOT NULL THEN v.host ELSE d.hostname END,
        os = CASE WHEN v.enrolled IS NOT NULL THEN v.os ELSE d.os END,
        agent_version = CASE WHEN v.enrolled IS NOT NULL THEN v.agent ELSE d.agent_version END,
        hardware_id = CASE WHEN v.enrolled IS NOT NULL THEN v.hw ELSE d.hardware_id END,
        enrolled_ms = COALESCE(d.enrolled_ms, v.enrolled),
        last_relay = CASE WHEN v.seen >= d.last_seen_ms THEN v.relay ELSE d.last_relay END,
        last_seen_ms = GREATEST(d.last_seen_ms, v.seen)
    FROM UNNEST($25::text[], $26::bytea[], $27::int[], $28::text[], $29::text[],
        $30::text[], $31::text[], $32::bigint[], $33::bigint[], $34::text[])
        AS v (id, pk, epoch, host, os, agent, hw, enrolled, seen, relay)
    WHERE d.device_id = v.id
    RETURNING d.device_id
), new_devices AS (
    INSERT INTO devices (device_id, public_key, key_epoch, hostname, os, agent_version,
        hardware_id, enrolled_ms, last_seen_ms, last_relay)
    SELECT * FROM UNNEST($25::text[], $26::bytea[], $27::int[], $28::text[], $29::text[],
        $30::text[], $31::text[], $32::bigint[], $33::bigint[], $34::text[])
        AS v (id, pk, epoch, host, os, agent, hw, enrolled, seen, relay)
    WHERE NOT EXISTS (SELECT 1 FROM seen WHERE seen.device_id = v.id)
    -- Another site server may have inserted it since this statement's snapshot.
    ON CONFLICT (device_id) DO UPDATE SET
        key_epoch = CASE WHEN excluded.enrolled_ms IS NOT NULL
            THEN excluded.key_epoch ELSE devices.key_epoch END,
        hostname = CASE WHEN excluded.enrolled_ms IS NOT NULL
            THEN excluded.hostname ELSE devices.hostname END,
        os = CASE WHEN excluded.enrolled_ms IS NOT NULL THEN excluded.os ELSE devices.os END,
        agent_version = CASE WHEN excluded.enrolled_ms IS NOT NULL
            THEN excluded.agent_version ELSE devices.agent_version END,
        hardware_id = CASE WHEN excluded.enrolled_ms IS NOT NULL
            THEN excluded.hardware_id ELSE devices.hardware_id END,
        enrolled_ms = COALESCE(devices.enrolled_ms, excluded.enrolled_ms),
        last_relay = CASE WHEN excluded.last_seen_ms >= devices.last_seen_ms
            THEN excluded.last_relay ELSE devices.last_relay END,
        last_seen_ms = GREATEST(devices.last_seen_ms, excluded.last_seen_ms)
), cursor AS (
    INSERT INTO relay_cursors (relay_id, spool_id, through_seq, url, last_pull_ms, last_seq,
        pending_records, pending_bytes)
    VALUES ($35, $36, $37, $38, $24, $39, $40, $41)
    ON CONFLICT (relay_id) DO UPDATE SET spool_id = excluded.spool_id,
        through_seq = excluded.through_seq, url = excluded.url,
        last_pull_ms = excluded.last_pull_ms, last_seq = excluded.last_seq,
        pending_records = excluded.pending_records, pending_bytes = excluded.pending_bytes
)
SELECT 1";

async fn insert_acceptances(
    conn: &mut PgConnection,
    acceptances: &[AcceptanceRow],
) -> Result<u64, StoreError> {
    if acceptances.is_empty() {
        return Ok(0);
    }
    // Sorted by message id, the order every writer locks them in.
    let mut a: Vec<&AcceptanceRow> = acceptances.iter().collect();
    a.sort_by(|x, y| x.message_id.cmp(&y.message_id));
    Ok(sqlx::query(
        "INSERT INTO terms_acceptances (message_id, device_id, user_name, terms_version, \
         accepted_ms, received_ms, relay_id) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[], \
         $6::bigint[], $7::text[]) ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(a.iter().map(|x| x.message_id.as_str()).collect::<Vec<_>>())
    .bind(a.iter().map(|x| x.device_id.as_str()).collect::<Vec<_>>())
    .bind(a.iter().map(|x| x.user.as_str()).collect::<Vec<_>>())
    .bind(
        a.iter()
            .map(|x| int4(x.terms_version))
            .collect::<Result<Vec<_>, _>>()?,
    )
    .bind(a.iter().map(|x| x.accepted_ms).collect::<Vec<_>>())
    .bind(a.iter().map(|x| x.received_ms).collect::<Vec<_>>())
    .bind(a.iter().map(|x| x.relay_id.as_str()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

async fn insert_quarantined(
    conn: &mut PgConnection,
    b: &WriteBatch,
    now: i64,
) -> Result<u64, StoreError> {
    let q = &b.quarantined;
    if q.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query(
        "INSERT INTO quarantined_records (relay_id, spool_id, seq, message_id, received_ms, \
         reason, payload, stored_ms) \
         SELECT $1, $2, s, m, r, why, p, $3 \
         FROM UNNEST($4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::bytea[]) \
         AS v (s, m, r, why, p) ON CONFLICT DO NOTHING",
    )
    .bind(b.relay_id.as_str())
    .bind(b.spool_id.as_str())
    .bind(now)
    .bind(q.iter().map(|x| x.seq as i64).collect::<Vec<_>>())
    .bind(q.iter().map(|x| x.message_id.as_str()).collect::<Vec<_>>())
    .bind(q.iter().map(|x| x.received_ms).collect::<Vec<_>>())
    .bind(q.iter().map(|x| x.reason.as_str()).collect::<Vec<_>>())
    .bind(q.iter().map(|x| x.payload.as_slice()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// A count or revision as an `INTEGER`.
fn int4<T: TryInto<i32> + Copy + std::fmt::Display>(v: T) -> Result<i32, StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Unstorable(format!("{v}: it does not fit an INTEGER column")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lock_keys_are_the_same_in_every_build() {
        // Two site servers must agree on the key whatever they were built with.
        assert_eq!(device_lock_key("d"), 5_576_231_544_468_898_237);
        assert_ne!(device_lock_key("d"), device_lock_key("e"));
    }

    #[test]
    fn big_batches_lock_all_devices_at_once() {
        let names: Vec<String> = (0..=MAX_DEVICE_LOCKS).map(|i| format!("d{i}")).collect();
        let all: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let sql = begin_and_lock(&all);
        assert!(
            sql.ends_with(&format!("pg_advisory_xact_lock({ALL_DEVICES_LOCK})")),
            "{sql}"
        );
        let two: BTreeSet<&str> = all.iter().take(2).copied().collect();
        let sql = begin_and_lock(&two);
        assert!(sql.contains("pg_advisory_xact_lock_shared"), "{sql}");
        assert!(sql.contains("UNNEST('{"), "{sql}");
    }
}
