//! `mprelay bench site`: what a site's users live with once the database holds a large fleet.
//! It generates a site database of `--devices` devices, 3 baselines of 35 settings each,
//! reporting every 4 hours for `--days` days (set-based, see [`crate::store::SiteShape`] for
//! the shape), then times every console page and admin API read through a real admin listener
//! (TLS, bearer token) on that database, and every `mprelay report …` command as the
//! administrator runs it (a process of its own). Each is timed cold (its first run after the
//! database was opened) and then `--runs` times warm; p50/p95 are of the warm runs. It prints
//! the database's size on disk, bytes per device per day and rows per table, and a JSON line.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::Notify;

use super::harness::{percentile, round};
use crate::clock::{self, DAY_MS};
use crate::demo::Loopback;
use crate::net::HttpClient;
use crate::pki;
use crate::retention::Retention;
use crate::site::admin::{self, SiteView};
use crate::store::{SiteShape, Store, postgres::redact_url};

/// Options of `mprelay bench site`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
What it does to the database: it creates the site schema there, fills it with the generated \
fleet and leaves it there. It refuses a database that already holds devices or reports: give \
it a new SQLite file (sqlite:///tmp/site.db) or a fresh PostgreSQL database, and drop it \
afterwards (at 100,000 devices and 90 days it is hundreds of GB; see bytes_per_device_day).

The last line of output is JSON: {\"bench\":\"site\",\"backend\":…,\"devices\":…,\"days\":…,\
\"size_bytes\":…,\"bytes_per_device_day\":…,\"rows\":{table:rows},\"pages\":[{\"name\",\
\"cold_ms\",\"p50_ms\",\"p95_ms\"}],\"worst_p95_ms\":…,\"over_target\":[names]}; the target \
is a p95 of at most 300 ms.")]
pub struct Args {
    /// Site database URL: sqlite://PATH or postgres://USER@HOST:PORT/DB.
    #[arg(long)]
    pub database: String,
    /// Devices in the fleet.
    #[arg(long, default_value_t = 100_000)]
    pub devices: i64,
    /// Days of reports (every device reports every baseline every 4 hours).
    #[arg(long, default_value_t = 90)]
    pub days: i64,
    /// Warm runs of each page and report after its cold one.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
}

/// The p95 every page and report must meet, in milliseconds.
pub const TARGET_MS: f64 = 300.0;

const BASELINES: i64 = 3;
const SETTINGS: i64 = 35;
const PER_CI: i64 = 7;

#[derive(Serialize)]
struct Timed {
    name: String,
    cold_ms: f64,
    p50_ms: f64,
    p95_ms: f64,
}

#[derive(Serialize)]
struct Figures {
    bench: &'static str,
    backend: &'static str,
    devices: i64,
    days: i64,
    generate_secs: f64,
    setting_rows_per_s: f64,
    size_bytes: i64,
    bytes_per_device_day: f64,
    rows: serde_json::Map<String, serde_json::Value>,
    pages: Vec<Timed>,
    worst_p95_ms: f64,
    over_target: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.devices < 10 || args.days < 1 || args.runs == 0 {
        bail!("--devices must be at least 10, --days and --runs at least 1");
    }
    let store = Store::connect(&args.database)
        .await
        .with_context(|| format!("opening {}", redact_url(&args.database)))?;
    let before = store.counts().await?;
    if before.reports > 0 || before.devices > 0 {
        bail!(
            "{} already holds {} devices and {} reports; give the bench a new SQLite file or a \
             fresh PostgreSQL database",
            redact_url(&args.database),
            before.devices,
            before.reports
        );
    }
    crate::policy::import_texts(&store, &definitions())
        .await
        .context("importing the bench baselines")?;

    // The last generated day is yesterday (UTC), so nothing is in the future.
    let today = clock::now_ms() / DAY_MS * DAY_MS;
    let shape = SiteShape {
        devices: args.devices,
        days: args.days,
        baselines: BASELINES,
        settings: SETTINGS,
        per_ci: PER_CI,
        start_ms: today - args.days * DAY_MS,
        signature_len: 64,
        signed_len: signed_len(),
    };
    eprintln!(
        "generating {} devices × {BASELINES} baselines × {SETTINGS} settings, every 4 h for {} days…",
        args.devices, args.days
    );
    let started = Instant::now();
    let mut day = shape.start_ms;
    while day <= today {
        store.ensure_partitions(day).await?;
        day += 9 * DAY_MS;
    }
    store.ensure_partitions(today).await?;
    store.generate_devices(&shape).await?;
    let mut setting_rows = 0u64;
    for t in 0..shape.slots() {
        setting_rows += store.generate_slot(&shape, t).await?;
        if (t + 1) % crate::store::SLOTS_PER_DAY == 0 {
            eprintln!(
                "  day {} of {}: {setting_rows} setting rows, {:.0} s",
                (t + 1) / crate::store::SLOTS_PER_DAY,
                args.days,
                started.elapsed().as_secs_f64()
            );
        }
    }
    store.generate_state(&shape).await?;
    store.settle().await;
    let generate_secs = started.elapsed().as_secs_f64();
    let size_bytes = store.size_on_disk().await?;
    let rows = store.table_rows().await?;
    store.close().await;
    eprintln!("generated in {generate_secs:.1} s; {size_bytes} bytes on disk");
    for (t, n) in &rows {
        eprintln!("  {t:<24} {n:>14}");
    }

    // Opened afresh: the first run of each page is its cold one.
    let store = Store::connect(&args.database).await?;
    let dir = tempfile::tempdir()?;
    let lb = Loopback::create(dir.path())?;
    let server = admin::start(
        lb.admin_options().await?,
        store.clone(),
        Arc::new(Notify::new()),
        SiteView::default(),
        Retention::new(store.clone(), clock::system()),
    )?;
    let roots = pki::load_certs(&lb.paths.ca_cert())?;
    let tls = pki::client_config(&roots, None, &[b"h2", b"http/1.1"])?;
    let client = HttpClient::new(
        &format!("https://127.0.0.1:{}", server.addr.port()),
        Arc::new(tls),
    )?;
    let auth = format!("Bearer {}", lb.admin_token()?);

    let flapping = format!("{:032x}", 10);
    let steady = format!("{:032x}", 1);
    let mut pages = vec![];
    for path in http_reads(&flapping, &steady) {
        let mut ms = vec![];
        for _ in 0..=args.runs {
            let t = Instant::now();
            let resp = client
                .request(http::Method::GET, &path, None, &[("authorization", &auth)])
                .await
                .with_context(|| format!("GET {path}"))?;
            ms.push(t.elapsed().as_micros() as u32);
            if resp.status != http::StatusCode::OK {
                bail!("GET {path} answered {}: {:?}", resp.status, resp.body);
            }
        }
        pages.push(timed(format!("GET {path}"), ms));
    }
    let exe = std::env::current_exe()?;
    for cmd in reports(&flapping) {
        let mut ms = vec![];
        for _ in 0..=args.runs {
            let t = Instant::now();
            let out = tokio::process::Command::new(&exe)
                .arg("report")
                .args(&cmd)
                .arg("--database")
                .arg(&args.database)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .await?;
            ms.push(t.elapsed().as_micros() as u32);
            if !out.status.success() {
                bail!(
                    "mprelay report {} failed: {}",
                    cmd.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        pages.push(timed(format!("report {}", cmd.join(" ")), ms));
    }
    server.shutdown().await;
    store.close().await;

    println!(
        "{:<72} {:>9} {:>9} {:>9}",
        "page", "cold ms", "p50 ms", "p95 ms"
    );
    for p in &pages {
        println!(
            "{:<72} {:>9} {:>9} {:>9}",
            p.name, p.cold_ms, p.p50_ms, p.p95_ms
        );
    }
    let worst = pages.iter().map(|p| p.p95_ms).fold(0.0, f64::max);
    let f = Figures {
        bench: "site",
        backend: store.backend(),
        devices: args.devices,
        days: args.days,
        generate_secs: round(generate_secs, 1),
        setting_rows_per_s: round(setting_rows as f64 / generate_secs.max(1e-9), 0),
        size_bytes,
        bytes_per_device_day: round(size_bytes as f64 / (args.devices * args.days) as f64, 0),
        rows: rows
            .into_iter()
            .map(|(t, n)| (t, serde_json::Value::from(n)))
            .collect(),
        over_target: pages
            .iter()
            .filter(|p| p.p95_ms > TARGET_MS)
            .map(|p| p.name.clone())
            .collect(),
        pages,
        worst_p95_ms: worst,
    };
    println!("{}", serde_json::to_string(&f)?);
    Ok(())
}

/// Cold is the first run; p50 and p95 are of the others.
fn timed(name: String, mut us: Vec<u32>) -> Timed {
    let cold = us.remove(0);
    us.sort_unstable();
    let t = Timed {
        name,
        cold_ms: round(cold as f64 / 1000.0, 1),
        p50_ms: round(percentile(&us, 50.0) / 1000.0, 1),
        p95_ms: round(percentile(&us, 95.0) / 1000.0, 1),
    };
    eprintln!("  {}: cold {} ms, p95 {} ms", t.name, t.cold_ms, t.p95_ms);
    t
}

/// Every console page and admin API read, on a flapping device (history of one interval per
/// day) and a steady one, the first baseline, and the lists narrowed as a user narrows them.
fn http_reads(flapping: &str, steady: &str) -> Vec<String> {
    let b = SiteShape::baseline_id(0);
    [
        "/console".to_string(),
        format!("/console/baselines/{b}"),
        format!("/console/baselines/{b}/devices"),
        format!("/console/baselines/{b}/devices?state=non_compliant"),
        format!("/console/baselines/{b}/devices?q=bench-0042"),
        "/console/devices".to_string(),
        "/console/devices?state=non_compliant".to_string(),
        "/console/devices?q=bench-0042".to_string(),
        "/console/devices?os=rocky".to_string(),
        format!("/console/devices/{flapping}"),
        format!("/console/devices/{steady}"),
        "/console/relays".to_string(),
        "/console/retention".to_string(),
        "/console/terms".to_string(),
        "/api/v1/compliance/baselines".to_string(),
        format!("/api/v1/compliance/baselines/{b}"),
        format!("/api/v1/compliance/baselines/{b}/devices"),
        format!("/api/v1/compliance/baselines/{b}/devices?state=non_compliant&limit=1000"),
        format!("/api/v1/compliance/devices/{flapping}"),
        format!("/api/v1/compliance/noncompliant?baseline={b}"),
        "/api/v1/devices".to_string(),
        "/api/v1/devices?q=bench-0042&limit=1000".to_string(),
        "/api/v1/maintenance".to_string(),
        "/api/v1/maintenance/runs".to_string(),
        "/api/v1/terms".to_string(),
        "/api/v1/terms/acceptances".to_string(),
        "/metrics".to_string(),
    ]
    .into()
}

/// Every `mprelay report …` command, with its arguments (the database is added).
fn reports(device: &str) -> Vec<Vec<String>> {
    let b = SiteShape::baseline_id(0);
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        v(&["compliance"]),
        v(&["compliance", "--baseline", &b]),
        v(&["device", device]),
        v(&["devices"]),
        v(&["devices", "--baseline", &b, "--state", "non_compliant"]),
        v(&["devices", "--search", "bench-0042"]),
        v(&["noncompliant", "--baseline", &b]),
        v(&["terms"]),
        v(&["counts"]),
    ]
}

/// The bench's definitions: baseline `b` of configuration items `bench-b{b}-ci{c}` of
/// `PER_CI` settings each, `SETTINGS` in all.
fn definitions() -> Vec<(String, String)> {
    (0..BASELINES)
        .map(|b| {
            let mut toml = String::new();
            for c in 0..SETTINGS / PER_CI {
                toml += &format!(
                    "[[configuration_item]]\nid = \"{}\"\nrevision = 1\n\
                     name = \"Bench item {c} of baseline {b}\"\ndescription = \"Generated.\"\n\n",
                    SiteShape::ci_id(b, c)
                );
                for s in 0..PER_CI {
                    toml += &format!(
                        "[[configuration_item.setting]]\nid = \"s{s}\"\nname = \"Setting {s}\"\n\
                         severity = \"warning\"\n\
                         evaluator = {{ kind = \"sysctl\", key = \"bench.b{b}.c{c}.s{s}\" }}\n\
                         rule = {{ operator = \"equals\", value = 0 }}\n\n"
                    );
                }
            }
            toml += &format!(
                "[[baseline]]\nid = \"{}\"\nrevision = 1\nname = \"Bench baseline {b}\"\n\
                 description = \"Generated.\"\n\n",
                SiteShape::baseline_id(b)
            );
            for c in 0..SETTINGS / PER_CI {
                toml += &format!(
                    "[[baseline.member]]\nconfiguration_item = \"{}\"\n\n",
                    SiteShape::ci_id(b, c)
                );
            }
            (format!("bench-b{b}.toml"), toml)
        })
        .collect()
}

/// The length of the signed bytes of a real 35-setting report.
fn signed_len() -> i64 {
    prost::Message::encoded_len(&crate::sample::report_with_settings(SETTINGS as usize, 1)) as i64
}
