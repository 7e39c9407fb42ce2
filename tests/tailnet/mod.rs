//! Tailnet connector modes through the running binary: socks5 against the real
//! `microsocks` (apt), tsnet through the libtailscale test double, and a direct upstream in a
//! network namespace that vanishes.

#[cfg(feature = "tailscale")]
mod tsnet;
mod vanish;

use crate::common::idp::{Idp, CLIENT_ID, CLIENT_SECRET};
use crate::common::*;
use std::process::{Child, Command};

/// A microsocks process on a loopback port, killed on drop. Its log shows every
/// connection it made on a client's behalf.
struct Microsocks {
    child: Option<Child>,
    port: u16,
    log: std::path::PathBuf,
    auth: Option<(String, String)>,
}

impl Microsocks {
    fn start(auth: Option<(&str, &str)>) -> Microsocks {
        let mut m = Microsocks {
            child: None,
            port: free_port(),
            log: temp_dir("socks").join("microsocks.log"),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("microsocks");
        cmd.args(["-i", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some((u, p)) = &self.auth {
            cmd.args(["-u", u, "-P", p]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("microsocks not installed (apt-get install microsocks; .ci/run does it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + HANG_GUARD;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "microsocks did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Microsocks {
    fn drop(&mut self) {
        self.stop();
    }
}

fn socks_config(socks: &Microsocks, target: &str, creds: bool) -> String {
    let auth = if creds {
        "    username: tb\n    password_env: TB_TEST_SOCKS_PASSWORD\n"
    } else {
        ""
    };
    format!(
        "tailnet:\n  mode: socks5\n  socks5:\n    address: \"127.0.0.1:{}\"\n{auth}health:\n  probe_interval: 1s\nendpoints:\n  - path: /mcp/a\n    target: {target}\n",
        socks.port
    )
}

#[tokio::test]
async fn socks5_carries_upstream_traffic_and_recovers() {
    let up = Upstream::start().await;
    let mut socks = Microsocks::start(None);
    // `localhost` is sent to the proxy unresolved (socks5h): the proxy resolves it.
    let target = format!("http://localhost:{}/up", up.addr.port());
    let b = Bridge::start("", &socks_config(&socks, &target, false)).await;
    let c = client();
    let r = c.post(b.url("/mcp/a")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().path_and_query, "/up");
    assert!(
        socks
            .log()
            .contains(&format!("localhost:{}", up.addr.port())),
        "microsocks did not carry the request:\n{}",
        socks.log()
    );
    let v = get_json(&b.url("/healthz")).await;
    assert_eq!(v["mode"], "socks5");
    assert_eq!(v["status"], "ok");

    // Proxy down: requests get 502 and /healthz is degraded, though the upstream is fine.
    socks.stop();
    let r = c
        .post(b.url("/mcp/a"))
        .header("connection", "close")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v = wait_for_health(&b.admin("/healthz"), 503).await;
    assert_eq!(v["status"], "degraded");
    assert!(
        v["reasons"][0].as_str().unwrap().contains("SOCKS5 proxy"),
        "{v}"
    );
    wait_for_metrics(&b, &["tailbridge_tailnet_ready{mode=\"socks5\"} 0"]).await;

    // Proxy back: the bridge recovers by itself.
    socks.spawn();
    wait_for_health(&b.url("/healthz"), 200).await;
    let r = c.post(b.url("/mcp/a")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn socks5_with_username_and_password_also_for_introspection() {
    let up = Upstream::start().await;
    let idp = Idp::start().await;
    let socks = Microsocks::start(Some(("tb", "s3cret")));
    let body = format!(
        "{}auth:\n  issuer: http://localhost:{p}\n  audience: https://mcp.example.com\n  introspection_url: http://localhost:{p}/introspect\n  client_id: {CLIENT_ID}\n  client_secret: {CLIENT_SECRET}\n  allow_loopback_idp: true\n",
        socks_config(&socks, &up.url("/up"), true),
        p = idp.addr.port(),
    );
    // The endpoint list must come last in the YAML: move it after auth.
    let (tailnet, endpoints) = body.split_once("endpoints:").unwrap();
    let (endpoints, auth) = endpoints.split_once("auth:").unwrap();
    let body = format!("{tailnet}auth:{auth}endpoints:{endpoints}");
    let b = Bridge::start_with_env("", &body, &[("TB_TEST_SOCKS_PASSWORD", "s3cret")]).await;
    idp.set(
        "tok",
        serde_json::json!({"active": true, "aud": ["https://mcp.example.com"], "iss": format!("http://localhost:{}", idp.addr.port()), "sub": "1", "exp": now() + 300}),
    );
    let r = post_bearer(&b, "tok").await;
    assert_eq!(r.status(), 200, "{}", b.stderr());
    // Introspection (reqwest, socks5h) and the upstream request (pingora) both went through it.
    let log = socks.log();
    assert!(
        log.contains(&format!("localhost:{}", idp.addr.port())),
        "{log}"
    );
    assert!(
        log.contains(&format!("127.0.0.1:{}", up.addr.port())),
        "{log}"
    );

    // Wrong password: the proxy refuses, the request fails with 502.
    let b2 = Bridge::start_with_env("", &body, &[("TB_TEST_SOCKS_PASSWORD", "wrong")]).await;
    let r = client()
        .post(b2.url("/mcp/a"))
        .bearer_auth("tok")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "introspection through a refusing proxy is an IdP failure"
    );
}
