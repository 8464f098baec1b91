//! Charts as inline SVG, drawn on the server: a bar per state, and the trend of each state
//! over the last days. Every bar and line carries `data-state` (and bars `data-count`) so the
//! numbers can be read back by tests and assistive tools; labels are text, not pictures.

use std::fmt::Write;

use super::html::{esc, state_label};

/// The states the charts show, in order, with their colours.
pub const STATES: &[(&str, &str)] = &[
    ("compliant", "#2e7d32"),
    ("non_compliant", "#c62828"),
    ("error", "#ef6c00"),
    ("unknown", "#757575"),
];

/// A bar chart of devices per state.
pub fn bars(title: &str, counts: &[(&str, u64)]) -> String {
    let (w, h, top, bottom) = (360.0, 180.0, 20.0, 36.0);
    let max = counts.iter().map(|c| c.1).max().unwrap_or(0).max(1) as f64;
    let slot = w / counts.len().max(1) as f64;
    let bar_w = slot * 0.6;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart bars\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" \
         role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    for (i, (state, n)) in counts.iter().enumerate() {
        let colour = colour(state);
        let bar_h = (h - top - bottom) * (*n as f64) / max;
        let x = slot * i as f64 + (slot - bar_w) / 2.0;
        let y = h - bottom - bar_h;
        let _ = write!(
            out,
            "<rect class=\"bar\" data-state=\"{state}\" data-count=\"{n}\" x=\"{x:.1}\" \
             y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{bar_h:.1}\" fill=\"{colour}\">\
             <title>{label}: {n}</title></rect>\
             <text x=\"{cx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" class=\"count\">{n}</text>\
             <text x=\"{cx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\" class=\"axis\">{label}</text>",
            label = state_label(state),
            cx = x + bar_w / 2.0,
            ty = y - 4.0,
            ly = h - bottom + 16.0,
        );
    }
    out.push_str("</svg>");
    out
}

/// Lines of devices per state over time. `days` are the instants, oldest first; `series` holds
/// per state one count per instant.
pub fn trend(title: &str, days: &[String], series: &[(&str, Vec<u64>)]) -> String {
    let (w, h, left, right, top, bottom) = (420.0, 180.0, 36.0, 10.0, 12.0, 30.0);
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = days.len().max(2) as f64;
    let x_of = |i: usize| left + (w - left - right) * i as f64 / (n - 1.0);
    let y_of = |v: u64| h - bottom - (h - top - bottom) * v as f64 / max;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart trend\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" \
         role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    // Axes and the scale.
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{yb}\" stroke=\"#999\"/>\
         <line class=\"axis\" x1=\"{left}\" y1=\"{yb}\" x2=\"{xr}\" y2=\"{yb}\" stroke=\"#999\"/>\
         <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\" class=\"axis\">{max}</text>\
         <text x=\"{tx}\" y=\"{yb}\" text-anchor=\"end\" class=\"axis\">0</text>",
        yb = h - bottom,
        xr = w - right,
        tx = left - 4.0,
        ty = top + 8.0,
        max = max as u64,
    );
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            out,
            "<text x=\"{left}\" y=\"{y}\" class=\"axis\">{}</text>\
             <text x=\"{xr}\" y=\"{y}\" text-anchor=\"end\" class=\"axis\">{}</text>",
            esc(first),
            esc(last),
            y = h - bottom + 16.0,
            xr = w - right,
        );
    }
    for (state, values) in series {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x_of(i), y_of(*v)))
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"line\" data-state=\"{state}\" data-values=\"{vals}\" fill=\"none\" \
             stroke=\"{colour}\" stroke-width=\"2\" points=\"{points}\">\
             <title>{label}</title></polyline>",
            vals = values
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            colour = colour(state),
            points = points.join(" "),
            label = state_label(state),
        );
    }
    out.push_str("</svg>");
    out
}

/// The legend for the state colours.
pub fn legend() -> String {
    let mut out = String::from("<p class=\"legend\">");
    for (state, colour) in STATES {
        let _ = write!(
            out,
            "<svg width=\"12\" height=\"12\" aria-hidden=\"true\"><rect width=\"12\" height=\"12\" \
             fill=\"{colour}\"/></svg> {} ",
            state_label(state)
        );
    }
    out.push_str("</p>");
    out
}

fn colour(state: &str) -> &'static str {
    STATES
        .iter()
        .find(|(s, _)| *s == state)
        .map(|(_, c)| *c)
        .unwrap_or("#757575")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_carry_their_counts() {
        let s = bars("t <x>", &[("compliant", 7), ("non_compliant", 0)]);
        assert!(
            s.contains("data-state=\"compliant\" data-count=\"7\""),
            "{s}"
        );
        assert!(s.contains("data-count=\"0\""), "{s}");
        assert!(s.contains("aria-label=\"t &lt;x&gt;\""), "{s}");
    }

    #[test]
    fn trend_lines_have_a_point_per_day() {
        let days: Vec<String> = (1..=3).map(|d| format!("d{d}")).collect();
        let s = trend("t", &days, &[("error", vec![0, 2, 1])]);
        assert!(s.contains("data-values=\"0 2 1\""), "{s}");
        let points = s
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 3);
    }
}
