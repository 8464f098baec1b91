//! The compliance commands: `baseline import|list`, `device block|unblock`, `agent run` and the
//! compliance reports.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::format::{Format, render};
use super::{DbArg, Failure, open_store, open_store_read_only, records, tables, usage};
use crate::agent::Agent;
use crate::agent::run::RunOptions;
use crate::compliance::State;
use crate::policy;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub(super) enum BaselineCmd {
    /// Check definition files (TOML) and store them with their revision history: all of them,
    /// or nothing when any has an error.
    Import {
        #[command(flatten)]
        db: DbArg,
        /// Files of [[configuration_item]] and [[baseline]] tables (see examples/baselines).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Every stored revision of every baseline and configuration item.
    List(DbArg),
}

#[derive(Debug, Subcommand)]
pub(super) enum DeviceCmd {
    /// Block a device: relays refuse its enrollment, reports and policy requests.
    Block {
        #[command(flatten)]
        db: DbArg,
        id: String,
    },
    /// Unblock a device.
    Unblock {
        #[command(flatten)]
        db: DbArg,
        id: String,
    },
    /// Set tags on a device (`env=prod dc=par`) or remove them (`--remove env`), for
    /// collection rules.
    Tag {
        #[command(flatten)]
        db: DbArg,
        id: String,
        /// key=value
        #[arg(required_unless_present = "remove")]
        tags: Vec<String>,
        /// Remove this tag (repeatable).
        #[arg(long)]
        remove: Vec<String>,
    },
}

pub(super) async fn baseline(c: BaselineCmd) -> Result<(), Failure> {
    match c {
        BaselineCmd::Import { db, files } => {
            let store = open_store(&db).await?;
            match policy::import_files(&store, &files).await {
                Ok(r) => {
                    for (kind, id, rev) in &r.added {
                        println!("added {kind} {id} revision {rev}");
                    }
                    for (kind, id, rev) in &r.unchanged {
                        println!("unchanged {kind} {id} revision {rev}");
                    }
                    println!("policy version {}", r.policy_version);
                    Ok(())
                }
                Err(e) => Err(super::import_failure(e, "definitions")),
            }
        }
        BaselineCmd::List(db) => {
            let store = open_store_read_only(&db).await?;
            let defs = store.definitions().await.context("reading definitions")?;
            println!(
                "{:<20} {:<32} {:>4}  {:<40} {:<20}  Source",
                "Kind", "Id", "Rev", "Name", "Imported"
            );
            for d in defs {
                println!(
                    "{:<20} {:<32} {:>4}  {:<40} {:<20}  {}",
                    d.kind,
                    d.id,
                    d.revision,
                    d.name,
                    tables::fmt_time(d.imported_ms),
                    d.source_file
                );
            }
            Ok(())
        }
    }
}

pub(super) async fn device(c: DeviceCmd) -> Result<(), Failure> {
    let (db, id, blocked) = match c {
        DeviceCmd::Block { db, id } => (db, id, true),
        DeviceCmd::Unblock { db, id } => (db, id, false),
        DeviceCmd::Tag {
            db,
            id,
            tags,
            remove,
        } => return super::collections::tag(db, id, tags, remove).await,
    };
    let store = open_store(&db).await?;
    let word = if blocked { "blocked" } else { "unblocked" };
    match store
        .set_device_blocked(&crate::store::Actor::cli(), &id, blocked)
        .await
        .context("updating the device")?
    {
        None => Err(Failure::Other(anyhow::anyhow!(
            "no device {id:?} is known at this site"
        ))),
        Some(false) => {
            println!("device {id} was already {word}");
            Ok(())
        }
        Some(true) => {
            let v = store.policy_version().await.context("reading the policy")?;
            println!("device {id} {word}; policy version {v} goes to the relays");
            Ok(())
        }
    }
}

pub(super) async fn agent_run(
    a: &Agent,
    opts: &RunOptions,
    once: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Failure> {
    println!(
        "agent {} evaluating under {}",
        a.device_id(),
        opts.root.display()
    );
    let Some(round) = a
        .run(opts, once, shutdown)
        .await
        .map_err(|e| Failure::Other(anyhow::Error::new(e).context("agent run")))?
    else {
        return Ok(());
    };
    println!(
        "policy version {} ({:?})",
        round.policy_version, round.source
    );
    for (baseline, id, r) in &round.reports {
        let state = r.state();
        println!(
            "{baseline}: {state}{} — {} compliant, {} non-compliant, {} error, {} not applicable; report {id}",
            if state == State::NonCompliant {
                format!(" ({})", r.max_severity)
            } else {
                String::new()
            },
            r.compliant,
            r.non_compliant,
            r.error,
            r.not_applicable
        );
    }
    println!(
        "remediated {} setting(s); accepted {}, already accepted {}, dropped {}, still queued {}",
        round.remediated,
        round.flush.accepted,
        round.flush.duplicates,
        round.flush.dropped,
        round.flush.remaining
    );
    if round.flush.remaining > 0 {
        return Err(Failure::Other(anyhow::anyhow!(
            "{} reports are still queued (relay busy or unreachable); they are sent on the next run",
            round.flush.remaining
        )));
    }
    Ok(())
}

pub(super) async fn report_compliance(
    store: &Store,
    baseline: Option<&str>,
    format: Format,
) -> Result<(), Failure> {
    match baseline {
        None => {
            let rows = store
                .compliance_overview()
                .await
                .context("reading compliance")?;
            print!(
                "{}",
                render(
                    format,
                    || tables::overview(&rows),
                    || records::overview_json(&rows),
                    || records::overview_csv(&rows),
                )
            );
        }
        Some(id) => {
            let d = store
                .baseline_detail(id)
                .await
                .context("reading compliance")?
                .ok_or_else(|| {
                    anyhow::anyhow!("no baseline {id:?} is defined or reported at this site")
                })?;
            print!(
                "{}",
                render(
                    format,
                    || tables::baseline(&d),
                    || records::baseline_json(&d),
                    || records::baseline_csv(&d),
                )
            );
        }
    }
    Ok(())
}

pub(super) async fn report_device(store: &Store, id: &str, format: Format) -> Result<(), Failure> {
    let d = store
        .device_compliance(id)
        .await
        .context("reading the device")?
        .ok_or_else(|| anyhow::anyhow!("no device {id:?} is known at this site"))?;
    print!(
        "{}",
        render(
            format,
            || tables::device(&d),
            || records::device_json(&d),
            || records::device_csv(&d),
        )
    );
    Ok(())
}

pub(super) async fn report_noncompliant(
    store: &Store,
    id: &str,
    state: State,
    format: Format,
) -> Result<(), Failure> {
    let o = store
        .baseline_overview(id)
        .await
        .context("reading compliance")?
        .ok_or_else(|| anyhow::anyhow!("no baseline {id:?} is defined or reported at this site"))?;
    let devices = store
        .failing_devices(id, state)
        .await
        .context("reading compliance")?;
    print!(
        "{}",
        render(
            format,
            || tables::noncompliant(&o.name, id, state, &devices),
            || records::noncompliant_json(id, state, &devices),
            || records::noncompliant_csv(id, &devices),
        )
    );
    Ok(())
}

/// Which devices `report devices` lists, and which page.
#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// List this baseline's devices with their state for it (default: every device).
    #[arg(long)]
    baseline: Option<String>,
    /// Only devices in this state: compliant, non_compliant, error, not_applicable, unknown
    /// (without --baseline: in this state for at least one baseline).
    #[arg(long)]
    state: Option<String>,
    /// Only devices whose worst severity is at least this (with --baseline).
    #[arg(long)]
    severity: Option<String>,
    /// Only devices whose OS contains this (case-insensitive).
    #[arg(long)]
    os: Option<String>,
    /// Only devices whose hostname, OS or id contains this (case-insensitive).
    #[arg(long)]
    search: Option<String>,
    /// Devices per page (1 to 1000).
    #[arg(long, default_value_t = crate::store::DEFAULT_PAGE)]
    limit: u32,
    /// Continue after this device id (the last line of the previous page says which).
    #[arg(long)]
    after: Option<String>,
}

pub(super) async fn report_devices(
    store: &Store,
    a: &ListArgs,
    format: Format,
) -> Result<(), Failure> {
    let query: std::collections::HashMap<String, String> = [
        ("state", &a.state),
        ("severity", &a.severity),
        ("os", &a.os),
        ("q", &a.search),
        ("after", &a.after),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
    .chain([("limit".to_string(), a.limit.to_string())])
    .collect();
    let f = crate::site::admin::devices::device_filter(&query).map_err(|e| {
        match e.strip_prefix("q:") {
            Some(rest) => usage(format!("--search:{rest}")),
            None => usage(format!("--{e}")),
        }
    })?;
    let (table, next) = match &a.baseline {
        None => {
            if f.severity.is_some() {
                return Err(usage("--severity needs --baseline"));
            }
            let p = store.device_page(&f).await.context("listing devices")?;
            let next = p.next_after.as_deref();
            let out = render(
                format,
                || tables::devices(&p.devices),
                || records::devices_json(&p.devices, next),
                || records::devices_csv(&p.devices),
            );
            (out, p.next_after.clone())
        }
        Some(id) => {
            store
                .baseline_overview(id)
                .await
                .context("reading compliance")?
                .ok_or_else(|| {
                    anyhow::anyhow!("no baseline {id:?} is defined or reported at this site")
                })?;
            let p = store
                .baseline_device_page(id, &f)
                .await
                .context("listing devices")?;
            let next = p.next_after.as_deref();
            let out = render(
                format,
                || tables::baseline_devices(&p.devices),
                || records::baseline_devices_json(id, &p.devices, next),
                || records::baseline_devices_csv(id, &p.devices),
            );
            (out, p.next_after.clone())
        }
    };
    print!("{table}");
    // JSON carries the next page in `next_after`; CSV stays rows only, so the hint goes aside.
    match (next, format) {
        (Some(after), Format::Table) => println!("more: --after {after}"),
        (Some(after), Format::Csv) => eprintln!("more: --after {after}"),
        _ => {}
    }
    Ok(())
}
