//! `mprelay bench retention`: the retention task's delete rate, and what it costs intake: the
//! writer's batch latency while the task runs, beside the same writer's latency just before it
//! (the ratio is the house way to report against a ceiling on a shared, noisy machine).
//!
//! Setup (timed only for the record): `--rows` setting rows (`--settings` per report) written
//! through the real writer with received times spread evenly over the last `--days` days (180),
//! oldest first, as a site would have stored them; on PostgreSQL the day partitions of those
//! days are made first, as a site server running back then would have. Then a writer writes a
//! forward batch of `--writer-batch` fresh reports every `--writer-interval-ms` (back to back
//! if a batch takes longer) for `--baseline-secs`, then on while the retention task runs with
//! its defaults (90 days, 5,000-row batches) and the system clock. Every writer batch's latency
//! is recorded; p50/p99 "during" are the batches that started and ended while the run ran.
//!
//! At the end it checks the outcome: nothing received after the cutoff is gone (the fill's
//! young rows and every row the writer wrote are all there) and nothing older is left.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::watch;

use super::harness::{percentile, round};
use crate::clock::{self, DAY_MS};
use crate::compliance::{Rollup, Severity, State};
use crate::ids::MessageId;
use crate::retention::{Outcome, Retention};
use crate::store::{
    DeviceUpsert, ReportRow, RunStatus, RunTrigger, SettingRow, Store, WriteBatch,
    postgres::redact_url,
};

/// Options of `mprelay bench retention`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
What it does to the database: it creates the site schema there, fills it with --rows setting \
rows (and their reports) through the real writer, runs the retention task against it (deleting \
about half) while writing more, and leaves the result there. It refuses a database that already \
holds reports: give it a new SQLite file (sqlite:///tmp/ret.db) or a fresh PostgreSQL database.

The last line of output is JSON: {\"bench\":\"retention\",\"backend\":…,\"rows_deleted\":…,\
\"rows_deleted_per_s\":…,\"writer_p99_ms_during\":…,\"writer_p99_ms_before\":…,\"ratio\":…}; \
rows are setting-result rows, ratio is p99 during over p99 before.")]
pub struct Args {
    /// Site database URL: sqlite://PATH or postgres://USER@HOST:PORT/DB.
    #[arg(long)]
    pub database: String,
    /// Setting rows to fill.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Settings per report.
    #[arg(long, default_value_t = 35)]
    pub settings: usize,
    /// Days the filled rows' received times spread over (the task deletes what is older than 90).
    #[arg(long, default_value_t = 180)]
    pub days: i64,
    /// Reports per writer batch during the run.
    #[arg(long, default_value_t = 50)]
    pub writer_batch: usize,
    /// Start a writer batch this often (back to back if one takes longer).
    #[arg(long, default_value_t = 50)]
    pub writer_interval_ms: u64,
    /// How long the writer runs alone before the task starts, for the baseline latency (the
    /// first fifth is left out of it: the database settles after the fill).
    #[arg(long, default_value_t = 5.0)]
    pub baseline_secs: f64,
    /// The task's pause after each batch, as a multiple of the batch's time.
    #[arg(long, default_value_t = crate::retention::PAUSE_RATIO)]
    pub pause_ratio: f64,
    /// Rows per deletion batch.
    #[arg(long, default_value_t = crate::retention::BATCH_ROWS)]
    pub batch_rows: u32,
}

#[derive(Serialize)]
struct Figures {
    bench: &'static str,
    backend: &'static str,
    rows_filled: u64,
    fill_secs: f64,
    rows_deleted: u64,
    reports_deleted: u64,
    run_secs: f64,
    rows_deleted_per_s: f64,
    writer_batches_during: usize,
    writer_rows_per_batch: usize,
    writer_p50_ms_during: f64,
    writer_p99_ms_during: f64,
    writer_max_ms_during: f64,
    writer_p50_ms_before: f64,
    writer_p99_ms_before: f64,
    batch_rows: u32,
    pause_ratio: f64,
    ratio: f64,
    lost: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.rows == 0 || args.settings == 0 || args.writer_batch == 0 || args.days < 2 {
        bail!("--rows, --settings and --writer-batch must be at least 1, --days at least 2");
    }
    let store = Store::connect(&args.database)
        .await
        .with_context(|| format!("opening {}", redact_url(&args.database)))?;
    let before = store.counts().await?;
    if before.reports > 0 {
        bail!(
            "{} already holds {} reports; give the bench a new SQLite file or a fresh PostgreSQL \
             database",
            redact_url(&args.database),
            before.reports
        );
    }
    let now = clock::now_ms();
    let reports = args.rows.div_ceil(args.settings as u64);
    eprintln!(
        "filling {reports} reports of {} settings over {} days…",
        args.settings, args.days
    );
    let fill_started = Instant::now();
    let mut day = now - args.days * DAY_MS;
    while day < now {
        store.ensure_partitions(day).await?;
        day += 9 * DAY_MS;
    }
    let span = args.days * DAY_MS;
    let cutoff_at_start = now - 90 * DAY_MS;
    let mut young = 0u64;
    let chunk = 1000u64;
    let mut i = 0;
    let mut seq = 0;
    while i < reports {
        let n = chunk.min(reports - i);
        let batch: Vec<ReportRow> = (i..i + n)
            .map(|k| {
                let at = now - span + (k as i64 * span) / reports as i64;
                report(k, at, args.settings)
            })
            .collect();
        young += batch
            .iter()
            .filter(|r| r.received_ms >= cutoff_at_start + DAY_MS)
            .count() as u64;
        seq += 1;
        store.write_batch(&write_batch("fill", seq, batch)).await?;
        i += n;
        if i % 50_000 < n {
            eprintln!("  {i} reports");
        }
    }
    let fill_secs = fill_started.elapsed().as_secs_f64();
    eprintln!("filled in {fill_secs:.1} s");

    // The writer: fresh reports, paced, recording (start, latency) of every batch.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        let (size, every) = (
            args.writer_batch,
            Duration::from_millis(args.writer_interval_ms),
        );
        let settings = args.settings;
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut lat: Vec<(Duration, Duration)> = vec![];
            let mut written = 0u64;
            let mut k = u64::MAX / 2;
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = t0.elapsed();
                let rows: Vec<ReportRow> = (0..size)
                    .map(|_| {
                        k += 1;
                        report(k, clock::now_ms(), settings)
                    })
                    .collect();
                seq += 1;
                let t = Instant::now();
                store.write_batch(&write_batch("live", seq, rows)).await?;
                lat.push((started, t.elapsed()));
                written += size as u64;
                let next = every.saturating_sub(t0.elapsed() - started);
                tokio::time::sleep(next).await;
            }
            Ok::<_, anyhow::Error>((t0, lat, written))
        })
    };
    tokio::time::sleep(Duration::from_secs_f64(args.baseline_secs)).await;

    eprintln!("running the retention task…");
    let mut retention = Retention::new(store.clone(), clock::system());
    retention.pause_ratio = args.pause_ratio;
    retention.batch_rows = args.batch_rows;
    let (_keep, no_stop) = watch::channel(false);
    let run_started = Instant::now();
    let outcome = retention.run(RunTrigger::Manual, &no_stop, None).await?;
    let run_ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let (t0, lat, written) = writer.await??;
    let Outcome::Ran { run } = outcome else {
        bail!("the retention task did not run: {outcome:?}");
    };
    if run.status != RunStatus::Succeeded {
        bail!("the retention run ended {:?}: {:?}", run.status, run.error);
    }
    let run_secs = (run_ended - run_started).as_secs_f64();
    let (rs, re) = (run_started - t0, run_ended - t0);
    let ms = |d: &Duration| d.as_micros().min(u32::MAX as u128) as u32;
    let mut during: Vec<u32> = lat
        .iter()
        .filter(|(s, l)| *s >= rs && *s + *l <= re)
        .map(|(_, l)| ms(l))
        .collect();
    let settled = Duration::from_secs_f64(args.baseline_secs / 5.0);
    let mut baseline: Vec<u32> = lat
        .iter()
        .filter(|(s, _)| *s >= settled && *s < rs)
        .map(|(_, l)| ms(l))
        .collect();
    during.sort_unstable();
    baseline.sort_unstable();

    // Nothing younger than the cutoff went, nothing older is left.
    let after = store.counts().await?;
    let older_left = store.delete_aged_batch(run.cutoff_ms, 1).await?;
    if !older_left.is_empty() {
        bail!("rows older than the cutoff were left: {older_left:?}");
    }
    let kept_at_least = young + written;
    let lost = kept_at_least.saturating_sub(after.reports);
    if lost > 0 {
        bail!(
            "{lost} reports younger than the cutoff are gone ({} kept, at least {kept_at_least} expected)",
            after.reports
        );
    }
    let rows_deleted = run
        .rows_deleted
        .get("setting_results")
        .copied()
        .unwrap_or(0);
    let p99_during = percentile(&during, 99.0) / 1000.0;
    let p99_before = percentile(&baseline, 99.0) / 1000.0;
    let f = Figures {
        bench: "retention",
        backend: store.backend(),
        rows_filled: reports * args.settings as u64,
        fill_secs: round(fill_secs, 1),
        rows_deleted,
        reports_deleted: run
            .rows_deleted
            .get("compliance_reports")
            .copied()
            .unwrap_or(0),
        run_secs: round(run_secs, 2),
        rows_deleted_per_s: round(rows_deleted as f64 / run_secs.max(1e-9), 0),
        writer_batches_during: during.len(),
        writer_rows_per_batch: args.writer_batch * args.settings,
        writer_p50_ms_during: round(percentile(&during, 50.0) / 1000.0, 2),
        writer_p99_ms_during: round(p99_during, 2),
        writer_max_ms_during: round(during.last().copied().unwrap_or(0) as f64 / 1000.0, 2),
        writer_p50_ms_before: round(percentile(&baseline, 50.0) / 1000.0, 2),
        writer_p99_ms_before: round(p99_before, 2),
        batch_rows: args.batch_rows,
        pause_ratio: args.pause_ratio,
        ratio: round(p99_during / p99_before.max(1e-9), 2),
        lost,
    };
    store.close().await;
    println!("{}", serde_json::to_string(&f)?);
    Ok(())
}

/// Report `k` received at `at`: a device among 2,000, whose state changes now and then so
/// history intervals close.
fn report(k: u64, at: i64, settings: usize) -> ReportRow {
    let state = if (k / 2000) % 5 == 4 {
        State::NonCompliant
    } else {
        State::Compliant
    };
    let rows: Vec<SettingRow> = (0..settings)
        .map(|j| SettingRow {
            ci_id: format!("ci-{}", j / 5),
            ci_revision: 1,
            setting_id: format!("setting-{j}"),
            state: if j == 0 { state } else { State::Compliant },
            severity: Severity::Warning,
            expected: "== 1".into(),
            observed_before: Some("1".into()),
            observed_after: None,
            remediated: false,
            error: String::new(),
        })
        .collect();
    let mut rollup = Rollup::default();
    for s in &rows {
        rollup.add(s.state, s.severity);
    }
    ReportRow {
        message_id: MessageId::new().to_string(),
        device_id: format!("{:032x}", k % 2000),
        baseline_id: "bench-baseline".into(),
        baseline_revision: 1,
        baseline_name: "Bench baseline".into(),
        created_ms: at,
        evaluated_ms: at,
        received_ms: at,
        relay_id: "bench-relay".into(),
        rollup,
        settings: rows,
        signature: vec![7; 64],
        signed_bytes: vec![9; 512],
    }
}

fn write_batch(relay: &str, seq: u64, reports: Vec<ReportRow>) -> WriteBatch {
    WriteBatch {
        relay_id: relay.into(),
        relay_url: format!("https://{relay}"),
        spool_id: format!("{relay}-spool"),
        through_seq: seq,
        last_seq: seq,
        devices: reports
            .iter()
            .map(|r| DeviceUpsert {
                device_id: r.device_id.clone(),
                public_key: vec![1; 32],
                key_epoch: 1,
                details: None,
                seen_ms: r.received_ms,
                relay_id: relay.into(),
            })
            .collect(),
        reports,
        ..Default::default()
    }
}
