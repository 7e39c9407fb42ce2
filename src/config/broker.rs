//! `auth.broker`: tailbridge as the OAuth authorization server MCP clients register with
//! (DCR, client ID metadata documents, PKCE public clients), with tsidp as the identity source.

use super::raw::*;
use super::units::parse_size;
use super::*;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

pub(super) const BROKER_KEYS: &[&str] = &[
    "enabled",
    "key_file",
    "key_files",
    "access_token_ttl",
    "refresh_token_ttl",
    "code_ttl",
    "flow_ttl",
    "refresh_reuse_window",
    "dcr",
    "cimd",
];

pub(super) const DCR_KEYS: &[&str] = &["per_minute", "max_redirect_uris"];

pub(super) const CIMD_KEYS: &[&str] = &[
    "pinned",
    "allow_private_networks",
    "timeout",
    "max_bytes",
    "cache_max_ttl",
    "ca_root_file",
];

pub(super) const PINNED_KEYS: &[&str] = &["client_id", "client_name", "redirect_uris"];

/// Default lifetime of an access token the broker issues (clients refresh 5 minutes before
/// expiry, so a short one means a refresh before almost every request).
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Default lifetime of a broker refresh token (tsidp's own live 30 days).
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Default lifetime of an authorization code.
pub const DEFAULT_CODE_TTL: Duration = Duration::from_secs(60);
/// Default time a user has from `/authorize` to the consent decision.
pub const DEFAULT_FLOW_TTL: Duration = Duration::from_secs(600);
/// Default window in which a repeated refresh with the same token gets the same answer.
pub const DEFAULT_REFRESH_REUSE_WINDOW: Duration = Duration::from_secs(30);
/// Default registrations per minute per client address.
pub const DEFAULT_DCR_PER_MINUTE: u32 = 10;
/// Default cap on redirect URIs in one registration or metadata document.
pub const DEFAULT_MAX_REDIRECT_URIS: usize = 10;
/// Default time limit of a metadata-document fetch.
pub const DEFAULT_CIMD_TIMEOUT: Duration = Duration::from_secs(5);
/// Default size cap of a metadata document.
pub const DEFAULT_CIMD_MAX_BYTES: u64 = 16 << 10;
/// Default cap on how long a fetched metadata document is cached.
pub const DEFAULT_CIMD_CACHE_MAX_TTL: Duration = Duration::from_secs(3600);

/// A client metadata document given in config instead of fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedClient {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Cimd {
    pub pinned: Vec<PinnedClient>,
    pub allow_private_networks: bool,
    pub timeout: Duration,
    pub max_bytes: u64,
    pub cache_max_ttl: Duration,
    /// Extra trusted roots for fetches (labs with their own CA).
    pub ca_root_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Broker {
    /// Key files; the first seals, all open.
    pub key_files: Vec<PathBuf>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub code_ttl: Duration,
    pub flow_ttl: Duration,
    pub refresh_reuse_window: Duration,
    pub dcr_per_minute: u32,
    pub max_redirect_uris: usize,
    pub cimd: Cimd,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawBroker {
    pub enabled: Option<bool>,
    pub key_file: Option<String>,
    pub key_files: Option<Vec<String>>,
    pub access_token_ttl: Option<DurationValue>,
    pub refresh_token_ttl: Option<DurationValue>,
    pub code_ttl: Option<DurationValue>,
    pub flow_ttl: Option<DurationValue>,
    pub refresh_reuse_window: Option<DurationValue>,
    pub dcr: Option<RawDcr>,
    pub cimd: Option<RawCimd>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawDcr {
    pub per_minute: Option<Num<u32>>,
    pub max_redirect_uris: Option<Num<usize>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCimd {
    pub pinned: Option<Vec<RawPinned>>,
    pub allow_private_networks: Option<bool>,
    pub timeout: Option<DurationValue>,
    pub max_bytes: Option<SizeValue>,
    pub cache_max_ttl: Option<DurationValue>,
    pub ca_root_file: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPinned {
    pub client_id: Option<String>,
    pub client_name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// The default key file when none is named.
pub const DEFAULT_KEY_FILE: &str = "/var/lib/tailbridge/broker.key";

pub(super) fn broker(
    e: &mut Errors,
    raw: RawBroker,
    public_origin: Option<&str>,
) -> Option<Broker> {
    const P: &str = "auth.broker";
    e.unknown(P, &raw.unknown, BROKER_KEYS);
    let key_files: Vec<PathBuf> = match (raw.key_file, raw.key_files) {
        (Some(_), Some(_)) => {
            e.add(
                "auth.broker.key_file",
                "give only one of key_file, key_files",
            );
            Vec::new()
        }
        (Some(f), None) => vec![PathBuf::from(f)],
        (None, Some(list)) => list.into_iter().map(PathBuf::from).collect(),
        (None, None) => vec![PathBuf::from(DEFAULT_KEY_FILE)],
    };
    if key_files.is_empty() {
        e.add(
            "auth.broker.key_files",
            "must name at least one file (the first seals, all open)",
        );
    }
    for (i, f) in key_files.iter().enumerate() {
        if f.as_os_str().is_empty() {
            e.add(format!("auth.broker.key_files[{i}]"), "must be a file path");
        }
    }
    let d = |e: &mut Errors, key: &str, v: Option<DurationValue>, default: Duration| {
        e.duration(&format!("{P}.{key}"), v.as_ref(), default)
    };
    let access_token_ttl = d(
        e,
        "access_token_ttl",
        raw.access_token_ttl,
        DEFAULT_ACCESS_TOKEN_TTL,
    );
    let refresh_token_ttl = d(
        e,
        "refresh_token_ttl",
        raw.refresh_token_ttl,
        DEFAULT_REFRESH_TOKEN_TTL,
    );
    let code_ttl = d(e, "code_ttl", raw.code_ttl, DEFAULT_CODE_TTL);
    let flow_ttl = d(e, "flow_ttl", raw.flow_ttl, DEFAULT_FLOW_TTL);
    let refresh_reuse_window = d(
        e,
        "refresh_reuse_window",
        raw.refresh_reuse_window,
        DEFAULT_REFRESH_REUSE_WINDOW,
    );
    let bounds: [(&str, Duration, Duration, Duration); 5] = [
        (
            "access_token_ttl",
            access_token_ttl,
            Duration::from_secs(60),
            Duration::from_secs(86_400),
        ),
        (
            "refresh_token_ttl",
            refresh_token_ttl,
            Duration::from_secs(300),
            Duration::from_secs(90 * 86_400),
        ),
        (
            "code_ttl",
            code_ttl,
            Duration::from_secs(10),
            Duration::from_secs(600),
        ),
        (
            "flow_ttl",
            flow_ttl,
            Duration::from_secs(60),
            Duration::from_secs(3600),
        ),
        (
            "refresh_reuse_window",
            refresh_reuse_window,
            Duration::from_secs(1),
            Duration::from_secs(300),
        ),
    ];
    for (key, v, lo, hi) in bounds {
        if v < lo || v > hi {
            e.add(
                format!("{P}.{key}"),
                format!("must be between {} and {}", human(lo), human(hi)),
            );
        }
    }
    let dcr = raw.dcr.unwrap_or_default();
    e.unknown("auth.broker.dcr", &dcr.unknown, DCR_KEYS);
    let dcr_per_minute = e.num(
        "auth.broker.dcr.per_minute",
        dcr.per_minute,
        DEFAULT_DCR_PER_MINUTE,
        "a whole number",
    );
    if dcr_per_minute == 0 {
        e.add("auth.broker.dcr.per_minute", "must be greater than 0");
    }
    let max_redirect_uris = e.count_between(
        "auth.broker.dcr.max_redirect_uris",
        dcr.max_redirect_uris,
        DEFAULT_MAX_REDIRECT_URIS,
        1..=100,
    );
    let c = raw.cimd.unwrap_or_default();
    e.unknown("auth.broker.cimd", &c.unknown, CIMD_KEYS);
    let max_bytes = match c.max_bytes.as_ref().map(parse_size) {
        None => DEFAULT_CIMD_MAX_BYTES,
        Some(Ok(n)) if (512..=(1 << 20)).contains(&n) => n,
        Some(Ok(_)) => {
            e.add("auth.broker.cimd.max_bytes", "must be between 512 and 1MiB");
            DEFAULT_CIMD_MAX_BYTES
        }
        Some(Err(err)) => {
            e.add("auth.broker.cimd.max_bytes", err);
            DEFAULT_CIMD_MAX_BYTES
        }
    };
    let timeout = e.duration(
        "auth.broker.cimd.timeout",
        c.timeout.as_ref(),
        DEFAULT_CIMD_TIMEOUT,
    );
    if timeout.is_zero() || timeout > Duration::from_secs(30) {
        e.add("auth.broker.cimd.timeout", "must be between 1ms and 30s");
    }
    let cache_max_ttl = e.duration(
        "auth.broker.cimd.cache_max_ttl",
        c.cache_max_ttl.as_ref(),
        DEFAULT_CIMD_CACHE_MAX_TTL,
    );
    if cache_max_ttl > Duration::from_secs(86_400) {
        e.add("auth.broker.cimd.cache_max_ttl", "must be at most 1d");
    }
    let mut pinned = Vec::new();
    for (i, p) in c.pinned.unwrap_or_default().into_iter().enumerate() {
        let at = format!("auth.broker.cimd.pinned[{i}]");
        e.unknown(&at, &p.unknown, PINNED_KEYS);
        let client_id = match p.client_id {
            Some(id) if crate::auth::broker::cimd::is_document_url(&id) => Some(id),
            Some(id) => {
                e.add(
                    format!("{at}.client_id"),
                    format!("`{id}` is not an https URL with a path (a client ID metadata document URL)"),
                );
                None
            }
            None => {
                e.add(format!("{at}.client_id"), "required");
                None
            }
        };
        let redirect_uris = p.redirect_uris.unwrap_or_default();
        if redirect_uris.is_empty() {
            e.add(format!("{at}.redirect_uris"), "required (at least one)");
        }
        for (j, u) in redirect_uris.iter().enumerate() {
            if let Err(why) = crate::auth::broker::redirect::registrable(u) {
                e.add(format!("{at}.redirect_uris[{j}]"), format!("`{u}`: {why}"));
            }
        }
        if let Some(id) = client_id {
            if pinned.iter().any(|x: &PinnedClient| x.client_id == id) {
                e.add(format!("{at}.client_id"), "listed twice");
            }
            pinned.push(PinnedClient {
                client_name: p.client_name.unwrap_or_else(|| id.clone()),
                client_id: id,
                redirect_uris,
            });
        }
    }
    let ca_root_file = match c.ca_root_file {
        Some(f) if f.is_empty() => {
            e.add("auth.broker.cimd.ca_root_file", "must be a file path");
            None
        }
        other => other.map(PathBuf::from),
    };
    if raw.enabled != Some(true) {
        return None;
    }
    if let Some(origin) = public_origin {
        let loopback = url::Url::parse(origin)
            .ok()
            .is_some_and(|u| super::server::is_loopback_url(&u));
        if !origin.starts_with("https://") && !loopback {
            e.add(
                "server.public_url",
                "must be https when auth.broker is enabled (http only on loopback, for tests)",
            );
        }
    }
    Some(Broker {
        key_files,
        access_token_ttl,
        refresh_token_ttl,
        code_ttl,
        flow_ttl,
        refresh_reuse_window,
        dcr_per_minute,
        max_redirect_uris,
        cimd: Cimd {
            pinned,
            allow_private_networks: c.allow_private_networks.unwrap_or(false),
            timeout,
            max_bytes,
            cache_max_ttl,
            ca_root_file,
        },
    })
}

/// A duration as a config value (`90s`, `10m`, `1h`, `2d`).
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, ParseError};

    fn cfg(public_url: &str, broker: &str) -> String {
        format!(
            "server:\n  public_url: {public_url}\nauth:\n  issuer: https://idp.t.ts.net\n  audience: {public_url}\n  introspection_url: https://idp.t.ts.net/introspect\n  client_id: bridge\n  client_secret: s\n  broker:\n{broker}endpoints:\n  - path: /mcp/a\n    target: http://127.0.0.1:9/mcp\n"
        )
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => Vec::new(),
            Err(ParseError::Invalid(e)) => e.iter().map(|e| e.to_string()).collect(),
            Err(ParseError::Syntax(e)) => vec![e.to_string()],
        }
    }

    #[test]
    fn valid_and_defaults() {
        let c = parse(&cfg("https://mcp.example.com", "    enabled: true\n")).unwrap();
        let b = c.auth.unwrap().broker.unwrap();
        assert_eq!(
            b.key_files,
            [std::path::PathBuf::from(super::DEFAULT_KEY_FILE)]
        );
        assert_eq!(b.access_token_ttl, super::DEFAULT_ACCESS_TOKEN_TTL);
        assert_eq!(b.cimd.max_bytes, 16 << 10);
        assert!(!b.cimd.allow_private_networks);
        // Loopback public_url over http is allowed (tests); off means no broker.
        assert!(parse(&cfg("http://127.0.0.1:8900", "    enabled: true\n")).is_ok());
        let off = parse(&cfg("http://mcp.example.com", "    enabled: false\n")).unwrap();
        assert!(off.auth.unwrap().broker.is_none());
    }

    #[test]
    fn errors_name_their_field() {
        let cases = [
            ("http://mcp.example.com", "    enabled: true\n", "server.public_url: must be https"),
            ("https://m.example", "    enabled: true\n    key_file: a\n    key_files: [b]\n", "auth.broker.key_file: give only one"),
            ("https://m.example", "    enabled: true\n    key_files: []\n", "auth.broker.key_files: must name at least one"),
            ("https://m.example", "    enabled: true\n    access_token_ttl: 5s\n", "auth.broker.access_token_ttl: must be between 1m and 1d"),
            ("https://m.example", "    enabled: true\n    refresh_reuse_window: 1h\n", "auth.broker.refresh_reuse_window: must be between"),
            ("https://m.example", "    enabled: true\n    dcr:\n      per_minute: 0\n", "auth.broker.dcr.per_minute: must be greater than 0"),
            ("https://m.example", "    enabled: true\n    cimd:\n      max_bytes: 10\n", "auth.broker.cimd.max_bytes: must be between 512 and 1MiB"),
            ("https://m.example", "    enabled: true\n    cimd:\n      pinned:\n        - client_id: claude\n          redirect_uris: [\"https://claude.ai/cb\"]\n", "auth.broker.cimd.pinned[0].client_id: `claude` is not an https URL"),
            ("https://m.example", "    enabled: true\n    cimd:\n      pinned:\n        - client_id: https://c.example/m.json\n          redirect_uris: [\"http://evil.example/cb\"]\n", "auth.broker.cimd.pinned[0].redirect_uris[0]"),
            ("https://m.example", "    enabled: true\n    cimd:\n      pinned:\n        - client_id: https://c.example/m.json\n", "auth.broker.cimd.pinned[0].redirect_uris: required"),
            ("https://m.example", "    enabled: true\n    colour: blue\n", "auth.broker.colour: unknown key"),
        ];
        for (url, broker, want) in cases {
            let errs = errors(&cfg(url, broker));
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{broker}: want {want}, got {errs:?}"
            );
        }
    }
}
