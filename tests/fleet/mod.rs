//! Several instances behind an L4 balancer: HAProxy (from apt) in TCP mode sending the PROXY
//! protocol, in front of tailbridge instances with `server.proxy_protocol: true`. HAProxy
//! connects to the instances from 127.0.0.9, so the balancer's address and the client's
//! (127.0.0.1, 127.0.0.7, 127.0.0.8) always differ.

use crate::auth::auth_config;
use crate::common::idp::{Idp, CLIENT_SECRET};
use crate::common::*;
use crate::doctor::{doctor, named};
use crate::e2e::{run_sdk_client, start_sdk_server};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BALANCER_SOURCE: &str = "127.0.0.9";
const PROXY_ON: &str = "  proxy_protocol: true\n";

struct Haproxy {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Haproxy {
    /// HAProxy balancing connections round-robin over `backends`, each line's PROXY option
    /// (`send-proxy-v2` or `send-proxy`) given with it.
    async fn start(backends: &[(u16, &str)]) -> Haproxy {
        let dir = temp_dir("haproxy");
        let port = free_port();
        let mut cfg = format!(
            "global\n  maxconn 2000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:{port}\n  default_backend bridges\nbackend bridges\n  balance roundrobin\n  source {BALANCER_SOURCE}\n"
        );
        for (i, (backend, option)) in backends.iter().enumerate() {
            cfg.push_str(&format!("  server b{i} 127.0.0.1:{backend} {option}\n"));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let log = dir.join("haproxy.log");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("haproxy (apt-get install -y haproxy)");
        let h = Haproxy { child, port, log };
        let deadline = Instant::now() + HANG_GUARD;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "haproxy never listened: {}",
                std::fs::read_to_string(&h.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        h
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `b` logged `n` access lines for `path` (a line is written after its response
/// was sent); their client addresses, in order.
async fn wait_for_access(b: &Bridge, path: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let clients = access_clients(&b.stderr(), path);
        if clients.len() >= n {
            return clients;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} access lines:\n{}",
            clients.len(),
            b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The access lines of a log for `path`, by client address as logged.
fn access_clients(log: &str, path: &str) -> Vec<String> {
    let needle = format!(" \"POST {path}\" ");
    log.lines()
        .filter(|l| l.contains("tailbridge::access") && l.contains(&needle))
        .filter_map(|l| {
            let after = l.split("tailbridge::access").nth(1)?;
            let after = after.trim_start_matches(']').trim_start();
            after.split(' ').next().map(str::to_string)
        })
        .collect()
}

fn plain_body(up: &Upstream) -> String {
    format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/a\n    target: {}\n",
        up.url("/up/a")
    )
}

#[tokio::test]
async fn an_mcp_session_spreads_over_two_instances_behind_haproxy() {
    let (_server, up_port) = start_sdk_server();
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/sdk\n    target: http://127.0.0.1:{up_port}/mcp\n"
    );
    let a = Bridge::admin_ready(PROXY_ON, &body, &[]).await;
    let b = Bridge::admin_ready(PROXY_ON, &body, &[]).await;
    let lb = Haproxy::start(&[(a.port, "send-proxy-v2"), (b.port, "send-proxy-v2")]).await;

    // Every HTTP request on a new connection: round-robin alternates the instances.
    let v = run_sdk_client(
        lb.url("/mcp/sdk"),
        vec![("TB_FRESH_CONNECTIONS", "1".to_string())],
    )
    .await
    .unwrap_or_else(|out| {
        panic!(
            "client failed: {out}\nbridge a:\n{}\nbridge b:\n{}",
            a.stderr(),
            b.stderr()
        )
    });
    assert_eq!(v["callResult"], "counted to 5", "{v}");
    assert_eq!(v["progress"], serde_json::json!([1, 2, 3, 4, 5]), "{v}");
    assert_eq!(v["echo"], "héllo ✓");
    assert_eq!(v["terminated"], true);

    // Both instances carried POSTs of the one session, and both logged the client's own
    // address (node connects from 127.0.0.1), never the balancer's.
    for (name, bridge) in [("a", &a), ("b", &b)] {
        // At least two POSTs each (`wait_for_access` fails the test otherwise).
        let clients = wait_for_access(bridge, "/mcp/sdk", 2).await;
        assert!(
            clients.iter().all(|c| c == "127.0.0.1"),
            "instance {name} logged {clients:?}"
        );
    }
}

#[tokio::test]
async fn flood_limits_and_the_access_log_see_the_client_behind_haproxy() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let body = auth_config(
        &idp,
        &up,
        "  introspection:\n    per_client_rate: 0.01\n    per_client_burst: 3\n",
    );
    let b = Bridge::admin_ready(PROXY_ON, &body, &[("TB_TEST_IDP_SECRET", CLIENT_SECRET)]).await;
    let lb = Haproxy::start(&[(b.port, "send-proxy-v2")]).await;

    let url = lb.url("/mcp/a");
    // 127.0.0.7 spends its budget of 3 unknown tokens; then it is throttled.
    let flooder = client_from("127.0.0.7".parse().unwrap());
    let mut codes = Vec::new();
    for i in 0..5 {
        codes.push(bearer_status(&flooder, &url, &format!("unknown-{i}")).await);
    }
    assert_eq!(codes, [401, 401, 401, 429, 429]);
    // Another client behind the same balancer still has its own budget.
    let other = client_from("127.0.0.8".parse().unwrap());
    assert_eq!(bearer_status(&other, &url, "unknown-other").await, 401);

    let clients = wait_for_access(&b, "/mcp/a", 6).await;
    assert_eq!(
        clients,
        [
            "127.0.0.7",
            "127.0.0.7",
            "127.0.0.7",
            "127.0.0.7",
            "127.0.0.7",
            "127.0.0.8"
        ],
        "{}",
        b.stderr()
    );
}

#[tokio::test]
async fn reloading_one_instance_behind_haproxy_loses_no_request() {
    let up = Upstream::start().await;
    let a = Bridge::admin_ready(PROXY_ON, &plain_body(&up), &[]).await;
    let b = Bridge::admin_ready(PROXY_ON, &plain_body(&up), &[]).await;
    let lb = Haproxy::start(&[(a.port, "send-proxy-v2"), (b.port, "send-proxy-v2")]).await;

    // Load from 127.0.0.7: two workers on kept-alive connections, two opening a new
    // connection per request (so new connections keep reaching the reloading instance).
    let workers = (0..4)
        .map(|w| (client_from("127.0.0.7".parse().unwrap()), w % 2 == 1))
        .collect();
    let load = Load::start(&lb.url("/mcp/a"), workers);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Reload instance a (its new process inherits the reload command's stdio).
    let reload_log = a.dir.join("reload.log");
    let status = reload(a.dir.join("config.yaml"), reload_log.clone()).await;
    let read_log = || std::fs::read_to_string(&reload_log).unwrap_or_default();
    assert!(status.success(), "reload failed: {}", read_log());
    let new_pid: u32 = std::fs::read_to_string(a.dir.join("tb.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid, a.child.id());
    // Past the old process's hand-over window, with the load still running.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (ok, failed) = load.stop().await;
    let _ = Command::new("kill").arg(new_pid.to_string()).status();

    eprintln!("reload behind haproxy: {ok} requests ok, {failed} failed");
    assert!(ok > 100, "the load did not run: {ok}");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    // The new process read the PROXY headers too: it logged the client, not the balancer.
    let served = access_clients(&read_log(), "/mcp/a");
    assert!(
        !served.is_empty(),
        "the new process served nothing:\n{}",
        read_log()
    );
    assert!(served.iter().all(|c| c == "127.0.0.7"), "{served:?}");
    assert!(access_clients(&b.stderr(), "/mcp/a").len() > 10);
}

/// Send `bytes` on a new connection to `port`; what came back before the bridge closed.
async fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    // A close may come as a reset when request bytes were left unread.
    let _ = tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut out))
        .await
        .expect("the bridge neither answered nor closed");
    out
}

#[tokio::test]
async fn without_a_valid_header_a_connection_is_closed_unanswered() {
    let up = Upstream::start().await;
    let b = Bridge::admin_ready(PROXY_ON, &plain_body(&up), &[]).await;
    let request =
        "POST /mcp/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";

    // No header, a malformed one, one cut off, and none at all within the timeout.
    let silent = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", b.port))
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut out))
            .await
            .expect("a silent connection was never closed")
            .map(|_| out)
    };
    let bad_port = format!("PROXY TCP4 127.0.0.77 127.0.0.1 5555 99999\r\n{request}");
    let (missing, malformed, cut, silent) = tokio::join!(
        exchange(b.port, request.as_bytes()),
        exchange(b.port, bad_port.as_bytes()),
        async {
            // Cut off: the balancer half-closes within the header.
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", b.port))
                .await
                .unwrap();
            s.write_all(b"PROXY TCP4 127.0.").await.unwrap();
            s.shutdown().await.unwrap();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut out)).await;
            out
        },
        silent,
    );
    assert!(missing.is_empty(), "{}", String::from_utf8_lossy(&missing));
    assert!(
        malformed.is_empty(),
        "{}",
        String::from_utf8_lossy(&malformed)
    );
    assert!(cut.is_empty());
    assert!(silent.unwrap_or_default().is_empty());

    // A version 1 header by hand: the address it names is the client.
    let v1 = format!(
        "PROXY TCP4 127.0.0.77 127.0.0.1 5555 {}\r\n{request}",
        b.port
    );
    let answer = String::from_utf8(exchange(b.port, v1.as_bytes()).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A version 2 LOCAL header (a balancer's health check): the socket's own address.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(request.as_bytes());
    let answer = String::from_utf8(exchange(b.port, &local).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let log = b.wait_for_log("closed a connection from 127.0.0.1").await;
    assert!(log.contains("did not start with a PROXY header"), "{log}");
    assert!(log.contains("malformed PROXY v1 header: a port"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let mut clients = wait_for_access(&b, "/mcp/a", 2).await;
    clients.sort();
    assert_eq!(clients, ["127.0.0.1", "127.0.0.77"]);
    // The doctor speaks the PROXY protocol to the listener when the config says so.
    assert_listener_checks_pass(&b);
    wait_for_metrics(
        &b,
        &[
            "tailbridge_proxy_protocol_refused_total{reason=\"missing\"} 1",
            "tailbridge_proxy_protocol_refused_total{reason=\"malformed\"} 1",
            "tailbridge_proxy_protocol_refused_total{reason=\"closed\"} 1",
            "tailbridge_proxy_protocol_refused_total{reason=\"timeout\"} 1",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_tls_listener_reads_the_header_before_the_handshake() {
    let up = Upstream::start().await;
    let dir = temp_dir("pp-tls");
    let (cert, key) = self_signed(&dir);
    let body = format!(
        "tls:\n  mode: files\n  cert_file: {}\n  key_file: {}\n{}",
        cert.display(),
        key.display(),
        plain_body(&up)
    );
    let server = format!("{PROXY_ON}  public_url: \"https://localhost:{{BRIDGE_PORT}}\"\n");
    let b = Bridge::admin_ready(&server, &body, &[]).await;
    let lb = Haproxy::start(&[(b.port, "send-proxy-v2")]).await;
    init();
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let tls_client = |from: &str| {
        reqwest::Client::builder()
            .add_root_certificate(root.clone())
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .timeout(HANG_GUARD)
            .build()
            .unwrap()
    };
    let r = tls_client("127.0.0.7")
        .post(format!("https://127.0.0.1:{}/mcp/a", lb.port))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-forwarded-for"), Some("127.0.0.7"));
    // Straight to the bridge, skipping the balancer: the ClientHello is not a header. It is
    // not a TLS handshake failure either: the handshake never began. (HAProxy's readiness
    // probe above may have cost one real handshake failure: compare before and after.)
    let failures = || async {
        let text = reqwest::get(b.admin("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("tailbridge_tls_handshake_failures_total{reason=\"error\"}"))
            .map(str::to_string)
            .unwrap()
    };
    let before = failures().await;
    let direct = tls_client("127.0.0.8")
        .post(format!("https://127.0.0.1:{}/mcp/a", b.port))
        .body("{}")
        .send()
        .await;
    assert!(direct.is_err(), "{direct:?}");
    wait_for_metrics(
        &b,
        &["tailbridge_proxy_protocol_refused_total{reason=\"missing\"} 1"],
    )
    .await;
    assert_eq!(failures().await, before, "{}", b.stderr());
    assert_eq!(wait_for_access(&b, "/mcp/a", 1).await, ["127.0.0.7"]);
    assert_listener_checks_pass(&b);
    let (_, _, checks) = doctor(&b, &[]);
    assert!(
        named(&checks, "tls").iter().any(
            |c| c["status"] == "ok" && c["detail"].as_str().unwrap_or("").contains("localhost")
        ),
        "{checks:#}"
    );
}

/// The doctor's `bridge.listen` check passes, and no `tls` check fails.
fn assert_listener_checks_pass(b: &Bridge) {
    let (_, _, checks) = doctor(b, &[]);
    let listen = named(&checks, "bridge.listen");
    assert_eq!(listen.len(), 1, "{checks:#}");
    assert_eq!(listen[0]["status"], "ok", "{checks:#}");
    assert!(
        listen[0]["detail"]
            .as_str()
            .unwrap()
            .contains("PROXY protocol on"),
        "{checks:#}"
    );
    assert!(
        named(&checks, "tls")
            .iter()
            .all(|c| c["status"] != "failure"),
        "{checks:#}"
    );
}
