//! `mprelay report … --format json|csv` on both backends: the documented JSON documents and CSV
//! columns, with RFC 4180 quoting of a hostname that needs it, and a bad format refused.

use mprelay::envelope::DeviceSigner;
use serde_json::Value;

use crate::both_backends;
use crate::compliance_cli::{run, stderr, stdout};
use crate::db::TestDb;
use crate::verify::store_reports;

/// `report ARGS… --database URL`: exit status and stdout.
fn report(db: &TestDb, args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    all.extend(["--database", db.url.as_str()]);
    let out = run(&all, dir.path());
    assert!(
        out.status.code() != Some(0) || stderr(&out).is_empty(),
        "{}",
        stderr(&out)
    );
    (out.status.code().unwrap(), stdout(&out))
}

async fn reports_print_json_and_csv(db: TestDb) {
    let store = db.store().await;
    let signer = DeviceSigner::from_seed(&[9; 32]);
    let device = signer.device_id().hex();
    let hostname = "lab \"A\", floor 2";
    store_reports(&store, &signer, Some(hostname), 2).await;

    let (code, csv) = report(&db, &["counts", "--format", "csv"]);
    assert_eq!(code, 0);
    assert_eq!(
        csv,
        "devices,reports,setting_results,terms_acceptances,quarantined_records\r\n1,2,8,0,0\r\n"
    );
    let (_, json) = report(&db, &["counts", "--format", "json"]);
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (&doc["devices"], &doc["reports"], &doc["setting_results"]),
        (&1.into(), &2.into(), &8.into())
    );

    // A field with a quote and a comma is quoted, its quotes doubled.
    let (_, csv) = report(&db, &["devices", "--format", "csv"]);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "device_id,hostname,os,last_seen_ms,failing_baselines"
    );
    assert!(
        lines[1].starts_with(&format!("{device},\"lab \"\"A\"\", floor 2\",Linux,")),
        "{csv}"
    );
    assert_eq!((lines.len(), lines[2]), (3, ""), "{csv}");
    let (_, json) = report(&db, &["devices", "--format", "json"]);
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["devices"][0]["hostname"], hostname);
    assert_eq!(doc["next_after"], Value::Null);

    // One device: a row per setting of its latest report, key columns repeated.
    let (_, csv) = report(&db, &["device", &device, "--format", "csv"]);
    let rows: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert!(
        rows[0].starts_with("device_id,hostname,baseline_id,baseline_revision,baseline_state"),
        "{csv}"
    );
    assert_eq!(rows.len(), 1 + 4, "{csv}");
    let (_, json) = report(&db, &["device", &device, "--format", "json"]);
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["device"]["device_id"], device.as_str());
    assert_eq!(doc["baselines"][0]["settings"].as_array().unwrap().len(), 4);

    let (_, json) = report(&db, &["compliance", "--format", "json"]);
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["baselines"][0]["devices"], 1);
    let (_, csv) = report(&db, &["compliance", "--format", "csv"]);
    assert!(
        csv.starts_with("baseline_id,name,revision,devices,"),
        "{csv}"
    );
    let (_, csv) = report(&db, &["terms", "--format", "csv"]);
    assert_eq!(
        csv,
        "user,device_id,hostname,accepted_version,accepted_ms,received_ms,latest\r\n"
    );

    // The table stays the default; an unknown format is bad usage.
    let (_, table) = report(&db, &["counts"]);
    assert!(table.starts_with("devices 1\nreports 2\n"), "{table}");
    let (code, _) = report(&db, &["counts", "--format", "xml"]);
    assert_eq!(code, 64);
}
both_backends!(reports_print_json_and_csv);
