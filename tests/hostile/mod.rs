//! Hostile input through the running binary: spoofed identity headers, client-made 5xx,
//! HTTP/1.1 pipelining, and generated garbage that must never get a 5xx from the bridge.

use crate::common::*;
use std::io::{Read, Write};
use std::time::Duration;

async fn bridge_to(up: &Upstream, server_extra: &str) -> Bridge {
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/a\n    target: {}\n",
        up.url("/up/a")
    );
    Bridge::start(server_extra, &body).await
}

/// Send `raw` on one connection and read until `want` responses arrived, the peer closed,
/// or the hang guard passed; the status codes in order.
fn raw_exchange(port: u16, raw: &[u8], want: usize) -> Vec<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(raw).unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while std::time::Instant::now() < deadline {
        let text = String::from_utf8_lossy(&data);
        if text.matches("HTTP/1.1 ").count() >= want {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&data)
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| String::from_utf8_lossy(&data)[i + 9..i + 12].parse().ok())
        .collect()
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let b = bridge_to(
        &up,
        "  strip_request_headers: [\"X-Employee-Id\", \"X-Internal-*\"]\n",
    )
    .await;
    let spoofed = [
        "X-Forwarded-User",
        "X-Forwarded-Email",
        "X-Forwarded-Groups",
        "X-Forwarded-Preferred-Username",
        "X-Auth-Request-User",
        "X-Auth-Request-Groups",
        "Remote-User",
        "X-Remote-User",
        "X-User",
        "Tailscale-User-Login",
        "Tailscale-User-Name",
        "Tailscale-User-Profile-Pic",
        "X-Tailbridge-Subject",
        "X-Tailbridge-Whatever",
        "X-Employee-Id",
        "X-Internal-Role",
    ];
    let mut req = client().post(b.url("/mcp/a")).body("{}");
    for h in spoofed {
        req = req.header(h, "admin@example.com");
    }
    let r = req.header("X-Kept", "1").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    for h in spoofed {
        assert_eq!(
            seen.header(&h.to_ascii_lowercase()),
            None,
            "{h} reached the upstream"
        );
    }
    assert_eq!(seen.header("x-kept"), Some("1"));
}

#[tokio::test]
async fn no_client_header_causes_a_5xx() {
    let up = Upstream::start().await;
    let b = bridge_to(&up, "").await;
    for connection in [
        "close, X-Forwarded-For",
        "X-Forwarded-Host, X-Forwarded-Proto",
        "Host",
        "\"X-Forwarded-For\"",
        ":authority",
        "keep-alive, Te, Upgrade",
        &"x, ".repeat(200),
    ] {
        let r = client()
            .post(b.url("/mcp/a"))
            .header("connection", connection)
            .header("x-forwarded-for", "6.6.6.6")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(status < 500, "Connection: {connection} gave {status}");
        assert!(r.headers().get("server").is_none(), "Server header leaked");
        if status == 200 {
            assert_eq!(up.last().header("x-forwarded-for"), Some("127.0.0.1"));
        }
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start().await;
    let b = bridge_to(&up, "").await;
    let port = b.port;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let post: String = (1..=3)
        .map(|i| {
            format!(
                "POST /mcp/a/{i} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        })
        .collect();
    let get: String = (4..=6)
        .map(|i| format!("GET /mcp/a/{i} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    for (what, raw) in [("POST", post), ("GET", get)] {
        let statuses = tokio::task::spawn_blocking(move || raw_exchange(port, raw.as_bytes(), 3))
            .await
            .unwrap();
        assert_eq!(statuses, vec![200, 200, 200], "{what} pipeline");
    }
    let paths: Vec<String> = up.seen().iter().map(|s| s.path_and_query.clone()).collect();
    assert_eq!(
        paths,
        (1..=6).map(|i| format!("/up/a/{i}")).collect::<Vec<_>>(),
        "forwarded in order"
    );
}

#[tokio::test]
async fn generated_garbage_never_gets_a_bridge_5xx() {
    let up = Upstream::start().await;
    let b = bridge_to(&up, "").await;
    let port = b.port;
    let statuses = tokio::task::spawn_blocking(move || {
        let mut seed = 0xC0FF_EE12_3456_789Au64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let methods = [
            "GET", "POST", "DELETE", "OPTIONS", "PUT", "PATCH", "TRACE", "G\x01T",
        ];
        let paths = [
            "/mcp/a",
            "/mcp/a/",
            "/mcp/a/../a",
            "/mcp/%2e%2e/x",
            "/mcp/a?x=%zz",
            "//mcp/a",
            "/mcp/a%00",
            "/.well-known/oauth-protected-resource",
            "/authorize?x",
            "/token",
            "*",
            "/mcp/a#frag",
        ];
        let headers = [
            "Content-Length: 5",
            "Content-Length: -1",
            "Transfer-Encoding: chunked",
            "Connection: close, Host",
            "Content-Type: application/json",
            "Accept: text/event-stream",
            "Mcp-Session-Id: \x7f",
            "Origin: null",
            "Authorization: Bearer",
            "Expect: 100-continue",
            "Content-Encoding: br",
            "MCP-Protocol-Version: 2026-07-28",
            "Mcp-Method: tools/call",
            "X-Forwarded-For: ::1",
        ];
        let mut out = Vec::new();
        for _ in 0..150 {
            let mut raw = format!(
                "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                methods[next(methods.len())],
                paths[next(paths.len())]
            );
            for _ in 0..next(4) {
                raw.push_str(headers[next(headers.len())]);
                raw.push_str("\r\n");
            }
            raw.push_str("Connection: close\r\n\r\n");
            if raw.contains("POST") {
                raw.push_str("{\"a\":");
            }
            out.push((raw.clone(), raw_exchange(port, raw.as_bytes(), 1)));
        }
        out
    })
    .await
    .unwrap();
    for (raw, s) in statuses {
        // The test upstream answers 200 to anything it receives: every 5xx would be the bridge's.
        assert!(s.iter().all(|c| *c < 500), "{raw:?} got {s:?}");
    }
}

#[test]
fn targets_are_checked_as_written_and_numbers_name_their_field() {
    let long = "a".repeat(300);
    let cfg = format!(
        concat!(
            "server:\n  threads: -2\n",
            "limits:\n  max_request_body: -5\n  max_headers: many\n",
            "endpoints:\n  - path: /a\n    target: \"http:///mcp\"\n",
            "  - path: /b\n    target: \"http://:80/x\"\n",
            "  - path: /c\n    target: \"http://{long}/mcp\"\n",
            "  - path: /d\n    target: http://ok.example/mcp\n    timeouts:\n      connect: -1\n",
        ),
        long = long
    );
    let (code, _out, err) = run_cli(&["check"], Some(&cfg));
    assert_eq!(code, 64, "{err}");
    for needle in [
        "endpoints[0].target: `http:///mcp` has no host",
        "endpoints[1].target: `http://:80/x` has no host",
        "endpoints[2].target:",
        "host is 300 characters long; a DNS name has at most 253",
        "limits.max_request_body: `-5` is not a size",
        "limits.max_headers: `many` is not a whole number",
        "server.threads: `-2` is not a whole number",
        "endpoints[3].timeouts.connect: `-1` is not a duration",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[tokio::test]
async fn client_address_allowlists() {
    let up = Upstream::start().await;
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/a\n    target: {}\n  - path: /mcp/b\n    target: {}\n    allowed_client_cidrs: [\"127.0.0.3/32\"]\n",
        up.url("/up/a"),
        up.url("/up/b")
    );
    let b = Bridge::start(
        "  allowed_client_cidrs: [\"127.0.0.2/32\", \"127.0.5.0/24\"]\n",
        &body,
    )
    .await;
    let cases: &[([u8; 4], &str, u16)] = &[
        ([127, 0, 0, 2], "/mcp/a", 200),
        ([127, 0, 5, 77], "/mcp/a", 200),
        ([127, 0, 0, 1], "/mcp/a", 403),
        ([127, 0, 0, 3], "/mcp/a", 403),
        // the endpoint's own list replaces the server's
        ([127, 0, 0, 3], "/mcp/b", 200),
        ([127, 0, 0, 2], "/mcp/b", 403),
    ];
    for (from, path, want) in cases {
        let r = client_from((*from).into())
            .post(b.url(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), *want, "{from:?} {path}");
        if *want == 403 {
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"], "client_address_forbidden");
        }
    }
    // health stays reachable for load balancers and probes from anywhere
    let r = client_from([127, 0, 0, 9].into())
        .get(b.url("/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for_metrics(
        &b,
        &[r#"tailbridge_rejections_total{reason="client_address_forbidden"} 3"#],
    )
    .await;
}

#[test]
fn bad_cidrs_are_config_errors() {
    let cfg = "server:\n  allowed_client_cidrs: [\"160.79.104.1/21\", \"nope\"]\nendpoints:\n  - path: /a\n    target: http://h\n    allowed_client_cidrs: [\"10.0.0.0/33\"]\n";
    let (code, _out, err) = run_cli(&["check"], Some(cfg));
    assert_eq!(code, 64, "{err}");
    for needle in [
        "server.allowed_client_cidrs[0]: `160.79.104.1/21` has host bits set",
        "server.allowed_client_cidrs[1]: `nope` is not an address or a CIDR",
        "endpoints[0].allowed_client_cidrs[0]: `10.0.0.0/33`: the prefix length must be 0 to 32",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}
