//! The console over HTTP: login and the session cookie, pages that show what the database
//! holds, hostile hostnames shown as text, the retention form's validation and CSRF check, and
//! the console's own queries (trend, device search) on both backends. The browser tests
//! (`browser.rs`) drive the same pages in Chromium.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use mprelay::agent::Agent;
use mprelay::agent::run::RunOptions;
use mprelay::net::{ClientResponse, HttpClient};
use mprelay::store::Actor;
use mprelay::store::{DAY_MS, DELETE_AGED_CM_DATA};

use crate::both_backends;
use crate::compliance::{admin_client, system_on, wait_for_policy};
use crate::db::TestDb;
use crate::helpers::TestSystem;

/// A hostname a hostile agent might report.
pub const HOSTILE: &str = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

/// Imports the example baselines and has one agent per hostname evaluate a generated device
/// tree and report, as the demo does; returns when every report is stored.
pub async fn load(sys: &TestSystem, hostnames: &[&str]) {
    let files: Vec<(String, String)> = mprelay::demo::EXAMPLE_BASELINES
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let s = mprelay::policy::import_texts(&sys.store, &files)
        .await
        .unwrap();
    let v = mprelay::policy::collection::deploy_to_all_devices(&sys.store, &Actor::cli(), &s)
        .await
        .unwrap();
    wait_for_policy(sys, v).await;
    let mut reports = 0;
    for (i, h) in hostnames.iter().enumerate() {
        reports += run_agent(sys, &format!("a{i}"), h, i as u64).await;
    }
    sys.wait_for_reports(reports).await;
}

/// One agent named `hostname` evaluates a generated tree; returns the reports it sent.
pub async fn run_agent(sys: &TestSystem, state: &str, hostname: &str, seed: u64) -> u64 {
    let mut opts = sys
        .lb
        .agent_options(sys.relay(), &sys.dir.path().join("agents").join(state))
        .unwrap();
    opts.hostname = hostname.to_string();
    let root = sys.dir.path().join("devices").join(state);
    mprelay::faketree::write_device_tree(&root, seed * 7919).unwrap();
    let agent = Agent::open(opts).await.unwrap();
    let round = agent
        .evaluate_round(&RunOptions {
            root,
            flush_deadline: Duration::from_secs(10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(round.flush.remaining, 0);
    round.reports.len() as u64
}

/// A browser-like client of the console: keeps the session cookie.
pub struct Browser {
    pub c: HttpClient,
    pub cookie: Option<String>,
}

impl Browser {
    pub async fn send(&self, method: Method, path: &str, form: Option<&str>) -> ClientResponse {
        let mut headers = vec![];
        let cookie = self.cookie.as_ref().map(|c| format!("mprelay_session={c}"));
        if let Some(c) = &cookie {
            headers.push(("cookie", c.as_str()));
        }
        if form.is_some() {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        self.c
            .request(
                method,
                path,
                form.map(|f| Bytes::from(f.to_string())),
                &headers,
            )
            .await
            .unwrap()
    }

    pub async fn page(&self, path: &str) -> (u16, String) {
        let r = self.send(Method::GET, path, None).await;
        (r.status.as_u16(), body(&r))
    }

    /// Logs in with `token`; returns the response.
    pub async fn login(&mut self, token: &str) -> ClientResponse {
        let r = self
            .send(
                Method::POST,
                "/console/login",
                Some(&format!("token={}", enc(token))),
            )
            .await;
        if let Some(v) = r.headers.get("set-cookie") {
            let v = v.to_str().unwrap();
            self.cookie = v
                .split(';')
                .next()
                .and_then(|kv| kv.strip_prefix("mprelay_session="))
                .map(str::to_string);
        }
        r
    }
}

pub fn body(r: &ClientResponse) -> String {
    String::from_utf8(r.body.to_vec()).unwrap()
}

/// Percent-encodes a form value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The CSRF token of the page's forms.
pub fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the page has a CSRF field")
        .to_string()
}

fn location(r: &ClientResponse) -> &str {
    r.headers
        .get("location")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

both_backends!(the_console_shows_the_database_and_guards_its_forms);
async fn the_console_shows_the_database_and_guards_its_forms(db: TestDb) {
    let sys = system_on(Some(&db.url)).await;
    load(&sys, &["alpha-01", "Beta-02", HOSTILE]).await;
    let store = &sys.store;
    let token = sys.lb.admin_token().unwrap();
    let mut b = Browser {
        c: admin_client(&sys),
        cookie: None,
    };

    // Without a session: to the login page; a wrong token is refused with a message.
    let r = b.send(Method::GET, "/console", None).await;
    assert_eq!((r.status.as_u16(), location(&r)), (303, "/console/login"));
    let (st, p) = b.page("/console/login").await;
    assert_eq!(st, 200);
    assert!(p.contains("name=\"token\""), "{p}");
    let r = b.login("not-the-token-at-all").await;
    assert_eq!(r.status, 401);
    assert!(body(&r).contains("That is not the token of an enabled administrator."));
    assert!(b.cookie.is_none());
    let r = b.login("").await;
    assert_eq!(r.status, 422);
    assert!(body(&r).contains("Enter the admin token."));

    let r = b.login(&token).await;
    assert_eq!((r.status.as_u16(), location(&r)), (303, "/console"));
    let set = r.headers.get("set-cookie").unwrap().to_str().unwrap();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }

    // The overview: counts per baseline as the database has them; no scripts allowed.
    let r = b.send(Method::GET, "/console", None).await;
    assert_eq!(r.status, 200);
    let csp = r
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    let p = body(&r);
    let overview = store.compliance_overview().await.unwrap();
    assert!(!overview.is_empty());
    for o in &overview {
        assert_eq!(o.devices, 3, "{o:?}");
        for (state, n) in [
            ("compliant", o.compliant),
            ("non_compliant", o.non_compliant),
            ("error", o.error),
            ("unknown", o.unknown),
        ] {
            let bar = format!("data-state=\"{state}\" data-count=\"{n}\"");
            let section = p
                .split(&format!("data-baseline=\"{}\"", o.baseline_id))
                .nth(1)
                .unwrap();
            assert!(section.contains(&bar), "{} {bar}", o.baseline_id);
        }
    }

    // The trend: today's counts are the current ones; a day ago nothing had reported.
    let now = mprelay::clock::now_ms();
    let trend = store.compliance_trend(now, 30).await.unwrap();
    for o in &overview {
        let at_now = |state: &str| {
            trend
                .iter()
                .filter(|t| t.baseline_id == o.baseline_id && t.at_ms == now && t.state == state)
                .map(|t| t.devices)
                .sum::<u64>()
        };
        assert_eq!(at_now("compliant"), o.compliant);
        assert_eq!(at_now("non_compliant"), o.non_compliant);
        assert_eq!(at_now("error"), o.error);
    }
    assert!(trend.iter().all(|t| t.at_ms == now), "{trend:?}");
    assert!(
        store
            .compliance_trend(now - DAY_MS, 30)
            .await
            .unwrap()
            .is_empty()
    );

    // A baseline with non-compliant devices lists them, with expected and observed values.
    let failing = overview
        .iter()
        .find(|o| o.non_compliant > 0)
        .expect("a failing baseline");
    let (st, p) = b
        .page(&format!("/console/baselines/{}", failing.baseline_id))
        .await;
    assert_eq!(st, 200);
    let devices = store
        .noncompliant_devices(&failing.baseline_id)
        .await
        .unwrap();
    for d in &devices {
        assert!(p.contains(&format!("href=\"/console/devices/{}\"", d.device_id)));
    }
    assert!(p.contains("<th>expected</th>") && p.contains("<th>observed</th>"));

    // The hostile hostname is text everywhere it appears.
    let hostile = store
        .search_devices("script", 10)
        .await
        .unwrap()
        .pop()
        .expect("the hostile device");
    assert_eq!(hostile.hostname, HOSTILE);
    let escaped = "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;";
    for path in [
        format!("/console/devices/{}", hostile.device_id),
        "/console/devices?q=%3Cscript".to_string(),
    ] {
        let (st, p) = b.page(&path).await;
        assert_eq!(st, 200, "{path}");
        assert!(p.contains(escaped), "{path}: {p}");
        assert!(!p.contains("<script") && !p.contains("<img"), "{path}");
    }

    // Device search: case-insensitive, wildcards taken literally.
    let hits = store.search_devices("ALPHA", 10).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].hostname, "alpha-01");
    assert!(store.search_devices("%", 10).await.unwrap().is_empty());
    assert!(store.search_devices("_", 10).await.unwrap().is_empty());
    assert_eq!(store.search_devices("", 10).await.unwrap().len(), 3);
    assert_eq!(store.search_devices("", 2).await.unwrap().len(), 2);
    // And by tag, `key=value` or a part of it.
    let alpha = hits[0].device_id.clone();
    let tags = [("env".to_string(), "prod".to_string())].into();
    store
        .tag_device(&Actor::cli(), &alpha, &tags, &[])
        .await
        .unwrap();
    let by_tag = store.search_devices("env=PROD", 10).await.unwrap();
    assert_eq!(by_tag.len(), 1);
    assert_eq!(by_tag[0].device_id, alpha);

    // Relays: the relay this site pulls, with its lag.
    let (st, p) = b.page("/console/relays").await;
    assert_eq!(st, 200);
    assert!(
        p.contains(&format!("data-relay=\"{}\"", sys.relay().relay_id)),
        "{p}"
    );

    // Retention: CSRF first, then every field checked; nothing stored until all are right.
    let before = store.maintenance_task(DELETE_AGED_CM_DATA).await.unwrap();
    let (_, p) = b.page("/console/retention").await;
    let csrf = csrf_of(&p);
    let good = "enabled=on&delete_older_than_days=45&days_of_week=sun&days_of_week=wed\
                &window=01%3A30-03%3A00&time_zone=UTC";
    let r = b.send(Method::POST, "/console/retention", Some(good)).await;
    assert_eq!(r.status, 403, "no CSRF token");
    let r = b
        .send(
            Method::POST,
            "/console/retention",
            Some(&format!("{good}&csrf=00{csrf}")),
        )
        .await;
    assert_eq!(r.status, 403, "wrong CSRF token");
    let bad = format!(
        "csrf={csrf}&delete_older_than_days=0&days_of_week=someday&window=05%3A00-02%3A00\
         &time_zone=Mars%2FOlympus"
    );
    let r = b.send(Method::POST, "/console/retention", Some(&bad)).await;
    assert_eq!(r.status, 422);
    let p = body(&r);
    for msg in [
        "4 fields need fixing",
        "from 1 to 3650",
        "&quot;someday&quot; is not a day of the week",
        "must be after the begin time",
        "&quot;Mars/Olympus&quot; is not a time zone",
    ] {
        assert!(p.contains(msg), "missing {msg:?}: {p}");
    }
    assert_eq!(
        store.maintenance_task(DELETE_AGED_CM_DATA).await.unwrap(),
        before
    );
    let r = b
        .send(
            Method::POST,
            "/console/retention",
            Some(&format!("{good}&csrf={csrf}")),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), location(&r)),
        (303, "/console/retention?saved=1")
    );
    let after = store.maintenance_task(DELETE_AGED_CM_DATA).await.unwrap();
    assert_eq!(after.delete_older_than_days, 45);
    assert_eq!(after.days_of_week, vec!["wed", "sun"]);
    assert_eq!(
        (after.begin_time.as_str(), after.latest_begin_time.as_str()),
        ("01:30", "03:00")
    );
    assert!(after.enabled);
    let (_, p) = b.page("/console/retention?saved=1").await;
    assert!(p.contains("Saved.") && p.contains("value=\"45\""), "{p}");
    let (_, privacy) = b.page("/privacy").await;
    assert!(privacy.contains("<strong>45 days</strong>"), "{privacy}");

    // Terms: none published yet.
    let (st, p) = b.page("/console/terms").await;
    assert_eq!(st, 200);
    assert!(p.contains("No terms are published"), "{p}");

    // The bearer token serves the pages too (no cookie, no CSRF token needed).
    let auth = format!("Bearer {token}");
    let r =
        b.c.request(
            Method::GET,
            "/console/relays",
            None,
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // Logging out ends the session: the old cookie no longer opens a page.
    let (_, p) = b.page("/console").await;
    let csrf = csrf_of(&p);
    let r = b
        .send(
            Method::POST,
            "/console/logout",
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!((r.status.as_u16(), location(&r)), (303, "/console/login"));
    assert!(
        r.headers
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = b.send(Method::GET, "/console/devices", None).await;
    assert_eq!((r.status.as_u16(), location(&r)), (303, "/console/login"));

    // Guessing is throttled: after 10 failed logins (one was above), even the right token
    // waits for the minute to pass.
    for _ in 0..9 {
        assert_eq!(b.login("guess-guess-guess").await.status, 401);
    }
    let r = b.login(&token).await;
    assert_eq!(r.status, 429);
    assert!(body(&r).contains("Too many failed logins"));
    assert!(r.headers.get("set-cookie").is_none());
    // Only that client waits: an administrator elsewhere (here 127.0.0.2) logs in.
    let other = login_from("127.0.0.2", &sys, &token).await;
    assert!(other.starts_with("HTTP/1.1 303"), "{other}");
    assert!(other.contains("mprelay_session="), "{other}");
}

/// Posts the login form from `local_ip` over a connection of its own; returns the raw response.
async fn login_from(local_ip: &str, sys: &TestSystem, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let addr = sys.site.as_ref().unwrap().admin_addr.expect("admin API");
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{local_ip}:0").parse().unwrap()).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
    let roots = mprelay::pki::load_certs(&sys.lb.paths.ca_cert()).unwrap();
    let tls = mprelay::pki::client_config(&roots, None, &[b"http/1.1"]).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let form = format!("token={}", enc(token));
    let req = format!(
        "POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{form}",
        form.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // The server closes after answering (Connection: close); a missing close_notify is fine.
    let _ = conn.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

both_backends!(the_trend_counts_each_day_from_the_history);
async fn the_trend_counts_each_day_from_the_history(db: TestDb) {
    use std::collections::BTreeMap;

    use mprelay::net::HttpVersion;

    use crate::helpers::{RawDevice, describe};

    let sys = TestSystem::start_on(&db.url).await;
    let c = sys.agent_client(HttpVersion::Http2);
    let now = mprelay::clock::now_ms();
    let hour = 3_600_000;
    // Reports evaluated days ago, in order per device, states varying with the seed.
    let times = [
        now - 20 * DAY_MS - 5 * hour,
        now - 7 * DAY_MS + hour,
        now - 2 * DAY_MS - 3 * hour,
        now - hour,
    ];
    let mut devices = Vec::new();
    let mut sent = 0;
    for d in 0..5u64 {
        let dev = RawDevice::enroll(&c, &sys.enrollment_secret()).await;
        for (k, t) in times.iter().enumerate().skip(d as usize % 2) {
            let mut report = mprelay::sample::report(0, d * 31 + k as u64 * 7);
            report.evaluated_unix_ms = *t;
            let id = mprelay::ids::MessageId::new().to_string();
            let sealed = dev.seal(&dev.submission(&id, *t, report));
            let body = Bytes::from(prost::Message::encode_to_vec(&sealed));
            let r = c.post("/v1/submissions", body).await.unwrap();
            assert_eq!(r.status, 202, "{}", describe(&r));
            sent += 1;
        }
        devices.push(dev.signer.device_id().hex());
    }
    sys.wait_for_reports(sent).await;

    // By brute force from each device's history: who was in which state at each instant.
    let mut expected: BTreeMap<(String, i64, String), u64> = BTreeMap::new();
    let mut states = std::collections::BTreeSet::new();
    for id in &devices {
        let dc = sys.store.device_compliance(id).await.unwrap().unwrap();
        for b in &dc.baselines {
            for i in 0..30 {
                let t = now - i * DAY_MS;
                for h in &b.history {
                    states.insert(h.state.clone());
                    if h.started_ms <= t && h.ended_ms.is_none_or(|e| e > t) {
                        *expected
                            .entry((b.current.baseline_id.clone(), t, h.state.clone()))
                            .or_default() += 1;
                    }
                }
            }
        }
    }
    assert!(
        states.len() >= 2,
        "the reports should vary in state: {states:?}"
    );
    let got: BTreeMap<(String, i64, String), u64> = sys
        .store
        .compliance_trend(now, 30)
        .await
        .unwrap()
        .into_iter()
        .map(|p| ((p.baseline_id, p.at_ms, p.state), p.devices))
        .collect();
    assert_eq!(got, expected);
    // 21 days ago nobody had reported; 20 days ago the three devices that report from then on.
    let total_at = |days: i64| {
        got.iter()
            .filter(|((_, t, _), _)| *t == now - days * DAY_MS)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    assert_eq!(total_at(21), 0);
    assert_eq!(total_at(20), 3);
    assert_eq!(total_at(0), 5);
}
