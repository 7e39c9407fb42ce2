//! Discovery documents: RFC 9728 protected-resource metadata, RFC 8414 authorization-server
//! metadata (tsidp's, rewritten), and RFC 6750 challenges. The builders are pure functions.

use crate::config::Advertise;
use serde_json::{json, Value};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Scopes tsidp can grant (requirements #2, #32). Without them clients ask for
/// `offline_access`, which tsidp rejects.
pub const SCOPES: &[&str] = &["openid", "profile", "email"];

/// The path of the root protected-resource document.
pub const PRM_PATH: &str = "/.well-known/oauth-protected-resource";

/// The protected-resource document for `resource_path` (None = the bridge as a whole).
pub fn protected_resource(origin: &str, resource_path: Option<&str>, auth_server: &str) -> Value {
    let resource = match resource_path {
        Some(p) => format!("{origin}{p}"),
        None => origin.to_string(),
    };
    json!({
        "resource": resource,
        "authorization_servers": [auth_server],
        "bearer_methods_supported": ["header"],
        "scopes_supported": SCOPES,
    })
}

/// The URL of an endpoint's own protected-resource document (RFC 9728 §3.1 path insertion).
pub fn prm_url(origin: &str, endpoint_path: &str) -> String {
    format!("{origin}{PRM_PATH}{endpoint_path}")
}

/// A `WWW-Authenticate` value (RFC 6750 §3, RFC 9728 §5.1).
pub fn challenge(resource_metadata: &str, error: Option<(&str, &str)>) -> String {
    match error {
        None => format!("Bearer resource_metadata=\"{resource_metadata}\""),
        Some((code, description)) => format!(
            "Bearer resource_metadata=\"{resource_metadata}\", error=\"{code}\", error_description=\"{description}\""
        ),
    }
}

/// Rewrite tsidp's AS metadata for the bridge origin (requirements #11, #31): token and
/// registration endpoints move to the bridge, `authorization_endpoint` stays at tsidp (the
/// user's browser must reach it on the tailnet), everything else is kept. With
/// `Advertise::Bridge` the `issuer` becomes the bridge origin so that clients checking
/// RFC 8414 §3.3 accept the document they fetched from the bridge.
pub fn rewrite_as_metadata(
    upstream: &Value,
    origin: &str,
    advertise: Advertise,
    registration_enabled: bool,
) -> Option<Value> {
    let mut doc = upstream.as_object()?.clone();
    doc.insert("token_endpoint".into(), json!(format!("{origin}/token")));
    if registration_enabled {
        doc.insert(
            "registration_endpoint".into(),
            json!(format!("{origin}/register")),
        );
    } else {
        doc.remove("registration_endpoint");
    }
    if advertise == Advertise::Bridge {
        doc.insert("issuer".into(), json!(origin));
        // Some clients refuse metadata whose endpoints sit on another origin than `issuer`;
        // the bridge's `/authorize` answers with a 302 to tsidp's.
        doc.insert(
            "authorization_endpoint".into(),
            json!(format!("{origin}/authorize")),
        );
        // RFC 9207: a client told that authorization responses carry `iss` requires it to
        // equal the issuer above, but the IdP (which redirects the browser itself) would
        // send its own, and tsidp sends none. Do not promise it.
        doc.remove("authorization_response_iss_parameter_supported");
    }
    Some(Value::Object(doc))
}

/// tsidp's AS metadata, fetched through the tailnet and kept fresh.
#[derive(Debug)]
pub struct AsMetadata {
    url: String,
    refresh: Duration,
    /// How long a stale document may still be served while tsidp is unreachable.
    max_stale: Duration,
    doc: RwLock<Option<(Value, Instant)>>,
}

/// Why no metadata document can be served.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("fetching {url}: {reason}")]
    Fetch { url: String, reason: String },
}

impl AsMetadata {
    pub fn new(issuer: &url::Url, refresh: Duration) -> Self {
        let base = issuer.as_str().trim_end_matches('/');
        AsMetadata {
            url: format!("{base}/.well-known/oauth-authorization-server"),
            refresh,
            max_stale: Duration::from_secs(3600),
            doc: RwLock::new(None),
        }
    }

    fn cached(&self, max_age: Duration) -> Option<Value> {
        let guard = self.doc.read().ok()?;
        let (v, at) = guard.as_ref()?;
        (at.elapsed() <= max_age).then(|| v.clone())
    }

    /// Fetch now and store.
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        max_bytes: u64,
    ) -> Result<Value, MetadataError> {
        let err = |reason: String| MetadataError::Fetch {
            url: self.url.clone(),
            reason,
        };
        let resp = http
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status().as_u16())));
        }
        let body = super::introspect::read_capped(resp, max_bytes)
            .await
            .map_err(|e| err(e.to_string()))?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
        if !v.is_object() || v.get("authorization_endpoint").is_none() {
            return Err(err("not an authorization-server metadata document".into()));
        }
        if let Ok(mut g) = self.doc.write() {
            *g = Some((v.clone(), Instant::now()));
        }
        Ok(v)
    }

    /// A fresh document, refetched when older than the refresh period; a stale one when
    /// tsidp is unreachable (up to an hour); an error when there is none.
    pub async fn get(
        &self,
        http: &reqwest::Client,
        max_bytes: u64,
    ) -> Result<Value, MetadataError> {
        if let Some(v) = self.cached(self.refresh) {
            return Ok(v);
        }
        match self.refresh(http, max_bytes).await {
            Ok(v) => Ok(v),
            Err(e) => match self.cached(self.max_stale) {
                Some(v) => {
                    log::warn!("serving stale AS metadata: {e}");
                    Ok(v)
                }
                None => Err(e),
            },
        }
    }

    /// The URL tsidp's metadata gives for `key` (e.g. `token_endpoint`), fetched as
    /// [`AsMetadata::get`] does; `<issuer>/<fallback_path>` while there is no document.
    pub async fn endpoint(
        &self,
        http: &reqwest::Client,
        max_bytes: u64,
        key: &str,
        issuer: &str,
        fallback_path: &str,
    ) -> String {
        self.get(http, max_bytes)
            .await
            .ok()
            .and_then(|m| m.get(key)?.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{issuer}/{fallback_path}"))
    }

    /// The authorization endpoint from the last document, if any.
    pub fn authorization_endpoint(&self) -> Option<String> {
        let guard = self.doc.read().ok()?;
        guard
            .as_ref()?
            .0
            .get("authorization_endpoint")?
            .as_str()
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prm_documents() {
        let root = protected_resource("https://mcp.example.com", None, "https://mcp.example.com");
        assert_eq!(root["resource"], "https://mcp.example.com");
        assert_eq!(root["bearer_methods_supported"], json!(["header"]));
        assert_eq!(
            root["scopes_supported"],
            json!(["openid", "profile", "email"])
        );
        let ep = protected_resource(
            "https://mcp.example.com",
            Some("/mcp/a"),
            "https://idp.t.ts.net",
        );
        assert_eq!(ep["resource"], "https://mcp.example.com/mcp/a");
        assert_eq!(ep["authorization_servers"], json!(["https://idp.t.ts.net"]));
        assert_eq!(
            prm_url("https://mcp.example.com", "/mcp/a"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp/a"
        );
    }

    #[test]
    fn challenges() {
        let cases = [
            (None, "Bearer resource_metadata=\"https://h/.well-known/oauth-protected-resource/mcp/a\""),
            (
                Some(("invalid_token", "token is not active")),
                "Bearer resource_metadata=\"https://h/.well-known/oauth-protected-resource/mcp/a\", error=\"invalid_token\", error_description=\"token is not active\"",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(
                challenge("https://h/.well-known/oauth-protected-resource/mcp/a", err),
                want
            );
        }
    }

    #[test]
    fn as_metadata_rewrite() {
        let tsidp = json!({
            "issuer": "https://idp.t.ts.net",
            "authorization_endpoint": "https://idp.t.ts.net/authorize",
            "token_endpoint": "https://idp.t.ts.net/token",
            "registration_endpoint": "https://idp.t.ts.net/register",
            "introspection_endpoint": "https://idp.t.ts.net/introspect",
            "code_challenge_methods_supported": ["plain", "S256"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "authorization_response_iss_parameter_supported": true,
        });
        let o = "https://mcp.example.com";
        let b = rewrite_as_metadata(&tsidp, o, Advertise::Bridge, false).unwrap();
        assert_eq!(b["issuer"], o);
        assert_eq!(b["token_endpoint"], "https://mcp.example.com/token");
        assert!(b.get("registration_endpoint").is_none());
        assert_eq!(
            b["authorization_endpoint"],
            "https://mcp.example.com/authorize"
        );
        assert_eq!(
            b["code_challenge_methods_supported"],
            json!(["plain", "S256"])
        );
        assert_eq!(b["grant_types_supported"], tsidp["grant_types_supported"]);
        assert!(b
            .get("authorization_response_iss_parameter_supported")
            .is_none());
        let i = rewrite_as_metadata(&tsidp, o, Advertise::Idp, true).unwrap();
        assert_eq!(i["issuer"], "https://idp.t.ts.net");
        assert_eq!(
            i["authorization_endpoint"],
            "https://idp.t.ts.net/authorize"
        );
        assert_eq!(
            i["registration_endpoint"],
            "https://mcp.example.com/register"
        );
        assert!(rewrite_as_metadata(&json!([1]), o, Advertise::Idp, true).is_none());
    }
}
