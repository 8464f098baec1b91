//! `mprelay bench policy`: targeted policy at scale. Setup (not timed): `--devices` devices
//! written through the real writer (as enrollments), `--baselines` baselines, `--collections`
//! collections over hostname globs, OS, agent version and tags (some including others), and
//! `--deployments` deployments spread over them. Timed, on the site: every collection's
//! membership recomputed from the database (reads included), and the whole snapshot built;
//! printed: the snapshot's encoded size. Timed, as the relay does it: the snapshot decoded and
//! its targeting prepared once, then per policy fetch the device's deployments found (known
//! devices by id; `--unknown` of every 10 as devices the site does not know, placed by rules)
//! and its answer built and encoded; printed: p50/p99 CPU per fetch. The envelope open every
//! fetch also costs (Ed25519 verify ≈ 35 µs, measured by `bench intake`'s ceiling) is not in it.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, bail};
use prost::Message;
use serde::Serialize;

use super::harness::{percentile, round};
use crate::clock;
use crate::policy::collection::{Facts, Membership, SiteMembership, Targeting};
use crate::proto::{PolicyResponse, PolicySnapshot};
use crate::store::Actor;
use crate::store::{
    DeployRequest, DeviceDetails, DeviceUpsert, Store, WriteBatch, postgres::redact_url,
};

/// Options of `mprelay bench policy`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
It writes devices, baselines, collections and deployments into the database: give it a new \
SQLite file (sqlite:///tmp/policy.db) or a fresh PostgreSQL database. The last line of output \
is JSON: {\"bench\":\"policy\",\"backend\":…,\"snapshot_bytes\":…,\"membership_s\":…,\
\"fetch_p99_us\":…}.")]
pub struct Args {
    /// Site database URL: sqlite://PATH or postgres://USER@HOST:PORT/DB.
    #[arg(long)]
    pub database: String,
    #[arg(long, default_value_t = 100_000)]
    pub devices: usize,
    #[arg(long, default_value_t = 500)]
    pub collections: usize,
    #[arg(long, default_value_t = 200)]
    pub deployments: usize,
    /// Distinct baselines the deployments deploy.
    #[arg(long, default_value_t = 40)]
    pub baselines: usize,
    /// Policy fetches timed.
    #[arg(long, default_value_t = 20_000)]
    pub fetches: usize,
    /// Of every 10 fetches, how many are from devices the site does not know yet.
    #[arg(long, default_value_t = 1)]
    pub unknown: usize,
}

#[derive(Debug, Serialize)]
struct Output {
    bench: &'static str,
    backend: &'static str,
    devices: usize,
    collections: usize,
    deployments: usize,
    deployment_sets: usize,
    snapshot_bytes: usize,
    membership_s: f64,
    membership_compute_s: f64,
    snapshot_build_s: f64,
    relay_prepare_ms: f64,
    fetch_p50_us: f64,
    fetch_p99_us: f64,
    baselines_per_device_mean: f64,
}

const OSES: [&str; 3] = ["Linux x86_64", "Linux aarch64", "Windows 11"];
const ROLES: [&str; 4] = ["web", "db", "cache", "batch"];

pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.devices == 0 || a.collections == 0 || a.baselines == 0 || a.fetches == 0 {
        bail!("--devices, --collections, --baselines and --fetches must be at least 1");
    }
    let store = Store::connect(&a.database)
        .await
        .with_context(|| format!("opening {}", redact_url(&a.database)))?;
    if !store.device_facts().await?.is_empty() {
        bail!(
            "{} already holds devices: give it a new SQLite file or a fresh PostgreSQL database",
            redact_url(&a.database)
        );
    }
    eprintln!("writing {} devices…", a.devices);
    let now = clock::now_ms();
    for (n, chunk) in (0..a.devices).collect::<Vec<_>>().chunks(5000).enumerate() {
        let devices = chunk
            .iter()
            .map(|i| DeviceUpsert {
                device_id: device_id(*i),
                public_key: vec![0; 32],
                key_epoch: 1 + (*i % 2) as u32,
                details: Some(DeviceDetails {
                    hostname: hostname(*i),
                    os: OSES[i % OSES.len()].into(),
                    agent_version: format!("0.{}.0", i % 5),
                    hardware_id: String::new(),
                }),
                seen_ms: now,
                relay_id: format!("relay-{}", i % 4),
            })
            .collect();
        store
            .write_batch(&WriteBatch {
                relay_id: "bench-relay".into(),
                relay_url: "https://bench".into(),
                spool_id: "bench".into(),
                through_seq: n as u64 + 1,
                last_seq: n as u64 + 1,
                pending_records: 0,
                pending_bytes: 0,
                devices,
                reports: vec![],
                acceptances: vec![],
                quarantined: vec![],
            })
            .await?;
    }
    // Tags on one device in a hundred (an administrator's hand work).
    for i in (0..a.devices).step_by(100) {
        let tags: BTreeMap<String, String> = [(
            "role".to_string(),
            ROLES[(i / 100) % ROLES.len()].to_string(),
        )]
        .into();
        store
            .tag_device(&Actor::cli(), &device_id(i), &tags, &[])
            .await?;
    }
    eprintln!(
        "importing {} baselines and {} collections…",
        a.baselines, a.collections
    );
    let mut baselines = String::new();
    for b in 0..a.baselines {
        baselines.push_str(&format!(
            "[[configuration_item]]\nid = \"ci-{b}\"\nrevision = 1\nname = \"Item {b}\"\n\
             [[configuration_item.setting]]\nid = \"s\"\nevaluator = {{ kind = \"sysctl\", \
             key = \"kernel.randomize_va_space\" }}\nrule = {{ operator = \"equals\", value = 2 }}\n\
             [[baseline]]\nid = \"b-{b}\"\nrevision = 1\nname = \"Baseline {b}\"\n\
             [[baseline.member]]\nconfiguration_item = \"ci-{b}\"\n"
        ));
    }
    crate::policy::import_texts(&store, &[("bench.toml".into(), baselines)]).await?;
    let mut collections = String::new();
    for c in 0..a.collections {
        let mut rules = match c % 4 {
            0 => format!("hostname = \"h{:02}-*\"\n", c % 100),
            1 => format!(
                "os = \"{}*\"\nagent_version = \"0.{}.*\"\n",
                &OSES[c % 3][..5],
                c % 5
            ),
            2 => format!("tags = {{ role = \"{}\" }}\n", ROLES[c % ROLES.len()]),
            _ => format!("hostname = \"*-{}\"\nkey_epoch = {}\n", c % 10, 1 + c % 2),
        };
        // Every tenth includes an earlier one.
        let include = if c % 10 == 9 {
            format!("include_collections = [\"c-{}\"]\n", c - 1)
        } else {
            String::new()
        };
        rules.insert_str(0, "[collection.rules]\n");
        collections.push_str(&format!(
            "[[collection]]\nid = \"c-{c}\"\nrevision = 1\nname = \"Collection {c}\"\n{include}{rules}"
        ));
    }
    crate::policy::collection::import_collection_texts(
        &store,
        &Actor::cli(),
        &[("c.toml".into(), collections)],
    )
    .await?;
    for d in 0..a.deployments {
        store
            .deploy(
                &Actor::cli(),
                &DeployRequest {
                    baseline_id: format!("b-{}", d % a.baselines),
                    collection_id: format!("c-{}", (d * 7) % a.collections),
                    remediate: d % 2 == 0,
                    interval_s: 3600 * (1 + (d % 4) as u32),
                },
            )
            .await?;
    }

    eprintln!("recomputing membership…");
    let t = Instant::now();
    let site = SiteMembership::load(&store).await?;
    let membership_s = t.elapsed().as_secs_f64();
    // The same again without the reads: what the computation itself costs.
    let t = Instant::now();
    let again =
        Membership::compute(&site.collections, &site.devices).map_err(anyhow::Error::msg)?;
    let membership_compute_s = t.elapsed().as_secs_f64();
    drop((site, again));
    let t = Instant::now();
    let snap = crate::policy::snapshot(&store, clock::now_ms()).await?;
    let snapshot_build_s = t.elapsed().as_secs_f64();
    let bytes = snap.encode_to_vec();

    eprintln!("answering {} policy fetches as a relay…", a.fetches);
    let t = Instant::now();
    let decoded = PolicySnapshot::decode(bytes.as_slice())?;
    let targeting = Targeting::of(&decoded).context("the snapshot is not targeted")?;
    let relay_prepare_ms = t.elapsed().as_secs_f64() * 1000.0;
    let tags: BTreeMap<String, String> = [("role".to_string(), "web".to_string())].into();
    let mut nanos = Vec::with_capacity(a.fetches);
    let mut delivered = 0usize;
    for f in 0..a.fetches {
        let unknown = f % 10 < a.unknown;
        let i = (f * 7919) % a.devices;
        let (id, host) = if unknown {
            (device_id(a.devices + f), hostname(a.devices + f))
        } else {
            (device_id(i), hostname(i))
        };
        let facts = Facts {
            device_id: &id,
            hostname: &host,
            os: OSES[f % 3],
            agent_version: "0.1.0",
            key_epoch: 1,
            last_relay: "relay-0",
            enrolled_ms: Some(now),
            tags: Some(&tags),
        };
        let t = Instant::now();
        let answer = targeting.for_device(&decoded, &facts);
        delivered += answer.baselines.len();
        let body = PolicyResponse {
            policy: Some(answer),
            unchanged: false,
            max_body_bytes: 1 << 20,
            user_terms_version: 0,
        }
        .encode_to_vec();
        std::hint::black_box(body);
        nanos.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
    }
    nanos.sort_unstable();
    let out = Output {
        bench: "policy",
        backend: store.backend(),
        devices: a.devices,
        collections: a.collections,
        deployments: decoded.deployments.len(),
        deployment_sets: decoded.deployment_sets.len(),
        snapshot_bytes: bytes.len(),
        membership_s: round(membership_s, 3),
        membership_compute_s: round(membership_compute_s, 3),
        snapshot_build_s: round(snapshot_build_s, 3),
        relay_prepare_ms: round(relay_prepare_ms, 1),
        fetch_p50_us: round(percentile(&nanos, 50.0) / 1000.0, 1),
        fetch_p99_us: round(percentile(&nanos, 99.0) / 1000.0, 1),
        baselines_per_device_mean: round(delivered as f64 / a.fetches as f64, 2),
    };
    println!(
        "membership of {} collections over {} devices recomputed in {:.3} s with the reads, \
         {:.3} s without (target ≤ 2 s); snapshot {} bytes = {:.2} MiB (target ≤ 5 MiB), {} deployment sets, built in {:.3} s",
        a.collections,
        a.devices,
        out.membership_s,
        out.membership_compute_s,
        out.snapshot_bytes,
        out.snapshot_bytes as f64 / (1024.0 * 1024.0),
        out.deployment_sets,
        out.snapshot_build_s
    );
    println!(
        "relay: snapshot prepared in {:.1} ms; per fetch p50 {} µs, p99 {} µs of CPU (target ≤ \
         1000 µs), {} baselines per device on average",
        out.relay_prepare_ms, out.fetch_p50_us, out.fetch_p99_us, out.baselines_per_device_mean
    );
    println!("{}", serde_json::to_string(&out)?);
    store.close().await;
    Ok(())
}

fn device_id(i: usize) -> String {
    format!("{:032x}", 0xbe_0000_0000_u64 as u128 + i as u128)
}

fn hostname(i: usize) -> String {
    format!("h{:02}-{}", i % 100, i)
}
