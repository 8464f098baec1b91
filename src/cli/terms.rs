//! The terms and privacy commands: `terms publish|show`, `site set privacy-url`, `report terms`,
//! and on the device `agent terms show|accept` and the portal functions `agent policy` and
//! `agent privacy`, which are refused (exit status 77) until the user accepted the terms in
//! force.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::format::{Format, render};
use super::{
    ConfigArg, DbArg, Failure, open_agent, open_store, open_store_read_only, records,
    tables::fmt_time, usage,
};
use crate::agent::run::PolicySource;
use crate::agent::terms::{TermsStatus, check_user, login_user};
use crate::agent::{Agent, AgentError};
use crate::policy::SETTING_PRIVACY_URL;
use crate::policy::terms::{self as site_terms, TermsError};
use crate::store::{AcceptanceReport, PublishAction, Store, TermsDraft, TermsRecord};

#[derive(Debug, Subcommand)]
pub(super) enum TermsCmd {
    /// Publish terms and conditions. The first publication is version 1. With --new-version the
    /// next version is published and every user must accept again; without it the current
    /// version is edited (a typo fix: the version and the acceptances stand). Every version and
    /// edit is kept, and the terms reach agents with the policy.
    Publish(PublishArgs),
    /// The terms in force, and every version and edit published.
    Show(DbArg),
}

#[derive(Debug, Args)]
pub(super) struct PublishArgs {
    #[command(flatten)]
    db: DbArg,
    /// The title users see.
    #[arg(long)]
    title: String,
    /// A UTF-8 text file holding the body of the terms.
    #[arg(long)]
    body_file: PathBuf,
    /// What the user states by accepting, e.g. "I have read and accept these terms".
    #[arg(long)]
    acceptance_statement: String,
    /// A short summary shown above the body. Left out: an edit keeps the current summary, a new
    /// version has none.
    #[arg(long)]
    summary: Option<String>,
    /// A name for administrators only (left out: kept).
    #[arg(long)]
    display_name: Option<String>,
    /// A description for administrators only (left out: kept).
    #[arg(long)]
    description: Option<String>,
    /// Publish a new version: every user must accept again.
    #[arg(long)]
    new_version: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum AgentTermsCmd {
    /// Fetch the policy and show its terms and conditions, and whether the user accepted them.
    Show(PortalArgs),
    /// Accept the terms in force for the user: sent to the relay like any submission, and
    /// recorded on this device once the relay took it.
    Accept {
        #[command(flatten)]
        portal: PortalArgs,
        /// Accept only if this is the version in force (the version the user read).
        #[arg(long)]
        version: Option<u32>,
        /// Keep retrying for this many seconds when the relay asks to wait.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
}

#[derive(Debug, Args)]
pub(super) struct PortalArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The user (default: $USER, else the name of the current uid).
    #[arg(long)]
    user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(super) enum SiteCmd {
    /// Change a site setting; it reaches agents with the policy.
    #[command(subcommand)]
    Set(SiteSetCmd),
}

#[derive(Debug, Subcommand)]
pub(super) enum SiteSetCmd {
    /// The privacy statement URL agents show and the privacy page links: an https:// URL.
    PrivacyUrl {
        #[command(flatten)]
        db: DbArg,
        /// An https:// URL with a host, e.g. https://example.com/privacy.
        url: String,
    },
    /// How many days the retention task keeps the audit log (default 365), separately from
    /// compliance data.
    AuditRetentionDays {
        #[command(flatten)]
        db: DbArg,
        days: u32,
    },
}

/// Exit status of a portal function refused because the terms are not accepted (EX_NOPERM).
pub const EXIT_TERMS_NOT_ACCEPTED: u8 = 77;

fn terms_failure(e: TermsError) -> Failure {
    match e {
        TermsError::Store(_) => Failure::Other(e.into()),
        _ => Failure::Usage(e.into()),
    }
}

pub(super) async fn terms(c: TermsCmd) -> Result<(), Failure> {
    match c {
        TermsCmd::Publish(a) => publish(a).await,
        TermsCmd::Show(db) => {
            let store = open_store_read_only(&db).await?;
            let history = store.terms_history().await.context("reading the terms")?;
            print!("{}", terms_table(&history));
            Ok(())
        }
    }
}

async fn publish(a: PublishArgs) -> Result<(), Failure> {
    let path = a.body_file.display().to_string();
    let bytes = std::fs::read(&a.body_file)
        .map_err(|e| usage(format!("cannot read --body-file {path}: {e}")))?;
    let body = String::from_utf8(bytes)
        .map_err(|_| usage(format!("--body-file {path} is not UTF-8 text")))?;
    let draft = TermsDraft {
        title: a.title,
        body,
        acceptance_statement: a.acceptance_statement,
        summary: a.summary,
        display_name: a.display_name,
        description: a.description,
    };
    site_terms::check_draft(&draft).map_err(terms_failure)?;
    let store = open_store(&a.db).await?;
    let p = site_terms::publish(&store, &crate::store::Actor::cli(), &draft, a.new_version)
        .await
        .map_err(terms_failure)?;
    let t = &p.terms;
    match p.action {
        PublishAction::First | PublishAction::NewVersion => println!(
            "published version {} of the terms and conditions ({:?}); every user must accept it; \
             policy version {} goes to the relays",
            t.version, t.text.title, p.policy_version
        ),
        PublishAction::Edited => println!(
            "edited version {} of the terms and conditions (edition {}); the version and its \
             acceptances stand; policy version {} goes to the relays",
            t.version, t.edition, p.policy_version
        ),
        PublishAction::Unchanged => println!(
            "unchanged: version {} edition {} already has this text",
            t.version, t.edition
        ),
    }
    Ok(())
}

fn terms_table(history: &[TermsRecord]) -> String {
    let Some(cur) = history.iter().max_by_key(|t| (t.version, t.edition)) else {
        return "No terms and conditions are published.\n".into();
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Terms and conditions in force: version {}, edition {} — {}",
        cur.version, cur.edition, cur.text.title
    );
    let _ = writeln!(
        out,
        "published {}, last edited {}",
        fmt_time(cur.published_ms),
        fmt_time(cur.edited_ms)
    );
    if !cur.text.display_name.is_empty() {
        let _ = writeln!(out, "display name: {}", cur.text.display_name);
    }
    if !cur.text.description.is_empty() {
        let _ = writeln!(out, "description: {}", cur.text.description);
    }
    if !cur.text.summary.is_empty() {
        let _ = writeln!(out, "\n{}", cur.text.summary.trim_end());
    }
    let _ = writeln!(out, "\n{}", cur.text.body.trim_end());
    let _ = writeln!(
        out,
        "\nAcceptance statement: {}",
        cur.text.acceptance_statement
    );
    let _ = writeln!(
        out,
        "\n{:>7} {:>7}  {:<20}  {:<20}  {:<24} Title",
        "Version", "Edition", "Published", "Edited", "Display name"
    );
    for t in history {
        let _ = writeln!(
            out,
            "{:>7} {:>7}  {:<20}  {:<20}  {:<24} {}",
            t.version,
            t.edition,
            fmt_time(t.published_ms),
            fmt_time(t.edited_ms),
            t.text.display_name,
            t.text.title
        );
    }
    out
}

pub(super) async fn site(c: SiteCmd) -> Result<(), Failure> {
    match c {
        SiteCmd::Set(SiteSetCmd::PrivacyUrl { db, url }) => {
            let url = site_terms::check_privacy_url(&url).map_err(terms_failure)?;
            let store = open_store(&db).await?;
            let changed = store
                .set_site_setting(&crate::store::Actor::cli(), SETTING_PRIVACY_URL, &url)
                .await
                .context("storing the privacy statement URL")?;
            if changed {
                let v = store.policy_version().await.context("reading the policy")?;
                println!(
                    "privacy statement URL set to {url}; policy version {v} goes to the relays"
                );
            } else {
                println!("privacy statement URL was already {url}");
            }
            Ok(())
        }
        SiteCmd::Set(SiteSetCmd::AuditRetentionDays { db, days }) => {
            if !(1..=36500).contains(&days) {
                return Err(super::usage(format!(
                    "audit retention days {days}: give 1 to 36500"
                )));
            }
            let store = open_store(&db).await?;
            store
                .set_site_setting(
                    &crate::store::Actor::cli(),
                    crate::retention::SETTING_AUDIT_DAYS,
                    &days.to_string(),
                )
                .await
                .context("storing the audit log's retention age")?;
            println!("the retention task keeps the audit log for {days} days");
            Ok(())
        }
    }
}

pub(super) async fn report_terms(store: &Store, format: Format) -> Result<(), Failure> {
    let report = store
        .terms_acceptances()
        .await
        .context("reading terms acceptances")?;
    let current = store.current_terms().await.context("reading the terms")?;
    print!(
        "{}",
        render(
            format,
            || acceptance_table(&report, current.as_ref()),
            || records::terms_json(&report),
            || records::terms_csv(&report),
        )
    );
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn acceptance_table(r: &AcceptanceReport, current: Option<&TermsRecord>) -> String {
    let mut out = match current {
        Some(t) => format!(
            "Terms and conditions in force: version {} ({})\n",
            t.version, t.text.title
        ),
        None => "No terms and conditions are published.\n".to_string(),
    };
    if r.acceptances.is_empty() {
        out.push_str("\nNo acceptances yet.\n");
    } else {
        let _ = writeln!(
            out,
            "\n{:<24} {:<32} {:<20} {:>8}  {:<20}  Latest",
            "User", "Device", "Hostname", "Accepted", "Accepted at"
        );
        for a in &r.acceptances {
            let _ = writeln!(
                out,
                "{:<24} {:<32} {:<20} {:>8}  {:<20}  {}",
                a.user,
                a.device_id,
                a.hostname,
                a.accepted_version,
                fmt_time(a.accepted_ms),
                yes_no(a.latest)
            );
        }
        let _ = writeln!(
            out,
            "\nPer user:\n{:<24} {:>8}  {:<20}  {:>7}  Latest",
            "User", "Accepted", "Accepted at", "Devices"
        );
        for u in &r.users {
            let _ = writeln!(
                out,
                "{:<24} {:>8}  {:<20}  {:>7}  {}",
                u.user,
                u.accepted_version,
                fmt_time(u.accepted_ms),
                u.devices,
                yes_no(u.latest)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nUsers who never accepted any version are not listed: the site learns of a user only \
         from an acceptance. {} enrolled device(s) have sent no acceptance at all.",
        r.devices_without_acceptance
    );
    out
}

/// The user a device command acts for.
fn user_of(p: &PortalArgs) -> Result<String, Failure> {
    let user = match &p.user {
        Some(u) => u.clone(),
        None => login_user().ok_or_else(|| {
            usage("cannot tell the login user ($USER is unset and the uid has no name); give --user NAME")
        })?,
    };
    check_user(&user).map_err(usage)?;
    Ok(user)
}

fn agent_failure(e: AgentError) -> Failure {
    match e {
        AgentError::TermsNotAccepted { ref user, .. } => {
            let hint = format!(
                "; read them with `mprelay agent terms show --user {user}` and accept them with \
                 `mprelay agent terms accept --user {user}` (compliance reporting goes on meanwhile)"
            );
            Failure::NotPermitted(anyhow::anyhow!("{e}{hint}"))
        }
        e => Failure::Other(e.into()),
    }
}

fn note_source(s: &TermsStatus) {
    if s.source == PolicySource::Cached {
        eprintln!(
            "mprelay: the relay could not be asked; showing the policy kept on this device (version {})",
            s.policy.version
        );
    }
}

pub(super) async fn agent_terms(c: AgentTermsCmd) -> Result<(), Failure> {
    match c {
        AgentTermsCmd::Show(p) => {
            let user = user_of(&p)?;
            let a = open_agent(&p.config).await?;
            let s = a.terms_status(&user).await.map_err(agent_failure)?;
            note_source(&s);
            print!("{}", terms_for_user(&s));
            Ok(())
        }
        AgentTermsCmd::Accept {
            portal,
            version,
            wait,
        } => {
            let user = user_of(&portal)?;
            let a = open_agent(&portal.config).await?;
            accept(&a, &user, version, Duration::from_secs(wait)).await
        }
    }
}

async fn accept(
    a: &Agent,
    user: &str,
    version: Option<u32>,
    wait: Duration,
) -> Result<(), Failure> {
    let out = a
        .accept_terms(user, version, wait)
        .await
        .map_err(agent_failure)?;
    if out.delivered {
        println!(
            "{user} accepted version {} of the terms and conditions ({:?}); acceptance {} taken by the relay",
            out.version, out.title, out.message_id
        );
        Ok(())
    } else {
        Err(Failure::Other(anyhow::anyhow!(
            "the acceptance of version {} by {user} is queued as {} but no relay took it yet \
             ({} submission(s) still queued); it is sent on the next agent run, and the portal \
             functions stay refused until then",
            out.version,
            out.message_id,
            out.flush.remaining
        )))
    }
}

fn terms_for_user(s: &TermsStatus) -> String {
    let Some(t) = s.terms() else {
        return "The site publishes no terms and conditions.\n".into();
    };
    let mut out = format!(
        "{}\nVersion {}, published {}\n",
        t.title,
        t.version,
        fmt_time(t.published_unix_ms)
    );
    if !t.summary.is_empty() {
        let _ = writeln!(out, "\n{}", t.summary.trim_end());
    }
    let _ = writeln!(out, "\n{}", t.body.trim_end());
    let _ = writeln!(out, "\nBy accepting: {}", t.acceptance_statement);
    let user = &s.user;
    match &s.accepted {
        Some(a) if a.version >= t.version => {
            let _ = writeln!(
                out,
                "\n{user} accepted version {} on this device ({}).",
                a.version,
                fmt_time(a.accepted_ms)
            );
        }
        _ if s.site_accepted >= t.version => {
            let _ = writeln!(
                out,
                "\n{user} accepted version {} on another device.",
                s.site_accepted
            );
        }
        other => {
            let before = other
                .as_ref()
                .map(|a| {
                    format!(
                        " (version {} was accepted on {})",
                        a.version,
                        fmt_time(a.accepted_ms)
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "\n{user} has not accepted version {}{before}. Accept with: mprelay agent terms accept --user {user} --version {}",
                t.version, t.version
            );
        }
    }
    out
}

/// `mprelay agent policy`: the policy refreshed for the user (a portal function).
pub(super) async fn agent_policy(p: PortalArgs) -> Result<(), Failure> {
    let user = user_of(&p)?;
    let a = open_agent(&p.config).await?;
    let s = a.portal_policy(&user).await.map_err(agent_failure)?;
    note_source(&s);
    let pol = &s.policy;
    let mut out = format!("policy version {} for {user}\n", pol.version);
    if pol.baselines.is_empty() {
        out.push_str("baselines: none\n");
    }
    for b in &pol.baselines {
        let _ = writeln!(
            out,
            "baseline {} revision {}: {} ({} configuration item(s))",
            b.id,
            b.revision,
            b.name,
            b.members.len()
        );
    }
    if pol.evaluation_interval_s > 0 {
        let _ = writeln!(out, "evaluation interval: {} s", pol.evaluation_interval_s);
    }
    let _ = writeln!(
        out,
        "privacy statement: {}",
        if pol.privacy_statement_url.is_empty() {
            "none published"
        } else {
            &pol.privacy_statement_url
        }
    );
    if let Some(t) = &pol.terms {
        let _ = writeln!(
            out,
            "terms and conditions: version {} ({}), accepted",
            t.version, t.title
        );
    }
    print!("{out}");
    Ok(())
}

/// `mprelay agent privacy`: the site's privacy statement URL (a portal function).
pub(super) async fn agent_privacy(p: PortalArgs) -> Result<(), Failure> {
    let user = user_of(&p)?;
    let a = open_agent(&p.config).await?;
    let s = a.portal_policy(&user).await.map_err(agent_failure)?;
    note_source(&s);
    if s.policy.privacy_statement_url.is_empty() {
        println!("The site publishes no privacy statement URL.");
    } else {
        println!("{}", s.policy.privacy_statement_url);
    }
    Ok(())
}
