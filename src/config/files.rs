//! The three configuration files and how each becomes the options its component runs with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Loaded};
use crate::envelope::MasterKeys;
use crate::ids::KeyEpoch;
use crate::net::Limits;
use crate::pki::{self, ClientAuth};
use crate::relay::{IntakeOptions, RelayOptions};
use crate::spool::SpoolConfig;

/// `relay.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// Names this relay in receipts, forward batches and the site database.
    pub relay_id: String,
    #[serde(default = "default_agent_listen")]
    pub agent_listen: SocketAddr,
    #[serde(default = "default_site_listen")]
    pub site_listen: SocketAddr,
    pub tls: RelayTls,
    pub secrets: RelaySecrets,
    pub spool: SpoolFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub intake: IntakeFile,
    #[serde(default)]
    pub metrics: RelayMetricsFile,
}

/// Monitoring without the site's certificate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayMetricsFile {
    /// A file (mode 0600) holding a scrape token: `/metrics` is then also served on the
    /// agent-facing listener to requests with `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_agent_listen() -> SocketAddr {
    "0.0.0.0:8443".parse().expect("valid address")
}
fn default_site_listen() -> SocketAddr {
    "0.0.0.0:8444".parse().expect("valid address")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayTls {
    /// Server certificate chain and key, presented on both listeners.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Site servers' client certificates must chain to this CA.
    pub site_ca: PathBuf,
    /// Agent client certificates: "none", "optional" or "required".
    #[serde(default = "default_client_auth")]
    pub client_auth: String,
    /// The CA agent client certificates chain to (needed unless client_auth is "none").
    #[serde(default)]
    pub agent_ca: Option<PathBuf>,
    /// Revocation lists (PEM) for agent client certificates.
    #[serde(default)]
    pub crl: Vec<PathBuf>,
}

fn default_client_auth() -> String {
    "none".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySecrets {
    /// Master secret files by key epoch, e.g. `{ 1 = "master-1.secret", 2 = "master-2.secret" }`.
    pub master: BTreeMap<String, PathBuf>,
    /// The enrollment secret file.
    pub enrollment: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolFile {
    pub path: PathBuf,
    #[serde(default = "default_spool_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_spool_records")]
    pub max_records: u64,
    #[serde(default = "default_dedup_hours")]
    pub dedup_window_hours: u64,
    #[serde(default = "default_true")]
    pub verify_on_open: bool,
}

fn default_spool_bytes() -> u64 {
    2 * 1024 * 1024 * 1024
}
fn default_spool_records() -> u64 {
    2_000_000
}
fn default_dedup_hours() -> u64 {
    168
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsFile {
    pub max_body_bytes: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub handshake_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_connections: usize,
    pub max_requests_per_connection: u64,
    pub max_concurrent_streams: u32,
}

impl Default for LimitsFile {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_body_bytes: l.max_body_bytes,
            header_read_timeout_ms: l.header_read_timeout.as_millis() as u64,
            body_read_timeout_ms: l.body_read_timeout.as_millis() as u64,
            handshake_timeout_ms: l.handshake_timeout.as_millis() as u64,
            idle_timeout_ms: l.idle_timeout.as_millis() as u64,
            max_connections: l.max_connections,
            max_requests_per_connection: l.max_requests_per_connection,
            max_concurrent_streams: l.max_concurrent_streams,
        }
    }
}

impl LimitsFile {
    fn to_limits(&self, origin: &Loaded<RelayFile>) -> Result<Limits, ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(origin.invalid("limits.max_body_bytes", "must be at least 1024"));
        }
        if self.max_connections == 0 {
            return Err(origin.invalid("limits.max_connections", "must be at least 1"));
        }
        for (name, v) in [
            ("limits.header_read_timeout_ms", self.header_read_timeout_ms),
            ("limits.body_read_timeout_ms", self.body_read_timeout_ms),
            ("limits.handshake_timeout_ms", self.handshake_timeout_ms),
            ("limits.idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if v == 0 {
                return Err(origin.invalid(name, "must be greater than 0"));
            }
        }
        Ok(Limits {
            max_body_bytes: self.max_body_bytes,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
            max_requests_per_connection: self.max_requests_per_connection.max(1),
            max_concurrent_streams: self.max_concurrent_streams.max(1),
            ..Limits::default()
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeFile {
    pub max_clock_skew_s: u64,
    pub retention_days: u32,
    pub enroll_rate_per_s: f64,
    pub enroll_burst: f64,
    pub enroll_peer_rate_per_s: f64,
    pub enroll_peer_burst: f64,
    pub overload_retry_after_s: u64,
}

impl Default for IntakeFile {
    fn default() -> Self {
        let i = IntakeOptions::default();
        Self {
            max_clock_skew_s: i.max_clock_skew.as_secs(),
            retention_days: i.default_retention_days,
            enroll_rate_per_s: i.enroll_rate_per_s,
            enroll_burst: i.enroll_burst,
            enroll_peer_rate_per_s: i.enroll_peer_rate_per_s,
            enroll_peer_burst: i.enroll_peer_burst,
            overload_retry_after_s: i.overload_retry_after.as_secs(),
        }
    }
}

impl Loaded<RelayFile> {
    /// Loads every file the configuration names and checks every value.
    pub fn to_options(&self) -> Result<RelayOptions, ConfigError> {
        let f = &self.value;
        if f.relay_id.trim().is_empty() || f.relay_id.len() > 128 {
            return Err(self.invalid("relay_id", "must be 1 to 128 characters"));
        }
        let mut keys = BTreeMap::new();
        for (epoch, path) in &f.secrets.master {
            let e: u32 = epoch.parse().ok().filter(|e| *e > 0).ok_or_else(|| {
                self.invalid(
                    "secrets.master",
                    format!("key epoch {epoch:?} is not a positive integer"),
                )
            })?;
            let epoch =
                KeyEpoch::try_from(e).map_err(|m| self.invalid("secrets.master", m.to_string()))?;
            keys.insert(epoch, pki::load_master_secret(&self.path(path))?);
        }
        let keys = MasterKeys::new(keys).ok_or_else(|| {
            self.invalid("secrets.master", "at least one master secret is needed")
        })?;
        let enrollment_secret = pki::load_enrollment_secret(&self.path(&f.secrets.enrollment))?;

        let certs = pki::load_certs(&self.path(&f.tls.cert))?;
        let key = pki::load_private_key(&self.path(&f.tls.key))?;
        let site_roots = pki::load_certs(&self.path(&f.tls.site_ca))?;
        let crls = pki::load_crls(&f.tls.crl.iter().map(|p| self.path(p)).collect::<Vec<_>>())?;
        let agent_roots = || -> Result<_, ConfigError> {
            let p = f.tls.agent_ca.as_ref().ok_or_else(|| {
                self.invalid(
                    "tls.agent_ca",
                    "is required when client_auth is not \"none\"",
                )
            })?;
            Ok(pki::load_certs(&self.path(p))?)
        };
        let client_auth = match f.tls.client_auth.as_str() {
            "none" => ClientAuth::None,
            "optional" => ClientAuth::Optional {
                roots: agent_roots()?,
                crls: crls.clone(),
            },
            "required" => ClientAuth::Required {
                roots: agent_roots()?,
                crls: crls.clone(),
            },
            other => {
                return Err(self.invalid(
                    "tls.client_auth",
                    format!("{other:?} is not one of \"none\", \"optional\", \"required\""),
                ));
            }
        };
        let agent_tls = pki::server_config(certs.clone(), key.clone_key(), client_auth)?;
        let site_tls = pki::server_config(
            certs,
            key,
            ClientAuth::Required {
                roots: site_roots,
                crls: vec![],
            },
        )?;
        let limits = f.limits.to_limits(self)?;
        if f.intake.retention_days == 0 || f.intake.retention_days > 3650 {
            return Err(self.invalid("intake.retention_days", "must be 1 to 3650"));
        }
        if f.spool.max_records == 0 || f.spool.max_bytes < 1024 * 1024 {
            return Err(self.invalid(
                "spool",
                "max_records must be positive and max_bytes at least 1 MiB",
            ));
        }
        Ok(RelayOptions {
            relay_id: f.relay_id.clone(),
            keys,
            enrollment_secret,
            agent_tls: Arc::new(agent_tls),
            site_tls: Arc::new(site_tls),
            agent_limits: limits.clone(),
            site_limits: Limits {
                max_body_bytes: limits.max_body_bytes.max(16 * 1024 * 1024),
                ..limits
            },
            spool: SpoolConfig {
                path: self.path(&f.spool.path),
                max_bytes: f.spool.max_bytes,
                max_records: f.spool.max_records,
                dedup_window: Duration::from_secs(f.spool.dedup_window_hours * 3600),
                verify_on_open: f.spool.verify_on_open,
                ..SpoolConfig::new(self.path(&f.spool.path))
            },
            intake: IntakeOptions {
                max_clock_skew: Duration::from_secs(f.intake.max_clock_skew_s),
                default_retention_days: f.intake.retention_days,
                enroll_rate_per_s: f.intake.enroll_rate_per_s,
                enroll_burst: f.intake.enroll_burst,
                enroll_peer_rate_per_s: f.intake.enroll_peer_rate_per_s,
                enroll_peer_burst: f.intake.enroll_peer_burst,
                overload_retry_after: Duration::from_secs(f.intake.overload_retry_after_s.max(1)),
                ..IntakeOptions::default()
            },
            clock: crate::clock::system(),
            metrics_token: match &f.metrics.token_file {
                None => None,
                Some(p) => {
                    let path = self.path(p);
                    Some(crate::site::admin::AdminToken::load(&path).map_err(|e| {
                        let why = match e {
                            crate::site::admin::AdminError::Token { why, .. } => why,
                            other => other.to_string(),
                        };
                        self.invalid("metrics.token_file", format!("{}: {why}", path.display()))
                    })?)
                }
            },
        })
    }
}

/// `site.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    /// `sqlite://PATH` (relative to this file) or `postgres://…`.
    #[serde(default = "default_database")]
    pub database: String,
    pub tls: SiteTls,
    #[serde(default)]
    pub relays: Vec<RelayEntry>,
    #[serde(default)]
    pub pull: PullFile,
    /// The admin API; absent: not served.
    #[serde(default)]
    pub admin: Option<AdminFile>,
    #[serde(default)]
    pub policy: PolicyFile,
}

/// `[admin]` of `site.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Loopback by default: expose it further only behind something that adds its own access
    /// control.
    #[serde(default = "crate::site::admin::default_listen")]
    pub listen: SocketAddr,
    /// Server certificate and key (`mprelay certs init` writes admin.pem and admin.key).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The bearer token, in a file of mode 0600 (`mprelay certs init` writes admin.token).
    pub token_file: PathBuf,
}

/// `[policy]` of `site.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyFile {
    /// How often agents evaluate their baselines.
    pub evaluation_interval_s: u32,
    /// How often the site checks its database for policy changes made by other processes.
    pub poll_interval_ms: u64,
}

impl Default for PolicyFile {
    fn default() -> Self {
        Self {
            evaluation_interval_s: 3600,
            poll_interval_ms: 2000,
        }
    }
}

fn default_database() -> String {
    "sqlite://site.db".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteTls {
    /// The site CA: relays' server certificates chain to it.
    pub ca: PathBuf,
    /// The site server's client certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayEntry {
    /// `https://host:port` of the relay's site-facing listener.
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullFile {
    pub max_records: usize,
    pub wait_ms: u64,
    pub verify_signatures: bool,
}

impl Default for PullFile {
    fn default() -> Self {
        let p = crate::site::PullOptions::default();
        Self {
            max_records: p.max_records,
            wait_ms: p.wait.as_millis() as u64,
            verify_signatures: p.verify_signatures,
        }
    }
}

impl Loaded<SiteFile> {
    /// The database URL with a relative SQLite path resolved against the file's directory.
    pub fn database_url(&self) -> String {
        resolve_database_url(&self.value.database, &self.base)
    }

    /// The TLS configuration for pulling relays.
    pub fn client_tls(&self) -> Result<rustls::ClientConfig, ConfigError> {
        let t = &self.value.tls;
        let roots = pki::load_certs(&self.path(&t.ca))?;
        let certs = pki::load_certs(&self.path(&t.cert))?;
        let key = pki::load_private_key(&self.path(&t.key))?;
        Ok(pki::client_config(
            &roots,
            Some((certs, key)),
            &[b"h2", b"http/1.1"],
        )?)
    }

    pub fn pull_options(&self) -> Result<crate::site::PullOptions, ConfigError> {
        let p = &self.value.pull;
        if p.max_records == 0 {
            return Err(self.invalid("pull.max_records", "must be at least 1"));
        }
        for r in &self.value.relays {
            if !r.url.starts_with("https://") {
                return Err(self.invalid(
                    "relays.url",
                    format!("{:?} must start with https://", r.url),
                ));
            }
        }
        Ok(crate::site::PullOptions {
            max_records: p.max_records,
            wait: Duration::from_millis(p.wait_ms),
            verify_signatures: p.verify_signatures,
            ..Default::default()
        })
    }
}

impl Loaded<SiteFile> {
    pub fn policy_options(&self) -> Result<crate::site::policy::PolicyOptions, ConfigError> {
        let p = &self.value.policy;
        if !(60..=7 * 86_400).contains(&p.evaluation_interval_s) {
            return Err(self.invalid(
                "policy.evaluation_interval_s",
                "must be 60 to 604800 seconds",
            ));
        }
        if p.poll_interval_ms < 100 {
            return Err(self.invalid("policy.poll_interval_ms", "must be at least 100"));
        }
        Ok(crate::site::policy::PolicyOptions {
            poll: Duration::from_millis(p.poll_interval_ms),
            evaluation_interval_s: Some(p.evaluation_interval_s),
            ..Default::default()
        })
    }

    /// The admin API's address, TLS and token, when `[admin]` is present. A missing or
    /// world-readable token file refuses the start.
    pub fn admin(
        &self,
    ) -> Result<
        Option<(
            SocketAddr,
            Arc<rustls::ServerConfig>,
            crate::site::admin::AdminToken,
        )>,
        ConfigError,
    > {
        let Some(a) = &self.value.admin else {
            return Ok(None);
        };
        let certs = pki::load_certs(&self.path(&a.cert))?;
        let key = pki::load_private_key(&self.path(&a.key))?;
        let tls = pki::server_config(certs, key, ClientAuth::None)?;
        let token = crate::site::admin::AdminToken::load(&self.path(&a.token_file))
            .map_err(|e| self.invalid("admin.token_file", e.to_string()))?;
        Ok(Some((a.listen, Arc::new(tls), token)))
    }
}

/// Resolves a relative `sqlite://` path against `base`; other URLs are returned as they are.
pub fn resolve_database_url(url: &str, base: &std::path::Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(p) if !p.starts_with('/') => format!("sqlite://{}", base.join(p).display()),
        _ => url.to_string(),
    }
}

/// `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// `https://host:port` of a relay's agent listener.
    pub relay_url: String,
    /// The site CA (relays' server certificates chain to it).
    pub ca: PathBuf,
    /// Where the agent keeps its key, credentials and queue (created with mode 0700 files 0600).
    pub state_dir: PathBuf,
    /// The enrollment secret file, needed to enroll and to re-enroll.
    #[serde(default)]
    pub enrollment_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub hardware_id: Option<String>,
    /// Client certificate and key, when the relay asks for one.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The root evaluators look under (`/`; a directory tree for tests and demos).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// How often to evaluate when the policy does not say.
    #[serde(default)]
    pub evaluation_interval_s: Option<u64>,
    /// Set to false to never remediate on this device, whatever the policy allows.
    #[serde(default)]
    pub remediate: Option<bool>,
    /// key=value labels the agent reports with its policy requests, for collection rules.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

impl Loaded<AgentFile> {
    pub fn to_options(&self) -> Result<crate::agent::AgentOptions, ConfigError> {
        let f = &self.value;
        if !f.relay_url.starts_with("https://") {
            return Err(self.invalid(
                "relay_url",
                format!("{:?} must start with https://", f.relay_url),
            ));
        }
        let roots = pki::load_certs(&self.path(&f.ca))?;
        let identity = match (&f.client_cert, &f.client_key) {
            (Some(c), Some(k)) => Some((
                pki::load_certs(&self.path(c))?,
                pki::load_private_key(&self.path(k))?,
            )),
            (None, None) => None,
            _ => {
                return Err(self.invalid("client_cert", "client_cert and client_key go together"));
            }
        };
        let tls = pki::client_config(&roots, identity, &[b"h2", b"http/1.1"])?;
        let mut o =
            crate::agent::AgentOptions::new(&f.relay_url, Arc::new(tls), &self.path(&f.state_dir));
        if let Some(p) = &f.enrollment_secret_file {
            o.enrollment_secret = Some(pki::load_enrollment_secret(&self.path(p))?);
        }
        if let Some(h) = &f.hostname {
            o.hostname = h.clone();
        }
        if let Some(h) = &f.hardware_id {
            o.hardware_id = h.clone();
        }
        for (k, v) in &f.tags {
            if k.is_empty() || k.len() > 64 || v.len() > 255 {
                return Err(self.invalid(
                    "tags",
                    format!("tag {k:?}: keys are 1 to 64 bytes, values at most 255"),
                ));
            }
        }
        o.tags = f.tags.clone();
        Ok(o)
    }

    /// How `mprelay agent run` evaluates.
    pub fn run_options(&self) -> Result<crate::agent::run::RunOptions, ConfigError> {
        let f = &self.value;
        let mut o = crate::agent::run::RunOptions::default();
        if let Some(r) = &f.root {
            o.root = self.path(r);
        }
        if let Some(s) = f.evaluation_interval_s {
            if s == 0 {
                return Err(self.invalid("evaluation_interval_s", "must be at least 1"));
            }
            o.default_interval = Duration::from_secs(s);
        }
        if let Some(r) = f.remediate {
            o.remediate = r;
        }
        Ok(o)
    }
}
