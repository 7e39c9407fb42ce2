//! Where the proxy phases meet tracing ([`crate::observe::tracing`]). Each function here is
//! one phase's call and hands over what the phase knows; the spans are that module's.
//! With tracing off, `Bridge::tracing` and `Ctx::trace` are `None` and each call is one
//! branch.

use super::ctx::Ctx;
use super::mcp::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use super::respond::Rejection;
use super::Bridge;
use crate::observe::tracing::{route_of_label, Facts, Target};
use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::time::Instant;

/// The built-in routes (health probes), which are not traced.
pub(super) fn is_builtin(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/livez")
}

fn header(req: &RequestHeader, name: impl http::header::AsHeaderName) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

impl Bridge {
    /// `request_filter`, first: the request's SERVER span, continuing the client's trace.
    pub(super) fn trace_start(&self, session: &Session, ctx: &mut Ctx) {
        let Some(tracing) = &self.tracing else { return };
        let req = session.req_header();
        if !is_builtin(req.uri.path()) {
            ctx.trace = Some(tracing.start_request(&req.headers, &req.method));
        }
    }

    /// `upstream_peer`: a CLIENT span for this attempt.
    pub(super) fn trace_upstream(&self, session: &Session, ctx: &mut Ctx) {
        let (Some(tracing), Some(t)) = (&self.tracing, ctx.trace.as_deref_mut()) else {
            return;
        };
        let method = &session.req_header().method;
        let target = match (&ctx.idp_path, ctx.endpoint, &self.auth) {
            (Some(path), _, Some(auth)) => {
                let u = &auth.cfg.issuer;
                Target {
                    method,
                    scheme: if u.scheme() == "https" {
                        "https"
                    } else {
                        "http"
                    },
                    host: u.host_str().unwrap_or_default(),
                    port: u.port_or_known_default().unwrap_or(443),
                    path,
                    template: path,
                }
            }
            (None, Some(i), _) => {
                let ep = &self.routes[i].ep;
                Target {
                    method,
                    scheme: if ep.tls { "https" } else { "http" },
                    host: &ep.host,
                    port: ep.port,
                    path: ctx.upstream_path.as_deref().unwrap_or(ep.target.path()),
                    template: ep.target.path(),
                }
            }
            _ => return,
        };
        tracing.start_upstream(t, &target);
    }

    /// `connected_to_upstream`.
    pub(super) fn trace_connected(&self, ctx: &mut Ctx, reused: bool) {
        if let Some(t) = ctx.trace.as_deref_mut() {
            t.connected(reused);
        }
    }

    /// `upstream_request_filter`, last: the bridge's trace context on the request.
    pub(super) fn trace_inject(
        &self,
        upstream: &mut RequestHeader,
        ctx: &Ctx,
    ) -> pingora::Result<()> {
        match (&self.tracing, ctx.trace.as_deref()) {
            (Some(tracing), Some(t)) => t.inject(tracing, upstream),
            _ => Ok(()),
        }
    }

    /// `request_body_filter`: the body with trace context in `params._meta`, if any.
    pub(super) fn trace_body(&self, body: &mut Option<Bytes>, ctx: &Ctx) {
        if let Some(t) = ctx.trace.as_deref() {
            t.request_body(body);
        }
    }

    /// `upstream_response_filter`: the response head arrived.
    pub(super) fn trace_first_byte(&self, ctx: &mut Ctx, status: u16) {
        if let Some(t) = ctx.trace.as_deref_mut() {
            t.first_byte(status);
        }
    }

    /// `logging`: end the request's spans. `refusal` is the access log's reason.
    pub(super) fn trace_finish(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        status: u16,
        refusal: Option<&'static str>,
    ) {
        let (Some(tracing), Some(t)) = (&self.tracing, ctx.trace.take()) else {
            return;
        };
        // A client ending its event stream is how streams end, not an error; a call it
        // left unanswered is still marked (outcome `cancelled`).
        let refusal = refusal.filter(|r| *r != Rejection::ClientClosed.reason());
        let req = session.req_header();
        let path = req.uri.path();
        let endpoint = ctx.endpoint.map(|i| &self.routes[i].ep);
        let p = ctx.principal.as_deref();
        let facts = Facts {
            method: &req.method,
            path,
            scheme: self.proto,
            route: match endpoint {
                Some(ep) => Some(ep.path.as_str()),
                None => ctx.label.and_then(|l| route_of_label(l, path)),
            },
            endpoint: endpoint.map(|ep| ep.name.as_str()),
            http_version: req.version,
            client: session.client_addr().and_then(|a| a.as_inet()).copied(),
            user_agent: header(req, http::header::USER_AGENT),
            status,
            refusal,
            enduser: p.and_then(|p| p.sub.as_deref()),
            client_id: p.and_then(|p| p.client_id.as_deref()),
            mcp: ctx.mcp.as_ref(),
            protocol_version: endpoint.and(header(req, &MCP_PROTOCOL_VERSION)),
            session: endpoint.and(header(req, &MCP_SESSION_ID)),
            ended: Instant::now(),
        };
        tracing.finish(t, &facts);
    }
}
