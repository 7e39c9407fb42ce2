//! The broker's refusal paths, without tsidp: every object is made the way the broker
//! makes it, then presented wrongly.
#![allow(clippy::unwrap_used)]

use super::seal::KEY_LEN;
use super::*;

const ORIGIN: &str = "https://bridge.example";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn broker_with(keys: &[[u8; KEY_LEN]]) -> Broker {
    Broker::for_tests(
        KeyRing::from_keys(keys),
        ORIGIN,
        vec![
            Resource {
                path: "/mcp/a".into(),
                url: format!("{ORIGIN}/mcp/a"),
            },
            Resource {
                path: "/mcp/b".into(),
                url: format!("{ORIGIN}/mcp/b"),
            },
        ],
    )
}

fn broker() -> Broker {
    broker_with(&[[7; KEY_LEN]])
}

fn register(b: &Broker, body: Value) -> Value {
    let r = b.register(
        body.to_string().as_bytes(),
        Some("203.0.113.9".parse().unwrap()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn public_client(b: &Broker) -> String {
    register(
        b,
        json!({"redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none", "client_name": "CLI"}),
    )["client_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn location(r: &Reply) -> Option<url::Url> {
    r.headers
        .iter()
        .find(|(k, _)| *k == "location")
        .map(|(_, v)| url::Url::parse(v).unwrap())
}

fn param(u: &url::Url, k: &str) -> Option<String> {
    u.query_pairs()
        .find(|(x, _)| x == k)
        .map(|(_, v)| v.into_owned())
}

/// A code as `/oauth/consent` makes it.
fn code_for(b: &Broker, client: &str, resource: &str) -> String {
    let c = Code {
        j: b.keys.random(16).unwrap(),
        c: client.into(),
        ru: "http://127.0.0.1:5555/callback".into(),
        cc: pkce::challenge(VERIFIER),
        r: resource.into(),
        s: Some("1001".into()),
        u: Some("alice@example.com".into()),
        g: Some(json!(["a:search"])),
        t: Some("idp-refresh".into()),
        e: now() + 60,
    };
    b.seal(Kind::Code, &c).unwrap()
}

fn token_form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn public(id: &str) -> Presented {
    Presented {
        client_id: Some(id.into()),
        secret: None,
        basic: false,
    }
}

async fn redeem(b: &Broker, client: &str, code: &str, verifier: &str) -> Reply {
    b.token(
        &token_form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", "http://127.0.0.1:5555/callback"),
            ("client_id", client),
        ]),
        public(client),
        None,
    )
    .await
}

fn error_of(r: &Reply) -> String {
    serde_json::from_str::<Value>(&r.body).unwrap()["error"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn registration_table() {
    let b = broker();
    let cases: &[(Value, &str)] = &[
        (
            json!({"redirect_uris": ["http://evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (json!({}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": ["javascript:alert(1)"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}),
            "invalid_client_metadata",
        ),
        (json!([1, 2]), "invalid_client_metadata"),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let ip = Some(format!("203.0.113.{}", 100 + i).parse().unwrap());
        let r = b.register(body.to_string().as_bytes(), ip);
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(error_of(&r), *want, "{body}: {}", r.body);
    }
    // Public: no secret. Confidential: a secret that authenticates.
    let p = register(
        &b,
        json!({"redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"], "token_endpoint_auth_method": "none"}),
    );
    assert!(p.get("client_secret").is_none());
    assert!(p["client_id"].as_str().unwrap().starts_with("tbc_"));
}

#[test]
fn registration_is_rate_limited_per_address() {
    let b = broker(); // 3 per minute in tests
    let body = json!({"redirect_uris": ["https://a.example/cb"]}).to_string();
    let ip = Some("198.51.100.20".parse().unwrap());
    for _ in 0..3 {
        assert_eq!(b.register(body.as_bytes(), ip).status, 201);
    }
    let r = b.register(body.as_bytes(), ip);
    assert_eq!(r.status, 429);
    assert_eq!(
        b.register(body.as_bytes(), Some("198.51.100.21".parse().unwrap()))
            .status,
        201
    );
}

#[tokio::test]
async fn authorize_refusals_before_the_redirect_uri_is_known_are_pages() {
    let b = broker();
    let id = public_client(&b);
    let base = format!(
        "response_type=code&code_challenge={}&code_challenge_method=S256",
        pkce::challenge(VERIFIER)
    );
    let cases = [
        base.clone(), // no client_id
        format!("{base}&client_id=tbc_0000.AAAA&redirect_uri=http://127.0.0.1/callback"), // forged client
        format!("{base}&client_id={id}&redirect_uri=http://127.0.0.1:1/other"), // not registered
        format!("{base}&client_id={id}&redirect_uri=https://evil.example/callback"), // not registered
        format!("{base}&client_id={id}&client_id={id}"),                             // repeated
        format!("{base}&client_id=https://10.0.0.1/c.json"), // CIMD on a private address
    ];
    for q in cases {
        let r = b.authorize(Some(&q), None, None).await.unwrap();
        assert_eq!(r.status, 400, "{q}");
        assert!(location(&r).is_none(), "{q} redirected");
        assert_eq!(r.content_type, HTML);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| *k == "x-frame-options" && v == "DENY"));
    }
    // A client the broker does not own goes to tsidp untouched.
    assert!(b
        .authorize(Some(&format!("{base}&client_id=claude-static")), None, None)
        .await
        .is_none());
}

#[tokio::test]
async fn authorize_refusals_after_the_redirect_uri_go_back_with_iss() {
    let b = broker();
    let id = public_client(&b);
    let ch = pkce::challenge(VERIFIER);
    let ru = "http://127.0.0.1:4321/callback";
    let cases = [
        (format!("response_type=code&client_id={id}&redirect_uri={ru}&state=s1"), "invalid_request"), // no PKCE
        (format!("response_type=code&client_id={id}&redirect_uri={ru}&state=s1&code_challenge={VERIFIER}&code_challenge_method=plain"), "invalid_request"),
        (format!("response_type=token&client_id={id}&redirect_uri={ru}&state=s1&code_challenge={ch}&code_challenge_method=S256"), "unsupported_response_type"),
        (format!("response_type=code&client_id={id}&redirect_uri={ru}&state=s1&code_challenge={ch}&code_challenge_method=S256&resource=https://other.example/mcp"), "invalid_target"),
        (format!("response_type=code&client_id={id}&redirect_uri={ru}&state=s1&code_challenge={ch}&code_challenge_method=S256&resource={ORIGIN}/mcp/zzz"), "invalid_target"),
    ];
    for (q, want) in cases {
        let r = b.authorize(Some(&q), None, None).await.unwrap();
        assert_eq!(r.status, 302, "{q}");
        let l = location(&r).unwrap();
        assert_eq!(
            l.origin().ascii_serialization(),
            "http://127.0.0.1:4321",
            "{q}"
        );
        assert_eq!(param(&l, "error").as_deref(), Some(want), "{q}");
        assert_eq!(param(&l, "state").as_deref(), Some("s1"));
        assert_eq!(param(&l, "iss").as_deref(), Some(ORIGIN));
    }
}

#[tokio::test]
async fn errors_for_an_unconsented_web_client_are_pages_not_redirects() {
    let b = broker();
    let id = register(
        &b,
        json!({"redirect_uris": ["https://evil.example/x"], "token_endpoint_auth_method": "none"}),
    )["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    for q in [
        format!("response_type=x&client_id={id}&redirect_uri=https://evil.example/x"),
        format!("response_type=code&client_id={id}&redirect_uri=https://evil.example/x"),
        format!("response_type=code&client_id={id}&state=%0Abad"),
    ] {
        let r = b.authorize(Some(&q), None, None).await.unwrap();
        assert_eq!(r.status, 400, "{q}");
        assert!(
            location(&r).is_none(),
            "{q} redirected to the client's site"
        );
    }
    // A browser with too many sign-ins in progress.
    let ch = pkce::challenge(VERIFIER);
    let q =
        format!("response_type=code&client_id={id}&code_challenge={ch}&code_challenge_method=S256");
    let jar = (0..8)
        .map(|i| format!("tailbridge_flow_{i}=x"))
        .collect::<Vec<_>>()
        .join("; ");
    assert_eq!(
        b.authorize(Some(&q), Some(&jar), None)
            .await
            .unwrap()
            .status,
        429
    );
}

#[tokio::test]
async fn code_grant_refusals() {
    let b = broker();
    let a = public_client(&b);
    let other = public_client(&b);
    let code = code_for(&b, &a, &format!("{ORIGIN}/mcp/a"));
    // Wrong verifier, another client, another redirect URI, forged code, another resource.
    let r = redeem(
        &b,
        &a,
        &code,
        "wrong-verifier-wrong-verifier-wrong-verifier-x",
    )
    .await;
    assert_eq!((r.status, error_of(&r).as_str()), (400, "invalid_grant"));
    let r = redeem(&b, &other, &code, VERIFIER).await;
    assert_eq!(
        (r.status, error_of(&r).as_str()),
        (400, "invalid_grant"),
        "client B used client A's code"
    );
    let r = b
        .token(
            &token_form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", VERIFIER),
                ("redirect_uri", "http://127.0.0.1:5555/elsewhere"),
            ]),
            public(&a),
            None,
        )
        .await;
    assert_eq!(error_of(&r), "invalid_grant");
    let r = b
        .token(
            &token_form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", VERIFIER),
                ("resource", &format!("{ORIGIN}/mcp/b")),
            ]),
            public(&a),
            None,
        )
        .await;
    assert_eq!(error_of(&r), "invalid_target");
    let r = b
        .token(
            &token_form(&[("grant_type", "authorization_code"), ("code", &code)]),
            public(&a),
            None,
        )
        .await;
    assert_eq!(error_of(&r), "invalid_request", "missing verifier");
    let forged = code.replacen('.', ".A", 1);
    assert_eq!(
        error_of(&redeem(&b, &a, &forged, VERIFIER).await),
        "invalid_grant"
    );
    // A public client that sends a secret, an unknown client.
    let r = b
        .token(
            &token_form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", VERIFIER),
            ]),
            Presented {
                client_id: Some(a.clone()),
                secret: Some("x".into()),
                basic: true,
            },
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.headers.iter().any(|(k, _)| *k == "www-authenticate"));
    // None of the refusals used the code up: the right request works once, then never.
    let ok = redeem(&b, &a, &code, VERIFIER).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let v: Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert!(v["refresh_token"].as_str().unwrap().starts_with("tbr_"));
    assert!(ok
        .headers
        .iter()
        .any(|(k, v)| *k == "cache-control" && v == "no-store"));
    let replay = redeem(&b, &a, &code, VERIFIER).await;
    assert_eq!(
        (replay.status, error_of(&replay).as_str()),
        (400, "invalid_grant"),
        "code replay"
    );
}

#[tokio::test]
async fn confidential_clients_authenticate() {
    let b = broker();
    let reg = register(
        &b,
        json!({"redirect_uris": ["https://c.example/cb"], "token_endpoint_auth_method": "client_secret_basic"}),
    );
    let id = reg["client_id"].as_str().unwrap();
    let secret = reg["client_secret"].as_str().unwrap();
    let client = |s: Option<&str>| Presented {
        client_id: Some(id.into()),
        secret: s.map(str::to_string),
        basic: true,
    };
    assert!(b
        .authenticate_client(&client(Some(secret)), None)
        .await
        .is_ok());
    for bad in [None, Some("wrong"), Some("")] {
        assert_eq!(
            b.authenticate_client(&client(bad), None)
                .await
                .unwrap_err()
                .status,
            401,
            "{bad:?}"
        );
    }
    // Another broker key: neither the id nor the secret is accepted.
    let other = broker_with(&[[8; KEY_LEN]]);
    assert!(other
        .authenticate_client(&client(Some(secret)), None)
        .await
        .is_err());
}

#[tokio::test]
async fn access_tokens_are_bound_and_sealed() {
    let b = broker();
    let a = public_client(&b);
    let v: Value = serde_json::from_str(
        &redeem(
            &b,
            &a,
            &code_for(&b, &a, &format!("{ORIGIN}/mcp/a")),
            VERIFIER,
        )
        .await
        .body,
    )
    .unwrap();
    let at = v["access_token"].as_str().unwrap();
    let p = b.verify(at, &format!("{ORIGIN}/mcp/a")).unwrap();
    assert_eq!(p.username.as_deref(), Some("alice@example.com"));
    assert_eq!(p.sub.as_deref(), Some("1001"));
    assert_eq!(p.client_id.as_deref(), Some(a.as_str()));
    assert_eq!(p.tool_grants.len(), 1);
    assert_eq!(
        b.verify(at, &format!("{ORIGIN}/mcp/b")),
        Err(AuthError::WrongAudience)
    );
    // Tampered, of another kind, expired.
    // Another last character (never the same one: that would be the token itself).
    let last = if at.ends_with('A') { 'B' } else { 'A' };
    let tampered = format!("{}{last}", &at[..at.len() - 1]);
    assert_eq!(
        b.verify(&tampered, &format!("{ORIGIN}/mcp/a")),
        Err(AuthError::Inactive)
    );
    // Verified once, remembered: a token that shares the remembered tail but not the rest
    // is not taken for it.
    assert!(b.verify(at, &format!("{ORIGIN}/mcp/a")).is_ok());
    let tail = &at[at.len() - 22..];
    let forged = format!("{}{tail}", &at[..at.len() - 30].replacen('_', "-", 1));
    assert_ne!(forged, at);
    assert_eq!(
        b.verify(&forged, &format!("{ORIGIN}/mcp/a")),
        Err(AuthError::Inactive)
    );
    assert_eq!(
        b.verify(at, &format!("{ORIGIN}/mcp/b")),
        Err(AuthError::WrongAudience),
        "a remembered token is still checked against the endpoint"
    );
    let rt = v["refresh_token"].as_str().unwrap();
    assert_eq!(
        b.verify(rt, &format!("{ORIGIN}/mcp/a")),
        Err(AuthError::Inactive)
    );
    let expired = b
        .seal(
            Kind::AccessToken,
            &Access {
                s: None,
                u: None,
                c: a.clone(),
                r: ORIGIN.into(),
                g: None,
                e: now() - 1,
            },
        )
        .unwrap();
    assert_eq!(
        b.verify(&expired, &format!("{ORIGIN}/mcp/a")),
        Err(AuthError::Expired)
    );
    // An origin token is good on every endpoint.
    let all = b
        .seal(
            Kind::AccessToken,
            &Access {
                s: None,
                u: None,
                c: a.clone(),
                r: ORIGIN.into(),
                g: None,
                e: now() + 60,
            },
        )
        .unwrap();
    assert!(b.verify(&all, &format!("{ORIGIN}/mcp/b")).is_ok());
}

#[tokio::test]
async fn key_rotation() {
    let old = broker_with(&[[1; KEY_LEN]]);
    let a = public_client(&old);
    let v: Value = serde_json::from_str(
        &redeem(&old, &a, &code_for(&old, &a, ORIGIN), VERIFIER)
            .await
            .body,
    )
    .unwrap();
    let at = v["access_token"].as_str().unwrap();
    let rotated = broker_with(&[[2; KEY_LEN], [1; KEY_LEN]]);
    assert!(
        rotated.verify(at, &format!("{ORIGIN}/mcp/a")).is_ok(),
        "old key still opens"
    );
    assert!(matches!(rotated.client(&a, None).await, Ok(Some(_))));
    let dropped = broker_with(&[[2; KEY_LEN]]);
    assert_eq!(
        dropped.verify(at, &format!("{ORIGIN}/mcp/a")),
        Err(AuthError::Inactive)
    );
    assert!(dropped.client(&a, None).await.is_err());
}

/// A consent form and its browser's flow cookie, as `/oauth/callback` makes them.
fn consent_for(b: &Broker, client: &str) -> (String, String, String) {
    let flow = Flow {
        id: b.keys.random(12).unwrap(),
        b: b.keys.random(24).unwrap(),
        c: client.into(),
        ru: "http://127.0.0.1:5555/callback".into(),
        cc: pkce::challenge(VERIFIER),
        st: Some("client-state".into()),
        r: ORIGIN.into(),
        v: b.keys.random(32).unwrap(),
        e: now() + 600,
    };
    let cookie = format!(
        "{}={}",
        b.flow_cookie_name(&flow.id),
        b.seal(Kind::Flow, &flow).unwrap()
    );
    let csrf = b.keys.mac("csrf", flow.b.as_bytes());
    let c = Consent {
        f: flow,
        s: Some("1001".into()),
        u: Some("alice@example.com".into()),
        g: None,
        t: Some("rt".into()),
        e: now() + 600,
    };
    (b.seal(Kind::Consent, &c).unwrap(), cookie, csrf)
}

fn consent_body(consent: &str, csrf: &str, decision: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("consent", consent)
        .append_pair("csrf", csrf)
        .append_pair("confirm", "yes")
        .append_pair("decision", decision)
        .finish()
}

#[tokio::test]
async fn consent_refusals() {
    let b = broker();
    let a = public_client(&b);
    let (consent, cookie, csrf) = consent_for(&b, &a);
    let (_, other_cookie, other_csrf) = consent_for(&b, &a);
    let cases: Vec<(String, Option<String>, Option<&str>, u16)> = vec![
        (consent_body(&consent, &csrf, "allow"), None, None, 400), // no flow cookie
        (
            consent_body(&consent, &other_csrf, "allow"),
            Some(cookie.clone()),
            None,
            400,
        ), // CSRF of another flow
        (
            consent_body(&consent, "AAAA", "allow"),
            Some(cookie.clone()),
            None,
            400,
        ), // bad CSRF
        (
            consent_body(&consent, &csrf, "allow"),
            Some(other_cookie.clone()),
            None,
            400,
        ), // another browser's cookie
        (
            consent_body(&consent, &csrf, "allow"),
            Some(cookie.clone()),
            Some("https://evil.example"),
            403,
        ),
        (
            consent_body(&consent, &csrf, "allow"),
            Some(cookie.clone()),
            Some("null"),
            403,
        ),
        (
            consent_body(&consent, &csrf, "allow").replace("&confirm=yes", ""),
            Some(cookie.clone()),
            None,
            400,
        ), // not confirmed
        (
            consent_body(&format!("{consent}x"), &csrf, "allow"),
            Some(cookie.clone()),
            None,
            400,
        ),
        (
            consent_body(&consent, &csrf, "maybe"),
            Some(cookie.clone()),
            None,
            400,
        ),
        (
            format!("consent={consent}"),
            Some(cookie.clone()),
            None,
            400,
        ),
    ];
    for (body, cookies, origin, want) in cases {
        let r = b.consent(&body, cookies.as_deref(), origin).await;
        assert_eq!(r.status, want, "{body:.40} {cookies:?} {origin:?}");
        assert!(location(&r).is_none());
    }
    // Deny: back to the client with access_denied, state and iss; the cookie is cleared.
    let r = b
        .consent(
            &consent_body(&consent, &csrf, "deny"),
            Some(&cookie),
            Some(ORIGIN),
        )
        .await;
    let l = location(&r).unwrap();
    assert_eq!(param(&l, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&l, "state").as_deref(), Some("client-state"));
    assert_eq!(param(&l, "iss").as_deref(), Some(ORIGIN));
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| *k == "set-cookie" && v.contains("Max-Age=0")));
    // Allow: a code that redeems.
    let r = b
        .consent(&consent_body(&consent, &csrf, "allow"), Some(&cookie), None)
        .await;
    let l = location(&r).unwrap();
    assert_eq!(param(&l, "iss").as_deref(), Some(ORIGIN));
    let code = param(&l, "code").unwrap();
    assert_eq!(redeem(&b, &a, &code, VERIFIER).await.status, 200);
}

#[test]
fn metadata_document() {
    let m = broker().metadata();
    assert_eq!(m["issuer"], ORIGIN);
    assert_eq!(m["authorization_endpoint"], format!("{ORIGIN}/authorize"));
    assert_eq!(m["registration_endpoint"], format!("{ORIGIN}/register"));
    assert_eq!(m["client_id_metadata_document_supported"], true);
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert!(m["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("none")));
    assert!(!m["scopes_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("offline_access")));
}

#[test]
fn credentials_table() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let body = token_form(&[("client_id", "c1")]);
    assert_eq!(
        presented(None, &body).unwrap(),
        Presented {
            client_id: Some("c1".into()),
            secret: None,
            basic: false
        }
    );
    let basic = format!("Basic {}", b64("c%3A1:s%2B"));
    let p = presented(Some(&basic), &[]).unwrap();
    assert_eq!(
        (p.client_id.as_deref(), p.secret.as_deref(), p.basic),
        (Some("c:1"), Some("s+"), true)
    );
    assert!(presented(
        Some(&format!("Basic {}", b64("c1:s"))),
        &token_form(&[("client_id", "c2")])
    )
    .is_err());
    assert!(presented(
        Some(&format!("Basic {}", b64("c1:s"))),
        &token_form(&[("client_secret", "s")])
    )
    .is_err());
    assert!(presented(Some("Basic !!!"), &[]).is_err());
    assert!(presented(None, &token_form(&[("client_id", "a"), ("client_id", "b")])).is_err());
}

#[test]
fn cookies_and_params() {
    assert_eq!(
        cookie(Some("a=1; tailbridge_flow_x=v; b=2"), "tailbridge_flow_x"),
        Some("v")
    );
    assert_eq!(cookie(Some("a=1"), "b"), None);
    assert_eq!(cookie(None, "b"), None);
    assert_eq!(
        with_params(
            "http://127.0.0.1:5/cb?x=1",
            &[("code", "a b"), ("iss", "https://h")]
        ),
        "http://127.0.0.1:5/cb?x=1&code=a+b&iss=https%3A%2F%2Fh"
    );
    assert_eq!(
        with_params(
            "cursor://anysphere.cursor-mcp/oauth/callback",
            &[("code", "c")]
        ),
        "cursor://anysphere.cursor-mcp/oauth/callback?code=c"
    );
}
