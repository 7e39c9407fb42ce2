//! A test stand-in for tsidp with call counters: RFC 8414 metadata, RFC 7662 introspection
//! (HTTP Basic client auth required), `/token` and `/register` that record what they got.
//! Real-IdP behaviour is covered by the oidc-provider end-to-end test.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub const CLIENT_ID: &str = "bridge-client";
pub const CLIENT_SECRET: &str = "bridge-secret";

/// Shared state of the stand-in.
#[derive(Default)]
pub struct IdpState {
    pub introspections: AtomicUsize,
    pub tokens_calls: AtomicUsize,
    pub register_calls: AtomicUsize,
    pub metadata_calls: AtomicUsize,
    /// Answer 500 to everything while set.
    pub down: AtomicBool,
    /// Delay before answering an introspection, in ms.
    pub introspect_delay_ms: AtomicU64,
    /// token → introspection answer; unknown tokens are inactive.
    pub tokens: Mutex<HashMap<String, Value>>,
    /// token → `/userinfo` document (tsidp returns policy-file `extraClaims` there).
    pub userinfo: Mutex<HashMap<String, Value>>,
    pub userinfo_calls: AtomicUsize,
    /// Answer 503 to `/userinfo` while set.
    pub userinfo_down: AtomicBool,
    /// What /token and /register received: (headers, body).
    pub last_token_request: Mutex<Option<(HashMap<String, String>, Bytes)>>,
}

pub struct Idp {
    pub addr: SocketAddr,
    pub state: Arc<IdpState>,
}

impl Idp {
    pub async fn start() -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(IdpState::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(req, st, addr).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Idp { addr, state }
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Register an active token for `sub` with the given audience.
    pub fn grant(&self, token: &str, sub: &str, aud: &[&str], exp_in: i64) {
        let exp = super::now() as i64 + exp_in;
        self.state.tokens.lock().unwrap().insert(
            token.to_string(),
            json!({
                "active": true, "sub": sub, "username": format!("{sub}@example.com"),
                "client_id": "claude-client", "aud": aud, "iss": self.issuer(), "exp": exp,
                "token_type": "Bearer",
            }),
        );
    }

    pub fn set(&self, token: &str, answer: Value) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(token.to_string(), answer);
    }

    /// What `/userinfo` answers for `token`.
    pub fn set_userinfo(&self, token: &str, doc: Value) {
        self.state
            .userinfo
            .lock()
            .unwrap()
            .insert(token.to_string(), doc);
    }

    pub fn introspections(&self) -> usize {
        self.state.introspections.load(Ordering::SeqCst)
    }
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    st: Arc<IdpState>,
    addr: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    if st.down.load(Ordering::SeqCst) {
        return reply(500, json!({"error": "server_error"}));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let issuer = format!("http://{addr}");
    match path.as_str() {
        "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration" => {
            st.metadata_calls.fetch_add(1, Ordering::SeqCst);
            reply(
                200,
                json!({
                    "issuer": issuer,
                    "authorization_endpoint": format!("{issuer}/authorize"),
                    "token_endpoint": format!("{issuer}/token"),
                    "registration_endpoint": format!("{issuer}/register"),
                    "introspection_endpoint": format!("{issuer}/introspect"),
                    "userinfo_endpoint": format!("{issuer}/userinfo"),
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["authorization_code", "refresh_token"],
                    "code_challenge_methods_supported": ["plain", "S256"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                }),
            )
        }
        "/introspect" => {
            st.introspections.fetch_add(1, Ordering::SeqCst);
            let delay = st.introspect_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            use base64_basic::encode;
            let want = format!("Basic {}", encode(&format!("{CLIENT_ID}:{CLIENT_SECRET}")));
            if headers.get("authorization") != Some(&want) {
                // tsidp answers inactive to callers it cannot identify.
                return reply(200, json!({"active": false}));
            }
            let form: HashMap<String, String> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            let token = form.get("token").cloned().unwrap_or_default();
            let answer = st
                .tokens
                .lock()
                .unwrap()
                .get(&token)
                .cloned()
                .unwrap_or(json!({"active": false}));
            reply(200, answer)
        }
        "/userinfo" => {
            st.userinfo_calls.fetch_add(1, Ordering::SeqCst);
            if st.userinfo_down.load(Ordering::SeqCst) {
                return reply(503, json!({"error": "temporarily_unavailable"}));
            }
            let token = headers
                .get("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or_default();
            match st.userinfo.lock().unwrap().get(token) {
                Some(doc) => reply(200, doc.clone()),
                None => reply(401, json!({"error": "invalid_token"})),
            }
        }
        "/token" => {
            st.tokens_calls.fetch_add(1, Ordering::SeqCst);
            *st.last_token_request.lock().unwrap() = Some((headers, body));
            reply(
                200,
                json!({"access_token": "new-token", "token_type": "Bearer", "expires_in": 300}),
            )
        }
        "/register" => {
            st.register_calls.fetch_add(1, Ordering::SeqCst);
            *st.last_token_request.lock().unwrap() = Some((headers, body));
            reply(
                201,
                json!({"client_id": "registered", "client_secret": "s"}),
            )
        }
        _ => reply(404, json!({"error": "not_found"})),
    }
}

/// Minimal base64 (standard alphabet, padded) for the Basic header check.
mod base64_basic {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub fn encode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
