//! Named administrators and roles on the admin API and console, and the audit log of each
//! change path, on both backends: a site upgraded from the single token keeps working (the
//! token becomes administrator `admin`, role `full`), each role against a change it may and may
//! not make, a disabled administrator refused, and every change's entry written with it.

use bytes::Bytes;
use http::Method;
use mprelay::net::HttpClient;
use mprelay::store::{Actor, AuditFilter, DELETE_AGED_CM_DATA, Role};
use ring::digest;
use serde_json::{Value, json};

use crate::both_backends;
use crate::compliance::{admin_client, get_json, system_on};
use crate::console::{Browser, csrf_of};
use crate::db::TestDb;

fn sha(token: &str) -> [u8; 32] {
    let mut h = [0u8; 32];
    h.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    h
}

async fn put(c: &HttpClient, path: &str, token: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let r = c
        .request(
            Method::PUT,
            path,
            Some(Bytes::from(body.to_string())),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
        )
        .await
        .unwrap();
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status.as_u16(), v)
}

async fn audit(sys: &crate::helpers::TestSystem, object: &str) -> Vec<mprelay::store::AuditEntry> {
    sys.store
        .audit_entries(&AuditFilter {
            object: Some(object.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

both_backends!(roles_are_checked_and_every_change_is_audited);
async fn roles_are_checked_and_every_change_is_audited(db: TestDb) {
    let sys = system_on(Some(&db.url)).await;
    let c = admin_client(&sys);
    let boot = sys.lb.admin_token().unwrap();

    // An upgraded single-token site: no administrator yet, and the old token still works.
    assert!(sys.store.administrators().await.unwrap().is_empty());
    let (st, _) = get_json(&c, "/api/v1/maintenance", Some(&boot)).await;
    assert_eq!(st, 200);
    let admins = sys.store.administrators().await.unwrap();
    assert_eq!(admins.len(), 1);
    assert_eq!(
        (admins[0].name.as_str(), admins[0].role),
        ("admin", Role::Full)
    );
    let a = audit(&sys, "administrator").await;
    assert_eq!((a[0].who.as_str(), a[0].action.as_str()), ("site", "add"));

    let cli = Actor::cli();
    for (name, role) in [
        ("reader", Role::Read),
        ("officer", Role::Compliance),
        ("boss", Role::Full),
    ] {
        assert!(
            sys.store
                .add_admin(&cli, name, role, &sha(&format!("{name}-token-0123456789")))
                .await
                .unwrap()
        );
    }
    assert!(
        !sys.store
            .add_admin(&cli, "reader", Role::Full, &sha("x"))
            .await
            .unwrap(),
        "names are unique"
    );

    // read and compliance may read the retention settings but not change them; nothing changes
    // and no audit entry is written.
    let before = sys
        .store
        .maintenance_task(DELETE_AGED_CM_DATA)
        .await
        .unwrap();
    for name in ["reader", "officer"] {
        let t = format!("{name}-token-0123456789");
        let (st, _) = get_json(&c, "/api/v1/maintenance", Some(&t)).await;
        assert_eq!(st, 200, "{name}");
        let (st, _) = get_json(&c, "/api/v1/audit", Some(&t)).await;
        assert_eq!(st, 200, "{name}");
        let (st, v) = put(
            &c,
            "/api/v1/maintenance",
            &t,
            json!({"delete_older_than_days": 30}),
        )
        .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (403, Some("forbidden")),
            "{name}: {v}"
        );
        assert!(v["message"].as_str().unwrap().contains("role full"), "{v}");
    }
    assert_eq!(
        sys.store
            .maintenance_task(DELETE_AGED_CM_DATA)
            .await
            .unwrap(),
        before
    );
    assert!(audit(&sys, "maintenance_task").await.is_empty());

    // full may: the change and its entry, who and the values before and after.
    let (st, v) = put(
        &c,
        "/api/v1/maintenance",
        "boss-token-0123456789",
        json!({"delete_older_than_days": 30}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let a = audit(&sys, "maintenance_task").await;
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].who.as_str(), a[0].via.as_str()), ("boss", "api"));
    assert_eq!(a[0].object_id, DELETE_AGED_CM_DATA);
    assert_eq!(
        a[0].before.as_ref().unwrap()["delete_older_than_days"],
        json!(before.delete_older_than_days)
    );
    assert_eq!(
        a[0].after.as_ref().unwrap()["delete_older_than_days"],
        json!(30)
    );
    let (st, v) = get_json(
        &c,
        "/api/v1/audit?object=maintenance_task",
        Some("reader-token-0123456789"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["entries"][0]["who"], "boss", "{v}");

    // A disabled administrator and a forged token are refused.
    assert_eq!(
        sys.store.disable_admin(&cli, "reader").await.unwrap(),
        Some(true)
    );
    let (st, _) = get_json(&c, "/api/v1/maintenance", Some("reader-token-0123456789")).await;
    assert_eq!(st, 401);
    let (st, _) = get_json(&c, "/api/v1/maintenance", Some("forged-token-0123456789")).await;
    assert_eq!(st, 401);
    // A rotated token: the old one is refused, the new one works.
    assert!(
        sys.store
            .rotate_admin(&cli, "officer", &sha("officer-new-0123456789"))
            .await
            .unwrap()
    );
    let (st, _) = get_json(&c, "/api/v1/maintenance", Some("officer-token-0123456789")).await;
    assert_eq!(st, 401);
    let (st, _) = get_json(&c, "/api/v1/maintenance", Some("officer-new-0123456789")).await;
    assert_eq!(st, 200);
    let who: Vec<(String, String)> = audit(&sys, "administrator")
        .await
        .into_iter()
        .map(|e| (e.who, e.action))
        .collect();
    assert!(
        who.contains(&(cli.who.clone(), "disable".into())),
        "{who:?}"
    );
    assert!(who.contains(&(cli.who.clone(), "rotate".into())), "{who:?}");

    // The console: a compliance administrator's retention form is refused; full's is saved and
    // audited as the console.
    let (status, _) = retention_form_as(&sys, "officer-new-0123456789").await;
    assert_eq!(status, 403);
    assert_eq!(audit(&sys, "maintenance_task").await.len(), 1);
    let (status, b) = retention_form_as(&sys, "boss-token-0123456789").await;
    assert_eq!(status, 303);
    let a = audit(&sys, "maintenance_task").await;
    assert_eq!((a[0].who.as_str(), a[0].via.as_str()), ("boss", "console"));
    assert_eq!(
        a[0].after.as_ref().unwrap()["delete_older_than_days"],
        json!(40)
    );
    // The console's audit page shows the entry, with its values, and filters by who.
    let (_, p) = b.page("/console/audit?object=maintenance_task").await;
    assert!(p.contains("<td>boss</td><td>console</td>"), "{p}");
    assert!(p.contains("delete_older_than_days&quot;:40"), "{p}");
    let (_, p) = b.page("/console/audit?who=nobody").await;
    assert!(
        p.contains("No entry matches.") && !p.contains("<td>boss</td>"),
        "{p}"
    );
    // Disabling boss ends its console session.
    sys.store.disable_admin(&cli, "boss").await.unwrap();
    let r = b.send(Method::GET, "/console", None).await;
    assert_eq!(r.status, 303);
}

both_backends!(the_cli_manages_administrators_and_its_changes_are_audited);
async fn the_cli_manages_administrators_and_its_changes_are_audited(db: TestDb) {
    use crate::compliance_cli::{run, stderr, stdout};
    // The schema exists once a site server (or any writing command) opened the database.
    let store = mprelay::store::Store::connect(&db.url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cmd = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--database", db.url.as_str()]);
        run(&a, dir.path())
    };
    let o = cmd(&["admin", "add", "carol", "--role", "compliance"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let token = out.lines().last().unwrap().trim().to_string();
    assert_eq!(token.len(), 64, "{out}");
    // Only its hash is stored.
    let creds = store.admin_credentials().await.unwrap();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0].token_sha256, sha(&token).to_vec());

    let o = cmd(&["admin", "add", "carol", "--role", "full"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("exists already"), "{}", stderr(&o));
    let o = cmd(&["admin", "add", "dave", "--role", "owner"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("unknown role"), "{}", stderr(&o));

    let o = cmd(&["admin", "rotate", "carol"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let new = stdout(&o).lines().last().unwrap().trim().to_string();
    assert_ne!(new, token);
    assert_eq!(
        store.admin_credentials().await.unwrap()[0].token_sha256,
        sha(&new).to_vec()
    );
    let o = cmd(&["admin", "disable", "carol"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cmd(&["admin", "list"]);
    let out = stdout(&o);
    assert!(out.contains("carol") && out.contains("compliance"), "{out}");
    assert!(!out.contains(&new), "the token is never listed");

    let o = cmd(&["site", "set", "audit-retention-days", "30"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = cmd(&["audit", "list", "--object", "administrator"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for action in ["add", "rotate", "disable"] {
        assert!(out.contains(action), "{out}");
    }
    let entries = store
        .audit_entries(&AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 4, "{entries:?}");
    assert!(
        entries
            .iter()
            .all(|e| e.via == "cli" && e.who.starts_with("cli:"))
    );
    assert_eq!(entries[0].object, "site_setting");
    assert_eq!(entries[0].after, Some(json!("30")));
    let o = cmd(&["audit", "list", "--since", "2020-13-01"]);
    assert_eq!(o.status.code(), Some(64));
}

/// Logs in to the console with `token` and saves the retention form with a 40-day age: the
/// answer's status, and the browser (still logged in) for what follows.
async fn retention_form_as(
    sys: &crate::helpers::TestSystem,
    token: &str,
) -> (http::StatusCode, Browser) {
    let mut b = Browser {
        c: admin_client(sys),
        cookie: None,
    };
    b.login(token).await;
    let (_, p) = b.page("/console/retention").await;
    let form = format!(
        "csrf={}&enabled=on&delete_older_than_days=40&days_of_week=sun&window=01%3A30-03%3A00&time_zone=UTC",
        csrf_of(&p)
    );
    let r = b
        .send(Method::POST, "/console/retention", Some(&form))
        .await;
    (r.status, b)
}
