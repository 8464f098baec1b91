//! `mprelay demo`: the whole system in one process on loopback — a PKI, a relay with its spool, a
//! site server on SQLite, and simulated devices that enroll and submit sealed reports — and
//! [`Loopback`], the same wiring for the integration tests.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::agent::{Agent, AgentOptions};
use crate::clock::{self, SharedClock};
use crate::envelope::MasterKeys;
use crate::ids::KeyEpoch;
use crate::net::Limits;
use crate::pki::{self, ClientAuth, PkiPaths};
use crate::relay::{self, IntakeOptions, RelayHandle, RelayOptions};
use crate::sample;
use crate::site::{self, PullOptions, RelayTarget, SiteHandle, SiteOptions};
use crate::spool::SpoolConfig;
use crate::store::{BaselineSummary, Store};

/// A PKI in a directory, and everything built from it for a system on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Loopback {
    pub paths: PkiPaths,
}

impl Loopback {
    /// Creates a fresh PKI (certificates for localhost and 127.0.0.1) in `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        pki::init(dir, &["localhost".into(), "127.0.0.1".into()])
            .with_context(|| format!("creating a PKI in {}", dir.display()))?;
        Ok(Self {
            paths: PkiPaths::new(dir),
        })
    }

    pub fn enrollment_secret(&self) -> anyhow::Result<String> {
        Ok(pki::load_enrollment_secret(
            &self.paths.enrollment_secret(),
        )?)
    }

    pub fn master_keys(&self) -> anyhow::Result<MasterKeys> {
        Ok(MasterKeys::single(
            KeyEpoch::try_from(1).expect("1 is a valid epoch"),
            pki::load_master_secret(&self.paths.master_secret(1))?,
        ))
    }

    /// Relay options with the development PKI, the given spool, and the default limits.
    pub fn relay_options(&self, relay_id: &str, spool: &Path) -> anyhow::Result<RelayOptions> {
        let certs = pki::load_certs(&self.paths.relay_cert())?;
        let key = pki::load_private_key(&self.paths.relay_key())?;
        let site_roots = pki::load_certs(&self.paths.ca_cert())?;
        Ok(RelayOptions {
            relay_id: relay_id.into(),
            keys: self.master_keys()?,
            enrollment_secret: self.enrollment_secret()?,
            agent_tls: Arc::new(pki::server_config(
                certs.clone(),
                key.clone_key(),
                ClientAuth::None,
            )?),
            site_tls: Arc::new(pki::server_config(
                certs,
                key,
                ClientAuth::Required {
                    roots: site_roots,
                    crls: vec![],
                },
            )?),
            agent_limits: Limits::default(),
            site_limits: Limits {
                max_body_bytes: 16 * 1024 * 1024,
                ..Limits::default()
            },
            spool: SpoolConfig::new(spool),
            intake: IntakeOptions::default(),
            clock: clock::system(),
        })
    }

    /// TLS for the site server: trusts the site CA, presents the site client certificate.
    pub fn site_client_tls(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let roots = pki::load_certs(&self.paths.ca_cert())?;
        let certs = pki::load_certs(&self.paths.site_cert())?;
        let key = pki::load_private_key(&self.paths.site_key())?;
        Ok(Arc::new(pki::client_config(
            &roots,
            Some((certs, key)),
            &[b"h2", b"http/1.1"],
        )?))
    }

    /// TLS for agents: trusts the site CA; no client certificate.
    pub fn agent_tls(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let roots = pki::load_certs(&self.paths.ca_cert())?;
        Ok(Arc::new(pki::client_config(
            &roots,
            None,
            &[b"h2", b"http/1.1"],
        )?))
    }

    /// Starts a relay on 127.0.0.1 ephemeral ports.
    pub async fn start_relay(&self, opts: RelayOptions) -> anyhow::Result<RelayHandle> {
        let agent = TcpListener::bind("127.0.0.1:0").await?;
        let site = TcpListener::bind("127.0.0.1:0").await?;
        Ok(relay::start(opts, agent, site).await?)
    }

    /// Starts a site server pulling the given relays into `store`.
    pub fn start_site(
        &self,
        store: Store,
        relays: &[&RelayHandle],
        pull: PullOptions,
        clock: SharedClock,
    ) -> anyhow::Result<SiteHandle> {
        Ok(site::start(SiteOptions {
            store,
            relays: relays
                .iter()
                .map(|r| RelayTarget {
                    url: format!("https://127.0.0.1:{}", r.site_addr.port()),
                })
                .collect(),
            client_tls: self.site_client_tls()?,
            pull,
            clock,
        })?)
    }

    /// Options for an agent talking to `relay`, keeping its state in `state_dir`.
    pub fn agent_options(
        &self,
        relay: &RelayHandle,
        state_dir: &Path,
    ) -> anyhow::Result<AgentOptions> {
        let mut o = AgentOptions::new(
            &format!("https://127.0.0.1:{}", relay.agent_addr.port()),
            self.agent_tls()?,
            state_dir,
        );
        o.enrollment_secret = Some(self.enrollment_secret()?);
        Ok(o)
    }
}

/// What `mprelay demo` is asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub devices: usize,
    /// Keep everything here instead of a temporary directory.
    pub dir: Option<PathBuf>,
    pub timeout: Duration,
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub reports: u64,
    pub devices: usize,
    pub elapsed: Duration,
    pub summaries: Vec<BaselineSummary>,
    pub dir: Option<PathBuf>,
}

struct Progress {
    on: bool,
}

impl Progress {
    fn show(&self, msg: &str) {
        if self.on {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{msg}");
            let _ = e.flush();
        }
    }
    fn done(&self) {
        if self.on {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

/// Runs the demo: enrolls `devices` simulated devices, has each submit a report per sample
/// baseline, waits until every report is in the site database.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoOutcome> {
    let started = Instant::now();
    let progress = Progress {
        on: std::io::stderr().is_terminal(),
    };
    let temp;
    let dir = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            if std::fs::read_dir(d)?.next().is_some() {
                bail!(
                    "{} is not empty; give --dir a new or empty directory",
                    d.display()
                );
            }
            d.clone()
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    progress.show("creating PKI…");
    let lb = Loopback::create(&dir.join("certs"))?;
    let mut ropts = lb.relay_options("demo-relay", &dir.join("spool.db"))?;
    ropts.intake.enroll_peer_burst = (opts.devices as f64).max(200.0);
    ropts.intake.enroll_burst = (opts.devices as f64).max(500.0);
    let relay = lb.start_relay(ropts).await?;
    let store = Store::connect(&format!("sqlite://{}", dir.join("site.db").display())).await?;
    let site = lb.start_site(
        store.clone(),
        &[&relay],
        PullOptions {
            wait: Duration::from_millis(500),
            ..Default::default()
        },
        clock::system(),
    )?;

    let expected = (opts.devices * sample::BASELINES.len()) as u64;
    let mut tasks = JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    for i in 0..opts.devices {
        let mut ao = lb.agent_options(&relay, &dir.join("agents").join(format!("{i:05}")))?;
        ao.hostname = format!("demo-host-{i:04}");
        ao.os = "Debian GNU/Linux 12 (bookworm) x86_64".into();
        ao.hardware_id = format!("demo-hw-{i:08x}");
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let agent = Agent::open(ao).await?;
            for b in 0..sample::BASELINES.len() {
                agent.queue_report(sample::report(b, i as u64 * 7919 + b as u64))?;
            }
            let out = agent.flush_until_empty(Duration::from_secs(60)).await?;
            if out.remaining > 0 {
                bail!("device {i}: {} reports still queued", out.remaining);
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    let mut submitted = 0usize;
    while let Some(r) = tasks.join_next().await {
        r.context("device task panicked")??;
        submitted += 1;
        progress.show(&format!(
            "devices enrolled and submitted: {submitted}/{}",
            opts.devices
        ));
    }

    let deadline = Instant::now() + opts.timeout;
    let stored = loop {
        let n = store.counts().await?.reports;
        progress.show(&format!(
            "reports stored in the site database: {n}/{expected}"
        ));
        if n >= expected {
            break n;
        }
        if Instant::now() > deadline {
            progress.done();
            bail!(
                "only {n} of {expected} reports reached the site database within {:?}",
                opts.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    progress.done();
    let summaries = store.baseline_summaries().await?;
    let elapsed = started.elapsed();
    site.shutdown().await;
    relay.shutdown().await;
    store.close().await;
    Ok(DemoOutcome {
        reports: stored,
        devices: opts.devices,
        elapsed,
        summaries,
        dir: opts.dir,
    })
}

/// The compliance summary table: devices per state, per baseline.
pub fn summary_table(summaries: &[BaselineSummary]) -> String {
    let mut out = format!(
        "{:<44} {:>7} {:>9} {:>13} {:>5} {:>7}\n",
        "Baseline", "Devices", "Compliant", "Non-compliant", "Error", "Unknown"
    );
    for s in summaries {
        let name = format!("{} ({})", s.baseline_name, s.baseline_id);
        out.push_str(&format!(
            "{:<44} {:>7} {:>9} {:>13} {:>5} {:>7}\n",
            name,
            s.devices,
            s.compliant + s.not_applicable,
            s.non_compliant,
            s.error,
            s.unknown
        ));
    }
    out
}
