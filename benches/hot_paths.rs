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

criterion_group!(benches, bench_router, bench_headers, bench_mcp);
criterion_main!(benches);
