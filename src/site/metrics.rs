//! The site server's metrics in the Prometheus text format, served on the admin listener at
//! `/metrics` (behind the bearer token, like the rest of the admin API): records pulled and
//! forward lag per relay, writer batch latency, retention rows deleted per table, database
//! errors.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{RelayStatus, SiteMetrics};
use crate::metrics::{self, label_value};

/// Renders the site's metrics.
pub fn render(m: &SiteMetrics, relays: &[Arc<RelayStatus>]) -> String {
    let mut out = String::new();
    let per_relay =
        |out: &mut String, name: &str, kind: &str, help: &str, f: &dyn Fn(&RelayStatus) -> u64| {
            metrics::header(out, name, kind, help);
            for r in relays {
                metrics::sample(
                    out,
                    name,
                    &format!("relay=\"{}\"", label_value(&r.url)),
                    f(r),
                );
            }
        };
    per_relay(
        &mut out,
        "mprelay_site_pulled_records_total",
        "counter",
        "Records pulled from the relay.",
        &|r| r.pulled_records.load(Ordering::Relaxed),
    );
    per_relay(
        &mut out,
        "mprelay_site_stored_reports_total",
        "counter",
        "Reports stored in the site database.",
        &|r| r.stored_reports.load(Ordering::Relaxed),
    );
    per_relay(
        &mut out,
        "mprelay_site_duplicate_reports_total",
        "counter",
        "Reports pulled again and found already stored.",
        &|r| r.duplicates.load(Ordering::Relaxed),
    );
    per_relay(
        &mut out,
        "mprelay_site_quarantined_records_total",
        "counter",
        "Records that could not be stored and were quarantined.",
        &|r| r.quarantined.load(Ordering::Relaxed),
    );
    per_relay(
        &mut out,
        "mprelay_site_pull_errors_total",
        "counter",
        "Pulls that failed (network, relay refusal, database).",
        &|r| r.errors.load(Ordering::Relaxed),
    );
    per_relay(
        &mut out,
        "mprelay_site_forward_lag_records",
        "gauge",
        "Records the relay holds that the site has not stored yet.",
        &|r| r.lag(),
    );
    per_relay(
        &mut out,
        "mprelay_site_policy_version",
        "gauge",
        "The policy version the relay last accepted.",
        &|r| r.policy_version.load(Ordering::Relaxed),
    );
    metrics::header(
        &mut out,
        "mprelay_site_last_pull_timestamp_seconds",
        "gauge",
        "When the relay last answered a pull (0: never).",
    );
    for r in relays {
        let ms = r.last_pull_ms.load(Ordering::Relaxed).max(0);
        metrics::sample(
            &mut out,
            "mprelay_site_last_pull_timestamp_seconds",
            &format!("relay=\"{}\"", label_value(&r.url)),
            ms as f64 / 1000.0,
        );
    }
    metrics::header(
        &mut out,
        "mprelay_site_write_batch_seconds",
        "histogram",
        "Time to write one pulled batch into the site database.",
    );
    m.write_latency
        .render(&mut out, "mprelay_site_write_batch_seconds", "");
    metrics::header(
        &mut out,
        "mprelay_site_database_errors_total",
        "counter",
        "Database operations that failed.",
    );
    metrics::sample(
        &mut out,
        "mprelay_site_database_errors_total",
        "",
        m.db_errors.load(Ordering::Relaxed),
    );
    metrics::header(
        &mut out,
        "mprelay_site_critical_events_total",
        "counter",
        "Non-compliant settings of severity critical_with_event in stored reports.",
    );
    metrics::sample(
        &mut out,
        "mprelay_site_critical_events_total",
        "",
        m.critical_events.load(Ordering::Relaxed),
    );
    m.retention.render(&mut out);
    out
}
