//! `mprelay agent run`: fetch the policy, evaluate every baseline in it against the evaluation
//! root, remediate what the deployment allows, queue one report per baseline and deliver the
//! queue; then wait for the next evaluation (the policy's interval, with jitter).
//!
//! The last policy fetched is kept in the state directory (`policy.pb`, mode 0600), so a device
//! that cannot reach its relay still evaluates what it was last told, and its reports wait in the
//! queue.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use tracing::{info, warn};

use super::eval::{self, EvalContext};
use super::{Agent, AgentError, FlushOutcome};
use crate::compliance::{Rollup, State, rollup_report};
use crate::fsutil::write_private_atomic;
use crate::ids::MessageId;
use crate::proto::{ComplianceState, PolicySnapshot};

const POLICY_FILE: &str = "policy.pb";

/// How the agent evaluates.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The file system root evaluators look under (`/` on a real device).
    pub root: PathBuf,
    /// The local switch for remediation (the deployment and the setting must allow it too).
    pub remediate: bool,
    /// The evaluation interval when the policy gives none.
    pub default_interval: Duration,
    /// The interactive user policy requests are made for (empty: the device itself).
    pub user: String,
    /// How long one delivery round keeps retrying a busy relay.
    pub flush_deadline: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            remediate: true,
            default_interval: Duration::from_secs(3600),
            user: String::new(),
            flush_deadline: Duration::from_secs(60),
        }
    }
}

/// Where the policy evaluated came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// The relay sent a new snapshot.
    Fetched,
    /// The relay said the kept snapshot is current.
    Unchanged,
    /// The relay could not be asked; the kept snapshot was used.
    Cached,
}

/// What one evaluation round did.
#[derive(Debug, Clone)]
pub struct RoundOutcome {
    pub policy_version: u64,
    pub source: PolicySource,
    /// The report queued for each baseline, with its roll-up.
    pub reports: Vec<(String, MessageId, Rollup)>,
    /// Settings remediated (and compliant afterwards) across all reports.
    pub remediated: u32,
    pub flush: FlushOutcome,
    pub interval: Duration,
}

impl Agent {
    fn policy_path(&self) -> PathBuf {
        self.opts.state_dir.join(POLICY_FILE)
    }

    /// The last policy this agent fetched, if any (an unreadable file counts as none).
    pub fn cached_policy(&self) -> Option<PolicySnapshot> {
        let bytes = std::fs::read(self.policy_path()).ok()?;
        match PolicySnapshot::decode(bytes.as_slice()) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(error = %e, "the kept policy does not decode; asking for a new one");
                None
            }
        }
    }

    fn keep_policy(&self, p: &PolicySnapshot) -> Result<(), AgentError> {
        let path = self.policy_path();
        write_private_atomic(&path, &p.encode_to_vec())
            .map_err(|source| AgentError::Io { path, source })
    }

    /// Fetches the current policy (keeping it), or falls back to the kept one when the relay
    /// cannot be asked. A blocked device gets [`AgentError::Blocked`].
    pub async fn current_policy(
        &self,
        user: &str,
    ) -> Result<(PolicySnapshot, PolicySource), AgentError> {
        let (policy, source, _) = self.current_policy_for(user).await?;
        Ok((policy, source))
    }

    /// [`Agent::current_policy`], with the highest terms version the site knows `user` accepted
    /// (0 when none, or when the relay could not be asked).
    pub async fn current_policy_for(
        &self,
        user: &str,
    ) -> Result<(PolicySnapshot, PolicySource, u32), AgentError> {
        let kept = self.cached_policy();
        let known = kept.as_ref().map(|p| p.version).unwrap_or(0);
        let answer = self.fetch_policy_for(known, user).await;
        let site_version = answer.as_ref().map_or(0, |a| a.user_terms_version);
        let (policy, source) = match answer.map(|a| a.policy) {
            Ok(Some(p)) => {
                self.keep_policy(&p)?;
                info!(
                    version = p.version,
                    baselines = p.baselines.len(),
                    "policy updated"
                );
                (p, PolicySource::Fetched)
            }
            Ok(None) => (kept.unwrap_or_default(), PolicySource::Unchanged),
            Err(e @ AgentError::Blocked(_)) => return Err(e),
            Err(e) => {
                warn!(error = %e, version = known, "cannot fetch the policy; evaluating the kept one");
                (kept.unwrap_or_default(), PolicySource::Cached)
            }
        };
        Ok((policy, source, site_version))
    }

    /// One round: policy, evaluation (with remediation), one queued report per baseline,
    /// delivery.
    pub async fn evaluate_round(&self, opts: &RunOptions) -> Result<RoundOutcome, AgentError> {
        let (policy, source) = self.current_policy(&opts.user).await?;
        let ctx = EvalContext {
            root: opts.root.clone(),
            remediate: opts.remediate,
        };
        let baselines = policy.baselines.clone();
        // Evaluators read files and wait for commands: keep them off the async workers.
        let reports = tokio::task::spawn_blocking(move || {
            baselines
                .iter()
                .map(|b| eval::evaluate_baseline(b, &ctx))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| AgentError::Protocol(format!("evaluation task failed: {e}")))?;
        let mut out = RoundOutcome {
            policy_version: policy.version,
            source,
            reports: Vec::with_capacity(reports.len()),
            remediated: 0,
            flush: FlushOutcome::default(),
            interval: round_interval(&policy, opts.default_interval),
        };
        for r in reports {
            out.remediated += r
                .configuration_items
                .iter()
                .flat_map(|c| &c.settings)
                .filter(|s| s.remediated && s.state == ComplianceState::Compliant as i32)
                .count() as u32;
            let rollup = rollup_report(&r);
            let id = r.baseline_id.clone();
            let state: State = rollup.state();
            let message_id = self.queue_report(r)?;
            info!(baseline = %id, %state, %message_id, "baseline evaluated");
            out.reports.push((id, message_id, rollup));
        }
        out.flush = self.flush_until_empty(opts.flush_deadline).await?;
        Ok(out)
    }

    /// Evaluates now and then on the policy's schedule until `shutdown` resolves (or once).
    pub async fn run(
        &self,
        opts: &RunOptions,
        once: bool,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<Option<RoundOutcome>, AgentError> {
        tokio::pin!(shutdown);
        loop {
            let round = self.evaluate_round(opts).await?;
            if round.flush.remaining > 0 {
                warn!(
                    queued = round.flush.remaining,
                    "reports still queued; they are sent in the next round"
                );
            }
            if once {
                return Ok(Some(round));
            }
            // ±10 % so a fleet started together does not evaluate and report in step.
            let wait = round
                .interval
                .mul_f64(0.9 + rand::random::<f64>() * 0.2)
                .max(Duration::from_secs(1));
            info!(
                next_in_s = wait.as_secs(),
                "waiting for the next evaluation"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut shutdown => return Ok(None),
            }
        }
    }
}

/// How long until the next round: the shortest interval a deployment asks for, else the
/// policy's, else the agent's default.
fn round_interval(policy: &PolicySnapshot, default: Duration) -> Duration {
    let site = match policy.evaluation_interval_s {
        0 => default,
        s => Duration::from_secs(s.into()),
    };
    policy
        .baselines
        .iter()
        .filter_map(|b| b.deployment.as_ref())
        .map(|d| match d.interval_s {
            0 => site,
            s => Duration::from_secs(s.into()),
        })
        .min()
        .unwrap_or(site)
}

/// Checks an evaluation root given on the command line or in agent.toml.
pub fn check_root(root: &Path) -> Result<(), String> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("root {} is not a directory", root.display())),
        Err(e) => Err(format!("root {}: {e}", root.display())),
    }
}
