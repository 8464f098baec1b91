//! The site database behind one interface, with a SQLite backend (the embedded default) and a
//! PostgreSQL backend (the scale path), chosen by the URL: `sqlite://PATH` or `postgres://…`.
//! No SQL lives outside this module.
//!
//! Writing a forwarded batch is one transaction of a few set-based statements per table: dedup
//! by message id, upsert devices, insert reports and setting results, move current compliance
//! and history intervals forward, insert terms acceptances, advance the relay cursor. Replaying a
//! batch changes nothing. The decisions about current state and history are taken once, in Rust
//! ([`decide`]); the backends only execute them.
//!
//! SQL the two dialects agree on is written once (`$N` placeholders, `COUNT(*) FILTER (…)`,
//! `CAST(… AS BIGINT)`, `CASE` for `GREATEST`): a new read query is one method of [`Store`] in
//! the file of its area, run with `read!` on the pool reads go to; work inside a transaction
//! is written once in a `for_each_backend!` block of that file and compiled for each backend.
//! Only what truly differs is per backend: the write path, retention, partitions, locks and how
//! transactions begin, and where PostgreSQL finds a report through its partitions.
//!
//! ```text
//! store/
//!   mod.rs          the Store enum, the dispatch to a backend, this list
//!   error.rs        StoreError, and a database error as an operator reads it
//!   types.rs        the records the store takes and gives
//!   decide.rs       the decisions: plan_transitions, fold_devices, plan_publish, trends
//!   migrate.rs      both backends' migrations and the schema check
//!   rows.rs         a record from a row of either backend
//!   reads.rs        shared reads: cursors, counts, reports, devices, current state, history
//!   collections.rs  collections, device tags, deployments, what membership is computed from
//!   compliance.rs   definitions, policy, compliance reports
//!   console.rs      the console's trend and device search
//!   maintenance.rs  maintenance tasks and runs
//!   terms.rs        terms and conditions, acceptances, site settings
//!   admins.rs       named administrators, their roles and token hashes
//!   audit.rs        the audit log, and `record`, which every change calls in its transaction
//!   retention.rs    the retention task's batches and run lock
//!   ceiling.rs      the writer benchmark's bare-insert ceiling
//!   generate.rs     the site benchmark's generated database, set-based
//!   sqlite/         what SQLite says its own way: mod.rs (open, pools, checkpoints, how
//!                   transactions begin), write.rs (the write path), retention.rs,
//!                   compliance.rs and reads.rs (where a report and its settings are)
//!   postgres/       the same shape for PostgreSQL, with partitions.rs (day partitions) and
//!                   copy.rs (the binary COPY encoder)
//! ```
//!
//! The PostgreSQL backend partitions reports and setting results by received day; the scheme,
//! its dedup table and how two site servers share one database are in [`postgres`].

/// Runs `$e` on whichever backend `$self` is, with `$s` the backend's store.
macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

/// Runs `$e` with `$p` the pool reads go to, on whichever backend `$self` is: the query is
/// written once and compiled for both.
macro_rules! read {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Store::Sqlite(s) => {
                let $p = s.reader();
                $e
            }
            Store::Postgres(s) => {
                let $p = s.reader();
                $e
            }
        }
    };
}

/// Runs `$e` on whichever backend `$self` is, with `$s` the backend's store and `$m` the module
/// [`for_each_backend!`] compiled for that backend in the calling file, and `audit` the same
/// backend's audit log (`audit::record` in the transaction of a change).
macro_rules! dispatch_sql {
    ($self:ident, $s:ident, $m:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => {
                use self::on_sqlite as $m;
                #[allow(unused_imports)]
                use crate::store::audit::on_sqlite as audit;
                $e
            }
            Store::Postgres($s) => {
                use self::on_postgres as $m;
                #[allow(unused_imports)]
                use crate::store::audit::on_postgres as audit;
                $e
            }
        }
    };
}

/// Compiles the functions given once per backend, as `on_sqlite` (on a `SqliteConnection`) and
/// `on_postgres` (on a `PgConnection`), each seeing the calling file's imports and `Conn` as
/// its connection type, `policy` as the same backend's compiled policy SQL (for
/// `policy::bump_policy_version`) and `audit` as its audit log (`audit::record`, which every
/// change calls in its own transaction): SQL both dialects agree on, written once, for work inside a
/// transaction the backend opened its own way.
macro_rules! for_each_backend {
    ($($item:item)*) => {
        pub(crate) mod on_sqlite {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use crate::store::compliance::on_sqlite as policy;
            #[allow(unused_imports)]
            use crate::store::audit::on_sqlite as audit;
            type Conn = sqlx::SqliteConnection;
            $($item)*
        }
        pub(crate) mod on_postgres {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use crate::store::compliance::on_postgres as policy;
            #[allow(unused_imports)]
            use crate::store::audit::on_postgres as audit;
            type Conn = sqlx::PgConnection;
            $($item)*
        }
    };
}

pub mod admins;
pub mod audit;
pub(crate) mod ceiling;
mod collections;
pub(crate) mod compliance;
mod console;
pub mod decide;
mod error;
mod events;
mod generate;
mod lists;
mod maintenance;
mod migrate;
pub mod postgres;
mod reads;
pub mod retention;
mod rows;
mod sqlite;
mod terms;
pub mod types;

pub use admins::{AdminCredential, Administrator, BOOTSTRAP_ADMIN, Role};
pub use audit::{Actor, AuditEntry, AuditFilter, Change as AuditChange};
pub use collections::{
    Change, CollectionImport, CollectionSummary, DeployRequest, DeploymentRecord, DeviceFacts,
    ImportRefusal,
};
pub use decide::{
    CurrentUpsert, HistoryInsert, HistoryRef, Plan, fold_devices, plan_publish, plan_transitions,
    trend_from_spans,
};
pub use error::StoreError;
pub(crate) use error::describe;
pub use events::CriticalEvent;
pub use generate::{SLOT_MS, SLOTS_PER_DAY, SiteShape};
pub use lists::{BaselineDeviceRow, DEFAULT_PAGE, DeviceFilter, MAX_PAGE, Page};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use types::{
    AcceptanceReport, AcceptanceRow, AcceptanceRowView, AcceptanceView, BaselineDetail,
    BaselineOverview, BaselineRecord, BaselineSummary, BatchDeleted, Counts, CurrentRow,
    CurrentView, DAY_MS, DELETE_AGED_CM_DATA, DefinitionRecord, DefinitionSummary, DeviceBaseline,
    DeviceCompliance, DeviceDetails, DeviceRow, DeviceUpsert, DeviceView, HistoryView, ImportIssue,
    ImportRequest, ImportResult, MaintenanceRun, MaintenanceTask, MemberRecord, MemberView,
    NoncompliantDevice, PolicyContents, PublishAction, Published, QuarantineRow, RelayCursor,
    ReportRow, ReportView, ResolvedBaseline, RevisionView, RunStatus, RunTrigger, SettingRow,
    SettingSummary, SettingView, T_HISTORY, T_MESSAGE_IDS, T_REPORTS, T_SETTINGS, TaskLock,
    TermsDraft, TermsRecord, TermsText, TrendPoint, TrendSpan, UserAcceptance, WriteBatch,
    WriteOutcome,
};

/// The site database.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

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

    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }
}
