//! The pingora `ProxyHttp` implementation. Phases only dispatch; the decisions live in
//! [`router`], [`headers`] and [`respond`].
//!
//! `request_filter` runs these steps in order; each returns `Some(..)` when it answered the
//! request and `None` to let the next step look at it:
//! 1. header limits (431)
//! 2. built-in routes: `/healthz`, `/readyz`, `/livez`
//! 3. route: normalise the path, longest segment-prefix match (400, 404)
//! 4. method (405), client address (403, `allowed_client_cidrs`), origin (403), declared
//!    body size (413)
//! 5. authenticate (401, 403, 429, 503)
//! 6. MCP: read a POST body, check mirrored headers (400) and the tool policy (a JSON-RPC
//!    error answered here); see [`mcp`]
//!
//! With tracing on, every phase also hands what it learned to [`trace`].

pub mod cidr;
pub mod ctx;
pub mod deadline;
pub mod headers;
mod mcp;
mod oauth;
pub mod respond;
pub mod router;
mod trace;

use crate::auth::AuthRuntime;
use crate::config::{Config, Endpoint, TlsMode};
use crate::observe::access_log::AccessRecord;
use crate::observe::health::Health;
use crate::observe::metrics::{status_class, EndpointSeries, Metrics, NO_ENDPOINT};
use crate::tailnet::{Connector, DialObserver, EndpointDialer, PeerState};
use async_trait::async_trait;
use bytes::Bytes;
use ctx::Ctx;
use headers::{Forwarding, UpstreamAuthorization};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::{H1UpgradePolicy, HttpPeer, HttpUpstreamRequestPolicy};
use pingora::{Error, ErrorType};
use respond::Rejection;
use router::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long an idle upstream connection stays in its endpoint's pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One endpoint, ready to serve.
#[derive(Debug)]
struct Route {
    ep: Endpoint,
    peer: HttpPeer,
    /// Built once: the upstream's `Host`, the `Authorization` an upstream token makes, and
    /// the endpoint's public URL (the audience tokens are checked against).
    authority: http::HeaderValue,
    bearer: Option<http::HeaderValue>,
    public_url: String,
    /// The MCP layer of this endpoint: tool policy and tool-name labels.
    tools: crate::mcp::EndpointTools,
    /// Client networks allowed on this endpoint (its own list, else the server's).
    allowed_clients: Vec<cidr::Cidr>,
    /// Whether the upstream's peer is there: liveness checks and the pool generation.
    watch: Arc<deadline::Watch>,
}

/// The proxy: routing table, endpoints and shared services.
pub struct Bridge {
    router: Router,
    routes: Vec<Route>,
    allowed_origins: Vec<String>,
    max_request_body: u64,
    max_header_bytes: u64,
    max_headers: usize,
    /// The `Strict-Transport-Security` value when TLS is on, built once.
    hsts: Option<http::HeaderValue>,
    proto: &'static str,
    auth: Option<Arc<AuthRuntime>>,
    /// Pooled peer for tsidp (`/token`), when auth is on.
    idp_peer: Option<HttpPeer>,
    idp_authority: String,
    idp_authority_value: http::HeaderValue,
    /// Built once: the configured identity header names.
    identity_names: IdentityNames,
    /// Client-sent header names that never reach an upstream (forwarding and identity
    /// families, configured identity headers, `server.strip_request_headers`).
    strip: headers::StripRules,
    /// `server.allowed_client_cidrs`: also guards `/token` and `/register`.
    allowed_clients: Vec<cidr::Cidr>,
    /// Set on SIGQUIT/SIGTERM: every response closes its connection.
    draining: Arc<std::sync::atomic::AtomicBool>,
    access_log: bool,
    log_format: crate::config::LogFormat,
    audit: crate::config::Audit,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// First-byte timers of requests waiting for an upstream's response head.
    deadlines: deadline::Deadlines,
    /// Per-request metric series: one per endpoint, then one per [`ROUTE_LABELS`].
    series: Vec<EndpointSeries>,
    /// OpenTelemetry traces, when on.
    tracing: Option<Arc<crate::observe::tracing::Tracing>>,
}

/// The `endpoint` labels of requests no endpoint answers: the OAuth routes, then `-`.
const ROUTE_LABELS: [&str; 6] = [
    "_well_known",
    "_authorize",
    "_token",
    "_register",
    "_oauth",
    NO_ENDPOINT,
];

/// Why the proxy could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot start the first-byte timer and liveness threads: {0}")]
    Timers(#[source] std::io::Error),
    #[error("endpoints[{index}].upstream_token: not usable in an Authorization header")]
    UpstreamTokenValue { index: usize },
    #[error("endpoints[{index}].target: the host is not usable in a Host header")]
    Authority { index: usize },
    #[error("auth.issuer: the host is not usable in a Host header")]
    IdpAuthority,
    #[error("endpoints[{index}].tools.pinned: {source}")]
    Pins {
        index: usize,
        #[source]
        source: crate::mcp::pins::PinFileError,
    },
    #[error("endpoints[{index}].upstream_token: {source}")]
    UpstreamToken {
        index: usize,
        #[source]
        source: crate::config::secrets::SecretError,
    },
}

impl Bridge {
    /// Build the proxy. Resolves upstream tokens now so that a missing secret stops start-up.
    pub fn new(
        config: &Config,
        connector: Arc<dyn Connector>,
        auth: Option<Arc<AuthRuntime>>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        tracing: Option<Arc<crate::observe::tracing::Tracing>>,
    ) -> Result<Self, BuildError> {
        let deadlines = deadline::Deadlines::start().map_err(BuildError::Timers)?;
        let mut routes = Vec::with_capacity(config.endpoints.len());
        for (index, ep) in config.endpoints.iter().enumerate() {
            let upstream_token = match &ep.upstream_token {
                Some(src) => Some(
                    src.resolve()
                        .map_err(|source| BuildError::UpstreamToken { index, source })?,
                ),
                None => None,
            };
            metrics.init_endpoint(&ep.name);
            let watch = deadlines.watch(ep.timeouts.connect);
            let peer = peer_for(ep, index, Some(&watch), connector.clone(), metrics.clone());
            let bearer = match &upstream_token {
                Some(t) => Some(
                    headers::bearer_value(t.expose())
                        .map_err(|_| BuildError::UpstreamTokenValue { index })?,
                ),
                None => None,
            };
            routes.push(Route {
                authority: http::HeaderValue::from_str(&ep.authority)
                    .map_err(|_| BuildError::Authority { index })?,
                bearer,
                public_url: match &auth {
                    Some(a) => format!("{}{}", a.cfg.public_origin, ep.path),
                    None => String::new(),
                },
                peer,
                allowed_clients: ep
                    .allowed_client_cidrs
                    .clone()
                    .unwrap_or_else(|| config.server.allowed_client_cidrs.clone()),
                watch,
                tools: endpoint_tools(ep, index, auth.as_deref())?,
                ep: ep.clone(),
            });
        }
        let tls_on = config.tls.mode != TlsMode::Off;
        for r in Rejection::ALL {
            metrics.rejections.with_label_values(&[r.reason()]);
        }
        if auth.is_some() {
            metrics.init_auth(crate::auth::AuthError::ALL.iter().map(|e| e.reason()));
        }
        let (idp_peer, idp_authority) = match &auth {
            Some(a) => {
                let u = &a.cfg.issuer;
                let tls = u.scheme() == "https";
                let host = u
                    .host_str()
                    .unwrap_or_default()
                    .trim_matches(['[', ']'])
                    .to_string();
                let port = u
                    .port_or_known_default()
                    .unwrap_or(if tls { 443 } else { 80 });
                let authority = match u.port() {
                    Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                    None => u.host_str().unwrap_or_default().to_string(),
                };
                let idp = Endpoint {
                    name: "_idp".into(),
                    path: "/".into(),
                    target: u.clone(),
                    host,
                    port,
                    tls,
                    authority: authority.clone(),
                    description: String::new(),
                    enabled: true,
                    upstream_token: None,
                    timeouts: crate::config::Timeouts {
                        connect: a.cfg.introspection.timeout,
                        first_byte: Duration::from_secs(30),
                        idle: Duration::from_secs(30),
                    },
                    tls_verify: true,
                    tools: crate::mcp::policy::ToolPolicy::default(),
                    guard: Default::default(),
                    allowed_client_cidrs: None,
                };
                (
                    Some(peer_for(
                        &idp,
                        config.endpoints.len(),
                        None,
                        connector.clone(),
                        metrics.clone(),
                    )),
                    authority,
                )
            }
            None => (None, String::new()),
        };
        let mut strip_extra = config.server.strip_request_headers.clone();
        if let Some(a) = &config.auth {
            let h = &a.identity_headers;
            strip_extra.extend(
                [&h.subject, &h.username, &h.client_id]
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        let identity_names = IdentityNames::new(auth.as_deref());
        let series = config
            .endpoints
            .iter()
            .map(|e| e.name.as_str())
            .chain(ROUTE_LABELS)
            .map(|l| metrics.endpoint_series(l))
            .collect();
        Ok(Bridge {
            router: Router::new(
                config
                    .endpoints
                    .iter()
                    .map(|e| (e.path.as_str(), e.target.path())),
            ),
            routes,
            allowed_origins: config.server.allowed_origins.clone(),
            max_request_body: config.limits.max_request_body,
            max_header_bytes: config.limits.max_header_bytes,
            max_headers: config.limits.max_headers,
            hsts: if tls_on {
                config
                    .tls
                    .hsts
                    .as_deref()
                    .and_then(|h| http::HeaderValue::from_str(h).ok())
            } else {
                None
            },
            proto: if tls_on { "https" } else { "http" },
            auth,
            idp_peer,
            idp_authority_value: http::HeaderValue::from_str(&idp_authority)
                .map_err(|_| BuildError::IdpAuthority)?,
            idp_authority,
            identity_names,
            strip: headers::StripRules::new(&strip_extra),
            allowed_clients: config.server.allowed_client_cidrs.clone(),
            draining: Arc::default(),
            access_log: config.log.access_log,
            log_format: config.log.format,
            audit: config.log.audit.clone(),
            health,
            metrics,
            deadlines,
            series,
            tracing,
        })
    }

    /// The flag that puts the proxy into draining mode.
    pub fn draining(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.draining.clone()
    }

    fn hsts(&self) -> Option<&http::HeaderValue> {
        self.hsts.as_ref()
    }

    /// Step 1: header count and size.
    fn check_header_limits(&self, req: &RequestHeader) -> Option<Rejection> {
        let count = req.headers.len();
        let bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        (count > self.max_headers || bytes as u64 > self.max_header_bytes)
            .then_some(Rejection::HeadersTooLarge)
    }

    /// Step 2: built-in routes.
    async fn builtin(&self, req: &RequestHeader) -> Option<(&'static str, u16, Vec<u8>)> {
        match req.uri.path() {
            "/healthz" | "/readyz" => {
                let (code, body) = self.health.readiness_live().await;
                Some(("health", code, body))
            }
            "/livez" => Some(("health", 200, br#"{"status":"ok"}"#.to_vec())),
            _ => None,
        }
    }

    /// Step 3: route the request; the endpoint index and upstream path go into `ctx`.
    fn route(&self, req: &RequestHeader, ctx: &mut Ctx) -> Result<(), Rejection> {
        let raw = std::str::from_utf8(req.raw_path()).map_err(|_| Rejection::BadPath)?;
        let m = self
            .router
            .route(raw)
            .map_err(|_| Rejection::BadPath)?
            .ok_or(Rejection::NotFound)?;
        ctx.endpoint = Some(m.endpoint);
        if !self.routes[m.endpoint].ep.enabled {
            return Err(Rejection::EndpointDisabled);
        }
        ctx.upstream_path = Some(m.upstream_path_and_query);
        Ok(())
    }

    /// Step 4a: the client's address against the endpoint's allowlist.
    fn admit_client(&self, ctx: &Ctx, client: Option<std::net::IpAddr>) -> Result<(), Rejection> {
        let allowed = ctx
            .endpoint
            .is_none_or(|i| cidr::allowed(&self.routes[i].allowed_clients, client));
        if allowed {
            Ok(())
        } else {
            Err(Rejection::ClientAddressForbidden)
        }
    }

    /// Step 4: method, origin and declared body size.
    fn admit(&self, req: &RequestHeader) -> Result<(), Rejection> {
        use http::Method;
        // HEAD on an auth-protected endpoint gets its 401 challenge first (clients probe
        // with it); refused with 405 after authentication.
        let head_probe = req.method == Method::HEAD && self.auth.is_some();
        if !head_probe
            && !matches!(
                req.method,
                Method::GET | Method::POST | Method::DELETE | Method::OPTIONS
            )
        {
            return Err(Rejection::MethodNotAllowed);
        }
        if let Some(origin) = req.headers.get(http::header::ORIGIN) {
            if !self.allowed_origins.is_empty() {
                let ok = origin
                    .to_str()
                    .ok()
                    .and_then(crate::config::server::normalise_origin)
                    .is_some_and(|o| self.allowed_origins.contains(&o));
                if !ok {
                    return Err(Rejection::OriginForbidden);
                }
            }
        }
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_request_body) {
            return Err(Rejection::BodyTooLarge);
        }
        Ok(())
    }

    /// The metric series of the request's `endpoint` label.
    fn series(&self, ctx: &Ctx) -> &EndpointSeries {
        // `-` is the last route label.
        let none = ROUTE_LABELS.len() - 1;
        let i = match (ctx.endpoint, ctx.label) {
            (Some(i), _) => i,
            (None, label) => {
                let route = label.and_then(|l| ROUTE_LABELS.iter().position(|r| *r == l));
                self.routes.len() + route.unwrap_or(none)
            }
        };
        &self.series[i]
    }

    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        why: Rejection,
    ) -> pingora::Result<bool> {
        ctx.rejection = Some(why);
        ctx.status = why.status();
        self.metrics
            .rejections
            .with_label_values(&[why.reason()])
            .inc();
        respond::reject(session, why, self.hsts()).await?;
        Ok(true)
    }
}

impl Bridge {
    /// Rewrite a `/token` request for tsidp (requirements #13, #16): body and
    /// `Authorization` untouched, `Accept: application/json` ensured, and no forwarding
    /// headers (tsidp may trust X-Forwarded-For for identity).
    fn to_idp(
        &self,
        upstream: &mut RequestHeader,
        path: &str,
        connection: &[&[u8]],
    ) -> pingora::Result<()> {
        let query = upstream.uri.query().map(str::to_string);
        let target = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        upstream.set_raw_path(target.as_bytes())?;
        let fwd = Forwarding {
            client_ip: None,
            proto: self.proto,
            original_host: None,
        };
        headers::rewrite_request(
            upstream,
            &self.idp_authority_value,
            &fwd,
            UpstreamAuthorization::PassThrough,
            &self.strip,
            connection,
        )
        .map_err(|e| Error::explain(ErrorType::InternalError, e.to_string()))?;
        for name in ["x-forwarded-proto", "cookie"] {
            upstream.remove_header(name);
        }
        let accepts_json = upstream
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
        if !accepts_json {
            upstream.insert_header(http::header::ACCEPT, "application/json")?;
        }
        Ok(())
    }
}

/// The MCP layer of one endpoint: its policy, its pins (read from `tools.pinned` now, so
/// a missing or edited pin file stops start-up) and its limits.
fn endpoint_tools(
    ep: &Endpoint,
    index: usize,
    auth: Option<&AuthRuntime>,
) -> Result<crate::mcp::EndpointTools, BuildError> {
    use crate::mcp::pins::{PinFile, ToolWatch};
    let watch = match &ep.guard.pinned {
        Some(path) => {
            let err = |source| BuildError::Pins { index, source };
            let file = PinFile::load(path).map_err(err)?;
            let pins = file.endpoint(path, &ep.name).map_err(err)?;
            log::info!(
                "endpoint {}: {} tool(s) pinned from {} (on_change: {:?})",
                ep.name,
                pins.tools.len(),
                path.display(),
                ep.guard.on_change
            );
            ToolWatch::new(Some(pins), ep.guard.on_change)
        }
        None => ToolWatch::new(None, ep.guard.on_change),
    };
    let pinned_names = watch.pinned_names();
    let claims_on = auth.is_some_and(|a| a.cfg.tool_grants_claim.is_some());
    let tools = crate::mcp::EndpointTools::new(
        ep.tools.clone(),
        watch,
        crate::mcp::limits::Limiter::new(ep.guard.limits.clone()),
        claims_on,
    );
    // Pinned tools are metric labels from the start (a removed one is never listed again).
    tools.labels.learn(&pinned_names);
    Ok(tools)
}

/// Build the pooled peer of one endpoint: its own pool (group key), SNI and `Host` from the
/// target URL, and the tailnet connector as its L4 dialer. With a `watch`, the requests
/// through it arm first-byte and idle deadlines and liveness checks (`deadline`), and the
/// watch learns from every dial and gets the dialer as its liveness dial; otherwise
/// pingora's read timeout is the idle timeout.
fn peer_for(
    ep: &Endpoint,
    index: usize,
    watch: Option<&Arc<deadline::Watch>>,
    connector: Arc<dyn Connector>,
    metrics: Arc<Metrics>,
) -> HttpPeer {
    // The connector resolves the host itself; pingora only needs a placeholder that can
    // never be dialed by accident.
    let placeholder = SocketAddr::from(([0, 0, 0, 0], ep.port));
    let mut peer = HttpPeer::new(placeholder, ep.tls, ep.host.clone());
    peer.group_key = index as u64 + 1;
    peer.options.verify_cert = ep.tls_verify;
    peer.options.verify_hostname = ep.tls_verify;
    peer.options.idle_timeout = Some(POOL_IDLE_TIMEOUT);
    // Pingora strips hop-by-hop headers; Connection-nominated names are removed by the
    // header rewrite instead, because Pingora refuses (500) a request whose Connection header
    // names a protected header such as X-Forwarded-For, and a client must never be able to
    // cause a 5xx. MCP has no protocol upgrades.
    peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy {
        strip_hop_by_hop: true,
        strip_connection_nominated: false,
        reject_malformed_connection_nominations: false,
        h1_upgrade: H1UpgradePolicy::Deny,
    };
    // Endpoints: the first-byte wait and the idle gap between reads are the deadlines'
    // job (`deadline`), armed per request. The IdP peer (`/token`) has no such deadline
    // and keeps pingora's read timeout.
    if watch.is_none() {
        peer.options.read_timeout = Some(ep.timeouts.idle);
    }
    let dialer = Arc::new(EndpointDialer {
        endpoint: Arc::from(ep.name.as_str()),
        host: ep.host.clone(),
        port: ep.port,
        connect_timeout: ep.timeouts.connect,
        connector,
        metrics,
        observer: watch.map(|w| w.clone() as Arc<dyn DialObserver>),
    });
    if let Some(w) = watch {
        // Weak: the peer (and so the pool's connector) owns the dialer, not the watch.
        let dialer = Arc::downgrade(&dialer);
        w.set_probe(Box::new(move || {
            let dialer = dialer.upgrade();
            Box::pin(async move {
                match dialer {
                    Some(d) => d.probe().await,
                    None => PeerState::Unknown,
                }
            })
        }));
    }
    peer.options.custom_l4 = Some(dialer);
    peer
}

/// The configured identity header names (`auth.identity_headers`), as pingora takes them
/// without a copy.
#[derive(Debug, Default)]
struct IdentityNames {
    subject: Option<Bytes>,
    username: Option<Bytes>,
    client_id: Option<Bytes>,
}

impl IdentityNames {
    fn new(auth: Option<&AuthRuntime>) -> Self {
        let Some(a) = auth else {
            return IdentityNames::default();
        };
        let h = &a.cfg.identity_headers;
        let name = |n: &Option<String>| n.as_ref().map(|n| Bytes::from(n.clone().into_bytes()));
        IdentityNames {
            subject: name(&h.subject),
            username: name(&h.username),
            client_id: name(&h.client_id),
        }
    }
}

/// The client's address (the TCP peer), when it has one.
fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Map a proxy error to the refusal it stands for.
fn classify(e: &Error) -> Option<Rejection> {
    if let ErrorType::HTTPStatus(413) = e.etype() {
        return Some(Rejection::BodyTooLarge);
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.cause.as_deref().map(|c| c as _);
    while let Some(c) = cause {
        if let Some(pe) = c.downcast_ref::<Error>() {
            if let Some(r) = classify(pe) {
                return Some(r);
            }
        }
        cause = c.source();
    }
    match e.etype() {
        ErrorType::ConnectTimedout => Some(Rejection::UpstreamTimeout),
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::ConnectProxyFailure
        | ErrorType::TLSHandshakeFailure => Some(Rejection::UpstreamUnreachable),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Some(Rejection::UpstreamTimeout),
        _ if *e.esource() == pingora::ErrorSource::Upstream => Some(Rejection::UpstreamFailed),
        _ => None,
    }
}

#[async_trait]
impl ProxyHttp for Bridge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        self.metrics.active_requests.inc();
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        // HTTP/1.1 pipelining (RFC 9112 §9.3.2): requests sent back to back on one
        // connection are answered in order, one after the other (Pingora drops them otherwise).
        session.as_mut().set_pipelining_enabled(true);
        self.trace_start(session, ctx);
        if let Some(why) = self.check_header_limits(session.req_header()) {
            return self.refuse(session, ctx, why).await;
        }
        if let Some((name, code, body)) = self.builtin(session.req_header()).await {
            ctx.builtin = Some(name);
            ctx.status = code;
            let head = session.req_header().method == http::Method::GET
                || session.req_header().method == http::Method::HEAD;
            if !head {
                return self.refuse(session, ctx, Rejection::MethodNotAllowed).await;
            }
            respond::send(
                session,
                code,
                "application/json",
                &[],
                Bytes::from(body),
                self.hsts(),
            )
            .await?;
            return Ok(true);
        }
        if let Some(done) = self.well_known(session, ctx).await {
            return done;
        }
        // `/token` and `/register` are called by the clients' backends (Claude.ai's cloud), so
        // the server-wide address allowlist guards them too; discovery documents and
        // `/authorize` (a user's browser) stay open.
        let client = client_ip(session);
        let oauth_call = match session.req_header().uri.path() {
            "/token" => Some("_token"),
            "/register" => Some("_register"),
            _ => None,
        };
        if let Some(label) = oauth_call {
            if !cidr::allowed(&self.allowed_clients, client) {
                ctx.label = Some(label);
                return self
                    .refuse(session, ctx, Rejection::ClientAddressForbidden)
                    .await;
            }
        }
        if let Some(done) = self.facade(session, ctx).await {
            return done;
        }
        if ctx.idp_path.is_some() {
            // `/token`: proxied to tsidp by the upstream phases.
            return Ok(false);
        }
        let req = session.req_header();
        let admitted = self
            .route(req, ctx)
            .and_then(|()| self.admit_client(ctx, client))
            .and_then(|()| self.admit(req));
        if let Err(why) = admitted {
            return self.refuse(session, ctx, why).await;
        }
        if let Some(done) = self.authenticate(session, ctx).await {
            return done;
        }
        if session.req_header().method == http::Method::HEAD {
            return self.refuse(session, ctx, Rejection::MethodNotAllowed).await;
        }
        if let Some(done) = self.inspect(session, ctx).await {
            return done;
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(b) = body {
            ctx.bytes_in += b.len() as u64;
            if ctx.bytes_in > self.max_request_body {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body exceeds limits.max_request_body",
                ));
            }
        }
        self.trace_body(body, ctx);
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        self.trace_upstream(session, ctx);
        if ctx.idp_path.is_some() {
            return self
                .idp_peer
                .clone()
                .map(Box::new)
                .ok_or_else(|| Error::explain(ErrorType::InternalError, "no IdP peer"));
        }
        let i = ctx
            .endpoint
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no endpoint chosen"))?;
        let route = &self.routes[i];
        let mut peer = Box::new(route.peer.clone());
        // A new generation after the upstream was found gone: a fresh pool.
        peer.group_key |= route.watch.generation() << 32;
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let connection: Vec<&[u8]> = session
            .req_header()
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        if let Some(path) = ctx.idp_path.as_deref() {
            self.to_idp(upstream, path, &connection)?;
            return self.trace_inject(upstream, ctx);
        }
        let route = ctx
            .endpoint
            .map(|i| &self.routes[i])
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no endpoint chosen"))?;
        if let Some(p) = ctx.upstream_path.as_deref() {
            upstream.set_raw_path(p.as_bytes())?;
        }
        let fwd = Forwarding {
            client_ip: client_ip(session),
            proto: self.proto,
            original_host: session
                .req_header()
                .headers
                .get(http::header::HOST)
                .filter(|v| v.to_str().is_ok()),
        };
        let authorization = match (&route.bearer, self.auth.is_some()) {
            (Some(v), _) => UpstreamAuthorization::Bearer(v),
            (None, true) => UpstreamAuthorization::Strip,
            (None, false) => UpstreamAuthorization::PassThrough,
        };
        headers::rewrite_request(
            upstream,
            &route.authority,
            &fwd,
            authorization,
            &self.strip,
            &connection,
        )
        .map_err(|e| Error::explain(ErrorType::InternalError, e.to_string()))?;
        if let Some(p) = &ctx.principal {
            let n = &self.identity_names;
            for (name, value) in [
                (&n.subject, &p.headers.sub),
                (&n.username, &p.headers.username),
                (&n.client_id, &p.headers.client_id),
            ] {
                if let (Some(n), Some(v)) = (name, value) {
                    upstream.insert_header(n.clone(), v.clone())?;
                }
            }
        }
        self.mcp_upstream_request(upstream, ctx)?;
        self.trace_inject(upstream, ctx)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Never retry once a body may have been sent (a retried tools/call runs twice),
        // never retry /token (refresh tokens are single-use), and never retry a request
        // whose peer was found gone (its 502 is due now, not after another dial).
        if ctx.idp_path.is_some()
            || !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
            || ctx.deadline.as_ref().is_some_and(|w| w.peer_gone())
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if ctx.idp_path.is_some() {
            e.set_retry(false);
        }
        e
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.status = resp.status.as_u16();
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            session.set_keepalive(None);
        }
        let event_stream = headers::is_event_stream(resp);
        headers::secure_response(resp, self.hsts(), event_stream)
            .map_err(|e| Error::explain(ErrorType::InternalError, e.to_string()))?;
        if event_stream && !ctx.stream_open {
            ctx.stream_open = true;
            self.series(ctx).streams().inc();
        }
        self.mcp_response(session, resp, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<Duration>> {
        self.mcp_response_body(body, end_of_stream, ctx);
        if let Some(b) = body {
            ctx.bytes_out += b.len() as u64;
        }
        if let Some(w) = &mut ctx.deadline {
            if end_of_stream {
                w.disarm();
            } else {
                w.read();
            }
        }
        Ok(None)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        self.trace_connected(ctx, reused);
        if let Some(route) = ctx
            .endpoint
            .filter(|_| ctx.idp_path.is_none())
            .map(|i| &self.routes[i])
        {
            // The peer may have vanished (its connections look alive): while the head has
            // not come, the deadline's liveness checks watch for that.
            ctx.deadline = Some(self.deadlines.arm(
                fd,
                !reused,
                route.ep.timeouts.first_byte,
                Some(&route.watch),
            ));
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        self.trace_first_byte(ctx, resp.status.as_u16());
        if let Some(i) = ctx.endpoint.filter(|_| ctx.idp_path.is_none()) {
            if let Some(w) = &mut ctx.deadline {
                w.head_arrived(self.routes[i].ep.timeouts.idle);
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // The upstream connection may be closed already: stop its timer first.
        if let Some(w) = &mut ctx.deadline {
            w.disarm();
        }
        let deadline_passed = ctx.deadline.as_ref().is_some_and(|w| w.fired());
        let peer_gone = ctx.deadline.as_ref().is_some_and(|w| w.peer_gone());
        let downstream = *e.esource() == pingora::ErrorSource::Downstream;
        let client_gone = downstream
            && matches!(
                e.etype(),
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
            );
        // Every failure is answered by tailbridge's own responder: what the classification
        // does not name is the client's 400 when the client made the request unforwardable,
        // and ours (500) otherwise. A client that went away (ending its event stream) is
        // neither: it is counted as `client_closed` and gets no answer.
        let why = if client_gone && !peer_gone && !deadline_passed {
            Rejection::ClientClosed
        } else if peer_gone {
            Rejection::UpstreamUnreachable
        } else if deadline_passed {
            Rejection::UpstreamTimeout
        } else {
            classify(e).unwrap_or(if downstream {
                Rejection::BadRequest
            } else {
                Rejection::Internal
            })
        };
        // The upstream is gone (or not answering): its pooled connections are not reused.
        if matches!(
            why,
            Rejection::UpstreamUnreachable | Rejection::UpstreamTimeout
        ) {
            if let Some(i) = ctx.endpoint.filter(|_| ctx.idp_path.is_none()) {
                self.routes[i].watch.forget_pool();
            }
        }
        let code = if client_gone { 0 } else { why.status() };
        ctx.rejection = Some(why);
        self.metrics
            .rejections
            .with_label_values(&[why.reason()])
            .inc();
        if code > 0 && session.response_written().is_none() {
            ctx.status = code;
            if let Err(err) = respond::reject(session, why, self.hsts()).await {
                log::debug!("cannot send error response: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        // A client closing its connection (e.g. ending an event stream) is not an error.
        *e.esource() == pingora::ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.deadline = None;
        self.metrics.active_requests.dec();
        let series = self.series(ctx);
        let endpoint = series.label();
        if ctx.stream_open {
            series.streams().dec();
        }
        let req = session.req_header();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.status);
        let elapsed = ctx.started.elapsed();
        let client_gone = e.is_some_and(|e| *e.esource() == pingora::ErrorSource::Downstream);
        self.mcp_account(session, ctx, status, client_gone);
        if ctx.builtin.is_none() {
            series.request(&req.method, status).inc();
            series.seconds(&req.method).observe(elapsed.as_secs_f64());
            if ctx.endpoint.is_some() {
                series.bytes_in().inc_by(ctx.bytes_in);
                series.bytes_out().inc_by(ctx.bytes_out);
            }
        }
        if ctx.idp_path.is_some() {
            self.metrics
                .token_endpoint
                .with_label_values(&[status_class(status)])
                .inc();
        }
        if e.is_some() && ctx.rejection.is_none() {
            log::debug!(
                "request ended with error: {}",
                e.map(|e| e.to_string()).unwrap_or_default()
            );
        }
        let reason = ctx
            .rejection
            .map(Rejection::reason)
            .or(ctx.auth_error.map(|e| e.reason()))
            .or(ctx.mcp_refusal.map(mcp::McpRefusal::reason));
        self.trace_finish(session, ctx, status, reason);
        let client_text = || {
            client_ip(session)
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "-".into())
        };
        if let Some(reason) = reason {
            self.health.refusals.push(crate::observe::health::Refusal {
                at: std::time::SystemTime::now(),
                endpoint: endpoint.to_string(),
                status,
                reason,
                client: client_text(),
            });
        }
        if self.access_log {
            let upstream = match (ctx.endpoint, &ctx.idp_path) {
                (_, Some(_)) => self.idp_authority.as_str(),
                (Some(i), None)
                    if ctx.rejection.is_none()
                        && ctx.auth_error.is_none()
                        && ctx.mcp_refusal.is_none() =>
                {
                    self.routes[i].ep.authority.as_str()
                }
                _ => "-",
            };
            AccessRecord {
                client: crate::observe::access_log::Client(client_ip(session)),
                method: req.method.as_str(),
                path: req.uri.path(),
                endpoint,
                status,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                bytes_in: ctx.bytes_in,
                bytes_out: ctx.bytes_out,
                upstream,
                reason,
                sub: ctx.principal.as_ref().and_then(|p| p.sub.as_deref()),
                client_id: ctx.principal.as_ref().and_then(|p| p.client_id.as_deref()),
            }
            .emit(self.log_format);
        }
    }
}
