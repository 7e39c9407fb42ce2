//! End-to-end with the official MCP TypeScript SDK on both sides of tailbridge.
//! Needs `tests/e2e/node_modules` (`npm ci --prefix tests/e2e`; `tests/run.sh` does it).

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn e2e_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/sdk").exists(),
        "MCP SDK not installed: run `npm ci --prefix tests/e2e` (tests/run.sh does it)"
    );
    dir
}

/// A node process killed on drop.
struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a node script that prints `listening <port>` and return it with its port.
fn start_node(script: &str, env: &[(&str, &str)]) -> (Node, u16) {
    let dir = e2e_dir();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script))
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("node not found");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected server output: {line:?}"));
    (Node(child), port)
}

fn start_sdk_server() -> (Node, u16) {
    start_node("server.mjs", &[])
}

fn run_node(args: Vec<String>) -> std::process::Output {
    Command::new("node").args(args).output().unwrap()
}

#[tokio::test]
async fn sdk_client_through_bridge_to_sdk_server() {
    let (_server, port) = start_sdk_server();
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/sdk\n    target: http://127.0.0.1:{port}/mcp\n"
    );
    let b = Bridge::start("  allowed_origins: [\"https://claude.ai\"]\n", &body).await;
    let out = tokio::task::spawn_blocking({
        let url = b.url("/mcp/sdk");
        move || {
            Command::new("node")
                .arg(e2e_dir().join("client.mjs"))
                .arg(url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}\nbridge log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.stderr()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["server"]["name"], "e2e-upstream");
    assert!(
        v["sessionId"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    assert_eq!(v["tools"], serde_json::json!(["count", "echo"]));
    assert_eq!(v["callResult"], "counted to 5");
    assert_eq!(v["progress"], serde_json::json!([1, 2, 3, 4, 5]));
    assert_eq!(v["echo"], "héllo ✓");
    assert_eq!(v["terminated"], true);

    let stats: serde_json::Value = client()
        .get(format!("http://127.0.0.1:{port}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["deletes"], 1, "{stats}");
    assert!(stats["posts"].as_u64().unwrap() >= 4, "{stats}");
    let want_host = format!("127.0.0.1:{port}");
    assert!(
        stats["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h == &want_host),
        "Host was not rewritten: {stats}"
    );
    wait_for_metrics(
        &b,
        &["tailbridge_requests_total{endpoint=\"mcp/sdk\",method=\"DELETE\",status_class=\"2xx\"} 1"],
    )
    .await;
}

#[tokio::test]
async fn sdk_oauth_flow_through_bridge_against_oidc_provider() {
    const REDIRECT: &str = "http://127.0.0.1:9/callback";
    let clients = serde_json::json!([
        {"client_id": "claude-e2e", "client_secret": "claude-e2e-secret", "redirect_uris": [REDIRECT]},
        {"client_id": "bridge", "client_secret": "bridge-secret", "redirect_uris": ["http://127.0.0.1:9/unused"]},
    ]);
    let (_idp, idp_port) = start_node("idp.mjs", &[("CLIENTS", &clients.to_string())]);
    let (_server, port) = start_sdk_server();
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let body = format!(
        concat!(
            "tailnet:\n  mode: direct\n",
            "auth:\n  issuer: {iss}\n  audience: http://127.0.0.1:{{BRIDGE_PORT}}\n",
            "  introspection_url: {iss}/token/introspection\n",
            "  client_id: bridge\n  client_secret_env: TB_E2E_BRIDGE_SECRET\n  allow_loopback_idp: true\n",
            "endpoints:\n  - path: /mcp/sdk\n    target: http://127.0.0.1:{port}/mcp\n"
        ),
        iss = issuer,
        port = port
    );
    let b = Bridge::start_with_env(
        "  public_url: http://127.0.0.1:{BRIDGE_PORT}\n",
        &body,
        &[("TB_E2E_BRIDGE_SECRET", "bridge-secret")],
    )
    .await;
    let url = b.url("/mcp/sdk");
    let args = vec![
        e2e_dir().join("oauth-client.mjs").display().to_string(),
        url.clone(),
        "claude-e2e".into(),
        "claude-e2e-secret".into(),
    ];
    let out = tokio::task::spawn_blocking(move || run_node(args))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "oauth client failed: {stdout}\n{}\nbridge log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.stderr()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let bridge_origin = format!("http://127.0.0.1:{}", b.port);
    // Discovery went through the bridge, the browser step went to the IdP.
    assert!(
        v["authorizeUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{issuer}/auth?")),
        "{v}"
    );
    assert_eq!(v["asIssuer"], bridge_origin);
    assert_eq!(v["tokenEndpoint"], format!("{bridge_origin}/token"));
    assert_eq!(v["first"]["tools"], serde_json::json!(["count", "echo"]));
    assert_eq!(v["first"]["echo"], "first");
    assert_eq!(v["refreshed"], true);
    assert_eq!(v["after-refresh"]["echo"], "after-refresh");
    assert_eq!(
        v["oldRefreshReused"], false,
        "refresh tokens are single-use"
    );
    // The upstream never saw a bearer token; the bridge saw the user.
    let stats: serde_json::Value = client()
        .get(format!("http://127.0.0.1:{port}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        stats["authorization"].as_array().unwrap().is_empty(),
        "token passthrough: {stats}"
    );
    let idp_stats: serde_json::Value = client()
        .get(format!("{issuer}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(idp_stats["tokens"].as_u64().unwrap() >= 3, "{idp_stats}");
    assert!(b.stderr().contains("sub=1001"), "{}", b.stderr());
    wait_for_metrics(
        &b,
        &["tailbridge_introspections_total{outcome=\"active\"} 2"],
    )
    .await;
}
