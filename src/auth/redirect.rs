//! Which redirect URIs `/register` accepts (`auth.registration.allowed_redirect_uris`). Pure.
//!
//! Entries match exactly, with one exception (RFC 8252 §7.3): native clients listen on a
//! loopback port they pick at run time (mcp-remote derives it, Claude Code and VS Code choose
//! one), so an entry written for a loopback host — `127.0.0.1`, `[::1]` or `localhost` — with
//! no port, or with the port `*`, matches that scheme and host on any port, with that path
//! or a path under it (`/callback` allows `/callback/<id>`).

/// An allowed entry, as `check` validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedRedirect {
    /// Compared as written.
    Exact(String),
    /// Any port on this loopback host, with this scheme, path and query.
    AnyLoopbackPort {
        scheme: String,
        host: String,
        path_and_query: String,
    },
}

/// Loopback hosts for the any-port rule, as they appear in a URL.
const LOOPBACK_HOSTS: &[&str] = &["127.0.0.1", "[::1]", "localhost"];

/// Read an entry. `None` when it is not a URL.
pub fn parse_allowed(entry: &str) -> Option<AllowedRedirect> {
    let (scheme, rest) = entry.split_once("://")?;
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (format!("[{h}]"), after.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        },
    };
    let host = host.to_ascii_lowercase();
    let wildcard = matches!(port, None | Some("*"));
    if scheme.eq_ignore_ascii_case("http") && wildcard && LOOPBACK_HOSTS.contains(&host.as_str()) {
        let path_and_query = if tail.is_empty() { "/" } else { tail };
        return Some(AllowedRedirect::AnyLoopbackPort {
            scheme: "http".into(),
            host,
            path_and_query: path_and_query.to_string(),
        });
    }
    url::Url::parse(entry).ok()?;
    Some(AllowedRedirect::Exact(entry.to_string()))
}

/// Whether `uri` (from a registration request) is allowed by `entry`.
pub fn allows(entry: &AllowedRedirect, uri: &str) -> bool {
    match entry {
        AllowedRedirect::Exact(e) => e == uri,
        AllowedRedirect::AnyLoopbackPort {
            scheme,
            host,
            path_and_query,
        } => {
            let Ok(u) = url::Url::parse(uri) else {
                return false;
            };
            if u.scheme() != scheme || u.fragment().is_some() || !u.username().is_empty() {
                return false;
            }
            let uhost = match u.host() {
                Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
                Some(h) => h.to_string(),
                None => return false,
            };
            let upq = match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            };
            // The path matches exactly or as a prefix at a segment boundary
            // (`/callback` allows `/callback/<id>`, as some clients add a per-server id).
            let under = |p: &str| {
                upq.strip_prefix(p)
                    .is_some_and(|rest| p.ends_with('/') || rest.starts_with('/'))
            };
            uhost == *host
                && (upq == *path_and_query
                    || (!path_and_query.contains('?') && under(path_and_query)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_any_port_table() {
        let cases: &[(&str, &str, bool)] = &[
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:53682/callback",
                true,
            ),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1/callback",
                true,
            ),
            (
                "http://127.0.0.1:*/callback",
                "http://127.0.0.1:9/callback",
                true,
            ),
            (
                "http://localhost/oauth/callback",
                "http://localhost:10001/oauth/callback",
                true,
            ),
            ("http://[::1]/cb", "http://[::1]:4000/cb", true),
            // a path prefix at a segment boundary (`/callback/<server id>`)
            (
                "http://localhost/callback",
                "http://localhost:7777/callback/b1946ac9",
                true,
            ),
            (
                "http://localhost/callback",
                "http://localhost:7777/callbackx",
                false,
            ),
            // path, query, host and scheme still match exactly
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:5/other",
                false,
            ),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:5/callback?x=1",
                false,
            ),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.2:5/callback",
                false,
            ),
            (
                "http://127.0.0.1/callback",
                "https://127.0.0.1:5/callback",
                false,
            ),
            (
                "http://127.0.0.1/callback",
                "http://evil@127.0.0.1:5/callback",
                false,
            ),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1.evil.net:5/callback",
                false,
            ),
            // a port written down is exact, and non-loopback hosts are exact
            (
                "http://127.0.0.1:8000/callback",
                "http://127.0.0.1:8001/callback",
                false,
            ),
            (
                "http://127.0.0.1:8000/callback",
                "http://127.0.0.1:8000/callback",
                true,
            ),
            (
                "https://claude.ai/api/mcp/auth_callback",
                "https://claude.ai/api/mcp/auth_callback",
                true,
            ),
            (
                "https://claude.ai/api/mcp/auth_callback",
                "https://claude.ai:8443/api/mcp/auth_callback",
                false,
            ),
            ("http://example.com/cb", "http://example.com:81/cb", false),
        ];
        for (entry, uri, want) in cases {
            let e = parse_allowed(entry).unwrap();
            assert_eq!(allows(&e, uri), *want, "{entry} vs {uri}");
        }
        assert_eq!(parse_allowed("not a url"), None);
    }
}
