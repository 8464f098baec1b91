//! The relay (management point): an agent-facing HTTPS listener for enrollment, submissions and
//! policy, and a site-facing mutual-TLS listener from which site servers pull spooled records and
//! to which they push policy.
//!
//! The relay keeps no device table: device keys are derived from the master secret of their
//! epoch (see [`crate::envelope`]), so any number of relays can serve the same devices. Its only
//! state is the spool and the last policy snapshot, both in the spool database.

mod forward;
mod intake;
mod metrics;
mod ratelimit;
mod wirecheck;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::clock::SharedClock;
use crate::envelope::MasterKeys;
use crate::net::Limits;
use crate::net::server::{self, Handler, ListenerStats, Peer, ServerHandle};
use crate::policy::collection::Targeting;
use crate::proto::PolicySnapshot;
use crate::spool::{Spool, SpoolConfig, SpoolError};
use crate::wire::Refusal;

pub(crate) use intake::{accepts_report, validate_acceptance};
pub use metrics::RelayMetrics;
pub use ratelimit::{PeerLimiter, TokenBucket};

/// Everything a relay needs to run, already loaded and checked.
pub struct RelayOptions {
    pub relay_id: String,
    pub keys: MasterKeys,
    pub enrollment_secret: String,
    pub agent_tls: Arc<ServerConfig>,
    pub site_tls: Arc<ServerConfig>,
    pub agent_limits: Limits,
    pub site_limits: Limits,
    pub spool: SpoolConfig,
    pub intake: IntakeOptions,
    pub clock: SharedClock,
    /// With a token, `/metrics` is also served on the agent-facing listener to a scraper that
    /// presents it (`Authorization: Bearer …`), so monitoring needs no site certificate.
    pub metrics_token: Option<crate::site::admin::AdminToken>,
}

/// Checks and limits of the intake path.
#[derive(Debug, Clone)]
pub struct IntakeOptions {
    /// How far in the future a `created_unix_ms` may be (device clocks drift).
    pub max_clock_skew: Duration,
    /// Reports older than this are refused as stale, until the site's policy says otherwise.
    pub default_retention_days: u32,
    /// Enrollments per second across all peers, and the burst allowed.
    pub enroll_rate_per_s: f64,
    pub enroll_burst: f64,
    /// Enrollments per second from one peer address, and the burst allowed.
    pub enroll_peer_rate_per_s: f64,
    pub enroll_peer_burst: f64,
    /// `Retry-After` given with `overloaded`.
    pub overload_retry_after: Duration,
    /// Most records one forward batch carries, and about how many bytes.
    pub max_forward_records: usize,
    pub max_forward_bytes: usize,
    /// Longest long-poll a site may ask for.
    pub max_forward_wait: Duration,
}

impl Default for IntakeOptions {
    fn default() -> Self {
        Self {
            max_clock_skew: Duration::from_secs(300),
            default_retention_days: 90,
            enroll_rate_per_s: 100.0,
            enroll_burst: 500.0,
            enroll_peer_rate_per_s: 20.0,
            enroll_peer_burst: 200.0,
            overload_retry_after: Duration::from_secs(10),
            max_forward_records: 5000,
            max_forward_bytes: 8 * 1024 * 1024,
            max_forward_wait: Duration::from_secs(60),
        }
    }
}

/// The last policy the site pushed, with what the hot path needs from it pre-computed.
#[derive(Debug, Default)]
pub(crate) struct PolicyState {
    /// What agents get: the site's snapshot without its per-user terms list.
    pub snapshot: Option<Arc<PolicySnapshot>>,
    pub blocked: HashSet<String>,
    /// For a targeted snapshot: which deployments reach which device.
    pub targeting: Option<Arc<Targeting>>,
    /// The highest terms version each user accepted at the site.
    pub terms_accepted: HashMap<String, u32>,
}

/// What a reload replaces besides the listeners' certificates.
pub(crate) struct Secrets {
    pub keys: MasterKeys,
    pub enrollment_secret: String,
}

pub(crate) struct RelayState {
    pub relay_id: String,
    /// Swapped whole by a reload; a request works with the one it took.
    secrets: RwLock<Arc<Secrets>>,
    pub spool: Spool,
    pub intake: IntakeOptions,
    pub agent_limits: Limits,
    pub site_limits: Limits,
    pub policy: RwLock<PolicyState>,
    pub enroll_limiter: PeerLimiter,
    pub metrics: RelayMetrics,
    pub clock: SharedClock,
    pub agent_stats: std::sync::OnceLock<Arc<ListenerStats>>,
    pub forward_waiters: AtomicUsize,
    pub metrics_token: Option<crate::site::admin::AdminToken>,
}

impl RelayState {
    pub fn secrets(&self) -> Arc<Secrets> {
        // A poisoned lock still holds a whole value: it is only ever replaced, never edited.
        self.secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_blocked(&self, device_id: &str) -> bool {
        self.policy
            .read()
            .map(|p| p.blocked.contains(device_id))
            .unwrap_or(false)
    }

    pub fn retention_days(&self) -> u32 {
        self.policy
            .read()
            .ok()
            .and_then(|p| p.snapshot.as_ref().map(|s| s.retention_days))
            .filter(|d| *d > 0)
            .unwrap_or(self.intake.default_retention_days)
    }

    pub fn set_policy(&self, mut snapshot: PolicySnapshot) {
        let blocked = snapshot.blocked_device_ids.iter().cloned().collect();
        let targeting = Targeting::of(&snapshot).map(Arc::new);
        let terms_accepted = std::mem::take(&mut snapshot.terms_accepted)
            .into_iter()
            .map(|u| (u.user, u.version))
            .collect();
        if let Ok(mut p) = self.policy.write() {
            *p = PolicyState {
                snapshot: Some(Arc::new(snapshot)),
                blocked,
                targeting,
                terms_accepted,
            };
        }
    }

    /// The highest terms version `user` accepted at the site (0: none known).
    pub fn user_terms_version(&self, user: &str) -> u32 {
        self.policy
            .read()
            .ok()
            .and_then(|p| p.terms_accepted.get(user).copied())
            .unwrap_or(0)
    }

    pub fn policy_snapshot(&self) -> Option<Arc<PolicySnapshot>> {
        self.policy.read().ok().and_then(|p| p.snapshot.clone())
    }

    /// The snapshot and, when it is targeted, what places a device in it.
    pub fn policy_with_targeting(&self) -> (Option<Arc<PolicySnapshot>>, Option<Arc<Targeting>>) {
        self.policy
            .read()
            .map(|p| (p.snapshot.clone(), p.targeting.clone()))
            .unwrap_or_default()
    }
}

/// A running relay.
pub struct RelayHandle {
    pub relay_id: String,
    pub agent_addr: SocketAddr,
    pub site_addr: SocketAddr,
    pub spool: Spool,
    spool_path: std::path::PathBuf,
    state: Arc<RelayState>,
    agent: ServerHandle,
    site: ServerHandle,
}

impl RelayHandle {
    pub fn metrics(&self) -> &RelayMetrics {
        &self.state.metrics
    }

    pub fn agent_stats(&self) -> &ListenerStats {
        &self.agent.stats
    }

    /// The relay's metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        metrics::render(&self.state)
    }

    /// Takes new certificates, CAs, CRLs, master secrets and enrollment secret from `opts`
    /// (freshly loaded from the configuration). New connections get the new TLS settings; open
    /// connections, requests in flight and the spool are untouched. The relay id, the spool,
    /// the limits and the listen addresses change only with a restart.
    pub fn reload(&self, opts: RelayOptions) {
        if opts.relay_id != self.relay_id || opts.spool.path != self.spool_path {
            warn!("relay_id and spool changes in the configuration take effect at the next start");
        }
        *self
            .state
            .secrets
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(Secrets {
            keys: opts.keys,
            enrollment_secret: opts.enrollment_secret,
        });
        self.agent.set_tls(opts.agent_tls);
        self.site.set_tls(opts.site_tls);
        info!("reloaded certificates, CRLs and secrets");
    }

    /// Stops both listeners (in-flight requests finish within the grace period), then closes the
    /// spool after committing what it holds.
    pub async fn shutdown(self) {
        let RelayHandle {
            agent, site, spool, ..
        } = self;
        tokio::join!(agent.shutdown(), site.shutdown());
        spool.close().await;
        info!("relay stopped");
    }
}

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// Opens the spool and starts both listeners on the given sockets.
pub async fn start(
    opts: RelayOptions,
    agent_listener: TcpListener,
    site_listener: TcpListener,
) -> Result<RelayHandle, RelayError> {
    let spool = Spool::open(opts.spool.clone()).await?;
    let state = Arc::new(RelayState {
        relay_id: opts.relay_id.clone(),
        secrets: RwLock::new(Arc::new(Secrets {
            keys: opts.keys,
            enrollment_secret: opts.enrollment_secret,
        })),
        spool: spool.clone(),
        enroll_limiter: PeerLimiter::new(
            opts.intake.enroll_rate_per_s,
            opts.intake.enroll_burst,
            opts.intake.enroll_peer_rate_per_s,
            opts.intake.enroll_peer_burst,
        ),
        intake: opts.intake,
        agent_limits: opts.agent_limits.clone(),
        site_limits: opts.site_limits.clone(),
        policy: RwLock::new(PolicyState::default()),
        metrics: RelayMetrics::default(),
        clock: opts.clock,
        agent_stats: std::sync::OnceLock::new(),
        forward_waiters: AtomicUsize::new(0),
        metrics_token: opts.metrics_token.clone(),
    });
    if let Some(p) = spool.load_policy().await? {
        info!(version = p.version, "restored policy snapshot from spool");
        state.set_policy(p);
    }
    let agent = server::spawn(
        agent_listener,
        opts.agent_tls,
        opts.agent_limits,
        AgentFacing(state.clone()),
        "agent",
    )?;
    let _ = state.agent_stats.set(agent.stats.clone());
    let site = server::spawn(
        site_listener,
        opts.site_tls,
        opts.site_limits,
        SiteFacing(state.clone()),
        "site",
    )?;
    info!(
        relay_id = %opts.relay_id,
        agent = %agent.addr,
        site = %site.addr,
        spool_id = spool.spool_id(),
        "relay listening"
    );
    Ok(RelayHandle {
        relay_id: opts.relay_id,
        agent_addr: agent.addr,
        site_addr: site.addr,
        spool,
        spool_path: opts.spool.path,
        state,
        agent,
        site,
    })
}

#[derive(Clone)]
struct AgentFacing(Arc<RelayState>);

impl Handler for AgentFacing {
    async fn call(&self, req: Request<Incoming>, peer: Arc<Peer>) -> Response<Full<Bytes>> {
        let st = &self.0;
        let path = req.uri().path().to_string();
        let result = match (req.method(), path.as_str()) {
            // Not boxed here: the server boxes every handler's future per request already
            // (net::server), so an idle connection holds none of this state.
            (&Method::POST, "/v1/submissions") => intake::submit(st, req).await,
            (&Method::POST, "/v1/enroll") => intake::enroll(st, req, &peer).await,
            (&Method::POST, "/v1/policy") => intake::policy(st, req).await,
            (&Method::GET, "/healthz") => Ok(text(200, "ok\n")),
            (&Method::GET, "/readyz") => Ok(readyz(st)),
            (&Method::GET, "/metrics") => scrape(st, &req),
            (_, "/v1/submissions" | "/v1/enroll" | "/v1/policy") => Err(Refusal::MethodNotAllowed),
            _ => Err(Refusal::NotFound),
        };
        result.unwrap_or_else(|r| {
            st.metrics.reject(r.code());
            r.into_response()
        })
    }
}

#[derive(Clone)]
struct SiteFacing(Arc<RelayState>);

impl Handler for SiteFacing {
    async fn call(&self, req: Request<Incoming>, _peer: Arc<Peer>) -> Response<Full<Bytes>> {
        let st = &self.0;
        let path = req.uri().path().to_string();
        let result = match (req.method(), path.as_str()) {
            (&Method::GET, "/v1/forward") => forward::forward(st, req).await,
            (&Method::POST, "/v1/forward/ack") => forward::ack(st, req).await,
            (&Method::PUT, "/v1/policy") => forward::put_policy(st, req).await,
            (&Method::GET, "/metrics") => Ok(text(200, &metrics::render(st))),
            (&Method::GET, "/healthz") => Ok(text(200, "ok\n")),
            (&Method::GET, "/readyz") => Ok(readyz(st)),
            (_, "/v1/forward" | "/v1/forward/ack" | "/v1/policy") => Err(Refusal::MethodNotAllowed),
            _ => Err(Refusal::NotFound),
        };
        result.unwrap_or_else(|r| r.into_response())
    }
}

/// `/metrics` on the agent-facing listener: only with a scrape token configured, and only to a
/// request that presents it.
fn scrape(st: &RelayState, req: &Request<Incoming>) -> Result<Response<Full<Bytes>>, Refusal> {
    let Some(token) = &st.metrics_token else {
        return Err(Refusal::NotFound);
    };
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !token.matches(presented) {
        return Err(Refusal::Unauthorized);
    }
    Ok(text(200, &metrics::render(st)))
}

/// Ready to take reports: the spool is open and the listeners serve (both hold once `start`
/// returned, and this is answered by one of them). A full spool refuses single submissions
/// with `overloaded` and a retry time instead of turning the relay unready, so agents back off
/// rather than a load balancer dropping the relay.
fn readyz(st: &RelayState) -> Response<Full<Bytes>> {
    text(200, &format!("ready\nspool {}\n", st.spool.spool_id()))
}

pub(crate) fn text(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
