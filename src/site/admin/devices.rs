//! Device lists on the admin API, paged by cursor:
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/devices` | `{"devices": [DeviceRow…], "next_after"}`: every device, by hostname |
//! | `GET /api/v1/compliance/baselines/{id}/devices` | `{"baseline_id", "devices": [BaselineDeviceRow…], "next_after"}`: the baseline's devices with their current state |
//!
//! Query parameters (all optional): `state` (`compliant`, `non_compliant`, `error`,
//! `not_applicable`, `unknown`), `severity` (worst severity at least: `none` …
//! `critical_with_event`; baseline lists only), `os` (OS contains), `q` (hostname, OS or device
//! id contains), `limit` (1 to 1000, default 100) and `after` (the `next_after` of the previous
//! page). A bad value is refused with 400 `malformed` naming the parameter.

use std::collections::HashMap;

use http::StatusCode;
use serde::Serialize;

use super::compliance::internal;
use super::router::{Ctx, Reply, Router};
use crate::store::{BaselineDeviceRow, DEFAULT_PAGE, DeviceFilter, MAX_PAGE};
use crate::wire::{Refusal, json_response};

/// Longest search or OS text accepted.
pub const MAX_SEARCH: usize = 200;

pub fn routes(r: Router) -> Router {
    r.get("/api/v1/devices", devices).get(
        "/api/v1/compliance/baselines/{id}/devices",
        baseline_devices,
    )
}

/// The filter a list's query parameters ask for; the error names the parameter at fault.
pub fn device_filter(query: &HashMap<String, String>) -> Result<DeviceFilter, String> {
    let text = |name: &str| -> Result<String, String> {
        let v = query.get(name).map(|s| s.trim()).unwrap_or("");
        if v.chars().count() > MAX_SEARCH {
            return Err(format!("{name}: at most {MAX_SEARCH} characters"));
        }
        Ok(v.to_string())
    };
    let given = |name: &str| query.get(name).map(|s| s.trim()).filter(|s| !s.is_empty());
    let limit = match given("limit") {
        None => DEFAULT_PAGE,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| format!("limit: {v:?} is not a number from 1 to {MAX_PAGE}"))?,
    };
    Ok(DeviceFilter {
        search: text("q")?,
        os: text("os")?,
        state: given("state")
            .map(|s| s.parse().map_err(|e| format!("state: {e}")))
            .transpose()?,
        severity: given("severity")
            .map(|s| s.parse().map_err(|e| format!("severity: {e}")))
            .transpose()?,
        after: given("after").map(str::to_string),
        limit,
    })
}

fn filter_of(ctx: &Ctx) -> Result<DeviceFilter, Refusal> {
    device_filter(&ctx.query).map_err(Refusal::Malformed)
}

async fn devices(ctx: Ctx) -> Reply {
    let f = filter_of(&ctx)?;
    let page = ctx.state.store.device_page(&f).await.map_err(internal)?;
    Ok(json_response(StatusCode::OK, &page))
}

#[derive(Serialize)]
struct BaselineDevices {
    baseline_id: String,
    devices: Vec<BaselineDeviceRow>,
    next_after: Option<String>,
}

async fn baseline_devices(ctx: Ctx) -> Reply {
    let id = ctx.param("id").to_string();
    let f = filter_of(&ctx)?;
    let store = &ctx.state.store;
    if store
        .baseline_detail(&id)
        .await
        .map_err(internal)?
        .is_none()
    {
        return Err(Refusal::NoSuch(format!(
            "no baseline {id:?} is defined or reported at this site"
        )));
    }
    let page = store
        .baseline_device_page(&id, &f)
        .await
        .map_err(internal)?;
    Ok(json_response(
        StatusCode::OK,
        &BaselineDevices {
            baseline_id: id,
            devices: page.devices,
            next_after: page.next_after,
        },
    ))
}
