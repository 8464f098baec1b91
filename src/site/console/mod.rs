//! The site console: server-rendered HTML pages on the admin listener for people who would
//! rather look than read JSON. Log in with the admin token at `/console/login`; the session
//! cookie then serves the pages below (the bearer token does too).
//!
//! | page | shows |
//! |---|---|
//! | `/console` | per baseline, a bar chart of devices per state and their trend over 30 days |
//! | `/console/baselines/{id}` | the baseline's devices per state (each count a link to its list), its settings, and the worst of its non-compliant devices with expected, observed and remediated values |
//! | `/console/baselines/{id}/devices` | the baseline's devices, paged, by state, worst severity, OS and search |
//! | `/console/devices` | every device, paged, by state, OS and a search of hostname, OS or id |
//! | `/console/devices/{id}` | a device: details, per baseline its settings and state history |
//! | `/console/relays` | per relay: last pull, spool depth, lag, errors |
//! | `/console/retention` | the retention task's settings (a form to change them) and last runs |
//! | `/console/terms` | the terms in force and who accepted them |
//! | `/console/audit` | the audit log, newest first, 50 a page, by administrator and object |
//! | `/console/collections` | every collection and its member count; `/console/collections/{id}` its members, 50 a page |
//! | `/console/deployments` | per deployment: devices targeted, compliant, non-compliant, error, not reported yet; a form to deploy |
//!
//! No JavaScript and nothing from elsewhere: charts are inline SVG drawn here, the style sheet
//! is compiled in, and the Content-Security-Policy forbids scripts. Every string from a device
//! or a user is escaped ([`html::esc`]); every form carries the session's CSRF token.

mod audit;
mod baseline;
mod collections;
mod device;
pub mod form;
pub mod html;
mod lists;
mod login;
mod overview;
mod relays;
mod respond;
mod retention;
pub mod svg;
mod terms;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, header};
use http_body_util::Full;

use crate::site::admin::router::{Ctx, Reply, Router};

/// The console's style sheet, served from the binary.
pub const CSS: &str = include_str!("console.css");

/// Days the overview's trend covers.
pub const TREND_DAYS: u32 = 30;

/// Registers the console's pages.
pub fn routes(r: Router) -> Router {
    r.public(Method::GET, "/console/login", login::login_page)
        .public(Method::POST, "/console/login", login::login)
        .public(Method::GET, "/console/static/console.css", css)
        .console(Method::POST, "/console/logout", login::logout)
        .console(Method::GET, "/console", overview::overview)
        .console(Method::GET, "/console/baselines/{id}", baseline::baseline)
        .console(
            Method::GET,
            "/console/baselines/{id}/devices",
            lists::baseline_devices,
        )
        .console(Method::GET, "/console/devices", lists::devices)
        .console(Method::GET, "/console/devices/{id}", device::device)
        .console(Method::GET, "/console/relays", relays::relays)
        .console(Method::GET, "/console/audit", audit::audit)
        .console(Method::GET, "/console/retention", retention::retention)
        .console(
            Method::POST,
            "/console/retention",
            retention::retention_save,
        )
        .console(Method::GET, "/console/terms", terms::terms)
        .console(
            Method::GET,
            "/console/collections",
            collections::collections,
        )
        .console(
            Method::GET,
            "/console/collections/{id}",
            collections::collection_members,
        )
        .console(
            Method::GET,
            "/console/deployments",
            collections::deployments,
        )
        .console(Method::POST, "/console/deployments", collections::deploy)
}

/// Where a console page without a session sends the browser.
pub fn to_login() -> Response<Full<Bytes>> {
    respond::redirect("/console/login", None)
}

async fn css(_: Ctx) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from_static(CSS.as_bytes())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    Ok(resp)
}
