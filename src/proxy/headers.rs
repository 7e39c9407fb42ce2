//! Request and response header rewriting. Pure functions over pingora's header types, so
//! they are table-tested without a network.
//!
//! Toward the upstream (requirements #16, #22, #23): hop-by-hop headers (RFC 9110 §7.6.1) and
//! every header named in `Connection` are removed; `Origin`, `Forwarded`, `X-Real-IP` and any
//! client-supplied `X-Forwarded-*` are removed; `Host` becomes the target's authority and
//! `X-Forwarded-For/-Proto/-Host` are set fresh. MCP headers (`Mcp-Session-Id`,
//! `MCP-Protocol-Version`, `Last-Event-ID`, `Accept`, `Mcp-Method`, `Mcp-Name`) are untouched.

use crate::observe::text::IpText;
use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the legacy ones proxies also drop): exactly
/// the list pingora's upstream request policy strips before `upstream_request_filter`
/// (`strip_hop_by_hop: true` on every peer), so the rewrite below leaves them to pingora.
/// An integration test sends each and checks that none reaches an upstream.
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
    "http2-settings",
];

/// Headers a client must never be able to set on the upstream request: forwarding headers
/// tailbridge sets itself, and the identity headers that MCP servers behind other proxies
/// commonly trust (oauth2-proxy's `X-Forwarded-User`/`-Email`/`-Groups`/
/// `-Preferred-Username` and `X-Auth-Request-*`, `Remote-User`, `X-Remote-User`, `X-User`,
/// `tailscale serve`'s `Tailscale-User-*`, and tailbridge's own `X-Tailbridge-*`).
pub const CLIENT_FORWARDING: &[&str] = &[
    "origin",
    "forwarded",
    "x-real-ip",
    "remote-user",
    "x-remote-user",
    "x-user",
    "tailscale-app-capabilities",
    "tailscale-headers-info",
];

/// Name prefixes of the same families: every client-sent header starting with one of these
/// is removed.
pub const CLIENT_FORWARDING_PREFIXES: &[&str] = &[
    "x-forwarded-",
    "x-auth-request-",
    "x-tailbridge-",
    "tailscale-user-",
];

/// [`CLIENT_FORWARDING`] and [`CLIENT_FORWARDING_PREFIXES`] as one match (compiled to
/// length and byte comparisons); a test keeps it equal to the lists.
fn builtin_family(name: &str) -> bool {
    matches!(
        name,
        "origin"
            | "forwarded"
            | "x-real-ip"
            | "remote-user"
            | "x-remote-user"
            | "x-user"
            | "tailscale-app-capabilities"
            | "tailscale-headers-info"
    ) || name.starts_with("x-forwarded-")
        || name.starts_with("x-auth-request-")
        || name.starts_with("x-tailbridge-")
        || name.starts_with("tailscale-user-")
}

/// Which client-sent header names never reach an upstream: the built-in families plus
/// `server.strip_request_headers` (names, or `prefix*` patterns). Built once at start.
#[derive(Debug, Clone, Default)]
pub struct StripRules {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl StripRules {
    /// The built-in families plus `extra` (case-insensitive; a trailing `*` makes a prefix).
    pub fn new(extra: &[String]) -> Self {
        let mut r = StripRules::default();
        for e in extra {
            let e = e.trim().to_ascii_lowercase();
            match e.strip_suffix('*') {
                Some(p) => r.prefixes.push(p.to_string()),
                None => r.exact.push(e),
            }
        }
        r
    }

    /// Whether a (lower-case) header name is stripped.
    pub fn matches(&self, name: &str) -> bool {
        builtin_family(name)
            || self.exact.iter().any(|e| e == name)
            || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}

/// What the upstream is told about the original request.
#[derive(Debug, Clone)]
pub struct Forwarding<'a> {
    pub client_ip: Option<IpAddr>,
    /// `http` or `https`: how the client reached tailbridge.
    pub proto: &'static str,
    /// The `Host` the client sent (visible ASCII only).
    pub original_host: Option<&'a http::HeaderValue>,
}

/// How `Authorization` is treated on the way upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAuthorization<'a> {
    /// Keep what the client sent (authless mode, no upstream token).
    PassThrough,
    /// Remove it (no token passthrough, MCP authorization spec).
    Strip,
    /// Replace it with this value (`Bearer <token>`, see [`bearer_value`]).
    Bearer(&'a http::HeaderValue),
}

/// The `Authorization` value for an upstream token, built once per endpoint.
pub fn bearer_value(token: &str) -> Result<http::HeaderValue, HeaderError> {
    let mut v = http::HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| HeaderError("authorization"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// An IP address as a header value, formatted on the stack.
fn ip_value(ip: IpAddr) -> Result<http::HeaderValue, HeaderError> {
    http::HeaderValue::from_bytes(IpText::new(ip).as_bytes())
        .map_err(|_| HeaderError("x-forwarded-for"))
}

/// Why a header rewrite failed: a value that cannot go into a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid header value for {0}")]
pub struct HeaderError(pub &'static str);

/// Whether `name` is nominated in the client's `Connection` header values. A nomination is
/// only ever a reason to remove a header, never to refuse the request: a client naming
/// `X-Forwarded-For` there loses its own copy, and tailbridge sets its own.
fn nominated(connection: &[&[u8]], name: &str) -> bool {
    connection.iter().any(|v| {
        v.split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// Rewrite `req` in place for the upstream (after pingora removed the hop-by-hop headers).
/// `connection` holds the values of the client's `Connection` headers (RFC 9110 §7.6.1:
/// the names it lists are hop-by-hop too). `upstream_authority` is the endpoint's `Host`,
/// built once.
pub fn rewrite_request(
    req: &mut RequestHeader,
    upstream_authority: &http::HeaderValue,
    fwd: &Forwarding<'_>,
    authorization: UpstreamAuthorization<'_>,
    strip: &StripRules,
    connection: &[&[u8]],
) -> Result<(), HeaderError> {
    // One pass over the names; a removal list only when something matches.
    let mut doomed: Vec<http::HeaderName> = Vec::new();
    for name in req.headers.keys() {
        let n = name.as_str();
        if strip.matches(n) || (!connection.is_empty() && nominated(connection, n)) {
            doomed.push(name.clone());
        }
    }
    for name in &doomed {
        req.remove_header(name);
    }
    req.insert_header(http::header::HOST, upstream_authority.clone())
        .map_err(|_| HeaderError("host"))?;
    if let Some(ip) = fwd.client_ip {
        req.insert_header("x-forwarded-for", ip_value(ip)?)
            .map_err(|_| HeaderError("x-forwarded-for"))?;
    }
    req.insert_header(
        "x-forwarded-proto",
        http::HeaderValue::from_static(fwd.proto),
    )
    .map_err(|_| HeaderError("x-forwarded-proto"))?;
    if let Some(host) = fwd.original_host {
        req.insert_header("x-forwarded-host", host.clone())
            .map_err(|_| HeaderError("x-forwarded-host"))?;
    }
    match authorization {
        UpstreamAuthorization::PassThrough => {}
        UpstreamAuthorization::Strip => {
            req.remove_header(&http::header::AUTHORIZATION);
        }
        UpstreamAuthorization::Bearer(value) => {
            req.insert_header(http::header::AUTHORIZATION, value.clone())
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
/// TLS is on. Event streams (`event_stream`: [`is_event_stream`], which the caller needs
/// too) also get `X-Accel-Buffering: no` so that a buffering proxy in front does not hold
/// events back. `hsts` is the header value, built once.
pub fn secure_response(
    resp: &mut ResponseHeader,
    hsts: Option<&http::HeaderValue>,
    event_stream: bool,
) -> Result<(), HeaderError> {
    // One look at the names, and only touch what is there: most upstream answers carry
    // none of these. `Connection` is pingora's: it writes its own on every HTTP/1 response
    // (replacing the upstream's in place) and removes it for HTTP/2; removing it here
    // would only turn that replacement into an insert that grows the header map.
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    let dropped =
        |n: &HeaderName| *n == http::header::SERVER || *n == KEEP_ALIVE || *n == PROXY_CONNECTION;
    // (An empty list does not allocate.)
    let names: Vec<HeaderName> = resp
        .headers
        .keys()
        .filter(|n| dropped(n))
        .cloned()
        .collect();
    for name in &names {
        resp.remove_header(name);
    }
    resp.insert_header(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    )
    .map_err(|_| HeaderError("x-content-type-options"))?;
    if let Some(v) = hsts {
        resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, v.clone())
            .map_err(|_| HeaderError("strict-transport-security"))?;
    }
    if event_stream {
        resp.insert_header("x-accel-buffering", http::HeaderValue::from_static("no"))
            .map_err(|_| HeaderError("x-accel-buffering"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_address_as_a_header_value() {
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(ip_value(ip).unwrap(), "198.51.100.7");
    }

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
            original_host: Some(&http::HeaderValue::from_static("mcp.example.com")),
        };
        let connection: &[&[u8]] = &[b"keep-alive, X-Secret-Hop"];
        rewrite_request(
            &mut r,
            &http::HeaderValue::from_static("up.tail.ts.net:8443"),
            &fwd,
            UpstreamAuthorization::Strip,
            &StripRules::new(&[]),
            connection,
        )
        .unwrap();
        for gone in [
            "x-secret-hop",
            "origin",
            "forwarded",
            "x-real-ip",
            "authorization",
        ] {
            assert!(get(&r, gone).is_empty(), "{gone} should be stripped");
        }
        // The standard hop-by-hop headers are pingora's to strip (before this rewrite runs;
        // tests/proxy checks that none reaches an upstream): left alone here, unless the
        // client's Connection header named them (keep-alive above).
        for left in ["connection", "te", "upgrade", "proxy-authorization"] {
            assert!(HOP_BY_HOP.contains(&left));
            assert!(!get(&r, left).is_empty(), "{left}");
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
        let rules = StripRules::new(&[]);
        let h = http::HeaderValue::from_static("h");
        let mut r = req(&[("Authorization", "Bearer c")]);
        rewrite_request(
            &mut r,
            &h,
            &fwd,
            UpstreamAuthorization::PassThrough,
            &rules,
            &[],
        )
        .unwrap();
        assert_eq!(get(&r, "authorization"), ["Bearer c"]);
        let up = bearer_value("up").unwrap();
        assert!(up.is_sensitive());
        rewrite_request(
            &mut r,
            &h,
            &fwd,
            UpstreamAuthorization::Bearer(&up),
            &rules,
            &[],
        )
        .unwrap();
        assert_eq!(get(&r, "authorization"), ["Bearer up"]);
        assert!(get(&r, "x-forwarded-for").is_empty());
        assert!(bearer_value("a\nb").is_err());
    }

    #[test]
    fn identity_families_never_reach_the_upstream() {
        let spoofed = [
            ("X-Forwarded-User", "admin"),
            ("X-Forwarded-Email", "admin@example.com"),
            ("X-Forwarded-Groups", "admins"),
            ("X-Forwarded-Preferred-Username", "admin"),
            ("X-Auth-Request-User", "admin"),
            ("X-Auth-Request-Email", "admin@example.com"),
            ("Remote-User", "admin"),
            ("X-Remote-User", "admin"),
            ("X-User", "admin"),
            ("Tailscale-User-Login", "admin@example.com"),
            ("Tailscale-User-Name", "Admin"),
            ("Tailscale-User-Profile-Pic", "https://x"),
            ("X-Tailbridge-Subject", "1"),
            ("X-Tailbridge-Anything", "1"),
            ("X-Employee-Id", "7"),
            ("X-Internal-Role", "root"),
        ];
        let mut r = req(&spoofed);
        r.append_header("X-Kept", "yes").unwrap();
        let rules = StripRules::new(&["X-Employee-Id".into(), "x-internal-*".into()]);
        let fwd = Forwarding {
            client_ip: Some("198.51.100.7".parse().unwrap()),
            proto: "https",
            original_host: None,
        };
        let h = http::HeaderValue::from_static("h");
        rewrite_request(&mut r, &h, &fwd, UpstreamAuthorization::Strip, &rules, &[]).unwrap();
        for (name, _) in spoofed {
            assert!(get(&r, name).is_empty(), "{name} reached the upstream");
        }
        assert_eq!(get(&r, "x-kept"), ["yes"]);
        assert_eq!(get(&r, "x-forwarded-for"), ["198.51.100.7"]);
    }

    #[test]
    fn a_nominated_protected_header_is_removed_not_refused() {
        let mut r = req(&[
            ("Connection", "close, X-Forwarded-For, Host"),
            ("X-Forwarded-For", "6.6.6.6"),
        ]);
        let fwd = Forwarding {
            client_ip: Some("198.51.100.7".parse().unwrap()),
            proto: "http",
            original_host: None,
        };
        let conn: &[&[u8]] = &[b"close, X-Forwarded-For, Host"];
        rewrite_request(
            &mut r,
            &http::HeaderValue::from_static("up:80"),
            &fwd,
            UpstreamAuthorization::Strip,
            &StripRules::new(&[]),
            conn,
        )
        .unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), ["198.51.100.7"]);
        assert_eq!(get(&r, "host"), ["up:80"]);
    }

    #[test]
    fn the_family_match_is_the_lists() {
        for name in CLIENT_FORWARDING {
            assert!(builtin_family(name), "{name}");
        }
        for prefix in CLIENT_FORWARDING_PREFIXES {
            assert!(builtin_family(&format!("{prefix}anything")), "{prefix}");
            assert!(!builtin_family(prefix.trim_end_matches('-')), "{prefix}");
        }
        for kept in [
            "host",
            "accept",
            "authorization",
            "mcp-session-id",
            "x-forward",
            "originx",
            "x-users",
            "tailscale-user",
        ] {
            assert!(!builtin_family(kept), "{kept}");
        }
    }

    #[test]
    fn client_addresses_format_as_header_values() {
        for ip in [
            "127.0.0.1",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let v = ip_value(ip.parse().unwrap()).unwrap();
            assert_eq!(
                v.to_str().unwrap(),
                ip.parse::<IpAddr>().unwrap().to_string()
            );
        }
    }

    #[test]
    fn response_headers() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Server", "uvicorn").unwrap();
        resp.insert_header("Content-Type", "text/event-stream; charset=utf-8")
            .unwrap();
        assert!(is_event_stream(&resp));
        secure_response(
            &mut resp,
            Some(&http::HeaderValue::from_static("max-age=1")),
            true,
        )
        .unwrap();
        assert!(resp.headers.get("server").is_none());
        assert_eq!(resp.headers["x-content-type-options"], "nosniff");
        assert_eq!(resp.headers["strict-transport-security"], "max-age=1");
        assert_eq!(resp.headers["x-accel-buffering"], "no");

        let mut plain = ResponseHeader::build(200, None).unwrap();
        plain
            .insert_header("Content-Type", "application/json")
            .unwrap();
        secure_response(&mut plain, None, false).unwrap();
        assert!(plain.headers.get("strict-transport-security").is_none());
        assert!(plain.headers.get("x-accel-buffering").is_none());
        assert!(!is_event_stream(&plain));
    }
}
