//! The collection and deployment commands: `collection import|list|show|members`,
//! `device tag`, `deploy`, `deployment list|disable|enable` and
//! `report compliance --collection`. Each change is one store method.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{DbArg, Failure, open_store, open_store_read_only, tables, usage};
use crate::policy::collection::{self, SiteMembership};
use crate::store::Actor;
use crate::store::{Change, DeployRequest, Store, StoreError};

#[derive(Debug, Subcommand)]
pub(super) enum CollectionCmd {
    /// Check collection files (TOML) and store them with their revision history: all of
    /// them, or nothing when any has an error.
    Import {
        #[command(flatten)]
        db: DbArg,
        /// Files of [[collection]] tables (see examples/collections).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Every collection (latest revision) with its member count.
    List(DbArg),
    /// One collection's definition and its deployments.
    Show {
        #[command(flatten)]
        db: DbArg,
        id: String,
    },
    /// The devices now in a collection.
    Members {
        #[command(flatten)]
        db: DbArg,
        id: String,
        /// Skip this many members.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Args)]
pub(super) struct DeployArgs {
    #[command(flatten)]
    db: DbArg,
    /// The baseline to deploy.
    baseline: String,
    /// The collection whose devices get it.
    #[arg(long = "to")]
    collection: String,
    /// Remediate non-compliant settings that allow it (without: report only).
    #[arg(long)]
    remediate: bool,
    /// How often the devices evaluate it: 4h, 30m, 1d, 900s (default: the site's interval).
    #[arg(long)]
    interval: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(super) enum DeploymentCmd {
    /// Every deployment: baseline, collection, remediation, interval, enabled.
    List(DbArg),
    /// Stop a deployment: its baseline no longer goes to the collection's devices.
    Disable {
        #[command(flatten)]
        db: DbArg,
        /// BASELINE@COLLECTION, as `deployment list` shows it.
        deployment: String,
    },
    /// Start a disabled deployment again.
    Enable {
        #[command(flatten)]
        db: DbArg,
        deployment: String,
    },
}

pub(super) async fn collection(c: CollectionCmd) -> Result<(), Failure> {
    match c {
        CollectionCmd::Import { db, files } => {
            let store = open_store(&db).await?;
            match collection::import_collection_files(&store, &Actor::cli(), &files).await {
                Ok(r) => {
                    for (id, rev) in &r.added {
                        println!("added collection {id} revision {rev}");
                    }
                    for (id, rev) in &r.unchanged {
                        println!("unchanged collection {id} revision {rev}");
                    }
                    println!("policy version {}", r.policy_version);
                    Ok(())
                }
                Err(e) => Err(super::import_failure(e, "collections")),
            }
        }
        CollectionCmd::List(db) => {
            let store = open_store_read_only(&db).await?;
            let list = store.collections().await.context("reading collections")?;
            let site = load(&store).await?;
            println!(
                "{:<32} {:>4} {:>8}  {:<40} {:<20}  Source",
                "Id", "Rev", "Members", "Name", "Imported"
            );
            for c in list {
                println!(
                    "{:<32} {:>4} {:>8}  {:<40} {:<20}  {}",
                    c.id,
                    c.revision,
                    site.membership.members(&c.id).len(),
                    c.name,
                    tables::fmt_time(c.imported_ms),
                    c.source_file
                );
            }
            Ok(())
        }
        CollectionCmd::Show { db, id } => {
            let store = open_store_read_only(&db).await?;
            let c = store
                .collection(&id)
                .await
                .context("reading the collection")?
                .ok_or_else(|| usage(format!("no collection {id:?} is imported")))?;
            println!("{} ({}) revision {}", c.name, c.id, c.revision);
            if !c.description.is_empty() {
                println!("{}", c.description);
            }
            println!("source: {}", c.source_file);
            if !c.toml.is_empty() {
                println!("\n{}", c.toml.trim_end());
            }
            println!("\nDeployments:");
            for d in store.deployments().await.context("reading deployments")? {
                if d.collection_id == id {
                    println!("  {}", deployment_line(&d));
                }
            }
            Ok(())
        }
        CollectionCmd::Members {
            db,
            id,
            offset,
            limit,
        } => {
            let store = open_store_read_only(&db).await?;
            if store.collection(&id).await.context("reading")?.is_none() {
                return Err(usage(format!("no collection {id:?} is imported")));
            }
            let site = load(&store).await?;
            let members = site.members(&id);
            println!(
                "{} member{} of {id}",
                members.len(),
                if members.len() == 1 { "" } else { "s" }
            );
            println!("{:<32}  {:<24} {:<20} Tags", "Device", "Hostname", "OS");
            for d in members.iter().skip(offset).take(limit) {
                let tags: Vec<String> = d.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{:<32}  {:<24} {:<20} {}",
                    d.device_id,
                    d.hostname,
                    d.os,
                    tags.join(" ")
                );
            }
            Ok(())
        }
    }
}

/// `mprelay device tag ID k=v… [--remove k]…`.
pub(super) async fn tag(
    db: DbArg,
    id: String,
    tags: Vec<String>,
    remove: Vec<String>,
) -> Result<(), Failure> {
    let mut set = BTreeMap::new();
    for k in &remove {
        check_key(k)?;
    }
    for t in &tags {
        if let Some((k, v)) = t.split_once('=') {
            if v.len() > 255 {
                return Err(usage(format!("tag {k:?}: the value is over 255 bytes")));
            }
            set.insert(check_key(k)?.to_string(), v.to_string());
        } else {
            return Err(usage(format!(
                "{t:?} is not key=value (--remove KEY removes a tag)"
            )));
        }
    }
    let store = open_store(&db).await?;
    match store
        .tag_device(&Actor::cli(), &id, &set, &remove)
        .await
        .context("tagging the device")?
    {
        None => Err(usage(format!("no device {id:?} is known at this site"))),
        Some(false) => {
            println!("device {id}: tags unchanged");
            Ok(())
        }
        Some(true) => {
            let v = store.policy_version().await.context("reading the policy")?;
            println!("device {id} tagged; policy version {v} goes to the relays");
            Ok(())
        }
    }
}

fn check_key(k: &str) -> Result<&str, Failure> {
    let ok = !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(k)
    } else {
        Err(usage(format!(
            "tag key {k:?} must be 1 to 64 of letters, digits, '.', '_', '-'"
        )))
    }
}

pub(super) async fn deploy(a: DeployArgs) -> Result<(), Failure> {
    let interval_s = match &a.interval {
        None => 0,
        Some(v) => collection::parse_interval(v).map_err(|e| usage(format!("--interval {e}")))?,
    };
    let store = open_store(&a.db).await?;
    let req = DeployRequest {
        baseline_id: a.baseline.clone(),
        collection_id: a.collection.clone(),
        remediate: a.remediate,
        interval_s,
    };
    let change = store.deploy(&Actor::cli(), &req).await.map_err(refused)?;
    let word = match change {
        Change::Created => "deployed",
        Change::Updated => "deployment updated",
        Change::Unchanged => "already deployed so",
    };
    println!(
        "{word}: {}@{} ({})",
        a.baseline,
        a.collection,
        if a.remediate {
            "remediate"
        } else {
            "report only"
        }
    );
    Ok(())
}

pub(super) async fn deployment(c: DeploymentCmd) -> Result<(), Failure> {
    let (db, name, enabled) = match c {
        DeploymentCmd::List(db) => {
            let store = open_store_read_only(&db).await?;
            println!(
                "{:<48} {:<11} {:>9} {:<8}",
                "Deployment", "Remediate", "Interval", "Enabled"
            );
            for d in store.deployments().await.context("reading deployments")? {
                println!("{}", deployment_line(&d));
            }
            return Ok(());
        }
        DeploymentCmd::Disable { db, deployment } => (db, deployment, false),
        DeploymentCmd::Enable { db, deployment } => (db, deployment, true),
    };
    let Some((baseline, coll)) = name.split_once('@') else {
        return Err(usage(format!(
            "{name:?} is not BASELINE@COLLECTION (mprelay deployment list shows them)"
        )));
    };
    let store = open_store(&db).await?;
    match store
        .set_deployment_enabled(&Actor::cli(), baseline, coll, enabled)
        .await
        .context("updating the deployment")?
    {
        None => Err(usage(format!("no deployment {name:?} exists"))),
        Some(Change::Unchanged) => {
            println!("deployment {name} was already {}", word(enabled));
            Ok(())
        }
        Some(_) => {
            println!("deployment {name} {}", word(enabled));
            Ok(())
        }
    }
}

fn word(enabled: bool) -> &'static str {
    if enabled { "enabled" } else { "disabled" }
}

fn deployment_line(d: &crate::store::DeploymentRecord) -> String {
    format!(
        "{:<48} {:<11} {:>9} {:<8}",
        format!("{}@{}", d.baseline_id, d.collection_id),
        if d.remediate { "yes" } else { "report only" },
        if d.interval_s == 0 {
            "site".to_string()
        } else {
            format!("{}s", d.interval_s)
        },
        if d.enabled { "yes" } else { "no" }
    )
}

/// `report compliance --collection C`: per deployment to the collection, its devices now.
pub(super) async fn report_collection(store: &Store, id: &str) -> Result<(), Failure> {
    if store.collection(id).await.context("reading")?.is_none() {
        return Err(usage(format!("no collection {id:?} is imported")));
    }
    let rows = collection::deployment_compliance(store, Some(id))
        .await
        .context("reading compliance")?;
    println!(
        "{:<48} {:>8} {:>10} {:>14} {:>6} {:>13}",
        "Deployment", "Targeted", "Compliant", "Non-compliant", "Error", "Not reported"
    );
    for r in rows {
        println!(
            "{:<48} {:>8} {:>10} {:>14} {:>6} {:>13}",
            format!("{}@{}", r.baseline_id, r.collection_id),
            r.targeted,
            r.compliant,
            r.non_compliant,
            r.error,
            r.not_reported
        );
    }
    Ok(())
}

async fn load(store: &Store) -> Result<SiteMembership, Failure> {
    Ok(SiteMembership::load(store)
        .await
        .context("computing membership")?)
}

/// An unknown baseline or collection is the operator's mistake (exit 64); the rest is not.
fn refused(e: StoreError) -> Failure {
    match e {
        StoreError::Refused(m) => usage(m),
        e => Failure::Other(anyhow::Error::new(e).context("deploying")),
    }
}
