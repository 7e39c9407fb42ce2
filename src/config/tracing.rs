//! `tracing`: OpenTelemetry traces exported over OTLP/HTTP (see `observe::tracing`).
//!
//! Only what the file says is read here (loading stays pure): the standard `OTEL_*`
//! environment variables are merged in at start, where the file wins
//! (`observe::tracing::settings`).

use super::raw::*;
use super::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use url::Url;

pub(super) const TRACING_KEYS: &[&str] =
    &["otlp_endpoint", "headers", "sample_ratio", "service_name"];

/// The `tracing` section as written. Every field is optional: an absent one falls back to
/// its `OTEL_*` environment variable, then to the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracing {
    /// OTLP/HTTP base URL (`http://collector:4318`); spans go to its `/v1/traces`.
    pub otlp_endpoint: Option<Url>,
    /// Extra headers for the collector, each from an inline value, `NAME_env` or
    /// `NAME_file` (like every other secret), in the order written.
    pub headers: Vec<(String, SecretSource)>,
    /// Share of new traces recorded, 0.0 to 1.0 (a sampled parent is always followed).
    pub sample_ratio: Option<f64>,
    /// `service.name` of the bridge's spans.
    pub service_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTracing {
    pub otlp_endpoint: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub sample_ratio: Option<Num<f64>>,
    pub service_name: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) fn tracing(e: &mut Errors, raw: RawTracing) -> Tracing {
    e.unknown("tracing", &raw.unknown, TRACING_KEYS);
    let otlp_endpoint = raw.otlp_endpoint.and_then(|v| match Url::parse(v.trim()) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            Some(u)
        }
        Ok(_) => {
            e.add(
                "tracing.otlp_endpoint",
                "must be an http or https URL with a host and no query",
            );
            None
        }
        Err(err) => {
            e.add(
                "tracing.otlp_endpoint",
                format!("`{v}` is not a URL: {err}"),
            );
            None
        }
    });
    let mut headers = Vec::new();
    for (key, value) in raw.headers.unwrap_or_default() {
        let path = format!("tracing.headers.{key}");
        let (name, source) = if let Some(n) = key.strip_suffix("_env") {
            if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                e.add(
                    &path,
                    "must be an environment variable name ([A-Za-z0-9_]+)",
                );
            }
            (n, SecretSource::Env(value))
        } else if let Some(n) = key.strip_suffix("_file") {
            if value.is_empty() {
                e.add(&path, "must be a file path");
            }
            (n, SecretSource::File(value.into()))
        } else {
            if http::HeaderValue::from_str(&value).is_err() {
                e.add(&path, "is not usable as a header value");
            }
            (key.as_str(), SecretSource::Inline(value))
        };
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            e.add(&path, format!("`{name}` is not a valid header name"));
            continue;
        }
        let name = name.to_ascii_lowercase();
        if headers.iter().any(|(n, _): &(String, _)| *n == name) {
            e.add(&path, format!("header `{name}` is given twice"));
            continue;
        }
        headers.push((name, source));
    }
    let sample_ratio = raw.sample_ratio.map(|v| {
        let r = e.num("tracing.sample_ratio", Some(v), 1.0, "a number");
        if !(0.0..=1.0).contains(&r) {
            e.add("tracing.sample_ratio", "must be between 0 and 1");
        }
        r
    });
    let service_name = raw.service_name.inspect(|s| {
        if s.trim().is_empty() {
            e.add("tracing.service_name", "must not be empty");
        }
    });
    Tracing {
        otlp_endpoint,
        headers,
        sample_ratio,
        service_name,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::secrets::SecretSource;
    use crate::config::{parse, ParseError};

    fn cfg(tracing: &str) -> String {
        format!(
            "tracing:\n{tracing}endpoints:\n  - path: /mcp/a\n    target: http://127.0.0.1:9/mcp\n"
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
    fn absent_is_all_none() {
        let c = parse("endpoints:\n  - path: /a\n    target: http://h/mcp\n").unwrap();
        assert_eq!(c.tracing, super::Tracing::default());
    }

    #[test]
    fn valid_section() {
        let c = parse(&cfg(concat!(
            "  otlp_endpoint: http://otel-collector:4318\n",
            "  headers:\n    X-Scope-OrgID: tenant-1\n    x-honeycomb-team_env: HONEYCOMB_KEY\n",
            "    authorization_file: /run/secrets/otlp\n",
            "  sample_ratio: 0.1\n  service_name: bridge-a\n",
        )))
        .unwrap();
        let t = c.tracing;
        assert_eq!(
            t.otlp_endpoint.unwrap().as_str(),
            "http://otel-collector:4318/"
        );
        assert_eq!(t.sample_ratio, Some(0.1));
        assert_eq!(t.service_name.as_deref(), Some("bridge-a"));
        // In the order the YAML map yields them (sorted by key as written).
        assert_eq!(
            t.headers,
            vec![
                (
                    "x-scope-orgid".to_string(),
                    SecretSource::Inline("tenant-1".into())
                ),
                (
                    "authorization".to_string(),
                    SecretSource::File("/run/secrets/otlp".into())
                ),
                (
                    "x-honeycomb-team".to_string(),
                    SecretSource::Env("HONEYCOMB_KEY".into())
                ),
            ]
        );
    }

    #[test]
    fn errors_name_their_field() {
        let cases = [
            ("  otlp_endpoint: collector:4318\n", "tracing.otlp_endpoint"),
            (
                "  otlp_endpoint: ftp://c:21\n",
                "tracing.otlp_endpoint: must be an http",
            ),
            (
                "  otlp_endpoint: http://c:4318/?x=1\n",
                "tracing.otlp_endpoint: must be an http",
            ),
            (
                "  sample_ratio: 1.5\n",
                "tracing.sample_ratio: must be between 0 and 1",
            ),
            (
                "  sample_ratio: lots\n",
                "tracing.sample_ratio: `lots` is not a number",
            ),
            (
                "  service_name: \" \"\n",
                "tracing.service_name: must not be empty",
            ),
            (
                "  headers:\n    \"bad name\": x\n",
                "tracing.headers.bad name: `bad name` is not a valid header name",
            ),
            (
                "  headers:\n    key_env: \"not a name\"\n",
                "tracing.headers.key_env: must be an environment variable name",
            ),
            (
                "  headers:\n    key: \"a\\nb\"\n",
                "tracing.headers.key: is not usable as a header value",
            ),
            (
                "  headers:\n    Key: a\n    key_env: K\n",
                "tracing.headers.key_env: header `key` is given twice",
            ),
            ("  exporter: otlp\n", "tracing.exporter: unknown key"),
        ];
        for (section, want) in cases {
            let errs = errors(&cfg(section));
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{section}: want {want}, got {errs:?}"
            );
        }
    }
}
