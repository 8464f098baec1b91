//! `/console/terms`: the terms in force and who accepted them.

use std::fmt::Write;

use http::StatusCode;

use super::html::{esc, page, time, url_part};
use super::respond::{csrf, db_failed, html_response};
use crate::site::admin::router::{Ctx, Reply};

pub(super) async fn terms(ctx: Ctx) -> Reply {
    let store = &ctx.state.store;
    let current = match store.current_terms().await {
        Ok(c) => c,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let report = match store.terms_acceptances().await {
        Ok(r) => r,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let mut b = String::new();
    match &current {
        None => b.push_str(
            "<p>No terms are published: the portal is open to every user. Publish terms with \
             <code>mprelay terms publish</code>.</p>",
        ),
        Some(t) => {
            let _ = write!(
                b,
                "<h2>In force: version {v}, edition {ed}</h2><table class=\"facts\">\
                 <tr><th>title</th><td>{title}</td></tr><tr><th>label</th><td>{dn}</td></tr>\
                 <tr><th>published</th><td>{p}</td></tr><tr><th>this edition</th><td>{e}</td></tr>\
                 <tr><th>summary</th><td>{sum}</td></tr>\
                 <tr><th>acceptance statement</th><td>{st}</td></tr></table>\
                 <details><summary>Full text</summary><pre>{body}</pre></details>",
                v = t.version,
                ed = t.edition,
                title = esc(&t.text.title),
                dn = esc(&t.text.display_name),
                p = time(t.published_ms),
                e = time(t.edited_ms),
                sum = esc(&t.text.summary),
                st = esc(&t.text.acceptance_statement),
                body = esc(&t.text.body),
            );
        }
    }
    let latest = report.users.iter().filter(|u| u.latest).count();
    let _ = write!(
        b,
        "<h2>Acceptance</h2><p>{} user{} accepted; {latest} of them the version in force. \
         {} enrolled device{} sent no acceptance.</p>\
         <table class=\"acceptances\"><tr><th>user</th><th>device</th><th>version</th>\
         <th>accepted</th><th>received</th><th>current</th></tr>",
        report.users.len(),
        if report.users.len() == 1 { "" } else { "s" },
        report.devices_without_acceptance,
        if report.devices_without_acceptance == 1 {
            ""
        } else {
            "s"
        },
    );
    for a in &report.acceptances {
        let _ = write!(
            b,
            "<tr><td>{user}</td><td><a href=\"/console/devices/{href}\">{host}</a></td>\
             <td>{v}</td><td>{acc}</td><td>{rec}</td><td>{cur}</td></tr>",
            user = esc(&a.user),
            href = url_part(&a.device_id),
            host = if a.hostname.is_empty() {
                esc(&a.device_id)
            } else {
                esc(&a.hostname)
            },
            v = a.accepted_version,
            acc = time(a.accepted_ms),
            rec = time(a.received_ms),
            cur = if a.latest {
                "yes"
            } else {
                "no: must accept again"
            },
        );
    }
    b.push_str("</table><p>What users are told about their data: <a href=\"/privacy\">the privacy page</a>.</p>");
    Ok(html_response(StatusCode::OK, page("Terms", csrf(&ctx), &b)))
}
