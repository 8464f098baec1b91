//! Steady load for the crash tests, and the check that ends them.
//!
//! [`Load`] runs devices that enroll, then submit sealed reports one after another, resending
//! each (sealed again, same message id) until a receipt arrives, as an agent does. It records
//! every message id it sent and every 202 and 200. [`verify_site_db`] then holds the site
//! database to the promise: every report that got a receipt is there exactly once, with exactly
//! its settings, and nothing else is.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mprelay::envelope::{self, DeviceKey, DeviceSigner};
use mprelay::ids::{KeyEpoch, MessageId};
use mprelay::net::HttpClient;
use mprelay::proto::{EnrollRequest, EnrollResponse, Submission, SubmissionReceipt, submission};
use prost::Message;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tokio::task::JoinSet;

use crate::helpers::describe;
use crate::procs::{Workspace, random_ms};

/// What the load sent and what came back.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Every message id sent, with the number of settings its report carries.
    pub sent: HashMap<String, usize>,
    /// Message ids answered 202 or 200.
    pub receipted: HashSet<String>,
    /// 202 answers.
    pub accepted: u64,
    /// 200 answers: a resend after a send whose answer was lost.
    pub duplicates: u64,
    /// Sends that got no answer (connection refused or cut by a kill).
    pub in_doubt: u64,
    /// 503 answers.
    pub overloaded: u64,
}

impl Ledger {
    fn merge(&mut self, o: Ledger) {
        self.sent.extend(o.sent);
        self.receipted.extend(o.receipted);
        self.accepted += o.accepted;
        self.duplicates += o.duplicates;
        self.in_doubt += o.in_doubt;
        self.overloaded += o.overloaded;
    }
}

/// Devices submitting until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Ledger>,
    receipts: Arc<AtomicU64>,
}

impl Load {
    /// `devices` devices, each sending `settings`-setting reports back to back with `pace`
    /// between them.
    pub async fn start(ws: &Workspace, devices: usize, settings: usize, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let receipts = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for d in 0..devices {
            let mut client = ws.agent_client();
            client.connect_timeout = Duration::from_secs(2);
            let secret = ws.enrollment_secret();
            let (stop, receipts) = (stop.clone(), receipts.clone());
            tasks.spawn(async move {
                let dev = Device::enroll(&client, &secret).await;
                dev.run(&client, d as u64, settings, pace, &stop, &receipts)
                    .await
            });
        }
        Self {
            stop,
            tasks,
            receipts,
        }
    }

    /// Receipts (202 or 200) so far.
    pub fn receipts(&self) -> u64 {
        self.receipts.load(Ordering::SeqCst)
    }

    /// Waits until `n` more receipts than now arrived; fails the test after `limit`.
    pub async fn wait_for_more(&self, n: u64, limit: Duration) {
        let want = self.receipts() + n;
        let until = Instant::now() + limit;
        while self.receipts() < want {
            assert!(
                Instant::now() < until,
                "load stalled: {} receipts, waiting for {want}",
                self.receipts()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the devices; each first gets a receipt for the report it is sending (the relay
    /// must be up).
    pub async fn stop(mut self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Ledger::default();
        while let Some(l) = self.tasks.join_next().await {
            all.merge(l.expect("device task"));
        }
        all
    }
}

struct Device {
    signer: DeviceSigner,
    epoch: KeyEpoch,
    key: DeviceKey,
}

impl Device {
    async fn enroll(client: &HttpClient, secret: &str) -> Self {
        let (signer, _) = DeviceSigner::generate();
        let req = EnrollRequest {
            enrollment_secret: secret.into(),
            hostname: format!("load-{}", signer.device_id()),
            os: "linux".into(),
            agent_version: "test".into(),
            hardware_id: String::new(),
            device_public_key: signer.public_key().as_bytes().to_vec(),
        };
        let body = Bytes::from(req.encode_to_vec());
        let until = Instant::now() + Duration::from_secs(60);
        let er = loop {
            match client.post("/v1/enroll", body.clone()).await {
                Ok(r) if r.status == 200 => break EnrollResponse::decode(r.body.as_ref()).unwrap(),
                Ok(r) => panic!("enrollment refused: {}", describe(&r)),
                Err(e) => {
                    assert!(Instant::now() < until, "cannot enroll: {e}");
                    tokio::time::sleep(random_ms(20, 80)).await;
                }
            }
        };
        Self {
            signer,
            epoch: KeyEpoch::try_from(er.key_epoch).unwrap(),
            key: DeviceKey::try_from(er.device_key.as_slice()).unwrap(),
        }
    }

    async fn run(
        &self,
        client: &HttpClient,
        index: u64,
        settings: usize,
        pace: Duration,
        stop: &AtomicBool,
        receipts: &AtomicU64,
    ) -> Ledger {
        let mut l = Ledger::default();
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let id = MessageId::new().to_string();
            let sub = Submission {
                message_id: id.clone(),
                device_id: self.signer.device_id().hex(),
                created_unix_ms: mprelay::clock::now_ms(),
                body: Some(submission::Body::ComplianceReport(
                    mprelay::sample::report_with_settings(settings, index * 1_000_003 + n),
                )),
            }
            .encode_to_vec();
            l.sent.insert(id.clone(), settings);
            let mut doubted = false;
            let until = Instant::now() + Duration::from_secs(90);
            let status = loop {
                let sealed = envelope::seal(&self.signer, self.epoch, &self.key, &sub);
                match client
                    .post("/v1/submissions", Bytes::from(sealed.encode_to_vec()))
                    .await
                {
                    Ok(r) if r.status == 202 || r.status == 200 => {
                        let receipt = SubmissionReceipt::decode(r.body.as_ref()).unwrap();
                        assert_eq!(receipt.message_id, id);
                        break r.status.as_u16();
                    }
                    Ok(r) if r.status == 503 => {
                        l.overloaded += 1;
                        tokio::time::sleep(random_ms(50, 150)).await;
                    }
                    Ok(r) => panic!("unexpected answer to a valid report: {}", describe(&r)),
                    Err(e) => {
                        assert!(Instant::now() < until, "no receipt for {id} in 90 s: {e}");
                        l.in_doubt += 1;
                        doubted = true;
                        tokio::time::sleep(random_ms(20, 80)).await;
                    }
                }
            };
            if status == 202 {
                l.accepted += 1;
            } else {
                assert!(doubted, "a new message id {id} was answered 200");
                l.duplicates += 1;
            }
            l.receipted.insert(id);
            receipts.fetch_add(1, Ordering::SeqCst);
            n += 1;
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
        }
        l
    }
}

/// What [`verify_site_db`] found.
#[derive(Debug)]
pub struct Checked {
    pub reports: usize,
    pub settings: usize,
}

/// Waits (up to `limit`) until every receipted report is in the site database, then checks that
/// each is there exactly once with all of its settings, that every stored report is one the load
/// sent, and that nothing was quarantined.
pub async fn verify_site_db(db: &Path, ledger: &Ledger, limit: Duration) -> Checked {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .unwrap()
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .expect("open the site database");
    let until = Instant::now() + limit;
    loop {
        let ids: HashSet<String> = sqlx::query_scalar("SELECT message_id FROM compliance_reports")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
        let missing = ledger.receipted.difference(&ids).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "{missing} of {} receipted reports never reached the site database",
            ledger.receipted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = sqlx::query(
        "SELECT r.message_id, COUNT(s.ordinal) FROM compliance_reports r \
         LEFT JOIN setting_results s ON s.report_id = r.report_id GROUP BY r.report_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut seen = HashSet::new();
    let mut settings = 0usize;
    for row in &rows {
        let id: String = row.get(0);
        let n: i64 = row.get(1);
        let Some(want) = ledger.sent.get(&id) else {
            panic!("the site database holds {id}, which was never sent");
        };
        assert!(seen.insert(id.clone()), "{id} is stored twice");
        assert_eq!(n as usize, *want, "{id}: setting rows");
        settings += n as usize;
    }
    let total_settings: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM setting_results")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        total_settings as usize, settings,
        "setting rows outside any report"
    );
    let quarantined: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quarantined_records")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(quarantined, 0, "records were quarantined");
    pool.close().await;
    Checked {
        reports: rows.len(),
        settings,
    }
}
