//! `auth`: the OAuth resource server backed by tsidp (metadata, introspection, cache, limits,
//! registration, identity headers).

use super::fields::*;
use super::raw::*;
use super::secrets::SecretSource;
use super::server::normalise_origin;
use super::units::parse_size;
use super::*;
use serde::Deserialize;
use std::time::Duration;
use url::Url;

pub(super) const AUTH_KEYS: &[&str] = &[
    "issuer",
    "audience",
    "introspection_url",
    "client_id",
    "client_secret",
    "client_secret_env",
    "client_secret_file",
    "resource_metadata_url",
    "advertise",
    "audience_check",
    "allowed_client_ids",
    "identity_headers",
    "cache",
    "introspection",
    "registration",
    "metadata_refresh",
    "allow_loopback_idp",
    "tool_grants_claim",
    "broker",
];

pub(super) const IDENTITY_HEADER_KEYS: &[&str] = &["subject", "username", "client_id"];

pub(super) const TOKEN_CACHE_KEYS: &[&str] = &["max_ttl", "negative_ttl", "capacity"];

pub(super) const INTROSPECTION_KEYS: &[&str] = &[
    "timeout",
    "max_response_bytes",
    "max_concurrent",
    "per_client_rate",
    "per_client_burst",
    "global_rate",
    "global_burst",
];

pub(super) const REGISTRATION_KEYS: &[&str] = &["enabled", "allowed_redirect_uris", "per_minute"];

/// Which authorization server the bridge names in its protected-resource metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advertise {
    /// The bridge origin is the authorization server: its AS metadata carries the bridge
    /// origin as `issuer` (strict RFC 8414 §3.3 clients such as mcp-remote accept it).
    Bridge,
    /// tsidp itself, as tsmcp did (metadata keeps tsidp's `issuer`).
    Idp,
}

/// How the token's `aud` is checked (requirements #3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceCheck {
    Off,
    /// Some `aud` entry is the bridge origin or a URL on it.
    Origin,
    /// Some `aud` entry is the requested endpoint's own URL.
    Endpoint,
}

#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub subject: Option<String>,
    pub username: Option<String>,
    pub client_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TokenCache {
    pub max_ttl: Duration,
    pub negative_ttl: Duration,
    pub capacity: u64,
}

#[derive(Debug, Clone)]
pub struct Introspection {
    pub timeout: Duration,
    pub max_response_bytes: u64,
    pub max_concurrent: usize,
    /// Cache-missing introspections allowed per client IP per second.
    pub per_client_rate: f64,
    pub per_client_burst: u32,
    /// The global budget of bad (inactive or failed) misses, per second and burst.
    pub global_rate: f64,
    pub global_burst: u32,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub enabled: bool,
    pub allowed_redirect_uris: Vec<String>,
    pub per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct Auth {
    /// tsidp's issuer (its server URL); also the base of its endpoints.
    pub issuer: Url,
    pub audience: Url,
    pub introspection_url: Url,
    pub client_id: String,
    pub client_secret: SecretSource,
    pub resource_metadata_url: Option<Url>,
    /// The bridge's public origin (`https://host[:port]`, no trailing slash).
    pub public_origin: String,
    pub advertise: Advertise,
    pub audience_check: AudienceCheck,
    pub allowed_client_ids: Vec<String>,
    pub identity_headers: IdentityHeaders,
    pub cache: TokenCache,
    pub introspection: Introspection,
    pub registration: Registration,
    pub metadata_refresh: Duration,
    pub allow_loopback_idp: bool,
    /// The `/userinfo` claim that carries tool grants from the Tailscale policy file.
    pub tool_grants_claim: Option<String>,
    /// The OAuth broker (`auth.broker.enabled`), or `None` when off.
    pub broker: Option<super::broker::Broker>,
}

/// Default cap on how long an active introspection result is trusted (requirements #8).
pub const DEFAULT_TOKEN_CACHE_TTL: Duration = Duration::from_secs(60);

/// Default time an inactive verdict is remembered.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// Default number of cached introspection results.
pub const DEFAULT_TOKEN_CACHE_CAPACITY: u64 = 10_000;

/// Default introspection timeout.
pub const DEFAULT_INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Default introspection response size cap.
pub const DEFAULT_INTROSPECTION_MAX_BYTES: u64 = 64 << 10;

/// Default global cap on concurrent introspection calls.
pub const DEFAULT_INTROSPECTION_CONCURRENCY: usize = 16;

/// Default cache-miss introspections per client IP per second, and burst.
pub const DEFAULT_PER_CLIENT_RATE: f64 = 5.0;

pub const DEFAULT_PER_CLIENT_BURST: u32 = 20;

/// Default global budget of bad misses per second, and burst (see `auth::ratelimit`).
pub const DEFAULT_GLOBAL_RATE: f64 = 20.0;

pub const DEFAULT_GLOBAL_BURST: u32 = 100;

/// Default `/register` rate when enabled.
pub const DEFAULT_REGISTRATIONS_PER_MINUTE: u32 = 5;

/// Default refresh period of tsidp's AS metadata.
pub const DEFAULT_METADATA_REFRESH: Duration = Duration::from_secs(300);

/// Default identity header names.
pub const DEFAULT_SUBJECT_HEADER: &str = "X-Tailbridge-Subject";

pub const DEFAULT_USERNAME_HEADER: &str = "X-Tailbridge-User";

pub const DEFAULT_CLIENT_ID_HEADER: &str = "X-Tailbridge-Client-Id";

#[derive(Debug, Default, Deserialize)]
pub struct RawAuth {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub introspection_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<String>,
    pub resource_metadata_url: Option<String>,
    pub advertise: Option<String>,
    pub audience_check: Option<String>,
    pub allowed_client_ids: Option<Vec<String>>,
    pub identity_headers: Option<RawIdentityHeaders>,
    pub cache: Option<RawTokenCache>,
    pub introspection: Option<RawIntrospection>,
    pub registration: Option<RawRegistration>,
    pub metadata_refresh: Option<DurationValue>,
    pub allow_loopback_idp: Option<bool>,
    pub tool_grants_claim: Option<String>,
    pub broker: Option<super::broker::RawBroker>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawIdentityHeaders {
    pub subject: Option<String>,
    pub username: Option<String>,
    pub client_id: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTokenCache {
    pub max_ttl: Option<DurationValue>,
    pub negative_ttl: Option<DurationValue>,
    pub capacity: Option<Num<u64>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawIntrospection {
    pub timeout: Option<DurationValue>,
    pub max_response_bytes: Option<SizeValue>,
    pub max_concurrent: Option<Num<usize>>,
    pub per_client_rate: Option<Num<f64>>,
    pub per_client_burst: Option<Num<u32>>,
    pub global_rate: Option<Num<f64>>,
    pub global_burst: Option<Num<u32>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRegistration {
    pub enabled: Option<bool>,
    pub allowed_redirect_uris: Option<Vec<String>>,
    pub per_minute: Option<Num<u32>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) fn auth(e: &mut Errors, raw: RawAuth, public_url: Option<&Url>) -> Option<Auth> {
    e.unknown("auth", &raw.unknown, AUTH_KEYS);
    let issuer = http_url(e, "auth.issuer", raw.issuer);
    let tool_grants_claim = match raw.tool_grants_claim {
        Some(c) if c.trim().is_empty() => {
            e.add(
                "auth.tool_grants_claim",
                "must be a claim name such as mcp_tools",
            );
            None
        }
        other => other,
    };
    let audience = http_url(e, "auth.audience", raw.audience);
    let introspection_url = http_url(e, "auth.introspection_url", raw.introspection_url);
    let resource_metadata_url = match raw.resource_metadata_url {
        None => None,
        some => http_url(e, "auth.resource_metadata_url", some),
    };
    let client_id = match raw.client_id {
        Some(id) if !id.trim().is_empty() => Some(id),
        _ => {
            e.add("auth.client_id", "required when auth is present");
            None
        }
    };
    let client_secret = e.secret(
        "auth",
        "client_secret",
        raw.client_secret.as_ref(),
        raw.client_secret_env.as_ref(),
        raw.client_secret_file.as_ref(),
    );
    if client_secret.is_none() {
        e.add(
            "auth.client_secret",
            "required when auth is present (client_secret, client_secret_env or client_secret_file)",
        );
    }
    let advertise = match raw.advertise.as_deref().unwrap_or("bridge") {
        "bridge" => Advertise::Bridge,
        "idp" => Advertise::Idp,
        other => {
            e.add(
                "auth.advertise",
                format!("`{other}` is not one of bridge, idp"),
            );
            Advertise::Bridge
        }
    };
    let audience_check = match raw.audience_check.as_deref().unwrap_or("origin") {
        "off" => AudienceCheck::Off,
        "origin" => AudienceCheck::Origin,
        "endpoint" => AudienceCheck::Endpoint,
        other => {
            e.add(
                "auth.audience_check",
                format!("`{other}` is not one of off, origin, endpoint"),
            );
            AudienceCheck::Origin
        }
    };
    let ih = raw.identity_headers.unwrap_or_default();
    e.unknown("auth.identity_headers", &ih.unknown, IDENTITY_HEADER_KEYS);
    let identity_headers = IdentityHeaders {
        subject: header_name(
            e,
            "auth.identity_headers.subject",
            ih.subject,
            DEFAULT_SUBJECT_HEADER,
        ),
        username: header_name(
            e,
            "auth.identity_headers.username",
            ih.username,
            DEFAULT_USERNAME_HEADER,
        ),
        client_id: header_name(
            e,
            "auth.identity_headers.client_id",
            ih.client_id,
            DEFAULT_CLIENT_ID_HEADER,
        ),
    };
    let c = raw.cache.unwrap_or_default();
    e.unknown("auth.cache", &c.unknown, TOKEN_CACHE_KEYS);
    let cache = TokenCache {
        max_ttl: e.duration(
            "auth.cache.max_ttl",
            c.max_ttl.as_ref(),
            DEFAULT_TOKEN_CACHE_TTL,
        ),
        negative_ttl: e.duration(
            "auth.cache.negative_ttl",
            c.negative_ttl.as_ref(),
            DEFAULT_NEGATIVE_TTL,
        ),
        capacity: e.num(
            "auth.cache.capacity",
            c.capacity,
            DEFAULT_TOKEN_CACHE_CAPACITY,
            "a whole number",
        ),
    };
    if cache.max_ttl > Duration::from_secs(300) {
        e.add(
            "auth.cache.max_ttl",
            "must be at most 5m (tokens can be revoked)",
        );
    }
    if cache.capacity == 0 {
        e.add("auth.cache.capacity", "must be greater than 0");
    }
    let i = raw.introspection.unwrap_or_default();
    e.unknown("auth.introspection", &i.unknown, INTROSPECTION_KEYS);
    let max_response_bytes = match i.max_response_bytes.as_ref().map(parse_size) {
        None => DEFAULT_INTROSPECTION_MAX_BYTES,
        Some(Ok(n)) if n >= 256 => n,
        Some(Ok(_)) => {
            e.add(
                "auth.introspection.max_response_bytes",
                "must be at least 256",
            );
            DEFAULT_INTROSPECTION_MAX_BYTES
        }
        Some(Err(err)) => {
            e.add("auth.introspection.max_response_bytes", err);
            DEFAULT_INTROSPECTION_MAX_BYTES
        }
    };
    let introspection = Introspection {
        timeout: e.duration(
            "auth.introspection.timeout",
            i.timeout.as_ref(),
            DEFAULT_INTROSPECTION_TIMEOUT,
        ),
        max_response_bytes,
        max_concurrent: e.num(
            "auth.introspection.max_concurrent",
            i.max_concurrent,
            DEFAULT_INTROSPECTION_CONCURRENCY,
            "a whole number",
        ),
        per_client_rate: e.num(
            "auth.introspection.per_client_rate",
            i.per_client_rate,
            DEFAULT_PER_CLIENT_RATE,
            "a number",
        ),
        per_client_burst: e.num(
            "auth.introspection.per_client_burst",
            i.per_client_burst,
            DEFAULT_PER_CLIENT_BURST,
            "a whole number",
        ),
        global_rate: e.num(
            "auth.introspection.global_rate",
            i.global_rate,
            DEFAULT_GLOBAL_RATE,
            "a number",
        ),
        global_burst: e.num(
            "auth.introspection.global_burst",
            i.global_burst,
            DEFAULT_GLOBAL_BURST,
            "a whole number",
        ),
    };
    if introspection.max_concurrent == 0 {
        e.add(
            "auth.introspection.max_concurrent",
            "must be greater than 0",
        );
    }
    if !(introspection.per_client_rate > 0.0 && introspection.per_client_rate.is_finite()) {
        e.add(
            "auth.introspection.per_client_rate",
            "must be a positive number",
        );
    }
    if !(introspection.global_rate > 0.0 && introspection.global_rate.is_finite()) {
        e.add(
            "auth.introspection.global_rate",
            "must be a number greater than 0",
        );
    }
    if introspection.global_burst == 0 {
        e.add("auth.introspection.global_burst", "must be greater than 0");
    }
    if introspection.per_client_burst == 0 {
        e.add(
            "auth.introspection.per_client_burst",
            "must be greater than 0",
        );
    }
    let r = raw.registration.unwrap_or_default();
    e.unknown("auth.registration", &r.unknown, REGISTRATION_KEYS);
    let registration = Registration {
        enabled: r.enabled.unwrap_or(false),
        allowed_redirect_uris: r.allowed_redirect_uris.unwrap_or_default(),
        per_minute: e.num(
            "auth.registration.per_minute",
            r.per_minute,
            DEFAULT_REGISTRATIONS_PER_MINUTE,
            "a whole number",
        ),
    };
    if registration.enabled && registration.allowed_redirect_uris.is_empty() {
        e.add(
            "auth.registration.allowed_redirect_uris",
            "required when registration is enabled (e.g. https://claude.ai/api/mcp/auth_callback)",
        );
    }
    for (idx, u) in registration.allowed_redirect_uris.iter().enumerate() {
        if crate::auth::redirect::parse_allowed(u).is_none() {
            e.add(
                format!("auth.registration.allowed_redirect_uris[{idx}]"),
                format!("`{u}` is not a URL"),
            );
        }
    }
    if registration.per_minute == 0 {
        e.add("auth.registration.per_minute", "must be greater than 0");
    }
    let metadata_refresh = e.duration(
        "auth.metadata_refresh",
        raw.metadata_refresh.as_ref(),
        DEFAULT_METADATA_REFRESH,
    );
    // The bridge's public origin: server.public_url, else the audience's origin (tsmcp).
    let public_origin = public_url
        .or(audience.as_ref())
        .and_then(|u| normalise_origin(u.origin().ascii_serialization().as_str()));
    let broker = raw
        .broker
        .and_then(|b| super::broker::broker(e, b, public_origin.as_deref()));
    Some(Auth {
        issuer: issuer?,
        audience: audience?,
        introspection_url: introspection_url?,
        client_id: client_id?,
        client_secret: client_secret?,
        resource_metadata_url,
        public_origin: public_origin?,
        advertise,
        audience_check,
        allowed_client_ids: raw.allowed_client_ids.unwrap_or_default(),
        identity_headers,
        cache,
        introspection,
        registration,
        metadata_refresh,
        allow_loopback_idp: raw.allow_loopback_idp.unwrap_or(false),
        tool_grants_claim,
        broker,
    })
}
