//! Tool grants from the Tailscale policy file: tsidp's `/userinfo` (OpenID Connect Core
//! §5.3), called with the user's own access token, returns the `extraClaims` of the user's
//! `tailscale.com/cap/tsidp` grant when that grant sets `"includeInUserInfo": true`
//! (introspection does not return them). `auth.tool_grants_claim` names the claim.

use super::introspect::read_capped;
use crate::mcp::policy::{parse_claim, ClaimGrant};

/// Why the claim could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UserinfoError {
    #[error("userinfo request failed: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("userinfo answered HTTP {0}")]
    Status(u16),
    #[error("userinfo: {0}")]
    Body(String),
}

/// The raw value of `claim` in a userinfo document (`None` when absent). Pure.
pub fn claim_from_userinfo(
    body: &[u8],
    claim: &str,
) -> Result<Option<serde_json::Value>, UserinfoError> {
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| UserinfoError::Body(e.to_string()))?;
    match v.as_object_mut() {
        Some(m) => Ok(m.remove(claim)),
        None => Err(UserinfoError::Body("not a JSON object".into())),
    }
}

/// Read the tool grants in `claim` from a userinfo document. Pure.
pub fn grants_from_userinfo(body: &[u8], claim: &str) -> Result<Vec<ClaimGrant>, UserinfoError> {
    Ok(parse_claim(claim_from_userinfo(body, claim)?.as_ref()))
}

/// Call `url` with the user's `token` and read the raw value of `claim` (the broker seals it
/// into its tokens as it is).
pub async fn fetch_claim(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    claim: &str,
    max_bytes: u64,
) -> Result<Option<serde_json::Value>, UserinfoError> {
    let resp = http
        .get(url)
        .bearer_auth(token)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(UserinfoError::Transport)?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(UserinfoError::Status(status));
    }
    let body = read_capped(resp, max_bytes)
        .await
        .map_err(|e| UserinfoError::Body(e.to_string()))?;
    claim_from_userinfo(&body, claim)
}

/// Call `url` with the user's `token` and read the tool grants in `claim`.
pub async fn fetch_grants(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    claim: &str,
    max_bytes: u64,
) -> Result<Vec<ClaimGrant>, UserinfoError> {
    let raw = fetch_claim(http, url, token, claim, max_bytes).await?;
    Ok(parse_claim(raw.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_shapes() {
        let g = grants_from_userinfo(
            br#"{"sub":"1","mcp_tools":["notes:delete_*","search"]}"#,
            "mcp_tools",
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].endpoint.as_deref(), Some("notes"));
        assert!(grants_from_userinfo(br#"{"sub":"1"}"#, "mcp_tools")
            .unwrap()
            .is_empty());
        assert!(grants_from_userinfo(b"[1]", "mcp_tools").is_err());
        assert!(grants_from_userinfo(b"<html>", "mcp_tools").is_err());
    }
}
