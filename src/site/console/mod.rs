//! The site console: server-rendered HTML pages on the admin listener for people who would
//! rather look than read JSON. Log in with the admin token at `/console/login`; the session
//! cookie then serves the pages below (the bearer token does too).
//!
//! | page | shows |
//! |---|---|
//! | `/console` | per baseline, a bar chart of devices per state and their trend over 30 days |
//! | `/console/baselines/{id}` | the baseline's settings and its non-compliant devices, with expected, observed and remediated values |
//! | `/console/devices` | device search by hostname or id |
//! | `/console/devices/{id}` | a device: details, per baseline its settings and state history |
//! | `/console/relays` | per relay: last pull, spool depth, lag, errors |
//! | `/console/retention` | the retention task's settings (a form to change them) and last runs |
//! | `/console/terms` | the terms in force and who accepted them |
//!
//! No JavaScript and nothing from elsewhere: charts are inline SVG drawn here, the style sheet
//! is compiled in, and the Content-Security-Policy forbids scripts. Every string from a device
//! or a user is escaped ([`html::esc`]); every form carries the session's CSRF token.

pub mod form;
pub mod html;
pub mod session;
pub mod svg;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use tracing::{error, info, warn};

pub use session::{Session, Sessions};

use crate::site::admin::router::{Ctx, Reply, Router, urlencoded_pairs};
use crate::store::{DAY_MS, DELETE_AGED_CM_DATA, StoreError};
use form::RetentionForm;
use html::{esc, page, state_badge, time, url_part};

/// The console's style sheet, served from the binary.
pub const CSS: &str = include_str!("console.css");

/// Days the overview's trend covers.
pub const TREND_DAYS: u32 = 30;

/// Registers the console's pages.
pub fn routes(r: Router) -> Router {
    r.public(Method::GET, "/console/login", login_page)
        .public(Method::POST, "/console/login", login)
        .public(Method::GET, "/console/static/console.css", css)
        .console(Method::POST, "/console/logout", logout)
        .console(Method::GET, "/console", overview)
        .console(Method::GET, "/console/baselines/{id}", baseline)
        .console(Method::GET, "/console/devices", devices)
        .console(Method::GET, "/console/devices/{id}", device)
        .console(Method::GET, "/console/relays", relays)
        .console(Method::GET, "/console/retention", retention)
        .console(Method::POST, "/console/retention", retention_save)
        .console(Method::GET, "/console/terms", terms)
}

/// Where a console page without a session sends the browser.
pub fn to_login() -> Response<Full<Bytes>> {
    redirect("/console/login", None)
}

fn csrf(ctx: &Ctx) -> Option<&str> {
    ctx.session.as_deref().map(|s| s.csrf.as_str())
}

fn html_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
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

fn redirect(to: &str, cookie: Option<String>) -> Response<Full<Bytes>> {
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
fn db_failed(ctx: &Ctx, e: StoreError) -> Response<Full<Bytes>> {
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

fn not_found(ctx: &Ctx, what: &str) -> Response<Full<Bytes>> {
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
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    urlencoded_pairs(&String::from_utf8_lossy(body)).collect()
}

/// A form post from the session's own pages (or with the bearer token, which a browser never
/// adds on its own, so it needs no CSRF token).
fn csrf_ok(ctx: &Ctx, pairs: &[(String, String)]) -> bool {
    match &ctx.session {
        Some(s) => pairs.iter().any(|(k, v)| k == "csrf" && s.csrf_matches(v)),
        None => true,
    }
}

fn csrf_refused(ctx: &Ctx) -> Response<Full<Bytes>> {
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

fn csrf_field(ctx: &Ctx) -> String {
    csrf(ctx)
        .map(|t| format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(t)))
        .unwrap_or_default()
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

async fn login_page(ctx: Ctx) -> Reply {
    if ctx.session.is_some() {
        return Ok(redirect("/console", None));
    }
    Ok(html_response(StatusCode::OK, login_form(None)))
}

async fn login(ctx: Ctx) -> Reply {
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
    if !ctx.state.is_token(token) {
        ctx.state.sessions.login_failed(client, now);
        warn!(peer = %ctx.peer.ip(), "console login refused: wrong token");
        return Ok(html_response(
            StatusCode::UNAUTHORIZED,
            login_form(Some("That is not the admin token.")),
        ));
    }
    let (id, _) = ctx.state.sessions.create();
    info!("console login");
    Ok(redirect("/console", Some(session::set_cookie(&id))))
}

async fn logout(ctx: Ctx) -> Reply {
    let pairs = form_pairs(&ctx.body);
    if !csrf_ok(&ctx, &pairs) {
        return Ok(csrf_refused(&ctx));
    }
    if let Some(s) = &ctx.session {
        ctx.state.sessions.remove(s);
    }
    Ok(redirect("/console/login", Some(session::clear_cookie())))
}

async fn overview(ctx: Ctx) -> Reply {
    let store = &ctx.state.store;
    let now = crate::clock::now_ms();
    let baselines = match store.compliance_overview().await {
        Ok(b) => b,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let trend = match store.compliance_trend(now, TREND_DAYS).await {
        Ok(t) => t,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    // (baseline, instant, state) → devices
    let mut points: HashMap<(&str, i64, &str), u64> = HashMap::new();
    for p in &trend {
        points.insert((&p.baseline_id, p.at_ms, &p.state), p.devices);
    }
    let instants: Vec<i64> = (0..i64::from(TREND_DAYS))
        .rev()
        .map(|i| now - i * DAY_MS)
        .collect();
    let labels: Vec<String> = instants.iter().map(|t| html::date(*t)).collect();

    let mut b = String::new();
    if baselines.is_empty() {
        b.push_str(
            "<p>No baseline is defined or reported yet. Import baselines with \
             <code>mprelay compliance import</code>.</p>",
        );
    }
    b.push_str(&svg::legend());
    for o in &baselines {
        let counts = [
            ("compliant", o.compliant),
            ("non_compliant", o.non_compliant),
            ("error", o.error),
            ("unknown", o.unknown),
        ];
        let series: Vec<(&str, Vec<u64>)> = svg::STATES
            .iter()
            .map(|(s, _)| {
                let v = instants
                    .iter()
                    .map(|t| {
                        points
                            .get(&(o.baseline_id.as_str(), *t, *s))
                            .copied()
                            .unwrap_or(0)
                    })
                    .collect();
                (*s, v)
            })
            .collect();
        let _ = write!(
            b,
            "<section class=\"baseline\" data-baseline=\"{id}\">\
             <h2><a href=\"/console/baselines/{href}\">{name}</a> <small>{id}{rev}</small></h2>\
             <div class=\"charts\"><figure>{bars}<figcaption>Devices per state now</figcaption></figure>\
             <figure>{trend}<figcaption>Devices per state, last {TREND_DAYS} days</figcaption></figure></div>\
             <table class=\"counts\"><tr><th>devices</th><th>compliant</th><th>non-compliant</th>\
             <th>error</th><th>unknown</th><th>not applicable</th><th>never reported</th></tr>\
             <tr><td data-state=\"devices\">{}</td><td data-state=\"compliant\">{}</td>\
             <td data-state=\"non_compliant\">{}</td><td data-state=\"error\">{}</td>\
             <td data-state=\"unknown\">{}</td><td data-state=\"not_applicable\">{}</td>\
             <td data-state=\"never_reported\">{}</td></tr></table></section>",
            o.devices,
            o.compliant,
            o.non_compliant,
            o.error,
            o.unknown,
            o.not_applicable,
            o.never_reported,
            id = esc(&o.baseline_id),
            href = url_part(&o.baseline_id),
            name = esc(&o.name),
            rev = o.revision.map(|r| format!(" rev {r}")).unwrap_or_default(),
            bars = svg::bars(&format!("{}: devices per state", o.name), &counts),
            trend = svg::trend(&format!("{}: trend", o.name), &labels, &series),
        );
    }
    Ok(html_response(
        StatusCode::OK,
        page("Compliance", csrf(&ctx), &b),
    ))
}

fn opt(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("<code>{}</code>", esc(s)),
        None => "<span class=\"none\">—</span>".into(),
    }
}

fn settings_table(settings: &[crate::store::SettingView]) -> String {
    let mut b = String::from(
        "<table class=\"settings\"><tr><th>configuration item</th><th>setting</th>\
         <th>severity</th><th>state</th><th>expected</th><th>observed</th>\
         <th>after remediation</th><th>remediated</th><th>error</th></tr>",
    );
    for s in settings {
        let _ = write!(
            b,
            "<tr class=\"setting\" data-setting=\"{sid}\"><td>{ci} <small>rev {rev}</small></td>\
             <td>{sid}</td><td>{sev}</td><td>{state}</td><td><code>{exp}</code></td>\
             <td class=\"observed\">{before}</td><td>{after}</td><td>{rem}</td><td>{err}</td></tr>",
            ci = esc(&s.ci_id),
            rev = s.ci_revision,
            sid = esc(&s.setting_id),
            sev = esc(&s.severity),
            state = state_badge(&s.state),
            exp = esc(&s.expected),
            before = opt(&s.observed_before),
            after = opt(&s.observed_after),
            rem = if s.remediated { "yes" } else { "no" },
            err = esc(&s.error),
        );
    }
    b.push_str("</table>");
    b
}

fn hostname(h: &str) -> String {
    if h.is_empty() {
        "<span class=\"none\">(no hostname)</span>".into()
    } else {
        format!("<span class=\"hostname\">{}</span>", esc(h))
    }
}

async fn baseline(ctx: Ctx) -> Reply {
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

async fn devices(ctx: Ctx) -> Reply {
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

async fn device(ctx: Ctx) -> Reply {
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
    for bl in &dc.baselines {
        let c = &bl.current;
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

async fn relays(ctx: Ctx) -> Reply {
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

async fn retention(ctx: Ctx) -> Reply {
    let task = match ctx.state.store.maintenance_task(DELETE_AGED_CM_DATA).await {
        Ok(t) => t,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let saved = ctx.query.contains_key("saved");
    retention_page(
        &ctx,
        &RetentionForm::from_task(&task),
        &HashMap::new(),
        saved,
    )
    .await
}

async fn retention_save(ctx: Ctx) -> Reply {
    let pairs = form_pairs(&ctx.body);
    if !csrf_ok(&ctx, &pairs) {
        return Ok(csrf_refused(&ctx));
    }
    let store = &ctx.state.store;
    let current = match store.maintenance_task(DELETE_AGED_CM_DATA).await {
        Ok(t) => t,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let form = RetentionForm::from_pairs(&pairs);
    match form.check(&current) {
        Ok(task) => {
            if let Err(e) = store.update_maintenance_task(&task).await {
                return Ok(db_failed(&ctx, e));
            }
            ctx.state.policy_changed.notify_one();
            info!(
                days = task.delete_older_than_days,
                enabled = task.enabled,
                "retention task changed from the console"
            );
            Ok(redirect("/console/retention?saved=1", None))
        }
        Err(errors) => retention_page(&ctx, &form, &errors, false).await,
    }
}

async fn retention_page(
    ctx: &Ctx,
    f: &RetentionForm,
    errors: &HashMap<&'static str, String>,
    saved: bool,
) -> Reply {
    let runs = match ctx
        .state
        .store
        .maintenance_runs(DELETE_AGED_CM_DATA, 20)
        .await
    {
        Ok(r) => r,
        Err(e) => return Ok(db_failed(ctx, e)),
    };
    let mut b = String::new();
    if saved {
        b.push_str("<p class=\"notice\" role=\"status\" id=\"saved\">Saved. The relays get the new retention age with the next policy.</p>");
    }
    if !errors.is_empty() {
        let _ = write!(
            b,
            "<div class=\"errors\" role=\"alert\" id=\"form-errors\"><p>Nothing was saved: \
             {} field{} need{} fixing.</p></div>",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            if errors.len() == 1 { "s" } else { "" },
        );
    }
    let err = |name: &str| {
        errors
            .get(name)
            .map(|e| {
                format!(
                    "<p class=\"field-error\" id=\"{name}-error\">{}</p>",
                    esc(e)
                )
            })
            .unwrap_or_default()
    };
    let _ = write!(
        b,
        "<p>Delete Aged Configuration Management Data deletes reports, their setting results \
         and history older than the age below, in the window on the days ticked. The age is \
         also the retention the relays enforce and the privacy page states.</p>\
         <form method=\"post\" action=\"/console/retention\" class=\"retention\" novalidate>{csrf}\
         <p><label><input type=\"checkbox\" name=\"enabled\" id=\"enabled\"{checked}> Enabled</label></p>\
         <p><label for=\"delete_older_than_days\">Delete data older than (days, {min}–{max})</label>\
         <input type=\"number\" id=\"delete_older_than_days\" name=\"delete_older_than_days\" \
         min=\"{min}\" max=\"{max}\" value=\"{days}\">{e_days}</p>\
         <fieldset><legend>Days of the week</legend>",
        csrf = csrf_field(ctx),
        checked = if f.enabled { " checked" } else { "" },
        min = form::MIN_DAYS,
        max = form::MAX_DAYS,
        days = esc(&f.delete_older_than_days),
        e_days = err("delete_older_than_days"),
    );
    for d in form::DAYS {
        let _ = write!(
            b,
            "<label><input type=\"checkbox\" name=\"days_of_week\" value=\"{d}\"{c}> {d}</label> ",
            c = if f.days_of_week.iter().any(|x| x == d) {
                " checked"
            } else {
                ""
            }
        );
    }
    let _ = write!(
        b,
        "{e_week}</fieldset>\
         <p><label for=\"window\">Start window (HH:MM-HH:MM)</label>\
         <input type=\"text\" id=\"window\" name=\"window\" value=\"{window}\">{e_window}</p>\
         <p><label for=\"time_zone\">Time zone</label>\
         <input type=\"text\" id=\"time_zone\" name=\"time_zone\" value=\"{tz}\">{e_tz}</p>\
         <button type=\"submit\" id=\"save\">Save</button></form>",
        e_week = err("days_of_week"),
        window = esc(&f.window),
        e_window = err("window"),
        tz = esc(&f.time_zone),
        e_tz = err("time_zone"),
    );
    b.push_str(
        "<h2>Last runs</h2><table class=\"runs\"><tr><th>started</th><th>trigger</th>\
         <th>status</th><th>deleted data older than</th><th>rows deleted</th><th>by table</th>\
         <th>error</th></tr>",
    );
    for r in &runs {
        let tables: Vec<String> = r
            .rows_deleted
            .iter()
            .map(|(t, n)| format!("{}: {n}", esc(t)))
            .collect();
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(r.started_ms),
            esc(&r.trigger),
            r.status.as_str(),
            time(r.cutoff_ms),
            r.total_deleted,
            tables.join(", "),
            esc(r.error.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</table>");
    if runs.is_empty() {
        b.push_str("<p>The task has not run yet.</p>");
    }
    let since: BTreeMap<String, u64> = ctx.state.site.metrics.retention.rows_deleted();
    if !since.is_empty() {
        b.push_str("<p>Rows deleted since this server started: ");
        let parts: Vec<String> = since
            .iter()
            .map(|(t, n)| format!("{}: {n}", esc(t)))
            .collect();
        b.push_str(&parts.join(", "));
        b.push_str("</p>");
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(html_response(status, page("Retention", csrf(ctx), &b)))
}

async fn terms(ctx: Ctx) -> Reply {
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
