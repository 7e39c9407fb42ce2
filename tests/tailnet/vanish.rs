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

/// One test host at a time: they share the namespace's name and addresses.
static ONE_HOST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The connect timeout of the endpoints here, and the bound a vanished peer's failure is held
/// to: twice that (the goal) plus a margin for a noisy machine, far below `first_byte` (5 m)
/// and the client's hang guard.
const CONNECT: Duration = Duration::from_secs(2);

fn vanish_bound() -> Duration {
    2 * CONNECT + Duration::from_secs(3)
}

async fn timed_post(url: &str) -> (u16, Duration) {
    let started = std::time::Instant::now();
    (post_json(url).await, started.elapsed())
}

async fn until_answered(url: &str, b: &Bridge) {
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while post_json(url).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "upstream never answered:\n{}",
            b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// For a request sent right after the peer vanished, 1 s after, and after a quiet period:
/// warm the pool, take the link down, wait, and time the request on the dead pooled
/// connection, then one more (no dead connection is reused).
async fn vanish_cases(host: &TestHost, b: &Bridge, url: &str) {
    for after in [
        Duration::ZERO,
        Duration::from_secs(1),
        Duration::from_millis(3500),
    ] {
        host.link(true);
        until_answered(url, b).await;
        host.link(false);
        tokio::time::sleep(after).await;
        let (status, took) = timed_post(url).await;
        eprintln!("sent {after:?} after the peer vanished: {status} after {took:?}");
        assert_eq!(
            status,
            502,
            "sent {after:?} after vanishing: after {took:?}\n{}",
            b.stderr()
        );
        assert!(
            took < vanish_bound(),
            "sent {after:?} after vanishing: 502 only after {took:?}"
        );
        let (status, took) = timed_post(url).await;
        assert!(
            matches!(status, 502 | 504) && took < vanish_bound(),
            "the next request: {status} after {took:?}"
        );
    }
    host.link(true);
}

fn endpoint(target: &str) -> String {
    format!(
        "endpoints:\n  - path: /mcp/v\n    target: {target}\n    timeouts: {{connect: {}s, first_byte: 5m}}\n",
        CONNECT.as_secs()
    )
}

#[tokio::test]
async fn a_direct_upstream_that_vanishes_fails_within_twice_the_connect_timeout() {
    let _one = ONE_HOST.lock().await;
    let host = TestHost::start();
    let body = format!(
        "tailnet:\n  mode: direct\n{}",
        endpoint(&format!("http://198.51.100.2:{}/mcp", host.port))
    );
    let b = Bridge::start("", &body).await;
    vanish_cases(&host, &b, &b.url("/mcp/v")).await;
}

#[tokio::test]
async fn a_socks5_upstream_that_vanishes_fails_within_twice_the_connect_timeout() {
    // The proxy stays up on loopback: only the peer behind it vanishes, so nothing on the
    // bridge's own socket (keepalive, TCP_USER_TIMEOUT) can notice.
    let _one = ONE_HOST.lock().await;
    let host = TestHost::start();
    let socks = super::Microsocks::start(None);
    let body = format!(
        "tailnet:\n  mode: socks5\n  socks5:\n    address: \"127.0.0.1:{}\"\n{}",
        socks.port,
        endpoint(&format!("http://198.51.100.2:{}/mcp", host.port))
    );
    let b = Bridge::start("", &body).await;
    vanish_cases(&host, &b, &b.url("/mcp/v")).await;
}

#[tokio::test]
async fn a_live_peer_slower_than_the_connect_timeout_is_never_cut() {
    // A long tool call in direct and socks5 modes: the head comes well after the connect
    // timeout and after several liveness checks; the peer answers them, so the call ends 200.
    let up = Upstream::start().await;
    let socks = super::Microsocks::start(None);
    let direct = Bridge::start(
        "",
        &format!("tailnet:\n  mode: direct\n{}", endpoint(&up.url("/mcp"))),
    )
    .await;
    let via_socks = Bridge::start(
        "",
        &format!(
            "tailnet:\n  mode: socks5\n  socks5:\n    address: \"127.0.0.1:{}\"\n{}",
            socks.port,
            endpoint(&up.url("/mcp"))
        ),
    )
    .await;
    for b in [&direct, &via_socks] {
        // Warm the pool: the slow call reuses a pooled connection.
        assert_eq!(post_json(&b.url("/mcp/v")).await, 200);
        let (status, took) = timed_post(&b.url("/mcp/v?slow_ms=7000")).await;
        assert_eq!(status, 200, "after {took:?}\n{}", b.stderr());
    }
}
