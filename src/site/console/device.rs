//! `/console/devices/{id}`: a device, and per baseline its settings and state history.

use std::fmt::Write;

use http::StatusCode;

use super::html::{esc, hostname, page, settings_table, state_badge, time, url_part};
use super::respond::{csrf, db_failed, html_response, not_found};
use crate::site::admin::router::{Ctx, Reply};

pub(super) async fn device(ctx: Ctx) -> Reply {
    let id = ctx.param("id").to_string();
    let dc = match ctx.state.store.device_compliance(&id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Ok(not_found(
                &ctx,
                &format!("No device {id:?} is known at this site."),
            ));
        }
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let d = &dc.device;
    let mut b = format!(
        "<table class=\"facts\"><tr><th>hostname</th><td>{host}</td></tr>\
         <tr><th>device id</th><td><code>{id}</code></td></tr>\
         <tr><th>OS</th><td>{os}</td></tr><tr><th>agent</th><td>{agent}</td></tr>\
         <tr><th>hardware id</th><td>{hw}</td></tr><tr><th>key epoch</th><td>{epoch}</td></tr>\
         <tr><th>enrolled</th><td>{enrolled}</td></tr><tr><th>last seen</th><td>{seen}</td></tr>\
         <tr><th>last relay</th><td>{relay}</td></tr><tr><th>blocked</th><td>{blocked}</td></tr></table>",
        host = hostname(&d.hostname),
        id = esc(&d.device_id),
        os = esc(&d.os),
        agent = esc(&d.agent_version),
        hw = esc(&d.hardware_id),
        epoch = d.key_epoch,
        enrolled = d
            .enrolled_ms
            .map(time)
            .unwrap_or_else(|| "not yet known".into()),
        seen = time(d.last_seen_ms),
        relay = esc(&d.last_relay),
        blocked = if d.blocked { "yes" } else { "no" },
    );
    if dc.baselines.is_empty() {
        b.push_str("<p>No compliance report from this device yet.</p>");
    }
    let retention_days = match ctx.state.store.retention_days().await {
        Ok(d) => d,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let aged_before = crate::clock::now_ms() - i64::from(retention_days) * crate::clock::DAY_MS;
    for bl in &dc.baselines {
        let c = &bl.current;
        if c.evaluated_ms < aged_before {
            let _ = write!(
                b,
                "<p class=\"aged\" data-aged-baseline=\"{id}\">The state for {name} was evaluated \
                 {at}, longer ago than the retention age ({retention_days} days): the device has \
                 not reported it since. Its report is kept while it is the current state.</p>",
                id = esc(&c.baseline_id),
                name = esc(&c.baseline_name),
                at = time(c.evaluated_ms),
            );
        }
        let _ = write!(
            b,
            "<section class=\"device-baseline\" data-baseline=\"{id}\"><h2>\
             <a href=\"/console/baselines/{href}\">{name}</a> {state}</h2>\
             <p>Revision {rev}, worst severity <strong>{sev}</strong>, evaluated {at}: \
             {nc} compliant, {nn} non-compliant, {ne} error, {nu} unknown, {na} not applicable.</p>\
             {settings}<h3>History</h3><table class=\"history\"><tr><th>state</th><th>from</th>\
             <th>until</th></tr>",
            id = esc(&c.baseline_id),
            href = url_part(&c.baseline_id),
            name = esc(&c.baseline_name),
            state = state_badge(&c.state),
            rev = c.baseline_revision,
            sev = esc(&c.max_severity),
            at = time(c.evaluated_ms),
            nc = c.n_compliant,
            nn = c.n_non_compliant,
            ne = c.n_error,
            nu = c.n_unknown,
            na = c.n_not_applicable,
            settings = settings_table(&bl.settings),
        );
        for h in &bl.history {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                state_badge(&h.state),
                time(h.started_ms),
                h.ended_ms.map(time).unwrap_or_else(|| "now".into())
            );
        }
        b.push_str("</table></section>");
    }
    let title = if d.hostname.is_empty() {
        format!("Device {}", d.device_id)
    } else {
        format!("Device {}", d.hostname)
    };
    Ok(html_response(StatusCode::OK, page(&title, csrf(&ctx), &b)))
}
