//! `mprelay bench e2e` in its smoke form, on both backends: a child relay and a child site
//! server carry the reports into the site database, the JSON line has its fields, and every
//! report the relay accepted is in the database with all its setting rows.

use crate::bench::bench;
use crate::both_backends;
use crate::db::{Backend, TestDb};

async fn e2e_bench_carries_every_report_into_the_site_database(db: TestDb) {
    let url = db.url.clone();
    let v = tokio::task::spawn_blocking(move || {
        bench(&[
            "e2e",
            "--database",
            &url,
            "--reports",
            "300",
            "--intake-reports",
            "120",
            "--devices",
            "20",
            "--connections",
            "8",
            "--settings",
            "7",
        ])
    })
    .await
    .expect("bench runs");
    assert_eq!(v["bench"], "e2e");
    assert_eq!(
        v["backend"],
        match db.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    assert_eq!(
        (v["accepted"].as_u64(), v["errors"].as_u64()),
        (Some(300), Some(0))
    );
    for field in [
        "reports_per_s",
        "rows_per_s",
        "p99_ms",
        "intake_reports_per_s",
        "ratio",
        "site_drain_reports_per_s",
        "relay_cpu_ms_per_report",
        "site_cpu_ms_per_report",
        "all_in_cpu_ms_per_report",
    ] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field}: {v}");
    }
    assert!(v["p50_ms"].as_f64().is_some_and(|x| x >= 0.0), "{v}");
    // The database server's CPU is read from /proc where it runs here; SQLite has none apart.
    match db.backend {
        Backend::Sqlite => assert!(v["db_cpu_ms_per_report"].is_null(), "{v}"),
        Backend::Postgres => assert!(v["db_cpu_ms_per_report"].as_f64().is_some(), "{v}"),
    }

    // Both phases' reports are in the site database, each with its 7 setting rows.
    let store = db.store().await;
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.reports, counts.settings), (420, 420 * 7));
    assert_eq!(counts.devices, 20);
    assert_eq!(counts.quarantined, 0);
    store.close().await;
}
both_backends!(e2e_bench_carries_every_report_into_the_site_database);

#[test]
fn e2e_bench_refuses_a_database_that_already_holds_reports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("site.db").display());
    let args = [
        "e2e",
        "--database",
        url.as_str(),
        "--reports",
        "30",
        "--intake-reports",
        "10",
        "--devices",
        "3",
        "--connections",
        "2",
        "--settings",
        "2",
    ];
    bench(&args);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mprelay"))
        .arg("bench")
        .args(args)
        .output()
        .expect("mprelay runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already holds 40 reports"),
        "unexpected error: {stderr}"
    );
}
