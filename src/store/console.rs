//! Queries the site console needs beyond the compliance reports: the compliance trend from the
//! history intervals, and a device search. (SQL in `sqlite_console.rs` and
//! `postgres/console.rs`.)

use serde::Serialize;

use super::{Store, StoreError};

/// A day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// How many devices of a baseline were in a state at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrendPoint {
    pub baseline_id: String,
    /// The instant: `end_ms` minus a whole number of days.
    pub at_ms: i64,
    pub state: String,
    pub devices: u64,
}

/// A device in a search result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRow {
    pub device_id: String,
    pub hostname: String,
    pub os: String,
    pub last_seen_ms: i64,
    /// Baselines the device is non-compliant with or in error for.
    pub failing_baselines: u64,
}

impl Store {
    /// Devices per baseline and state at `end_ms` and at each of the `days - 1` days before it,
    /// from the compliance history. Only non-zero counts are returned.
    pub async fn compliance_trend(
        &self,
        end_ms: i64,
        days: u32,
    ) -> Result<Vec<TrendPoint>, StoreError> {
        let days = days.clamp(1, 366);
        dispatch!(self, s => s.compliance_trend(end_ms, days).await)
    }

    /// Devices whose hostname or id contains `search` (case-insensitive; every device when
    /// empty), by hostname, at most `limit`.
    pub async fn search_devices(
        &self,
        search: &str,
        limit: u32,
    ) -> Result<Vec<DeviceRow>, StoreError> {
        let pattern = format!("%{}%", like_escape(search));
        dispatch!(self, s => s.search_devices(&pattern, limit).await)
    }
}

/// Escapes `\`, `%` and `_` for a LIKE pattern with `ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(super::like_escape("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
