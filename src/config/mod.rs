//! Configuration: loading, validation and secret resolution.
//!
//! Two layers, one file per section: each section's module holds its serde mirror of the
//! YAML (`Raw*`), its typed form and the validation between them, which reports every
//! problem at once, each with its field path. [`raw`] holds the top-level mirror and the
//! value types sections share; this module loads, collects errors and assembles the
//! [`Config`]. The rules are at least tsmcp's (listen is loopback or unspecified, at least
//! one endpoint, paths start with `/` and are unique, targets are http(s) with a host, auth
//! fields present when `auth` is) plus tailbridge's own. No rule panics on any input, and
//! loading never binds a port or touches the network.

pub mod admin;
pub mod auth;
pub mod broker;
pub mod endpoints;
mod fields;
pub mod health;
pub mod limits;
pub mod log;
pub mod raw;
pub mod secrets;
pub mod server;
pub mod tailnet;
pub mod tls;
pub mod tracing;
mod units;

pub use admin::Admin;
pub use auth::{Advertise, AudienceCheck, Auth, IdentityHeaders};
pub use endpoints::{Endpoint, Timeouts};
pub use health::Health;
pub use limits::Limits;
pub use log::{Audit, Log, LogFormat};
pub use server::Server;
pub use tailnet::{Socks5, Tailnet, TailnetMode};
pub use tls::{Acme, AcmeChallenge, Eab, Tls, TlsMode};
pub use tracing::Tracing;

use raw::{DurationValue, Num, RawConfig, Unknown};
use secrets::SecretSource;
use units::parse_duration;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One problem in a config file: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path to the offending key, e.g. `endpoints[1].target`.
    pub path: String,
    /// What is wrong, written for the operator.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded. Every variant maps to exit code 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid YAML: {source}")]
    Syntax {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{path}: {} error(s):\n{}", .errors.len(), list(.errors))]
    Invalid {
        path: String,
        errors: Vec<FieldError>,
    },
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Read, parse and validate the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        ParseError::Syntax(source) => ConfigError::Syntax {
            path: shown.clone(),
            source,
        },
        ParseError::Invalid(errors) => ConfigError::Invalid {
            path: shown.clone(),
            errors,
        },
    })
}

/// Why a config text was refused.
#[derive(Debug)]
pub enum ParseError {
    /// Not YAML, or a value of the wrong type (serde names the field path).
    Syntax(serde_yaml::Error),
    /// Parsed, but one or more fields are invalid.
    Invalid(Vec<FieldError>),
}

/// Parse and validate a config text. A pure function: no I/O.
pub fn parse(text: &str) -> Result<Config, ParseError> {
    let raw: raw::RawConfig = if text.trim().is_empty() {
        raw::RawConfig::default()
    } else {
        serde_yaml::from_str(text).map_err(ParseError::Syntax)?
    };
    validate(raw).map_err(ParseError::Invalid)
}

const TOP_KEYS: &[&str] = &[
    "server",
    "admin",
    "tailnet",
    "auth",
    "tls",
    "limits",
    "log",
    "health",
    "tracing",
    "endpoints",
];

/// The keys each section accepts, as the parser checks them; also what the reference
/// config (`conf/tailbridge.yaml`) must document, which a test checks.
pub const SECTIONS: &[(&str, &[&str])] = &[
    ("", TOP_KEYS),
    ("server", server::SERVER_KEYS),
    ("admin", admin::ADMIN_KEYS),
    ("tailnet", tailnet::TAILNET_KEYS),
    ("tailnet.socks5", tailnet::SOCKS5_KEYS),
    ("auth", auth::AUTH_KEYS),
    ("auth.identity_headers", auth::IDENTITY_HEADER_KEYS),
    ("auth.cache", auth::TOKEN_CACHE_KEYS),
    ("auth.introspection", auth::INTROSPECTION_KEYS),
    ("auth.registration", auth::REGISTRATION_KEYS),
    ("auth.broker", broker::BROKER_KEYS),
    ("auth.broker.dcr", broker::DCR_KEYS),
    ("auth.broker.cimd", broker::CIMD_KEYS),
    ("auth.broker.cimd.pinned[]", broker::PINNED_KEYS),
    ("tls", tls::TLS_KEYS),
    ("tls.acme", tls::ACME_KEYS),
    ("tls.acme.eab", tls::EAB_KEYS),
    ("limits", limits::LIMITS_KEYS),
    ("log", log::LOG_KEYS),
    ("log.audit", log::AUDIT_KEYS),
    ("health", health::HEALTH_KEYS),
    ("tracing", tracing::TRACING_KEYS),
    ("endpoints[]", endpoints::ENDPOINT_KEYS),
    ("endpoints[].timeouts", endpoints::TIMEOUT_KEYS),
    ("endpoints[].tools", endpoints::TOOLS_KEYS),
    ("endpoints[].tools.grants[]", endpoints::GRANT_KEYS),
    ("endpoints[].tools.limits[]", endpoints::LIMIT_KEYS),
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
    /// OpenTelemetry traces, as the file says (the environment is merged in at start).
    pub tracing: Tracing,
    pub endpoints: Vec<Endpoint>,
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

    /// A whole number that must lie in `range` (said as "between LOW and HIGH").
    fn count_between(
        &mut self,
        path: &str,
        v: Option<Num<usize>>,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> usize {
        let n = self.num(path, v, default, "a whole number");
        if !range.contains(&n) {
            self.add(
                path,
                format!("must be between {} and {}", range.start(), range.end()),
            );
        }
        n
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
    let server = server::server(&mut e, raw.server.unwrap_or_default());
    let admin = admin::admin(&mut e, raw.admin.unwrap_or_default());
    let tailnet = tailnet::tailnet(&mut e, raw.tailnet);
    let auth = raw
        .auth
        .and_then(|a| auth::auth(&mut e, a, server.public_url.as_ref()));
    let tls = tls::tls(&mut e, raw.tls.unwrap_or_default(), &server, &admin);
    let limits = limits::limits(&mut e, raw.limits.unwrap_or_default());
    let log = log::log(&mut e, raw.log.unwrap_or_default());
    let health = health::health(&mut e, raw.health.unwrap_or_default());
    let tracing = tracing::tracing(&mut e, raw.tracing.unwrap_or_default());
    let endpoints = endpoints::endpoints(&mut e, raw.endpoints.unwrap_or_default(), auth.is_some());

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
            tracing,
            endpoints,
        })
    } else {
        Err(e.0)
    }
}
