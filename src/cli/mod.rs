//! The `mprelay` command line. Exit status: 0 on success, 64 for bad usage or configuration,
//! 1 for other failures; errors go to stderr as one sentence naming the file, field or value.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing::info;

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
    /// Run a relay (management point).
    Relay(ConfigArg),
    /// Run a site server.
    Site(ConfigArg),
    /// Device agent commands.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Reports from the site database.
    #[command(subcommand)]
    Report(ReportCmd),
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
    /// Issue a client certificate: for an agent (agent CA) or another site server (site CA).
    Issue {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// "agent" or "site".
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
        /// Where to write NAME.pem and NAME.key (default: --dir).
        #[arg(long)]
        out: Option<PathBuf>,
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
}

#[derive(Debug, Subcommand)]
enum ReportCmd {
    /// Devices per compliance state, per baseline.
    Compliance(DbArg),
    /// Row counts of the site database.
    Counts(DbArg),
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
    }
}

/// "doing x: because y" on one line.
fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn init_logging(cli: &Cli) {
    let server = matches!(cli.command, Command::Relay(_) | Command::Site(_));
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
        Command::Relay(c) => relay(c).await,
        Command::Site(c) => site(c).await,
        Command::Agent(c) => agent(c).await,
        Command::Report(c) => report(c).await,
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
    })
    .await?;
    print!("{}", crate::demo::summary_table(&out.summaries));
    if let Some(d) = &out.dir {
        println!("PKI, spool and site database kept in {}", d.display());
    }
    println!(
        "stored {} reports from {} devices in {:.1} s",
        out.reports,
        out.devices,
        out.elapsed.as_secs_f64()
    );
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
        } => {
            let role = match role.as_str() {
                "agent" => ClientRole::Agent,
                "site" => ClientRole::Site,
                other => {
                    return Err(usage(format!(
                        "--role {other:?}: use \"agent\" or \"site\""
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
            let (cert, key) = pki::issue_client(&PkiPaths::new(&dir), role, &name, &out)
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
    let handle = crate::relay::start(opts, agent, site)
        .await
        .context("starting the relay")?;
    println!(
        "relay {} listening: agents on {}, site servers on {}",
        handle.relay_id, handle.agent_addr, handle.site_addr
    );
    shutdown_signal().await;
    info!("shutting down");
    handle.shutdown().await;
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
    let url = loaded.database_url();
    let store = Store::connect(&url)
        .await
        .context("opening the site database")?;
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
    })
    .context("starting the site server")?;
    println!(
        "site server pulling {} relay(s) into {}",
        loaded.value.relays.len(),
        store.backend()
    );
    shutdown_signal().await;
    handle.shutdown().await;
    store.close().await;
    Ok(())
}

async fn open_agent(c: &ConfigArg) -> Result<Agent, Failure> {
    let loaded = config::load::<AgentFile>(c.config.as_deref(), "agent", config::process_env())?;
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
                return Err(Failure::Other(anyhow::anyhow!(
                    "{} submissions are still queued (relay busy or unreachable); they are sent on the next run",
                    out.remaining
                )));
            }
            Ok(())
        }
    }
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
        ReportCmd::Compliance(a) => {
            let store = Store::connect(&database_url(&a)?)
                .await
                .context("opening the site database")?;
            print!(
                "{}",
                crate::demo::summary_table(
                    &store
                        .baseline_summaries()
                        .await
                        .context("reading compliance")?
                )
            );
            Ok(())
        }
        ReportCmd::Counts(a) => {
            let store = Store::connect(&database_url(&a)?)
                .await
                .context("opening the site database")?;
            let c = store.counts().await.context("counting")?;
            println!(
                "devices {}\nreports {}\nsetting results {}\nterms acceptances {}\nquarantined records {}",
                c.devices, c.reports, c.settings, c.acceptances, c.quarantined
            );
            Ok(())
        }
    }
}
