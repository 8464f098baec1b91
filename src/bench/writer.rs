//! `mprelay bench writer`: the site-database writer's throughput against a bare bulk insert of
//! the same rows, measured in the same run on the same database.
//!
//! Setup (not timed): synthetic devices sign realistic reports of `--settings` settings; each
//! is wrapped in the forward record a relay would send and decoded by the site's own decoder,
//! then grouped into forward batches of `--batch` records. Timed: every batch goes through the
//! real writer ([`Store::write_batch`]: dedup, reports, setting results, current compliance,
//! history, devices, relay cursor, one transaction) and, alternately before or after it, the
//! same rows through the ceiling (`BareTables`: the same bulk statements into bare tables).
//! Alternating keeps the machine's noise and the database's checkpoints from favouring either.
//!
//! The writer's background work (on PostgreSQL, summarizing the block ranges a batch filled,
//! started after its commit) counts as the writer's: the writer's clock runs until it is done.
//! As in the site server, it may overlap the writer's next batch, which it then slows, on the
//! writer's clock; it is waited for before every ceiling round (the clock still running), so it
//! never overlaps or slows the ceiling, and at the end.
//!
//! "rows" are setting-result rows, the unit of DESIGN section 9 (8,000 reports/s × 35 ≈ 280k
//! rows/s). The ceiling writes the report rows too; the ratio is writer rate over ceiling rate.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::future::try_join_all;
use prost::Message;
use serde::Serialize;

use super::harness::round;
use crate::clock;
use crate::envelope::DeviceSigner;
use crate::ids::MessageId;
use crate::proto::{ForwardRecord, Submission, VerifiedSubmission, forward_record, submission};
use crate::site::decode::{RawBatch, decode_batch};
use crate::store::ceiling::BareTables;
use crate::store::{Store, WriteBatch, postgres::redact_url};

/// Options of `mprelay bench writer`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
What it does to the database: it creates the site schema there (as the site server does at \
start), writes --reports reports through the real writer and leaves them there, and creates \
and drops two scratch tables, bench_ceiling_reports and bench_ceiling_settings. It refuses a \
database that already holds reports. Give it a new SQLite file (sqlite:///tmp/bench.db) or a \
fresh PostgreSQL database (createdb mprelay_bench; postgres://postgres@127.0.0.1:5432/mprelay_bench).

The last line of output is JSON: {\"bench\":\"writer\",\"backend\":…,\"reports_per_s\":…,\
\"rows_per_s\":…,\"ceiling_rows_per_s\":…,\"ratio\":…}; rows are setting-result rows.")]
pub struct Args {
    /// Site database URL: sqlite://PATH or postgres://USER@HOST:PORT/DB (see below).
    #[arg(long)]
    pub database: String,
    /// Reports to write.
    #[arg(long, default_value_t = 50_000)]
    pub reports: usize,
    /// Settings per report.
    #[arg(long, default_value_t = 35)]
    pub settings: usize,
    /// Records per forward batch (the site asks relays for 1,000 at a time).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Distinct devices; each sends reports/devices reports, so later ones move current
    /// compliance and history forward (default: reports / 5).
    #[arg(long)]
    pub devices: Option<usize>,
    /// Batches written at once, as a site server pulling that many relays does (the ceiling
    /// runs as many at once too).
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
}

/// The result line.
#[derive(Debug, Serialize)]
struct Output {
    bench: &'static str,
    backend: &'static str,
    reports: usize,
    settings_per_report: usize,
    batch: usize,
    devices: usize,
    writers: usize,
    writer_s: f64,
    ceiling_s: f64,
    reports_per_s: f64,
    rows_per_s: f64,
    ceiling_rows_per_s: f64,
    ratio: f64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.reports == 0 || args.batch == 0 || args.settings == 0 || args.writers == 0 {
        bail!("--reports, --batch, --settings and --writers must be at least 1");
    }
    let devices = args.devices.unwrap_or(args.reports / 5).max(1);
    let store = Store::connect(&args.database)
        .await
        .with_context(|| format!("opening {}", redact_url(&args.database)))?;
    let before = store.counts().await?;
    if before.reports > 0 {
        bail!(
            "{} already holds {} reports; the bench writes into the site tables, so give it a new \
             SQLite file or a fresh PostgreSQL database",
            redact_url(&args.database),
            before.reports
        );
    }

    eprintln!(
        "building {} reports of {} settings from {devices} devices…",
        args.reports, args.settings
    );
    let started = Instant::now();
    let (a, n, s, w) = (args.reports, args.settings, args.batch, args.writers);
    let batches = tokio::task::spawn_blocking(move || build_batches(a, n, s, devices, w)).await?;
    eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());

    let bare = BareTables::create(&store).await?;
    let (mut writer, mut ceiling) = (Duration::ZERO, Duration::ZERO);
    let mut rows = 0u64;
    // Rounds of `writers` batches at once (each from its own relay and devices), the ceiling
    // and the writer taking turns at going first.
    let rounds = batches.len().div_ceil(args.writers);
    for (i, round) in batches.chunks(args.writers).enumerate() {
        let ceiling_round = || async {
            let t = Instant::now();
            try_join_all(round.iter().map(|wb| bare.insert(&wb.reports))).await?;
            Ok::<_, anyhow::Error>(t.elapsed())
        };
        if i % 2 == 0 {
            ceiling += ceiling_round().await?;
        }
        let t = Instant::now();
        let outs = try_join_all(round.iter().map(|wb| store.write_batch(wb))).await?;
        // After an odd round come two ceiling rounds (this one's, then the next one's, which
        // goes first), after the last round nothing more: what the writer left running in the
        // background ends first, on the writer's clock. After an even round it may overlap the
        // next round's writer, as in the site server.
        if i % 2 == 1 || i + 1 == rounds {
            store.settle().await;
        }
        writer += t.elapsed();
        rows += outs.iter().map(|o| o.settings_inserted).sum::<u64>();
        if i % 2 == 1 {
            ceiling += ceiling_round().await?;
        }
    }
    bare.drop().await?;

    let after = store.counts().await?;
    let want = (args.reports as u64, (args.reports * args.settings) as u64);
    if (after.reports, after.settings) != want || rows != want.1 {
        bail!(
            "the writer stored {} reports and {} setting rows, expected {} and {}",
            after.reports,
            after.settings,
            want.0,
            want.1
        );
    }
    store.close().await;

    let per_s = |n: f64, d: Duration| n / d.as_secs_f64().max(1e-9);
    let rows_per_s = per_s(rows as f64, writer);
    let ceiling_rows_per_s = per_s(rows as f64, ceiling);
    let out = Output {
        bench: "writer",
        backend: store.backend(),
        reports: args.reports,
        settings_per_report: args.settings,
        batch: args.batch,
        devices,
        writers: args.writers,
        writer_s: round(writer.as_secs_f64(), 3),
        ceiling_s: round(ceiling.as_secs_f64(), 3),
        reports_per_s: round(per_s(args.reports as f64, writer), 0),
        rows_per_s: round(rows_per_s, 0),
        ceiling_rows_per_s: round(ceiling_rows_per_s, 0),
        ratio: round(rows_per_s / ceiling_rows_per_s, 3),
    };
    println!(
        "writer: {} reports/s, {} setting rows/s; ceiling (bare bulk insert of the same rows): \
         {} rows/s; ratio {}",
        out.reports_per_s, out.rows_per_s, out.ceiling_rows_per_s, out.ratio
    );
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// Forward batches as the site would decode them from a relay: report `i` comes from device
/// `i % devices`, each device's reports an evaluation interval apart.
fn build_batches(
    reports: usize,
    settings: usize,
    batch: usize,
    devices: usize,
    writers: usize,
) -> Vec<WriteBatch> {
    let signers: Vec<DeviceSigner> = (0..devices)
        .map(|d| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(d as u64).to_le_bytes());
            DeviceSigner::from_seed(&seed)
        })
        .collect();
    let now = clock::now_ms();
    let start = now - 3_600_000;
    let mut out = Vec::with_capacity(reports.div_ceil(batch));
    let mut seq = 0u64;
    for (n, first) in (0..reports).step_by(batch).enumerate() {
        // Batches written at once come from different relays, as in a site pulling several.
        let relay = n % writers;
        let mut raw = RawBatch {
            relay_id: format!("bench-relay-{relay}"),
            spool_id: format!("bench-spool-{relay}"),
            ..Default::default()
        };
        for i in first..(first + batch).min(reports) {
            let signer = &signers[i % devices];
            let mut report = crate::sample::report_with_settings(settings, i as u64);
            report.evaluated_unix_ms = start + (i / devices) as i64 * 60_000 + (i % 1000) as i64;
            let message_id = MessageId::new().to_string();
            let sub = Submission {
                message_id: message_id.clone(),
                device_id: signer.device_id().hex(),
                created_unix_ms: report.evaluated_unix_ms,
                body: Some(submission::Body::ComplianceReport(report)),
            }
            .encode_to_vec();
            seq += 1;
            let rec = ForwardRecord {
                seq,
                message_id,
                received_unix_ms: now + i as i64 / 8,
                record: Some(forward_record::Record::Submission(VerifiedSubmission {
                    device_id: signer.device_id().hex(),
                    device_public_key: signer.public_key().as_bytes().to_vec(),
                    key_epoch: 1,
                    signature: signer.sign(&sub),
                    submission: sub,
                })),
            };
            raw.records.push(Bytes::from(rec.encode_to_vec()));
        }
        raw.last_seq = seq;
        let (wb, _) = decode_batch(&raw, &format!("https://bench-relay-{relay}"), 0, false);
        out.push(wb);
    }
    out
}
