//! `/console/relays`: per relay, last pull, spool depth, lag and errors.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use http::StatusCode;

use super::html::{esc, page, time};
use super::respond::{csrf, db_failed, html_response};
use crate::site::admin::router::{Ctx, Reply};

pub(super) async fn relays(ctx: Ctx) -> Reply {
    let cursors = match ctx.state.store.relay_cursors().await {
        Ok(c) => c,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let live = &ctx.state.site.relays;
    let mut b = String::from(
        "<p>What the site last learned from each relay it pulls. Lag is the records the relay \
         holds that the site has not stored yet.</p><table class=\"relays\"><tr><th>relay</th>\
         <th>URL</th><th>last pull</th><th>relay's last record</th><th>stored through</th>\
         <th>lag (records)</th><th>spool depth (records)</th><th>spool depth (bytes)</th>\
         <th>pull errors</th><th>last error</th><th>policy version</th></tr>",
    );
    let mut shown = Vec::new();
    for c in &cursors {
        let status = live.iter().find(|s| {
            s.relay_id
                .lock()
                .map(|id| *id == c.relay_id)
                .unwrap_or(false)
                || s.url == c.url
        });
        if let Some(s) = status {
            shown.push(s.url.clone());
        }
        let (errors, last_error, policy) = status
            .map(|s| {
                (
                    s.errors.load(Ordering::Relaxed).to_string(),
                    s.last_error
                        .lock()
                        .ok()
                        .and_then(|e| e.clone())
                        .unwrap_or_default(),
                    s.policy_version.load(Ordering::Relaxed).to_string(),
                )
            })
            .unwrap_or_else(|| ("—".into(), "not pulled by this process".into(), "—".into()));
        let _ = write!(
            b,
            "<tr class=\"relay\" data-relay=\"{id}\"><td>{id}</td><td>{url}</td><td>{pull}</td>\
             <td>{last}</td><td>{through}</td><td class=\"lag\">{lag}</td><td>{pr}</td><td>{pb}</td>\
             <td>{errors}</td><td>{le}</td><td>{policy}</td></tr>",
            id = esc(&c.relay_id),
            url = esc(&c.url),
            pull = time(c.last_pull_ms),
            last = c.last_seq,
            through = c.through_seq,
            lag = c.last_seq.saturating_sub(c.through_seq),
            pr = c.pending_records,
            pb = c.pending_bytes,
            le = esc(&last_error),
        );
    }
    for s in live.iter().filter(|s| !shown.contains(&s.url)) {
        let _ = write!(
            b,
            "<tr class=\"relay\"><td>{id}</td><td>{url}</td><td>{pull}</td><td>{last}</td>\
             <td>{through}</td><td class=\"lag\">{lag}</td><td>—</td><td>—</td><td>{errors}</td>\
             <td>{le}</td><td>{policy}</td></tr>",
            id = esc(&s.relay_id.lock().map(|i| i.clone()).unwrap_or_default()),
            url = esc(&s.url),
            pull = time(s.last_pull_ms.load(Ordering::Relaxed)),
            last = s.last_seq.load(Ordering::Relaxed),
            through = s.through_seq.load(Ordering::Relaxed),
            lag = s.lag(),
            errors = s.errors.load(Ordering::Relaxed),
            le = esc(&s
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default()),
            policy = s.policy_version.load(Ordering::Relaxed),
        );
    }
    b.push_str("</table>");
    if cursors.is_empty() && live.is_empty() {
        b.push_str("<p>No relay has been pulled yet.</p>");
    }
    Ok(html_response(
        StatusCode::OK,
        page("Relays", csrf(&ctx), &b),
    ))
}
