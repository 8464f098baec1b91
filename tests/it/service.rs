//! The relay run as `examples/systemd/mprelay-relay.service` runs it: the unit's `ExecStart`
//! and `Environment`, as an unprivileged user without new privileges (the unit's `User=` and
//! `NoNewPrivileges=`, by `setpriv` when the tests run as root) and with everything but its
//! state directory read-only (`ProtectSystem=strict`, by a mount namespace of its own). A reload (`mprelay relay reload`, or the SIGHUP the unit's `ExecReload` sends) takes a
//! renewed certificate and a new master secret while open connections and spooled reports stay,
//! and a configuration that does not load changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use mprelay::pki;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::helpers::{RawDevice, describe};
use crate::hostile_conn::{read_h1_response, tls};
use crate::procs::{RelayConf, Workspace, run, text};

/// The user the relay is switched to when the tests run as root (nobody).
const UNPRIVILEGED: u32 = 65534;

/// What the test takes from a unit file.
struct Unit {
    exec_start: Vec<String>,
    environment: Vec<(String, String)>,
    no_new_privileges: bool,
    protect_system_strict: bool,
    state_directory: Option<String>,
}

impl Unit {
    fn read(name: &str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/systemd")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let value = |key: &'static str| {
            text.lines()
                .filter_map(move |l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        Self {
            exec_start: value("ExecStart")
                .next()
                .expect("ExecStart")
                .split_whitespace()
                .map(String::from)
                .collect(),
            environment: value("Environment")
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("Environment=KEY=VALUE");
                    (k.to_string(), v.to_string())
                })
                .collect(),
            no_new_privileges: value("NoNewPrivileges").any(|v| v == "yes"),
            protect_system_strict: value("ProtectSystem").any(|v| v == "strict"),
            state_directory: value("StateDirectory").next().map(String::from),
        }
    }
}

/// A relay started from its unit, with its stderr lines as they come.
struct UnitRelay {
    child: Child,
    log: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl UnitRelay {
    /// Waits for a log line containing `what` (fails the test after 30 s).
    async fn wait_for_log(&mut self, what: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = self.log.recv().await {
                self.seen.push(line.clone());
                if line.contains(what) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "the relay never logged {what:?}; it logged:\n{}",
                self.seen.join("\n")
            ),
        }
    }
}

fn is_root() -> bool {
    rustix::process::getuid().is_root()
}

/// Gives `dir` and everything in it to `uid`, as an operator gives the relay its files.
fn chown_tree(dir: &Path, uid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
    if dir.is_dir() {
        for e in std::fs::read_dir(dir).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// Starts the relay of `ws` the way the unit does: its command line and environment with the
/// unit's `/etc/mprelay/relay/` mapped to the workspace and its state directory to `state`.
async fn start_as_the_unit_does(ws: &Workspace, state: &Path) -> UnitRelay {
    let unit = Unit::read("mprelay-relay.service");
    assert!(
        unit.state_directory.as_deref() == Some("mprelay-relay"),
        "the unit has a state directory"
    );
    let etc = format!("{}/", ws.dir.path().display());
    let map = |s: &str| {
        s.replace("/etc/mprelay/relay/", &etc)
            .replace("/var/lib/mprelay-relay", &state.display().to_string())
    };
    assert!(
        unit.exec_start[0].ends_with("/mprelay"),
        "{:?}",
        unit.exec_start
    );
    let mut argv: Vec<String> = vec![env!("CARGO_BIN_EXE_mprelay").into()];
    argv.extend(unit.exec_start[1..].iter().map(|a| map(a)));

    let mut c = if is_root() {
        // StateDirectory= makes the directory and gives it to the unit's user; the operator
        // gives it the configuration and keys.
        chown_tree(ws.dir.path(), UNPRIVILEGED);
        // ProtectSystem=strict with only the StateDirectory writable: in a mount namespace of
        // its own, the state directory made a mount of its own, then the root read-only. Each
        // step execs the next, so the relay keeps the child's pid.
        assert!(unit.protect_system_strict, "the unit protects the system");
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" "$0" && mount -o remount,bind,ro / && exec "$@""#)
            .arg(state)
            .arg("setpriv")
            .args([
                format!("--reuid={UNPRIVILEGED}"),
                format!("--regid={UNPRIVILEGED}"),
                "--clear-groups".into(),
            ]);
        if unit.no_new_privileges {
            c.arg("--no-new-privs");
        }
        c.arg("--").args(&argv);
        c
    } else {
        // Already unprivileged: run as this user.
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    for (k, _) in std::env::vars() {
        if k.starts_with("MPRELAY_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    for (k, v) in &unit.environment {
        c.env(k, map(v));
    }
    c.current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().expect("start the relay");
    let (tx, log) = mpsc::unbounded_channel();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            let _ = tx.send(line);
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await;
    let mut relay = UnitRelay {
        child,
        log,
        seen: Vec::new(),
    };
    match first {
        Ok(Ok(Some(line))) if line.contains("listening") => {}
        other => {
            let _ = relay.child.start_kill();
            while let Ok(l) = relay.log.try_recv() {
                relay.seen.push(l);
            }
            panic!(
                "the relay did not start ({other:?}):\n{}",
                relay.seen.join("\n")
            );
        }
    }
    // Kept reading: the relay may print again, and a closed pipe would fail its write.
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    relay
}

/// The workspace's relay configuration, master secrets of `epochs`, the spool in `state`.
fn write_config(ws: &Workspace, state: &Path, epochs: Vec<u32>) {
    ws.write_relay_config(&RelayConf {
        epochs,
        ..RelayConf::default()
    });
    let path = ws.path("relay.toml");
    let toml = std::fs::read_to_string(&path).unwrap().replace(
        "path = \"spool.db\"",
        &format!("path = \"{}\"", state.join("spool.db").display()),
    );
    std::fs::write(&path, toml).unwrap();
}

/// The certificate the relay's agent listener presents to a new connection.
async fn served_certificate(ws: &Workspace) -> Vec<u8> {
    let addr = format!("127.0.0.1:{}", ws.agent_port).parse().unwrap();
    let s = tls(addr, &ws.certs().ca_cert(), &[b"http/1.1"], None)
        .await
        .unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn certificate_in(path: &Path) -> Vec<u8> {
    pki::load_certs(path).unwrap()[0].to_vec()
}

async fn pending_records(ws: &Workspace) -> u64 {
    ws.relay_metric(&ws.site_client(), "mprelay_relay_spool_pending_records")
        .await
        .expect("the relay's metrics")
}

#[tokio::test]
async fn the_relay_runs_as_its_unit_does_and_a_reload_renews_its_certificate_and_keeps_serving() {
    let ws = Workspace::new().await;
    // StateDirectory=: made for the relay, 0700; relay.toml keeps the spool in it.
    let state: PathBuf = ws.path("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    write_config(&ws, &state, vec![1]);
    let mut relay = start_as_the_unit_does(&ws, &state).await;
    let pid = relay.child.id().unwrap();

    // Where the unit says, as whom the unit says.
    let pid_file = state.join("spool.db.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    assert!(state.join("spool.db").exists() && !ws.path("spool.db").exists());
    if is_root() {
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let root = mounts.lines().find(|l| l.split(' ').nth(4) == Some("/"));
        assert!(root.is_some_and(|l| l.split(' ').nth(5).is_some_and(|o| o.starts_with("ro"))));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace()
                .skip(1)
                .all(|u| u == UNPRIVILEGED.to_string()),
            "{uid}"
        );
        assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    }

    let client = ws.agent_client();
    let device = RawDevice::enroll(&client, &ws.enrollment_secret()).await;
    assert_eq!(device.epoch.get(), 1);
    let (_, body) = device.sealed_report(1);
    let resp = client
        .post("/v1/submissions", Bytes::from(body))
        .await
        .unwrap();
    assert_eq!(resp.status, 202, "{}", describe(&resp));
    let mut held = tls(
        format!("127.0.0.1:{}", ws.agent_port).parse().unwrap(),
        &ws.certs().ca_cert(),
        &[b"http/1.1"],
        None,
    )
    .await
    .unwrap();
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    held.write_all(healthz).await.unwrap();
    assert_eq!(read_h1_response(&mut held).await.map(|r| r.0), Some(200));
    let old_cert = served_certificate(&ws).await;
    assert!(old_cert == certificate_in(&ws.certs().relay_cert()));
    let pending = pending_records(&ws).await;

    // The operator renews the certificate in place and adds master secret epoch 2.
    let o = run(
        ws.dir.path(),
        &[
            "certs",
            "issue",
            "--role",
            "relay",
            "--name",
            "relay-renewed",
        ],
        &[],
    )
    .await;
    assert!(o.status.success(), "certs issue: {}", text(&o.stderr));
    let o = run(ws.dir.path(), &["certs", "new-epoch", "--epoch", "2"], &[]).await;
    assert!(o.status.success(), "certs new-epoch: {}", text(&o.stderr));
    let certs = ws.certs();
    std::fs::rename(ws.path("certs/relay-renewed.pem"), certs.relay_cert()).unwrap();
    std::fs::rename(ws.path("certs/relay-renewed.key"), certs.relay_key()).unwrap();
    write_config(&ws, &state, vec![1, 2]);
    if is_root() {
        chown_tree(ws.dir.path(), UNPRIVILEGED);
    }
    let new_cert = certificate_in(&certs.relay_cert());
    assert!(new_cert != old_cert);

    let relay_toml = ws.path("relay.toml");
    let o = run(
        ws.dir.path(),
        &["relay", "reload", "--config", relay_toml.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(o.status.success(), "relay reload: {}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("process {pid}")),
        "{}",
        text(&o.stdout)
    );
    relay
        .wait_for_log("reloaded certificates, CRLs and secrets")
        .await;

    // The open connection and the spool are as they were; new connections get the new
    // certificate, new enrollments the new epoch, and devices on the old epoch are still served.
    held.write_all(healthz).await.unwrap();
    assert_eq!(read_h1_response(&mut held).await.map(|r| r.0), Some(200));
    assert_eq!(pending_records(&ws).await, pending);
    assert!(
        served_certificate(&ws).await == new_cert,
        "a new connection after the reload gets the renewed certificate"
    );
    let (_, body) = device.sealed_report(2);
    let resp = client
        .post("/v1/submissions", Bytes::from(body))
        .await
        .unwrap();
    assert_eq!(resp.status, 202, "{}", describe(&resp));
    let fresh = RawDevice::enroll(&ws.agent_client(), &ws.enrollment_secret()).await;
    assert_eq!(fresh.epoch.get(), 2);
    assert_eq!(pending_records(&ws).await, pending + 2);

    // A configuration that does not load: `relay reload` says why and signals nothing; a SIGHUP
    // regardless is logged and changes nothing.
    std::fs::write(certs.relay_key(), "not a key\n").unwrap();
    let o = run(
        ws.dir.path(),
        &["relay", "reload", "--config", relay_toml.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(64), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("relay.key"), "{}", text(&o.stderr));
    let hup = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(hup, rustix::process::Signal::HUP).unwrap();
    let line = relay.wait_for_log("reload failed").await;
    assert!(line.contains("relay.key"), "{line}");
    assert!(
        served_certificate(&ws).await == new_cert,
        "a failed reload keeps the certificate in use"
    );
    let client = ws.agent_client();
    let (_, body) = fresh.sealed_report(3);
    let resp = client
        .post("/v1/submissions", Bytes::from(body))
        .await
        .unwrap();
    assert_eq!(resp.status, 202, "{}", describe(&resp));

    // SIGTERM, as `systemctl stop` sends: a clean exit that takes its pid file along.
    rustix::process::kill_process(hup, rustix::process::Signal::TERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), relay.child.wait())
        .await
        .expect("the relay stops within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!pid_file.exists());
}

#[tokio::test]
async fn version_names_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["--version"], &[]).await;
    assert!(o.status.success());
    assert_eq!(
        text(&o.stdout).trim(),
        format!("mprelay {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The agent listener's TLS with client certificates required from the agent CA, revoked by
/// `crls`.
fn agent_tls_requiring_certificates(
    paths: &pki::PkiPaths,
    crls: &[PathBuf],
) -> std::sync::Arc<rustls::ServerConfig> {
    std::sync::Arc::new(
        pki::server_config(
            pki::load_certs(&paths.relay_cert()).unwrap(),
            pki::load_private_key(&paths.relay_key()).unwrap(),
            pki::ClientAuth::Required {
                roots: pki::load_certs(&paths.agent_ca_cert()).unwrap(),
                crls: pki::load_crls(crls).unwrap(),
            },
        )
        .unwrap(),
    )
}

/// A request over a new connection with `identity`: the status, or the error that ended it.
async fn healthz_as(
    sys: &crate::helpers::TestSystem,
    identity: Option<&Path>,
) -> Result<u16, String> {
    let id = identity.map(|cert| {
        (
            pki::load_certs(cert).unwrap(),
            pki::load_private_key(&cert.with_extension("key")).unwrap(),
        )
    });
    let mut s = tls(
        sys.relay().agent_addr,
        &sys.lb.paths.ca_cert(),
        &[b"http/1.1"],
        id,
    )
    .await
    .map_err(|e| e.to_string())?;
    healthz_on(&mut s).await
}

async fn healthz_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<u16, String> {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    match tokio::io::AsyncReadExt::read(s, &mut buf).await {
        Ok(n) if n > 12 => Ok(String::from_utf8_lossy(&buf[9..12]).parse().unwrap_or(0)),
        Ok(_) => Err("closed".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Client certificates switched on and a certificate revoked by reloads alone: new connections
/// are held to the new rules at once, the connection already open stays.
#[tokio::test]
async fn a_reload_takes_client_certificate_rules_and_a_new_crl_for_new_connections() {
    let sys = crate::helpers::TestSystem::relay_only(|_| {}).await;
    let paths = sys.lb.paths.clone();
    let (cert, _) =
        pki::issue_client(&paths, pki::ClientRole::Agent, "agent-1", sys.dir.path()).unwrap();
    assert_eq!(healthz_as(&sys, None).await, Ok(200));

    let reload = |crls: &[PathBuf]| {
        let mut opts = sys
            .lb
            .relay_options("test-relay", &sys.spool_path())
            .unwrap();
        opts.agent_tls = agent_tls_requiring_certificates(&paths, crls);
        sys.relay().reload(opts);
    };
    reload(&[]);
    let anonymous = healthz_as(&sys, None).await;
    assert!(
        anonymous
            .as_ref()
            .is_err_and(|e| e.contains("CertificateRequired")),
        "{anonymous:?}"
    );
    assert_eq!(healthz_as(&sys, Some(&cert)).await, Ok(200));
    let mut held = tls(
        sys.relay().agent_addr,
        &paths.ca_cert(),
        &[b"http/1.1"],
        Some((
            pki::load_certs(&cert).unwrap(),
            pki::load_private_key(&cert.with_extension("key")).unwrap(),
        )),
    )
    .await
    .unwrap();
    assert_eq!(healthz_on(&mut held).await, Ok(200));

    let crl = pki::write_crl(&paths, &[pki::certificate_serial(&cert).unwrap()], 1).unwrap();
    reload(&[crl]);
    let revoked = healthz_as(&sys, Some(&cert)).await;
    assert!(
        revoked
            .as_ref()
            .is_err_and(|e| e.contains("CertificateRevoked")),
        "{revoked:?}"
    );
    assert_eq!(
        healthz_on(&mut held).await,
        Ok(200),
        "the open connection stays"
    );
}

/// `relay reload` signals only a running relay: without a pid file it says so, and a stale one
/// that now names another process leaves that process alone (SIGHUP would end most).
#[tokio::test]
async fn relay_reload_signals_nothing_but_a_running_relay() {
    let ws = Workspace::new().await;
    ws.write_relay_config(&RelayConf::default());
    let reload = || {
        run(
            ws.dir.path(),
            &["relay", "reload", "--config", "relay.toml"],
            &[],
        )
    };
    let o = reload().await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("spool.db.pid") && text(&o.stderr).contains("is the relay"),
        "{}",
        text(&o.stderr)
    );

    let mut other = Command::new("sleep")
        .arg("600")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    std::fs::write(
        ws.path("spool.db.pid"),
        format!("{}\n", other.id().unwrap()),
    )
    .unwrap();
    let o = reload().await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("not a running mprelay relay"),
        "{}",
        text(&o.stderr)
    );
    // Had it been sent SIGHUP, that would have ended it before our SIGKILL does.
    other.kill().await.unwrap();
    let status = other.wait().await.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the other process was not signalled: {status}"
    );
}
