//! `log`: log format and level, the access log and the audit log.

use super::raw::*;
use super::*;
use serde::Deserialize;

pub(super) const LOG_KEYS: &[&str] = &["format", "level", "access_log", "audit"];

pub(super) const AUDIT_KEYS: &[&str] = &["enabled", "arguments", "redact"];

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

#[derive(Debug, Default, Deserialize)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
    pub access_log: Option<bool>,
    pub audit: Option<RawAudit>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAudit {
    pub enabled: Option<bool>,
    pub arguments: Option<bool>,
    pub redact: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) fn log(e: &mut Errors, raw: RawLog) -> Log {
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
