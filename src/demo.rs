//! `tailbridge demo`: a first run that works with nothing else running. A bridge on loopback in
//! front of a small built-in MCP server (streamable HTTP: `echo`, `time`, and `count`, which
//! streams progress over SSE). Clearly a demo: no auth, no tailnet, loopback only.

use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The config the demo bridge runs with.
pub fn config_text(
    port: u16,
    admin_port: u16,
    upstream_port: u16,
    dir: &std::path::Path,
) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:{port}\"\n  pid_file: \"{d}/tailbridge-demo.pid\"\n  upgrade_sock: \"{d}/tailbridge-demo.sock\"\n\
         admin:\n  listen: \"127.0.0.1:{admin_port}\"\ntailnet:\n  mode: direct\n\
         endpoints:\n  - name: demo\n    path: /mcp/demo\n    target: http://127.0.0.1:{upstream_port}/mcp\n    description: built-in demo MCP server\n",
        d = dir.display()
    )
}

/// What to try, printed at start.
pub fn banner(port: u16, admin_port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/mcp/demo");
    let h = "-H 'content-type: application/json' -H 'accept: application/json, text/event-stream'";
    format!(
        "tailbridge demo: a bridge on http://127.0.0.1:{port} in front of a small built-in MCP server\n\
         (a demo: no auth, no tailnet, loopback only; for real use see conf/tailbridge.yaml).\n\n\
         Try it:\n\
         curl -s {url} {h} -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"curl\",\"version\":\"1\"}}}}}}'\n\
         curl -s {url} {h} -d '{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}}'\n\
         curl -sN {url} {h} -d '{{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{{\"name\":\"count\",\"arguments\":{{\"n\":5}},\"_meta\":{{\"progressToken\":\"p\"}}}}}}'\n\
         npx @modelcontextprotocol/inspector   # then connect to {url} (Streamable HTTP)\n\n\
         Status page: http://127.0.0.1:{admin_port}/   Metrics: http://127.0.0.1:{admin_port}/metrics\n\
         Stop with Ctrl-C.\n"
    )
}

fn tools() -> Value {
    json!([
        {"name": "echo", "description": "Echoes its input",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"name": "time", "description": "The current time (UTC)",
         "inputSchema": {"type": "object", "properties": {}}},
        {"name": "count", "description": "Counts to n, streaming one progress notification per step",
         "inputSchema": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 20}}, "required": ["n"]}},
    ])
}

fn text_result(id: &Value, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}})
}

/// What one JSON-RPC request is answered with: a JSON body, an event stream (count), or 202.
enum Answer {
    Json(Value),
    Count {
        id: Value,
        n: u64,
        token: Option<Value>,
    },
    Accepted,
}

fn answer(msg: &Value) -> Answer {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let method = msg["method"].as_str().unwrap_or_default();
    if msg.get("id").is_none() {
        return Answer::Accepted; // notifications, e.g. notifications/initialized
    }
    match method {
        "initialize" => {
            let asked = msg["params"]["protocolVersion"]
                .as_str()
                .unwrap_or("2025-11-25");
            let version = if matches!(asked, "2025-11-25" | "2025-06-18" | "2025-03-26") {
                asked
            } else {
                "2025-11-25"
            };
            Answer::Json(json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "tailbridge-demo", "version": env!("CARGO_PKG_VERSION")}}}))
        }
        "ping" => Answer::Json(json!({"jsonrpc": "2.0", "id": id, "result": {}})),
        "tools/list" => {
            Answer::Json(json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools()}}))
        }
        "tools/call" => {
            let args = &msg["params"]["arguments"];
            match msg["params"]["name"].as_str().unwrap_or_default() {
                "echo" => Answer::Json(text_result(&id, args["text"].as_str().unwrap_or_default())),
                "time" => Answer::Json(text_result(&id, &crate::mcp::audit::now_rfc3339())),
                "count" => Answer::Count {
                    id,
                    n: args["n"].as_u64().unwrap_or(3).clamp(1, 20),
                    token: msg["params"]["_meta"].get("progressToken").cloned(),
                },
                other => Answer::Json(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": format!("unknown tool {other}")}}),
                ),
            }
        }
        _ => Answer::Json(
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("method not found: {method}")}}),
        ),
    }
}

async fn write_json(
    s: &mut TcpStream,
    status: &str,
    body: &[u8],
    extra: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await
}

/// Serve one connection: HTTP/1.1 keep-alive for JSON answers; an event stream ends it.
async fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut len = 0usize;
        let mut session = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("mcp-session-id:") {
                session = Some(h[15..].trim().to_string());
            }
        }
        let mut body = vec![0u8; len.min(1 << 20)];
        r.read_exact(&mut body).await?;
        let s = r.get_mut();
        let method = line.split(' ').next().unwrap_or_default().to_string();
        match method.as_str() {
            "DELETE" => write_json(s, "200 OK", b"", "").await?,
            "POST" => {
                let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let sid = session.clone().unwrap_or_else(|| format!("demo-{:x}", std::process::id() ^ (crate::tls::unix_now() as u32)));
                let extra = format!("mcp-session-id: {sid}\r\n");
                match answer(&msg) {
                    Answer::Accepted => s.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n").await?,
                    Answer::Json(v) => write_json(s, "200 OK", v.to_string().as_bytes(), &extra).await?,
                    Answer::Count { id, n, token } => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n{extra}connection: close\r\n\r\n"
                        );
                        s.write_all(head.as_bytes()).await?;
                        for i in 1..=n {
                            if let Some(t) = &token {
                                let ev = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                                    "params": {"progressToken": t, "progress": i, "total": n, "message": format!("step {i}")}});
                                s.write_all(format!("event: message\ndata: {ev}\n\n").as_bytes()).await?;
                                s.flush().await?;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        let done = text_result(&id, &format!("counted to {n}"));
                        s.write_all(format!("event: message\ndata: {done}\n\n").as_bytes()).await?;
                        return s.shutdown().await;
                    }
                }
            }
            _ => {
                s.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nallow: POST, DELETE\r\ncontent-length: 0\r\n\r\n")
                    .await?
            }
        }
    }
}

/// Start the demo MCP server on its own thread and runtime; its loopback port.
pub fn start_upstream() -> std::io::Result<u16> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = std_listener.local_addr()?.port();
    std_listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("demo-mcp".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else {
                    return;
                };
                while let Ok((sock, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let _ = serve(sock).await;
                    });
                }
            });
        })?;
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_table() {
        let init = answer(
            &json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}),
        );
        let Answer::Json(v) = init else {
            panic!("initialize")
        };
        assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
        assert!(matches!(
            answer(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Answer::Accepted
        ));
        let Answer::Json(v) = answer(
            &json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}),
        ) else {
            panic!("echo")
        };
        assert_eq!(v["result"]["content"][0]["text"], "hi");
        assert!(matches!(
            answer(
                &json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"count","arguments":{"n":99}}})
            ),
            Answer::Count { n: 20, .. }
        ));
        let Answer::Json(v) = answer(&json!({"jsonrpc":"2.0","id":4,"method":"nope"})) else {
            panic!("nope")
        };
        assert_eq!(v["error"]["code"], -32601);
    }
}
