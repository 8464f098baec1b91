//! Terms and conditions on the admin API, and the privacy page:
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/terms` | `{"current": TermsRecord or null, "history": [TermsRecord…]}`: the terms in force and every version and edit, oldest first |
//! | `GET /api/v1/terms/acceptances` | [`AcceptanceReport`]: per user and device the highest version accepted, when, and whether it is the latest; the same per user |
//! | `GET /privacy` | the privacy page (HTML), **without** the bearer token: it is meant for users |
//!
//! The privacy page states what the site collects, how it travels and is kept, the retention
//! age in force (read from the retention task's settings on every request, so it follows them),
//! that nothing goes to third parties, and links the privacy statement URL when one is set.

use std::fmt::Write;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;
use tracing::error;

use super::router::{Ctx, Reply, Router};
use crate::policy::SETTING_PRIVACY_URL;
use crate::site::console::html::esc;
use crate::store::{DELETE_AGED_CM_DATA, MaintenanceTask, StoreError, TermsRecord};
use crate::wire::{Refusal, json_response};

pub fn routes(r: Router) -> Router {
    r.get("/api/v1/terms", terms)
        .get("/api/v1/terms/acceptances", acceptances)
        .public(Method::GET, "/privacy", privacy)
}

fn internal(e: StoreError) -> Refusal {
    error!(error = %e, "admin API query failed");
    Refusal::Internal
}

#[derive(Serialize)]
struct Terms {
    current: Option<TermsRecord>,
    history: Vec<TermsRecord>,
}

async fn terms(ctx: Ctx) -> Reply {
    let history = ctx.state.store.terms_history().await.map_err(internal)?;
    let current = history
        .iter()
        .max_by_key(|t| (t.version, t.edition))
        .cloned();
    Ok(json_response(StatusCode::OK, &Terms { current, history }))
}

async fn acceptances(ctx: Ctx) -> Reply {
    let report = ctx
        .state
        .store
        .terms_acceptances()
        .await
        .map_err(internal)?;
    Ok(json_response(StatusCode::OK, &report))
}

async fn privacy(ctx: Ctx) -> Reply {
    let store = &ctx.state.store;
    let task = store
        .maintenance_task(DELETE_AGED_CM_DATA)
        .await
        .map_err(internal)?;
    let url = store
        .site_setting(SETTING_PRIVACY_URL)
        .await
        .map_err(internal)?
        .filter(|u| !u.is_empty());
    let mut resp = Response::new(Full::new(Bytes::from(privacy_page(&task, url.as_deref()))));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // A page of text: no scripts, frames or outside resources.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// The privacy page for the retention task's current settings and the privacy statement URL.
pub fn privacy_page(task: &MaintenanceTask, privacy_url: Option<&str>) -> String {
    let days = task.delete_older_than_days;
    let mut p = String::with_capacity(4096);
    p.push_str(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Privacy</title>\n\
         <style>body{font-family:sans-serif;max-width:46em;margin:2em auto;padding:0 1em;\
         line-height:1.5}</style>\n</head>\n<body>\n<h1>Privacy</h1>\n\
         <p>This site checks that the devices enrolled with it comply with the configuration \
         baselines their administrators set. This page says what it collects for that, how the \
         data travels and where it is kept, and for how long.</p>\n\
         <h2>What is collected</h2>\n<ul>\n\
         <li><strong>Device identity</strong>: an identifier derived from the device's public \
         key, its host name, operating system, agent version and hardware identifier, and which \
         relay it last reported through, and when.</li>\n\
         <li><strong>Compliance results</strong>: for every baseline evaluated on the device, \
         each setting's expected value, the value observed before and after remediation, \
         whether it was remediated, and any evaluation error. Observed values can include lines \
         of configuration files and the output of the commands a baseline names.</li>\n\
         <li><strong>Terms and conditions acceptances</strong>: the user name, the version \
         accepted, when, and on which device.</li>\n</ul>\n\
         <h2>How it travels and where it is kept</h2>\n\
         <p>Devices send this data to a relay over TLS. Each submission is also encrypted and \
         signed on the device (a message-level envelope), so it stays encrypted through any \
         proxy between the device and the relay. The relay opens and checks each submission and \
         keeps it until the site server has stored it. The site server stores the data \
         <strong>in plaintext</strong> in the site database.</p>\n\
         <h2>How long it is kept</h2>\n",
    );
    if task.enabled {
        let _ = writeln!(
            p,
            "<p>Compliance results older than <strong>{days} days</strong> are deleted by the \
             site's maintenance task <em>Delete Aged Configuration Management Data</em> (it runs \
             on {} between {} and {}, {}).",
            esc(&days_of_week(&task.days_of_week)),
            esc(&task.begin_time),
            esc(&task.latest_begin_time),
            esc(&task.time_zone),
        );
    } else {
        let _ = writeln!(
            p,
            "<p>The retention age is <strong>{days} days</strong>, but the maintenance task \
             that deletes older compliance results (<em>Delete Aged Configuration Management \
             Data</em>) is <strong>disabled</strong>: until it is enabled again, compliance \
             results are kept."
        );
    }
    let _ = writeln!(
        p,
        "Relays refuse submissions created more than {days} days ago. The latest state of each \
         device for each baseline, the device records and the terms acceptances are not aged \
         out: they are kept while the device is managed by this site.</p>"
    );
    p.push_str(
        "<h2>Third parties</h2>\n\
         <p>Nothing is sent to any third party: the data goes from the device to this site's \
         relays and its site server, and nowhere else.</p>\n",
    );
    match privacy_url {
        Some(u) => {
            let u = esc(u);
            let _ = writeln!(
                p,
                "<h2>Privacy statement</h2>\n<p>The organization's privacy statement: \
                 <a href=\"{u}\">{u}</a></p>"
            );
        }
        None => p.push_str(
            "<h2>Privacy statement</h2>\n<p>The organization has not published a privacy \
             statement URL.</p>\n",
        ),
    }
    p.push_str("</body>\n</html>\n");
    p
}

/// `["sat"]` → "Saturdays", `["mon", "thu"]` → "Mondays, Thursdays".
fn days_of_week(days: &[String]) -> String {
    let names: Vec<String> = days
        .iter()
        .map(|d| {
            let name = match d.as_str() {
                "mon" => "Monday",
                "tue" => "Tuesday",
                "wed" => "Wednesday",
                "thu" => "Thursday",
                "fri" => "Friday",
                "sat" => "Saturday",
                "sun" => "Sunday",
                other => return other.to_string(),
            };
            format!("{name}s")
        })
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(days: u32, enabled: bool) -> MaintenanceTask {
        MaintenanceTask {
            name: DELETE_AGED_CM_DATA.into(),
            enabled,
            delete_older_than_days: days,
            days_of_week: vec!["sat".into()],
            begin_time: "00:00".into(),
            latest_begin_time: "05:00".into(),
            time_zone: "UTC".into(),
            updated_ms: 0,
        }
    }

    #[test]
    fn the_page_states_the_age_and_escapes_what_it_shows() {
        let p = privacy_page(&task(45, true), Some("https://example.com/a?b=1&c=\"<x>\""));
        assert!(
            p.contains("older than <strong>45 days</strong> are deleted"),
            "{p}"
        );
        assert!(
            p.contains("on Saturdays between 00:00 and 05:00, UTC"),
            "{p}"
        );
        assert!(
            p.contains("<a href=\"https://example.com/a?b=1&amp;c=&quot;&lt;x&gt;&quot;\">"),
            "{p}"
        );
        assert!(!p.contains("<x>"));
        let p = privacy_page(&task(45, false), None);
        assert!(p.contains("is <strong>disabled</strong>"), "{p}");
        assert!(
            p.contains("has not published a privacy statement URL"),
            "{p}"
        );
        assert_eq!(esc("a'b&"), "a&#39;b&amp;");
    }
}
