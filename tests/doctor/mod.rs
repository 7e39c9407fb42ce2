//! `tailbridge doctor` against a healthy setup (the MCP SDK server and the Python SDK server
//! as upstreams, oidc-provider configured like tsidp, `public_url` on loopback) and against
//! broken ones, each failing the right check with the right hint.

use crate::common::*;
use crate::e2e::{start_node, start_sdk_server, Node};
use std::process::Command;

/// Run the doctor on a bridge's config; (exit code, text output, JSON checks).
pub(crate) fn doctor(b: &Bridge, extra: &[&str]) -> (i32, String, serde_json::Value) {
    let cfg = b.dir.join("config.yaml");
    let text = Command::new(bin())
        .args(["doctor", "--timeout", "3", "--config"])
        .arg(&cfg)
        .args(extra)
        .output()
        .unwrap();
    let json = Command::new(bin())
        .args(["doctor", "--json", "--timeout", "3", "--config"])
        .arg(&cfg)
        .args(extra)
        .output()
        .unwrap();
    let checks: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "--json is not JSON ({e}): {}",
            String::from_utf8_lossy(&json.stdout)
        )
    });
    assert_eq!(
        json.status.code(),
        text.status.code(),
        "--json and text disagree"
    );
    (
        text.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&text.stdout).into_owned(),
        checks,
    )
}

/// The checks whose name starts with `prefix`.
pub(crate) fn named<'a>(checks: &'a serde_json::Value, prefix: &str) -> Vec<&'a serde_json::Value> {
    checks["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with(prefix))
        .collect()
}

fn failed<'a>(checks: &'a serde_json::Value, prefix: &str) -> &'a serde_json::Value {
    named(checks, prefix)
        .into_iter()
        .find(|c| c["status"] == "failure")
        .unwrap_or_else(|| panic!("no failed `{prefix}` check in {checks:#}"))
}

struct Setup {
    _idp: Node,
    idp_port: u16,
    _sdk: Node,
    sdk_port: u16,
}

fn setup() -> Setup {
    let clients = serde_json::json!([
        {"client_id": "bridge", "client_secret": "bridge-secret", "redirect_uris": ["http://127.0.0.1:9/unused"]},
    ]);
    let (idp, idp_port) = start_node("idp.mjs", &[("CLIENTS", &clients.to_string())]);
    let (sdk, sdk_port) = start_sdk_server();
    Setup {
        _idp: idp,
        idp_port,
        _sdk: sdk,
        sdk_port,
    }
}

fn auth_yaml(issuer: &str, secret: &str) -> String {
    format!(
        "auth:\n  issuer: {issuer}\n  audience: http://127.0.0.1:{{BRIDGE_PORT}}\n  introspection_url: {issuer}/token/introspection\n  client_id: bridge\n  client_secret: {secret}\n  allow_loopback_idp: true\n"
    )
}

const PUBLIC: &str = "  public_url: http://127.0.0.1:{BRIDGE_PORT}\n";

#[tokio::test]
async fn a_healthy_setup_passes_every_check() {
    let s = setup();
    let calls = temp_dir("doctor-py").join("calls");
    let (_py, py_port) = crate::mcp::start_py_server(&calls);
    let issuer = format!("http://127.0.0.1:{}", s.idp_port);
    let body = format!(
        "tailnet:\n  mode: direct\n{}endpoints:\n  - name: sdk\n    path: /mcp/sdk\n    target: http://127.0.0.1:{}/mcp\n  - name: py\n    path: /mcp/py\n    target: http://127.0.0.1:{py_port}/mcp\n",
        auth_yaml(&issuer, "bridge-secret"),
        s.sdk_port
    );
    let b = Bridge::start(PUBLIC, &body).await;
    let (code, text, checks) = doctor(&b, &[]);
    assert_eq!(code, 0, "{text}\nbridge log:\n{}", b.stderr());
    for want in [
        "✓ config:",
        "✓ bridge:",
        "✓ endpoint sdk: dial",
        "✓ endpoint sdk: mcp: e2e-upstream 1.0.0 speaks 2025-11-25",
        "✓ endpoint py: mcp: py-upstream",
        "✓ endpoint py: 2026-07-28: server/discover answers",
        "✓ idp: metadata",
        "✓ idp: introspection",
        "✓ discovery sdk: 401",
        "✓ discovery sdk: PRM",
        "✓ discovery sdk: AS metadata",
        "✓ discovery sdk: authorize",
        // loopback public_url: a warning, not a failure
        "! discovery: public_url",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    // one JSON entry per text line, same names
    let n = checks["checks"].as_array().unwrap().len();
    assert_eq!(
        text.lines().filter(|l| !l.starts_with("    ")).count() - 1,
        n,
        "{text}"
    );
    // --endpoint narrows the endpoint checks
    let (_, text, _) = doctor(&b, &["--endpoint", "py"]);
    assert!(
        text.contains("endpoint py") && !text.contains("endpoint sdk"),
        "{text}"
    );
    // No secret is ever printed.
    assert!(!text.contains("bridge-secret"));
}

/// An HTTP/1.1 upstream answering every POST with 421, as an MCP SDK server with DNS-rebinding
/// protection answers a Host it does not know.
fn misdirected_upstream() -> (Node, u16) {
    let port = free_port();
    let script = format!(
        r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        b = b"Invalid Host header"
        self.send_response(421)
        self.send_header("content-length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
"#
    );
    let child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "421 upstream never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (Node(child), port)
}

#[tokio::test]
async fn broken_upstreams_fail_with_their_hints() {
    let s = setup();
    let (_m, m_port) = misdirected_upstream();
    let closed = free_port();
    let issuer = format!("http://127.0.0.1:{}", s.idp_port);
    let body = format!(
        "tailnet:\n  mode: direct\n{}endpoints:\n  - name: closed\n    path: /mcp/closed\n    target: http://127.0.0.1:{closed}/mcp\n    timeouts: {{connect: 1s}}\n  - name: host\n    path: /mcp/host\n    target: http://127.0.0.1:{m_port}/mcp\n",
        auth_yaml(&issuer, "bridge-secret"),
    );
    let b = Bridge::start(PUBLIC, &body).await;
    let (code, text, checks) = doctor(&b, &[]);
    assert_eq!(code, 1, "{text}");
    let c = failed(&checks, "endpoint closed: dial");
    assert!(
        c["hint"].as_str().unwrap().contains("tailnet policy"),
        "{c}"
    );
    let c = failed(&checks, "endpoint host: mcp");
    assert!(c["detail"].as_str().unwrap().contains("421"), "{c}");
    assert!(c["hint"].as_str().unwrap().contains("Host header"), "{c}");
}

#[tokio::test]
async fn idp_problems_fail_the_idp_checks() {
    let s = setup();
    let issuer = format!("http://127.0.0.1:{}", s.idp_port);
    let target = format!("http://127.0.0.1:{}/mcp", s.sdk_port);
    // wrong credentials
    let body = format!(
        "tailnet:\n  mode: direct\n{}endpoints:\n  - path: /mcp/a\n    target: {target}\n",
        auth_yaml(&issuer, "wrong-secret")
    );
    let b = Bridge::start(PUBLIC, &body).await;
    let (code, _, checks) = doctor(&b, &[]);
    assert_eq!(code, 1);
    let c = failed(&checks, "idp: introspection");
    assert!(
        c["hint"]
            .as_str()
            .unwrap()
            .contains("auth.client_id / auth.client_secret"),
        "{c}"
    );
    drop(b);
    // an issuer other than the one tsidp names (localhost vs 127.0.0.1)
    let other = format!("http://localhost:{}", s.idp_port);
    let body = format!(
        "tailnet:\n  mode: direct\n{}endpoints:\n  - path: /mcp/a\n    target: {target}\n",
        auth_yaml(&other, "bridge-secret")
    );
    let b = Bridge::start(PUBLIC, &body).await;
    let (_, _, checks) = doctor(&b, &[]);
    let c = failed(&checks, "idp: issuer");
    assert!(
        c["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("set auth.issuer to {issuer}")),
        "{c}"
    );
    drop(b);
    // an IdP that is not there
    let gone = format!("http://127.0.0.1:{}", free_port());
    let body = format!(
        "tailnet:\n  mode: direct\n{}endpoints:\n  - path: /mcp/a\n    target: {target}\n",
        auth_yaml(&gone, "bridge-secret")
    );
    let b = Bridge::start(PUBLIC, &body).await;
    let (code, _, checks) = doctor(&b, &[]);
    assert_eq!(code, 1);
    let c = failed(&checks, "idp: metadata");
    assert!(c["hint"].as_str().unwrap().contains("reach tsidp"), "{c}");
}

#[tokio::test]
async fn a_wrong_public_url_and_a_wrong_certificate_are_named() {
    let s = setup();
    let issuer = format!("http://127.0.0.1:{}", s.idp_port);
    let target = format!("http://127.0.0.1:{}/mcp", s.sdk_port);
    // public_url on a port where no bridge listens
    let body = format!(
        "tailnet:\n  mode: direct\n{}endpoints:\n  - name: a\n    path: /mcp/a\n    target: {target}\n",
        auth_yaml(&issuer, "bridge-secret")
    );
    let elsewhere = format!("  public_url: http://127.0.0.1:{}\n", free_port());
    let b = Bridge::start(&elsewhere, &body).await;
    let (code, _, checks) = doctor(&b, &[]);
    assert_eq!(code, 1);
    let c = failed(&checks, "discovery a: 401");
    assert!(
        c["hint"].as_str().unwrap().contains("server.public_url"),
        "{c}"
    );
    drop(b);
    // TLS with a certificate for localhost while public_url names another host
    let dir = temp_dir("doctor-tls");
    let (cert, key) = self_signed(&dir);
    let body = format!(
        "tailnet:\n  mode: direct\ntls:\n  mode: files\n  cert_file: {}\n  key_file: {}\nendpoints:\n  - name: a\n    path: /mcp/a\n    target: {target}\n",
        cert.display(),
        key.display()
    );
    let b = Bridge::start_tls("  public_url: https://mcp.example.test\n", &body).await;
    let (code, text, checks) = doctor(&b, &[]);
    assert_eq!(code, 1, "{text}");
    let c = failed(&checks, "tls: names");
    assert!(c["detail"].as_str().unwrap().contains("localhost"), "{c}");
    assert!(
        c["hint"].as_str().unwrap().contains("mcp.example.test"),
        "{c}"
    );
}

/// The broker's checks: the key file and its mode, and tsidp accepting the bridge's client
/// (a made-up code is `invalid_grant`, not `invalid_client`).
#[tokio::test]
async fn broker_checks_name_the_key_file_mode_and_the_tsidp_client() {
    let s = setup();
    let issuer = format!("http://127.0.0.1:{}", s.idp_port);
    let key = temp_dir("doctor-broker").join("broker.key");
    let yaml = |secret: &str| {
        format!(
            "tailnet:\n  mode: direct\n{}  broker:\n    enabled: true\n    key_file: {}\nendpoints:\n  - name: sdk\n    path: /mcp/sdk\n    target: http://127.0.0.1:{}/mcp\n",
            auth_yaml(&issuer, secret),
            key.display(),
            s.sdk_port
        )
    };
    let b = Bridge::start(PUBLIC, &yaml("bridge-secret")).await;
    let (_, text, checks) = doctor(&b, &[]);
    let key_check = named(&checks, "broker: key file");
    assert_eq!(key_check[0]["status"], "ok", "{text}");
    let client_check = named(&checks, "broker: tsidp client");
    assert_eq!(client_check[0]["status"], "ok", "{text}");
    assert!(
        client_check[0]["detail"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{text}"
    );
    assert!(named(&checks, "broker: public_url")[0]["detail"]
        .as_str()
        .unwrap()
        .contains("/oauth/callback"));
    // Readable by others: a failure naming the fix.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, text, checks) = doctor(&b, &[]);
        assert_ne!(code, 0);
        let f = failed(&checks, "broker: key file");
        assert!(f["hint"].as_str().unwrap().contains("chmod 600"), "{text}");
    }
    drop(b);
    // The wrong secret: tsidp refuses the bridge's client.
    let b = Bridge::start(PUBLIC, &yaml("wrong-secret")).await;
    let (_, text, checks) = doctor(&b, &[]);
    let f = failed(&checks, "broker: tsidp client");
    assert!(
        f["detail"].as_str().unwrap().contains("invalid_client"),
        "{text}"
    );
}
