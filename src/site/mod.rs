//! The site server: pulls every configured relay over mutual TLS, writes each batch into the
//! site database in one transaction, and acknowledges the batch to the relay only after that
//! transaction committed. Delivery is at-least-once with writes idempotent on message id, so a
//! kill at any moment neither loses nor doubles a report. It also pushes the policy to every
//! relay ([`policy`]) and serves the admin API ([`admin`]).

pub mod admin;
pub mod decode;
pub mod policy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use rustls::ClientConfig;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::clock::SharedClock;
use crate::metrics::{Histogram, LATENCY_BUCKETS};
use crate::net::HttpClient;
use crate::net::server::ServerHandle;
use crate::proto::ForwardAck;
use crate::store::Store;

/// A relay the site pulls.
#[derive(Debug, Clone)]
pub struct RelayTarget {
    /// `https://host:port` of the relay's site-facing listener.
    pub url: String,
}

/// How the site pulls.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Records asked for per request.
    pub max_records: usize,
    /// Long-poll wait when the relay has nothing.
    pub wait: Duration,
    /// Verify each report's device signature again at the site.
    pub verify_signatures: bool,
    /// First and longest delay between attempts after an error.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            max_records: 1000,
            wait: Duration::from_secs(10),
            verify_signatures: true,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Everything a site server needs to run.
pub struct SiteOptions {
    pub store: Store,
    pub relays: Vec<RelayTarget>,
    /// Trusts the site CA and presents the site server's client certificate.
    pub client_tls: Arc<ClientConfig>,
    pub pull: PullOptions,
    pub clock: SharedClock,
    /// Policy building and pushing.
    pub policy: policy::PolicyOptions,
    /// The admin API; `None` to run without it.
    pub admin: Option<admin::AdminOptions>,
}

/// Why a site server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// A relay URL cannot be used.
    #[error(transparent)]
    Client(#[from] crate::net::ClientError),
    /// The admin API cannot be served.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
}

/// What the site knows of one relay, for metrics and the console.
#[derive(Debug, Default)]
pub struct RelayStatus {
    pub url: String,
    pub relay_id: Mutex<String>,
    pub pulled_records: AtomicU64,
    pub stored_reports: AtomicU64,
    pub duplicates: AtomicU64,
    pub quarantined: AtomicU64,
    pub errors: AtomicU64,
    pub through_seq: AtomicU64,
    pub last_seq: AtomicU64,
    pub last_pull_ms: AtomicI64,
    pub last_error: Mutex<Option<String>>,
    /// The policy version the relay last accepted (0: none yet).
    pub policy_version: AtomicU64,
    pub policy_error: Mutex<Option<String>>,
}

impl RelayStatus {
    /// Records the relay has that the site has not stored yet.
    pub fn lag(&self) -> u64 {
        self.last_seq
            .load(Ordering::Relaxed)
            .saturating_sub(self.through_seq.load(Ordering::Relaxed))
    }
}

/// Site-wide counters.
#[derive(Debug)]
pub struct SiteMetrics {
    pub write_latency: Histogram,
    pub db_errors: AtomicU64,
}

impl Default for SiteMetrics {
    fn default() -> Self {
        Self {
            write_latency: Histogram::new(LATENCY_BUCKETS),
            db_errors: AtomicU64::new(0),
        }
    }
}

/// A running site server.
pub struct SiteHandle {
    pub store: Store,
    pub relays: Vec<Arc<RelayStatus>>,
    pub metrics: Arc<SiteMetrics>,
    /// Where the admin API listens, when it runs.
    pub admin_addr: Option<SocketAddr>,
    /// The newest policy snapshot built.
    pub policy: watch::Receiver<Option<Arc<crate::proto::PolicySnapshot>>>,
    refresh: Arc<Notify>,
    admin: Option<ServerHandle>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl SiteHandle {
    /// Stops pulling. A batch being written finishes (or rolls back) first; nothing is acked that
    /// was not committed.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(a) = self.admin.take() {
            a.shutdown().await;
        }
        while self.tasks.join_next().await.is_some() {}
        info!("site server stopped");
    }

    /// Rebuilds the policy now instead of at the next poll (after a change made in this process).
    pub fn refresh_policy(&self) {
        self.refresh.notify_one();
    }

    /// Total reports this process stored.
    pub fn stored_reports(&self) -> u64 {
        self.relays
            .iter()
            .map(|r| r.stored_reports.load(Ordering::Relaxed))
            .sum()
    }
}

/// Starts a puller and a policy pusher per relay, the policy builder, and the admin API.
pub fn start(opts: SiteOptions) -> Result<SiteHandle, SiteError> {
    let (tx, rx) = watch::channel(false);
    let metrics = Arc::new(SiteMetrics::default());
    let mut tasks = JoinSet::new();
    let mut relays = Vec::new();
    let refresh = Arc::new(Notify::new());
    let (snap_tx, snap_rx) = watch::channel(None);
    for target in &opts.relays {
        let client = HttpClient::new(&target.url, opts.client_tls.clone())?;
        let status = Arc::new(RelayStatus {
            url: target.url.clone(),
            ..Default::default()
        });
        relays.push(status.clone());
        let puller = Puller {
            client,
            store: opts.store.clone(),
            opts: opts.pull.clone(),
            status,
            metrics: metrics.clone(),
            shutdown: rx.clone(),
        };
        tasks.spawn(
            puller
                .run()
                .instrument(info_span!("pull", relay = %target.url)),
        );
        let pusher = HttpClient::new(&target.url, opts.client_tls.clone())?;
        tasks.spawn(
            policy::push_loop(
                pusher,
                relays[relays.len() - 1].clone(),
                opts.policy.clone(),
                snap_rx.clone(),
                rx.clone(),
            )
            .instrument(info_span!("policy", relay = %target.url)),
        );
    }
    tasks.spawn(
        policy::build_loop(
            opts.store.clone(),
            opts.policy.clone(),
            opts.clock.clone(),
            refresh.clone(),
            snap_tx,
            rx.clone(),
        )
        .instrument(info_span!("policy")),
    );
    let (admin, admin_addr) = match opts.admin {
        Some(a) => {
            let h = admin::start(a, opts.store.clone(), refresh.clone())?;
            info!(addr = %h.addr, "admin API listening");
            let addr = h.addr;
            (Some(h), Some(addr))
        }
        None => (None, None),
    };
    Ok(SiteHandle {
        store: opts.store,
        relays,
        metrics,
        admin_addr,
        policy: snap_rx,
        refresh,
        admin,
        shutdown: tx,
        tasks,
    })
}

struct Puller {
    client: HttpClient,
    store: Store,
    opts: PullOptions,
    status: Arc<RelayStatus>,
    metrics: Arc<SiteMetrics>,
    shutdown: watch::Receiver<bool>,
}

/// Where the puller is with its relay's spool.
#[derive(Debug, Default, Clone)]
struct Cursor {
    spool_id: String,
    /// Everything through this seq is committed here.
    through: u64,
    /// What the relay was last told.
    acked: u64,
    /// Whether the stored cursor was consulted for this spool yet.
    loaded: bool,
}

impl Puller {
    async fn run(mut self) {
        let mut cursor = Cursor::default();
        let mut backoff = self.opts.backoff_min;
        let mut shutdown = self.shutdown.clone();
        self.client.request_timeout = self.opts.wait + Duration::from_secs(30);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let step = tokio::select! {
                r = self.step(&mut cursor) => r,
                _ = shutdown.changed() => break,
            };
            match step {
                Ok(()) => backoff = self.opts.backoff_min,
                Err(e) => {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut le) = self.status.last_error.lock() {
                        *le = Some(e.clone());
                    }
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "pull failed");
                    let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                    tokio::select! {
                        _ = tokio::time::sleep(jittered) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(self.opts.backoff_max);
                }
            }
        }
    }

    /// One pull: fetch, store, acknowledge.
    async fn step(&self, cursor: &mut Cursor) -> Result<(), String> {
        let path = format!(
            "/v1/forward?after={}&max={}&wait_ms={}",
            cursor.through,
            self.opts.max_records,
            self.opts.wait.as_millis()
        );
        let resp = self.client.get(&path).await.map_err(|e| e.to_string())?;
        if !resp.status.is_success() {
            return Err(describe_refusal(resp.status, &resp.body));
        }
        let raw = decode::split_batch(resp.body)
            .map_err(|e| format!("forward batch does not decode: {e}"))?;
        self.status
            .last_pull_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        self.status.last_seq.store(raw.last_seq, Ordering::Relaxed);
        if let Ok(mut id) = self.status.relay_id.lock() {
            id.clone_from(&raw.relay_id);
        }

        if raw.spool_id != cursor.spool_id || !cursor.loaded {
            let stored = self
                .store
                .relay_cursor(&raw.relay_id)
                .await
                .map_err(|e| e.to_string())?;
            let resume = stored
                .filter(|c| c.spool_id == raw.spool_id)
                .map(|c| c.through_seq)
                .unwrap_or(0);
            let changed = !cursor.spool_id.is_empty() && cursor.spool_id != raw.spool_id;
            if changed {
                warn!(old = %cursor.spool_id, new = %raw.spool_id, "relay spool was recreated; starting over from its beginning");
            }
            *cursor = Cursor {
                spool_id: raw.spool_id.clone(),
                through: resume,
                acked: 0,
                loaded: true,
            };
            if changed {
                // This batch was computed from the old spool's cursor; ask again.
                return Ok(());
            }
        }

        if !raw.records.is_empty() {
            let verify = self.opts.verify_signatures;
            let url = self.status.url.clone();
            let skip = cursor.through;
            self.status
                .pulled_records
                .fetch_add(raw.records.len() as u64, Ordering::Relaxed);
            // Signature checks cost ~35 µs each: keep them off the async workers.
            let (wb, max_seq) =
                tokio::task::spawn_blocking(move || decode::decode_batch(&raw, &url, skip, verify))
                    .await
                    .map_err(|e| format!("decoding task failed: {e}"))?;
            if max_seq > cursor.through {
                let started = std::time::Instant::now();
                let out = self.store.write_batch(&wb).await.map_err(|e| {
                    self.metrics.db_errors.fetch_add(1, Ordering::Relaxed);
                    format!("writing the batch failed: {e}")
                })?;
                self.metrics
                    .write_latency
                    .observe_duration(started.elapsed());
                self.status
                    .stored_reports
                    .fetch_add(out.reports_inserted, Ordering::Relaxed);
                self.status
                    .duplicates
                    .fetch_add(out.reports_duplicate, Ordering::Relaxed);
                self.status
                    .quarantined
                    .fetch_add(out.quarantined, Ordering::Relaxed);
                if out.quarantined > 0 {
                    warn!(
                        count = out.quarantined,
                        "records quarantined; see quarantined_records"
                    );
                }
                debug!(
                    through = max_seq,
                    reports = out.reports_inserted,
                    duplicates = out.reports_duplicate,
                    "batch stored"
                );
                cursor.through = max_seq;
                self.status.through_seq.store(max_seq, Ordering::Relaxed);
            }
        }

        if cursor.through > cursor.acked {
            let ack = ForwardAck {
                through_seq: cursor.through,
                spool_id: cursor.spool_id.clone(),
            };
            let resp = self
                .client
                .post("/v1/forward/ack", Bytes::from(ack.encode_to_vec()))
                .await
                .map_err(|e| format!("acknowledging failed: {e}"))?;
            if !resp.status.is_success() {
                return Err(describe_refusal(resp.status, &resp.body));
            }
            cursor.acked = cursor.through;
        }
        Ok(())
    }
}

/// "409 conflict: …" from an `ErrorResponse` body.
pub(crate) fn describe_refusal(status: http::StatusCode, body: &[u8]) -> String {
    match crate::proto::ErrorResponse::decode(body) {
        Ok(e) if !e.code.is_empty() => format!("{} {}: {}", status.as_u16(), e.code, e.message),
        _ => format!("HTTP {}", status.as_u16()),
    }
}
