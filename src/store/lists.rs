//! Read queries written once for both backends: each SQL text is a `const` with `$N`
//! placeholders, which sqlx's SQLite driver accepts as well as PostgreSQL's, and runs on either
//! pool through `read!`. Values are selected as `BIGINT`/`TEXT` so both drivers decode
//! them into the same Rust types.
//!
//! The device lists are paged by keyset: ordered by hostname then device id, a page ends with
//! the device id to continue after (`next_after`), and the next page starts after that device's
//! (hostname, id). Filters: compliance state, worst severity at least, OS contains, and a search
//! that matches hostname, OS or device id (case-insensitive). Devices carry no tags at this
//! site yet, so there is no tag to search.

use serde::Serialize;

use super::console::like_escape;
use super::types::DeviceRow;
use super::{Store, StoreError};
use crate::compliance::{Severity, State};

/// Most devices one page holds.
pub const MAX_PAGE: u32 = 1000;

/// Devices one page holds unless asked otherwise.
pub const DEFAULT_PAGE: u32 = 100;

/// What a device list is narrowed to, and which page of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Hostname, OS or device id contains this (case-insensitive); empty: any.
    pub search: String,
    /// The OS contains this (case-insensitive); empty: any.
    pub os: String,
    /// Current state: for a baseline's list, the state for that baseline; for the site's
    /// list, devices in that state for at least one baseline.
    pub state: Option<State>,
    /// Worst severity at least this (a baseline's list only).
    pub severity: Option<Severity>,
    /// The device id the previous page ended with.
    pub after: Option<String>,
    /// Devices per page (1 to [`MAX_PAGE`]).
    pub limit: u32,
}

impl DeviceFilter {
    fn like(s: &str) -> String {
        format!("%{}%", like_escape(&s.to_lowercase()))
    }

    fn state(&self) -> &'static str {
        self.state.map(State::as_str).unwrap_or("")
    }

    /// `,name,` of every severity at least the one asked for; empty for any.
    fn severities(&self) -> String {
        match self.severity {
            None => String::new(),
            Some(min) => Severity::ALL
                .iter()
                .filter(|s| **s >= min)
                .fold(",".to_string(), |acc, s| format!("{acc}{s},")),
        }
    }

    fn limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, MAX_PAGE))
    }
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Page<T> {
    pub devices: Vec<T>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<String>,
}

impl<T> Page<T> {
    /// `rows` fetched with one more than `limit`: the extra row only says there is more.
    fn of(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> String) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_after = more.then(|| rows.last().map(&id)).flatten();
        Page {
            devices: rows,
            next_after,
        }
    }
}

/// A device in a baseline's list: its current state for the baseline.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BaselineDeviceRow {
    pub device_id: String,
    pub hostname: String,
    pub os: String,
    pub state: String,
    pub max_severity: String,
    pub baseline_revision: u32,
    pub evaluated_ms: i64,
    pub n_non_compliant: u32,
    pub n_error: u32,
}

/// The devices of the site, paged. $1 search, $2 OS, $3 state, $4 after, $5 limit.
const DEVICES_PAGE: &str = "SELECT d.device_id, d.hostname, d.os, d.last_seen_ms, \
       CAST((SELECT COUNT(*) FROM current_compliance c WHERE c.device_id = d.device_id \
        AND c.state IN ('non_compliant', 'error')) AS BIGINT) \
     FROM devices d \
     WHERE (LOWER(d.hostname) LIKE $1 ESCAPE '\\' OR LOWER(d.os) LIKE $1 ESCAPE '\\' \
            OR LOWER(d.device_id) LIKE $1 ESCAPE '\\') \
       AND LOWER(d.os) LIKE $2 ESCAPE '\\' \
       AND ($3 = '' OR EXISTS (SELECT 1 FROM current_compliance s \
            WHERE s.device_id = d.device_id AND s.state = $3)) \
       AND ($4 = '' OR (d.hostname, d.device_id) > \
            ((SELECT a.hostname FROM devices a WHERE a.device_id = $4), $4)) \
     ORDER BY d.hostname, d.device_id LIMIT $5";

/// A baseline's devices, paged. $1 baseline, $2 search, $3 OS, $4 state, $5 severities
/// (`,name,…,`), $6 after, $7 limit.
const BASELINE_DEVICES_PAGE: &str = "SELECT c.device_id, COALESCE(d.hostname, ''), \
       COALESCE(d.os, ''), c.state, c.max_severity, CAST(c.baseline_revision AS BIGINT), \
       c.evaluated_ms, CAST(c.n_non_compliant AS BIGINT), CAST(c.n_error AS BIGINT) \
     FROM current_compliance c LEFT JOIN devices d ON d.device_id = c.device_id \
     WHERE c.baseline_id = $1 \
       AND (LOWER(COALESCE(d.hostname, '')) LIKE $2 ESCAPE '\\' \
            OR LOWER(COALESCE(d.os, '')) LIKE $2 ESCAPE '\\' \
            OR LOWER(c.device_id) LIKE $2 ESCAPE '\\') \
       AND LOWER(COALESCE(d.os, '')) LIKE $3 ESCAPE '\\' \
       AND ($4 = '' OR c.state = $4) \
       AND ($5 = '' OR $5 LIKE '%,' || c.max_severity || ',%') \
       AND ($6 = '' OR (COALESCE(d.hostname, ''), c.device_id) > \
            (COALESCE((SELECT a.hostname FROM devices a WHERE a.device_id = $6), ''), $6)) \
     ORDER BY COALESCE(d.hostname, ''), c.device_id LIMIT $7";

type BaselineDeviceCols = (String, String, String, String, String, i64, i64, i64, i64);

impl Store {
    /// One page of the site's devices, by hostname.
    pub async fn device_page(&self, f: &DeviceFilter) -> Result<Page<DeviceRow>, StoreError> {
        let limit = f.limit();
        let (search, os) = (DeviceFilter::like(&f.search), DeviceFilter::like(&f.os));
        let after = f.after.clone().unwrap_or_default();
        let rows: Vec<(String, String, String, i64, i64)> = read!(self, pool => {
            sqlx::query_as(DEVICES_PAGE)
                .bind(&search)
                .bind(&os)
                .bind(f.state())
                .bind(&after)
                .bind(limit + 1)
                .fetch_all(pool)
                .await?
        });
        let rows = rows
            .into_iter()
            .map(
                |(device_id, hostname, os, last_seen_ms, failing)| DeviceRow {
                    device_id,
                    hostname,
                    os,
                    last_seen_ms,
                    failing_baselines: failing.max(0) as u64,
                },
            )
            .collect();
        Ok(Page::of(rows, limit, |d: &DeviceRow| d.device_id.clone()))
    }

    /// One page of the devices with a current state for `baseline_id`, by hostname.
    pub async fn baseline_device_page(
        &self,
        baseline_id: &str,
        f: &DeviceFilter,
    ) -> Result<Page<BaselineDeviceRow>, StoreError> {
        let limit = f.limit();
        let (search, os) = (DeviceFilter::like(&f.search), DeviceFilter::like(&f.os));
        let after = f.after.clone().unwrap_or_default();
        let rows: Vec<BaselineDeviceCols> = read!(self, pool => {
            sqlx::query_as(BASELINE_DEVICES_PAGE)
                .bind(baseline_id)
                .bind(&search)
                .bind(&os)
                .bind(f.state())
                .bind(f.severities())
                .bind(&after)
                .bind(limit + 1)
                .fetch_all(pool)
                .await?
        });
        let number = |v: i64| u32::try_from(v).unwrap_or(0);
        let rows = rows
            .into_iter()
            .map(|r| BaselineDeviceRow {
                device_id: r.0,
                hostname: r.1,
                os: r.2,
                state: r.3,
                max_severity: r.4,
                baseline_revision: number(r.5),
                evaluated_ms: r.6,
                n_non_compliant: number(r.7),
                n_error: number(r.8),
            })
            .collect();
        Ok(Page::of(rows, limit, |d: &BaselineDeviceRow| {
            d.device_id.clone()
        }))
    }
}
