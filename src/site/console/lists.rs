//! Paged device lists: `/console/devices` (every device) and `/console/baselines/{id}/devices`
//! (a baseline's devices in one state, or all), each with a filter form (search, OS, state, and
//! worst severity on a baseline's list) and a link to the next page. The query parameters are
//! the admin API's (see [`crate::site::admin::devices`]).

use std::fmt::Write;

use http::StatusCode;

use super::html::{esc, hostname, page, state_badge, state_label, time, url_part};
use super::respond::{csrf, db_failed, html_response, not_found};
use crate::compliance::{Severity, State};
use crate::site::admin::devices::{MAX_SEARCH, device_filter};
use crate::site::admin::router::{Ctx, Reply};
use crate::store::DeviceFilter;

/// The devices of the site, a page at a time.
pub(super) async fn devices(ctx: Ctx) -> Reply {
    let f = match device_filter(&ctx.query) {
        Ok(f) => f,
        Err(e) => return Ok(refused(&ctx, "Devices", &e)),
    };
    let p = match ctx.state.store.device_page(&f).await {
        Ok(p) => p,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let mut b = filter_form("/console/devices", &f, false);
    let _ = write!(
        b,
        "<p class=\"shown\">{} device{} shown{}.</p><table class=\"devices\"><tr><th>hostname</th>\
         <th>device id</th><th>OS</th><th>last seen</th><th>failing baselines</th></tr>",
        p.devices.len(),
        if p.devices.len() == 1 { "" } else { "s" },
        if f.after.is_some() {
            " (continued)"
        } else {
            ""
        }
    );
    for d in &p.devices {
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
    b.push_str(&next_link("/console/devices", &f, p.next_after.as_deref()));
    Ok(html_response(
        StatusCode::OK,
        page("Devices", csrf(&ctx), &b),
    ))
}

/// A baseline's devices with their state for it, a page at a time.
pub(super) async fn baseline_devices(ctx: Ctx) -> Reply {
    let id = ctx.param("id").to_string();
    let f = match device_filter(&ctx.query) {
        Ok(f) => f,
        Err(e) => return Ok(refused(&ctx, "Devices", &e)),
    };
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
    let p = match store.baseline_device_page(&id, &f).await {
        Ok(p) => p,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let base = format!("/console/baselines/{}/devices", url_part(&id));
    let mut b = format!(
        "<p><a href=\"/console/baselines/{}\">{}</a></p>",
        url_part(&id),
        esc(&detail.overview.name)
    );
    b.push_str(&filter_form(&base, &f, true));
    let _ = write!(
        b,
        "<p class=\"shown\">{} device{} shown{}.</p><table class=\"devices\" data-baseline=\"{}\">\
         <tr><th>hostname</th><th>device id</th><th>OS</th><th>state</th><th>worst severity</th>\
         <th>revision</th><th>evaluated</th><th>non-compliant</th><th>error</th></tr>",
        p.devices.len(),
        if p.devices.len() == 1 { "" } else { "s" },
        if f.after.is_some() {
            " (continued)"
        } else {
            ""
        },
        esc(&id)
    );
    for d in &p.devices {
        let _ = write!(
            b,
            "<tr class=\"device\" data-device=\"{id}\" data-state=\"{state_attr}\">\
             <td><a href=\"/console/devices/{href}\">{host}</a></td><td><code>{id}</code></td>\
             <td>{os}</td><td>{state}</td><td>{sev}</td><td>{rev}</td><td>{at}</td><td>{nn}</td>\
             <td>{ne}</td></tr>",
            id = esc(&d.device_id),
            href = url_part(&d.device_id),
            host = hostname(&d.hostname),
            os = esc(&d.os),
            state_attr = esc(&d.state),
            state = state_badge(&d.state),
            sev = esc(&d.max_severity),
            rev = d.baseline_revision,
            at = time(d.evaluated_ms),
            nn = d.n_non_compliant,
            ne = d.n_error,
        );
    }
    b.push_str("</table>");
    b.push_str(&next_link(&base, &f, p.next_after.as_deref()));
    let title = match f.state {
        Some(s) => format!(
            "{}: {} devices",
            detail.overview.name,
            state_label(s.as_str())
        ),
        None => format!("{}: devices", detail.overview.name),
    };
    Ok(html_response(StatusCode::OK, page(&title, csrf(&ctx), &b)))
}

/// The link to a baseline's devices in `state`.
pub(super) fn state_href(baseline_id: &str, state: &str) -> String {
    format!(
        "/console/baselines/{}/devices?state={}",
        url_part(baseline_id),
        url_part(state)
    )
}

fn refused(
    ctx: &Ctx,
    title: &str,
    why: &str,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    html_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        page(
            title,
            csrf(ctx),
            &format!("<p class=\"error\" role=\"alert\">{}</p>", esc(why)),
        ),
    )
}

/// The filter form; it starts again at the first page.
fn filter_form(action: &str, f: &DeviceFilter, severity: bool) -> String {
    let mut b = format!(
        "<form method=\"get\" action=\"{action}\" class=\"search\">\
         <label for=\"q\">Hostname, OS or device id contains</label>\
         <input type=\"search\" id=\"q\" name=\"q\" value=\"{q}\" maxlength=\"{MAX_SEARCH}\">\
         <label for=\"os\">OS contains</label>\
         <input type=\"text\" id=\"os\" name=\"os\" value=\"{os}\" maxlength=\"{MAX_SEARCH}\">\
         <label for=\"state\">State</label><select id=\"state\" name=\"state\">\
         <option value=\"\">any</option>",
        q = esc(&f.search),
        os = esc(&f.os),
    );
    for s in State::ALL {
        let _ = write!(
            b,
            "<option value=\"{v}\"{sel}>{label}</option>",
            v = s.as_str(),
            sel = if f.state == Some(s) { " selected" } else { "" },
            label = state_label(s.as_str()),
        );
    }
    b.push_str("</select>");
    if severity {
        b.push_str(
            "<label for=\"severity\">Worst severity at least</label>\
             <select id=\"severity\" name=\"severity\"><option value=\"\">any</option>",
        );
        for s in Severity::ALL {
            let _ = write!(
                b,
                "<option value=\"{v}\"{sel}>{v}</option>",
                v = s.as_str(),
                sel = if f.severity == Some(s) {
                    " selected"
                } else {
                    ""
                },
            );
        }
        b.push_str("</select>");
    }
    b.push_str("<button type=\"submit\">Show</button></form>");
    b
}

/// "Next page" with the same filters, after the last device shown; nothing on the last page.
fn next_link(base: &str, f: &DeviceFilter, next: Option<&str>) -> String {
    let Some(after) = next else {
        return String::new();
    };
    let mut q = vec![];
    for (k, v) in [("q", f.search.as_str()), ("os", f.os.as_str())] {
        if !v.is_empty() {
            q.push(format!("{k}={}", url_part(v)));
        }
    }
    if let Some(s) = f.state {
        q.push(format!("state={s}"));
    }
    if let Some(s) = f.severity {
        q.push(format!("severity={s}"));
    }
    if f.limit != crate::store::DEFAULT_PAGE {
        q.push(format!("limit={}", f.limit));
    }
    q.push(format!("after={}", url_part(after)));
    format!(
        "<p class=\"pager\"><a rel=\"next\" class=\"next-page\" href=\"{base}?{}\">Next page</a></p>",
        esc(&q.join("&"))
    )
}
