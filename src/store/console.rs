//! Queries the site console needs beyond the compliance reports: the compliance trend from the
//! history intervals, and a device search. (SQL in `sqlite_console.rs` and
//! `postgres/console.rs`.)

use super::decide::trend_from_spans;
use super::types::*;
use super::{Store, StoreError};

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
