//! The retention task on the admin API:
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/maintenance` | `{"task": MaintenanceTask, "next_window": {start_ms, end_ms} or null}` |
//! | `PUT /api/v1/maintenance` | body [`SettingsChange`] (`enabled`, `delete_older_than_days`, `days` "sat,sun", `window` "00:00-05:00", `time_zone`; what is left out stays): the new settings as from GET; 400 `malformed` naming the bad field |
//! | `GET /api/v1/maintenance/runs?limit=N` | the latest runs (default 20), newest first |
//! | `POST /api/v1/maintenance/run` | body `{"now": true}` runs at once whatever the window; without `now` only inside a window, as the schedule would. 202 `{"outcome": "started", "run_id": N}` once the run is recorded (it goes on in the background; follow it on `/runs`); 200 `{"outcome": "disabled" / "not_in_window" / "already_ran", …}` when nothing starts; 409 `conflict` when another run is in progress |
//!
//! Like every admin handler these run in a task of their own (see [`super`]), so a client that
//! goes away cannot cut a write short; a run goes on in the background after the answer.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tracing::error;

use super::router::{Ctx, Reply, Router};
use crate::retention::schedule::{Window, next_window};
use crate::retention::settings::{Settings, SettingsChange, apply};
use crate::retention::{Outcome, RetentionError};
use crate::store::{DELETE_AGED_CM_DATA, MaintenanceTask, RunTrigger};
use crate::wire::{Refusal, json_response};

pub fn routes(r: Router) -> Router {
    r.get("/api/v1/maintenance", show)
        .route(http::Method::PUT, "/api/v1/maintenance", set)
        .get("/api/v1/maintenance/runs", runs)
        .route(http::Method::POST, "/api/v1/maintenance/run", run)
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    error!(error = %e, "admin API maintenance request failed");
    Refusal::Internal
}

#[derive(Serialize)]
struct TaskView {
    task: MaintenanceTask,
    next_window: Option<Window>,
}

fn view(task: MaintenanceTask, now_ms: i64) -> TaskView {
    let next_window = Settings::from_task(&task)
        .ok()
        .and_then(|s| next_window(&s, now_ms));
    TaskView { task, next_window }
}

async fn show(ctx: Ctx) -> Reply {
    let r = ctx.state.retention.clone();
    let task = r
        .store
        .maintenance_task(DELETE_AGED_CM_DATA)
        .await
        .map_err(internal)?;
    let v = view(task, r.clock.now_ms());
    Ok(json_response(StatusCode::OK, &v))
}

async fn set(ctx: Ctx) -> Reply {
    let change: SettingsChange = serde_json::from_slice(&ctx.body)
        .map_err(|e| Refusal::Malformed(format!("maintenance settings: {e}")))?;
    let r = ctx.state.retention.clone();
    let task = r
        .store
        .maintenance_task(DELETE_AGED_CM_DATA)
        .await
        .map_err(internal)?;
    let new = apply(&task, &change).map_err(|e| Refusal::Malformed(e.to_string()))?;
    r.store
        .update_maintenance_task(
            &ctx.actor.clone().unwrap_or_else(crate::store::Actor::site),
            &new,
        )
        .await
        .map_err(internal)?;
    let stored = r
        .store
        .maintenance_task(DELETE_AGED_CM_DATA)
        .await
        .map_err(internal)?;
    let v = view(stored, r.clock.now_ms());
    // The retention age travels in the policy.
    ctx.state.policy_changed.notify_one();
    Ok(json_response(StatusCode::OK, &v))
}

async fn runs(ctx: Ctx) -> Reply {
    let limit = match ctx.query.get("limit") {
        None => 20,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| Refusal::Malformed("limit must be 1 to 1000".into()))?,
    };
    let runs = ctx
        .state
        .store
        .maintenance_runs(DELETE_AGED_CM_DATA, limit)
        .await
        .map_err(internal)?;
    Ok(json_response(StatusCode::OK, &runs))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    #[serde(default)]
    now: bool,
}

#[derive(Serialize)]
struct Started {
    outcome: &'static str,
    run_id: i64,
}

async fn run(ctx: Ctx) -> Reply {
    let req: RunRequest = if ctx.body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        serde_json::from_slice(&ctx.body)
            .map_err(|e| Refusal::Malformed(format!("run request: {e}")))?
    };
    let r = ctx.state.retention.clone();
    let (started_tx, started_rx) = oneshot::channel();
    // The run goes on after the answer: it is not tied to this request.
    let task = tokio::spawn(async move {
        let (_never, stop) = watch::channel(false);
        if req.now {
            r.run(RunTrigger::Manual, &stop, Some(started_tx)).await
        } else {
            r.tick(&stop, Some(started_tx)).await
        }
    });
    if let Ok(run_id) = started_rx.await {
        return Ok(json_response(
            StatusCode::ACCEPTED,
            &Started {
                outcome: "started",
                run_id,
            },
        ));
    }
    let outcome: Result<Outcome, RetentionError> = task.await.map_err(internal)?;
    match outcome.map_err(internal)? {
        Outcome::Busy => Err(Refusal::Conflict(
            "another retention run is in progress".into(),
        )),
        other => Ok(json_response(StatusCode::OK, &other)),
    }
}
