//! Device lists on both backends: every compliance state has its list (error included), pages
//! follow one another by cursor without a device lost or repeated, and the filters (state,
//! worst severity, OS) and the search (hostname, OS, device id) narrow them.

use mprelay::compliance::{Severity, State};
use mprelay::store::{DeviceDetails, DeviceFilter, Page, Store};

use crate::db::TestDb;
use crate::store::{batch, report};

const STATES: [State; 7] = [
    State::Compliant,
    State::NonCompliant,
    State::Error,
    State::NonCompliant,
    State::Compliant,
    State::Error,
    State::Unknown,
];

/// Seven devices `host-0`…`host-6` (even ones Debian, odd ones Ubuntu) with `STATES` for b1.
pub(crate) async fn seven_devices(store: &Store) {
    let reports = STATES
        .iter()
        .enumerate()
        .map(|(i, s)| report(&format!("dev{i:030}"), "b1", 1_000_000 + i as i64, *s))
        .collect();
    let mut b = batch("relay-a", 5, reports);
    for (i, d) in b.devices.iter_mut().enumerate() {
        d.details = Some(DeviceDetails {
            hostname: format!("host-{i}"),
            os: if i % 2 == 0 {
                "Debian 12"
            } else {
                "Ubuntu 24.04"
            }
            .into(),
            agent_version: "1".into(),
            hardware_id: format!("hw{i}"),
        });
    }
    store.write_batch(&b).await.unwrap();
}

fn hosts<T>(p: &Page<T>, host: impl Fn(&T) -> &str) -> Vec<String> {
    p.devices.iter().map(|d| host(d).to_string()).collect()
}

fn filter(f: impl FnOnce(&mut DeviceFilter)) -> DeviceFilter {
    let mut out = DeviceFilter {
        limit: 100,
        ..Default::default()
    };
    f(&mut out);
    out
}

crate::both_backends!(every_state_has_its_list_paged_and_filtered);
async fn every_state_has_its_list_paged_and_filtered(db: TestDb) {
    let store = db.store().await;
    seven_devices(&store).await;
    let page = |f: DeviceFilter| {
        let store = store.clone();
        async move { store.baseline_device_page("b1", &f).await.unwrap() }
    };
    let h = |p: &Page<mprelay::store::BaselineDeviceRow>| hosts(p, |d| &d.hostname);

    // Each state's devices, error and unknown included.
    for (state, want) in [
        (State::Error, vec!["host-2", "host-5"]),
        (State::NonCompliant, vec!["host-1", "host-3"]),
        (State::Compliant, vec!["host-0", "host-4"]),
        (State::Unknown, vec!["host-6"]),
    ] {
        let p = page(filter(|f| f.state = Some(state))).await;
        assert_eq!(h(&p), want, "{state}");
        assert!(p.devices.iter().all(|d| d.state == state.as_str()));
        assert_eq!(p.next_after, None);
    }
    let errors = page(filter(|f| f.state = Some(State::Error))).await;
    assert!(errors.devices.iter().all(|d| d.n_error == 1));

    // Pages of two follow one another to the end, each device once.
    let mut seen = vec![];
    let mut after = None;
    loop {
        let p = page(filter(|f| {
            f.limit = 2;
            f.after = after.clone();
        }))
        .await;
        assert!(p.devices.len() <= 2);
        seen.extend(h(&p));
        match p.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..7).map(|i| format!("host-{i}")).collect::<Vec<_>>()
    );

    // Worst severity at least critical: the non-compliant ones (their failing setting is
    // critical); OS and search narrow further; search matches the OS and ignores case.
    let p = page(filter(|f| f.severity = Some(Severity::Critical))).await;
    assert_eq!(h(&p), ["host-1", "host-3"]);
    let p = page(filter(|f| f.os = "ubuntu".into())).await;
    assert_eq!(h(&p), ["host-1", "host-3", "host-5"]);
    let p = page(filter(|f| {
        f.os = "UBUNTU".into();
        f.state = Some(State::Error);
    }))
    .await;
    assert_eq!(h(&p), ["host-5"]);
    let p = page(filter(|f| f.search = "debian".into())).await;
    assert_eq!(h(&p), ["host-0", "host-2", "host-4", "host-6"]);
    let p = page(filter(|f| f.search = "HOST-3".into())).await;
    assert_eq!(h(&p), ["host-3"]);
    // LIKE's wildcards are searched for as text.
    let p = page(filter(|f| f.search = "host_".into())).await;
    assert!(p.devices.is_empty());

    // The site's device list: paged, by state for any baseline, searched by OS.
    let all = |f: DeviceFilter| {
        let store = store.clone();
        async move { store.device_page(&f).await.unwrap() }
    };
    let p = all(filter(|f| f.limit = 4)).await;
    assert_eq!(
        hosts(&p, |d| &d.hostname),
        ["host-0", "host-1", "host-2", "host-3"]
    );
    let rest = all(filter(|f| {
        f.limit = 4;
        f.after = p.next_after.clone();
    }))
    .await;
    assert_eq!(
        hosts(&rest, |d| &d.hostname),
        ["host-4", "host-5", "host-6"]
    );
    assert_eq!(rest.next_after, None);
    let p = all(filter(|f| f.state = Some(State::Error))).await;
    assert_eq!(hosts(&p, |d| &d.hostname), ["host-2", "host-5"]);
    let p = all(filter(|f| f.search = "ubuntu 24".into())).await;
    assert_eq!(hosts(&p, |d| &d.hostname), ["host-1", "host-3", "host-5"]);
}

// `mprelay report devices` on both backends: a state's list, pages by `--after`, and a bad
// value refused with exit status 64 naming the flag.
crate::both_backends!(report_devices_lists_pages_and_refuses_bad_flags);
async fn report_devices_lists_pages_and_refuses_bad_flags(db: TestDb) {
    use crate::compliance_cli::{run, stderr, stdout};
    seven_devices(&db.store().await).await;
    let dir = tempfile::tempdir().unwrap();
    let report = |extra: &[&str]| {
        let mut args = vec!["report", "devices", "--database", db.url.as_str()];
        args.extend_from_slice(extra);
        run(&args, dir.path())
    };
    let lines = |o: &std::process::Output| -> Vec<String> {
        stdout(o)
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("more:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .collect()
    };
    let o = report(&["--baseline", "b1", "--state", "error"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lines(&o), ["host-2", "host-5"], "{}", stdout(&o));
    assert!(stdout(&o).contains(" error "), "{}", stdout(&o));

    let mut seen = vec![];
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["--limit", "3"];
        if let Some(a) = &after {
            args.extend_from_slice(&["--after", a]);
        }
        let o = report(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        seen.extend(lines(&o));
        match stdout(&o)
            .lines()
            .find_map(|l| l.strip_prefix("more: --after "))
        {
            Some(a) => after = Some(a.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..7).map(|i| format!("host-{i}")).collect::<Vec<_>>()
    );

    let o = report(&["--search", "UBUNTU", "--state", "error"]);
    assert_eq!(lines(&o), ["host-5"], "{}", stdout(&o));

    for (args, says) in [
        (
            vec!["--state", "broken"],
            "--state: unknown compliance state \"broken\"",
        ),
        (
            vec!["--limit", "0"],
            "--limit: \"0\" is not a number from 1 to 1000",
        ),
        (
            vec!["--severity", "critical"],
            "--severity needs --baseline",
        ),
    ] {
        let o = report(&args);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_every_state_by_cursor() {
    use crate::compliance::{admin_client, get_json, system_on};
    let sys = system_on(None).await;
    seven_devices(&sys.store).await;
    let c = admin_client(&sys);
    let token = sys.lb.admin_token().unwrap();
    let get = |path: String| {
        let (c, token) = (&c, token.clone());
        async move { get_json(c, &path, Some(&token)).await }
    };
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["hostname"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, v) = get("/api/v1/compliance/baselines/b1/devices?state=error".into()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(names(&v), ["host-2", "host-5"]);
    assert_eq!(v["devices"][0]["state"], "error");
    assert!(v["next_after"].is_null());

    let mut seen = vec![];
    let mut path = "/api/v1/compliance/baselines/b1/devices?limit=3".to_string();
    loop {
        let (st, v) = get(path.clone()).await;
        assert_eq!(st, 200, "{v}");
        seen.extend(names(&v));
        match v["next_after"].as_str() {
            Some(a) => path = format!("/api/v1/compliance/baselines/b1/devices?limit=3&after={a}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..7).map(|i| format!("host-{i}")).collect::<Vec<_>>()
    );

    let (st, v) = get("/api/v1/devices?q=ubuntu&state=non_compliant".into()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(names(&v), ["host-1", "host-3"]);

    let (st, v) = get("/api/v1/compliance/noncompliant?baseline=b1&state=error".into()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "error");
    assert_eq!(names(&v), ["host-2", "host-5"]);
    assert_eq!(v["devices"][0]["settings"][0]["state"], "error");
    let (st, v) = get("/api/v1/compliance/noncompliant?baseline=b1".into()).await;
    assert_eq!(
        (st, names(&v)),
        (200, vec!["host-1".to_string(), "host-3".to_string()])
    );

    let (st, v) = get("/api/v1/compliance/baselines/b1/devices?severity=worst".into()).await;
    assert_eq!((st, v["code"].as_str()), (400, Some("malformed")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("severity"), "{v}");
    let (st, _) = get("/api/v1/compliance/baselines/nope/devices".into()).await;
    assert_eq!(st, 404);

    // The console's baseline page shows the devices in error with their error settings.
    let auth = format!("Bearer {token}");
    let r = c
        .request(
            http::Method::GET,
            "/console/baselines/b1",
            None,
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
    let page = String::from_utf8(r.body.to_vec()).unwrap();
    assert_eq!(r.status, 200);
    assert!(page.contains("<h2>Devices in error (2)</h2>"), "{page}");
    assert_eq!(
        page.matches("<section class=\"error-device\"").count(),
        2,
        "{page}"
    );
    assert!(page.contains("permission denied"), "{page}");
}

crate::both_backends!(error_devices_are_listed_with_their_error_settings);
async fn error_devices_are_listed_with_their_error_settings(db: TestDb) {
    let store = db.store().await;
    seven_devices(&store).await;
    let errors = store.failing_devices("b1", State::Error).await.unwrap();
    let hosts: Vec<_> = errors.iter().map(|d| d.hostname.as_str()).collect();
    assert_eq!(hosts, ["host-2", "host-5"]);
    for d in &errors {
        assert_eq!(d.settings.len(), 1, "{d:?}");
        assert_eq!(d.settings[0].state, "error");
        assert_eq!(d.settings[0].error, "permission denied");
    }
    let failing = store.noncompliant_devices("b1").await.unwrap();
    let hosts: Vec<_> = failing.iter().map(|d| d.hostname.as_str()).collect();
    assert_eq!(hosts, ["host-1", "host-3"]);

    // The same from the API's and the command line's non-compliant reports.
    use crate::compliance_cli::{run, stderr, stdout};
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &[
            "report",
            "noncompliant",
            "--database",
            &db.url,
            "--baseline",
            "b1",
            "--state",
            "error",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.starts_with("Devices in error for Baseline b1 (b1): 2\n"),
        "{text}"
    );
    assert!(text.contains("error: permission denied"), "{text}");
    assert!(text.contains("host-5"), "{text}");
    let o = run(
        &[
            "report",
            "noncompliant",
            "--database",
            &db.url,
            "--baseline",
            "b1",
            "--state",
            "compliant",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--state: \"compliant\" has no failing settings"),
        "{}",
        stderr(&o)
    );
}
