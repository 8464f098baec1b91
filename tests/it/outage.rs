//! The site server down while agents keep submitting: the relay takes reports until its spool
//! bound, then answers 503 with `Retry-After`; agents back off and keep their queues; when the
//! site returns everything drains, nothing missing and nothing doubled.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mprelay::agent::{Agent, AgentOptions};
use mprelay::pki;
use mprelay::proto::EnrollRequest;
use prost::Message;

use crate::helpers::{code, wait_until};
use crate::load::{Ledger, verify_site_db};
use crate::procs::{RelayConf, Server, Workspace};

const BOUND: u64 = 120;
const AGENTS: usize = 4;
const PER_AGENT: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_outage_fills_the_spool_to_its_bound_then_everything_drains() {
    let ws = Workspace::new().await;
    ws.write_relay_config(&RelayConf {
        max_records: BOUND,
        overload_retry_after_s: 1,
        ..RelayConf::default()
    });
    ws.write_site_config(1000);
    let _relay = Server::relay(&ws).await;
    let mut site = Server::site(&ws).await;
    let metrics = ws.site_client();

    let roots = pki::load_certs(&ws.certs().ca_cert()).unwrap();
    let tls = Arc::new(pki::client_config(&roots, None, &[b"h2", b"http/1.1"]).unwrap());
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let mut o = AgentOptions::new(&ws.agent_url(), tls.clone(), &ws.path(&format!("a{i}")));
        o.enrollment_secret = Some(ws.enrollment_secret());
        agents.push(Arc::new(Agent::open(o).await.expect("agent enrolls")));
    }
    // The site has taken the enrollments: the spool is empty before the outage.
    wait_until(Duration::from_secs(30), || async {
        ws.relay_metric(&metrics, "mprelay_relay_spool_pending_records")
            .await
            == Some(0)
    })
    .await
    .expect("enrollments forwarded");

    site.stop().await;
    let mut ledger = Ledger::default();
    for (i, a) in agents.iter().enumerate() {
        for n in 0..PER_AGENT {
            let report = mprelay::sample::report(n % 2, (i * 1000 + n) as u64);
            let settings = report
                .configuration_items
                .iter()
                .map(|c| c.settings.len())
                .sum();
            let id = a.queue_report(report).unwrap();
            ledger.sent.insert(id.to_string(), settings);
        }
    }
    let firsts = futures_util::future::join_all(agents.iter().map(|a| a.flush())).await;
    let mut accepted = 0;
    let mut remaining = 0;
    for o in firsts {
        let o = o.expect("flush");
        accepted += o.accepted;
        remaining += o.remaining;
        if o.remaining > 0 {
            assert_eq!(o.retry_after, Some(Duration::from_secs(1)), "{o:?}");
        }
    }
    assert_eq!(
        accepted as u64, BOUND,
        "accepted exactly up to the spool bound"
    );
    assert_eq!(remaining, AGENTS * PER_AGENT - BOUND as usize);
    assert_eq!(
        ws.relay_metric(&metrics, "mprelay_relay_spool_pending_records")
            .await,
        Some(BOUND)
    );

    // Anyone else gets the same answer, with Retry-After, and nothing is spooled.
    let raw = ws.agent_client();
    let (signer, _) = mprelay::envelope::DeviceSigner::generate();
    let req = EnrollRequest {
        enrollment_secret: ws.enrollment_secret(),
        device_public_key: signer.public_key().as_bytes().to_vec(),
        ..Default::default()
    };
    let resp = raw
        .post("/v1/enroll", Bytes::from(req.encode_to_vec()))
        .await
        .unwrap();
    assert_eq!(
        (resp.status.as_u16(), code(&resp).as_str()),
        (503, "overloaded")
    );
    assert_eq!(resp.retry_after(), Some(Duration::from_secs(1)));

    // Agents keep trying, backing off as told, and keep their queues meanwhile.
    let overloaded_before = overloaded(&ws, &metrics).await;
    let flushing: Vec<_> = agents
        .iter()
        .map(|a| {
            let a = a.clone();
            tokio::spawn(async move { a.flush_until_empty(Duration::from_secs(90)).await })
        })
        .collect();
    wait_until(Duration::from_secs(30), || async {
        overloaded(&ws, &metrics).await >= overloaded_before + 2 * AGENTS as u64
    })
    .await
    .expect("agents retry while the site is down");
    let mut queued = 0;
    for a in &agents {
        queued += a.queue().len().unwrap();
        assert_eq!(a.queue().dropped().unwrap(), 0, "nothing dropped");
    }
    assert_eq!(queued, remaining, "queues kept while the relay is full");
    assert_eq!(
        ws.relay_metric(&metrics, "mprelay_relay_spool_pending_records")
            .await,
        Some(BOUND)
    );

    site.start().await;
    for f in flushing {
        let o = f.await.unwrap().expect("flush");
        assert_eq!(o.remaining, 0, "{o:?}");
    }
    for a in &agents {
        assert!(a.queue().is_empty().unwrap());
    }
    ledger.receipted = ledger.sent.keys().cloned().collect();
    let checked = verify_site_db(&ws.site_db(), &ledger, Duration::from_secs(60)).await;
    assert_eq!(checked.reports, AGENTS * PER_AGENT);
    println!(
        "site outage: spool bound {BOUND} reached, {} refusals with Retry-After while down, \
         {} reports checked after the site returned",
        overloaded(&ws, &metrics).await,
        checked.reports
    );
}

async fn overloaded(ws: &Workspace, metrics: &mprelay::net::HttpClient) -> u64 {
    ws.relay_metric(metrics, "mprelay_relay_rejected_total{code=\"overloaded\"}")
        .await
        .unwrap_or(0)
}
