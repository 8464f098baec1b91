//! `/console/collections` (every collection and its member count), `/console/collections/{id}`
//! (its members, 50 a page) and `/console/deployments` (per deployment the devices now in its
//! collection by state, and a form to deploy a baseline to a collection).

use std::fmt::Write;

use http::StatusCode;

use super::html::{esc, hostname, page, time, url_part};
use super::respond::{
    csrf, csrf_field, csrf_ok, csrf_refused, form_pairs, html_response, not_found, redirect,
};
use crate::policy::collection;
use crate::site::admin::collections::{collection_rows, deploy_as_asked, members_page};
use crate::site::admin::router::{Ctx, Reply};
use crate::wire::Refusal;

/// Members on one page.
const PAGE: usize = 50;

pub(super) async fn collections(ctx: Ctx) -> Reply {
    let rows = collection_rows(&ctx.state.store)
        .await
        .map_err(|_| Refusal::Internal)?;
    let mut b = String::from(
        "<p>Collections group devices by rules over what the site knows of them, by tags and by \
         explicit lists; baselines are deployed to them (<a href=\"/console/deployments\">\
         deployments</a>).</p><table class=\"collections\"><tr><th>collection</th><th>name</th>\
         <th>revision</th><th>members</th><th>imported</th></tr>",
    );
    for r in &rows {
        let s = &r.summary;
        let _ = write!(
            b,
            "<tr class=\"collection\" data-collection=\"{id}\"><td><a href=\"/console/collections/\
             {href}\">{id}</a></td><td>{name}</td><td>{rev}</td><td class=\"members\">{n}</td>\
             <td>{at}</td></tr>",
            id = esc(&s.id),
            href = url_part(&s.id),
            name = esc(&s.name),
            rev = s.revision,
            n = r.members,
            at = time(s.imported_ms),
        );
    }
    b.push_str("</table>");
    Ok(html_response(
        StatusCode::OK,
        page("Collections", csrf(&ctx), &b),
    ))
}

pub(super) async fn collection_members(ctx: Ctx) -> Reply {
    let id = ctx.param("id").to_string();
    let pg: usize = ctx
        .query
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let Some(p) = members_page(&ctx.state.store, &id, (pg - 1) * PAGE, PAGE)
        .await
        .map_err(|_| Refusal::Internal)?
    else {
        return Ok(not_found(&ctx, &format!("collection {id}")));
    };
    let mut b = format!(
        "<p class=\"total\">{} device{} in this collection.</p><table class=\"members\"><tr>\
         <th>device</th><th>hostname</th><th>OS</th><th>agent</th><th>tags</th></tr>",
        p.total,
        if p.total == 1 { "" } else { "s" }
    );
    for m in &p.members {
        let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(
            b,
            "<tr class=\"member\"><td><a href=\"/console/devices/{id}\">{id}</a></td><td>{h}</td>\
             <td>{os}</td><td>{v}</td><td>{t}</td></tr>",
            id = esc(&m.device_id),
            h = hostname(&m.hostname),
            os = esc(&m.os),
            v = esc(&m.agent_version),
            t = esc(&tags.join(" ")),
        );
    }
    b.push_str("</table><p class=\"pages\">");
    let href = url_part(&id);
    if pg > 1 {
        let _ = write!(
            b,
            "<a rel=\"prev\" href=\"/console/collections/{href}?page={}\">previous</a> ",
            pg - 1
        );
    }
    if pg * PAGE < p.total {
        let _ = write!(
            b,
            "<a rel=\"next\" href=\"/console/collections/{href}?page={}\">next</a>",
            pg + 1
        );
    }
    b.push_str("</p>");
    Ok(html_response(
        StatusCode::OK,
        page(&format!("Collection {id}"), csrf(&ctx), &b),
    ))
}

pub(super) async fn deployments(ctx: Ctx) -> Reply {
    deployments_page(&ctx, None, StatusCode::OK).await
}

pub(super) async fn deploy(ctx: Ctx) -> Reply {
    let pairs = form_pairs(&ctx.body);
    if !csrf_ok(&ctx, &pairs) {
        return Ok(csrf_refused(&ctx));
    }
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let remediate = get("remediate") == "on";
    let interval = get("interval");
    match deploy_as_asked(
        &ctx,
        &get("baseline"),
        &get("collection"),
        remediate,
        Some(&interval),
    )
    .await
    {
        Ok(_) => Ok(redirect("/console/deployments?saved=1", None)),
        Err(Refusal::NoSuch(m) | Refusal::Malformed(m)) => {
            deployments_page(&ctx, Some(&m), StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(e),
    }
}

async fn deployments_page(ctx: &Ctx, error: Option<&str>, status: StatusCode) -> Reply {
    let rows = collection::deployment_compliance(&ctx.state.store, None)
        .await
        .map_err(|_| Refusal::Internal)?;
    let mut b = String::new();
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" id=\"deploy-error\">{}</p>", esc(e));
    } else if ctx.query.contains_key("saved") {
        b.push_str("<p class=\"saved\" id=\"saved\">Deployed; devices get it at their next policy fetch.</p>");
    }
    b.push_str(
        "<p>Per deployment, the devices now in its collection; a device that left the \
         collection no longer counts (its history stays).</p><table class=\"deployments\"><tr>\
         <th>baseline</th><th>collection</th><th>remediate</th><th>interval</th><th>enabled</th>\
         <th>targeted</th><th>compliant</th><th>non-compliant</th><th>error</th>\
         <th>not reported yet</th></tr>",
    );
    for r in &rows {
        let _ = write!(
            b,
            "<tr class=\"deployment\" data-deployment=\"{bid}@{cid}\"><td><a href=\"/console/\
             baselines/{bh}\">{bid}</a></td><td><a href=\"/console/collections/{ch}\">{cid}</a>\
             </td><td>{rem}</td><td>{int}</td><td>{en}</td><td class=\"targeted\">{t}</td>\
             <td class=\"compliant\">{c}</td><td class=\"non-compliant\">{n}</td>\
             <td class=\"error\">{e}</td><td class=\"not-reported\">{u}</td></tr>",
            bid = esc(&r.baseline_id),
            cid = esc(&r.collection_id),
            bh = url_part(&r.baseline_id),
            ch = url_part(&r.collection_id),
            rem = if r.remediate { "yes" } else { "report only" },
            int = if r.interval_s == 0 {
                "site".to_string()
            } else {
                format!("{} s", r.interval_s)
            },
            en = if r.enabled { "yes" } else { "no" },
            t = r.targeted,
            c = r.compliant,
            n = r.non_compliant,
            e = r.error,
            u = r.not_reported,
        );
    }
    let _ = write!(
        b,
        "</table><h2>Deploy a baseline</h2><form method=\"post\" action=\"/console/deployments\" \
         class=\"deploy\">{csrf}<label>baseline <input id=\"baseline\" name=\"baseline\" required></label> \
         <label>collection <input id=\"collection\" name=\"collection\" required \
         value=\"all-devices\"></label> <label><input id=\"remediate\" type=\"checkbox\" \
         name=\"remediate\"> remediate</label> <label>interval <input id=\"interval\" \
         name=\"interval\" placeholder=\"4h\"></label> <button id=\"deploy\" \
         type=\"submit\">Deploy</button></form>",
        csrf = csrf_field(ctx)
    );
    Ok(html_response(status, page("Deployments", csrf(ctx), &b)))
}
