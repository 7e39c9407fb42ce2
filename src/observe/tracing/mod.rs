//! OpenTelemetry traces of every proxied request, in the MCP semantic conventions, with
//! the trace context carried to the upstream.
//!
//! The proxy phases hand this module what they already know; it owns the tracer, the
//! attribute names ([`attr`]), the span shapes and the export ([`export`]):
//! - a SERVER span per request: for a single MCP message named `{mcp.method.name}
//!   {target}` (`tools/call get_weather`) with the MCP attributes, else `{METHOD}
//!   {http.route}`; HTTP, endpoint and user attributes; `error.type` for JSON-RPC errors,
//!   tool errors, and the bridge's own refusals and timeouts;
//! - for a batch (one POST, several messages), one SERVER span per message under it;
//! - a CLIENT span per upstream attempt (connect time, time to first byte), and one per
//!   introspection or userinfo call to tsidp.
//!
//! Propagation (W3C Trace Context): a client's `traceparent`/`tracestate` is continued;
//! the upstream request carries the bridge's (its CLIENT span); and each forwarded message
//! without one gets `params._meta.traceparent` ([`meta`]: an insertion that keeps every
//! judged byte) naming the span that stands for that message here.
//!
//! Off (no endpoint in the file or the environment) nothing here runs: the phases see
//! `None` and take one branch, no span object is built and nothing is allocated.

pub mod attr;
pub mod export;
pub mod meta;
pub mod settings;

use crate::mcp::exchange::{Call, Exchange, Outcome};
use crate::mcp::jsonrpc::{self, Id, Inbound, MessageKind};
use bytes::Bytes;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use settings::Settings;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long shutting down waits for queued spans to reach the collector.
pub const FLUSH_BUDGET: Duration = Duration::from_secs(2);
/// Tool names longer than this are cut in span names and attributes.
const MAX_TARGET: usize = 128;

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("tracing: {0}")]
    Settings(#[from] settings::SettingsError),
    #[error("tracing: cannot start the export thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The tracer and its export pipeline, built once at start when tracing is on.
pub struct Tracing {
    tracer: SdkTracer,
    /// Keeps the pipeline registered; spans hold the tracer, which holds the provider.
    _provider: SdkTracerProvider,
    pipeline: Arc<export::Pipeline>,
    propagator: TraceContextPropagator,
    target: String,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracing({})", self.target)
    }
}

/// The pipeline shared between the provider and [`Tracing::shutdown`].
#[derive(Debug)]
struct Shared(Arc<export::Pipeline>);

impl opentelemetry_sdk::trace::SpanProcessor for Shared {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.0.on_start(span, cx)
    }
    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        self.0.on_end(span)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}

/// The OTLP exporter's HTTP client: reqwest's blocking client (see [`export`] for why),
/// with the configured headers set on every request so that the file wins over
/// `OTEL_EXPORTER_OTLP_HEADERS`, which the exporter reads by itself.
#[derive(Debug)]
struct Collector {
    client: reqwest::blocking::Client,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Collector {
    async fn send_bytes(
        &self,
        mut request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        for (n, v) in &self.headers {
            request.headers_mut().insert(n.clone(), v.clone());
        }
        self.client.send_bytes(request).await
    }
}

/// Build the OTLP/HTTP protobuf exporter. Runs on the export thread.
fn exporter(
    settings: &Settings,
    resource: &Resource,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::trace::SpanExporter as _;
    let client = reqwest::blocking::Client::builder()
        .timeout(settings.export_timeout)
        .connect_timeout(settings.export_timeout)
        .user_agent(concat!("tailbridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())?;
    let mut e = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(settings.traces_url.as_str())
        .with_timeout(settings.export_timeout)
        .with_http_client(Collector {
            client,
            headers: settings.headers.clone(),
        })
        .build()
        .map_err(|e| e.to_string())?;
    e.set_resource(resource);
    Ok(e)
}

impl Tracing {
    /// Start the export thread and the tracer (parent-based ratio sampling).
    pub fn start(settings: &Settings, counters: export::Counters) -> Result<Self, TracingError> {
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))])
            .build();
        let s = settings.clone();
        let r = resource.clone();
        let pipeline = Arc::new(
            export::Pipeline::start(settings, counters, move || exporter(&s, &r))
                .map_err(TracingError::Thread)?,
        );
        Ok(Self::with_pipeline(settings, pipeline, resource))
    }

    fn with_pipeline(
        settings: &Settings,
        pipeline: Arc<export::Pipeline>,
        resource: Resource,
    ) -> Self {
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Shared(pipeline.clone()))
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let scope = opentelemetry::InstrumentationScope::builder("tailbridge")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Tracing {
            tracer: provider.tracer_with_scope(scope),
            _provider: provider,
            pipeline,
            propagator: TraceContextPropagator::new(),
            target: settings.traces_url.to_string(),
        }
    }

    /// Where spans go, for the start-up log line.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Export what is queued within `budget`, then refuse further spans. For shutdown.
    pub fn shutdown(&self, budget: Duration) {
        use opentelemetry_sdk::trace::SpanProcessor as _;
        if self.pipeline.shutdown_with_timeout(budget).is_err() {
            log::warn!(
                "tracing: spans still queued after {budget:?} were not sent to {}",
                self.target
            );
        }
    }

    /// Start the SERVER span of a request, continuing the client's trace context.
    pub fn start_request(
        &self,
        headers: &http::HeaderMap,
        method: &http::Method,
    ) -> Box<RequestTrace> {
        let parent = self
            .propagator
            .extract(&opentelemetry_http::HeaderExtractor(headers));
        let clock = Clock::now();
        let span = self
            .tracer
            .span_builder(method_name(method))
            .with_kind(SpanKind::Server)
            .with_start_time(clock.s0)
            .start_with_context(&self.tracer, &parent);
        let cx = local(span.span_context());
        Box::new(RequestTrace {
            span,
            cx,
            clock,
            upstream: None,
            messages: Vec::new(),
            body: None,
            protocol_version: None,
        })
    }

    /// Start the CLIENT span of an upstream attempt (a retry ends the previous one).
    pub fn start_upstream(&self, t: &mut RequestTrace, target: &Target<'_>) {
        let now = Instant::now();
        if let Some(mut prev) = t.upstream.take() {
            prev.span
                .set_attribute(KeyValue::new(attr::ERROR_TYPE, attr::OTHER_ERROR));
            prev.span
                .set_status(Status::error("attempt failed; retried"));
            prev.span.end_with_timestamp(t.clock.at(now));
        }
        let mut span = self
            .tracer
            .span_builder(method_name(target.method))
            .with_kind(SpanKind::Client)
            .with_start_time(t.clock.at(now))
            .start_with_context(&self.tracer, &t.cx);
        if span.is_recording() {
            let path = target.path.split('?').next().unwrap_or_default();
            let host = if target.host.contains(':') {
                format!("[{}]", target.host)
            } else {
                target.host.to_string()
            };
            span.update_name(format!(
                "{} {}",
                method_name(target.method),
                target.template
            ));
            span.set_attributes([
                KeyValue::new(attr::HTTP_REQUEST_METHOD, method_name(target.method)),
                KeyValue::new(attr::SERVER_ADDRESS, target.host.to_string()),
                KeyValue::new(attr::SERVER_PORT, i64::from(target.port)),
                KeyValue::new(
                    attr::URL_FULL,
                    format!("{}://{host}:{}{path}", target.scheme, target.port),
                ),
                KeyValue::new(attr::URL_TEMPLATE, target.template.to_string()),
                KeyValue::new(attr::NETWORK_PROTOCOL_NAME, "http"),
                KeyValue::new(attr::NETWORK_TRANSPORT, "tcp"),
            ]);
        }
        t.upstream = Some(Leg {
            span,
            started: now,
            connected: None,
            first_byte: None,
            status: None,
        });
    }

    /// A CLIENT span for a call to tsidp (`call`: `introspection` or `userinfo`) made for
    /// the request `parent`.
    pub fn idp_call(
        &self,
        parent: &RequestTrace,
        call: &'static str,
        method: &http::Method,
        url: &str,
    ) -> IdpSpan {
        let mut span = self
            .tracer
            .span_builder(method_name(method))
            .with_kind(SpanKind::Client)
            .start_with_context(&self.tracer, &parent.cx);
        if span.is_recording() {
            let u = url::Url::parse(url).ok();
            let path = u.as_ref().map(|u| u.path()).unwrap_or("/");
            span.update_name(format!("{} {path}", method_name(method)));
            span.set_attributes([
                KeyValue::new(attr::IDP_CALL, call),
                KeyValue::new(attr::HTTP_REQUEST_METHOD, method_name(method)),
                KeyValue::new(
                    attr::URL_FULL,
                    url.split('?').next().unwrap_or_default().to_string(),
                ),
                KeyValue::new(attr::URL_TEMPLATE, path.to_string()),
            ]);
            if let Some(u) = &u {
                span.set_attribute(KeyValue::new(
                    attr::SERVER_ADDRESS,
                    u.host_str().unwrap_or_default().to_string(),
                ));
                if let Some(p) = u.port_or_known_default() {
                    span.set_attribute(KeyValue::new(attr::SERVER_PORT, i64::from(p)));
                }
            }
        }
        IdpSpan(span)
    }

    /// The W3C carrier for a span context (`traceparent`, `tracestate`).
    fn carrier(&self, sc: &SpanContext) -> meta::Carrier {
        meta::Carrier {
            traceparent: traceparent(sc),
            tracestate: sc.trace_state().header(),
        }
    }

    /// A forwarded POST was read as `inbound` from `body` (and judged with
    /// `keep_arguments`): one span per message of a batch, and the body with trace context
    /// in each message that has none, when it reads exactly as the judged one.
    pub fn forward(
        &self,
        t: &mut RequestTrace,
        body: &[u8],
        inbound: &Inbound,
        keep_arguments: bool,
    ) {
        let Ok(slots) = meta::slots(body) else { return };
        if slots.len() != inbound.messages.len() {
            return;
        }
        if let [one] = slots.as_slice() {
            t.protocol_version = one.protocol_version.clone();
            if let Some(sc) = one.traceparent.as_deref().and_then(|tp| self.remote(tp)) {
                t.span.add_link(sc, Vec::new());
            }
        } else {
            self.message_spans(t, inbound.messages.iter().map(|m| m.kind), Some(&slots));
        }
        let carriers: Vec<Option<meta::Carrier>> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.insert?;
                let sc = match t.messages.get(i) {
                    Some(Some(span)) => span.span_context(),
                    Some(None) => return None,
                    None => t.span.span_context(),
                };
                Some(self.carrier(sc))
            })
            .collect();
        let Some(new) = meta::rewrite(body, &slots, &carriers) else {
            return;
        };
        // Never forward a message the policy did not judge: the rewritten body must read
        // as the same messages (method, id, name, arguments when kept).
        if jsonrpc::classify(&new, keep_arguments).ok().as_ref() == Some(inbound) {
            t.body = Some(Body {
                bytes: Bytes::from(new),
                original: body.len(),
            });
        }
    }

    /// One SERVER span per request or notification of a batch, under the request span.
    fn message_spans(
        &self,
        t: &mut RequestTrace,
        kinds: impl Iterator<Item = MessageKind>,
        slots: Option<&[meta::Slot]>,
    ) {
        let start = t.clock.s0;
        t.messages = kinds
            .enumerate()
            .map(|(i, kind)| {
                if kind == MessageKind::Response {
                    return None;
                }
                let mut span = self
                    .tracer
                    .span_builder("mcp")
                    .with_kind(SpanKind::Server)
                    .with_start_time(start)
                    .start_with_context(&self.tracer, &t.cx);
                let link = slots
                    .and_then(|s| s.get(i))
                    .and_then(|s| s.traceparent.as_deref())
                    .and_then(|tp| self.remote(tp));
                if let Some(sc) = link {
                    span.add_link(sc, Vec::new());
                }
                Some(span)
            })
            .collect();
    }

    /// A `traceparent` value as a span context, when it is a valid one.
    fn remote(&self, traceparent: &str) -> Option<SpanContext> {
        let cx = self.propagator.extract(&One(traceparent));
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(sc)
    }

    /// End every span of the request with what the phases learned.
    pub fn finish(&self, mut t: Box<RequestTrace>, f: &Facts<'_>) {
        let calls: &[Call] = f.mcp.map(|x| x.calls.as_slice()).unwrap_or_default();
        let batch = calls.len() > 1;
        if batch && t.messages.is_empty() && t.span.is_recording() {
            // A batch answered here (refused) got no spans when it was read.
            let kinds: Vec<MessageKind> = calls
                .iter()
                .map(|c| match c.method {
                    jsonrpc::RESPONSE_METHOD => MessageKind::Response,
                    _ => MessageKind::Request,
                })
                .collect();
            self.message_spans(&mut t, kinds.into_iter(), None);
        }
        let RequestTrace {
            mut span,
            clock,
            upstream,
            messages,
            protocol_version,
            ..
        } = *t;
        let end = clock.at(f.ended);
        if let Some(leg) = upstream {
            leg.finish(clock, f.refusal, end);
        }
        let protocol = f.protocol_version.or(protocol_version.as_deref());
        let single = calls.first().filter(|c| !batch && is_mcp(c));
        if span.is_recording() {
            let mut kv = Vec::with_capacity(24);
            http_server(&mut kv, f);
            common(&mut kv, f, protocol);
            let error = match single {
                Some(c) => {
                    span.update_name(mcp_name(c));
                    mcp_call(&mut kv, c);
                    f.refusal
                        .map(Cow::Borrowed)
                        .or_else(|| call_error(c, f.status))
                }
                None => {
                    span.update_name(http_name(f.method, f.route));
                    if batch {
                        kv.push(KeyValue::new(attr::MCP_BATCH_SIZE, calls.len() as i64));
                    }
                    f.refusal
                        .map(Cow::Borrowed)
                        .or_else(|| (f.status >= 500).then(|| Cow::Owned(f.status.to_string())))
                }
            };
            span.set_attributes(kv);
            set_error(&mut span, error);
        }
        span.end_with_timestamp(end);
        for (c, s) in calls.iter().zip(messages) {
            let Some(mut s) = s else { continue };
            if s.is_recording() {
                let mut kv = Vec::with_capacity(12);
                common(&mut kv, f, protocol);
                mcp_call(&mut kv, c);
                s.update_name(mcp_name(c));
                s.set_attributes(kv);
                let error = match (c.outcome, f.refusal) {
                    (Some(Outcome::Denied), Some(r)) => Some(Cow::Borrowed(r)),
                    _ => call_error(c, f.status),
                };
                set_error(&mut s, error);
            }
            s.end_with_timestamp(c.answered_at.map(|a| clock.at(a)).unwrap_or(end));
        }
    }
}

/// `error.type` and an error status, when there is an error (MCP conventions: the
/// status is ERROR exactly when `error.type` is set).
fn set_error(span: &mut Span, error: Option<Cow<'static, str>>) {
    if let Some(e) = error {
        span.set_status(Status::error(e.clone()));
        span.set_attribute(KeyValue::new(attr::ERROR_TYPE, e));
    }
}

/// A CLIENT span of a call to tsidp.
pub struct IdpSpan(Span);

impl IdpSpan {
    /// End it: the HTTP status tsidp answered, or why there was none (`timeout`, ...).
    pub fn end(mut self, status: Option<u16>, error: Option<&'static str>) {
        if self.0.is_recording() {
            if let Some(s) = status {
                self.0
                    .set_attribute(KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(s)));
            }
            let error = error.map(Cow::Borrowed).or_else(|| {
                status
                    .filter(|s| *s >= 400)
                    .map(|s| Cow::Owned(s.to_string()))
            });
            if let Some(e) = error {
                self.0.set_status(Status::error(e.clone()));
                self.0.set_attribute(KeyValue::new(attr::ERROR_TYPE, e));
            }
        }
        self.0.end();
    }
}

/// Where an upstream attempt goes.
#[derive(Debug)]
pub struct Target<'a> {
    pub method: &'a http::Method,
    pub scheme: &'static str,
    pub host: &'a str,
    pub port: u16,
    /// The request's upstream path (its query is not recorded).
    pub path: &'a str,
    /// The low-cardinality path for the span name (the target URL's path).
    pub template: &'a str,
}

/// What the phases learned about a request, handed over when it ends.
#[derive(Debug)]
pub struct Facts<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub scheme: &'static str,
    /// `http.route`: the endpoint's path, or the built-in route's.
    pub route: Option<&'a str>,
    /// The endpoint's name, when one matched.
    pub endpoint: Option<&'a str>,
    pub http_version: http::Version,
    pub client: Option<SocketAddr>,
    pub user_agent: Option<&'a str>,
    /// The status the client got (0: none).
    pub status: u16,
    /// Why the bridge refused or failed the request itself (the access log's reason).
    pub refusal: Option<&'static str>,
    pub enduser: Option<&'a str>,
    pub client_id: Option<&'a str>,
    /// The JSON-RPC exchange of a POST, its outcomes settled.
    pub mcp: Option<&'a Exchange>,
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Session-Id` (hashed before it is recorded).
    pub session: Option<&'a str>,
    pub ended: Instant,
}

/// The request body as rewritten for the upstream.
#[derive(Debug)]
struct Body {
    bytes: Bytes,
    /// The length of the body as read (the chunk Pingora replays).
    original: usize,
}

/// One upstream attempt.
struct Leg {
    span: Span,
    started: Instant,
    connected: Option<(Instant, bool)>,
    first_byte: Option<Instant>,
    status: Option<u16>,
}

impl Leg {
    fn finish(mut self, clock: Clock, refusal: Option<&'static str>, end: SystemTime) {
        if self.span.is_recording() {
            let secs = |i: Instant| i.saturating_duration_since(self.started).as_secs_f64();
            let mut kv = Vec::with_capacity(4);
            if let Some((at, reused)) = self.connected {
                kv.push(KeyValue::new(attr::UPSTREAM_CONNECT, secs(at)));
                kv.push(KeyValue::new(attr::UPSTREAM_REUSED, reused));
                self.span
                    .add_event_with_timestamp("connected", clock.at(at), Vec::new());
            }
            if let Some(at) = self.first_byte {
                kv.push(KeyValue::new(attr::UPSTREAM_FIRST_BYTE, secs(at)));
                self.span
                    .add_event_with_timestamp("first_byte", clock.at(at), Vec::new());
            }
            if let Some(s) = self.status {
                kv.push(KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(s)));
            }
            self.span.set_attributes(kv);
            let error = match self.status {
                Some(s) if s >= 400 => Some(Cow::Owned(s.to_string())),
                Some(_) => None,
                // No answer: why the bridge failed the request, if it did.
                None => Some(Cow::Borrowed(refusal.unwrap_or(attr::OTHER_ERROR))),
            };
            set_error(&mut self.span, error);
        }
        self.span.end_with_timestamp(end);
    }
}

/// Monotonic instants as wall-clock times, from one pair taken at the request's start.
#[derive(Debug, Clone, Copy)]
struct Clock {
    t0: Instant,
    s0: SystemTime,
}

impl Clock {
    fn now() -> Self {
        Clock {
            t0: Instant::now(),
            s0: SystemTime::now(),
        }
    }

    fn at(self, i: Instant) -> SystemTime {
        self.s0 + i.saturating_duration_since(self.t0)
    }
}

/// The spans of one request while it runs (in the proxy's per-request context).
pub struct RequestTrace {
    span: Span,
    /// The request span as the parent of the bridge's own spans.
    cx: Context,
    clock: Clock,
    upstream: Option<Leg>,
    /// Batch message spans, by message (`None` for a client's response).
    messages: Vec<Option<Span>>,
    body: Option<Body>,
    /// The body's `_meta` protocol version (single messages).
    protocol_version: Option<String>,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestTrace({:?})", self.span.span_context().span_id())
    }
}

impl RequestTrace {
    /// The upstream connection is there (`reused`: from the pool).
    pub fn connected(&mut self, reused: bool) {
        if let Some(l) = &mut self.upstream {
            l.connected = Some((Instant::now(), reused));
        }
    }

    /// The upstream's response head arrived.
    pub fn first_byte(&mut self, status: u16) {
        if let Some(l) = &mut self.upstream {
            l.first_byte = Some(Instant::now());
            l.status = Some(status);
        }
    }

    /// Put the bridge's trace context on the upstream request (replacing the client's),
    /// and fix `Content-Length` when the body carries trace context too.
    pub fn inject(
        &self,
        tracing: &Tracing,
        upstream: &mut pingora::http::RequestHeader,
    ) -> pingora::Result<()> {
        let sc = match &self.upstream {
            Some(l) => l.span.span_context(),
            None => self.span.span_context(),
        };
        let c = tracing.carrier(sc);
        // Inserting replaces what the client sent.
        upstream.insert_header(TRACEPARENT, c.traceparent)?;
        if c.tracestate.is_empty() {
            upstream.remove_header(TRACESTATE);
        } else {
            upstream.insert_header(TRACESTATE, c.tracestate)?;
        }
        if let Some(b) = &self.body {
            if upstream.headers.contains_key(http::header::CONTENT_LENGTH) {
                upstream.insert_header(http::header::CONTENT_LENGTH, b.bytes.len().to_string())?;
            }
        }
        Ok(())
    }

    /// The request body on its way upstream: the rewritten one replaces the body as read.
    pub fn request_body(&self, chunk: &mut Option<Bytes>) {
        if let (Some(b), Some(c)) = (&self.body, chunk.as_ref()) {
            if c.len() == b.original {
                *chunk = Some(b.bytes.clone());
            }
        }
    }
}

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// A parent context for the bridge's own spans: `sc` as a local (not remote) parent.
fn local(sc: &SpanContext) -> Context {
    let sc = SpanContext::new(
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags(),
        false,
        sc.trace_state().clone(),
    );
    Context::new().with_remote_span_context(sc)
}

/// `traceparent` for a span context: `00-{trace id}-{span id}-{flags}` with only the
/// sampled flag (W3C Trace Context §3.2, as the SDK's propagator writes it), written
/// directly: the formatting machinery costs about 3k instructions a header.
pub fn traceparent(sc: &SpanContext) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn hex(out: &mut String, bytes: &[u8]) {
        for b in bytes {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    hex(&mut out, &sc.trace_id().to_bytes());
    out.push('-');
    hex(&mut out, &sc.span_id().to_bytes());
    out.push('-');
    hex(
        &mut out,
        &[sc.trace_flags().to_u8() & TraceFlags::SAMPLED.to_u8()],
    );
    out
}

/// A `traceparent` alone, for the propagator to read.
struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The HTTP method as the span name and `http.request.method` take it: the standard
/// ones, else `_OTHER` (HTTP semantic conventions).
fn method_name(m: &http::Method) -> &'static str {
    use http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// An exchange entry that is an MCP request or notification (not a client's response,
/// not an unreadable body).
fn is_mcp(c: &Call) -> bool {
    c.method != jsonrpc::RESPONSE_METHOD && c.method != jsonrpc::UNPARSED_METHOD
}

/// `{METHOD} {http.route}`, or `{METHOD}` without a route (HTTP semantic conventions).
pub fn http_name(method: &http::Method, route: Option<&str>) -> String {
    let m = method_name(method);
    match (m, route) {
        ("_OTHER", _) => "HTTP".to_string(),
        (m, Some(r)) => format!("{m} {r}"),
        (m, None) => m.to_string(),
    }
}

/// `{mcp.method.name} {target}` with the tool as target (MCP semantic conventions).
pub fn mcp_name(c: &Call) -> String {
    match c.tool.as_deref() {
        Some(t) => format!("{} {}", c.method, cut(t)),
        None => c.method.to_string(),
    }
}

fn cut(s: &str) -> &str {
    if s.len() <= MAX_TARGET {
        return s;
    }
    let mut end = MAX_TARGET;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `jsonrpc.request.id` as text: numbers as written, strings as they are.
pub fn id_text(id: &Id) -> String {
    match id {
        Id::Int(i) => i.to_string(),
        Id::Num(n) => n.to_string(),
        Id::Str(s) => s.to_string(),
    }
}

/// `error.type` of one message by its outcome: the JSON-RPC error code, `tool_error`, the
/// HTTP status of an error answer without one, or why it got no answer.
pub fn call_error(c: &Call, status: u16) -> Option<Cow<'static, str>> {
    Some(match c.outcome? {
        Outcome::Ok => return None,
        Outcome::ToolError => Cow::Borrowed(attr::TOOL_ERROR),
        Outcome::Error => match c.error_code {
            Some(code) => Cow::Owned(code.to_string()),
            None if status >= 400 => Cow::Owned(status.to_string()),
            None => Cow::Borrowed(attr::OTHER_ERROR),
        },
        Outcome::Denied => Cow::Borrowed("denied"),
        Outcome::Unpinned => Cow::Borrowed("unpinned"),
        Outcome::RateLimited => Cow::Borrowed("rate_limited"),
        Outcome::Cancelled => Cow::Borrowed("cancelled"),
        Outcome::Unanswered => Cow::Borrowed("unanswered"),
    })
}

/// `http.route` of a request no endpoint answered, by its metric label: the OAuth
/// routes are fixed paths; discovery documents are one route (their paths follow the
/// endpoints, and unknown ones must not become span names).
pub fn route_of_label<'a>(label: &str, path: &'a str) -> Option<&'a str> {
    match label {
        "_well_known" => Some("/.well-known/*"),
        "_authorize" | "_token" | "_register" | "_oauth" => Some(path),
        _ => None,
    }
}

fn http_server(kv: &mut Vec<KeyValue>, f: &Facts<'_>) {
    kv.push(KeyValue::new(
        attr::HTTP_REQUEST_METHOD,
        method_name(f.method),
    ));
    kv.push(KeyValue::new(attr::URL_PATH, f.path.to_string()));
    kv.push(KeyValue::new(attr::URL_SCHEME, f.scheme));
    if let Some(r) = f.route {
        kv.push(KeyValue::new(attr::HTTP_ROUTE, r.to_string()));
    }
    if f.status > 0 {
        kv.push(KeyValue::new(
            attr::HTTP_RESPONSE_STATUS_CODE,
            i64::from(f.status),
        ));
    }
    let version = match f.http_version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        _ => "1.1",
    };
    kv.push(KeyValue::new(attr::NETWORK_PROTOCOL_NAME, "http"));
    kv.push(KeyValue::new(attr::NETWORK_PROTOCOL_VERSION, version));
    if let Some(c) = f.client {
        kv.push(KeyValue::new(attr::CLIENT_ADDRESS, c.ip().to_string()));
        kv.push(KeyValue::new(attr::CLIENT_PORT, i64::from(c.port())));
    }
    if let Some(ua) = f.user_agent {
        kv.push(KeyValue::new(attr::USER_AGENT_ORIGINAL, ua.to_string()));
    }
}

/// What every span of the request shares: endpoint, user, session, protocol.
fn common(kv: &mut Vec<KeyValue>, f: &Facts<'_>, protocol: Option<&str>) {
    if let Some(e) = f.endpoint {
        kv.push(KeyValue::new(attr::ENDPOINT, e.to_string()));
    }
    if let Some(u) = f.enduser {
        kv.push(KeyValue::new(attr::ENDUSER_ID, u.to_string()));
    }
    if let Some(c) = f.client_id {
        kv.push(KeyValue::new(attr::OAUTH_CLIENT_ID, c.to_string()));
    }
    if let Some(s) = f.session {
        kv.push(KeyValue::new(
            attr::MCP_SESSION_ID,
            crate::mcp::audit::session_hash(s),
        ));
    }
    if let Some(p) = protocol
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.len() <= 32)
    {
        kv.push(KeyValue::new(attr::MCP_PROTOCOL_VERSION, p.to_string()));
    }
}

fn mcp_call(kv: &mut Vec<KeyValue>, c: &Call) {
    kv.push(KeyValue::new(attr::MCP_METHOD_NAME, c.method));
    kv.push(KeyValue::new(attr::NETWORK_TRANSPORT, "tcp"));
    if let Some(id) = &c.id {
        kv.push(KeyValue::new(attr::JSONRPC_REQUEST_ID, id_text(id)));
    }
    if let Some(t) = c.tool.as_deref() {
        kv.push(KeyValue::new(attr::GEN_AI_TOOL_NAME, cut(t).to_string()));
        kv.push(KeyValue::new(
            attr::GEN_AI_OPERATION_NAME,
            attr::EXECUTE_TOOL,
        ));
    }
    if let Some(code) = c.error_code {
        kv.push(KeyValue::new(
            attr::RPC_RESPONSE_STATUS_CODE,
            code.to_string(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::export::{BatchSink, Counters, Pipeline};
    use super::*;
    use crate::mcp::jsonrpc::classify;
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry::Value;
    use opentelemetry_sdk::trace::SpanData;
    use std::sync::Mutex;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<SpanData>>>);

    impl BatchSink for Sink {
        fn send_batch(&mut self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn tracing(ratio: f64) -> (Tracing, Sink) {
        let settings = Settings {
            traces_url: url::Url::parse("http://127.0.0.1:9/v1/traces").unwrap(),
            headers: Vec::new(),
            ratio,
            service_name: "t".into(),
            queue: 100,
            batch: 100,
            delay: Duration::from_secs(60),
            export_timeout: Duration::from_secs(1),
            warnings: Vec::new(),
        };
        let dropped =
            prometheus::IntCounterVec::new(prometheus::Opts::new("d", "d"), &["reason"]).unwrap();
        let counters = Counters::new(&dropped, &prometheus::IntCounter::new("e", "e").unwrap());
        let sink = Sink::default();
        let s = sink.clone();
        let p = Arc::new(Pipeline::start(&settings, counters, move || Ok(s)).unwrap());
        let t = Tracing::with_pipeline(&settings, p, Resource::builder_empty().build());
        (t, sink)
    }

    fn spans(t: &Tracing, sink: &Sink) -> Vec<SpanData> {
        assert!(t.pipeline.flush(Duration::from_secs(5)));
        std::mem::take(&mut *sink.0.lock().unwrap())
    }

    fn headers(flags: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            format!("00-{TRACE}-{PARENT}-{flags}").parse().unwrap(),
        );
        h.insert("tracestate", "vendor=1".parse().unwrap());
        h
    }

    fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn text(s: &SpanData, key: &str) -> String {
        attr(s, key).map(|v| v.to_string()).unwrap_or_default()
    }

    fn facts<'a>(x: Option<&'a Exchange>, status: u16, refusal: Option<&'static str>) -> Facts<'a> {
        Facts {
            method: &http::Method::POST,
            path: "/mcp/notes",
            scheme: "https",
            route: Some("/mcp/notes"),
            endpoint: Some("notes"),
            http_version: http::Version::HTTP_11,
            client: Some("127.0.0.1:5555".parse().unwrap()),
            user_agent: Some("Claude-User"),
            status,
            refusal,
            enduser: Some("12345"),
            client_id: Some("claude"),
            mcp: x,
            protocol_version: Some("2025-11-25"),
            session: Some("s-1"),
            ended: Instant::now(),
        }
    }

    fn answered(body: &str, answer: &str) -> Exchange {
        let mut x = Exchange::new(classify(body.as_bytes(), false).unwrap(), Instant::now());
        x.on_response_head(Some("application/json"), false, false);
        x.on_body(
            Some(&Bytes::from(answer.to_string())),
            true,
            Instant::now(),
            &|_, _| true,
        );
        x.finish(200, false, Instant::now());
        x
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_weather","arguments":{"city":"Oslo"}}}"#;

    #[test]
    fn a_tool_call_continues_the_clients_trace_up_to_the_upstream() {
        let (tr, sink) = tracing(1.0);
        let mut t = tr.start_request(&headers("01"), &http::Method::POST);
        let inbound = classify(CALL.as_bytes(), false).unwrap();
        tr.forward(&mut t, CALL.as_bytes(), &inbound, false);
        tr.start_upstream(
            &mut t,
            &Target {
                method: &http::Method::POST,
                scheme: "http",
                host: "notes.ts.net",
                port: 8080,
                path: "/mcp?x=secret",
                template: "/mcp",
            },
        );
        t.connected(false);
        let mut up = pingora::http::RequestHeader::build("POST", b"/mcp", None).unwrap();
        up.insert_header("content-length", CALL.len().to_string())
            .unwrap();
        up.insert_header("traceparent", "00-client-sent-01")
            .unwrap();
        t.inject(&tr, &mut up).unwrap();
        // the body carries the request span, the headers the upstream leg
        let mut body = Some(Bytes::from_static(CALL.as_bytes()));
        t.request_body(&mut body);
        let sent: serde_json::Value = serde_json::from_slice(body.as_ref().unwrap()).unwrap();
        assert_eq!(
            up.headers["content-length"],
            body.as_ref().unwrap().len().to_string()
        );
        assert_eq!(sent["params"]["arguments"]["city"], "Oslo");
        let meta_tp = sent["params"]["_meta"]["traceparent"]
            .as_str()
            .unwrap()
            .to_string();
        let header_tp = up.headers["traceparent"].to_str().unwrap().to_string();
        assert_eq!(up.headers["tracestate"], "vendor=1");
        t.first_byte(200);
        let x = answered(
            CALL,
            r#"{"jsonrpc":"2.0","id":7,"result":{"content":[],"isError":true}}"#,
        );
        tr.finish(t, &facts(Some(&x), 200, None));
        let got = spans(&tr, &sink);
        assert_eq!(got.len(), 2);
        let client = got
            .iter()
            .find(|s| s.span_kind == SpanKind::Client)
            .unwrap();
        let server = got
            .iter()
            .find(|s| s.span_kind == SpanKind::Server)
            .unwrap();
        let trace = TraceId::from_hex(TRACE).unwrap();
        assert_eq!(server.span_context.trace_id(), trace);
        assert_eq!(server.parent_span_id, SpanId::from_hex(PARENT).unwrap());
        assert!(server.parent_span_is_remote);
        assert_eq!(client.parent_span_id, server.span_context.span_id());
        assert!(!client.parent_span_is_remote);
        assert_eq!(
            header_tp,
            format!("00-{TRACE}-{}-01", client.span_context.span_id())
        );
        assert_eq!(
            meta_tp,
            format!("00-{TRACE}-{}-01", server.span_context.span_id())
        );
        assert_eq!(server.name, "tools/call get_weather");
        for (k, v) in [
            (attr::MCP_METHOD_NAME, "tools/call"),
            (attr::GEN_AI_TOOL_NAME, "get_weather"),
            (attr::GEN_AI_OPERATION_NAME, "execute_tool"),
            (attr::JSONRPC_REQUEST_ID, "7"),
            (attr::ERROR_TYPE, "tool_error"),
            (attr::MCP_PROTOCOL_VERSION, "2025-11-25"),
            (
                attr::MCP_SESSION_ID,
                &crate::mcp::audit::session_hash("s-1"),
            ),
            (attr::HTTP_REQUEST_METHOD, "POST"),
            (attr::HTTP_RESPONSE_STATUS_CODE, "200"),
            (attr::URL_PATH, "/mcp/notes"),
            (attr::CLIENT_ADDRESS, "127.0.0.1"),
            (attr::ENDPOINT, "notes"),
            (attr::ENDUSER_ID, "12345"),
        ] {
            assert_eq!(text(server, k), v, "{k}");
        }
        assert!(matches!(server.status, Status::Error { .. }));
        assert_eq!(client.name, "POST /mcp");
        assert_eq!(text(client, attr::URL_FULL), "http://notes.ts.net:8080/mcp");
        assert_eq!(text(client, attr::HTTP_RESPONSE_STATUS_CODE), "200");
        assert_eq!(text(client, attr::UPSTREAM_REUSED), "false");
        assert!(attr(client, attr::UPSTREAM_FIRST_BYTE).is_some());
        assert_eq!(client.status, Status::Unset);
        let events: Vec<&str> = client.events.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(events, ["connected", "first_byte"]);
    }

    #[test]
    fn a_batch_gets_a_span_per_message() {
        let (tr, sink) = tracing(1.0);
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nope"}},{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":0,"_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}]"#;
        let mut t = tr.start_request(&http::HeaderMap::new(), &http::Method::POST);
        let inbound = classify(body.as_bytes(), false).unwrap();
        tr.forward(&mut t, body.as_bytes(), &inbound, false);
        let mut chunk = Some(Bytes::from_static(body.as_bytes()));
        t.request_body(&mut chunk);
        let sent: serde_json::Value = serde_json::from_slice(chunk.as_ref().unwrap()).unwrap();
        let x = answered(
            body,
            r#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[]}},{"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"unknown tool"}}]"#,
        );
        tr.finish(t, &facts(Some(&x), 200, None));
        let got = spans(&tr, &sink);
        assert_eq!(got.len(), 4);
        let request = got.iter().find(|s| s.name == "POST /mcp/notes").unwrap();
        assert_eq!(text(request, attr::MCP_BATCH_SIZE), "3");
        assert_eq!(request.parent_span_id, SpanId::INVALID, "a new trace");
        let by_name = |n: &str| got.iter().find(|s| s.name == n).unwrap();
        let list = by_name("tools/list");
        let call = by_name("tools/call nope");
        let cancel = by_name("notifications/cancelled");
        for m in [list, call, cancel] {
            assert_eq!(m.parent_span_id, request.span_context.span_id());
            assert_eq!(m.span_kind, SpanKind::Server);
        }
        assert_eq!(text(call, attr::ERROR_TYPE), "-32602");
        assert_eq!(text(call, attr::RPC_RESPONSE_STATUS_CODE), "-32602");
        assert!(attr(list, attr::ERROR_TYPE).is_none());
        assert!(attr(cancel, attr::JSONRPC_REQUEST_ID).is_none());
        // each message names its own span; a message that had a traceparent keeps it and
        // its span links to it
        assert_eq!(
            sent[0]["params"]["_meta"]["traceparent"],
            format!(
                "00-{}-{}-01",
                list.span_context.trace_id(),
                list.span_context.span_id()
            )
        );
        assert_eq!(
            sent[1]["params"]["_meta"]["traceparent"],
            format!(
                "00-{}-{}-01",
                call.span_context.trace_id(),
                call.span_context.span_id()
            )
        );
        assert_eq!(
            sent[2]["params"]["_meta"]["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(cancel.links.links.len(), 1);
    }

    #[test]
    fn sampling_is_parent_based() {
        let (tr, sink) = tracing(0.0);
        // ratio 0: a new trace is not recorded, but its context still goes upstream
        let t = tr.start_request(&http::HeaderMap::new(), &http::Method::GET);
        let mut up = pingora::http::RequestHeader::build("GET", b"/mcp", None).unwrap();
        t.inject(&tr, &mut up).unwrap();
        assert!(up.headers["traceparent"].to_str().unwrap().ends_with("-00"));
        tr.finish(t, &facts(None, 200, None));
        assert!(spans(&tr, &sink).is_empty());
        // a sampled parent is always followed, an unsampled one never
        let t = tr.start_request(&headers("01"), &http::Method::GET);
        tr.finish(t, &facts(None, 200, None));
        assert_eq!(spans(&tr, &sink).len(), 1);
        let (tr, sink) = tracing(1.0);
        let t = tr.start_request(&headers("00"), &http::Method::GET);
        tr.finish(t, &facts(None, 200, None));
        assert!(spans(&tr, &sink).is_empty());
    }

    #[test]
    fn refusals_name_their_reason() {
        let (tr, sink) = tracing(1.0);
        let body =
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"delete_note"}}"#;
        let mut x = Exchange::new(classify(body.as_bytes(), false).unwrap(), Instant::now());
        x.calls[0].outcome = Some(Outcome::Denied);
        let t = tr.start_request(&http::HeaderMap::new(), &http::Method::POST);
        tr.finish(t, &facts(Some(&x), 200, Some("tool_denied")));
        let t = tr.start_request(&http::HeaderMap::new(), &http::Method::POST);
        tr.finish(t, &facts(None, 401, Some("missing_token")));
        let t = tr.start_request(&http::HeaderMap::new(), &http::Method::POST);
        tr.finish(t, &facts(None, 502, None));
        let got = spans(&tr, &sink);
        let errors: Vec<(String, String)> = got
            .iter()
            .map(|s| (s.name.to_string(), text(s, attr::ERROR_TYPE)))
            .collect();
        assert_eq!(
            errors,
            [
                ("tools/call delete_note".into(), "tool_denied".into()),
                ("POST /mcp/notes".into(), "missing_token".into()),
                ("POST /mcp/notes".into(), "502".into()),
            ]
        );
    }

    #[test]
    fn traceparent_is_what_the_propagator_writes() {
        use opentelemetry::propagation::TextMapPropagator;
        use opentelemetry::trace::TraceState;
        let p = TraceContextPropagator::new();
        for (trace, span, flags) in [
            (TRACE, PARENT, TraceFlags::SAMPLED),
            (
                "00000000000000000000000000000001",
                "ffffffffffffffff",
                TraceFlags::default(),
            ),
            (TRACE, PARENT, TraceFlags::new(0xff)),
        ] {
            let sc = SpanContext::new(
                TraceId::from_hex(trace).unwrap(),
                SpanId::from_hex(span).unwrap(),
                flags,
                false,
                TraceState::from_key_value([("k", "v")]).unwrap(),
            );
            let mut m = std::collections::HashMap::new();
            p.inject_context(&Context::new().with_remote_span_context(sc.clone()), &mut m);
            assert_eq!(Some(&traceparent(&sc)), m.get("traceparent"));
            assert_eq!(Some(&sc.trace_state().header()), m.get("tracestate"));
        }
    }

    #[test]
    fn names_and_error_types() {
        assert_eq!(http_name(&http::Method::GET, None), "GET");
        assert_eq!(
            http_name(&http::Method::from_bytes(b"BREW").unwrap(), Some("/x")),
            "HTTP"
        );
        assert_eq!(route_of_label("_token", "/token"), Some("/token"));
        assert_eq!(
            route_of_label("_well_known", "/.well-known/x/y"),
            Some("/.well-known/*")
        );
        assert_eq!(route_of_label("-", "/nothing"), None);
        assert_eq!(id_text(&Id::Str("r-1".into())), "r-1");
        assert_eq!(id_text(&Id::Num("1.5".into())), "1.5");
        let long = "é".repeat(100);
        assert_eq!(cut(&long).len(), 128);
        let mut c = Exchange::unparsed(Instant::now()).calls.remove(0);
        for (outcome, code, status, want) in [
            (Outcome::Ok, None, 200, None),
            (Outcome::ToolError, None, 200, Some("tool_error")),
            (Outcome::Error, Some(-32601), 200, Some("-32601")),
            (Outcome::Error, None, 503, Some("503")),
            (Outcome::Error, None, 200, Some("_OTHER")),
            (Outcome::Cancelled, None, 200, Some("cancelled")),
            (Outcome::Unanswered, None, 200, Some("unanswered")),
        ] {
            c.outcome = Some(outcome);
            c.error_code = code;
            assert_eq!(call_error(&c, status).as_deref(), want, "{outcome:?}");
        }
    }
}
