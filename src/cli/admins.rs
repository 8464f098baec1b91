//! `mprelay admin add|list|disable|rotate` (named administrators) and `mprelay audit list`.
//! Commands run on the site host act as `cli:OSUSER` in the audit log.

use anyhow::Context;
use clap::Subcommand;
use ring::digest;

use super::{DbArg, Failure, open_store, open_store_read_only, tables, usage};
use crate::store::{Actor, AuditFilter, Role};

#[derive(Debug, Subcommand)]
pub(super) enum AdminCmd {
    /// Add an administrator and print its new token (once: only its hash is kept).
    Add {
        #[command(flatten)]
        db: DbArg,
        name: String,
        /// read, compliance or full.
        #[arg(long)]
        role: String,
    },
    /// Every administrator, its role and whether it is disabled.
    List(DbArg),
    /// Disable an administrator: its token is refused from now on.
    Disable {
        #[command(flatten)]
        db: DbArg,
        name: String,
    },
    /// Give an administrator a new token and print it (once); the old one is refused.
    Rotate {
        #[command(flatten)]
        db: DbArg,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum AuditCmd {
    /// Entries of the audit log, newest first.
    List {
        #[command(flatten)]
        db: DbArg,
        /// Only entries from this day (YYYY-MM-DD, UTC) on.
        #[arg(long)]
        since: Option<String>,
        /// Only changes by this administrator (or cli:OSUSER).
        #[arg(long)]
        who: Option<String>,
        /// Only changes of this kind of object (e.g. administrator, retention, terms).
        #[arg(long)]
        object: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// A new token: 256 random bits as hex, and its SHA-256, which is all the site keeps.
fn new_token() -> (String, [u8; 32]) {
    let token = hex::encode(rand::random::<[u8; 32]>());
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut h = [0u8; 32];
    h.copy_from_slice(d.as_ref());
    (token, h)
}

pub(super) async fn admin(c: AdminCmd) -> Result<(), Failure> {
    let actor = Actor::cli();
    match c {
        AdminCmd::Add { db, name, role } => {
            let role: Role = role.parse().map_err(usage)?;
            if name.is_empty() || name.starts_with("cli:") || name.chars().any(char::is_whitespace)
            {
                return Err(usage(format!(
                    "administrator name {name:?}: give a name without spaces, not starting with cli:"
                )));
            }
            let store = open_store(&db).await?;
            let (token, hash) = new_token();
            if !store
                .add_admin(&actor, &name, role, &hash)
                .await
                .context("adding the administrator")?
            {
                return Err(usage(format!(
                    "an administrator named {name:?} exists already"
                )));
            }
            println!("added administrator {name} with role {role}; its token (shown once):");
            println!("{token}");
            Ok(())
        }
        AdminCmd::List(db) => {
            let store = open_store_read_only(&db).await?;
            let admins = store
                .administrators()
                .await
                .context("listing administrators")?;
            println!(
                "{:<24} {:<10} {:<20} {:<20} Disabled",
                "Name", "Role", "Created", "Token since"
            );
            for a in admins {
                println!(
                    "{:<24} {:<10} {:<20} {:<20} {}",
                    a.name,
                    a.role,
                    tables::fmt_time(a.created_ms),
                    tables::fmt_time(a.rotated_ms),
                    a.disabled_ms
                        .map(tables::fmt_time)
                        .unwrap_or_else(|| "-".into())
                );
            }
            Ok(())
        }
        AdminCmd::Disable { db, name } => {
            let store = open_store(&db).await?;
            match store
                .disable_admin(&actor, &name)
                .await
                .context("disabling the administrator")?
            {
                None => Err(Failure::Other(anyhow::anyhow!("no administrator {name:?}"))),
                Some(false) => {
                    println!("administrator {name} was already disabled");
                    Ok(())
                }
                Some(true) => {
                    println!("administrator {name} disabled; its token is refused from now on");
                    Ok(())
                }
            }
        }
        AdminCmd::Rotate { db, name } => {
            let store = open_store(&db).await?;
            let (token, hash) = new_token();
            if !store
                .rotate_admin(&actor, &name, &hash)
                .await
                .context("rotating the token")?
            {
                return Err(Failure::Other(anyhow::anyhow!("no administrator {name:?}")));
            }
            println!("administrator {name} has a new token (shown once); the old one is refused:");
            println!("{token}");
            Ok(())
        }
    }
}

/// Unix milliseconds of the start of a UTC day `YYYY-MM-DD`.
pub(super) fn day_start_ms(s: &str) -> Result<i64, Failure> {
    let bad = || usage(format!("--since {s:?}: give a date as YYYY-MM-DD"));
    let mut parts = s.splitn(3, '-').map(|p| p.parse::<i32>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(d))) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let month = u8::try_from(m)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let day = u8::try_from(d).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(y, month, day).map_err(|_| bad())?;
    Ok(date.midnight().assume_utc().unix_timestamp() * 1000)
}

pub(super) async fn audit(c: AuditCmd) -> Result<(), Failure> {
    let AuditCmd::List {
        db,
        since,
        who,
        object,
        limit,
    } = c;
    let since_ms = since.as_deref().map(day_start_ms).transpose()?;
    let store = open_store_read_only(&db).await?;
    let entries = store
        .audit_entries(&AuditFilter {
            since_ms,
            who,
            object,
            before_id: None,
            limit: limit.clamp(1, 10_000),
        })
        .await
        .context("reading the audit log")?;
    println!(
        "{:>6} {:<20} {:<20} {:<8} {:<8} {:<14} {:<24} Before -> After",
        "Id", "When", "Who", "Via", "Action", "Object", "Id"
    );
    let show =
        |v: &Option<serde_json::Value>| v.as_ref().map_or("-".to_string(), |v| v.to_string());
    for e in entries {
        println!(
            "{:>6} {:<20} {:<20} {:<8} {:<8} {:<14} {:<24} {} -> {}",
            e.id,
            tables::fmt_time(e.at_ms),
            e.who,
            e.via,
            e.action,
            e.object,
            e.object_id,
            show(&e.before),
            show(&e.after)
        );
    }
    Ok(())
}
