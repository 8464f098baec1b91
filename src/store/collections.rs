//! Collections, device tags and deployments: the revisions of every collection (the built-in
//! `all-devices` among them), the tags administrators set on devices, the baselines deployed
//! to collections, and what membership is computed from (every device with its tags).
//!
//! Every change is one method here, in one transaction that raises the policy version, so the
//! relays learn it at the next push. Membership itself is computed in Rust
//! ([`crate::policy::collection::Membership`]) from two set-wide reads, the same code the
//! relays run for a device the site does not know yet.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::rows::{Cols, definition_row};
use super::types::DefinitionRecord;
use super::{Store, StoreError};
use crate::clock;

/// One device as the site knows it, for collection membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    pub device_id: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub key_epoch: u32,
    pub last_relay: String,
    /// `None` while the enrollment is not known.
    pub enrolled_ms: Option<i64>,
    pub tags: BTreeMap<String, String>,
}

/// A collection as listed: its latest revision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CollectionSummary {
    pub id: String,
    pub revision: u32,
    pub name: String,
    pub description: String,
    pub source_file: String,
    pub imported_ms: i64,
    /// How many revisions are stored.
    pub revisions: u32,
}

/// A baseline deployed to a collection.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeploymentRecord {
    pub baseline_id: String,
    pub collection_id: String,
    pub remediate: bool,
    /// Seconds between evaluations; 0: the site's interval.
    pub interval_s: u32,
    pub enabled: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What `deploy` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub baseline_id: String,
    pub collection_id: String,
    pub remediate: bool,
    pub interval_s: u32,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

/// What a collection import did: `(id, revision)` stored now and already stored alike.
#[derive(Debug, Clone, Default)]
pub struct CollectionImport {
    pub added: Vec<(String, u32)>,
    pub unchanged: Vec<(String, u32)>,
    pub policy_version: u64,
}

/// Why a collection import was refused: the issues, or a check of the whole that failed.
#[derive(Debug, Clone)]
pub enum ImportRefusal {
    /// `(index into the import's list, why)`.
    Issues(Vec<(usize, String)>),
    Check(String),
}

impl Store {
    /// Stores new collection revisions in one transaction, then runs `check` over the latest
    /// definition JSON of every collection (cycles, unknown inclusions); unless the import
    /// raised no issue and `check` passed, nothing is written. Raises the policy version when
    /// anything was added.
    pub async fn import_collections(
        &self,
        actor: &crate::store::Actor,
        defs: &[DefinitionRecord],
        check: impl Fn(&BTreeMap<String, String>) -> Result<(), String>,
    ) -> Result<Result<CollectionImport, ImportRefusal>, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_policy_change().await?;
            let out = sql::import_collections(&mut tx, actor, defs, &check).await?;
            if out.is_ok() {
                tx.commit().await?;
            }
            Ok(out)
        })
    }

    /// The latest revision of every collection, by id, as its definition JSON.
    pub async fn collection_definitions(&self) -> Result<BTreeMap<String, String>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(LATEST_JSON).fetch_all(pool).await?;
            rows.iter().map(|r| Ok((r.col(0)?, r.col(1)?))).collect()
        })
    }

    /// Every collection, latest revision first by id.
    pub async fn collections(&self) -> Result<Vec<CollectionSummary>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT c.collection_id, c.revision, c.name, c.description, c.source_file, \
                 c.imported_ms, CAST((SELECT COUNT(*) FROM collections x \
                 WHERE x.collection_id = c.collection_id) AS BIGINT) \
                 FROM collections c WHERE c.revision = (SELECT MAX(revision) FROM collections x \
                 WHERE x.collection_id = c.collection_id) ORDER BY c.collection_id",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(CollectionSummary {
                        id: r.col(0)?,
                        revision: r.number(1)?,
                        name: r.col(2)?,
                        description: r.col(3)?,
                        source_file: r.col(4)?,
                        imported_ms: r.col(5)?,
                        revisions: r.number(6)?,
                    })
                })
                .collect()
        })
    }

    /// The latest revision of one collection; `None` when there is no such collection.
    pub async fn collection(&self, id: &str) -> Result<Option<DefinitionRecord>, StoreError> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT collection_id, revision, name, description, definition_json, \
                 definition_toml, content_hash, source_file FROM collections \
                 WHERE collection_id = $1 ORDER BY revision DESC LIMIT 1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(definition_row).transpose()
        })
    }

    /// Every device with its tags, by id: what membership is computed from.
    pub async fn device_facts(&self) -> Result<Vec<DeviceFacts>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT device_id, hostname, os, agent_version, CAST(key_epoch AS BIGINT), \
                 last_relay, enrolled_ms FROM devices ORDER BY device_id",
            )
            .fetch_all(pool)
            .await?;
            let mut out: Vec<DeviceFacts> = rows
                .iter()
                .map(|r| {
                    Ok(DeviceFacts {
                        device_id: r.col(0)?,
                        hostname: r.col(1)?,
                        os: r.col(2)?,
                        agent_version: r.col(3)?,
                        key_epoch: r.number(4)?,
                        last_relay: r.col(5)?,
                        enrolled_ms: r.col(6)?,
                        tags: BTreeMap::new(),
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            let tags = sqlx::query(
                "SELECT device_id, tag_key, tag_value FROM device_tags ORDER BY device_id",
            )
            .fetch_all(pool)
            .await?;
            // Both lists are in device order: one merge pass.
            let mut at = 0;
            for t in &tags {
                let id: String = t.col(0)?;
                while at < out.len() && out[at].device_id < id {
                    at += 1;
                }
                if at < out.len() && out[at].device_id == id {
                    out[at].tags.insert(t.col(1)?, t.col(2)?);
                }
            }
            Ok(out)
        })
    }

    /// Sets tags on a device and removes the keys in `remove`; raises the policy version when
    /// that changed anything. `None` when no such device is known.
    pub async fn tag_device(
        &self,
        actor: &crate::store::Actor,
        device_id: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<Option<bool>, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_policy_change().await?;
            let out = sql::tag_device(&mut tx, actor, device_id, set, remove).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    /// Deploys the baseline to the collection, or changes the deployment's settings (and
    /// enables it again); refused when either is unknown.
    pub async fn deploy(
        &self,
        actor: &crate::store::Actor,
        req: &DeployRequest,
    ) -> Result<Change, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_policy_change().await?;
            let out = sql::deploy(&mut tx, actor, req).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    /// Enables or disables a deployment; `None` when there is no such deployment.
    pub async fn set_deployment_enabled(
        &self,
        actor: &crate::store::Actor,
        baseline_id: &str,
        collection_id: &str,
        enabled: bool,
    ) -> Result<Option<Change>, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_policy_change().await?;
            let out = sql::set_deployment_enabled(
                &mut tx,
                actor,
                baseline_id,
                collection_id,
                enabled,
            )
                .await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    /// Every deployment, by baseline and collection.
    pub async fn deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(DEPLOYMENTS).fetch_all(pool).await?;
            rows.iter().map(deployment_row).collect()
        })
    }

    /// The current state of every device that reported on `baseline_id`: `(device, state)`.
    pub async fn current_states(
        &self,
        baseline_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT device_id, state FROM current_compliance WHERE baseline_id = $1",
            )
            .bind(baseline_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| Ok((r.col(0)?, r.col(1)?))).collect()
        })
    }
}

/// The check an import runs over the latest definition JSON of every collection.
pub(crate) type ImportCheck<'a> = dyn Fn(&BTreeMap<String, String>) -> Result<(), String> + 'a;

const LATEST_JSON: &str = "SELECT collection_id, definition_json FROM collections c \
     WHERE revision = (SELECT MAX(revision) FROM collections x \
     WHERE x.collection_id = c.collection_id) ORDER BY collection_id";

const DEPLOYMENTS: &str = "SELECT baseline_id, collection_id, remediate, \
     CAST(interval_s AS BIGINT), enabled, created_ms, updated_ms FROM deployments \
     ORDER BY baseline_id, collection_id";

fn deployment_row(r: &impl Cols) -> Result<DeploymentRecord, StoreError> {
    Ok(DeploymentRecord {
        baseline_id: r.col(0)?,
        collection_id: r.col(1)?,
        remediate: r.col(2)?,
        interval_s: r.number(3)?,
        enabled: r.col(4)?,
        created_ms: r.col(5)?,
        updated_ms: r.col(6)?,
    })
}

for_each_backend! {
    use sqlx::Row as _;

    pub(crate) async fn import_collections(
        tx: &mut Conn,
        actor: &crate::store::Actor,
        defs: &[DefinitionRecord],
        check: &ImportCheck<'_>,
    ) -> Result<Result<CollectionImport, ImportRefusal>, StoreError> {
        let now = clock::now_ms();
        let mut out = CollectionImport::default();
        let mut issues = Vec::new();
        for (index, d) in defs.iter().enumerate() {
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT content_hash FROM collections WHERE collection_id = $1 AND revision = $2",
            )
            .bind(&d.id)
            .bind(i64::from(d.revision))
            .fetch_optional(&mut *tx)
            .await?;
            match stored {
                Some(h) if h == d.content_hash => out.unchanged.push((d.id.clone(), d.revision)),
                Some(_) => issues.push((
                    index,
                    format!(
                        "revision {} is already stored with other content: give the change a \
                         new revision",
                        d.revision
                    ),
                )),
                None => {
                    let newer: Option<i64> = sqlx::query_scalar(
                        "SELECT MAX(revision) FROM collections WHERE collection_id = $1",
                    )
                    .bind(&d.id)
                    .fetch_one(&mut *tx)
                    .await?;
                    if let Some(n) = newer.filter(|n| *n > i64::from(d.revision)) {
                        issues.push((
                            index,
                            format!("revision {n} is already stored; revisions only go up"),
                        ));
                        continue;
                    }
                    sqlx::query(
                        "INSERT INTO collections (collection_id, revision, name, description, \
                         definition_json, definition_toml, content_hash, source_file, \
                         imported_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(&d.id)
                    .bind(i64::from(d.revision))
                    .bind(&d.name)
                    .bind(&d.description)
                    .bind(&d.json)
                    .bind(&d.toml)
                    .bind(&d.content_hash)
                    .bind(&d.source_file)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    out.added.push((d.id.clone(), d.revision));
                }
            }
        }
        if !issues.is_empty() {
            return Ok(Err(ImportRefusal::Issues(issues)));
        }
        let rows = sqlx::query(LATEST_JSON).fetch_all(&mut *tx).await?;
        let latest = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<BTreeMap<String, String>, sqlx::Error>>()?;
        if let Err(e) = check(&latest) {
            return Ok(Err(ImportRefusal::Check(e)));
        }
        for (id, revision) in &out.added {
            let after: Option<serde_json::Value> = latest.get(id).and_then(|j| serde_json::from_str(j).ok());
            audit::record(&mut *tx, actor, crate::store::AuditChange {
                action: "import",
                object: "collection",
                object_id: id,
                before: None,
                after: Some(serde_json::json!({ "revision": revision, "definition": after })),
            })
            .await?;
        }
        out.policy_version = if out.added.is_empty() {
            sqlx::query_scalar::<_, i64>("SELECT version FROM policy_state WHERE singleton = 1")
                .fetch_one(&mut *tx)
                .await? as u64
        } else {
            policy::bump_policy_version(&mut *tx, now).await?
        };
        Ok(Ok(out))
    }

    pub(crate) async fn tag_device(
        tx: &mut Conn,
        actor: &crate::store::Actor,
        device_id: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<Option<bool>, StoreError> {
        let known: Option<String> =
            sqlx::query_scalar("SELECT device_id FROM devices WHERE device_id = $1")
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        if known.is_none() {
            return Ok(None);
        }
        let before = tags_of(&mut *tx, device_id).await?;
        let now = clock::now_ms();
        let mut changed = false;
        for k in remove {
            let n = sqlx::query("DELETE FROM device_tags WHERE device_id = $1 AND tag_key = $2")
                .bind(device_id)
                .bind(k)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            changed |= n > 0;
        }
        for (k, v) in set {
            let n = sqlx::query(
                "INSERT INTO device_tags (device_id, tag_key, tag_value, updated_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (device_id, tag_key) DO UPDATE \
                 SET tag_value = excluded.tag_value, updated_ms = excluded.updated_ms \
                 WHERE device_tags.tag_value <> excluded.tag_value",
            )
            .bind(device_id)
            .bind(k)
            .bind(v)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            changed |= n > 0;
        }
        if changed {
            let after = tags_of(&mut *tx, device_id).await?;
            audit::record(&mut *tx, actor, crate::store::AuditChange {
                action: "tag",
                object: "device",
                object_id: device_id,
                before: Some(serde_json::json!(before)),
                after: Some(serde_json::json!(after)),
            })
            .await?;
            policy::bump_policy_version(&mut *tx, now).await?;
        }
        Ok(Some(changed))
    }

    /// A device's tags, for the audit log's before and after.
    async fn tags_of(
        tx: &mut Conn,
        device_id: &str,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT tag_key, tag_value FROM device_tags WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_all(&mut *tx)
        .await?;
        Ok(rows.into_iter().collect())
    }

    pub(crate) async fn deploy(
        tx: &mut Conn,
        actor: &crate::store::Actor,
        req: &DeployRequest,
    ) -> Result<Change, StoreError> {
        let baseline: Option<i64> =
            sqlx::query_scalar("SELECT MAX(revision) FROM baselines WHERE baseline_id = $1")
                .bind(&req.baseline_id)
                .fetch_one(&mut *tx)
                .await?;
        if baseline.is_none() {
            return Err(StoreError::Refused(format!(
                "no baseline {:?} is imported (mprelay baseline list shows them)",
                req.baseline_id
            )));
        }
        let collection: Option<i64> =
            sqlx::query_scalar("SELECT MAX(revision) FROM collections WHERE collection_id = $1")
                .bind(&req.collection_id)
                .fetch_one(&mut *tx)
                .await?;
        if collection.is_none() {
            return Err(StoreError::Refused(format!(
                "no collection {:?} is imported (mprelay collection list shows them)",
                req.collection_id
            )));
        }
        let now = clock::now_ms();
        let old = sqlx::query(AssertSqlSafe(format!(
            "{DEPLOYMENTS_ONE} WHERE baseline_id = $1 AND collection_id = $2"
        )))
        .bind(&req.baseline_id)
        .bind(&req.collection_id)
        .fetch_optional(&mut *tx)
        .await?;
        let old = old.as_ref().map(deployment_row).transpose()?;
        let change = match &old {
            None => Change::Created,
            Some(o) if o.remediate == req.remediate && o.interval_s == req.interval_s && o.enabled => {
                return Ok(Change::Unchanged);
            }
            Some(_) => Change::Updated,
        };
        sqlx::query(
            "INSERT INTO deployments (baseline_id, collection_id, remediate, interval_s, \
             enabled, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (baseline_id, collection_id) DO UPDATE SET \
             remediate = excluded.remediate, interval_s = excluded.interval_s, \
             enabled = excluded.enabled, updated_ms = excluded.updated_ms",
        )
        .bind(&req.baseline_id)
        .bind(&req.collection_id)
        .bind(req.remediate)
        .bind(i64::from(req.interval_s))
        .bind(true)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let id = format!("{}@{}", req.baseline_id, req.collection_id);
        audit::record(&mut *tx, actor, crate::store::AuditChange {
            action: if old.is_some() { "update" } else { "deploy" },
            object: "deployment",
            object_id: &id,
            before: old.as_ref().map(|o| {
                serde_json::json!({
                    "remediate": o.remediate, "interval_s": o.interval_s, "enabled": o.enabled
                })
            }),
            after: Some(serde_json::json!({
                "remediate": req.remediate, "interval_s": req.interval_s, "enabled": true
            })),
        })
        .await?;
        policy::bump_policy_version(&mut *tx, now).await?;
        Ok(change)
    }

    pub(crate) async fn set_deployment_enabled(
        tx: &mut Conn,
        actor: &crate::store::Actor,
        baseline_id: &str,
        collection_id: &str,
        enabled: bool,
    ) -> Result<Option<Change>, StoreError> {
        let old: Option<bool> = sqlx::query_scalar(
            "SELECT enabled FROM deployments WHERE baseline_id = $1 AND collection_id = $2",
        )
        .bind(baseline_id)
        .bind(collection_id)
        .fetch_optional(&mut *tx)
        .await?;
        match old {
            None => Ok(None),
            Some(e) if e == enabled => Ok(Some(Change::Unchanged)),
            Some(_) => {
                let now = clock::now_ms();
                sqlx::query(
                    "UPDATE deployments SET enabled = $1, updated_ms = $2 \
                     WHERE baseline_id = $3 AND collection_id = $4",
                )
                .bind(enabled)
                .bind(now)
                .bind(baseline_id)
                .bind(collection_id)
                .execute(&mut *tx)
                .await?;
                let id = format!("{baseline_id}@{collection_id}");
                audit::record(&mut *tx, actor, crate::store::AuditChange {
                    action: if enabled { "enable" } else { "disable" },
                    object: "deployment",
                    object_id: &id,
                    before: Some(serde_json::json!({ "enabled": !enabled })),
                    after: Some(serde_json::json!({ "enabled": enabled })),
                })
                .await?;
                policy::bump_policy_version(&mut *tx, now).await?;
                Ok(Some(Change::Updated))
            }
        }
    }
}

const DEPLOYMENTS_ONE: &str = "SELECT baseline_id, collection_id, remediate, \
     CAST(interval_s AS BIGINT), enabled, created_ms, updated_ms FROM deployments";
