//! Secrets hygiene: the whole flow (enroll, submit, forward, store, a refused enrollment, a
//! re-enrollment) with every process logging at trace level, and not one secret, key or report
//! value in any log, in any common encoding; and every file that holds a key or data created
//! readable by its owner only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use mprelay::proto::EnrollRequest;
use prost::Message;

use crate::load::{Ledger, verify_site_db};
use crate::procs::{RelayConf, Server, Workspace, run, text};

/// Values in the report that must reach the site database and nothing else.
const CANARIES: &[&str] = &[
    "canary-baseline-name-5c1e",
    "canary-ci-name-0f3b",
    "canary-expected-3b1f",
    "canary-before-9d2e",
    "canary-after-51aa",
    "canary-error-77c0",
];

fn canary_report() -> String {
    format!(
        r#"{{"baseline_id": "secrets", "baseline_revision": 1, "baseline_name": "{}",
            "configuration_items": [{{"ci_id": "ci-1", "ci_revision": 1, "ci_name": "{}",
              "settings": [
                {{"setting_id": "s1", "state": "compliant", "severity": "warning",
                  "expected": "{}", "observed_before": "{}", "observed_after": "{}",
                  "remediated": true}},
                {{"setting_id": "s2", "state": "error", "severity": "critical",
                  "expected": "x", "error": "{}"}}
              ]}}]}}"#,
        CANARIES[0], CANARIES[1], CANARIES[2], CANARIES[3], CANARIES[4], CANARIES[5]
    )
}

fn base64(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The ways a byte string could end up in a log: hex either case, base64, a Debug list.
fn spellings(bytes: &[u8]) -> Vec<String> {
    let hex = hex::encode(bytes);
    let list: Vec<String> = bytes.iter().take(8).map(|b| b.to_string()).collect();
    vec![
        hex.clone(),
        hex.to_uppercase(),
        base64(bytes)[..20].to_string(),
        format!("[{}", list.join(", ")),
    ]
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_no_secret_key_or_report_value_and_files_are_private() {
    let ws = Workspace::new().await;
    std::fs::write(ws.path("report.json"), canary_report()).unwrap();
    ws.write_relay_config(&RelayConf::default());
    ws.write_site_config(1000);
    let trace = [("MPRELAY_LOG", "trace")];
    let mut relay = Server::start_with(&ws, "relay", &trace).await;
    let mut site = Server::start_with(&ws, "site", &trace).await;
    ws.write_agent_config("a1", None);
    let mut agent_logs = String::new();

    let o = run(
        ws.dir.path(),
        &[
            "agent",
            "submit",
            "--config",
            "a1.toml",
            "--report",
            "report.json",
        ],
        &trace,
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    agent_logs.push_str(&text(&o.stderr));
    let id = text(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("queued "))
        .unwrap()
        .trim()
        .to_string();
    let mut ledger = Ledger::default();
    ledger.sent.insert(id.clone(), 2);
    ledger.receipted.insert(id);
    verify_site_db(&ws.site_db(), &ledger, Duration::from_secs(30)).await;

    // A refused enrollment and an idempotent re-enrollment go through the log paths too.
    let client = ws.agent_client();
    let wrong = EnrollRequest {
        enrollment_secret: format!("{}0", ws.enrollment_secret()),
        device_public_key: vec![7; 32],
        ..Default::default()
    };
    let resp = client
        .post("/v1/enroll", Bytes::from(wrong.encode_to_vec()))
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
    let o = run(
        ws.dir.path(),
        &["agent", "enroll", "--config", "a1.toml"],
        &trace,
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    agent_logs.push_str(&text(&o.stderr));

    // Files, while everything is open (SQLite removes -wal and -shm at a clean close).
    let mut private = vec![
        "spool.db",
        "spool.db-wal",
        "spool.db-shm",
        "site.db",
        "site.db-wal",
        "site.db-shm",
        "a1-state/agent-state.json",
        "certs/master-1.secret",
        "certs/enrollment.secret",
    ]
    .into_iter()
    .map(|f| ws.path(f))
    .collect::<Vec<_>>();
    for e in std::fs::read_dir(ws.path("certs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "key") {
            private.push(p);
        }
    }
    for p in &private {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    assert_eq!(mode(&ws.path("a1-state")), 0o700, "agent state directory");

    // A report waiting in the agent's queue is private too.
    relay.stop().await;
    let o = run(
        ws.dir.path(),
        &[
            "agent",
            "submit",
            "--config",
            "a1.toml",
            "--report",
            "report.json",
            "--wait",
            "0",
        ],
        &trace,
    )
    .await;
    assert!(!o.status.success());
    agent_logs.push_str(&text(&o.stderr));
    let queued: Vec<_> = std::fs::read_dir(ws.path("a1-state/queue"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sub"))
        .collect();
    assert_eq!(queued.len(), 1);
    assert_eq!(mode(&queued[0]), 0o600, "{}", queued[0].display());
    site.stop().await;

    // The logs.
    let logs = [
        ("relay", relay.log_text()),
        ("site", site.log_text()),
        ("agent", agent_logs),
    ];
    for (who, log) in &logs {
        assert!(
            log.contains(" TRACE "),
            "{who} did not log at trace level:\n{log}"
        );
        // Plain text in files: no terminal colour codes.
        assert!(!log.contains('\x1b'), "{who} wrote escape codes to a file");
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path("a1-state/agent-state.json")).unwrap())
            .unwrap();
    let device_key = hex::decode(state["device_key"].as_str().unwrap()).unwrap();
    let pkcs8 = hex::decode(state["signing_key"].as_str().unwrap()).unwrap();
    let seed_at = pkcs8
        .windows(2)
        .position(|w| w == [0x04, 0x20])
        .expect("seed in the PKCS#8 document")
        + 2;
    let master = std::fs::read_to_string(ws.path("certs/master-1.secret")).unwrap();
    let master = hex::decode(master.trim()).unwrap();
    let mut secrets: Vec<(String, String)> = Vec::new();
    for (what, bytes) in [
        ("master secret", master.as_slice()),
        ("device key", device_key.as_slice()),
        ("device signing key", &pkcs8[seed_at..seed_at + 32]),
    ] {
        for s in spellings(bytes) {
            secrets.push((what.into(), s));
        }
    }
    let enrollment = ws.enrollment_secret();
    secrets.push(("enrollment secret".into(), enrollment.clone()));
    secrets.extend(
        spellings(enrollment.as_bytes())
            .into_iter()
            .map(|s| ("enrollment secret".into(), s)),
    );
    for p in private
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
    {
        let pem = std::fs::read_to_string(p).unwrap();
        for line in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        {
            secrets.push((p.display().to_string(), line.to_string()));
        }
    }
    for c in CANARIES {
        secrets.push(("report value".into(), c.to_string()));
    }
    let mut n = 0;
    for (who, log) in &logs {
        for (what, s) in &secrets {
            n += 1;
            assert!(
                !log.contains(s.as_str()),
                "the {who} log holds the {what} ({s})"
            );
        }
    }
    println!(
        "secrets hygiene: {} log bytes at trace level searched for {} secrets ({n} checks), \
         {} private files",
        logs.iter().map(|(_, l)| l.len()).sum::<usize>(),
        secrets.len(),
        private.len() + 2
    );
}
