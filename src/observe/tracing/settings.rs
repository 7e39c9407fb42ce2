//! The tracing settings in force: the `tracing` config section over the standard
//! OpenTelemetry environment variables (the file wins, key by key). Pure apart from the
//! secret files and variables a header names; the environment is passed in.
//!
//! Read from the environment (OpenTelemetry SDK configuration spec):
//! `OTEL_SDK_DISABLED`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is),
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (a base: `/v1/traces` is appended),
//! `OTEL_EXPORTER_OTLP_TRACES_HEADERS` / `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER_ARG` (the ratio; the sampler is always parent-based ratio),
//! `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.

use crate::config::secrets::SecretError;
use crate::config::Tracing;
use std::time::Duration;
use url::Url;

/// The default `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "tailbridge";
/// The default share of new traces recorded (the OpenTelemetry default sampler,
/// `parentbased_always_on`).
pub const DEFAULT_RATIO: f64 = 1.0;
/// Spans waiting for export at most; more are dropped and counted.
pub const DEFAULT_QUEUE: usize = 2048;
/// Spans in one export request at most.
pub const DEFAULT_BATCH: usize = 512;
/// How long a span waits for its batch to fill before it is sent anyway.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(1);
/// How long one export request may take (the OTLP default).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The path spans go to under a base endpoint (OTLP/HTTP).
pub const TRACES_PATH: &str = "v1/traces";

/// What the exporter and sampler run with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where spans are POSTed (OTLP/HTTP protobuf).
    pub traces_url: Url,
    /// Extra request headers, lower-case names, file entries over environment ones.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub ratio: f64,
    pub service_name: String,
    pub queue: usize,
    pub batch: usize,
    pub delay: Duration,
    pub export_timeout: Duration,
    /// Environment values that were ignored, for the log (the spec says ignore and say so).
    pub warnings: Vec<String>,
}

/// Why tracing cannot start as configured (a start failure with exit code 64).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{var}: `{value}` is not an http or https URL with a host")]
    Endpoint { var: &'static str, value: String },
    #[error("tracing.headers.{name}: {source}")]
    Secret {
        name: String,
        #[source]
        source: SecretError,
    },
    #[error("tracing.headers.{name}: the value is not usable as a header value")]
    HeaderValue { name: String },
}

const ENV_DISABLED: &str = "OTEL_SDK_DISABLED";
const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const ENV_TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
const ENV_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
const ENV_TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
const ENV_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const ENV_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
const ENV_QUEUE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
const ENV_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
const ENV_BATCH: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";

/// The settings in force, or `None` when tracing is off: neither the file nor the
/// environment names an endpoint (or `OTEL_SDK_DISABLED=true`).
pub fn resolve(
    cfg: &Tracing,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Settings>, SettingsError> {
    // An empty variable counts as unset (configuration spec).
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if var(ENV_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let mut warnings = Vec::new();
    let traces_url = match (
        &cfg.otlp_endpoint,
        var(ENV_TRACES_ENDPOINT),
        var(ENV_ENDPOINT),
    ) {
        (Some(base), _, _) => traces_url(base),
        (None, Some(full), _) => http_url(&full).ok_or(SettingsError::Endpoint {
            var: ENV_TRACES_ENDPOINT,
            value: full,
        })?,
        (None, None, Some(base)) => {
            let u = http_url(&base).ok_or(SettingsError::Endpoint {
                var: ENV_ENDPOINT,
                value: base,
            })?;
            traces_url(&u)
        }
        (None, None, None) => return Ok(None),
    };
    let mut headers: Vec<(http::HeaderName, http::HeaderValue)> = Vec::new();
    let mut put = |name: http::HeaderName, value: http::HeaderValue| {
        headers.retain(|(n, _)| *n != name);
        headers.push((name, value));
    };
    if let Some(list) = var(ENV_TRACES_HEADERS).or_else(|| var(ENV_HEADERS)) {
        for (name, value) in env_headers(&list) {
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                (Ok(n), Ok(v)) => put(n, v),
                _ => warnings.push(format!("OTEL_EXPORTER_OTLP_HEADERS: `{name}` ignored")),
            }
        }
    }
    for (name, source) in &cfg.headers {
        let secret = source.resolve().map_err(|source| SettingsError::Secret {
            name: name.clone(),
            source,
        })?;
        let bad = || SettingsError::HeaderValue { name: name.clone() };
        let n = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let mut v = http::HeaderValue::from_str(secret.expose()).map_err(|_| bad())?;
        v.set_sensitive(true);
        put(n, v);
    }
    let ratio = match (cfg.sample_ratio, var(ENV_SAMPLER_ARG)) {
        (Some(r), _) => r,
        (None, Some(arg)) => match arg.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => r,
            _ => {
                warnings.push(format!(
                    "{ENV_SAMPLER_ARG}: `{arg}` is not a ratio between 0 and 1; using {DEFAULT_RATIO}"
                ));
                DEFAULT_RATIO
            }
        },
        (None, None) => DEFAULT_RATIO,
    };
    let service_name = cfg
        .service_name
        .clone()
        .or_else(|| var(ENV_SERVICE_NAME))
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
    let mut number = |name: &'static str, default: u64, min: u64| -> u64 {
        match var(name) {
            None => default,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= min => n,
                _ => {
                    warnings.push(format!("{name}: `{v}` ignored; using {default}"));
                    default
                }
            },
        }
    };
    let queue = number(ENV_QUEUE, DEFAULT_QUEUE as u64, 1) as usize;
    let batch = (number(ENV_BATCH, DEFAULT_BATCH as u64, 1) as usize).min(queue);
    let delay = Duration::from_millis(number(ENV_DELAY, DEFAULT_DELAY.as_millis() as u64, 1));
    let timeout_ms = match var(ENV_TRACES_TIMEOUT) {
        Some(_) => number(
            ENV_TRACES_TIMEOUT,
            DEFAULT_EXPORT_TIMEOUT.as_millis() as u64,
            1,
        ),
        None => number(ENV_TIMEOUT, DEFAULT_EXPORT_TIMEOUT.as_millis() as u64, 1),
    };
    Ok(Some(Settings {
        traces_url,
        headers,
        ratio,
        service_name,
        queue,
        batch,
        delay,
        export_timeout: Duration::from_millis(timeout_ms),
        warnings,
    }))
}

fn http_url(v: &str) -> Option<Url> {
    Url::parse(v)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// A base endpoint's traces URL: `/v1/traces` appended to its path (OTLP/HTTP), unless
/// the path already ends with it.
pub fn traces_url(base: &Url) -> Url {
    let mut u = base.clone();
    let path = u.path().trim_end_matches('/');
    if path.ends_with(&format!("/{TRACES_PATH}")) {
        let p = path.to_string();
        u.set_path(&p);
    } else {
        let p = format!("{path}/{TRACES_PATH}");
        u.set_path(&p);
    }
    u
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs separated by commas, values
/// percent-encoded (W3C Baggage syntax); pairs without `=` are skipped.
pub fn env_headers(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_ascii_lowercase(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::secrets::SecretSource;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn cfg(endpoint: Option<&str>) -> Tracing {
        Tracing {
            otlp_endpoint: endpoint.map(|e| Url::parse(e).unwrap()),
            ..Tracing::default()
        }
    }

    #[test]
    fn off_unless_an_endpoint_is_named() {
        assert_eq!(resolve(&cfg(None), &env(&[])).unwrap(), None);
        // Other settings alone do not switch it on.
        let c = Tracing {
            sample_ratio: Some(0.5),
            ..Tracing::default()
        };
        assert_eq!(
            resolve(&c, &env(&[("OTEL_SERVICE_NAME", "x"), (ENV_ENDPOINT, " ")])).unwrap(),
            None
        );
        let on = env(&[(ENV_ENDPOINT, "http://c:4318"), (ENV_DISABLED, "TRUE")]);
        assert_eq!(resolve(&cfg(Some("http://c:4318")), &on).unwrap(), None);
    }

    #[test]
    fn endpoint_table() {
        type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (Some("http://c:4318"), &[], "http://c:4318/v1/traces"),
            (Some("http://c:4318/"), &[], "http://c:4318/v1/traces"),
            (Some("https://c/otlp"), &[], "https://c/otlp/v1/traces"),
            (
                Some("http://c:4318/v1/traces"),
                &[],
                "http://c:4318/v1/traces",
            ),
            // the file wins over both variables
            (
                Some("http://file:1"),
                &[
                    (ENV_TRACES_ENDPOINT, "http://env:2/x"),
                    (ENV_ENDPOINT, "http://env:3"),
                ],
                "http://file:1/v1/traces",
            ),
            // the signal variable is used as it is, and wins over the base
            (
                None,
                &[
                    (ENV_TRACES_ENDPOINT, "http://env:2/x"),
                    (ENV_ENDPOINT, "http://env:3"),
                ],
                "http://env:2/x",
            ),
            (
                None,
                &[(ENV_ENDPOINT, "http://env:3")],
                "http://env:3/v1/traces",
            ),
        ];
        for (file, vars, want) in cases {
            let s = resolve(&cfg(*file), &env(vars)).unwrap().unwrap();
            assert_eq!(s.traces_url.as_str(), *want, "{file:?} {vars:?}");
        }
        for bad in ["collector:4318", "ftp://c", "not a url"] {
            let e = resolve(&cfg(None), &env(&[(ENV_ENDPOINT, bad)])).unwrap_err();
            assert!(e.to_string().starts_with(ENV_ENDPOINT), "{e}");
        }
    }

    #[test]
    fn file_wins_key_by_key() {
        let c = Tracing {
            otlp_endpoint: None,
            headers: vec![
                ("x-api-key".into(), SecretSource::Inline("from-file".into())),
                ("x-team".into(), SecretSource::Env("TB_TEST_TEAM".into())),
            ],
            sample_ratio: Some(0.25),
            service_name: Some("file-name".into()),
        };
        let e = env(&[
            (ENV_ENDPOINT, "http://env:4318"),
            (ENV_HEADERS, "X-Api-Key=from-env,x-other=a%20b,broken"),
            (ENV_SAMPLER_ARG, "0.9"),
            (ENV_SERVICE_NAME, "env-name"),
        ]);
        std::env::set_var("TB_TEST_TEAM", "team-secret");
        let s = resolve(&c, &e).unwrap().unwrap();
        let h: Vec<(&str, &str)> = s
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            h,
            [
                ("x-other", "a b"),
                ("x-api-key", "from-file"),
                ("x-team", "team-secret")
            ]
        );
        assert!(s.headers[1].1.is_sensitive());
        assert_eq!(s.ratio, 0.25);
        assert_eq!(s.service_name, "file-name");
        // Without the file's values, the environment's.
        let s = resolve(&cfg(None), &e).unwrap().unwrap();
        assert_eq!(s.ratio, 0.9);
        assert_eq!(s.service_name, "env-name");
        assert_eq!(s.headers[0].1, "from-env");
    }

    #[test]
    fn defaults_and_ignored_values() {
        let s = resolve(&cfg(Some("http://c:4318")), &env(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(s.ratio, DEFAULT_RATIO);
        assert_eq!(s.service_name, DEFAULT_SERVICE_NAME);
        assert_eq!(
            (s.queue, s.batch, s.delay),
            (DEFAULT_QUEUE, DEFAULT_BATCH, DEFAULT_DELAY)
        );
        assert_eq!(s.export_timeout, DEFAULT_EXPORT_TIMEOUT);
        assert!(s.warnings.is_empty());
        let s = resolve(
            &cfg(Some("http://c:4318")),
            &env(&[
                (ENV_SAMPLER_ARG, "2"),
                (ENV_QUEUE, "8"),
                (ENV_BATCH, "100"),
                (ENV_DELAY, "0"),
                (ENV_TIMEOUT, "250"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.ratio, DEFAULT_RATIO);
        assert_eq!(
            (s.queue, s.batch),
            (8, 8),
            "a batch never exceeds the queue"
        );
        assert_eq!(s.delay, DEFAULT_DELAY);
        assert_eq!(s.export_timeout, Duration::from_millis(250));
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    }

    #[test]
    fn a_missing_secret_stops_the_start() {
        let c = Tracing {
            otlp_endpoint: Some(Url::parse("http://c:4318").unwrap()),
            headers: vec![(
                "x-key".into(),
                SecretSource::Env("TB_TEST_NO_SUCH_VAR".into()),
            )],
            ..Tracing::default()
        };
        let e = resolve(&c, &env(&[])).unwrap_err();
        assert!(e.to_string().starts_with("tracing.headers.x-key:"), "{e}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            env_headers("a=b%3Dc, Authorization = Basic%20eDp5 ,bad,=x,c=%zz"),
            [
                ("a".to_string(), "b=c".to_string()),
                ("authorization".to_string(), "Basic eDp5".to_string()),
                ("c".to_string(), "%zz".to_string()),
            ]
        );
    }
}
