//! A 202 is never lost: relay and site server run as real processes under steady load and are
//! killed with SIGKILL at random moments (the site server also inside its batch transaction),
//! restarted, and killed again. At the end every report that got a 202 or 200 is in the site
//! database exactly once, and no other report is.

use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::wait_until;
use crate::load::{Ledger, Load, verify_site_db};
use crate::procs::{RelayConf, Server, Workspace, mprelay, random_ms, run, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_under_load_loses_and_doubles_nothing() {
    let ws = Workspace::new().await;
    ws.write_relay_config(&RelayConf::default());
    ws.write_site_config(1000);
    let mut relay = Server::relay(&ws).await;
    let _site = Server::site(&ws).await;
    let load = Load::start(&ws, 6, 12, Duration::from_millis(2)).await;
    load.wait_for_more(50, Duration::from_secs(30)).await;

    const KILLS: u32 = 12;
    let started = Instant::now();
    for _ in 0..KILLS {
        tokio::time::sleep(random_ms(100, 900)).await;
        relay.kill9().await;
        tokio::time::sleep(random_ms(0, 300)).await;
        relay.start().await;
        // Intake resumes after every restart.
        load.wait_for_more(20, Duration::from_secs(30)).await;
    }
    let ledger = load.stop().await;
    let checked = verify_site_db(&ws.site_db(), &ledger, Duration::from_secs(60)).await;
    assert_eq!(checked.reports, ledger.receipted.len());
    println!(
        "relay kill -9: {KILLS} kills survived in {:.1} s; {} reports checked ({} setting rows); \
         202: {}, 200 after a lost answer: {}, sends in doubt: {}",
        started.elapsed().as_secs_f64(),
        checked.reports,
        checked.settings,
        ledger.accepted,
        ledger.duplicates,
        ledger.in_doubt,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_killed_under_load_and_inside_its_transaction_loses_and_doubles_nothing() {
    let ws = Workspace::new().await;
    ws.write_relay_config(&RelayConf::default());
    // Big batches, so a write transaction lasts long enough to be caught open.
    ws.write_site_config(800);
    let _relay = Server::relay(&ws).await;
    let mut site = Server::site(&ws).await;
    let load = Load::start(&ws, 6, 35, Duration::from_millis(1)).await;
    load.wait_for_more(50, Duration::from_secs(30)).await;
    let started = Instant::now();

    // At random moments.
    const RANDOM_KILLS: u32 = 6;
    for _ in 0..RANDOM_KILLS {
        tokio::time::sleep(random_ms(100, 900)).await;
        site.kill9().await;
        tokio::time::sleep(random_ms(0, 300)).await;
        site.start().await;
    }

    // Inside a batch transaction: let a backlog build up with the site down, start it, and kill
    // it while its write transaction is open. A kill that cannot be proven to have landed inside
    // (the transaction was committing just then) counts as a random one, and we try again.
    const TX_KILLS: u32 = 4;
    let (mut in_tx, mut near_tx) = (0, 0);
    while in_tx < TX_KILLS {
        assert!(near_tx < 2 * TX_KILLS, "kills keep missing the transaction");
        site.kill9().await;
        load.wait_for_more(900, Duration::from_secs(60)).await;
        site.start().await;
        if kill_inside_write_transaction(&ws, &mut site).await {
            in_tx += 1;
        } else {
            near_tx += 1;
        }
        site.start().await;
    }

    let ledger = load.stop().await;
    let checked = verify_site_db(&ws.site_db(), &ledger, Duration::from_secs(90)).await;
    assert_eq!(checked.reports, ledger.receipted.len());
    println!(
        "site kill -9: {} kills survived ({} at random moments, {in_tx} inside an open write \
         transaction) in {:.1} s; {} reports checked ({} setting rows); 202: {}, 200 after a \
         lost answer: {}",
        RANDOM_KILLS + near_tx + in_tx,
        RANDOM_KILLS + near_tx,
        started.elapsed().as_secs_f64(),
        checked.reports,
        checked.settings,
        ledger.accepted,
        ledger.duplicates,
    );
}

/// Watches the site database for an open write transaction (another connection cannot take the
/// write lock) and kills the site server at that moment. Returns whether the kill provably
/// landed inside the transaction: the relay cursor, which every batch transaction moves, is the
/// same after the kill as it was before the lock was seen, so the transaction never committed.
async fn kill_inside_write_transaction(ws: &Workspace, site: &mut Server) -> bool {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", ws.site_db().display()))
        .unwrap()
        .busy_timeout(Duration::ZERO);
    let mut probe = SqliteConnection::connect_with(&opts).await.unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < until,
            "never saw the site server inside a write transaction"
        );
        let before = cursor(&mut probe).await;
        match sqlx::query("BEGIN IMMEDIATE").execute(&mut probe).await {
            Ok(_) => {
                sqlx::query("ROLLBACK").execute(&mut probe).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) if e.to_string().contains("locked") || e.to_string().contains("busy") => {
                site.kill9().await;
                let after = cursor(&mut probe).await;
                probe.close().await.unwrap();
                return before == after;
            }
            Err(e) => panic!("probing the site database: {e}"),
        }
    }
}

async fn cursor(c: &mut SqliteConnection) -> Option<i64> {
    sqlx::query_scalar("SELECT MAX(through_seq) FROM relay_cursors")
        .fetch_one(c)
        .await
        .unwrap()
}

/// A loopback TCP proxy that forwards everything until the client has sent more than
/// `freeze_after` bytes, then withholds whatever the server sends back. Because the server can
/// only answer a request after all of it arrived, and the flag is set before the bytes that
/// cross the threshold are forwarded, the answer to a request larger than the threshold is
/// provably withheld.
struct Proxy {
    port: u16,
    withheld: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: u16, freeze_after: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let withheld = Arc::new(AtomicU64::new(0));
        let w = withheld.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let frozen = Arc::new(AtomicBool::new(false));
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let f = frozen.clone();
                tokio::spawn(async move {
                    let mut sent = 0u64;
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        sent += n as u64;
                        if sent > freeze_after {
                            f.store(true, Ordering::SeqCst);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let w = w.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if frozen.load(Ordering::SeqCst) {
                            w.fetch_add(n as u64, Ordering::SeqCst);
                        } else if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            port,
            withheld,
            task,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A report of `settings` settings as JSON, large enough that its request outgrows the proxy's
/// threshold but stays inside one HTTP/2 flow-control window.
fn big_report_json(settings: usize) -> String {
    let items: Vec<String> = (0..settings)
        .map(|i| {
            format!(
                r#"{{"setting_id": "setting-{i:04}", "state": "compliant", "severity": "warning",
                   "expected": "== {v}", "observed_before": "{v}"}}"#,
                v = format!("value-{i:04}-").repeat(6)
            )
        })
        .collect();
    format!(
        r#"{{"baseline_id": "durability", "baseline_revision": 1, "baseline_name": "Durability",
            "configuration_items": [{{"ci_id": "ci-1", "ci_revision": 1, "settings": [{}]}}]}}"#,
        items.join(",\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_after_sending_before_its_receipt_resends_and_gets_200() {
    const SETTINGS: usize = 120;
    let ws = Workspace::new().await;
    ws.write_relay_config(&RelayConf::default());
    ws.write_site_config(1000);
    let _relay = Server::relay(&ws).await;
    let _site = Server::site(&ws).await;
    ws.write_agent_config("a1", None);
    let o = run(
        ws.dir.path(),
        &["agent", "enroll", "--config", "a1.toml"],
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    std::fs::write(ws.path("big.json"), big_report_json(SETTINGS)).unwrap();

    let proxy = Proxy::start(ws.agent_port, 8 * 1024).await;
    let via_proxy = format!("https://127.0.0.1:{}", proxy.port);
    let mut agent = mprelay()
        .args([
            "agent", "submit", "--config", "a1.toml", "--report", "big.json",
        ])
        .current_dir(ws.dir.path())
        .env("MPRELAY_AGENT__RELAY_URL", &via_proxy)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let id = line
        .strip_prefix("queued ")
        .unwrap_or_else(|| panic!("{line}"))
        .trim()
        .to_string();

    // The relay spooled it (and so answered, or is about to); the proxy froze before the last
    // bytes of the request went through, so the answer never reaches the agent.
    let metrics = ws.site_client();
    let ok = wait_until(Duration::from_secs(30), || async {
        ws.relay_metric(&metrics, "mprelay_relay_accepted_total")
            .await
            == Some(1)
            && proxy.withheld.load(Ordering::SeqCst) > 0
    })
    .await;
    if ok.is_err() {
        let m = metrics
            .get("/metrics")
            .await
            .map(|r| text(&r.body))
            .unwrap_or_default();
        agent.kill().await.unwrap();
        let mut err = String::new();
        agent
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        panic!(
            "the relay did not accept the report or its answer was not withheld ({} bytes): {}\n{err}",
            proxy.withheld.load(Ordering::SeqCst),
            m.lines()
                .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    agent.kill().await.unwrap();
    let queued: Vec<_> = std::fs::read_dir(ws.path("a1-state/queue"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sub"))
        .collect();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(queued[0].contains(&id), "{queued:?}");

    // Started again (straight to the relay), it resends from its queue and gets 200.
    let o = run(
        ws.dir.path(),
        &["agent", "submit", "--config", "a1.toml"],
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("accepted 0, already accepted 1, dropped 0, still queued 0"),
        "{}",
        text(&o.stdout)
    );
    let mut ledger = Ledger::default();
    ledger.sent.insert(id.clone(), SETTINGS);
    ledger.receipted.insert(id);
    let checked = verify_site_db(&ws.site_db(), &ledger, Duration::from_secs(30)).await;
    assert_eq!(checked.reports, 1);
    assert_eq!(
        ws.relay_metric(&metrics, "mprelay_relay_duplicates_total")
            .await,
        Some(1)
    );
}
