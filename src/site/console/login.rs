//! `/console/login` and `/console/logout`: a session got with the admin token.

use std::fmt::Write;

use http::StatusCode;
use tracing::{info, warn};

use super::html::{esc, page};
use super::respond::{csrf_ok, csrf_refused, form_pairs, html_response, redirect};
use crate::site::admin::router::{Ctx, Reply};
use crate::site::admin::session;

fn login_form(error: Option<&str>) -> String {
    let mut b = String::new();
    if let Some(e) = error {
        let _ = write!(
            b,
            "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
            esc(e)
        );
    }
    b.push_str(
        "<form method=\"post\" action=\"/console/login\" class=\"login\">\
         <label for=\"token\">Admin token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" \
         required autofocus>\
         <button type=\"submit\">Log in</button></form>\
         <p class=\"hint\">The token is in the site's <code>admin.token</code> file.</p>",
    );
    page("Log in", None, &b)
}

pub(super) async fn login_page(ctx: Ctx) -> Reply {
    if ctx.session.is_some() {
        return Ok(redirect("/console", None));
    }
    Ok(html_response(StatusCode::OK, login_form(None)))
}

pub(super) async fn login(ctx: Ctx) -> Reply {
    let pairs = form_pairs(&ctx.body);
    let token = pairs
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim())
        .unwrap_or("");
    if token.is_empty() {
        return Ok(html_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            login_form(Some("Enter the admin token.")),
        ));
    }
    let now = std::time::Instant::now();
    let client = session::Client::from(ctx.peer.ip());
    if !ctx.state.sessions.login_allowed(client, now) {
        warn!(peer = %ctx.peer.ip(), "console login refused: too many failed logins");
        return Ok(html_response(
            StatusCode::TOO_MANY_REQUESTS,
            login_form(Some(
                "Too many failed logins in the last minute. Wait a minute and try again.",
            )),
        ));
    }
    let Some(admin) = ctx.state.administrator(token).await else {
        ctx.state.sessions.login_failed(client, now);
        warn!(peer = %ctx.peer.ip(), "console login refused: wrong token");
        return Ok(html_response(
            StatusCode::UNAUTHORIZED,
            login_form(Some("That is not the token of an enabled administrator.")),
        ));
    };
    let (id, _) = ctx.state.sessions.create(&admin.name);
    info!(admin = %admin.name, "console login");
    Ok(redirect("/console", Some(session::set_cookie(&id))))
}

pub(super) async fn logout(ctx: Ctx) -> Reply {
    let pairs = form_pairs(&ctx.body);
    if !csrf_ok(&ctx, &pairs) {
        return Ok(csrf_refused(&ctx));
    }
    if let Some(s) = &ctx.session {
        ctx.state.sessions.remove(s);
    }
    Ok(redirect("/console/login", Some(session::clear_cookie())))
}
