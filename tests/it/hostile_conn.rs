//! Hostile connections rather than hostile requests: slow-loris heads and bodies over HTTP/1.1
//! and HTTP/2, oversized bodies with and without `Content-Length`, HTTP/2 stream floods and rapid
//! resets, enrollment floods, the connection cap, and the site-facing listener reached without
//! the site server's certificate. The relay must cut the attacker, keep serving everyone else,
//! and spool nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mprelay::envelope::DeviceSigner;
use mprelay::net::{HttpClient, HttpVersion};
use mprelay::pki::{self, ClientRole, PkiPaths};
use mprelay::proto::{EnrollRequest, ErrorResponse};
use prost::Message;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::helpers::{RawDevice, TestSystem, code, describe, wait_until};

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A TLS connection to `addr` trusting the site CA, offering `alpn`, with an optional client
/// certificate.
pub(crate) async fn tls(
    addr: SocketAddr,
    ca: &Path,
    alpn: &[&[u8]],
    identity: Option<Identity>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let roots = pki::load_certs(ca).unwrap();
    let cfg = pki::client_config(&roots, identity, alpn).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

/// Limits short enough to watch them work.
fn tight(o: &mut mprelay::relay::RelayOptions) {
    o.agent_limits.header_read_timeout = Duration::from_millis(500);
    o.agent_limits.body_read_timeout = Duration::from_millis(800);
    o.agent_limits.idle_timeout = Duration::from_millis(500);
    o.agent_limits.max_concurrent_streams = 8;
}

/// An honest device enrolling and submitting while an attack runs: it must get its 202.
async fn honest_client_is_served(sys: &TestSystem) {
    let client = sys.agent_client(HttpVersion::Auto);
    let dev = RawDevice::enroll(&client, &sys.enrollment_secret()).await;
    let (_, body) = dev.sealed_report(1);
    let resp = client
        .post("/v1/submissions", Bytes::from(body))
        .await
        .expect("an honest client gets an answer during the attack");
    assert_eq!(resp.status, 202, "{}", describe(&resp));
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body).
pub(crate) async fn read_h1_response<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((status, buf[head_end..head_end + len].to_vec()))
}

pub(crate) fn error_code(body: &[u8]) -> String {
    ErrorResponse::decode(body)
        .map(|e| e.code)
        .unwrap_or_default()
}

#[tokio::test]
async fn slow_loris_heads_are_cut_while_others_are_served() {
    let sys = TestSystem::relay_only(tight).await;
    let ca = sys.lb.paths.ca_cert();
    let addr = sys.relay().agent_addr;
    let before = sys.spooled();
    let mut attackers = Vec::new();
    for _ in 0..10 {
        let ca = ca.clone();
        attackers.push(tokio::spawn(async move {
            let s = tls(addr, &ca, &[b"http/1.1"], None).await.unwrap();
            let (mut r, mut w) = tokio::io::split(s);
            w.write_all(b"POST /v1/submissions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .unwrap();
            // One header line every 100 ms, for up to 10 s, unless the relay hangs up.
            let mut buf = [0u8; 1024];
            for i in 0..100 {
                tokio::select! {
                    r = r.read(&mut buf) => {
                        return (i, r.map(|n| buf[..n].to_vec()).ok());
                    }
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if w.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                            return (i, None);
                        }
                    }
                }
            }
            panic!("a head trickled for 10 s was never cut");
        }));
    }
    honest_client_is_served(&sys).await;
    for a in attackers {
        let (lines, answer) = a.await.unwrap();
        // Cut long before the trickle ended; if anything was said, it was not a success.
        assert!(lines < 100);
        if let Some(bytes) = answer.filter(|b| !b.is_empty()) {
            let head = String::from_utf8_lossy(&bytes).into_owned();
            assert!(!head.starts_with("HTTP/1.1 2"), "{head}");
        }
    }
    assert_eq!(
        sys.spooled(),
        before + 2,
        "only the honest device was spooled"
    );
}

#[tokio::test]
async fn slow_loris_bodies_get_408_timeout() {
    let sys = TestSystem::relay_only(tight).await;
    let ca = sys.lb.paths.ca_cert();
    let addr = sys.relay().agent_addr;
    let before = sys.spooled();
    let mut attackers = Vec::new();
    for _ in 0..10 {
        let ca = ca.clone();
        attackers.push(tokio::spawn(async move {
            let s = tls(addr, &ca, &[b"http/1.1"], None).await.unwrap();
            let (mut r, mut w) = tokio::io::split(s);
            w.write_all(
                b"POST /v1/submissions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4096\r\n\r\n",
            )
            .await
            .unwrap();
            let trickle = tokio::spawn(async move {
                for _ in 0..100 {
                    if w.write_all(&[0u8; 8]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let resp = read_h1_response(&mut r).await;
            trickle.abort();
            resp
        }));
    }
    honest_client_is_served(&sys).await;
    for a in attackers {
        let (status, body) = a.await.unwrap().expect("an answer to a slow body");
        assert_eq!((status, error_code(&body).as_str()), (408, "timeout"));
    }
    assert_eq!(sys.spooled(), before + 2);
}

#[tokio::test]
async fn oversized_bodies_get_413_with_and_without_content_length() {
    let sys = TestSystem::relay_only(|_| {}).await;
    let ca = sys.lb.paths.ca_cert();
    let addr = sys.relay().agent_addr;
    let before = sys.spooled();
    let limit = 1024 * 1024;

    // Declared too large: refused from the head, before any of the body is read.
    let mut s = tls(addr, &ca, &[b"http/1.1"], None).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/submissions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            limit * 4
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (status, body) = read_h1_response(&mut s).await.expect("an answer");
    assert_eq!((status, error_code(&body).as_str()), (413, "too_large"));

    // Chunked, no length: refused once the limit is crossed.
    let mut s = tls(addr, &ca, &[b"http/1.1"], None).await.unwrap();
    s.write_all(
        b"POST /v1/enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0;
    while sent <= limit {
        let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
        c.extend_from_slice(&chunk);
        c.extend_from_slice(b"\r\n");
        s.write_all(&c).await.unwrap();
        sent += chunk.len();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let (status, body) = read_h1_response(&mut s).await.expect("an answer");
    assert_eq!((status, error_code(&body).as_str()), (413, "too_large"));

    // A Content-Length that lies low: only that much is read as the body, which then is not an
    // envelope; the rest is a garbage second request that cannot be parsed.
    let mut s = tls(addr, &ca, &[b"http/1.1"], None).await.unwrap();
    s.write_all(
        b"POST /v1/submissions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\n\x08\x01\x12\xff\xff\xff",
    )
    .await
    .unwrap();
    let (status, body) = read_h1_response(&mut s).await.expect("an answer");
    assert_eq!((status, error_code(&body).as_str()), (400, "malformed"));
    assert_eq!(sys.spooled(), before);
}

// --- HTTP/2 by hand, to do what a well-behaved client library refuses to do. ---

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;

#[tokio::test]
async fn http1_request_heads_past_8_kib_get_431_and_agents_get_http1() {
    let sys = TestSystem::relay_only(|_| {}).await;
    let ca = sys.lb.paths.ca_cert();
    let addr = sys.relay().agent_addr;
    let get = |pad: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(pad)
        )
    };

    // A client offering both protocols, as agents do, gets HTTP/1.1.
    let mut s = tls(addr, &ca, &[b"h2", b"http/1.1"], None).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // A head just inside the limit is served, twice on the same connection.
    for _ in 0..2 {
        s.write_all(get(7 * 1024).as_bytes()).await.unwrap();
        let (status, _) = read_h1_response(&mut s).await.expect("an answer");
        assert_eq!(status, 200);
    }
    // One past it is refused by the HTTP layer and the connection ends.
    s.write_all(get(9 * 1024).as_bytes()).await.unwrap();
    let (status, _) = read_h1_response(&mut s).await.expect("an answer");
    assert_eq!(status, 431);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "nothing after the refusal");
    honest_client_is_served(&sys).await;
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `POST https://127.0.0.1{path}`: indexed `:method POST` and `:scheme https`, then
/// `:path` and `:authority` as literals without indexing.
fn post_headers(path: &str) -> Vec<u8> {
    let mut h = vec![0x83, 0x87, 0x04, path.len() as u8];
    h.extend_from_slice(path.as_bytes());
    h.extend_from_slice(&[0x01, 9]);
    h.extend_from_slice(b"127.0.0.1");
    h
}

struct Frame {
    ty: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<Frame> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        ty: head[3],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

fn code_of(f: &Frame) -> u32 {
    let at = if f.ty == GOAWAY { 4 } else { 0 };
    f.payload
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// An HTTP/2 connection past the preface and the settings exchange.
async fn h2(sys: &TestSystem) -> TlsStream<TcpStream> {
    let mut s = tls(
        sys.relay().agent_addr,
        &sys.lb.paths.ca_cert(),
        &[b"h2"],
        None,
    )
    .await
    .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    loop {
        let f = read_frame(&mut s).await.expect("server settings");
        if f.ty == SETTINGS && f.payload.len() % 6 == 0 && !f.payload.is_empty() {
            s.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
            return s;
        }
    }
}

/// Reads frames until the connection ends or `limit` passes.
async fn drain_frames<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> (Vec<Frame>, bool) {
    let until = Instant::now() + limit;
    let mut frames = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, read_frame(s)).await {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, true),
            Err(_) => return (frames, false),
        }
    }
}

#[tokio::test]
async fn http2_stream_floods_are_refused_and_others_served() {
    let sys = TestSystem::relay_only(tight).await;
    let before = sys.spooled();
    let mut s = h2(&sys).await;
    // 64 streams opened at once, each waiting on a body that never comes; the relay allows 8.
    let mut flood = Vec::new();
    for i in 0..64u32 {
        flood.extend(frame(
            HEADERS,
            END_HEADERS,
            2 * i + 1,
            &post_headers("/v1/submissions"),
        ));
    }
    s.write_all(&flood).await.unwrap();
    let watch = tokio::spawn(async move { drain_frames(&mut s, Duration::from_secs(5)).await });
    honest_client_is_served(&sys).await;
    let (frames, _) = watch.await.unwrap();
    let refused: Vec<u32> = frames
        .iter()
        .filter(|f| f.ty == RST_STREAM && code_of(f) == REFUSED_STREAM)
        .map(|f| f.stream)
        .collect();
    assert_eq!(
        refused,
        (8..64).map(|i| 2 * i + 1).collect::<Vec<u32>>(),
        "exactly the streams past the limit of 8 are refused"
    );
    // The 8 streams it took timed out waiting for their bodies and were answered (408).
    let answered: Vec<u32> = frames
        .iter()
        .filter(|f| f.ty == HEADERS)
        .map(|f| f.stream)
        .collect();
    assert_eq!(answered, (0..8).map(|i| 2 * i + 1).collect::<Vec<u32>>());
    assert_eq!(sys.spooled(), before + 2);
}

#[tokio::test]
async fn http2_rapid_reset_gets_the_connection_closed_and_others_served() {
    let sys = TestSystem::relay_only(tight).await;
    let before = sys.spooled();
    let s = h2(&sys).await;
    let mut flood = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        flood.extend(frame(
            HEADERS,
            END_HEADERS,
            id,
            &post_headers("/v1/submissions"),
        ));
        flood.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    let (mut r, mut w) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&flood).await;
    });
    let watch = tokio::spawn(async move { drain_frames(&mut r, Duration::from_secs(10)).await });
    honest_client_is_served(&sys).await;
    let (frames, closed) = watch.await.unwrap();
    writer.abort();
    let goaway = frames.iter().find(|f| f.ty == GOAWAY).map(code_of);
    // ENHANCE_YOUR_CALM (0xb): the relay noticed the resets and hung up.
    assert_eq!(goaway, Some(0xb), "rapid resets absorbed");
    assert!(closed);
    assert_eq!(sys.spooled(), before + 2);
}

#[tokio::test]
async fn http2_slow_and_endless_headers_are_cut() {
    let sys = TestSystem::relay_only(tight).await;
    let before = sys.spooled();

    // A header block that never ends: HEADERS without END_HEADERS, then one byte of
    // CONTINUATION every 100 ms (legal framing, just slow).
    let s = h2(&sys).await;
    let (mut r, mut w) = tokio::io::split(s);
    let trickle = tokio::spawn(async move {
        let _ = w
            .write_all(&frame(HEADERS, 0, 1, &post_headers("/v1/submissions")))
            .await;
        for _ in 0..100 {
            if w.write_all(&frame(CONTINUATION, 0, 1, &[0x40]))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (_, closed) = drain_frames(&mut r, Duration::from_secs(10)).await;
    trickle.abort();
    assert!(
        closed,
        "an unfinished header block kept the connection for 10 s"
    );

    // CONTINUATION frames without end: the header list limit stops them.
    let (mut r, mut w) = tokio::io::split(h2(&sys).await);
    let writer = tokio::spawn(async move {
        let _ = w
            .write_all(&frame(HEADERS, 0, 1, &post_headers("/v1/submissions")))
            .await;
        let mut block = vec![0x00, 0x7f, 0x00]; // literal, new name, long string follows
        block.extend(std::iter::repeat_n(b'a', 16 * 1024 - 3));
        for _ in 0..1000 {
            if w.write_all(&frame(CONTINUATION, 0, 1, &block))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let (frames, closed) = drain_frames(&mut r, Duration::from_secs(10)).await;
    writer.abort();
    assert!(
        closed && frames.iter().any(|f| f.ty == GOAWAY),
        "16 MiB of CONTINUATION frames were taken in"
    );
    honest_client_is_served(&sys).await;
    assert_eq!(sys.spooled(), before + 2);
}

#[tokio::test]
async fn concurrent_enrollment_floods_are_rate_limited() {
    const BURST: usize = 5;
    let sys = TestSystem::relay_only(|o| {
        o.intake.enroll_peer_burst = BURST as f64;
        o.intake.enroll_peer_rate_per_s = 0.01;
    })
    .await;
    let before = sys.spooled();
    let secret = sys.enrollment_secret();
    let clients: Vec<HttpClient> = (0..4)
        .map(|_| sys.agent_client(HttpVersion::Auto))
        .collect();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (signer, _) = DeviceSigner::generate();
        let req = EnrollRequest {
            enrollment_secret: secret.clone(),
            hostname: format!("flood-{i}"),
            device_public_key: signer.public_key().as_bytes().to_vec(),
            ..Default::default()
        };
        let c = &clients[i % clients.len()];
        tasks.push(async move {
            c.post("/v1/enroll", Bytes::from(req.encode_to_vec()))
                .await
                .unwrap()
        });
    }
    let answers = futures_util::future::join_all(tasks).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let limited: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok, BURST, "enrollments let through");
    assert_eq!(limited.len(), 60 - BURST);
    for r in limited {
        assert_eq!(code(r), "rate_limited");
        assert!(r.retry_after().unwrap() >= Duration::from_secs(1));
    }
    assert_eq!(sys.spooled(), before + BURST as u64);
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_until_a_slot_frees() {
    let sys = TestSystem::relay_only(|o| o.agent_limits.max_connections = 3).await;
    let ca = sys.lb.paths.ca_cert();
    let addr = sys.relay().agent_addr;
    let before = sys.spooled();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tls(addr, &ca, &[b"http/1.1"], None).await.unwrap());
    }
    // The cap closes the fourth before its handshake.
    assert!(tls(addr, &ca, &[b"http/1.1"], None).await.is_err());
    let client = sys.agent_client(HttpVersion::Auto);
    assert!(
        client.post("/v1/enroll", Bytes::new()).await.is_err(),
        "served past the cap"
    );
    assert!(
        sys.relay()
            .agent_stats()
            .refused_connections
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );
    drop(held.pop());
    wait_until(Duration::from_secs(10), || async {
        sys.relay()
            .agent_stats()
            .open_connections
            .load(std::sync::atomic::Ordering::SeqCst)
            < 3
    })
    .await
    .expect("the closed connection frees its slot");
    honest_client_is_served(&sys).await;
    assert_eq!(sys.spooled(), before + 2);
}

#[tokio::test]
async fn the_site_facing_listener_refuses_everyone_but_the_site_server() {
    let sys = TestSystem::relay_only(|_| {}).await;
    let client = sys.agent_client(HttpVersion::Auto);
    RawDevice::enroll(&client, &sys.enrollment_secret()).await; // one record waiting
    let spool = &sys.relay().spool;
    let addr = sys.relay().site_addr;
    let ca = sys.lb.paths.ca_cert();
    let paths = &sys.lb.paths;

    let other_pki = tempfile::tempdir().unwrap();
    pki::init(other_pki.path(), &["localhost".into()]).unwrap();
    let other = PkiPaths::new(other_pki.path());
    let (agent_cert, agent_key) =
        pki::issue_client(paths, ClientRole::Agent, "agent-1", sys.dir.path()).unwrap();
    let load = |c: &Path, k: &Path| -> Identity {
        (
            pki::load_certs(c).unwrap(),
            pki::load_private_key(k).unwrap(),
        )
    };
    let intruders: Vec<(&str, Option<Identity>)> = vec![
        ("no client certificate", None),
        (
            "the site client certificate of another site's CA",
            Some(load(&other.site_cert(), &other.site_key())),
        ),
        (
            "an agent certificate from this site's agent CA",
            Some(load(&agent_cert, &agent_key)),
        ),
        (
            "the relay's own server certificate",
            Some(load(&paths.relay_cert(), &paths.relay_key())),
        ),
    ];
    let n = intruders.len();
    for (name, identity) in intruders {
        let ack = mprelay::proto::ForwardAck {
            through_seq: 1,
            spool_id: spool.spool_id().into(),
        }
        .encode_to_vec();
        let req = format!(
            "POST /v1/forward/ack HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            ack.len()
        );
        // In TLS 1.3 the client finishes its side of the handshake first; the server's refusal
        // arrives as an alert on the first read.
        let outcome = match tls(addr, &ca, &[b"http/1.1"], identity).await {
            Err(e) => Err(e.to_string()),
            Ok(mut s) => {
                let _ = s.write_all(req.as_bytes()).await;
                let _ = s.write_all(&ack).await;
                let mut buf = [0u8; 64];
                match s.read(&mut buf).await {
                    Ok(0) => Err("closed".into()),
                    Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let err = outcome.expect_err(name);
        // A TLS alert, not a reset: the client learns why (the relay lingers before closing).
        assert!(err.contains("fatal alert"), "{name}: {err}");
        assert_eq!(
            spool
                .stats()
                .acked_through
                .load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{name}: acknowledged"
        );
    }
    // The site server's own certificate gets in.
    let resp = sys.site_client().get("/v1/forward?after=0").await.unwrap();
    assert_eq!(resp.status, 200);
    println!("site-facing listener: {n} intruders refused at the handshake");
}
