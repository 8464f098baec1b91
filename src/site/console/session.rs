//! Console sessions: a login with the admin token makes a random session id, sent as a
//! `Secure; HttpOnly; SameSite=Strict` cookie; only its SHA-256 is kept. Each session has a
//! CSRF token that every console form carries in a hidden field.

use std::collections::HashMap;
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
    key: [u8; 32],
    expires: Instant,
}

impl Session {
    /// Whether a posted CSRF token is this session's, in constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// Failed logins allowed per [`FAILURE_WINDOW`], from all clients together; past it, logins
/// are refused until the window moves on (a guess at the token is then worth nothing).
pub const MAX_FAILURES: usize = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The sessions of this process (a restart logs everyone out), and recent failed logins.
#[derive(Debug, Default)]
pub struct Sessions(
    Mutex<HashMap<[u8; 32], Arc<Session>>>,
    Mutex<std::collections::VecDeque<Instant>>,
);

impl Sessions {
    /// A new session; returns the cookie value to send.
    pub fn create(&self) -> (String, Arc<Session>) {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let key = hash(&id);
        let s = Arc::new(Session {
            csrf: hex::encode(rand::random::<[u8; 16]>()),
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

    /// Whether a login may be tried at `now`: fewer than [`MAX_FAILURES`] failed in the last
    /// [`FAILURE_WINDOW`].
    pub fn login_allowed(&self, now: Instant) -> bool {
        let Ok(mut f) = self.1.lock() else {
            return false;
        };
        while f
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
        {
            f.pop_front();
        }
        f.len() < MAX_FAILURES
    }

    /// Counts a failed login at `now`.
    pub fn login_failed(&self, now: Instant) {
        if let Ok(mut f) = self.1.lock() {
            f.push_back(now);
            if f.len() > MAX_FAILURES {
                f.pop_front();
            }
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

    #[test]
    fn failed_logins_are_throttled_for_a_window() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert!(sessions.login_allowed(t0 + Duration::from_secs(i as u64)));
            sessions.login_failed(t0 + Duration::from_secs(i as u64));
        }
        assert!(!sessions.login_allowed(t0 + Duration::from_secs(30)));
        // The first failure leaves the window a minute after it happened.
        assert!(!sessions.login_allowed(t0 + FAILURE_WINDOW - Duration::from_millis(1)));
        assert!(sessions.login_allowed(t0 + FAILURE_WINDOW));
    }

    #[test]
    fn a_cookie_finds_its_session_until_logout() {
        let sessions = Sessions::default();
        let (id, s) = sessions.create();
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
