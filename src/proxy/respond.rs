//! Responses tailbridge writes itself: refusals with a small JSON body, and built-in routes.

use super::headers::secure_response;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Why tailbridge refused or failed a request. The status code and the metric/log reason
/// both come from one exhaustive match, so they cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    BadRequest,
    BadPath,
    NotFound,
    EndpointDisabled,
    MethodNotAllowed,
    OriginForbidden,
    ClientAddressForbidden,
    BodyTooLarge,
    BodyNotInspectable,
    EncodingNotInspectable,
    HeadersTooLarge,
    UpstreamUnreachable,
    UpstreamTimeout,
    UpstreamFailed,
    /// The client closed its connection (e.g. ended an event stream); nothing is sent.
    ClientClosed,
    Internal,
}

impl Rejection {
    /// Every variant, for pre-creating metric series.
    pub const ALL: [Rejection; 16] = [
        Rejection::BadRequest,
        Rejection::BadPath,
        Rejection::NotFound,
        Rejection::EndpointDisabled,
        Rejection::MethodNotAllowed,
        Rejection::OriginForbidden,
        Rejection::ClientAddressForbidden,
        Rejection::BodyTooLarge,
        Rejection::BodyNotInspectable,
        Rejection::EncodingNotInspectable,
        Rejection::HeadersTooLarge,
        Rejection::UpstreamUnreachable,
        Rejection::UpstreamTimeout,
        Rejection::UpstreamFailed,
        Rejection::ClientClosed,
        Rejection::Internal,
    ];

    pub fn status(self) -> u16 {
        match self {
            Rejection::BadRequest | Rejection::BadPath => 400,
            Rejection::NotFound | Rejection::EndpointDisabled => 404,
            Rejection::MethodNotAllowed => 405,
            Rejection::OriginForbidden | Rejection::ClientAddressForbidden => 403,
            Rejection::BodyTooLarge | Rejection::BodyNotInspectable => 413,
            Rejection::EncodingNotInspectable => 415,
            Rejection::HeadersTooLarge => 431,
            Rejection::UpstreamUnreachable | Rejection::UpstreamFailed => 502,
            Rejection::UpstreamTimeout => 504,
            // Never sent (the client is gone); 499 as nginx logs it.
            Rejection::ClientClosed => 499,
            Rejection::Internal => 500,
        }
    }

    /// Bounded label for metrics and the access log; also the JSON `error` code.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::BadRequest => "bad_request",
            Rejection::BadPath => "bad_path",
            Rejection::NotFound => "not_found",
            Rejection::EndpointDisabled => "endpoint_disabled",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::OriginForbidden => "origin_forbidden",
            Rejection::ClientAddressForbidden => "client_address_forbidden",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::BodyNotInspectable => "body_not_inspectable",
            Rejection::EncodingNotInspectable => "encoding_not_inspectable",
            Rejection::HeadersTooLarge => "headers_too_large",
            Rejection::UpstreamUnreachable => "upstream_unreachable",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::UpstreamFailed => "upstream_failed",
            Rejection::ClientClosed => "client_closed",
            Rejection::Internal => "internal_error",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Rejection::BadRequest => "the request cannot be forwarded as sent",
            Rejection::BadPath => "the request path cannot be normalised",
            Rejection::NotFound => "no endpoint serves this path",
            Rejection::EndpointDisabled => "no endpoint serves this path",
            Rejection::MethodNotAllowed => "method not allowed on an MCP endpoint",
            Rejection::OriginForbidden => "origin not allowed",
            Rejection::ClientAddressForbidden => "this client address may not use this bridge",
            Rejection::BodyTooLarge => "request body too large",
            Rejection::BodyNotInspectable => {
                "this endpoint's tool policy inspects request bodies of up to 64 KiB; this one is larger"
            }
            Rejection::EncodingNotInspectable => {
                "this endpoint's tool policy cannot inspect content-encoded request bodies; send them uncompressed"
            }
            Rejection::HeadersTooLarge => "request headers too large",
            Rejection::UpstreamUnreachable => "the upstream MCP server cannot be reached",
            Rejection::UpstreamTimeout => "the upstream MCP server did not answer in time",
            Rejection::UpstreamFailed => "the upstream MCP server connection failed",
            Rejection::ClientClosed => "the client closed the connection",
            Rejection::Internal => "tailbridge failed to handle the request",
        }
    }

    /// The JSON body sent with this refusal.
    pub fn body(self) -> Bytes {
        let v = serde_json::json!({"error": self.reason(), "message": self.message()});
        Bytes::from(v.to_string())
    }
}

/// Methods an MCP endpoint accepts (streamable HTTP: POST, GET, DELETE; OPTIONS passes on).
pub const ALLOWED_METHODS: &str = "GET, POST, DELETE, OPTIONS";

/// Write a complete response with `body` and the security headers.
pub async fn send(
    session: &mut Session,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: Bytes,
    hsts: Option<&http::HeaderValue>,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    for (k, v) in extra {
        resp.insert_header(k.to_string(), *v)?;
    }
    let stream = super::headers::is_event_stream(&resp);
    secure_response(&mut resp, hsts, stream)
        .map_err(|e| pingora::Error::explain(pingora::ErrorType::InternalError, e.to_string()))?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only || body.is_empty())
        .await?;
    if !head_only && !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Write a refusal: its status, `Allow` for 405, and the JSON body.
pub async fn reject(
    session: &mut Session,
    why: Rejection,
    hsts: Option<&http::HeaderValue>,
) -> pingora::Result<()> {
    let extra: &[(&str, &str)] = match why {
        Rejection::MethodNotAllowed => &[("allow", ALLOWED_METHODS)],
        _ => &[],
    };
    session.set_keepalive(None);
    send(
        session,
        why.status(),
        "application/json",
        extra,
        why.body(),
        hsts,
    )
    .await
}
