//! `mprelay bench e2e`: reports from agents all the way into the site database, against the
//! relay's intake alone measured in the same run.
//!
//! The relay and the site server run as child `mprelay relay` and `mprelay site` processes (real
//! TLS, a real spool, the site on `--database`), as deployed; this process is the load generator.
//! Setup (not timed): the devices enroll, every report is sealed.
//!
//! 1. **Intake alone** (the ceiling): with no site server running yet, `--intake-reports` reports
//!    go to the relay over the same connections; the relay's accept rate is the ceiling, the
//!    most the path can carry when nothing downstream takes any of the machine.
//! 2. The site server starts and drains that backlog (its drain rate is printed too, and the
//!    database holds those reports during the timed phase, as a site's does).
//! 3. **End to end** (timed): `--reports` more reports are sent; the clock stops when the site's
//!    cursor for the relay shows every accepted report committed. The cursor is read every
//!    [`POLL`]; seqs are given in commit order and a 202 follows its commit, so the k-th receipt
//!    is matched with the moment the k-th record of the phase was committed, which gives each
//!    report's accept-to-committed latency within one poll and one spool group.
//!
//! CPU per report is read from `/proc/PID/stat` of the relay, the site server, this process and,
//! when PostgreSQL runs on this machine, of the PostgreSQL processes serving the bench database
//! (backends and autovacuum workers, found by the database name in their process title). The
//! server's shared processes (WAL writer, checkpointer, background writer) serve every database
//! on the server, so their CPU is given apart. At the end every accepted report must be in the
//! site database with all its setting rows, or the benchmark fails.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;

use super::harness::{self, RelayTuning, Sealed, Target, round};
use super::intake::{self, Http, Mode};
use crate::demo::Loopback;
use crate::store::{Store, postgres::redact_url};

/// How often the site's cursor is read while reports flow.
const POLL: Duration = Duration::from_millis(5);

/// The relay id the benchmark's relay runs under (its cursor row in the site database).
const RELAY_ID: &str = "bench-relay";

/// Options of `mprelay bench e2e`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
What it does to the database: the site server creates the site schema there and stores every \
report the benchmark sends; they are left there. It refuses a database that already holds \
reports: give it a new SQLite file (sqlite:///tmp/e2e.db) or a fresh PostgreSQL database \
(createdb mprelay_e2e; postgres://postgres@127.0.0.1:5432/mprelay_e2e).

The last line of output is JSON: {\"bench\":\"e2e\",\"reports_per_s\":…,\"rows_per_s\":…,\
\"p50_ms\":…,\"p99_ms\":…,\"intake_reports_per_s\":…,\"ratio\":…,\"all_in_cpu_ms_per_report\":…}; \
latencies are from the relay's receipt to the report's commit in the site database.")]
pub struct Args {
    /// Site database URL: sqlite://PATH or postgres://USER@HOST:PORT/DB (see below).
    #[arg(long)]
    pub database: String,
    /// Reports sent in the timed end-to-end phase (each unique, sealed before the clock starts).
    #[arg(long, default_value_t = 40_000)]
    pub reports: usize,
    /// Reports sent to the relay alone first, to measure intake alone (default: reports / 2).
    #[arg(long)]
    pub intake_reports: Option<usize>,
    /// Devices to enroll; reports are spread over them round-robin.
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// Keep-alive connections sending at once, one report in flight on each.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Settings per report.
    #[arg(long, default_value_t = 35)]
    pub settings: usize,
    /// Records the site asks the relay for per pull.
    #[arg(long, default_value_t = 1000)]
    pub pull_records: usize,
    /// Seconds without any progress of the site after which the benchmark gives up.
    #[arg(long, default_value_t = 120)]
    pub stall_secs: u64,
}

/// The result line.
#[derive(Debug, Serialize)]
struct Output {
    bench: &'static str,
    backend: &'static str,
    reports: usize,
    settings_per_report: usize,
    devices: usize,
    connections: usize,
    accepted: usize,
    errors: u64,
    /// Accepted reports committed in the site database per second, end to end.
    reports_per_s: f64,
    /// Their setting rows per second.
    rows_per_s: f64,
    /// Receipt to commit in the site database.
    p50_ms: f64,
    p99_ms: f64,
    /// Receipt latency as the agents saw it during the end-to-end phase.
    submit_p99_ms: f64,
    /// The ceiling: the relay's accept rate with no site server running, same run.
    intake_reports: usize,
    intake_reports_per_s: f64,
    ratio: f64,
    /// The site server's rate on the backlog the intake phase left.
    site_drain_reports_per_s: f64,
    /// CPU per committed report during the end-to-end phase.
    relay_cpu_ms_per_report: Option<f64>,
    site_cpu_ms_per_report: Option<f64>,
    /// PostgreSQL processes serving the bench database (none on SQLite, which runs inside the
    /// site server).
    db_cpu_ms_per_report: Option<f64>,
    /// Relay + site + database.
    all_in_cpu_ms_per_report: Option<f64>,
    /// PostgreSQL's WAL writer, checkpointer and background writer, shared with every other
    /// database on the server.
    db_shared_cpu_ms_per_report: Option<f64>,
    loadgen_cpu_ms_per_report: Option<f64>,
    /// The machine's 1-minute load average at the end.
    load_average: Option<f64>,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.reports == 0
        || a.devices == 0
        || a.connections == 0
        || a.settings == 0
        || a.pull_records == 0
    {
        bail!(
            "--reports, --devices, --connections, --settings and --pull-records must be at least 1"
        );
    }
    let out = measure(&a).await?;
    eprintln!(
        "e2e ({}, {} settings, {} connections): {:.0} reports/s ({:.0} rows/s) committed, \
         accept-to-committed p50 {} ms, p99 {} ms; intake alone {:.0} reports/s, ratio {:.2}; \
         CPU ms per report: relay {:?}, site {:?}, database {:?}, all in {:?}",
        out.backend,
        out.settings_per_report,
        out.connections,
        out.reports_per_s,
        out.rows_per_s,
        out.p50_ms,
        out.p99_ms,
        out.intake_reports_per_s,
        out.ratio,
        out.relay_cpu_ms_per_report,
        out.site_cpu_ms_per_report,
        out.db_cpu_ms_per_report,
        out.all_in_cpu_ms_per_report,
    );
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

async fn measure(a: &Args) -> anyhow::Result<Output> {
    crate::net::raise_open_file_limit(a.connections as u64 + 1024);
    let intake_reports = a.intake_reports.unwrap_or(a.reports / 2).max(1);
    let total = intake_reports + a.reports;
    let store = Store::connect(&a.database)
        .await
        .with_context(|| format!("opening {}", redact_url(&a.database)))?;
    let before = store.counts().await?;
    if before.reports > 0 {
        bail!(
            "{} already holds {} reports; the bench fills the site tables, so give it a new SQLite \
             file or a fresh PostgreSQL database",
            redact_url(&a.database),
            before.reports
        );
    }
    let db = DbProcesses::of(&a.database);

    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let lb = Loopback::create(&temp.path().join("certs"))?;
    let tuning = RelayTuning {
        max_connections: a.connections + 1024,
        idle_timeout: Duration::from_secs(120),
        spool_max_records: (total as u64 + a.devices as u64) * 2 + 1_000_000,
        spool_max_bytes: (total as u64 + a.devices as u64) * (a.settings as u64 * 256 + 8192)
            + (1 << 31),
    };
    let target = Target::child(temp.path(), lb, &tuning).await?;
    let devices = harness::enroll(&target, a.devices.min(total))
        .await
        .context("enrolling the devices")?;
    let settings = a.settings;
    let mut sealed =
        tokio::task::spawn_blocking(move || harness::seal_reports_with(&devices, total, settings))
            .await
            .context("sealing")?;
    let timed = Arc::new(sealed.split_off(intake_reports));
    let alone = Arc::new(sealed);
    let send_args = intake::Args {
        reports: total,
        devices: a.devices,
        connections: a.connections,
        mode: Mode::Keepalive,
        relay: None,
        certs: None,
        spool: None,
        in_process: false,
        http: Http::H1,
        resume: false,
        streams: 1,
        ceiling_secs: 0.0,
    };

    // 1. Intake alone.
    eprintln!("{total} reports of {settings} settings sealed; {intake_reports} to the relay alone");
    let ceiling = intake::send_all(&target, &send_args, alone.clone()).await?;
    let intake_rate = ceiling.accepted.len() as f64 / ceiling.elapsed.as_secs_f64();

    // 2. The site server starts and drains that backlog.
    let site_url = target
        .site_url
        .clone()
        .ok_or_else(|| anyhow!("the relay's site-facing address is not known"))?;
    let config = write_site_config(temp.path(), &target.lb, &a.database, &site_url, a)?;
    let drain_started = Instant::now();
    let (mut site, site_pid, _) = harness::spawn_mprelay("site", &config).await?;
    let s0 = wait_drained(&store, a.stall_secs).await?;
    let drain_rate = ceiling.accepted.len() as f64 / drain_started.elapsed().as_secs_f64();
    let drained = store.counts().await?.reports;
    if drained != ceiling.accepted.len() as u64 {
        bail!(
            "after the intake phase the site database holds {drained} reports, expected {}",
            ceiling.accepted.len()
        );
    }
    eprintln!(
        "intake alone {intake_rate:.0} reports/s; the site drained them at {drain_rate:.0}/s; \
         sending {} reports end to end",
        a.reports
    );

    // 3. End to end.
    let pids = Pids {
        relay: target.relay_pid(),
        site: Some(site_pid),
        db,
    };
    let cpu0 = pids.sample();
    let goal = Arc::new(AtomicU64::new(u64::MAX));
    let poller = {
        let (store, goal) = (store.clone(), goal.clone());
        let stall = Duration::from_secs(a.stall_secs);
        tokio::spawn(async move { poll_commits(&store, s0, &goal, stall, &pids).await })
    };
    let started = Instant::now();
    let load = intake::send_all(&target, &send_args, timed.clone()).await;
    let load = match load {
        Ok(l) => l,
        Err(e) => {
            poller.abort();
            return Err(e);
        }
    };
    goal.store(load.accepted.len() as u64, Ordering::Relaxed);
    let (commits, cpu1) = poller.await.context("the commit poller panicked")??;
    let finished = commits.last().map(|c| c.0).unwrap_or_else(Instant::now);
    let elapsed = finished.duration_since(started).as_secs_f64().max(1e-9);

    // Every accepted report, with all its settings, is in the site database.
    let ids: HashSet<String> = store.report_message_ids().await?.into_iter().collect();
    let missing = |sent: &[Sealed], accepted: &[usize]| {
        accepted
            .iter()
            .filter(|&&i| !ids.contains(&sent[i].message_id.to_string()))
            .count()
    };
    let missing = missing(&alone, &ceiling.accepted) + missing(&timed, &load.accepted);
    let counts = store.counts().await?;
    let want_reports = (ceiling.accepted.len() + load.accepted.len()) as u64;
    if missing > 0
        || counts.reports != want_reports
        || counts.settings != want_reports * settings as u64
    {
        bail!(
            "{missing} accepted reports are missing from the site database, which holds {} reports \
             and {} setting rows (expected {want_reports} and {})",
            counts.reports,
            counts.settings,
            want_reports * settings as u64
        );
    }
    let _ = site.kill().await;
    target.stop().await?;
    store.close().await;

    let accepted = load.accepted.len();
    let mut latencies = commit_latencies_us(&load.accepted_at, &commits);
    latencies.sort_unstable();
    let mut submit = load.latencies_us.clone();
    submit.sort_unstable();
    let per_report = |before: Option<f64>, after: Option<f64>| {
        Some(round((after? - before?) * 1e3 / accepted.max(1) as f64, 4))
    };
    let relay_cpu = per_report(cpu0.relay, cpu1.relay);
    let site_cpu = per_report(cpu0.site, cpu1.site);
    let db_cpu = cpu0
        .db
        .as_ref()
        .zip(cpu1.db.as_ref())
        .map(|(b, e)| round(e.backends_since(b) * 1e3 / accepted.max(1) as f64, 4));
    let db_shared = cpu0
        .db
        .as_ref()
        .zip(cpu1.db.as_ref())
        .map(|(b, e)| round((e.shared - b.shared) * 1e3 / accepted.max(1) as f64, 4));
    let all_in = match (relay_cpu, site_cpu) {
        (Some(r), Some(s)) => Some(round(r + s + db_cpu.unwrap_or(0.0), 4)),
        _ => None,
    };
    let rate = accepted as f64 / elapsed;
    Ok(Output {
        bench: "e2e",
        backend: store.backend(),
        reports: a.reports,
        settings_per_report: settings,
        devices: a.devices.min(total),
        connections: a.connections,
        accepted,
        errors: load.errors + ceiling.errors,
        reports_per_s: round(rate, 0),
        rows_per_s: round(rate * settings as f64, 0),
        p50_ms: round(harness::percentile(&latencies, 50.0) / 1000.0, 1),
        p99_ms: round(harness::percentile(&latencies, 99.0) / 1000.0, 1),
        submit_p99_ms: round(harness::percentile(&submit, 99.0) / 1000.0, 1),
        intake_reports,
        intake_reports_per_s: round(intake_rate, 0),
        ratio: round(rate / intake_rate, 3),
        site_drain_reports_per_s: round(drain_rate, 0),
        relay_cpu_ms_per_report: relay_cpu,
        site_cpu_ms_per_report: site_cpu,
        db_cpu_ms_per_report: db_cpu,
        all_in_cpu_ms_per_report: all_in,
        db_shared_cpu_ms_per_report: db_shared,
        loadgen_cpu_ms_per_report: per_report(cpu0.loadgen, cpu1.loadgen),
        load_average: load_average(),
    })
}

/// `site.toml` for a site server that pulls the bench relay into `database`.
fn write_site_config(
    dir: &Path,
    lb: &Loopback,
    database: &str,
    relay_site_url: &str,
    a: &Args,
) -> anyhow::Result<std::path::PathBuf> {
    let p = &lb.paths;
    let toml = format!(
        r#"database = {database:?}

[tls]
ca = {ca:?}
cert = {cert:?}
key = {key:?}

[[relays]]
url = {relay_site_url:?}

[pull]
max_records = {max}
wait_ms = 1000
"#,
        ca = p.ca_cert(),
        cert = p.site_cert(),
        key = p.site_key(),
        max = a.pull_records,
    );
    let config = dir.join("site.toml");
    std::fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;
    Ok(config)
}

/// Waits until the site has stored everything the relay held when it last pulled (nothing more
/// arrives meanwhile) and returns the seq it has stored through.
async fn wait_drained(store: &Store, stall_secs: u64) -> anyhow::Result<u64> {
    let mut last = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        if let Some(c) = store.relay_cursor(RELAY_ID).await? {
            if c.through_seq > 0 && c.through_seq == c.last_seq {
                return Ok(c.through_seq);
            }
            if c.through_seq > last.1 {
                last = (Instant::now(), c.through_seq);
            }
        }
        if last.0.elapsed() > Duration::from_secs(stall_secs) {
            bail!("the site server made no progress for {stall_secs} s");
        }
    }
}

/// Reads the site's cursor every [`POLL`] until the records it stored after `s0` reach `goal`
/// (set once the load is over); returns when each count was first seen, and the CPU of every
/// process at the end.
async fn poll_commits(
    store: &Store,
    s0: u64,
    goal: &AtomicU64,
    stall: Duration,
    pids: &Pids,
) -> anyhow::Result<(Vec<(Instant, u64)>, Cpu)> {
    let mut seen: Vec<(Instant, u64)> = Vec::new();
    let mut progress = Instant::now();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let through = store
            .relay_cursor(RELAY_ID)
            .await?
            .map_or(s0, |c| c.through_seq);
        let now = Instant::now();
        let committed = through.saturating_sub(s0);
        if seen.last().is_none_or(|l| committed > l.1) {
            seen.push((now, committed));
            progress = now;
        }
        if committed >= goal.load(Ordering::Relaxed) {
            return Ok((seen, pids.sample()));
        }
        if progress.elapsed() > stall {
            bail!(
                "the site server stored nothing for {} s ({committed} reports of this phase \
                 committed)",
                stall.as_secs()
            );
        }
    }
}

/// Each receipt's time to commit: the k-th receipt (in time order) against the first moment at
/// least k records of the phase were committed.
fn commit_latencies_us(accepted_at: &[Instant], commits: &[(Instant, u64)]) -> Vec<u32> {
    let mut at = accepted_at.to_vec();
    at.sort_unstable();
    let mut j = 0;
    let mut out = Vec::with_capacity(at.len());
    for (k, t) in at.iter().enumerate() {
        while j + 1 < commits.len() && commits[j].1 < k as u64 + 1 {
            j += 1;
        }
        let Some(&(c, _)) = commits.get(j) else { break };
        out.push(u32::try_from(c.saturating_duration_since(*t).as_micros()).unwrap_or(u32::MAX));
    }
    out
}

/// The processes whose CPU is counted.
struct Pids {
    relay: Option<u32>,
    site: Option<u32>,
    db: Option<DbProcesses>,
}

/// CPU seconds used so far by each.
struct Cpu {
    relay: Option<f64>,
    site: Option<f64>,
    loadgen: Option<f64>,
    db: Option<DbCpu>,
}

impl Pids {
    fn sample(&self) -> Cpu {
        Cpu {
            relay: harness::cpu_seconds(self.relay),
            site: harness::cpu_seconds(self.site),
            loadgen: harness::cpu_seconds(None),
            db: self.db.as_ref().map(DbProcesses::sample),
        }
    }
}

/// The PostgreSQL server processes of the bench database, found in `/proc` by the database
/// name in their process title (`postgres: 15/main: USER DB 127.0.0.1(PORT) idle`).
struct DbProcesses {
    database: String,
}

/// CPU seconds of the bench database's backends by pid, and of the server's shared processes.
struct DbCpu {
    backends: HashMap<u32, f64>,
    shared: f64,
}

impl DbCpu {
    /// CPU the backends used since `before` (a backend that started since counts from zero).
    fn backends_since(&self, before: &DbCpu) -> f64 {
        self.backends
            .iter()
            .map(|(pid, s)| s - before.backends.get(pid).copied().unwrap_or(0.0))
            .sum()
    }
}

impl DbProcesses {
    /// `None` unless `url` is a PostgreSQL database on this machine.
    fn of(url: &str) -> Option<Self> {
        let u = url::Url::parse(url).ok()?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return None;
        }
        let local = match u.host_str() {
            None | Some("") | Some("localhost") => true,
            Some(h) => h
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
        };
        let database = u.path().trim_start_matches('/').to_string();
        let me = Self { database };
        (local && !me.database.is_empty() && !me.sample().backends.is_empty()).then_some(me)
    }

    fn sample(&self) -> DbCpu {
        let mut cpu = DbCpu {
            backends: HashMap::new(),
            shared: 0.0,
        };
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return cpu;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(title) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let title = String::from_utf8_lossy(&title).replace('\0', " ");
            if !title.starts_with("postgres: ") {
                continue;
            }
            let Some(secs) = harness::cpu_seconds(Some(pid)) else {
                continue;
            };
            if title.split_whitespace().any(|w| w == self.database) {
                cpu.backends.insert(pid, secs);
            } else if ["walwriter", "checkpointer", "background writer"]
                .iter()
                .any(|p| title.contains(p))
            {
                cpu.shared += secs;
            }
        }
        cpu
    }
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
