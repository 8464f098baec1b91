//! The site's admin API: JSON over HTTPS, on loopback by default, every route but `/healthz`,
//! `/readyz`, `/privacy` and the console's login behind `Authorization: Bearer <token>` (the
//! token is read from a 0600 file and compared in constant time). Errors are JSON `{"code", "message"}` with the status of the one error table
//! ([`crate::wire::Refusal`]).
//!
//! Routes live with their area: [`compliance`] registers the compliance reports, [`terms`] the
//! terms and conditions and the privacy page (the one page served without the token, since it
//! is meant for users); later areas add a file and a line to [`routes`]. The web console
//! ([`crate::site::console`]) shares the listener: its pages also accept a session cookie got
//! by logging in with the token ([`session`] keeps the sessions; the [`router`] hands each
//! handler its own). `/metrics` serves the site's metrics (token required).

pub mod audit;
pub mod collections;
pub mod compliance;
pub mod devices;
pub mod maintenance;
pub mod router;
pub mod session;
pub mod terms;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use ring::digest;
use rustls::ServerConfig;
use subtle::ConstantTimeEq;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{Instrument, debug, error, info_span, warn};

use crate::net::Limits;
use crate::net::server::{self, Handler, Peer, ServerHandle, read_body};
use crate::store::{Actor, AdminCredential, Administrator, BOOTSTRAP_ADMIN, Store, StoreError};
use crate::wire::Refusal;
use router::{Ctx, Found, Router, parse_query};

/// Why the admin API cannot start.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The token file is missing, unreadable, too permissive or too short.
    #[error("admin token file {path}: {why}")]
    Token { path: PathBuf, why: String },
    /// The listener could not be served.
    #[error("cannot serve the admin API: {0}")]
    Listen(#[from] std::io::Error),
}

/// The bearer token. Never printed.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8; 32]>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

/// Shortest token accepted, in characters.
pub const MIN_TOKEN_LEN: usize = 16;

impl AdminToken {
    /// Only the token's SHA-256 is kept, so comparing takes the same time whatever the lengths.
    pub fn new(token: &str) -> Self {
        let d = digest::digest(&digest::SHA256, token.as_bytes());
        let mut h = [0u8; 32];
        h.copy_from_slice(d.as_ref());
        Self(Arc::new(h))
    }

    /// Reads the token from a file only its owner can read (mode 0600 or stricter).
    pub fn load(path: &Path) -> Result<Self, AdminError> {
        let bad = |why: String| AdminError::Token {
            path: path.into(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "is readable by others (mode {mode:04o}); make it 0600"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let token = text.trim();
        if token.chars().count() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
            return Err(bad(format!(
                "must hold one token of at least {MIN_TOKEN_LEN} characters and no spaces"
            )));
        }
        Ok(Self::new(token))
    }

    /// The token's SHA-256, as the administrators table keeps tokens.
    pub fn sha256(&self) -> [u8; 32] {
        *self.0
    }

    /// Whether `presented` is the token, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        let d = digest::digest(&digest::SHA256, presented.as_bytes());
        bool::from(d.as_ref().ct_eq(&self.0[..]))
    }
}

/// How to serve the admin API.
pub struct AdminOptions {
    pub listener: TcpListener,
    pub tls: Arc<ServerConfig>,
    pub token: AdminToken,
    pub limits: Limits,
}

/// What handlers share.
pub struct AdminState {
    pub store: Store,
    /// Asks the policy pusher to rebuild now (after a change the API made).
    pub policy_changed: Arc<Notify>,
    /// The site server's live state: metrics and relays.
    pub site: SiteView,
    /// Console sessions (cookie logins).
    pub sessions: session::Sessions,
    /// Runs the retention task on request, with the site's clock and metrics.
    pub retention: crate::retention::Retention,
    token: AdminToken,
    /// Set once the bootstrap token was made the first administrator (or one existed).
    bootstrapped: tokio::sync::OnceCell<()>,
    limits: Limits,
}

impl AdminState {
    /// The enabled administrator whose token `presented` is (the console's login form and the
    /// bearer check); `None` for no match, a disabled administrator, or a database failure.
    pub async fn administrator(&self, presented: &str) -> Option<Administrator> {
        let creds = self.credentials().await.ok()?;
        match find_token(&creds, presented) {
            Some(a) if a.disabled_ms.is_none() => Some(a),
            Some(a) => {
                warn!(admin = %a.name, "refused: the administrator is disabled");
                None
            }
            None => None,
        }
    }

    /// Every administrator with its token hash; on first use, makes the site's bootstrap token
    /// the first administrator if there is none (a site upgraded from the single token).
    async fn credentials(&self) -> Result<Vec<AdminCredential>, ()> {
        let fail = |e: StoreError| error!(error = %e, "cannot read the administrators");
        self.bootstrapped
            .get_or_try_init(|| async {
                if self.store.bootstrap_admin(&self.token.sha256()).await? {
                    tracing::info!(
                        admin = BOOTSTRAP_ADMIN,
                        "the bootstrap token is now administrator admin (role full)"
                    );
                }
                Ok::<(), StoreError>(())
            })
            .await
            .map_err(fail)?;
        self.store.admin_credentials().await.map_err(fail)
    }
}

/// The administrator whose token hash matches `presented`: every hash is compared, in constant
/// time, whatever matches first.
fn find_token(creds: &[AdminCredential], presented: &str) -> Option<Administrator> {
    let d = digest::digest(&digest::SHA256, presented.as_bytes());
    let mut found = None;
    for c in creds {
        if bool::from(c.token_sha256.as_slice().ct_eq(d.as_ref())) {
            found = Some(c.admin.clone());
        }
    }
    found
}

/// What the admin listener shows of the running site server.
#[derive(Clone, Default)]
pub struct SiteView {
    pub metrics: Arc<crate::site::SiteMetrics>,
    pub relays: Vec<Arc<crate::site::RelayStatus>>,
}

/// Every route of the admin API.
pub fn routes() -> Router {
    let r = Router::new().public(Method::GET, "/healthz", |_| async {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(resp)
    });
    let r = r
        .public(Method::GET, "/readyz", readyz)
        .get("/metrics", metrics);
    let r = compliance::routes(r);
    let r = collections::routes(r);
    let r = devices::routes(r);
    let r = crate::site::console::routes(r);
    let r = maintenance::routes(r);
    let r = audit::routes(r);
    terms::routes(r)
}

/// Ready when the site database answers.
async fn readyz(ctx: Ctx) -> router::Reply {
    let (status, body) = match ctx.state.store.policy_version().await {
        Ok(_) => (http::StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: the site database does not answer");
            (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the site database does not answer\n",
            )
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

/// The site server's metrics in the Prometheus text format.
async fn metrics(ctx: Ctx) -> router::Reply {
    let site = &ctx.state.site;
    // Runs recorded by others (the command line, another site server) count here too; the
    // counters shown stay as they were when the database cannot be read.
    if let Err(e) = site
        .metrics
        .retention
        .count_recorded_runs(&ctx.state.store)
        .await
    {
        tracing::warn!(error = %e, "cannot read the recorded retention runs");
    }
    let body = crate::site::metrics::render(&site.metrics, &site.relays);
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

/// Starts serving the admin API.
pub fn start(
    opts: AdminOptions,
    store: Store,
    policy_changed: Arc<Notify>,
    site: SiteView,
    retention: crate::retention::Retention,
) -> Result<ServerHandle, AdminError> {
    let state = Arc::new(AdminState {
        store,
        policy_changed,
        site,
        sessions: Default::default(),
        retention,
        token: opts.token,
        bootstrapped: Default::default(),
        limits: opts.limits.clone(),
    });
    let api = AdminApi(Arc::new((routes(), state)));
    Ok(server::spawn(
        opts.listener,
        opts.tls,
        opts.limits,
        api,
        "admin",
    )?)
}

#[derive(Clone)]
struct AdminApi(Arc<(Router, Arc<AdminState>)>);

impl Handler for AdminApi {
    async fn call(&self, req: Request<Incoming>, peer: Arc<Peer>) -> Response<Full<Bytes>> {
        let span = info_span!("admin", method = %req.method(), path = %req.uri().path());
        self.serve(req, peer.addr).instrument(span).await
    }
}

impl AdminApi {
    async fn serve(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let (router, state) = (&self.0.0, &self.0.1);
        let (handler, params, public, console, role) =
            match router.find(req.method(), req.uri().path()) {
                Found::Route {
                    handler,
                    params,
                    public,
                    console,
                    role,
                } => (handler, params, public, console, role),
                Found::MethodNotAllowed => return Refusal::MethodNotAllowed.into_json_response(),
                Found::NotFound => return Refusal::NotFound.into_json_response(),
            };
        let mut session = if console || public {
            state.sessions.from_headers(req.headers())
        } else {
            None
        };
        let mut actor = None;
        if !public {
            let Ok(creds) = state.credentials().await else {
                return Refusal::Internal.into_json_response();
            };
            let found = match bearer(&req) {
                Some(t) => find_token(&creds, t).map(|a| (a, "api")),
                None if console => session.as_ref().and_then(|s| {
                    creds
                        .iter()
                        .find(|c| c.admin.name == s.admin)
                        .map(|c| (c.admin.clone(), "console"))
                }),
                None => None,
            };
            let path = req.uri().path();
            match found {
                None if console && bearer(&req).is_none() => {
                    return crate::site::console::to_login();
                }
                None => {
                    debug!("refused: no valid bearer token");
                    return Refusal::Unauthorized.into_json_response();
                }
                Some((a, via)) if a.disabled_ms.is_some() => {
                    warn!(admin = %a.name, via, path, "refused: the administrator is disabled");
                    if let Some(s) = session.take() {
                        state.sessions.remove(&s);
                    }
                    if console && via == "console" {
                        return crate::site::console::to_login();
                    }
                    return Refusal::Unauthorized.into_json_response();
                }
                Some((a, via)) if a.role < role => {
                    warn!(
                        admin = %a.name, via, role = %a.role, needed = %role,
                        method = %req.method(), path,
                        "refused: the administrator's role does not allow this"
                    );
                    return Refusal::Forbidden {
                        needed: role.as_str(),
                    }
                    .into_json_response();
                }
                Some((a, via)) => {
                    actor = Some(if via == "console" {
                        Actor::console(&a.name)
                    } else {
                        Actor::api(&a.name)
                    });
                }
            }
        }
        let query = parse_query(req.uri().query());
        let body = if req.method() == Method::GET || req.method() == Method::HEAD {
            Bytes::new()
        } else {
            if let Err(r) = server::check_content_length(&req, &state.limits) {
                return r.into_json_response();
            }
            match read_body(req.into_body(), &state.limits).await {
                Ok(b) => b,
                Err(r) => return r.into_json_response(),
            }
        };
        let ctx = Ctx {
            state: state.clone(),
            params,
            query,
            body,
            peer,
            session,
            actor,
        };
        // On a task of its own: a client that drops its connection must not cancel a database
        // write half-way (a cancelled sqlx query can return its connection in a bad state).
        match tokio::spawn(handler(ctx)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(r)) => r.into_json_response(),
            Err(e) => {
                tracing::error!(error = %e, "admin handler failed");
                Refusal::Internal.into_json_response()
            }
        }
    }
}

/// The bearer token a request carries.
fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let mut parts = v.trim().splitn(2, ' ');
    match (parts.next(), parts.next()) {
        (Some(scheme), Some(t)) if scheme.eq_ignore_ascii_case("bearer") => Some(t.trim()),
        _ => None,
    }
}

/// The socket address the admin API listens on by default: loopback only.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8445))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_must_be_private_and_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("admin.token");
        assert!(
            AdminToken::load(&p)
                .unwrap_err()
                .to_string()
                .contains("admin.token")
        );
        crate::fsutil::write_private_atomic(&p, b"0123456789abcdef0123\n").unwrap();
        let t = AdminToken::load(&p).unwrap();
        assert!(t.matches("0123456789abcdef0123"));
        assert!(!t.matches("0123456789abcdef012"));
        assert!(!t.matches(""));
        assert_eq!(format!("{t:?}"), "AdminToken(…)");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = AdminToken::load(&p).unwrap_err().to_string();
        assert!(e.contains("readable by others (mode 0644)"), "{e}");
        crate::fsutil::write_private_atomic(&p, b"short\n").unwrap();
        assert!(
            AdminToken::load(&p)
                .unwrap_err()
                .to_string()
                .contains("at least 16")
        );
    }
}
