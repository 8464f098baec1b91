//! `mprelay bench site` in its smoke form, on both backends: it generates a small fleet, times
//! every page, report and API read on it (each answered 200 or succeeded, or the bench fails),
//! and the database it leaves is what the product reads as real data: the counts, current
//! state, settings and history the shape promises.

use crate::bench::bench;
use crate::both_backends;
use crate::db::{Backend, TestDb};

async fn site_bench_generates_a_fleet_the_product_reads_and_times_every_page(db: TestDb) {
    let url = db.url.clone();
    let v = tokio::task::spawn_blocking(move || {
        bench(&[
            "site",
            "--database",
            &url,
            "--devices",
            "20",
            "--days",
            "2",
            "--runs",
            "1",
        ])
    })
    .await
    .expect("bench runs");
    assert_eq!(v["bench"], "site");
    assert_eq!(
        v["backend"],
        match db.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    // 20 devices × 3 baselines × 6 reports a day × 2 days, 35 settings each.
    let rows = &v["rows"];
    assert_eq!(rows["devices"], 20, "{v}");
    assert_eq!(rows["compliance_reports"], 720, "{v}");
    assert_eq!(rows["setting_results"], 720 * 35, "{v}");
    assert_eq!(rows["current_compliance"], 60, "{v}");
    // Steady devices: one interval per baseline; devices 0 and 10 flap: one a day.
    assert_eq!(rows["compliance_history"], 18 * 3 + 2 * 3 * 2, "{v}");
    let pages = v["pages"].as_array().expect("pages");
    for prefix in ["GET /console", "GET /api/v1/", "report "] {
        assert!(
            pages
                .iter()
                .any(|p| p["name"].as_str().unwrap().starts_with(prefix)),
            "no {prefix}: {v}"
        );
    }
    for p in pages {
        assert!(p["p95_ms"].as_f64().is_some_and(|x| x > 0.0), "{p}");
        assert!(p["cold_ms"].as_f64().is_some_and(|x| x > 0.0), "{p}");
    }
    assert!(v["size_bytes"].as_i64().is_some_and(|x| x > 0), "{v}");
    assert!(
        v["bytes_per_device_day"].as_f64().is_some_and(|x| x > 0.0),
        "{v}"
    );

    // What the console and reports read from it.
    let store = db.store().await;
    let o = store.compliance_overview().await.expect("overview");
    assert_eq!(o.len(), 3);
    // On the last day the flapping devices fail the even baselines.
    let b0 = &o[0];
    assert_eq!(b0.baseline_id, "bench-b0");
    assert_eq!((b0.devices, b0.compliant, b0.non_compliant), (20, 18, 2));
    assert_eq!((o[1].compliant, o[1].non_compliant), (20, 0));
    let failing = store
        .noncompliant_devices("bench-b0")
        .await
        .expect("non-compliant devices");
    let ids: Vec<&str> = failing.iter().map(|d| d.device_id.as_str()).collect();
    assert_eq!(ids, [format!("{:032x}", 0), format!("{:032x}", 10)]);
    let detail = store
        .baseline_detail("bench-b0")
        .await
        .expect("detail")
        .expect("bench-b0 exists");
    assert_eq!(detail.settings.len(), 35);
    let flapping = store
        .device_compliance(&format!("{:032x}", 10))
        .await
        .expect("device")
        .expect("device 10 exists");
    assert_eq!(flapping.device.hostname, "bench-000010");
    assert_eq!(flapping.baselines.len(), 3);
    let b = &flapping.baselines[0];
    assert_eq!(b.settings.len(), 35);
    let states: Vec<(&str, bool)> = b
        .history
        .iter()
        .map(|h| (h.state.as_str(), h.ended_ms.is_none()))
        .collect();
    assert_eq!(
        states,
        [("compliant", false), ("non_compliant", true)],
        "{:?}",
        b.history
    );
    store.close().await;
}
both_backends!(site_bench_generates_a_fleet_the_product_reads_and_times_every_page);
