//! The OAuth resource server through the running binary, against the IdP stand-in.

use crate::common::idp::{Idp, CLIENT_ID, CLIENT_SECRET};
use crate::common::*;
use std::sync::atomic::Ordering;

pub(crate) fn auth_config(idp: &Idp, up: &Upstream, extra_auth: &str) -> String {
    format!(
        concat!(
            "tailnet:\n  mode: direct\n",
            "auth:\n  issuer: {iss}\n  audience: https://mcp.example.com\n",
            "  introspection_url: {iss}/introspect\n  client_id: {cid}\n  client_secret_env: TB_TEST_IDP_SECRET\n",
            "  allow_loopback_idp: true\n{extra}",
            "endpoints:\n  - path: /mcp/a\n    target: {a}\n  - path: /mcp/b\n    target: {b}\n"
        ),
        iss = idp.issuer(),
        cid = CLIENT_ID,
        extra = extra_auth,
        a = up.url("/up/a"),
        b = up.url("/up/b"),
    )
}

async fn bridge(idp: &Idp, up: &Upstream, extra_auth: &str) -> Bridge {
    Bridge::start_with_env(
        "",
        &auth_config(idp, up, extra_auth),
        &[("TB_TEST_IDP_SECRET", CLIENT_SECRET)],
    )
    .await
}

const AUD: &[&str] = &["claude-client", "https://mcp.example.com/"];

/// POST `{}` to `/mcp/a` with `token` as bearer; the status code.

#[tokio::test]
async fn discovery_documents_and_challenges() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(&idp, &up, "").await;
    let c = client();

    let r = c
        .get(b.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["resource"], "https://mcp.example.com");
    assert_eq!(
        v["authorization_servers"],
        serde_json::json!(["https://mcp.example.com"])
    );
    assert_eq!(
        v["scopes_supported"],
        serde_json::json!(["openid", "profile", "email"])
    );

    let v: serde_json::Value =
        get_json(&b.url("/.well-known/oauth-protected-resource/mcp/a")).await;
    assert_eq!(v["resource"], "https://mcp.example.com/mcp/a");
    assert_eq!(
        c.get(b.url("/.well-known/oauth-protected-resource/mcp/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // 401 without a token, pointing at the endpoint's own document, no error attribute.
    let r = c.post(b.url("/mcp/b")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp/b\""
    );
    // A bad token adds error="invalid_token".
    let r = post_bearer(&b, "unknown").await;
    assert_eq!(r.status(), 401);
    let wa = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(wa.contains("error=\"invalid_token\""), "{wa}");
    assert!(
        wa.contains("/.well-known/oauth-protected-resource/mcp/a\""),
        "{wa}"
    );
    // Tokens in the query string are refused.
    let r = c
        .post(b.url("/mcp/a?access_token=x"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // AS metadata: tsidp's document, rewritten for the bridge origin.
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let v: serde_json::Value = get_json(&b.url(path)).await;
        assert_eq!(v["issuer"], "https://mcp.example.com", "{path}");
        assert_eq!(v["token_endpoint"], "https://mcp.example.com/token");
        assert!(
            v.get("registration_endpoint").is_none(),
            "registration is off by default"
        );
        // At the bridge (same origin as issuer); it answers with a 302 to tsidp's.
        assert_eq!(
            v["authorization_endpoint"],
            "https://mcp.example.com/authorize"
        );
        assert_eq!(
            v["code_challenge_methods_supported"],
            serde_json::json!(["plain", "S256"])
        );
    }
    assert!(up.seen().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn valid_token_reaches_upstream_without_passthrough() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(&idp, &up, "").await;
    idp.grant("tok-alice", "1001", AUD, 300);
    let r = client()
        .post(b.url("/mcp/a"))
        .bearer_auth("tok-alice")
        .header("X-Tailbridge-Subject", "0")
        .header("x-tailbridge-user", "admin@example.com")
        .header("X-Tailbridge-Client-Id", "spoofed")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert!(
        seen.header("authorization").is_none(),
        "the client's token must not reach the upstream"
    );
    assert_eq!(seen.headers["x-tailbridge-subject"], ["1001"]);
    assert_eq!(seen.headers["x-tailbridge-user"], ["1001@example.com"]);
    assert_eq!(seen.headers["x-tailbridge-client-id"], ["claude-client"]);
    wait_for_metrics(
        &b,
        &[
            "tailbridge_introspections_total{outcome=\"active\"} 1",
            "tailbridge_token_cache_requests_total{result=\"miss\"} 1",
        ],
    )
    .await;
    // Cached: a second request does not introspect again.
    client()
        .post(b.url("/mcp/b"))
        .bearer_auth("tok-alice")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(idp.introspections(), 1);
    // Access lines are written in batches: wait for this one.
    let log = b.wait_for_log("client_id=claude-client").await;
    assert!(
        log.contains("sub=1001") && log.contains("client_id=claude-client"),
        "{log}"
    );
    assert!(!log.contains("tok-alice"), "tokens must never be logged");
}

#[tokio::test]
async fn single_flight_and_negative_cache() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(&idp, &up, "").await;
    idp.grant("tok-burst", "7", AUD, 300);
    // Slow introspection so that the 100 requests overlap.
    idp.state.introspect_delay_ms.store(300, Ordering::SeqCst);
    let c = client();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (c, url) = (c.clone(), b.url("/mcp/a"));
        set.spawn(async move {
            c.post(url)
                .bearer_auth("tok-burst")
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 200);
    }
    assert_eq!(
        idp.introspections(),
        1,
        "100 concurrent requests with one new token"
    );
    idp.state.introspect_delay_ms.store(0, Ordering::SeqCst);
    // Inactive tokens are remembered for a short while.
    for _ in 0..3 {
        assert_eq!(post_with_token(&b, "tok-nope").await, 401);
    }
    assert_eq!(idp.introspections(), 2);
}

#[tokio::test]
async fn cache_ttl_follows_config_and_expiry() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(
        &idp,
        &up,
        "  cache:\n    max_ttl: 1s\n    negative_ttl: 1s\n",
    )
    .await;
    idp.grant("tok-ttl", "9", AUD, 300);
    assert_eq!(post_with_token(&b, "tok-ttl").await, 200);
    assert_eq!(post_with_token(&b, "tok-ttl").await, 200);
    assert_eq!(idp.introspections(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    // The entry expired: the next request introspects again, and sees the revocation.
    idp.set("tok-ttl", serde_json::json!({"active": false}));
    assert_eq!(post_with_token(&b, "tok-ttl").await, 401);
    assert_eq!(idp.introspections(), 2);
    // A token whose exp has passed is refused even if introspection says active.
    idp.set(
        "tok-old",
        serde_json::json!({"active": true, "exp": now() - 10, "aud": AUD, "iss": idp.issuer()}),
    );
    let r = post_bearer(&b, "tok-old").await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn idp_down_gives_503_but_cached_tokens_keep_working() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(&idp, &up, "").await;
    idp.grant("tok-cached", "5", AUD, 300);
    assert_eq!(post_with_token(&b, "tok-cached").await, 200);
    idp.state.down.store(true, Ordering::SeqCst);
    let r = post_bearer(&b, "tok-new").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert!(
        r.headers().get("www-authenticate").is_none(),
        "a 503 must not trigger re-authorization"
    );
    assert_eq!(post_with_token(&b, "tok-cached").await, 200);
    // Failures are not cached: once the IdP is back, the token works.
    idp.state.down.store(false, Ordering::SeqCst);
    idp.grant("tok-new", "6", AUD, 300);
    assert_eq!(post_with_token(&b, "tok-new").await, 200);
}

#[tokio::test]
async fn audience_issuer_and_client_checks() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(&idp, &up, "  allowed_client_ids: [claude-client]\n").await;
    let c = client();
    let base = |aud: serde_json::Value, iss: String, cid: &str| serde_json::json!({"active": true, "aud": aud, "iss": iss, "client_id": cid, "sub": "1", "exp": now() + 300});
    idp.set(
        "t-aud",
        base(
            serde_json::json!(["claude-client"]),
            idp.issuer(),
            "claude-client",
        ),
    );
    idp.set(
        "t-aud-str",
        base(
            serde_json::json!("https://mcp.example.com"),
            idp.issuer(),
            "claude-client",
        ),
    );
    idp.set(
        "t-iss",
        base(
            serde_json::json!(AUD),
            "https://evil.example".into(),
            "claude-client",
        ),
    );
    idp.set(
        "t-cid",
        base(
            serde_json::json!(AUD),
            format!("{}/", idp.issuer()),
            "other-client",
        ),
    );
    let url = b.url("/mcp/a");
    let status = |t: &'static str| bearer_status(&c, &url, t);
    assert_eq!(status("t-aud").await, 401);
    assert_eq!(status("t-aud-str").await, 200);
    assert_eq!(status("t-iss").await, 401);
    assert_eq!(status("t-cid").await, 403);
    wait_for_metrics(
        &b,
        &[
            "tailbridge_auth_rejections_total{reason=\"wrong_audience\"} 1",
            "tailbridge_auth_rejections_total{reason=\"wrong_issuer\"} 1",
            "tailbridge_auth_rejections_total{reason=\"client_not_allowed\"} 1",
        ],
    )
    .await;
}

#[tokio::test]
async fn authorize_redirect_and_token_proxy() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(&idp, &up, "").await;
    let c = client();
    let q = "response_type=code&client_id=c%20d&redirect_uri=https%3A%2F%2Fclaude.ai%2Fapi%2Fmcp%2Fauth_callback&state=a%2Bb&code_challenge=xyz&code_challenge_method=S256&resource=https%3A%2F%2Fmcp.example.com%2F";
    let r = c
        .get(b.url(&format!("/authorize?{q}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        format!("{}/authorize?{q}", idp.issuer())
    );

    let body = "grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fclaude.ai%2Fapi%2Fmcp%2Fauth_callback&resource=https%3A%2F%2Fmcp.example.com%2F";
    let r = c
        .post(b.url("/token"))
        .basic_auth("claude-client", Some("claude-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("Forwarded", "for=6.6.6.6")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["access_token"], "new-token");
    let (headers, got) = idp
        .state
        .last_token_request
        .lock()
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(
        &got[..],
        body.as_bytes(),
        "the body reaches tsidp untouched"
    );
    assert_eq!(
        headers["authorization"],
        "Basic Y2xhdWRlLWNsaWVudDpjbGF1ZGUtc2VjcmV0"
    );
    assert!(headers["accept"].contains("application/json"));
    for h in [
        "x-forwarded-for",
        "forwarded",
        "x-real-ip",
        "x-forwarded-host",
    ] {
        assert!(!headers.contains_key(h), "{h} reached tsidp");
    }
    assert_eq!(headers["host"], idp.addr.to_string());
    assert_eq!(c.get(b.url("/token")).send().await.unwrap().status(), 405);
    // /register is off by default; other tsidp paths are not reachable.
    assert_eq!(post_status(&b.url("/register")).await, 404);
    assert_eq!(
        c.get(b.url("/introspect")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        c.get(b.url("/clients/")).send().await.unwrap().status(),
        404
    );
    assert_eq!(idp.state.register_calls.load(Ordering::SeqCst), 0);
    wait_for_metrics(
        &b,
        &["tailbridge_token_endpoint_requests_total{status_class=\"2xx\"} 1"],
    )
    .await;
}

#[tokio::test]
async fn token_is_never_retried() {
    // An IdP that reads the request and drops the connection.
    let (addr, got) = request_swallower(b"POST /token").await;
    let up = Upstream::start().await;
    let body = format!(
        "tailnet:\n  mode: direct\nauth:\n  issuer: http://{addr}\n  audience: https://mcp.example.com\n  introspection_url: http://{addr}/introspect\n  client_id: c\n  client_secret: s\n  allow_loopback_idp: true\nendpoints:\n  - path: /mcp/a\n    target: {}\n",
        up.url("/")
    );
    let b = Bridge::start("", &body).await;
    let r = client()
        .post(b.url("/token"))
        .body("grant_type=refresh_token&refresh_token=once")
        .send()
        .await
        .unwrap();
    // The IdP failed mid-answer: 503 with Retry-After (a dead IdP), never a second call.
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(got.load(Ordering::SeqCst), 1, "/token was retried");
    // Metadata cannot be fetched from this IdP: 503, not a made-up document.
    let r = client()
        .get(b.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn registration_when_enabled_is_restricted_and_rate_limited() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let extra = "  registration:\n    enabled: true\n    allowed_redirect_uris: [\"https://claude.ai/api/mcp/auth_callback\"]\n    per_minute: 2\n";
    let b = bridge(&idp, &up, extra).await;
    let c = client();
    let v: serde_json::Value = get_json(&b.url("/.well-known/oauth-authorization-server")).await;
    assert_eq!(
        v["registration_endpoint"],
        "https://mcp.example.com/register"
    );
    let evil =
        serde_json::json!({"redirect_uris": ["https://evil.example/cb"], "client_name": "x"});
    assert_eq!(
        c.post(b.url("/register"))
            .json(&evil)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let mixed = serde_json::json!({"redirect_uris": ["https://claude.ai/api/mcp/auth_callback", "https://evil.example/cb"]});
    assert_eq!(
        c.post(b.url("/register"))
            .json(&mixed)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(idp.state.register_calls.load(Ordering::SeqCst), 0);
    let good = serde_json::json!({"redirect_uris": ["https://claude.ai/api/mcp/auth_callback"]});
    // per_minute: 2 → two registrations pass, the third is rate-limited.
    for want in [201, 201, 429] {
        let r = c.post(b.url("/register")).json(&good).send().await.unwrap();
        assert_eq!(r.status(), want);
    }
    assert_eq!(idp.state.register_calls.load(Ordering::SeqCst), 2);
}

/// A proxied registration asking for a public client is registered as client_secret_post
/// (tsidp would store a public client that can never get a token).
#[tokio::test]
async fn a_public_client_registration_is_registered_with_a_secret() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let extra = "  registration:\n    enabled: true\n    allowed_redirect_uris: [\"http://127.0.0.1/callback\"]\n";
    let b = bridge(&idp, &up, extra).await;
    let public = serde_json::json!({
        "redirect_uris": ["http://127.0.0.1:53682/callback/b1946ac9"],
        "token_endpoint_auth_method": "none",
        "client_name": "cli",
    });
    let r = client()
        .post(b.url("/register"))
        .json(&public)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "a loopback callback on any port, under the listed path"
    );
    let (_, body) = idp
        .state
        .last_token_request
        .lock()
        .unwrap()
        .clone()
        .unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        sent["token_endpoint_auth_method"], "client_secret_post",
        "{sent}"
    );
    assert_eq!(sent["client_name"], "cli");
}

/// With registration off, /register says so and names the fix; HEAD on a protected
/// endpoint gets the 401 challenge, not 405.
#[tokio::test]
async fn register_off_says_how_and_head_gets_the_challenge() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(&idp, &up, "").await;
    let r = client()
        .post(b.url("/register"))
        .json(&serde_json::json!({"redirect_uris": ["https://claude.ai/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "registration_disabled");
    let why = v["error_description"].as_str().unwrap();
    assert!(
        why.contains("auth.broker") && why.contains("auth.registration"),
        "{why}"
    );
    let r = client().head(b.url("/mcp/a")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer resource_metadata="));
    // With a valid token, HEAD is still not a method MCP endpoints serve.
    idp.grant("tok-head", "1001", &["https://mcp.example.com"], 300);
    let r = client()
        .head(b.url("/mcp/a"))
        .bearer_auth("tok-head")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn random_token_flood_stays_within_caps() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(&idp, &up, "  introspection:\n    per_client_rate: 1\n    per_client_burst: 10\n    max_concurrent: 4\n").await;
    idp.state.introspect_delay_ms.store(20, Ordering::SeqCst);
    let c = client();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (c, url) = (c.clone(), b.url("/mcp/a"));
        set.spawn(async move {
            vec![c
                .post(url)
                .bearer_auth(format!("random-{i}"))
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()]
        });
    }
    let by_status = tally(set).await;
    let calls = idp.introspections();
    // Burst of 10 plus 1/s refill while the flood lasts.
    assert!(
        calls <= 20,
        "{calls} introspections for a flood of 300 random tokens: {by_status:?}"
    );
    assert!(
        by_status.get(&429).copied().unwrap_or(0) >= 250,
        "{by_status:?}"
    );
    assert_eq!(by_status.get(&200), None);
}

#[tokio::test]
async fn wrong_bridge_credentials_are_reported_loudly() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = Bridge::start_with_env(
        "",
        &auth_config(&idp, &up, ""),
        &[("TB_TEST_IDP_SECRET", "wrong")],
    )
    .await;
    idp.grant("tok-real", "1", AUD, 300);
    for i in 0..12 {
        let t = if i == 0 {
            "tok-real".to_string()
        } else {
            format!("t{i}")
        };
        let r = post_bearer(&b, &t).await;
        assert_eq!(r.status(), 401);
    }
    b.wait_for_log("AUTH MISCONFIGURED").await;
}

#[tokio::test]
async fn many_active_tokens_from_one_address_are_never_throttled() {
    // All of Claude.ai's users come from a few addresses: 200 new, active tokens from one
    // address within seconds must not be refused (only bad misses spend a client's budget).
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(&idp, &up, "").await;
    for i in 0..200 {
        idp.grant(&format!("user-token-{i}"), &format!("{i}"), AUD, 300);
    }
    let c = client();
    let mut set = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    for i in 0..200 {
        let (c, url, sem) = (c.clone(), b.url("/mcp/a"), sem.clone());
        set.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            vec![c
                .post(url)
                .bearer_auth(format!("user-token-{i}"))
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()]
        });
    }
    let by_status = tally(set).await;
    assert_eq!(by_status.get(&200), Some(&200), "{by_status:?}");
    assert_eq!(idp.introspections(), 200);
}

#[tokio::test]
async fn random_tokens_from_many_addresses_are_capped_globally() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(
        &idp,
        &up,
        "  introspection:\n    global_rate: 1\n    global_burst: 20\n",
    )
    .await;
    let mut set = tokio::task::JoinSet::new();
    for a in 0..250u32 {
        // 127.0.1.0/24 and 127.0.2.0/24: loopback source addresses, one client each.
        let c = client_from([127, 0, 1 + (a / 200) as u8, (a % 200 + 1) as u8].into());
        let url = b.url("/mcp/a");
        set.spawn(async move {
            let mut out = Vec::new();
            for i in 0..4 {
                let r = c
                    .post(&url)
                    .bearer_auth(format!("random-{a}-{i}"))
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                out.push(r.status().as_u16());
            }
            out
        });
    }
    let by_status = tally(set).await;
    let calls = idp.introspections();
    // Every miss spends from the global budget (20 + 1/s), whatever its address.
    assert!(
        calls <= 250 + 20 + 30,
        "{calls} introspections for 1000 random tokens from 250 addresses: {by_status:?}"
    );
    assert!(
        by_status.get(&429).copied().unwrap_or(0) >= 600,
        "{by_status:?}"
    );
    // The access log sees each source address.
    b.wait_for_log("127.0.2.50").await;
}

#[tokio::test]
async fn every_refusal_says_what_is_wrong() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let b = bridge(&idp, &up, "  allowed_client_ids: [\"claude-client\"]\n").await;
    idp.grant("tok-expired", "1", AUD, -5);
    idp.grant(
        "tok-other-aud",
        "1",
        &["claude-client", "https://elsewhere.example/"],
        300,
    );
    let mut other_client = serde_json::json!({
        "active": true, "sub": "1", "client_id": "someone-else", "iss": idp.issuer(),
        "aud": AUD, "exp": now() + 300,
    });
    other_client["username"] = "u".into();
    idp.set("tok-other-client", other_client);
    let cases: &[(Option<&str>, u16, &str)] = &[
        (Some("tok-unknown"), 401, "token is not active"),
        (Some("tok-expired"), 401, "token"),
        (
            Some("tok-other-aud"),
            401,
            "token audience does not include https://mcp.example.com",
        ),
        (
            Some("tok-other-client"),
            403,
            "the client that obtained this token is not in auth.allowed_client_ids",
        ),
    ];
    for (token, status, want) in cases {
        let r = post_bearer(&b, token.unwrap()).await;
        assert_eq!(r.status().as_u16(), *status, "{token:?}");
        let www = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            www.contains(&format!("error_description=\"{want}")),
            "{token:?}: {www}"
        );
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(
            v["error_description"].as_str().unwrap().contains(want),
            "{v}"
        );
    }
    // No token: the challenge names the metadata, and no error (RFC 6750 §3.1).
    let r = client()
        .post(b.url("/mcp/a"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(!r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error="));
    // The identity provider down: 503, and the body says so.
    idp.state.down.store(true, Ordering::SeqCst);
    let r = post_bearer(&b, "tok-new-while-down").await;
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["error_description"],
        "the identity provider is unreachable; retry later"
    );
}
