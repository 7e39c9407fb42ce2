//! Request and response header rewriting. Pure functions over pingora's header types, so
//! they are table-tested without a network.
//!
//! Toward the upstream (requirements #16, #22, #23): hop-by-hop headers (RFC 9110 §7.6.1) and
//! every header named in `Connection` are removed; `Origin`, `Forwarded`, `X-Real-IP` and any
//! client-supplied `X-Forwarded-*` are removed; `Host` becomes the target's authority and
//! `X-Forwarded-For/-Proto/-Host` are set fresh. MCP headers (`Mcp-Session-Id`,
//! `MCP-Protocol-Version`, `Last-Event-ID`, `Accept`, `Mcp-Method`, `Mcp-Name`) are untouched.

use pingora::http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the legacy ones proxies also drop).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers a client must never be able to set on the upstream request.
pub const CLIENT_FORWARDING: &[&str] = &[
    "origin",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
];

/// What the upstream is told about the original request.
#[derive(Debug, Clone)]
pub struct Forwarding<'a> {
    pub client_ip: Option<IpAddr>,
    /// `http` or `https`: how the client reached tailbridge.
    pub proto: &'static str,
    /// The `Host` the client sent.
    pub original_host: Option<&'a str>,
}

/// How `Authorization` is treated on the way upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAuthorization<'a> {
    /// Keep what the client sent (authless mode, no upstream token).
    PassThrough,
    /// Remove it (no token passthrough, MCP authorization spec).
    Strip,
    /// Replace it with `Bearer <token>`.
    Bearer(&'a str),
}

/// Why a header rewrite failed: a value that cannot go into a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid header value for {0}")]
pub struct HeaderError(pub &'static str);

/// Rewrite `req` in place for the upstream.
pub fn rewrite_request(
    req: &mut RequestHeader,
    upstream_authority: &str,
    fwd: &Forwarding<'_>,
    authorization: UpstreamAuthorization<'_>,
) -> Result<(), HeaderError> {
    // Headers listed in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    let named: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in named
        .iter()
        .map(String::as_str)
        .chain(HOP_BY_HOP.iter().copied())
    {
        req.remove_header(name);
    }
    for name in CLIENT_FORWARDING {
        req.remove_header(*name);
    }
    req.insert_header(http::header::HOST, upstream_authority)
        .map_err(|_| HeaderError("host"))?;
    if let Some(ip) = fwd.client_ip {
        req.insert_header("x-forwarded-for", ip.to_string())
            .map_err(|_| HeaderError("x-forwarded-for"))?;
    }
    req.insert_header("x-forwarded-proto", fwd.proto)
        .map_err(|_| HeaderError("x-forwarded-proto"))?;
    if let Some(host) = fwd.original_host {
        req.insert_header("x-forwarded-host", host)
            .map_err(|_| HeaderError("x-forwarded-host"))?;
    }
    match authorization {
        UpstreamAuthorization::PassThrough => {}
        UpstreamAuthorization::Strip => {
            req.remove_header(&http::header::AUTHORIZATION);
        }
        UpstreamAuthorization::Bearer(token) => {
            req.insert_header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                .map_err(|_| HeaderError("authorization"))?;
        }
    }
    Ok(())
}

/// True when the response is a server-sent event stream.
pub fn is_event_stream(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Apply the response headers the Caddy block used to add: no `Server`, `nosniff`, HSTS when
/// TLS is on. Event streams also get `X-Accel-Buffering: no` so that a buffering proxy in
/// front does not hold events back.
pub fn secure_response(resp: &mut ResponseHeader, hsts: Option<&str>) -> Result<(), HeaderError> {
    resp.remove_header(&http::header::SERVER);
    for name in ["connection", "keep-alive", "proxy-connection"] {
        resp.remove_header(name);
    }
    resp.insert_header("x-content-type-options", "nosniff")
        .map_err(|_| HeaderError("x-content-type-options"))?;
    if let Some(v) = hsts {
        resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, v)
            .map_err(|_| HeaderError("strict-transport-security"))?;
    }
    if is_event_stream(resp) {
        resp.insert_header("x-accel-buffering", "no")
            .map_err(|_| HeaderError("x-accel-buffering"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/mcp/a", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get<'a>(r: &'a RequestHeader, name: &str) -> Vec<&'a str> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn request_rewrite_table() {
        let mut r = req(&[
            ("Host", "mcp.example.com"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic x"),
            ("Origin", "https://claude.ai"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Host", "evil"),
            ("X-Forwarded-Proto", "gopher"),
            ("X-Real-IP", "6.6.6.6"),
            ("Authorization", "Bearer client-token"),
            ("Mcp-Session-Id", "s1"),
            ("MCP-Protocol-Version", "2025-11-25"),
            ("Last-Event-ID", "42"),
            ("Accept", "application/json, text/event-stream"),
            ("Mcp-Method", "tools/call"),
        ]);
        let fwd = Forwarding {
            client_ip: Some("203.0.113.9".parse().unwrap()),
            proto: "https",
            original_host: Some("mcp.example.com"),
        };
        rewrite_request(
            &mut r,
            "up.tail.ts.net:8443",
            &fwd,
            UpstreamAuthorization::Strip,
        )
        .unwrap();
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-authorization",
            "origin",
            "forwarded",
            "x-real-ip",
            "authorization",
        ] {
            assert!(get(&r, gone).is_empty(), "{gone} should be stripped");
        }
        assert_eq!(get(&r, "host"), ["up.tail.ts.net:8443"]);
        assert_eq!(get(&r, "x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(get(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&r, "x-forwarded-host"), ["mcp.example.com"]);
        assert_eq!(get(&r, "mcp-session-id"), ["s1"]);
        assert_eq!(get(&r, "mcp-protocol-version"), ["2025-11-25"]);
        assert_eq!(get(&r, "last-event-id"), ["42"]);
        assert_eq!(get(&r, "accept"), ["application/json, text/event-stream"]);
        assert_eq!(get(&r, "mcp-method"), ["tools/call"]);
    }

    #[test]
    fn authorization_modes() {
        let fwd = Forwarding {
            client_ip: None,
            proto: "http",
            original_host: None,
        };
        let mut r = req(&[("Authorization", "Bearer c")]);
        rewrite_request(&mut r, "h", &fwd, UpstreamAuthorization::PassThrough).unwrap();
        assert_eq!(get(&r, "authorization"), ["Bearer c"]);
        rewrite_request(&mut r, "h", &fwd, UpstreamAuthorization::Bearer("up")).unwrap();
        assert_eq!(get(&r, "authorization"), ["Bearer up"]);
        assert!(get(&r, "x-forwarded-for").is_empty());
        assert!(rewrite_request(&mut r, "h", &fwd, UpstreamAuthorization::Bearer("a\nb")).is_err());
    }

    #[test]
    fn response_headers() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Server", "uvicorn").unwrap();
        resp.insert_header("Content-Type", "text/event-stream; charset=utf-8")
            .unwrap();
        secure_response(&mut resp, Some("max-age=1")).unwrap();
        assert!(resp.headers.get("server").is_none());
        assert_eq!(resp.headers["x-content-type-options"], "nosniff");
        assert_eq!(resp.headers["strict-transport-security"], "max-age=1");
        assert_eq!(resp.headers["x-accel-buffering"], "no");

        let mut plain = ResponseHeader::build(200, None).unwrap();
        plain
            .insert_header("Content-Type", "application/json")
            .unwrap();
        secure_response(&mut plain, None).unwrap();
        assert!(plain.headers.get("strict-transport-security").is_none());
        assert!(plain.headers.get("x-accel-buffering").is_none());
        assert!(!is_event_stream(&plain));
    }
}
