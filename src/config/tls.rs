//! `tls`: TLS termination, from certificate files or ACME.

use super::fields::*;
use super::raw::*;
use super::secrets::SecretSource;
use super::*;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Default HSTS value, the one the Caddy block set.
pub const DEFAULT_HSTS: &str = "max-age=63072000; includeSubDomains; preload";

pub(super) const TLS_KEYS: &[&str] = &[
    "mode",
    "cert_file",
    "key_file",
    "hsts",
    "acme",
    "http_listen",
];

pub(super) const ACME_KEYS: &[&str] = &[
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

pub(super) const EAB_KEYS: &[&str] = &["kid", "hmac_key", "hmac_key_env", "hmac_key_file"];

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

#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    pub mode: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub hsts: Option<String>,
    pub acme: Option<RawAcme>,
    pub http_listen: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAcme {
    pub domains: Option<Vec<String>>,
    pub email: Option<String>,
    pub directory_url: Option<String>,
    pub ca_root_file: Option<String>,
    pub challenge: Option<String>,
    pub storage_dir: Option<String>,
    pub eab: Option<RawEab>,
    pub retry_initial: Option<DurationValue>,
    pub retry_max: Option<DurationValue>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawEab {
    pub kid: Option<String>,
    pub hmac_key: Option<String>,
    pub hmac_key_env: Option<String>,
    pub hmac_key_file: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) fn tls(e: &mut Errors, raw: RawTls, server: &Server, admin: &Admin) -> Tls {
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

pub(super) fn acme(e: &mut Errors, raw: RawAcme) -> Option<Acme> {
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
