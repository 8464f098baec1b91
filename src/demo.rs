//! `mprelay demo`: the whole system in one process on loopback — a PKI, a relay with its spool, a
//! site server on SQLite with the example baselines imported and pushed to the relay as policy,
//! and simulated devices that enroll, fetch the policy, evaluate it with the real evaluators
//! (remediating what the baselines allow) against a generated file-system tree each, and submit
//! sealed reports — and [`Loopback`], the same wiring for the integration tests.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::agent::run::RunOptions;
use crate::agent::{Agent, AgentOptions};
use crate::clock::{self, SharedClock};
use crate::envelope::MasterKeys;
use crate::ids::KeyEpoch;
use crate::net::Limits;
use crate::pki::{self, ClientAuth, PkiPaths};
use crate::relay::{self, IntakeOptions, RelayHandle, RelayOptions};
use crate::site::{self, PullOptions, RelayTarget, SiteHandle, SiteOptions};
use crate::spool::SpoolConfig;
use crate::store::{BaselineOverview, BaselineSummary, Store};

/// The example baselines, built in so the demo runs from any directory.
pub const EXAMPLE_BASELINES: &[(&str, &str)] = &[
    (
        "ssh-hardening.toml",
        include_str!("../examples/baselines/ssh-hardening.toml"),
    ),
    (
        "kernel-network.toml",
        include_str!("../examples/baselines/kernel-network.toml"),
    ),
];

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
            metrics_token: None,
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
        Ok(site::start(self.site_options(store, relays, pull, clock)?)?)
    }

    /// The options [`Self::start_site`] starts a site server with (no admin listener).
    pub fn site_options(
        &self,
        store: Store,
        relays: &[&RelayHandle],
        pull: PullOptions,
        clock: SharedClock,
    ) -> anyhow::Result<SiteOptions> {
        Ok(SiteOptions {
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
            policy: site::policy::PolicyOptions {
                poll: Duration::from_millis(250),
                backoff_min: Duration::from_millis(20),
                backoff_max: Duration::from_millis(500),
                evaluation_interval_s: None,
            },
            admin: None,
        })
    }

    /// The admin API on 127.0.0.1 (ephemeral port) with the PKI's console certificate and token.
    pub async fn admin_options(&self) -> anyhow::Result<site::admin::AdminOptions> {
        let certs = pki::load_certs(&self.paths.admin_cert())?;
        let key = pki::load_private_key(&self.paths.admin_key())?;
        Ok(site::admin::AdminOptions {
            listener: TcpListener::bind("127.0.0.1:0").await?,
            tls: Arc::new(pki::server_config(certs, key, ClientAuth::None)?),
            token: site::admin::AdminToken::load(&self.paths.admin_token())?,
            limits: Limits::default(),
        })
    }

    /// The admin API's bearer token.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.paths.admin_token())?
            .trim()
            .to_string())
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
    /// Keep the relay and the site server running afterwards, with the site's console and
    /// admin API on a loopback port ([`DemoOutcome::running`]).
    pub serve: bool,
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoOutcome {
    pub reports: u64,
    pub devices: usize,
    pub elapsed: Duration,
    pub summaries: Vec<BaselineSummary>,
    /// Devices per state, per baseline, as `mprelay report compliance` shows them.
    pub overview: Vec<BaselineOverview>,
    /// Settings the agents evaluated, remediated (compliant afterwards), and left in error.
    pub settings: u64,
    pub remediated: u64,
    pub errors: u64,
    pub dir: Option<PathBuf>,
    /// With [`DemoOptions::serve`]: the system, still running.
    pub running: Option<Running>,
}

/// The demo's relay and site server left running for a look at the console.
pub struct Running {
    /// `https://127.0.0.1:PORT/console`.
    pub console_url: String,
    /// The admin token to log in with, and the CA certificate the console's is signed by.
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    site: SiteHandle,
    relay: RelayHandle,
    store: Store,
    /// The temporary directory holding everything, when no `--dir` was given.
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("console_url", &self.console_url)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Stops the site server and the relay (a temporary directory is removed after).
    pub async fn shutdown(self) {
        self.site.shutdown().await;
        self.relay.shutdown().await;
        self.store.close().await;
    }
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

/// Runs the demo: imports the example baselines, pushes them to the relay, enrolls `devices`
/// simulated devices that each evaluate the policy against a generated tree and report, and
/// waits until every report is in the site database.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoOutcome> {
    let started = Instant::now();
    let progress = Progress {
        on: std::io::stderr().is_terminal(),
    };
    let mut temp = None;
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
            let t = tempfile::tempdir().context("creating a temporary directory")?;
            let p = t.path().to_path_buf();
            temp = Some(t);
            p
        }
    };
    progress.show("creating PKI…");
    let lb = Loopback::create(&dir.join("certs"))?;
    let mut ropts = lb.relay_options("demo-relay", &dir.join("spool.db"))?;
    ropts.intake.enroll_peer_burst = (opts.devices as f64).max(200.0);
    ropts.intake.enroll_burst = (opts.devices as f64).max(500.0);
    let relay = lb.start_relay(ropts).await?;
    let store = Store::connect(&format!("sqlite://{}", dir.join("site.db").display())).await?;
    progress.show("importing the example baselines…");
    let files: Vec<(String, String)> = EXAMPLE_BASELINES
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let mut imported = crate::policy::import_texts(&store, &files)
        .await
        .context("importing the example baselines")?;
    imported.policy_version = crate::policy::collection::deploy_to_all_devices(
        &store,
        &crate::store::Actor::cli(),
        &imported,
    )
    .await
    .context("deploying the example baselines")?;
    let mut site_opts = lb.site_options(
        store.clone(),
        &[&relay],
        PullOptions {
            wait: Duration::from_millis(500),
            ..Default::default()
        },
        clock::system(),
    )?;
    if opts.serve {
        site_opts.admin = Some(lb.admin_options().await?);
    }
    let site = site::start(site_opts)?;
    progress.show("pushing the policy to the relay…");
    let deadline = Instant::now() + opts.timeout;
    while site.relays[0]
        .policy_version
        .load(std::sync::atomic::Ordering::Relaxed)
        < imported.policy_version
    {
        if Instant::now() > deadline {
            bail!("the relay did not get the policy within {:?}", opts.timeout);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let baselines = site
        .policy
        .borrow()
        .as_ref()
        .map(|p| p.baselines.len())
        .unwrap_or(0);

    let expected = (opts.devices * baselines) as u64;
    let mut tasks = JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    for i in 0..opts.devices {
        let state = dir.join("agents").join(format!("{i:05}"));
        let root = dir.join("devices").join(format!("{i:05}"));
        let mut ao = lb.agent_options(&relay, &state)?;
        ao.hostname = format!("demo-host-{i:04}");
        ao.os = "Debian GNU/Linux 12 (bookworm) x86_64".into();
        ao.hardware_id = format!("demo-hw-{i:08x}");
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            crate::faketree::write_device_tree(&root, i as u64 * 7919)
                .with_context(|| format!("writing the tree of device {i}"))?;
            let agent = Agent::open(ao).await?;
            let round = agent
                .evaluate_round(&RunOptions {
                    root,
                    ..RunOptions::default()
                })
                .await?;
            if round.flush.remaining > 0 {
                bail!("device {i}: {} reports still queued", round.flush.remaining);
            }
            let (mut settings, mut errors) = (0u64, 0u64);
            for (_, _, r) in &round.reports {
                settings += u64::from(r.total());
                errors += u64::from(r.error);
            }
            Ok::<_, anyhow::Error>((settings, u64::from(round.remediated), errors))
        });
    }
    let (mut submitted, mut settings, mut remediated, mut errors) = (0usize, 0, 0, 0);
    while let Some(r) = tasks.join_next().await {
        let (s, rem, e) = r.context("device task panicked")??;
        settings += s;
        remediated += rem;
        errors += e;
        submitted += 1;
        progress.show(&format!(
            "devices evaluated and reported: {submitted}/{}",
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
    let overview = store.compliance_overview().await?;
    let elapsed = started.elapsed();
    let running = match site.admin_addr {
        Some(addr) if opts.serve => Some(Running {
            console_url: format!("https://127.0.0.1:{}/console", addr.port()),
            token_file: lb.paths.admin_token(),
            ca_file: lb.paths.ca_cert(),
            site,
            relay,
            store,
            _temp: temp,
        }),
        _ => {
            site.shutdown().await;
            relay.shutdown().await;
            store.close().await;
            None
        }
    };
    Ok(DemoOutcome {
        reports: stored,
        devices: opts.devices,
        elapsed,
        summaries,
        overview,
        settings,
        remediated,
        errors,
        dir: opts.dir,
        running,
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
