//! Bearer-token verification: cache → (miss) introspection → checks.
//!
//! - The cache key is the SHA-256 of the token; the raw token is never stored or logged.
//! - Active results live for min(max_ttl, exp − now); inactive ones for `negative_ttl`.
//!   Failures (tsidp down, timeouts) are never cached.
//! - Concurrent lookups of one token share a single introspection call (moka's
//!   `try_get_with` runs one init per key and lets the others wait for it).
//! - Only cache misses reach tsidp, and they are bounded twice: a token bucket per client IP
//!   and a global cap on concurrent introspection calls. A flood of random tokens becomes
//!   429/503 answers at the bridge, not a flood at tsidp.
//! - Issuer, audience, expiry and client allowlist are checked on every request (cheap),
//!   so one cached introspection serves all endpoints.

use super::introspect::{introspect, now_unix, Claims, IntrospectError};
use super::metadata::AsMetadata;
use super::ratelimit::{GlobalLimiter, KeyedLimiter};
use crate::config::secrets::Secret;
use crate::config::{AudienceCheck, Auth};
use crate::mcp::policy::{Caller, ClaimGrant};
use crate::observe::metrics::Metrics;
use crate::observe::tracing::{RequestTrace, Tracing};
use moka::future::Cache;
use moka::Expiry;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// After this many inactive verdicts in a row with no active one ever, say loudly that the
/// bridge's own credentials are probably wrong (tsidp answers `active:false` to callers it
/// cannot identify, requirements #7).
const INACTIVE_STREAK_ALARM: u64 = 10;

/// The identity behind a valid token, built once per cached verdict and shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub sub: Option<String>,
    pub username: Option<String>,
    pub client_id: Option<String>,
    /// Tool grants from `auth.tool_grants_claim` in tsidp's `/userinfo` (empty when off).
    pub tool_grants: Vec<ClaimGrant>,
    /// The same identity as header values for the upstream, built once per token.
    pub headers: IdentityValues,
}

/// A principal's identity header values (`None` for a field that is absent or cannot be
/// a header value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityValues {
    pub sub: Option<http::HeaderValue>,
    pub username: Option<http::HeaderValue>,
    pub client_id: Option<http::HeaderValue>,
}

impl Principal {
    /// A principal from what introspection said, with its header values.
    pub fn new(
        sub: Option<String>,
        username: Option<String>,
        client_id: Option<String>,
        tool_grants: Vec<ClaimGrant>,
    ) -> Self {
        let value = |v: &Option<String>| {
            v.as_deref()
                .and_then(|v| http::HeaderValue::from_str(v).ok())
        };
        Principal {
            headers: IdentityValues {
                sub: value(&sub),
                username: value(&username),
                client_id: value(&client_id),
            },
            sub,
            username,
            client_id,
            tool_grants,
        }
    }

    /// The caller as the tool policy sees it.
    pub fn caller(&self) -> Caller<'_> {
        Caller {
            sub: self.sub.as_deref(),
            username: self.username.as_deref(),
            client_id: self.client_id.as_deref(),
            claim: &self.tool_grants,
        }
    }
}

/// Why a request was not authenticated. Status and metric reason come from one match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed,
    QueryToken,
    Inactive,
    Expired,
    WrongIssuer,
    WrongAudience,
    ClientNotAllowed,
    RateLimited,
    Overloaded,
    IdpUnavailable,
}

impl AuthError {
    /// Every variant, for pre-creating metric series.
    pub const ALL: [AuthError; 11] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::QueryToken,
        AuthError::Inactive,
        AuthError::Expired,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::ClientNotAllowed,
        AuthError::RateLimited,
        AuthError::Overloaded,
        AuthError::IdpUnavailable,
    ];

    pub fn status(self) -> u16 {
        match self {
            AuthError::Missing
            | AuthError::Malformed
            | AuthError::Inactive
            | AuthError::Expired
            | AuthError::WrongIssuer
            | AuthError::WrongAudience => 401,
            AuthError::QueryToken => 400,
            AuthError::ClientNotAllowed => 403,
            AuthError::RateLimited => 429,
            AuthError::Overloaded | AuthError::IdpUnavailable => 503,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Malformed => "malformed_token",
            AuthError::QueryToken => "token_in_query",
            AuthError::Inactive => "inactive_token",
            AuthError::Expired => "expired_token",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::ClientNotAllowed => "client_not_allowed",
            AuthError::RateLimited => "rate_limited",
            AuthError::Overloaded => "introspection_overloaded",
            AuthError::IdpUnavailable => "idp_unavailable",
        }
    }

    /// What is wrong, for the RFC 6750 `error_description` and the JSON body: concrete, and
    /// never a secret. `audience` is what a token's `aud` must include.
    pub fn description(self, audience: &str) -> String {
        match self {
            AuthError::Missing => "no bearer token: send Authorization: Bearer <token>".into(),
            AuthError::Malformed => "malformed bearer token".into(),
            AuthError::QueryToken => {
                "send the token in the Authorization header, not the query".into()
            }
            AuthError::Inactive => {
                "token is not active (unknown, revoked or expired at the identity provider)".into()
            }
            AuthError::Expired => "token expired".into(),
            AuthError::WrongIssuer => "token from another issuer".into(),
            AuthError::WrongAudience => format!("token audience does not include {audience}"),
            AuthError::ClientNotAllowed => {
                "the client that obtained this token is not in auth.allowed_client_ids".into()
            }
            AuthError::RateLimited => {
                "too many unknown tokens from this address; retry later".into()
            }
            AuthError::Overloaded => "too many token checks at once; retry later".into(),
            AuthError::IdpUnavailable => "the identity provider is unreachable; retry later".into(),
        }
    }

    /// The RFC 6750 `error` attribute for the challenge, when one applies.
    pub fn challenge_error(self) -> Option<(&'static str, &'static str)> {
        match self {
            AuthError::Missing => None,
            AuthError::Malformed => Some(("invalid_token", "malformed bearer token")),
            AuthError::Inactive => Some(("invalid_token", "token is not active")),
            AuthError::Expired => Some(("invalid_token", "token expired")),
            AuthError::WrongIssuer => Some(("invalid_token", "token from another issuer")),
            AuthError::WrongAudience => {
                Some(("invalid_token", "token not issued for this resource"))
            }
            AuthError::QueryToken => Some((
                "invalid_request",
                "send the token in the Authorization header",
            )),
            AuthError::ClientNotAllowed => Some(("insufficient_scope", "client not allowed")),
            AuthError::RateLimited | AuthError::Overloaded | AuthError::IdpUnavailable => None,
        }
    }
}

/// A cached introspection result.
#[derive(Debug, Clone)]
enum Verdict {
    Active(Arc<Claims>, Arc<Principal>),
    Inactive,
}

/// Per-entry lifetime: min(max_ttl, exp − now) for active tokens, `negative` otherwise.
struct VerdictExpiry {
    max_ttl: Duration,
    negative: Duration,
}

/// The cache TTL of an active token (requirements #8). Pure.
pub fn active_ttl(max_ttl: Duration, exp: Option<u64>, now: u64) -> Duration {
    match exp {
        Some(exp) => max_ttl.min(Duration::from_secs(exp.saturating_sub(now))),
        None => max_ttl,
    }
}

impl Expiry<[u8; 32], Verdict> for VerdictExpiry {
    fn expire_after_create(
        &self,
        _k: &[u8; 32],
        v: &Verdict,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(match v {
            Verdict::Active(c, _) => active_ttl(self.max_ttl, c.exp, now_unix()),
            Verdict::Inactive => self.negative,
        })
    }
}

/// Strip one trailing `/` for comparisons (Claude sends `https://host/`, requirements #3).
pub fn normalise_url(u: &str) -> &str {
    u.strip_suffix('/').unwrap_or(u)
}

/// The audience check (requirements #3). Pure.
pub fn audience_ok(mode: AudienceCheck, aud: &[String], origin: &str, endpoint_url: &str) -> bool {
    let origin = normalise_url(origin);
    let endpoint = normalise_url(endpoint_url);
    match mode {
        AudienceCheck::Off => true,
        AudienceCheck::Origin => aud.iter().map(|a| normalise_url(a)).any(|a| {
            a == origin
                || a.strip_prefix(origin)
                    .is_some_and(|rest| rest.starts_with('/'))
        }),
        AudienceCheck::Endpoint => aud.iter().any(|a| normalise_url(a) == endpoint),
    }
}

/// Verifies bearer tokens for every endpoint.
pub struct Verifier {
    cfg: Arc<Auth>,
    http: reqwest::Client,
    secret: Secret,
    cache: Cache<[u8; 32], Verdict>,
    limiter: KeyedLimiter,
    global: GlobalLimiter,
    in_flight: Semaphore,
    metrics: Arc<Metrics>,
    /// `tailbridge_token_cache_requests_total{result}` handles, resolved once.
    cache_hit: prometheus::IntCounter,
    cache_miss: prometheus::IntCounter,
    issuer: String,
    inactive_streak: AtomicU64,
    seen_active: AtomicBool,
    alarmed_at: std::sync::Mutex<Option<Instant>>,
    metadata: Arc<AsMetadata>,
    /// CLIENT spans for the calls to tsidp, when tracing is on.
    tracing: Option<Arc<Tracing>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

/// The budget one miss took, given back when its token is active.
#[derive(Debug, Default)]
struct Spent {
    client: Option<IpAddr>,
    global: bool,
}

impl Spent {
    fn give_back(self, v: &Verifier) {
        if let Some(ip) = self.client {
            v.limiter.give_back(ip);
        }
        if self.global {
            v.global.give_back();
        }
    }
}

/// What one introspection attempt ended as, shared by the callers waiting on it.
#[derive(Debug, Clone, Copy)]
enum MissError {
    RateLimited,
    Overloaded,
    Idp,
}

impl Verifier {
    pub fn new(
        cfg: Arc<Auth>,
        http: reqwest::Client,
        secret: Secret,
        metrics: Arc<Metrics>,
        metadata: Arc<AsMetadata>,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(cfg.cache.capacity)
            .expire_after(VerdictExpiry {
                max_ttl: cfg.cache.max_ttl,
                negative: cfg.cache.negative_ttl,
            })
            .build();
        Verifier {
            limiter: KeyedLimiter::new(
                cfg.introspection.per_client_rate,
                cfg.introspection.per_client_burst,
            ),
            global: GlobalLimiter::new(
                cfg.introspection.global_rate,
                cfg.introspection.global_burst,
            ),
            in_flight: Semaphore::new(cfg.introspection.max_concurrent),
            issuer: normalise_url(cfg.issuer.as_str()).to_string(),
            cache,
            http,
            secret,
            cache_hit: metrics.token_cache.with_label_values(&["hit"]),
            cache_miss: metrics.token_cache.with_label_values(&["miss"]),
            metrics,
            cfg,
            inactive_streak: AtomicU64::new(0),
            seen_active: AtomicBool::new(false),
            alarmed_at: std::sync::Mutex::new(None),
            metadata,
            tracing: None,
        }
    }

    /// Trace the calls to tsidp (introspection, userinfo) made for traced requests.
    pub fn set_tracing(&mut self, tracing: Option<Arc<Tracing>>) {
        self.tracing = tracing;
    }

    /// A CLIENT span for a call to tsidp, when the request is traced.
    fn idp_span(
        &self,
        trace: Option<&RequestTrace>,
        call: &'static str,
        method: &http::Method,
        url: &str,
    ) -> Option<crate::observe::tracing::IdpSpan> {
        let (t, r) = (self.tracing.as_ref()?, trace?);
        Some(t.idp_call(r, call, method, url))
    }

    /// Put an active verdict for `token` in the cache, as an introspection miss would
    /// (benches compare a cache hit with other ways of verifying).
    #[doc(hidden)]
    pub async fn prime(&self, token: &str, claims: Claims) {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let principal = Arc::new(Principal::new(
            claims.sub.clone(),
            claims.username.clone(),
            claims.client_id.clone(),
            Vec::new(),
        ));
        self.cache
            .insert(key, Verdict::Active(Arc::new(claims), principal))
            .await;
    }

    /// Verify `token` (already extracted) for the endpoint at `endpoint_url`. A cache miss
    /// made for a traced request gets CLIENT spans under it (`trace`).
    pub async fn verify(
        &self,
        token: &str,
        client: Option<IpAddr>,
        endpoint_url: &str,
        trace: Option<&RequestTrace>,
    ) -> Result<Arc<Principal>, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let verdict = match self.cache.get(&key).await {
            Some(v) => {
                self.cache_hit.inc();
                v
            }
            None => {
                self.cache_miss.inc();
                self.cache
                    .try_get_with(key, self.introspect_miss(token, client, trace))
                    .await
                    .map_err(|e| match *e {
                        MissError::RateLimited => AuthError::RateLimited,
                        MissError::Overloaded => AuthError::Overloaded,
                        MissError::Idp => AuthError::IdpUnavailable,
                    })?
            }
        };
        let (claims, principal) = match verdict {
            Verdict::Active(c, p) => (c, p),
            Verdict::Inactive => return Err(AuthError::Inactive),
        };
        self.check(&claims, endpoint_url)?;
        Ok(principal)
    }

    /// The tool grants of an active token, when `auth.tool_grants_claim` is set: tsidp's
    /// `userinfo_endpoint` (from its metadata; `<issuer>/userinfo` before it is known),
    /// called with the user's token.
    async fn tool_grants(
        &self,
        token: &str,
        trace: Option<&RequestTrace>,
    ) -> Result<Vec<ClaimGrant>, MissError> {
        let Some(claim) = self.cfg.tool_grants_claim.as_deref() else {
            return Ok(Vec::new());
        };
        let max = self.cfg.introspection.max_response_bytes;
        let url = self
            .metadata
            .endpoint(
                &self.http,
                max,
                "userinfo_endpoint",
                &self.issuer,
                "userinfo",
            )
            .await;
        let span = self.idp_span(trace, "userinfo", &http::Method::GET, &url);
        let res = tokio::time::timeout(
            self.cfg.introspection.timeout,
            super::userinfo::fetch_grants(&self.http, &url, token, claim, max),
        )
        .await;
        if let Some(s) = span {
            let (status, error) = match &res {
                Ok(Ok(_)) => (Some(200), None),
                Ok(Err(super::userinfo::UserinfoError::Status(s))) => (Some(*s), None),
                Ok(Err(super::userinfo::UserinfoError::Transport(_))) => (None, Some("transport")),
                Ok(Err(super::userinfo::UserinfoError::Body(_))) => {
                    (Some(200), Some("invalid_response"))
                }
                Err(_) => (None, Some("timeout")),
            };
            s.end(status, error);
        }
        match res {
            Ok(Ok(g)) => {
                self.metrics.userinfo.with_label_values(&["ok"]).inc();
                Ok(g)
            }
            Ok(Err(e)) => {
                self.metrics.userinfo.with_label_values(&["error"]).inc();
                log::warn!("reading tool grants from {url} failed: {e}");
                Err(MissError::Idp)
            }
            Err(_) => {
                self.metrics.userinfo.with_label_values(&["timeout"]).inc();
                log::warn!("reading tool grants from {url} timed out");
                Err(MissError::Idp)
            }
        }
    }

    fn check(&self, c: &Claims, endpoint_url: &str) -> Result<(), AuthError> {
        if c.exp.is_some_and(|exp| exp <= now_unix()) {
            return Err(AuthError::Expired);
        }
        if let Some(iss) = &c.iss {
            if normalise_url(iss) != self.issuer {
                return Err(AuthError::WrongIssuer);
            }
        }
        if !audience_ok(
            self.cfg.audience_check,
            &c.aud,
            &self.cfg.public_origin,
            endpoint_url,
        ) {
            return Err(AuthError::WrongAudience);
        }
        if !self.cfg.allowed_client_ids.is_empty()
            && !c
                .client_id
                .as_ref()
                .is_some_and(|id| self.cfg.allowed_client_ids.contains(id))
        {
            return Err(AuthError::ClientNotAllowed);
        }
        Ok(())
    }

    /// The one introspection call for a cache miss (run once per key at a time).
    async fn introspect_miss(
        &self,
        token: &str,
        client: Option<IpAddr>,
        trace: Option<&RequestTrace>,
    ) -> Result<Verdict, MissError> {
        // The flood model (see `ratelimit`): a miss takes a token from its client's budget
        // and from the global one; both come back if the token is active.
        let now = Instant::now();
        let mut spent = Spent::default();
        if let Some(ip) = client {
            if !self.limiter.take_at(ip, now) {
                return Err(self.rate_limited());
            }
            spent.client = Some(ip);
        }
        // Every miss also takes from the global budget: given back when active, so only bad
        // lookups drain it, however many addresses they come from.
        if !self.global.take_at(now) {
            spent.give_back(self);
            return Err(self.rate_limited());
        }
        spent.global = true;
        let permit =
            match tokio::time::timeout(self.cfg.introspection.timeout, self.in_flight.acquire())
                .await
            {
                Ok(Ok(p)) => p,
                _ => {
                    self.metrics
                        .introspections
                        .with_label_values(&["overloaded"])
                        .inc();
                    return Err(MissError::Overloaded);
                }
            };
        let started = Instant::now();
        let span = self.idp_span(
            trace,
            "introspection",
            &http::Method::POST,
            self.cfg.introspection_url.as_str(),
        );
        let res = tokio::time::timeout(
            self.cfg.introspection.timeout,
            introspect(
                &self.http,
                self.cfg.introspection_url.as_str(),
                &self.cfg.client_id,
                self.secret.expose(),
                token,
                self.cfg.introspection.max_response_bytes,
            ),
        )
        .await;
        self.metrics
            .introspection_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Some(s) = span {
            let (status, error) = match &res {
                Ok(Ok(_)) => (Some(200), None),
                Ok(Err(IntrospectError::CredentialsRejected(s) | IntrospectError::Status(s))) => {
                    (Some(*s), None)
                }
                Ok(Err(IntrospectError::Transport(_))) => (None, Some("transport")),
                Ok(Err(IntrospectError::TooLarge(_) | IntrospectError::Invalid)) => {
                    (Some(200), Some("invalid_response"))
                }
                Err(_) => (None, Some("timeout")),
            };
            s.end(status, error);
        }
        match res {
            Ok(Ok(claims)) if claims.active => {
                self.metrics
                    .introspections
                    .with_label_values(&["active"])
                    .inc();
                self.seen_active.store(true, Ordering::Relaxed);
                self.inactive_streak.store(0, Ordering::Relaxed);
                let tool_grants = self.tool_grants(token, trace).await?;
                drop(permit);
                spent.give_back(self);
                let principal = Principal::new(
                    claims.sub.clone(),
                    claims.username.clone(),
                    claims.client_id.clone(),
                    tool_grants,
                );
                Ok(Verdict::Active(Arc::new(claims), Arc::new(principal)))
            }
            Ok(Ok(_)) => {
                self.metrics
                    .introspections
                    .with_label_values(&["inactive"])
                    .inc();
                let streak = self.inactive_streak.fetch_add(1, Ordering::Relaxed) + 1;
                if streak >= INACTIVE_STREAK_ALARM && !self.seen_active.load(Ordering::Relaxed) {
                    self.alarm(&format!(
                        "every one of the last {streak} tokens came back inactive and none was ever active: \
                         tsidp answers active=false to callers it cannot identify, so check auth.client_id / \
                         auth.client_secret and that this node may reach {}",
                        self.cfg.introspection_url
                    ));
                }
                Ok(Verdict::Inactive)
            }
            Ok(Err(e)) => {
                self.metrics
                    .introspections
                    .with_label_values(&["error"])
                    .inc();
                match &e {
                    IntrospectError::CredentialsRejected(_) => {
                        self.alarm(&format!("token introspection refused the bridge: {e}"))
                    }
                    _ => log::warn!("token introspection failed: {e}"),
                }
                Err(MissError::Idp)
            }
            Err(_) => {
                self.metrics
                    .introspections
                    .with_label_values(&["timeout"])
                    .inc();
                log::warn!(
                    "token introspection timed out after {:?}",
                    self.cfg.introspection.timeout
                );
                Err(MissError::Idp)
            }
        }
    }

    fn rate_limited(&self) -> MissError {
        self.metrics
            .introspections
            .with_label_values(&["rate_limited"])
            .inc();
        MissError::RateLimited
    }

    /// Log at error level, at most once a minute.
    fn alarm(&self, msg: &str) {
        if let Ok(mut at) = self.alarmed_at.lock() {
            if at.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                *at = Some(Instant::now());
                log::error!("AUTH MISCONFIGURED? {msg}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_ttl_table() {
        let max = Duration::from_secs(60);
        let cases = [
            (Some(1_000 + 300), 1_000, 60),
            (Some(1_000 + 30), 1_000, 30),
            (Some(1_000), 1_000, 0),
            (Some(900), 1_000, 0),
            (None, 1_000, 60),
        ];
        for (exp, now, want) in cases {
            assert_eq!(
                active_ttl(max, exp, now),
                Duration::from_secs(want),
                "{exp:?} {now}"
            );
        }
    }

    #[test]
    fn audience_table() {
        let o = "https://mcp.example.com";
        let ep = "https://mcp.example.com/mcp/a";
        let aud = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        use AudienceCheck::*;
        let cases: &[(AudienceCheck, &[&str], bool)] = &[
            (Off, &["cid"], true),
            (Origin, &["cid", "https://mcp.example.com/"], true),
            (Origin, &["cid", "https://mcp.example.com"], true),
            (Origin, &["cid", "https://mcp.example.com/mcp/a"], true),
            (Origin, &["cid"], false),
            (Origin, &["https://mcp.example.com.evil.net/"], false),
            (Origin, &["https://mcp.example.comx"], false),
            (Endpoint, &["cid", "https://mcp.example.com/mcp/a/"], true),
            (Endpoint, &["https://mcp.example.com/mcp/a"], true),
            (Endpoint, &["https://mcp.example.com/"], false),
            (Endpoint, &["https://mcp.example.com/mcp/ab"], false),
        ];
        for (mode, a, want) in cases {
            assert_eq!(audience_ok(*mode, &aud(a), o, ep), *want, "{mode:?} {a:?}");
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(AuthError::Missing.status(), 401);
        assert_eq!(AuthError::Missing.challenge_error(), None);
        assert_eq!(
            AuthError::Inactive.challenge_error().unwrap().0,
            "invalid_token"
        );
        assert_eq!(AuthError::IdpUnavailable.status(), 503);
        assert_eq!(AuthError::RateLimited.status(), 429);
        assert_eq!(AuthError::QueryToken.status(), 400);
    }
}
