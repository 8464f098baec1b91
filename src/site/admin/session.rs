//! Console sessions: a login with an administrator's token makes a random session id, sent as a
//! `Secure; HttpOnly; SameSite=Strict` cookie; only its SHA-256 is kept. Each session has a
//! CSRF token that every console form carries in a hidden field.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use ring::digest;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "mprelay_session";
/// How long a session lasts after login.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept; the oldest goes first beyond it.
const MAX_SESSIONS: usize = 1024;

/// One logged-in browser.
#[derive(Debug)]
pub struct Session {
    /// Carried by every form of this session.
    pub csrf: String,
    /// The administrator who logged in (checked again against the site database on every
    /// request, so disabling an administrator ends its sessions).
    pub admin: String,
    key: [u8; 32],
    expires: Instant,
}

impl Session {
    /// Whether a posted CSRF token is this session's, in constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// Failed logins allowed per client (an IPv4 address or an IPv6 /64) per [`FAILURE_WINDOW`];
/// past it, that client's logins are refused until the window moves on (a guess at the token
/// is then worth nothing). Other clients are not held up: one client guessing cannot lock the
/// administrators out.
pub const MAX_FAILURES: usize = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Clients whose failures are remembered at once; past it, those whose last failure is oldest
/// are forgotten first.
const MAX_FAILING_CLIENTS: usize = 4096;

/// Who a failed login is counted against: the address, or for IPv6 its /64, which one host
/// usually holds whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    V4(u32),
    /// The upper 64 bits.
    V6(u64),
}

impl From<IpAddr> for Client {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Client::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4.into()),
                None => Client::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// The sessions of this process (a restart logs everyone out), and recent failed logins per
/// client.
#[derive(Debug, Default)]
pub struct Sessions(
    Mutex<HashMap<[u8; 32], Arc<Session>>>,
    Mutex<HashMap<Client, VecDeque<Instant>>>,
);

impl Sessions {
    /// A new session; returns the cookie value to send.
    pub fn create(&self, admin: &str) -> (String, Arc<Session>) {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let key = hash(&id);
        let s = Arc::new(Session {
            csrf: hex::encode(rand::random::<[u8; 16]>()),
            admin: admin.to_string(),
            key,
            expires: Instant::now() + LIFETIME,
        });
        if let Ok(mut m) = self.0.lock() {
            let now = Instant::now();
            m.retain(|_, s| s.expires > now);
            if m.len() >= MAX_SESSIONS
                && let Some(oldest) = m.values().min_by_key(|s| s.expires).map(|s| s.key)
            {
                m.remove(&oldest);
            }
            m.insert(key, s.clone());
        }
        (id, s)
    }

    /// The live session named by the request's cookie.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let id = cookie(headers, COOKIE)?;
        let m = self.0.lock().ok()?;
        let s = m.get(&hash(&id))?;
        (s.expires > Instant::now()).then(|| s.clone())
    }

    /// Whether `client` may try a login at `now`: fewer than [`MAX_FAILURES`] of its logins
    /// failed in the last [`FAILURE_WINDOW`].
    pub fn login_allowed(&self, client: Client, now: Instant) -> bool {
        let Ok(mut f) = self.1.lock() else {
            return false;
        };
        let Some(times) = f.get_mut(&client) else {
            return true;
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
        {
            times.pop_front();
        }
        if times.is_empty() {
            f.remove(&client);
            return true;
        }
        times.len() < MAX_FAILURES
    }

    /// Counts a failed login of `client` at `now`.
    pub fn login_failed(&self, client: Client, now: Instant) {
        let Ok(mut f) = self.1.lock() else {
            return;
        };
        if !f.contains_key(&client) && f.len() >= MAX_FAILING_CLIENTS {
            f.retain(|_, t| {
                t.back()
                    .is_some_and(|t| now.duration_since(*t) < FAILURE_WINDOW)
            });
            if f.len() >= MAX_FAILING_CLIENTS
                && let Some(stalest) = f
                    .iter()
                    .min_by_key(|(_, t)| t.back().copied())
                    .map(|(c, _)| *c)
            {
                f.remove(&stalest);
            }
        }
        let times = f.entry(client).or_default();
        times.push_back(now);
        if times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }

    /// Ends a session.
    pub fn remove(&self, s: &Session) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&s.key);
        }
    }
}

/// The `Set-Cookie` value for a session id.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Strict",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict")
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn hash(id: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, id.as_bytes());
    let mut h = [0u8; 32];
    h.copy_from_slice(d.as_ref());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str) -> Client {
        ip.parse::<IpAddr>().unwrap().into()
    }

    #[test]
    fn failed_logins_are_throttled_for_a_window() {
        let sessions = Sessions::default();
        let a = client("192.0.2.1");
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert!(sessions.login_allowed(a, t0 + Duration::from_secs(i as u64)));
            sessions.login_failed(a, t0 + Duration::from_secs(i as u64));
        }
        assert!(!sessions.login_allowed(a, t0 + Duration::from_secs(30)));
        // The first failure leaves the window a minute after it happened.
        assert!(!sessions.login_allowed(a, t0 + FAILURE_WINDOW - Duration::from_millis(1)));
        assert!(sessions.login_allowed(a, t0 + FAILURE_WINDOW));
    }

    #[test]
    fn one_client_guessing_does_not_lock_out_the_others() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let guesser = client("2001:db8:1:2::10");
        for _ in 0..MAX_FAILURES {
            sessions.login_failed(guesser, t0);
        }
        assert!(!sessions.login_allowed(guesser, t0));
        // Its /64 is one client; the next /64 and other addresses are not held up.
        assert!(!sessions.login_allowed(client("2001:db8:1:2::99"), t0));
        assert!(sessions.login_allowed(client("2001:db8:1:3::10"), t0));
        assert!(sessions.login_allowed(client("192.0.2.1"), t0));
        // An IPv4 client is the same whether seen as IPv4 or IPv4-mapped IPv6.
        let v4 = client("198.51.100.7");
        for _ in 0..MAX_FAILURES {
            sessions.login_failed(v4, t0);
        }
        assert!(!sessions.login_allowed(client("::ffff:198.51.100.7"), t0));
        assert!(sessions.login_allowed(client("198.51.100.8"), t0));
    }

    #[test]
    fn failures_are_remembered_for_a_bounded_number_of_clients() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let first = Client::V6(0);
        for _ in 0..MAX_FAILURES {
            sessions.login_failed(first, t0);
        }
        // Many more clients failing once, later: the map stays bounded and forgets the stalest.
        for i in 1..=MAX_FAILING_CLIENTS as u32 {
            sessions.login_failed(Client::V4(i), t0 + Duration::from_secs(1));
        }
        assert!(sessions.1.lock().unwrap().len() <= MAX_FAILING_CLIENTS);
        assert!(sessions.login_allowed(first, t0 + Duration::from_secs(1)));
        // A client still failing inside its window is not the one forgotten.
        let last = Client::V4(MAX_FAILING_CLIENTS as u32);
        for _ in 0..MAX_FAILURES {
            sessions.login_failed(last, t0 + Duration::from_secs(2));
        }
        assert!(!sessions.login_allowed(last, t0 + Duration::from_secs(2)));
    }

    #[test]
    fn a_cookie_finds_its_session_until_logout() {
        let sessions = Sessions::default();
        let (id, s) = sessions.create("admin");
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("other=1; {COOKIE}={id}").parse().unwrap(),
        );
        let found = sessions.from_headers(&h).unwrap();
        assert!(found.csrf_matches(&s.csrf));
        assert!(!found.csrf_matches("nope"));
        let mut wrong = HeaderMap::new();
        wrong.insert(
            http::header::COOKIE,
            format!("{COOKIE}=00{id}").parse().unwrap(),
        );
        assert!(sessions.from_headers(&wrong).is_none());
        sessions.remove(&found);
        assert!(sessions.from_headers(&h).is_none());
        assert!(set_cookie(&id).contains("Secure; HttpOnly; SameSite=Strict"));
    }
}
