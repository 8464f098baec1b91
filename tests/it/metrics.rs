//! `/metrics`, `/healthz` and `/readyz` on the relay and on the site server: scraped after real
//! traffic and parsed by a strict reader of the Prometheus text exposition format (0.0.4), and
//! the numbers checked against what the traffic did.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use http::Method;
use mprelay::net::{HttpClient, HttpVersion};

use crate::compliance::{admin_client, system_on};
use crate::helpers::{RawDevice, describe};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: family types and samples in order.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: HashMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the one sample with this name and these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value
    }
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    is_name(s) && !s.contains(':')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Labels `{a="b",c="d"}` (the text after the metric name); returns them and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((labels, s));
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("newline in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample belongs to, given the declared types.
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
        {
            return base;
        }
    }
    name
}

/// Parses the text format strictly: every line well formed, a family's TYPE before its
/// samples and only once, a family's samples together, no sample repeated, counters not
/// negative, histogram buckets cumulative with `+Inf` equal to `_count`.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    let mut helps = HashMap::new();
    let mut seen_families: Vec<String> = Vec::new();
    let mut seen_samples = std::collections::HashSet::new();
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), _)
                    if !is_name(name) || helps.insert(name.to_string(), ()).is_some() =>
                {
                    return Err(err("bad or repeated HELP".into()));
                }
                (Some("HELP"), Some(_), _) => {}
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_name(name) {
                        return Err(err("bad metric name".into()));
                    }
                    if !matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(err(format!("unknown type {kind}")));
                    }
                    if seen_families.iter().any(|f| f == name) {
                        return Err(err("TYPE after the family's samples".into()));
                    }
                    if e.types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(err("TYPE repeated".into()));
                    }
                }
                (Some("TYPE" | "HELP"), _, _) => return Err(err("incomplete".into())),
                _ => {} // a comment
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(err)?;
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(err)?;
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(err("bad timestamp".into()));
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let fam = family(name, &e.types).to_string();
        match seen_families.last() {
            Some(last) if *last == fam => {}
            _ if seen_families.contains(&fam) => {
                return Err(err(format!("samples of {fam} are not together")));
            }
            _ => seen_families.push(fam.clone()),
        }
        if !seen_samples.insert((name.to_string(), labels.clone())) {
            return Err(err("sample repeated".into()));
        }
        let kind = e.types.get(&fam).map(String::as_str).unwrap_or("untyped");
        if kind == "counter" && (value < 0.0 || value.is_nan()) {
            return Err(err("negative counter".into()));
        }
        if kind == "histogram" && name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(err("bucket without le".into()));
        }
        e.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&e)?;
    Ok(e)
}

fn check_histograms(e: &Exposition) -> Result<(), String> {
    for (fam, kind) in &e.types {
        if kind != "histogram" {
            continue;
        }
        // Series by labels other than le.
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in e
            .samples
            .iter()
            .filter(|s| s.name == format!("{fam}_bucket"))
        {
            let mut key = s.labels.clone();
            let le = parse_value(&key.remove("le").unwrap_or_default())?;
            series.entry(key).or_default().push((le, s.value));
        }
        if series.is_empty() {
            return Err(format!("histogram {fam} has no buckets"));
        }
        for (key, buckets) in series {
            let mut last = (f64::NEG_INFINITY, 0.0);
            for (le, v) in &buckets {
                if *le <= last.0 || *v < last.1 {
                    return Err(format!("{fam} {key:?}: buckets not cumulative at le={le}"));
                }
                last = (*le, *v);
            }
            if last.0 != f64::INFINITY {
                return Err(format!("{fam} {key:?}: no +Inf bucket"));
            }
            let count = e
                .samples
                .iter()
                .find(|s| s.name == format!("{fam}_count") && s.labels == key)
                .ok_or_else(|| format!("{fam} {key:?}: no _count"))?;
            if count.value != last.1 {
                return Err(format!(
                    "{fam} {key:?}: +Inf bucket {} but count {}",
                    last.1, count.value
                ));
            }
            if !e
                .samples
                .iter()
                .any(|s| s.name == format!("{fam}_sum") && s.labels == key)
            {
                return Err(format!("{fam} {key:?}: no _sum"));
            }
        }
    }
    Ok(())
}

async fn get_text(c: &HttpClient, path: &str, token: Option<&str>) -> (u16, String, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let resp = c.request(Method::GET, path, None, &headers).await.unwrap();
    let ct = resp
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        resp.status.as_u16(),
        ct,
        String::from_utf8(resp.body.to_vec()).unwrap(),
    )
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{code=\"x\\\"y\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n";
    let e = parse(good).unwrap();
    assert_eq!(e.value("a_total", &[("code", "x\"y")]), 3.0);
    for bad in [
        "a 1",                      // no final newline
        "a{b=\"c} 1\n",             // unterminated
        "a{b=c} 1\n",               // unquoted
        "1a 1\n",                   // bad name
        "a one\n",                  // bad value
        "# TYPE a counter\na -1\n", // negative counter
        "a 1\nb 1\na{x=\"1\"} 2\n", // family split
        "a 1\na 2\n",               // repeated sample
        "a 1\n# TYPE a gauge\n",    // TYPE after samples
        "# TYPE a widget\n",        // unknown type
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_site_metrics_parse_and_count_the_traffic() {
    let sys = system_on(None).await;
    let agent_client = sys.agent_client(HttpVersion::Http2);
    let dev = RawDevice::enroll(&agent_client, &sys.enrollment_secret()).await;
    for seed in 0..5 {
        let (_, body) = dev.sealed_report(seed);
        let resp = agent_client
            .post("/v1/submissions", Bytes::from(body))
            .await
            .unwrap();
        assert_eq!(resp.status, 202, "{}", describe(&resp));
    }
    // One refused: garbage is not a sealed submission.
    let resp = agent_client
        .post("/v1/submissions", Bytes::from_static(b"not a submission"))
        .await
        .unwrap();
    assert!(resp.status.is_client_error());
    sys.wait_for_reports(5).await;

    // The relay, on its site-facing listener (mutual TLS).
    let site_side = sys.site_client();
    let (st, ct, text) = get_text(&site_side, "/metrics", None).await;
    assert_eq!(st, 200);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let m = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(m.value("mprelay_relay_accepted_total", &[]), 5.0);
    let rejected: f64 = m
        .samples
        .iter()
        .filter(|s| s.name == "mprelay_relay_rejected_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(rejected, 1.0, "{text}");
    assert_eq!(m.value("mprelay_relay_submission_seconds_count", &[]), 5.0);
    // The enrollment is spooled too.
    assert_eq!(m.value("mprelay_relay_spool_last_seq", &[]), 6.0);
    assert!(m.value("mprelay_relay_group_commit_batch_size_count", &[]) >= 1.0);
    assert_eq!(
        m.value("mprelay_relay_group_commit_batch_size_sum", &[]),
        6.0
    );
    assert!(m.value("mprelay_relay_open_connections", &[]) >= 1.0);
    assert!(m.value("mprelay_relay_accepted_connections_total", &[]) >= 1.0);
    assert_eq!(m.value("mprelay_relay_failed_handshakes_total", &[]), 0.0);
    for t in ["counter", "gauge", "histogram"] {
        assert!(m.types.values().any(|k| k == t), "no {t} in {text}");
    }

    // The site server, on the admin listener with the token.
    let admin = admin_client(&sys);
    let token = sys.lb.admin_token().unwrap();
    let (st, _, _) = get_text(&admin, "/metrics", None).await;
    assert_eq!(st, 401, "site metrics need the token");
    let (st, ct, text) = get_text(&admin, "/metrics", Some(&token)).await;
    assert_eq!(st, 200);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let m = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let relay_url = sys.site.as_ref().unwrap().relays[0].url.clone();
    let relay = [("relay", relay_url.as_str())];
    assert_eq!(
        m.value("mprelay_site_pulled_records_total", &relay),
        6.0,
        "{text}"
    ); // 5 reports and the enrollment
    assert_eq!(m.value("mprelay_site_stored_reports_total", &relay), 5.0);
    assert!(m.value("mprelay_site_write_batch_seconds_count", &[]) >= 1.0);
    assert_eq!(m.value("mprelay_site_database_errors_total", &[]), 0.0);
    assert!(m.value("mprelay_site_last_pull_timestamp_seconds", &relay) > 1.7e9);
    assert_eq!(
        m.types["mprelay_site_retention_rows_deleted_total"],
        "counter"
    );
    assert_eq!(m.types["mprelay_site_forward_lag_records"], "gauge");
    // The retention task's counters (their values are checked in the retention tests).
    assert_eq!(m.types["mprelay_site_retention_runs_total"], "counter");
    assert_eq!(
        m.types["mprelay_site_retention_partitions_dropped_total"],
        "counter"
    );
    assert_eq!(
        m.value("mprelay_site_retention_partitions_dropped_total", &[]),
        0.0
    );

    // Health and readiness on every listener, without credentials beyond the relay's mTLS.
    for c in [&agent_client, &site_side, &admin] {
        for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
            let (st, _, text) = get_text(c, path, None).await;
            assert_eq!(st, 200, "{path}");
            assert!(text.starts_with(body), "{path}: {text:?}");
        }
    }

    // The site is not ready while its database does not answer.
    sys.store.close().await;
    let (st, _, text) = get_text(&admin, "/readyz", None).await;
    assert_eq!(st, 503);
    assert_eq!(text, "not ready: the site database does not answer\n");
}
