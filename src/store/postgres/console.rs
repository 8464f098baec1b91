//! PostgreSQL queries for the console (the SQLite twin is `sqlite_console.rs`; the types are in
//! `console.rs`).

use sqlx::Row;

use super::PostgresStore;
use crate::store::StoreError;
use crate::store::console::{DAY_MS, DeviceRow, TrendPoint};

impl PostgresStore {
    pub async fn compliance_trend(
        &self,
        end_ms: i64,
        days: u32,
    ) -> Result<Vec<TrendPoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT h.baseline_id, d.t, h.state, COUNT(*)::bigint \
             FROM (SELECT $1::bigint - i * $2::bigint AS t \
                   FROM generate_series(0, $3::bigint - 1) AS i) d \
             JOIN compliance_history h \
               ON h.started_ms <= d.t AND (h.ended_ms IS NULL OR h.ended_ms > d.t) \
             GROUP BY h.baseline_id, d.t, h.state ORDER BY h.baseline_id, d.t, h.state",
        )
        .bind(end_ms)
        .bind(DAY_MS)
        .bind(i64::from(days))
        .fetch_all(self.pool())
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
