//! PostgreSQL queries for the console (the SQLite twin is `sqlite_console.rs`; the types are in
//! `console.rs`).

use super::PostgresStore;
use crate::store::StoreError;
use crate::store::rows::{device_row, trend_span_row};
use crate::store::types::{DAY_MS, DeviceRow, TrendSpan};

impl PostgresStore {
    pub async fn trend_spans(
        &self,
        first_ms: i64,
        end_ms: i64,
        days: u32,
    ) -> Result<Vec<TrendSpan>, StoreError> {
        // As in SQLite: the instants an interval covers, by index from the oldest.
        let rows = sqlx::query(
            "SELECT baseline_id, state, \
               CASE WHEN started_ms <= $1 THEN 0::bigint \
                    ELSE (started_ms - $1 + $3 - 1) / $3 END AS first, \
               CASE WHEN ended_ms IS NULL THEN $4::bigint \
                    ELSE LEAST($4::bigint, (ended_ms - $1 + $3 - 1) / $3 - 1) END AS last, \
               COUNT(*)::bigint \
             FROM compliance_history \
             WHERE started_ms <= $2 AND (ended_ms IS NULL OR ended_ms > $1) \
             GROUP BY 1, 2, 3, 4",
        )
        .bind(first_ms)
        .bind(end_ms)
        .bind(DAY_MS)
        .bind(i64::from(days) - 1)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(trend_span_row).collect()
    }

    pub async fn search_devices(
        &self,
        pattern: &str,
        limit: u32,
    ) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.device_id, d.hostname, d.os, d.last_seen_ms, \
               (SELECT COUNT(*) FROM current_compliance c WHERE c.device_id = d.device_id \
                AND c.state IN ('non_compliant', 'error'))::bigint \
             FROM devices d \
             WHERE d.hostname ILIKE $1 ESCAPE '\\' OR d.device_id ILIKE $1 ESCAPE '\\' \
             ORDER BY d.hostname, d.device_id LIMIT $2",
        )
        .bind(pattern)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(device_row).collect()
    }
}
