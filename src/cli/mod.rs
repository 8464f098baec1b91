//! The `mprelay` command line. Exit status: 0 on success, 64 for bad usage or configuration,
//! 1 for other failures; errors go to stderr as one sentence naming the file, field or value.

mod admins;
mod collections;
mod compliance;
pub mod format;
mod maintenance;
mod records;
pub mod tables;
mod terms;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing::info;

use self::format::FormatArg;
use crate::agent::Agent;
use crate::config::{self, AgentFile, ConfigError, RelayFile, SiteFile};
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "mprelay",
    version,
    about = "Management point relay with encrypted intake"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter, e.g. "info" or "mprelay=debug" (also MPRELAY_LOG).
    #[arg(long, global = true, env = "MPRELAY_LOG")]
    log: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole system on loopback: PKI, relay, site server, simulated devices.
    Demo(DemoArgs),
    /// Make and manage the site's certificates and secrets.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Run a relay (management point), or make a running one reload (`relay reload`).
    Relay(RelayArgs),
    /// Run a site server, or change a site setting (`site set privacy-url URL`).
    Site(SiteArgs),
    /// Device agent commands.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Reports from the site database.
    #[command(subcommand)]
    Report(ReportCmd),
    /// Configuration baselines and items: import definitions (TOML), list revisions.
    #[command(subcommand)]
    Baseline(compliance::BaselineCmd),
    /// Collections of devices: import definitions (TOML), list, show, members.
    #[command(subcommand)]
    Collection(collections::CollectionCmd),
    /// Deploy a baseline to a collection, or change how it is deployed.
    Deploy(collections::DeployArgs),
    /// Deployments: list, disable, enable.
    #[command(subcommand)]
    Deployment(collections::DeploymentCmd),
    /// Block or unblock a device (relays refuse it once the policy reaches them), or tag it.
    #[command(subcommand)]
    Device(compliance::DeviceCmd),
    /// Terms and conditions: publish a version or an edit, show what is published.
    #[command(subcommand)]
    Terms(terms::TermsCmd),
    /// The retention task (Delete Aged Configuration Management Data): show, set, run.
    #[command(subcommand)]
    Maintenance(maintenance::MaintenanceCmd),
    /// Named administrators of the admin API and console: add, list, disable, rotate.
    #[command(subcommand)]
    Admin(admins::AdminCmd),
    /// The audit log: who changed what, when, before and after.
    #[command(subcommand)]
    Audit(admins::AuditCmd),
    /// Benchmarks against the targets of DESIGN section 9.
    #[command(subcommand)]
    Bench(crate::bench::BenchCmd),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Keep the PKI, spool and site database in this (new or empty) directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Give up if not everything is stored within this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Keep the relay and the site server running afterwards and serve the site's web console
    /// on a loopback port, until interrupted (Ctrl-C).
    #[arg(long)]
    serve: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SiteArgs {
    #[command(subcommand)]
    cmd: Option<terms::SiteCmd>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct RelayArgs {
    #[command(subcommand)]
    cmd: Option<RelayCmd>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Subcommand)]
enum RelayCmd {
    /// Make the relay running with this configuration re-read its certificates, CAs, CRLs and
    /// secrets (as SIGHUP does), after checking that they load. Queued data and open
    /// connections stay.
    Reload(ConfigArg),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The configuration file (TOML); MPRELAY_<ROLE>__… variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum CertsCmd {
    /// Write a development PKI: site CA, relay, site-client and console certificates, agent CA,
    /// master secret (epoch 1) and enrollment secret.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Names and addresses the relay and console certificates are valid for.
        #[arg(long, default_value = "localhost,127.0.0.1", value_delimiter = ',')]
        hosts: Vec<String>,
    },
    /// Issue a certificate: a client one for an agent (agent CA) or another site server (site
    /// CA), or a relay's server certificate (site CA; to renew one, or for another relay).
    Issue {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// "agent", "site" or "relay".
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
        /// Where to write NAME.pem and NAME.key (default: --dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// For --role relay: the names and addresses the certificate is valid for.
        #[arg(long, default_value = "localhost,127.0.0.1", value_delimiter = ',')]
        hosts: Vec<String>,
    },
    /// Add a new master secret epoch (the relay enrolls new devices on the newest epoch).
    NewEpoch {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long)]
        epoch: u32,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCmd {
    /// Enroll with the relay (once; later runs reuse the state file).
    Enroll(ConfigArg),
    /// Queue compliance reports (JSON files) and send everything queued.
    Submit {
        #[command(flatten)]
        config: ConfigArg,
        /// A report as JSON (see examples/report.json); may be repeated. Without it, only the
        /// queue is flushed.
        #[arg(long)]
        report: Vec<PathBuf>,
        /// Keep retrying for this many seconds when the relay asks to wait.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// Fetch the policy, evaluate its baselines (remediating what it allows), report; repeat
    /// on the policy's schedule.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Evaluate and report once, then exit.
        #[arg(long)]
        once: bool,
        /// Evaluate against this directory tree instead of / (commands still run on the host).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Show the site's terms and conditions, or accept them for a user.
    #[command(subcommand)]
    Terms(terms::AgentTermsCmd),
    /// Refresh the policy for a user and show it (a portal function: refused, with exit status
    /// 77, until the user accepted the terms in force).
    Policy(terms::PortalArgs),
    /// Show the site's privacy statement URL (a portal function: refused, with exit status 77,
    /// until the user accepted the terms in force).
    Privacy(terms::PortalArgs),
}

#[derive(Debug, Subcommand)]
enum ReportCmd {
    /// Devices per compliance state, per baseline; with --baseline, per setting too.
    Compliance {
        #[command(flatten)]
        db: DbArg,
        #[arg(long, conflicts_with = "collection")]
        baseline: Option<String>,
        /// Per deployment to this collection, over the devices now in it (table only).
        #[arg(long)]
        collection: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// One device: state, settings (expected, observed, remediated) and history per baseline.
    Device {
        #[command(flatten)]
        db: DbArg,
        /// The device id (32 hex characters).
        id: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Devices, a page at a time: every device, or with --baseline that baseline's devices and
    /// their state for it; narrowed by state, worst severity, OS and a search.
    Devices {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        list: compliance::ListArgs,
        #[command(flatten)]
        format: FormatArg,
    },
    /// The non-compliant devices of a baseline and their failing settings (with --state error,
    /// the devices in error and their error settings).
    Noncompliant {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        baseline: String,
        /// non_compliant (the default) or error.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Row counts of the site database.
    Counts {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Terms acceptances: per user and device, the version accepted, when, and whether it is
    /// the one in force.
    Terms {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Prove what a device sent: check a stored report's signature over its stored signed bytes
    /// with the device's key and compare what was signed with the rows stored. Exit status 0
    /// when every report verifies, 1 when any differs or its signature fails.
    Verify(verify::VerifyArgs),
}

#[derive(Debug, Args)]
struct DbArg {
    /// The site database: sqlite://PATH or postgres://…
    #[arg(long, env = "MPRELAY_DATABASE")]
    database: Option<String>,
    /// Read the database URL from this site configuration instead.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// A failure and the exit status it deserves.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or configuration: exit 64.
    Usage(anyhow::Error),
    /// Anything else: exit 1.
    Other(anyhow::Error),
    /// A portal function refused because the user has not accepted the terms in force: exit 77.
    NotPermitted(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast_ref::<ConfigError>() {
            Some(_) => Failure::Usage(e),
            None => Failure::Other(e),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Usage(e.into())
    }
}

/// An import refused: each error of the files on its own line, then one sentence (exit 64);
/// a file that cannot be read is bad usage too; anything else is a failure.
fn import_failure(e: crate::policy::PolicyError, what: &str) -> Failure {
    use crate::policy::PolicyError;
    match e {
        PolicyError::Invalid(errors) => {
            for e in &errors {
                eprintln!("mprelay: {e}");
            }
            usage(format!(
                "{} error{} in the {what}; nothing was imported",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            ))
        }
        e @ PolicyError::Read { .. } => Failure::Usage(e.into()),
        e => Failure::Other(e.into()),
    }
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(anyhow::anyhow!(msg.into()))
}

/// Parses the command line, runs the command, and turns the outcome into an exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 64,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    crate::pki::install_default_provider();
    init_logging(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mprelay: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("mprelay: {}", chain(&e));
            ExitCode::from(64)
        }
        Err(Failure::Other(e)) => {
            eprintln!("mprelay: {}", chain(&e));
            ExitCode::from(1)
        }
        Err(Failure::NotPermitted(e)) => {
            eprintln!("mprelay: {}", chain(&e));
            ExitCode::from(terms::EXIT_TERMS_NOT_ACCEPTED)
        }
    }
}

/// "doing x: because y" on one line. Causes whose text the message already carries (error types
/// that print their source as well as exposing it) are not repeated.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn init_logging(cli: &Cli) {
    let server = matches!(
        cli.command,
        Command::Relay(RelayArgs { cmd: None, .. }) | Command::Site(SiteArgs { cmd: None, .. })
    );
    let default = if server { "info" } else { "warn" };
    let filter = cli
        .log
        .clone()
        .unwrap_or_else(|| std::env::var("RUST_LOG").unwrap_or_else(|_| default.into()));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files and journals.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Demo(a) => demo(a).await,
        Command::Certs(c) => certs(c),
        Command::Relay(RelayArgs {
            cmd: Some(RelayCmd::Reload(c)),
            ..
        }) => relay_reload(c),
        Command::Relay(RelayArgs { cmd: None, config }) => relay(config).await,
        Command::Site(SiteArgs { cmd: Some(c), .. }) => terms::site(c).await,
        Command::Site(SiteArgs { cmd: None, config }) => site(config).await,
        Command::Agent(c) => agent(c).await,
        Command::Report(c) => report(c).await,
        Command::Baseline(c) => compliance::baseline(c).await,
        Command::Device(c) => compliance::device(c).await,
        Command::Collection(c) => collections::collection(c).await,
        Command::Deploy(a) => collections::deploy(a).await,
        Command::Deployment(c) => collections::deployment(c).await,
        Command::Terms(c) => terms::terms(c).await,
        Command::Maintenance(c) => maintenance::maintenance(c).await,
        Command::Admin(c) => admins::admin(c).await,
        Command::Audit(c) => admins::audit(c).await,
        Command::Bench(c) => crate::bench::run(c).await.map_err(Failure::from),
    }
}

async fn demo(a: DemoArgs) -> Result<(), Failure> {
    if a.devices == 0 {
        return Err(usage("--devices must be at least 1"));
    }
    let out = crate::demo::run(crate::demo::DemoOptions {
        devices: a.devices,
        dir: a.dir,
        timeout: Duration::from_secs(a.timeout),
        serve: a.serve,
    })
    .await?;
    print!("{}", tables::overview(&out.overview));
    println!(
        "{} settings evaluated against the devices' file systems: {} remediated, {} in error",
        out.settings, out.remediated, out.errors
    );
    if let Some(d) = &out.dir {
        println!("PKI, spool and site database kept in {}", d.display());
    }
    println!(
        "stored {} reports from {} devices in {:.1} s",
        out.reports,
        out.devices,
        out.elapsed.as_secs_f64()
    );
    if let Some(running) = out.running {
        println!(
            "console: {} (log in with the token in {}; its certificate is signed by {})",
            running.console_url,
            running.token_file.display(),
            running.ca_file.display()
        );
        println!("serving until interrupted (Ctrl-C)");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        running.shutdown().await;
    }
    Ok(())
}

fn certs(c: CertsCmd) -> Result<(), Failure> {
    use crate::pki::{self, ClientRole, PkiPaths};
    match c {
        CertsCmd::Init { dir, hosts } => {
            let r = pki::init(&dir, &hosts).map_err(|e| Failure::Other(e.into()))?;
            for f in r.files {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
        CertsCmd::Issue {
            dir,
            role,
            name,
            out,
            hosts,
        } => {
            let role = match role.as_str() {
                "agent" => Some(ClientRole::Agent),
                "site" => Some(ClientRole::Site),
                "relay" => None,
                other => {
                    return Err(usage(format!(
                        "--role {other:?}: use \"agent\", \"site\" or \"relay\""
                    )));
                }
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(usage("--name must be letters, digits, '-', '_' or '.'"));
            }
            let out = out.unwrap_or_else(|| dir.clone());
            let paths = PkiPaths::new(&dir);
            let (cert, key) = match role {
                Some(role) => pki::issue_client(&paths, role, &name, &out),
                None => pki::issue_server(&paths, &name, &hosts, &out),
            }
            .map_err(|e| Failure::Other(e.into()))?;
            println!("wrote {}\nwrote {}", cert.display(), key.display());
            Ok(())
        }
        CertsCmd::NewEpoch { dir, epoch } => {
            if epoch == 0 {
                return Err(usage("--epoch must be at least 1"));
            }
            let path = PkiPaths::new(&dir).master_secret(epoch);
            pki::write_secret(
                &path,
                format!(
                    "{}\n",
                    hex::encode(crate::envelope::MasterSecret::generate().expose())
                )
                .as_bytes(),
            )
            .map_err(|e| Failure::Other(e.into()))?;
            println!("wrote {}", path.display());
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

async fn relay(c: ConfigArg) -> Result<(), Failure> {
    let loaded = config::load::<RelayFile>(c.config.as_deref(), "relay", config::process_env())?;
    let opts = loaded.to_options()?;
    // One descriptor per agent connection, and some for site servers, the spool and logs.
    let want = opts.agent_limits.max_connections as u64 + 1024;
    let limit = crate::net::raise_open_file_limit(want);
    if limit < want {
        tracing::warn!(
            limit,
            want,
            "the open-file limit is below the connection caps"
        );
    }
    let agent = tokio::net::TcpListener::bind(loaded.value.agent_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on agent_listen {}",
                loaded.value.agent_listen
            )
        })?;
    let site = tokio::net::TcpListener::bind(loaded.value.site_listen)
        .await
        .with_context(|| format!("cannot listen on site_listen {}", loaded.value.site_listen))?;
    let pid_file = relay_pid_file(&loaded);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let handle = crate::relay::start(opts, agent, site)
        .await
        .context("starting the relay")?;
    if let Err(e) = crate::fsutil::write_private_atomic(
        &pid_file,
        format!("{}\n", std::process::id()).as_bytes(),
    ) {
        tracing::warn!(file = %pid_file.display(), error = %e,
            "cannot write the pid file: `mprelay relay reload` will not find this relay (SIGHUP still reloads)");
    }
    println!(
        "relay {} listening: agents on {}, site servers on {}",
        handle.relay_id, handle.agent_addr, handle.site_addr
    );
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hup.recv() => reload_relay(&handle, c.config.as_deref()),
        }
    }
    info!("shutting down");
    handle.shutdown().await;
    if std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == std::process::id().to_string())
    {
        let _ = std::fs::remove_file(&pid_file);
    }
    Ok(())
}

/// Where a relay keeps its process id while it runs: beside its spool (`spool.db.pid`), which
/// is its own and writable by it.
fn relay_pid_file(loaded: &config::Loaded<RelayFile>) -> PathBuf {
    let mut p = loaded.path(&loaded.value.spool.path).into_os_string();
    p.push(".pid");
    PathBuf::from(p)
}

/// SIGHUP: loads the configuration again and takes its certificates and secrets. A configuration
/// that does not load changes nothing; the relay goes on as it was.
fn reload_relay(handle: &crate::relay::RelayHandle, path: Option<&Path>) {
    let loaded = match config::load::<RelayFile>(path, "relay", config::process_env()) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "reload failed; keeping the running configuration");
            return;
        }
    };
    match loaded.to_options() {
        Ok(opts) => handle.reload(opts),
        Err(e) => tracing::error!(error = %e, "reload failed; keeping the running configuration"),
    }
}

/// `mprelay relay reload`: checks that the configuration loads, then sends SIGHUP to the relay
/// whose pid file it names, once sure that process is an mprelay.
fn relay_reload(c: ConfigArg) -> Result<(), Failure> {
    let loaded = config::load::<RelayFile>(c.config.as_deref(), "relay", config::process_env())?;
    loaded.to_options()?;
    let pid_file = relay_pid_file(&loaded);
    let text = std::fs::read_to_string(&pid_file).map_err(|e| {
        Failure::Other(anyhow::anyhow!(
            "cannot read the pid file {} ({e}): is the relay of this configuration running?",
            pid_file.display()
        ))
    })?;
    let pid = text
        .trim()
        .parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| {
            Failure::Other(anyhow::anyhow!(
                "the pid file {} holds {:?}, not a process id",
                pid_file.display(),
                text.trim()
            ))
        })?;
    // A stale pid file may name some other process now, which SIGHUP would end.
    let proc = |f: &str| std::fs::read(format!("/proc/{}/{f}", pid.as_raw_nonzero()));
    let comm = proc("comm").unwrap_or_default();
    let cmdline = proc("cmdline").unwrap_or_default();
    let is_relay = comm.trim_ascii() == b"mprelay"
        && cmdline.split(|b| *b == 0).skip(1).any(|a| a == b"relay");
    if !is_relay {
        return Err(Failure::Other(anyhow::anyhow!(
            "the pid file {} names process {}, which is not a running mprelay relay: is \
             the relay running?",
            pid_file.display(),
            pid.as_raw_nonzero()
        )));
    }
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).map_err(|e| {
        Failure::Other(anyhow::anyhow!(
            "cannot signal the relay (process {}): {e}",
            pid.as_raw_nonzero()
        ))
    })?;
    println!(
        "asked relay process {} to reload its certificates and secrets",
        pid.as_raw_nonzero()
    );
    Ok(())
}

async fn site(c: ConfigArg) -> Result<(), Failure> {
    let loaded = config::load::<SiteFile>(c.config.as_deref(), "site", config::process_env())?;
    let pull = loaded.pull_options()?;
    if loaded.value.relays.is_empty() {
        return Err(Failure::Usage(
            loaded
                .invalid("relays", "at least one [[relays]] entry is needed")
                .into(),
        ));
    }
    let tls = loaded.client_tls()?;
    let policy = loaded.policy_options()?;
    let admin = loaded.admin()?;
    let url = loaded.database_url();
    let store = Store::connect(&url)
        .await
        .context("opening the site database")?;
    let admin = match admin {
        Some((listen, tls, token)) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on admin.listen {listen}"))?;
            Some(crate::site::admin::AdminOptions {
                listener,
                tls,
                token,
                limits: crate::net::Limits::default(),
            })
        }
        None => None,
    };
    let handle = crate::site::start(crate::site::SiteOptions {
        store: store.clone(),
        relays: loaded
            .value
            .relays
            .iter()
            .map(|r| crate::site::RelayTarget { url: r.url.clone() })
            .collect(),
        client_tls: std::sync::Arc::new(tls),
        pull,
        clock: crate::clock::system(),
        policy,
        admin,
    })
    .context("starting the site server")?;
    println!(
        "site server pulling {} relay(s) into {}{}",
        loaded.value.relays.len(),
        store.backend(),
        handle
            .admin_addr
            .map(|a| format!("; admin API on https://{a}"))
            .unwrap_or_default()
    );
    shutdown_signal().await;
    handle.shutdown().await;
    store.close().await;
    Ok(())
}

async fn open_agent(c: &ConfigArg) -> Result<Agent, Failure> {
    let loaded = config::load::<AgentFile>(c.config.as_deref(), "agent", config::process_env())?;
    open_agent_with(&loaded).await
}

async fn open_agent_with(loaded: &config::Loaded<AgentFile>) -> Result<Agent, Failure> {
    let opts = loaded.to_options()?;
    Agent::open(opts)
        .await
        .map_err(|e| Failure::Other(anyhow::Error::new(e).context("opening the agent")))
}

async fn agent(c: AgentCmd) -> Result<(), Failure> {
    match c {
        AgentCmd::Enroll(c) => {
            let a = open_agent(&c).await?;
            println!(
                "enrolled: device {} on key epoch {}",
                a.device_id(),
                a.key_epoch().await
            );
            Ok(())
        }
        AgentCmd::Submit {
            config,
            report,
            wait,
        } => {
            // Parse every file before queueing any, so a typo does not half-submit.
            let mut reports = Vec::new();
            for p in &report {
                reports.push(crate::agent::report_json::read(p).map_err(usage)?);
            }
            let a = open_agent(&config).await?;
            for r in reports {
                let id = a.queue_report(r).map_err(|e| Failure::Other(e.into()))?;
                println!("queued {id}");
            }
            let out = a
                .flush_until_empty(Duration::from_secs(wait))
                .await
                .map_err(|e| Failure::Other(e.into()))?;
            println!(
                "accepted {}, already accepted {}, dropped {}, still queued {}",
                out.accepted, out.duplicates, out.dropped, out.remaining
            );
            if out.remaining > 0 {
                let why = if out.refused == out.remaining {
                    "refused without an error code by something between agent and relay"
                } else {
                    "relay busy or unreachable"
                };
                return Err(Failure::Other(anyhow::anyhow!(
                    "{} submissions are still queued ({why}); they are sent on the next run",
                    out.remaining
                )));
            }
            Ok(())
        }
        AgentCmd::Run { config, once, root } => {
            let loaded = config::load::<AgentFile>(
                config.config.as_deref(),
                "agent",
                config::process_env(),
            )?;
            let mut opts = loaded.run_options()?;
            if let Some(r) = root {
                opts.root = r;
            }
            crate::agent::run::check_root(&opts.root).map_err(usage)?;
            let a = open_agent_with(&loaded).await?;
            compliance::agent_run(&a, &opts, once, shutdown_signal()).await
        }
        AgentCmd::Terms(c) => terms::agent_terms(c).await,
        AgentCmd::Policy(p) => terms::agent_policy(p).await,
        AgentCmd::Privacy(p) => terms::agent_privacy(p).await,
    }
}

async fn open_store(a: &DbArg) -> Result<Store, Failure> {
    Ok(Store::connect(&database_url(a)?)
        .await
        .context("opening the site database")?)
}

/// For commands that only read: makes nothing, so a read-only database role is enough and a
/// mistyped path is an error (see [`Store::open_read_only`]).
async fn open_store_read_only(a: &DbArg) -> Result<Store, Failure> {
    Ok(Store::open_read_only(&database_url(a)?)
        .await
        .context("opening the site database")?)
}

/// The database URL from `--database`, or from the site configuration.
fn database_url(a: &DbArg) -> Result<String, Failure> {
    if let Some(u) = &a.database {
        return Ok(u.clone());
    }
    let path: Option<&Path> = a.config.as_deref();
    if path.is_none() {
        return Err(usage(
            "give --database URL, --config site.toml, or MPRELAY_DATABASE",
        ));
    }
    let loaded = config::load::<SiteFile>(path, "site", config::process_env())?;
    Ok(loaded.database_url())
}

async fn report(c: ReportCmd) -> Result<(), Failure> {
    match c {
        ReportCmd::Compliance {
            db,
            collection: Some(c),
            format,
            ..
        } => {
            if format.format != format::Format::Table {
                return Err(usage(
                    "report compliance --collection prints a table only: leave out --format",
                ));
            }
            let store = open_store_read_only(&db).await?;
            collections::report_collection(&store, &c).await
        }
        ReportCmd::Compliance {
            db,
            baseline,
            format,
            ..
        } => {
            let store = open_store_read_only(&db).await?;
            compliance::report_compliance(&store, baseline.as_deref(), format.format).await
        }
        ReportCmd::Device { db, id, format } => {
            let store = open_store_read_only(&db).await?;
            compliance::report_device(&store, &id, format.format).await
        }
        ReportCmd::Devices { db, list, format } => {
            let store = open_store_read_only(&db).await?;
            compliance::report_devices(&store, &list, format.format).await
        }
        ReportCmd::Noncompliant {
            db,
            baseline,
            state,
            format,
        } => {
            let state = crate::site::admin::compliance::failing_state(state.as_deref())
                .map_err(|e| usage(format!("--{e}")))?;
            let store = open_store_read_only(&db).await?;
            compliance::report_noncompliant(&store, &baseline, state, format.format).await
        }
        ReportCmd::Terms { db, format } => {
            let store = open_store_read_only(&db).await?;
            terms::report_terms(&store, format.format).await
        }
        ReportCmd::Counts { db, format } => {
            let store = open_store_read_only(&db).await?;
            let c = store.counts().await.context("counting")?;
            print!(
                "{}",
                format::render(
                    format.format,
                    || format!(
                        "devices {}\nreports {}\nsetting results {}\nterms acceptances {}\nquarantined records {}\n",
                        c.devices, c.reports, c.settings, c.acceptances, c.quarantined
                    ),
                    || records::counts_json(&c),
                    || records::counts_csv(&c),
                )
            );
            Ok(())
        }
        ReportCmd::Verify(a) => {
            let store = open_store_read_only(&a.db).await?;
            verify::report_verify(&store, &a).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_does_not_repeat_causes_already_in_the_message() {
        #[derive(Debug, thiserror::Error)]
        #[error("migration failed: {0}")]
        struct Outer(#[source] std::io::Error);
        let e = anyhow::Error::new(Outer(std::io::Error::other("table exists")))
            .context("opening the site database");
        assert_eq!(
            chain(&e),
            "opening the site database: migration failed: table exists"
        );
    }
}
