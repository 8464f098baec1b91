//! Keys over their life, with real processes: master secret rotation (new devices on the newest
//! epoch; devices on a retired epoch re-enroll and resend their queue), and agent client
//! certificates required by the relay and checked against a revocation list.

use std::time::Duration;

use crate::load::{Ledger, verify_site_db};
use crate::procs::{RelayConf, Server, Workspace, run, text};

/// The message ids an `agent submit` queued ("queued <id>" lines).
fn queued_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("queued "))
        .map(|s| s.trim().to_string())
        .collect()
}

async fn submit(ws: &Workspace, agent: &str, reports: usize) -> std::process::Output {
    let cfg = format!("{agent}.toml");
    let mut args = vec!["agent", "submit", "--config", &cfg, "--wait", "0"];
    for _ in 0..reports {
        args.extend(["--report", "report.json"]);
    }
    run(ws.dir.path(), &args, &[]).await
}

fn agent_state(ws: &Workspace, agent: &str) -> serde_json::Value {
    let p = ws.path(&format!("{agent}-state/agent-state.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_enrolls_new_devices_on_the_newest_epoch_and_retired_ones_reenroll() {
    let ws = Workspace::new().await;
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/report.json"),
        ws.path("report.json"),
    )
    .unwrap();
    let o = run(
        ws.dir.path(),
        &["certs", "new-epoch", "--dir", "certs", "--epoch", "2"],
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    ws.write_relay_config(&RelayConf::default());
    ws.write_site_config(1000);
    let mut relay = Server::relay(&ws).await;
    let _site = Server::site(&ws).await;
    let mut ledger = Ledger::default();
    let mut record = |o: &std::process::Output| {
        for id in queued_ids(&text(&o.stdout)) {
            ledger.sent.insert(id.clone(), 4);
            ledger.receipted.insert(id);
        }
    };

    ws.write_agent_config("old", None);
    let o = run(
        ws.dir.path(),
        &["agent", "enroll", "--config", "old.toml"],
        &[],
    )
    .await;
    assert!(
        text(&o.stdout).contains("on key epoch 1"),
        "{}",
        text(&o.stdout)
    );
    let old_id = agent_state(&ws, "old")["device_id"].clone();

    // Epoch 2 added: new devices enroll on it, devices on epoch 1 are still served.
    relay.stop().await;
    ws.write_relay_config(&RelayConf {
        epochs: vec![1, 2],
        ..RelayConf::default()
    });
    relay.start().await;
    ws.write_agent_config("new", None);
    let o = run(
        ws.dir.path(),
        &["agent", "enroll", "--config", "new.toml"],
        &[],
    )
    .await;
    assert!(
        text(&o.stdout).contains("on key epoch 2"),
        "{}",
        text(&o.stdout)
    );
    for agent in ["old", "new"] {
        let o = submit(&ws, agent, 1).await;
        assert!(o.status.success(), "{agent}: {}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains("accepted 1,"),
            "{}",
            text(&o.stdout)
        );
        record(&o);
    }
    assert_eq!(agent_state(&ws, "old")["key_epoch"], 1);

    // Epoch 1 retired while the old device has reports queued (the relay is down meanwhile).
    relay.stop().await;
    ws.write_relay_config(&RelayConf {
        epochs: vec![2],
        ..RelayConf::default()
    });
    let o = submit(&ws, "old", 3).await;
    assert!(!o.status.success());
    assert!(
        text(&o.stdout).contains("still queued 3"),
        "{}",
        text(&o.stdout)
    );
    record(&o);
    relay.start().await;
    let o = submit(&ws, "old", 0).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("accepted 3, already accepted 0, dropped 0, still queued 0"),
        "{}",
        text(&o.stdout)
    );
    assert!(
        text(&o.stderr).contains("enrolling again"),
        "{}",
        text(&o.stderr)
    );
    let state = agent_state(&ws, "old");
    assert_eq!(state["key_epoch"], 2);
    assert_eq!(state["device_id"], old_id, "same device after re-enrolling");
    let metrics = ws.site_client();
    assert_eq!(
        ws.relay_metric(
            &metrics,
            "mprelay_relay_rejected_total{code=\"unknown_key_epoch\"}"
        )
        .await,
        Some(1)
    );
    let checked = verify_site_db(&ws.site_db(), &ledger, Duration::from_secs(30)).await;
    assert_eq!(checked.reports, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_are_checked_against_the_crl() {
    let ws = Workspace::new().await;
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/report.json"),
        ws.path("report.json"),
    )
    .unwrap();
    for name in ["good", "revoked", "later"] {
        let o = run(
            ws.dir.path(),
            &[
                "certs", "issue", "--dir", "certs", "--role", "agent", "--name", name,
            ],
            &[],
        )
        .await;
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let serial = |name: &str| {
        mprelay::pki::certificate_serial(&ws.path(&format!("certs/{name}.pem"))).unwrap()
    };
    mprelay::pki::write_crl(&ws.certs(), &[serial("revoked")], 1).unwrap();
    let conf = RelayConf {
        client_auth: "required",
        crl: true,
        ..RelayConf::default()
    };
    ws.write_relay_config(&conf);
    ws.write_site_config(1000);
    let mut relay = Server::relay(&ws).await;
    let _site = Server::site(&ws).await;

    let mut ledger = Ledger::default();
    for name in ["good", "later"] {
        ws.write_agent_config(name, Some(name));
        let o = submit(&ws, name, 1).await;
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        for id in queued_ids(&text(&o.stdout)) {
            ledger.sent.insert(id.clone(), 4);
            ledger.receipted.insert(id);
        }
    }
    let refused = |o: &std::process::Output, alert: &str| {
        assert!(!o.status.success());
        assert!(text(&o.stderr).contains(alert), "{}", text(&o.stderr));
    };
    ws.write_agent_config("revoked", Some("revoked"));
    let o = run(
        ws.dir.path(),
        &["agent", "enroll", "--config", "revoked.toml"],
        &[],
    )
    .await;
    refused(&o, "CertificateRevoked");
    ws.write_agent_config("anonymous", None);
    let o = run(
        ws.dir.path(),
        &["agent", "enroll", "--config", "anonymous.toml"],
        &[],
    )
    .await;
    refused(&o, "CertificateRequired");
    // The site server's certificate is from the site CA, not the agent CA.
    std::fs::copy(
        ws.path("certs/site-client.pem"),
        ws.path("certs/sitecert.pem"),
    )
    .unwrap();
    std::fs::copy(
        ws.path("certs/site-client.key"),
        ws.path("certs/sitecert.key"),
    )
    .unwrap();
    ws.write_agent_config("sitecert", Some("sitecert"));
    let o = run(
        ws.dir.path(),
        &["agent", "enroll", "--config", "sitecert.toml"],
        &[],
    )
    .await;
    refused(&o, "UnknownCA");

    // Revoking a certificate in use: once the relay loads the new list, its holder is out.
    mprelay::pki::write_crl(&ws.certs(), &[serial("revoked"), serial("later")], 2).unwrap();
    relay.stop().await;
    relay.start().await;
    let o = submit(&ws, "later", 1).await;
    refused(&o, "CertificateRevoked");
    let o = submit(&ws, "good", 0).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let checked = verify_site_db(&ws.site_db(), &ledger, Duration::from_secs(30)).await;
    assert_eq!(checked.reports, 2);
}
