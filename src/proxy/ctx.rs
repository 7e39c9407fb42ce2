//! Per-request state shared across the proxy phases.

use super::deadline::Armed;
use super::mcp::McpRefusal;
use super::respond::Rejection;
use crate::auth::{AuthError, Principal};
use crate::mcp::exchange::Exchange;
use std::time::Instant;

/// What the phases learn about one request.
#[derive(Debug)]
pub struct Ctx {
    pub started: Instant,
    /// Index of the matched endpoint.
    pub endpoint: Option<usize>,
    /// Path and query for the upstream request.
    pub upstream_path: Option<std::sync::Arc<str>>,
    /// Set when tailbridge refused or failed the request itself.
    pub rejection: Option<Rejection>,
    /// Set when the answer was a built-in route (health).
    pub builtin: Option<&'static str>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// True while this response is an open event stream counted in `active_streams`.
    pub stream_open: bool,
    /// The read deadline (first byte, then idle gap) of the current upstream attempt.
    pub deadline: Option<Armed>,
    /// Set for `/token`: the request goes to tsidp at this path.
    pub idp_path: Option<String>,
    /// The authenticated identity, when auth is on.
    pub principal: Option<std::sync::Arc<Principal>>,
    pub auth_error: Option<AuthError>,
    /// Metric/log label for requests answered by a built-in OAuth route.
    pub label: Option<&'static str>,
    /// The JSON-RPC exchange of a POST to an MCP endpoint.
    pub mcp: Option<Exchange>,
    /// Set when the MCP layer answered the POST itself.
    pub mcp_refusal: Option<McpRefusal>,
    /// Request body bytes the MCP layer read before forwarding.
    pub body_read: u64,
    /// The request's spans, when tracing is on (boxed: one pointer when off).
    pub trace: Option<Box<crate::observe::tracing::RequestTrace>>,
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx {
            started: Instant::now(),
            endpoint: None,
            upstream_path: None,
            rejection: None,
            builtin: None,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            stream_open: false,
            deadline: None,
            idp_path: None,
            principal: None,
            auth_error: None,
            label: None,
            mcp: None,
            mcp_refusal: None,
            body_read: 0,
            trace: None,
        }
    }
}
