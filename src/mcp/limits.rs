//! Per-identity tool call limits (`endpoints[].tools.limits`): each identity gets its own
//! token bucket per rule: `per_minute: N` allows N calls at once and N per minute after that.
//! Identities are the token's user and client (or, on an endpoint without auth, the client
//! address). Memory is bounded: at most [`MAX_BUCKETS`] buckets, least recently used first
//! out (an evicted identity starts again with a full bucket).

use super::glob::Glob;
use super::policy::Caller;
use crate::auth::ratelimit::Bucket;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Buckets kept at most per endpoint.
pub const MAX_BUCKETS: u64 = 100_000;

/// One `limits` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolLimit {
    /// Users (login or `sub`) it applies to; with `clients` empty too, everyone.
    pub users: Vec<String>,
    pub clients: Vec<String>,
    /// Tools it counts (default: all).
    pub tools: Vec<Glob>,
    pub per_minute: u32,
}

impl ToolLimit {
    /// Whether this rule counts `caller`'s calls to `tool`.
    pub fn applies(&self, tool: &str, caller: &Caller<'_>) -> bool {
        let tool_ok = self.tools.is_empty() || self.tools.iter().any(|g| g.matches(tool));
        tool_ok && super::policy::lists_match(&self.users, &self.clients, caller)
    }
}

/// Who a budget belongs to: the token's identity, else the client address.
pub fn identity(caller: &Caller<'_>, client: Option<IpAddr>) -> String {
    match (caller.sub.or(caller.username), caller.client_id) {
        (Some(u), Some(c)) => format!("u:{u}\u{0}c:{c}"),
        (Some(u), None) => format!("u:{u}"),
        (None, Some(c)) => format!("c:{c}"),
        (None, None) => match client {
            Some(ip) => format!("ip:{}", crate::auth::ratelimit::client_key(ip)),
            None => "anonymous".into(),
        },
    }
}

/// A refused call: which rule, and when the next call would be allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverBudget {
    pub rule: usize,
    pub per_minute: u32,
    pub retry_after: Duration,
}

/// The limits of one endpoint and their buckets.
pub struct Limiter {
    rules: Vec<ToolLimit>,
    buckets: moka::sync::Cache<(usize, String), Arc<Mutex<Bucket>>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Limiter({} rules)", self.rules.len())
    }
}

impl Limiter {
    pub fn new(rules: Vec<ToolLimit>) -> Limiter {
        Limiter {
            rules,
            buckets: moka::sync::Cache::builder()
                .max_capacity(MAX_BUCKETS)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Take one call of `tool` by `who` from every rule that counts it, at `now`. Refused
    /// when any rule's bucket is empty (then nothing is taken from the others).
    pub fn take(
        &self,
        tool: &str,
        caller: &Caller<'_>,
        who: &str,
        now: Instant,
    ) -> Result<(), OverBudget> {
        let applying: Vec<(usize, &ToolLimit)> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.applies(tool, caller))
            .collect();
        let mut taken: Vec<Arc<Mutex<Bucket>>> = Vec::with_capacity(applying.len());
        for (i, r) in applying {
            let burst = f64::from(r.per_minute);
            let rate = burst / 60.0;
            let b = self.buckets.get_with((i, who.to_string()), || {
                Arc::new(Mutex::new(Bucket::full(burst, now)))
            });
            let ok = b
                .lock()
                .map(|mut g| g.take(rate, burst, now).is_some())
                .unwrap_or(true);
            if !ok {
                for t in taken {
                    if let Ok(mut g) = t.lock() {
                        g.give_back(burst);
                    }
                }
                return Err(OverBudget {
                    rule: i,
                    per_minute: r.per_minute,
                    // One token comes back every 60/N seconds.
                    retry_after: Duration::from_secs_f64(60.0 / burst),
                });
            }
            taken.push(b);
        }
        Ok(())
    }
}

/// The JSON-RPC error message of a call over its budget.
pub fn over_budget_message(tool: &str, o: &OverBudget) -> String {
    format!(
        "rate limited: at most {} calls per minute to `{tool}` for you; retry in {:.0} s",
        o.per_minute,
        o.retry_after.as_secs_f64().ceil()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller<'a>(user: Option<&'a str>, client: Option<&'a str>) -> Caller<'a> {
        Caller {
            sub: None,
            username: user,
            client_id: client,
            claim: &[],
        }
    }

    fn rule(users: &[&str], tools: &[&str], n: u32) -> ToolLimit {
        ToolLimit {
            users: users.iter().map(|s| s.to_string()).collect(),
            clients: Vec::new(),
            tools: tools.iter().map(|t| Glob::new(t)).collect(),
            per_minute: n,
        }
    }

    #[test]
    fn per_identity_buckets() {
        let l = Limiter::new(vec![rule(&[], &["export_*"], 2)]);
        let t0 = Instant::now();
        let (alice, bob) = (caller(Some("alice"), None), caller(Some("bob"), None));
        let (ia, ib) = (identity(&alice, None), identity(&bob, None));
        assert!(l.take("export_csv", &alice, &ia, t0).is_ok());
        assert!(l.take("export_csv", &alice, &ia, t0).is_ok());
        let over = l.take("export_pdf", &alice, &ia, t0).unwrap_err();
        assert_eq!(over.per_minute, 2);
        assert_eq!(over.retry_after, Duration::from_secs(30));
        // Bob has his own budget; tools outside the rule are not counted.
        assert!(l.take("export_csv", &bob, &ib, t0).is_ok());
        assert!(l.take("search", &alice, &ia, t0).is_ok());
        // Refilled at N per minute.
        assert!(l
            .take("export_csv", &alice, &ia, t0 + Duration::from_secs(31))
            .is_ok());
        assert!(l
            .take("export_csv", &alice, &ia, t0 + Duration::from_secs(31))
            .is_err());
    }

    #[test]
    fn named_users_and_all_rules_at_once() {
        let l = Limiter::new(vec![rule(&["bob@example.com"], &[], 1), rule(&[], &[], 3)]);
        let t0 = Instant::now();
        let bob = caller(Some("bob@example.com"), None);
        let who = identity(&bob, None);
        assert!(l.take("a", &bob, &who, t0).is_ok());
        // Bob's own rule is spent; the general one is not charged for the refusal.
        assert_eq!(l.take("a", &bob, &who, t0).unwrap_err().rule, 0);
        let carol = caller(Some("carol"), None);
        let wc = identity(&carol, None);
        for _ in 0..3 {
            assert!(l.take("a", &carol, &wc, t0).is_ok());
        }
        assert_eq!(l.take("a", &carol, &wc, t0).unwrap_err().rule, 1);
    }

    #[test]
    fn identities() {
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(identity(&caller(None, None), Some(ip)), "ip:2001:db8::");
        assert_eq!(identity(&caller(Some("a"), Some("c")), None), "u:a\u{0}c:c");
        assert_ne!(
            identity(&caller(Some("a"), Some("c1")), None),
            identity(&caller(Some("a"), Some("c2")), None)
        );
        assert_eq!(identity(&caller(None, None), None), "anonymous");
    }

    #[test]
    fn messages() {
        let o = OverBudget {
            rule: 0,
            per_minute: 30,
            retry_after: Duration::from_secs(2),
        };
        assert_eq!(
            over_budget_message("export", &o),
            "rate limited: at most 30 calls per minute to `export` for you; retry in 2 s"
        );
    }
}
