//! Terms and conditions in the site database: every published version and every edit of it, the
//! acceptance report, and the site settings the privacy page reads.
//!
//! A version is what users accept. Publishing a new version makes every user accept again; an
//! edit (a typo fix) stores a new edition of the current version and leaves the acceptances
//! standing. What a publication does is decided here, once ([`plan_publish`]); the backends read
//! the current edition and store the plan in one transaction that also raises the policy
//! version, so the relays get the new text.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Store, StoreError};

/// The text of the terms, as users read it and administrators label it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TermsText {
    /// For administrators only: tells versions apart in lists; never shown to users.
    pub display_name: String,
    /// For administrators only.
    pub description: String,
    pub title: String,
    pub summary: String,
    pub body: String,
    /// What the user states by accepting, e.g. "I have read and accept these terms".
    pub acceptance_statement: String,
}

/// One stored edition of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TermsRecord {
    pub version: u32,
    /// 1 for the text the version was published with; one more for each edit.
    pub edition: u32,
    #[serde(flatten)]
    pub text: TermsText,
    /// When the version was first published (the same for all its editions).
    pub published_ms: i64,
    /// When this edition was stored.
    pub edited_ms: i64,
}

/// What an administrator publishes. Title, body and acceptance statement are always given;
/// the others may be left out (`None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermsDraft {
    pub title: String,
    pub body: String,
    pub acceptance_statement: String,
    /// `None`: on an edit, keep the current summary; on a new version, no summary (a new
    /// version is new text, and an old summary beside it would mislead).
    pub summary: Option<String>,
    /// `None`: keep the current one (edit or new version); empty for the first terms.
    pub display_name: Option<String>,
    /// `None`: keep the current one (edit or new version); empty for the first terms.
    pub description: Option<String>,
}

/// What a publication did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishAction {
    /// The site's first terms: version 1.
    First,
    /// A new version: every user must accept again.
    NewVersion,
    /// A new edition of the current version: the version and the acceptances stand.
    Edited,
    /// Identical to the current edition: nothing was stored and the policy is unchanged.
    Unchanged,
}

/// The outcome of [`Store::publish_terms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub action: PublishAction,
    /// The terms in force afterwards.
    pub terms: TermsRecord,
    /// The policy version afterwards.
    pub policy_version: u64,
}

/// Decides what publishing `draft` does, given the current edition. Returns the action and the
/// edition to store (`None` when unchanged).
pub fn plan_publish(
    current: Option<&TermsRecord>,
    draft: &TermsDraft,
    new_version: bool,
    now_ms: i64,
) -> (PublishAction, Option<TermsRecord>) {
    let Some(cur) = current else {
        let rec = TermsRecord {
            version: 1,
            edition: 1,
            text: TermsText {
                display_name: draft.display_name.clone().unwrap_or_default(),
                description: draft.description.clone().unwrap_or_default(),
                title: draft.title.clone(),
                summary: draft.summary.clone().unwrap_or_default(),
                body: draft.body.clone(),
                acceptance_statement: draft.acceptance_statement.clone(),
            },
            published_ms: now_ms,
            edited_ms: now_ms,
        };
        return (PublishAction::First, Some(rec));
    };
    let keep = |given: &Option<String>, current: &str| given.clone().unwrap_or(current.into());
    let text = TermsText {
        display_name: keep(&draft.display_name, &cur.text.display_name),
        description: keep(&draft.description, &cur.text.description),
        title: draft.title.clone(),
        summary: if new_version {
            draft.summary.clone().unwrap_or_default()
        } else {
            keep(&draft.summary, &cur.text.summary)
        },
        body: draft.body.clone(),
        acceptance_statement: draft.acceptance_statement.clone(),
    };
    if new_version {
        let rec = TermsRecord {
            version: cur.version.saturating_add(1),
            edition: 1,
            text,
            published_ms: now_ms,
            edited_ms: now_ms,
        };
        return (PublishAction::NewVersion, Some(rec));
    }
    if text == cur.text {
        return (PublishAction::Unchanged, None);
    }
    let rec = TermsRecord {
        version: cur.version,
        edition: cur.edition.saturating_add(1),
        text,
        published_ms: cur.published_ms,
        edited_ms: now_ms,
    };
    (PublishAction::Edited, Some(rec))
}

/// A user's newest acceptance on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcceptanceView {
    pub user: String,
    pub device_id: String,
    /// Empty when the site has not learned the device's details.
    pub hostname: String,
    /// The highest version this user accepted on this device.
    pub accepted_version: u32,
    /// When the user first accepted that version there (the device's clock).
    pub accepted_ms: i64,
    /// When a relay received that acceptance.
    pub received_ms: i64,
    /// Whether `accepted_version` is the version in force.
    pub latest: bool,
}

/// A user's newest acceptance on any device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserAcceptance {
    pub user: String,
    pub accepted_version: u32,
    /// When the user first accepted that version, on any device.
    pub accepted_ms: i64,
    /// Devices the user accepted any version on.
    pub devices: u64,
    pub latest: bool,
}

/// The acceptance report: who accepted which version, where and when.
///
/// The site learns of a user only from an acceptance, so users who never accepted any version
/// cannot be listed; `devices_without_acceptance` counts the enrolled devices no acceptance has
/// come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcceptanceReport {
    /// The version in force; `None` when no terms are published.
    pub current_version: Option<u32>,
    /// Per user and device, by user then device.
    pub acceptances: Vec<AcceptanceView>,
    /// Per user, by user.
    pub users: Vec<UserAcceptance>,
    pub devices_without_acceptance: u64,
}

/// A (user, device) row as the backends return it: the highest version and when it was first
/// accepted there.
#[derive(Debug, Clone)]
pub struct AcceptanceRowView {
    pub user: String,
    pub device_id: String,
    pub hostname: String,
    pub accepted_version: u32,
    pub accepted_ms: i64,
    pub received_ms: i64,
}

impl AcceptanceReport {
    /// Builds the report from the backend's rows (sorted by user, then device).
    pub fn build(
        current_version: Option<u32>,
        rows: Vec<AcceptanceRowView>,
        devices_without_acceptance: u64,
    ) -> Self {
        let latest = |v: u32| current_version.is_some_and(|c| v >= c);
        let mut users: BTreeMap<String, UserAcceptance> = BTreeMap::new();
        for r in &rows {
            let u = users
                .entry(r.user.clone())
                .or_insert_with(|| UserAcceptance {
                    user: r.user.clone(),
                    accepted_version: r.accepted_version,
                    accepted_ms: r.accepted_ms,
                    devices: 0,
                    latest: false,
                });
            u.devices += 1;
            if (r.accepted_version, std::cmp::Reverse(r.accepted_ms))
                > (u.accepted_version, std::cmp::Reverse(u.accepted_ms))
            {
                u.accepted_version = r.accepted_version;
                u.accepted_ms = r.accepted_ms;
            }
        }
        let users = users
            .into_values()
            .map(|mut u| {
                u.latest = latest(u.accepted_version);
                u
            })
            .collect();
        let acceptances = rows
            .into_iter()
            .map(|r| AcceptanceView {
                latest: latest(r.accepted_version),
                user: r.user,
                device_id: r.device_id,
                hostname: r.hostname,
                accepted_version: r.accepted_version,
                accepted_ms: r.accepted_ms,
                received_ms: r.received_ms,
            })
            .collect();
        Self {
            current_version,
            acceptances,
            users,
            devices_without_acceptance,
        }
    }
}

impl Store {
    /// Publishes terms: the first version, a new version (`new_version`), or an edit of the
    /// current version. Raises the policy version when anything was stored.
    pub async fn publish_terms(
        &self,
        draft: &TermsDraft,
        new_version: bool,
    ) -> Result<Published, StoreError> {
        dispatch!(self, s => s.publish_terms(draft, new_version).await)
    }

    /// The terms in force: the newest edition of the newest version.
    pub async fn current_terms(&self) -> Result<Option<TermsRecord>, StoreError> {
        dispatch!(self, s => s.current_terms().await)
    }

    /// Every edition of every version, oldest first.
    pub async fn terms_history(&self) -> Result<Vec<TermsRecord>, StoreError> {
        dispatch!(self, s => s.terms_history().await)
    }

    /// Who accepted which version, per user and device and per user.
    pub async fn terms_acceptances(&self) -> Result<AcceptanceReport, StoreError> {
        let current = self.current_terms().await?.map(|t| t.version);
        let (rows, without) = dispatch!(self, s => s.acceptance_rows().await)?;
        Ok(AcceptanceReport::build(current, rows, without))
    }

    /// One site setting (e.g. the privacy statement URL); `None` when it was never set.
    pub async fn site_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.site_setting(key).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(body: &str) -> TermsDraft {
        TermsDraft {
            title: "Acceptable use".into(),
            body: body.into(),
            acceptance_statement: "I accept".into(),
            summary: Some("short".into()),
            display_name: Some("AUP".into()),
            description: None,
        }
    }

    #[test]
    fn first_new_version_edit_and_unchanged() {
        let (a, first) = plan_publish(None, &draft("body"), false, 10);
        let first = first.unwrap();
        assert_eq!(a, PublishAction::First);
        assert_eq!(
            (first.version, first.edition, first.published_ms),
            (1, 1, 10)
        );
        assert_eq!(first.text.display_name, "AUP");

        let (a, r) = plan_publish(Some(&first), &draft("body"), false, 20);
        assert_eq!((a, r), (PublishAction::Unchanged, None));

        // A typo fix: same version, next edition, first publication time kept; the summary
        // left out is kept.
        let mut d = draft("body, fixed");
        d.summary = None;
        let (a, r) = plan_publish(Some(&first), &d, false, 30);
        let edit = r.unwrap();
        assert_eq!(a, PublishAction::Edited);
        assert_eq!(
            (
                edit.version,
                edit.edition,
                edit.published_ms,
                edit.edited_ms
            ),
            (1, 2, 10, 30)
        );
        assert_eq!(edit.text.summary, "short");

        // A new version: summary only when given, admin labels carried over.
        let mut d = draft("v2");
        d.summary = None;
        d.display_name = None;
        let (a, r) = plan_publish(Some(&edit), &d, true, 40);
        let v2 = r.unwrap();
        assert_eq!(a, PublishAction::NewVersion);
        assert_eq!((v2.version, v2.edition, v2.published_ms), (2, 1, 40));
        assert_eq!(v2.text.summary, "");
        assert_eq!(v2.text.display_name, "AUP");

        // Even identical text becomes a new version when asked.
        let (a, r) = plan_publish(Some(&v2), &d, true, 50);
        assert_eq!(
            (a, r.map(|r| r.version)),
            (PublishAction::NewVersion, Some(3))
        );
    }

    #[test]
    fn the_report_marks_who_is_on_the_latest_version() {
        let row = |user: &str, device: &str, v: u32, at: i64| AcceptanceRowView {
            user: user.into(),
            device_id: device.into(),
            hostname: String::new(),
            accepted_version: v,
            accepted_ms: at,
            received_ms: at,
        };
        let r = AcceptanceReport::build(
            Some(2),
            vec![
                row("alice", "d1", 1, 5),
                row("alice", "d2", 2, 9),
                row("bob", "d1", 1, 7),
            ],
            3,
        );
        let latest: Vec<(&str, &str, bool)> = r
            .acceptances
            .iter()
            .map(|a| (a.user.as_str(), a.device_id.as_str(), a.latest))
            .collect();
        assert_eq!(
            latest,
            vec![
                ("alice", "d1", false),
                ("alice", "d2", true),
                ("bob", "d1", false)
            ]
        );
        assert_eq!(
            r.users
                .iter()
                .map(|u| (
                    u.user.as_str(),
                    u.accepted_version,
                    u.accepted_ms,
                    u.devices,
                    u.latest
                ))
                .collect::<Vec<_>>(),
            vec![("alice", 2, 9, 2, true), ("bob", 1, 7, 1, false)]
        );
        assert_eq!(r.devices_without_acceptance, 3);
        let none = AcceptanceReport::build(None, vec![row("a", "d", 1, 1)], 0);
        assert!(
            !none.acceptances[0].latest,
            "no terms in force: nothing is latest"
        );
    }
}
