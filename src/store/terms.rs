//! Terms and conditions in the site database: every published version and every edit of it, the
//! acceptance report, and the site settings the privacy page reads.
//!
//! A version is what users accept. Publishing a new version makes every user accept again; an
//! edit (a typo fix) stores a new edition of the current version and leaves the acceptances
//! standing. What a publication does is decided once ([`plan_publish`]); the SQL, the same on both
//! backends, reads the current edition and stores the plan in one transaction that also raises
//! the policy version, so the relays get the new text.

use sqlx::AssertSqlSafe;

use super::decide::plan_publish;
use super::rows::{Cols, terms_row};
use super::types::{AcceptanceReport, AcceptanceRowView, Published, TermsDraft, TermsRecord};
use super::{Store, StoreError};
use crate::clock;

const TERMS_COLS: &str = "version, edition, display_name, description, title, summary, body, \
                          acceptance_statement, published_ms, edited_ms";

/// The highest terms version each user accepted, on any device.
const USER_TERMS_VERSIONS: &str = "SELECT user_name, CAST(MAX(terms_version) AS BIGINT) \
     FROM terms_acceptances GROUP BY user_name ORDER BY user_name";

/// Moves whenever an acceptance is stored (acceptances are never deleted).
const ACCEPTANCES_MARK: &str = "SELECT CAST(COUNT(*) AS BIGINT) FROM terms_acceptances";

impl Store {
    /// Per user, the highest version of the terms accepted on any device: what gates the user's
    /// portal functions everywhere.
    pub async fn user_terms_versions(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let rows: Vec<(String, i64)> = read!(self, pool => {
            sqlx::query_as(USER_TERMS_VERSIONS).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(u, v)| (u, u32::try_from(v).unwrap_or(0)))
            .collect())
    }

    /// A number that changes whenever a terms acceptance is stored, so the policy builder
    /// notices new acceptances without reading them all.
    pub async fn acceptances_mark(&self) -> Result<i64, StoreError> {
        Ok(read!(self, pool => {
            sqlx::query_scalar(ACCEPTANCES_MARK).fetch_one(pool).await?
        }))
    }

    /// Publishes terms: the first version, a new version (`new_version`), or an edit of the
    /// current version. Raises the policy version when anything was stored.
    /// What was stored is audited as `actor`'s in the same transaction.
    pub async fn publish_terms(
        &self,
        actor: &super::Actor,
        draft: &TermsDraft,
        new_version: bool,
    ) -> Result<Published, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_policy_change().await?;
            let before = sql::current_in(&mut tx).await?;
            let out = sql::publish_terms(&mut tx, draft, new_version).await?;
            if out.action != super::PublishAction::Unchanged {
                let id = format!("{}.{}", out.terms.version, out.terms.edition);
                audit::record(&mut tx, actor, super::AuditChange {
                    action: "publish",
                    object: "terms",
                    object_id: &id,
                    before: before.and_then(|b| serde_json::to_value(b).ok()),
                    after: serde_json::to_value(&out.terms).ok(),
                })
                .await?;
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    /// The terms in force: the newest edition of the newest version.
    pub async fn current_terms(&self) -> Result<Option<TermsRecord>, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut conn = s.reader().acquire().await?;
            sql::current_in(&mut conn).await
        })
    }

    /// Every edition of every version, oldest first.
    pub async fn terms_history(&self) -> Result<Vec<TermsRecord>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT {TERMS_COLS} FROM terms ORDER BY version, edition"
            )))
            .fetch_all(pool)
            .await?;
            rows.iter().map(terms_row).collect()
        })
    }

    /// Who accepted which version, per user and device and per user.
    pub async fn terms_acceptances(&self) -> Result<AcceptanceReport, StoreError> {
        let current = self.current_terms().await?.map(|t| t.version);
        let (rows, without) = self.acceptance_rows().await?;
        Ok(AcceptanceReport::build(current, rows, without))
    }

    /// One site setting (e.g. the privacy statement URL); `None` when it was never set.
    pub async fn site_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        read!(self, pool => {
            Ok(
                sqlx::query_scalar("SELECT value FROM site_settings WHERE key = $1")
                    .bind(key)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// Per user and device, the highest version accepted and when it was first accepted; and
    /// how many unblocked devices never sent an acceptance.
    async fn acceptance_rows(&self) -> Result<(Vec<AcceptanceRowView>, u64), StoreError> {
        read!(self, pool => {
            let mut tx = pool.begin().await?;
            let rows = sqlx::query(
                "SELECT t.user_name, t.device_id, COALESCE(MAX(d.hostname), ''), \
                   CAST(t.terms_version AS BIGINT), MIN(t.accepted_ms), MIN(t.received_ms) \
                 FROM terms_acceptances t LEFT JOIN devices d ON d.device_id = t.device_id \
                 GROUP BY t.user_name, t.device_id, t.terms_version \
                 ORDER BY t.user_name, t.device_id, t.terms_version DESC",
            )
            .fetch_all(&mut *tx)
            .await?;
            let mut out: Vec<AcceptanceRowView> = Vec::new();
            for r in &rows {
                let user: String = r.col(0)?;
                let device_id: String = r.col(1)?;
                // Highest version first within each (user, device): keep only that one.
                if out
                    .last()
                    .is_some_and(|l| l.user == user && l.device_id == device_id)
                {
                    continue;
                }
                out.push(AcceptanceRowView {
                    user,
                    device_id,
                    hostname: r.col(2)?,
                    accepted_version: r.number(3)?,
                    accepted_ms: r.col(4)?,
                    received_ms: r.col(5)?,
                });
            }
            let without: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM devices d WHERE NOT d.blocked AND NOT EXISTS \
                 (SELECT 1 FROM terms_acceptances t WHERE t.device_id = d.device_id)",
            )
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((out, without as u64))
        })
    }
}

for_each_backend! {
    pub(crate) async fn publish_terms(
        tx: &mut Conn,
        draft: &TermsDraft,
        new_version: bool,
    ) -> Result<Published, StoreError> {
        let now = clock::now_ms();
        let current = current_in(&mut *tx).await?;
        let (action, record) = plan_publish(current.as_ref(), draft, new_version, now);
        let Some(record) = record else {
            // Nothing to store: the caller's commit ends a transaction that wrote nothing.
            let policy_version: i64 =
                sqlx::query_scalar("SELECT version FROM policy_state WHERE singleton = 1")
                    .fetch_one(&mut *tx)
                    .await?;
            let terms = current.ok_or_else(|| {
                StoreError::Corrupt("an unchanged publication without current terms".into())
            })?;
            return Ok(Published {
                action,
                terms,
                policy_version: policy_version as u64,
            });
        };
        let t = &record.text;
        sqlx::query(
            "INSERT INTO terms (version, edition, display_name, description, title, summary, \
             body, acceptance_statement, published_ms, edited_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(i64::from(record.version))
        .bind(i64::from(record.edition))
        .bind(&t.display_name)
        .bind(&t.description)
        .bind(&t.title)
        .bind(&t.summary)
        .bind(&t.body)
        .bind(&t.acceptance_statement)
        .bind(record.published_ms)
        .bind(record.edited_ms)
        .execute(&mut *tx)
        .await?;
        let policy_version = policy::bump_policy_version(&mut *tx, now).await?;
        Ok(Published {
            action,
            terms: record,
            policy_version,
        })
    }

    pub(crate) async fn current_in(conn: &mut Conn) -> Result<Option<TermsRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TERMS_COLS} FROM terms ORDER BY version DESC, edition DESC LIMIT 1"
        )))
        .fetch_optional(&mut *conn)
        .await?;
        row.as_ref().map(terms_row).transpose()
    }
}
