//! `/console/audit`: the audit log, newest first, 50 a page, by administrator and object.

use std::fmt::Write;

use http::StatusCode;

use super::html::{esc, page, time};
use super::respond::{csrf, db_failed, html_response};
use crate::site::admin::audit::filter;
use crate::site::admin::router::{Ctx, Reply};

/// Entries one console page shows unless asked otherwise.
const PAGE: u32 = 50;

pub(super) async fn audit(ctx: Ctx) -> Reply {
    let mut q = ctx.query.clone();
    q.entry("limit".into()).or_insert_with(|| PAGE.to_string());
    let f = filter(&q)?;
    let entries = match ctx.state.store.audit_entries(&f).await {
        Ok(e) => e,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let who = f.who.clone().unwrap_or_default();
    let object = f.object.clone().unwrap_or_default();
    let mut b = format!(
        "<p>Every change made through the command line, the API or this console: who, when, \
         through what, and the values before and after. Nothing here can be edited.</p>\
         <form method=\"get\" action=\"/console/audit\" class=\"filter\">\
         <label>who <input name=\"who\" value=\"{who}\"></label> \
         <label>object <input name=\"object\" value=\"{object}\"></label> \
         <button type=\"submit\">Filter</button></form>\
         <table class=\"audit\"><tr><th>when</th><th>who</th><th>via</th><th>action</th>\
         <th>object</th><th>id</th><th>before</th><th>after</th></tr>",
        who = esc(&who),
        object = esc(&object),
    );
    let json =
        |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
    for e in &entries {
        let _ = write!(
            b,
            "<tr class=\"entry\"><td>{at}</td><td>{who}</td><td>{via}</td><td>{action}</td>\
             <td>{object}</td><td>{id}</td><td><code>{before}</code></td>\
             <td><code>{after}</code></td></tr>",
            at = time(e.at_ms),
            who = esc(&e.who),
            via = esc(&e.via),
            action = esc(&e.action),
            object = esc(&e.object),
            id = esc(&e.object_id),
            before = esc(&json(&e.before)),
            after = esc(&json(&e.after)),
        );
    }
    b.push_str("</table>");
    if entries.is_empty() {
        b.push_str("<p>No entry matches.</p>");
    }
    if let Some(last) = entries.last().filter(|_| entries.len() == f.limit as usize) {
        let mut next = format!("/console/audit?before={}", last.id);
        for (k, v) in [("who", &who), ("object", &object)] {
            if !v.is_empty() {
                let _ = write!(
                    next,
                    "&{k}={}",
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                );
            }
        }
        let _ = write!(
            b,
            "<p><a class=\"next\" href=\"{}\">Next page</a></p>",
            esc(&next)
        );
    }
    Ok(html_response(
        StatusCode::OK,
        page("Audit log", csrf(&ctx), &b),
    ))
}
