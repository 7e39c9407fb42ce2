//! The MCP-aware layer through the running binary: tool policy, `tools/list` filtering,
//! metrics and audit lines, against real MCP peers (the TypeScript SDK, and the Python SDK
//! `mcp` 2.3 in 2026-07-28 and legacy modes) and against the test upstream for exact
//! streaming checks. Needs `tests/py/.venv` (`tests/run.sh` creates it).

use crate::common::idp::{Idp, CLIENT_ID, CLIENT_SECRET};
use crate::common::*;
use crate::e2e::{run_client_script, start_sdk_server, Node};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub(crate) fn py() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/.venv/bin/python");
    assert!(
        p.exists(),
        "Python MCP SDK not installed: run tests/run.sh (it creates tests/py/.venv with mcp==2.3.0)"
    );
    p
}

pub(crate) fn py_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// The Python SDK server on a free port; it appends every tool it runs to `calls`.
pub(crate) fn start_py_server(calls: &std::path::Path) -> (Node, u16) {
    let port = free_port();
    let mut child = Command::new(py())
        .arg(py_script("server.py"))
        .env("PORT", port.to_string())
        .env("CALLS_FILE", calls)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        format!("listening {port}"),
        "python server did not start"
    );
    (Node(child), port)
}

async fn run_py_client(url: String, mode: &'static str) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py())
            .arg(py_script("client.py"))
            .arg(url)
            .arg(mode)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client ({mode}) failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

/// Audit lines (the JSON after the log prefix) in the bridge's stderr, once there are at
/// least `n` (they are written in batches, shortly after the answer).
async fn audit_lines(b: &Bridge, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        let lines: Vec<serde_json::Value> = b
            .stderr()
            .lines()
            .filter(|l| l.contains("tailbridge::audit"))
            .filter_map(|l| l.find('{').map(|i| &l[i..]))
            .map(|j| serde_json::from_str(j).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} audit lines:\n{}",
            lines.len(),
            b.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ts_sdk_denied_call_filtered_list_streamed_progress_audit_and_metrics() {
    let (_server, port) = start_sdk_server();
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - name: notes\n    path: /mcp/notes\n    target: http://127.0.0.1:{port}/mcp\n    tools:\n      deny: [\"echo\"]\n"
    );
    let b = Bridge::start("", &body).await;
    let v = run_client_script("policy-client.mjs", b.url("/mcp/notes"))
        .await
        .unwrap_or_else(|out| panic!("client failed: {out}\nbridge log:\n{}", b.stderr()));
    assert_eq!(
        v["tools"],
        serde_json::json!(["count"]),
        "tools/list not filtered: {v}"
    );
    assert_eq!(v["count"], "counted to 5");
    assert_eq!(v["progress"], serde_json::json!([1, 2, 3, 4, 5]));
    assert_eq!(v["echo"]["ok"], false, "{v}");
    assert_eq!(v["echo"]["code"], -32003, "{v}");
    assert!(
        v["echo"]["message"]
            .as_str()
            .unwrap()
            .contains("tool `echo` is not allowed for anonymous on /mcp/notes"),
        "{v}"
    );
    let stats = get_json(&format!("http://127.0.0.1:{port}/stats")).await;
    assert_eq!(
        stats["calls"],
        serde_json::json!(["count"]),
        "the denied call reached the upstream: {stats}"
    );

    wait_for_metrics(
        &b,
        &[
            r#"tailbridge_mcp_requests_total{endpoint="notes",method="tools/call",outcome="denied",tool="echo"} 1"#,
            r#"tailbridge_mcp_requests_total{endpoint="notes",method="tools/call",outcome="ok",tool="count"} 1"#,
            r#"tailbridge_mcp_requests_total{endpoint="notes",method="tools/list",outcome="ok",tool=""} 1"#,
            r#"tailbridge_mcp_requests_total{endpoint="notes",method="initialize",outcome="ok",tool=""} 1"#,
            r#"tailbridge_mcp_request_duration_seconds_count{endpoint="notes",method="tools/call",tool="count"} 1"#,
        ],
    )
    .await;
    let audit = audit_lines(&b, 2).await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    let denied = audit.iter().find(|a| a["tool"] == "echo").unwrap();
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["endpoint"], "notes");
    assert_eq!(denied["client_ip"], "127.0.0.1");
    assert_eq!(
        denied["session"].as_str().map(str::len),
        Some(16),
        "{denied}"
    );
    assert!(
        denied.get("arguments").is_none(),
        "arguments logged without opt-in"
    );
    let ok = audit.iter().find(|a| a["tool"] == "count").unwrap();
    assert_eq!(ok["outcome"], "ok");
    assert!(ok["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(ok["bytes_out"].as_u64().unwrap() > 0);
    // The access log's reason.
    b.wait_for_log("reason=tool_denied").await;
}

#[tokio::test]
async fn python_sdk_both_revisions_and_mirrored_header_check() {
    let dir = temp_dir("py");
    let calls = dir.join("calls.txt");
    let (_server, port) = start_py_server(&calls);
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - name: py\n    path: /mcp/py\n    target: http://127.0.0.1:{port}/mcp\n    tools:\n      deny: [\"delete_*\"]\n"
    );
    let b = Bridge::start("", &body).await;
    for mode in ["2026-07-28", "legacy"] {
        let v = run_py_client(b.url("/mcp/py"), mode).await;
        assert_eq!(
            v["tools"],
            serde_json::json!(["count", "echo"]),
            "{mode}: {v}"
        );
        assert_eq!(v["count"], "counted to 3", "{mode}: {v}");
        assert_eq!(
            v["progress"],
            serde_json::json!([1.0, 2.0, 3.0]),
            "{mode}: {v}"
        );
        assert_eq!(v["delete"]["ok"], false, "{mode}: {v}");
        assert_eq!(v["delete"]["code"], -32003, "{mode}: {v}");
    }
    let ran = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        vec!["count", "count"],
        "{ran}"
    );

    // 2026-07-28: Mcp-Name must agree with the body, else 400 and nothing upstream.
    let c = client();
    let send = |name: &'static str| {
        c.post(b.url("/mcp/py"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", name)
            .body(r#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#)
            .send()
    };
    let r = send("count").await.unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["id"], 41);
    assert_eq!(v["error"]["code"], -32020);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("Mcp-Name"),
        "{v}"
    );
    let ran = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        !ran.contains("echo"),
        "a mismatched request reached the upstream: {ran}"
    );
    // The same request with an agreeing header passes the bridge (the upstream then judges
    // it: a raw request without the revision's `_meta` envelope is its own 400, -32602).
    let r = send("echo").await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_ne!(v["error"]["code"], -32020, "{v}");
    // Older revisions are judged on the body; their headers are ignored.
    let r = c
        .post(b.url("/mcp/py"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-name", "something-else")
        .body(r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"delete_note","arguments":{"title":"t"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32003, "{v}");
    wait_for_metrics(
        &b,
        &[r#"tailbridge_mcp_requests_total{endpoint="py",method="tools/call",outcome="denied",tool="delete_note"} 3"#],
    )
    .await;
}

/// A POST with a JSON-RPC body to the test upstream's SSE path.
fn rpc_post(b: &Bridge, path: &str, body: &'static str) -> reqwest::RequestBuilder {
    client()
        .post(b.url(path))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
}

/// Read the next chunk of a streamed response as text (bounded by the hang guard).
async fn next_text(r: &mut reqwest::Response) -> String {
    let chunk = tokio::time::timeout(HANG_GUARD, r.chunk())
        .await
        .expect("no event arrived")
        .unwrap()
        .expect("stream ended");
    String::from_utf8(chunk.to_vec()).unwrap()
}

#[tokio::test]
async fn events_pass_one_by_one_with_a_policy_in_force() {
    let up = Upstream::start().await;
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - name: s\n    path: /mcp/s\n    target: {}\n    tools:\n      deny: [\"delete_*\"]\n",
        up.url("/sse")
    );
    let b = Bridge::start("", &body).await;

    // A tool call: each event reaches the client before the upstream sends the next one.
    let mut r = rpc_post(&b, "/mcp/s", r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"count","_meta":{"progressToken":"p"}}}"#)
        .send()
        .await
        .unwrap();
    let tx = up.next_stream().await;
    for i in 1..=3 {
        send_event(&tx, &format!(r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"p","progress":{i}}}}}"#)).await;
        let got = next_text(&mut r).await;
        assert!(
            got.contains(&format!("\"progress\":{i}")),
            "event {i}: {got}"
        );
    }
    send_event(
        &tx,
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#,
    )
    .await;
    assert!(next_text(&mut r).await.contains("isError"));
    drop(tx);
    wait_for_metrics(
        &b,
        &[r#"tailbridge_mcp_requests_total{endpoint="s",method="tools/call",outcome="tool_error",tool="_other"} 1"#],
    )
    .await;

    // A tools/list: events before the result pass at once; the result is filtered.
    let mut r = rpc_post(
        &b,
        "/mcp/s",
        r#"{"jsonrpc":"2.0","id":"L","method":"tools/list"}"#,
    )
    .send()
    .await
    .unwrap();
    let tx = up.next_stream().await;
    send_event(&tx, r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"listing"}}"#).await;
    assert!(next_text(&mut r).await.contains("listing"));
    send_event(&tx, r#"{"jsonrpc":"2.0","id":"L","result":{"tools":[{"name":"count"},{"name":"delete_note"}],"nextCursor":"n2"}}"#).await;
    let got = next_text(&mut r).await;
    let data = got.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["result"]["tools"], serde_json::json!([{"name": "count"}]));
    assert_eq!(v["result"]["nextCursor"], "n2");
    drop(tx);

    // The upstream listed `count` and `delete_note`: now they are labels; others stay _other.
    let r = rpc_post(
        &b,
        "/mcp/s",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_note"}}"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32003);
    wait_for_metrics(
        &b,
        &[r#"tailbridge_mcp_requests_total{endpoint="s",method="tools/call",outcome="denied",tool="delete_note"} 1"#],
    )
    .await;
}

#[tokio::test]
async fn what_the_policy_cannot_read_is_refused_and_batches_cannot_hide_calls() {
    let up = Upstream::start().await;
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - name: p\n    path: /mcp/p\n    target: {}\n    tools:\n      deny: [\"delete_*\"]\n  - name: open\n    path: /mcp/open\n    target: {}\n",
        up.url("/up/p"),
        up.url("/up/open")
    );
    let b = Bridge::start("", &body).await;
    let c = client();
    let post = |path: &str, body: &'static str| {
        c.post(b.url(path))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
    };
    // a denied call inside a batch: the whole batch is refused, per element
    let r = post("/mcp/p", r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_note"}}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v[1]["error"]["data"]["reason"], "tool_denied");
    assert_eq!(v[0]["error"]["data"]["reason"], "batch_refused");
    // the parser's uncertainties are refusals while a policy is in force
    for (bad, why) in [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_note"}}"#,
            "duplicate key",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}} {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_note"}}"#,
            "two documents",
        ),
        ("not json at all", "not JSON"),
    ] {
        let r = post("/mcp/p", bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{why}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], -32700, "{why}: {v}");
    }
    // a compressed body cannot be read: 415; an allowed call is forwarded byte for byte
    let r = post("/mcp/p", "x")
        .header("content-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let allowed = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"text":"é"}}}"#;
    let r = post("/mcp/p", allowed).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.seen();
    assert_eq!(
        seen.len(),
        1,
        "only the allowed call reached the upstream: {seen:?}"
    );
    assert_eq!(&seen[0].body[..], allowed.as_bytes());
    // an SSE-only client gets its refusal as an event
    let r = c
        .post(b.url("/mcp/p"))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_x"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert!(r
        .text()
        .await
        .unwrap()
        .starts_with("event: message\ndata: {"));
    // without a policy, odd bodies pass untouched and count as _unparsed
    let r = post("/mcp/open", "not json at all").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&up.last().body[..], b"not json at all");
    // a body larger than the inspection window is refused under a policy, passed without
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(70_000)
    );
    let r = c
        .post(b.url("/mcp/p"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = c
        .post(b.url("/mcp/open"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().body.len(), big.len());
    wait_for_metrics(
        &b,
        &[
            r#"tailbridge_mcp_requests_total{endpoint="open",method="_unparsed",outcome="ok",tool=""} 2"#,
            r#"tailbridge_mcp_requests_total{endpoint="p",method="_unparsed",outcome="denied",tool=""} 3"#,
        ],
    )
    .await;
}

fn grants_config(idp: &Idp, up: &Upstream) -> String {
    format!(
        concat!(
            "tailnet:\n  mode: direct\n",
            "auth:\n  issuer: {iss}\n  audience: https://mcp.example.com\n",
            "  introspection_url: {iss}/introspect\n  client_id: {cid}\n  client_secret_env: TB_TEST_IDP_SECRET\n",
            "  allow_loopback_idp: true\n  tool_grants_claim: mcp_tools\n",
            "endpoints:\n  - name: notes\n    path: /mcp/notes\n    target: {a}\n",
            "    tools:\n      allow: [\"search\"]\n      deny: [\"delete_*\"]\n",
            "      grants:\n        - users: [\"alice@example.com\"]\n          allow: [\"delete_*\"]\n",
        ),
        iss = idp.issuer(),
        cid = CLIENT_ID,
        a = up.url("/up/notes"),
    )
}

#[tokio::test]
async fn grants_per_identity_and_from_the_userinfo_claim() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let aud = &["claude-client", "https://mcp.example.com/"];
    for who in ["alice", "bob", "carol"] {
        idp.grant(&format!("tok-{who}"), who, aud, 300);
        let claim = match who {
            "carol" => serde_json::json!(["notes:delete_*", "other:run_shell"]),
            _ => serde_json::json!([]),
        };
        idp.set_userinfo(
            &format!("tok-{who}"),
            serde_json::json!({"sub": who, "mcp_tools": claim}),
        );
    }
    let b = Bridge::start_with_env(
        "",
        &grants_config(&idp, &up),
        &[("TB_TEST_IDP_SECRET", CLIENT_SECRET)],
    )
    .await;
    let call = |token: &str, tool: &str| {
        client()
            .post(b.url("/mcp/notes"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#
            ))
            .send()
    };
    let denied = |v: &serde_json::Value| v["error"]["code"] == -32003;
    let cases = [
        ("alice", "delete_note", true),
        ("bob", "delete_note", false),
        ("carol", "delete_note", true),
        ("carol", "run_shell", false),
        ("bob", "search", true),
        ("bob", "other", false),
    ];
    for (who, tool, allowed) in cases {
        let before = up.seen().len();
        let r = call(&format!("tok-{who}"), tool).await.unwrap();
        assert_eq!(r.status(), 200, "{who} {tool}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(!denied(&v), allowed, "{who} {tool}: {v}");
        assert_eq!(
            up.seen().len() - before,
            usize::from(allowed),
            "{who} {tool}"
        );
        if !allowed {
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains(&format!("{who}@example.com")), "{msg}");
        }
    }
    // userinfo is asked once per token (cached with the introspection verdict)
    assert_eq!(
        idp.state
            .userinfo_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    // a failing userinfo is the IdP failing: 503, as introspection
    idp.grant("tok-dave", "dave", aud, 300);
    idp.state
        .userinfo_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = call("tok-dave", "search").await.unwrap();
    assert_eq!(r.status(), 503);
    b.wait_for_log("\"alice@example.com\"").await;
    b.wait_for_log("\"bob@example.com\"").await;
    let audit = audit_lines(&b, 2).await;
    let alice = audit
        .iter()
        .find(|a| a["username"] == "alice@example.com")
        .unwrap();
    assert_eq!(alice["sub"], "alice");
    assert_eq!(alice["client_id"], "claude-client");
    // the stand-in upstream answers plain JSON, not JSON-RPC: forwarded, but unanswered
    assert_eq!(alice["outcome"], "unanswered");
    let bob = audit
        .iter()
        .find(|a| a["username"] == "bob@example.com")
        .unwrap();
    assert_eq!(bob["outcome"], "denied");
}

#[test]
fn grants_without_auth_and_bad_tool_entries_are_config_errors() {
    let cfg = concat!(
        "endpoints:\n  - path: /mcp/a\n    target: http://127.0.0.1:1/mcp\n",
        "    tools:\n      allow: [\"\"]\n      grants:\n        - users: []\n          allow: [\"x\"]\n",
        "        - users: [\"a\"]\n"
    );
    let (code, _out, err) = run_cli(&["check"], Some(cfg));
    assert_eq!(code, 64, "{err}");
    for needle in [
        "endpoints[0].tools.grants: needs the auth section",
        "endpoints[0].tools.allow[0]: must be a tool name",
        "endpoints[0].tools.grants[0]: names nobody",
        "endpoints[0].tools.grants[1].allow: required",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn check_prints_the_effective_tool_policy() {
    let cfg = concat!(
        "endpoints:\n  - path: /mcp/a\n    target: http://127.0.0.1:1/mcp\n",
        "    tools:\n      deny: [\"delete_*\", \"run_shell\"]\n",
        "  - path: /mcp/b\n    target: http://127.0.0.1:1/mcp\n",
    );
    let (code, out, err) = run_cli(&["check"], Some(cfg));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tools: allow [*] deny [delete_*, run_shell] grants 0 (enforced)"),
        "{out}"
    );
    assert!(
        out.contains("tools: allow [*] deny [] grants 0 (not enforced"),
        "{out}"
    );
}
