//! Raw YAML → typed [`Config`], collecting every error with its field path.
//!
//! The rules are at least tsmcp's (listen is loopback or unspecified, at least one endpoint,
//! paths start with `/` and are unique, targets are http(s) with a host, auth fields present
//! when `auth` is) plus tailbridge's own. No rule panics on any input.

use super::raw::Num;
use super::raw::*;
use super::secrets::SecretSource;
use super::units::{parse_duration, parse_size};
use super::FieldError;
use crate::mcp::glob::Glob;
use crate::mcp::policy::{Grant, ToolPolicy};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Default main listener, as in tsmcp's examples.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8900";
/// The Tailscale API used to mint auth keys from an OAuth client secret.
pub const DEFAULT_TAILSCALE_API: &str = "https://api.tailscale.com";
/// Default admin (metrics and health) listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default wait for the first response byte: tool calls can run for minutes.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default gap allowed between two reads of a response (SSE events): generous, so that
/// quiet GET streams without keep-alive comments survive.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default cap on a request body (MCP JSON-RPC messages are small).
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 4 << 20;
/// Default cap on the total size of request headers.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 32 << 10;
/// Default cap on the number of request headers.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default time in-flight requests and open streams get to finish after SIGTERM (or after a
/// graceful upgrade handed the listeners to a new process). The process exits earlier as
/// soon as nothing is in flight.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Default time the runtimes get to stop after the grace period.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default interval between upstream reachability probes.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(15);
/// Default HSTS value, the one the Caddy block set.
pub const DEFAULT_HSTS: &str = "max-age=63072000; includeSubDomains; preload";

/// Paths served by tailbridge itself; an endpoint may not shadow them.
pub const RESERVED_PATHS: &[&str] = &[
    "/healthz",
    "/livez",
    "/readyz",
    "/.well-known",
    "/authorize",
    "/token",
    "/register",
];

const TOP_KEYS: &[&str] = &[
    "server",
    "admin",
    "tailnet",
    "auth",
    "tls",
    "limits",
    "log",
    "health",
    "endpoints",
];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "allowed_origins",
    "public_url",
    "threads",
    "grace_period",
    "shutdown_timeout",
    "pid_file",
    "upgrade_sock",
    "strip_request_headers",
    "allowed_client_cidrs",
];
const ADMIN_KEYS: &[&str] = &["listen"];
const TAILNET_KEYS: &[&str] = &[
    "mode",
    "hostname",
    "state_dir",
    "authkey_env",
    "authkey_file",
    "client_secret_env",
    "client_secret_file",
    "tags",
    "control_url",
    "api_url",
    "ephemeral",
    "log_upload",
    "socks5",
];
const SOCKS5_KEYS: &[&str] = &["address", "username", "password_env", "password_file"];
const AUTH_KEYS: &[&str] = &[
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
];
const IDENTITY_HEADER_KEYS: &[&str] = &["subject", "username", "client_id"];
const TOKEN_CACHE_KEYS: &[&str] = &["max_ttl", "negative_ttl", "capacity"];
const INTROSPECTION_KEYS: &[&str] = &[
    "timeout",
    "max_response_bytes",
    "max_concurrent",
    "per_client_rate",
    "per_client_burst",
    "global_rate",
    "global_burst",
];
const REGISTRATION_KEYS: &[&str] = &["enabled", "allowed_redirect_uris", "per_minute"];
const TLS_KEYS: &[&str] = &[
    "mode",
    "cert_file",
    "key_file",
    "hsts",
    "acme",
    "http_listen",
];
const ACME_KEYS: &[&str] = &[
    "domains",
    "email",
    "directory_url",
    "ca_root_file",
    "challenge",
    "storage_dir",
    "eab",
    "retry_initial",
    "retry_max",
];
const EAB_KEYS: &[&str] = &["kid", "hmac_key", "hmac_key_env", "hmac_key_file"];
const LIMITS_KEYS: &[&str] = &["max_request_body", "max_header_bytes", "max_headers"];
const LOG_KEYS: &[&str] = &["format", "level", "access_log", "audit"];
const AUDIT_KEYS: &[&str] = &["enabled", "arguments", "redact"];
const HEALTH_KEYS: &[&str] = &["probe_interval", "probe_timeout"];
const ENDPOINT_KEYS: &[&str] = &[
    "name",
    "path",
    "target",
    "description",
    "enabled",
    "upstream_token_env",
    "upstream_token_file",
    "timeouts",
    "tls_verify",
    "tools",
    "allowed_client_cidrs",
];
const TIMEOUT_KEYS: &[&str] = &["connect", "first_byte", "idle"];
const TOOLS_KEYS: &[&str] = &["allow", "deny", "grants"];
const GRANT_KEYS: &[&str] = &["users", "clients", "allow"];

/// The keys each section accepts, as the parser checks them; also what the reference
/// config (`conf/tailbridge.yaml`) must document, which a test checks.
pub const SECTIONS: &[(&str, &[&str])] = &[
    ("", TOP_KEYS),
    ("server", SERVER_KEYS),
    ("admin", ADMIN_KEYS),
    ("tailnet", TAILNET_KEYS),
    ("tailnet.socks5", SOCKS5_KEYS),
    ("auth", AUTH_KEYS),
    ("auth.identity_headers", IDENTITY_HEADER_KEYS),
    ("auth.cache", TOKEN_CACHE_KEYS),
    ("auth.introspection", INTROSPECTION_KEYS),
    ("auth.registration", REGISTRATION_KEYS),
    ("tls", TLS_KEYS),
    ("tls.acme", ACME_KEYS),
    ("tls.acme.eab", EAB_KEYS),
    ("limits", LIMITS_KEYS),
    ("log", LOG_KEYS),
    ("log.audit", AUDIT_KEYS),
    ("health", HEALTH_KEYS),
    ("endpoints[]", ENDPOINT_KEYS),
    ("endpoints[].timeouts", TIMEOUT_KEYS),
    ("endpoints[].tools", TOOLS_KEYS),
    ("endpoints[].tools.grants[]", GRANT_KEYS),
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub admin: Admin,
    pub tailnet: Tailnet,
    pub auth: Option<Auth>,
    pub tls: Tls,
    pub limits: Limits,
    pub log: Log,
    pub health: Health,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// Normalised origins (lower-case, no trailing slash). Empty = allow any.
    pub allowed_origins: Vec<String>,
    /// The public origin clients use, when it cannot be inferred from `Host`.
    pub public_url: Option<Url>,
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    /// Extra client header names (lower-case; `prefix*` patterns) never forwarded upstream.
    pub strip_request_headers: Vec<String>,
    /// Client networks allowed to call endpoints, `/token` and `/register` (empty = all).
    pub allowed_client_cidrs: Vec<crate::proxy::cidr::Cidr>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    /// `None` when the admin listener is off (`admin.listen: ""`).
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailnetMode {
    Tsnet,
    Socks5,
    Direct,
}

impl TailnetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TailnetMode::Tsnet => "tsnet",
            TailnetMode::Socks5 => "socks5",
            TailnetMode::Direct => "direct",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tailnet {
    pub mode: TailnetMode,
    pub hostname: String,
    pub state_dir: PathBuf,
    pub authkey: Option<SecretSource>,
    pub client_secret: Option<SecretSource>,
    pub tags: Vec<String>,
    pub control_url: Option<Url>,
    /// Tailscale API base, used to mint a tagged auth key from an OAuth client secret
    /// (default [`DEFAULT_TAILSCALE_API`]).
    pub api_url: Option<Url>,
    pub ephemeral: bool,
    /// Let the embedded node upload its logs to Tailscale's log service (default off).
    pub log_upload: bool,
    pub socks5: Option<Socks5>,
}

#[derive(Debug, Clone)]
pub struct Socks5 {
    /// `host:port` of the SOCKS5 server.
    pub address: String,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    Off,
    Files {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    Acme(Acme),
}

/// Let's Encrypt's production directory, the default `tls.acme.directory_url`.
pub const LETSENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (accepted as `directory_url: letsencrypt-staging`).
pub const LETSENCRYPT_STAGING_DIRECTORY: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";
/// Default `tls.acme.storage_dir`.
pub const DEFAULT_ACME_STORAGE: &str = "/var/lib/tailbridge/acme";
/// Default first retry delay after a failed issuance or renewal. With the doubling this keeps
/// under Let's Encrypt's limit of 5 failed validations per name and hour.
pub const DEFAULT_ACME_RETRY_INITIAL: Duration = Duration::from_secs(5 * 60);
/// Default cap on the retry delay.
pub const DEFAULT_ACME_RETRY_MAX: Duration = Duration::from_secs(3 * 3600);

/// The ACME challenge tailbridge answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// RFC 8737: answered on the TLS listener itself (`server.listen`, port 443 in production).
    TlsAlpn01,
    /// RFC 8555 §8.3: answered on `tls.http_listen` (port 80 in production).
    Http01,
}

impl AcmeChallenge {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }

    /// The port the CA connects to for this challenge.
    pub fn ca_port(self) -> u16 {
        match self {
            AcmeChallenge::TlsAlpn01 => 443,
            AcmeChallenge::Http01 => 80,
        }
    }
}

/// External account binding (RFC 8555 §7.3.4), required by some CAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eab {
    pub kid: String,
    /// Base64url HMAC key as the CA hands it out.
    pub hmac_key: SecretSource,
}

/// `tls.mode: acme`: certificates obtained and renewed automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    pub domains: Vec<String>,
    pub email: Option<String>,
    pub directory_url: String,
    /// Extra trust anchor for the directory's own HTTPS (private CAs, tests).
    pub ca_root_file: Option<PathBuf>,
    pub challenge: AcmeChallenge,
    pub storage_dir: PathBuf,
    pub eab: Option<Eab>,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub mode: TlsMode,
    /// `Strict-Transport-Security` value sent when TLS is on; `None` = not sent.
    pub hsts: Option<String>,
    /// Plain HTTP listener that redirects to HTTPS and answers HTTP-01 challenges.
    pub http_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_body: u64,
    pub max_header_bytes: u64,
    pub max_headers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    /// env_logger filter used when `RUST_LOG` is unset.
    pub level: String,
    pub access_log: bool,
    pub audit: Audit,
}

/// Default keys whose values are redacted when tool arguments are audited.
pub const DEFAULT_AUDIT_REDACT: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "private_key",
];

/// The audit log of tool calls (`log.audit`).
#[derive(Debug, Clone)]
pub struct Audit {
    pub enabled: bool,
    /// Log `tools/call` arguments (off by default).
    pub arguments: bool,
    /// Keys whose values are replaced by `[redacted]` in logged arguments, at any depth.
    pub redact: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Metric/log label: `name`, or the path without its leading `/`.
    pub name: String,
    /// Normalised prefix: starts with `/`, no trailing `/`, no empty or dot segments.
    pub path: String,
    pub target: Url,
    /// Host from the target URL: used for dialing, `Host` and TLS SNI.
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// `host[:port]` as it goes into the upstream `Host` header.
    pub authority: String,
    pub description: String,
    pub enabled: bool,
    pub upstream_token: Option<SecretSource>,
    pub timeouts: Timeouts,
    pub tls_verify: bool,
    /// Which tools may be called, by whom (`tools`).
    pub tools: ToolPolicy,
    /// This endpoint's client allowlist, replacing the server's when set.
    pub allowed_client_cidrs: Option<Vec<crate::proxy::cidr::Cidr>>,
}

/// Collects errors while walking the raw config.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn unknown(&mut self, prefix: &str, unknown: &Unknown, known: &[&str]) {
        for key in unknown.keys() {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            self.add(
                path,
                format!("unknown key (expected one of: {})", known.join(", ")),
            );
        }
    }

    /// A number field: its value, the default when absent, or an error naming the field.
    fn num<T: Copy>(&mut self, path: &str, v: Option<Num<T>>, default: T, expected: &str) -> T {
        match v {
            None => default,
            Some(Num(Ok(n))) => n,
            Some(Num(Err(written))) => {
                self.add(path, format!("`{written}` is not {expected}"));
                default
            }
        }
    }

    fn duration(&mut self, path: &str, v: Option<&DurationValue>, default: Duration) -> Duration {
        match v.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.add(path, e);
                default
            }
        }
    }

    fn secret(
        &mut self,
        path: &str,
        field: &str,
        inline: Option<&String>,
        env: Option<&String>,
        file: Option<&String>,
    ) -> Option<SecretSource> {
        let mut found = Vec::new();
        if let Some(v) = inline {
            found.push(SecretSource::Inline(v.clone()));
        }
        if let Some(v) = env {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.add(
                    format!("{path}.{field}_env"),
                    "must be an environment variable name ([A-Za-z0-9_]+)",
                );
            }
            found.push(SecretSource::Env(v.clone()));
        }
        if let Some(v) = file {
            if v.is_empty() {
                self.add(format!("{path}.{field}_file"), "must be a file path");
            }
            found.push(SecretSource::File(PathBuf::from(v)));
        }
        if found.len() > 1 {
            let forms: Vec<String> = [
                inline.map(|_| field.to_string()),
                env.map(|_| format!("{field}_env")),
                file.map(|_| format!("{field}_file")),
            ]
            .into_iter()
            .flatten()
            .collect();
            self.add(
                format!("{path}.{field}"),
                format!("give only one of {}", forms.join(", ")),
            );
        }
        found.into_iter().next()
    }
}

fn prefixed(prefix: &str, key: &str) -> String {
    format!("{prefix}.{key}")
}

/// Validate a raw config. Returns every problem found, not only the first.
pub fn validate(raw: RawConfig) -> Result<Config, Vec<FieldError>> {
    let mut e = Errors::default();
    e.unknown("", &raw.unknown, TOP_KEYS);
    let server = server(&mut e, raw.server.unwrap_or_default());
    let admin = admin(&mut e, raw.admin.unwrap_or_default());
    let tailnet = tailnet(&mut e, raw.tailnet);
    let auth = raw
        .auth
        .and_then(|a| auth(&mut e, a, server.public_url.as_ref()));
    let tls = tls(&mut e, raw.tls.unwrap_or_default(), &server, &admin);
    let limits = limits(&mut e, raw.limits.unwrap_or_default());
    let log = log(&mut e, raw.log.unwrap_or_default());
    let health = health(&mut e, raw.health.unwrap_or_default());
    let endpoints = endpoints(&mut e, raw.endpoints.unwrap_or_default(), auth.is_some());

    if let (Some(admin_addr), listen) = (admin.listen, server.listen) {
        if admin_addr == listen {
            e.add("admin.listen", "must differ from server.listen");
        }
    }
    if e.0.is_empty() {
        Ok(Config {
            server,
            admin,
            tailnet,
            auth,
            tls,
            limits,
            log,
            health,
            endpoints,
        })
    } else {
        Err(e.0)
    }
}

fn socket_addr(e: &mut Errors, path: &str, value: &str) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            e.add(
                path,
                format!("`{value}` is not an IP:port address (e.g. 0.0.0.0:8900 or [::1]:8900)"),
            );
            None
        }
    }
}

fn server(e: &mut Errors, raw: RawServer) -> Server {
    e.unknown("server", &raw.unknown, SERVER_KEYS);
    let allowed_client_cidrs = cidrs(
        e,
        "server.allowed_client_cidrs",
        raw.allowed_client_cidrs.as_deref(),
    )
    .unwrap_or_default();
    let mut strip_request_headers = Vec::new();
    for (i, h) in raw
        .strip_request_headers
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let name = h.strip_suffix('*').unwrap_or(h);
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b));
        if token {
            strip_request_headers.push(h.to_ascii_lowercase());
        } else {
            e.add(
                format!("server.strip_request_headers[{i}]"),
                format!("`{h}` is not a header name or a `prefix*` pattern"),
            );
        }
    }
    let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let fallback: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8900));
    let listen = match socket_addr(e, "server.listen", &listen_text) {
        Some(a) if a.ip().is_loopback() || a.ip().is_unspecified() => a,
        Some(_) => {
            e.add(
                "server.listen",
                "must be a loopback (127.0.0.1, ::1) or unspecified (0.0.0.0, ::) address",
            );
            fallback
        }
        None => fallback,
    };
    let mut allowed_origins = Vec::new();
    for (i, o) in raw.allowed_origins.unwrap_or_default().iter().enumerate() {
        match normalise_origin(o) {
            Some(n) => allowed_origins.push(n),
            None => e.add(
                format!("server.allowed_origins[{i}]"),
                format!("`{o}` is not an origin (scheme://host[:port], no path)"),
            ),
        }
    }
    let public_url = raw.public_url.and_then(|u| match Url::parse(&u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            if url.path() != "/" || url.query().is_some() {
                e.add(
                    "server.public_url",
                    "must be an origin without path or query (e.g. https://mcp.example.com)",
                );
            }
            Some(url)
        }
        _ => {
            e.add("server.public_url", format!("`{u}` is not an http(s) URL"));
            None
        }
    });
    let threads = e.num("server.threads", raw.threads, 1, "a whole number");
    if threads == 0 || threads > 256 {
        e.add("server.threads", "must be between 1 and 256");
    }
    Server {
        listen,
        strip_request_headers,
        allowed_client_cidrs,
        allowed_origins,
        public_url,
        threads,
        grace_period: e.duration(
            "server.grace_period",
            raw.grace_period.as_ref(),
            DEFAULT_GRACE_PERIOD,
        ),
        shutdown_timeout: e.duration(
            "server.shutdown_timeout",
            raw.shutdown_timeout.as_ref(),
            DEFAULT_SHUTDOWN_TIMEOUT,
        ),
        pid_file: PathBuf::from(
            raw.pid_file
                .unwrap_or_else(|| "/tmp/tailbridge.pid".to_string()),
        ),
        upgrade_sock: PathBuf::from(
            raw.upgrade_sock
                .unwrap_or_else(|| "/tmp/tailbridge_upgrade.sock".to_string()),
        ),
    }
}

/// Lower-case scheme and host, drop a trailing `/` and a default port.
/// Returns `None` when `origin` is not `scheme://host[:port]`.
pub fn normalise_origin(origin: &str) -> Option<String> {
    let url = Url::parse(origin.trim()).ok()?;
    let host = url.host_str()?;
    if !(url.path() == "/" || url.path().is_empty())
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return None;
    }
    Some(match url.port() {
        Some(p) => format!("{}://{}:{}", url.scheme(), host, p),
        None => format!("{}://{}", url.scheme(), host),
    })
}

fn admin(e: &mut Errors, raw: RawAdmin) -> Admin {
    e.unknown("admin", &raw.unknown, ADMIN_KEYS);
    let text = raw
        .listen
        .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_string());
    let listen = if text.is_empty() {
        None
    } else {
        socket_addr(e, "admin.listen", &text)
    };
    Admin { listen }
}

fn tailnet(e: &mut Errors, raw: Option<RawTailnet>) -> Tailnet {
    let present = raw.is_some();
    let raw = raw.unwrap_or_default();
    e.unknown("tailnet", &raw.unknown, TAILNET_KEYS);
    // A tsmcp config has no `mode`: it always ran an embedded node.
    let mode = match raw.mode.as_deref() {
        None if present => TailnetMode::Tsnet,
        None => TailnetMode::Direct,
        Some("tsnet") => TailnetMode::Tsnet,
        Some("socks5") => TailnetMode::Socks5,
        Some("direct") => TailnetMode::Direct,
        Some(other) => {
            e.add(
                "tailnet.mode",
                format!("`{other}` is not one of tsnet, socks5, direct"),
            );
            TailnetMode::Direct
        }
    };
    let authkey = e.secret(
        "tailnet",
        "authkey",
        None,
        raw.authkey_env.as_ref(),
        raw.authkey_file.as_ref(),
    );
    let client_secret = e.secret(
        "tailnet",
        "client_secret",
        None,
        raw.client_secret_env.as_ref(),
        raw.client_secret_file.as_ref(),
    );
    let tags = raw.tags.unwrap_or_default();
    for (i, t) in tags.iter().enumerate() {
        let ok = t.strip_prefix("tag:").is_some_and(|n| {
            !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        if !ok {
            e.add(
                format!("tailnet.tags[{i}]"),
                format!("`{t}` is not a tag (tag:name, letters, digits and -)"),
            );
        }
    }
    let hostname = raw.hostname.unwrap_or_else(|| "tailbridge".to_string());
    if hostname.is_empty()
        || hostname.len() > 63
        || !hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        e.add(
            "tailnet.hostname",
            "must be 1-63 letters, digits or - (a tailnet machine name)",
        );
    }
    let control_url = raw.control_url.and_then(|u| match Url::parse(&u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Some(url)
        }
        _ => {
            e.add(
                "tailnet.control_url",
                format!("`{u}` is not an http(s) URL"),
            );
            None
        }
    });
    let api_url = raw.api_url.and_then(|u| match Url::parse(&u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Some(url)
        }
        _ => {
            e.add("tailnet.api_url", format!("`{u}` is not an http(s) URL"));
            None
        }
    });
    if mode == TailnetMode::Tsnet {
        if raw.state_dir.is_none() {
            e.add("tailnet.state_dir", "required when tailnet.mode is tsnet");
        }
        if client_secret.is_some() && tags.is_empty() {
            e.add(
                "tailnet.tags",
                "required with tailnet.client_secret_*: an OAuth client can only create tagged nodes",
            );
        }
        if authkey.is_some() && client_secret.is_some() {
            e.add(
                "tailnet",
                "give either authkey_* or client_secret_*, not both",
            );
        }
    }
    let socks5 = raw.socks5.map(|s| socks5(e, s));
    if mode == TailnetMode::Socks5 && socks5.is_none() {
        e.add(
            "tailnet.socks5.address",
            "required when tailnet.mode is socks5",
        );
    }
    Tailnet {
        mode,
        hostname,
        state_dir: PathBuf::from(
            raw.state_dir
                .unwrap_or_else(|| "/var/lib/tailbridge/tsnet".to_string()),
        ),
        authkey,
        client_secret,
        tags,
        control_url,
        api_url,
        ephemeral: raw.ephemeral.unwrap_or(false),
        log_upload: raw.log_upload.unwrap_or(false),
        socks5,
    }
}

fn socks5(e: &mut Errors, raw: RawSocks5) -> Socks5 {
    e.unknown("tailnet.socks5", &raw.unknown, SOCKS5_KEYS);
    let address = raw.address.unwrap_or_default();
    match split_host_port(&address) {
        Some((_, port)) if port != 0 => {}
        _ => e.add(
            "tailnet.socks5.address",
            format!("`{address}` is not host:port (e.g. 127.0.0.1:1055)"),
        ),
    }
    let password = e.secret(
        "tailnet.socks5",
        "password",
        None,
        raw.password_env.as_ref(),
        raw.password_file.as_ref(),
    );
    if password.is_some() != raw.username.is_some() {
        e.add(
            "tailnet.socks5",
            "username and password_env/password_file go together",
        );
    }
    Socks5 {
        address,
        username: raw.username,
        password,
    }
}

/// Split `host:port` or `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

fn http_url(e: &mut Errors, path: &str, value: Option<String>) -> Option<Url> {
    let Some(v) = value else {
        e.add(path, "required when auth is present");
        return None;
    };
    match Url::parse(&v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        Ok(_) => {
            e.add(path, "scheme must be http or https, with a host");
            None
        }
        Err(err) => {
            e.add(path, format!("`{v}` is not a URL: {err}"));
            None
        }
    }
}

fn header_name(e: &mut Errors, path: &str, value: Option<String>, default: &str) -> Option<String> {
    let v = value.unwrap_or_else(|| default.to_string());
    if v.is_empty() {
        return None;
    }
    if http::HeaderName::from_bytes(v.as_bytes()).is_err() {
        e.add(path, format!("`{v}` is not a valid header name"));
        return None;
    }
    let lower = v.to_ascii_lowercase();
    if [
        "authorization",
        "host",
        "cookie",
        "content-length",
        "transfer-encoding",
    ]
    .contains(&lower.as_str())
    {
        e.add(path, format!("`{v}` cannot carry identity"));
        return None;
    }
    Some(v)
}

fn auth(e: &mut Errors, raw: RawAuth, public_url: Option<&Url>) -> Option<Auth> {
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
    })
}

fn tls(e: &mut Errors, raw: RawTls, server: &Server, admin: &Admin) -> Tls {
    e.unknown("tls", &raw.unknown, TLS_KEYS);
    let mode_name = raw.mode.as_deref().unwrap_or("off");
    let mode = match mode_name {
        "off" => TlsMode::Off,
        "files" => match (raw.cert_file, raw.key_file) {
            (Some(c), Some(k)) => TlsMode::Files {
                cert_file: PathBuf::from(c),
                key_file: PathBuf::from(k),
            },
            (c, k) => {
                if c.is_none() {
                    e.add("tls.cert_file", "required when tls.mode is files");
                }
                if k.is_none() {
                    e.add("tls.key_file", "required when tls.mode is files");
                }
                TlsMode::Off
            }
        },
        "acme" => match raw.acme {
            Some(a) => acme(e, a).map(TlsMode::Acme).unwrap_or(TlsMode::Off),
            None => {
                e.add(
                    "tls.acme",
                    "required when tls.mode is acme (at least `domains`)",
                );
                TlsMode::Off
            }
        },
        other => {
            e.add(
                "tls.mode",
                format!("`{other}` is not one of off, files, acme"),
            );
            TlsMode::Off
        }
    };
    let hsts = match raw.hsts.as_deref() {
        None => Some(DEFAULT_HSTS.to_string()),
        Some("") | Some("off") => None,
        Some(v) if v.chars().all(|c| c.is_ascii_graphic() || c == ' ') => Some(v.to_string()),
        Some(_) => {
            e.add("tls.hsts", "must be printable ASCII");
            None
        }
    };
    let http_listen = match raw.http_listen.as_deref() {
        None | Some("") => None,
        Some(text) => socket_addr(e, "tls.http_listen", text),
    };
    if let Some(addr) = http_listen {
        if mode_name == "off" {
            e.add(
                "tls.http_listen",
                "redirects to HTTPS, so it needs tls.mode files or acme",
            );
        }
        if addr == server.listen {
            e.add("tls.http_listen", "must differ from server.listen");
        }
        if admin.listen == Some(addr) {
            e.add("tls.http_listen", "must differ from admin.listen");
        }
    }
    if let TlsMode::Acme(a) = &mode {
        if a.challenge == AcmeChallenge::Http01 && http_listen.is_none() {
            e.add(
                "tls.acme.challenge",
                "http-01 is answered on tls.http_listen, which is not set (e.g. \"0.0.0.0:80\")",
            );
        }
    }
    Tls {
        mode,
        hsts,
        http_listen,
    }
}

fn acme(e: &mut Errors, raw: RawAcme) -> Option<Acme> {
    e.unknown("tls.acme", &raw.unknown, ACME_KEYS);
    let before = e.0.len();
    let domains = raw.domains.unwrap_or_default();
    if domains.is_empty() {
        e.add("tls.acme.domains", "list at least one domain name");
    }
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for (i, d) in domains.iter().enumerate() {
        let name = d.trim().trim_end_matches('.').to_ascii_lowercase();
        match domain_problem(&name) {
            Some(why) => e.add(format!("tls.acme.domains[{i}]"), format!("`{d}`: {why}")),
            None if !seen.insert(name.clone()) => e.add(
                format!("tls.acme.domains[{i}]"),
                format!("`{d}` is listed twice"),
            ),
            None => names.push(name),
        }
    }
    let email = match raw.email.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(m) => {
            let m = m.strip_prefix("mailto:").unwrap_or(m);
            let ok = m.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && host.contains('.') && !host.contains('@')
            }) && !m.chars().any(|c| c.is_whitespace() || c == ',');
            if !ok {
                e.add("tls.acme.email", format!("`{m}` is not an email address"));
            }
            Some(m.to_string())
        }
    };
    let directory_url = match raw.directory_url.as_deref().map(str::trim) {
        None | Some("") | Some("letsencrypt") => LETSENCRYPT_DIRECTORY.to_string(),
        Some("letsencrypt-staging") => LETSENCRYPT_STAGING_DIRECTORY.to_string(),
        Some(u) => {
            match Url::parse(u) {
                Ok(url) if url.scheme() == "https" && url.host().is_some() => {}
                Ok(_) => e.add(
                    "tls.acme.directory_url",
                    format!("`{u}`: an ACME directory is served over https://"),
                ),
                Err(err) => e.add("tls.acme.directory_url", format!("`{u}`: {err}")),
            }
            u.to_string()
        }
    };
    let challenge = match raw.challenge.as_deref().unwrap_or("tls-alpn-01") {
        "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
        "http-01" => AcmeChallenge::Http01,
        other => {
            e.add(
                "tls.acme.challenge",
                format!("`{other}` is not one of tls-alpn-01, http-01"),
            );
            AcmeChallenge::TlsAlpn01
        }
    };
    let storage_dir = match raw.storage_dir.as_deref() {
        None => PathBuf::from(DEFAULT_ACME_STORAGE),
        Some("") => {
            e.add("tls.acme.storage_dir", "must be a directory path");
            PathBuf::new()
        }
        Some(p) => PathBuf::from(p),
    };
    let ca_root_file = match raw.ca_root_file.as_deref() {
        None | Some("") => None,
        Some(p) => Some(PathBuf::from(p)),
    };
    let eab = raw.eab.and_then(|r| {
        e.unknown("tls.acme.eab", &r.unknown, EAB_KEYS);
        let key = e.secret(
            "tls.acme.eab",
            "hmac_key",
            r.hmac_key.as_ref(),
            r.hmac_key_env.as_ref(),
            r.hmac_key_file.as_ref(),
        );
        match (r.kid.filter(|k| !k.is_empty()), key) {
            (Some(kid), Some(hmac_key)) => Some(Eab { kid, hmac_key }),
            (kid, key) => {
                if kid.is_none() {
                    e.add("tls.acme.eab.kid", "required when tls.acme.eab is set");
                }
                if key.is_none() {
                    e.add(
                        "tls.acme.eab.hmac_key",
                        "required when tls.acme.eab is set (or hmac_key_env / hmac_key_file)",
                    );
                }
                None
            }
        }
    });
    let retry_initial = e.duration(
        "tls.acme.retry_initial",
        raw.retry_initial.as_ref(),
        DEFAULT_ACME_RETRY_INITIAL,
    );
    let retry_max = e.duration(
        "tls.acme.retry_max",
        raw.retry_max.as_ref(),
        DEFAULT_ACME_RETRY_MAX,
    );
    if retry_initial.is_zero() {
        e.add("tls.acme.retry_initial", "must be greater than zero");
    }
    if retry_max < retry_initial {
        e.add(
            "tls.acme.retry_max",
            "must be at least tls.acme.retry_initial",
        );
    }
    (e.0.len() == before).then_some(Acme {
        domains: names,
        email,
        directory_url,
        ca_root_file,
        challenge,
        storage_dir,
        eab,
        retry_initial,
        retry_max,
    })
}

/// Why `name` (lower-cased, no trailing dot) cannot be on a publicly issued certificate.
pub fn domain_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty name");
    }
    if name.starts_with("*.") {
        return Some("wildcard names need the DNS-01 challenge, which tailbridge does not answer");
    }
    if name.parse::<IpAddr>().is_ok() {
        return Some("IP addresses are not supported; use a DNS name");
    }
    if !name.is_ascii() {
        return Some("write internationalised names in their xn-- (punycode) form");
    }
    if name.len() > 253 {
        return Some("longer than 253 characters");
    }
    if !name.contains('.') {
        return Some("must be a fully qualified name (e.g. mcp.example.com)");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Some("each dot-separated label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Some("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a label cannot start or end with '-'");
        }
    }
    None
}

fn limits(e: &mut Errors, raw: RawLimits) -> Limits {
    e.unknown("limits", &raw.unknown, LIMITS_KEYS);
    let mut size = |path: &str, v: Option<&SizeValue>, default: u64| match v.map(parse_size) {
        None => default,
        Some(Ok(0)) => {
            e.add(path, "must be greater than 0");
            default
        }
        Some(Ok(n)) => n,
        Some(Err(err)) => {
            e.add(path, err);
            default
        }
    };
    let max_request_body = size(
        "limits.max_request_body",
        raw.max_request_body.as_ref(),
        DEFAULT_MAX_REQUEST_BODY,
    );
    let max_header_bytes = size(
        "limits.max_header_bytes",
        raw.max_header_bytes.as_ref(),
        DEFAULT_MAX_HEADER_BYTES,
    );
    // Pingora itself refuses headers beyond 1 MiB and 256 fields.
    if max_header_bytes > 1 << 20 {
        e.add("limits.max_header_bytes", "must be at most 1MiB");
    }
    let max_headers = e.num(
        "limits.max_headers",
        raw.max_headers,
        DEFAULT_MAX_HEADERS,
        "a whole number",
    );
    if max_headers == 0 || max_headers > 256 {
        e.add("limits.max_headers", "must be between 1 and 256");
    }
    Limits {
        max_request_body,
        max_header_bytes,
        max_headers,
    }
}

fn log(e: &mut Errors, raw: RawLog) -> Log {
    e.unknown("log", &raw.unknown, LOG_KEYS);
    let a = raw.audit.unwrap_or_default();
    e.unknown("log.audit", &a.unknown, AUDIT_KEYS);
    let redact = match a.redact {
        Some(keys) => {
            for (i, k) in keys.iter().enumerate() {
                if k.trim().is_empty() {
                    e.add(format!("log.audit.redact[{i}]"), "must be a key name");
                }
            }
            keys
        }
        None => DEFAULT_AUDIT_REDACT.iter().map(|k| k.to_string()).collect(),
    };
    let audit = Audit {
        enabled: a.enabled.unwrap_or(true),
        arguments: a.arguments.unwrap_or(false),
        redact,
    };
    let format = match raw.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            e.add("log.format", format!("`{other}` is not one of text, json"));
            LogFormat::Text
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".to_string());
    if level.trim().is_empty() {
        e.add(
            "log.level",
            "must be an env_logger filter such as info or warn,tailbridge=debug",
        );
    }
    Log {
        format,
        level,
        access_log: raw.access_log.unwrap_or(true),
        audit,
    }
}

fn health(e: &mut Errors, raw: RawHealth) -> Health {
    e.unknown("health", &raw.unknown, HEALTH_KEYS);
    let probe_interval = e.duration(
        "health.probe_interval",
        raw.probe_interval.as_ref(),
        DEFAULT_PROBE_INTERVAL,
    );
    if probe_interval < Duration::from_secs(1) {
        e.add("health.probe_interval", "must be at least 1s");
    }
    Health {
        probe_interval,
        probe_timeout: e.duration(
            "health.probe_timeout",
            raw.probe_timeout.as_ref(),
            Duration::from_secs(3),
        ),
    }
}

/// Validate an endpoint path and return its normalised form (no trailing `/`).
pub fn normalise_endpoint_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("must start with /".into());
    }
    if path.contains(['?', '#']) {
        return Err("must not contain ? or #".into());
    }
    if path
        .chars()
        .any(|c| c.is_ascii_control() || c == ' ' || c == '%')
    {
        return Err("must not contain spaces, control characters or percent-escapes".into());
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("must name at least one segment (`/` alone would catch every request)".into());
    }
    for seg in trimmed[1..].split('/') {
        match seg {
            "" => return Err("must not contain empty segments (//)".into()),
            "." | ".." => return Err("must not contain . or .. segments".into()),
            _ => {}
        }
    }
    for reserved in RESERVED_PATHS {
        if trimmed == *reserved || trimmed.starts_with(&format!("{reserved}/")) {
            return Err(format!("collides with the built-in route {reserved}"));
        }
    }
    Ok(trimmed.to_string())
}

fn endpoints(e: &mut Errors, raw: Vec<RawEndpoint>, auth_on: bool) -> Vec<Endpoint> {
    if raw.is_empty() {
        e.add("endpoints", "at least one endpoint is required");
    }
    let mut paths = HashSet::new();
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, ep) in raw.into_iter().enumerate() {
        let at = format!("endpoints[{i}]");
        e.unknown(&at, &ep.unknown, ENDPOINT_KEYS);
        let allowed_client_cidrs = cidrs(
            e,
            &prefixed(&at, "allowed_client_cidrs"),
            ep.allowed_client_cidrs.as_deref(),
        );
        let tools = tools(e, &prefixed(&at, "tools"), ep.tools, auth_on);
        let path = match ep.path.as_deref() {
            None => {
                e.add(prefixed(&at, "path"), "required");
                None
            }
            Some(p) => match normalise_endpoint_path(p) {
                Ok(n) => {
                    if !paths.insert(n.clone()) {
                        e.add(prefixed(&at, "path"), format!("duplicate path `{n}`"));
                    }
                    Some(n)
                }
                Err(msg) => {
                    e.add(prefixed(&at, "path"), msg);
                    None
                }
            },
        };
        let target = match ep.target.as_deref() {
            None => {
                e.add(prefixed(&at, "target"), "required");
                None
            }
            Some(t) => target(e, &prefixed(&at, "target"), t),
        };
        let name = match (&ep.name, &path) {
            (Some(n), _) => {
                let ok = !n.is_empty()
                    && n.len() <= 64
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
                if !ok {
                    e.add(
                        prefixed(&at, "name"),
                        "must be 1-64 characters of letters, digits, - _ . /",
                    );
                }
                Some(n.clone())
            }
            (None, Some(p)) => Some(p[1..].to_string()),
            (None, None) => None,
        };
        if let Some(n) = &name {
            if !names.insert(n.clone()) {
                e.add(
                    prefixed(&at, "name"),
                    format!("duplicate endpoint name `{n}`"),
                );
            }
        }
        let upstream_token = e.secret(
            &at,
            "upstream_token",
            None,
            ep.upstream_token_env.as_ref(),
            ep.upstream_token_file.as_ref(),
        );
        let t = ep.timeouts.unwrap_or_default();
        let tp = prefixed(&at, "timeouts");
        e.unknown(&tp, &t.unknown, TIMEOUT_KEYS);
        let timeouts = Timeouts {
            connect: e.duration(
                &prefixed(&tp, "connect"),
                t.connect.as_ref(),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            first_byte: e.duration(
                &prefixed(&tp, "first_byte"),
                t.first_byte.as_ref(),
                DEFAULT_FIRST_BYTE_TIMEOUT,
            ),
            idle: e.duration(
                &prefixed(&tp, "idle"),
                t.idle.as_ref(),
                DEFAULT_IDLE_TIMEOUT,
            ),
        };
        for (field, d) in [
            ("connect", timeouts.connect),
            ("first_byte", timeouts.first_byte),
            ("idle", timeouts.idle),
        ] {
            if d.is_zero() {
                e.add(prefixed(&tp, field), "must be greater than 0");
            }
        }
        if let (Some(name), Some(path), Some((target, host, port, tls, authority))) =
            (name, path, target)
        {
            out.push(Endpoint {
                name,
                path,
                target,
                host,
                port,
                tls,
                authority,
                description: ep.description.unwrap_or_default(),
                enabled: ep.enabled.unwrap_or(true),
                upstream_token,
                timeouts,
                tls_verify: ep.tls_verify.unwrap_or(true),
                tools,
                allowed_client_cidrs,
            });
        }
    }
    out
}

/// A list of networks; `None` when absent.
fn cidrs(
    e: &mut Errors,
    path: &str,
    raw: Option<&[String]>,
) -> Option<Vec<crate::proxy::cidr::Cidr>> {
    let raw = raw?;
    let mut out = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        match crate::proxy::cidr::Cidr::parse(c) {
            Ok(n) => out.push(n),
            Err(msg) => e.add(format!("{path}[{i}]"), msg),
        }
    }
    Some(out)
}

/// Tool globs: non-empty strings.
fn globs(e: &mut Errors, path: &str, raw: Vec<String>) -> Vec<Glob> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, g)| {
            if g.trim().is_empty() {
                e.add(
                    format!("{path}[{i}]"),
                    "must be a tool name or glob such as delete_*",
                );
                None
            } else {
                Some(Glob::new(g))
            }
        })
        .collect()
}

/// `endpoints[].tools`: allow (default `["*"]`), deny, and per-identity grants. Grants need
/// `auth`: without a token there is nobody to grant to.
fn tools(e: &mut Errors, at: &str, raw: Option<RawTools>, auth_on: bool) -> ToolPolicy {
    let Some(raw) = raw else {
        return ToolPolicy::default();
    };
    e.unknown(at, &raw.unknown, TOOLS_KEYS);
    let allow = match raw.allow {
        Some(a) => globs(e, &prefixed(at, "allow"), a),
        None => vec![Glob::new("*")],
    };
    let deny = globs(e, &prefixed(at, "deny"), raw.deny.unwrap_or_default());
    let raw_grants = raw.grants.unwrap_or_default();
    if !raw_grants.is_empty() && !auth_on {
        e.add(
            prefixed(at, "grants"),
            "needs the auth section: grants name token identities, and this bridge has no tokens",
        );
    }
    let mut grants = Vec::new();
    for (i, g) in raw_grants.into_iter().enumerate() {
        let gp = format!("{at}.grants[{i}]");
        e.unknown(&gp, &g.unknown, GRANT_KEYS);
        let users = g.users.unwrap_or_default();
        let clients = g.clients.unwrap_or_default();
        if users.is_empty() && clients.is_empty() {
            e.add(
                &gp,
                "names nobody: give users (username or sub) or clients (client_id)",
            );
        }
        for (field, list) in [("users", &users), ("clients", &clients)] {
            for (j, v) in list.iter().enumerate() {
                if v.trim().is_empty() {
                    e.add(format!("{gp}.{field}[{j}]"), "must not be empty");
                }
            }
        }
        let allow = match g.allow {
            Some(a) if !a.is_empty() => globs(e, &prefixed(&gp, "allow"), a),
            _ => {
                e.add(
                    prefixed(&gp, "allow"),
                    "required: the tools this grant adds",
                );
                Vec::new()
            }
        };
        grants.push(Grant {
            users,
            clients,
            allow,
        });
    }
    ToolPolicy {
        allow,
        deny,
        grants,
    }
}

type Target = (Url, String, u16, bool, String);

/// The host of a URL as written: between `scheme://` (and any userinfo) and the port or
/// path. The URL parser is lenient (`http:///mcp` becomes host `mcp`), so the check is made on
/// the text itself.
pub fn written_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(hostport.split(':').next().unwrap_or_default())
}

/// Why a host as written cannot be dialed: empty, or not an IP literal and not a DNS name
/// (labels of 1-63 characters, 253 in all). Pure.
pub fn host_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("has no host".into());
    }
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 {
        return Some(format!(
            "host is {} characters long; a DNS name has at most 253",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some(format!("host `{host}` has an empty label"));
        }
        if label.len() > 63 {
            return Some(format!(
                "host label `{}…` is {} characters long; a DNS label has at most 63",
                &label[..16],
                label.len()
            ));
        }
    }
    None
}

fn target(e: &mut Errors, path: &str, value: &str) -> Option<Target> {
    if let Some(problem) = written_host(value).and_then(host_problem) {
        e.add(path, format!("`{value}` {problem}"));
        return None;
    }
    let url = match Url::parse(value) {
        Ok(u) => u,
        Err(err) => {
            e.add(path, format!("`{value}` is not a URL: {err}"));
            return None;
        }
    };
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            e.add(path, format!("scheme must be http or https, not `{other}`"));
            return None;
        }
    };
    let Some(host) = url.host_str() else {
        e.add(path, "must have a host");
        return None;
    };
    if url.query().is_some() || url.fragment().is_some() {
        e.add(path, "must not have a query or fragment");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        e.add(path, "must not carry credentials (use upstream_token_env)");
        return None;
    }
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let authority = match url.port() {
        Some(p) if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) => format!("[{host}]:{p}"),
        Some(p) => format!("{host}:{p}"),
        None if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) => format!("[{host}]"),
        None => host.clone(),
    };
    Some((url, host, port, tls, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_as_written_table() {
        let long_label = "a".repeat(64);
        let long_name = ["abcdefghij"; 26].join(".");
        let cases: &[(&str, Option<&str>, bool)] = &[
            ("http:///mcp", Some(""), false),
            ("http://:80/x", Some(""), false),
            (
                "https://notes.tail1234.ts.net/mcp",
                Some("notes.tail1234.ts.net"),
                true,
            ),
            ("http://127.0.0.1:8080/mcp", Some("127.0.0.1"), true),
            ("http://[::1]:8080/mcp", Some("::1"), true),
            ("http://user:pw@host:1/x", Some("host"), true),
            ("http://a..b/x", Some("a..b"), false),
            ("http://host./x", Some("host."), true),
        ];
        for (url, host, ok) in cases {
            assert_eq!(written_host(url), *host, "{url}");
            assert_eq!(host.and_then(host_problem).is_none(), *ok, "{url}");
        }
        assert!(host_problem(&format!("{long_label}.example"))
            .unwrap()
            .contains("at most 63"));
        assert!(host_problem(&long_name).unwrap().contains("at most 253"));
        assert_eq!(host_problem(&"a".repeat(63)), None);
    }
}
