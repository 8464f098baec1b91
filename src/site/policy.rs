//! The policy pusher: builds the [`PolicySnapshot`] from the site database whenever its version
//! changes, and pushes it to every relay with `PUT /v1/policy` — at start, on every change, and
//! again after a failure (with backoff and jitter) until the relay has it.
//!
//! Changes are noticed by polling the database's policy version (one indexed row), because they
//! are made by other processes too (`mprelay baseline import`, `mprelay device block`); a change
//! made in this process can ask for a rebuild at once ([`super::SiteHandle::refresh_policy`]).
//! The version is raised in the same transaction as the change it describes and never goes
//! down, so a restarted site pushes the same version again (harmless) and never an older one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use prost::Message;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::{RelayStatus, describe_refusal};
use crate::clock::SharedClock;
use crate::net::HttpClient;
use crate::proto::PolicySnapshot;
use crate::store::Store;

/// How the site builds and pushes policy.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    /// How often the database's policy version is checked for changes made elsewhere.
    pub poll: Duration,
    /// First and longest delay between attempts to push to a relay that failed.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The evaluation interval to publish (stored as a site setting at start); `None` keeps
    /// what the database holds.
    pub evaluation_interval_s: Option<u32>,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(2),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            evaluation_interval_s: None,
        }
    }
}

/// Builds snapshots while the database's version moves, and publishes the newest.
pub(super) async fn build_loop(
    store: Store,
    opts: PolicyOptions,
    clock: SharedClock,
    refresh: Arc<Notify>,
    out: watch::Sender<Option<Arc<PolicySnapshot>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Some(s) = opts.evaluation_interval_s
        && let Err(e) = store
            .set_site_setting(
                &crate::store::Actor::site(),
                crate::policy::SETTING_EVALUATION_INTERVAL,
                &s.to_string(),
            )
            .await
    {
        warn!(error = %e, "cannot store the evaluation interval");
    }
    // The snapshot is rebuilt when the policy version moves, and also when a terms acceptance
    // arrived: the relays answer each user with the version they accepted, so that a user who
    // accepted on one device is let through on every other. An acceptance does not change what
    // agents download, so it keeps the version (agents holding it fetch nothing new).
    let mut built: Option<(u64, i64)> = None;
    loop {
        let seen = match (store.policy_version().await, store.acceptances_mark().await) {
            (Ok(v), Ok(m)) => Some((v, m)),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot read the policy version");
                None
            }
        };
        if let Some((_, mark)) = seen.filter(|s| Some(*s) != built) {
            match build(&store, &clock).await {
                Ok(snap) => {
                    info!(
                        version = snap.version,
                        baselines = snap.baselines.len(),
                        blocked = snap.blocked_device_ids.len(),
                        terms = snap.terms.as_ref().map(|t| t.version).unwrap_or(0),
                        users_accepted = snap.terms_accepted.len(),
                        "policy built"
                    );
                    built = Some((snap.version, mark));
                    let _ = out.send(Some(Arc::new(snap)));
                }
                Err(e) => warn!(error = %e, "cannot build the policy"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.poll) => {}
            _ = refresh.notified() => {}
            _ = shutdown.changed() => break,
        }
    }
}

async fn build(store: &Store, clock: &SharedClock) -> Result<PolicySnapshot, String> {
    crate::policy::snapshot(store, clock.now_ms())
        .await
        .map_err(|e| e.to_string())
}

/// Pushes the newest snapshot to one relay until it has it, and again whenever it changes.
pub(super) async fn push_loop(
    client: HttpClient,
    status: Arc<RelayStatus>,
    opts: PolicyOptions,
    mut snapshots: watch::Receiver<Option<Arc<PolicySnapshot>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The snapshot last pushed: a rebuild with the same version (new terms acceptances) is
    // pushed too.
    let mut pushed: Option<Arc<PolicySnapshot>> = None;
    let mut backoff = opts.backoff_min;
    loop {
        let current = snapshots.borrow_and_update().clone();
        if let Some(snap) = current.filter(|s| !pushed.as_ref().is_some_and(|p| Arc::ptr_eq(p, s)))
        {
            match push(&client, &snap).await {
                Ok(()) => {
                    info!(version = snap.version, "policy pushed");
                    pushed = Some(snap.clone());
                    status.policy_version.store(snap.version, Ordering::Relaxed);
                    if let Ok(mut e) = status.policy_error.lock() {
                        *e = None;
                    }
                    backoff = opts.backoff_min;
                }
                Err(e) => {
                    warn!(error = %e, version = snap.version, retry_in_ms = backoff.as_millis() as u64, "pushing the policy failed");
                    if let Ok(mut le) = status.policy_error.lock() {
                        *le = Some(e);
                    }
                    let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                    backoff = (backoff * 2).min(opts.backoff_max);
                    tokio::select! {
                        _ = tokio::time::sleep(jittered) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        tokio::select! {
            r = snapshots.changed() => if r.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
}

async fn push(client: &HttpClient, snap: &PolicySnapshot) -> Result<(), String> {
    let resp = client
        .request(
            Method::PUT,
            "/v1/policy",
            Some(Bytes::from(snap.encode_to_vec())),
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    match resp.status {
        s if s.is_success() => Ok(()),
        StatusCode::CONFLICT => Err(format!(
            "{} (another site, or a site database restored from an older copy, pushed a newer policy)",
            describe_refusal(resp.status, &resp.body)
        )),
        s => Err(describe_refusal(s, &resp.body)),
    }
}
