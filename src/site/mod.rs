//! The site server: pulls every configured relay over mutual TLS, writes each batch into the
//! site database in one transaction, and acknowledges the batch to the relay only after that
//! transaction committed. Delivery is at-least-once with writes idempotent on message id, so a
//! kill at any moment neither loses nor doubles a report. It also pushes the policy to every
//! relay ([`policy`]) and serves the admin API ([`admin`]), the web console ([`console`]) and its
//! metrics ([`metrics`]), and re-proves what a device signed against what was stored ([`verify`]).
//!
//! Each relay has its own puller task, so relays are pulled and written at once. A puller
//! fetches and decodes (signature checks included) the next batch while the database writes the
//! current one: the relay is asked for what follows the batch being written before that batch is
//! committed, and the prefetched batch is dropped if the write fails. Acknowledgements go over a
//! connection of their own so a long-poll never holds one up. On PostgreSQL a maintenance task
//! makes the day partitions ahead of time, hourly. The retention task's scheduler runs here too
//! ([`crate::retention`]).

pub mod admin;
pub mod console;
pub mod decode;
pub mod metrics;
pub mod policy;
pub mod verify;

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
use crate::store::{Store, WriteBatch, WriteOutcome};

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
    /// Non-compliant critical-with-event settings in stored reports (each also logged).
    pub critical_events: AtomicU64,
    /// The retention task's counters (rendered by [`crate::retention::RetentionMetrics::render`]).
    pub retention: Arc<crate::retention::RetentionMetrics>,
}

impl Default for SiteMetrics {
    fn default() -> Self {
        Self {
            write_latency: Histogram::new(LATENCY_BUCKETS),
            db_errors: AtomicU64::new(0),
            critical_events: AtomicU64::new(0),
            retention: Arc::default(),
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

/// How often the site makes sure the day partitions ahead exist (PostgreSQL). They are made a
/// week ahead, so an hourly check leaves ample room for a database that is briefly unreachable.
pub const PARTITION_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Starts a puller and a policy pusher per relay, the policy builder, the admin API, and the
/// partition maintenance on PostgreSQL.
pub fn start(opts: SiteOptions) -> Result<SiteHandle, SiteError> {
    let (tx, rx) = watch::channel(false);
    let metrics = Arc::new(SiteMetrics::default());
    metrics.retention.count_others_from(opts.clock.now_ms());
    let mut tasks = JoinSet::new();
    let mut relays = Vec::new();
    let refresh = Arc::new(Notify::new());
    let (snap_tx, snap_rx) = watch::channel(None);
    if opts.store.backend() == "postgres" {
        tasks.spawn(
            maintain_partitions(opts.store.clone(), opts.clock.clone(), rx.clone())
                .instrument(info_span!("partitions")),
        );
    }
    // The retention task's scheduler; at shutdown a run ends between two batches.
    let retention = crate::retention::Retention {
        metrics: metrics.retention.clone(),
        ..crate::retention::Retention::new(opts.store.clone(), opts.clock.clone())
    };
    tasks.spawn(
        retention
            .clone()
            .schedule_loop(rx.clone())
            .instrument(info_span!("retention")),
    );
    for target in &opts.relays {
        let client = HttpClient::new(&target.url, opts.client_tls.clone())?;
        let ack_client = HttpClient::new(&target.url, opts.client_tls.clone())?;
        let status = Arc::new(RelayStatus {
            url: target.url.clone(),
            ..Default::default()
        });
        relays.push(status.clone());
        let puller = Puller {
            client,
            ack_client,
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
            let site = admin::SiteView {
                metrics: metrics.clone(),
                relays: relays.clone(),
            };
            let h = admin::start(a, opts.store.clone(), refresh.clone(), site, retention)?;
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

/// Makes the day partitions around the clock's today now and every [`PARTITION_CHECK_EVERY`].
async fn maintain_partitions(
    store: Store,
    clock: SharedClock,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = store.ensure_partitions(clock.now_ms()).await {
            warn!(error = %e, "making day partitions failed; rows of missing days go to the default partitions until a later try succeeds");
        }
        tokio::select! {
            _ = tokio::time::sleep(PARTITION_CHECK_EVERY) => {}
            _ = shutdown.changed() => break,
        }
    }
}

struct Puller {
    client: HttpClient,
    /// Acknowledgements, on a connection of their own (the other may be in a long-poll).
    ack_client: HttpClient,
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

/// A batch fetched and decoded, ready to write.
struct Fetched {
    /// The `after` it was asked with.
    after: u64,
    raw_spool_id: String,
    relay_id: String,
    records: usize,
    batch: WriteBatch,
    max_seq: u64,
}

impl Puller {
    async fn run(mut self) {
        let mut cursor = Cursor::default();
        let mut backoff = self.opts.backoff_min;
        let mut shutdown = self.shutdown.clone();
        let mut next: Option<Fetched> = None;
        self.client.request_timeout = self.opts.wait + Duration::from_secs(30);
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Not cancelled from outside: a started database write must finish (cancelling one
            // mid-transaction returns its connection to the pool with the protocol half-way).
            // Only the network waits inside a step give way to shutdown (see `fetch`).
            let step = self.step(&mut cursor, &mut next).await;
            if *shutdown.borrow() {
                break;
            }
            match step {
                Ok(()) => backoff = self.opts.backoff_min,
                Err(e) => {
                    next = None;
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

    /// Fetches the records after `after` (everything through it is stored) and decodes them,
    /// off the async workers: signature checks cost ~35 µs each.
    async fn fetch(&self, after: u64) -> Result<Fetched, String> {
        let path = format!(
            "/v1/forward?after={after}&max={}&wait_ms={}",
            self.opts.max_records,
            self.opts.wait.as_millis()
        );
        let mut shutdown = self.shutdown.clone();
        let resp = tokio::select! {
            r = self.client.get(&path) => r.map_err(|e| e.to_string())?,
            _ = shutdown.wait_for(|stop| *stop) => return Err("shutting down".into()),
        };
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
        let (raw_spool_id, relay_id, records) = (
            raw.spool_id.clone(),
            raw.relay_id.clone(),
            raw.records.len(),
        );
        let (verify, url) = (self.opts.verify_signatures, self.status.url.clone());
        let (batch, max_seq) = if records == 0 {
            (WriteBatch::default(), after)
        } else {
            tokio::task::spawn_blocking(move || decode::decode_batch(&raw, &url, after, verify))
                .await
                .map_err(|e| format!("decoding task failed: {e}"))?
        };
        Ok(Fetched {
            after,
            raw_spool_id,
            relay_id,
            records,
            batch,
            max_seq,
        })
    }

    /// One pull: fetch (unless prefetched), store while fetching the next, acknowledge.
    async fn step(&self, cursor: &mut Cursor, next: &mut Option<Fetched>) -> Result<(), String> {
        let fetched = match next.take() {
            Some(f) if f.after == cursor.through && f.raw_spool_id == cursor.spool_id => f,
            _ => self.fetch(cursor.through).await?,
        };

        if fetched.raw_spool_id != cursor.spool_id || !cursor.loaded {
            let stored = self
                .store
                .relay_cursor(&fetched.relay_id)
                .await
                .map_err(|e| e.to_string())?;
            let resume = stored
                .filter(|c| c.spool_id == fetched.raw_spool_id)
                .map(|c| c.through_seq)
                .unwrap_or(0);
            let changed = !cursor.spool_id.is_empty() && cursor.spool_id != fetched.raw_spool_id;
            if changed {
                warn!(old = %cursor.spool_id, new = %fetched.raw_spool_id, "relay spool was recreated; starting over from its beginning");
            }
            *cursor = Cursor {
                spool_id: fetched.raw_spool_id.clone(),
                through: resume,
                acked: 0,
                loaded: true,
            };
            if changed || resume != fetched.after {
                // This batch was asked for from another position; ask again.
                return Ok(());
            }
        }

        self.status
            .pulled_records
            .fetch_add(fetched.records as u64, Ordering::Relaxed);
        let max_seq = fetched.max_seq;
        if max_seq > cursor.through {
            let committed = std::sync::atomic::AtomicBool::new(false);
            let write = async {
                let started = std::time::Instant::now();
                let out = self.store.write_batch(&fetched.batch).await.map_err(|e| {
                    self.metrics.db_errors.fetch_add(1, Ordering::Relaxed);
                    format!("writing the batch failed: {e}")
                })?;
                self.metrics
                    .write_latency
                    .observe_duration(started.elapsed());
                self.record(&out, max_seq);
                committed.store(true, Ordering::Relaxed);
                self.ack(&cursor.spool_id, max_seq).await?;
                Ok::<_, String>(())
            };
            // The next batch is fetched while this one is written; a failed write drops it.
            let prefetch = async { Ok(self.fetch(max_seq).await.ok()) };
            let joined = tokio::try_join!(write, prefetch);
            if committed.load(Ordering::Relaxed) {
                cursor.through = max_seq;
            }
            let ((), prefetched) = joined?;
            cursor.acked = max_seq;
            *next = prefetched;
        } else if cursor.through > cursor.acked {
            self.ack(&cursor.spool_id, cursor.through).await?;
            cursor.acked = cursor.through;
        }
        Ok(())
    }

    /// Counts what a write did.
    fn record(&self, out: &WriteOutcome, max_seq: u64) {
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
        for e in &out.critical_events {
            warn!(
                event = "critical_noncompliance",
                device_id = %e.device_id,
                baseline = %e.baseline_id,
                ci = %e.ci_id,
                ci_revision = e.ci_revision,
                setting = %e.setting_id,
                message_id = %e.message_id,
                "a critical-with-event setting is non-compliant"
            );
        }
        self.metrics
            .critical_events
            .fetch_add(out.critical_events.len() as u64, Ordering::Relaxed);
        debug!(
            through = max_seq,
            reports = out.reports_inserted,
            duplicates = out.reports_duplicate,
            "batch stored"
        );
        self.status.through_seq.store(max_seq, Ordering::Relaxed);
    }

    /// Tells the relay everything through `through` is committed here.
    async fn ack(&self, spool_id: &str, through: u64) -> Result<(), String> {
        let ack = ForwardAck {
            through_seq: through,
            spool_id: spool_id.to_string(),
        };
        let resp = self
            .ack_client
            .post("/v1/forward/ack", Bytes::from(ack.encode_to_vec()))
            .await
            .map_err(|e| format!("acknowledging failed: {e}"))?;
        if !resp.status.is_success() {
            return Err(describe_refusal(resp.status, &resp.body));
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
