//! Where the proxy phases meet the MCP layer ([`crate::mcp`]). Each function here is one
//! phase's call; the decisions are the layer's.
//!
//! - `request_filter` ([`Bridge::inspect`]): a POST body is read before any byte goes
//!   upstream (bounded; Pingora replays it to the upstream unchanged), read as JSON-RPC,
//!   checked against the 2026-07-28 mirrored headers and the tool policy, and either
//!   forwarded or answered here.
//! - `upstream_request_filter` ([`Bridge::mcp_upstream_request`]): while a policy is in
//!   force, ask for uncompressed responses (a `tools/list` result must be readable).
//! - `response_filter` / `response_body_filter`: the response head and body pass through
//!   the exchange, which records outcomes and rewrites only a `tools/list` result.
//! - `logging` ([`Bridge::mcp_account`]): metrics and audit lines.
//!
//! With tracing on, a forwarded POST also goes to `observe::tracing` once judged (batch
//! spans, and trace context in `params._meta`).

use super::ctx::Ctx;
use super::respond::{self, Rejection};
use super::Bridge;
use crate::mcp::audit::{self, AuditRecord};
use crate::mcp::exchange::{Exchange, Outcome};
use crate::mcp::jsonrpc;
use crate::mcp::policy::Scope;
use crate::mcp::{self as layer, Judgement};
use bytes::Bytes;
use http::header::{HeaderName, ACCEPT, CONTENT_ENCODING, CONTENT_LENGTH};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::time::{Duration, Instant, SystemTime};

/// The largest request body Pingora can replay to the upstream after the bridge read it
/// (its retry buffer). Larger bodies stream through uninspected, or are refused while a
/// policy is in force.
pub const REPLAY_LIMIT: u64 = 64 << 10;

/// Why the layer answered a POST itself (the access log's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpRefusal {
    ToolDenied,
    HeaderMismatch,
    Unreadable,
    Unpinned,
    RateLimited,
}

impl McpRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            McpRefusal::ToolDenied => "tool_denied",
            McpRefusal::HeaderMismatch => "header_mismatch",
            McpRefusal::Unreadable => "unreadable_body",
            McpRefusal::Unpinned => "tool_unpinned",
            McpRefusal::RateLimited => "tool_rate_limited",
        }
    }
}

/// The MCP request headers the layer reads, named once.
pub(super) const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
pub(super) const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

fn header<'a>(session: &'a Session, name: &HeaderName) -> Option<&'a [u8]> {
    session.req_header().headers.get(name).map(|v| v.as_bytes())
}

fn header_str<'a>(session: &'a Session, name: &HeaderName) -> Option<&'a str> {
    header(session, name).and_then(|v| std::str::from_utf8(v).ok())
}

/// The caller as the tool policy sees it (nobody in particular without auth).
fn caller(
    principal: &Option<std::sync::Arc<crate::auth::Principal>>,
) -> crate::mcp::policy::Caller<'_> {
    principal.as_deref().map(|p| p.caller()).unwrap_or_default()
}

/// A request body as it is read: the first chunk kept as it came (most bodies are one),
/// copied together only when a second one follows.
#[derive(Default)]
struct Body {
    first: Bytes,
    joined: Option<Vec<u8>>,
}

impl Body {
    fn len(&self) -> usize {
        self.joined.as_ref().map_or(self.first.len(), Vec::len)
    }

    fn push(&mut self, chunk: Bytes) {
        match &mut self.joined {
            Some(all) => all.extend_from_slice(&chunk),
            None if self.first.is_empty() => self.first = chunk,
            None => {
                let mut all = Vec::with_capacity(self.first.len() + chunk.len());
                all.extend_from_slice(&self.first);
                all.extend_from_slice(&chunk);
                self.joined = Some(all);
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        self.joined.as_deref().unwrap_or(&self.first)
    }
}

impl Bridge {
    /// The endpoint `i` as the tool policy names it.
    fn scope(&self, i: usize) -> Scope<'_> {
        let ep = &self.routes[i].ep;
        Scope {
            name: &ep.name,
            path: &ep.path,
        }
    }

    /// Request step 6: read and judge a POST to an MCP endpoint. `None`: forward it.
    pub(super) async fn inspect(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Option<pingora::Result<bool>> {
        if session.req_header().method != http::Method::POST {
            return None;
        }
        let i = ctx.endpoint?;
        let tools = &self.routes[i].tools;
        let enforce = tools.enforcing();
        let declared =
            header_str(session, &CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
        let encoded = header_str(session, &CONTENT_ENCODING)
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
        let limit = REPLAY_LIMIT.min(self.max_request_body);
        let readable = match declared {
            Some(n) => n <= limit,
            // chunked: readable only while a policy asks for it (it is refused past the limit)
            None => enforce,
        };
        if encoded || !readable {
            if enforce {
                let why = if encoded {
                    Rejection::EncodingNotInspectable
                } else {
                    Rejection::BodyNotInspectable
                };
                return Some(self.refuse(session, ctx, why).await);
            }
            ctx.mcp = Some(Exchange::unparsed(ctx.started));
            return None;
        }
        session.enable_retry_buffering();
        let mut body = Body::default();
        loop {
            match session.read_request_body().await {
                Ok(Some(b)) => {
                    let total = (body.len() + b.len()) as u64;
                    if total > limit {
                        let why = if total > self.max_request_body {
                            Rejection::BodyTooLarge
                        } else {
                            Rejection::BodyNotInspectable
                        };
                        return Some(self.refuse(session, ctx, why).await);
                    }
                    body.push(b);
                }
                Ok(None) => break,
                Err(e) => return Some(Err(e)),
            }
        }
        let body = body.bytes();
        ctx.body_read = body.len() as u64;
        let keep_arguments = self.audit.enabled && self.audit.arguments;
        let inbound = match jsonrpc::classify(body, keep_arguments) {
            Ok(inbound) => inbound,
            Err(why) => {
                let mut x = Exchange::unparsed(ctx.started);
                if enforce {
                    x.calls[0].outcome = Some(Outcome::Denied);
                    ctx.mcp = Some(x);
                    let answer = layer::unreadable_answer(&why);
                    return Some(
                        self.answer(session, ctx, 400, Some(&answer), McpRefusal::Unreadable)
                            .await,
                    );
                }
                ctx.mcp = Some(x);
                return None;
            }
        };
        if layer::mirrors_headers(header_str(session, &MCP_PROTOCOL_VERSION)) {
            if let Err(why) = layer::check_mirrored(
                &inbound,
                header(session, &MCP_METHOD),
                header(session, &MCP_NAME),
            ) {
                let answer = layer::mismatch_answer(&inbound, &why);
                let mut x = Exchange::new(inbound, ctx.started);
                x.calls
                    .iter_mut()
                    .for_each(|c| c.outcome = Some(Outcome::Error));
                ctx.mcp = Some(x);
                return Some(
                    self.answer(session, ctx, 400, Some(&answer), McpRefusal::HeaderMismatch)
                        .await,
                );
            }
        }
        let judgement = if tools.in_force {
            layer::judge(
                &inbound,
                &tools.policy,
                self.scope(i),
                &caller(&ctx.principal),
            )
        } else {
            Judgement::Forward
        };
        if matches!(judgement, Judgement::Forward)
            && (tools.watch.hides() || !tools.limiter.is_empty())
        {
            let who =
                crate::mcp::limits::identity(&caller(&ctx.principal), super::client_ip(session));
            if let Some((answer, outcome)) = layer::guard(
                &inbound,
                tools,
                &caller(&ctx.principal),
                &who,
                Instant::now(),
            ) {
                let mut x = Exchange::new(inbound, ctx.started);
                x.calls.iter_mut().for_each(|c| c.outcome = Some(outcome));
                ctx.mcp = Some(x);
                let why = match outcome {
                    Outcome::Unpinned => McpRefusal::Unpinned,
                    _ => McpRefusal::RateLimited,
                };
                let status = if answer.is_some() { 200 } else { 202 };
                return Some(
                    self.answer(session, ctx, status, answer.as_ref(), why)
                        .await,
                );
            }
        }
        if judgement == Judgement::Forward {
            if let (Some(tracing), Some(t)) = (&self.tracing, ctx.trace.as_deref_mut()) {
                tracing.forward(t, body, &inbound, keep_arguments);
            }
        }
        let mut x = Exchange::new(inbound, ctx.started);
        match judgement {
            Judgement::Forward => {
                ctx.mcp = Some(x);
                None
            }
            Judgement::Refuse { answer, .. } => {
                // Nothing of a refused POST reaches the upstream (a batch is refused whole).
                x.calls
                    .iter_mut()
                    .for_each(|c| c.outcome = Some(Outcome::Denied));
                ctx.mcp = Some(x);
                // Only notifications refused: nothing to answer but 202.
                let status = if answer.is_some() { 200 } else { 202 };
                Some(
                    self.answer(
                        session,
                        ctx,
                        status,
                        answer.as_ref(),
                        McpRefusal::ToolDenied,
                    )
                    .await,
                )
            }
        }
    }

    /// Write the layer's own answer: a JSON-RPC payload in the form the client accepts, or
    /// an empty body (`None`, for a 202).
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        answer: Option<&serde_json::Value>,
        why: McpRefusal,
    ) -> pingora::Result<bool> {
        let (content_type, body) = match answer {
            Some(a) => layer::render_answer(a, layer::wants_sse(header_str(session, &ACCEPT))),
            None => ("application/json", Vec::new()),
        };
        ctx.status = status;
        ctx.mcp_refusal = Some(why);
        ctx.bytes_in = ctx.body_read;
        ctx.bytes_out = body.len() as u64;
        if let Some(x) = ctx.mcp.as_mut() {
            let now = Instant::now();
            for c in &mut x.calls {
                c.answered_at = Some(now);
                c.bytes_out = ctx.bytes_out;
            }
        }
        respond::send(
            session,
            status,
            content_type,
            &[],
            Bytes::from(body),
            self.hsts(),
        )
        .await?;
        Ok(true)
    }

    /// While a policy is in force, ask the upstream for uncompressed responses.
    pub(super) fn mcp_upstream_request(
        &self,
        upstream: &mut pingora::http::RequestHeader,
        ctx: &Ctx,
    ) -> pingora::Result<()> {
        let enforce = ctx
            .endpoint
            .is_some_and(|i| self.routes[i].tools.filters_lists());
        if enforce && ctx.mcp.is_some() {
            upstream.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
        }
        Ok(())
    }

    /// The response head: choose how the exchange reads the body, and drop
    /// `Content-Length` when a `tools/list` result may be rewritten.
    pub(super) fn mcp_response(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let (Some(x), Some(i)) = (ctx.mcp.as_mut(), ctx.endpoint) else {
            return Ok(());
        };
        let tools = &self.routes[i].tools;
        let filter = tools.filters_lists() && x.lists_tools();
        let private = tools.per_identity;
        let encoded = resp
            .headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
        let content_type = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let rewrite = if filter && encoded {
            // A compressed list cannot be filtered: it is replaced by an error (fail closed).
            x.on_response_head(Some("application/json"), true, private);
            x.force_filter_failure();
            resp.remove_header(&http::header::CONTENT_ENCODING);
            resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
            true
        } else {
            x.on_response_head(content_type, filter, private)
        };
        if rewrite {
            resp.remove_header(&http::header::CONTENT_LENGTH);
            if !session.as_ref().is_http2() {
                resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            }
        }
        Ok(())
    }

    /// A response body chunk through the exchange.
    pub(super) fn mcp_response_body(&self, body: &mut Option<Bytes>, end: bool, ctx: &mut Ctx) {
        let (Some(x), Some(i)) = (ctx.mcp.as_mut(), ctx.endpoint) else {
            return;
        };
        let route = &self.routes[i];
        let (scope, caller) = (self.scope(i), caller(&ctx.principal));
        let policy = &route.tools.policy;
        let watch = &route.tools.watch;
        let keep = |t: &str, def: &serde_json::Value| {
            policy.allows(scope, t, &caller) && !watch.hidden_definition(def)
        };
        if let Some(new) = x.on_body(body.as_ref(), end, Instant::now(), &keep) {
            *body = Some(new);
        }
        if !x.listed.is_empty() {
            route.tools.labels.learn(&std::mem::take(&mut x.listed));
        }
        for (result, paged) in std::mem::take(&mut x.list_pages) {
            self.check_tool_list(i, &result, paged);
        }
    }

    /// Compare one `tools/list` page with the endpoint's pins (after its bytes went on, so
    /// no event waits for it but the one that carried it); count and log what is new.
    fn check_tool_list(&self, i: usize, result: &[u8], paged: bool) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(result) else {
            return;
        };
        let route = &self.routes[i];
        let (tools, more) = crate::mcp::pins::page(&v);
        let findings = route.tools.watch.check(tools, !paged && !more);
        for f in findings {
            let label = route.tools.labels.label(Some(&f.tool));
            self.metrics
                .tool_changes
                .with_label_values(&[route.ep.name.as_str(), &label, f.change.as_str()])
                .inc();
            let reference = if route.tools.watch.is_pinned() {
                "its pin"
            } else {
                "the first definition seen"
            };
            let hidden =
                if route.tools.watch.hides() && f.change != crate::mcp::pins::Change::Removed {
                    "; hidden, and calls to it are refused"
                } else {
                    ""
                };
            log::warn!(
                "endpoint {}: tool {:?} {} ({} differs from {reference}{hidden}){}",
                route.ep.name,
                f.tool,
                f.change.as_str(),
                f.pin.as_deref().unwrap_or("-"),
                if route.tools.watch.is_pinned() {
                    "; review it, then re-pin: tailbridge tools pin"
                } else {
                    ""
                }
            );
        }
    }

    /// Logging: one metric sample per message, one audit line per `tools/call`.
    pub(super) fn mcp_account(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        status: u16,
        client_gone: bool,
    ) {
        // The exchange stays in `ctx`: tracing reads its settled outcomes after.
        let (Some(x), Some(i)) = (ctx.mcp.as_mut(), ctx.endpoint) else {
            return;
        };
        let now = Instant::now();
        x.finish(status, client_gone, now);
        let route = &self.routes[i];
        let endpoint = route.ep.name.as_str();
        let audit_on =
            self.audit.enabled && log::log_enabled!(target: audit::TARGET, log::Level::Info);
        let p = ctx.principal.as_deref();
        for c in &x.calls {
            let outcome = c.outcome.unwrap_or(Outcome::Unanswered);
            let is_call = c.method == "tools/call";
            // `tool` is set for tools/call only (no allocation for the other methods).
            let label = is_call.then(|| route.tools.labels.label(c.tool.as_deref()));
            let tool = label.as_deref().unwrap_or("");
            self.metrics
                .mcp_requests
                .with_label_values(&[endpoint, c.method, tool, outcome.as_str()])
                .inc();
            let took = c
                .answered_at
                .unwrap_or(now)
                .saturating_duration_since(x.started);
            if c.id.is_some() {
                self.metrics
                    .mcp_request_seconds
                    .with_label_values(&[endpoint, c.method, tool])
                    .observe(took.as_secs_f64());
            }
            if is_call && audit_on {
                let started = SystemTime::now()
                    .checked_sub(now.saturating_duration_since(x.started))
                    .unwrap_or_else(SystemTime::now);
                AuditRecord {
                    ts_ms: started
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or(Duration::ZERO)
                        .as_millis(),
                    event: "tools/call",
                    endpoint,
                    sub: p.and_then(|p| p.sub.as_deref()),
                    username: p.and_then(|p| p.username.as_deref()),
                    client_id: p.and_then(|p| p.client_id.as_deref()),
                    client_ip: super::client_ip(session),
                    session: header_str(session, &MCP_SESSION_ID).map(audit::session_hash),
                    jsonrpc_id: c.id.as_ref(),
                    tool: c.tool.as_deref().unwrap_or_default(),
                    outcome: outcome.as_str(),
                    duration_ms: (took.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
                    bytes_in: ctx.bytes_in.max(ctx.body_read),
                    bytes_out: c.bytes_out,
                    arguments: c
                        .arguments
                        .as_deref()
                        .map(|a| audit::redact_arguments(a, &self.audit.redact)),
                }
                .emit();
            }
        }
    }
}
