//! A small HTTPS client over one kept-alive connection, used by agents, by the site server to pull
//! relays, and by the benchmarks. It speaks HTTP/2 when the server offers it and HTTP/1.1
//! otherwise, reconnects when the connection drops, and retries a request once when a reused
//! connection turned out to be dead (every mprelay request is idempotent).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;

use crate::wire::PROTOBUF;

/// Why a request got no HTTP response.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The URL is not `https://host[:port]`.
    #[error("invalid relay URL {0:?}: expected https://host[:port]")]
    BadUrl(String),
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// The TLS handshake failed (untrusted certificate, refused client certificate, …).
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection reset, protocol error, …).
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    /// No response within the request timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The connection ended with an error, such as the TLS alert a TLS 1.3 server sends after
    /// the handshake when it refuses the client certificate (revoked, unknown CA, missing).
    #[error("the connection to {addr} failed: {reason}")]
    Closed { addr: String, reason: String },
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct ClientResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ClientResponse {
    /// The `Retry-After` delay in seconds, when present.
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// The kept-alive connection: where requests go, and the task driving it, which ends with the
/// reason the connection failed, if it failed.
struct Conn {
    sender: Sender,
    task: tokio::task::JoinHandle<Option<String>>,
}

impl Conn {
    fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

/// Which HTTP versions to offer in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// Offer h2 and http/1.1; the server picks.
    Auto,
    Http1,
    Http2,
}

impl HttpVersion {
    pub fn alpn(self) -> &'static [&'static [u8]] {
        match self {
            HttpVersion::Auto => &[b"h2", b"http/1.1"],
            HttpVersion::Http1 => &[b"http/1.1"],
            HttpVersion::Http2 => &[b"h2"],
        }
    }
}

/// An HTTPS client bound to one origin.
pub struct HttpClient {
    connector: TlsConnector,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    authority: String,
    conn: Mutex<Option<Conn>>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// "outer: cause: root cause" of an error and its sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// A connection's stream that remembers the first error reading or writing it met.
struct Recorded<T> {
    inner: T,
    error: Arc<std::sync::Mutex<Option<String>>>,
}

impl<T> Recorded<T> {
    fn note<R>(&self, r: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        if let Poll::Ready(Err(e)) = &r {
            let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(error_chain(e));
            }
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Recorded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(r)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Recorded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note(r)
    }
}

impl HttpClient {
    /// `url` is `https://host[:port]` (a path, if any, is ignored). The TLS configuration decides
    /// trust, client certificate and ALPN.
    pub fn new(url: &str, tls: Arc<ClientConfig>) -> Result<Self, ClientError> {
        let uri: Uri = url.parse().map_err(|_| ClientError::BadUrl(url.into()))?;
        if uri.scheme_str() != Some("https") {
            return Err(ClientError::BadUrl(url.into()));
        }
        let host = uri
            .host()
            .ok_or_else(|| ClientError::BadUrl(url.into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let server_name =
            ServerName::try_from(host.clone()).map_err(|_| ClientError::BadUrl(url.into()))?;
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| ClientError::BadUrl(url.into()))?;
        Ok(Self {
            connector: TlsConnector::from(tls),
            host,
            port,
            server_name,
            authority,
            conn: Mutex::new(None),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
        })
    }

    /// `https://host:port` of this client.
    pub fn origin(&self) -> String {
        format!("https://{}", self.authority)
    }

    async fn connect(&self) -> Result<Conn, ClientError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| ClientError::Timeout(self.connect_timeout))?
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            self.connect_timeout,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| ClientError::Timeout(self.connect_timeout))?
        .map_err(|source| ClientError::Tls {
            addr: addr.clone(),
            source,
        })?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io_error = Arc::new(std::sync::Mutex::new(None));
        let io = TokioIo::new(Recorded {
            inner: tls,
            error: io_error.clone(),
        });
        // hyper's HTTP/1.1 client takes a read error on a connection with no request sent yet
        // for a plain end of stream, and so would lose the alert by which a TLS 1.3 server
        // refuses the client certificate if it arrives before the request goes out.
        let reason = move |r: Result<(), hyper::Error>| {
            r.err()
                .map(|e| error_chain(&e))
                .or_else(|| io_error.lock().unwrap_or_else(|p| p.into_inner()).take())
        };
        if h2 {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            let task = tokio::spawn(async move { reason(conn.await) });
            Ok(Conn {
                sender: Sender::H2(send),
                task,
            })
        } else {
            let (send, conn) = http1::handshake(io).await?;
            let task = tokio::spawn(async move { reason(conn.await) });
            Ok(Conn {
                sender: Sender::H1(send),
                task,
            })
        }
    }

    /// The error of a failed request, with the connection's own cause when it has one. A request
    /// only learns that its connection went away ("operation was canceled", "channel closed");
    /// the task driving the connection ends with the cause, such as the TLS alert a TLS 1.3
    /// server sends after the handshake when it refuses the client certificate. The connection
    /// was dropped before this is called, so that task ends promptly either way; the bound
    /// only guards against a peer that never lets it.
    async fn explain(
        &self,
        e: hyper::Error,
        task: tokio::task::JoinHandle<Option<String>>,
    ) -> ClientError {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Some(reason))) => ClientError::Closed {
                addr: format!("{}:{}", self.host, self.port),
                reason,
            },
            _ => e.into(),
        }
    }

    /// Drops the kept-alive connection; the next request opens a new one.
    pub async fn disconnect(&self) {
        *self.conn.lock().await = None;
    }

    /// POSTs a protobuf body.
    pub async fn post(&self, path: &str, body: Bytes) -> Result<ClientResponse, ClientError> {
        self.request(Method::POST, path, Some(body), &[]).await
    }

    /// GETs a path (with its query).
    pub async fn get(&self, path: &str) -> Result<ClientResponse, ClientError> {
        self.request(Method::GET, path, None, &[]).await
    }

    /// Sends one request and reads the whole response.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<ClientResponse, ClientError> {
        let timeout = self.request_timeout;
        tokio::time::timeout(timeout, self.request_inner(method, path, body, headers))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<ClientResponse, ClientError> {
        let mut guard = self.conn.lock().await;
        let mut reused = true;
        if guard.as_ref().is_none_or(Conn::is_closed) {
            *guard = Some(self.connect().await?);
            reused = false;
        }
        loop {
            let sender = &mut guard.as_mut().expect("connected above").sender;
            let req = self.build(
                &method,
                path,
                body.clone(),
                headers,
                matches!(sender, Sender::H2(_)),
            );
            let result = match sender {
                Sender::H1(s) => match s.ready().await {
                    Ok(()) => s.send_request(req).await,
                    Err(e) => Err(e),
                },
                Sender::H2(s) => match s.ready().await {
                    Ok(()) => s.send_request(req).await,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let body = body.collect().await?.to_bytes();
                    return Ok(ClientResponse {
                        status: parts.status,
                        headers: parts.headers,
                        body,
                    });
                }
                Err(e) if reused => {
                    // The server closed a kept-alive connection under us; one fresh try.
                    tracing::debug!(error = %e, "kept-alive connection failed; reconnecting");
                    *guard = Some(self.connect().await?);
                    reused = false;
                }
                Err(e) => {
                    let Conn { sender, task } = guard.take().expect("connected above");
                    drop(sender);
                    return Err(self.explain(e, task).await);
                }
            }
        }
    }

    fn build(
        &self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
        h2: bool,
    ) -> Request<Full<Bytes>> {
        // HTTP/2 takes :scheme and :authority from an absolute URI; HTTP/1.1 wants origin form
        // and a Host header.
        let mut b = Request::builder().method(method.clone());
        b = if h2 {
            b.uri(format!("https://{}{}", self.authority, path))
        } else {
            b.uri(path).header(header::HOST, &self.authority)
        };
        b = b.header(
            header::USER_AGENT,
            concat!("mprelay/", env!("CARGO_PKG_VERSION")),
        );
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, PROTOBUF);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Full::new(body.unwrap_or_default()))
            .expect("method, URI and headers are valid")
    }
}
