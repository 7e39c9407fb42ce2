//! Routing, headers, limits, streaming, health and metrics through the running binary.

use crate::common::*;
use futures::StreamExt;

fn endpoints(up: &Upstream) -> String {
    format!(
        concat!(
            "tailnet:\n  mode: direct\nendpoints:\n",
            "  - path: /mcp/a\n    target: {a}\n",
            "  - path: /mcp/ab\n    target: {ab}\n",
            "  - path: /mcp/off\n    target: {a}\n    enabled: false\n",
            "  - path: /mcp/sse\n    target: {sse}\n",
            "  - path: /mcp/dead\n    target: http://127.0.0.1:{dead}/mcp\n"
        ),
        a = up.url("/up/a"),
        ab = up.url("/"),
        sse = up.url("/sse"),
        dead = free_port(),
    )
}

async fn json(r: reqwest::Response) -> serde_json::Value {
    r.json().await.unwrap()
}

#[tokio::test]
async fn routes_on_segment_boundaries_and_keeps_query() {
    let up = Upstream::start().await;
    let b = Bridge::start("", &endpoints(&up)).await;
    let c = client();
    let cases: &[(&str, Option<&str>)] = &[
        ("/mcp/a", Some("/up/a")),
        ("/mcp/a/", Some("/up/a")),
        ("/mcp/a/x/y?q=1&r=%2F", Some("/up/a/x/y?q=1&r=%2F")),
        ("/mcp//a", Some("/up/a")),
        ("/mcp/z/../a", Some("/up/a")),
        ("/mcp/a/b%2Fc", Some("/up/a/b%2Fc")),
        ("/mcp/ab", Some("/")),
        ("/mcp/ab/x", Some("/x")),
        ("/mcp/abc", None),
        ("/mcp/a%2Fb", None),
        ("/other", None),
    ];
    for (path, want) in cases {
        let r = c.post(b.url(path)).body("{}").send().await.unwrap();
        match want {
            Some(upstream_path) => {
                assert_eq!(r.status(), 200, "{path}");
                let v = json(r).await;
                assert_eq!(v["path"], *upstream_path, "{path}");
            }
            None => {
                assert_eq!(r.status(), 404, "{path}");
                assert_eq!(r.headers()["content-type"], "application/json");
                let v = json(r).await;
                assert_eq!(v["error"], "not_found", "{path}");
            }
        }
    }
    // Disabled endpoints are 404 and never reach the upstream.
    let before = up.seen().len();
    let r = c.post(b.url("/mcp/off")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(up.seen().len(), before);
    // A dot segment above the root is a bad request.
    assert_eq!(raw_status(b.port, "GET /%2e%2e/mcp/a HTTP/1.1").await, 400);
    assert_eq!(
        raw_status(b.port, "GET /mcp/../../mcp/a HTTP/1.1").await,
        400
    );
    // Encoded dot segments cannot climb out of a prefix into another endpoint.
    assert_eq!(
        raw_status(b.port, "GET /mcp/off/%2e%2e/a HTTP/1.1").await,
        200
    );
    assert_eq!(
        raw_status(b.port, "GET /mcp/a/%2E%2E/off HTTP/1.1").await,
        404
    );
}

#[tokio::test]
async fn connection_level_headers_of_the_upstream_never_reach_the_client() {
    let up = Upstream::start().await;
    let b = Bridge::start("", &endpoints(&up)).await;
    let c = client();
    for attempt in 0..2 {
        let r = c.get(b.url("/mcp/ab/hop-headers")).send().await.unwrap();
        assert_eq!(r.status(), 200, "attempt {attempt}");
        for gone in ["keep-alive", "proxy-connection", "server"] {
            assert!(r.headers().get(gone).is_none(), "{gone} reached the client");
        }
        // The client connection's own state, not the upstream's `close`.
        assert_eq!(r.headers()["connection"], "keep-alive", "attempt {attempt}");
        assert_eq!(r.text().await.unwrap(), "{}");
    }
}

#[tokio::test]
async fn rewrites_request_and_response_headers() {
    let up = Upstream::start().await;
    let b = Bridge::start("", &endpoints(&up)).await;
    let r = client()
        .post(b.url("/mcp/a"))
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-Host", "evil.example")
        .header("Forwarded", "for=6.6.6.6")
        .header("X-Real-IP", "6.6.6.6")
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "1")
        .header("TE", "trailers")
        // Every other standard hop-by-hop header (pingora strips these; Transfer-Encoding
        // is the body's framing and is tested with chunked bodies elsewhere).
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Connection", "keep-alive")
        .header("Proxy-Authenticate", "Basic")
        .header("Proxy-Authorization", "Basic eDp5")
        .header("Trailer", "X-Checksum")
        .header("Upgrade", "h2c")
        .header("HTTP2-Settings", "AAMAAABkAAQAAP__")
        .header("Mcp-Session-Id", "s-123")
        .header("MCP-Protocol-Version", "2025-11-25")
        .header("Last-Event-ID", "7")
        .header("Accept", "application/json, text/event-stream")
        .header("Authorization", "Bearer client-secret-token")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(
        r.headers().get("server").is_none(),
        "Server header must be removed"
    );
    assert!(
        r.headers().get("strict-transport-security").is_none(),
        "no HSTS without TLS"
    );
    assert_eq!(r.headers()["mcp-session-id"], "s-123");
    let seen = up.last();
    assert_eq!(seen.header("host"), Some(up.addr.to_string().as_str()));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.headers["x-forwarded-for"].len(), 1);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(format!("127.0.0.1:{}", b.port).as_str())
    );
    for gone in [
        "forwarded",
        "x-real-ip",
        "x-hop",
        "te",
        "origin",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
        "upgrade",
        "http2-settings",
    ] {
        assert!(seen.header(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(seen.header("mcp-session-id"), Some("s-123"));
    assert_eq!(seen.header("mcp-protocol-version"), Some("2025-11-25"));
    assert_eq!(seen.header("last-event-id"), Some("7"));
    assert_eq!(
        seen.header("accept"),
        Some("application/json, text/event-stream")
    );
    // Authless mode without an upstream token: the client's Authorization passes on.
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer client-secret-token")
    );
    assert_eq!(
        &seen.body[..],
        br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#
    );
}

#[tokio::test]
async fn upstream_token_replaces_authorization() {
    let up = Upstream::start().await;
    let dir = temp_dir("tok");
    let tok = dir.join("token");
    std::fs::write(&tok, "file-token\n").unwrap();
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/env\n    target: {u}\n    upstream_token_env: TB_TEST_UPSTREAM\n  - path: /mcp/file\n    target: {u}\n    upstream_token_file: {f}\n",
        u = up.url("/x"),
        f = tok.display()
    );
    let b = Bridge::start_with_env("", &body, &[("TB_TEST_UPSTREAM", "env-token")]).await;
    let c = client();
    c.post(b.url("/mcp/env"))
        .header("Authorization", "Bearer client")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(up.last().header("authorization"), Some("Bearer env-token"));
    c.post(b.url("/mcp/file")).body("{}").send().await.unwrap();
    assert_eq!(up.last().header("authorization"), Some("Bearer file-token"));
}

#[tokio::test]
async fn refuses_bad_method_origin_and_size() {
    let up = Upstream::start().await;
    let extra = "  allowed_origins: [\"https://claude.ai\", \"https://claude.com\"]\n";
    let body = format!(
        "limits:\n  max_request_body: 1KiB\n  max_headers: 40\n{}",
        endpoints(&up)
    );
    let b = Bridge::start(extra, &body).await;
    let c = client();
    let before = up.seen().len();

    let r = c.put(b.url("/mcp/a")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST, DELETE, OPTIONS");

    let r = c
        .post(b.url("/mcp/a"))
        .header("Origin", "https://evil.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(json(r).await["error"], "origin_forbidden");

    let r = c
        .post(b.url("/mcp/a"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    let mut req = c.post(b.url("/mcp/a")).body("{}");
    for i in 0..50 {
        req = req.header(format!("x-filler-{i}"), "y");
    }
    assert_eq!(req.send().await.unwrap().status(), 431);
    assert_eq!(
        up.seen().len(),
        before,
        "refused requests must not reach the upstream"
    );

    // Allowed origin (any case, trailing slash) and no origin both pass; Origin is not forwarded.
    let r = c
        .post(b.url("/mcp/a"))
        .header("Origin", "HTTPS://Claude.AI/")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(up.last().header("origin").is_none());
    let r = c
        .post(b.url("/mcp/a"))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().body.len(), 1024);
}

#[tokio::test]
async fn streams_each_event_before_the_next_is_sent() {
    let up = Upstream::start().await;
    let b = Bridge::start("", &endpoints(&up)).await;
    let r = client()
        .get(b.url("/mcp/sse"))
        .header("Accept", "text/event-stream")
        .header("Accept-Encoding", "gzip, br")
        .send();
    let tx_fut = up.next_stream();
    let (r, tx) = tokio::join!(r, async {
        let tx = tx_fut.await;
        // The response head goes out with the first event.
        send_event(&tx, "first").await;
        tx
    });
    let r = r.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert!(
        r.headers().get("content-encoding").is_none(),
        "event streams are never compressed"
    );
    assert_eq!(r.headers()["mcp-session-id"], "s-123");
    let mut body = r.bytes_stream();
    let mut received = String::new();
    // Handshake: event N+1 is only sent after event N arrived through the proxy.
    for i in 0..5 {
        let want = if i == 0 {
            "data: first\n\n".to_string()
        } else {
            format!("data: e{i}\n\n")
        };
        while !received.contains(&want) {
            let chunk = tokio::time::timeout(HANG_GUARD, body.next())
                .await
                .expect("event held back by the proxy")
                .expect("stream ended")
                .unwrap();
            received.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        send_event(&tx, &format!("e{}", i + 1)).await;
    }
    wait_for_metrics(&b, &["tailbridge_active_streams{endpoint=\"mcp/sse\"} 1"]).await;
    drop(tx);
    drop(body);
}

/// A client that ends its GET event stream is not a bad request: the refusal counter says
/// `client_closed`, and nothing is logged as an error.
#[tokio::test]
async fn a_client_closing_its_event_stream_is_counted_as_client_closed() {
    let up = Upstream::start().await;
    let b = Bridge::start("", &endpoints(&up)).await;
    let r = client()
        .get(b.url("/mcp/sse"))
        .header("Accept", "text/event-stream")
        .send();
    let tx_fut = up.next_stream();
    let (r, tx) = tokio::join!(r, async {
        let tx = tx_fut.await;
        send_event(&tx, "first").await;
        tx
    });
    let r = r.unwrap();
    let mut body = r.bytes_stream();
    let _ = tokio::time::timeout(HANG_GUARD, body.next()).await;
    drop(body);
    // The upstream keeps sending: the bridge finds the client gone when it writes.
    for i in 0..50 {
        let event = format!("data: after-close-{i}\n\n");
        let _ = tx
            .send(Ok(hyper::body::Frame::data(bytes::Bytes::from(event))))
            .await;
        let m = reqwest::get(b.admin("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains("tailbridge_rejections_total{reason=\"client_closed\"} 1") {
            assert!(
                m.contains("tailbridge_rejections_total{reason=\"bad_request\"} 0"),
                "{m}"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "the closed stream was never counted as client_closed:\n{}",
        b.stderr()
    );
}

#[tokio::test]
async fn passes_202_delete_and_reports_dead_upstream() {
    let up = Upstream::start().await;
    let b = Bridge::start("", &endpoints(&up)).await;
    let c = client();
    let r = c
        .post(b.url("/mcp/a/accepted"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    let r = c
        .delete(b.url("/mcp/a"))
        .header("Mcp-Session-Id", "s-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().method, "DELETE");
    assert_eq!(up.last().header("mcp-session-id"), Some("s-123"));
    let r = c.post(b.url("/mcp/dead")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(json(r).await["error"], "upstream_unreachable");
}

#[tokio::test]
async fn never_retries_a_post_whose_body_was_sent() {
    // An upstream that reads the request and then drops the connection without answering.
    let (addr, accepted) = request_swallower(b"POST ").await;
    let body = format!("tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/flaky\n    target: http://{addr}/mcp\n");
    let b = Bridge::start("", &body).await;
    let r = client()
        .post(b.url("/mcp/flaky"))
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a POST was retried"
    );
}

#[tokio::test]
async fn health_and_metrics() {
    let up = Upstream::start().await;
    let b = Bridge::start("", &endpoints(&up)).await;
    let c = client();
    for url in [b.url("/healthz"), b.admin("/healthz")] {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let v = json(r).await;
        assert_eq!(v["status"], "ok");
        assert_eq!(v["tsnet_connected"], false);
        assert_eq!(v["mode"], "direct");
    }
    assert_eq!(
        c.post(b.url("/healthz")).send().await.unwrap().status(),
        405
    );
    // The upstream probes run at start: the dead endpoint shows as down, the bridge stays ready.
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        let v = json(c.get(b.admin("/healthz")).send().await.unwrap()).await;
        if v["upstreams"]["mcp/dead"] == "down" {
            assert_eq!(v["upstreams"]["mcp/a"], "up");
            assert_eq!(v["status"], "ok");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "probes never ran: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.post(b.url("/mcp/a")).body("{}").send().await.unwrap();
    c.post(b.url("/nowhere")).body("{}").send().await.unwrap();
    // Metrics are recorded when a request is logged, just after its response went out.
    wait_for_metrics(
        &b,
        &[
            "tailbridge_requests_total{endpoint=\"mcp/a\",method=\"POST\",status_class=\"2xx\"} 1",
            "tailbridge_requests_total{endpoint=\"-\",method=\"POST\",status_class=\"4xx\"} 1",
            "tailbridge_rejections_total{reason=\"not_found\"} 1",
            "tailbridge_request_body_bytes_total{endpoint=\"mcp/a\"} 2",
            "tailbridge_upstream_up{endpoint=\"mcp/dead\"} 0",
            "tailbridge_upstream_up{endpoint=\"mcp/a\"} 1",
            "tailbridge_tailnet_ready{mode=\"direct\"} 1",
            "tailbridge_build_info{",
            "tailbridge_request_duration_seconds_bucket{endpoint=\"mcp/a\",method=\"POST\"",
            "tailbridge_upstream_connect_duration_seconds_count{endpoint=\"mcp/a\"}",
        ],
    )
    .await;
    assert_eq!(c.get(b.admin("/nope")).send().await.unwrap().status(), 404);
    // The access log has a line for the proxied request, without the query string.
    c.post(b.url("/mcp/a?code=secret"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let log = b.wait_for_log("\"POST /mcp/a\" 200").await;
    assert!(!log.contains("secret"), "query strings must not be logged");
}

#[tokio::test]
async fn sigterm_lets_an_open_stream_finish() {
    let up = Upstream::start().await;
    let b = Bridge::start("", &endpoints(&up)).await;
    let r = client().get(b.url("/mcp/sse")).send();
    let (r, tx) = tokio::join!(r, async {
        let tx = up.next_stream().await;
        send_event(&tx, "before").await;
        tx
    });
    let mut body = r.unwrap().bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("before"));
    b.signal("TERM");
    // New connections are refused once the listener closes...
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while reqwest::get(b.url("/livez")).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "listener stayed open after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // ...while the open stream still delivers.
    send_event(&tx, "after").await;
    let next = tokio::time::timeout(HANG_GUARD, body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(std::str::from_utf8(&next).unwrap().contains("after"));
}

#[tokio::test]
async fn first_byte_deadline_gives_504_but_streams_may_idle_longer() {
    let up = Upstream::start().await;
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/slow\n    target: {}\n    timeouts: {{first_byte: 1s, idle: 1h}}\n",
        up.url("/")
    );
    let b = Bridge::start("", &body).await;
    let c = client();
    let r = c
        .post(b.url("/mcp/slow/hang"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(json(r).await["error"], "upstream_timeout");
    // A stream whose head came in time may stay quiet for longer than first_byte.
    let r = c.get(b.url("/mcp/slow/sse")).send();
    let (r, tx) = tokio::join!(r, async {
        let tx = up.next_stream().await;
        send_event(&tx, "one").await;
        tx
    });
    let mut body = r.unwrap().bytes_stream();
    assert!(std::str::from_utf8(&body.next().await.unwrap().unwrap())
        .unwrap()
        .contains("one"));
    // Quiet for 1.5 s (longer than first_byte), then another event: the stream survives.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    send_event(&tx, "two").await;
    let next = tokio::time::timeout(HANG_GUARD, body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(std::str::from_utf8(&next).unwrap().contains("two"));
    // Normal requests on the same endpoint still work (the pool was not poisoned).
    let r = c
        .post(b.url("/mcp/slow/x"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_idle_stream_is_cut_after_the_idle_timeout_and_events_keep_it_alive() {
    let up = Upstream::start().await;
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/s\n    target: {}\n    timeouts: {{first_byte: 5s, idle: 1s}}\n",
        up.url("/")
    );
    let b = Bridge::start("", &body).await;
    let r = client().get(b.url("/mcp/s/sse")).send();
    let (r, tx) = tokio::join!(r, async { up.next_stream().await });
    let mut body = r.unwrap().bytes_stream();
    // An event every 400 ms for 2.4 s: each gap is under the idle timeout, the whole is
    // not, and every event arrives.
    for i in 0..6 {
        send_event(&tx, &format!("e{i}")).await;
        let next = tokio::time::timeout(HANG_GUARD, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(std::str::from_utf8(&next)
            .unwrap()
            .contains(&format!("e{i}")));
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    // Then silence while the upstream keeps the stream open: the bridge ends it.
    let end = tokio::time::timeout(HANG_GUARD, async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the idle stream was never cut");
    drop(tx);
}

#[tokio::test]
async fn reuses_upstream_connections() {
    let up = Upstream::start().await;
    let body = format!(
        "tailnet:\n  mode: direct\nhealth:\n  probe_interval: 1h\nendpoints:\n  - path: /mcp/a\n    target: {}\n",
        up.url("/")
    );
    let b = Bridge::start("", &body).await;
    for _ in 0..20 {
        assert_eq!(post_status(&b.url("/mcp/a")).await, 200);
    }
    // One probe connection at start plus pooled request connections: far fewer than 20.
    let conns = *up.connections.lock().unwrap();
    assert!(
        conns <= 3,
        "{conns} upstream connections for 20 sequential requests"
    );
}

#[tokio::test]
async fn tls_from_files_with_hsts() {
    let up = Upstream::start().await;
    let dir = temp_dir("tls");
    let (cert, key) = self_signed(&dir);
    let body = format!(
        "tls:\n  mode: files\n  cert_file: {}\n  key_file: {}\ntailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/a\n    target: {}\n",
        cert.display(),
        key.display(),
        up.url("/up")
    );
    // The readiness probe speaks plain HTTP to the admin listener only; the main one is TLS.
    let b = Bridge::start_tls("", &body).await;
    init();
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(root)
        .timeout(HANG_GUARD)
        .build()
        .unwrap();
    let r = c
        .post(format!("https://localhost:{}/mcp/a", b.port))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains; preload"
    );
    assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn tls_certificate_files_reload_without_restart() {
    let up = Upstream::start().await;
    let (d1, d2, live) = (temp_dir("tls1"), temp_dir("tls2"), temp_dir("tls-live"));
    let (c1, k1) = self_signed(&d1);
    let (c2, k2) = self_signed(&d2);
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    std::fs::copy(&c1, &cert).unwrap();
    std::fs::copy(&k1, &key).unwrap();
    let body = format!(
        "tls:\n  mode: files\n  cert_file: {}\n  key_file: {}\ntailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/a\n    target: {}\n",
        cert.display(),
        key.display(),
        up.url("/up")
    );
    let b = Bridge::start_tls("", &body).await;
    init();
    // A fresh client per check: no pooled connection, no TLS session to resume.
    let fresh = || {
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&c1).unwrap()).unwrap(),
            )
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&c2).unwrap()).unwrap(),
            )
            .tls_info(true)
            .timeout(HANG_GUARD)
            .build()
            .unwrap()
    };
    let kept = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&c1).unwrap()).unwrap())
        .timeout(HANG_GUARD)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/mcp/a", b.port);
    let der = |pem: &std::path::Path| {
        let text = std::fs::read_to_string(pem).unwrap();
        let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        b64
    };
    let presented = |r: &reqwest::Response| {
        let info = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
        info.peer_certificate().unwrap().to_vec()
    };
    let r = fresh().post(&url).body("{}").send().await.unwrap();
    let first = presented(&r);
    assert_eq!(
        kept.post(&url).body("{}").send().await.unwrap().status(),
        200
    );

    // A key that does not match the certificate is refused; the old pair stays in service.
    std::fs::copy(&k2, &key).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let r = fresh().post(&url).body("{}").send().await.unwrap();
    assert_eq!(presented(&r), first);
    assert!(b.stderr().contains("change refused"), "{}", b.stderr());

    // The matching certificate arrives: new handshakes get it, without a restart.
    std::fs::copy(&c2, &cert).unwrap();
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        let r = fresh().post(&url).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 200);
        if presented(&r) != first {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "certificate never reloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_ne!(der(&c1), der(&c2));
    // The connection opened before the change is still served.
    assert_eq!(
        kept.post(&url).body("{}").send().await.unwrap().status(),
        200
    );
}

#[test]
fn unreadable_certificate_is_a_clean_start_error() {
    let (code, _, err) = run_cli(
        &[],
        Some(&format!(
            "server:\n  listen: \"127.0.0.1:{}\"\nadmin:\n  listen: \"\"\ntls:\n  mode: files\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\ntailnet:\n  mode: direct\nendpoints:\n  - path: /a\n    target: http://127.0.0.1:1/\n",
            free_port()
        )),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tls.cert_file /nonexistent/cert.pem"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
