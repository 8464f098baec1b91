//! Collections and deployments end to end: a baseline deployed to a collection reaches exactly
//! its members through the relay, and stops reaching a device that left; a report-only
//! deployment never changes a file; counts per deployment follow the members; the upgrade
//! deploys every existing baseline to all-devices; bad collection files and deployments are
//! refused with exit status 64 and nothing changed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mprelay::agent::Agent;
use mprelay::policy::collection::{self, ALL_DEVICES};
use mprelay::store::Actor;
use mprelay::store::{DeployRequest, Store};

use crate::both_backends;
use crate::compliance::{
    BASELINE, admin_client, get_json, run_opts, system_on, tree, wait_for_policy,
};
use crate::compliance_cli::{run, stderr, stdout};
use crate::db::TestDb;
use crate::helpers::{TestSystem, wait_until};

const PARIS: &str = r#"
[[collection]]
id = "paris-prod"
revision = 1
name = "Production in Paris"
[collection.rules]
hostname = "par-*"
tags = { env = "prod" }
"#;

async fn agent_named(sys: &TestSystem, name: &str, hostname: &str) -> Agent {
    let mut opts = sys
        .lb
        .agent_options(sys.relay(), &sys.dir.path().join("agents").join(name))
        .unwrap();
    opts.hostname = hostname.into();
    Agent::open(opts).await.expect("agent enrolls")
}

async fn wait_for_devices(sys: &TestSystem, n: usize) {
    wait_until(Duration::from_secs(30), || async {
        sys.store.device_facts().await.unwrap().len() >= n
    })
    .await
    .expect("the site learns the devices");
}

/// The baselines the relay gives this agent now, after the site pushed what it holds.
async fn baselines_of(sys: &TestSystem, agent: &Agent) -> Vec<(String, bool)> {
    let v = sys.store.policy_version().await.unwrap();
    wait_for_policy(sys, v).await;
    let p = agent.fetch_policy(0, "").await.unwrap().expect("a policy");
    p.baselines
        .iter()
        .map(|b| {
            let remediate = b.deployment.as_ref().expect("a deployment").remediate;
            (b.id.clone(), remediate)
        })
        .collect()
}

fn sshd_config(root: &Path) -> (String, u32) {
    use std::os::unix::fs::PermissionsExt;
    let p = root.join("etc/ssh/sshd_config");
    (
        std::fs::read_to_string(&p).unwrap(),
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
    )
}

both_backends!(a_deployment_reaches_exactly_its_members_and_report_only_changes_nothing);
async fn a_deployment_reaches_exactly_its_members_and_report_only_changes_nothing(db: TestDb) {
    let sys = system_on(Some(&db.url)).await;
    mprelay::policy::import_texts(&sys.store, &[("t.toml".into(), BASELINE.into())])
        .await
        .unwrap();
    let paris = agent_named(&sys, "paris", "par-web-1").await;
    let london = agent_named(&sys, "london", "lon-web-1").await;
    wait_for_devices(&sys, 2).await;
    // Imported but deployed nowhere: no device gets it.
    assert!(baselines_of(&sys, &paris).await.is_empty());

    collection::import_collection_texts(
        &sys.store,
        &Actor::cli(),
        &[("c.toml".into(), PARIS.into())],
    )
    .await
    .unwrap();
    sys.store
        .deploy(
            &Actor::cli(),
            &DeployRequest {
                baseline_id: "t".into(),
                collection_id: "paris-prod".into(),
                remediate: false,
                interval_s: 4 * 3600,
            },
        )
        .await
        .unwrap();
    let paris_id = paris.device_id().hex();
    let prod: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
    for id in [paris_id.clone(), london.device_id().hex()] {
        sys.store
            .tag_device(&Actor::cli(), &id, &prod, &[])
            .await
            .unwrap();
    }
    assert_eq!(baselines_of(&sys, &paris).await, vec![("t".into(), false)]);
    assert!(baselines_of(&sys, &london).await.is_empty());

    // Report only: the violations are reported, no file is touched.
    let root = sys.dir.path().join("device-root");
    tree(&root);
    let before = sshd_config(&root);
    let round = paris.evaluate_round(&run_opts(&root)).await.unwrap();
    assert_eq!(round.remediated, 0);
    assert_eq!(round.interval, Duration::from_secs(4 * 3600));
    assert_eq!(sshd_config(&root), before);
    assert_eq!(
        std::fs::read_to_string(root.join("proc/sys/net/ipv4/ip_forward")).unwrap(),
        "1\n"
    );
    sys.wait_for_reports(1).await;
    let counts = collection::deployment_compliance(&sys.store, Some("paris-prod"))
        .await
        .unwrap();
    assert_eq!(counts.len(), 1);
    let c = &counts[0];
    assert_eq!(
        (
            c.targeted,
            c.compliant,
            c.non_compliant,
            c.error,
            c.not_reported
        ),
        (1, 0, 1, 0, 0)
    );
    // The admin API says the same, and pages the members.
    let api = admin_client(&sys);
    let token = sys.lb.admin_token().unwrap();
    let (st, body) = get_json(
        &api,
        "/api/v1/deployments?collection=paris-prod",
        Some(&token),
    )
    .await;
    assert_eq!(st, 200);
    let d = &body["deployments"][0];
    assert_eq!(
        (d["targeted"].as_u64(), d["non_compliant"].as_u64()),
        (Some(1), Some(1))
    );
    let (st, body) = get_json(&api, "/api/v1/collections/paris-prod/members", Some(&token)).await;
    assert_eq!(st, 200);
    assert_eq!(body["total"], 1);
    assert_eq!(body["members"][0]["device_id"], paris_id.as_str());
    let (st, _) = get_json(&api, "/api/v1/collections/nope/members", Some(&token)).await;
    assert_eq!(st, 404);

    // Moved out (the tag removed): the baseline no longer reaches it and it no longer counts,
    // while its report stays.
    sys.store
        .tag_device(&Actor::cli(), &paris_id, &BTreeMap::new(), &["env".into()])
        .await
        .unwrap();
    assert!(baselines_of(&sys, &paris).await.is_empty());
    let c = &collection::deployment_compliance(&sys.store, Some("paris-prod"))
        .await
        .unwrap()[0];
    assert_eq!((c.targeted, c.non_compliant), (0, 0));
    assert_eq!(sys.store.counts().await.unwrap().reports, 1);
    let history = sys.store.device_compliance(&paris_id).await.unwrap();
    assert!(history.is_some(), "the device's compliance stays");

    // A disabled deployment reaches nobody.
    sys.store
        .tag_device(&Actor::cli(), &paris_id, &prod, &[])
        .await
        .unwrap();
    assert_eq!(baselines_of(&sys, &paris).await.len(), 1);
    sys.store
        .set_deployment_enabled(&Actor::cli(), "t", "paris-prod", false)
        .await
        .unwrap();
    assert!(baselines_of(&sys, &paris).await.is_empty());
}

both_backends!(the_upgrade_deploys_every_existing_baseline_to_all_devices);
async fn the_upgrade_deploys_every_existing_baseline_to_all_devices(db: TestDb) {
    let store = db.store().await;
    mprelay::policy::import_texts(&store, &[("t.toml".into(), BASELINE.into())])
        .await
        .unwrap();
    store.close().await;
    // The database as the previous release left it: no collections, no deployments.
    for sql in [
        "DROP TABLE deployments",
        "DROP TABLE device_tags",
        "DROP TABLE collections",
        "DELETE FROM _sqlx_migrations WHERE version = 16",
    ] {
        db.exec(sql).await;
    }
    let store = Store::connect(&db.url).await.unwrap();
    let d = store.deployments().await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].baseline_id.as_str(), d[0].collection_id.as_str()),
        ("t", ALL_DEVICES)
    );
    assert!(d[0].remediate && d[0].enabled && d[0].interval_s == 0);
    let ids: Vec<String> = store
        .collections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, vec![ALL_DEVICES.to_string()]);
}

both_backends!(cycles_and_unknown_names_are_refused_and_change_nothing);
async fn cycles_and_unknown_names_are_refused_and_change_nothing(db: TestDb) {
    let store = db.store().await;
    let a =
        "[[collection]]\nid = \"a\"\nrevision = 1\nname = \"A\"\ninclude_collections = [\"b\"]\n";
    let b =
        "[[collection]]\nid = \"b\"\nrevision = 1\nname = \"B\"\ninclude_collections = [\"a\"]\n";
    let v = store.policy_version().await.unwrap();
    let e = collection::import_collection_texts(
        &store,
        &Actor::cli(),
        &[("a.toml".into(), a.into()), ("b.toml".into(), b.into())],
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("include each other"), "{e}");
    let e =
        collection::import_collection_texts(&store, &Actor::cli(), &[("a.toml".into(), a.into())])
            .await
            .unwrap_err()
            .to_string();
    assert!(
        e.contains("a.toml line 1") && e.contains("unknown collection \"b\""),
        "{e}"
    );
    assert_eq!(store.collections().await.unwrap().len(), 1);
    assert_eq!(store.policy_version().await.unwrap(), v);
    let e = store
        .deploy(
            &Actor::cli(),
            &DeployRequest {
                baseline_id: "nope".into(),
                collection_id: ALL_DEVICES.into(),
                remediate: false,
                interval_s: 0,
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no baseline \"nope\""), "{e}");
    assert!(store.deployments().await.unwrap().is_empty());
}

#[test]
fn the_commands_refuse_bad_input_with_exit_64_and_show_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("site.db").display());
    let db = ["--database", url.as_str()];
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).unwrap();
        name.to_string()
    };
    let with_db =
        |args: &[&str]| -> Vec<String> { args.iter().chain(&db).map(|s| s.to_string()).collect() };
    let go = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&a, dir.path())
    };
    let bad = write(
        "bad.toml",
        "[[collection]]\nid = \"x\"\nrevision = 1\nname = \"X\"\n[collection.rules]\ncolour = \"red\"\n",
    );
    let o = go(with_db(&["collection", "import", &bad]));
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("bad.toml line 6") && stderr(&o).contains("colour"),
        "{}",
        stderr(&o)
    );
    let selfish = write(
        "self.toml",
        "[[collection]]\nid = \"x\"\nrevision = 1\nname = \"X\"\ninclude_collections = [\"x\"]\n",
    );
    let o = go(with_db(&["collection", "import", &selfish]));
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot include itself"),
        "{}",
        stderr(&o)
    );

    let good = std::fs::canonicalize("examples/collections/paris-linux.toml").unwrap();
    let o = go(with_db(&["collection", "import", good.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("added collection paris-linux revision 1"),
        "{}",
        stdout(&o)
    );
    let o = go(with_db(&["collection", "list"]));
    assert!(o.status.success(), "{}", stderr(&o));
    for id in ["all-devices", "paris-linux", "web"] {
        assert!(stdout(&o).contains(id), "{}", stdout(&o));
    }
    let o = go(with_db(&["deploy", "ssh-hardening", "--to", "paris-linux"]));
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no baseline \"ssh-hardening\""),
        "{}",
        stderr(&o)
    );
    let base = std::fs::canonicalize("examples/baselines/ssh-hardening.toml").unwrap();
    assert!(
        go(with_db(&["baseline", "import", base.to_str().unwrap()]))
            .status
            .success()
    );
    let o = go(with_db(&["deploy", "ssh-hardening", "--to", "laptops"]));
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no collection \"laptops\""),
        "{}",
        stderr(&o)
    );
    let o = go(with_db(&[
        "deploy",
        "ssh-hardening",
        "--to",
        "paris-linux",
        "--interval",
        "4x",
    ]));
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    let o = go(with_db(&[
        "deploy",
        "ssh-hardening",
        "--to",
        "paris-linux",
        "--remediate",
        "--interval",
        "4h",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = go(with_db(&["deployment", "list"]));
    assert!(
        stdout(&o).contains("ssh-hardening@paris-linux"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("14400s"), "{}", stdout(&o));
    let o = go(with_db(&[
        "deployment",
        "disable",
        "ssh-hardening@paris-linux",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = go(with_db(&[
        "report",
        "compliance",
        "--collection",
        "paris-linux",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ssh-hardening@paris-linux"),
        "{}",
        stdout(&o)
    );
    let o = go(with_db(&[
        "device",
        "tag",
        "0123456789abcdef0123456789abcdef",
        "env=prod",
    ]));
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("no device"), "{}", stderr(&o));
}

both_backends!(collection_imports_and_deployment_changes_are_audited_with_who_and_values);
async fn collection_imports_and_deployment_changes_are_audited_with_who_and_values(db: TestDb) {
    let store = db.store().await;
    mprelay::policy::import_texts(&store, &[("t.toml".into(), BASELINE.into())])
        .await
        .unwrap();
    collection::import_collection_texts(
        &store,
        &Actor::api("alice"),
        &[("c.toml".into(), PARIS.into())],
    )
    .await
    .unwrap();
    let deploy = |collection: &str| DeployRequest {
        baseline_id: "t".into(),
        collection_id: collection.into(),
        remediate: false,
        interval_s: 3600,
    };
    store
        .deploy(&Actor::console("bob"), &deploy("paris-prod"))
        .await
        .unwrap();
    // Refused: no entry.
    assert!(
        store
            .deploy(&Actor::console("bob"), &deploy("nowhere"))
            .await
            .is_err()
    );
    store
        .set_deployment_enabled(&Actor::cli(), "t", "paris-prod", false)
        .await
        .unwrap();
    let entries = |object: &str| {
        let f = mprelay::store::AuditFilter {
            object: Some(object.into()),
            limit: 100,
            ..Default::default()
        };
        let store = store.clone();
        async move { store.audit_entries(&f).await.unwrap() }
    };

    let imports = entries("collection").await;
    assert_eq!(imports.len(), 1, "{imports:?}");
    assert_eq!(
        (imports[0].who.as_str(), imports[0].via.as_str()),
        ("alice", "api")
    );
    assert_eq!(imports[0].object_id, "paris-prod");
    assert_eq!(imports[0].after.as_ref().unwrap()["revision"], 1);

    // Newest first: the disable, then the deployment.
    let deployments = entries("deployment").await;
    assert_eq!(deployments.len(), 2, "{deployments:?}");
    let (disable, created) = (&deployments[0], &deployments[1]);
    assert_eq!(
        (
            created.who.as_str(),
            created.via.as_str(),
            created.action.as_str()
        ),
        ("bob", "console", "deploy")
    );
    assert_eq!(created.object_id, "t@paris-prod");
    assert!(created.before.is_none());
    let after = created.after.as_ref().unwrap();
    assert_eq!(
        (after["remediate"].clone(), after["interval_s"].clone()),
        (false.into(), 3600.into())
    );
    assert!(disable.who.starts_with("cli:"), "{disable:?}");
    assert_eq!(disable.action, "disable");
    assert_eq!(disable.before.as_ref().unwrap()["enabled"], true);
    assert_eq!(disable.after.as_ref().unwrap()["enabled"], false);
}
