//! `/token` refresh grants of clients registered at tsidp itself (the pass-through path),
//! relayed by the bridge so that concurrent or repeated refreshes with one refresh token make
//! ONE call to tsidp and get the same answer (requirements #51): tsidp's refresh tokens are
//! single-use, so a second call would fail and log the user out.
//!
//! The key is the SHA-256 of the request's `Authorization` and body (never stored raw); an
//! answer below 500 is kept for the reuse window, transport failures and 5xx are not.

use bytes::Bytes;
use moka::future::Cache;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// How long a relayed answer is given to repeats of the same request.
pub const REUSE_WINDOW: Duration = Duration::from_secs(30);
/// Answers kept at most.
const CAPACITY: u64 = 10_000;
/// Largest tsidp answer relayed.
const MAX_ANSWER: u64 = 64 << 10;

/// tsidp's answer, as relayed.
#[derive(Debug)]
pub struct Relayed {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

/// Why nothing can be relayed.
#[derive(Debug, Clone)]
pub enum RelayError {
    /// tsidp unreachable (never cached).
    Transport(String),
    /// A 5xx from tsidp, passed on but not cached.
    Upstream(Arc<Relayed>),
}

/// Coalesces pass-through refresh grants.
pub struct TokenRelay {
    cache: Cache<[u8; 32], Arc<Relayed>>,
}

impl std::fmt::Debug for TokenRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenRelay")
    }
}

impl Default for TokenRelay {
    fn default() -> Self {
        TokenRelay {
            cache: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(REUSE_WINDOW)
                .build(),
        }
    }
}

/// The coalescing key of a request. Pure.
pub fn key(authorization: Option<&str>, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(authorization.unwrap_or("").as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

impl TokenRelay {
    /// Relay one refresh grant to `url`; the second value says whether this call reached
    /// tsidp (false: the answer of an identical request in flight or just finished).
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        url: &str,
        authorization: Option<&str>,
        body: Vec<u8>,
    ) -> (Result<Arc<Relayed>, RelayError>, bool) {
        let k = key(authorization, &body);
        let called = std::sync::atomic::AtomicBool::new(false);
        let r = self
            .cache
            .try_get_with(k, async {
                called.store(true, std::sync::atomic::Ordering::Relaxed);
                let mut req = http
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("accept", "application/json")
                    .body(body);
                if let Some(a) = authorization {
                    req = req.header("authorization", a);
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| RelayError::Transport(e.to_string()))?;
                let status = resp.status().as_u16();
                let content_type = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_string();
                let body = super::introspect::read_capped(resp, MAX_ANSWER)
                    .await
                    .map_err(|e| RelayError::Transport(e.to_string()))?;
                let relayed = Arc::new(Relayed {
                    status,
                    content_type,
                    body: Bytes::from(body),
                });
                if status >= 500 {
                    return Err(RelayError::Upstream(relayed));
                }
                Ok(relayed)
            })
            .await
            .map_err(|e| (*e).clone());
        (r, called.load(std::sync::atomic::Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_credentials_and_bodies() {
        let a = key(Some("Basic x"), b"grant_type=refresh_token&refresh_token=1");
        assert_eq!(
            a,
            key(Some("Basic x"), b"grant_type=refresh_token&refresh_token=1")
        );
        assert_ne!(
            a,
            key(Some("Basic y"), b"grant_type=refresh_token&refresh_token=1")
        );
        assert_ne!(
            a,
            key(Some("Basic x"), b"grant_type=refresh_token&refresh_token=2")
        );
        assert_ne!(a, key(None, b"grant_type=refresh_token&refresh_token=1"));
        // The separator keeps header and body apart.
        assert_ne!(key(Some("ab"), b"c"), key(Some("a"), b"bc"));
    }
}
