//! The site database behind one interface, with a SQLite backend (the embedded default) and a
//! PostgreSQL backend (the scale path), chosen by the URL: `sqlite://PATH` or `postgres://…`.
//! No SQL lives outside this module.
//!
//! Writing a forwarded batch is one transaction of a few set-based statements per table: dedup
//! by message id, upsert devices, insert reports and setting results, move current compliance
//! and history intervals forward, insert terms acceptances, advance the relay cursor. Replaying a
//! batch changes nothing. The decisions about current state and history are taken here, once,
//! in Rust ([`plan_transitions`]); the backends only execute them.
//!
//! The PostgreSQL backend partitions reports and setting results by received day; the scheme,
//! its dedup table and how two site servers share one database are in [`postgres`].

pub(crate) mod ceiling;
pub mod postgres;
mod rows;
mod sqlite;
mod sqlite_compliance;
mod sqlite_console;
mod sqlite_maintenance;
mod sqlite_retention;
mod sqlite_terms;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use thiserror::Error;

use crate::compliance::{Rollup, Severity, State};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database URL is not `sqlite://…` or `postgres://…`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    /// A value a batch asked to store does not fit the database (e.g. an out-of-range number).
    #[error("cannot store {0}")]
    Unstorable(String),
    /// Connecting or opening the database failed.
    #[error("cannot open database {url}: {}", describe(cause))]
    Open { url: String, cause: sqlx::Error },
    /// Applying the schema failed.
    #[error("database migration failed: {}", describe_migration(.0))]
    Migrate(sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {}", describe(.0))]
    Db(sqlx::Error),
    /// The database is not a site database this binary can read as it is: no mprelay schema
    /// (a mistyped name?), or one older or newer than this binary's.
    #[error("{url} {reason}")]
    Schema { url: String, reason: String },
    /// Stored data violates an invariant (e.g. an unknown state name).
    #[error("corrupt data in the site database: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

/// A database error as an operator should read it: PostgreSQL's message with its detail and
/// hint, without the line of the server's own C source that sqlx appends ("… at line 948",
/// easily taken for a line of one's configuration). The whole text is here, so [`StoreError`]
/// names no further source.
pub(crate) fn describe(e: &sqlx::Error) -> String {
    let sqlx::Error::Database(d) = e else {
        return e.to_string();
    };
    let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() else {
        return d.to_string();
    };
    let mut out = pg.message().to_string();
    for extra in [pg.detail(), pg.hint()].into_iter().flatten() {
        out.push_str(" (");
        out.push_str(extra);
        out.push(')');
    }
    out
}

fn describe_migration(e: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError;
    match e {
        MigrateError::Execute(e) => describe(e),
        MigrateError::ExecuteMigration(e, version) => {
            format!("migration {version}: {}", describe(e))
        }
        other => other.to_string(),
    }
}

/// Checks that the migrations a database recorded are exactly `expected` (this binary's):
/// `recorded` is `None` when the database has no migration table at all, else the highest
/// version applied and how many migrations failed half-way.
pub(crate) fn check_schema(
    url: &str,
    recorded: Option<(i64, i64)>,
    expected: &[(i64, &str, &str)],
) -> Result<(), StoreError> {
    let want = expected.last().map_or(0, |m| m.0);
    let fail = |reason: String| {
        Err(StoreError::Schema {
            url: url.to_string(),
            reason,
        })
    };
    match recorded {
        None | Some((0, _)) => fail(
            "holds no mprelay site database (is the name right? the site server creates it)".into(),
        ),
        Some((_, failed)) if failed > 0 => fail(format!(
            "has {failed} schema migration(s) that failed half-way; start the site server to see why"
        )),
        Some((have, _)) if have < want => fail(format!(
            "has schema version {have}, this mprelay reads version {want}: start this version's \
             site server once to upgrade it"
        )),
        Some((have, _)) if have > want => fail(format!(
            "has schema version {have}, newer than this mprelay's ({want}): use the mprelay the \
             site server runs"
        )),
        Some(_) => Ok(()),
    }
}

/// The query giving [`check_schema`]'s `recorded`, on both backends, once the migration table
/// is known to exist.
pub(crate) const RECORDED_SCHEMA: &str = "SELECT COALESCE(MAX(version), 0), \
     COALESCE(SUM(CASE WHEN success THEN 0 ELSE 1 END), 0) FROM _sqlx_migrations";

/// A device as learned from an enrollment (full details) or from a report (id, key, last seen).
#[derive(Debug, Clone)]
pub struct DeviceUpsert {
    pub device_id: String,
    pub public_key: Vec<u8>,
    pub key_epoch: u32,
    /// Present for enrollments: hostname, os, agent version, hardware id.
    pub details: Option<DeviceDetails>,
    pub seen_ms: i64,
    pub relay_id: String,
}

#[derive(Debug, Clone)]
pub struct DeviceDetails {
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub hardware_id: String,
}

/// One setting result of a report, ready to store.
#[derive(Debug, Clone)]
pub struct SettingRow {
    pub ci_id: String,
    pub ci_revision: u32,
    pub setting_id: String,
    pub state: State,
    pub severity: Severity,
    pub expected: String,
    pub observed_before: Option<String>,
    pub observed_after: Option<String>,
    pub remediated: bool,
    pub error: String,
}

/// A compliance report, ready to store.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub message_id: String,
    pub device_id: String,
    pub baseline_id: String,
    pub baseline_revision: u32,
    pub baseline_name: String,
    pub created_ms: i64,
    pub evaluated_ms: i64,
    pub received_ms: i64,
    pub relay_id: String,
    pub rollup: Rollup,
    pub settings: Vec<SettingRow>,
    pub signature: Vec<u8>,
    pub signed_bytes: Vec<u8>,
}

/// A terms acceptance, ready to store.
#[derive(Debug, Clone)]
pub struct AcceptanceRow {
    pub message_id: String,
    pub device_id: String,
    pub user: String,
    pub terms_version: u32,
    pub accepted_ms: i64,
    pub received_ms: i64,
    pub relay_id: String,
}

/// A forwarded record the site could not read or verify; stored aside, never lost.
#[derive(Debug, Clone)]
pub struct QuarantineRow {
    pub seq: u64,
    pub message_id: String,
    pub received_ms: i64,
    pub reason: String,
    pub payload: Vec<u8>,
}

/// Everything one forward batch asks the site to store, with the cursor it advances.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub relay_id: String,
    pub relay_url: String,
    pub spool_id: String,
    pub through_seq: u64,
    pub last_seq: u64,
    pub pending_records: u64,
    pub pending_bytes: u64,
    pub devices: Vec<DeviceUpsert>,
    pub reports: Vec<ReportRow>,
    pub acceptances: Vec<AcceptanceRow>,
    pub quarantined: Vec<QuarantineRow>,
}

/// What a batch write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub reports_inserted: u64,
    pub reports_duplicate: u64,
    pub settings_inserted: u64,
    pub acceptances_inserted: u64,
    pub quarantined: u64,
    /// Critical-with-event settings the inserted reports found non-compliant.
    pub critical_events: Vec<CriticalEvent>,
}

/// Where the site is with one relay.
#[derive(Debug, Clone, Serialize)]
pub struct RelayCursor {
    pub relay_id: String,
    pub spool_id: String,
    pub through_seq: u64,
    pub url: String,
    pub last_pull_ms: i64,
    pub last_seq: u64,
    pub pending_records: u64,
    pub pending_bytes: u64,
}

/// The state of one device for one baseline, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentRow {
    pub device_id: String,
    pub baseline_id: String,
    pub state: State,
    pub evaluated_ms: i64,
    pub message_id: String,
    pub open_history_id: i64,
}

/// Devices per state for one baseline, from current compliance.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BaselineSummary {
    pub baseline_id: String,
    pub baseline_name: String,
    pub devices: u64,
    pub compliant: u64,
    pub non_compliant: u64,
    pub error: u64,
    pub unknown: u64,
    pub not_applicable: u64,
}

/// A stored report, for reports and tests.
#[derive(Debug, Clone, Serialize)]
pub struct ReportView {
    pub message_id: String,
    pub device_id: String,
    pub baseline_id: String,
    pub baseline_revision: u32,
    pub baseline_name: String,
    pub evaluated_ms: i64,
    pub received_ms: i64,
    pub relay_id: String,
    pub state: String,
    pub max_severity: String,
    pub n_compliant: u32,
    pub n_non_compliant: u32,
    pub n_error: u32,
    pub n_not_applicable: u32,
    pub n_unknown: u32,
    #[serde(skip)]
    pub signature: Vec<u8>,
    #[serde(skip)]
    pub signed_bytes: Vec<u8>,
}

/// A stored setting result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SettingView {
    pub ci_id: String,
    pub ci_revision: u32,
    pub setting_id: String,
    pub state: String,
    pub severity: String,
    pub expected: String,
    pub observed_before: Option<String>,
    pub observed_after: Option<String>,
    pub remediated: bool,
    pub error: String,
}

/// A stored device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    pub device_id: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub hardware_id: String,
    pub key_epoch: u32,
    pub enrolled_ms: Option<i64>,
    pub last_seen_ms: i64,
    pub last_relay: String,
    pub blocked: bool,
}

/// One interval of a device's state for a baseline.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistoryView {
    pub state: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
}

/// Row counts, for the demo and for checks.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub devices: u64,
    pub reports: u64,
    pub settings: u64,
    pub acceptances: u64,
    pub quarantined: u64,
}

/// The site database.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

mod compliance;
pub use compliance::*;
mod console;
pub use console::*;
mod events;
pub use events::CriticalEvent;
mod lists;
pub use lists::{BaselineDeviceRow, DEFAULT_PAGE, DeviceFilter, MAX_PAGE, Page};
mod maintenance;
pub use maintenance::*;
pub mod retention;
pub use retention::{BatchDeleted, TaskLock};
mod terms;
pub use terms::*;

/// Which backend a database URL names.
enum Location<'a> {
    /// The file's path.
    Sqlite(&'a str),
    Postgres,
}

impl<'a> Location<'a> {
    fn of(url: &'a str) -> Result<Self, StoreError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            return Ok(Location::Sqlite(path));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location::Postgres);
        }
        Err(StoreError::BadUrl(postgres::redact_url(url)))
    }
}

impl Store {
    /// Opens the database named by `url` and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(match Location::of(url)? {
            Location::Sqlite(path) => Store::Sqlite(SqliteStore::open(path).await?),
            Location::Postgres => Store::Postgres(PostgresStore::connect(url).await?),
        })
    }

    /// Opens an existing site database for reading only, as the administrators' report commands
    /// do. Unlike [`Store::connect`] it makes nothing — no file, no schema, no partitions — so it
    /// works with a read-only PostgreSQL role and a mistyped SQLite path is an error rather
    /// than a new empty database; it refuses a schema other than this binary's.
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        Ok(match Location::of(url)? {
            Location::Sqlite(path) => Store::Sqlite(SqliteStore::open_read_only(path).await?),
            Location::Postgres => Store::Postgres(PostgresStore::connect_read_only(url).await?),
        })
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Makes the day partitions around `now_ms` that do not exist yet (PostgreSQL; nothing to do
    /// on SQLite). The site server calls it periodically; returns how many it made.
    pub async fn ensure_partitions(&self, now_ms: i64) -> Result<u32, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Postgres(s) => s.ensure_partitions(now_ms).await,
        }
    }

    /// Stores one forward batch in one transaction and advances the relay's cursor.
    pub async fn write_batch(&self, batch: &WriteBatch) -> Result<WriteOutcome, StoreError> {
        dispatch!(self, s => s.write_batch(batch).await)
    }

    /// Waits for background work that earlier writes started (PostgreSQL summarizes the block
    /// ranges of setting results after a batch; nothing on SQLite, whose checkpoints serve all
    /// writes alike). The writer benchmark counts it as the writer's time.
    pub async fn settle(&self) {
        if let Store::Postgres(s) = self {
            s.settle().await
        }
    }

    pub async fn relay_cursor(&self, relay_id: &str) -> Result<Option<RelayCursor>, StoreError> {
        dispatch!(self, s => s.relay_cursor(relay_id).await)
    }

    pub async fn relay_cursors(&self) -> Result<Vec<RelayCursor>, StoreError> {
        dispatch!(self, s => s.relay_cursors().await)
    }

    pub async fn counts(&self) -> Result<Counts, StoreError> {
        dispatch!(self, s => s.counts().await)
    }

    pub async fn baseline_summaries(&self) -> Result<Vec<BaselineSummary>, StoreError> {
        dispatch!(self, s => s.baseline_summaries().await)
    }

    pub async fn report(&self, message_id: &str) -> Result<Option<ReportView>, StoreError> {
        dispatch!(self, s => s.report(message_id).await)
    }

    pub async fn report_settings(&self, message_id: &str) -> Result<Vec<SettingView>, StoreError> {
        dispatch!(self, s => s.report_settings(message_id).await)
    }

    pub async fn device(&self, device_id: &str) -> Result<Option<DeviceView>, StoreError> {
        dispatch!(self, s => s.device(device_id).await)
    }

    pub async fn current(
        &self,
        device_id: &str,
        baseline_id: &str,
    ) -> Result<Option<CurrentRow>, StoreError> {
        dispatch!(self, s => s.current(device_id, baseline_id).await)
    }

    pub async fn history(
        &self,
        device_id: &str,
        baseline_id: &str,
    ) -> Result<Vec<HistoryView>, StoreError> {
        dispatch!(self, s => s.history(device_id, baseline_id).await)
    }

    /// Message ids of every stored report (for end-to-end checks).
    pub async fn report_message_ids(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.report_message_ids().await)
    }

    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }
}

/// Which history row an upsert of current compliance points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRef {
    Existing(i64),
    /// Index into [`Plan::history_inserts`].
    New(usize),
}

/// A history interval to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryInsert {
    pub device_id: String,
    pub baseline_id: String,
    pub state: State,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub started_message_id: String,
}

/// The new current row of a (device, baseline), taken from the report at `report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUpsert {
    pub report: usize,
    pub open_history: HistoryRef,
}

/// What a batch does to current compliance and history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub current: Vec<CurrentUpsert>,
    pub history_closes: Vec<(i64, i64)>,
    pub history_inserts: Vec<HistoryInsert>,
}

/// Decides how `reports` (new ones only, any order) move current compliance and history forward,
/// given the current rows of their (device, baseline) pairs.
///
/// Only a newer evaluation (by `evaluated_ms`, then message id) replaces current state; an older
/// one arriving late is stored as a report but changes neither current state nor history. A
/// change of state closes the open interval at the new evaluation's time and opens another.
pub fn plan_transitions(reports: &[&ReportRow], current: &[CurrentRow]) -> Plan {
    let current: HashMap<(&str, &str), &CurrentRow> = current
        .iter()
        .map(|c| ((c.device_id.as_str(), c.baseline_id.as_str()), c))
        .collect();
    let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        groups
            .entry((r.device_id.as_str(), r.baseline_id.as_str()))
            .or_default()
            .push(i);
    }
    let mut plan = Plan::default();
    for (key, mut idx) in groups {
        idx.sort_by(|a, b| {
            let (ra, rb) = (reports[*a], reports[*b]);
            (ra.evaluated_ms, &ra.message_id).cmp(&(rb.evaluated_ms, &rb.message_id))
        });
        let cur = current.get(&key);
        let mut newest: Option<(i64, &str)> = cur.map(|c| (c.evaluated_ms, c.message_id.as_str()));
        let mut open: Option<(HistoryRef, State)> =
            cur.map(|c| (HistoryRef::Existing(c.open_history_id), c.state));
        let mut latest = None;
        for i in idx {
            let r = reports[i];
            if newest.is_some_and(|n| (r.evaluated_ms, r.message_id.as_str()) <= n) {
                continue;
            }
            newest = Some((r.evaluated_ms, r.message_id.as_str()));
            latest = Some(i);
            let state = r.rollup.state();
            if open.is_some_and(|(_, s)| s == state) {
                continue;
            }
            match open {
                Some((HistoryRef::Existing(id), _)) => {
                    plan.history_closes.push((id, r.evaluated_ms))
                }
                Some((HistoryRef::New(k), _)) => {
                    plan.history_inserts[k].ended_ms = Some(r.evaluated_ms)
                }
                None => {}
            }
            plan.history_inserts.push(HistoryInsert {
                device_id: r.device_id.clone(),
                baseline_id: r.baseline_id.clone(),
                state,
                started_ms: r.evaluated_ms,
                ended_ms: None,
                started_message_id: r.message_id.clone(),
            });
            open = Some((HistoryRef::New(plan.history_inserts.len() - 1), state));
        }
        if let (Some(report), Some((open_history, _))) = (latest, open) {
            plan.current.push(CurrentUpsert {
                report,
                open_history,
            });
        }
    }
    plan
}

/// Folds device sightings so each device appears once per batch: enrollment details win, the
/// latest sighting gives last-seen and relay.
pub fn fold_devices(devices: &[DeviceUpsert]) -> Vec<DeviceUpsert> {
    let mut by_id: BTreeMap<&str, DeviceUpsert> = BTreeMap::new();
    for d in devices {
        match by_id.get_mut(d.device_id.as_str()) {
            None => {
                by_id.insert(&d.device_id, d.clone());
            }
            Some(e) => {
                if d.seen_ms >= e.seen_ms {
                    e.seen_ms = d.seen_ms;
                    e.relay_id = d.relay_id.clone();
                }
                if d.details.is_some() {
                    e.details = d.details.clone();
                    e.key_epoch = d.key_epoch;
                }
            }
        }
    }
    by_id.into_values().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn report(device: &str, baseline: &str, id: &str, at: i64, state: State) -> ReportRow {
        let mut rollup = Rollup::default();
        rollup.add(state, Severity::Warning);
        ReportRow {
            message_id: id.into(),
            device_id: device.into(),
            baseline_id: baseline.into(),
            baseline_revision: 1,
            baseline_name: baseline.into(),
            created_ms: at,
            evaluated_ms: at,
            received_ms: at,
            relay_id: "r".into(),
            rollup,
            settings: vec![],
            signature: vec![],
            signed_bytes: vec![],
        }
    }

    #[test]
    fn first_report_opens_an_interval() {
        let r = [report("d", "b", "m1", 10, State::Compliant)];
        let r: Vec<&ReportRow> = r.iter().collect();
        let p = plan_transitions(&r, &[]);
        assert_eq!(p.history_inserts.len(), 1);
        assert_eq!(p.history_inserts[0].ended_ms, None);
        assert_eq!(
            p.current,
            vec![CurrentUpsert {
                report: 0,
                open_history: HistoryRef::New(0)
            }]
        );
    }

    #[test]
    fn changes_within_a_batch_close_intervals_in_order() {
        let r = [
            report("d", "b", "m3", 30, State::Compliant),
            report("d", "b", "m1", 10, State::Compliant),
            report("d", "b", "m2", 20, State::NonCompliant),
        ];
        let r: Vec<&ReportRow> = r.iter().collect();
        let p = plan_transitions(&r, &[]);
        let iv: Vec<_> = p
            .history_inserts
            .iter()
            .map(|h| (h.state, h.started_ms, h.ended_ms))
            .collect();
        assert_eq!(
            iv,
            vec![
                (State::Compliant, 10, Some(20)),
                (State::NonCompliant, 20, Some(30)),
                (State::Compliant, 30, None)
            ]
        );
        assert_eq!(p.current[0].report, 0);
    }

    #[test]
    fn older_evaluation_changes_nothing() {
        let cur = CurrentRow {
            device_id: "d".into(),
            baseline_id: "b".into(),
            state: State::Compliant,
            evaluated_ms: 100,
            message_id: "m9".into(),
            open_history_id: 7,
        };
        let r = [report("d", "b", "m1", 50, State::NonCompliant)];
        let r: Vec<&ReportRow> = r.iter().collect();
        assert_eq!(plan_transitions(&r, &[cur]), Plan::default());
    }

    #[test]
    fn newer_evaluation_with_same_state_keeps_the_interval() {
        let cur = CurrentRow {
            device_id: "d".into(),
            baseline_id: "b".into(),
            state: State::Compliant,
            evaluated_ms: 100,
            message_id: "m9".into(),
            open_history_id: 7,
        };
        let r = [report("d", "b", "m1", 150, State::Compliant)];
        let r: Vec<&ReportRow> = r.iter().collect();
        let p = plan_transitions(&r, std::slice::from_ref(&cur));
        assert!(p.history_inserts.is_empty() && p.history_closes.is_empty());
        assert_eq!(p.current[0].open_history, HistoryRef::Existing(7));

        let r = [report("d", "b", "m1", 150, State::Error)];
        let r: Vec<&ReportRow> = r.iter().collect();
        let p = plan_transitions(&r, &[cur]);
        assert_eq!(p.history_closes, vec![(7, 150)]);
        assert_eq!(p.current[0].open_history, HistoryRef::New(0));
    }
}
