//! The device agent: enrolls once, keeps its key and credentials in a 0600 state file, queues
//! every submission durably, seals and signs it at each send, and acts on the relay's answer as
//! the error table says (see [`crate::wire::agent_action`]): drop, re-enroll and resend, stop,
//! or retry after `Retry-After` with jitter. Nothing leaves the queue before a 202 or 200.
//! An answer without an error code (from a proxy or firewall in the way, not the relay) that
//! refuses one submission sets only that one aside for the round; after [`MAX_REFUSALS`] of them
//! it is moved to `dropped/` with the reason.

pub mod eval;
pub mod queue;
pub mod report_json;
pub mod run;
pub mod terms;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use rustls::ClientConfig;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::clock;
use crate::envelope::{self, DeviceKey, DeviceSigner};
use crate::fsutil::write_private_atomic;
use crate::ids::{DeviceId, KeyEpoch, MessageId};
use crate::net::{ClientError, ClientResponse, HttpClient};
use crate::proto::{
    ComplianceReport, EnrollRequest, EnrollResponse, ErrorResponse, PolicyRequest, PolicyResponse,
    Submission, SubmissionReceipt, TermsAcceptance, submission::Body,
};
use crate::wire::{AgentAction, agent_action};
use queue::{Queue, Queued};

/// Why an agent operation failed.
/// A relay's answer to a policy request.
#[derive(Debug, Clone, Default)]
pub struct PolicyAnswer {
    /// `None` when the agent's version is current.
    pub policy: Option<crate::proto::PolicySnapshot>,
    /// The highest terms version the user accepted at the site, on any device (0: none).
    pub user_terms_version: u32,
}

#[derive(Debug, Error)]
pub enum AgentError {
    /// The agent is not enrolled and has no enrollment secret to enroll with.
    #[error("the agent is not enrolled and no enrollment secret is configured")]
    NoSecret,
    /// The relay refused the enrollment (wrong secret, or enrollment closed).
    #[error("enrollment refused by the relay: {0}")]
    EnrollmentRefused(String),
    /// The site blocked this device; the agent stops submitting.
    #[error("this device ({0}) is blocked by the site")]
    Blocked(String),
    /// The state file exists but cannot be used.
    #[error("agent state file {path}: {why}")]
    State { path: PathBuf, why: String },
    /// A file of the agent could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The relay could not be reached.
    #[error("relay unreachable: {0}")]
    Transport(#[from] ClientError),
    /// The relay answered something this agent does not understand.
    #[error("unexpected answer from the relay: {0}")]
    Protocol(String),
    /// The relay asked to retry later.
    #[error("relay busy ({code}); retry in {retry_after:?}")]
    RetryLater { code: String, retry_after: Duration },
    /// A portal function was asked for by a user who has not accepted the terms in force.
    #[error(
        "user {user:?} has not accepted version {version} of the terms and conditions ({title:?}){}",
        match accepted {
            Some(v) => format!("; version {v} was accepted on this device before"),
            None => String::new(),
        }
    )]
    TermsNotAccepted {
        user: String,
        version: u32,
        title: String,
        accepted: Option<u32>,
    },
    /// Terms were to be accepted, but the policy holds none (`kept`: no relay answered, and
    /// the policy kept on this device holds none).
    #[error(
        "{}",
        if *kept {
            "no relay answered, and the policy kept on this device holds no terms and conditions to accept"
        } else {
            "the site publishes no terms and conditions to accept"
        }
    )]
    NoTerms { kept: bool },
    /// The version a user asked to accept is not the one in force.
    #[error(
        "version {asked} of the terms and conditions is not the one in force (version {current}); read the current terms before accepting them"
    )]
    TermsVersion { asked: u32, current: u32 },
}

/// What the agent persists: its identity and the credentials the relay gave it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    /// Ed25519 key pair, PKCS#8, hex.
    signing_key: String,
    device_id: String,
    key_epoch: u32,
    /// AES-256 device key, hex.
    device_key: String,
    relay_id: String,
    enrolled_ms: i64,
    #[serde(default)]
    policy_version: u64,
}

/// How to reach the relay and where to keep state.
#[derive(Clone)]
pub struct AgentOptions {
    pub relay_url: String,
    pub tls: Arc<ClientConfig>,
    pub state_dir: PathBuf,
    pub enrollment_secret: Option<String>,
    pub hostname: String,
    pub os: String,
    pub hardware_id: String,
    /// Most submissions kept in the queue; the oldest are dropped past it.
    pub max_queue: usize,
    /// Tags reported with each policy request, for the collections' rules.
    pub tags: std::collections::BTreeMap<String, String>,
}

impl AgentOptions {
    pub fn new(relay_url: &str, tls: Arc<ClientConfig>, state_dir: &Path) -> Self {
        Self {
            relay_url: relay_url.into(),
            tls,
            state_dir: state_dir.into(),
            enrollment_secret: None,
            hostname: hostname(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            hardware_id: String::new(),
            max_queue: 20_000,
            tags: Default::default(),
        }
    }
}

/// The machine's hostname, from the kernel.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

struct Credentials {
    epoch: KeyEpoch,
    device_key: DeviceKey,
    relay_id: String,
}

/// An enrolled agent.
pub struct Agent {
    opts: AgentOptions,
    client: HttpClient,
    signer: DeviceSigner,
    pkcs8: Vec<u8>,
    creds: Mutex<Credentials>,
    queue: Queue,
    /// The relay's body limit from its last policy answer; 0 until it said.
    relay_body_limit: AtomicU64,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Answered 202.
    pub accepted: usize,
    /// Answered 200: the relay already had it.
    pub duplicates: usize,
    /// Refused for good and moved to `dropped/`.
    pub dropped: usize,
    /// Refused without an error code (by something between agent and relay) and kept for the
    /// next round; counted in `remaining` too, and no reason for a `retry_after`.
    pub refused: usize,
    /// Still queued.
    pub remaining: usize,
    /// Set when the relay asked to come back later (or could not be reached).
    pub retry_after: Option<Duration>,
}

/// What sealing adds to an encoded report, at most: the submission's ids and time, the
/// signature, the envelope's ids, public key, nonce and tag, and their field headers (266
/// bytes for a report of 1,000,000 bytes; checked by a test).
const SEALING_OVERHEAD: usize = 512;

/// Answers without an error code that refuse one submission (a proxy's or firewall's 400 or 403)
/// before it is moved to `dropped/`: a refusal that may be passing is retried, one that is not
/// does not hold up the queue forever.
pub const MAX_REFUSALS: u32 = 5;

const STATE_FILE: &str = "agent-state.json";
const STATE_FORMAT: u32 = 1;

impl Agent {
    /// Loads the agent's state, or enrolls (with the configured secret) when there is none.
    pub async fn open(opts: AgentOptions) -> Result<Self, AgentError> {
        let client = HttpClient::new(&opts.relay_url, opts.tls.clone())?;
        // The directory holds the device's keys and its unsent reports: owner only. An existing
        // directory keeps the mode its owner gave it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.state_dir)
            .map_err(|source| AgentError::Io {
                path: opts.state_dir.clone(),
                source,
            })?;
        let queue =
            Queue::open(&opts.state_dir.join("queue"), opts.max_queue).map_err(|source| {
                AgentError::Io {
                    path: opts.state_dir.join("queue"),
                    source,
                }
            })?;
        let state_path = opts.state_dir.join(STATE_FILE);
        match std::fs::read(&state_path) {
            Ok(bytes) => {
                let bad = |why: String| AgentError::State {
                    path: state_path.clone(),
                    why,
                };
                let st: StateFile =
                    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                if st.format != STATE_FORMAT {
                    return Err(bad(format!("unsupported format {}", st.format)));
                }
                let pkcs8 = hex::decode(&st.signing_key)
                    .map_err(|_| bad("signing_key is not hex".into()))?;
                let signer = DeviceSigner::from_pkcs8(&pkcs8)
                    .map_err(|_| bad("signing_key is not an Ed25519 key".into()))?;
                if signer.device_id().hex() != st.device_id {
                    return Err(bad("device_id does not match the signing key".into()));
                }
                let dk =
                    hex::decode(&st.device_key).map_err(|_| bad("device_key is not hex".into()))?;
                let creds = Credentials {
                    epoch: KeyEpoch::try_from(st.key_epoch).map_err(|e| bad(e.to_string()))?,
                    device_key: DeviceKey::try_from(dk.as_slice())
                        .map_err(|_| bad("device_key is not 32 bytes".into()))?,
                    relay_id: st.relay_id,
                };
                Ok(Self {
                    opts,
                    client,
                    signer,
                    pkcs8,
                    creds: Mutex::new(creds),
                    queue,
                    relay_body_limit: AtomicU64::new(0),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (signer, pkcs8) = DeviceSigner::generate();
                let creds = enroll_with(&client, &opts, &signer).await?;
                let agent = Self {
                    opts,
                    client,
                    signer,
                    pkcs8,
                    creds: Mutex::new(creds),
                    queue,
                    relay_body_limit: AtomicU64::new(0),
                };
                agent.save().await?;
                Ok(agent)
            }
            Err(source) => Err(AgentError::Io {
                path: state_path,
                source,
            }),
        }
    }

    pub fn device_id(&self) -> DeviceId {
        self.signer.device_id()
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub async fn key_epoch(&self) -> KeyEpoch {
        self.creds.lock().await.epoch
    }

    async fn save(&self) -> Result<(), AgentError> {
        let c = self.creds.lock().await;
        let st = StateFile {
            format: STATE_FORMAT,
            signing_key: hex::encode(&self.pkcs8),
            device_id: self.signer.device_id().hex(),
            key_epoch: c.epoch.get(),
            device_key: hex::encode(c.device_key.expose()),
            relay_id: c.relay_id.clone(),
            enrolled_ms: clock::now_ms(),
            policy_version: 0,
        };
        let path = self.opts.state_dir.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(&st).expect("state serializes");
        write_private_atomic(&path, &json).map_err(|source| AgentError::Io { path, source })
    }

    /// Enrolls again with the same key pair (same device id), e.g. after `unknown_key_epoch`.
    pub async fn reenroll(&self) -> Result<(), AgentError> {
        let creds = enroll_with(&self.client, &self.opts, &self.signer).await?;
        info!(device_id = %self.device_id(), epoch = %creds.epoch, "re-enrolled");
        *self.creds.lock().await = creds;
        self.save().await
    }

    /// Queues a compliance report; it is durable when this returns. A report larger than the
    /// relay accepts has its texts shortened first (see [`eval::fit_report`]).
    pub fn queue_report(&self, mut report: ComplianceReport) -> Result<MessageId, AgentError> {
        let size = report.encoded_len();
        let limit = self.report_budget();
        match eval::fit_report(&mut report, limit) {
            (None, _) => {}
            (Some(cut), true) => warn!(
                baseline = %report.baseline_id, bytes = size, limit,
                "report too large for the relay: its texts were shortened to {cut} bytes"
            ),
            (Some(_), false) => warn!(
                baseline = %report.baseline_id, bytes = report.encoded_len(), limit,
                "report too large for the relay even with its texts shortened; sending it anyway"
            ),
        }
        self.queue_body(Body::ComplianceReport(report))
    }

    /// The largest encoded report to queue: [`eval::MAX_REPORT_BYTES`], or less when the relay
    /// said in its last policy answer that it takes smaller bodies.
    pub fn report_budget(&self) -> usize {
        match self.relay_body_limit.load(Ordering::Relaxed) {
            0 => eval::MAX_REPORT_BYTES,
            limit => usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(SEALING_OVERHEAD)
                .min(eval::MAX_REPORT_BYTES),
        }
    }

    /// Queues a terms acceptance.
    pub fn queue_acceptance(&self, acceptance: TermsAcceptance) -> Result<MessageId, AgentError> {
        self.queue_body(Body::TermsAcceptance(acceptance))
    }

    fn queue_body(&self, body: Body) -> Result<MessageId, AgentError> {
        let id = MessageId::new();
        let now = clock::now_ms();
        let sub = Submission {
            message_id: id.to_string(),
            device_id: self.device_id().hex(),
            created_unix_ms: now,
            body: Some(body),
        };
        self.queue
            .push(now, id, &sub.encode_to_vec())
            .map_err(|source| AgentError::Io {
                path: self.queue.dir().into(),
                source,
            })?;
        Ok(id)
    }

    /// Seals the current credentials around `submission`.
    async fn seal(&self, submission: &[u8]) -> Vec<u8> {
        let c = self.creds.lock().await;
        envelope::seal(&self.signer, c.epoch, &c.device_key, submission).encode_to_vec()
    }

    /// Sends everything queued, oldest first, until the queue is empty or the relay asks to wait.
    pub async fn flush(&self) -> Result<FlushOutcome, AgentError> {
        let mut out = FlushOutcome::default();
        let items = self.queue.list().map_err(|source| AgentError::Io {
            path: self.queue.dir().into(),
            source,
        })?;
        let total = items.len();
        for (i, item) in items.iter().enumerate() {
            match self.send_one(item).await {
                Ok(Sent::Accepted) => out.accepted += 1,
                Ok(Sent::Duplicate) => out.duplicates += 1,
                Ok(Sent::Dropped) => out.dropped += 1,
                // Not a reason to come back soon: it waits for the next round (the next run of
                // `agent submit`, the next evaluation of `agent run`), so its few tries are
                // spread out rather than spent in a minute.
                Ok(Sent::Refused) => out.refused += 1,
                Err(AgentError::RetryLater { retry_after, .. }) => {
                    out.retry_after = Some(retry_after);
                    out.remaining = total - i + out.refused;
                    return Ok(out);
                }
                Err(AgentError::Transport(e)) => {
                    warn!(error = %e, "relay unreachable; keeping the queue");
                    out.retry_after = Some(Duration::from_secs(5));
                    out.remaining = total - i + out.refused;
                    return Ok(out);
                }
                Err(e) => return Err(e),
            }
        }
        out.remaining = out.refused;
        Ok(out)
    }

    /// Flushes until the queue is empty, sleeping as the relay asks (with jitter) in between;
    /// gives up after `deadline`.
    pub async fn flush_until_empty(&self, deadline: Duration) -> Result<FlushOutcome, AgentError> {
        let until = tokio::time::Instant::now() + deadline;
        let mut total = FlushOutcome::default();
        loop {
            let o = self.flush().await?;
            total.accepted += o.accepted;
            total.duplicates += o.duplicates;
            total.dropped += o.dropped;
            total.refused = o.refused;
            total.remaining = o.remaining;
            total.retry_after = o.retry_after;
            let Some(wait) = o.retry_after else {
                return Ok(total);
            };
            let wait = jitter(wait);
            if tokio::time::Instant::now() + wait > until {
                return Ok(total);
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_one(&self, item: &Queued) -> Result<Sent, AgentError> {
        let mut reenrolled = false;
        let mut submission = std::borrow::Cow::Borrowed(&item.submission);
        loop {
            let sealed = self.seal(&submission).await;
            let sent_bytes = sealed.len();
            let resp = self
                .client
                .post("/v1/submissions", Bytes::from(sealed))
                .await?;
            if resp.status.as_u16() == 202 || resp.status.as_u16() == 200 {
                let receipt = SubmissionReceipt::decode(resp.body.as_ref())
                    .map_err(|_| AgentError::Protocol("receipt does not decode".into()))?;
                if receipt.message_id != item.message_id.to_string() {
                    return Err(AgentError::Protocol(format!(
                        "receipt is for {}, not {}",
                        receipt.message_id, item.message_id
                    )));
                }
                self.queue.remove(item).map_err(|source| AgentError::Io {
                    path: item.path.clone(),
                    source,
                })?;
                self.note_delivered(&submission);
                return Ok(if resp.status.as_u16() == 202 {
                    Sent::Accepted
                } else {
                    Sent::Duplicate
                });
            }
            let err = ErrorResponse::decode(resp.body.as_ref()).unwrap_or_default();
            let code = if err.code.is_empty() {
                format!("http_{}", resp.status.as_u16())
            } else {
                err.code.clone()
            };
            if err.code.is_empty() && refused_in_the_way(resp.status.as_u16()) {
                return self.refused(item, &resp);
            }
            let action = agent_action(&code);
            let shorter = match action {
                // A relay whose body limit is below the agent's budget: half the size sent.
                AgentAction::Shorten => shrink_report(&submission, sent_bytes / 2),
                _ => None,
            };
            if let Some(smaller) = shorter {
                warn!(message_id = %item.message_id, bytes = sent_bytes, message = %err.message,
                    "relay refused the report as too large; sending it again, texts shortened");
                // Kept shorter in the queue, so a retry after a crash does not start over.
                write_private_atomic(&item.path, &smaller).map_err(|source| AgentError::Io {
                    path: item.path.clone(),
                    source,
                })?;
                submission = std::borrow::Cow::Owned(smaller);
                continue;
            }
            match action {
                // Shorten that found nothing to shorten is a drop.
                AgentAction::Drop | AgentAction::Shorten => {
                    warn!(message_id = %item.message_id, %code, message = %err.message, "relay refused the submission for good; dropping it");
                    self.queue
                        .drop_entry(&item.path, &format!("{code}: {}", err.message))
                        .map_err(|source| AgentError::Io {
                            path: item.path.clone(),
                            source,
                        })?;
                    return Ok(Sent::Dropped);
                }
                AgentAction::Reenroll if !reenrolled => {
                    warn!(%code, "relay does not accept our key; enrolling again");
                    self.reenroll().await?;
                    reenrolled = true;
                }
                AgentAction::Reenroll => {
                    return Err(AgentError::Protocol(format!(
                        "{code} even after enrolling again: {}",
                        err.message
                    )));
                }
                AgentAction::Stop => return Err(AgentError::Blocked(self.device_id().hex())),
                AgentAction::RetryLater => {
                    return Err(AgentError::RetryLater {
                        code,
                        retry_after: resp.retry_after().unwrap_or(Duration::from_secs(5)),
                    });
                }
            }
        }
    }

    /// One more refusal without an error code for `item`: kept for the next round, or dropped once
    /// it had [`MAX_REFUSALS`].
    fn refused(&self, item: &Queued, resp: &ClientResponse) -> Result<Sent, AgentError> {
        let io = |source| AgentError::Io {
            path: item.path.clone(),
            source,
        };
        let n = self.queue.note_refusal(item).map_err(io)?;
        let status = resp.status.as_u16();
        let said = answer_text(&resp.body);
        if n >= MAX_REFUSALS {
            let reason = format!(
                "refused {n} times without an error code (not by the relay: a proxy or firewall \
                 in the way?), last with HTTP {status}: {said}"
            );
            warn!(message_id = %item.message_id, status, refusals = n, answer = %said,
                "submission refused without an error code too often; dropping it");
            self.queue.drop_entry(&item.path, &reason).map_err(io)?;
            return Ok(Sent::Dropped);
        }
        warn!(message_id = %item.message_id, status, refusals = n, answer = %said,
            "submission refused without an error code; sending the others, retrying it next round");
        Ok(Sent::Refused)
    }

    /// Asks the relay for the current policy (a sealed request). `None` when unchanged.
    pub async fn fetch_policy(
        &self,
        known_version: u64,
        user: &str,
    ) -> Result<Option<crate::proto::PolicySnapshot>, AgentError> {
        Ok(self.fetch_policy_for(known_version, user).await?.policy)
    }

    /// [`Agent::fetch_policy`], with what the site knows of `user`'s terms acceptance.
    pub async fn fetch_policy_for(
        &self,
        known_version: u64,
        user: &str,
    ) -> Result<PolicyAnswer, AgentError> {
        let sub = Submission {
            message_id: MessageId::new().to_string(),
            device_id: self.device_id().hex(),
            created_unix_ms: clock::now_ms(),
            body: Some(Body::PolicyRequest(PolicyRequest {
                known_version,
                user: user.into(),
                hostname: self.opts.hostname.clone(),
                os: self.opts.os.clone(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                tags: self.opts.tags.clone().into_iter().collect(),
            })),
        }
        .encode_to_vec();
        let mut reenrolled = false;
        loop {
            let sealed = self.seal(&sub).await;
            let resp = self.client.post("/v1/policy", Bytes::from(sealed)).await?;
            if resp.status.is_success() {
                let pr = PolicyResponse::decode(resp.body.as_ref())
                    .map_err(|_| AgentError::Protocol("policy response does not decode".into()))?;
                if pr.max_body_bytes > 0 {
                    self.relay_body_limit
                        .store(pr.max_body_bytes, Ordering::Relaxed);
                }
                return Ok(PolicyAnswer {
                    policy: if pr.unchanged { None } else { pr.policy },
                    user_terms_version: pr.user_terms_version,
                });
            }
            let err = ErrorResponse::decode(resp.body.as_ref()).unwrap_or_default();
            match agent_action(&err.code) {
                AgentAction::Reenroll if !reenrolled => {
                    self.reenroll().await?;
                    reenrolled = true;
                }
                AgentAction::Stop => return Err(AgentError::Blocked(self.device_id().hex())),
                AgentAction::RetryLater => {
                    return Err(AgentError::RetryLater {
                        code: err.code,
                        retry_after: resp.retry_after().unwrap_or(Duration::from_secs(5)),
                    });
                }
                _ => {
                    return Err(AgentError::Protocol(format!(
                        "{} {}: {}",
                        resp.status.as_u16(),
                        err.code,
                        err.message
                    )));
                }
            }
        }
    }
}

enum Sent {
    Accepted,
    Duplicate,
    Dropped,
    /// Refused without an error code; kept for the next round.
    Refused,
}

/// Whether an answer without an error code refuses this one request, rather than saying the
/// relay is out of reach or busy (5xx, 408, 429: every request would fare the same) or that the
/// report is too large (413: shortened instead).
fn refused_in_the_way(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 413 | 429)
}

/// The start of an answer's body, as one line of text for a log or a reason file.
fn answer_text(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(&body[..body.len().min(200)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match text.trim() {
        "" => "(empty answer)".into(),
        t => t.into(),
    }
}

async fn enroll_with(
    client: &HttpClient,
    opts: &AgentOptions,
    signer: &DeviceSigner,
) -> Result<Credentials, AgentError> {
    let secret = opts.enrollment_secret.clone().ok_or(AgentError::NoSecret)?;
    let req = EnrollRequest {
        enrollment_secret: secret,
        hostname: opts.hostname.clone(),
        os: opts.os.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        hardware_id: opts.hardware_id.clone(),
        device_public_key: signer.public_key().as_bytes().to_vec(),
    };
    let mut attempts = 0;
    loop {
        let resp = client
            .post("/v1/enroll", Bytes::from(req.encode_to_vec()))
            .await?;
        if resp.status.is_success() {
            let er = EnrollResponse::decode(resp.body.as_ref())
                .map_err(|_| AgentError::Protocol("enrollment response does not decode".into()))?;
            if er.device_id != signer.device_id().hex() {
                return Err(AgentError::Protocol(
                    "relay returned another device id".into(),
                ));
            }
            return Ok(Credentials {
                epoch: KeyEpoch::try_from(er.key_epoch)
                    .map_err(|_| AgentError::Protocol("key epoch 0".into()))?,
                device_key: DeviceKey::try_from(er.device_key.as_slice())
                    .map_err(|_| AgentError::Protocol("device key is not 32 bytes".into()))?,
                relay_id: er.relay_id,
            });
        }
        let err = ErrorResponse::decode(resp.body.as_ref()).unwrap_or_default();
        match agent_action(&err.code) {
            AgentAction::RetryLater if attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(jitter(resp.retry_after().unwrap_or(Duration::from_secs(1))))
                    .await;
            }
            AgentAction::Stop if err.code == "device_blocked" => {
                return Err(AgentError::Blocked(signer.device_id().hex()));
            }
            _ => {
                return Err(AgentError::EnrollmentRefused(format!(
                    "{} {}: {}",
                    resp.status.as_u16(),
                    err.code,
                    err.message
                )));
            }
        }
    }
}

/// `submission` re-encoded with its compliance report's texts shortened to fit `budget`
/// bytes; `None` when it is not a report or cannot get any smaller.
fn shrink_report(submission: &[u8], budget: usize) -> Option<Vec<u8>> {
    let mut sub = Submission::decode(submission).ok()?;
    let Some(Body::ComplianceReport(report)) = sub.body.as_mut() else {
        return None;
    };
    let before = report.encoded_len();
    eval::fit_report(report, budget.saturating_sub(submission.len() - before));
    let smaller = sub.encode_to_vec();
    (smaller.len() < submission.len()).then_some(smaller)
}

/// `d` stretched by a random 0–50 %, so agents told the same `Retry-After` do not return together.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(1.0 + rand::random::<f64>() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_the_one_request_sets_it_aside() {
        for status in [400, 401, 403, 404, 405, 409, 451] {
            assert!(refused_in_the_way(status), "{status}");
        }
        // Busy, out of reach, or too large: handled as such, not counted against the report.
        for status in [408, 413, 429, 500, 502, 503, 504, 302] {
            assert!(!refused_in_the_way(status), "{status}");
        }
    }

    #[test]
    fn an_answer_is_kept_as_one_short_line() {
        let page = format!(
            "<html>\r\n<h1>403 Forbidden</h1>\n{}</html>",
            "x".repeat(500)
        );
        let line = answer_text(page.as_bytes());
        assert!(
            line.starts_with("<html>  <h1>403 Forbidden</h1> x"),
            "{line}"
        );
        assert!(!line.contains('\n') && line.chars().count() <= 200);
        assert_eq!(answer_text(b" \n"), "(empty answer)");
    }

    /// A report of the largest budget, sealed with the largest epoch and a far-future time
    /// (the longest field headers), stays within [`SEALING_OVERHEAD`] of its own size: a report
    /// fitted under the relay's limit minus that allowance is never refused as too large.
    #[test]
    fn sealing_adds_less_than_its_allowance() {
        let signer = DeviceSigner::from_seed(&[7; 32]);
        let mut report = crate::sample::report_with_settings(1, 1);
        let setting = &mut report.configuration_items[0].settings[0];
        setting.observed_before = Some("x".repeat(eval::MAX_REPORT_BYTES - 1000));
        assert!(report.encoded_len() <= eval::MAX_REPORT_BYTES);
        let sub = Submission {
            message_id: MessageId::new().to_string(),
            device_id: signer.device_id().hex(),
            created_unix_ms: i64::MAX,
            body: Some(Body::ComplianceReport(report.clone())),
        }
        .encode_to_vec();
        let epoch = KeyEpoch::try_from(u32::MAX).unwrap();
        let sealed = envelope::seal(&signer, epoch, &DeviceKey::from_bytes([1; 32]), &sub);
        let overhead = sealed.encoded_len() - report.encoded_len();
        assert!(
            overhead <= SEALING_OVERHEAD,
            "sealing added {overhead} bytes"
        );
    }
}
