//! Spawns relays and site servers on port 0 with a fresh PKI and database in a temporary
//! directory, and gives tests the clients and raw devices they need to talk to them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mprelay::agent::Agent;
use mprelay::clock;
use mprelay::demo::Loopback;
use mprelay::envelope::{self, DeviceKey, DeviceSigner};
use mprelay::ids::KeyEpoch;
use mprelay::net::{ClientResponse, HttpClient, HttpVersion};
use mprelay::pki;
use mprelay::proto::{
    ComplianceReport, EnrollRequest, EnrollResponse, ErrorResponse, SealedSubmission, Submission,
    submission::Body,
};
use mprelay::relay::{RelayHandle, RelayOptions};
use mprelay::site::{PullOptions, SiteHandle};
use mprelay::store::Store;
use prost::Message;
use tempfile::TempDir;

/// A relay, a site server and a SQLite site database in a temporary directory.
pub struct TestSystem {
    pub dir: TempDir,
    pub lb: Loopback,
    pub relay: Option<RelayHandle>,
    pub store: Store,
    pub site: Option<SiteHandle>,
    relay_opts: Box<dyn Fn(&mut RelayOptions) + Send + Sync>,
}

impl TestSystem {
    /// Relay and site server running.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Relay (with options adjusted by `tweak`) and site server running.
    pub async fn start_with(tweak: impl Fn(&mut RelayOptions) + Send + Sync + 'static) -> Self {
        let mut s = Self::relay_only(tweak).await;
        s.start_site();
        s
    }

    /// Relay and site server running, the site database at `url` (e.g. a PostgreSQL one).
    pub async fn start_on(url: &str) -> Self {
        let mut s = Self::relay_only_on(|_| {}, Some(url)).await;
        s.start_site();
        s
    }

    /// Relay running; no site server yet.
    pub async fn relay_only(tweak: impl Fn(&mut RelayOptions) + Send + Sync + 'static) -> Self {
        Self::relay_only_on(tweak, None).await
    }

    /// Relay running, site database at `url` or SQLite in the temporary directory.
    pub async fn relay_only_on(
        tweak: impl Fn(&mut RelayOptions) + Send + Sync + 'static,
        url: Option<&str>,
    ) -> Self {
        mprelay::pki::install_default_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let lb = Loopback::create(&dir.path().join("certs")).expect("PKI");
        let url = url
            .map(str::to_string)
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("site.db").display()));
        let store = Store::connect(&url).await.expect("site database");
        let mut s = Self {
            dir,
            lb,
            relay: None,
            store,
            site: None,
            relay_opts: Box::new(tweak),
        };
        s.start_relay().await;
        s
    }

    pub fn spool_path(&self) -> PathBuf {
        self.dir.path().join("spool.db")
    }

    pub async fn start_relay(&mut self) {
        let mut opts = self
            .lb
            .relay_options("test-relay", &self.spool_path())
            .expect("relay options");
        (self.relay_opts)(&mut opts);
        self.relay = Some(self.lb.start_relay(opts).await.expect("relay starts"));
    }

    pub async fn stop_relay(&mut self) {
        if let Some(r) = self.relay.take() {
            r.shutdown().await;
        }
    }

    pub fn relay(&self) -> &RelayHandle {
        self.relay.as_ref().expect("relay running")
    }

    pub fn start_site(&mut self) {
        let site = self
            .lb
            .start_site(
                self.store.clone(),
                &[self.relay()],
                fast_pull(),
                clock::system(),
            )
            .expect("site starts");
        self.site = Some(site);
    }

    pub async fn stop_site(&mut self) {
        if let Some(s) = self.site.take() {
            s.shutdown().await;
        }
    }

    /// A client of the agent-facing listener (no client certificate).
    pub fn agent_client(&self, version: HttpVersion) -> HttpClient {
        let roots = pki::load_certs(&self.lb.paths.ca_cert()).unwrap();
        let tls = pki::client_config(&roots, None, version.alpn()).unwrap();
        HttpClient::new(
            &format!("https://127.0.0.1:{}", self.relay().agent_addr.port()),
            Arc::new(tls),
        )
        .unwrap()
    }

    /// A client of the site-facing listener, with the site server's certificate.
    pub fn site_client(&self) -> HttpClient {
        HttpClient::new(
            &format!("https://127.0.0.1:{}", self.relay().site_addr.port()),
            self.lb.site_client_tls().unwrap(),
        )
        .unwrap()
    }

    /// An enrolled agent keeping its state under `name`.
    pub async fn agent(&self, name: &str) -> Agent {
        let opts = self
            .lb
            .agent_options(self.relay(), &self.dir.path().join("agents").join(name))
            .unwrap();
        Agent::open(opts).await.expect("agent enrolls")
    }

    /// Records assigned by the spool so far (accepted records never go away from this count).
    pub fn spooled(&self) -> u64 {
        self.relay().spool.stats().last_seq.load(Ordering::SeqCst)
    }

    /// Waits until the site database holds `n` reports (fails the test after 30 s).
    pub async fn wait_for_reports(&self, n: u64) {
        wait_until(Duration::from_secs(30), || async {
            self.store.counts().await.unwrap().reports >= n
        })
        .await
        .unwrap_or_else(|_| panic!("site database never reached {n} reports"));
    }

    pub fn enrollment_secret(&self) -> String {
        self.lb.enrollment_secret().unwrap()
    }
}

/// Pull options for tests: short long-polls and retries.
pub fn fast_pull() -> PullOptions {
    PullOptions {
        wait: Duration::from_millis(200),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    }
}

/// Polls `cond` until it holds or `limit` passes. For conditions that live in another process or
/// a database, where there is nothing to await.
pub async fn wait_until<F, Fut>(limit: Duration, mut cond: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    loop {
        if cond().await {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A device driven by hand: it can seal whatever the test wants.
pub struct RawDevice {
    pub signer: DeviceSigner,
    pub epoch: KeyEpoch,
    pub key: DeviceKey,
}

impl RawDevice {
    /// Enrolls a fresh key pair over `client`.
    pub async fn enroll(client: &HttpClient, secret: &str) -> Self {
        let (signer, _) = DeviceSigner::generate();
        let resp = client
            .post(
                "/v1/enroll",
                Bytes::from(
                    EnrollRequest {
                        enrollment_secret: secret.into(),
                        hostname: "raw-device".into(),
                        os: "linux".into(),
                        agent_version: "test".into(),
                        hardware_id: "hw".into(),
                        device_public_key: signer.public_key().as_bytes().to_vec(),
                    }
                    .encode_to_vec(),
                ),
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", describe(&resp));
        let er = EnrollResponse::decode(resp.body.as_ref()).unwrap();
        Self {
            epoch: KeyEpoch::try_from(er.key_epoch).unwrap(),
            key: DeviceKey::try_from(er.device_key.as_slice()).unwrap(),
            signer,
        }
    }

    pub fn submission(&self, id: &str, created_ms: i64, report: ComplianceReport) -> Submission {
        Submission {
            message_id: id.into(),
            device_id: self.signer.device_id().hex(),
            created_unix_ms: created_ms,
            body: Some(Body::ComplianceReport(report)),
        }
    }

    pub fn seal(&self, sub: &Submission) -> SealedSubmission {
        envelope::seal(&self.signer, self.epoch, &self.key, &sub.encode_to_vec())
    }

    /// A sealed, valid report with a fresh message id.
    pub fn sealed_report(&self, seed: u64) -> (String, Vec<u8>) {
        let id = mprelay::ids::MessageId::new().to_string();
        let sub = self.submission(&id, clock::now_ms(), mprelay::sample::report(0, seed));
        (id, self.seal(&sub).encode_to_vec())
    }
}

/// "STATUS code: message" of a response, for assertion messages.
pub fn describe(resp: &ClientResponse) -> String {
    let e = ErrorResponse::decode(resp.body.as_ref()).unwrap_or_default();
    format!("{} {}: {}", resp.status.as_u16(), e.code, e.message)
}

/// The error code of a refusal.
pub fn code(resp: &ClientResponse) -> String {
    ErrorResponse::decode(resp.body.as_ref())
        .map(|e| e.code)
        .unwrap_or_default()
}

pub fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// A TLS-terminating proxy in front of the relay, with the relay's certificate: bodies over
/// `limit` get its own page with status `status` (no ErrorResponse); the rest go on to the relay.
pub struct RefusingProxy {
    handler: ProxyHandler,
    server: mprelay::net::ServerHandle,
}

#[derive(Clone)]
struct ProxyHandler {
    relay: Arc<HttpClient>,
    limit: usize,
    status: u16,
    refused: Arc<std::sync::atomic::AtomicU64>,
}

impl RefusingProxy {
    pub async fn start(sys: &TestSystem, limit: usize, status: u16) -> Self {
        let paths = &sys.lb.paths;
        let tls = pki::server_config(
            pki::load_certs(&paths.relay_cert()).unwrap(),
            pki::load_private_key(&paths.relay_key()).unwrap(),
            pki::ClientAuth::None,
        )
        .unwrap();
        let handler = ProxyHandler {
            relay: Arc::new(sys.agent_client(HttpVersion::Http1)),
            limit,
            status,
            refused: Default::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = mprelay::net::server::spawn(
            listener,
            Arc::new(tls),
            mprelay::net::Limits::default(),
            handler.clone(),
            "proxy",
        )
        .unwrap();
        Self { handler, server }
    }

    /// An agent enrolled through the proxy, keeping its state under `name`.
    pub async fn agent(&self, sys: &TestSystem, name: &str) -> Agent {
        let mut opts = sys
            .lb
            .agent_options(sys.relay(), &sys.dir.path().join("agents").join(name))
            .unwrap();
        opts.relay_url = format!("https://127.0.0.1:{}", self.server.addr.port());
        Agent::open(opts).await.unwrap()
    }

    /// Requests the proxy refused so far.
    pub fn refused(&self) -> u64 {
        self.handler.refused.load(Ordering::SeqCst)
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

impl mprelay::net::Handler for ProxyHandler {
    async fn call(
        &self,
        req: http::Request<hyper::body::Incoming>,
        _peer: Arc<mprelay::net::Peer>,
    ) -> http::Response<http_body_util::Full<Bytes>> {
        use http_body_util::BodyExt;
        let path = req.uri().path().to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        if body.len() > self.limit {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return http::Response::builder()
                .status(self.status)
                .header("content-type", "text/html")
                .body(format!("<html><h1>{} refused by the proxy</h1></html>", self.status).into())
                .unwrap();
        }
        let r = self.relay.post(&path, body).await.unwrap();
        let mut resp = http::Response::new(http_body_util::Full::new(r.body));
        *resp.status_mut() = r.status;
        *resp.headers_mut() = r.headers;
        resp
    }
}
