//! `mprelay maintenance show|set|run`: the retention task (Delete Aged Configuration Management
//! Data) from the command line, on the site database directly. See [`crate::retention`] for
//! what a run deletes and how `run` and `run --now` differ.

use std::fmt::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio::sync::watch;

use super::{DbArg, Failure, open_store, open_store_read_only, tables::fmt_time, usage};
use crate::clock;
use crate::retention::schedule::{describe, next_window};
use crate::retention::settings::{Settings, SettingsChange, apply};
use crate::retention::{Outcome, Retention};
use crate::store::{DELETE_AGED_CM_DATA, MaintenanceRun, MaintenanceTask, RunTrigger, Store};

#[derive(Debug, Subcommand)]
pub(super) enum MaintenanceCmd {
    /// The retention task's settings, its next window and its latest runs.
    Show(DbArg),
    /// Change the retention task's settings; what is not given stays as it is.
    Set(SetArgs),
    /// Run the retention task as the schedule would: only inside a window, once per window.
    /// With --now, run it at once whatever the window (a disabled task never runs).
    Run {
        #[command(flatten)]
        db: DbArg,
        /// Run at once, outside the schedule window too.
        #[arg(long)]
        now: bool,
    },
}

#[derive(Debug, Args)]
pub(super) struct SetArgs {
    #[command(flatten)]
    db: DbArg,
    /// Delete data received more than this many days ago (1 to 3650).
    #[arg(long)]
    delete_older_than_days: Option<i64>,
    /// Days of week the task runs on, e.g. sat,sun.
    #[arg(long)]
    days: Option<String>,
    /// Begin time and latest begin time, HH:MM-HH:MM, in the task's time zone.
    #[arg(long)]
    window: Option<String>,
    /// IANA time zone of the window, e.g. UTC or Europe/Paris.
    #[arg(long)]
    time_zone: Option<String>,
    /// Stop scheduled and manual runs.
    #[arg(long, conflicts_with = "enable")]
    disable: bool,
    /// Let the task run again.
    #[arg(long)]
    enable: bool,
}

pub(super) async fn maintenance(c: MaintenanceCmd) -> Result<(), Failure> {
    match c {
        MaintenanceCmd::Show(db) => {
            let store = open_store_read_only(&db).await?;
            print!("{}", show(&store).await?);
            Ok(())
        }
        MaintenanceCmd::Set(a) => set(a).await,
        MaintenanceCmd::Run { db, now } => run(&db, now).await,
    }
}

async fn show(store: &Store) -> Result<String, Failure> {
    let task = store
        .maintenance_task(DELETE_AGED_CM_DATA)
        .await
        .context("reading the task's settings")?;
    let runs = store
        .maintenance_runs(DELETE_AGED_CM_DATA, 10)
        .await
        .context("reading the task's runs")?;
    Ok(format!("{}{}", settings_text(&task), runs_table(&runs)))
}

fn settings_text(t: &MaintenanceTask) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Delete Aged Configuration Management Data");
    let _ = writeln!(
        out,
        "  enabled:                {}",
        if t.enabled { "yes" } else { "no" }
    );
    let _ = writeln!(
        out,
        "  delete older than days: {}",
        t.delete_older_than_days
    );
    let _ = writeln!(
        out,
        "  days of week:           {}",
        t.days_of_week.join(",")
    );
    let _ = writeln!(
        out,
        "  window:                 {}-{} {}",
        t.begin_time, t.latest_begin_time, t.time_zone
    );
    let next = match Settings::from_task(t) {
        Ok(s) => next_window(&s, clock::now_ms())
            .map(|w| describe(&s, w.start_ms))
            .unwrap_or_else(|| "none".into()),
        Err(e) => format!("none: {e}"),
    };
    let _ = writeln!(out, "  next window opens:      {next}");
    out
}

fn runs_table(runs: &[MaintenanceRun]) -> String {
    let mut out = String::from("\nRuns (newest first):\n");
    if runs.is_empty() {
        out.push_str("  none yet\n");
        return out;
    }
    let _ = writeln!(
        out,
        "  {:>6}  {:<8}  {:<11}  {:<20}  {:<20}  {:<20}  {:>12}  error",
        "run", "trigger", "status", "started", "ended", "cutoff", "deleted"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "  {:>6}  {:<8}  {:<11}  {:<20}  {:<20}  {:<20}  {:>12}  {}",
            r.run_id,
            r.trigger,
            r.status.as_str(),
            fmt_time(r.started_ms),
            r.ended_ms.map(fmt_time).unwrap_or_default(),
            fmt_time(r.cutoff_ms),
            r.total_deleted,
            r.error.as_deref().unwrap_or("")
        );
    }
    out
}

async fn set(a: SetArgs) -> Result<(), Failure> {
    let change = SettingsChange {
        enabled: match (a.enable, a.disable) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        delete_older_than_days: a.delete_older_than_days,
        days: a.days,
        window: a.window,
        time_zone: a.time_zone,
    };
    if change == SettingsChange::default() {
        return Err(usage(
            "nothing to change: give --delete-older-than-days, --days, --window, --time-zone, \
             --enable or --disable",
        ));
    }
    let store = open_store(&a.db).await?;
    let task = store
        .maintenance_task(DELETE_AGED_CM_DATA)
        .await
        .context("reading the task's settings")?;
    let new = apply(&task, &change).map_err(|e| usage(e.to_string()))?;
    store
        .update_maintenance_task(&crate::store::Actor::cli(), &new)
        .await
        .context("storing the task's settings")?;
    let stored = store
        .maintenance_task(DELETE_AGED_CM_DATA)
        .await
        .context("reading the task's settings")?;
    print!("{}", settings_text(&stored));
    Ok(())
}

async fn run(db: &DbArg, now: bool) -> Result<(), Failure> {
    let store = open_store(db).await?;
    let retention = Retention::new(store.clone(), clock::system());
    let (stop_tx, stop) = watch::channel(false);
    // Ctrl-C ends the run between two batches, recorded as interrupted.
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let outcome = if now {
        retention.run(RunTrigger::Manual, &stop, None).await
    } else {
        retention.tick(&stop, None).await
    }
    .context("running the retention task")?;
    let settings = retention
        .settings()
        .await
        .context("reading the task's settings")?;
    store.close().await;
    match outcome {
        Outcome::Ran { run } => {
            let rows: Vec<String> = run
                .rows_deleted
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect();
            println!(
                "run {} {}: deleted {} rows received before {} ({}) in {:.1} s",
                run.run_id,
                run.status.as_str(),
                run.total_deleted,
                fmt_time(run.cutoff_ms),
                if rows.is_empty() {
                    "nothing to delete".into()
                } else {
                    rows.join(", ")
                },
                (run.ended_ms.unwrap_or(run.started_ms) - run.started_ms) as f64 / 1000.0
            );
            match run.error {
                Some(e) => Err(Failure::Other(anyhow::anyhow!("run {}: {e}", run.run_id))),
                None => Ok(()),
            }
        }
        Outcome::Disabled => Err(Failure::Other(anyhow::anyhow!(
            "the retention task is disabled; nothing was deleted (mprelay maintenance set --enable)"
        ))),
        Outcome::Busy => Err(Failure::Other(anyhow::anyhow!(
            "another retention run is in progress; nothing was started"
        ))),
        Outcome::NotInWindow { next_window } => {
            println!(
                "not inside the task's window; nothing was run. The next window opens {} \
                 (use --now to run at once)",
                next_window
                    .map(|w| describe(&settings, w.start_ms))
                    .unwrap_or_else(|| "never".into())
            );
            Ok(())
        }
        Outcome::AlreadyRan { window } => {
            println!(
                "a scheduled run already started in the window that opened {}; nothing was run \
                 (use --now to run again)",
                describe(&settings, window.start_ms)
            );
            Ok(())
        }
    }
}
