//! `tailbridge doctor`: what is wrong and how to fix it, in one command.
//!
//! It runs where the bridge runs, with the same config, secrets and connector, and walks the
//! chain a Claude.ai connector depends on, in order: the config; the running bridge; each
//! endpoint's upstream over the tailnet (dial, TLS, an MCP probe); tsidp (metadata, issuer,
//! introspection with the bridge's credentials); the discovery chain against
//! `server.public_url`, followed as a client follows it; the public listener's certificate.
//! One line per check, each failure with a hint naming what to change. Every network call is
//! bounded by `--timeout`; no token is ever sent except the random one it makes up for the
//! introspection check, and no secret is ever printed.

mod checks;
mod tls;

use serde::Serialize;
use std::time::Duration;

/// Default bound on every network call the doctor makes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Failure,
    /// Not run: what it needs is missing (said in `detail`).
    Skipped,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warning => "!",
            Status::Failure => "✗",
            Status::Skipped => "-",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            hint: None,
        }
    }

    pub fn warn(name: impl Into<String>, detail: impl Into<String>, hint: Option<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Warning,
            detail: detail.into(),
            hint,
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: Status::Failure,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn skip(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Skipped,
            detail: detail.into(),
            hint: None,
        }
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only this endpoint (name or path).
    pub endpoint: Option<String>,
    pub timeout: Duration,
}

/// The report: every check, in order.
#[derive(Debug, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether any check failed (the exit code is 1 then).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Failure)
    }

    /// The report as text: one line per check, hints indented below failures and warnings.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.checks {
            s.push_str(&format!("{} {}: {}\n", c.status.mark(), c.name, c.detail));
            if let Some(h) = &c.hint {
                s.push_str(&format!("    fix: {h}\n"));
            }
        }
        let (f, w) = (
            self.checks
                .iter()
                .filter(|c| c.status == Status::Failure)
                .count(),
            self.checks
                .iter()
                .filter(|c| c.status == Status::Warning)
                .count(),
        );
        s.push_str(&format!(
            "{} checks, {f} failed, {w} warnings\n",
            self.checks.len()
        ));
        s
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Run every check for the config at `path`.
pub async fn run(path: &std::path::Path, opts: &Options) -> Report {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Report {
        checks: checks::all(path, opts).await,
    }
}
