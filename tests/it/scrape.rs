//! The relay's metrics without the site server's certificate: with a scrape token configured,
//! `/metrics` on the agent-facing listener answers a scraper presenting it, and nobody else;
//! without one it is not served there at all.

use bytes::Bytes;
use http::Method;
use mprelay::net::{HttpClient, HttpVersion};
use mprelay::site::admin::AdminToken;

use crate::helpers::{RawDevice, TestSystem, describe};

const TOKEN: &str = "scrape-token-0123456789abcdef";

async fn scrape(c: &HttpClient, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let r = c
        .request(Method::GET, "/metrics", None, &headers)
        .await
        .unwrap();
    (
        r.status.as_u16(),
        String::from_utf8(r.body.to_vec()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_token_opens_relay_metrics_on_the_agent_listener() {
    let sys = TestSystem::relay_only(|o| o.metrics_token = Some(AdminToken::new(TOKEN))).await;
    let c = sys.agent_client(HttpVersion::Http1);
    let dev = RawDevice::enroll(&c, &sys.enrollment_secret()).await;
    let (_, body) = dev.sealed_report(1);
    let resp = c.post("/v1/submissions", Bytes::from(body)).await.unwrap();
    assert_eq!(resp.status, 202, "{}", describe(&resp));

    let (st, text) = scrape(&c, Some(TOKEN)).await;
    assert_eq!(st, 200, "{text}");
    let m = crate::metrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(m.value("mprelay_relay_accepted_total", &[]), 1.0);
    for wrong in [None, Some("scrape-token-0123456789abcdeX"), Some("")] {
        let (st, text) = scrape(&c, wrong).await;
        assert_eq!(st, 401, "{wrong:?}");
        assert!(!text.contains("mprelay_relay_accepted_total"), "{wrong:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_agent_listener_serves_no_metrics() {
    let sys = TestSystem::relay_only(|_| {}).await;
    let c = sys.agent_client(HttpVersion::Http1);
    let (st, _) = scrape(&c, Some(TOKEN)).await;
    assert_eq!(st, 404);
    // The site-facing listener still serves them over mutual TLS.
    let (st, text) = scrape(&sys.site_client(), None).await;
    assert_eq!(st, 200);
    assert!(text.contains("mprelay_relay_accepted_total 0"), "{text}");
}

#[test]
fn a_scrape_token_readable_by_others_is_refused_naming_the_setting() {
    use std::os::unix::fs::PermissionsExt;

    use crate::compliance_cli::{run, stderr, workspace};
    let dir = workspace();
    let token = dir.path().join("certs/metrics.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = dir.path().join("examples/relay.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("# token_file = ", "token_file = ");
    std::fs::write(&cfg, text).unwrap();
    let o = run(&["relay", "--config", "examples/relay.toml"], dir.path());
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("metrics.token_file") && e.contains("0600"),
        "{e}"
    );
}
