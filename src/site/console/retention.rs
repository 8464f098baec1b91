//! `/console/retention`: the retention task's settings, a form to change them, and its last runs.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use http::StatusCode;
use tracing::info;

use super::form::{self, RetentionForm};
use super::html::{esc, page, time};
use super::respond::{
    csrf, csrf_field, csrf_ok, csrf_refused, db_failed, form_pairs, html_response, redirect,
};
use crate::site::admin::router::{Ctx, Reply};
use crate::store::DELETE_AGED_CM_DATA;

pub(super) async fn retention(ctx: Ctx) -> Reply {
    let task = match ctx.state.store.maintenance_task(DELETE_AGED_CM_DATA).await {
        Ok(t) => t,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let saved = ctx.query.contains_key("saved");
    retention_page(
        &ctx,
        &RetentionForm::from_task(&task),
        &HashMap::new(),
        saved,
    )
    .await
}

pub(super) async fn retention_save(ctx: Ctx) -> Reply {
    let pairs = form_pairs(&ctx.body);
    if !csrf_ok(&ctx, &pairs) {
        return Ok(csrf_refused(&ctx));
    }
    let store = &ctx.state.store;
    let current = match store.maintenance_task(DELETE_AGED_CM_DATA).await {
        Ok(t) => t,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let form = RetentionForm::from_pairs(&pairs);
    match form.check(&current) {
        Ok(task) => {
            if let Err(e) = store
                .update_maintenance_task(
                    &ctx.actor.clone().unwrap_or_else(crate::store::Actor::site),
                    &task,
                )
                .await
            {
                return Ok(db_failed(&ctx, e));
            }
            ctx.state.policy_changed.notify_one();
            info!(
                days = task.delete_older_than_days,
                enabled = task.enabled,
                "retention task changed from the console"
            );
            Ok(redirect("/console/retention?saved=1", None))
        }
        Err(errors) => retention_page(&ctx, &form, &errors, false).await,
    }
}

async fn retention_page(
    ctx: &Ctx,
    f: &RetentionForm,
    errors: &HashMap<&'static str, String>,
    saved: bool,
) -> Reply {
    let runs = match ctx
        .state
        .store
        .maintenance_runs(DELETE_AGED_CM_DATA, 20)
        .await
    {
        Ok(r) => r,
        Err(e) => return Ok(db_failed(ctx, e)),
    };
    let mut b = String::new();
    if saved {
        b.push_str("<p class=\"notice\" role=\"status\" id=\"saved\">Saved. The relays get the new retention age with the next policy.</p>");
    }
    if !errors.is_empty() {
        let _ = write!(
            b,
            "<div class=\"errors\" role=\"alert\" id=\"form-errors\"><p>Nothing was saved: \
             {} field{} need{} fixing.</p></div>",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            if errors.len() == 1 { "s" } else { "" },
        );
    }
    let err = |name: &str| {
        errors
            .get(name)
            .map(|e| {
                format!(
                    "<p class=\"field-error\" id=\"{name}-error\">{}</p>",
                    esc(e)
                )
            })
            .unwrap_or_default()
    };
    let _ = write!(
        b,
        "<p>Delete Aged Configuration Management Data deletes reports, their setting results \
         and history older than the age below, in the window on the days ticked. The age is \
         also the retention the relays enforce and the privacy page states.</p>\
         <form method=\"post\" action=\"/console/retention\" class=\"retention\" novalidate>{csrf}\
         <p><label><input type=\"checkbox\" name=\"enabled\" id=\"enabled\"{checked}> Enabled</label></p>\
         <p><label for=\"delete_older_than_days\">Delete data older than (days, {min}–{max})</label>\
         <input type=\"number\" id=\"delete_older_than_days\" name=\"delete_older_than_days\" \
         min=\"{min}\" max=\"{max}\" value=\"{days}\">{e_days}</p>\
         <fieldset><legend>Days of the week</legend>",
        csrf = csrf_field(ctx),
        checked = if f.enabled { " checked" } else { "" },
        min = form::MIN_DAYS,
        max = form::MAX_DAYS,
        days = esc(&f.delete_older_than_days),
        e_days = err("delete_older_than_days"),
    );
    for d in form::DAYS {
        let _ = write!(
            b,
            "<label><input type=\"checkbox\" name=\"days_of_week\" value=\"{d}\"{c}> {d}</label> ",
            c = if f.days_of_week.iter().any(|x| x == d) {
                " checked"
            } else {
                ""
            }
        );
    }
    let _ = write!(
        b,
        "{e_week}</fieldset>\
         <p><label for=\"window\">Start window (HH:MM-HH:MM)</label>\
         <input type=\"text\" id=\"window\" name=\"window\" value=\"{window}\">{e_window}</p>\
         <p><label for=\"time_zone\">Time zone</label>\
         <input type=\"text\" id=\"time_zone\" name=\"time_zone\" value=\"{tz}\">{e_tz}</p>\
         <button type=\"submit\" id=\"save\">Save</button></form>",
        e_week = err("days_of_week"),
        window = esc(&f.window),
        e_window = err("window"),
        tz = esc(&f.time_zone),
        e_tz = err("time_zone"),
    );
    b.push_str(
        "<h2>Last runs</h2><table class=\"runs\"><tr><th>started</th><th>trigger</th>\
         <th>status</th><th>deleted data older than</th><th>rows deleted</th><th>by table</th>\
         <th>error</th></tr>",
    );
    for r in &runs {
        let tables: Vec<String> = r
            .rows_deleted
            .iter()
            .map(|(t, n)| format!("{}: {n}", esc(t)))
            .collect();
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(r.started_ms),
            esc(&r.trigger),
            r.status.as_str(),
            time(r.cutoff_ms),
            r.total_deleted,
            tables.join(", "),
            esc(r.error.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</table>");
    if runs.is_empty() {
        b.push_str("<p>The task has not run yet.</p>");
    }
    let since: BTreeMap<String, u64> = ctx.state.site.metrics.retention.rows_deleted();
    if !since.is_empty() {
        b.push_str("<p>Rows deleted since this server started: ");
        let parts: Vec<String> = since
            .iter()
            .map(|(t, n)| format!("{}: {n}", esc(t)))
            .collect();
        b.push_str(&parts.join(", "));
        b.push_str("</p>");
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(html_response(status, page("Retention", csrf(ctx), &b)))
}
