//! Criterion benches for the per-request hot paths: route matching and request-header
//! rewriting. Run with `cargo bench --bench hot_paths`.

use criterion::{criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;
use std::hint::black_box;
use tailbridge::proxy::headers::{rewrite_request, Forwarding, StripRules, UpstreamAuthorization};
use tailbridge::proxy::router::Router;

fn routes() -> Vec<(String, String)> {
    (0..20)
        .map(|i| (format!("/mcp/server-{i}"), format!("/mcp/{i}")))
        .chain([("/mcp/server-1/deep".to_string(), "/deep".to_string())])
        .collect()
}

fn bench_router(c: &mut Criterion) {
    let table = routes();
    let router = Router::new(table.iter().map(|(p, t)| (p.as_str(), t.as_str())));
    let mut g = c.benchmark_group("router");
    g.bench_function("exact prefix", |b| {
        b.iter(|| router.route(black_box("/mcp/server-7")))
    });
    g.bench_function("prefix + remainder + query", |b| {
        b.iter(|| router.route(black_box("/mcp/server-1/deep/x/y?session=abc&x=1")))
    });
    g.bench_function("dot segments and double slashes", |b| {
        b.iter(|| router.route(black_box("//mcp/./x/../server-19///tools")))
    });
    g.bench_function("miss", |b| {
        b.iter(|| router.route(black_box("/nothing/here")))
    });
    g.finish();
}

fn typical_request() -> RequestHeader {
    let mut r = RequestHeader::build("POST", b"/mcp/server-7", None).unwrap();
    for (k, v) in [
        ("host", "mcp.example.com"),
        ("user-agent", "Claude-User"),
        ("accept", "application/json, text/event-stream"),
        ("content-type", "application/json"),
        ("content-length", "1024"),
        ("mcp-session-id", "3f2a0c8e-6a51-4c55-9b1e-0d3c1b2f7a10"),
        ("mcp-protocol-version", "2025-11-25"),
        ("authorization", "Bearer 0123456789abcdef0123456789abcdef"),
        ("origin", "https://claude.ai"),
        ("x-forwarded-for", "203.0.113.7"),
        ("connection", "keep-alive"),
    ] {
        r.append_header(k, v).unwrap();
    }
    r
}

fn bench_headers(c: &mut Criterion) {
    let template = typical_request();
    let fwd = Forwarding {
        client_ip: Some("198.51.100.4".parse().unwrap()),
        proto: "https",
        original_host: Some(&http::HeaderValue::from_static("mcp.example.com")),
    };
    let strip = StripRules::new(&[]);
    let authority = http::HeaderValue::from_static("server-7.tail1234.ts.net");
    c.bench_function("rewrite_request (11 headers)", |b| {
        b.iter_batched(
            || template.clone(),
            |mut r| {
                rewrite_request(
                    &mut r,
                    &authority,
                    &fwd,
                    UpstreamAuthorization::Strip,
                    &strip,
                    &[b"keep-alive"],
                )
                .unwrap();
                r
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn bench_mcp(c: &mut Criterion) {
    use tailbridge::mcp::jsonrpc::{classify, replies};
    use tailbridge::mcp::sse::SseScanner;
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(960)
    );
    c.bench_function("classify a 1 KB tools/call", |b| {
        b.iter(|| classify(black_box(body.as_bytes()), false).unwrap())
    });
    let answer = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}"#;
    c.bench_function("read a tools/call result", |b| {
        b.iter(|| replies(black_box(answer)).count())
    });
    let event = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":3}}\n\n";
    c.bench_function("scan one SSE progress event", |b| {
        let mut s = SseScanner::new(1 << 20);
        b.iter(|| {
            let mut n = 0;
            s.feed(black_box(event), |_| n += 1);
            n
        })
    });
}

/// Verifying a token: the broker's sealed access token against a cached introspection
/// verdict (what every request with a tsidp token costs once its verdict is cached).
fn bench_tokens(c: &mut Criterion) {
    use tailbridge::auth::broker::{seal::KeyRing, Access, Broker, Resource};
    let origin = "https://mcp.example.com";
    let broker = Broker::for_tests(
        KeyRing::from_keys(&[[7; 32]]),
        origin,
        vec![Resource {
            path: "/mcp/notes".into(),
            url: format!("{origin}/mcp/notes"),
        }],
    );
    let token = broker
        .access_token(&Access {
            s: Some("1001".into()),
            u: Some("alice@example.com".into()),
            c: "https://claude.ai/oauth/mcp-oauth-client-metadata".into(),
            r: format!("{origin}/mcp/notes"),
            g: None,
            e: 4_000_000_000,
        })
        .unwrap_or_default();
    let url = format!("{origin}/mcp/notes");
    c.bench_function("verify a broker access token", |b| {
        b.iter(|| broker.verify(black_box(&token), black_box(&url)).is_ok())
    });
    let yaml = format!(
        "auth:\n  issuer: https://idp.example.ts.net\n  audience: {origin}\n  introspection_url: https://idp.example.ts.net/introspect\n  client_id: bridge\n  client_secret: s\nendpoints:\n  - path: /mcp/notes\n    target: http://127.0.0.1:9/mcp\n"
    );
    let cfg = tailbridge::config::parse(&yaml)
        .ok()
        .and_then(|c| c.auth)
        .expect("bench config");
    let metrics =
        std::sync::Arc::new(tailbridge::observe::metrics::Metrics::new().expect("metrics"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let verifier = tailbridge::auth::Verifier::new(
        std::sync::Arc::new(cfg.clone()),
        reqwest::Client::new(),
        tailbridge::config::secrets::Secret::new("s".into()),
        metrics,
        std::sync::Arc::new(tailbridge::auth::metadata::AsMetadata::new(
            &cfg.issuer,
            std::time::Duration::from_secs(300),
        )),
    );
    let tsidp_token = "0f3c2a9be1d84f7c9a6b5e4d3c2b1a09"; // tsidp's opaque form
    rt.block_on(verifier.prime(
        tsidp_token,
        tailbridge::auth::introspect::Claims {
            active: true,
            exp: Some(4_000_000_000),
            iss: Some("https://idp.example.ts.net".into()),
            aud: vec!["bridge".into(), format!("{origin}/")],
            sub: Some("1001".into()),
            username: Some("alice@example.com".into()),
            client_id: Some("bridge".into()),
        },
    ));
    c.bench_function(
        "block_on of a ready future (the line below includes it)",
        |b| b.iter(|| rt.block_on(async { black_box(1) })),
    );
    c.bench_function("verify a tsidp token (cached introspection)", |b| {
        b.iter(|| {
            rt.block_on(verifier.verify(black_box(tsidp_token), None, black_box(&url), None))
                .is_ok()
        })
    });
}

/// Pin checks: hashing every tool of a 200-tool `tools/list` answer (what one list costs
/// with `tools.pinned` or trust on first use), parsing included.
fn bench_pins(c: &mut Criterion) {
    use tailbridge::mcp::pins::{page, ToolWatch};
    let tools: Vec<serde_json::Value> = (0..200)
        .map(|i| {
            serde_json::json!({
                "name": format!("tool_{i}"),
                "title": format!("Tool {i}"),
                "description": format!("Does thing {i} with the notes of the current user; returns a summary and a list of matching items, at most 50."),
                "inputSchema": {"type": "object", "properties": {
                    "query": {"type": "string", "description": "what to look for"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 50},
                    "tags": {"type": "array", "items": {"type": "string"}}},
                    "required": ["query"]},
                "annotations": {"readOnlyHint": true, "openWorldHint": false},
            })
        })
        .collect();
    let result = serde_json::json!({"tools": tools}).to_string();
    println!("200-tool tools/list result: {} bytes", result.len());
    let watch = ToolWatch::new(None, Default::default());
    c.bench_function("pin check of a 200-tool list (parse + hash)", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(black_box(&result)).unwrap_or_default();
            let (tools, more) = page(&v);
            watch.check(tools, !more).len()
        })
    });
}

criterion_group!(
    benches,
    bench_router,
    bench_headers,
    bench_mcp,
    bench_tokens,
    bench_pins
);
criterion_main!(benches);
