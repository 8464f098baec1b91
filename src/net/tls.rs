//! Server-side TLS streams that hold no buffers while they are idle.
//!
//! rustls's buffered `ServerConnection` (what tokio-rustls drives) keeps a 4 KiB receive buffer,
//! zero-filled and so resident, for the whole life of a connection: for a relay holding tens of
//! thousands of idle agents that is a fifth of its memory. This stream drives rustls's
//! unbuffered API instead and owns the buffers itself: received TLS bytes are kept only while
//! they hold a partial record, decrypted bytes only until the reader takes them, encrypted bytes
//! only until the socket takes them. An idle keep-alive connection holds none of the three.
//! It also saves a copy each way: records are decrypted straight into the reader's buffer and
//! encrypted straight into the one the socket is written from.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Room made for one read from the socket: a whole TLS record and its header.
const READ_ROOM: usize = 17 * 1024;
/// Most received bytes held unprocessed. A handshake message may span records up to 64 KiB;
/// anything past that is a peer trying to make the relay buffer without bound.
const MAX_INCOMING: usize = 0xffff + READ_ROOM;
/// Most plaintext encrypted by one write; the rest waits for the next one.
const MAX_WRITE: usize = 256 * 1024;
/// Below this, the slices of a vectored write are gathered into one record.
const GATHER: usize = 4096;
/// The lingering close (see [`TlsServerStream::poll_linger`]): the longest it lasts, the longest
/// it waits for the peer's next bytes, and the most bytes it throws away.
const LINGER_TIME: Duration = Duration::from_secs(10);
const LINGER_IDLE: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// A TLS connection accepted by a listener.
pub struct TlsServerStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received bytes rustls has not consumed yet (a partial record, or records not yet asked for).
    incoming: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet, from `plain_pos` on.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Encrypted bytes the socket has not taken yet, from `out_pos` on.
    outgoing: Vec<u8>,
    out_pos: usize,
    /// The peer closed its side (close_notify, or the socket's end).
    read_eof: bool,
    close_sent: bool,
    /// Our end of the socket is shut for writing (FIN sent).
    fin_sent: bool,
    /// rustls reported an error: the connection is unusable.
    failed: bool,
    /// The lingering close under way; on the heap, since few connections ever need one.
    linger: Option<Box<Linger>>,
}

/// A lingering close: until when, and how much was thrown away.
struct Linger {
    idle: Pin<Box<Sleep>>,
    end: Instant,
    discarded: usize,
}

/// What the caller of [`TlsServerStream::process`] wants from rustls.
enum Want<'a> {
    Read,
    Write(&'a [u8]),
    Close,
}

/// Where [`TlsServerStream::process`] stopped.
enum Step {
    /// Plaintext arrived.
    Plain,
    /// Every complete record was processed: going on needs more bytes from the peer. (A TLS 1.3
    /// server gets here with its flight out, before the client's Finished, as well as with the
    /// connection established.)
    NeedData,
    /// The write or close asked for was encrypted into `outgoing`.
    Done,
    /// The peer sent close_notify.
    PeerClosed,
}

impl TlsServerStream {
    /// Performs the server side of the handshake on `tcp`. On failure the socket comes back, with
    /// any alert telling the client why already sent, so that the caller can close it gently.
    pub async fn accept(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
    ) -> Result<Self, (io::Error, TcpStream)> {
        let conn = match UnbufferedServerConnection::new(config) {
            Ok(c) => c,
            Err(e) => return Err((tls_error(e), tcp)),
        };
        let mut s = TlsServerStream {
            tcp,
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_pos: 0,
            outgoing: Vec::new(),
            out_pos: 0,
            read_eof: false,
            close_sent: false,
            fin_sent: false,
            failed: false,
            linger: None,
        };
        match poll_fn(|cx| s.poll_handshake(cx)).await {
            Ok(()) => Ok(s),
            Err(e) => {
                let _ = poll_fn(|cx| s.poll_flush_out(cx)).await;
                Err((e, s.tcp))
            }
        }
    }

    /// The protocol agreed by ALPN, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_flush_out(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            let ended = match self.process(Want::Read, None)? {
                Step::NeedData => {
                    ready!(self.poll_flush_out(cx))?;
                    ready!(self.poll_fill(cx))? == 0
                }
                Step::PeerClosed => true,
                Step::Plain | Step::Done => false,
            };
            if ended {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                )));
            }
        }
    }

    /// Runs rustls over the received bytes until it has something for the caller. Handshake
    /// messages, key updates and alerts it produces on the way are queued in `outgoing`;
    /// plaintext goes into `out` as far as it fits, the rest into `plain`.
    fn process(&mut self, want: Want<'_>, mut out: Option<&mut ReadBuf<'_>>) -> io::Result<Step> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection failed earlier",
            ));
        }
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let mut extra = 0;
            let step: Result<Option<Step>, io::Error> = match state {
                Err(e) => Err(tls_error(e)),
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    let mut r = Ok(None);
                    while let Some(rec) = records.next_record() {
                        match rec {
                            Ok(rec) => {
                                extra += rec.discard;
                                let mut p = rec.payload;
                                if let Some(out) = out.as_mut()
                                    && self.plain_pos == self.plain.len()
                                {
                                    let n = out.remaining().min(p.len());
                                    out.put_slice(&p[..n]);
                                    p = &p[n..];
                                }
                                self.plain.extend_from_slice(p);
                                if !matches!(want, Want::Read) {
                                    // Writing: keep going until rustls lets us encrypt.
                                    continue;
                                }
                                r = Ok(Some(Step::Plain));
                            }
                            Err(e) => {
                                r = Err(tls_error(e));
                                break;
                            }
                        }
                    }
                    r
                }
                Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                    encode(&mut self.outgoing, &mut enc).map(|()| None)
                }
                // Queued in `outgoing`, which goes out before this stream waits for anything.
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    Ok(None)
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Step::NeedData)),
                Ok(ConnectionState::WriteTraffic(mut w)) => match want {
                    Want::Read => Ok(Some(Step::NeedData)),
                    // Room for the records' headers, content types and tags.
                    Want::Write(data) => append_sized(
                        &mut self.outgoing,
                        data.len() + (data.len() / 16384 + 1) * 64,
                        |out| w.encrypt(data, out).map_err(encrypt_short),
                    )
                    .map(|()| Some(Step::Done)),
                    Want::Close => append_sized(&mut self.outgoing, 64, |out| {
                        w.queue_close_notify(out).map_err(encrypt_short)
                    })
                    .map(|()| Some(Step::Done)),
                },
                Ok(ConnectionState::PeerClosed) => {
                    self.read_eof = true;
                    match want {
                        Want::Read => Ok(Some(Step::PeerClosed)),
                        // rustls lets us write once the closure was reported.
                        _ => Ok(None),
                    }
                }
                Ok(ConnectionState::Closed) => match want {
                    Want::Read => Ok(Some(Step::PeerClosed)),
                    _ => Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the TLS connection is closed",
                    )),
                },
                // Early data is never enabled, and any state a later rustls adds is a surprise.
                Ok(other) => Err(io::Error::other(format!(
                    "unexpected TLS connection state {other:?}"
                ))),
            };
            discard_front(&mut self.incoming, discard + extra);
            match step {
                Ok(Some(s)) => return Ok(s),
                Ok(None) => {}
                Err(e) => {
                    self.queue_alerts();
                    return Err(e);
                }
            }
        }
    }

    /// After an error: queues the alert rustls has for the peer, if any.
    fn queue_alerts(&mut self) {
        self.failed = true;
        // Only while rustls has records to send: past them it would process the peer's bytes
        // again, and so fail (and alert) a second time.
        while self.conn.wants_write() {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let encoded = match state {
                Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                    encode(&mut self.outgoing, &mut enc).is_ok()
                }
                _ => false,
            };
            discard_front(&mut self.incoming, discard);
            if !encoded {
                break;
            }
        }
        self.incoming = Vec::new();
    }

    /// Reads from the socket into `incoming`; `Ok(0)` is the peer's end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the peer sent a TLS message larger than allowed",
            )));
        }
        loop {
            if self.incoming.capacity() - self.incoming.len() < READ_ROOM / 4 {
                self.incoming.reserve(READ_ROOM);
            }
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.incoming.is_empty() {
                        // Nothing half-received: wait for the peer without holding a buffer.
                        self.incoming = Vec::new();
                    }
                    ready!(self.tcp.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes `outgoing` to the socket, then lets go of it.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.out_pos = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// After our close_notify and FIN: reads and throws away what the peer still sends, until it
    /// closes too, or goes quiet, or the time or byte bound is reached. A socket closed with
    /// received bytes unread answers them with a reset, and a client still sending a body that
    /// was refused from its head (413) would get "connection reset" instead of the answer waiting
    /// in its receive buffer. nginx's lingering close does the same. The bytes are not
    /// decrypted: nothing after our close_notify is read as data.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.read_eof || self.failed {
            return Poll::Ready(());
        }
        let l = self.linger.get_or_insert_with(|| {
            Box::new(Linger {
                idle: Box::pin(tokio::time::sleep(LINGER_IDLE)),
                end: Instant::now() + LINGER_TIME,
                discarded: 0,
            })
        });
        self.incoming = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.tcp.try_read(&mut buf) {
                Ok(0) => {
                    self.read_eof = true;
                    return Poll::Ready(());
                }
                Ok(n) => {
                    l.discarded += n;
                    if l.discarded > LINGER_BYTES {
                        return Poll::Ready(());
                    }
                    let next = (Instant::now() + LINGER_IDLE).min(l.end);
                    l.idle.as_mut().reset(next);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if l.idle.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                    match self.tcp.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(_) => return Poll::Ready(()),
            }
        }
    }

    /// Encrypts `data` into `outgoing`.
    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        self.process(Want::Write(data), None).map(drop)
    }

    /// Starts sending what was encrypted. The bytes are the stream's now: whatever the socket
    /// does not take yet goes with the next write or flush.
    fn start_sending(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_flush_out(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

impl AsyncRead for TlsServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // What rustls wants to say (key updates, alerts) goes out before we wait for more.
            ready!(this.poll_flush_out(cx))?;
            let before = buf.filled().len();
            match this.process(Want::Read, Some(&mut *buf)) {
                Ok(Step::Plain) => {
                    if buf.filled().len() > before {
                        return Poll::Ready(Ok(()));
                    }
                }
                Ok(Step::PeerClosed) => this.read_eof = true,
                Ok(Step::NeedData | Step::Done) => {
                    ready!(this.poll_flush_out(cx))?;
                    if ready!(this.poll_fill(cx))? == 0 {
                        // The socket ended without close_notify. Harmless for HTTP, whose
                        // messages carry their own lengths: hyper sees the end of the stream.
                        this.read_eof = true;
                    }
                }
                Err(e) => {
                    let _ = this.poll_flush_out(cx);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl AsyncWrite for TlsServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(MAX_WRITE);
        this.encrypt(&data[..n])?;
        this.start_sending(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut n = 0;
        if total <= GATHER {
            // A response's head and body in one record, not one each.
            let mut gathered = [0u8; GATHER];
            for b in bufs {
                gathered[n..n + b.len()].copy_from_slice(b);
                n += b.len();
            }
            this.encrypt(&gathered[..n])?;
        } else {
            for b in bufs.iter().filter(|b| !b.is_empty()) {
                if n >= MAX_WRITE {
                    break;
                }
                let take = b.len().min(MAX_WRITE - n);
                this.encrypt(&b[..take])?;
                n += take;
            }
        }
        this.start_sending(cx)?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            // A connection rustls already considers closed has nothing more to say.
            let _ = this.process(Want::Close, None);
        }
        ready!(this.poll_flush_out(cx))?;
        if !this.fin_sent {
            ready!(Pin::new(&mut this.tcp).poll_shutdown(cx))?;
            this.fin_sent = true;
        }
        ready!(this.poll_linger(cx));
        Poll::Ready(Ok(()))
    }
}

/// Why [`append_sized`]'s writer stopped short.
enum Short {
    /// It needs this many bytes of room.
    Grow(usize),
    Fail(io::Error),
}

/// Appends to `buf` what `write` puts into the room it is given, starting with `room` bytes and
/// giving it as many as it asks for when that is too few.
fn append_sized(
    buf: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Short>,
) -> io::Result<()> {
    let start = buf.len();
    loop {
        buf.resize(start + room, 0);
        match write(&mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                return Ok(());
            }
            Err(Short::Grow(need)) if need > room => room = need,
            Err(Short::Grow(_)) => {
                buf.truncate(start);
                return Err(io::Error::other("rustls asked for room it was given"));
            }
            Err(Short::Fail(e)) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
}

/// Appends the handshake record or alert rustls has ready to `buf`.
fn encode<Data>(buf: &mut Vec<u8>, enc: &mut EncodeTlsData<'_, Data>) -> io::Result<()> {
    append_sized(buf, 4096, |out| match enc.encode(out) {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(s)) => Err(Short::Grow(s.required_size)),
        // Nothing left to encode.
        Err(EncodeError::AlreadyEncoded) => Ok(0),
    })
}

fn encrypt_short(e: EncryptError) -> Short {
    match e {
        EncryptError::InsufficientSize(s) => Short::Grow(s.required_size),
        e => Short::Fail(io::Error::other(e)),
    }
}

/// Removes the first `n` bytes of `buf`, keeping its allocation.
fn discard_front(buf: &mut Vec<u8>, n: usize) {
    if n == 0 {
        return;
    }
    if n >= buf.len() {
        buf.clear();
    } else {
        buf.copy_within(n.., 0);
        buf.truncate(buf.len() - n);
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pki::{self, ClientAuth};
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server configuration for `localhost` with a fresh self-signed certificate, and that
    /// certificate.
    pub(crate) fn self_signed() -> (ServerConfig, rustls_pki_types::CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let server = pki::server_config(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            ClientAuth::None,
        )
        .unwrap();
        (server, cert.der().clone())
    }

    /// A server stream accepted on loopback and a tokio-rustls client connected to it.
    async fn pair() -> (TlsServerStream, tokio_rustls::client::TlsStream<TcpStream>) {
        let (server, cert) = self_signed();
        let client = pki::client_config(&[cert], None, &[b"http/1.1"]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap()
        };
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            TlsServerStream::accept(tcp, Arc::new(server))
                .await
                .map_err(|(e, _)| e)
                .unwrap()
        };
        let (c, s) = tokio::join!(connect, accept);
        (s, c)
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_an_idle_stream_holds_no_buffers() {
        let (mut server, mut client) = pair().await;
        assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));

        // Larger than a record, so it arrives in several, and larger than a read.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.flush().await.unwrap();
            client
        });
        let mut got = vec![0u8; big.len()];
        server.read_exact(&mut got).await.unwrap();
        assert!(got == big, "the server read other bytes than were sent");
        let mut client = writer.await.unwrap();

        server.write_all(&big).await.unwrap();
        server.flush().await.unwrap();
        let mut back = vec![0u8; big.len()];
        client.read_exact(&mut back).await.unwrap();
        assert!(back == big, "the client read other bytes than were sent");

        // A key update from the client: the server answers with its own and both go on.
        client.get_mut().1.refresh_traffic_keys().unwrap();
        client.write_all(b"after the key update").await.unwrap();
        client.flush().await.unwrap();
        let mut small = [0u8; 20];
        server.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"after the key update");
        server.write_all(b"answered").await.unwrap();
        server.flush().await.unwrap();
        let mut answer = [0u8; 8];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answered");

        // Idle now: a read that has to wait leaves nothing allocated.
        let mut one = [0u8; 1];
        let pending = futures_pending(server.read(&mut one)).await;
        assert!(pending, "a read with nothing sent completed");
        assert_eq!(
            (
                server.incoming.capacity(),
                server.plain.capacity(),
                server.outgoing.capacity()
            ),
            (0, 0, 0),
            "an idle stream still holds buffers"
        );

        // The client's close_notify is the end of the stream.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_forged_record_is_an_error_and_the_peer_is_told() {
        let (mut server, mut client) = pair().await;
        // An application-data record the client's keys did not seal.
        let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        forged.extend_from_slice(&[0x5a; 32]);
        client.get_mut().0.write_all(&forged).await.unwrap();
        let mut buf = [0u8; 64];
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // The alert went out: the client learns why rather than seeing the connection drop.
        let err = client.read(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("BadRecordMac"), "{err}");
    }

    /// hyper writes a response's head and body as one vectored write: small ones go out
    /// gathered, large ones slice by slice, in order either way.
    #[tokio::test]
    async fn vectored_writes_arrive_whole_and_in_order() {
        let (mut server, mut client) = pair().await;
        let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
        for body in [&body[..300], &body[..]] {
            let mut want = head.clone();
            want.extend_from_slice(body);
            let mut sent = 0;
            while sent < want.len() {
                let (h, b) = want[sent..].split_at(head.len().saturating_sub(sent));
                let slices = [IoSlice::new(h), IoSlice::new(b)];
                sent += server.write_vectored(&slices).await.unwrap();
            }
            server.flush().await.unwrap();
            let mut got = vec![0u8; want.len()];
            client.read_exact(&mut got).await.unwrap();
            assert!(got == want, "the client read other bytes than were written");
        }
    }

    /// A peer cannot make the relay buffer a handshake message without bound: one declared
    /// larger than 64 KiB fails the handshake (rustls refuses it from its header;
    /// `MAX_INCOMING` is the stream's own bound should that ever change).
    #[tokio::test]
    async fn an_endless_handshake_message_is_refused() {
        let (server, _) = self_signed();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let accept = tokio::spawn(TlsServerStream::accept(accepted, Arc::new(server)));
        // A ClientHello declaring 16 MiB, sent as full records for as long as the server reads.
        let mut first = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff];
        first.resize(5 + 0x4000, 0x41);
        let mut more = vec![0x16, 0x03, 0x01, 0x40, 0x00];
        more.resize(5 + 0x4000, 0x41);
        let mut records = std::iter::once(first)
            .chain(std::iter::repeat(more))
            .take(64);
        let send = async {
            for r in records.by_ref() {
                if tcp.write_all(&r).await.is_err() {
                    break;
                }
            }
        };
        let (_, result) = tokio::join!(send, accept);
        let err = result.unwrap().err().expect("the handshake must fail").0;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    /// Polls `f` once: true when it is pending.
    async fn futures_pending<F: std::future::Future>(f: F) -> bool {
        let mut f = std::pin::pin!(f);
        poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_pending())).await
    }
}
