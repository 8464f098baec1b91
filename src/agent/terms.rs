//! Terms and conditions on the device.
//!
//! The current terms come with the policy. A user accepts them with a `TermsAcceptance`
//! submission, which travels like a compliance report (queued durably, sealed, signed, answered
//! 202 or 200 by the relay, forwarded and stored at the site). Once a relay has taken an
//! acceptance, whichever command delivered it, the agent records it in `terms-accepted.json` in
//! its state directory (mode 0600): the highest version each user accepted on this device. The
//! file is rewritten whole and atomically; should two agent processes record at the same moment,
//! one record can be lost, and that user is asked to accept again (the site has both).
//!
//! The portal functions ([`Agent::portal_policy`]: the policy refreshed for a user, and with it
//! the privacy statement URL) are refused with [`AgentError::TermsNotAccepted`] until the user
//! has accepted the version in force — on this device, or on any other: acceptance is per user,
//! and the relay answers each policy request with the highest version the site has from the
//! user. Compliance evaluation and reporting never wait for it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use prost::Message;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::run::PolicySource;
use super::{Agent, AgentError, FlushOutcome};
use crate::clock;
use crate::fsutil::write_private_atomic;
use crate::ids::MessageId;
use crate::proto::{PolicySnapshot, Submission, Terms, TermsAcceptance, submission::Body};

const ACCEPTED_FILE: &str = "terms-accepted.json";
const ACCEPTED_FORMAT: u32 = 1;

/// Longest user name a relay accepts in an acceptance, in bytes.
pub const MAX_USER: usize = 255;

/// A user's acceptance as this device recorded it once a relay took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAcceptance {
    pub version: u32,
    /// When the user accepted (the acceptance's own time).
    pub accepted_ms: i64,
    pub message_id: String,
    /// When the relay's answer came.
    pub confirmed_ms: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AcceptedFile {
    format: u32,
    /// The highest version each user accepted on this device.
    users: BTreeMap<String, LocalAcceptance>,
}

/// The terms in force and where a user stands with them.
#[derive(Debug, Clone)]
pub struct TermsStatus {
    pub user: String,
    pub policy: PolicySnapshot,
    pub source: PolicySource,
    /// The user's acceptance recorded on this device, if any (of any version).
    pub accepted: Option<LocalAcceptance>,
    /// The highest version the site knows the user accepted, on any device (0: none, or the
    /// relay could not be asked).
    pub site_accepted: u32,
}

impl TermsStatus {
    /// The terms in force; `None` when the site publishes none.
    pub fn terms(&self) -> Option<&Terms> {
        self.policy.terms.as_ref()
    }

    /// Whether the user may use the portal functions: no terms are in force, or the user
    /// accepted their version (or a later one).
    pub fn accepted_current(&self) -> bool {
        match self.terms() {
            None => true,
            Some(t) => self.accepted_version().is_some_and(|v| v >= t.version),
        }
    }

    /// The highest version the user accepted, here or (as the site says) on another device.
    /// Acceptance is per user: a user who accepted on one device has accepted on all.
    pub fn accepted_version(&self) -> Option<u32> {
        let here = self.accepted.as_ref().map(|a| a.version).unwrap_or(0);
        Some(here.max(self.site_accepted)).filter(|v| *v > 0)
    }
}

/// What [`Agent::accept_terms`] did.
#[derive(Debug, Clone)]
pub struct AcceptOutcome {
    pub version: u32,
    pub title: String,
    pub message_id: MessageId,
    /// A relay took the acceptance (202 or 200) and it is recorded on this device.
    pub delivered: bool,
    pub flush: FlushOutcome,
}

/// Checks a user name given for an acceptance or a portal function.
pub fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > MAX_USER {
        return Err(format!("user name {user:?} must be 1 to {MAX_USER} bytes"));
    }
    if user.chars().any(char::is_control) {
        return Err(format!("user name {user:?} holds control characters"));
    }
    Ok(())
}

/// The user this process runs for: `$USER`, else the name of the process's uid in
/// `/etc/passwd`. `None` when neither gives one.
pub fn login_user() -> Option<String> {
    if let Ok(u) = std::env::var("USER")
        && !u.is_empty()
    {
        return Some(u);
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_string())
    })
}

impl Agent {
    fn accepted_path(&self) -> PathBuf {
        self.opts.state_dir.join(ACCEPTED_FILE)
    }

    fn read_accepted(&self) -> AcceptedFile {
        let path = self.accepted_path();
        let Ok(bytes) = std::fs::read(&path) else {
            return AcceptedFile::default();
        };
        match serde_json::from_slice::<AcceptedFile>(&bytes) {
            Ok(f) if f.format == ACCEPTED_FORMAT => f,
            // Treated as no acceptance: users accept again, and that rewrites the file.
            Ok(f) => {
                warn!(path = %path.display(), format = f.format, "unknown format of the terms acceptance file; ignoring it");
                AcceptedFile::default()
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "the terms acceptance file does not decode; ignoring it");
                AcceptedFile::default()
            }
        }
    }

    /// The acceptance of `user` recorded on this device, of any version.
    pub fn accepted_terms(&self, user: &str) -> Option<LocalAcceptance> {
        self.read_accepted().users.remove(user)
    }

    /// Called for every submission a relay took: records terms acceptances.
    pub(super) fn note_delivered(&self, submission: &[u8]) {
        // Our own bytes: they decoded when they were queued.
        let Ok(Submission {
            message_id,
            body: Some(Body::TermsAcceptance(t)),
            ..
        }) = Submission::decode(submission)
        else {
            return;
        };
        let mut f = self.read_accepted();
        f.format = ACCEPTED_FORMAT;
        if f.users
            .get(&t.user)
            .is_some_and(|a| a.version >= t.terms_version)
        {
            return;
        }
        f.users.insert(
            t.user.clone(),
            LocalAcceptance {
                version: t.terms_version,
                accepted_ms: t.accepted_unix_ms,
                message_id,
                confirmed_ms: clock::now_ms(),
            },
        );
        let path = self.accepted_path();
        // serde_json writes maps of strings and numbers without failing.
        let json = serde_json::to_vec_pretty(&f).unwrap_or_default();
        match write_private_atomic(&path, &json) {
            Ok(()) => info!(version = t.terms_version, "terms acceptance recorded"),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot record the terms acceptance; the user will be asked again")
            }
        }
    }

    /// Fetches the policy for `user` (the kept one when the relay cannot be asked) and says
    /// where the user stands with its terms.
    pub async fn terms_status(&self, user: &str) -> Result<TermsStatus, AgentError> {
        let (policy, source, site_accepted) = self.current_policy_for(user).await?;
        Ok(TermsStatus {
            user: user.into(),
            policy,
            source,
            accepted: self.accepted_terms(user),
            site_accepted,
        })
    }

    /// Accepts the terms in force for `user`: queues a `TermsAcceptance` and delivers the queue,
    /// retrying a busy relay for up to `deadline`. With `expected_version`, refuses unless that
    /// is the version in force (so a user accepts the text they read). An acceptance the relay
    /// could not take yet stays queued and is recorded when a later delivery gets it through.
    pub async fn accept_terms(
        &self,
        user: &str,
        expected_version: Option<u32>,
        deadline: Duration,
    ) -> Result<AcceptOutcome, AgentError> {
        let status = self.terms_status(user).await?;
        let Some(terms) = status.terms() else {
            return Err(AgentError::NoTerms {
                kept: status.source == PolicySource::Cached,
            });
        };
        if let Some(v) = expected_version.filter(|v| *v != terms.version) {
            return Err(AgentError::TermsVersion {
                asked: v,
                current: terms.version,
            });
        }
        let message_id = self.queue_acceptance(TermsAcceptance {
            user: user.into(),
            terms_version: terms.version,
            accepted_unix_ms: clock::now_ms(),
        })?;
        info!(version = terms.version, %message_id, "terms acceptance queued");
        let flush = self.flush_until_empty(deadline).await?;
        let delivered = self
            .accepted_terms(user)
            .is_some_and(|a| a.version >= terms.version);
        Ok(AcceptOutcome {
            version: terms.version,
            title: terms.title.clone(),
            message_id,
            delivered,
            flush,
        })
    }

    /// The gate of the portal functions: refreshes the policy for `user` and returns it when the
    /// user has accepted the terms in force, [`AgentError::TermsNotAccepted`] otherwise.
    pub async fn portal_policy(&self, user: &str) -> Result<TermsStatus, AgentError> {
        let status = self.terms_status(user).await?;
        if status.accepted_current() {
            return Ok(status);
        }
        let t = status.terms().cloned().unwrap_or_default();
        Err(AgentError::TermsNotAccepted {
            user: user.into(),
            version: t.version,
            title: t.title,
            accepted: status.accepted_version(),
        })
    }
}
