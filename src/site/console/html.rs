//! HTML building blocks: escaping, the page frame, times. Every string that may come from a
//! device or a user goes through [`esc`] (text and attribute values alike), so a hostname such
//! as `<script>` is shown as text.

use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value.
pub fn url_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `2026-11-24 16:30 UTC`, or `never` for 0 and below.
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => format!("{ms} ms"),
    }
}

/// `2026-11-24`.
pub fn date(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(t) => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        Err(_) => format!("{ms} ms"),
    }
}

/// A state name as shown: `non_compliant` → `non-compliant`.
pub fn state_label(state: &str) -> String {
    esc(&state.replace('_', "-"))
}

/// A `<span>` coloured by state.
pub fn state_badge(state: &str) -> String {
    let class = match state {
        "compliant" | "non_compliant" | "error" | "unknown" | "not_applicable" => state,
        _ => "unknown",
    };
    format!(
        "<span class=\"badge {class}\">{}</span>",
        state_label(state)
    )
}

/// The console's pages, for the navigation bar.
const NAV: &[(&str, &str)] = &[
    ("/console", "Compliance"),
    ("/console/devices", "Devices"),
    ("/console/collections", "Collections"),
    ("/console/deployments", "Deployments"),
    ("/console/relays", "Relays"),
    ("/console/retention", "Retention"),
    ("/console/terms", "Terms"),
    ("/console/audit", "Audit"),
    ("/privacy", "Privacy"),
];

/// A whole page: head, navigation (with the logout form when there is a session), `body`.
pub fn page(title: &str, csrf: Option<&str>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · mprelay console</title>\
         <link rel=\"stylesheet\" href=\"/console/static/console.css\"></head><body>\
         <header><nav><span class=\"brand\">mprelay</span>",
        esc(title)
    );
    if csrf.is_some() || title != "Log in" {
        for (href, label) in NAV {
            let _ = write!(out, "<a href=\"{href}\">{label}</a>");
        }
    }
    if let Some(token) = csrf {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/console/logout\" class=\"logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Log out</button></form>",
            esc(token)
        );
    }
    let _ = writeln!(
        out,
        "</nav></header><main><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    out
}

pub fn opt(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("<code>{}</code>", esc(s)),
        None => "<span class=\"none\">—</span>".into(),
    }
}

pub fn settings_table(settings: &[crate::store::SettingView]) -> String {
    let mut b = String::from(
        "<table class=\"settings\"><tr><th>configuration item</th><th>setting</th>\
         <th>severity</th><th>state</th><th>expected</th><th>observed</th>\
         <th>after remediation</th><th>remediated</th><th>error</th></tr>",
    );
    for s in settings {
        let _ = write!(
            b,
            "<tr class=\"setting\" data-setting=\"{sid}\"><td>{ci} <small>rev {rev}</small></td>\
             <td>{sid}</td><td>{sev}</td><td>{state}</td><td><code>{exp}</code></td>\
             <td class=\"observed\">{before}</td><td>{after}</td><td>{rem}</td><td>{err}</td></tr>",
            ci = esc(&s.ci_id),
            rev = s.ci_revision,
            sid = esc(&s.setting_id),
            sev = esc(&s.severity),
            state = state_badge(&s.state),
            exp = esc(&s.expected),
            before = opt(&s.observed_before),
            after = opt(&s.observed_after),
            rem = if s.remediated { "yes" } else { "no" },
            err = esc(&s.error),
        );
    }
    b.push_str("</table>");
    b
}

pub fn hostname(h: &str) -> String {
    if h.is_empty() {
        "<span class=\"none\">(no hostname)</span>".into()
    } else {
        format!("<span class=\"hostname\">{}</span>", esc(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(url_part("a b/<c>"), "a%20b%2F%3Cc%3E");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(0), "never");
        assert_eq!(time(1_764_000_000_000), "2025-11-24 16:00 UTC");
        assert_eq!(date(1_764_000_000_000), "2025-11-24");
    }
}
