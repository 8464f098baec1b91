//! Compliance reports on the admin API:
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/compliance/baselines` | `{"baselines": [BaselineOverview…]}`: devices per state, per baseline |
//! | `GET /api/v1/compliance/baselines/{id}` | `BaselineDetail`: counts, members, revisions, per-setting counts |
//! | `GET /api/v1/compliance/devices/{id}` | `DeviceCompliance`: per baseline, current state, settings (expected, observed before and after, remediated, error) and state history |
//! | `GET /api/v1/compliance/noncompliant?baseline=ID[&state=error]` | `{"baseline_id", "state", "devices": [NoncompliantDevice…]}`: the non-compliant (or error) devices with their non-compliant and error settings, worst severity first |
//!
//! Times are Unix milliseconds; states and severities are the names of [`crate::compliance`].

use http::StatusCode;
use serde::Serialize;
use tracing::error;

use super::router::{Ctx, Reply, Router};
use crate::compliance::State;
use crate::store::{BaselineOverview, NoncompliantDevice, StoreError};
use crate::wire::{Refusal, json_response};

pub fn routes(r: Router) -> Router {
    r.get("/api/v1/compliance/baselines", baselines)
        .get("/api/v1/compliance/baselines/{id}", baseline)
        .get("/api/v1/compliance/devices/{id}", device)
        .get("/api/v1/compliance/noncompliant", noncompliant)
}

pub(super) fn internal(e: StoreError) -> Refusal {
    error!(error = %e, "admin API query failed");
    Refusal::Internal
}

#[derive(Serialize)]
struct Baselines {
    baselines: Vec<BaselineOverview>,
}

async fn baselines(ctx: Ctx) -> Reply {
    let baselines = ctx
        .state
        .store
        .compliance_overview()
        .await
        .map_err(internal)?;
    Ok(json_response(StatusCode::OK, &Baselines { baselines }))
}

async fn baseline(ctx: Ctx) -> Reply {
    let id = ctx.param("id");
    match ctx
        .state
        .store
        .baseline_detail(id)
        .await
        .map_err(internal)?
    {
        Some(d) => Ok(json_response(StatusCode::OK, &d)),
        None => Err(Refusal::NoSuch(format!(
            "no baseline {id:?} is defined or reported at this site"
        ))),
    }
}

async fn device(ctx: Ctx) -> Reply {
    let id = ctx.param("id");
    match ctx
        .state
        .store
        .device_compliance(id)
        .await
        .map_err(internal)?
    {
        Some(d) => Ok(json_response(StatusCode::OK, &d)),
        None => Err(Refusal::NoSuch(format!(
            "no device {id:?} is known at this site"
        ))),
    }
}

#[derive(Serialize)]
struct Noncompliant {
    baseline_id: String,
    state: &'static str,
    devices: Vec<NoncompliantDevice>,
}

/// The state a list of failing devices is asked for: `non_compliant` (the default) or `error`.
pub fn failing_state(asked: Option<&str>) -> Result<State, String> {
    match asked.map(str::trim).filter(|s| !s.is_empty()) {
        None | Some("non_compliant") => Ok(State::NonCompliant),
        Some("error") => Ok(State::Error),
        Some(other) => Err(format!(
            "state: {other:?} has no failing settings to list (use non_compliant or error)"
        )),
    }
}

async fn noncompliant(ctx: Ctx) -> Reply {
    let Some(id) = ctx.query.get("baseline").filter(|b| !b.is_empty()) else {
        return Err(Refusal::Malformed(
            "the query parameter baseline=ID is required".into(),
        ));
    };
    let store = &ctx.state.store;
    if store.baseline_detail(id).await.map_err(internal)?.is_none() {
        return Err(Refusal::NoSuch(format!(
            "no baseline {id:?} is defined or reported at this site"
        )));
    }
    let state =
        failing_state(ctx.query.get("state").map(String::as_str)).map_err(Refusal::Malformed)?;
    let devices = store.failing_devices(id, state).await.map_err(internal)?;
    Ok(json_response(
        StatusCode::OK,
        &Noncompliant {
            baseline_id: id.clone(),
            state: state.as_str(),
            devices,
        },
    ))
}
