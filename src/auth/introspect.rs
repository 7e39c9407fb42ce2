//! RFC 7662 token introspection against tsidp: POST `token=…` with HTTP Basic client
//! credentials (RFC 7662 §2.1), a timeout, and a cap on the response size.

use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

/// What introspection says about a token (the fields tailbridge uses).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claims {
    pub active: bool,
    pub exp: Option<u64>,
    pub iss: Option<String>,
    /// `aud` as a list (tsidp sends an array; a single string is accepted too).
    pub aud: Vec<String>,
    pub sub: Option<String>,
    pub username: Option<String>,
    pub client_id: Option<String>,
}

/// Why introspection produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    #[error("introspection request failed: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("introspection answered HTTP {0} (are auth.client_id / client_secret right?)")]
    CredentialsRejected(u16),
    #[error("introspection answered HTTP {0}")]
    Status(u16),
    #[error("introspection response larger than {0} bytes")]
    TooLarge(u64),
    #[error("introspection response is not a JSON object with `active`")]
    Invalid,
}

fn string_or_number(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parse an introspection response body. Pure.
pub fn parse_claims(body: &[u8]) -> Result<Claims, IntrospectError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| IntrospectError::Invalid)?;
    let obj = v.as_object().ok_or(IntrospectError::Invalid)?;
    let active = obj
        .get("active")
        .and_then(Value::as_bool)
        .ok_or(IntrospectError::Invalid)?;
    let aud = match obj.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Claims {
        active,
        exp: obj
            .get("exp")
            .and_then(|e| e.as_u64().or_else(|| e.as_f64().map(|f| f as u64))),
        iss: obj.get("iss").and_then(Value::as_str).map(str::to_string),
        aud,
        sub: string_or_number(obj.get("sub")),
        username: obj
            .get("username")
            .and_then(Value::as_str)
            .map(str::to_string),
        client_id: obj
            .get("client_id")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Read a response body, refusing more than `max` bytes.
pub async fn read_capped(
    mut resp: reqwest::Response,
    max: u64,
) -> Result<Vec<u8>, IntrospectError> {
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(IntrospectError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(IntrospectError::Transport)? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > max {
            return Err(IntrospectError::TooLarge(max));
        }
    }
    Ok(body)
}

/// Introspect `token` at `url`.
pub async fn introspect(
    http: &reqwest::Client,
    url: &str,
    client_id: &str,
    client_secret: &str,
    token: &str,
    max_bytes: u64,
) -> Result<Claims, IntrospectError> {
    let resp = http
        .post(url)
        .basic_auth(client_id, Some(client_secret))
        .header("accept", "application/json")
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .map_err(IntrospectError::Transport)?;
    let status = resp.status().as_u16();
    match status {
        200 => parse_claims(&read_capped(resp, max_bytes).await?),
        400 | 401 | 403 => Err(IntrospectError::CredentialsRejected(status)),
        _ => Err(IntrospectError::Status(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tsidp_shapes() {
        let c = parse_claims(
            br#"{"active":true,"exp":1900000000,"iss":"https://idp.t.ts.net","aud":["cid","https://mcp.example.com/"],"sub":"12345","username":"alice@example.com","client_id":"cid"}"#,
        )
        .unwrap();
        assert!(c.active);
        assert_eq!(c.aud, ["cid", "https://mcp.example.com/"]);
        assert_eq!(c.sub.as_deref(), Some("12345"));
        let c = parse_claims(br#"{"active":true,"aud":"one","sub":42,"exp":1.9e9}"#).unwrap();
        assert_eq!(c.aud, ["one"]);
        assert_eq!(c.sub.as_deref(), Some("42"));
        assert_eq!(c.exp, Some(1_900_000_000));
        assert!(!parse_claims(br#"{"active":false}"#).unwrap().active);
        assert!(parse_claims(br#"{"sub":"x"}"#).is_err());
        assert!(parse_claims(b"[]").is_err());
        assert!(parse_claims(b"not json").is_err());
    }
}
