//! The compliance commands as an operator runs them: `baseline import` with its errors,
//! `site` with the admin API, `agent run --once --root`, and the reports.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::wait_until;

pub(crate) fn mprelay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mprelay"));
    c.env_remove("MPRELAY_LOG").env("RUST_LOG", "warn");
    c
}

pub(crate) fn run(args: &[&str], dir: &Path) -> Output {
    mprelay()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("mprelay runs")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn spawn_server(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> (Killed, String) {
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

/// certs/ and examples/ (with the example baselines) side by side, as the examples expect.
pub(crate) fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["certs", "init", "--dir", "certs"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::create_dir_all(dir.path().join("examples/baselines")).unwrap();
    for f in [
        "relay.toml",
        "site.toml",
        "agent.toml",
        "baselines/ssh-hardening.toml",
        "baselines/kernel-network.toml",
    ] {
        std::fs::copy(src.join(f), dir.path().join("examples").join(f)).unwrap();
    }
    dir
}

const IMPORT: &[&str] = &[
    "baseline",
    "import",
    "--config",
    "examples/site.toml",
    "examples/baselines/ssh-hardening.toml",
    "examples/baselines/kernel-network.toml",
];

#[test]
fn baseline_import_checks_stores_and_refuses_silent_edits() {
    let dir = workspace();
    let o = run(IMPORT, dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("added baseline ssh-hardening revision 1"),
        "{out}"
    );
    assert!(
        out.contains("added configuration_item kernel-sysctls revision 1"),
        "{out}"
    );

    // Again: identical content changes nothing.
    let o = run(IMPORT, dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("unchanged baseline ssh-hardening revision 1"));
    assert!(!stdout(&o).contains("added"));

    // A typo: the error names file, line and field; nothing is imported.
    let ssh =
        std::fs::read_to_string(dir.path().join("examples/baselines/ssh-hardening.toml")).unwrap();
    let bad = ssh.replacen(
        "rule = { operator = \"equals\", value = \"no\", ignore_case = true }",
        "rule = { operator = \"equal\", value = \"no\", ignore_case = true }",
        1,
    );
    let line = bad.lines().position(|l| l.contains("\"equal\"")).unwrap() + 1;
    std::fs::write(dir.path().join("bad.toml"), &bad).unwrap();
    let o = run(
        &[
            "baseline",
            "import",
            "--config",
            "examples/site.toml",
            "bad.toml",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "bad.toml line {line}: configuration_item \"openssh-server-config\" setting \"permit-root-login\" rule.operator: unknown operator \"equal\""
        )),
        "{e}"
    );
    assert!(e.contains("nothing was imported"), "{e}");

    // A regex that does not compile.
    let bad = ssh.replace("(-cbc|arcfour|3des)", "(-cbc|arcfour");
    std::fs::write(dir.path().join("bad.toml"), &bad).unwrap();
    let o = run(
        &[
            "baseline",
            "import",
            "--config",
            "examples/site.toml",
            "bad.toml",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).contains("setting \"no-weak-ciphers\" rule.value: the pattern \"(-cbc|arcfour\" is not a valid regular expression"),
        "{}",
        stderr(&o)
    );

    // Changed content under the same revision is refused; with the revision raised it goes in.
    let edited = ssh.replace(
        "rule = { operator = \"less_or_equal\", value = 4 }",
        "rule = { operator = \"less_or_equal\", value = 3 }",
    );
    std::fs::write(dir.path().join("edited.toml"), &edited).unwrap();
    let o = run(
        &[
            "baseline",
            "import",
            "--config",
            "examples/site.toml",
            "edited.toml",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).contains("configuration_item \"openssh-server-config\" revision 1: is already stored with other content (imported from ssh-hardening.toml)"),
        "{}",
        stderr(&o)
    );
    let bumped = edited.replacen(
        "id = \"openssh-server-config\"\nrevision = 1",
        "id = \"openssh-server-config\"\nrevision = 2",
        1,
    );
    std::fs::write(dir.path().join("edited.toml"), &bumped).unwrap();
    let o = run(
        &[
            "baseline",
            "import",
            "--config",
            "examples/site.toml",
            "edited.toml",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("added configuration_item openssh-server-config revision 2"));
    // The baseline follows the item's latest revision, so its own revision moves with it.
    assert!(
        stdout(&o).contains("added baseline ssh-hardening revision 2"),
        "{}",
        stdout(&o)
    );
    let o = run(
        &["baseline", "list", "--config", "examples/site.toml"],
        dir.path(),
    );
    let list = stdout(&o);
    assert_eq!(
        list.lines()
            .filter(|l| l.starts_with("configuration_item") && l.contains("openssh-server-config"))
            .count(),
        2,
        "{list}"
    );
    assert!(
        list.contains("the site, following configuration item openssh-server-config revision 2"),
        "{list}"
    );

    // A file that is not there.
    let o = run(
        &[
            "baseline",
            "import",
            "--config",
            "examples/site.toml",
            "missing.toml",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("missing.toml"), "{}", stderr(&o));
}

#[test]
fn site_refuses_to_start_without_its_admin_token() {
    let dir = workspace();
    let o = mprelay()
        .args(["site", "--config", "examples/site.toml"])
        .current_dir(dir.path())
        .env("MPRELAY_SITE__ADMIN__TOKEN_FILE", "../certs/none.token")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("none.token"), "{}", stderr(&o));
}

#[tokio::test]
async fn agent_run_evaluates_a_tree_and_the_reports_show_it() {
    let dir = workspace();
    let o = run(IMPORT, dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    for b in ["ssh-hardening", "kernel-network-hardening"] {
        let o = run(
            &[
                "deploy",
                b,
                "--to",
                "all-devices",
                "--remediate",
                "--config",
                "examples/site.toml",
            ],
            dir.path(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (_relay, line) = spawn_server(
        &["relay", "--config", "examples/relay.toml"],
        dir.path(),
        &[
            ("MPRELAY_RELAY__AGENT_LISTEN", "127.0.0.1:0"),
            ("MPRELAY_RELAY__SITE_LISTEN", "127.0.0.1:0"),
        ],
    );
    let ports: Vec<&str> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').strip_prefix("127.0.0.1:"))
        .collect();
    assert_eq!(ports.len(), 2, "{line}");
    let site_url = format!("[{{url = \"https://localhost:{}\"}}]", ports[1]);
    let (_site, line) = spawn_server(
        &["site", "--config", "examples/site.toml"],
        dir.path(),
        &[
            ("MPRELAY_SITE__RELAYS", &site_url),
            ("MPRELAY_SITE__ADMIN__LISTEN", "127.0.0.1:0"),
            ("MPRELAY_SITE__POLICY__POLL_INTERVAL_MS", "100"),
        ],
    );
    assert!(line.contains("admin API on https://127.0.0.1:"), "{line}");

    let root = dir.path().join("device-root");
    mprelay::faketree::write_device_tree(&root, 42).unwrap();
    let agent_url = format!("https://localhost:{}", ports[0]);
    let mut out = String::new();
    // The relay has the policy once the site pushed it; until then the agent sees none.
    wait_until(Duration::from_secs(30), || {
        let o = mprelay()
            .args([
                "agent",
                "run",
                "--once",
                "--config",
                "examples/agent.toml",
                "--root",
                root.to_str().unwrap(),
            ])
            .current_dir(dir.path())
            .env("MPRELAY_AGENT__RELAY_URL", &agent_url)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        out = stdout(&o);
        let got = out.contains("kernel-network-hardening:");
        async move { got }
    })
    .await
    .expect("the agent gets the policy");
    assert!(out.contains("ssh-hardening: "), "{out}");
    assert!(out.contains("accepted 2"), "{out}");
    let device = out
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();

    let db = format!("sqlite://{}", dir.path().join("site.db").display());
    wait_until(Duration::from_secs(30), || async {
        let o = run(&["report", "counts", "--database", &db], dir.path());
        stdout(&o).contains("reports 2\n")
    })
    .await
    .expect("the reports reach the site database");

    let o = run(
        &["report", "compliance", "--config", "examples/site.toml"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("SSH hardening (ssh-hardening)"),
        "{}",
        stdout(&o)
    );
    let o = run(
        &[
            "report",
            "compliance",
            "--config",
            "examples/site.toml",
            "--baseline",
            "ssh-hardening",
        ],
        dir.path(),
    );
    assert!(
        stdout(&o).contains("openssh-server-config/permit-root-login"),
        "{}",
        stdout(&o)
    );
    let o = run(
        &["report", "device", "--database", &db, &device],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(&format!("Device {device}")), "{text}");
    assert!(text.contains("rsh-server/in-rshd-installed"), "{text}");
    assert!(text.contains("History:"), "{text}");
    let o = run(
        &[
            "report",
            "noncompliant",
            "--database",
            &db,
            "--baseline",
            "kernel-network-hardening",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("Non-compliant devices for Kernel and network hardening"));
    let o = run(&["report", "device", "--database", &db, "0000"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no device \"0000\""), "{}", stderr(&o));

    // Blocking from the command line reaches the relay through the site's policy.
    let o = run(&["device", "block", "--database", &db, &device], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    wait_until(Duration::from_secs(30), || {
        let o = mprelay()
            .args([
                "agent",
                "run",
                "--once",
                "--config",
                "examples/agent.toml",
                "--root",
                root.to_str().unwrap(),
            ])
            .current_dir(dir.path())
            .env("MPRELAY_AGENT__RELAY_URL", &agent_url)
            .output()
            .unwrap();
        let blocked = o.status.code() == Some(1) && stderr(&o).contains("is blocked by the site");
        async move { blocked }
    })
    .await
    .expect("the relay refuses the blocked device");
}
