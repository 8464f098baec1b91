//! Terms and conditions in the site database: every published version and every edit of it, the
//! acceptance report, and the site settings the privacy page reads.
//!
//! A version is what users accept. Publishing a new version makes every user accept again; an
//! edit (a typo fix) stores a new edition of the current version and leaves the acceptances
//! standing. What a publication does is decided here, once ([`plan_publish`]); the backends read
//! the current edition and store the plan in one transaction that also raises the policy
//! version, so the relays get the new text.

use super::types::*;
use super::{Store, StoreError};

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
