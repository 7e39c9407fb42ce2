//! A direct-mode upstream that vanishes without closing: a test host in a network namespace
//! (198.51.100.0/24, TEST-NET-2) whose link is taken down after a warm request, so the peer
//! sends no FIN and no RST. Needs root for `ip netns` (CI runs as root).

use crate::common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The namespace, its veth pair and the upstream inside it; all removed on drop.
struct TestHost {
    ns: String,
    host_if: String,
    guest_if: String,
    upstream: Option<Child>,
    port: u16,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (iproute2) is needed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An HTTP/1.1 keep-alive upstream answering every POST with a JSON-RPC result.
const UPSTREAM: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"jsonrpc":"2.0","id":1,"result":{}}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("198.51.100.2", int(sys.argv[1])), H).serve_forever()
"#;

impl TestHost {
    fn start() -> TestHost {
        assert!(
            nix_is_root(),
            "this test needs root for network namespaces (ip netns); run tests/run.sh as root"
        );
        let tag = std::process::id() % 100_000;
        let h = TestHost {
            ns: format!("tbtest{tag}"),
            host_if: format!("tbh{tag}"),
            guest_if: format!("tbg{tag}"),
            upstream: None,
            port: 18_000 + (tag % 1000) as u16,
        };
        ip(&["netns", "add", &h.ns]);
        ip(&[
            "link",
            "add",
            &h.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &h.guest_if,
        ]);
        ip(&["link", "set", &h.guest_if, "netns", &h.ns]);
        ip(&["addr", "add", "198.51.100.1/24", "dev", &h.host_if]);
        ip(&["link", "set", &h.host_if, "up"]);
        ip(&[
            "netns",
            "exec",
            &h.ns,
            "ip",
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            &h.guest_if,
        ]);
        ip(&[
            "netns",
            "exec",
            &h.ns,
            "ip",
            "link",
            "set",
            &h.guest_if,
            "up",
        ]);
        ip(&["netns", "exec", &h.ns, "ip", "link", "set", "lo", "up"]);
        let mut h = h;
        h.upstream = Some(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &h.ns,
                    "python3",
                    "-c",
                    UPSTREAM,
                    &h.port.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        h
    }

    fn link(&self, up: bool) {
        ip(&[
            "netns",
            "exec",
            &self.ns,
            "ip",
            "link",
            "set",
            &self.guest_if,
            if up { "up" } else { "down" },
        ]);
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(mut c) = self.upstream.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

async fn post_json(url: &str) -> u16 {
    client()
        .post(url)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_direct_upstream_that_vanishes_fails_within_the_connect_timeout() {
    let host = TestHost::start();
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/v\n    target: http://198.51.100.2:{}/mcp\n    timeouts: {{connect: 2s, first_byte: 5m}}\n",
        host.port
    );
    let b = Bridge::start("", &body).await;
    let url = b.url("/mcp/v");
    // The upstream in the namespace takes a moment to listen.
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while post_json(&url).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "upstream never answered:\n{}",
            b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 1. Right after the peer vanishes: the request is written into a pooled connection that
    //    nothing acknowledges; TCP_USER_TIMEOUT (= connect timeout) ends it. A status of 0
    //    would mean the client's hang guard (30 s, far below first_byte) gave up.
    host.link(false);
    let status = post_json(&url).await;
    assert!(
        matches!(status, 502 | 504),
        "right after vanishing: {status}\n{}",
        b.stderr()
    );
    // 2. After a quiet moment: the liveness dial fails within the connect timeout.
    host.link(true);
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while post_json(&url).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "upstream never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    host.link(false);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = post_json(&url).await;
    assert!(
        matches!(status, 502 | 504),
        "after a quiet moment: {status}"
    );
    host.link(true);
}
