//! A token bucket for enrollment floods.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refills at `rate` tokens per second up to `burst`; each request takes one.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate: rate.max(0.001),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - s.0) / self.rate).max(Duration::from_secs(1)))
        }
    }
}

/// A global bucket and one bucket per peer address: one noisy peer exhausts its own bucket
/// before it can shut everyone else out.
#[derive(Debug)]
pub struct PeerLimiter {
    global: TokenBucket,
    per_peer_rate: f64,
    per_peer_burst: f64,
    peers: Mutex<std::collections::HashMap<std::net::IpAddr, TokenBucket>>,
}

impl PeerLimiter {
    pub fn new(
        global_rate: f64,
        global_burst: f64,
        per_peer_rate: f64,
        per_peer_burst: f64,
    ) -> Self {
        Self {
            global: TokenBucket::new(global_rate, global_burst),
            per_peer_rate,
            per_peer_burst,
            peers: Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn take(&self, peer: std::net::IpAddr) -> Result<(), Duration> {
        {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            if peers.len() > 100_000 {
                // Forget everyone rather than grow without bound under a spoofed-source flood.
                peers.clear();
            }
            peers
                .entry(peer)
                .or_insert_with(|| TokenBucket::new(self.per_peer_rate, self.per_peer_burst))
                .take()?;
        }
        self.global.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let b = TokenBucket::new(2.0, 3.0);
        let t0 = Instant::now();
        assert!(b.take_at(t0).is_ok());
        assert!(b.take_at(t0).is_ok());
        assert!(b.take_at(t0).is_ok());
        assert!(b.take_at(t0).is_err());
        assert!(b.take_at(t0 + Duration::from_millis(500)).is_ok());
        assert!(b.take_at(t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn one_peer_cannot_starve_another() {
        let l = PeerLimiter::new(100.0, 100.0, 1.0, 3.0);
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.take(a).is_ok());
        }
        assert!(l.take(a).is_err());
        assert!(l.take(b).is_ok());
    }
}
