//! `mprelay bench connections`: many idle agent connections held open at once against a child
//! relay, the relay's memory while it holds them, and proof that it keeps serving: reports are
//! submitted over other connections while the idle ones are held, and afterwards every held
//! connection must still answer.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::harness::{self, Dest, LeanConn, RelayTuning, Target};
use super::intake::{self, Http, Mode};
use crate::demo::Loopback;
use crate::ids::MessageId;

/// Options of `mprelay bench connections`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Idle agent connections to hold at once.
    #[arg(long, default_value_t = 25_000)]
    pub connections: usize,
    /// HTTP version of the idle connections (agents offer both and the relay prefers HTTP/1.1,
    /// so 1 is what a relay full of agents holds).
    #[arg(long, value_enum, default_value_t = Http::H1)]
    pub http: Http,
    /// Reports submitted over other connections while the idle ones are held.
    #[arg(long, default_value_t = 5_000)]
    pub reports: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
    /// Hold connections that completed the TLS handshake but never sent a request.
    #[arg(long, hide = true)]
    pub handshake_only: bool,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub bench: &'static str,
    pub http: &'static str,
    pub connections: usize,
    /// Connections open at the relay while they were held (its own gauge).
    pub relay_open_connections: Option<u64>,
    pub relay_rss_mib: Option<f64>,
    pub relay_rss_idle_mib: Option<f64>,
    pub relay_peak_rss_mib: Option<f64>,
    pub kib_per_connection: Option<f64>,
    pub open_per_s: f64,
    /// Submissions made while the connections were held.
    pub accepted: u64,
    pub errors: u64,
    pub reports_per_s: f64,
    pub p99_ms: f64,
    /// Held connections that still answered a request at the end.
    pub alive_after: usize,
}

/// One idle agent connection.
enum Held {
    H1(Box<LeanConn>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

impl Held {
    async fn open(dest: &Dest, http: Http, local: IpAddr, silent: bool) -> anyhow::Result<Self> {
        match http {
            Http::H1 => {
                let mut c = LeanConn::open_from(dest, Some(local)).await?;
                if silent {
                    return Ok(Held::H1(Box::new(c)));
                }
                let status = c.get(dest, "/healthz").await?;
                if status != 200 {
                    bail!("/healthz answered {status}");
                }
                Ok(Held::H1(Box::new(c)))
            }
            Http::H2 => {
                let tls = dest.connect_from(Some(local)).await?;
                let (send, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(TokioIo::new(tls))
                    .await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let mut h = Held::H2(send);
                h.ping(dest).await?;
                Ok(h)
            }
        }
    }

    /// A request on the held connection; fails unless the relay answers 200.
    async fn ping(&mut self, dest: &Dest) -> anyhow::Result<()> {
        let status = match self {
            Held::H1(c) => c.get(dest, "/healthz").await?,
            Held::H2(send) => {
                send.ready().await?;
                let req = http::Request::get(format!("https://{}/healthz", dest.authority))
                    .body(Empty::new())?;
                let resp = send.send_request(req).await?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await?;
                status
            }
        };
        if status != 200 {
            bail!("/healthz answered {status}");
        }
        Ok(())
    }
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.connections == 0 || a.parallel == 0 {
        bail!("--connections and --parallel must be at least 1");
    }
    let out = measure(&a).await?;
    eprintln!(
        "held {} idle HTTP/{} connections: relay RSS {:?} MiB ({:?} KiB each), {} reports \
         accepted meanwhile at {:.0}/s (p99 {} ms), {} connections still answering",
        out.connections,
        out.http,
        out.relay_rss_mib,
        out.kib_per_connection,
        out.accepted,
        out.reports_per_s,
        out.p99_ms,
        out.alive_after
    );
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

pub async fn measure(a: &Args) -> anyhow::Result<Outcome> {
    // This process holds the client ends and the relay (a child, which inherits the limit)
    // holds the server ends: one descriptor each.
    let want = a.connections as u64 + 256;
    let got = crate::net::raise_open_file_limit(want);
    if got < want {
        bail!(
            "the open-file limit is {got}, {want} are needed: raise it (ulimit -n {want}) or run \
             with the privilege to raise it"
        );
    }
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let lb = Loopback::create(&temp.path().join("certs"))?;
    let tuning = RelayTuning {
        max_connections: a.connections + 1024,
        // Idle agents are the point here: the relay must not cut them while they are held.
        idle_timeout: Duration::from_secs(600),
        spool_max_records: 2_000_000,
        spool_max_bytes: 4 << 30,
    };
    let target = Target::child(temp.path(), lb, &tuning).await?;
    let idle_rss = target.relay_memory().map(|m| m.rss_mib);
    let alpn: &[&[u8]] = match a.http {
        Http::H1 => &[b"http/1.1"],
        Http::H2 => &[b"h2"],
    };
    let dest = Arc::new(Dest::new(
        &target.agent_url,
        target.agent_tls(alpn, false)?,
    )?);

    // Open them, spread over several loopback source addresses so that no address runs out of
    // ephemeral ports.
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut openers = tokio::task::JoinSet::new();
    for _ in 0..a.parallel.min(a.connections) {
        let (dest, next, total, http) = (dest.clone(), next.clone(), a.connections, a.http);
        let silent = a.handshake_only;
        openers.spawn(async move {
            let mut held = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let local = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (i % 16) as u8));
                held.push(
                    Held::open(&dest, http, local, silent)
                        .await
                        .with_context(|| format!("opening idle connection {} of {total}", i + 1))?,
                );
            }
            Ok::<_, anyhow::Error>(held)
        });
    }
    let mut held = Vec::with_capacity(a.connections);
    while let Some(r) = openers.join_next().await {
        held.extend(r.context("opener panicked")??);
    }
    let open_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} connections open in {open_secs:.1} s; submitting {} reports meanwhile",
        held.len(),
        a.reports
    );

    let open_at_relay = target
        .metrics()
        .await
        .and_then(|m| gauge(&m, "mprelay_relay_open_connections"));
    let memory = target.relay_memory();

    // The relay keeps serving other agents while it holds them.
    let (accepted, errors, rate, p99) = if a.reports > 0 {
        let devices = harness::enroll(&target, a.reports.min(100)).await?;
        let n = a.reports;
        let sealed = Arc::new(
            tokio::task::spawn_blocking(move || harness::seal_reports(&devices, n)).await?,
        );
        let args = intake::Args {
            reports: a.reports,
            devices: 100,
            connections: 32,
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
        let load = intake::send_all(&target, &args, sealed.clone()).await?;
        let mut lat = load.latencies_us.clone();
        lat.sort_unstable();
        let ids: Vec<MessageId> = load
            .accepted
            .iter()
            .map(|i| sealed[*i].message_id)
            .collect();
        (
            ids,
            load.errors,
            load.accepted.len() as f64 / load.elapsed.as_secs_f64(),
            harness::percentile(&lat, 99.0) / 1000.0,
        )
    } else {
        (Vec::new(), 0, 0.0, 0.0)
    };
    let after = target.relay_memory();

    // Every held connection must still be there and answer.
    let mut alive = 0usize;
    let mut pings = tokio::task::JoinSet::new();
    let chunk = held.len().div_ceil(a.parallel.max(1)).max(1);
    while !held.is_empty() {
        let mut part: Vec<Held> = held.split_off(held.len().saturating_sub(chunk));
        let dest = dest.clone();
        pings.spawn(async move {
            let mut ok = 0usize;
            for h in part.iter_mut() {
                if h.ping(&dest).await.is_ok() {
                    ok += 1;
                }
            }
            (ok, part)
        });
    }
    let mut keep = Vec::new();
    while let Some(r) = pings.join_next().await {
        let (ok, part) = r.context("ping task panicked")?;
        alive += ok;
        keep.push(part);
    }

    let spool = target.stop().await?;
    drop(keep);
    if let Some(path) = spool {
        harness::audit_spool(&path, &accepted).await?;
    }
    let rss = memory.map(|m| m.rss_mib);
    if alive < a.connections {
        bail!(
            "only {alive} of {} held connections still answered at the end",
            a.connections
        );
    }
    Ok(Outcome {
        bench: "connections",
        http: match a.http {
            Http::H1 => "1.1",
            Http::H2 => "2",
        },
        connections: a.connections,
        relay_open_connections: open_at_relay,
        relay_rss_mib: rss.map(|r| harness::round(r, 1)),
        relay_rss_idle_mib: idle_rss.map(|r| harness::round(r, 1)),
        relay_peak_rss_mib: after.map(|m| harness::round(m.peak_mib, 1)),
        kib_per_connection: rss
            .zip(idle_rss)
            .map(|(r, i)| harness::round((r - i) * 1024.0 / a.connections as f64, 1)),
        open_per_s: harness::round(a.connections as f64 / open_secs, 0),
        accepted: accepted.len() as u64,
        errors,
        reports_per_s: harness::round(rate, 0),
        p99_ms: harness::round(p99, 2),
        alive_after: alive,
    })
}

/// The value of an unlabelled gauge in a Prometheus text page.
fn gauge(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
