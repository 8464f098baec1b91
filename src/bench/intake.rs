//! `mprelay bench intake`: sealed 35-setting reports sent to a relay over real TLS into a real
//! spool, against the ceiling of the relay's own open-and-verify path measured in the same run.
//!
//! The relay runs as a child `mprelay relay` process by default (its own runtime, its own
//! memory, as deployed) and shares the machine's cores with this load generator. Sealing is done
//! before the clock starts. The ceiling is [`open_and_check`] — decode, key derivation, AES-GCM
//! open, Ed25519 verify, report decode and checks — on every core with no network and no spool,
//! measured just before and just after the load; the mean of the two is the ceiling. After the
//! load the child relay is killed with SIGKILL and every report it answered 202 must be in its
//! spool, or the benchmark fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use http_body_util::BodyExt;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::Message;

use super::harness::{self, Dest, LeanConn, RelayTuning, Sealed, Target};
use crate::demo::Loopback;
use crate::envelope::MasterKeys;
use crate::ids::MessageId;
use crate::proto::SubmissionReceipt;

/// How reports travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Each connection stays open and carries report after report.
    Keepalive,
    /// A fresh TLS connection (full handshake, no resumption) per report: the reconnect storm.
    Newconn,
}

/// The HTTP version the load generator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Http {
    #[value(name = "1")]
    H1,
    #[value(name = "2")]
    H2,
}

/// Options of `mprelay bench intake`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reports to send (each unique, 35 settings, sealed before the clock starts).
    #[arg(long, default_value_t = 100_000)]
    pub reports: usize,
    /// Devices to enroll; reports are spread over them round-robin.
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// Connections sending at once (one report in flight on each, unless --streams says more).
    #[arg(long, default_value_t = 128)]
    pub connections: usize,
    #[arg(long, value_enum, default_value_t = Mode::Keepalive)]
    pub mode: Mode,
    /// Benchmark a relay already running at this URL instead of starting one (needs --certs).
    #[arg(long, requires = "certs")]
    pub relay: Option<String>,
    /// With --relay: the PKI directory the relay uses (`mprelay certs init --dir`).
    #[arg(long)]
    pub certs: Option<PathBuf>,
    /// With --relay: the relay's spool file, to check that every accepted report is in it.
    #[arg(long)]
    pub spool: Option<PathBuf>,
    /// Run the relay inside this process (sharing its runtime) instead of a child process.
    #[arg(long, conflicts_with = "relay")]
    pub in_process: bool,
    /// HTTP version of the load generator.
    #[arg(long, value_enum, default_value_t = Http::H1)]
    pub http: Http,
    /// With --mode newconn: agents resume their TLS session (as agents returning after an
    /// outage do) instead of making a full handshake every time.
    #[arg(long)]
    pub resume: bool,
    /// Requests in flight on one connection (HTTP/2 only).
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Seconds the ceiling is measured for, before and after the load.
    #[arg(long, default_value_t = 1.5)]
    pub ceiling_secs: f64,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub bench: &'static str,
    pub mode: &'static str,
    pub reports_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub accepted: u64,
    pub errors: u64,
    pub ceiling_reports_per_s: f64,
    pub ratio: f64,
    pub relay_rss_mib: Option<f64>,
    pub relay_peak_rss_mib: Option<f64>,
    pub relay: &'static str,
    pub http: &'static str,
    pub connections: usize,
    pub streams: usize,
    pub devices: usize,
    pub in_spool: Option<u64>,
    /// Mean records per spool commit during the run (from the relay's metrics).
    pub mean_commit_batch: Option<f64>,
    /// CPU time the relay process spent per accepted report during the load (child relay).
    pub relay_cpu_us_per_report: Option<f64>,
    /// CPU time this process (the load generator) spent per accepted report during the load.
    pub loadgen_cpu_us_per_report: Option<f64>,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.reports == 0 || a.devices == 0 || a.connections == 0 || a.streams == 0 {
        bail!("--reports, --devices, --connections and --streams must be at least 1");
    }
    if a.relay.is_none() && (a.certs.is_some() || a.spool.is_some()) {
        bail!("--certs and --spool describe a relay given with --relay");
    }
    if a.streams > 1 && a.http != Http::H2 {
        bail!("--streams above 1 needs --http 2");
    }
    let out = measure(&a).await?;
    eprintln!(
        "intake ({}, {} relay, HTTP/{}, {} connections x {} streams): {:.0} reports/s, p50 {} ms, \
         p99 {} ms, ceiling {:.0} reports/s, ratio {:.2}",
        out.mode,
        out.relay,
        if a.http == Http::H2 { 2 } else { 1 },
        out.connections,
        out.streams,
        out.reports_per_s,
        out.p50_ms,
        out.p99_ms,
        out.ceiling_reports_per_s,
        out.ratio
    );
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// Runs the benchmark and audits the spool.
pub async fn measure(a: &Args) -> anyhow::Result<Outcome> {
    let in_flight = a.connections * a.streams;
    crate::net::raise_open_file_limit(in_flight as u64 + 1024);
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let tuning = RelayTuning {
        max_connections: in_flight + 1024,
        idle_timeout: Duration::from_secs(120),
        spool_max_records: (a.reports as u64 + a.devices as u64) * 2 + 1_000_000,
        spool_max_bytes: (a.reports as u64 + a.devices as u64) * 8192 + (1 << 31),
    };
    let (target, relay_kind) = match &a.relay {
        Some(url) => {
            let certs = a
                .certs
                .as_deref()
                .ok_or_else(|| anyhow!("--relay needs --certs"))?;
            (Target::external(url, certs, a.spool.clone()), "external")
        }
        None => {
            let lb = Loopback::create(&temp.path().join("certs"))?;
            if a.in_process {
                (
                    Target::in_process(temp.path(), lb, &tuning).await?,
                    "in-process",
                )
            } else {
                (Target::child(temp.path(), lb, &tuning).await?, "child")
            }
        }
    };

    let devices = harness::enroll(&target, a.devices.min(a.reports))
        .await
        .context("enrolling the devices")?;
    let n = a.reports;
    let sealed = Arc::new(
        tokio::task::spawn_blocking(move || harness::seal_reports(&devices, n))
            .await
            .context("sealing")?,
    );
    let keys = target.lb.master_keys()?;

    let before = ceiling(&keys, &sealed, a.ceiling_secs).await?;
    eprintln!(
        "{} reports from {} devices sealed; ceiling {before:.0} reports/s; sending",
        sealed.len(),
        a.devices.min(a.reports)
    );
    let pid = target.relay_pid();
    let cpu0 = (harness::cpu_seconds(pid), harness::cpu_seconds(None));
    let load = send_all(&target, a, sealed.clone()).await?;
    let cpu1 = (harness::cpu_seconds(pid), harness::cpu_seconds(None));
    let per_report = |a: Option<f64>, b: Option<f64>| {
        Some(harness::round(
            (b? - a?) * 1e6 / load.accepted.len().max(1) as f64,
            1,
        ))
    };
    let relay_cpu = pid.and_then(|_| per_report(cpu0.0, cpu1.0));
    let loadgen_cpu = per_report(cpu0.1, cpu1.1);
    let memory = target.relay_memory();
    let batch = target.mean_commit_batch().await;
    let after = ceiling(&keys, &sealed, a.ceiling_secs).await?;
    let ceiling_rate = (before + after) / 2.0;
    eprintln!("ceiling before the load {before:.0}/s, after {after:.0}/s");

    let spool = target.stop().await?;
    let accepted_ids: Vec<MessageId> = load
        .accepted
        .iter()
        .map(|i| sealed[*i].message_id)
        .collect();
    let in_spool = match spool {
        Some(path) => Some(harness::audit_spool(&path, &accepted_ids).await?),
        None => {
            eprintln!("no --spool given: accepted reports were not checked against the spool");
            None
        }
    };

    let mut lat = load.latencies_us;
    lat.sort_unstable();
    let rate = load.accepted.len() as f64 / load.elapsed.as_secs_f64();
    Ok(Outcome {
        bench: "intake",
        mode: match (a.mode, a.resume) {
            (Mode::Keepalive, _) => "keepalive",
            (Mode::Newconn, false) => "newconn",
            (Mode::Newconn, true) => "newconn-resumed",
        },
        reports_per_s: harness::round(rate, 0),
        p50_ms: harness::round(harness::percentile(&lat, 50.0) / 1000.0, 2),
        p99_ms: harness::round(harness::percentile(&lat, 99.0) / 1000.0, 2),
        accepted: load.accepted.len() as u64,
        errors: load.errors,
        ceiling_reports_per_s: harness::round(ceiling_rate, 0),
        ratio: harness::round(rate / ceiling_rate, 3),
        relay_rss_mib: memory.map(|m| harness::round(m.rss_mib, 1)),
        relay_peak_rss_mib: memory.map(|m| harness::round(m.peak_mib, 1)),
        relay: relay_kind,
        http: match a.http {
            Http::H1 => "1.1",
            Http::H2 => "2",
        },
        connections: a.connections,
        streams: a.streams,
        devices: a.devices.min(a.reports),
        in_spool,
        mean_commit_batch: batch.map(|b| harness::round(b, 1)),
        relay_cpu_us_per_report: relay_cpu,
        loadgen_cpu_us_per_report: loadgen_cpu,
    })
}

/// The relay's checks on one sealed body, exactly as intake runs them before spooling.
pub fn open_and_check(keys: &MasterKeys, body: &[u8]) -> bool {
    crate::relay::accepts_report(keys, body)
}

/// Reports per second [`open_and_check`] reaches on every core, over about `secs` seconds.
async fn ceiling(keys: &MasterKeys, sealed: &Arc<Vec<Sealed>>, secs: f64) -> anyhow::Result<f64> {
    let keys = keys.clone();
    let sealed = sealed.clone();
    let dur = Duration::from_secs_f64(secs.max(0.1));
    tokio::task::spawn_blocking(move || {
        let threads = harness::cores();
        let started = Instant::now();
        let counts: Vec<anyhow::Result<u64>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let (keys, sealed) = (&keys, &sealed);
                    s.spawn(move || {
                        let mut done = 0u64;
                        let mut i = t;
                        while started.elapsed() < dur {
                            for _ in 0..16 {
                                if !open_and_check(keys, &sealed[i % sealed.len()].body) {
                                    bail!("a sealed report failed the relay's checks");
                                }
                                done += 1;
                                i += threads;
                            }
                        }
                        Ok(done)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("panicked"))))
                .collect()
        });
        let elapsed = started.elapsed().as_secs_f64();
        let mut total = 0;
        for c in counts {
            total += c?;
        }
        Ok(total as f64 / elapsed)
    })
    .await
    .context("ceiling task")?
}

/// What a load run achieved.
pub(crate) struct Load {
    /// Indexes (into the sealed reports) answered 202 with their receipt.
    pub accepted: Vec<usize>,
    /// When each of `accepted` got its receipt, in the same order.
    pub accepted_at: Vec<Instant>,
    pub errors: u64,
    pub latencies_us: Vec<u32>,
    pub elapsed: Duration,
}

#[derive(Default)]
struct WorkerResult {
    accepted: Vec<usize>,
    accepted_at: Vec<Instant>,
    errors: u64,
    latencies_us: Vec<u32>,
}

impl WorkerResult {
    /// Counts the outcome of report `i`, sent at `sent`.
    fn record(&mut self, ok: bool, i: usize, sent: Instant) {
        if ok {
            let now = Instant::now();
            self.latencies_us.push(micros(now - sent));
            self.accepted.push(i);
            self.accepted_at.push(now);
        } else {
            self.errors += 1;
        }
    }
}

/// Sends every sealed report and collects what was accepted, and how fast.
pub(crate) async fn send_all(
    target: &Target,
    a: &Args,
    sealed: Arc<Vec<Sealed>>,
) -> anyhow::Result<Load> {
    let alpn: &[&[u8]] = match a.http {
        Http::H1 => &[b"http/1.1"],
        Http::H2 => &[b"h2"],
    };
    let dest = Dest::new(
        &target.agent_url,
        target.agent_tls(alpn, a.mode == Mode::Keepalive || a.resume)?,
    )?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.connections {
        let (dest, sealed, next) = (dest.clone(), sealed.clone(), next.clone());
        let (mode, http, streams) = (a.mode, a.http, a.streams);
        tasks.spawn(async move {
            match (mode, http) {
                (Mode::Keepalive, Http::H1) => keepalive_h1(dest, sealed, next).await,
                (Mode::Keepalive, Http::H2) => keepalive_h2(dest, sealed, next, streams).await,
                (Mode::Newconn, _) => newconn(dest, sealed, next).await,
            }
        });
    }
    let mut load = Load {
        accepted: Vec::with_capacity(sealed.len()),
        accepted_at: Vec::with_capacity(sealed.len()),
        errors: 0,
        latencies_us: Vec::with_capacity(sealed.len()),
        elapsed: Duration::ZERO,
    };
    while let Some(r) = tasks.join_next().await {
        let w = r.context("load task panicked")?;
        load.accepted.extend(w.accepted);
        load.accepted_at.extend(w.accepted_at);
        load.errors += w.errors;
        load.latencies_us.extend(w.latencies_us);
    }
    load.elapsed = started.elapsed();
    Ok(load)
}

/// Reads a response and says whether it is the 202 receipt for `id`.
async fn accepted<B>(resp: http::Response<B>, id: &MessageId) -> bool
where
    B: hyper::body::Body,
{
    let ok = resp.status() == http::StatusCode::ACCEPTED;
    let Ok(body) = resp.into_body().collect().await else {
        return false;
    };
    ok && SubmissionReceipt::decode(body.to_bytes())
        .is_ok_and(|r| r.message_id.len() == 36 && r.message_id.parse().ok() == Some(*id))
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn keepalive_h1(
    dest: Dest,
    sealed: Arc<Vec<Sealed>>,
    next: Arc<AtomicUsize>,
) -> WorkerResult {
    let mut w = WorkerResult::default();
    let mut conn: Option<LeanConn> = None;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(s) = sealed.get(i) else { break };
        let t0 = Instant::now();
        if conn.is_none() {
            conn = LeanConn::open(&dest).await.ok();
        }
        let ok = match conn.as_mut() {
            Some(c) => match c.submit(&dest, &s.body, &s.message_id, false).await {
                Ok(ok) => ok,
                Err(_) => {
                    conn = None;
                    false
                }
            },
            None => false,
        };
        w.record(ok, i, t0);
    }
    w
}

async fn keepalive_h2(
    dest: Dest,
    sealed: Arc<Vec<Sealed>>,
    next: Arc<AtomicUsize>,
    streams: usize,
) -> WorkerResult {
    let mut w = WorkerResult::default();
    let send = match dest.connect().await {
        Ok(tls) => {
            match http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(tls))
                .await
            {
                Ok((send, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    send
                }
                Err(_) => return w,
            }
        }
        Err(_) => return w,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (dest, sealed, next, mut send) =
            (dest.clone(), sealed.clone(), next.clone(), send.clone());
        tasks.spawn(async move {
            let mut w = WorkerResult::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(s) = sealed.get(i) else { break };
                let t0 = Instant::now();
                let ok = match send.ready().await {
                    Ok(()) => match send
                        .send_request(dest.request(s.body.clone(), true, false))
                        .await
                    {
                        Ok(resp) => accepted(resp, &s.message_id).await,
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                w.record(ok, i, t0);
            }
            w
        });
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(r) = r {
            w.accepted.extend(r.accepted);
            w.accepted_at.extend(r.accepted_at);
            w.errors += r.errors;
            w.latencies_us.extend(r.latencies_us);
        }
    }
    w
}

async fn newconn(dest: Dest, sealed: Arc<Vec<Sealed>>, next: Arc<AtomicUsize>) -> WorkerResult {
    let mut w = WorkerResult::default();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(s) = sealed.get(i) else { break };
        let t0 = Instant::now();
        let ok = match LeanConn::open(&dest).await {
            Ok(mut c) => c
                .submit(&dest, &s.body, &s.message_id, true)
                .await
                .unwrap_or(false),
            Err(_) => false,
        };
        w.record(ok, i, t0);
    }
    w
}
