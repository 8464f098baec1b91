//! `/console/devices`: device search by hostname or id.

use std::fmt::Write;

use http::StatusCode;

use super::html::{esc, hostname, page, time, url_part};
use super::respond::{csrf, db_failed, html_response};
use crate::site::admin::router::{Ctx, Reply};

pub(super) async fn devices(ctx: Ctx) -> Reply {
    let q = ctx
        .query
        .get("q")
        .map(|s| s.trim())
        .unwrap_or("")
        .to_string();
    if q.chars().count() > 200 {
        return Ok(html_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            page(
                "Devices",
                csrf(&ctx),
                "<p class=\"error\" role=\"alert\">Search for at most 200 characters.</p>",
            ),
        ));
    }
    let rows = match ctx.state.store.search_devices(&q, 500).await {
        Ok(r) => r,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let mut b = format!(
        "<form method=\"get\" action=\"/console/devices\" class=\"search\">\
         <label for=\"q\">Hostname or device id contains</label>\
         <input type=\"search\" id=\"q\" name=\"q\" value=\"{}\" maxlength=\"200\">\
         <button type=\"submit\">Search</button></form>",
        esc(&q)
    );
    let _ = write!(
        b,
        "<p>{} device{} shown{}.</p><table class=\"devices\"><tr><th>hostname</th>\
         <th>device id</th><th>OS</th><th>last seen</th><th>failing baselines</th></tr>",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        if rows.len() == 500 {
            " (the first 500)"
        } else {
            ""
        }
    );
    for d in &rows {
        let _ = write!(
            b,
            "<tr><td><a href=\"/console/devices/{href}\">{host}</a></td><td><code>{id}</code></td>\
             <td>{os}</td><td>{seen}</td><td>{fail}</td></tr>",
            href = url_part(&d.device_id),
            host = hostname(&d.hostname),
            id = esc(&d.device_id),
            os = esc(&d.os),
            seen = time(d.last_seen_ms),
            fail = d.failing_baselines,
        );
    }
    b.push_str("</table>");
    Ok(html_response(
        StatusCode::OK,
        page("Devices", csrf(&ctx), &b),
    ))
}
