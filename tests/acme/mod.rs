//! `tls.mode: acme` against pebble on loopback: issuance over TLS-ALPN-01 and HTTP-01, the
//! stored certificate reused across a restart, renewal of short-lived certificates, the
//! current certificate kept while the CA is down, and a clear error for an unreachable CA.

use crate::common::pebble::{domain_client, served_cert, Pebble, DOMAIN};
use crate::common::*;
use std::os::unix::fs::PermissionsExt;

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"acme-test","version":"1"}}}"#;

fn acme_body(pebble: &Pebble, storage: &std::path::Path, extra: &str, upstream: &str) -> String {
    format!(
        "tls:\n  mode: acme\n{extra}  acme:\n    domains: [\"{DOMAIN}\"]\n    email: ops@tailbridge.test\n    directory_url: \"{}\"\n    ca_root_file: {}\n    storage_dir: {}\n    retry_initial: 1s\n    retry_max: 2s\ntailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/sdk\n    target: {upstream}\n",
        pebble.directory_url,
        pebble.ca_root_file.display(),
        storage.display(),
    )
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// POST an MCP `initialize` over TLS to the SDK server behind the bridge.
async fn initialize(c: &reqwest::Client, port: u16) -> reqwest::Response {
    let r = c
        .post(format!("https://{DOMAIN}:{port}/mcp/sdk"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(INITIALIZE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

#[tokio::test]
async fn tls_alpn_01_issues_serves_mcp_and_survives_a_restart() {
    init();
    let (_server, mcp_port) = crate::e2e::start_sdk_server();
    let port = free_port();
    let pebble = Pebble::start(free_port(), port, 3600).await;
    let storage = temp_dir("acme-store").join("acme");
    let body = acme_body(
        &pebble,
        &storage,
        "",
        &format!("http://127.0.0.1:{mcp_port}/mcp"),
    );
    let b = Bridge::start_tls_on(port, &body).await;
    wait_for_metrics(
        &b,
        &["tailbridge_acme_renewals_total{outcome=\"success\"} 1"],
    )
    .await;
    assert!(
        b.stderr()
            .contains("answered a TLS-ALPN-01 validation for mcp.tailbridge.test"),
        "{}",
        b.stderr()
    );

    // A client that trusts only pebble's root talks MCP through the bridge.
    let root = pebble.issuing_root().await;
    let r = initialize(&domain_client(&root, port), port).await;
    let issued = served_cert(&r);
    let text = r.text().await.unwrap();
    assert!(text.contains("e2e-upstream"), "{text}");

    // The official MCP SDK client, trusting pebble's root, over the issued certificate:
    // initialize, tools, a streamed tool call with progress, session end.
    let root_file = pebble.dir.join("issuing-root.pem");
    std::fs::write(&root_file, pebble.issuing_root_pem().await).unwrap();
    let v = crate::e2e::run_sdk_client(
        format!("https://{DOMAIN}:{port}/mcp/sdk"),
        vec![
            ("TB_LOOPBACK_NAMES", DOMAIN.to_string()),
            ("NODE_EXTRA_CA_CERTS", root_file.display().to_string()),
        ],
    )
    .await
    .unwrap_or_else(|out| panic!("SDK client over ACME TLS failed: {out}"));
    assert_eq!(v["server"]["name"], "e2e-upstream", "{v}");
    assert_eq!(v["progress"], serde_json::json!([1, 2, 3, 4, 5]), "{v}");
    assert_eq!(v["terminated"], true, "{v}");

    // Stored privately: directories 0700, key and certificate 0600.
    let store = std::fs::read_dir(&storage)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let cert_dir = store.join(DOMAIN);
    for d in [&storage, &store, &cert_dir] {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    for f in [
        "account.json",
        "mcp.tailbridge.test/key.pem",
        "mcp.tailbridge.test/cert.pem",
    ] {
        assert_eq!(mode(&store.join(f)), 0o600, "{f}");
    }

    // A client that does not trust the chain fails its handshake, and the metric says so.
    let untrusting = reqwest::Client::builder()
        .resolve(DOMAIN, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .timeout(HANG_GUARD)
        .build()
        .unwrap();
    assert!(untrusting
        .get(format!("https://{DOMAIN}:{port}/healthz"))
        .send()
        .await
        .is_err());
    wait_for_metrics(
        &b,
        &["tailbridge_tls_handshake_failures_total{reason=\"error\"} 1"],
    )
    .await;

    // Restart: the stored certificate is served at once and nothing is ordered.
    drop(b);
    let orders_before = pebble.log().matches("POST /order-plz").count();
    assert_eq!(
        orders_before, 1,
        "pebble's log should show the one order so far"
    );
    let b = Bridge::start_tls_on(port, &body).await;
    let r = initialize(&domain_client(&root, port), port).await;
    assert_eq!(
        served_cert(&r),
        issued,
        "a different certificate after restart"
    );
    let m = wait_for_metrics(
        &b,
        &["tailbridge_acme_renewals_total{outcome=\"success\"} 0"],
    )
    .await;
    assert!(
        m.contains("tailbridge_tls_certificate_expiry_seconds{file="),
        "{m}"
    );
    assert!(b.stderr().contains("loaded from"), "{}", b.stderr());
    assert_eq!(
        pebble.log().matches("POST /order-plz").count(),
        orders_before,
        "restart ordered a new certificate"
    );
}

#[tokio::test]
async fn http_01_issues_and_the_http_listener_redirects() {
    init();
    let up = Upstream::start().await;
    let (port, http_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, port, 3600).await;
    let storage = temp_dir("acme-http01");
    let extra = format!("  http_listen: \"127.0.0.1:{http_port}\"\n");
    let body = acme_body(&pebble, &storage, &extra, &up.url("/up")).replace(
        "    retry_initial:",
        "    challenge: http-01\n    retry_initial:",
    );
    let b = Bridge::start_tls_on(port, &body).await;
    wait_for_metrics(
        &b,
        &["tailbridge_acme_renewals_total{outcome=\"success\"} 1"],
    )
    .await;
    assert!(
        b.stderr().contains("answered an HTTP-01 validation"),
        "{}",
        b.stderr()
    );
    let root = pebble.issuing_root().await;
    let r = domain_client(&root, port)
        .post(format!("https://{DOMAIN}:{port}/mcp/sdk"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));

    // Plain HTTP: 308 to the same host and path over HTTPS; stale challenge tokens 404.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HANG_GUARD)
        .build()
        .unwrap();
    let r = no_redirects
        .post(format!("http://127.0.0.1:{http_port}/mcp/sdk?x=1"))
        .header("host", format!("{DOMAIN}:80"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://{DOMAIN}:{port}/mcp/sdk?x=1").as_str()
    );
    let r = no_redirects
        .get(format!(
            "http://127.0.0.1:{http_port}/.well-known/acme-challenge/nope"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn short_lived_certificates_renew_and_a_dead_ca_keeps_the_current_one() {
    init();
    let up = Upstream::start().await;
    let port = free_port();
    // 15 s certificates: due for renewal 10 s after issuance.
    let mut pebble = Pebble::start(free_port(), port, 15).await;
    let storage = temp_dir("acme-renew");
    let body = acme_body(&pebble, &storage, "", &up.url("/up"));
    let b = Bridge::start_tls_on(port, &body).await;
    wait_for_metrics(
        &b,
        &["tailbridge_acme_renewals_total{outcome=\"success\"} 1"],
    )
    .await;
    let root = pebble.issuing_root().await;
    // A fresh client per request: no TLS session to resume, so the certificate is sent.
    let get = || async {
        let r = domain_client(&root, port)
            .get(format!("https://{DOMAIN}:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        served_cert(&r)
    };
    let first = get().await;
    wait_for_metrics(
        &b,
        &["tailbridge_acme_renewals_total{outcome=\"success\"} 2"],
    )
    .await;
    let second = get().await;
    assert_ne!(
        first, second,
        "renewal did not replace the served certificate"
    );

    // The CA goes away: the next renewal fails, is retried, and the current certificate
    // stays in service.
    pebble.stop();
    wait_for_metrics(
        &b,
        &["tailbridge_acme_renewals_total{outcome=\"failure\"} 2"],
    )
    .await;
    assert_eq!(get().await, second);
    let log = b.stderr();
    assert!(
        log.contains("still serving the current certificate"),
        "{log}"
    );
    assert!(
        log.contains(&format!("from {} failed", pebble.directory_url)),
        "{log}"
    );
    assert!(log.to_lowercase().contains("connection refused"), "{log}");
}

#[tokio::test]
async fn external_account_binding_is_sent_when_the_ca_requires_it() {
    init();
    let up = Upstream::start().await;
    const KID: &str = "kid-1";
    const KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let port = free_port();
    let pebble = Pebble::start_with_eab(port, KID, KEY).await;

    // Without a binding the CA refuses the account, and the log says why.
    let plain = acme_body(&pebble, &temp_dir("acme-no-eab"), "", &up.url("/up"));
    let b = Bridge::start_tls_on(port, &plain).await;
    wait_for_metrics(
        &b,
        &["tailbridge_acme_renewals_total{outcome=\"failure\"} 1"],
    )
    .await;
    let log = b.wait_for_log("account registration").await;
    assert!(log.contains("externalAccountRequired"), "{log}");
    drop(b);

    // With the binding (key from the environment) the certificate is issued.
    let bound = acme_body(&pebble, &temp_dir("acme-eab"), "", &up.url("/up")).replace(
        "    retry_initial:",
        &format!(
            "    eab:\n      kid: {KID}\n      hmac_key_env: TB_TEST_EAB_KEY\n    retry_initial:"
        ),
    );
    let b = Bridge::launch_with_env_on(port, &bound, &[("TB_TEST_EAB_KEY", KEY)]).await;
    wait_for_metrics(
        &b,
        &["tailbridge_acme_renewals_total{outcome=\"success\"} 1"],
    )
    .await;
    let root = pebble.issuing_root().await;
    let r = domain_client(&root, port)
        .get(format!("https://{DOMAIN}:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_url_that_is_not_an_acme_directory_is_named() {
    init();
    let port = free_port();
    let pebble = Pebble::start(free_port(), port, 3600).await;
    let wrong = pebble.directory_url.replace("/dir", "/no-such-directory");
    let body = acme_body(
        &pebble,
        &temp_dir("acme-wrong-dir"),
        "",
        "http://127.0.0.1:1/",
    )
    .replace(&pebble.directory_url, &wrong);
    let b = Bridge::start_tls_on(port, &body).await;
    wait_for_metrics(
        &b,
        &["tailbridge_acme_renewals_total{outcome=\"failure\"} 1"],
    )
    .await;
    b.wait_for_log(&format!(
        "ACME directory {wrong}: the answer is not an ACME directory"
    ))
    .await;
}

#[tokio::test]
async fn unreachable_ca_is_reported_and_the_bridge_is_not_ready() {
    let port = free_port();
    let dead = free_port();
    let storage = temp_dir("acme-dead");
    let body = format!(
        "tls:\n  mode: acme\n  acme:\n    domains: [\"{DOMAIN}\"]\n    directory_url: \"https://127.0.0.1:{dead}/dir\"\n    storage_dir: {}\n    retry_initial: 1s\n    retry_max: 1s\ntailnet:\n  mode: direct\nendpoints:\n  - path: /a\n    target: http://127.0.0.1:1/\n",
        storage.display()
    );
    let b = Bridge::start_tls_on(port, &body).await;
    wait_for_metrics(
        &b,
        &["tailbridge_acme_renewals_total{outcome=\"failure\"} 1"],
    )
    .await;
    let v = wait_for_health(&b.admin("/readyz"), 503).await;
    assert!(
        v["reasons"].to_string().contains("no certificate yet"),
        "{v}"
    );
    let log = b
        .wait_for_log(&format!("ACME directory https://127.0.0.1:{dead}/dir: "))
        .await;
    assert!(log.to_lowercase().contains("connection refused"), "{log}");
    assert!(log.contains("no certificate to serve yet"), "{log}");
}
