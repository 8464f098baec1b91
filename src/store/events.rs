//! Settings of severity *critical with event* found non-compliant in newly stored reports: the
//! site raises an event for each (a log line and a counter), once per stored report, never for a
//! report pulled again.

use super::ReportRow;
use crate::compliance::{Severity, State};

/// A non-compliant setting of severity `critical_with_event` in a newly stored report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriticalEvent {
    pub message_id: String,
    pub device_id: String,
    pub baseline_id: String,
    pub ci_id: String,
    pub ci_revision: u32,
    pub setting_id: String,
}

/// The events the reports just inserted raise (duplicates are not passed in).
pub(crate) fn critical_events<'a>(
    inserted: impl IntoIterator<Item = &'a ReportRow>,
) -> Vec<CriticalEvent> {
    let mut out = Vec::new();
    for r in inserted {
        for s in &r.settings {
            if s.severity == Severity::CriticalWithEvent && s.state == State::NonCompliant {
                out.push(CriticalEvent {
                    message_id: r.message_id.clone(),
                    device_id: r.device_id.clone(),
                    baseline_id: r.baseline_id.clone(),
                    ci_id: s.ci_id.clone(),
                    ci_revision: s.ci_revision,
                    setting_id: s.setting_id.clone(),
                });
            }
        }
    }
    out
}
