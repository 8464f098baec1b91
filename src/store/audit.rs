//! The audit log: who changed what, when, with the values before and after.
//!
//! An entry is written by [`record`] (`on_sqlite::record` / `on_postgres::record`) inside the
//! transaction of the change it describes, so a change whose entry cannot be written is rolled
//! back with it. No interface edits the log: the schema refuses every UPDATE, and only the
//! retention task deletes entries, by age ([`Store::delete_audit_before`]).

use serde::Serialize;

use super::rows::Cols;
use super::{Store, StoreError};
use crate::clock;

/// Who made a change, and through which interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// An administrator's name, or `cli:OSUSER` for a command run on the site host.
    pub who: String,
    /// `cli`, `api` or `console`.
    pub via: &'static str,
}

impl Actor {
    /// A command run on the site host by the operating-system user running it.
    pub fn cli() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        Self {
            who: format!("cli:{user}"),
            via: "cli",
        }
    }

    /// An administrator through the admin API.
    pub fn api(name: &str) -> Self {
        Self {
            who: name.into(),
            via: "api",
        }
    }

    /// An administrator through the web console.
    pub fn console(name: &str) -> Self {
        Self {
            who: name.into(),
            via: "console",
        }
    }

    /// The site server itself (the bootstrap administrator).
    pub fn site() -> Self {
        Self {
            who: "site".into(),
            via: "site",
        }
    }
}

/// One change to record: what kind of change, the object and its id, its values before and
/// after (JSON; `None` where there was none).
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub action: &'a str,
    pub object: &'a str,
    pub object_id: &'a str,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub who: String,
    pub via: String,
    pub action: String,
    pub object: String,
    pub object_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Which entries to list: newer than `since_ms`, by `who`, on `object`; at most `limit`, newest
/// first, older than the entry `before_id` (paging).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub who: Option<String>,
    pub object: Option<String>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

impl Store {
    /// Entries of the audit log, newest first.
    pub async fn audit_entries(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT id, at_ms, who, via, action, object, object_id, before, after \
                 FROM audit_log \
                 WHERE ($1 IS NULL OR at_ms >= $1) AND ($2 IS NULL OR who = $2) \
                   AND ($3 IS NULL OR object = $3) AND ($4 IS NULL OR id < $4) \
                 ORDER BY id DESC LIMIT $5",
            )
            .bind(f.since_ms)
            .bind(f.who.as_deref())
            .bind(f.object.as_deref())
            .bind(f.before_id)
            .bind(i64::from(f.limit.max(1)))
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| {
                Ok(AuditEntry {
                    id: r.col(0)?,
                    at_ms: r.col(1)?,
                    who: r.col(2)?,
                    via: r.col(3)?,
                    action: r.col(4)?,
                    object: r.col(5)?,
                    object_id: r.col(6)?,
                    before: json_col(r.col(7)?)?,
                    after: json_col(r.col(8)?)?,
                })
            }).collect()
        })
    }

    /// Deletes the entries older than `cutoff_ms` (the retention task, with the audit log's own
    /// age); returns how many.
    pub async fn delete_audit_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        dispatch!(self, s => {
            let mut tx = s.begin_write().await?;
            let n = sqlx::query("DELETE FROM audit_log WHERE at_ms < $1")
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(n)
        })
    }
}

fn json_col(v: Option<String>) -> Result<Option<serde_json::Value>, StoreError> {
    v.map(|s| {
        serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("audit entry: {e}")))
    })
    .transpose()
}

for_each_backend! {
    /// Writes one audit entry in the caller's transaction: the one function every change path
    /// calls, so the change and its entry commit or roll back together.
    pub(crate) async fn record(
        tx: &mut Conn,
        actor: &Actor,
        change: Change<'_>,
    ) -> Result<(), StoreError> {
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
        sqlx::query(
            "INSERT INTO audit_log (at_ms, who, via, action, object, object_id, before, after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(clock::now_ms())
        .bind(&actor.who)
        .bind(actor.via)
        .bind(change.action)
        .bind(change.object)
        .bind(change.object_id)
        .bind(json(&change.before))
        .bind(json(&change.after))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}
