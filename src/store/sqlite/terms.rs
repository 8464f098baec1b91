//! SQLite queries for terms and conditions and site settings (see `terms.rs`).

use sqlx::{Row, SqliteConnection};

use crate::clock;
use crate::store::SqliteStore;
use crate::store::StoreError;
use crate::store::compliance::on_sqlite::bump_policy_version;
use crate::store::decide::plan_publish;
use crate::store::rows::terms_row;
use crate::store::types::*;

const TERMS_COLS: &str = "version, edition, display_name, description, title, summary, body, \
                          acceptance_statement, published_ms, edited_ms";

impl SqliteStore {
    pub async fn publish_terms(
        &self,
        draft: &TermsDraft,
        new_version: bool,
    ) -> Result<Published, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let now = clock::now_ms();
        let current = current_in(&mut tx).await?;
        let (action, record) = plan_publish(current.as_ref(), draft, new_version, now);
        let Some(record) = record else {
            let policy_version: i64 =
                sqlx::query_scalar("SELECT version FROM policy_state WHERE singleton = 1")
                    .fetch_one(&mut *tx)
                    .await?;
            tx.rollback().await?;
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        let policy_version = bump_policy_version(&mut tx, now).await?;
        tx.commit().await?;
        Ok(Published {
            action,
            terms: record,
            policy_version,
        })
    }

    pub async fn current_terms(&self) -> Result<Option<TermsRecord>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        current_in(&mut conn).await
    }

    pub async fn terms_history(&self) -> Result<Vec<TermsRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TERMS_COLS} FROM terms ORDER BY version, edition"
        )))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(terms_row).collect()
    }

    /// Per user and device, the highest version accepted and when it was first accepted; and
    /// how many unblocked devices never sent an acceptance.
    pub(crate) async fn acceptance_rows(
        &self,
    ) -> Result<(Vec<AcceptanceRowView>, u64), StoreError> {
        let mut tx = self.reader.begin().await?;
        let rows = sqlx::query(
            "SELECT t.user_name, t.device_id, COALESCE(MAX(d.hostname), ''), t.terms_version, \
               MIN(t.accepted_ms), MIN(t.received_ms) \
             FROM terms_acceptances t LEFT JOIN devices d ON d.device_id = t.device_id \
             GROUP BY t.user_name, t.device_id, t.terms_version \
             ORDER BY t.user_name, t.device_id, t.terms_version DESC",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut out: Vec<AcceptanceRowView> = Vec::new();
        for r in &rows {
            let user: String = r.try_get(0)?;
            let device_id: String = r.try_get(1)?;
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
                hostname: r.try_get(2)?,
                accepted_version: r.try_get::<i64, _>(3)? as u32,
                accepted_ms: r.try_get(4)?,
                received_ms: r.try_get(5)?,
            });
        }
        let without: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM devices d WHERE d.blocked = 0 AND NOT EXISTS \
             (SELECT 1 FROM terms_acceptances t WHERE t.device_id = d.device_id)",
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((out, without as u64))
    }

    pub async fn site_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM site_settings WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.reader)
                .await?,
        )
    }
}

async fn current_in(conn: &mut SqliteConnection) -> Result<Option<TermsRecord>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TERMS_COLS} FROM terms ORDER BY version DESC, edition DESC LIMIT 1"
    )))
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(terms_row).transpose()
}
