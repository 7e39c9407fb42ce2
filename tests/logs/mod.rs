//! Access and audit lines, which are written in batches: the same shape as every other log
//! line (text and JSON), in order, and none lost when the process stops.

use crate::common::*;

const TOOL_CALL: &str =
    r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;

fn body(up: &Upstream, format: &str) -> String {
    format!(
        "log:\n  format: {format}\ntailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/a\n    target: {}\n",
        up.url("/up/a")
    )
}

async fn post(b: &Bridge, n: usize) {
    let c = client();
    for _ in 0..n {
        let r = c
            .post(b.url("/mcp/a"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(TOOL_CALL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// `[YYYY-MM-DDTHH:MM:SSZ LEVEL target] ` as env_logger writes it: the target, or `None`.
fn text_target(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let (ts, rest) = rest.split_at_checked(20)?;
    let ts = ts.as_bytes();
    let shape = ts[4] == b'-' && ts[10] == b'T' && ts[19] == b'Z' && ts[13] == b':';
    let (level, rest) = rest.strip_prefix(' ')?.split_at_checked(5)?;
    let target = rest.strip_prefix(' ')?.split(']').next()?;
    (shape && ["INFO ", "WARN ", "ERROR", "DEBUG"].contains(&level)).then_some(target)
}

#[tokio::test]
async fn text_lines_share_the_loggers_shape_and_order() {
    let up = Upstream::start().await;
    let b = Bridge::start("", &body(&up, "text")).await;
    post(&b, 3).await;
    let log = b.wait_for_log("tailbridge::audit").await;
    let access: Vec<&str> = log
        .lines()
        .filter(|l| text_target(l) == Some("tailbridge::access"))
        .collect();
    assert!(access.len() >= 3, "{log}");
    assert!(
        access
            .iter()
            .any(|l| l.contains("] 127.0.0.1 \"POST /mcp/a\" 200 ")),
        "{log}"
    );
    // Every line of the file has the same prefix: no line was cut or interleaved.
    for line in log.lines() {
        assert!(
            text_target(line).is_some(),
            "not a log line: {line:?}\n{log}"
        );
    }
    // The startup line (through env_logger) comes before the first request's lines.
    let start = log.find("tailbridge::app]").unwrap();
    assert!(start < log.find("tailbridge::access]").unwrap());
}

#[tokio::test]
async fn json_lines_share_the_loggers_keys() {
    let up = Upstream::start().await;
    let b = Bridge::start("", &body(&up, "json")).await;
    post(&b, 2).await;
    let log = b.wait_for_log("tailbridge::audit").await;
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let by_target = |t: &str| records.iter().find(|r| r["target"] == t).unwrap();
    let app = by_target("tailbridge::app");
    let access = records
        .iter()
        .find(|r| {
            r["target"] == "tailbridge::access" && r["msg"].as_str().unwrap().contains("/mcp/a")
        })
        .unwrap();
    let audit = by_target("tailbridge::audit");
    let keys = |r: &serde_json::Value| r.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(access), keys(app));
    assert_eq!(keys(audit), keys(app));
    let ts = |r: &serde_json::Value| r["ts"].as_str().unwrap().len();
    assert_eq!(ts(access), ts(app), "{access} vs {app}");
    assert_eq!(access["level"], "INFO");
    // The message is the access record's own JSON, as before.
    let inner: serde_json::Value = serde_json::from_str(access["msg"].as_str().unwrap()).unwrap();
    assert_eq!(inner["path"], "/mcp/a");
    assert_eq!(inner["status"], 200);
    let inner: serde_json::Value = serde_json::from_str(audit["msg"].as_str().unwrap()).unwrap();
    assert_eq!(inner["tool"], "echo");
    assert_eq!(inner["jsonrpc_id"], 7);
}

#[tokio::test]
async fn no_line_is_lost_when_the_process_stops() {
    let up = Upstream::start().await;
    let mut b = Bridge::start("", &body(&up, "text")).await;
    post(&b, 25).await;
    // Straight after the answers, before a flush interval could pass.
    let stopping = std::time::Instant::now();
    b.signal("TERM");
    let (status, b) = tokio::task::spawn_blocking(move || (b.child.wait().unwrap(), b))
        .await
        .unwrap();
    eprintln!("stopped in {:?}", stopping.elapsed());
    assert!(status.success(), "{status}");
    let log = b.stderr();
    let access = log
        .lines()
        .filter(|l| l.contains("tailbridge::access] 127.0.0.1 \"POST /mcp/a\" 200"))
        .count();
    let audit = log
        .lines()
        .filter(|l| l.contains("tailbridge::audit]"))
        .count();
    assert_eq!((access, audit), (25, 25), "{log}");
}
