//! Compliance settings end to end: a baseline imported at the site, pushed to the relay as
//! policy, fetched by an agent that evaluates (and remediates) a fake file-system tree with
//! known violations, and the exact results in the site database and on the admin API.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Method;
use mprelay::agent::Agent;
use mprelay::agent::run::{PolicySource, RunOptions};
use mprelay::clock;
use mprelay::net::HttpClient;
use mprelay::pki;
use mprelay::site::policy::PolicyOptions;
use mprelay::site::{PullOptions, RelayTarget, SiteOptions};
use mprelay::store::Actor;
use mprelay::store::SettingView;
use serde_json::Value;

use crate::both_backends;
use crate::db::TestDb;
use crate::helpers::{TestSystem, wait_until};

pub(crate) const BASELINE: &str = r#"
[[configuration_item]]
id = "sshd"
revision = 1
name = "sshd"

[[configuration_item.setting]]
id = "root-login"
severity = "critical"
remediation_allowed = true
noncompliant_if_missing = true
evaluator = { kind = "config_line", path = "/etc/ssh/sshd_config", key = "PermitRootLogin" }
rule = { operator = "equals", value = "no" }

[[configuration_item.setting]]
id = "password-auth"
severity = "critical"
remediation_allowed = true
noncompliant_if_missing = true
evaluator = { kind = "config_line", path = "/etc/ssh/sshd_config", key = "PasswordAuthentication" }
rule = { operator = "equals", value = "no" }

[[configuration_item.setting]]
id = "max-auth-tries"
severity = "warning"
noncompliant_if_missing = true
evaluator = { kind = "config_line", path = "/etc/ssh/sshd_config", key = "MaxAuthTries" }
rule = { operator = "less_or_equal", value = 4 }

[[configuration_item.setting]]
id = "config-mode"
severity = "warning"
remediation_allowed = true
evaluator = { kind = "file_mode", path = "/etc/ssh/sshd_config" }
rule = { operator = "mode_at_most", value = "0600" }

[[configuration_item.setting]]
id = "banner"
severity = "information"
evaluator = { kind = "file_contains", path = "/etc/ssh/sshd_config", pattern = "^Banner\\s" }
rule = { operator = "exists" }

[[configuration_item]]
id = "kernel"
revision = 1
name = "kernel"

[[configuration_item.setting]]
id = "ip-forward"
severity = "warning"
remediation_allowed = true
evaluator = { kind = "sysctl", key = "net.ipv4.ip_forward" }
rule = { operator = "equals", value = 0 }

[[configuration_item.setting]]
id = "syncookies"
severity = "warning"
remediation_allowed = true
evaluator = { kind = "sysctl", key = "net.ipv4.tcp_syncookies" }
rule = { operator = "equals", value = 1 }

[[configuration_item.setting]]
id = "release"
evaluator = { kind = "command", program = "/bin/echo", args = ["5.10.0-28-amd64"] }
rule = { operator = "matches", value = "^5\\." }

[[configuration_item.setting]]
id = "ptrace"
severity = "warning"
evaluator = { kind = "sysctl", key = "kernel.yama.ptrace_scope" }
rule = { operator = "greater_or_equal", value = 1 }

[[configuration_item]]
id = "telnet"
revision = 1
name = "telnet server"

[[configuration_item.setting]]
id = "in-telnetd"
severity = "critical"
evaluator = { kind = "file_exists", path = "/usr/sbin/in.telnetd" }
rule = { operator = "exists" }

[[baseline]]
id = "t"
revision = 1
name = "Test baseline"

[[baseline.member]]
configuration_item = "sshd"
remediate = true

[[baseline.member]]
configuration_item = "kernel"
remediate = true

[[baseline.member]]
configuration_item = "telnet"
membership = "prohibited"
"#;

const SSHD: &str = "Include /etc/ssh/sshd_config.d/*.conf\n\
# comment\n\
PermitRootLogin yes\n\
MaxAuthTries 6\n\
PasswordAuthentication no\n\
Match Address 10.0.0.0/8\n\
    PermitRootLogin yes\n";

/// A device tree with known violations.
pub(crate) fn tree(root: &Path) {
    let ssh = root.join("etc/ssh");
    std::fs::create_dir_all(ssh.join("sshd_config.d")).unwrap();
    std::fs::write(ssh.join("sshd_config"), SSHD).unwrap();
    std::fs::set_permissions(
        ssh.join("sshd_config"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(
        ssh.join("sshd_config.d/50-cloud-init.conf"),
        "PasswordAuthentication yes\n",
    )
    .unwrap();
    let ipv4 = root.join("proc/sys/net/ipv4");
    std::fs::create_dir_all(&ipv4).unwrap();
    std::fs::write(ipv4.join("ip_forward"), "1\n").unwrap();
    std::fs::set_permissions(
        ipv4.join("ip_forward"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    std::fs::write(ipv4.join("tcp_syncookies"), "0\n").unwrap();
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::write(root.join("usr/sbin/in.telnetd"), "").unwrap();
}

/// Relay, and a site server with the admin API and a quick policy poll, the site database at
/// `url` (SQLite in the temporary directory when `None`).
pub(crate) async fn system_on(url: Option<&str>) -> TestSystem {
    let mut sys = TestSystem::relay_only_on(|_| {}, url).await;
    start_site(&mut sys).await;
    // The site stores its evaluation interval first (a policy change of its own); wait for it so
    // the versions the tests see come from their own changes.
    wait_until(Duration::from_secs(20), || async {
        sys.store.policy_version().await.unwrap() > 0
    })
    .await
    .expect("the site stores its settings");
    sys
}

pub(crate) async fn start_site(sys: &mut TestSystem) {
    let site = mprelay::site::start(SiteOptions {
        store: sys.store.clone(),
        relays: vec![RelayTarget {
            url: format!("https://127.0.0.1:{}", sys.relay().site_addr.port()),
        }],
        client_tls: sys.lb.site_client_tls().unwrap(),
        pull: PullOptions {
            wait: Duration::from_millis(200),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            ..Default::default()
        },
        clock: clock::system(),
        policy: PolicyOptions {
            poll: Duration::from_millis(50),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            evaluation_interval_s: Some(600),
        },
        admin: Some(sys.lb.admin_options().await.unwrap()),
    })
    .unwrap();
    sys.site = Some(site);
}

/// Imports definitions and deploys their baselines to every device; the policy version after.
pub(crate) async fn import(sys: &TestSystem, text: &str) -> u64 {
    let s = mprelay::policy::import_texts(&sys.store, &[("t.toml".to_string(), text.to_string())])
        .await
        .unwrap();
    mprelay::policy::collection::deploy_to_all_devices(&sys.store, &Actor::cli(), &s)
        .await
        .unwrap()
}

/// Waits until the relay accepted policy `version` (or a later one) from the site; returns the
/// version it holds.
pub(crate) async fn wait_for_policy(sys: &TestSystem, version: u64) -> u64 {
    let site = sys.site.as_ref().unwrap();
    wait_until(Duration::from_secs(20), || async {
        site.relays[0].policy_version.load(Ordering::Relaxed) >= version
    })
    .await
    .unwrap_or_else(|_| panic!("the relay never got policy version {version}"));
    site.relays[0].policy_version.load(Ordering::Relaxed)
}

pub(crate) fn run_opts(root: &Path) -> RunOptions {
    RunOptions {
        root: root.to_path_buf(),
        flush_deadline: Duration::from_secs(10),
        ..Default::default()
    }
}

fn by_id<'a>(settings: &'a [SettingView], id: &str) -> &'a SettingView {
    settings
        .iter()
        .find(|s| s.setting_id == id)
        .unwrap_or_else(|| panic!("no setting {id}"))
}

/// (state, observed before, observed after, remediated) of a setting.
fn outcome(s: &SettingView) -> (&str, Option<&str>, Option<&str>, bool) {
    (
        s.state.as_str(),
        s.observed_before.as_deref(),
        s.observed_after.as_deref(),
        s.remediated,
    )
}

pub(crate) fn admin_client(sys: &TestSystem) -> HttpClient {
    let roots = pki::load_certs(&sys.lb.paths.ca_cert()).unwrap();
    let tls = pki::client_config(&roots, None, &[b"h2", b"http/1.1"]).unwrap();
    let addr = sys.site.as_ref().unwrap().admin_addr.expect("admin API");
    HttpClient::new(
        &format!("https://127.0.0.1:{}", addr.port()),
        std::sync::Arc::new(tls),
    )
    .unwrap()
}

pub(crate) async fn get_json(c: &HttpClient, path: &str, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let resp = c.request(Method::GET, path, None, &headers).await.unwrap();
    let body: Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|_| panic!("{path}: not JSON: {:?}", resp.body));
    assert_eq!(
        resp.headers.get("content-type").unwrap(),
        "application/json",
        "{path}"
    );
    (resp.status.as_u16(), body)
}

both_backends!(agent_evaluates_remediates_and_the_site_reports_exactly_what_happened);
async fn agent_evaluates_remediates_and_the_site_reports_exactly_what_happened(db: TestDb) {
    let sys = system_on(Some(&db.url)).await;
    let version = import(&sys, BASELINE).await;
    let version = wait_for_policy(&sys, version).await;

    let root = sys.dir.path().join("device-root");
    tree(&root);
    let agent = sys.agent("a1").await;
    let round = agent.evaluate_round(&run_opts(&root)).await.unwrap();
    assert_eq!(round.policy_version, version);
    assert_eq!(round.source, PolicySource::Fetched);
    assert_eq!(round.interval, Duration::from_secs(600));
    assert_eq!((round.flush.accepted, round.flush.remaining), (1, 0));
    assert_eq!(round.remediated, 4);
    let message_id = round.reports[0].1.to_string();
    sys.wait_for_reports(1).await;

    // Every setting, exactly.
    let settings = sys.store.report_settings(&message_id).await.unwrap();
    assert_eq!(settings.len(), 10);
    assert_eq!(
        outcome(by_id(&settings, "root-login")),
        ("compliant", Some("yes"), Some("no"), true)
    );
    // Set by the cloud-init drop-in, which is read first; that file is the one fixed.
    assert_eq!(
        outcome(by_id(&settings, "password-auth")),
        ("compliant", Some("yes"), Some("no"), true)
    );
    assert_eq!(
        outcome(by_id(&settings, "max-auth-tries")),
        ("non_compliant", Some("6"), None, false)
    );
    assert_eq!(
        outcome(by_id(&settings, "config-mode")),
        ("compliant", Some("0644"), Some("0600"), true)
    );
    assert_eq!(
        outcome(by_id(&settings, "banner")),
        ("non_compliant", None, None, false)
    );
    let ipf = by_id(&settings, "ip-forward");
    assert_eq!(outcome(ipf), ("error", Some("1"), None, false));
    assert_eq!(
        ipf.error,
        "remediation failed: /proc/sys/net/ipv4/ip_forward is read-only (mode 0444); not changed"
    );
    assert_eq!(
        outcome(by_id(&settings, "syncookies")),
        ("compliant", Some("0"), Some("1"), true)
    );
    assert_eq!(
        outcome(by_id(&settings, "release")),
        ("compliant", Some("5.10.0-28-amd64"), None, false)
    );
    assert_eq!(
        outcome(by_id(&settings, "ptrace")),
        ("not_applicable", None, None, false)
    );
    let telnet = by_id(&settings, "in-telnetd");
    assert_eq!(
        outcome(telnet),
        ("non_compliant", Some("regular file"), None, false)
    );
    assert_eq!(telnet.expected, "prohibited: exists");
    assert_eq!(by_id(&settings, "root-login").expected, "== no");
    assert_eq!(by_id(&settings, "max-auth-tries").severity, "warning");

    // Roll-ups: the report, current compliance, history.
    let report = sys.store.report(&message_id).await.unwrap().unwrap();
    assert_eq!(
        (report.baseline_id.as_str(), report.baseline_revision),
        ("t", 1)
    );
    assert_eq!(report.state, "non_compliant");
    assert_eq!(report.max_severity, "critical");
    assert_eq!(
        (
            report.n_compliant,
            report.n_non_compliant,
            report.n_error,
            report.n_not_applicable,
            report.n_unknown
        ),
        (5, 3, 1, 1, 0)
    );
    let device = agent.device_id().hex();
    let current = sys.store.current(&device, "t").await.unwrap().unwrap();
    assert_eq!(current.message_id, message_id);
    assert_eq!(current.state.as_str(), "non_compliant");

    // The tree was fixed where allowed, and only there.
    let sshd = std::fs::read_to_string(root.join("etc/ssh/sshd_config")).unwrap();
    assert_eq!(
        sshd,
        SSHD.replacen("PermitRootLogin yes", "PermitRootLogin no", 1)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ssh/sshd_config.d/50-cloud-init.conf")).unwrap(),
        "PasswordAuthentication no\n"
    );
    let mode = std::fs::metadata(root.join("etc/ssh/sshd_config"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    assert_eq!(
        std::fs::read_to_string(root.join("proc/sys/net/ipv4/ip_forward")).unwrap(),
        "1\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("proc/sys/net/ipv4/tcp_syncookies")).unwrap(),
        "1\n"
    );
    assert!(
        root.join("usr/sbin/in.telnetd").exists(),
        "prohibited items are not removed"
    );

    // A second round: the policy is unchanged, the fixes hold, nothing is remediated again.
    let round = agent.evaluate_round(&run_opts(&root)).await.unwrap();
    assert_eq!(round.source, PolicySource::Unchanged);
    assert_eq!(round.remediated, 0);
    sys.wait_for_reports(2).await;
    let second = round.reports[0].1.to_string();
    let settings = sys.store.report_settings(&second).await.unwrap();
    assert_eq!(
        outcome(by_id(&settings, "root-login")),
        ("compliant", Some("no"), None, false)
    );
    let history = sys.store.history(&device, "t").await.unwrap();
    assert_eq!(history.len(), 1, "the state did not change: one interval");

    // The admin API says the same, over HTTPS with the bearer token.
    let c = admin_client(&sys);
    let token = sys.lb.admin_token().unwrap();
    let (st, body) = get_json(&c, "/api/v1/compliance/baselines", Some(&token)).await;
    assert_eq!(st, 200, "{body}");
    let b = &body["baselines"][0];
    assert_eq!(b["baseline_id"], "t");
    assert_eq!(b["revision"], 1);
    assert_eq!(
        (
            &b["devices"],
            &b["non_compliant"],
            &b["compliant"],
            &b["never_reported"]
        ),
        (
            &Value::from(1),
            &Value::from(1),
            &Value::from(0),
            &Value::from(0)
        )
    );

    let (st, body) = get_json(&c, "/api/v1/compliance/baselines/t", Some(&token)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["name"], "Test baseline");
    assert_eq!(body["members"][2]["membership"], "prohibited");
    assert_eq!(body["revisions"][0]["source_file"], "t.toml");
    let ipf = body["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["setting_id"] == "ip-forward")
        .unwrap();
    assert_eq!(
        (&ipf["error"], &ipf["compliant"]),
        (&Value::from(1), &Value::from(0))
    );

    let (st, body) = get_json(
        &c,
        &format!("/api/v1/compliance/devices/{device}"),
        Some(&token),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["device"]["device_id"], device.as_str());
    let t = &body["baselines"][0];
    assert_eq!(
        (&t["baseline_id"], &t["state"]),
        (&Value::from("t"), &Value::from("non_compliant"))
    );
    assert_eq!(t["max_severity"], "critical");
    assert_eq!(t["message_id"], second.as_str());
    assert_eq!(t["history"].as_array().unwrap().len(), 1);
    let root_login = t["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["setting_id"] == "root-login")
        .unwrap();
    assert_eq!(root_login["observed_before"], "no");

    let (st, body) = get_json(
        &c,
        "/api/v1/compliance/noncompliant?baseline=t",
        Some(&token),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    let failing: Vec<&str> = devices[0]["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["setting_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        failing,
        vec!["max-auth-tries", "banner", "ip-forward", "in-telnetd"]
    );

    // Refusals, as JSON with the right status.
    let (st, body) = get_json(&c, "/api/v1/compliance/baselines", None).await;
    assert_eq!((st, &body["code"]), (401, &Value::from("unauthorized")));
    let (st, _) = get_json(
        &c,
        "/api/v1/compliance/baselines",
        Some("not-the-token-at-all"),
    )
    .await;
    assert_eq!(st, 401);
    let (st, body) = get_json(&c, "/api/v1/compliance/baselines/nope", Some(&token)).await;
    assert_eq!((st, &body["code"]), (404, &Value::from("not_found")));
    assert!(
        body["message"].as_str().unwrap().contains("\"nope\""),
        "{body}"
    );
    let (st, body) = get_json(&c, "/api/v1/compliance/devices/0000", Some(&token)).await;
    assert_eq!(st, 404, "{body}");
    let (st, body) = get_json(&c, "/api/v1/compliance/noncompliant", Some(&token)).await;
    assert_eq!((st, &body["code"]), (400, &Value::from("malformed")));
    let (st, _) = get_json(
        &c,
        "/api/v1/compliance/noncompliant?baseline=nope",
        Some(&token),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = get_json(&c, "/api/v1/nothing-here", Some(&token)).await;
    assert_eq!(st, 404);
    let resp = c.get("/healthz").await.unwrap();
    assert_eq!(
        (resp.status.as_u16(), resp.body.as_ref()),
        (200, b"ok\n".as_ref())
    );
}

both_backends!(policy_versions_only_rise_across_restarts_and_reach_agents);
async fn policy_versions_only_rise_across_restarts_and_reach_agents(db: TestDb) {
    let mut sys = system_on(Some(&db.url)).await;
    let v1 = import(&sys, BASELINE).await;
    let v1 = wait_for_policy(&sys, v1).await;
    assert_eq!(v1, sys.store.policy_version().await.unwrap());

    // A restarted site pushes the same version again; the relay takes it.
    sys.stop_site().await;
    start_site(&mut sys).await;
    assert_eq!(wait_for_policy(&sys, v1).await, v1);

    let agent: Agent = sys.agent("a1").await;
    let p = agent.fetch_policy(0, "").await.unwrap().expect("a policy");
    assert_eq!(p.version, v1);
    assert_eq!(p.evaluation_interval_s, 600);
    assert_eq!(p.baselines[0].members.len(), 3);

    // A new revision of an item raises the version; members on "latest" follow it.
    let v2 = import(
        &sys,
        &BASELINE
            .replacen(
                "id = \"sshd\"\nrevision = 1",
                "id = \"sshd\"\nrevision = 2",
                1,
            )
            .replace("value = 4", "value = 3"),
    )
    .await;
    assert!(v2 > v1);
    assert_eq!(wait_for_policy(&sys, v2).await, v2);
    let p = agent
        .fetch_policy(v1, "")
        .await
        .unwrap()
        .expect("the new policy");
    assert_eq!(p.version, v2);
    let sshd = p.baselines[0].members[0]
        .configuration_item
        .as_ref()
        .unwrap();
    assert_eq!(sshd.revision, 2);
    assert!(
        agent.fetch_policy(v2, "").await.unwrap().is_none(),
        "unchanged"
    );

    // The relay keeps it across its own restart.
    sys.stop_relay().await;
    sys.start_relay().await;
    let agent = sys.agent("a1").await;
    assert!(agent.fetch_policy(v2, "").await.unwrap().is_none());

    // Blocking the device is a policy change: the relay refuses it from then on.
    sys.stop_site().await;
    start_site(&mut sys).await;
    let device = agent.device_id().hex();
    wait_until(Duration::from_secs(20), || async {
        sys.store.device(&device).await.unwrap().is_some()
    })
    .await
    .expect("the site learns the device");
    assert_eq!(
        sys.store
            .set_device_blocked(&mprelay::store::Actor::cli(), &device, true)
            .await
            .unwrap(),
        Some(true)
    );
    let v3 = sys.store.policy_version().await.unwrap();
    assert!(v3 > v2);
    assert_eq!(wait_for_policy(&sys, v3).await, v3);
    let e = agent.fetch_policy(v2, "").await.unwrap_err();
    assert!(matches!(e, mprelay::agent::AgentError::Blocked(_)), "{e}");
    let root = sys.dir.path().join("root");
    tree(&root);
    let e = agent.evaluate_round(&run_opts(&root)).await.unwrap_err();
    assert!(matches!(e, mprelay::agent::AgentError::Blocked(_)), "{e}");
    assert_eq!(
        sys.store
            .set_device_blocked(&mprelay::store::Actor::cli(), &device, true)
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        sys.store.policy_version().await.unwrap(),
        v3,
        "no change, no new version"
    );
    assert_eq!(
        sys.store
            .set_device_blocked(&mprelay::store::Actor::cli(), "nope", true)
            .await
            .unwrap(),
        None
    );
}

both_backends!(the_policy_carries_the_retention_age_in_force);
async fn the_policy_carries_the_retention_age_in_force(db: TestDb) {
    let sys = crate::helpers::TestSystem::start_on(&db.url).await;
    let c = sys.store.policy_contents().await.unwrap();
    assert_eq!(c.retention_days, 90);
    let mut task = sys
        .store
        .maintenance_task(mprelay::store::DELETE_AGED_CM_DATA)
        .await
        .unwrap();
    assert_eq!(task.days_of_week, vec!["sat".to_string()]);
    let before = sys.store.policy_version().await.unwrap();
    task.delete_older_than_days = 30;
    sys.store
        .update_maintenance_task(&mprelay::store::Actor::cli(), &task)
        .await
        .unwrap();
    assert!(sys.store.policy_version().await.unwrap() > before);
    let snapshot = mprelay::policy::build_snapshot(&sys.store.policy_contents().await.unwrap(), 0);
    assert_eq!(snapshot.unwrap().retention_days, 30);
}

both_backends!(maintenance_runs_are_recorded_and_a_dead_run_is_marked_interrupted);
async fn maintenance_runs_are_recorded_and_a_dead_run_is_marked_interrupted(db: TestDb) {
    use mprelay::store::{DELETE_AGED_CM_DATA, RunStatus, RunTrigger};
    let sys = crate::helpers::TestSystem::relay_only_on(|_| {}, Some(&db.url)).await;
    let s = &sys.store;
    let first = s
        .start_maintenance_run(DELETE_AGED_CM_DATA, RunTrigger::Schedule, 1_000, 10)
        .await
        .unwrap();
    // The process dies here; the next run finds the first still running.
    let second = s
        .start_maintenance_run(DELETE_AGED_CM_DATA, RunTrigger::Manual, 2_000, 20)
        .await
        .unwrap();
    let deleted = [
        ("compliance_reports".to_string(), 3u64),
        ("setting_results".to_string(), 105),
    ]
    .into_iter()
    .collect();
    s.update_maintenance_run(second, RunStatus::Succeeded, 2_500, &deleted, None)
        .await
        .unwrap();
    let runs = s.maintenance_runs(DELETE_AGED_CM_DATA, 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].run_id, second);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].total_deleted, 108);
    assert_eq!(runs[0].rows_deleted["setting_results"], 105);
    assert_eq!(runs[0].trigger, "manual");
    assert_eq!(runs[1].run_id, first);
    assert_eq!(runs[1].status, RunStatus::Interrupted);
    assert_eq!(runs[1].ended_ms, Some(2_000));
}
