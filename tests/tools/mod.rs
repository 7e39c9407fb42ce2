//! Pinned tool definitions and per-identity call limits with real MCP peers: the TypeScript
//! SDK server changing a tool between two lists (2025-11-25), the Python SDK server
//! (2026-07-28), `tailbridge tools pin` against both.

use crate::common::*;
use crate::e2e::start_sdk_server;
use crate::mcp::start_py_server;
use serde_json::Value;
use std::process::Command;

/// Run `tailbridge tools pin` on a config; the pin file text, and what it said on stderr.
fn pin(config_body: &str) -> (String, String) {
    let dir = temp_dir("pin");
    let cfg = dir.join("pin.yaml");
    std::fs::write(&cfg, config_body).unwrap();
    let out = Command::new(bin())
        .args(["tools", "pin", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "tools pin failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).to_string(), stderr)
}

fn write_pins(text: &str) -> std::path::PathBuf {
    let f = temp_dir("pins").join("pins.json");
    std::fs::write(&f, text).unwrap();
    f
}

async fn pins_client(url: String, upstream: String) -> Value {
    crate::e2e::run_script("pins-client.mjs", vec![url, upstream])
        .await
        .unwrap_or_else(|out| panic!("pins client failed: {out}"))
}

/// Pin the SDK server's tools, then run the changing-tool client through a bridge with
/// `on_change`; the bridge, the client's summary and the upstream's stats.
async fn sdk_run(on_change: &str) -> (Bridge, Value, Value, crate::e2e::Node) {
    let (server, port) = start_sdk_server();
    let target = format!("http://127.0.0.1:{port}/mcp");
    let base = format!("tailnet:\n  mode: direct\nendpoints:\n  - name: sdk\n    path: /mcp/sdk\n    target: {target}\n");
    let (pins, said) = pin(&base);
    assert!(
        said.contains("2 tool(s) pinned") && said.contains("asked in 2025-11-25"),
        "{said}"
    );
    let v: Value = serde_json::from_str(&pins).unwrap();
    let echo = &v["endpoints"]["sdk"]["tools"]["echo"];
    assert!(
        echo["sha256"].as_str().unwrap().starts_with("sha256:"),
        "{pins}"
    );
    assert_eq!(
        echo["definition"]["description"], "Echoes its input",
        "definitions are kept for review"
    );
    let file = write_pins(&pins);
    let body = format!(
        "{base}    tools:\n      pinned: {}\n      on_change: {on_change}\n",
        file.display()
    );
    let b = Bridge::start("", &body).await;
    let summary = pins_client(b.url("/mcp/sdk"), format!("http://127.0.0.1:{port}")).await;
    let stats = get_json(&format!("http://127.0.0.1:{port}/stats")).await;
    (b, summary, stats, server)
}

#[tokio::test]
async fn hide_keeps_a_changed_tool_out_of_the_list_and_refuses_calls_to_it() {
    let (b, v, stats, _server) = sdk_run("hide").await;
    assert_eq!(v["first"], serde_json::json!(["count", "echo"]), "{v}");
    assert_eq!(
        v["second"],
        serde_json::json!(["count"]),
        "the changed tool is hidden: {v}"
    );
    assert_eq!(v["call"]["ok"], false, "{v}");
    assert_eq!(v["call"]["code"], -32004, "{v}");
    assert!(
        v["call"]["message"]
            .as_str()
            .unwrap()
            .contains("tool `echo` changed since it was pinned"),
        "{v}"
    );
    assert!(
        !stats["calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "echo"),
        "a refused call never reaches the upstream: {stats}"
    );
    wait_for_metrics(
        &b,
        &[
            r#"tailbridge_mcp_tool_changes_total{change="changed",endpoint="sdk",tool="echo"} 1"#,
            r#"tailbridge_mcp_requests_total{endpoint="sdk",method="tools/call",outcome="unpinned",tool="echo"} 1"#,
        ],
    )
    .await;
    b.wait_for_log("endpoint sdk: tool \"echo\" changed").await;
    // The status page names it.
    let page = reqwest::get(b.admin("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=tool-changes"), "{page}");
    assert!(page.contains("<td>echo</td><td>changed</td>"), "{page}");
    // The doctor compares the live list with the pins and names the difference.
    let (_, text, checks) = crate::doctor::doctor(&b, &[]);
    let pins = crate::doctor::named(&checks, "endpoint sdk: pins");
    assert_eq!(pins[0]["status"], "warning", "{text}");
    assert!(
        pins[0]["detail"].as_str().unwrap().contains("echo changed"),
        "{text}"
    );
}

#[tokio::test]
async fn alert_lists_and_counts_a_changed_tool_but_hides_nothing() {
    let (b, v, stats, _server) = sdk_run("alert").await;
    assert_eq!(v["second"], serde_json::json!(["count", "echo"]), "{v}");
    assert!(
        v["secondEcho"]
            .as_str()
            .unwrap()
            .contains("audit@evil.example"),
        "{v}"
    );
    assert_eq!(v["call"]["ok"], true, "{v}");
    assert!(stats["calls"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "echo"));
    wait_for_metrics(
        &b,
        &[r#"tailbridge_mcp_tool_changes_total{change="changed",endpoint="sdk",tool="echo"} 1"#],
    )
    .await;
}

#[tokio::test]
async fn python_2026_server_pinned_unpinned_tool_hidden_and_limits() {
    let calls = temp_dir("tools-py").join("calls");
    let (_py, port) = start_py_server(&calls);
    let target = format!("http://127.0.0.1:{port}/mcp");
    let base = format!("tailnet:\n  mode: direct\nendpoints:\n  - name: py\n    path: /mcp/py\n    target: {target}\n");
    let (pins, said) = pin(&base);
    assert!(
        said.contains("3 tool(s) pinned") && said.contains("asked in 2026-07-28"),
        "{said}"
    );
    // Review: delete_note is not accepted (taken out of the pin file).
    let mut v: Value = serde_json::from_str(&pins).unwrap();
    v["endpoints"]["py"]["tools"]
        .as_object_mut()
        .unwrap()
        .remove("delete_note");
    let file = write_pins(&v.to_string());
    let body = format!(
        "{base}    tools:\n      pinned: {}\n      on_change: hide\n      limits:\n        - tools: [\"count\"]\n          per_minute: 1\n",
        file.display()
    );
    let b = Bridge::start("", &body).await;
    // 2026-07-28, stateless: the list lacks the unpinned tool, a call to it is refused.
    let r = crate::mcp::run_py_client(b.url("/mcp/py"), "2026-07-28").await;
    assert_eq!(r["tools"], serde_json::json!(["count", "echo"]), "{r}");
    assert_eq!(r["count"], "counted to 3", "{r}");
    assert_eq!(r["delete"]["ok"], false, "{r}");
    assert_eq!(r["delete"]["code"], -32004, "{r}");
    assert!(
        r["delete"]["message"]
            .as_str()
            .unwrap()
            .contains("tool `delete_note` is not pinned"),
        "{r}"
    );
    // The second session from the same address: `count` is over its budget of 1 a minute.
    let out = tokio::task::spawn_blocking({
        let url = b.url("/mcp/py");
        move || {
            Command::new(crate::mcp::py())
                .arg(crate::mcp::py_script("client.py"))
                .args([url.as_str(), "legacy"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rate limited: at most 1 calls per minute to `count`"),
        "{text}"
    );
    let ran = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(ran.lines().filter(|l| *l == "count").count(), 1, "{ran}");
    assert!(!ran.contains("delete_note"), "{ran}");
    wait_for_metrics(
        &b,
        &[
            r#"tailbridge_mcp_requests_total{endpoint="py",method="tools/call",outcome="rate_limited",tool="count"} 1"#,
            r#"tailbridge_mcp_requests_total{endpoint="py",method="tools/call",outcome="unpinned",tool="delete_note"} 1"#,
            r#"tailbridge_mcp_tool_changes_total{change="added",endpoint="py",tool="delete_note"} 1"#,
        ],
    )
    .await;
    // Both refusals are audited with their outcome (calls: count, delete_note, then the
    // refused count, after which the second client gives up).
    let lines = crate::mcp::audit_lines(&b, 3).await;
    let outcomes: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["tool"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    assert!(
        outcomes.contains(&("delete_note", "unpinned")),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("count", "rate_limited")),
        "{outcomes:?}"
    );
}

#[test]
fn pin_and_limit_config_errors_name_their_field() {
    let dir = temp_dir("tools-cfg");
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        "endpoints:\n  - path: /mcp/a\n    target: http://127.0.0.1:9/mcp\n    tools:\n      on_change: hide\n      limits:\n        - users: [\"bob\"]\n          per_minute: 0\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "endpoints[0].tools.on_change: hide needs tools.pinned",
        "endpoints[0].tools.limits[0]: users and clients need the auth section",
        "endpoints[0].tools.limits[0].per_minute: must be greater than 0",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    // A pin file that is missing stops start-up with the field path.
    std::fs::write(
        &cfg,
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/a\n    target: http://127.0.0.1:9/mcp\n    tools:\n      pinned: /nonexistent/pins.json\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("endpoints[0].tools.pinned"), "{err}");
}
