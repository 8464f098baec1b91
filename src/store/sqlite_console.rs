//! SQLite queries for the console (see `console.rs`).

use sqlx::Row;

use super::StoreError;
use super::console::{DAY_MS, DeviceRow, TrendPoint};
use super::sqlite::SqliteStore;

impl SqliteStore {
    pub async fn compliance_trend(
        &self,
        end_ms: i64,
        days: u32,
    ) -> Result<Vec<TrendPoint>, StoreError> {
        let rows = sqlx::query(
            "WITH RECURSIVE instants(i, t) AS ( \
               SELECT 0, ?1 UNION ALL SELECT i + 1, t - ?2 FROM instants WHERE i + 1 < ?3) \
             SELECT h.baseline_id, d.t, h.state, COUNT(*) FROM instants d \
             JOIN compliance_history h \
               ON h.started_ms <= d.t AND (h.ended_ms IS NULL OR h.ended_ms > d.t) \
             GROUP BY h.baseline_id, d.t, h.state ORDER BY h.baseline_id, d.t, h.state",
        )
        .bind(end_ms)
        .bind(DAY_MS)
        .bind(i64::from(days))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TrendPoint {
                    baseline_id: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    state: r.try_get(2)?,
                    devices: r.try_get::<i64, _>(3)? as u64,
                })
            })
            .collect()
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
        rows.iter()
            .map(|r| {
                Ok(DeviceRow {
                    device_id: r.try_get(0)?,
                    hostname: r.try_get(1)?,
                    os: r.try_get(2)?,
                    last_seen_ms: r.try_get(3)?,
                    failing_baselines: r.try_get::<i64, _>(4)? as u64,
                })
            })
            .collect()
    }
}
