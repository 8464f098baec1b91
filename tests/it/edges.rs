//! Edges an independent client or a proxy in the way runs into: a client that writes a whole
//! oversized body before it reads must still read the relay's `413 too_large` (not a connection
//! reset), and a report that something between agent and relay refuses without an error code
//! must not hold up the agent's queue forever.

use mprelay::agent::MAX_REFUSALS;
use mprelay::sample;
use tokio::io::AsyncWriteExt;

use crate::helpers::{RefusingProxy, TestSystem};
use crate::hostile_conn::{error_code, read_h1_response, tls};
use crate::intake::report_with_long_values;

/// The relay answers 413 from the request head, then closes. Closing with the rest of the body
/// unread makes the kernel reset the connection, and the client, still writing, gets "connection
/// reset" instead of the answer. On loopback a 2 MiB body fits in the socket buffers before the
/// relay answers, so each client here starts its body only once the answer has reached its
/// socket, as one on a real network (whose body is still on the way) does.
#[tokio::test]
async fn a_client_that_writes_a_whole_oversized_body_first_reads_the_413() {
    let sys = TestSystem::relay_only(|_| {}).await;
    let ca = sys.lb.paths.ca_cert();
    let addr = sys.relay().agent_addr;
    let before = sys.spooled();
    let body = vec![0x5au8; 2 * 1024 * 1024];
    let mut failures = Vec::new();
    for attempt in 0..20 {
        let mut s = tls(addr, &ca, &[b"http/1.1"], None).await.unwrap();
        let head = format!(
            "POST /v1/submissions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let written = async {
            s.write_all(head.as_bytes()).await?;
            // Readable: the answer arrived; it is not read before the body is written.
            s.get_ref().0.readable().await?;
            s.write_all(&body).await?;
            s.flush().await
        }
        .await;
        let answer = read_h1_response(&mut s).await;
        match (written, answer.map(|(status, b)| (status, error_code(&b)))) {
            (Ok(()), Some((413, code))) if code == "too_large" => {}
            (w, a) => failures.push(format!("attempt {attempt}: write {w:?}, answer {a:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 20 clients did not read 413 too_large:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(sys.spooled(), before, "nothing was spooled");
    assert_eq!(sys.relay().metrics().rejected("too_large"), 20);
}

/// A proxy in the way refuses one report with its own 403 page, no error code, every time: the
/// reports behind it are delivered in the same round, and after a bounded number of tries the
/// refused one is moved to `dropped/` with the proxy's answer as the reason.
#[tokio::test]
async fn a_report_a_proxy_refuses_without_a_code_is_dropped_in_the_end_and_holds_up_nothing() {
    let sys = TestSystem::start().await;
    let proxy = RefusingProxy::start(&sys, 64 * 1024, 403).await;
    let agent = proxy.agent(&sys, "behind-a-waf").await;
    let refused = agent.queue_report(report_with_long_values(35)).unwrap();
    for seed in 0..3 {
        agent
            .queue_report(sample::report_with_settings(35, seed))
            .unwrap();
    }
    let queued = agent.queue().list().unwrap();
    assert_eq!(
        queued[0].message_id, refused,
        "the refused report is first in line"
    );

    let first = agent.flush().await.unwrap();
    assert_eq!(
        (
            first.accepted,
            first.refused,
            first.dropped,
            first.remaining
        ),
        (3, 1, 0, 1),
        "{first:?}"
    );
    assert!(
        first.retry_after.is_none(),
        "the refused report waits for the next round: {first:?}"
    );
    sys.wait_for_reports(3).await;

    for round in 2..=MAX_REFUSALS {
        let o = agent.flush().await.unwrap();
        let want = if round < MAX_REFUSALS {
            (0, 1, 0, 1)
        } else {
            (0, 0, 1, 0)
        };
        assert_eq!(
            (o.accepted, o.refused, o.dropped, o.remaining),
            want,
            "round {round}: {o:?}"
        );
    }
    assert_eq!(proxy.refused(), u64::from(MAX_REFUSALS));
    assert!(agent.queue().is_empty().unwrap());
    assert_eq!(agent.queue().dropped().unwrap(), 1);
    let dropped = agent.queue().dir().join("dropped");
    let reason_file = std::fs::read_dir(&dropped)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "reason"))
        .expect("a reason beside the dropped report");
    assert!(
        reason_file.to_string_lossy().contains(&refused.to_string()),
        "{reason_file:?} is the refused report's"
    );
    let reason = std::fs::read_to_string(&reason_file).unwrap();
    assert!(
        reason.contains(&format!(
            "refused {MAX_REFUSALS} times without an error code"
        )) && reason.contains("HTTP 403")
            && reason.contains("403 refused by the proxy"),
        "reason: {reason}"
    );
    // Nothing else was left behind beside the queue.
    let left: Vec<_> = std::fs::read_dir(agent.queue().dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "dropped")
        .collect();
    assert!(left.is_empty(), "left in the queue directory: {left:?}");
    assert!(
        sys.store
            .report(&refused.to_string())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(sys.store.counts().await.unwrap().reports, 3);
    proxy.shutdown().await;
}
