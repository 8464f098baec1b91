//! SQLite queries for the console (see `console.rs`).

use crate::store::SqliteStore;
use crate::store::StoreError;
use crate::store::rows::{device_row, trend_span_row};
use crate::store::types::{DAY_MS, DeviceRow, TrendSpan};

impl SqliteStore {
    pub async fn trend_spans(
        &self,
        first_ms: i64,
        end_ms: i64,
        days: u32,
    ) -> Result<Vec<TrendSpan>, StoreError> {
        // Instant i is first + i days; an interval [started, ended) covers the instants from
        // ceil((started - first) / day) to ceil((ended - first) / day) - 1.
        let rows = sqlx::query(
            "SELECT baseline_id, state, \
               CASE WHEN started_ms <= ?1 THEN 0 ELSE (started_ms - ?1 + ?3 - 1) / ?3 END, \
               CASE WHEN ended_ms IS NULL THEN ?4 \
                    ELSE MIN(?4, (ended_ms - ?1 + ?3 - 1) / ?3 - 1) END AS last, \
               COUNT(*) \
             FROM compliance_history \
             WHERE started_ms <= ?2 AND (ended_ms IS NULL OR ended_ms > ?1) \
             GROUP BY 1, 2, 3, 4",
        )
        .bind(first_ms)
        .bind(end_ms)
        .bind(DAY_MS)
        .bind(i64::from(days) - 1)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(trend_span_row).collect()
    }

    pub async fn search_devices(
        &self,
        pattern: &str,
        limit: u32,
    ) -> Result<Vec<DeviceRow>, StoreError> {
        // LIKE is case-insensitive for ASCII in SQLite.
        let rows = sqlx::query(
            "SELECT d.device_id, d.hostname, d.os, d.last_seen_ms, \
               (SELECT COUNT(*) FROM current_compliance c WHERE c.device_id = d.device_id \
                AND c.state IN ('non_compliant', 'error')) \
             FROM devices d \
             WHERE d.hostname LIKE ?1 ESCAPE '\\' OR d.device_id LIKE ?1 ESCAPE '\\' \
             ORDER BY d.hostname, d.device_id LIMIT ?2",
        )
        .bind(pattern)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(device_row).collect()
    }
}
