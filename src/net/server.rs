//! One HTTPS server loop for every listener (relay agent-facing, relay site-facing, site admin):
//! TLS with rustls, HTTP/1.1 and HTTP/2 with hyper, and the limits DESIGN section 2 asks of every
//! listener — body size, header read timeout, connection cap, per-connection request cap — plus
//! a TLS handshake timeout, a body read timeout and graceful shutdown with a grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info_span, warn};

use super::tls::TlsServerStream;
use crate::wire::Refusal;

/// Limits applied by a listener. Defaults follow DESIGN section 2.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted; larger ones get 413 `too_large`.
    pub max_body_bytes: usize,
    /// Time a client has to send a complete request head, counted from when the connection is
    /// ready for one (so it also closes idle HTTP/1.1 keep-alive connections).
    pub header_read_timeout: Duration,
    /// Time a client has to send a complete request body once its head arrived.
    pub body_read_timeout: Duration,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Idle time after which a connection with no request in flight is closed (never longer than
    /// the header read timeout).
    pub idle_timeout: Duration,
    /// Connections served at once; further ones are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Requests served on one connection before it is asked to close.
    pub max_requests_per_connection: u64,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 30_000,
            max_requests_per_connection: 100_000,
            max_concurrent_streams: 128,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What a handler knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
}

/// A request handler: gets the request and its peer, returns the full response.
pub trait Handler: Clone + Send + Sync + 'static {
    fn call(
        &self,
        req: Request<Incoming>,
        peer: Arc<Peer>,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// Counters every listener keeps; the metrics endpoint reads them.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub open_connections: AtomicUsize,
    pub accepted_connections: AtomicU64,
    pub refused_connections: AtomicU64,
    pub failed_handshakes: AtomicU64,
}

/// A running listener: its address, its counters, and how to stop it.
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub stats: Arc<ListenerStats>,
    shutdown: watch::Sender<bool>,
    tls: watch::Sender<Arc<ServerConfig>>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// Serves connections accepted from now on with `tls` (new certificates, CAs or CRLs). Open
    /// connections keep the session they have.
    pub fn set_tls(&self, tls: Arc<ServerConfig>) {
        self.tls.send_replace(tls);
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Starts serving `listener` in a background task.
pub fn spawn<H: Handler>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    limits: Limits,
    handler: H,
    name: &'static str,
) -> std::io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let (tls_tx, tls_rx) = watch::channel(tls);
    let stats = Arc::new(ListenerStats::default());
    let task = tokio::spawn(
        accept_loop(listener, tls_rx, limits, handler, rx, stats.clone())
            .instrument(info_span!("listener", name, %addr)),
    );
    Ok(ServerHandle {
        addr,
        stats,
        shutdown: tx,
        tls: tls_tx,
        task,
    })
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    limits: Limits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<ListenerStats>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    let mut conns = JoinSet::new();
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats.refused_connections.fetch_add(1, Ordering::Relaxed);
            debug!(%addr, "connection cap reached; closing");
            drop(stream);
            continue;
        };
        stats.accepted_connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        // Spawned as it is: wrapping it in another async block would make the task hold the
        // connection's future twice over (once as a variable, once being awaited), about 7 KiB
        // more for every connection held.
        conns.spawn(
            serve_connection(
                Accepted {
                    stream,
                    addr,
                    slot: permit,
                },
                tls.borrow().clone(),
                limits.clone(),
                handler.clone(),
                shutdown.clone(),
                stats.clone(),
            )
            .instrument(info_span!("conn", peer = %addr)),
        );
    }
    drop(listener);
    let grace = limits.shutdown_grace;
    if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        warn!(
            remaining = conns.len(),
            "grace period over; closing connections"
        );
        conns.shutdown().await;
    }
}

/// What a connection's service shares with the loop serving it.
#[derive(Default)]
struct ConnState {
    /// Requests begun on the connection.
    served: AtomicU64,
    in_flight: AtomicUsize,
    /// The request cap was reached: close once its response is out.
    close_now: Notify,
    /// A request finished (the idle timer starts over).
    activity: Notify,
}

/// A connection the listener took, with its slot of the connection cap (given back when the
/// connection ends).
struct Accepted {
    stream: TcpStream,
    addr: SocketAddr,
    slot: OwnedSemaphorePermit,
}

async fn serve_connection<H: Handler>(
    accepted: Accepted,
    tls: Arc<ServerConfig>,
    limits: Arc<Limits>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<ListenerStats>,
) {
    let Accepted {
        stream,
        addr,
        slot: _slot,
    } = accepted;
    let Some(tls) = handshake(stream, tls, &limits, &stats).await else {
        return;
    };
    stats.open_connections.fetch_add(1, Ordering::Relaxed);
    let peer = Arc::new(Peer { addr });

    let state = Arc::new(ConnState::default());
    let max_requests = limits.max_requests_per_connection;
    let svc = {
        let state = state.clone();
        service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            let peer = peer.clone();
            let state = state.clone();
            async move {
                state.in_flight.fetch_add(1, Ordering::Relaxed);
                let n = state.served.fetch_add(1, Ordering::Relaxed) + 1;
                // Boxed: hyper keeps an allocation the size of this future for as long as the
                // connection lives, so the handler's own (larger) future is allocated only
                // while a request runs.
                let mut resp = Box::pin(handler.call(req, peer)).await;
                state.in_flight.fetch_sub(1, Ordering::Relaxed);
                state.activity.notify_one();
                if n >= max_requests {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    state.close_now.notify_one();
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(8 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(64 * 1024)
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    // Pinned where it is made: `tokio::pin!` of a variable would keep a second, moved-from
    // copy of it (some 2.7 KiB) in this future, and so in every connection's task.
    let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(tls), svc));

    // With no request in flight, a connection must produce a complete request within the header
    // read timeout. hyper enforces that for HTTP/1.1 itself; this timer does it for HTTP/2 too
    // (a slow-loris HEADERS frame never reaches the service, so never counts as activity).
    let idle = limits.idle_timeout.min(limits.header_read_timeout);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = state.close_now.notified(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = state.activity.notified() => {}
            _ = tokio::time::sleep(idle), if !closing => {
                if state.in_flight.load(Ordering::Relaxed) == 0 {
                    debug!("idle timeout");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    stats.open_connections.fetch_sub(1, Ordering::Relaxed);
}

/// The TLS handshake, within the listener's time limit.
async fn handshake(
    stream: TcpStream,
    tls: Arc<ServerConfig>,
    limits: &Limits,
    stats: &ListenerStats,
) -> Option<TlsServerStream> {
    let accept = TlsServerStream::accept(stream, tls);
    match tokio::time::timeout(limits.handshake_timeout, accept).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err((e, tcp))) => {
            stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            debug!(error = %e, "TLS handshake failed");
            linger(tcp).await;
            None
        }
        Err(_) => {
            stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            debug!("TLS handshake timed out");
            None
        }
    }
}

/// Closes a connection whose handshake failed without resetting it. A TLS 1.3 client sends its
/// request right after its half of the handshake, before it learns that its certificate was
/// refused; closing with that request unread makes the kernel answer with a reset, which can
/// destroy the alert saying why before the client reads it ("broken pipe" instead of
/// "certificate revoked"). So: send FIN, then read and discard for a moment.
async fn linger(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    // On the heap: this future is part of every connection's, and this buffer is rarely needed.
    let mut buf = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Reads a request body within the listener's size and time limits.
pub async fn read_body(body: Incoming, limits: &Limits) -> Result<Bytes, Refusal> {
    let limited = Limited::new(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_read_timeout, limited.collect()).await {
        Err(_) => Err(Refusal::Timeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(Refusal::TooLarge {
                    limit: limits.max_body_bytes,
                })
            } else {
                Err(Refusal::Malformed(
                    "the request body could not be read".into(),
                ))
            }
        }
    }
}

/// Refuses a request early from its `Content-Length`, before reading the body.
pub fn check_content_length<B>(req: &Request<B>, limits: &Limits) -> Result<(), Refusal> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limits.max_body_bytes as u64 => Err(Refusal::TooLarge {
            limit: limits.max_body_bytes,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Empty200;

    impl Handler for Empty200 {
        async fn call(&self, _req: Request<Incoming>, _peer: Arc<Peer>) -> Response<Full<Bytes>> {
            Response::new(Full::new(Bytes::new()))
        }
    }

    /// Every open connection is one task holding this future for its whole life, idle or not:
    /// its size is part of what 25,000 idle agents cost (DESIGN: ≤ 512 MiB in all).
    #[tokio::test]
    async fn a_connection_task_stays_under_4_kib() {
        let (tls, _) = crate::net::tls::tests::self_signed();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (_, shutdown) = watch::channel(false);
        let slot = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let fut = serve_connection(
            Accepted {
                addr: stream.local_addr().unwrap(),
                stream,
                slot,
            },
            Arc::new(tls),
            Arc::new(Limits::default()),
            Empty200,
            shutdown,
            Arc::new(ListenerStats::default()),
        )
        .instrument(info_span!("conn"));
        let size = std::mem::size_of_val(&fut);
        assert!(size < 4096, "a connection's future takes {size} bytes");
    }
}
