//! `tls.http_listen`: the plain-HTTP listener (port 80 in production). It answers HTTP-01
//! challenges and sends everything else to the same host and path over HTTPS with a 308,
//! which keeps the method and body.

use super::challenge::{Challenges, HTTP01_PREFIX};
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// The plain-HTTP app.
pub struct HttpRedirect {
    pub challenges: Arc<Challenges>,
    /// Port of the TLS listener; 443 is left out of the redirect target.
    pub https_port: u16,
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    crate::admin::reply(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

/// The host part of a `Host` header, without its port, if it is a plausible host name or
/// IP literal (nothing that could smuggle a path, userinfo or a second authority).
pub fn host_only(header: &str) -> Option<&str> {
    let h = header.trim();
    let host = if let Some(rest) = h.strip_prefix('[') {
        let end = rest.find(']')?;
        &h[..end + 2]
    } else {
        h.rsplit_once(':').map_or(h, |(host, _port)| host)
    };
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    ok.then_some(host)
}

impl HttpRedirect {
    /// The HTTPS URL for `host` and the request's path and query.
    pub fn target(&self, host: &str, path_and_query: &str) -> String {
        if self.https_port == 443 {
            format!("https://{host}{path_and_query}")
        } else {
            format!("https://{host}:{}{path_and_query}", self.https_port)
        }
    }
}

#[async_trait]
impl ServeHttp for HttpRedirect {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path();
        if let Some(token) = path.strip_prefix(HTTP01_PREFIX) {
            if req.method != http::Method::GET && req.method != http::Method::HEAD {
                return text(405, "method not allowed\n");
            }
            return match self.challenges.http_answer(token) {
                Some(answer) => {
                    log::info!("answered an HTTP-01 validation");
                    text(200, &answer)
                }
                None => text(404, "no such challenge\n"),
            };
        }
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.host());
        let Some(host) = host.and_then(host_only) else {
            return text(400, "missing or malformed Host header\n");
        };
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut r = text(308, "use HTTPS\n");
        if let Ok(location) = http::HeaderValue::from_str(&self.target(host, pq)) {
            r.headers_mut().insert(http::header::LOCATION, location);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_forms() {
        for (input, want) in [
            ("mcp.example.com", Some("mcp.example.com")),
            ("mcp.example.com:80", Some("mcp.example.com")),
            ("[::1]:80", Some("[::1]")),
            ("[::1]", Some("[::1]")),
            ("127.0.0.1:8080", Some("127.0.0.1")),
            ("", None),
            ("evil.com/path", None),
            ("user@evil.com", None),
            ("a b", None),
            ("[::1", None),
        ] {
            assert_eq!(host_only(input), want, "{input:?}");
        }
    }

    #[test]
    fn redirect_keeps_path_and_names_non_default_port() {
        let mut r = HttpRedirect {
            challenges: Arc::default(),
            https_port: 443,
        };
        assert_eq!(
            r.target("mcp.example.com", "/mcp/x?a=1"),
            "https://mcp.example.com/mcp/x?a=1"
        );
        r.https_port = 8443;
        assert_eq!(r.target("[::1]", "/"), "https://[::1]:8443/");
    }
}
