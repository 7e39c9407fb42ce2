//! Configuration: loading, validation and secret resolution.
//!
//! Two layers: [`raw`] mirrors the YAML (serde), [`validate`] turns it into the typed
//! [`Config`] and reports every problem at once, each with its field path. Loading never
//! binds a port or touches the network.

pub mod raw;
pub mod secrets;
mod units;
pub mod validate;

pub use validate::{
    Acme, AcmeChallenge, Admin, Advertise, AudienceCheck, Audit, Auth, Config, Eab, Endpoint,
    Health, IdentityHeaders, Limits, Log, LogFormat, Server, Socks5, Tailnet, TailnetMode,
    Timeouts, Tls, TlsMode,
};

use std::fmt;
use std::path::Path;

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
    validate::validate(raw).map_err(ParseError::Invalid)
}
