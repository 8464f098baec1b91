//! What the relay benchmarks share: a relay under test (a child `mprelay relay` process, the
//! relay in this process, or one already running), enrolled devices, pre-sealed reports, the
//! relay's memory, and percentiles.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use prost::Message;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::demo::Loopback;
use crate::envelope::{self, DeviceKey, DeviceSigner};
use crate::ids::{KeyEpoch, MessageId};
use crate::net::HttpClient;
use crate::pki;
use crate::proto::{
    EnrollRequest, EnrollResponse, Submission, SubmissionReceipt, submission::Body,
};
use crate::relay::RelayHandle;
use crate::spool::{Spool, SpoolConfig};
use crate::wire::PROTOBUF;

/// Where the relay under test runs.
pub enum RelayUnderTest {
    /// `mprelay relay` in a child process: the relay has its own runtime and its memory is its
    /// own, as in production.
    Child {
        child: Child,
        pid: u32,
        spool: PathBuf,
    },
    /// The relay in this process, on this process's runtime.
    InProcess { handle: RelayHandle, spool: PathBuf },
    /// A relay started by someone else; its spool (if given) is read to check the outcome.
    External { spool: Option<PathBuf> },
}

/// A relay to benchmark and how to reach it.
pub struct Target {
    pub relay: RelayUnderTest,
    /// `https://127.0.0.1:PORT` of the agent-facing listener.
    pub agent_url: String,
    /// `https://127.0.0.1:PORT` of the site-facing listener, when known.
    pub site_url: Option<String>,
    pub lb: Loopback,
}

/// How the benchmark's relay is configured beyond the defaults.
#[derive(Debug, Clone)]
pub struct RelayTuning {
    pub max_connections: usize,
    /// Idle and header-read timeouts (the relay closes idle connections after this).
    pub idle_timeout: Duration,
    pub spool_max_records: u64,
    pub spool_max_bytes: u64,
}

impl Target {
    /// Starts `mprelay relay` (this same executable) as a child with a configuration written to
    /// `dir`, waits until it listens, and returns its addresses.
    pub async fn child(dir: &Path, lb: Loopback, t: &RelayTuning) -> anyhow::Result<Self> {
        let spool = dir.join("spool.db");
        let p = &lb.paths;
        let toml = format!(
            r#"relay_id = "bench-relay"
agent_listen = "127.0.0.1:0"
site_listen = "127.0.0.1:0"

[tls]
cert = {cert:?}
key = {key:?}
site_ca = {ca:?}

[secrets]
master = {{ 1 = {master:?} }}
enrollment = {enroll:?}

[spool]
path = {spool:?}
max_records = {max_records}
max_bytes = {max_bytes}
verify_on_open = false

[limits]
max_connections = {max_conns}
header_read_timeout_ms = {idle_ms}
idle_timeout_ms = {idle_ms}

[intake]
enroll_rate_per_s = 1000000
enroll_burst = 1000000
enroll_peer_rate_per_s = 1000000
enroll_peer_burst = 1000000
"#,
            cert = p.relay_cert(),
            key = p.relay_key(),
            ca = p.ca_cert(),
            master = p.master_secret(1),
            enroll = p.enrollment_secret(),
            spool = spool,
            max_records = t.spool_max_records,
            max_bytes = t.spool_max_bytes,
            max_conns = t.max_connections,
            idle_ms = t.idle_timeout.as_millis(),
        );
        let config = dir.join("relay.toml");
        std::fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;
        let (child, pid, line) = spawn_mprelay("relay", &config).await?;
        let agent = line
            .split("agents on ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .ok_or_else(|| anyhow!("unexpected relay output: {line}"))?;
        let site = line
            .split("site servers on ")
            .nth(1)
            .ok_or_else(|| anyhow!("unexpected relay output: {line}"))?;
        let (agent, site) = (agent.trim().to_string(), site.trim().to_string());
        Ok(Self {
            relay: RelayUnderTest::Child { child, pid, spool },
            agent_url: format!("https://{agent}"),
            site_url: Some(format!("https://{site}")),
            lb,
        })
    }

    /// Starts the relay in this process.
    pub async fn in_process(dir: &Path, lb: Loopback, t: &RelayTuning) -> anyhow::Result<Self> {
        let spool = dir.join("spool.db");
        let mut opts = lb.relay_options("bench-relay", &spool)?;
        opts.agent_limits.max_connections = t.max_connections;
        opts.agent_limits.idle_timeout = t.idle_timeout;
        opts.agent_limits.header_read_timeout = t.idle_timeout;
        opts.spool.max_records = t.spool_max_records;
        opts.spool.max_bytes = t.spool_max_bytes;
        opts.spool.verify_on_open = false;
        opts.intake.enroll_rate_per_s = 1e6;
        opts.intake.enroll_burst = 1e6;
        opts.intake.enroll_peer_rate_per_s = 1e6;
        opts.intake.enroll_peer_burst = 1e6;
        let handle = lb.start_relay(opts).await?;
        Ok(Self {
            agent_url: format!("https://127.0.0.1:{}", handle.agent_addr.port()),
            site_url: Some(format!("https://127.0.0.1:{}", handle.site_addr.port())),
            relay: RelayUnderTest::InProcess { handle, spool },
            lb,
        })
    }

    /// A relay already running at `url`, set up with the PKI in `certs`.
    pub fn external(url: &str, certs: &Path, spool: Option<PathBuf>) -> Self {
        Self {
            relay: RelayUnderTest::External { spool },
            agent_url: url.trim_end_matches('/').to_string(),
            site_url: None,
            lb: Loopback {
                paths: pki::PkiPaths::new(certs),
            },
        }
    }

    /// The relay's process id, when it runs in its own process here.
    pub fn relay_pid(&self) -> Option<u32> {
        match &self.relay {
            RelayUnderTest::Child { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// The relay's resident memory now and at its peak, in MiB (`None` when it is not known).
    pub fn relay_memory(&self) -> Option<Memory> {
        match &self.relay {
            RelayUnderTest::Child { pid, .. } => Memory::of(&format!("/proc/{pid}/status")),
            RelayUnderTest::InProcess { .. } => Memory::of("/proc/self/status"),
            RelayUnderTest::External { .. } => None,
        }
    }

    /// The relay's metrics page (Prometheus text), read over its site-facing listener.
    pub async fn metrics(&self) -> Option<String> {
        let url = self.site_url.as_ref()?;
        let client = HttpClient::new(url, self.lb.site_client_tls().ok()?).ok()?;
        let resp = client.get("/metrics").await.ok()?;
        (resp.status == 200).then(|| String::from_utf8_lossy(&resp.body).into_owned())
    }

    /// Mean records per spool commit so far, from the relay's metrics.
    pub async fn mean_commit_batch(&self) -> Option<f64> {
        let m = self.metrics().await?;
        let value = |name: &str| -> Option<f64> {
            m.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        let sum = value("mprelay_relay_group_commit_batch_size_sum")?;
        let count = value("mprelay_relay_group_commit_batch_size_count")?;
        (count > 0.0).then(|| sum / count)
    }

    /// Stops the relay — a child is killed with SIGKILL, so what it answered 202 must already be
    /// on disk — and returns the spool to audit, if there is one.
    pub async fn stop(self) -> anyhow::Result<Option<PathBuf>> {
        match self.relay {
            RelayUnderTest::Child {
                mut child, spool, ..
            } => {
                child.kill().await.context("killing the relay")?;
                Ok(Some(spool))
            }
            RelayUnderTest::InProcess { handle, spool } => {
                handle.shutdown().await;
                Ok(Some(spool))
            }
            RelayUnderTest::External { spool } => Ok(spool),
        }
    }

    /// A TLS client configuration for agents of this relay. Without `resumption` every
    /// connection makes a full handshake; the relay's certificate chain is then verified in full
    /// once and the verdict kept for that exact certificate ([`VerdictCache`]).
    pub fn agent_tls(
        &self,
        alpn: &[&[u8]],
        resumption: bool,
    ) -> anyhow::Result<rustls::ClientConfig> {
        let roots = pki::load_certs(&self.lb.paths.ca_cert())?;
        let mut cfg = pki::client_config(&roots, None, alpn)?;
        if !resumption {
            cfg.resumption = rustls::client::Resumption::disabled();
            let mut store = rustls::RootCertStore::empty();
            for r in roots {
                store.add(r)?;
            }
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(store),
                pki::provider(),
            )
            .build()?;
            cfg.dangerous()
                .set_certificate_verifier(Arc::new(VerdictCache {
                    inner,
                    verified: std::sync::Mutex::new(None),
                }));
        }
        Ok(cfg)
    }
}

/// Starts `mprelay ROLE --config CONFIG` (this same executable) as a child that is killed when
/// dropped, and waits for the first line it prints on stdout, which it prints once it serves
/// (its listeners are bound, or its database is open). Returns the child, its pid and that line.
pub async fn spawn_mprelay(role: &str, config: &Path) -> anyhow::Result<(Child, u32, String)> {
    let exe = std::env::current_exe().context("finding the mprelay executable")?;
    let mut child = Command::new(exe)
        .arg(role)
        .arg("--config")
        .arg(config)
        .env("MPRELAY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the {role} process"))?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("the {role} exited at once"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no {role} stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .with_context(|| format!("the {role} did not start within 60 s"))??
        .ok_or_else(|| anyhow!("the {role} exited before serving"))?;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, pid, line))
}

/// The load generator's certificate check for full handshakes: the relay's chain is verified in
/// full the first time and the verdict remembered for that exact certificate and name, as
/// long-running clients do; every handshake still verifies the relay's CertificateVerify
/// signature, so each connection proves the relay holds the key. It keeps the load generator's
/// share of the two cores (a chain verification is two ECDSA verifies) for the relay.
#[derive(Debug)]
struct VerdictCache {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    verified: std::sync::Mutex<Option<(Vec<u8>, String)>>,
}

impl rustls::client::danger::ServerCertVerifier for VerdictCache {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let name = server_name.to_str();
        if let Ok(v) = self.verified.lock()
            && v.as_ref()
                .is_some_and(|(der, n)| der.as_slice() == end_entity.as_ref() && *n == name)
        {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Ok(mut v) = self.verified.lock() {
            *v = Some((end_entity.as_ref().to_vec(), name.into_owned()));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resident memory of a process.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_mib: f64,
    pub peak_mib: f64,
}

impl Memory {
    fn of(status_path: &str) -> Option<Self> {
        let s = std::fs::read_to_string(status_path).ok()?;
        let kib = |key: &str| -> Option<f64> {
            s.lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        };
        Some(Self {
            rss_mib: kib("VmRSS:")? / 1024.0,
            peak_mib: kib("VmHWM:")? / 1024.0,
        })
    }
}

/// An enrolled device the benchmark seals reports for.
pub struct Device {
    pub signer: DeviceSigner,
    pub epoch: KeyEpoch,
    pub key: DeviceKey,
}

/// Enrolls `n` fresh devices over a few kept-alive connections.
pub async fn enroll(target: &Target, n: usize) -> anyhow::Result<Vec<Device>> {
    let secret = target.lb.enrollment_secret()?;
    let tls = Arc::new(target.agent_tls(&[b"http/1.1"], true)?);
    let workers = n.clamp(1, 8);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let client = HttpClient::new(&target.agent_url, tls.clone())?;
        let secret = secret.clone();
        let count = n / workers + usize::from(w < n % workers);
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                let (signer, _) = DeviceSigner::generate();
                let req = EnrollRequest {
                    enrollment_secret: secret.clone(),
                    hostname: format!("bench-{}", &signer.device_id().hex()[..8]),
                    os: "linux x86_64".into(),
                    agent_version: env!("CARGO_PKG_VERSION").into(),
                    hardware_id: String::new(),
                    device_public_key: signer.public_key().as_bytes().to_vec(),
                };
                let resp = client
                    .post("/v1/enroll", Bytes::from(req.encode_to_vec()))
                    .await?;
                if resp.status != 200 {
                    bail!("enrollment answered {}", resp.status);
                }
                let er = EnrollResponse::decode(resp.body.as_ref())
                    .context("decoding the enrollment response")?;
                out.push(Device {
                    epoch: KeyEpoch::try_from(er.key_epoch).map_err(|e| anyhow!("{e}"))?,
                    key: DeviceKey::try_from(er.device_key.as_slice())
                        .map_err(|_| anyhow!("device key is not 32 bytes"))?,
                    signer,
                });
            }
            Ok::<_, anyhow::Error>(out)
        });
    }
    let mut devices = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        devices.extend(r.context("enrollment task panicked")??);
    }
    Ok(devices)
}

/// A sealed report ready to send.
pub struct Sealed {
    pub message_id: MessageId,
    pub body: Bytes,
}

/// Seals `n` unique 35-setting reports, spread round-robin over `devices`, on every core.
pub fn seal_reports(devices: &[Device], n: usize) -> Vec<Sealed> {
    seal_reports_with(devices, n, 35)
}

/// Seals `n` unique reports of `settings` settings, spread round-robin over `devices`, on every
/// core.
pub fn seal_reports_with(devices: &[Device], n: usize, settings: usize) -> Vec<Sealed> {
    let threads = cores().min(n.max(1));
    let now = crate::clock::now_ms();
    let mut out: Vec<Vec<Sealed>> = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| {
                            let d = &devices[i % devices.len()];
                            let message_id = MessageId::new();
                            let sub = Submission {
                                message_id: message_id.to_string(),
                                device_id: d.signer.device_id().hex(),
                                created_unix_ms: now,
                                body: Some(Body::ComplianceReport(
                                    crate::sample::report_with_settings(settings, i as u64),
                                )),
                            };
                            let sealed =
                                envelope::seal(&d.signer, d.epoch, &d.key, &sub.encode_to_vec());
                            Sealed {
                                message_id,
                                body: Bytes::from(sealed.encode_to_vec()),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        out = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
    });
    // Interleave back into index order, so device i % D sends report i.
    let mut iters: Vec<_> = out.into_iter().map(Vec::into_iter).collect();
    let mut all = Vec::with_capacity(n);
    'outer: loop {
        for it in iters.iter_mut() {
            match it.next() {
                Some(s) => all.push(s),
                None => break 'outer,
            }
        }
    }
    all
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Dest {
    pub addr: SocketAddr,
    pub authority: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl Dest {
    pub fn new(url: &str, tls: ClientConfig) -> anyhow::Result<Self> {
        let uri: http::Uri = url.parse().with_context(|| format!("relay URL {url:?}"))?;
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow!("relay URL {url:?} has no host"))?
            .to_string();
        let host = uri.host().unwrap_or("127.0.0.1").to_string();
        let port = uri.port_u16().unwrap_or(443);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))?
            .next()
            .ok_or_else(|| anyhow!("relay URL {url:?} resolves to no address"))?;
        Ok(Self {
            addr,
            authority,
            server_name: ServerName::try_from(host)?,
            connector: TlsConnector::from(Arc::new(tls)),
        })
    }

    pub async fn connect(&self) -> anyhow::Result<TlsStream<TcpStream>> {
        self.connect_from(None).await
    }

    /// Connects from a given local address (spreading many connections over several loopback
    /// addresses keeps each under the ephemeral port range).
    pub async fn connect_from(
        &self,
        local: Option<IpAddr>,
    ) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = match local {
            None => TcpStream::connect(self.addr).await?,
            Some(ip) => {
                let sock = tokio::net::TcpSocket::new_v4()?;
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(self.addr).await?
            }
        };
        tcp.set_nodelay(true)?;
        Ok(self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?)
    }

    pub fn request(&self, body: Bytes, h2: bool, close: bool) -> Request<Full<Bytes>> {
        let mut b = Request::builder().method(Method::POST);
        b = if h2 {
            b.uri(format!("https://{}/v1/submissions", self.authority))
        } else {
            b.uri("/v1/submissions")
                .header(header::HOST, self.authority.as_str())
        };
        b = b.header(header::CONTENT_TYPE, PROTOBUF);
        if close {
            b = b.header(header::CONNECTION, "close");
        }
        b.body(Full::new(body))
            .expect("method, URI and headers are valid")
    }
}

/// A minimal HTTP/1.1 client on one TLS connection: each request goes out in one write and the
/// response is parsed in place. It keeps the load generator's own CPU small, so that the relay
/// it shares the cores with gets as much of them as it can use; the relay sees the same
/// HTTP/1.1 exchange an agent's client makes.
pub struct LeanConn {
    tls: TlsStream<TcpStream>,
    out: Vec<u8>,
    buf: Vec<u8>,
    filled: usize,
    consumed: usize,
}

impl LeanConn {
    pub async fn open(dest: &Dest) -> anyhow::Result<Self> {
        Self::open_from(dest, None).await
    }

    pub async fn open_from(dest: &Dest, local: Option<IpAddr>) -> anyhow::Result<Self> {
        Ok(Self {
            tls: dest.connect_from(local).await?,
            out: Vec::new(),
            buf: vec![0; 1024],
            filled: 0,
            consumed: 0,
        })
    }

    /// GETs a path; returns the status.
    pub async fn get(&mut self, dest: &Dest, path: &str) -> anyhow::Result<u16> {
        use std::io::Write;
        self.out.clear();
        write!(
            self.out,
            "GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n",
            dest.authority
        )?;
        let (status, _) = self.exchange().await?;
        Ok(status)
    }

    /// POSTs a sealed report; true when the relay answered 202 with the receipt for `id`.
    pub async fn submit(
        &mut self,
        dest: &Dest,
        body: &[u8],
        id: &MessageId,
        close: bool,
    ) -> anyhow::Result<bool> {
        use std::io::Write;
        self.out.clear();
        write!(
            self.out,
            "POST /v1/submissions HTTP/1.1\r\nhost: {}\r\ncontent-type: {PROTOBUF}\r\n\
             content-length: {}\r\n{}\r\n",
            dest.authority,
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        )?;
        self.out.extend_from_slice(body);
        let (status, range) = self.exchange().await?;
        Ok(status == 202
            && SubmissionReceipt::decode(&self.buf[range])
                .is_ok_and(|r| r.message_id.parse().ok() == Some(*id)))
    }

    /// Writes `self.out` in one go and reads one response; returns its status and where its
    /// body is in `self.buf` (valid until the next exchange).
    async fn exchange(&mut self) -> anyhow::Result<(u16, std::ops::Range<usize>)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The previous response's bytes are consumed now.
        self.buf.copy_within(self.consumed..self.filled, 0);
        self.filled -= self.consumed;
        self.consumed = 0;
        self.tls.write_all(&self.out).await?;
        self.tls.flush().await?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = resp.parse(&self.buf[..self.filled])? {
                let status = resp.code.unwrap_or(0);
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .ok_or_else(|| anyhow!("response without content-length"))?;
                let end = head + len;
                if self.buf.len() < end {
                    self.buf.resize(end, 0);
                }
                while self.filled < end {
                    let n = self.tls.read(&mut self.buf[self.filled..]).await?;
                    if n == 0 {
                        bail!("connection closed mid-response");
                    }
                    self.filled += n;
                }
                self.consumed = end;
                return Ok((status, head..end));
            }
            if self.filled == self.buf.len() {
                let more = (self.buf.len() * 2).max(1024);
                self.buf.resize(more, 0);
            }
            let n = self.tls.read(&mut self.buf[self.filled..]).await?;
            if n == 0 {
                bail!("connection closed before a response");
            }
            self.filled += n;
        }
    }
}

/// Checks that every id in `accepted` is in the spool at `path`; returns how many records
/// (of any kind) the spool holds.
pub async fn audit_spool(path: &Path, accepted: &[MessageId]) -> anyhow::Result<u64> {
    let mut cfg = SpoolConfig::new(path);
    // A full integrity check of the file the killed relay left behind.
    cfg.verify_on_open = true;
    let spool = Spool::open(cfg)
        .await
        .with_context(|| format!("opening the spool {} to audit it", path.display()))?;
    let ids = spool.message_ids().await?;
    spool.close().await;
    let missing = accepted
        .iter()
        .filter(|id| !ids.contains(id.as_bytes()))
        .count();
    if missing > 0 {
        bail!(
            "{missing} of {} accepted reports are missing from the spool {}",
            accepted.len(),
            path.display()
        );
    }
    Ok(ids.len() as u64)
}

/// Cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The `p`-th percentile (0–100) of sorted values.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// Rounds for the JSON line.
pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}
