//! Token buckets: one per client IP for cache-missing introspections, and a global one
//! for `/register`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Beyond this many tracked clients, full (idle) buckets are dropped.
const MAX_TRACKED: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket of `burst` tokens refilled at `rate` per second, per key.
#[derive(Debug)]
pub struct KeyedLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl KeyedLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        KeyedLimiter {
            rate,
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `key` at `now`; false when the bucket is empty.
    pub fn allow_at(&self, key: IpAddr, now: Instant) -> bool {
        let Ok(mut map) = self.buckets.lock() else {
            return false;
        };
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn allow(&self, key: IpAddr) -> bool {
        self.allow_at(key, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let l = KeyedLimiter::new(2.0, 3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(l.allow_at(ip, t0));
        assert!(l.allow_at(ip, t0));
        assert!(l.allow_at(ip, t0));
        assert!(!l.allow_at(ip, t0));
        assert!(l.allow_at(other, t0), "buckets are per client");
        assert!(l.allow_at(ip, t0 + Duration::from_millis(500)));
        assert!(!l.allow_at(ip, t0 + Duration::from_millis(500)));
    }
}
