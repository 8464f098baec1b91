//! The `mprelay` binary as an operator meets it: exit statuses, error messages, and the
//! example configuration files driving real relay, site server and agent processes.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use mprelay::store::{QuarantineRow, WriteBatch};

use crate::db::{Backend, TestDb};
use crate::helpers::wait_until;

fn mprelay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mprelay"));
    c.env_remove("MPRELAY_LOG").env("RUST_LOG", "warn");
    c
}

fn run(args: &[&str], dir: &Path) -> Output {
    mprelay()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("mprelay runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A directory laid out like the examples expect: certs/ and examples/ side by side.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["certs", "init", "--dir", "certs"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::create_dir(dir.path().join("examples")).unwrap();
    for f in ["relay.toml", "site.toml", "agent.toml", "report.json"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(f),
            dir.path().join("examples").join(f),
        )
        .unwrap();
    }
    dir
}

#[test]
fn certs_init_writes_private_keys_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &[
            "certs",
            "init",
            "--dir",
            "c",
            "--hosts",
            "relay.example,10.0.0.5",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "ca.key",
        "relay.key",
        "site-client.key",
        "master-1.secret",
        "enrollment.secret",
        "admin.token",
    ] {
        let mode = std::fs::metadata(dir.path().join("c").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let o = run(&["certs", "init", "--dir", "c"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
}

#[test]
fn bad_usage_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["frobnicate"], dir.path());
    assert_eq!(o.status.code(), Some(64));
    let o = run(&["demo", "--devices", "0"], dir.path());
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("--devices"), "{}", stderr(&o));
}

#[test]
fn relay_with_a_malformed_config_names_file_and_line() {
    let dir = workspace();
    let cfg = dir.path().join("examples/relay.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max_records = 2000000", "max_records = many");
    std::fs::write(&cfg, text).unwrap();
    let o = run(&["relay", "--config", "examples/relay.toml"], dir.path());
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("relay.toml") && e.contains("line"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "one sentence: {e}");
}

#[test]
fn relay_with_an_unknown_key_names_it() {
    let dir = workspace();
    let cfg = dir.path().join("examples/relay.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("dedup_window_hours", "dedup_windw_hours");
    std::fs::write(&cfg, text).unwrap();
    let o = run(&["relay", "--config", "examples/relay.toml"], dir.path());
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("dedup_windw_hours"), "{}", stderr(&o));
}

#[test]
fn relay_with_a_missing_certificate_names_the_file() {
    let dir = workspace();
    std::fs::remove_file(dir.path().join("certs/relay.pem")).unwrap();
    let o = run(&["relay", "--config", "examples/relay.toml"], dir.path());
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("relay.pem"), "{}", stderr(&o));
}

#[test]
fn relay_with_an_unreadable_key_names_the_file() {
    let dir = workspace();
    std::fs::write(dir.path().join("certs/relay.key"), "garbage").unwrap();
    let o = run(&["relay", "--config", "examples/relay.toml"], dir.path());
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("relay.key"), "{}", stderr(&o));
}

#[test]
fn relay_with_a_spool_it_cannot_open_exits_1() {
    let dir = workspace();
    std::fs::write(dir.path().join("spool.db"), vec![0x5au8; 16384]).unwrap();
    let mut c = mprelay();
    c.args(["relay", "--config", "examples/relay.toml"])
        .current_dir(dir.path())
        .env("MPRELAY_RELAY__AGENT_LISTEN", "127.0.0.1:0")
        .env("MPRELAY_RELAY__SITE_LISTEN", "127.0.0.1:0");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("spool.db"), "{}", stderr(&o));
}

#[test]
fn demo_stores_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let o = mprelay()
        .args(["demo", "--devices", "6", "--dir", "kept"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let last = out.trim().lines().last().unwrap();
    assert!(
        last.starts_with("stored 12 reports from 6 devices in "),
        "{out}"
    );
    assert!(out.contains("SSH hardening"), "{out}");
    for f in ["site.db", "spool.db", "certs/ca.pem"] {
        assert!(dir.path().join("kept").join(f).exists(), "{f}");
    }
    // The database it kept answers the report command.
    let o = run(
        &["report", "counts", "--database", "sqlite://kept/site.db"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("reports 12"));
}

/// `demo --serve` leaves the system running: its console answers with the demo's data to the
/// token it names, and Ctrl-C (SIGINT) stops everything with exit status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_keeps_the_console_up_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Killed(
        mprelay()
            .args(["demo", "--devices", "3", "--dir", "kept", "--serve"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("serving until interrupted");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    })
    .await
    .unwrap();
    let console = lines
        .iter()
        .find_map(|l| l.strip_prefix("console: "))
        .unwrap_or_else(|| panic!("no console line: {lines:?}"));
    let url = console.split_whitespace().next().unwrap();
    assert!(console.contains("kept/certs"), "{console}");
    let base = url.strip_suffix("/console").unwrap();

    let paths = mprelay::pki::PkiPaths::new(dir.path().join("kept/certs"));
    let roots = mprelay::pki::load_certs(&paths.ca_cert()).unwrap();
    let tls = mprelay::pki::client_config(&roots, None, &[b"http/1.1"]).unwrap();
    let c = mprelay::net::HttpClient::new(base, std::sync::Arc::new(tls)).unwrap();
    let token = std::fs::read_to_string(paths.admin_token()).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let page = c
        .request(
            http::Method::GET,
            "/console",
            None,
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("SSH hardening"), "{html}");
    // Without the token the console asks for a login instead.
    let anon = c.get("/console").await.unwrap();
    assert_ne!(anon.status, 200);

    let sent = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server process and returns it with the first stdout line it printed.
fn spawn_server(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> (Killed, String) {
    let mut c = mprelay();
    c.args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Killed(child), line)
}

#[tokio::test]
async fn example_configs_run_relay_site_and_agent_as_processes() {
    let dir = workspace();
    let (_relay, line) = spawn_server(
        &["relay", "--config", "examples/relay.toml"],
        dir.path(),
        &[
            ("MPRELAY_RELAY__AGENT_LISTEN", "127.0.0.1:0"),
            ("MPRELAY_RELAY__SITE_LISTEN", "127.0.0.1:0"),
        ],
    );
    // "relay relay-1 listening: agents on 127.0.0.1:P, site servers on 127.0.0.1:Q"
    let addrs: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.starts_with("127.0.0.1:"))
        .map(|w| w.trim_end_matches(','))
        .collect();
    assert_eq!(addrs.len(), 2, "{line}");
    let site_cfg = std::fs::read_to_string(dir.path().join("examples/site.toml"))
        .unwrap()
        .replace(
            "https://localhost:8444",
            &format!("https://localhost:{}", &addrs[1][10..]),
        );
    std::fs::write(dir.path().join("examples/site.toml"), site_cfg).unwrap();
    let (_site, _) = spawn_server(
        &["site", "--config", "examples/site.toml"],
        dir.path(),
        &[("MPRELAY_SITE__ADMIN__LISTEN", "127.0.0.1:0")],
    );

    let agent_url = format!("https://localhost:{}", &addrs[0][10..]);
    let o = mprelay()
        .args([
            "agent",
            "submit",
            "--config",
            "examples/agent.toml",
            "--report",
            "examples/report.json",
        ])
        .current_dir(dir.path())
        .env("MPRELAY_AGENT__RELAY_URL", &agent_url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("accepted 1"));
    let state = dir.path().join("agent-state/agent-state.json");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let db = format!("sqlite://{}", dir.path().join("site.db").display());
    wait_until(Duration::from_secs(30), || async {
        let o = run(&["report", "counts", "--database", &db], dir.path());
        String::from_utf8_lossy(&o.stdout).contains("reports 1\n")
    })
    .await
    .expect("the report reaches the site database");
    let o = run(
        &["report", "compliance", "--config", "examples/site.toml"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ssh-hardening"));
}

#[test]
fn processes_opening_a_new_site_database_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("new.db").display());
    let children: Vec<_> = (0..8)
        .map(|_| {
            mprelay()
                .args([
                    "maintenance",
                    "set",
                    "--database",
                    &db,
                    "--delete-older-than-days",
                    "30",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = run(&["maintenance", "show", "--database", &db], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("delete older than days: 30"));
}

/// Commands that only read make nothing: a mistyped path is an error, not a new empty site
/// database reported as having no devices.
#[test]
fn read_only_commands_refuse_a_database_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("sit.db");
    let db = format!("sqlite://{}", typo.display());
    for args in [
        &["report", "compliance", "--database", &db][..],
        &["report", "counts", "--database", &db],
        &["maintenance", "show", "--database", &db],
    ] {
        let o = run(args, dir.path());
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("opening the site database") && stderr(&o).contains("sit.db"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}

/// A read-only command started before its PostgreSQL server accepts connections (a site
/// restarted together with its database) waits for the server, says so once and why, and then
/// answers from the database instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_wait_for_a_postgres_server_that_is_not_up_yet() {
    use tokio::io::AsyncBufReadExt;

    let db = TestDb::create(Backend::Postgres, "wait_for_server").await;
    let store = db.store().await;
    let q = QuarantineRow {
        seq: 1,
        message_id: String::new(),
        received_ms: mprelay::clock::now_ms(),
        reason: "does not decode".into(),
        payload: vec![0xff],
    };
    let b = WriteBatch {
        relay_id: "relay-a".into(),
        through_seq: 1,
        last_seq: 1,
        quarantined: vec![q],
        ..Default::default()
    };
    assert_eq!(store.write_batch(&b).await.unwrap().quarantined, 1);
    store.close().await;

    // The command is pointed at a loopback port where nothing listens yet.
    let server = url::Url::parse(&db.url).unwrap();
    let server_addr = format!(
        "{}:{}",
        server.host_str().unwrap(),
        server.port().unwrap_or(5432)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut url = server.clone();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(port)).unwrap();
    let mut child = tokio::process::Command::from(mprelay())
        .args(["report", "counts", "--database", url.as_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let limit = tokio::time::Instant::now() + Duration::from_secs(60);

    let mut before = Vec::new();
    let waiting = tokio::time::timeout_at(limit, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let found = line.contains("waiting for PostgreSQL");
            before.push(line);
            if found {
                return true;
            }
        }
        false
    })
    .await;
    match waiting {
        Ok(true) => {}
        Ok(false) => panic!(
            "the command ended without waiting for PostgreSQL ({:?}):\n{}",
            child.wait().await,
            before.join("\n")
        ),
        Err(_) => panic!(
            "no \"waiting for PostgreSQL\" within 60 s:\n{}",
            before.join("\n")
        ),
    }
    let said = before.last().unwrap();
    assert!(
        said.contains(&format!("127.0.0.1:{port}")) && said.contains("refused"),
        "names the server and why it waits: {said}"
    );

    // Only now does a server answer at that port: a forwarder to the real one.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(forward(listener, server_addr));
    let rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });
    let out = tokio::time::timeout_at(limit, child.wait_with_output())
        .await
        .expect("the command did not finish within 60 s")
        .unwrap();
    let stderr = [before, rest.await.unwrap()].concat().join("\n");
    assert!(out.status.success(), "{:?}:\n{stderr}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("reports 0\n") && stdout.contains("quarantined records 1"),
        "{stdout}"
    );
    assert_eq!(
        stderr.matches("waiting for PostgreSQL").count(),
        1,
        "said once: {stderr}"
    );
}

/// Accepts connections on `listener` and copies each both ways to and from `to`, for as long
/// as the test's runtime runs.
async fn forward(listener: tokio::net::TcpListener, to: String) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let to = to.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
