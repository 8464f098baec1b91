//! `mprelay bench …` in its smoke form: the benchmarks run end to end against a real child
//! relay, print their JSON line, and every accepted report is in the spool (the benchmark
//! itself audits the spool after killing the relay and fails otherwise).

use std::process::Command;

pub fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mprelay"))
        .arg("bench")
        .args(args)
        .env_remove("MPRELAY_LOG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("mprelay runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench {args:?} failed:\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn intake_bench_accepts_every_report_into_the_spool() {
    let v = bench(&[
        "intake",
        "--reports",
        "300",
        "--devices",
        "20",
        "--connections",
        "8",
        "--ceiling-secs",
        "0.2",
    ]);
    assert_eq!(v["bench"], "intake");
    assert_eq!(v["mode"], "keepalive");
    assert_eq!(v["accepted"], 300);
    assert_eq!(v["errors"], 0);
    // The 300 reports and the 20 enrollments, found in the spool after the relay was killed.
    assert_eq!(v["in_spool"], 320);
    for field in [
        "reports_per_s",
        "p50_ms",
        "p99_ms",
        "ceiling_reports_per_s",
        "ratio",
    ] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field}: {v}");
    }
    assert!(v["relay_rss_mib"].as_f64().is_some_and(|x| x > 1.0), "{v}");
}

#[test]
fn intake_bench_in_newconn_mode_opens_a_connection_per_report() {
    let v = bench(&[
        "intake",
        "--mode",
        "newconn",
        "--reports",
        "40",
        "--devices",
        "4",
        "--connections",
        "4",
        "--ceiling-secs",
        "0.1",
    ]);
    assert_eq!(v["mode"], "newconn");
    assert_eq!(
        (v["accepted"].as_u64(), v["errors"].as_u64()),
        (Some(40), Some(0))
    );
}

#[test]
fn connections_bench_holds_idle_connections_while_serving_others() {
    let v = bench(&["connections", "--connections", "60", "--reports", "30"]);
    assert_eq!(v["bench"], "connections");
    assert_eq!(v["relay_open_connections"], 60);
    assert_eq!(v["alive_after"], 60);
    assert_eq!(
        (v["accepted"].as_u64(), v["errors"].as_u64()),
        (Some(30), Some(0))
    );
}
