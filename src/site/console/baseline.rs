//! `/console/baselines/{id}`: a baseline's settings and its non-compliant devices.

use std::fmt::Write;

use http::StatusCode;

use super::html::{esc, hostname, page, settings_table, time, url_part};
use super::respond::{csrf, db_failed, html_response, not_found};
use super::svg;
use crate::site::admin::router::{Ctx, Reply};

pub(super) async fn baseline(ctx: Ctx) -> Reply {
    let id = ctx.param("id").to_string();
    let store = &ctx.state.store;
    let detail = match store.baseline_detail(&id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Ok(not_found(
                &ctx,
                &format!("No baseline {id:?} is defined or reported at this site."),
            ));
        }
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let failing = match store.noncompliant_devices(&id).await {
        Ok(d) => d,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let o = &detail.overview;
    let mut b = String::new();
    if !detail.description.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(&detail.description));
    }
    b.push_str(&svg::bars(
        &format!("{}: devices per state", o.name),
        &[
            ("compliant", o.compliant),
            ("non_compliant", o.non_compliant),
            ("error", o.error),
            ("unknown", o.unknown),
        ],
    ));
    b.push_str(
        "<h2>Settings</h2><table class=\"setting-summary\"><tr><th>configuration item</th>\
         <th>setting</th><th>severity</th><th>compliant</th><th>non-compliant</th><th>error</th>\
         <th>unknown</th><th>not applicable</th><th>remediated</th></tr>",
    );
    for s in &detail.settings {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            esc(&s.ci_id),
            esc(&s.setting_id),
            esc(&s.severity),
            s.compliant,
            s.non_compliant,
            s.error,
            s.unknown,
            s.not_applicable,
            s.remediated
        );
    }
    b.push_str("</table>");
    let _ = write!(b, "<h2>Non-compliant devices ({})</h2>", failing.len());
    if failing.is_empty() {
        b.push_str("<p>None: every device that reported is compliant or not applicable.</p>");
    }
    for d in &failing {
        let _ = write!(
            b,
            "<section class=\"device\" data-device=\"{id}\"><h3>\
             <a class=\"device-link\" href=\"/console/devices/{href}\">{host}</a> \
             <small>{id}</small></h3><p>Worst severity <strong>{sev}</strong>, \
             baseline revision {rev}, evaluated {at}.</p>{settings}</section>",
            id = esc(&d.device_id),
            href = url_part(&d.device_id),
            host = hostname(&d.hostname),
            sev = esc(&d.max_severity),
            rev = d.baseline_revision,
            at = time(d.evaluated_ms),
            settings = settings_table(&d.settings),
        );
    }
    Ok(html_response(
        StatusCode::OK,
        page(&format!("Baseline {}", o.name), csrf(&ctx), &b),
    ))
}
