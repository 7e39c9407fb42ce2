//! Every Prometheus metric tailbridge exports, defined once.
//!
//! Label values come only from bounded sets: configured endpoint names (or `-` for requests
//! that matched none), method classes, status classes and fixed reason words. Never tokens,
//! user ids or raw paths.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;

/// Request-duration buckets: from sub-millisecond JSON answers to multi-minute tool calls.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Connect-duration buckets.
const CONNECT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The endpoint label for requests that matched no endpoint.
pub const NO_ENDPOINT: &str = "-";

/// All metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub upstream_connect_seconds: HistogramVec,
    pub upstream_connect_errors: IntCounterVec,
    pub upstream_up: IntGaugeVec,
    pub active_streams: IntGaugeVec,
    pub active_requests: IntGauge,
    pub request_bytes: IntCounterVec,
    pub response_bytes: IntCounterVec,
    pub rejections: IntCounterVec,
    pub tailnet_ready: IntGaugeVec,
    pub build_info: IntGaugeVec,
    pub startup_seconds: Histogram,
    pub introspections: IntCounterVec,
    pub introspection_seconds: Histogram,
    pub token_cache: IntCounterVec,
    pub auth_rejections: IntCounterVec,
    pub token_endpoint: IntCounterVec,
    pub idp_metadata: IntCounterVec,
    pub cert_expiry: IntGaugeVec,
    pub acme_renewals: IntCounterVec,
    pub acme_next_renewal: IntGauge,
    pub tls_handshake_failures: IntCounterVec,
    pub mcp_requests: IntCounterVec,
    pub mcp_request_seconds: HistogramVec,
    pub userinfo: IntCounterVec,
    pub proxy_protocol_refused: IntCounterVec,
    /// `tailbridge_trace_spans_dropped_total{reason}`: queue_full, export_failed, shutdown.
    pub trace_spans_dropped: IntCounterVec,
    /// `tailbridge_trace_spans_exported_total`.
    pub trace_spans_exported: IntCounter,
    pub oauth: OauthMetrics,
    /// `tailbridge_mcp_tool_changes_total{endpoint, tool, change}`.
    pub tool_changes: IntCounterVec,
}

/// The OAuth broker's counters (`auth.broker`).
pub struct OauthMetrics {
    /// `tailbridge_oauth_authorizations_total{outcome}`: started, refused, idp_error.
    pub authorizations: IntCounterVec,
    /// `tailbridge_oauth_consents_total{decision}`: allow, deny.
    pub consents: IntCounterVec,
    /// `tailbridge_oauth_tokens_total{grant, outcome}`.
    pub tokens: IntCounterVec,
    /// `tailbridge_oauth_cimd_fetches_total{outcome}`.
    pub cimd_fetches: IntCounterVec,
    /// `tailbridge_oauth_registrations_total{outcome}`: ok, invalid, rate_limited.
    pub registrations: IntCounterVec,
}

impl OauthMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let v = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(v.clone()))?;
                Ok(v)
            };
        let m = OauthMetrics {
            authorizations: vec(
                "tailbridge_oauth_authorizations_total",
                "Broker authorization requests, by outcome: started (sent to tsidp), refused (bad \
                 request at /authorize) or idp_error (tsidp's callback failed).",
                &["outcome"],
            )?,
            consents: vec(
                "tailbridge_oauth_consents_total",
                "Consent decisions on the broker's consent page, by decision: allow or deny.",
                &["decision"],
            )?,
            tokens: vec(
                "tailbridge_oauth_tokens_total",
                "Token requests the broker answered, by grant (authorization_code, refresh_token) \
                 and outcome (ok, reused, invalid_grant, invalid_client, invalid_request, \
                 idp_unavailable).",
                &["grant", "outcome"],
            )?,
            cimd_fetches: vec(
                "tailbridge_oauth_cimd_fetches_total",
                "Client ID metadata document fetches, by outcome: ok, forbidden_address, \
                 fetch_error, http_error or invalid.",
                &["outcome"],
            )?,
            registrations: vec(
                "tailbridge_oauth_registrations_total",
                "Dynamic client registrations at the broker, by outcome: ok, invalid or \
                 rate_limited.",
                &["outcome"],
            )?,
        };
        for o in ["started", "refused", "idp_error"] {
            m.authorizations.with_label_values(&[o]);
        }
        for d in ["allow", "deny"] {
            m.consents.with_label_values(&[d]);
        }
        for g in ["authorization_code", "refresh_token"] {
            for o in [
                "ok",
                "invalid_grant",
                "invalid_client",
                "invalid_request",
                "idp_unavailable",
            ] {
                m.tokens.with_label_values(&[g, o]);
            }
        }
        for o in [
            "ok",
            "forbidden_address",
            "fetch_error",
            "http_error",
            "invalid",
        ] {
            m.cimd_fetches.with_label_values(&[o]);
        }
        for o in ["ok", "invalid", "rate_limited"] {
            m.registrations.with_label_values(&[o]);
        }
        Ok(m)
    }
}

/// TLS handshake failures are reported by pingora's accept loop through the log; the logger
/// counts them here (see `observe::logging`). Set by the first `Metrics::new`.
pub static HANDSHAKE_FAILURES: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Why the metric registry could not be built (a programming error, reported at start).
#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tailbridge_requests_total",
                "Requests answered, by endpoint, method and status class.",
            ),
            &["endpoint", "method", "status_class"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tailbridge_request_duration_seconds",
                "Time from request start to the end of the response (streams included).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["endpoint", "method"],
        )?;
        let upstream_connect_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tailbridge_upstream_connect_duration_seconds",
                "Time to open a new upstream connection through the tailnet connector.",
            )
            .buckets(CONNECT_BUCKETS.to_vec()),
            &["endpoint"],
        )?;
        let upstream_connect_errors = IntCounterVec::new(
            Opts::new(
                "tailbridge_upstream_connect_errors_total",
                "Failed upstream connection attempts, by endpoint and reason.",
            ),
            &["endpoint", "reason"],
        )?;
        let upstream_up = IntGaugeVec::new(
            Opts::new(
                "tailbridge_upstream_up",
                "1 when the last reachability probe of the endpoint's upstream succeeded.",
            ),
            &["endpoint"],
        )?;
        let active_streams = IntGaugeVec::new(
            Opts::new(
                "tailbridge_active_streams",
                "Server-sent event streams currently open, by endpoint.",
            ),
            &["endpoint"],
        )?;
        let active_requests = IntGauge::new(
            "tailbridge_active_requests",
            "Requests currently in flight on the main listener.",
        )?;
        let request_bytes = IntCounterVec::new(
            Opts::new(
                "tailbridge_request_body_bytes_total",
                "Request body bytes received from clients, by endpoint.",
            ),
            &["endpoint"],
        )?;
        let response_bytes = IntCounterVec::new(
            Opts::new(
                "tailbridge_response_body_bytes_total",
                "Response body bytes sent to clients, by endpoint.",
            ),
            &["endpoint"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "tailbridge_rejections_total",
                "Requests refused by tailbridge itself, by reason.",
            ),
            &["reason"],
        )?;
        let tailnet_ready = IntGaugeVec::new(
            Opts::new(
                "tailbridge_tailnet_ready",
                "1 when the tailnet connector can dial, by mode.",
            ),
            &["mode"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "tailbridge_build_info",
                "Always 1; labels describe the build.",
            ),
            &["version", "features"],
        )?;
        let startup_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tailbridge_startup_duration_seconds",
                "Time from process start until the listeners were set up.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
        )?;
        let introspections = IntCounterVec::new(
            Opts::new(
                "tailbridge_introspections_total",
                "Token introspection calls (cache misses), by outcome: active, inactive, error, timeout, rate_limited, overloaded.",
            ),
            &["outcome"],
        )?;
        let introspection_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tailbridge_introspection_duration_seconds",
                "Latency of token introspection calls to the IdP.",
            )
            .buckets(CONNECT_BUCKETS.to_vec()),
        )?;
        let token_cache = IntCounterVec::new(
            Opts::new(
                "tailbridge_token_cache_requests_total",
                "Token cache lookups, by result: hit or miss.",
            ),
            &["result"],
        )?;
        let auth_rejections = IntCounterVec::new(
            Opts::new(
                "tailbridge_auth_rejections_total",
                "Requests refused by token validation, by reason.",
            ),
            &["reason"],
        )?;
        let token_endpoint = IntCounterVec::new(
            Opts::new(
                "tailbridge_token_endpoint_requests_total",
                "Requests to /token proxied to the IdP, by status class of the answer.",
            ),
            &["status_class"],
        )?;
        let idp_metadata = IntCounterVec::new(
            Opts::new(
                "tailbridge_idp_metadata_fetches_total",
                "Fetches of the IdP's authorization-server metadata, by outcome: ok or error.",
            ),
            &["outcome"],
        )?;
        let cert_expiry = IntGaugeVec::new(
            Opts::new(
                "tailbridge_tls_certificate_expiry_seconds",
                "Seconds until the served TLS certificate expires (negative once expired), by file.",
            ),
            &["file"],
        )?;
        registry.register(Box::new(cert_expiry.clone()))?;
        let acme_renewals = IntCounterVec::new(
            Opts::new(
                "tailbridge_acme_renewals_total",
                "ACME issuance and renewal attempts, by outcome: success or failure.",
            ),
            &["outcome"],
        )?;
        let acme_next_renewal = IntGauge::new(
            "tailbridge_acme_next_renewal_timestamp_seconds",
            "When the ACME certificate is next due for renewal (Unix time; 0 = no certificate).",
        )?;
        let tls_handshake_failures = IntCounterVec::new(
            Opts::new(
                "tailbridge_tls_handshake_failures_total",
                "TLS handshakes on server.listen that failed, by reason: error or timeout.",
            ),
            &["reason"],
        )?;
        for outcome in ["success", "failure"] {
            acme_renewals.with_label_values(&[outcome]);
        }
        for reason in ["error", "timeout"] {
            tls_handshake_failures.with_label_values(&[reason]);
        }
        registry.register(Box::new(acme_renewals.clone()))?;
        registry.register(Box::new(acme_next_renewal.clone()))?;
        registry.register(Box::new(tls_handshake_failures.clone()))?;
        let _ = HANDSHAKE_FAILURES.set(tls_handshake_failures.clone());
        let mcp_requests = IntCounterVec::new(
            Opts::new(
                "tailbridge_mcp_requests_total",
                "JSON-RPC messages POSTed to MCP endpoints, by endpoint, method, tool (tools/call \
                 only: names the upstream listed, else _other) and outcome.",
            ),
            &["endpoint", "method", "tool", "outcome"],
        )?;
        let mcp_request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tailbridge_mcp_request_duration_seconds",
                "Time from a JSON-RPC request until its response reached the client (streams \
                 included).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["endpoint", "method", "tool"],
        )?;
        let userinfo = IntCounterVec::new(
            Opts::new(
                "tailbridge_userinfo_requests_total",
                "Calls to tsidp's userinfo endpoint for tool grants, by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(mcp_requests.clone()))?;
        registry.register(Box::new(mcp_request_seconds.clone()))?;
        registry.register(Box::new(userinfo.clone()))?;
        let proxy_protocol_refused = IntCounterVec::new(
            Opts::new(
                "tailbridge_proxy_protocol_refused_total",
                "Connections to server.listen closed for want of a valid PROXY header, by \
                 reason: missing, malformed, timeout or closed.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(proxy_protocol_refused.clone()))?;
        // Series appear only when tracing is on (observe::tracing creates them).
        let trace_spans_dropped = IntCounterVec::new(
            Opts::new(
                "tailbridge_trace_spans_dropped_total",
                "Trace spans never delivered to the collector, by reason: queue_full (the \
                 export queue was full), export_failed (the collector refused or did not \
                 answer) or shutdown.",
            ),
            &["reason"],
        )?;
        let trace_spans_exported = IntCounter::new(
            "tailbridge_trace_spans_exported_total",
            "Trace spans the collector accepted.",
        )?;
        registry.register(Box::new(trace_spans_dropped.clone()))?;
        for m in [
            &introspections,
            &token_cache,
            &auth_rejections,
            &token_endpoint,
            &idp_metadata,
        ] {
            registry.register(Box::new(m.clone()))?;
        }
        registry.register(Box::new(introspection_seconds.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(upstream_connect_seconds.clone()))?;
        registry.register(Box::new(upstream_connect_errors.clone()))?;
        registry.register(Box::new(upstream_up.clone()))?;
        registry.register(Box::new(active_streams.clone()))?;
        registry.register(Box::new(active_requests.clone()))?;
        registry.register(Box::new(request_bytes.clone()))?;
        registry.register(Box::new(response_bytes.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(tailnet_ready.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        registry.register(Box::new(startup_seconds.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::FEATURES])
            .set(1);
        let oauth = OauthMetrics::new(&registry)?;
        let tool_changes = IntCounterVec::new(
            Opts::new(
                "tailbridge_mcp_tool_changes_total",
                "Tool definitions in tools/list answers that differ from their pin (or from the \
                 first definition seen), counted once per new definition, by endpoint, tool and \
                 change: changed, added or removed.",
            ),
            &["endpoint", "tool", "change"],
        )?;
        registry.register(Box::new(tool_changes.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            request_seconds,
            upstream_connect_seconds,
            upstream_connect_errors,
            upstream_up,
            active_streams,
            active_requests,
            request_bytes,
            response_bytes,
            rejections,
            tailnet_ready,
            build_info,
            startup_seconds,
            introspections,
            introspection_seconds,
            token_cache,
            auth_rejections,
            token_endpoint,
            idp_metadata,
            cert_expiry,
            acme_renewals,
            acme_next_renewal,
            tls_handshake_failures,
            mcp_requests,
            mcp_request_seconds,
            userinfo,
            proxy_protocol_refused,
            trace_spans_dropped,
            trace_spans_exported,
            oauth,
            tool_changes,
        })
    }

    /// Show the trace export counters (tracing is on): the dropped-span series at zero,
    /// and the exported-span counter.
    pub fn init_tracing(&self) -> Result<(), MetricsError> {
        for reason in ["queue_full", "export_failed", "shutdown"] {
            self.trace_spans_dropped.with_label_values(&[reason]);
        }
        self.registry
            .register(Box::new(self.trace_spans_exported.clone()))?;
        Ok(())
    }

    /// Pre-create the per-endpoint series so that dashboards show zeros, not gaps.
    pub fn init_endpoint(&self, endpoint: &str) {
        for outcome in crate::mcp::exchange::Outcome::ALL {
            self.mcp_requests.with_label_values(&[
                endpoint,
                "tools/call",
                crate::mcp::OTHER_TOOL,
                outcome.as_str(),
            ]);
        }
        self.mcp_request_seconds.with_label_values(&[
            endpoint,
            "tools/call",
            crate::mcp::OTHER_TOOL,
        ]);
        for reason in ["resolve", "timeout", "refused", "unavailable"] {
            self.upstream_connect_errors
                .with_label_values(&[endpoint, reason]);
        }
        for class in ["2xx", "4xx", "5xx"] {
            for method in ["GET", "POST", "DELETE"] {
                self.requests.with_label_values(&[endpoint, method, class]);
            }
        }
        for method in ["GET", "POST", "DELETE"] {
            self.request_seconds.with_label_values(&[endpoint, method]);
        }
        self.active_streams.with_label_values(&[endpoint]).set(0);
        self.request_bytes.with_label_values(&[endpoint]);
        self.response_bytes.with_label_values(&[endpoint]);
        self.upstream_connect_seconds.with_label_values(&[endpoint]);
    }

    /// Pre-create the auth series (all outcomes and reasons at zero).
    pub fn init_auth<'a>(&self, reasons: impl Iterator<Item = &'a str>) {
        for o in [
            "active",
            "inactive",
            "error",
            "timeout",
            "rate_limited",
            "overloaded",
        ] {
            self.introspections.with_label_values(&[o]);
        }
        for r in ["hit", "miss"] {
            self.token_cache.with_label_values(&[r]);
        }
        for c in ["2xx", "4xx", "5xx"] {
            self.token_endpoint.with_label_values(&[c]);
        }
        for o in ["ok", "error"] {
            self.idp_metadata.with_label_values(&[o]);
        }
        for r in ["ok", "error", "timeout"] {
            self.userinfo.with_label_values(&[r]);
        }
        for r in reasons {
            self.auth_rejections.with_label_values(&[r]);
        }
    }

    /// The registry in Prometheus text format.
    /// Every metric family with its current values (for the status page).
    pub fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// The `status_class` label values.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

fn status_class_index(status: u16) -> usize {
    match status {
        100..=599 => (status / 100 - 1) as usize,
        _ => 5,
    }
}

/// `1xx` … `5xx`, or `none` when no response was sent.
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}

/// The `method` label values.
const METHODS: [&str; 7] = ["GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT", "other"];

fn method_index(method: &http::Method) -> usize {
    match *method {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::DELETE => 2,
        http::Method::OPTIONS => 3,
        http::Method::HEAD => 4,
        http::Method::PUT => 5,
        _ => 6,
    }
}

/// Method label from a bounded set.
pub fn method_label(method: &http::Method) -> &'static str {
    METHODS[method_index(method)]
}

/// The per-request series of one `endpoint` label, each resolved from its vector the first
/// time it is used and then kept: a request costs no label hashing. A series appears in the
/// output when first used, as with `with_label_values`.
pub struct EndpointSeries {
    label: String,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    active_streams: IntGaugeVec,
    by_outcome: [[OnceLock<IntCounter>; STATUS_CLASSES.len()]; METHODS.len()],
    seconds: [OnceLock<Histogram>; METHODS.len()],
    bytes_in: OnceLock<IntCounter>,
    bytes_out: OnceLock<IntCounter>,
    streams: OnceLock<IntGauge>,
}

impl EndpointSeries {
    /// The series of requests `method` answered with `status`.
    pub fn request(&self, method: &http::Method, status: u16) -> &IntCounter {
        let (m, c) = (method_index(method), status_class_index(status));
        self.by_outcome[m][c].get_or_init(|| {
            self.requests
                .with_label_values(&[&self.label, METHODS[m], STATUS_CLASSES[c]])
        })
    }

    pub fn seconds(&self, method: &http::Method) -> &Histogram {
        let m = method_index(method);
        self.seconds[m].get_or_init(|| {
            self.request_seconds
                .with_label_values(&[&self.label, METHODS[m]])
        })
    }

    pub fn bytes_in(&self) -> &IntCounter {
        self.bytes_in
            .get_or_init(|| self.request_bytes.with_label_values(&[&self.label]))
    }

    pub fn bytes_out(&self) -> &IntCounter {
        self.bytes_out
            .get_or_init(|| self.response_bytes.with_label_values(&[&self.label]))
    }

    pub fn streams(&self) -> &IntGauge {
        self.streams
            .get_or_init(|| self.active_streams.with_label_values(&[&self.label]))
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Metrics {
    /// The per-request series for `endpoint` (an endpoint name, or a route label).
    pub fn endpoint_series(&self, endpoint: &str) -> EndpointSeries {
        EndpointSeries {
            label: endpoint.to_string(),
            requests: self.requests.clone(),
            request_seconds: self.request_seconds.clone(),
            request_bytes: self.request_bytes.clone(),
            response_bytes: self.response_bytes.clone(),
            active_streams: self.active_streams.clone(),
            by_outcome: Default::default(),
            seconds: Default::default(),
            bytes_in: OnceLock::new(),
            bytes_out: OnceLock::new(),
            streams: OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_build_info_and_classes() {
        let m = Metrics::new().unwrap();
        m.init_endpoint("a");
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("tailbridge_build_info{"));
        assert!(text.contains("tailbridge_active_streams{endpoint=\"a\"} 0"));
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(0), "none");
        assert_eq!(method_label(&http::Method::PATCH), "other");
    }

    #[test]
    fn status_classes_table() {
        for (status, class) in [
            (0, "none"),
            (99, "none"),
            (100, "1xx"),
            (199, "1xx"),
            (200, "2xx"),
            (308, "3xx"),
            (404, "4xx"),
            (499, "4xx"),
            (500, "5xx"),
            (599, "5xx"),
            (600, "none"),
            (u16::MAX, "none"),
        ] {
            assert_eq!(status_class(status), class, "{status}");
        }
    }

    #[test]
    fn endpoint_series_are_the_labelled_series() {
        let m = Metrics::new().unwrap();
        let s = m.endpoint_series("notes");
        s.request(&http::Method::POST, 201).inc();
        s.request(&http::Method::POST, 204).inc();
        s.request(&http::Method::PATCH, 502).inc();
        s.seconds(&http::Method::GET).observe(0.5);
        s.bytes_in().inc_by(7);
        s.streams().inc();
        let text = String::from_utf8(m.render()).unwrap();
        for line in [
            r#"tailbridge_requests_total{endpoint="notes",method="POST",status_class="2xx"} 2"#,
            r#"tailbridge_requests_total{endpoint="notes",method="other",status_class="5xx"} 1"#,
            r#"tailbridge_request_duration_seconds_count{endpoint="notes",method="GET"} 1"#,
            r#"tailbridge_request_body_bytes_total{endpoint="notes"} 7"#,
            r#"tailbridge_active_streams{endpoint="notes"} 1"#,
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        // Only used series exist.
        assert!(!text.contains(r#"method="DELETE""#), "{text}");
        assert_eq!(
            m.requests
                .with_label_values(&["notes", "POST", "2xx"])
                .get(),
            2
        );
    }
}
