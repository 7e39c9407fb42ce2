//! OpenTelemetry traces through the running binary. The collector is a stand-in
//! (tests/py/collector.py) that decodes OTLP/HTTP protobuf with the official proto
//! definitions; the MCP peers are the real SDKs (Python `mcp` 2.3, whose server takes its
//! span's parent from `params._meta`, and the TypeScript SDK). Needs `tests/py/.venv`
//! with `opentelemetry-proto` and `tests/e2e/node_modules` (`tests/run.sh` installs both).

use crate::common::idp::{Idp, CLIENT_ID, CLIENT_SECRET};
use crate::common::*;
use crate::e2e::{run_sdk_client, start_sdk_server, Node};
use crate::mcp::{py, py_script};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// The collector stand-in (`mode`: ok or hang) and its port.
fn start_collector(mode: &str) -> (Node, u16) {
    let mut child = Command::new(py())
        .arg(py_script("collector.py"))
        .arg(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            panic!("collector did not start ({line:?}); run tests/run.sh (opentelemetry-proto)")
        });
    (Node(child), port)
}

/// The spans the collector has, once `done` holds for them.
async fn spans_when(port: u16, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let v = get_json(&format!("http://127.0.0.1:{port}/spans")).await;
        let spans = v.as_array().cloned().unwrap_or_default();
        if done(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "the collector never got the spans expected: {}",
            serde_json::to_string_pretty(&spans).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn in_trace<'a>(spans: &'a [Value], trace: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["trace_id"] == trace).collect()
}

fn named<'a>(spans: &[&'a Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

/// A sampled client `traceparent` of trace `n` (distinct per request).
fn traceparent(n: u8) -> (String, String) {
    let trace = format!("{:02x}{}", n, &TRACE[2..]);
    (trace.clone(), format!("00-{trace}-{PARENT}-01"))
}

/// `(trace id, span id)` of a `traceparent`.
fn ids(tp: &str) -> (String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    (parts[1].to_string(), parts[2].to_string())
}

fn call(id: u32, tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"hi"}}}}}}"#
    )
}

#[tokio::test]
async fn spans_name_mcp_calls_and_carry_the_trace_to_the_upstream() {
    let (_collector, cport) = start_collector("ok");
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let aud = ["claude-client", "https://mcp.example.com/"];
    idp.grant("tok", "1001", &aud, 300);
    idp.grant("tok-other", "1002", &aud, 300);
    let body = format!(
        concat!(
            "tailnet:\n  mode: direct\n",
            "auth:\n  issuer: {iss}\n  audience: https://mcp.example.com\n",
            "  introspection_url: {iss}/introspect\n  client_id: {cid}\n  client_secret_env: TB_TEST_IDP_SECRET\n",
            "  allow_loopback_idp: true\n",
            "tracing:\n  otlp_endpoint: http://127.0.0.1:{cport}\n  sample_ratio: 0\n",
            "  service_name: bridge-under-test\n",
            "  headers:\n    x-tenant: t1\n    x-api-key_env: TB_TEST_OTLP_KEY\n",
            "endpoints:\n  - name: a\n    path: /mcp/a\n    target: {a}\n    tools:\n      deny: [\"delete_*\"]\n",
            "  - name: slow\n    path: /mcp/slow\n    target: {slow}\n    timeouts: {{first_byte: 300ms}}\n",
        ),
        iss = idp.issuer(),
        cid = CLIENT_ID,
        cport = cport,
        a = up.url("/up/a"),
        slow = up.url("/hang"),
    );
    let b = Bridge::start_with_env(
        "",
        &body,
        &[
            ("TB_TEST_IDP_SECRET", CLIENT_SECRET),
            ("TB_TEST_OTLP_KEY", "key-from-env"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=from-env,x-extra=e"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let c = client();
    let post = |path: &str, tp: Option<&str>, token: Option<&str>, body: String| {
        let mut r = c
            .post(b.url(path))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", "sess-1")
            .header("mcp-protocol-version", "2025-11-25")
            .body(body);
        if let Some(tp) = tp {
            r = r.header("traceparent", tp).header("tracestate", "vendor=1");
        }
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };

    // Not sampled (ratio 0, no parent): the context still goes upstream, no span is kept.
    let r = post("/mcp/a", None, Some("tok-other"), call(1, "echo"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let unsampled = up.last().header("traceparent").unwrap().to_string();
    assert!(unsampled.ends_with("-00"), "{unsampled}");

    // A sampled tool call: the client's trace continues into the upstream.
    let (t1, tp1) = traceparent(1);
    let r = post("/mcp/a", Some(&tp1), Some("tok"), call(2, "echo"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    let (header_trace, header_span) = ids(seen.header("traceparent").unwrap());
    assert_eq!(header_trace, t1);
    assert_eq!(seen.header("tracestate"), Some("vendor=1"));
    let sent: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["params"]["arguments"], json!({"text": "hi"}));
    let (meta_trace, meta_span) = ids(sent["params"]["_meta"]["traceparent"].as_str().unwrap());
    assert_eq!(meta_trace, t1);

    // Refusals: the tool policy, authentication, a timeout.
    let (t2, tp2) = traceparent(2);
    let r = post("/mcp/a", Some(&tp2), Some("tok"), call(3, "delete_note"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (t3, tp3) = traceparent(3);
    let r = post("/mcp/a", Some(&tp3), None, call(4, "echo"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (t4, tp4) = traceparent(4);
    let r = post("/mcp/slow", Some(&tp4), Some("tok"), call(5, "echo"))
        .await
        .unwrap();
    assert_eq!(r.status(), 504);

    // A batch: one span per message, each message carrying its own.
    let (t5, tp5) = traceparent(5);
    let batch = format!(
        r#"[{{"jsonrpc":"2.0","id":6,"method":"tools/list","params":{{}}}},{}]"#,
        call(7, "echo")
    );
    let r = post("/mcp/a", Some(&tp5), Some("tok"), batch)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let batch_sent: Value = serde_json::from_slice(&up.last().body).unwrap();

    // Spans per trace: the call (request, introspection, upstream), the refusals (the
    // request; the timeout also its upstream leg), the batch (request, 2 messages, upstream).
    let want = [(&t1, 3), (&t2, 1), (&t3, 1), (&t4, 2), (&t5, 4)];
    let spans = spans_when(cport, |s| {
        want.iter().all(|(t, n)| in_trace(s, t).len() >= *n)
    })
    .await;
    let (unsampled_trace, _) = ids(&unsampled);
    assert!(
        in_trace(&spans, &unsampled_trace).is_empty(),
        "an unsampled trace was exported"
    );

    // The tool call: SERVER span in the MCP conventions, CLIENT spans for tsidp and the
    // upstream under it.
    let one = in_trace(&spans, &t1);
    assert_eq!(one.len(), 3, "{one:#?}");
    let server = named(&one, "tools/call echo");
    assert_eq!(server["kind"], "SERVER");
    assert_eq!(server["parent_span_id"], PARENT);
    assert_eq!(
        server["span_id"],
        meta_span.as_str(),
        "params._meta names the request span"
    );
    let a = &server["attributes"];
    for (k, v) in [
        ("mcp.method.name", json!("tools/call")),
        ("gen_ai.tool.name", json!("echo")),
        ("gen_ai.operation.name", json!("execute_tool")),
        ("jsonrpc.request.id", json!("2")),
        ("mcp.protocol.version", json!("2025-11-25")),
        ("http.request.method", json!("POST")),
        ("http.response.status_code", json!(200)),
        ("http.route", json!("/mcp/a")),
        ("url.path", json!("/mcp/a")),
        ("client.address", json!("127.0.0.1")),
        ("enduser.id", json!("1001")),
        ("tailbridge.endpoint", json!("a")),
        ("tailbridge.oauth.client_id", json!("claude-client")),
        // the test upstream answers no JSON-RPC: the call went unanswered
        ("error.type", json!("unanswered")),
    ] {
        assert_eq!(a[k], v, "{k}: {server:#}");
    }
    let session = a["mcp.session.id"].as_str().unwrap();
    assert!(session != "sess-1" && session.len() >= 16, "{session}");
    let upstream = named(&one, "POST /up/a");
    assert_eq!(upstream["kind"], "CLIENT");
    assert_eq!(upstream["parent_span_id"], server["span_id"]);
    assert_eq!(
        upstream["span_id"],
        header_span.as_str(),
        "the upstream got the CLIENT span"
    );
    assert_eq!(upstream["attributes"]["http.response.status_code"], 200);
    assert_eq!(upstream["attributes"]["server.address"], "127.0.0.1");
    assert!(upstream["attributes"]["tailbridge.upstream.time_to_first_byte"].is_number());
    assert_eq!(upstream["events"], json!(["connected", "first_byte"]));
    let intro = named(&one, "POST /introspect");
    assert_eq!(intro["kind"], "CLIENT");
    assert_eq!(intro["parent_span_id"], server["span_id"]);
    assert_eq!(intro["attributes"]["tailbridge.idp.call"], "introspection");
    assert_eq!(intro["attributes"]["http.response.status_code"], 200);
    assert_eq!(server["resource"]["service.name"], "bridge-under-test");
    assert_eq!(server["scope"], "tailbridge");

    // Refusal spans: named as usual, error.type the reason, nothing sent upstream.
    for (trace, name, reason) in [
        (&t2, "tools/call delete_note", "tool_denied"),
        // refused before the body was read: an HTTP span
        (&t3, "POST /mcp/a", "missing_token"),
        (&t4, "tools/call echo", "upstream_timeout"),
    ] {
        let s = in_trace(&spans, trace);
        let server = named(&s, name);
        assert_eq!(server["attributes"]["error.type"], reason, "{server:#}");
        assert_eq!(server["status"], "ERROR");
    }
    assert!(
        in_trace(&spans, &t2).iter().all(|s| s["kind"] != "CLIENT"),
        "a refused call has no upstream leg"
    );
    let timed_out = in_trace(&spans, &t4);
    let leg = named(&timed_out, "POST /hang");
    assert_eq!(leg["attributes"]["error.type"], "upstream_timeout");
    assert_eq!(
        in_trace(&spans, &t3)[0]["attributes"]["http.response.status_code"],
        401
    );

    // The batch.
    let five = in_trace(&spans, &t5);
    let request = named(&five, "POST /mcp/a");
    assert_eq!(request["attributes"]["tailbridge.mcp.batch_size"], 2);
    for (i, name) in [(0, "tools/list"), (1, "tools/call echo")] {
        let m = named(&five, name);
        assert_eq!(m["parent_span_id"], request["span_id"]);
        let (_, span) = ids(batch_sent[i]["params"]["_meta"]["traceparent"]
            .as_str()
            .unwrap());
        assert_eq!(
            m["span_id"],
            span.as_str(),
            "message {i} names its own span"
        );
    }

    // What the collector was sent: protobuf at /v1/traces, the file's header over the
    // environment's, the secret from its variable.
    let reqs = get_json(&format!("http://127.0.0.1:{cport}/requests")).await;
    let first = &reqs[0];
    assert_eq!(first["path"], "/v1/traces");
    assert_eq!(first["content_type"], "application/x-protobuf");
    assert_eq!(first["headers"]["x-tenant"], "t1");
    assert_eq!(first["headers"]["x-api-key"], "key-from-env");
    assert_eq!(first["headers"]["x-extra"], "e");
    let m = metrics_when(&b, |m| {
        counter(m, "tailbridge_trace_spans_exported_total") >= 11
    })
    .await;
    assert_eq!(dropped(&m, "queue_full"), 0, "{m}");
}

#[tokio::test]
async fn the_python_sdk_server_takes_the_bridges_span_as_its_parent() {
    let (_collector, cport) = start_collector("ok");
    let dir = temp_dir("py-trace");
    let trace_file = dir.join("trace.jsonl");
    let port = free_port();
    let mut child = Command::new(py())
        .arg(py_script("server.py"))
        .env("PORT", port.to_string())
        .env("TRACE_FILE", &trace_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Node(child);
    let body = format!(
        "tailnet:\n  mode: direct\ntracing:\n  otlp_endpoint: http://127.0.0.1:{cport}\nendpoints:\n  - name: py\n    path: /mcp/py\n    target: http://127.0.0.1:{port}/mcp\n"
    );
    let b = Bridge::start_with_env("", &body, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]).await;
    for mode in ["2026-07-28", "legacy"] {
        let out = tokio::task::spawn_blocking({
            let url = b.url("/mcp/py");
            move || {
                Command::new(py())
                    .arg(py_script("client.py"))
                    .arg(url)
                    .arg(mode)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("client ({mode}) failed: {out:?}"));
        assert_eq!(v["count"], "counted to 3", "{mode}: {v}");
        assert_eq!(v["progress"], json!([1.0, 2.0, 3.0]), "{mode}: {v}");
    }
    let recorded: Vec<Value> = std::fs::read_to_string(&trace_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recorded.len(), 2);
    let spans = spans_when(cport, |s| {
        recorded.iter().all(|r| {
            s.iter()
                .any(|x| x["span_id"] == r["span_id"] && x["name"] == "tools/call count")
        })
    })
    .await;
    // The SDK's MCP span ran in the bridge's trace, under the span that stands for that
    // tools/call here (from params._meta).
    for r in &recorded {
        let bridge = spans.iter().find(|x| x["span_id"] == r["span_id"]).unwrap();
        assert_eq!(bridge["trace_id"], r["trace_id"]);
        assert_eq!(bridge["attributes"]["gen_ai.tool.name"], "count");
        assert!(
            bridge["attributes"].get("error.type").is_none(),
            "{bridge:#}"
        );
    }
    let versions: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "tools/call count")
        .map(|s| &s["attributes"]["mcp.protocol.version"])
        .collect();
    assert!(versions.contains(&&json!("2026-07-28")), "{versions:?}");
}

#[tokio::test]
async fn the_typescript_sdk_sees_no_difference_with_tracing_on() {
    let (_collector, cport) = start_collector("ok");
    let (_server, port) = start_sdk_server();
    let body = format!(
        "tailnet:\n  mode: direct\ntracing:\n  otlp_endpoint: http://127.0.0.1:{cport}\nendpoints:\n  - name: sdk\n    path: /mcp/sdk\n    target: http://127.0.0.1:{port}/mcp\n"
    );
    let b = Bridge::start_with_env("", &body, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]).await;
    let v = run_sdk_client(b.url("/mcp/sdk"), Vec::new())
        .await
        .unwrap_or_else(|out| panic!("client failed: {out}\nbridge log:\n{}", b.stderr()));
    // The same summary as without tracing (e2e::sdk_client_through_bridge_to_sdk_server).
    assert_eq!(v["server"]["name"], "e2e-upstream");
    assert_eq!(v["tools"], json!(["count", "echo"]));
    assert_eq!(v["callResult"], "counted to 5");
    assert_eq!(v["progress"], json!([1, 2, 3, 4, 5]));
    assert_eq!(v["echo"], "héllo ✓");
    assert_eq!(v["terminated"], true);
    let names = [
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/call count",
        "tools/call echo",
        "DELETE /mcp/sdk",
    ];
    let spans = spans_when(cport, |s| {
        names.iter().all(|n| s.iter().any(|x| x["name"] == *n))
    })
    .await;
    for s in spans
        .iter()
        .filter(|s| s["attributes"].get("mcp.method.name").is_some())
    {
        assert!(s["attributes"].get("error.type").is_none(), "{s:#}");
    }
}

#[tokio::test]
async fn a_collector_that_never_answers_costs_spans_not_requests() {
    let (_collector, cport) = start_collector("hang");
    let up = Upstream::start().await;
    let body = format!(
        "tailnet:\n  mode: direct\ntracing:\n  otlp_endpoint: http://127.0.0.1:{cport}\nendpoints:\n  - path: /mcp/a\n    target: {}\n",
        up.url("/up")
    );
    let b = Bridge::start_with_env(
        "",
        &body,
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ],
    )
    .await;
    let c = client();
    for i in 0..40 {
        let r = c
            .post(b.url("/mcp/a"))
            .body(call(i, "echo"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // 80 spans (a request and its upstream leg each) into a queue of 4 whose exports hang.
    let m = metrics_when(&b, |m| {
        dropped(m, "export_failed") >= 2 && dropped(m, "queue_full") >= 60
    })
    .await;
    assert_eq!(
        counter(&m, "tailbridge_trace_spans_exported_total"),
        0,
        "{m}"
    );
    // Shutting down waits for the stuck export a bounded time only.
    let started = Instant::now();
    b.signal("TERM");
    let mut b = b;
    let status = loop {
        if let Some(s) = b.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < HANG_GUARD, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );

    // A collector that is down: every export fails at once, requests do not notice.
    let closed = free_port();
    let body = format!(
        "tailnet:\n  mode: direct\ntracing:\n  otlp_endpoint: http://127.0.0.1:{closed}\nendpoints:\n  - path: /mcp/a\n    target: {}\n",
        up.url("/up")
    );
    let b = Bridge::start_with_env("", &body, &[("OTEL_BSP_SCHEDULE_DELAY", "50")]).await;
    for i in 0..5 {
        let r = c
            .post(b.url("/mcp/a"))
            .body(call(i, "echo"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    metrics_when(&b, |m| dropped(m, "export_failed") == 10).await;
    assert!(b.stderr().contains("tracing: export to"), "{}", b.stderr());
}

#[tokio::test]
async fn off_without_an_endpoint() {
    let up = Upstream::start().await;
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/a\n    target: {}\n",
        up.url("/up")
    );
    let b = Bridge::start("", &body).await;
    let (_, tp) = traceparent(9);
    let r = client()
        .post(b.url("/mcp/a"))
        .header("traceparent", &tp)
        .body(call(1, "echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Off, the bridge is transparent: the client's context and body pass as they are.
    let seen = up.last();
    assert_eq!(seen.header("traceparent"), Some(tp.as_str()));
    assert_eq!(&seen.body[..], call(1, "echo").as_bytes());
    let m = get_metrics(&b).await;
    assert!(!m.contains("tailbridge_trace_spans"), "{m}");
    assert!(!b.stderr().contains("tracing:"));
}

fn counter(m: &str, name: &str) -> u64 {
    m.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn dropped(m: &str, reason: &str) -> u64 {
    counter(
        m,
        &format!("tailbridge_trace_spans_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// The metrics page once `done` holds for it.
async fn metrics_when(b: &Bridge, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let m = get_metrics(b).await;
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "metrics never got there:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get_metrics(b: &Bridge) -> String {
    client()
        .get(b.admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
