//! Edges an independent client or a proxy in the way runs into: a client that writes a whole
//! oversized body before it reads must still read the relay's `413 too_large` (not a connection
//! reset), and a report that something between agent and relay refuses without an error code
//! must not hold up the agent's queue forever.

use tokio::io::AsyncWriteExt;

use crate::helpers::TestSystem;
use crate::hostile_conn::{error_code, read_h1_response, tls};

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
