//! `server`: the public listener, origins, worker threads, shutdown and upgrade files.

use super::fields::*;
use super::raw::*;
use super::*;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Default main listener, as in tsmcp's examples.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8900";

/// Default time in-flight requests and open streams get to finish after SIGTERM (or after a
/// graceful upgrade handed the listeners to a new process). The process exits earlier as
/// soon as nothing is in flight.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// Default time the runtimes get to stop after the grace period.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) const SERVER_KEYS: &[&str] = &[
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
    "proxy_protocol",
];

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
    /// Every connection to `listen` starts with a PROXY protocol header (v1 or v2) from an
    /// L4 balancer, which names the client; connections without one are closed.
    pub proxy_protocol: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    pub public_url: Option<String>,
    pub threads: Option<Num<usize>>,
    pub grace_period: Option<DurationValue>,
    pub shutdown_timeout: Option<DurationValue>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub strip_request_headers: Option<Vec<String>>,
    pub allowed_client_cidrs: Option<Vec<String>>,
    pub proxy_protocol: Option<bool>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) fn server(e: &mut Errors, raw: RawServer) -> Server {
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
    let threads = e.count_between("server.threads", raw.threads, 1, 1..=256);
    Server {
        listen,
        strip_request_headers,
        allowed_client_cidrs,
        proxy_protocol: raw.proxy_protocol.unwrap_or(false),
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

/// Whether a URL's host is a loopback address or `localhost`. Pure.
pub fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
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
