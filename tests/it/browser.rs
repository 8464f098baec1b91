//! The console in a real browser: headless Chromium driven over the W3C WebDriver protocol
//! (`chromedriver`, spoken to directly over HTTP). After a demo load: log in, read the chart's
//! counts and compare them with the database, follow a baseline to a non-compliant device, and
//! change the retention age through the form. A device whose hostname is markup is shown as
//! text, with nothing of it run. And every state's count links to its paged, filtered list.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `./test` installs them). Set `UPDATE_SCREENSHOT=1` to rewrite
//! `docs/console-overview.png` from the demo load.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mprelay::clock;
use mprelay::demo::{DemoOptions, Loopback};
use mprelay::pki::PkiPaths;
use mprelay::relay::RelayHandle;
use mprelay::site::policy::PolicyOptions;
use mprelay::site::{PullOptions, RelayTarget, SiteHandle, SiteOptions};
use mprelay::store::{DELETE_AGED_CM_DATA, Store};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::compliance::system_on;
use crate::console::{HOSTILE, load};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process with one browser session; both end when this is dropped.
struct Driver {
    port: u16,
    session: String,
    _process: Child,
}

impl Driver {
    /// Starts chromedriver on a free port and a headless Chromium that accepts the site's
    /// development certificate.
    async fn start() -> Self {
        assert!(
            Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
            "the browser tests need {CHROMIUM} and {CHROMEDRIVER}: \
             apt-get install chromium chromium-driver (as ./test does)"
        );
        let mut process = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {CHROMEDRIVER} ({e}): install Debian's chromium and \
                     chromium-driver (./test does)"
                )
            });
        let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("chromedriver says which port it listens on");
            if let Some(p) = line.split("started successfully on port ").nth(1) {
                break p.trim_end_matches('.').parse::<u16>().unwrap();
            }
        };
        // Keep reading its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100",
                         "--hide-scrollbars"],
            },
        }}});
        let v = http(port, "POST", "/session", Some(&caps)).await;
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {v}"))
            .to_string();
        Self {
            port,
            session,
            _process: process,
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
        .await;
        if v["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {v}");
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn title(&self) -> String {
        self.cmd("GET", "/title", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The elements matching a CSS selector.
    async fn all(&self, css: &str) -> Vec<String> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array().unwrap().iter().map(element_id).collect()
    }

    /// Waits (up to 20 s) until the page is at `url`: a click on a link or a submit button
    /// may return before the browser has navigated.
    async fn wait_url(&self, url: &str) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.url().await;
            if now == url {
                return;
            }
            assert!(Instant::now() < until, "still at {now}, expected {url}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to 20 s) for an element to be on the page, and returns it.
    async fn wait_find(&self, css: &str) -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self.all(css).await.into_iter().next() {
                return e;
            }
            assert!(Instant::now() < until, "no element {css:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The one element matching a CSS selector (the first, when several).
    async fn find(&self, css: &str) -> String {
        self.all(css)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css:?}"))
    }

    async fn text(&self, el: &str) -> String {
        self.cmd("GET", &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    async fn attr(&self, el: &str, name: &str) -> String {
        self.cmd("GET", &format!("/element/{el}/attribute/{name}"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    async fn click(&self, el: &str) {
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({})))
            .await;
    }

    async fn type_into(&self, el: &str, text: &str) {
        self.cmd("POST", &format!("/element/{el}/clear"), Some(json!({})))
            .await;
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Runs a function in the page (through the debugger, so the page's CSP does not apply).
    async fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn screenshot(&self) -> Vec<u8> {
        let v = self.cmd("GET", "/screenshot", None).await;
        base64_decode(v.as_str().unwrap())
    }
}

impl Drop for Driver {
    /// Closes the browser (a blocking request: chromedriver answers by itself).
    fn drop(&mut self) {
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                self.session
            );
            // The answer comes once the browser is closed; its head is enough.
            let _ = s.read(&mut [0u8; 1024]);
        }
    }
}

fn element_id(e: &Value) -> String {
    e["element-6066-11e4-a52e-4f735466cecf"]
        .as_str()
        .unwrap_or_else(|| panic!("not a web element: {e}"))
        .to_string()
}

/// One HTTP/1.1 exchange with chromedriver.
async fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // chromedriver may keep the connection open: read the head, then the length it gives.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "{method} {path}: connection closed before the response head"
        );
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut payload = raw[split + 4..].to_vec();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap());
    match length {
        Some(len) => {
            while payload.len() < len {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "{method} {path}: connection closed mid-body");
                payload.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            s.read_to_end(&mut payload).await.unwrap();
            if head.contains("transfer-encoding: chunked") {
                payload = dechunk(&payload);
            }
        }
    }
    serde_json::from_slice(&payload)
        .unwrap_or_else(|_| panic!("{method} {path}: {}", String::from_utf8_lossy(&payload)))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().filter(|c| **c != b'=').count();
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = if *c == b'=' { 0 } else { u32::from(val(*c)) };
            acc |= v << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..n]);
    }
    out
}

/// The demo's relay and site, restarted on the demo's spool, database and PKI, with the admin
/// listener.
struct DemoSystem {
    store: Store,
    token: String,
    relay: Option<RelayHandle>,
    site: Option<SiteHandle>,
    base: String,
}

impl DemoSystem {
    async fn start(dir: &Path) -> Self {
        let lb = Loopback {
            paths: PkiPaths::new(dir.join("certs")),
        };
        let relay = lb
            .start_relay(
                lb.relay_options("demo-relay", &dir.join("spool.db"))
                    .unwrap(),
            )
            .await
            .unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.join("site.db").display()))
            .await
            .unwrap();
        let site = mprelay::site::start(SiteOptions {
            store: store.clone(),
            relays: vec![RelayTarget {
                url: format!("https://127.0.0.1:{}", relay.site_addr.port()),
            }],
            client_tls: lb.site_client_tls().unwrap(),
            pull: PullOptions {
                wait: Duration::from_millis(200),
                ..Default::default()
            },
            clock: clock::system(),
            policy: PolicyOptions {
                poll: Duration::from_millis(100),
                backoff_min: Duration::from_millis(20),
                backoff_max: Duration::from_millis(200),
                evaluation_interval_s: None,
            },
            admin: Some(lb.admin_options().await.unwrap()),
        })
        .unwrap();
        let base = format!("https://127.0.0.1:{}", site.admin_addr.unwrap().port());
        Self {
            store,
            token: lb.admin_token().unwrap(),
            relay: Some(relay),
            site: Some(site),
            base,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.site.take() {
            s.shutdown().await;
        }
        if let Some(r) = self.relay.take() {
            r.shutdown().await;
        }
        self.store.close().await;
    }
}

async fn log_in(d: &Driver, base: &str, token: &str) {
    d.goto(&format!("{base}/console")).await;
    d.wait_url(&format!("{base}/console/login")).await;
    // A wrong token first: refused with a message, still on the login page.
    let field = d.find("#token").await;
    d.type_into(&field, "wrong-token-0123456789").await;
    d.click(&d.find("form.login button").await).await;
    assert_eq!(
        d.text(&d.wait_find("#login-error").await).await,
        "That is not the token of an enabled administrator."
    );
    let field = d.find("#token").await;
    d.type_into(&field, token).await;
    d.click(&d.find("form.login button").await).await;
    d.wait_url(&format!("{base}/console")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_demo_load_the_console_shows_the_database_and_changes_retention() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let demo = mprelay::demo::run(DemoOptions {
        devices: 24,
        dir: Some(dir.clone()),
        timeout: Duration::from_secs(120),
        serve: false,
    })
    .await
    .unwrap();
    let demo_took = started.elapsed();
    let sys = DemoSystem::start(&dir).await;
    let base = sys.base.clone();
    let browser_started = Instant::now();
    let d = Driver::start().await;
    log_in(&d, &base, &sys.token).await;

    // The chart's counts are the database's, for every baseline.
    let overview = sys.store.compliance_overview().await.unwrap();
    assert_eq!(overview, demo.overview);
    assert!(!overview.is_empty());
    for o in &overview {
        assert_eq!(o.devices, 24);
        let section = format!("section[data-baseline=\"{}\"]", o.baseline_id);
        for (state, n) in [
            ("compliant", o.compliant),
            ("non_compliant", o.non_compliant),
            ("error", o.error),
            ("unknown", o.unknown),
        ] {
            let bar = d
                .find(&format!("{section} rect.bar[data-state=\"{state}\"]"))
                .await;
            assert_eq!(d.attr(&bar, "data-count").await, n.to_string(), "{state}");
            let cell = d
                .find(&format!("{section} td[data-state=\"{state}\"]"))
                .await;
            assert_eq!(d.text(&cell).await, n.to_string(), "{state}");
        }
        // The trend ends at today's counts.
        let line = d
            .find(&format!("{section} polyline[data-state=\"compliant\"]"))
            .await;
        let values = d.attr(&line, "data-values").await;
        assert_eq!(values.split(' ').count(), 30);
        assert_eq!(
            values.split(' ').next_back().unwrap(),
            o.compliant.to_string()
        );
    }
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        let png = d.screenshot().await;
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console-overview.png");
        std::fs::write(&path, png).unwrap();
    }

    // Follow a baseline with non-compliant devices to one of them.
    let failing = overview
        .iter()
        .find(|o| o.non_compliant > 0)
        .expect("the demo has non-compliant devices");
    let link = d
        .find(&format!(
            "section[data-baseline=\"{}\"] h2 a",
            failing.baseline_id
        ))
        .await;
    d.click(&link).await;
    d.wait_url(&format!("{base}/console/baselines/{}", failing.baseline_id))
        .await;
    let listed = d.all("section.device").await;
    let bad = sys
        .store
        .noncompliant_devices(&failing.baseline_id)
        .await
        .unwrap();
    assert_eq!(listed.len(), bad.len());
    let first = d.find("a.device-link").await;
    let href = d.attr(&first, "href").await;
    d.click(&first).await;
    let target = href.split("/console/devices/").nth(1).unwrap();
    d.wait_url(&format!("{base}/console/devices/{target}"))
        .await;
    let url = d.url().await;
    let device_id = url
        .strip_prefix(&format!("{base}/console/devices/"))
        .unwrap()
        .to_string();
    let device = bad
        .iter()
        .find(|x| x.device_id == device_id)
        .expect("the device followed is non-compliant in the database");
    assert_eq!(
        d.text(&d.find("span.hostname").await).await,
        device.hostname
    );
    let badge = d
        .find(&format!(
            "section[data-baseline=\"{}\"] h2 .badge",
            failing.baseline_id
        ))
        .await;
    assert_eq!(d.text(&badge).await, "non-compliant");
    // Its failing settings with the values observed.
    for s in &device.settings {
        let row = d
            .find(&format!(
                "section[data-baseline=\"{}\"] tr[data-setting=\"{}\"]",
                failing.baseline_id, s.setting_id
            ))
            .await;
        let text = d.text(&row).await;
        assert!(text.contains(&s.expected), "{text} lacks {:?}", s.expected);
        if let Some(o) = &s.observed_before {
            assert!(text.contains(o.as_str()), "{text} lacks {o:?}");
        }
    }

    // Retention: a wrong age is refused with a message and not stored; a right one is.
    let before = sys
        .store
        .maintenance_task(DELETE_AGED_CM_DATA)
        .await
        .unwrap();
    d.goto(&format!("{base}/console/retention")).await;
    let age = d.find("#delete_older_than_days").await;
    d.type_into(&age, "0").await;
    d.click(&d.find("#save").await).await;
    let err = d
        .text(&d.wait_find("#delete_older_than_days-error").await)
        .await;
    assert!(err.contains("from 1 to 3650"), "{err}");
    assert_eq!(
        sys.store
            .maintenance_task(DELETE_AGED_CM_DATA)
            .await
            .unwrap(),
        before
    );
    let age = d.find("#delete_older_than_days").await;
    d.type_into(&age, "30").await;
    d.click(&d.find("#save").await).await;
    d.wait_url(&format!("{base}/console/retention?saved=1"))
        .await;
    assert!(d.text(&d.find("#saved").await).await.starts_with("Saved."));
    let after = sys
        .store
        .maintenance_task(DELETE_AGED_CM_DATA)
        .await
        .unwrap();
    assert_eq!(after.delete_older_than_days, 30);
    assert_eq!(after.days_of_week, before.days_of_week);
    assert_eq!(after.time_zone, before.time_zone);

    // Deployments: per deployment, the devices of its collection by state, as the database has
    // them; the form refuses an unknown baseline and changes nothing, and deploys a known one.
    d.goto(&format!("{base}/console/deployments")).await;
    for o in &overview {
        let row = format!("tr[data-deployment=\"{}@all-devices\"]", o.baseline_id);
        let cell = |c: &str| format!("{row} td.{c}");
        assert_eq!(d.text(&d.find(&cell("targeted")).await).await, "24");
        assert_eq!(d.text(&d.find(&cell("not-reported")).await).await, "0");
        assert_eq!(
            d.text(&d.find(&cell("non-compliant")).await).await,
            o.non_compliant.to_string()
        );
        assert_eq!(
            d.text(&d.find(&cell("error")).await).await,
            o.error.to_string()
        );
    }
    let before = sys.store.deployments().await.unwrap();
    d.type_into(&d.find("#baseline").await, "no-such-baseline")
        .await;
    d.click(&d.find("#deploy").await).await;
    let err = d.text(&d.wait_find("#deploy-error").await).await;
    assert!(err.contains("no baseline \"no-such-baseline\""), "{err}");
    assert_eq!(sys.store.deployments().await.unwrap(), before);
    d.type_into(&d.find("#baseline").await, "ssh-hardening")
        .await;
    d.type_into(&d.find("#interval").await, "4h").await;
    d.click(&d.find("#deploy").await).await;
    d.wait_url(&format!("{base}/console/deployments?saved=1"))
        .await;
    let ssh = sys.store.deployments().await.unwrap();
    let ssh = ssh
        .iter()
        .find(|x| x.baseline_id == "ssh-hardening")
        .unwrap();
    assert_eq!((ssh.remediate, ssh.interval_s), (false, 14_400));
    d.goto(&format!("{base}/console/collections")).await;
    let members = d
        .find("tr[data-collection=\"all-devices\"] td.members")
        .await;
    assert_eq!(d.text(&members).await, "24");
    d.goto(&format!("{base}/console/collections/all-devices"))
        .await;
    assert_eq!(d.all("tr.member").await.len(), 24);

    // The other pages open.
    for (path, heading) in [
        ("/console/relays", "Relays"),
        ("/console/terms", "Terms"),
        ("/console/devices", "Devices"),
    ] {
        d.goto(&format!("{base}{path}")).await;
        assert_eq!(d.text(&d.find("h1").await).await, heading);
    }
    d.goto(&format!("{base}/privacy")).await;
    assert!(d.title().await.contains("Privacy"));

    drop(d);
    eprintln!(
        "browser test: demo load {demo_took:?}, browser part {:?}",
        browser_started.elapsed()
    );
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostname_of_markup_is_shown_as_text_and_never_run() {
    let sys = system_on(None).await;
    load(&sys, &["plain-host", HOSTILE]).await;
    let hostile = sys
        .store
        .search_devices("script", 10)
        .await
        .unwrap()
        .pop()
        .unwrap();
    let base = format!(
        "https://127.0.0.1:{}",
        sys.site.as_ref().unwrap().admin_addr.unwrap().port()
    );
    let d = Driver::start().await;
    log_in(&d, &base, &sys.lb.admin_token().unwrap()).await;
    for path in [
        format!("/console/devices/{}", hostile.device_id),
        "/console/devices".to_string(),
    ] {
        d.goto(&format!("{base}{path}")).await;
        let shown: Vec<String> = {
            let mut v = Vec::new();
            for el in d.all("span.hostname").await {
                v.push(d.text(&el).await);
            }
            v
        };
        assert!(shown.iter().any(|h| h == HOSTILE), "{path}: {shown:?}");
        // Nothing of it ran or became an element.
        assert_ne!(d.title().await, "pwned", "{path}");
        assert!(d.all("main script, main img").await.is_empty(), "{path}");
        assert_eq!(
            d.eval("return document.querySelectorAll('script').length + (window.alerted ? 1 : 0);")
                .await,
            json!(0),
            "{path}"
        );
    }
}

/// Every state's count links to its list, pages follow "Next page" to the end, and the filter
/// form narrows the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_counts_link_to_paged_filtered_device_lists() {
    let sys = system_on(None).await;
    crate::lists::seven_devices(&sys.store).await;
    let base = format!(
        "https://127.0.0.1:{}",
        sys.site.as_ref().unwrap().admin_addr.unwrap().port()
    );
    let d = Driver::start().await;
    log_in(&d, &base, &sys.lb.admin_token().unwrap()).await;

    // The overview's error count is a link to the error devices, and so is the baseline page's.
    for start in ["/console".to_string(), "/console/baselines/b1".to_string()] {
        d.goto(&format!("{base}{start}")).await;
        let link = d.find("td[data-state=\"error\"] a.state-list").await;
        assert_eq!(d.text(&link).await, "2", "{start}");
        d.click(&link).await;
        d.wait_url(&format!("{base}/console/baselines/b1/devices?state=error"))
            .await;
        assert_eq!(shown_hosts(&d).await, ["host-2", "host-5"], "{start}");
        for row in d.all("tr.device").await {
            assert_eq!(d.attr(&row, "data-state").await, "error");
        }
    }

    // Three at a time through every device, by "Next page".
    d.goto(&format!("{base}/console/devices?limit=3")).await;
    let mut seen = shown_hosts(&d).await;
    loop {
        let next = d.all("a.next-page").await;
        let Some(next) = next.first() else { break };
        let before = d.url().await;
        d.click(next).await;
        wait_until_url_changes(&d, &before).await;
        let page = shown_hosts(&d).await;
        assert!(page.len() <= 3, "{page:?}");
        seen.extend(page);
    }
    assert_eq!(
        seen,
        (0..7).map(|i| format!("host-{i}")).collect::<Vec<_>>()
    );

    // The filter form: OS and state.
    d.goto(&format!("{base}/console/baselines/b1/devices"))
        .await;
    d.type_into(&d.find("#os").await, "ubuntu").await;
    d.click(&d.find("#state option[value=\"error\"]").await)
        .await;
    let before = d.url().await;
    d.click(&d.find("form.search button").await).await;
    wait_until_url_changes(&d, &before).await;
    assert_eq!(shown_hosts(&d).await, ["host-5"]);
}

async fn shown_hosts(d: &Driver) -> Vec<String> {
    let mut v = Vec::new();
    for el in d.all("table.devices span.hostname").await {
        v.push(d.text(&el).await);
    }
    v
}

async fn wait_until_url_changes(d: &Driver, from: &str) {
    crate::helpers::wait_until(Duration::from_secs(10), || async { d.url().await != from })
        .await
        .expect("the browser follows the link");
}
