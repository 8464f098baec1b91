//! A small router for the admin API: method and path pattern (`/api/v1/things/{id}`) to an
//! async handler. Routes are registered by the file that implements them (see
//! [`super::routes`]), so each area of the API keeps its handlers to itself.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response};
use http_body_util::Full;

use super::AdminState;
use crate::store::Role;
use crate::wire::Refusal;

/// The role each route needs: the one table the admin API and the console check every request
/// against ([`role_of`]). A route that is neither public nor listed needs `full` (closed by
/// default); a test checks that every registered route is listed.
pub const ROUTE_ROLES: &[(&str, &str, Role)] = &[
    ("GET", "/metrics", Role::Read),
    ("GET", "/api/v1/compliance/baselines", Role::Read),
    ("GET", "/api/v1/compliance/baselines/{id}", Role::Read),
    (
        "GET",
        "/api/v1/compliance/baselines/{id}/devices",
        Role::Read,
    ),
    ("GET", "/api/v1/compliance/devices/{id}", Role::Read),
    ("GET", "/api/v1/compliance/noncompliant", Role::Read),
    ("GET", "/api/v1/devices", Role::Read),
    ("GET", "/api/v1/terms", Role::Read),
    ("GET", "/api/v1/terms/acceptances", Role::Read),
    ("GET", "/api/v1/maintenance", Role::Read),
    ("GET", "/api/v1/maintenance/runs", Role::Read),
    ("PUT", "/api/v1/maintenance", Role::Full),
    ("POST", "/api/v1/maintenance/run", Role::Full),
    ("GET", "/api/v1/audit", Role::Read),
    ("GET", "/api/v1/collections", Role::Read),
    ("GET", "/api/v1/collections/{id}/members", Role::Read),
    ("GET", "/api/v1/deployments", Role::Read),
    ("POST", "/api/v1/deployments", Role::Compliance),
    ("POST", "/console/logout", Role::Read),
    ("GET", "/console", Role::Read),
    ("GET", "/console/baselines/{id}", Role::Read),
    ("GET", "/console/baselines/{id}/devices", Role::Read),
    ("GET", "/console/devices", Role::Read),
    ("GET", "/console/devices/{id}", Role::Read),
    ("GET", "/console/relays", Role::Read),
    ("GET", "/console/retention", Role::Read),
    ("POST", "/console/retention", Role::Full),
    ("GET", "/console/terms", Role::Read),
    ("GET", "/console/audit", Role::Read),
    ("GET", "/console/collections", Role::Read),
    ("GET", "/console/collections/{id}", Role::Read),
    ("GET", "/console/deployments", Role::Read),
    ("POST", "/console/deployments", Role::Compliance),
];

/// The role a route needs, from [`ROUTE_ROLES`]; `full` for a route the table does not name.
pub fn role_of(method: &Method, pattern: &str) -> Role {
    ROUTE_ROLES
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == pattern)
        .map_or(Role::Full, |(_, _, r)| *r)
}

/// What a handler answers: a response, or a refusal rendered as JSON `{code, message}`.
pub type Reply = Result<Response<Full<Bytes>>, Refusal>;

type Handler = Arc<dyn Fn(Ctx) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Everything a handler gets.
pub struct Ctx {
    pub state: Arc<AdminState>,
    /// Path parameters by name (`{id}` → `"id"`), percent-decoded.
    pub params: HashMap<String, String>,
    /// Query parameters, percent-decoded; a repeated name keeps its last value.
    pub query: HashMap<String, String>,
    /// The request body (empty for GET).
    pub body: Bytes,
    /// The client's address, as its connection shows it (behind a reverse proxy, the proxy's).
    pub peer: std::net::SocketAddr,
    /// The console session the request came with, if any (console routes only).
    pub session: Option<Arc<super::session::Session>>,
    /// Who the request acts as (for the audit log): the administrator and the interface;
    /// `None` on public routes.
    pub actor: Option<crate::store::Actor>,
}

impl Ctx {
    /// A path parameter the route pattern guarantees.
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(&'static str),
    Param(&'static str),
}

struct Route {
    method: Method,
    pattern: &'static str,
    segments: Vec<Segment>,
    handler: Handler,
    /// Served without the bearer token (health checks).
    public: bool,
    /// A console page: a session cookie serves as well as the bearer token.
    console: bool,
}

/// The result of looking a request up.
pub enum Found<'a> {
    Route {
        handler: &'a Handler,
        params: HashMap<String, String>,
        public: bool,
        console: bool,
        /// The role it needs ([`role_of`]).
        role: Role,
    },
    /// The path exists with other methods.
    MethodNotAllowed,
    NotFound,
}

/// Routes in registration order; the first match wins.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route that needs the bearer token.
    pub fn route<F, Fut>(self, method: Method, pattern: &'static str, f: F) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.add(method, pattern, f, false)
    }

    /// Adds a console page: served with a console session cookie or the bearer token.
    pub fn console<F, Fut>(mut self, method: Method, pattern: &'static str, f: F) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self = self.add(method, pattern, f, false);
        if let Some(r) = self.routes.last_mut() {
            r.console = true;
        }
        self
    }

    pub fn get<F, Fut>(self, pattern: &'static str, f: F) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.route(Method::GET, pattern, f)
    }

    /// Adds a route served without the token.
    pub fn public<F, Fut>(self, method: Method, pattern: &'static str, f: F) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.add(method, pattern, f, true)
    }

    fn add<F, Fut>(mut self, method: Method, pattern: &'static str, f: F, public: bool) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let segments = pattern
            .trim_start_matches('/')
            .split('/')
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Param(name),
                    None => Segment::Literal(s),
                },
            )
            .collect();
        self.routes.push(Route {
            method,
            pattern,
            segments,
            handler: Arc::new(move |ctx| Box::pin(f(ctx))),
            public,
            console: false,
        });
        self
    }

    /// Every route that needs a token or session: method, pattern.
    pub fn protected(&self) -> impl Iterator<Item = (&Method, &'static str)> {
        self.routes
            .iter()
            .filter(|r| !r.public)
            .map(|r| (&r.method, r.pattern))
    }

    pub fn find(&self, method: &Method, path: &str) -> Found<'_> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut path_matched = false;
        for r in &self.routes {
            let Some(params) = match_segments(&r.segments, &parts) else {
                continue;
            };
            if r.method != *method {
                path_matched = true;
                continue;
            }
            return Found::Route {
                handler: &r.handler,
                params,
                public: r.public,
                console: r.console,
                role: role_of(&r.method, r.pattern),
            };
        }
        if path_matched {
            Found::MethodNotAllowed
        } else {
            Found::NotFound
        }
    }
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<HashMap<String, String>> {
    if segments.len() != parts.len() {
        return None;
    }
    let mut params = HashMap::new();
    for (s, p) in segments.iter().zip(parts) {
        match s {
            Segment::Literal(l) if l == p => {}
            Segment::Literal(_) => return None,
            Segment::Param(_) if p.is_empty() => return None,
            Segment::Param(name) => {
                params.insert(name.to_string(), percent_decode(p)?);
            }
        }
    }
    Some(params)
}

/// Query parameters of a URI, percent-decoded (`+` is a space). Undecodable pairs are skipped.
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    urlencoded_pairs(q.unwrap_or("")).collect()
}

/// `name=value` pairs of a urlencoded query or form body, in order, percent-decoded (`+` is a
/// space). Undecodable pairs are skipped.
pub fn urlencoded_pairs(s: &str) -> impl Iterator<Item = (String, String)> + '_ {
    s.split('&').filter(|kv| !kv.is_empty()).filter_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        Some((
            percent_decode(&k.replace('+', " "))?,
            percent_decode(&v.replace('+', " "))?,
        ))
    })
}

/// `%XX` escapes to bytes; `None` for a broken escape or a result that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ok(_: Ctx) -> Reply {
        Err(Refusal::Internal)
    }

    #[test]
    fn patterns_match_with_parameters() {
        let r = Router::new()
            .get("/api/v1/things", ok)
            .get("/api/v1/things/{id}", ok)
            .public(Method::GET, "/healthz", ok);
        match r.find(&Method::GET, "/api/v1/things/a%20b") {
            Found::Route { params, public, .. } => {
                assert_eq!(params["id"], "a b");
                assert!(!public);
            }
            _ => panic!("no match"),
        }
        assert!(matches!(
            r.find(&Method::GET, "/healthz"),
            Found::Route { public: true, .. }
        ));
        assert!(matches!(
            r.find(&Method::POST, "/api/v1/things"),
            Found::MethodNotAllowed
        ));
        assert!(matches!(
            r.find(&Method::GET, "/api/v1/things/"),
            Found::NotFound
        ));
        assert!(matches!(
            r.find(&Method::GET, "/api/v1/other"),
            Found::NotFound
        ));
        assert!(matches!(
            r.find(&Method::GET, "/api/v1/things/%zz"),
            Found::NotFound
        ));
    }

    #[test]
    fn every_protected_route_has_its_role_in_the_table() {
        let r = super::super::routes();
        for (m, p) in r.protected() {
            assert!(
                ROUTE_ROLES
                    .iter()
                    .any(|(tm, tp, _)| *tm == m.as_str() && *tp == p),
                "{m} {p} is not in ROUTE_ROLES"
            );
        }
        assert_eq!(role_of(&Method::DELETE, "/api/v1/unknown"), Role::Full);
        assert_eq!(role_of(&Method::PUT, "/api/v1/maintenance"), Role::Full);
        assert_eq!(role_of(&Method::GET, "/console"), Role::Read);
    }

    #[test]
    fn queries_decode() {
        let q = parse_query(Some("baseline=ssh%2Dhardening&x=a+b&flag"));
        assert_eq!(q["baseline"], "ssh-hardening");
        assert_eq!(q["x"], "a b");
        assert_eq!(q["flag"], "");
    }
}
