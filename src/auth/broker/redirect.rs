//! Redirect URIs of broker clients. Pure.
//!
//! - Registrable (RFC 8252, OAuth 2.1 §2.3.1): `https` URLs; `http` only on a loopback host
//!   (`127.0.0.1`, `[::1]`, `localhost`); private-use schemes with a dot or a reverse-domain
//!   name such as `cursor://anysphere.cursor-mcp/oauth/callback`. Never a fragment, never
//!   user info, never `javascript:`, `data:`, `file:` and the like.
//! - Matching at `/authorize`: exact string comparison, except that a registered loopback
//!   `http` URI matches the same URI on any port (RFC 8252 §7.3).

/// Schemes that are never a redirect target.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "blob",
    "about",
    "vbscript",
    "ftp",
    "ws",
    "wss",
    "chrome",
    "view-source",
];

const LOOPBACK_HOSTS: &[&str] = &["127.0.0.1", "[::1]", "localhost"];

/// Whether `uri` may be registered as a redirect URI; else why not.
pub fn registrable(uri: &str) -> Result<(), &'static str> {
    if uri.len() > 512 {
        return Err("longer than 512 characters");
    }
    let u = url::Url::parse(uri).map_err(|_| "not an absolute URL")?;
    if u.fragment().is_some() || uri.contains('#') {
        return Err("must not have a fragment");
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry user information");
    }
    match u.scheme() {
        "https" => {
            if u.host_str().is_none_or(str::is_empty) {
                return Err("https URL without a host");
            }
            Ok(())
        }
        "http" => {
            if is_loopback_host(&u) {
                Ok(())
            } else {
                Err("http is allowed only on a loopback host (127.0.0.1, [::1], localhost)")
            }
        }
        s if FORBIDDEN_SCHEMES.contains(&s) => Err("this scheme cannot be a redirect target"),
        s if s.contains('.') || u.host_str().is_some_and(|h| h.contains('.')) => Ok(()),
        _ => Err("a private-use scheme must be a reverse domain name (com.example.app:/cb) or name a host (cursor://app.name/cb)"),
    }
}

fn host_text(u: &url::Url) -> Option<String> {
    match u.host()? {
        url::Host::Ipv6(ip) => Some(format!("[{ip}]")),
        h => Some(h.to_string().to_ascii_lowercase()),
    }
}

/// Whether `uri` is an `http` URI on a loopback host (a native client's own listener). Pure.
pub fn is_loopback(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|u| u.scheme() == "http" && is_loopback_host(&u))
}

fn is_loopback_host(u: &url::Url) -> bool {
    host_text(u).is_some_and(|h| LOOPBACK_HOSTS.contains(&h.as_str()))
}

/// Whether `given` (from `/authorize`) matches `registered`.
pub fn matches(registered: &str, given: &str) -> bool {
    if registered == given {
        return true;
    }
    let (Ok(r), Ok(g)) = (url::Url::parse(registered), url::Url::parse(given)) else {
        return false;
    };
    r.scheme() == "http"
        && g.scheme() == "http"
        && is_loopback_host(&r)
        && host_text(&r) == host_text(&g)
        && g.username().is_empty()
        && g.password().is_none()
        && g.fragment().is_none()
        && r.path() == g.path()
        && r.query() == g.query()
}

/// The host a consent page names for a redirect URI (`cursor://…` shows its scheme too).
pub fn shown_host(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(u) => match (u.scheme(), host_text(&u)) {
            ("https" | "http", Some(h)) => match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h,
            },
            (s, Some(h)) => format!("{s}://{h}"),
            (s, None) => format!("{s}:"),
        },
        Err(_) => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_table() {
        let ok = [
            "https://claude.ai/api/mcp/auth_callback",
            "https://vscode.dev/redirect",
            "http://127.0.0.1:33418",
            "http://127.0.0.1/callback",
            "http://localhost:7777/oauth/callback",
            "http://[::1]:8080/cb",
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "com.example.app:/oauth2redirect",
        ];
        for u in ok {
            assert_eq!(registrable(u), Ok(()), "{u}");
        }
        let bad = [
            "http://example.com/cb",
            "http://10.0.0.1/cb",
            "http://127.0.0.1.nip.io/cb",
            "https://claude.ai/cb#frag",
            "https://user:pw@claude.ai/cb",
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "myapp:/cb",
            "relative/path",
            "",
        ];
        for u in bad {
            assert!(registrable(u).is_err(), "{u}");
        }
    }

    #[test]
    fn matching_table() {
        let cases = [
            ("https://claude.ai/cb", "https://claude.ai/cb", true),
            ("https://claude.ai/cb", "https://claude.ai/cb/", false),
            ("https://claude.ai/cb", "https://claude.ai:8443/cb", false),
            ("https://claude.ai/cb", "https://claude.ai/cb?x=1", false),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:51234/callback",
                true,
            ),
            (
                "http://127.0.0.1:80/callback",
                "http://127.0.0.1:51234/callback",
                true,
            ),
            ("http://localhost:7777/cb", "http://localhost:9999/cb", true),
            ("http://[::1]/cb", "http://[::1]:4000/cb", true),
            (
                "http://127.0.0.1/callback",
                "http://localhost:51234/callback",
                false,
            ),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:1/other",
                false,
            ),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:1/callback?x",
                false,
            ),
            (
                "http://127.0.0.1/callback",
                "https://127.0.0.1:1/callback",
                false,
            ),
            (
                "http://127.0.0.1/callback",
                "http://u@127.0.0.1:1/callback",
                false,
            ),
            (
                "cursor://anysphere.cursor-mcp/oauth/callback",
                "cursor://anysphere.cursor-mcp/oauth/callback",
                true,
            ),
            (
                "cursor://anysphere.cursor-mcp/oauth/callback",
                "cursor://evil/oauth/callback",
                false,
            ),
        ];
        for (reg, given, want) in cases {
            assert_eq!(matches(reg, given), want, "{reg} vs {given}");
        }
    }

    #[test]
    fn shown_hosts() {
        assert_eq!(shown_host("https://claude.ai/api/cb"), "claude.ai");
        assert_eq!(shown_host("http://127.0.0.1:4000/cb"), "127.0.0.1:4000");
        assert_eq!(
            shown_host("cursor://anysphere.cursor-mcp/oauth/callback"),
            "cursor://anysphere.cursor-mcp"
        );
        assert_eq!(shown_host("com.example.app:/cb"), "com.example.app:");
    }
}
