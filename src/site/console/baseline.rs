//! `/console/baselines/{id}`: a baseline's devices per state (links to their lists), its settings,
//! and its worst non-compliant devices with what fails on them.

use std::fmt::Write;

use http::StatusCode;

use super::html::{esc, hostname, page, settings_table, time, url_part};
use super::respond::{csrf, db_failed, html_response, not_found};
use super::svg;
use crate::compliance::State;
use crate::site::admin::router::{Ctx, Reply};
use crate::store::NoncompliantDevice;

/// Non-compliant devices shown with their settings on the baseline's page; the rest are on the
/// paged list its counts link to.
const INLINE_FAILING: usize = 25;

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
    let (failing, errors) = match (
        store.noncompliant_devices(&id).await,
        store.failing_devices(&id, State::Error).await,
    ) {
        (Ok(f), Ok(e)) => (f, e),
        (Err(e), _) | (_, Err(e)) => return Ok(db_failed(&ctx, e)),
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
    let link = |state: &str, n: u64| super::overview::state_link(&id, state, n);
    let _ = write!(
        b,
        "<table class=\"counts\"><tr><th>devices</th><th>compliant</th><th>non-compliant</th>\
         <th>error</th><th>unknown</th><th>not applicable</th></tr>\
         <tr><td data-state=\"devices\"><a href=\"/console/baselines/{href}/devices\">{}</a></td>\
         <td data-state=\"compliant\">{}</td><td data-state=\"non_compliant\">{}</td>\
         <td data-state=\"error\">{}</td><td data-state=\"unknown\">{}</td>\
         <td data-state=\"not_applicable\">{}</td></tr></table>",
        o.devices,
        link("compliant", o.compliant),
        link("non_compliant", o.non_compliant),
        link("error", o.error),
        link("unknown", o.unknown),
        link("not_applicable", o.not_applicable),
        href = url_part(&id),
    );
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
    failing_section(
        &mut b,
        &id,
        State::NonCompliant,
        &failing,
        "device",
        "None: every device that reported is compliant or not applicable.",
    );
    failing_section(
        &mut b,
        &id,
        State::Error,
        &errors,
        "error-device",
        "None: no device failed to evaluate this baseline.",
    );
    Ok(html_response(
        StatusCode::OK,
        page(&format!("Baseline {}", o.name), csrf(&ctx), &b),
    ))
}

/// The worst devices of the baseline in `state`, each with what fails on it, and a link to the
/// paged list of all of them.
fn failing_section(
    b: &mut String,
    baseline_id: &str,
    state: State,
    devices: &[NoncompliantDevice],
    class: &str,
    none: &str,
) {
    let label = match state {
        State::Error => "Devices in error",
        _ => "Non-compliant devices",
    };
    let _ = write!(b, "<h2>{label} ({})</h2>", devices.len());
    if devices.is_empty() {
        let _ = write!(b, "<p>{none}</p>");
    }
    if devices.len() > INLINE_FAILING {
        let _ = write!(
            b,
            "<p>The {INLINE_FAILING} with the worst severity, with what fails on them; \
             <a class=\"all-failing\" href=\"{}\">all {} of them</a>.</p>",
            super::lists::state_href(baseline_id, state.as_str()),
            devices.len()
        );
    }
    for d in devices.iter().take(INLINE_FAILING) {
        let _ = write!(
            b,
            "<section class=\"{class}\" data-device=\"{id}\"><h3>\
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
}
