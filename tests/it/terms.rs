//! Terms and conditions and the privacy statement end to end: versions published at the site,
//! carried to the agent in the policy, accepted through the relay, reported per user and device;
//! the portal gate on the agent; the privacy page and its retention age; and the same from the
//! command line with real processes.

use std::time::Duration;

use mprelay::agent::AgentError;
use mprelay::policy::SETTING_PRIVACY_URL;
use mprelay::policy::terms::{check_privacy_url, publish};
use mprelay::store::{DELETE_AGED_CM_DATA, PublishAction, TermsDraft};
use serde_json::Value;

use crate::compliance::{admin_client, get_json, wait_for_policy};
use crate::compliance_cli::{mprelay, run, spawn_server, stderr, stdout, workspace};
use crate::helpers::wait_until;

const WAIT: Duration = Duration::from_secs(10);

fn draft(title: &str, body: &str) -> TermsDraft {
    TermsDraft {
        title: title.into(),
        body: body.into(),
        acceptance_statement: "I have read and accept these terms.".into(),
        summary: Some("Use company devices for work.".into()),
        display_name: Some("AUP".into()),
        description: None,
    }
}

fn not_accepted(e: AgentError) -> (u32, Option<u32>) {
    match e {
        AgentError::TermsNotAccepted {
            version, accepted, ..
        } => (version, accepted),
        other => panic!("expected a refusal for unaccepted terms, got: {other}"),
    }
}

crate::both_backends!(versions_acceptances_the_report_and_the_portal_gate);
async fn versions_acceptances_the_report_and_the_portal_gate(db: crate::db::TestDb) {
    let mut sys = crate::compliance::system_on(Some(&db.url)).await;
    let p = publish(
        &sys.store,
        &mprelay::store::Actor::cli(),
        &draft("Acceptable use", "Be nice.\n"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(p.action, PublishAction::First);
    assert_eq!(p.terms.version, 1);
    // The publication is in the audit log, with what was published.
    let audit = sys
        .store
        .audit_entries(&mprelay::store::AuditFilter {
            object: Some("terms".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].action.as_str(), audit[0].object_id.as_str()),
        ("publish", "1.1")
    );
    assert_eq!(audit[0].after.as_ref().unwrap()["body"], "Be nice.\n");
    assert!(audit[0].before.is_none());
    wait_for_policy(&sys, p.policy_version).await;

    // Version 1 reaches the agent with the policy; alice has not accepted it yet.
    let agent = sys.agent("a1").await;
    let device = agent.device_id().hex();
    let status = agent.terms_status("alice").await.unwrap();
    let t = status.terms().unwrap();
    assert_eq!(
        (t.version, t.title.as_str(), t.body.as_str()),
        (1, "Acceptable use", "Be nice.\n")
    );
    assert_eq!(t.summary, "Use company devices for work.");
    assert_eq!(
        t.acceptance_statement,
        "I have read and accept these terms."
    );
    assert!(!status.accepted_current());
    assert_eq!(
        not_accepted(agent.portal_policy("alice").await.unwrap_err()),
        (1, None)
    );

    // Accepting goes through the relay; the device records it once the relay took it.
    let out = agent.accept_terms("alice", Some(1), WAIT).await.unwrap();
    assert!(out.delivered);
    assert_eq!((out.version, out.flush.accepted), (1, 1));
    assert_eq!(agent.accepted_terms("alice").unwrap().version, 1);
    let portal = agent.portal_policy("alice").await.unwrap();
    assert_eq!(portal.terms().unwrap().version, 1);
    // Acceptance is per user.
    assert_eq!(
        not_accepted(agent.portal_policy("bob").await.unwrap_err()),
        (1, None)
    );

    // A second device where nobody accepts anything.
    let other = sys.agent("a2").await;
    let other_id = other.device_id().hex();
    wait_until(Duration::from_secs(20), || async {
        sys.store.counts().await.unwrap().acceptances == 1
            && sys.store.device(&other_id).await.unwrap().is_some()
    })
    .await
    .expect("the site stores the acceptance and learns both devices");
    let r = sys.store.terms_acceptances().await.unwrap();
    assert_eq!(r.current_version, Some(1));
    assert_eq!(r.acceptances.len(), 1);
    let a = &r.acceptances[0];
    assert_eq!(
        (
            a.user.as_str(),
            a.device_id.as_str(),
            a.accepted_version,
            a.latest
        ),
        ("alice", device.as_str(), 1, true)
    );
    // The time is the user's acceptance, as the device recorded it.
    assert_eq!(
        a.accepted_ms,
        agent.accepted_terms("alice").unwrap().accepted_ms
    );
    assert_eq!(r.devices_without_acceptance, 1, "{r:?}");

    // A typo fix: same version, acceptances stand, the fixed text reaches the agent.
    let p = publish(
        &sys.store,
        &mprelay::store::Actor::cli(),
        &draft("Acceptable use", "Be kind.\n"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(p.action, PublishAction::Edited);
    assert_eq!((p.terms.version, p.terms.edition), (1, 2));
    wait_for_policy(&sys, p.policy_version).await;
    let portal = agent.portal_policy("alice").await.unwrap();
    let t = portal.terms().unwrap();
    assert_eq!((t.version, t.body.as_str()), (1, "Be kind.\n"));
    let r = sys.store.terms_acceptances().await.unwrap();
    assert_eq!(r.current_version, Some(1));
    assert!(r.acceptances[0].latest, "an edit keeps the acceptances");
    // Publishing the same text again changes nothing, not even the policy version.
    let again = publish(
        &sys.store,
        &mprelay::store::Actor::cli(),
        &draft("Acceptable use", "Be kind.\n"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(again.action, PublishAction::Unchanged);
    assert_eq!(again.policy_version, p.policy_version);

    // Version 2: everyone must accept again.
    let p = publish(
        &sys.store,
        &mprelay::store::Actor::cli(),
        &draft("Acceptable use", "Be kind, always.\n"),
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        (p.action, p.terms.version, p.terms.edition),
        (PublishAction::NewVersion, 2, 1)
    );
    wait_for_policy(&sys, p.policy_version).await;
    let r = sys.store.terms_acceptances().await.unwrap();
    assert_eq!(r.current_version, Some(2));
    assert_eq!(
        (r.acceptances[0].accepted_version, r.acceptances[0].latest),
        (1, false)
    );
    assert!(!r.users[0].latest);
    assert_eq!(
        not_accepted(agent.portal_policy("alice").await.unwrap_err()),
        (2, Some(1))
    );
    // Accepting the version read before is refused: it is no longer the one in force.
    match agent.accept_terms("alice", Some(1), WAIT).await {
        Err(AgentError::TermsVersion { asked, current }) => assert_eq!((asked, current), (1, 2)),
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    // Compliance reporting goes on while the portal is refused.
    let report_id = agent
        .queue_report(mprelay::sample::report(0, 7))
        .unwrap()
        .to_string();
    assert_eq!(agent.flush_until_empty(WAIT).await.unwrap().accepted, 1);

    // An acceptance made while no relay answers waits in the queue; the portal stays closed
    // until a relay takes it, whichever command delivers it.
    sys.stop_relay().await;
    let out = agent
        .accept_terms("alice", None, Duration::ZERO)
        .await
        .unwrap();
    assert!(!out.delivered);
    assert_eq!(out.flush.remaining, 1);
    assert_eq!(agent.accepted_terms("alice").unwrap().version, 1);
    drop(agent);
    sys.start_relay().await;
    // The site pulls the restarted relay (new port) once it is started again.
    sys.stop_site().await;
    crate::compliance::start_site(&mut sys).await;
    let agent = sys.agent("a1").await;
    assert_eq!(agent.device_id().hex(), device);
    assert_eq!(
        not_accepted(agent.portal_policy("alice").await.unwrap_err()).0,
        2
    );
    assert_eq!(agent.flush_until_empty(WAIT).await.unwrap().accepted, 1);
    assert_eq!(agent.accepted_terms("alice").unwrap().version, 2);
    let portal = agent.portal_policy("alice").await.unwrap();
    assert_eq!(portal.terms().unwrap().version, 2);

    wait_until(Duration::from_secs(20), || async {
        sys.store.counts().await.unwrap().acceptances == 2
            && sys.store.report(&report_id).await.unwrap().is_some()
    })
    .await
    .expect("the site stores the second acceptance and the report");
    let r = sys.store.terms_acceptances().await.unwrap();
    assert_eq!(
        (r.acceptances[0].accepted_version, r.acceptances[0].latest),
        (2, true)
    );

    // The admin API says the same.
    let c = admin_client(&sys);
    let token = sys.lb.admin_token().unwrap();
    let (st, body) = get_json(&c, "/api/v1/terms/acceptances", Some(&token)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["current_version"], 2);
    let row = &body["acceptances"][0];
    assert_eq!(
        (
            &row["user"],
            &row["device_id"],
            &row["accepted_version"],
            &row["latest"]
        ),
        (
            &Value::from("alice"),
            &Value::from(device.as_str()),
            &Value::from(2),
            &Value::from(true)
        )
    );
    assert_eq!(body["users"][0]["user"], "alice");
    assert_eq!(body["devices_without_acceptance"], 1);
    let (st, body) = get_json(&c, "/api/v1/terms", Some(&token)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        (
            &body["current"]["version"],
            &body["current"]["edition"],
            &body["current"]["body"]
        ),
        (
            &Value::from(2),
            &Value::from(1),
            &Value::from("Be kind, always.\n")
        )
    );
    let history: Vec<(u64, u64, &str)> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["version"].as_u64().unwrap(),
                t["edition"].as_u64().unwrap(),
                t["body"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            (1, 1, "Be nice.\n"),
            (1, 2, "Be kind.\n"),
            (2, 1, "Be kind, always.\n")
        ]
    );
    assert_eq!(body["current"]["display_name"], "AUP");
    for path in ["/api/v1/terms", "/api/v1/terms/acceptances"] {
        let (st, _) = get_json(&c, path, None).await;
        assert_eq!(st, 401, "{path} needs the token");
    }
}

crate::both_backends!(the_privacy_page_follows_the_retention_task_and_links_the_statement);
async fn the_privacy_page_follows_the_retention_task_and_links_the_statement(
    db: crate::db::TestDb,
) {
    let sys = crate::compliance::system_on(Some(&db.url)).await;
    let c = admin_client(&sys);
    let p = page(&c).await;
    assert!(
        p.contains("older than <strong>90 days</strong> are deleted"),
        "{p}"
    );
    for must in [
        "Device identity",
        "expected value, the value observed before and after remediation",
        "Terms and conditions acceptances",
        "over TLS",
        "message-level envelope",
        "<strong>in plaintext</strong> in the site database",
        "Nothing is sent to any third party",
        "has not published a privacy statement URL",
    ] {
        assert!(p.contains(must), "missing {must:?}: {p}");
    }

    // The age follows the task's settings, without a restart.
    let mut task = sys
        .store
        .maintenance_task(DELETE_AGED_CM_DATA)
        .await
        .unwrap();
    task.delete_older_than_days = 30;
    sys.store
        .update_maintenance_task(&mprelay::store::Actor::cli(), &task)
        .await
        .unwrap();
    let p = page(&c).await;
    assert!(
        p.contains("older than <strong>30 days</strong> are deleted"),
        "{p}"
    );
    assert!(!p.contains("90 days"), "{p}");
    task.enabled = false;
    sys.store
        .update_maintenance_task(&mprelay::store::Actor::cli(), &task)
        .await
        .unwrap();
    let p = page(&c).await;
    assert!(
        p.contains("The retention age is <strong>30 days</strong>, but")
            && p.contains("is <strong>disabled</strong>"),
        "{p}"
    );

    // The privacy statement URL: linked (escaped) on the page, carried to the agent.
    let url = check_privacy_url("https://example.com/privacy?lang=en&v=2").unwrap();
    assert!(
        sys.store
            .set_site_setting(&mprelay::store::Actor::cli(), SETTING_PRIVACY_URL, &url)
            .await
            .unwrap()
    );
    let p = page(&c).await;
    assert!(
        p.contains(
            "<a href=\"https://example.com/privacy?lang=en&amp;v=2\">https://example.com/privacy?lang=en&amp;v=2</a>"
        ),
        "{p}"
    );
    wait_for_policy(&sys, sys.store.policy_version().await.unwrap()).await;
    let agent = sys.agent("a1").await;
    // No terms are published: the portal is open.
    let s = agent.portal_policy("alice").await.unwrap();
    assert_eq!(s.policy.privacy_statement_url, url);
    assert_eq!(s.policy.retention_days, 30);
    assert!(matches!(
        agent.accept_terms("alice", None, WAIT).await,
        Err(AgentError::NoTerms { kept: false })
    ));
}

/// The privacy page, fetched without the bearer token: it is meant for users.
async fn page(c: &mprelay::net::HttpClient) -> String {
    let resp = c.get("/privacy").await.unwrap();
    assert_eq!(resp.status.as_u16(), 200);
    assert_eq!(
        resp.headers.get("content-type").unwrap(),
        "text/html; charset=utf-8"
    );
    String::from_utf8(resp.body.to_vec()).unwrap()
}

/// Whether a word is a device id (32 hex characters).
fn is_device_id(word: Option<&str>) -> bool {
    word.is_some_and(|w| w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The relay's two ports from its first line of output.
fn relay_ports(line: &str) -> (String, String) {
    let ports: Vec<&str> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').strip_prefix("127.0.0.1:"))
        .collect();
    assert_eq!(ports.len(), 2, "{line}");
    (ports[0].to_string(), ports[1].to_string())
}

#[tokio::test]
async fn terms_and_privacy_from_the_command_line() {
    let dir = workspace();
    let d = dir.path();

    // Invalid privacy statement URLs are refused with exit status 64 and a clear message.
    for (url, why) in [
        ("http://example.com/privacy", "it must start with https://"),
        ("https://", "it has no host"),
        ("https:///privacy", "it has no host"),
        ("not a url", "it holds spaces or control characters"),
        ("garbage", "it must start with https://"),
    ] {
        let o = run(
            &[
                "site",
                "set",
                "privacy-url",
                url,
                "--config",
                "examples/site.toml",
            ],
            d,
        );
        assert_eq!(o.status.code(), Some(64), "{url}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("privacy statement URL {url:?} is refused: {why}")),
            "{url}: {}",
            stderr(&o)
        );
    }
    let o = run(
        &[
            "site",
            "set",
            "privacy-url",
            "https://example.com/privacy",
            "--config",
            "examples/site.toml",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("privacy statement URL set to https://example.com/privacy"));

    std::fs::write(d.join("terms.txt"), "Use this device for work.\n").unwrap();
    let publish = |extra: &[&str]| {
        let mut args = vec![
            "terms",
            "publish",
            "--config",
            "examples/site.toml",
            "--title",
            "Acceptable use",
            "--body-file",
            "terms.txt",
            "--acceptance-statement",
            "I accept these terms.",
        ];
        args.extend_from_slice(extra);
        run(&args, d)
    };
    let o = publish(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("published version 1 of the terms and conditions"),
        "{}",
        stdout(&o)
    );
    let o = run(
        &[
            "terms",
            "publish",
            "--config",
            "examples/site.toml",
            "--title",
            "x",
            "--body-file",
            "missing.txt",
            "--acceptance-statement",
            "ok",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).contains("cannot read --body-file missing.txt"),
        "{}",
        stderr(&o)
    );

    let (_relay, line) = spawn_server(
        &["relay", "--config", "examples/relay.toml"],
        d,
        &[
            ("MPRELAY_RELAY__AGENT_LISTEN", "127.0.0.1:0"),
            ("MPRELAY_RELAY__SITE_LISTEN", "127.0.0.1:0"),
        ],
    );
    let (agent_port, site_port) = relay_ports(&line);
    let relays = format!("[{{url = \"https://localhost:{site_port}\"}}]");
    let (_site, _) = spawn_server(
        &["site", "--config", "examples/site.toml"],
        d,
        &[
            ("MPRELAY_SITE__RELAYS", &relays),
            ("MPRELAY_SITE__ADMIN__LISTEN", "127.0.0.1:0"),
            ("MPRELAY_SITE__POLICY__POLL_INTERVAL_MS", "100"),
        ],
    );
    let agent_url = format!("https://localhost:{agent_port}");
    let agent = |args: &[&str], user: &str| {
        let mut c = mprelay();
        c.arg("agent")
            .args(args)
            .args(["--config", "examples/agent.toml"])
            .current_dir(d)
            .env("MPRELAY_AGENT__RELAY_URL", &agent_url)
            .env("USER", user);
        c.output().unwrap()
    };

    // The terms reach the agent once the site pushed them; the user is the login user.
    let mut shown = String::new();
    wait_until(Duration::from_secs(30), || {
        let o = agent(&["terms", "show"], "alice");
        assert!(o.status.success(), "{}", stderr(&o));
        shown = stdout(&o);
        let got = shown.contains("Version 1,");
        async move { got }
    })
    .await
    .expect("the terms reach the agent");
    assert!(shown.starts_with("Acceptable use\n"), "{shown}");
    assert!(shown.contains("Use this device for work."), "{shown}");
    assert!(
        shown.contains("By accepting: I accept these terms."),
        "{shown}"
    );
    assert!(
        shown.contains("alice has not accepted version 1."),
        "{shown}"
    );

    // The portal functions are refused with exit status 77 until alice accepts.
    for f in ["privacy", "policy"] {
        let o = agent(&[f], "alice");
        assert_eq!(o.status.code(), Some(77), "{f}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(
                "user \"alice\" has not accepted version 1 of the terms and conditions (\"Acceptable use\")"
            ),
            "{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("mprelay agent terms accept --user alice"));
    }
    let o = agent(&["terms", "accept", "--version", "1"], "alice");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("alice accepted version 1"),
        "{}",
        stdout(&o)
    );
    let o = agent(&["privacy"], "alice");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "https://example.com/privacy\n");
    let o = agent(&["policy", "--user", "alice"], "someone-else");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("privacy statement: https://example.com/privacy"));
    assert!(stdout(&o).contains("terms and conditions: version 1 (Acceptable use), accepted"));
    let o = agent(&["privacy"], "bob");
    assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));

    let report = || {
        let o = run(&["report", "terms", "--config", "examples/site.toml"], d);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    // alice's row per user and device: (accepted version, latest), read from the right since
    // the hostname and the time hold spaces.
    let alice_row = |text: &str| -> Option<(String, String)> {
        let l = text
            .lines()
            .find(|l| l.starts_with("alice ") && is_device_id(l.split_whitespace().nth(1)))?;
        let f: Vec<&str> = l.split_whitespace().collect();
        Some((f[f.len() - 4].to_string(), f[f.len() - 1].to_string()))
    };
    let mut text = String::new();
    wait_until(Duration::from_secs(30), || {
        text = report();
        let got = alice_row(&text).is_some();
        async move { got }
    })
    .await
    .expect("the acceptance reaches the site");
    let row = alice_row(&text).unwrap();
    assert_eq!((row.0.as_str(), row.1.as_str()), ("1", "yes"), "{text}");
    assert!(
        text.contains("Users who never accepted any version are not listed"),
        "{text}"
    );

    // A new version: the report shows alice behind, and the agent refuses again once the new
    // policy reaches the relay.
    let o = publish(&["--new-version"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("published version 2"), "{}", stdout(&o));
    let text = report();
    let row = alice_row(&text).unwrap();
    assert_eq!((row.0.as_str(), row.1.as_str()), ("1", "no"), "{text}");
    let mut refused = String::new();
    wait_until(Duration::from_secs(30), || {
        let o = agent(&["policy"], "alice");
        let got = o.status.code() == Some(77);
        refused = stderr(&o);
        async move { got }
    })
    .await
    .expect("the agent refuses once version 2 is in force");
    assert!(
        refused.contains("has not accepted version 2 of the terms and conditions (\"Acceptable use\"); version 1 was accepted on this device before"),
        "{refused}"
    );
    let o = agent(&["terms", "accept"], "alice");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(agent(&["policy"], "alice").status.code(), Some(0));
}
