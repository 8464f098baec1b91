//! The README's test command, `./test`: what the tests need and this machine lacks is named,
//! with how to get it, and the command fails rather than letting the tests run without it. Only
//! paths that change nothing on the machine are taken here: a PostgreSQL cluster that does not
//! exist, and a PostgreSQL server nobody answers for.

use std::process::{Command, Output};

use crate::procs::{free_port, text};

fn setup_only(env: &[(&str, String)]) -> Output {
    let mut c = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/test"));
    c.arg("--setup-only")
        .env_remove("MPRELAY_TEST_POSTGRES")
        .env_remove("TEST_PG_CLUSTER")
        .env_remove("TEST_PG_PORT");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("./test runs")
}

#[test]
fn a_missing_postgresql_cluster_is_named_with_how_to_make_it_and_fails_the_command() {
    let port = free_port();
    let o = setup_only(&[
        ("TEST_PG_CLUSTER", "mprelay-absent".into()),
        ("TEST_PG_PORT", port.to_string()),
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("a PostgreSQL cluster mprelay-absent")
            && err.contains(&format!("pg_createcluster --port {port}")),
        "{err}"
    );
}

#[test]
fn a_postgresql_server_that_does_not_answer_fails_the_command() {
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let o = setup_only(&[("MPRELAY_TEST_POSTGRES", url.clone())]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("PostgreSQL at MPRELAY_TEST_POSTGRES={url}")),
        "{err}"
    );
    assert!(!text(&o.stdout).contains("set up"), "{}", text(&o.stdout));
}
