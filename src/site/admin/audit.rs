//! The audit log on the admin API (read only: no interface edits it):
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/audit?since_ms=&who=&object=&before=&limit=` | `{"entries": [AuditEntry…], "next_before": id or null}`, newest first; `before` (an entry id) pages to older entries, `limit` 1 to 1000 (default 100) |

use http::StatusCode;
use serde_json::json;
use tracing::error;

use super::router::{Ctx, Reply, Router};
use crate::store::AuditFilter;
use crate::wire::{Refusal, json_response};

pub fn routes(r: Router) -> Router {
    r.get("/api/v1/audit", list)
}

/// The filter of a request's query; a clear `malformed` naming the bad parameter.
pub fn filter(q: &std::collections::HashMap<String, String>) -> Result<AuditFilter, Refusal> {
    let num = |name: &str| -> Result<Option<i64>, Refusal> {
        q.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| Refusal::Malformed(format!("{name} must be a number")))
            })
            .transpose()
    };
    let limit = match num("limit")? {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(_) => return Err(Refusal::Malformed("limit must be 1 to 1000".into())),
    };
    let text = |name: &str| q.get(name).filter(|v| !v.is_empty()).cloned();
    Ok(AuditFilter {
        since_ms: num("since_ms")?,
        who: text("who"),
        object: text("object"),
        before_id: num("before")?,
        limit,
    })
}

async fn list(ctx: Ctx) -> Reply {
    let f = filter(&ctx.query)?;
    let entries = ctx.state.store.audit_entries(&f).await.map_err(|e| {
        error!(error = %e, "admin API audit query failed");
        Refusal::Internal
    })?;
    let next_before = (entries.len() == f.limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "entries": entries, "next_before": next_before }),
    ))
}
