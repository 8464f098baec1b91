//! `/console`: per baseline, a bar chart of devices per state and their trend.

use std::collections::HashMap;
use std::fmt::Write;

use http::StatusCode;

use super::html::{self, esc, page, url_part};
use super::respond::{csrf, db_failed, html_response};
use super::{TREND_DAYS, svg};
use crate::site::admin::router::{Ctx, Reply};
use crate::store::DAY_MS;

pub(super) async fn overview(ctx: Ctx) -> Reply {
    let store = &ctx.state.store;
    let now = crate::clock::now_ms();
    let baselines = match store.compliance_overview().await {
        Ok(b) => b,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    let trend = match store.compliance_trend(now, TREND_DAYS).await {
        Ok(t) => t,
        Err(e) => return Ok(db_failed(&ctx, e)),
    };
    // (baseline, instant, state) → devices
    let mut points: HashMap<(&str, i64, &str), u64> = HashMap::new();
    for p in &trend {
        points.insert((&p.baseline_id, p.at_ms, &p.state), p.devices);
    }
    let instants: Vec<i64> = (0..i64::from(TREND_DAYS))
        .rev()
        .map(|i| now - i * DAY_MS)
        .collect();
    let labels: Vec<String> = instants.iter().map(|t| html::date(*t)).collect();

    let mut b = String::new();
    if baselines.is_empty() {
        b.push_str(
            "<p>No baseline is defined or reported yet. Import baselines with \
             <code>mprelay compliance import</code>.</p>",
        );
    }
    b.push_str(&svg::legend());
    for o in &baselines {
        let counts = [
            ("compliant", o.compliant),
            ("non_compliant", o.non_compliant),
            ("error", o.error),
            ("unknown", o.unknown),
        ];
        let series: Vec<(&str, Vec<u64>)> = svg::STATES
            .iter()
            .map(|(s, _)| {
                let v = instants
                    .iter()
                    .map(|t| {
                        points
                            .get(&(o.baseline_id.as_str(), *t, *s))
                            .copied()
                            .unwrap_or(0)
                    })
                    .collect();
                (*s, v)
            })
            .collect();
        let _ = write!(
            b,
            "<section class=\"baseline\" data-baseline=\"{id}\">\
             <h2><a href=\"/console/baselines/{href}\">{name}</a> <small>{id}{rev}</small></h2>\
             <div class=\"charts\"><figure>{bars}<figcaption>Devices per state now</figcaption></figure>\
             <figure>{trend}<figcaption>Devices per state, last {TREND_DAYS} days</figcaption></figure></div>\
             <table class=\"counts\"><tr><th>devices</th><th>compliant</th><th>non-compliant</th>\
             <th>error</th><th>unknown</th><th>not applicable</th><th>never reported</th></tr>\
             <tr><td data-state=\"devices\"><a href=\"/console/baselines/{href}/devices\">{}</a></td>\
             <td data-state=\"compliant\">{}</td>\
             <td data-state=\"non_compliant\">{}</td><td data-state=\"error\">{}</td>\
             <td data-state=\"unknown\">{}</td><td data-state=\"not_applicable\">{}</td>\
             <td data-state=\"never_reported\">{}</td></tr></table></section>",
            o.devices,
            state_link(&o.baseline_id, "compliant", o.compliant),
            state_link(&o.baseline_id, "non_compliant", o.non_compliant),
            state_link(&o.baseline_id, "error", o.error),
            state_link(&o.baseline_id, "unknown", o.unknown),
            state_link(&o.baseline_id, "not_applicable", o.not_applicable),
            o.never_reported,
            id = esc(&o.baseline_id),
            href = url_part(&o.baseline_id),
            name = esc(&o.name),
            rev = o.revision.map(|r| format!(" rev {r}")).unwrap_or_default(),
            bars = svg::bars(&format!("{}: devices per state", o.name), &counts),
            trend = svg::trend(&format!("{}: trend", o.name), &labels, &series),
        );
    }
    Ok(html_response(
        StatusCode::OK,
        page("Compliance", csrf(&ctx), &b),
    ))
}

/// A count of devices in `state` as a link to their list.
pub(super) fn state_link(baseline_id: &str, state: &str, n: u64) -> String {
    format!(
        "<a class=\"state-list\" href=\"{}\">{n}</a>",
        super::lists::state_href(baseline_id, state)
    )
}
