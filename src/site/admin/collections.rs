//! Collections and deployments on the admin API:
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/collections` | `{"collections": [CollectionSummary… with "members"]}` |
//! | `GET /api/v1/collections/{id}/members?offset=N&limit=M` | `{"collection", "total", "offset", "members": [{device_id, hostname, os, agent_version, tags}…]}`, limit 1 to 1000 (default 100) |
//! | `GET /api/v1/deployments[?collection=ID]` | `{"deployments": [DeploymentCompliance…]}`: per deployment the devices now in its collection: targeted, compliant, non-compliant, error, not reported |
//! | `POST /api/v1/deployments` | body `{"baseline_id", "collection_id", "remediate", "interval": "4h"}` → `{"change": "created"\|"updated"\|"unchanged"}`; 404 for an unknown baseline or collection |
//!
//! Each change goes through one store method ([`Store::deploy`]).

use http::StatusCode;
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::router::{Ctx, Reply, Router};
use crate::policy::PolicyError;
use crate::policy::collection::{self, DeploymentCompliance, SiteMembership};
use crate::store::Actor;
use crate::store::{Change, CollectionSummary, DeployRequest, Store, StoreError};
use crate::wire::{Refusal, json_response};

pub fn routes(r: Router) -> Router {
    r.get("/api/v1/collections", collections)
        .get("/api/v1/collections/{id}/members", members)
        .get("/api/v1/deployments", deployments)
        .route(http::Method::POST, "/api/v1/deployments", deploy)
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    error!(error = %e, "admin API query failed");
    Refusal::Internal
}

#[derive(Serialize)]
pub(crate) struct CollectionRow {
    #[serde(flatten)]
    pub summary: CollectionSummary,
    pub members: usize,
}

/// Every collection with its member count now.
pub(crate) async fn collection_rows(store: &Store) -> Result<Vec<CollectionRow>, PolicyError> {
    let list = store.collections().await?;
    let site = SiteMembership::load(store).await?;
    Ok(list
        .into_iter()
        .map(|summary| CollectionRow {
            members: site.membership.members(&summary.id).len(),
            summary,
        })
        .collect())
}

#[derive(Serialize)]
struct Collections {
    collections: Vec<CollectionRow>,
}

async fn collections(ctx: Ctx) -> Reply {
    let collections = collection_rows(&ctx.state.store).await.map_err(internal)?;
    Ok(json_response(StatusCode::OK, &Collections { collections }))
}

#[derive(Serialize)]
pub(crate) struct Member {
    pub device_id: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub tags: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
pub(crate) struct MembersPage {
    pub collection: String,
    pub total: usize,
    pub offset: usize,
    pub members: Vec<Member>,
}

/// One page of a collection's members; `None` when there is no such collection.
pub(crate) async fn members_page(
    store: &Store,
    id: &str,
    offset: usize,
    limit: usize,
) -> Result<Option<MembersPage>, PolicyError> {
    if store.collection(id).await?.is_none() {
        return Ok(None);
    }
    let site = SiteMembership::load(store).await?;
    let all = site.members(id);
    Ok(Some(MembersPage {
        collection: id.to_string(),
        total: all.len(),
        offset,
        members: all
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|d| Member {
                device_id: d.device_id.clone(),
                hostname: d.hostname.clone(),
                os: d.os.clone(),
                agent_version: d.agent_version.clone(),
                tags: d.tags.clone(),
            })
            .collect(),
    }))
}

async fn members(ctx: Ctx) -> Reply {
    let id = ctx.param("id");
    let number = |k: &str, default: usize| -> Result<usize, Refusal> {
        match ctx.query.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| Refusal::Malformed(format!("{k} must be a whole number"))),
        }
    };
    let offset = number("offset", 0)?;
    let limit = number("limit", 100)?;
    if !(1..=1000).contains(&limit) {
        return Err(Refusal::Malformed("limit must be 1 to 1000".into()));
    }
    match members_page(&ctx.state.store, id, offset, limit)
        .await
        .map_err(internal)?
    {
        Some(p) => Ok(json_response(StatusCode::OK, &p)),
        None => Err(Refusal::NoSuch(format!("no collection {id:?} is imported"))),
    }
}

#[derive(Serialize)]
struct Deployments {
    deployments: Vec<DeploymentCompliance>,
}

async fn deployments(ctx: Ctx) -> Reply {
    let c = ctx.query.get("collection").map(String::as_str);
    let deployments = collection::deployment_compliance(&ctx.state.store, c)
        .await
        .map_err(internal)?;
    Ok(json_response(StatusCode::OK, &Deployments { deployments }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    baseline_id: String,
    collection_id: String,
    #[serde(default)]
    remediate: bool,
    #[serde(default)]
    interval: Option<String>,
}

#[derive(Serialize)]
struct Deployed {
    change: Change,
}

/// Deploys as the API and the console ask; `Refusal::NoSuch` for an unknown name.
pub(crate) async fn deploy_as_asked(
    ctx: &Ctx,
    baseline_id: &str,
    collection_id: &str,
    remediate: bool,
    interval: Option<&str>,
) -> Result<Change, Refusal> {
    let interval_s = match interval.filter(|v| !v.is_empty()) {
        None => 0,
        Some(v) => collection::parse_interval(v).map_err(Refusal::Malformed)?,
    };
    let req = DeployRequest {
        baseline_id: baseline_id.into(),
        collection_id: collection_id.into(),
        remediate,
        interval_s,
    };
    match ctx
        .state
        .store
        .deploy(&ctx.actor.clone().unwrap_or_else(Actor::site), &req)
        .await
    {
        Ok(change) => {
            ctx.state.policy_changed.notify_one();
            info!(baseline = %req.baseline_id, collection = %req.collection_id, remediate,
                interval_s, ?change, "deployment changed from the admin listener");
            Ok(change)
        }
        Err(StoreError::Refused(m)) => Err(Refusal::NoSuch(m)),
        Err(e) => Err(internal(e)),
    }
}

async fn deploy(ctx: Ctx) -> Reply {
    let b: DeployBody = serde_json::from_slice(&ctx.body)
        .map_err(|e| Refusal::Malformed(format!("deployment: {e}")))?;
    let change = deploy_as_asked(
        &ctx,
        &b.baseline_id,
        &b.collection_id,
        b.remediate,
        b.interval.as_deref(),
    )
    .await?;
    Ok(json_response(StatusCode::OK, &Deployed { change }))
}
