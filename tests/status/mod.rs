//! The status page on the admin listener, in a real browser (headless Chromium through
//! playwright-core): it renders, shows the endpoints and their states, tool calls and
//! refusals, and a refresh after an upstream stopped shows it down. The test asserts on the
//! DOM; the screenshot goes to the test's temp dir.

use crate::common::*;
use crate::e2e::Node;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// The next JSON line from the page script, read off the async runtime (the test's upstreams
/// run on it and must keep answering the bridge's probes meanwhile).
async fn next_view(
    lines: &mut Option<std::io::Lines<BufReader<std::process::ChildStdout>>>,
) -> serde_json::Value {
    let mut l = lines.take().unwrap();
    let (line, l) = tokio::task::spawn_blocking(move || (l.next(), l))
        .await
        .unwrap();
    *lines = Some(l);
    let line = line.expect("the page script ended").unwrap();
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn the_status_page_in_a_browser() {
    let up = Upstream::start().await;
    let doomed = Upstream::start().await;
    let body = format!(
        "tailnet:\n  mode: direct\nhealth:\n  probe_interval: 1s\nendpoints:\n  - name: notes\n    path: /mcp/notes\n    target: {}\n    tools:\n      deny: [\"delete_*\"]\n  - name: wiki\n    path: /mcp/wiki\n    target: {}\n",
        up.url("/up/notes"),
        doomed.url("/up/wiki")
    );
    let b = Bridge::start("", &body).await;
    // Traffic for the page to show: a denied tool call and a refused origin.
    let r = client()
        .post(b.url("/mcp/notes"))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_note"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for_metrics(&b, &["tailbridge_upstream_up{endpoint=\"wiki\"} 1"]).await;
    let shot = temp_dir("status").join("status-page.png");
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/status-page.mjs");
    let child = Command::new("node")
        .arg(&script)
        .arg(b.admin("/"))
        .arg(&shot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut child = Node(child);
    let mut lines = Some(BufReader::new(child.0.stdout.take().unwrap()).lines());
    let first = next_view(&mut lines).await;
    assert_eq!(first["title"], "tailbridge status", "{first}");
    assert_eq!(first["tailnet"], "ready", "{first}");
    assert_eq!(
        first["endpoints"],
        serde_json::json!([{"name": "notes", "state": "up"}, {"name": "wiki", "state": "up"}]),
        "{first}"
    );
    assert_eq!(first["tools"], serde_json::json!(["_other"]), "{first}");
    assert_eq!(
        first["refusals"],
        serde_json::json!(["tool_denied"]),
        "{first}"
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "no screenshot"
    );
    // Stop one upstream; once the probes saw it, a refresh shows it down.
    drop(doomed);
    wait_for_metrics(&b, &["tailbridge_upstream_up{endpoint=\"wiki\"} 0"]).await;
    writeln!(child.0.stdin.as_mut().unwrap(), "reload").unwrap();
    let second = next_view(&mut lines).await;
    assert_eq!(
        second["endpoints"],
        serde_json::json!([{"name": "notes", "state": "up"}, {"name": "wiki", "state": "down"}]),
        "{second}"
    );
    assert!(child.0.wait().unwrap().success());
    // The doctor runs inside the bridge too.
    let v = get_json(&b.admin("/doctor.json")).await;
    assert!(v["checks"].as_array().is_some_and(|c| !c.is_empty()), "{v}");
}
