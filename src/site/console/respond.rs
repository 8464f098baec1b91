//! What every console page answers with: HTML responses with the console's headers, redirects,
//! the error pages, and the CSRF check of form posts.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use tracing::{error, warn};

use super::html::{esc, page};
use crate::site::admin::router::{Ctx, urlencoded_pairs};
use crate::store::StoreError;

pub(super) fn csrf(ctx: &Ctx) -> Option<&str> {
    ctx.session.as_deref().map(|s| s.csrf.as_str())
}

pub(super) fn html_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No scripts at all, nothing from elsewhere, no framing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn redirect(to: &str, cookie: Option<String>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The page for a failed database query: the details go to the log, not the browser.
pub(super) fn db_failed(ctx: &Ctx, e: StoreError) -> Response<Full<Bytes>> {
    error!(error = %e, "console query failed");
    ctx.state
        .site
        .metrics
        .db_errors
        .fetch_add(1, Ordering::Relaxed);
    html_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        page(
            "Database error",
            csrf(ctx),
            "<p class=\"error\">The site database did not answer this query. \
             The server log has the details; try again shortly.</p>",
        ),
    )
}

pub(super) fn not_found(ctx: &Ctx, what: &str) -> Response<Full<Bytes>> {
    html_response(
        StatusCode::NOT_FOUND,
        page(
            "Not found",
            csrf(ctx),
            &format!("<p class=\"error\">{}</p>", esc(what)),
        ),
    )
}

/// `name=value` pairs of a urlencoded form body, in order (names may repeat).
pub(super) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    urlencoded_pairs(&String::from_utf8_lossy(body)).collect()
}

/// A form post from the session's own pages (or with the bearer token, which a browser never
/// adds on its own, so it needs no CSRF token).
pub(super) fn csrf_ok(ctx: &Ctx, pairs: &[(String, String)]) -> bool {
    match &ctx.session {
        Some(s) => pairs.iter().any(|(k, v)| k == "csrf" && s.csrf_matches(v)),
        None => true,
    }
}

pub(super) fn csrf_refused(ctx: &Ctx) -> Response<Full<Bytes>> {
    warn!("console form refused: missing or wrong CSRF token");
    html_response(
        StatusCode::FORBIDDEN,
        page(
            "Form expired",
            csrf(ctx),
            "<p class=\"error\">This form was not sent from a current console page \
             (its security token is missing or stale). Open the page again and resubmit.</p>",
        ),
    )
}

pub(super) fn csrf_field(ctx: &Ctx) -> String {
    csrf(ctx)
        .map(|t| format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(t)))
        .unwrap_or_default()
}
