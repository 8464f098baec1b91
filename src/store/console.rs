//! Queries the site console needs beyond the compliance reports: the compliance trend from the
//! history intervals, and a device search. The SQL is the same on both backends.

use super::decide::trend_from_spans;
use super::rows::{device_row, trend_span_row};
use super::types::{DAY_MS, DeviceRow, TrendPoint};
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
        // Instant i is first + i days; an interval [started, ended) covers the instants from
        // ceil((started - first) / day) to ceil((ended - first) / day) - 1.
        let spans = read!(self, pool => {
            let rows = sqlx::query(
                "SELECT baseline_id, state, \
                   CASE WHEN started_ms <= $1 THEN CAST(0 AS BIGINT) \
                        ELSE (started_ms - $1 + $3 - 1) / $3 END AS first, \
                   CASE WHEN ended_ms IS NULL OR (ended_ms - $1 + $3 - 1) / $3 - 1 > $4 THEN $4 \
                        ELSE (ended_ms - $1 + $3 - 1) / $3 - 1 END AS last, \
                   COUNT(*) \
                 FROM compliance_history \
                 WHERE started_ms <= $2 AND (ended_ms IS NULL OR ended_ms > $1) \
                 GROUP BY 1, 2, 3, 4",
            )
            .bind(first)
            .bind(end_ms)
            .bind(DAY_MS)
            .bind(i64::from(days) - 1)
            .fetch_all(pool)
            .await?;
            rows.iter().map(trend_span_row).collect::<Result<Vec<_>, _>>()
        })?;
        Ok(trend_from_spans(first, days, &spans))
    }

    /// Devices whose hostname, id or a tag (`key=value`) contains `search` (case-insensitive;
    /// every device when empty), by hostname, at most `limit`.
    pub async fn search_devices(
        &self,
        search: &str,
        limit: u32,
    ) -> Result<Vec<DeviceRow>, StoreError> {
        let pattern = format!("%{}%", like_escape(search));
        // LOWER on both sides: SQLite's LIKE and PostgreSQL's ILIKE, written once.
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT d.device_id, d.hostname, d.os, d.last_seen_ms, \
                   (SELECT COUNT(*) FROM current_compliance c WHERE c.device_id = d.device_id \
                    AND c.state IN ('non_compliant', 'error')) \
                 FROM devices d \
                 WHERE LOWER(d.hostname) LIKE LOWER($1) ESCAPE '\\' \
                    OR LOWER(d.device_id) LIKE LOWER($1) ESCAPE '\\' \
                    OR EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.device_id \
                       AND LOWER(t.tag_key || '=' || t.tag_value) LIKE LOWER($1) ESCAPE '\\') \
                 ORDER BY d.hostname, d.device_id LIMIT $2",
            )
            .bind(&pattern)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter().map(device_row).collect()
        })
    }
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
    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(super::like_escape("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
