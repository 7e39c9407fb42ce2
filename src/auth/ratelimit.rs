//! Token buckets that protect the IdP from cache-missing tokens, and a global one for
//! `/register`.
//!
//! The introspection model (README "Flood protection"):
//! - Each client key — an IPv4 address, or an IPv6 /64 (one host's whole prefix) — has a
//!   bucket of `per_client_burst` tokens refilled at `per_client_rate` per second. A cache
//!   miss takes one token before tsidp is asked, and gives it back when the token turns out
//!   active: only misses that come back inactive or failed spend a client's budget, so the
//!   many users behind one address (all of Claude.ai comes from one published range) are not
//!   throttled for having tokens that are new.
//! - Every miss also takes from one global bucket (`global_rate`, `global_burst`), given
//!   back the same way: bad lookups are capped as a whole, from any number of addresses,
//!   while active tokens never drain it.
//! - Buckets live in a bounded cache (moka: O(1) eviction, entries idle for a minute are
//!   dropped, which leaves them full again).
//! - The global cap on concurrent introspection calls is separate (`max_concurrent`).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many client keys are tracked at most.
const MAX_TRACKED: u64 = 100_000;
/// A bucket unused this long is dropped (it would be full again by then at any sane rate).
const IDLE_DROP: Duration = Duration::from_secs(60);

/// One token bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
    }

    /// Take one token; `None` when there is none.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Option<()> {
        self.refill(rate, burst, now);
        if self.tokens < 1.0 {
            return None;
        }
        self.tokens -= 1.0;
        Some(())
    }

    /// Give one token back.
    pub fn give_back(&mut self, burst: f64) {
        self.tokens = (self.tokens + 1.0).min(burst);
    }
}

/// The key a client is limited under: its IPv4 address, or its IPv6 /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// A token bucket of `burst` tokens refilled at `rate` per second, per client key.
pub struct KeyedLimiter {
    rate: f64,
    burst: f64,
    buckets: moka::sync::Cache<IpAddr, Arc<Mutex<Bucket>>>,
}

impl std::fmt::Debug for KeyedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish()
    }
}

impl KeyedLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        KeyedLimiter {
            rate,
            burst: f64::from(burst),
            buckets: moka::sync::Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_idle(IDLE_DROP)
                .build(),
        }
    }

    fn bucket(&self, ip: IpAddr, now: Instant) -> Arc<Mutex<Bucket>> {
        self.buckets.get_with(client_key(ip), || {
            Arc::new(Mutex::new(Bucket::full(self.burst, now)))
        })
    }

    /// Take one token for `ip` at `now`; false when the client's budget is spent.
    pub fn take_at(&self, ip: IpAddr, now: Instant) -> bool {
        self.bucket(ip, now)
            .lock()
            .ok()
            .and_then(|mut b| b.take(self.rate, self.burst, now))
            .is_some()
    }

    /// Give back the token taken for `ip` (its miss turned out active).
    pub fn give_back(&self, ip: IpAddr) {
        if let Some(b) = self.buckets.get(&client_key(ip)) {
            if let Ok(mut b) = b.lock() {
                b.give_back(self.burst);
            }
        }
    }

    /// Take one token; false when the bucket is empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.take_at(ip, Instant::now())
    }
}

/// One bucket shared by every client (see the module docs).
#[derive(Debug)]
pub struct GlobalLimiter {
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

impl GlobalLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        GlobalLimiter {
            rate,
            burst: f64::from(burst),
            bucket: Mutex::new(Bucket::full(f64::from(burst), Instant::now())),
        }
    }

    pub fn take_at(&self, now: Instant) -> bool {
        self.bucket
            .lock()
            .ok()
            .and_then(|mut b| b.take(self.rate, self.burst, now))
            .is_some()
    }

    pub fn give_back(&self) {
        if let Ok(mut b) = self.bucket.lock() {
            b.give_back(self.burst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let l = KeyedLimiter::new(2.0, 3);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(l.take_at(ip, t0));
        assert!(l.take_at(ip, t0));
        assert!(l.take_at(ip, t0));
        assert!(!l.take_at(ip, t0));
        assert!(l.take_at(other, t0), "buckets are per client");
        assert!(l.take_at(ip, t0 + Duration::from_millis(500)));
        assert!(!l.take_at(ip, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn given_back_tokens_cost_nothing() {
        let l = KeyedLimiter::new(0.001, 2);
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..200 {
            assert!(l.take_at(ip, t0), "active misses never spend the budget");
            l.give_back(ip);
        }
        assert!(l.take_at(ip, t0));
        assert!(l.take_at(ip, t0));
        assert!(!l.take_at(ip, t0));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let cases: &[(&str, &str)] = &[
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
            ("198.51.100.7", "198.51.100.7"),
        ];
        for (ip, key) in cases {
            assert_eq!(
                client_key(ip.parse().unwrap()),
                key.parse::<IpAddr>().unwrap(),
                "{ip}"
            );
        }
        let l = KeyedLimiter::new(0.001, 1);
        let t0 = Instant::now();
        assert!(l.take_at("2001:db8:1:2::1".parse().unwrap(), t0));
        assert!(
            !l.take_at("2001:db8:1:2::ffff".parse().unwrap(), t0),
            "another address in the same /64 shares the budget"
        );
        assert!(l.take_at("2001:db8:1:3::1".parse().unwrap(), t0));
    }

    #[test]
    fn global_bucket() {
        let g = GlobalLimiter::new(0.001, 2);
        let t0 = Instant::now();
        assert!(g.take_at(t0));
        assert!(g.take_at(t0));
        assert!(!g.take_at(t0));
        g.give_back();
        assert!(g.take_at(t0));
    }
}
