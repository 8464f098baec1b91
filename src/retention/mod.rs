//! Delete Aged Configuration Management Data: the site maintenance task that deletes compliance
//! reports, their setting results and closed history intervals older than
//! `delete_older_than_days` (DESIGN section 7).
//!
//! - [`settings`]: the task's settings (stored in `maintenance_tasks`), parsed and checked.
//! - [`schedule`]: the windows in which a scheduled run may start.
//! - [`Retention`]: runs the task. A run takes the task's run lock (one run at a time, also
//!   across site servers on one database), records itself in `maintenance_runs`, and deletes in
//!   bounded batches through [`Store::delete_aged_batch`] until nothing older than the cutoff
//!   is left, recording progress as it goes and its outcome at the end, in the log and in
//!   [`RetentionMetrics`].
//!
//! The cutoff is the run's start minus `delete_older_than_days` days, by the injected clock:
//! reports whose received time is before it go, with their setting results; history intervals
//! that ended before it go; open intervals, current compliance, devices, baselines, terms and
//! acceptances are never touched.
//!
//! A run is stopped only between batches (shutdown), so a statement is never cut off; a run
//! killed with its process stays `running` in the record until the next run marks it
//! `interrupted` and deletes what remains (deletion is idempotent).
//!
//! Triggers: the site server's scheduler calls [`Retention::tick`] every minute, which starts a
//! run when the clock is inside a window of an enabled task and no scheduled run started in that
//! window yet. `mprelay maintenance run` is one such tick (it runs only inside a window);
//! `--now` (and `POST /api/v1/maintenance/run` with `"now": true`) starts a manual run at once,
//! whatever the window. A disabled task never runs, by schedule or by hand.

pub mod schedule;
pub mod settings;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::clock::{DAY_MS, SharedClock};
use crate::store::{
    DELETE_AGED_CM_DATA, MaintenanceRun, RunStatus, RunTrigger, Store, StoreError, TaskLock,
};
use schedule::Window;
use settings::{Settings, SettingsError};

/// Rows per deletion batch: small enough that one batch is a few milliseconds of the writer's
/// lock on SQLite, large enough that the per-statement cost does not dominate.
pub const BATCH_ROWS: u32 = 5_000;

/// See [`Retention::pause_ratio`].
pub const PAUSE_RATIO: f64 = 1.0;

/// How long a SQLite run lease lasts without renewal (a run renews it between batches).
pub const LEASE: Duration = Duration::from_secs(600);

/// How often the site server's scheduler looks at the clock.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// How often a running run writes its progress into its record.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Newest recorded runs read per scrape to find those other processes made: more than run
/// between two scrapes.
const RECORDED_RUNS_READ: u32 = 50;

/// Why the task could not run.
#[derive(Debug, Error)]
pub enum RetentionError {
    /// The database failed; the run (if one started) is recorded as failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored settings do not parse.
    #[error("the retention task's settings: {0}")]
    Settings(#[from] SettingsError),
}

/// What a request to run came to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A run started and ended; its record says how.
    Ran { run: MaintenanceRun },
    /// The task is disabled: nothing ran.
    Disabled,
    /// Another run holds the task's lock (in this or another site server).
    Busy,
    /// Outside the schedule: the next window opens at `next_window.start_ms` (none if the
    /// schedule has no window, which settings do not allow).
    NotInWindow { next_window: Option<Window> },
    /// A scheduled run already started in the current window.
    AlreadyRan { window: Window },
}

/// The site setting holding the audit log's age in days.
pub const SETTING_AUDIT_DAYS: &str = "audit_log_retention_days";
/// How long the audit log is kept unless set otherwise.
pub const DEFAULT_AUDIT_DAYS: u32 = 365;

/// Retention counters for the site's `/metrics`.
#[derive(Debug, Default)]
pub struct RetentionMetrics {
    rows: Mutex<BTreeMap<String, u64>>,
    runs: Mutex<BTreeMap<String, u64>>,
    partitions_dropped: AtomicU64,
    /// Runs counted, by id: this process's own, and those others recorded in the database.
    counted: Mutex<std::collections::HashSet<i64>>,
    /// Runs others recorded (`mprelay maintenance run`, another site server) are counted when
    /// they started at or after this instant; 0: not counted.
    others_since_ms: std::sync::atomic::AtomicI64,
}

impl RetentionMetrics {
    /// Rows deleted so far, per table.
    pub fn rows_deleted(&self) -> BTreeMap<String, u64> {
        self.rows.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Runs so far, per outcome (`succeeded`, `failed`, `interrupted`, `busy`).
    pub fn runs(&self) -> BTreeMap<String, u64> {
        self.runs.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Counts, from now on, the runs other processes record in the database too (see
    /// [`RetentionMetrics::count_recorded_runs`]).
    pub fn count_others_from(&self, since_ms: i64) {
        self.others_since_ms
            .store(since_ms.max(1), Ordering::Relaxed);
    }

    /// Counts the finished runs the database records that this process did not make and has
    /// not counted yet (`mprelay maintenance run` from the command line, another site server),
    /// so the site's metrics show every run since it started. Called before each scrape.
    pub async fn count_recorded_runs(&self, store: &Store) -> Result<(), StoreError> {
        let since = self.others_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return Ok(());
        }
        let runs = store
            .maintenance_runs(DELETE_AGED_CM_DATA, RECORDED_RUNS_READ)
            .await?;
        for r in runs {
            if r.started_ms < since || r.status == RunStatus::Running {
                continue;
            }
            let fresh = self
                .counted
                .lock()
                .map(|mut c| c.insert(r.run_id))
                .unwrap_or(false);
            if fresh {
                self.count_run(r.status.as_str());
                for (table, n) in &r.rows_deleted {
                    self.count_rows(table, *n);
                }
            }
        }
        Ok(())
    }

    /// A run of this process, counted as it ends (so the database's record of it is not).
    fn count_own_run(&self, run_id: i64, outcome: &str) {
        if let Ok(mut c) = self.counted.lock() {
            c.insert(run_id);
        }
        self.count_run(outcome);
    }

    fn count_run(&self, outcome: &str) {
        if let Ok(mut m) = self.runs.lock() {
            *m.entry(outcome.into()).or_default() += 1;
        }
    }

    fn count_rows(&self, table: &str, n: u64) {
        if let Ok(mut m) = self.rows.lock() {
            *m.entry(table.into()).or_default() += n;
        }
    }

    /// Appends the counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP mprelay_site_retention_rows_deleted_total Rows the retention task deleted.\n\
             # TYPE mprelay_site_retention_rows_deleted_total counter\n",
        );
        for (t, n) in self.rows_deleted() {
            let _ = writeln!(
                out,
                "mprelay_site_retention_rows_deleted_total{{table=\"{t}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP mprelay_site_retention_runs_total Retention runs by outcome.\n\
             # TYPE mprelay_site_retention_runs_total counter\n",
        );
        for (o, n) in self.runs() {
            let _ = writeln!(
                out,
                "mprelay_site_retention_runs_total{{outcome=\"{o}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP mprelay_site_retention_partitions_dropped_total Day partitions dropped whole.\n\
             # TYPE mprelay_site_retention_partitions_dropped_total counter\n\
             mprelay_site_retention_partitions_dropped_total {}",
            self.partitions_dropped.load(Ordering::Relaxed)
        );
    }
}

/// Runs the retention task against one store with one clock.
#[derive(Debug, Clone)]
pub struct Retention {
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Arc<RetentionMetrics>,
    /// Rows per batch (see [`BATCH_ROWS`]).
    pub batch_rows: u32,
    /// Pause after each batch, as a multiple of the time the batch took: the database is left
    /// to intake, and on SQLite to the checkpointer, which must copy the batch's WAL frames back
    /// before the WAL can start over (if it cannot, the WAL grows to its limit and the next
    /// write waits for a full checkpoint). 1.0 gives the task at most half the database's time.
    pub pause_ratio: f64,
    /// For tests of interrupted runs: after this many batches the run returns as a killed
    /// process would leave it, its record still `running` (the lock is released).
    pub abandon_after_batches: Option<u64>,
}

impl Retention {
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            metrics: Arc::default(),
            batch_rows: BATCH_ROWS,
            pause_ratio: PAUSE_RATIO,
            abandon_after_batches: None,
        }
    }

    /// The task's settings, parsed.
    pub async fn settings(&self) -> Result<Settings, RetentionError> {
        let task = self.store.maintenance_task(DELETE_AGED_CM_DATA).await?;
        Ok(Settings::from_task(&task)?)
    }

    /// One look at the schedule: runs if the task is enabled, the clock is inside a window and
    /// no scheduled run started in that window yet.
    /// `started` gets the run's id once its record exists.
    pub async fn tick(
        &self,
        stop: &watch::Receiver<bool>,
        started: Option<oneshot::Sender<i64>>,
    ) -> Result<Outcome, RetentionError> {
        let s = self.settings().await?;
        if !s.enabled {
            return Ok(Outcome::Disabled);
        }
        let now = self.clock.now_ms();
        let Some(window) = schedule::window_at(&s, now) else {
            return Ok(Outcome::NotInWindow {
                next_window: schedule::next_window(&s, now),
            });
        };
        let ran = self
            .store
            .maintenance_run_started(
                DELETE_AGED_CM_DATA,
                RunTrigger::Schedule,
                window.start_ms,
                window.end_ms,
            )
            .await?;
        if ran {
            return Ok(Outcome::AlreadyRan { window });
        }
        self.run(RunTrigger::Schedule, stop, started).await
    }

    /// Runs now, whatever the window (the task must be enabled). `started` gets the run's id
    /// once its record exists.
    pub async fn run(
        &self,
        trigger: RunTrigger,
        stop: &watch::Receiver<bool>,
        started: Option<oneshot::Sender<i64>>,
    ) -> Result<Outcome, RetentionError> {
        let s = self.settings().await?;
        if !s.enabled {
            return Ok(Outcome::Disabled);
        }
        let holder = uuid::Uuid::new_v4().to_string();
        let Some(lock) = self
            .store
            .try_lock_task(DELETE_AGED_CM_DATA, &holder, self.clock.now_ms(), LEASE)
            .await?
        else {
            self.metrics.count_run("busy");
            info!("retention run skipped: another run holds the task");
            return Ok(Outcome::Busy);
        };
        let result = self.run_locked(&s, trigger, stop, started, &lock).await;
        if let Err(e) = self.store.release_task_lock(lock).await {
            warn!(error = %e, "releasing the retention run lock failed; it expires by itself");
        }
        result
    }

    async fn run_locked(
        &self,
        s: &Settings,
        trigger: RunTrigger,
        stop: &watch::Receiver<bool>,
        started: Option<oneshot::Sender<i64>>,
        lock: &TaskLock,
    ) -> Result<Outcome, RetentionError> {
        let started_ms = self.clock.now_ms();
        let cutoff_ms = started_ms - i64::from(s.delete_older_than_days) * DAY_MS;
        let run_id = self
            .store
            .start_maintenance_run(DELETE_AGED_CM_DATA, trigger, started_ms, cutoff_ms)
            .await?;
        if let Some(tx) = started {
            let _ = tx.send(run_id);
        }
        info!(
            run_id,
            trigger = trigger.as_str(),
            cutoff_ms,
            days = s.delete_older_than_days,
            "retention run started"
        );
        let mut deleted: BTreeMap<String, u64> = BTreeMap::new();
        let mut batches = 0u64;
        let mut last_progress = Instant::now();
        let mut renewed_ms = started_ms;
        let end: Result<RunStatus, StoreError> = loop {
            if *stop.borrow() {
                break Ok(RunStatus::Interrupted);
            }
            if self.abandon_after_batches.is_some_and(|n| batches >= n) {
                // As if the process died here: the record stays `running`.
                let _ = self
                    .store
                    .update_maintenance_run(run_id, RunStatus::Running, 0, &deleted, None)
                    .await;
                return self.finish(run_id).await;
            }
            let batch_started = Instant::now();
            let batch = match self
                .store
                .delete_aged_batch(cutoff_ms, self.batch_rows)
                .await
            {
                Ok(b) => b,
                Err(e) => break Err(e),
            };
            if batch.is_empty() {
                break Ok(RunStatus::Succeeded);
            }
            batches += 1;
            for (table, n) in &batch.rows {
                *deleted.entry((*table).to_string()).or_default() += n;
                self.metrics.count_rows(table, *n);
            }
            self.metrics
                .partitions_dropped
                .fetch_add(u64::from(batch.partitions_dropped), Ordering::Relaxed);
            let now = self.clock.now_ms();
            if now - renewed_ms > LEASE.as_millis() as i64 / 3 {
                match self.store.renew_task_lock(lock, now, LEASE).await {
                    Ok(true) => renewed_ms = now,
                    Ok(false) => {
                        break Err(StoreError::Corrupt(
                            "the run lease expired and another run took it".into(),
                        ));
                    }
                    Err(e) => break Err(e),
                }
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                if let Err(e) = self
                    .store
                    .update_maintenance_run(run_id, RunStatus::Running, now, &deleted, None)
                    .await
                {
                    break Err(e);
                }
            }
            let pause = batch_started
                .elapsed()
                .mul_f64(self.pause_ratio.clamp(0.0, 100.0));
            if pause.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(pause).await;
            }
        };
        // The audit log is kept for its own age, separately from compliance data.
        let end = match end {
            Ok(RunStatus::Succeeded) => self.delete_aged_audit(started_ms, &mut deleted).await,
            other => other,
        };
        let (status, error) = match &end {
            Ok(st) => (*st, None),
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        let error = error.or_else(|| {
            (status == RunStatus::Interrupted).then(|| "stopped by shutdown".to_string())
        });
        let total: u64 = deleted.values().sum();
        self.store
            .update_maintenance_run(
                run_id,
                status,
                self.clock.now_ms(),
                &deleted,
                error.as_deref(),
            )
            .await?;
        self.metrics.count_own_run(run_id, status.as_str());
        match &error {
            None => info!(run_id, total, batches, rows = ?deleted, "retention run succeeded"),
            Some(e) => {
                warn!(run_id, total, batches, rows = ?deleted, status = status.as_str(), error = %e, "retention run did not finish")
            }
        }
        self.finish(run_id).await
    }

    /// Deletes the audit entries older than the audit log's age (site setting
    /// [`SETTING_AUDIT_DAYS`], default [`DEFAULT_AUDIT_DAYS`]).
    async fn delete_aged_audit(
        &self,
        now_ms: i64,
        deleted: &mut BTreeMap<String, u64>,
    ) -> Result<RunStatus, StoreError> {
        let days = self
            .store
            .site_setting(SETTING_AUDIT_DAYS)
            .await?
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(DEFAULT_AUDIT_DAYS);
        let n = self
            .store
            .delete_audit_before(now_ms - i64::from(days) * DAY_MS)
            .await?;
        if n > 0 {
            *deleted.entry("audit_log".into()).or_default() += n;
            self.metrics.count_rows("audit_log", n);
        }
        Ok(RunStatus::Succeeded)
    }

    async fn finish(&self, run_id: i64) -> Result<Outcome, RetentionError> {
        let run = self
            .store
            .maintenance_run(run_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("maintenance run {run_id} vanished")))?;
        Ok(Outcome::Ran { run })
    }

    /// The site server's scheduler: a tick now and every [`CHECK_EVERY`] until shutdown. A run
    /// in progress sees the shutdown between two batches and ends there.
    pub async fn schedule_loop(self, shutdown: watch::Receiver<bool>) {
        let mut stop = shutdown.clone();
        loop {
            match self.tick(&shutdown, None).await {
                Ok(Outcome::Ran { run }) => {
                    info!(
                        run_id = run.run_id,
                        status = run.status.as_str(),
                        "scheduled retention run ended"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "retention schedule check failed; trying again in a minute")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }
}
