//! SQLite queries for definitions, policy and compliance reports (see `compliance.rs`).
//! Definitions are few and imported by hand, so they are written a statement per row; the
//! report queries are set-based joins over current compliance.

use std::collections::{BTreeMap, HashMap};

use sqlx::{AssertSqlSafe, Row, SqliteConnection};

use super::StoreError;
use super::compliance::*;
use super::rows::{
    DEF_COLS, DEF_COLS_CI, baseline_overview_row, current_view_row, definition_row,
    definition_summary_row, group_noncompliant, setting_summary_row,
};
use super::sqlite::SqliteStore;
use crate::clock;

impl SqliteStore {
    pub async fn import_definitions(
        &self,
        req: &ImportRequest,
    ) -> Result<ImportResult, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let now = clock::now_ms();
        let mut out = ImportResult::default();
        let mut new_cis = Vec::new();
        for (i, ci) in req.cis.iter().enumerate() {
            match stored_hash(&mut tx, "configuration_items", "ci_id", &ci.id, ci.revision).await? {
                Some((h, _)) if h == ci.content_hash => {
                    out.unchanged
                        .push(("configuration_item", ci.id.clone(), ci.revision));
                }
                Some((_, source)) => out.issues.push(ImportIssue::CiChanged {
                    index: i,
                    stored_source: source,
                }),
                None => new_cis.push(ci),
            }
        }
        let mut new_baselines = Vec::new();
        for (i, b) in req.baselines.iter().enumerate() {
            let d = &b.def;
            match stored_hash(&mut tx, "baselines", "baseline_id", &d.id, d.revision).await? {
                Some((h, _)) if h == d.content_hash => {
                    out.unchanged.push(("baseline", d.id.clone(), d.revision));
                }
                Some((_, source)) => out.issues.push(ImportIssue::BaselineChanged {
                    index: i,
                    stored_source: source,
                }),
                None => new_baselines.push(b),
            }
            for (m, member) in b.members.iter().enumerate() {
                let in_request = req.cis.iter().any(|c| {
                    c.id == member.ci_id && member.ci_revision.is_none_or(|r| r == c.revision)
                });
                if in_request {
                    continue;
                }
                let stored: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM configuration_items WHERE ci_id = ? \
                     AND (? IS NULL OR revision = ?)",
                )
                .bind(&member.ci_id)
                .bind(member.ci_revision.map(i64::from))
                .bind(member.ci_revision.map(i64::from))
                .fetch_one(&mut *tx)
                .await?;
                if stored == 0 {
                    out.issues.push(ImportIssue::MissingCi {
                        baseline: i,
                        member: m,
                    });
                }
            }
        }
        if !out.issues.is_empty() {
            tx.rollback().await?;
            return Ok(out);
        }
        for ci in &new_cis {
            insert_definition(&mut tx, "configuration_items", "ci_id", ci, now).await?;
            log_import(&mut tx, "configuration_item", ci, "added", now).await?;
            out.added
                .push(("configuration_item", ci.id.clone(), ci.revision));
        }
        for b in &new_baselines {
            insert_definition(&mut tx, "baselines", "baseline_id", &b.def, now).await?;
            for (k, m) in b.members.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO baseline_members (baseline_id, baseline_revision, ordinal, ci_id, \
                     ci_revision, membership, remediate) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&b.def.id)
                .bind(i64::from(b.def.revision))
                .bind(k as i64)
                .bind(&m.ci_id)
                .bind(m.ci_revision.map(i64::from))
                .bind(&m.membership)
                .bind(m.remediate)
                .execute(&mut *tx)
                .await?;
            }
            log_import(&mut tx, "baseline", &b.def, "added", now).await?;
            out.added
                .push(("baseline", b.def.id.clone(), b.def.revision));
        }
        for (kind, id, rev) in &out.unchanged {
            let def = match *kind {
                "baseline" => req
                    .baselines
                    .iter()
                    .map(|b| &b.def)
                    .find(|d| &d.id == id && d.revision == *rev),
                _ => req.cis.iter().find(|d| &d.id == id && d.revision == *rev),
            };
            if let Some(d) = def {
                log_import(&mut tx, kind, d, "unchanged", now).await?;
            }
        }
        out.policy_version = if out.added.is_empty() {
            current_version(&mut tx).await?
        } else {
            bump_policy_version(&mut tx, now).await?
        };
        tx.commit().await?;
        Ok(out)
    }

    pub async fn policy_version(&self) -> Result<u64, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT version FROM policy_state WHERE singleton = 1")
            .fetch_one(&self.reader)
            .await?;
        Ok(v as u64)
    }

    pub async fn policy_contents(&self) -> Result<PolicyContents, StoreError> {
        // One read transaction: the version and what it describes come from the same snapshot.
        let mut tx = self.reader.begin().await?;
        let version: i64 =
            sqlx::query_scalar("SELECT version FROM policy_state WHERE singleton = 1")
                .fetch_one(&mut *tx)
                .await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEF_COLS} FROM baselines b WHERE revision = \
             (SELECT MAX(revision) FROM baselines x WHERE x.baseline_id = b.baseline_id) \
             ORDER BY baseline_id"
        )))
        .fetch_all(&mut *tx)
        .await?;
        let defs: Vec<DefinitionRecord> =
            rows.iter().map(definition_row).collect::<Result<_, _>>()?;
        let mut cis: HashMap<(String, u32), DefinitionRecord> = HashMap::new();
        let mut latest: HashMap<String, u32> = HashMap::new();
        let mut baselines = Vec::with_capacity(defs.len());
        for def in defs {
            let members = members_of(&mut tx, &def.id, def.revision).await?;
            let mut resolved = Vec::with_capacity(members.len());
            for m in members {
                let rev = match m.ci_revision {
                    Some(r) => Some(r),
                    None => match latest.get(&m.ci_id) {
                        Some(r) => Some(*r),
                        None => {
                            let r: Option<i64> = sqlx::query_scalar(
                                "SELECT MAX(revision) FROM configuration_items WHERE ci_id = ?",
                            )
                            .bind(&m.ci_id)
                            .fetch_one(&mut *tx)
                            .await?;
                            if let Some(r) = r {
                                latest.insert(m.ci_id.clone(), r as u32);
                            }
                            r.map(|r| r as u32)
                        }
                    },
                };
                let ci = match rev {
                    None => None,
                    Some(r) => match cis.get(&(m.ci_id.clone(), r)) {
                        Some(d) => Some(d.clone()),
                        None => {
                            let row = sqlx::query(AssertSqlSafe(format!(
                                "SELECT {DEF_COLS_CI} FROM configuration_items \
                                 WHERE ci_id = ? AND revision = ?"
                            )))
                            .bind(&m.ci_id)
                            .bind(i64::from(r))
                            .fetch_optional(&mut *tx)
                            .await?;
                            let d = row.as_ref().map(definition_row).transpose()?;
                            if let Some(d) = &d {
                                cis.insert((m.ci_id.clone(), r), d.clone());
                            }
                            d
                        }
                    },
                };
                resolved.push((m, ci));
            }
            baselines.push(ResolvedBaseline {
                def,
                members: resolved,
            });
        }
        let blocked_device_ids: Vec<String> = sqlx::query_scalar(
            "SELECT device_id FROM devices WHERE blocked <> 0 ORDER BY device_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let settings: BTreeMap<String, String> =
            sqlx::query_as::<_, (String, String)>("SELECT key, value FROM site_settings")
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let retention_days: i64 = sqlx::query_scalar(
            "SELECT delete_older_than_days FROM maintenance_tasks \
             WHERE name = 'delete_aged_configuration_management_data'",
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PolicyContents {
            version: version as u64,
            baselines,
            blocked_device_ids,
            settings,
            retention_days: retention_days as u32,
        })
    }

    pub async fn set_site_setting(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let now = clock::now_ms();
        let old: Option<String> =
            sqlx::query_scalar("SELECT value FROM site_settings WHERE key = ?")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        if old.as_deref() == Some(value) {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO site_settings (key, value, updated_ms) VALUES (?, ?, ?) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
        )
        .bind(key)
        .bind(value)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        bump_policy_version(&mut tx, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn set_device_blocked(
        &self,
        device_id: &str,
        blocked: bool,
    ) -> Result<Option<bool>, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let old: Option<bool> =
            sqlx::query_scalar("SELECT blocked <> 0 FROM devices WHERE device_id = ?")
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        let changed = match old {
            None => {
                tx.rollback().await?;
                return Ok(None);
            }
            Some(b) => b != blocked,
        };
        if changed {
            sqlx::query("UPDATE devices SET blocked = ? WHERE device_id = ?")
                .bind(blocked)
                .bind(device_id)
                .execute(&mut *tx)
                .await?;
            bump_policy_version(&mut tx, clock::now_ms()).await?;
        }
        tx.commit().await?;
        Ok(Some(changed))
    }

    pub async fn definitions(&self) -> Result<Vec<DefinitionSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT 'baseline', baseline_id, revision, name, content_hash, source_file, imported_ms \
             FROM baselines UNION ALL \
             SELECT 'configuration_item', ci_id, revision, name, content_hash, source_file, \
             imported_ms FROM configuration_items ORDER BY 1, 2, 3",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(definition_summary_row).collect()
    }

    pub(super) async fn compliance_overview(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<BaselineOverview>, StoreError> {
        let rows = sqlx::query(
            "WITH ids AS (SELECT baseline_id FROM baselines UNION SELECT baseline_id FROM \
             current_compliance) \
             SELECT ids.baseline_id, \
               COALESCE((SELECT name FROM baselines b WHERE b.baseline_id = ids.baseline_id \
                         ORDER BY revision DESC LIMIT 1), MAX(c.baseline_name), ids.baseline_id), \
               (SELECT MAX(revision) FROM baselines b WHERE b.baseline_id = ids.baseline_id), \
               COUNT(c.device_id), \
               COALESCE(SUM(c.state = 'compliant'), 0), COALESCE(SUM(c.state = 'non_compliant'), 0), \
               COALESCE(SUM(c.state = 'error'), 0), COALESCE(SUM(c.state = 'unknown'), 0), \
               COALESCE(SUM(c.state = 'not_applicable'), 0), \
               (SELECT COUNT(*) FROM devices d WHERE d.blocked = 0 AND NOT EXISTS \
                 (SELECT 1 FROM current_compliance x WHERE x.device_id = d.device_id \
                  AND x.baseline_id = ids.baseline_id)) \
             FROM ids LEFT JOIN current_compliance c ON c.baseline_id = ids.baseline_id \
             WHERE ? IS NULL OR ids.baseline_id = ? \
             GROUP BY ids.baseline_id ORDER BY ids.baseline_id",
        )
        .bind(only)
        .bind(only)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(baseline_overview_row).collect()
    }

    /// Description, members and revisions of a baseline's latest revision.
    pub(super) async fn baseline_definition(
        &self,
        baseline_id: &str,
    ) -> Result<(String, Vec<MemberView>, Vec<RevisionView>), StoreError> {
        let mut conn = self.reader.acquire().await?;
        let revisions: Vec<RevisionView> = sqlx::query(
            "SELECT revision, name, content_hash, source_file, imported_ms FROM baselines \
             WHERE baseline_id = ? ORDER BY revision",
        )
        .bind(baseline_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok::<_, sqlx::Error>(RevisionView {
                revision: r.try_get::<i64, _>(0)? as u32,
                name: r.try_get(1)?,
                content_hash: r.try_get(2)?,
                source_file: r.try_get(3)?,
                imported_ms: r.try_get(4)?,
            })
        })
        .collect::<Result<_, _>>()?;
        let Some(latest) = revisions.last() else {
            return Ok((String::new(), vec![], vec![]));
        };
        let description: String = sqlx::query_scalar(
            "SELECT description FROM baselines WHERE baseline_id = ? AND revision = ?",
        )
        .bind(baseline_id)
        .bind(i64::from(latest.revision))
        .fetch_one(&mut *conn)
        .await?;
        let rows = sqlx::query(
            "SELECT m.ci_id, m.ci_revision, m.membership, m.remediate, ci.revision, ci.name \
             FROM baseline_members m LEFT JOIN configuration_items ci ON ci.ci_id = m.ci_id \
             AND ci.revision = COALESCE(m.ci_revision, \
               (SELECT MAX(revision) FROM configuration_items x WHERE x.ci_id = m.ci_id)) \
             WHERE m.baseline_id = ? AND m.baseline_revision = ? ORDER BY m.ordinal",
        )
        .bind(baseline_id)
        .bind(i64::from(latest.revision))
        .fetch_all(&mut *conn)
        .await?;
        let members = rows
            .iter()
            .map(|r| {
                Ok::<_, sqlx::Error>(MemberView {
                    configuration_item: r.try_get(0)?,
                    pinned_revision: r.try_get::<Option<i64>, _>(1)?.map(|v| v as u32),
                    membership: r.try_get(2)?,
                    remediate: r.try_get(3)?,
                    revision: r.try_get::<Option<i64>, _>(4)?.map(|v| v as u32),
                    name: r.try_get(5)?,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((description, members, revisions))
    }

    pub(super) async fn setting_summaries(
        &self,
        baseline_id: &str,
    ) -> Result<Vec<SettingSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.ci_id, s.setting_id, MAX(s.severity), \
               SUM(s.state = 'compliant'), SUM(s.state = 'non_compliant'), SUM(s.state = 'error'), \
               SUM(s.state = 'not_applicable'), SUM(s.state = 'unknown'), SUM(s.remediated <> 0) \
             FROM current_compliance c \
             JOIN compliance_reports r ON r.message_id = c.message_id \
             JOIN setting_results s ON s.report_id = r.report_id \
             WHERE c.baseline_id = ? \
             GROUP BY s.ci_id, s.setting_id ORDER BY MIN(s.ordinal), s.ci_id, s.setting_id",
        )
        .bind(baseline_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(setting_summary_row).collect()
    }

    pub(super) async fn current_for_device(
        &self,
        device_id: &str,
    ) -> Result<Vec<CurrentView>, StoreError> {
        let rows = sqlx::query(
            "SELECT baseline_id, baseline_name, baseline_revision, state, max_severity, \
             evaluated_ms, message_id, n_compliant, n_non_compliant, n_error, n_not_applicable, \
             n_unknown FROM current_compliance WHERE device_id = ? ORDER BY baseline_id",
        )
        .bind(device_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(current_view_row).collect()
    }

    pub(super) async fn noncompliant_devices(
        &self,
        baseline_id: &str,
        state: &str,
    ) -> Result<Vec<NoncompliantDevice>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.device_id, COALESCE(d.hostname, ''), c.baseline_revision, c.max_severity, \
               c.evaluated_ms, s.ci_id, s.ci_revision, s.setting_id, s.state, s.severity, \
               s.expected, s.observed_before, s.observed_after, s.remediated, s.error \
             FROM current_compliance c \
             LEFT JOIN devices d ON d.device_id = c.device_id \
             LEFT JOIN compliance_reports r ON r.message_id = c.message_id \
             LEFT JOIN setting_results s ON s.report_id = r.report_id \
               AND s.state IN ('non_compliant', 'error') \
             WHERE c.baseline_id = ? AND c.state = ? \
             ORDER BY c.device_id, s.ordinal",
        )
        .bind(baseline_id)
        .bind(state)
        .fetch_all(&self.reader)
        .await?;
        group_noncompliant(&rows)
    }
}

async fn stored_hash(
    conn: &mut SqliteConnection,
    table: &'static str,
    id_col: &'static str,
    id: &str,
    revision: u32,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(sqlx::query_as::<_, (String, String)>(AssertSqlSafe(format!(
        "SELECT content_hash, source_file FROM {table} WHERE {id_col} = ? AND revision = ?"
    )))
    .bind(id)
    .bind(i64::from(revision))
    .fetch_optional(&mut *conn)
    .await?)
}

async fn insert_definition(
    conn: &mut SqliteConnection,
    table: &'static str,
    id_col: &'static str,
    d: &DefinitionRecord,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} ({id_col}, revision, name, description, definition_json, \
         definition_toml, content_hash, source_file, imported_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )))
    .bind(&d.id)
    .bind(i64::from(d.revision))
    .bind(&d.name)
    .bind(&d.description)
    .bind(&d.json)
    .bind(&d.toml)
    .bind(&d.content_hash)
    .bind(&d.source_file)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn log_import(
    conn: &mut SqliteConnection,
    kind: &str,
    d: &DefinitionRecord,
    action: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO definition_imports (imported_ms, kind, object_id, revision, action, \
         content_hash, source_file) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(now)
    .bind(kind)
    .bind(&d.id)
    .bind(i64::from(d.revision))
    .bind(action)
    .bind(&d.content_hash)
    .bind(&d.source_file)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn members_of(
    conn: &mut SqliteConnection,
    baseline_id: &str,
    revision: u32,
) -> Result<Vec<MemberRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT ci_id, ci_revision, membership, remediate FROM baseline_members \
         WHERE baseline_id = ? AND baseline_revision = ? ORDER BY ordinal",
    )
    .bind(baseline_id)
    .bind(i64::from(revision))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(MemberRecord {
                ci_id: r.try_get(0)?,
                ci_revision: r.try_get::<Option<i64>, _>(1)?.map(|v| v as u32),
                membership: r.try_get(2)?,
                remediate: r.try_get(3)?,
            })
        })
        .collect()
}

async fn current_version(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let v: i64 = sqlx::query_scalar("SELECT version FROM policy_state WHERE singleton = 1")
        .fetch_one(&mut *conn)
        .await?;
    Ok(v as u64)
}

/// Raises the policy version to the change time in milliseconds, or by one if that is not
/// higher. Using the time means a site database made afresh still issues versions above those a
/// relay kept from before, so relays never refuse it as older.
pub(super) async fn bump_policy_version(
    conn: &mut SqliteConnection,
    now: i64,
) -> Result<u64, StoreError> {
    let v: i64 = sqlx::query_scalar(
        "UPDATE policy_state SET version = MAX(version + 1, ?), changed_ms = ? \
         WHERE singleton = 1 RETURNING version",
    )
    .bind(now)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(v as u64)
}
