//! The OAuth broker end to end: real MCP clients that know only the endpoint URL, real
//! headless Chromium for the tsidp leg and the consent page, oidc-provider configured like
//! tsidp (confidential clients only, single-use refresh tokens), the MCP SDK server upstream.

use crate::common::*;
use crate::e2e::{run_script, start_node, start_sdk_server, Node};
use serde_json::{json, Value};

/// The document URL a pinned CIMD client uses in these tests (never fetched).
const PINNED_CIMD: &str = "https://e2e-client.example/oauth/client.json";
const CLIENT_REDIRECT: &str = "http://127.0.0.1:9/callback";

struct Setup {
    bridge: Bridge,
    idp_issuer: String,
    upstream_port: u16,
    _nodes: (Node, Node),
}

/// oidc-provider as tsidp with the bridge's own confidential client, the SDK server, and a
/// bridge with the broker on. `broker_extra`: YAML lines added under `auth.broker`.
async fn setup(broker_extra: &str) -> Setup {
    setup_with(
        broker_extra,
        free_port(),
        &temp_dir("broker-key").join("broker.key"),
    )
    .await
}

/// `setup` on a given port with a given key file (fleets and restarts).
async fn setup_with(broker_extra: &str, port: u16, key: &std::path::Path) -> Setup {
    let clients = json!([
        {"client_id": "bridge", "client_secret": "bridge-secret",
         "redirect_uris": [format!("http://127.0.0.1:{port}/oauth/callback")]},
    ]);
    let (idp, idp_port) = start_node("idp.mjs", &[("CLIENTS", &clients.to_string())]);
    let (server, upstream_port) = start_sdk_server();
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let body = format!(
        concat!(
            "tailnet:\n  mode: direct\n",
            "auth:\n  issuer: {iss}\n  audience: http://127.0.0.1:{port}\n",
            "  introspection_url: {iss}/token/introspection\n",
            "  client_id: bridge\n  client_secret_env: TB_BROKER_SECRET\n  allow_loopback_idp: true\n",
            "  broker:\n    enabled: true\n    key_file: {key}\n",
            "    cimd:\n      pinned:\n        - client_id: \"{pinned}\"\n          client_name: Pinned E2E\n          redirect_uris: [\"{redirect}\"]\n",
            "{extra}",
            "endpoints:\n  - name: sdk\n    path: /mcp/sdk\n    target: http://127.0.0.1:{up}/mcp\n",
        ),
        iss = issuer,
        port = port,
        key = key.display(),
        pinned = PINNED_CIMD,
        redirect = CLIENT_REDIRECT,
        extra = broker_extra,
        up = upstream_port,
    );
    let bridge = Bridge::start_on(
        port,
        "  public_url: http://127.0.0.1:{BRIDGE_PORT}\n",
        &body,
        &[("TB_BROKER_SECRET", "bridge-secret")],
    )
    .await;
    Setup {
        bridge,
        idp_issuer: issuer,
        upstream_port,
        _nodes: (idp, server),
    }
}

/// Run broker-client.mjs; its summary or its output.
async fn broker_client(url: String, mode: String, decision: &'static str) -> Result<Value, String> {
    run_script("broker-client.mjs", vec![url, mode, decision.to_string()]).await
}

#[tokio::test]
async fn sdk_client_registers_as_a_public_client_consents_in_chromium_and_refreshes() {
    let s = setup("").await;
    let b = &s.bridge;
    let origin = format!("http://127.0.0.1:{}", b.port);
    let v = broker_client(b.url("/mcp/sdk"), "dcr".into(), "allow")
        .await
        .unwrap_or_else(|e| panic!("{e}\nbridge log:\n{}", b.stderr()));
    // Registered at the bridge as a public client (never at tsidp).
    let reg = &v["registered"];
    assert!(
        reg["client_id"].as_str().unwrap().starts_with("tbc_"),
        "{v}"
    );
    assert_eq!(reg["token_endpoint_auth_method"], "none");
    assert!(reg.get("client_secret").is_none());
    // The browser went bridge → tsidp → bridge; the consent page named client, user, resource.
    assert!(v["authorizeUrl"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{origin}/authorize?")));
    let c = &v["consent"];
    assert_eq!(c["client"], "Broker E2E", "{v}");
    assert_eq!(c["user"], "alice@example.com");
    assert_eq!(c["redirectHost"], "127.0.0.1:9");
    assert_eq!(c["endpoints"], "/mcp/sdk");
    let flow = c["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"].as_str().unwrap().starts_with("tailbridge_flow_"))
        .unwrap();
    assert_eq!(flow["httpOnly"], true);
    assert_eq!(flow["sameSite"], "Lax");
    // RFC 9207: iss on the authorization response; the client's state came back.
    assert_eq!(v["callback"]["iss"], origin);
    // The SDK sends no `state`; none comes back.
    assert!(v["callback"].get("state").is_none(), "{v}");
    assert_eq!(v["metadata"]["issuer"], origin);
    assert_eq!(
        v["metadata"]["authorization_endpoint"],
        format!("{origin}/authorize")
    );
    assert_eq!(v["metadata"]["cimd"], true);
    assert_eq!(v["metadata"]["iss"], true);
    // The broker's own token, with its own lifetime; MCP calls before and after a refresh.
    assert_eq!(v["tokenPrefix"], "tba_");
    assert_eq!(v["expiresIn"], 3600);
    assert_eq!(v["first"]["tools"], json!(["count", "echo"]));
    assert_eq!(v["first"]["echo"], "first");
    assert_eq!(v["refreshed"], true);
    assert_eq!(
        v["concurrentSame"], true,
        "two refreshes with one token: {v}"
    );
    assert_eq!(v["after-refresh"]["echo"], "after-refresh");
    // tsidp saw one code exchange and ONE refresh (its refresh tokens are single-use).
    let idp: Value = get_json(&format!("{}/stats", s.idp_issuer)).await;
    assert_eq!(idp["tokens"], 2, "{idp}");
    // Identity headers upstream: the user and the downstream (broker) client id.
    let up: Value = get_json(&format!("http://127.0.0.1:{}/stats", s.upstream_port)).await;
    assert!(
        up["authorization"].as_array().unwrap().is_empty(),
        "token passthrough: {up}"
    );
    assert!(up["users"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u == "alice@example.com"));
    assert!(
        up["clientIds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c == &reg["client_id"]),
        "{up}"
    );
    wait_for_metrics(
        b,
        &[
            "tailbridge_oauth_authorizations_total{outcome=\"started\"} 1",
            "tailbridge_oauth_consents_total{decision=\"allow\"} 1",
            "tailbridge_oauth_registrations_total{outcome=\"ok\"} 1",
            "tailbridge_oauth_tokens_total{grant=\"authorization_code\",outcome=\"ok\"} 1",
            "tailbridge_oauth_tokens_total{grant=\"refresh_token\",outcome=\"ok\"} 1",
            "tailbridge_oauth_tokens_total{grant=\"refresh_token\",outcome=\"reused\"} 1",
        ],
    )
    .await;
    // No introspection for broker tokens: they are verified locally.
    let m = reqwest::get(b.admin("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !m.contains("tailbridge_introspections_total{outcome=\"active\"} 1"),
        "{m}"
    );
    b.wait_for_log("\"event\":\"oauth.authorization_granted\"")
        .await;
    // The status page lists the grant.
    let page = reqwest::get(b.admin("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<h2>OAuth broker</h2>"), "{page}");
    assert!(
        page.contains("<td>granted</td><td>alice@example.com</td><td>Broker E2E (registered tbc_"),
        "{page}"
    );
}

#[tokio::test]
async fn deny_on_the_consent_page_sends_access_denied_back() {
    let s = setup("").await;
    let b = &s.bridge;
    let err = broker_client(b.url("/mcp/sdk"), "dcr".into(), "deny")
        .await
        .unwrap_err();
    assert!(err.contains("error=access_denied"), "{err}");
    assert!(
        err.contains(&format!("iss=http%3A%2F%2F127.0.0.1%3A{}", b.port)),
        "{err}"
    );
    wait_for_metrics(b, &["tailbridge_oauth_consents_total{decision=\"deny\"} 1"]).await;
}

#[tokio::test]
async fn a_pinned_client_id_metadata_document_client_connects() {
    let s = setup("").await;
    let b = &s.bridge;
    let v = broker_client(b.url("/mcp/sdk"), format!("cimd:{PINNED_CIMD}"), "allow")
        .await
        .unwrap_or_else(|e| panic!("{e}\nbridge log:\n{}", b.stderr()));
    // No registration: the document URL is the client id.
    assert_eq!(v["registered"]["client_id"], PINNED_CIMD, "{v}");
    assert_eq!(v["consent"]["client"], "Pinned E2E");
    assert_eq!(v["first"]["echo"], "first");
    assert_eq!(v["after-refresh"]["echo"], "after-refresh");
    let up: Value = get_json(&format!("http://127.0.0.1:{}/stats", s.upstream_port)).await;
    assert!(
        up["clientIds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c == PINNED_CIMD),
        "{up}"
    );
}

/// Serve one JSON document over TLS on loopback (a self-signed certificate for
/// `localhost`), for as many requests as come. Returns the port and the CA file.
async fn document_host(
    doc: impl Fn(u16) -> String + Send + Sync + 'static,
) -> (u16, std::path::PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = temp_dir("cimd-host");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = std::sync::Arc::new(doc(port));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=60\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, ca)
}

fn cimd_doc(port: u16) -> String {
    json!({
        "client_id": format!("https://localhost:{port}/client.json"),
        "client_name": "Fetched E2E",
        "redirect_uris": [CLIENT_REDIRECT],
        "token_endpoint_auth_method": "none",
    })
    .to_string()
}

#[tokio::test]
async fn a_fetched_client_id_metadata_document_over_tls_and_the_private_address_refusal() {
    let (doc_port, ca) = document_host(cimd_doc).await;
    let doc_url = format!("https://localhost:{doc_port}/client.json");
    // Without allow_private_networks: the document host resolves to loopback: refused, on
    // an error page, before any redirect.
    let s = setup(&format!("      ca_root_file: {}\n", ca.display())).await;
    let q = format!(
        "response_type=code&client_id={}&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        urlencode(&doc_url),
        urlencode(CLIENT_REDIRECT)
    );
    let r = client()
        .get(s.bridge.url(&format!("/authorize?{q}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    let page = r.text().await.unwrap();
    assert!(page.contains("private or special address"), "{page}");
    // The resolved address is for the operator's log, never for the browser.
    assert!(!page.contains("127.0.0.1"), "{page}");
    s.bridge.wait_for_log("localhost → 127.0.0.1").await;
    wait_for_metrics(
        &s.bridge,
        &["tailbridge_oauth_cimd_fetches_total{outcome=\"forbidden_address\"} 1"],
    )
    .await;
    drop(s);
    // With it (a lab): fetched over TLS, and the whole flow works.
    let s = setup(&format!(
        "      allow_private_networks: true\n      ca_root_file: {}\n",
        ca.display()
    ))
    .await;
    let b = &s.bridge;
    let v = broker_client(b.url("/mcp/sdk"), format!("cimd:{doc_url}"), "allow")
        .await
        .unwrap_or_else(|e| panic!("{e}\nbridge log:\n{}", b.stderr()));
    assert_eq!(v["consent"]["client"], "Fetched E2E", "{v}");
    assert_eq!(v["first"]["echo"], "first");
    wait_for_metrics(
        b,
        &["tailbridge_oauth_cimd_fetches_total{outcome=\"ok\"} 1"],
    )
    .await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An `initialize` POST with a bearer token; the status.
async fn mcp_status(url: &str, token: &str) -> u16 {
    client()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Tokens are checked without shared storage: a second instance with the same key (the
/// same public URL, as behind a balancer) and a restarted instance accept them; a refresh
/// with a refresh token tsidp already used up is `invalid_grant`.
#[tokio::test]
async fn tokens_work_on_another_instance_and_after_a_restart_and_a_spent_refresh_is_invalid_grant()
{
    let key = temp_dir("broker-fleet").join("broker.key");
    let port = free_port();
    let a = setup_with("    refresh_reuse_window: 1s\n", port, &key).await;
    let v = broker_client(a.bridge.url("/mcp/sdk"), "dcr".into(), "allow")
        .await
        .unwrap_or_else(|e| panic!("{e}\nbridge log:\n{}", a.bridge.stderr()));
    let token = v["accessToken"].as_str().unwrap().to_string();
    assert_eq!(mcp_status(&a.bridge.url("/mcp/sdk"), &token).await, 200);
    // Another instance: same key file, same public URL, its own port.
    let body = std::fs::read_to_string(a.bridge.dir.join("config.yaml")).unwrap();
    let endpoints = &body[body.find("tailnet:").unwrap()..];
    let b2 = Bridge::start_with_env(
        &format!("  public_url: http://127.0.0.1:{port}\n"),
        endpoints,
        &[("TB_BROKER_SECRET", "bridge-secret")],
    )
    .await;
    assert_eq!(
        mcp_status(&b2.url("/mcp/sdk"), &token).await,
        200,
        "{}",
        b2.stderr()
    );
    // The client id registered at the first instance works at the second.
    let client_id = v["clientId"].as_str().unwrap();
    let q = format!(
        "response_type=code&client_id={client_id}&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
    );
    let r = client()
        .get(b2.url(&format!("/authorize?{q}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    // The refresh token the client already used: past the reuse window, tsidp refuses it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let r = client()
        .post(a.bridge.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", v["usedRefreshToken"].as_str().unwrap()),
            ("client_id", client_id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_grant", "{e}");
    wait_for_metrics(
        &a.bridge,
        &["tailbridge_oauth_tokens_total{grant=\"refresh_token\",outcome=\"invalid_grant\"} 1"],
    )
    .await;
    // A restart: the same key file, the token still works.
    let Setup { bridge, _nodes, .. } = a;
    drop(bridge);
    let restarted = Bridge::start_on(
        port,
        &format!("  public_url: http://127.0.0.1:{port}\n"),
        endpoints,
        &[("TB_BROKER_SECRET", "bridge-secret")],
    )
    .await;
    assert_eq!(mcp_status(&restarted.url("/mcp/sdk"), &token).await, 200);
    drop(_nodes);
}
