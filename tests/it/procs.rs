//! Real `mprelay` processes for the tests that are about processes: a workspace whose PKI was
//! made by `mprelay certs init`, configuration files written the way an operator writes them,
//! and relay and site server children that a test can `kill -9` and start again on the same
//! ports.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mprelay::net::HttpClient;
use mprelay::pki;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// The `mprelay` binary with a quiet, predictable environment.
pub fn mprelay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mprelay"));
    c.env_remove("MPRELAY_LOG")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("MPRELAY_") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `mprelay ARGS` in `dir` to completion.
pub async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = mprelay();
    c.args(args).current_dir(dir).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().await.expect("mprelay runs")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A port on 127.0.0.1 that was free a moment ago. The relay binds it itself (with
/// SO_REUSEADDR), so it can be started again on the same port after a kill.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// How the relay of a workspace is configured.
#[derive(Debug, Clone)]
pub struct RelayConf {
    /// Master secret epochs held (files `certs/master-N.secret`).
    pub epochs: Vec<u32>,
    pub max_records: u64,
    pub overload_retry_after_s: u64,
    /// `none`, `optional` or `required`.
    pub client_auth: &'static str,
    /// Use `certs/agent-crl.pem` as the agent CRL.
    pub crl: bool,
}

impl Default for RelayConf {
    fn default() -> Self {
        Self {
            epochs: vec![1],
            max_records: 2_000_000,
            overload_retry_after_s: 1,
            client_auth: "none",
            crl: false,
        }
    }
}

/// A directory laid out like a small installation: `certs/`, `relay.toml`, `site.toml`, the
/// spool and the site database.
pub struct Workspace {
    pub dir: TempDir,
    pub agent_port: u16,
    pub site_port: u16,
}

impl Workspace {
    pub async fn new() -> Self {
        mprelay::pki::install_default_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let o = run(dir.path(), &["certs", "init", "--dir", "certs"], &[]).await;
        assert!(o.status.success(), "certs init: {}", text(&o.stderr));
        Self {
            dir,
            agent_port: free_port(),
            site_port: free_port(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn certs(&self) -> pki::PkiPaths {
        pki::PkiPaths::new(self.path("certs"))
    }

    pub fn agent_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.agent_port)
    }

    pub fn site_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.site_port)
    }

    pub fn site_db(&self) -> PathBuf {
        self.path("site.db")
    }

    pub fn enrollment_secret(&self) -> String {
        pki::load_enrollment_secret(&self.certs().enrollment_secret()).unwrap()
    }

    pub fn write_relay_config(&self, c: &RelayConf) {
        let masters: Vec<String> = c
            .epochs
            .iter()
            .map(|e| format!("{e} = \"certs/master-{e}.secret\""))
            .collect();
        let crl = if c.crl {
            "[\"certs/agent-crl.pem\"]"
        } else {
            "[]"
        };
        let toml = format!(
            r#"relay_id = "relay-1"
agent_listen = "127.0.0.1:{agent}"
site_listen = "127.0.0.1:{site}"

[tls]
cert = "certs/relay.pem"
key = "certs/relay.key"
site_ca = "certs/ca.pem"
client_auth = "{client_auth}"
agent_ca = "certs/agent-ca.pem"
crl = {crl}

[secrets]
master = {{ {masters} }}
enrollment = "certs/enrollment.secret"

[spool]
path = "spool.db"
max_records = {max_records}

[intake]
overload_retry_after_s = {retry}
"#,
            agent = self.agent_port,
            site = self.site_port,
            client_auth = c.client_auth,
            masters = masters.join(", "),
            max_records = c.max_records,
            retry = c.overload_retry_after_s,
        );
        std::fs::write(self.path("relay.toml"), toml).unwrap();
    }

    /// The site pulls the workspace's relay, at most `max_records` records per batch.
    pub fn write_site_config(&self, max_records: usize) {
        let toml = format!(
            r#"database = "sqlite://site.db"

[tls]
ca = "certs/ca.pem"
cert = "certs/site-client.pem"
key = "certs/site-client.key"

[[relays]]
url = "{url}"

[pull]
max_records = {max_records}
wait_ms = 300
"#,
            url = self.site_url(),
        );
        std::fs::write(self.path("site.toml"), toml).unwrap();
    }

    /// `NAME.toml` for an agent keeping its state in `NAME-state/`, talking to the relay.
    pub fn write_agent_config(&self, name: &str, client_cert: Option<&str>) -> PathBuf {
        let mut toml = format!(
            r#"relay_url = "{url}"
ca = "certs/ca.pem"
state_dir = "{name}-state"
enrollment_secret_file = "certs/enrollment.secret"
hostname = "{name}"
"#,
            url = self.agent_url(),
        );
        if let Some(c) = client_cert {
            toml.push_str(&format!(
                "client_cert = \"certs/{c}.pem\"\nclient_key = \"certs/{c}.key\"\n"
            ));
        }
        let p = self.path(&format!("{name}.toml"));
        std::fs::write(&p, toml).unwrap();
        p
    }

    /// A client of the relay's site-facing listener with the site server's certificate.
    pub fn site_client(&self) -> HttpClient {
        let roots = pki::load_certs(&self.certs().ca_cert()).unwrap();
        let certs = pki::load_certs(&self.certs().site_cert()).unwrap();
        let key = pki::load_private_key(&self.certs().site_key()).unwrap();
        let tls = pki::client_config(&roots, Some((certs, key)), &[b"h2", b"http/1.1"]).unwrap();
        let mut c = HttpClient::new(&self.site_url(), Arc::new(tls)).unwrap();
        c.request_timeout = Duration::from_secs(10);
        c
    }

    /// A client of the agent-facing listener (no client certificate).
    pub fn agent_client(&self) -> HttpClient {
        let roots = pki::load_certs(&self.certs().ca_cert()).unwrap();
        let tls = pki::client_config(&roots, None, &[b"h2", b"http/1.1"]).unwrap();
        let mut c = HttpClient::new(&self.agent_url(), Arc::new(tls)).unwrap();
        c.request_timeout = Duration::from_secs(10);
        c
    }

    /// One value of the relay's `/metrics` (read over the site-facing listener).
    pub async fn relay_metric(&self, client: &HttpClient, name: &str) -> Option<u64> {
        let resp = client.get("/metrics").await.ok()?;
        let body = text(&resp.body);
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// A running `mprelay relay` or `mprelay site` child, which can be killed and started again.
pub struct Server {
    pub role: &'static str,
    dir: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Kept open: the server may print again, and a closed pipe would fail its write.
    stdout: Option<BufReader<ChildStdout>>,
    /// Everything the server wrote to stderr, across restarts.
    pub log: PathBuf,
    pub starts: u32,
}

impl Server {
    pub async fn relay(ws: &Workspace) -> Self {
        Self::start_with(ws, "relay", &[]).await
    }

    pub async fn site(ws: &Workspace) -> Self {
        Self::start_with(ws, "site", &[]).await
    }

    /// Starts `mprelay ROLE --config ROLE.toml` with extra environment, and waits until it says
    /// it is serving.
    pub async fn start_with(ws: &Workspace, role: &'static str, env: &[(&str, &str)]) -> Self {
        let mut s = Self {
            role,
            dir: ws.dir.path().to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            stdout: None,
            log: ws.path(&format!("{role}.log")),
            starts: 0,
        };
        s.start().await;
        s
    }

    /// Starts the process (again) and waits for its first line on stdout, which it prints once
    /// its listeners are bound (relay) or its database is open and migrated (site).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.role);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = mprelay();
        c.args([self.role, "--config", &format!("{}.toml", self.role)])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn mprelay");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line)).await;
        if !matches!(read, Ok(Ok(n)) if n > 0) {
            let _ = child.kill().await;
            panic!(
                "{} did not start: {}",
                self.role,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        self.child = Some(child);
        self.stdout = Some(stdout);
        self.starts += 1;
    }

    /// `kill -9`: no shutdown code runs.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("SIGKILL");
        }
        self.stdout = None;
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            let status = tokio::time::timeout(Duration::from_secs(30), c.wait())
                .await
                .expect("server stops within 30 s after SIGTERM")
                .unwrap();
            assert!(status.success(), "{} exited with {status}", self.role);
        }
        self.stdout = None;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A random duration in `[lo, hi)` milliseconds.
pub fn random_ms(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + rand::random::<u64>() % (hi - lo).max(1))
}
