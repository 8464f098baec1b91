//! The relay's metrics in the Prometheus text format, served on the site-facing listener at
//! `/metrics`: submissions accepted, duplicates and enrollments, rejections by error code,
//! submission latency, spool depth and sequence numbers, records per group commit, and the agent
//! listener's connections.

use std::sync::atomic::{AtomicU64, Ordering};

use super::RelayState;
use crate::metrics::{self, Histogram, LATENCY_BUCKETS};

/// The error codes a relay counts rejections by.
const REJECT_CODES: &[&str] = &[
    "malformed",
    "unsupported_version",
    "invalid_report",
    "unknown_key_epoch",
    "decrypt_failed",
    "bad_signature",
    "identity_mismatch",
    "device_blocked",
    "enrollment_refused",
    "too_large",
    "stale",
    "from_the_future",
    "rate_limited",
    "overloaded",
    "timeout",
    "not_found",
    "method_not_allowed",
    "conflict",
    "unauthorized",
    "internal",
];

/// The relay's counters, rendered on `/metrics`.
#[derive(Debug)]
pub struct RelayMetrics {
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub enrollments: AtomicU64,
    pub policy_served: AtomicU64,
    pub forwarded_records: AtomicU64,
    rejected: Vec<AtomicU64>,
    pub submit_latency: Histogram,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self {
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            enrollments: AtomicU64::new(0),
            policy_served: AtomicU64::new(0),
            forwarded_records: AtomicU64::new(0),
            rejected: REJECT_CODES.iter().map(|_| AtomicU64::new(0)).collect(),
            submit_latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl RelayMetrics {
    pub fn reject(&self, code: &str) {
        if let Some(i) = REJECT_CODES.iter().position(|c| *c == code) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn rejected(&self, code: &str) -> u64 {
        REJECT_CODES
            .iter()
            .position(|c| *c == code)
            .map(|i| self.rejected[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

/// Renders the relay's metrics.
pub(super) fn render(st: &RelayState) -> String {
    let mut out = String::new();
    let m = &st.metrics;
    metrics::header(
        &mut out,
        "mprelay_relay_accepted_total",
        "counter",
        "Submissions accepted and spooled (202).",
    );
    metrics::sample(
        &mut out,
        "mprelay_relay_accepted_total",
        "",
        m.accepted.load(Ordering::Relaxed),
    );
    metrics::header(
        &mut out,
        "mprelay_relay_duplicates_total",
        "counter",
        "Resends of known message ids answered 200.",
    );
    metrics::sample(
        &mut out,
        "mprelay_relay_duplicates_total",
        "",
        m.duplicates.load(Ordering::Relaxed),
    );
    metrics::header(
        &mut out,
        "mprelay_relay_enrollments_total",
        "counter",
        "Successful enrollments.",
    );
    metrics::sample(
        &mut out,
        "mprelay_relay_enrollments_total",
        "",
        m.enrollments.load(Ordering::Relaxed),
    );
    metrics::header(
        &mut out,
        "mprelay_relay_rejected_total",
        "counter",
        "Requests refused, by error code.",
    );
    for (code, c) in REJECT_CODES.iter().zip(&m.rejected) {
        metrics::sample(
            &mut out,
            "mprelay_relay_rejected_total",
            &format!("code=\"{code}\""),
            c.load(Ordering::Relaxed),
        );
    }
    metrics::header(
        &mut out,
        "mprelay_relay_submission_seconds",
        "histogram",
        "Time from request to receipt for submissions.",
    );
    m.submit_latency
        .render(&mut out, "mprelay_relay_submission_seconds", "");
    let s = st.spool.stats();
    metrics::header(
        &mut out,
        "mprelay_relay_spool_pending_records",
        "gauge",
        "Records waiting for the site.",
    );
    metrics::sample(
        &mut out,
        "mprelay_relay_spool_pending_records",
        "",
        s.pending_records.load(Ordering::Relaxed),
    );
    metrics::header(
        &mut out,
        "mprelay_relay_spool_pending_bytes",
        "gauge",
        "Bytes waiting for the site.",
    );
    metrics::sample(
        &mut out,
        "mprelay_relay_spool_pending_bytes",
        "",
        s.pending_bytes.load(Ordering::Relaxed),
    );
    metrics::header(
        &mut out,
        "mprelay_relay_spool_last_seq",
        "gauge",
        "Highest sequence number assigned.",
    );
    metrics::sample(
        &mut out,
        "mprelay_relay_spool_last_seq",
        "",
        s.last_seq.load(Ordering::Relaxed),
    );
    metrics::header(
        &mut out,
        "mprelay_relay_spool_acked_seq",
        "gauge",
        "Highest sequence number the site acknowledged.",
    );
    metrics::sample(
        &mut out,
        "mprelay_relay_spool_acked_seq",
        "",
        s.acked_through.load(Ordering::Relaxed),
    );
    metrics::header(
        &mut out,
        "mprelay_relay_group_commit_batch_size",
        "histogram",
        "Records per spool commit.",
    );
    let hist = st.spool.batch_histogram();
    let mut cumulative = 0;
    for (b, c) in crate::spool::BATCH_SIZE_BUCKETS.iter().zip(&hist) {
        cumulative += c;
        metrics::sample(
            &mut out,
            "mprelay_relay_group_commit_batch_size_bucket",
            &format!("le=\"{b}\""),
            cumulative,
        );
    }
    cumulative += hist.last().copied().unwrap_or(0);
    metrics::sample(
        &mut out,
        "mprelay_relay_group_commit_batch_size_bucket",
        "le=\"+Inf\"",
        cumulative,
    );
    metrics::sample(
        &mut out,
        "mprelay_relay_group_commit_batch_size_sum",
        "",
        s.batched_records.load(Ordering::Relaxed),
    );
    metrics::sample(
        &mut out,
        "mprelay_relay_group_commit_batch_size_count",
        "",
        s.batches.load(Ordering::Relaxed),
    );
    if let Some(st) = st.agent_stats.get() {
        metrics::header(
            &mut out,
            "mprelay_relay_open_connections",
            "gauge",
            "Agent connections open now.",
        );
        metrics::sample(
            &mut out,
            "mprelay_relay_open_connections",
            "",
            st.open_connections.load(Ordering::Relaxed),
        );
        metrics::header(
            &mut out,
            "mprelay_relay_accepted_connections_total",
            "counter",
            "Agent connections accepted.",
        );
        metrics::sample(
            &mut out,
            "mprelay_relay_accepted_connections_total",
            "",
            st.accepted_connections.load(Ordering::Relaxed),
        );
        metrics::header(
            &mut out,
            "mprelay_relay_failed_handshakes_total",
            "counter",
            "Agent connections whose TLS handshake failed.",
        );
        metrics::sample(
            &mut out,
            "mprelay_relay_failed_handshakes_total",
            "",
            st.failed_handshakes.load(Ordering::Relaxed),
        );
        metrics::header(
            &mut out,
            "mprelay_relay_refused_connections_total",
            "counter",
            "Agent connections closed at the connection cap.",
        );
        metrics::sample(
            &mut out,
            "mprelay_relay_refused_connections_total",
            "",
            st.refused_connections.load(Ordering::Relaxed),
        );
    }
    out
}
