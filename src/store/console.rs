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
        let first = end_ms - i64::from(days - 1) * DAY_MS;
        let spans = dispatch!(self, s => s.trend_spans(first, end_ms, days).await)?;
        Ok(trend_from_spans(first, days, &spans))
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

/// History intervals grouped by the instants they cover: `devices` intervals of `state` cover
/// the instants `first..=last` (indexes from the oldest instant). One scan of the history
/// instead of one per instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrendSpan {
    pub baseline_id: String,
    pub state: String,
    pub first: i64,
    pub last: i64,
    pub devices: u64,
}

/// The counts per instant from the spans: a difference array per (baseline, state).
pub fn trend_from_spans(first_ms: i64, days: u32, spans: &[TrendSpan]) -> Vec<TrendPoint> {
    let n = days as usize;
    let mut diffs: std::collections::BTreeMap<(&str, &str), Vec<i64>> = Default::default();
    for s in spans {
        let (a, b) = (s.first.max(0), s.last.min(n as i64 - 1));
        if a > b {
            continue;
        }
        let d = diffs
            .entry((&s.baseline_id, &s.state))
            .or_insert_with(|| vec![0; n + 1]);
        d[a as usize] += s.devices as i64;
        d[b as usize + 1] -= s.devices as i64;
    }
    let mut out = Vec::new();
    for ((baseline, state), d) in diffs {
        let mut running = 0i64;
        for (i, delta) in d.iter().take(n).enumerate() {
            running += delta;
            if running > 0 {
                out.push(TrendPoint {
                    baseline_id: baseline.to_string(),
                    at_ms: first_ms + i as i64 * DAY_MS,
                    state: state.to_string(),
                    devices: running as u64,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.baseline_id, a.at_ms, &a.state).cmp(&(&b.baseline_id, b.at_ms, &b.state))
    });
    out
}

/// Escapes `\`, `%` and `_` for a LIKE pattern with `ESCAPE '\'`.
pub(super) fn like_escape(s: &str) -> String {
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
    use super::*;

    /// Counts by brute force: for each instant, the intervals covering it.
    fn brute(first: i64, days: u32, intervals: &[(i64, Option<i64>)]) -> Vec<u64> {
        (0..i64::from(days))
            .map(|i| {
                let t = first + i * DAY_MS;
                intervals
                    .iter()
                    .filter(|(s, e)| *s <= t && e.is_none_or(|e| e > t))
                    .count() as u64
            })
            .collect()
    }

    /// The spans the SQL makes of intervals (the same arithmetic, in Rust).
    fn spans(first: i64, days: u32, intervals: &[(i64, Option<i64>)]) -> Vec<TrendSpan> {
        let end = first + i64::from(days - 1) * DAY_MS;
        intervals
            .iter()
            .filter(|(s, e)| *s <= end && e.is_none_or(|e| e > first))
            .map(|(s, e)| TrendSpan {
                baseline_id: "b".into(),
                state: "compliant".into(),
                first: if *s <= first {
                    0
                } else {
                    (s - first + DAY_MS - 1) / DAY_MS
                },
                last: match e {
                    None => i64::from(days - 1),
                    Some(e) => (i64::from(days - 1)).min((e - first + DAY_MS - 1) / DAY_MS - 1),
                },
                devices: 1,
            })
            .collect()
    }

    #[test]
    fn spans_count_what_each_instant_sees() {
        let first = 1_000 * DAY_MS + 12_345;
        let days = 5;
        let at = |d: i64, off: i64| first + d * DAY_MS + off;
        let intervals = vec![
            (at(-3, 0), None),            // before the window, still open
            (at(0, 0), Some(at(0, 1))),   // exactly the first instant only
            (at(0, 1), Some(at(2, 0))),   // starts just after an instant, ends on one
            (at(1, -1), Some(at(3, 1))),  // covers 1, 2, 3
            (at(4, 0), None),             // the last instant
            (at(4, 1), None),             // after the window
            (at(-9, 0), Some(at(-1, 0))), // ended before the window
        ];
        let points = trend_from_spans(first, days, &spans(first, days, &intervals));
        let got: Vec<u64> = (0..i64::from(days))
            .map(|i| {
                points
                    .iter()
                    .find(|p| p.at_ms == first + i * DAY_MS)
                    .map(|p| p.devices)
                    .unwrap_or(0)
            })
            .collect();
        assert_eq!(got, brute(first, days, &intervals));
        assert_eq!(got, vec![2, 3, 2, 2, 2]);
    }

    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(super::like_escape("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
