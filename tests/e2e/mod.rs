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

/// Start the SDK upstream server and return it with its port.
fn start_sdk_server() -> (Node, u16) {
    let dir = e2e_dir();
    let mut child = Command::new("node")
        .arg(dir.join("server.mjs"))
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node not found");
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
