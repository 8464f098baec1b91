//! The definitions and compliance-report part of the store: configuration items and baselines
//! with their revisions, the policy version and its inputs, blocked devices, and the queries
//! behind `mprelay report …` and the admin API.
//!
//! The SQL is written once for both backends. What differs stays with each backend: how a
//! policy change is serialised (`BEGIN IMMEDIATE` on SQLite, the `policy_state` row lock on
//! PostgreSQL) and how a snapshot is opened, and the two reads that join setting results, which
//! PostgreSQL finds through `report_message_ids` and its day partitions.

use std::collections::{BTreeMap, HashMap};

use sqlx::{AssertSqlSafe, Row};

use super::rows::{
    Cols, DEF_COLS, DEF_COLS_CI, baseline_overview_row, current_view_row, definition_row,
    definition_summary_row, group_noncompliant, setting_summary_row,
};
use super::types::{
    BaselineDetail, BaselineOverview, CurrentView, DefinitionRecord, DefinitionSummary,
    DeviceBaseline, DeviceCompliance, ImportIssue, ImportRequest, ImportResult, MemberRecord,
    MemberView, NoncompliantDevice, PolicyContents, ResolvedBaseline, RevisionView, SettingSummary,
};
use super::{Store, StoreError};
use crate::clock;

impl Store {
    /// Stores new definitions in one transaction, unless any issue is found (then nothing is
    /// written). Raises the policy version when anything was added.
    pub async fn import_definitions(
        &self,
        req: &ImportRequest,
    ) -> Result<ImportResult, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_policy_change().await?;
            let out = sql::import_definitions(&mut tx, req).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    /// The current policy version (cheap: the site polls it).
    pub async fn policy_version(&self) -> Result<u64, StoreError> {
        read!(self, pool => {
            let v: i64 = sqlx::query_scalar("SELECT version FROM policy_state WHERE singleton = 1")
                .fetch_one(pool)
                .await?;
            Ok(v as u64)
        })
    }

    /// Everything the policy is built from, consistent with its version.
    pub async fn policy_contents(&self) -> Result<PolicyContents, StoreError> {
        // One snapshot: the version and what it describes are read consistently.
        dispatch_sql!(self, s, sql => {
            let mut tx = s.snapshot().await?;
            let out = sql::policy_contents(&mut tx).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    /// Sets a site setting; raises the policy version when the value changed. Returns whether
    /// it changed.
    /// A change is audited as `actor`'s in the same transaction.
    pub async fn set_site_setting(
        &self,
        actor: &crate::store::Actor,
        key: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_policy_change().await?;
            let changed = sql::set_site_setting(&mut tx, actor, key, value).await?;
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// Blocks or unblocks a device; raises the policy version when that changed anything.
    /// `None` when no such device is known.
    /// A change is audited as `actor`'s in the same transaction.
    pub async fn set_device_blocked(
        &self,
        actor: &crate::store::Actor,
        device_id: &str,
        blocked: bool,
    ) -> Result<Option<bool>, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_policy_change().await?;
            let changed = sql::set_device_blocked(&mut tx, actor, device_id, blocked).await?;
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// Every stored revision of every definition.
    pub async fn definitions(&self) -> Result<Vec<DefinitionSummary>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT 'baseline', baseline_id, revision, name, content_hash, source_file, \
                 imported_ms FROM baselines UNION ALL \
                 SELECT 'configuration_item', ci_id, revision, name, content_hash, source_file, \
                 imported_ms FROM configuration_items ORDER BY 1, 2, 3",
            )
            .fetch_all(pool)
            .await?;
            rows.iter().map(definition_summary_row).collect()
        })
    }

    /// Devices per state, per baseline.
    pub async fn compliance_overview(&self) -> Result<Vec<BaselineOverview>, StoreError> {
        self.overview(None).await
    }

    /// A baseline's devices per state; `None` when the site knows nothing of it. What a page
    /// that only names the baseline or checks it exists reads: [`Store::baseline_detail`] also
    /// counts every setting of every current report.
    pub async fn baseline_overview(
        &self,
        baseline_id: &str,
    ) -> Result<Option<BaselineOverview>, StoreError> {
        Ok(self.overview(Some(baseline_id)).await?.pop())
    }

    /// One baseline in detail; `None` when the site knows nothing of it.
    pub async fn baseline_detail(
        &self,
        baseline_id: &str,
    ) -> Result<Option<BaselineDetail>, StoreError> {
        let Some(overview) = self.overview(Some(baseline_id)).await?.pop() else {
            return Ok(None);
        };
        let (description, members, revisions) = self.baseline_definition(baseline_id).await?;
        let settings = self.setting_summaries(baseline_id).await?;
        Ok(Some(BaselineDetail {
            overview,
            description,
            members,
            revisions,
            settings,
        }))
    }

    /// A device's compliance for every baseline it reported; `None` for an unknown device.
    pub async fn device_compliance(
        &self,
        device_id: &str,
    ) -> Result<Option<DeviceCompliance>, StoreError> {
        let Some(device) = self.device(device_id).await? else {
            return Ok(None);
        };
        let currents = self.current_for_device(device_id).await?;
        let mut baselines = Vec::with_capacity(currents.len());
        for current in currents {
            let settings = self.report_settings(&current.message_id).await?;
            let history = self.history(device_id, &current.baseline_id).await?;
            baselines.push(DeviceBaseline {
                current,
                settings,
                history,
            });
        }
        Ok(Some(DeviceCompliance { device, baselines }))
    }

    /// The devices whose current state for `baseline_id` is non-compliant, worst severity
    /// first, with their failing settings.
    pub async fn noncompliant_devices(
        &self,
        baseline_id: &str,
    ) -> Result<Vec<NoncompliantDevice>, StoreError> {
        self.failing_devices(baseline_id, crate::compliance::State::NonCompliant)
            .await
    }

    /// The devices whose current state for `baseline_id` is `state` (non-compliant or error),
    /// worst severity first, with their non-compliant and error settings.
    pub async fn failing_devices(
        &self,
        baseline_id: &str,
        state: crate::compliance::State,
    ) -> Result<Vec<NoncompliantDevice>, StoreError> {
        let state = state.as_str();
        let mut v = dispatch!(self, s => {
            let sql = format!(
                "SELECT c.device_id, COALESCE(d.hostname, ''), CAST(c.baseline_revision AS BIGINT), \
                   c.max_severity, c.evaluated_ms, s.ci_id, CAST(s.ci_revision AS BIGINT), \
                   s.setting_id, s.state, s.severity, s.expected, s.observed_before, \
                   s.observed_after, s.remediated, s.error \
                 FROM current_compliance c \
                 LEFT JOIN devices d ON d.device_id = c.device_id \
                 {} AND s.state IN ('non_compliant', 'error') \
                 WHERE c.baseline_id = $1 AND c.state = $2 \
                 ORDER BY c.device_id, s.ordinal",
                s.current_settings_join("LEFT JOIN")
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(baseline_id)
                .bind(state)
                .fetch_all(s.reader())
                .await?;
            group_noncompliant(&rows)
        })?;
        let rank = |s: &str| s.parse::<crate::compliance::Severity>().ok();
        v.sort_by(|a, b| {
            rank(&b.max_severity)
                .cmp(&rank(&a.max_severity))
                .then_with(|| a.device_id.cmp(&b.device_id))
        });
        Ok(v)
    }

    /// Devices per state for every baseline, or only for `only`.
    async fn overview(&self, only: Option<&str>) -> Result<Vec<BaselineOverview>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(
                "WITH ids AS (SELECT baseline_id FROM baselines UNION SELECT baseline_id FROM \
                 current_compliance) \
                 SELECT ids.baseline_id, \
                   COALESCE((SELECT name FROM baselines b WHERE b.baseline_id = ids.baseline_id \
                             ORDER BY revision DESC LIMIT 1), MAX(c.baseline_name), ids.baseline_id), \
                   (SELECT MAX(revision) FROM baselines b WHERE b.baseline_id = ids.baseline_id), \
                   COUNT(c.device_id), \
                   COUNT(*) FILTER (WHERE c.state = 'compliant'), \
                   COUNT(*) FILTER (WHERE c.state = 'non_compliant'), \
                   COUNT(*) FILTER (WHERE c.state = 'error'), \
                   COUNT(*) FILTER (WHERE c.state = 'unknown'), \
                   COUNT(*) FILTER (WHERE c.state = 'not_applicable'), \
                   (SELECT COUNT(*) FROM devices d WHERE NOT d.blocked AND NOT EXISTS \
                     (SELECT 1 FROM current_compliance x WHERE x.device_id = d.device_id \
                      AND x.baseline_id = ids.baseline_id)) \
                 FROM ids LEFT JOIN current_compliance c ON c.baseline_id = ids.baseline_id \
                 WHERE CAST($1 AS TEXT) IS NULL OR ids.baseline_id = $1 \
                 GROUP BY ids.baseline_id ORDER BY ids.baseline_id",
            )
            .bind(only)
            .fetch_all(pool)
            .await?;
            rows.iter().map(baseline_overview_row).collect()
        })
    }

    /// Description, members and revisions of a baseline's latest revision.
    async fn baseline_definition(
        &self,
        baseline_id: &str,
    ) -> Result<(String, Vec<MemberView>, Vec<RevisionView>), StoreError> {
        read!(self, pool => {
            let mut conn = pool.acquire().await?;
            let revisions: Vec<RevisionView> = sqlx::query(
                "SELECT revision, name, content_hash, source_file, imported_ms FROM baselines \
                 WHERE baseline_id = $1 ORDER BY revision",
            )
            .bind(baseline_id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| {
                Ok::<_, StoreError>(RevisionView {
                    revision: r.number(0)?,
                    name: r.col(1)?,
                    content_hash: r.col(2)?,
                    source_file: r.col(3)?,
                    imported_ms: r.col(4)?,
                })
            })
            .collect::<Result<_, _>>()?;
            let Some(latest) = revisions.last() else {
                return Ok((String::new(), vec![], vec![]));
            };
            let description: String = sqlx::query_scalar(
                "SELECT description FROM baselines WHERE baseline_id = $1 AND revision = $2",
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
                 WHERE m.baseline_id = $1 AND m.baseline_revision = $2 ORDER BY m.ordinal",
            )
            .bind(baseline_id)
            .bind(i64::from(latest.revision))
            .fetch_all(&mut *conn)
            .await?;
            let members = rows
                .iter()
                .map(|r| {
                    Ok::<_, StoreError>(MemberView {
                        configuration_item: r.col(0)?,
                        pinned_revision: r.col::<Option<i64>>(1)?.map(|v| v as u32),
                        membership: r.col(2)?,
                        remediate: r.col(3)?,
                        revision: r.col::<Option<i64>>(4)?.map(|v| v as u32),
                        name: r.col(5)?,
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok((description, members, revisions))
        })
    }

    /// Per setting of a baseline, the devices in each state by their current reports.
    async fn setting_summaries(
        &self,
        baseline_id: &str,
    ) -> Result<Vec<SettingSummary>, StoreError> {
        dispatch!(self, s => {
            let sql = format!(
                "SELECT s.ci_id, s.setting_id, MAX(s.severity), \
                   COUNT(*) FILTER (WHERE s.state = 'compliant'), \
                   COUNT(*) FILTER (WHERE s.state = 'non_compliant'), \
                   COUNT(*) FILTER (WHERE s.state = 'error'), \
                   COUNT(*) FILTER (WHERE s.state = 'not_applicable'), \
                   COUNT(*) FILTER (WHERE s.state = 'unknown'), \
                   COUNT(*) FILTER (WHERE s.remediated) \
                 FROM current_compliance c {} \
                 WHERE c.baseline_id = $1 \
                 GROUP BY s.ci_id, s.setting_id ORDER BY MIN(s.ordinal), s.ci_id, s.setting_id",
                s.current_settings_join("JOIN")
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(baseline_id)
                .fetch_all(s.reader())
                .await?;
            rows.iter().map(setting_summary_row).collect()
        })
    }

    async fn current_for_device(&self, device_id: &str) -> Result<Vec<CurrentView>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT baseline_id, baseline_name, CAST(baseline_revision AS BIGINT), state, \
                 max_severity, evaluated_ms, message_id, CAST(n_compliant AS BIGINT), \
                 CAST(n_non_compliant AS BIGINT), CAST(n_error AS BIGINT), \
                 CAST(n_not_applicable AS BIGINT), CAST(n_unknown AS BIGINT) \
                 FROM current_compliance WHERE device_id = $1 ORDER BY baseline_id",
            )
            .bind(device_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(current_view_row).collect()
        })
    }
}

for_each_backend! {
    pub(crate) async fn import_definitions(
        tx: &mut Conn,
        req: &ImportRequest,
    ) -> Result<ImportResult, StoreError> {
        let now = clock::now_ms();
        let mut out = ImportResult::default();
        let mut new_cis = Vec::new();
        for (i, ci) in req.cis.iter().enumerate() {
            match stored_hash(&mut *tx, "configuration_items", "ci_id", &ci.id, ci.revision).await? {
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
            match stored_hash(&mut *tx, "baselines", "baseline_id", &d.id, d.revision).await? {
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
                    "SELECT COUNT(*) FROM configuration_items WHERE ci_id = $1 \
                     AND (CAST($2 AS BIGINT) IS NULL OR revision = $2)",
                )
                .bind(&member.ci_id)
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
            return Ok(out);
        }
        for ci in &new_cis {
            insert_definition(&mut *tx, "configuration_items", "ci_id", ci, now).await?;
            log_import(&mut *tx, "configuration_item", ci, "added", now).await?;
            out.added
                .push(("configuration_item", ci.id.clone(), ci.revision));
        }
        for b in &new_baselines {
            insert_definition(&mut *tx, "baselines", "baseline_id", &b.def, now).await?;
            for (k, m) in b.members.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO baseline_members (baseline_id, baseline_revision, ordinal, ci_id, \
                     ci_revision, membership, remediate) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
            log_import(&mut *tx, "baseline", &b.def, "added", now).await?;
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
                log_import(&mut *tx, kind, d, "unchanged", now).await?;
            }
        }
        out.policy_version = if out.added.is_empty() {
            current_version(&mut *tx).await?
        } else {
            bump_policy_version(&mut *tx, now).await?
        };
        Ok(out)
    }

    pub(crate) async fn policy_contents(
        tx: &mut Conn,) -> Result<PolicyContents, StoreError> {
        // One snapshot: the version and what it describes are read consistently.
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
            let members = members_of(&mut *tx, &def.id, def.revision).await?;
            let mut resolved = Vec::with_capacity(members.len());
            for m in members {
                let rev = match m.ci_revision {
                    Some(r) => Some(r),
                    None => match latest.get(&m.ci_id) {
                        Some(r) => Some(*r),
                        None => {
                            let r: Option<i64> = sqlx::query_scalar(
                                "SELECT MAX(revision) FROM configuration_items WHERE ci_id = $1",
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
                                 WHERE ci_id = $1 AND revision = $2"
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
        let blocked_device_ids: Vec<String> =
            sqlx::query_scalar("SELECT device_id FROM devices WHERE blocked ORDER BY device_id")
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
        Ok(PolicyContents {
            version: version as u64,
            baselines,
            blocked_device_ids,
            settings,
            retention_days: retention_days as u32,
        })
    }

    pub(crate) async fn set_site_setting(
        tx: &mut Conn,
        actor: &crate::store::Actor,
        key: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        let now = clock::now_ms();
        let old: Option<String> =
            sqlx::query_scalar("SELECT value FROM site_settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        if old.as_deref() == Some(value) {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO site_settings (key, value, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
        )
        .bind(key)
        .bind(value)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit::record(&mut *tx, actor, crate::store::AuditChange {
            action: "update",
            object: "site_setting",
            object_id: key,
            before: old.map(serde_json::Value::from),
            after: Some(serde_json::Value::from(value)),
        })
        .await?;
        bump_policy_version(&mut *tx, now).await?;
        Ok(true)
    }

    pub(crate) async fn set_device_blocked(
        tx: &mut Conn,
        actor: &crate::store::Actor,
        device_id: &str,
        blocked: bool,
    ) -> Result<Option<bool>, StoreError> {
        let old: Option<bool> =
            sqlx::query_scalar("SELECT blocked FROM devices WHERE device_id = $1")
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        let changed = match old {
            None => {
                return Ok(None);
            }
            Some(b) => b != blocked,
        };
        if changed {
            sqlx::query("UPDATE devices SET blocked = $1 WHERE device_id = $2")
                .bind(blocked)
                .bind(device_id)
                .execute(&mut *tx)
                .await?;
            audit::record(&mut *tx, actor, crate::store::AuditChange {
                action: if blocked { "block" } else { "unblock" },
                object: "device",
                object_id: device_id,
                before: Some(serde_json::json!({ "blocked": !blocked })),
                after: Some(serde_json::json!({ "blocked": blocked })),
            })
            .await?;
            bump_policy_version(&mut *tx, clock::now_ms()).await?;
        }
        Ok(Some(changed))
    }

    async fn stored_hash(
        conn: &mut Conn,
        table: &'static str,
        id_col: &'static str,
        id: &str,
        revision: u32,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(sqlx::query_as::<_, (String, String)>(AssertSqlSafe(format!(
            "SELECT content_hash, source_file FROM {table} WHERE {id_col} = $1 AND revision = $2"
        )))
        .bind(id)
        .bind(i64::from(revision))
        .fetch_optional(&mut *conn)
        .await?)
    }

    async fn insert_definition(
        conn: &mut Conn,
        table: &'static str,
        id_col: &'static str,
        d: &DefinitionRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} ({id_col}, revision, name, description, definition_json, \
             definition_toml, content_hash, source_file, imported_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
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
        conn: &mut Conn,
        kind: &str,
        d: &DefinitionRecord,
        action: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO definition_imports (imported_ms, kind, object_id, revision, action, \
             content_hash, source_file) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
        conn: &mut Conn,
        baseline_id: &str,
        revision: u32,
    ) -> Result<Vec<MemberRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT ci_id, ci_revision, membership, remediate FROM baseline_members \
             WHERE baseline_id = $1 AND baseline_revision = $2 ORDER BY ordinal",
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

    async fn current_version(conn: &mut Conn) -> Result<u64, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT version FROM policy_state WHERE singleton = 1")
            .fetch_one(&mut *conn)
            .await?;
        Ok(v as u64)
    }

    /// Raises the policy version to the change time in milliseconds, or by one if that is not
    /// higher. Using the time means a site database made afresh still issues versions above those
    /// a relay kept from before, so relays never refuse it as older.
    pub(crate) async fn bump_policy_version(
        conn: &mut Conn,
        now: i64,
    ) -> Result<u64, StoreError> {
        let v: i64 = sqlx::query_scalar(
            "UPDATE policy_state SET version = CASE WHEN version + 1 > $1 THEN version + 1 ELSE $1 END, \
             changed_ms = $1 \
             WHERE singleton = 1 RETURNING version",
        )
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
        Ok(v as u64)
    }
}
