//! End-to-end with the official MCP TypeScript SDK on both sides of tailbridge.
//! Needs `tests/e2e/node_modules` (`npm ci --prefix tests/e2e`; `tests/run.sh` does it).

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub(crate) fn e2e_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/sdk").exists(),
        "MCP SDK not installed: run `npm ci --prefix tests/e2e` (tests/run.sh does it)"
    );
    dir
}

/// A node process killed on drop.
pub(crate) struct Node(pub(crate) std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Write JSON-RPC messages to a stdio client, one per line.
fn send_lines(stdin: &mut std::process::ChildStdin, lines: &[&str]) {
    use std::io::Write;
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
}

/// Start a node script that prints `listening <port>` and return it with its port.
pub(crate) fn start_node(script: &str, env: &[(&str, &str)]) -> (Node, u16) {
    let dir = e2e_dir();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script))
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("node not found");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected server output: {line:?}"));
    (Node(child), port)
}

pub(crate) fn start_sdk_server() -> (Node, u16) {
    start_node("server.mjs", &[])
}

fn run_node(args: Vec<String>) -> std::process::Output {
    Command::new("node").args(args).output().unwrap()
}

/// Run a client script from tests/e2e against `url`; its JSON summary, or `Err` with its
/// output when it failed.
pub(crate) async fn run_client_script(
    script: &'static str,
    url: String,
) -> Result<serde_json::Value, String> {
    run_script(script, vec![url]).await
}

/// Run a script from tests/e2e with `args`; its JSON summary, or `Err` with its output when
/// it failed.
pub(crate) async fn run_script(
    script: &'static str,
    args: Vec<String>,
) -> Result<serde_json::Value, String> {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(e2e_dir().join(script))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    summary(out)
}

/// A client script's JSON summary line, or `Err` with its output when it failed.
fn summary(out: std::process::Output) -> Result<serde_json::Value, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(serde_json::from_str(stdout.trim()).unwrap())
}

/// Run the SDK client (client.mjs) against `url` with extra environment; its JSON summary,
/// or `Err` with its output when it failed. `TB_LOOPBACK_NAMES` in `env` preloads
/// loopback-dns.cjs, which resolves those names to 127.0.0.1.
pub(crate) async fn run_sdk_client(
    url: String,
    env: Vec<(&'static str, String)>,
) -> Result<serde_json::Value, String> {
    let out = tokio::task::spawn_blocking(move || {
        let dir = e2e_dir();
        let mut cmd = Command::new("node");
        if env.iter().any(|(k, _)| *k == "TB_LOOPBACK_NAMES") {
            cmd.arg("-r").arg(dir.join("loopback-dns.cjs"));
        }
        cmd.arg(dir.join("client.mjs")).arg(url).envs(env);
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    summary(out)
}

#[tokio::test]
async fn sdk_client_through_bridge_to_sdk_server() {
    let (_server, port) = start_sdk_server();
    let body = format!(
        "tailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/sdk\n    target: http://127.0.0.1:{port}/mcp\n"
    );
    let b = Bridge::start("  allowed_origins: [\"https://claude.ai\"]\n", &body).await;
    let v = run_sdk_client(b.url("/mcp/sdk"), Vec::new())
        .await
        .unwrap_or_else(|out| panic!("client failed: {out}\nbridge log:\n{}", b.stderr()));
    assert_eq!(v["server"]["name"], "e2e-upstream");
    assert!(
        v["sessionId"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    assert_eq!(v["tools"], serde_json::json!(["count", "echo"]));
    assert_eq!(v["callResult"], "counted to 5");
    assert_eq!(v["progress"], serde_json::json!([1, 2, 3, 4, 5]));
    assert_eq!(v["echo"], "héllo ✓");
    assert_eq!(v["terminated"], true);

    let stats: serde_json::Value = get_json(&format!("http://127.0.0.1:{port}/stats")).await;
    assert_eq!(stats["deletes"], 1, "{stats}");
    assert!(stats["posts"].as_u64().unwrap() >= 4, "{stats}");
    let want_host = format!("127.0.0.1:{port}");
    assert!(
        stats["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h == &want_host),
        "Host was not rewritten: {stats}"
    );
    wait_for_metrics(
        &b,
        &["tailbridge_requests_total{endpoint=\"mcp/sdk\",method=\"DELETE\",status_class=\"2xx\"} 1"],
    )
    .await;
}

/// The SDK client's whole OAuth flow (oauth-client.mjs) through a bridge in front of the
/// SDK server, with oidc-provider as tsidp. `auth_extra` and `endpoint_extra` are YAML lines
/// added to the `auth` section and the endpoint; `extra_claims` is what userinfo adds.
struct OauthRun {
    bridge: Bridge,
    summary: serde_json::Value,
    issuer: String,
    upstream_port: u16,
    _nodes: (Node, Node),
}

async fn oauth_run(auth_extra: &str, endpoint_extra: &str, extra_claims: &str) -> OauthRun {
    const REDIRECT: &str = "http://127.0.0.1:9/callback";
    let clients = serde_json::json!([
        {"client_id": "claude-e2e", "client_secret": "claude-e2e-secret", "redirect_uris": [REDIRECT]},
        {"client_id": "bridge", "client_secret": "bridge-secret", "redirect_uris": ["http://127.0.0.1:9/unused"]},
    ]);
    let (idp, idp_port) = start_node(
        "idp.mjs",
        &[
            ("CLIENTS", &clients.to_string()),
            ("EXTRA_CLAIMS", extra_claims),
        ],
    );
    let (server, port) = start_sdk_server();
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let body = format!(
        concat!(
            "tailnet:\n  mode: direct\n",
            "auth:\n  issuer: {iss}\n  audience: http://127.0.0.1:{{BRIDGE_PORT}}\n",
            "  introspection_url: {iss}/token/introspection\n",
            "  client_id: bridge\n  client_secret_env: TB_E2E_BRIDGE_SECRET\n  allow_loopback_idp: true\n",
            "{auth_extra}",
            "endpoints:\n  - name: sdk\n    path: /mcp/sdk\n    target: http://127.0.0.1:{port}/mcp\n{endpoint_extra}"
        ),
        iss = issuer,
        port = port,
        auth_extra = auth_extra,
        endpoint_extra = endpoint_extra,
    );
    let b = Bridge::start_with_env(
        "  public_url: http://127.0.0.1:{BRIDGE_PORT}\n",
        &body,
        &[("TB_E2E_BRIDGE_SECRET", "bridge-secret")],
    )
    .await;
    let args = vec![
        e2e_dir().join("oauth-client.mjs").display().to_string(),
        b.url("/mcp/sdk"),
        "claude-e2e".into(),
        "claude-e2e-secret".into(),
    ];
    let out = tokio::task::spawn_blocking(move || run_node(args))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "oauth client failed: {stdout}\n{}\nbridge log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.stderr()
    );
    OauthRun {
        summary: serde_json::from_str(stdout.trim()).unwrap(),
        bridge: b,
        issuer,
        upstream_port: port,
        _nodes: (idp, server),
    }
}

#[tokio::test]
async fn sdk_oauth_flow_through_bridge_against_oidc_provider() {
    let run = oauth_run("", "", "{}").await;
    let (b, v, issuer, port) = (&run.bridge, &run.summary, &run.issuer, run.upstream_port);
    let bridge_origin = format!("http://127.0.0.1:{}", b.port);
    // Discovery went through the bridge; its /authorize sent the browser to the IdP.
    assert!(
        v["authorizeUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{bridge_origin}/authorize?")),
        "{v}"
    );
    assert_eq!(
        v["steps"][0],
        format!("redirect 302 -> {issuer}/auth"),
        "{v}"
    );
    assert_eq!(v["asIssuer"], bridge_origin);
    assert_eq!(v["tokenEndpoint"], format!("{bridge_origin}/token"));
    assert_eq!(v["first"]["tools"], serde_json::json!(["count", "echo"]));
    assert_eq!(v["first"]["echo"], "first");
    assert_eq!(v["refreshed"], true);
    assert_eq!(v["after-refresh"]["echo"], "after-refresh");
    assert_eq!(
        v["repeatSameAnswer"], true,
        "a repeated refresh within the window gets the same answer: {v}"
    );
    // The upstream never saw a bearer token; the bridge saw the user.
    let stats: serde_json::Value = get_json(&format!("http://127.0.0.1:{port}/stats")).await;
    assert!(
        stats["authorization"].as_array().unwrap().is_empty(),
        "token passthrough: {stats}"
    );
    // Code exchange and ONE refresh: the repeat never reached tsidp.
    let idp_stats: serde_json::Value = get_json(&format!("{issuer}/stats")).await;
    assert_eq!(idp_stats["tokens"], 2, "{idp_stats}");
    assert_eq!(
        idp_stats["userinfo"], 0,
        "userinfo is only asked with tool_grants_claim"
    );
    b.wait_for_log("sub=1001").await;
    wait_for_metrics(
        b,
        &["tailbridge_introspections_total{outcome=\"active\"} 2"],
    )
    .await;
}

#[tokio::test]
async fn tool_grants_from_userinfo_through_oidc_provider() {
    // `echo` is for nobody by the endpoint's policy; the user's userinfo claim grants it.
    let run = oauth_run(
        "  tool_grants_claim: mcp_tools\n",
        "    tools:\n      allow: [\"count\"]\n",
        r#"{"mcp_tools":["sdk:echo"]}"#,
    )
    .await;
    let (b, v) = (&run.bridge, &run.summary);
    assert_eq!(
        v["first"]["tools"],
        serde_json::json!(["count", "echo"]),
        "{v}"
    );
    assert_eq!(v["first"]["echo"], "first");
    assert_eq!(v["after-refresh"]["echo"], "after-refresh");
    let idp_stats: serde_json::Value = get_json(&format!("{}/stats", run.issuer)).await;
    // one userinfo call per access token (cached with its introspection verdict)
    assert_eq!(idp_stats["userinfo"], 2, "{idp_stats}");
    wait_for_metrics(
        b,
        &[
            "tailbridge_userinfo_requests_total{result=\"ok\"} 2",
            r#"tailbridge_mcp_requests_total{endpoint="sdk",method="tools/call",outcome="ok",tool="echo"} 2"#,
        ],
    )
    .await;
}

/// Follow an authorize URL like a browser would (manual redirects, a cookie jar) until it
/// reaches `callback_prefix`, then call the callback without RFC 9207's `iss` parameter:
/// tsidp's authorization responses carry only `code` and `state`, oidc-provider adds `iss`.
async fn browse_to_callback(start: &str, callback_prefix: &str) {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HANG_GUARD)
        .build()
        .unwrap();
    let mut cookies: std::collections::BTreeMap<String, String> = Default::default();
    let mut url = start.to_string();
    for _ in 0..15 {
        if url.starts_with(callback_prefix) {
            let mut u = url::Url::parse(&url).unwrap();
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "iss")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            u.query_pairs_mut().clear().extend_pairs(kept);
            c.get(u.as_str()).send().await.unwrap();
            return;
        }
        let jar = cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut req = c.get(&url);
        if !jar.is_empty() {
            req = req.header("cookie", jar);
        }
        let r = req.send().await.unwrap();
        for v in r.headers().get_all("set-cookie") {
            let pair = v.to_str().unwrap().split(';').next().unwrap();
            if let Some((k, val)) = pair.split_once('=') {
                cookies.insert(k.trim().to_string(), val.to_string());
            }
        }
        let loc = r
            .headers()
            .get("location")
            .unwrap_or_else(|| panic!("authorize flow stopped at {url}: {}", r.status()));
        url = url::Url::parse(&url)
            .unwrap()
            .join(loc.to_str().unwrap())
            .unwrap()
            .to_string();
    }
    panic!("too many redirects from {start}");
}

#[tokio::test]
async fn mcp_remote_strict_client_through_bridge() {
    mcp_remote_session(Remote::Preset).await;
}

/// mcp-remote with NO client metadata at all (it registers as a public client) through the
/// OAuth broker; the consent page in Chromium; its own callback listener gets the code.
#[tokio::test]
async fn mcp_remote_with_no_client_metadata_through_the_broker() {
    let b = mcp_remote_session(Remote::Broker).await;
    b.wait_for_log("\"POST /register\" 201").await;
    wait_for_metrics(
        &b,
        &["tailbridge_oauth_tokens_total{grant=\"authorization_code\",outcome=\"ok\"} 1"],
    )
    .await;
}

/// How the mcp-remote session gets its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remote {
    /// A client registered at tsidp, given to mcp-remote.
    Preset,
    /// Registered through the bridge's `/register`, proxied to tsidp.
    Register,
    /// Registered at the broker as a public client.
    Broker,
}

/// mcp-remote registers itself through the bridge's `/register`; its callback port is its
/// own choice and is not listed: the loopback entry without a port allows any port.
#[tokio::test]
async fn mcp_remote_registers_with_an_unlisted_loopback_port() {
    let b = mcp_remote_session(Remote::Register).await;
    // Registration went through the bridge.
    b.wait_for_log("\"POST /register\" 201").await;
}

/// One mcp-remote session through the bridge against oidc-provider: a preset client, a
/// client registered through the bridge's `/register`, or one registered at the broker.
async fn mcp_remote_session(mode: Remote) -> Bridge {
    let register = mode == Remote::Register;
    let cb_port = free_port();
    let bridge_port = free_port();
    let redirect = format!("http://localhost:{cb_port}/oauth/callback");
    let mut clients = vec![
        serde_json::json!({"client_id": "bridge", "client_secret": "bridge-secret", "redirect_uris": [format!("http://127.0.0.1:{bridge_port}/oauth/callback")]}),
    ];
    if mode == Remote::Preset {
        clients.push(serde_json::json!({"client_id": "remote", "client_secret": "remote-secret", "redirect_uris": [redirect]}));
    }
    let clients = serde_json::Value::Array(clients);
    let (_idp, idp_port) = start_node(
        "idp.mjs",
        &[
            ("CLIENTS", &clients.to_string()),
            ("REGISTRATION", if register { "1" } else { "0" }),
        ],
    );
    let (_server, port) = start_sdk_server();
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let registration = match mode {
        Remote::Register => "  registration:\n    enabled: true\n    allowed_redirect_uris: [\"http://localhost/oauth/callback\"]\n".to_string(),
        Remote::Broker => format!(
            "  broker:\n    enabled: true\n    key_file: {}\n",
            temp_dir("remote-broker").join("broker.key").display()
        ),
        Remote::Preset => String::new(),
    };
    let body = format!(
        "tailnet:\n  mode: direct\nauth:\n  issuer: {issuer}\n  audience: http://127.0.0.1:{{BRIDGE_PORT}}\n  introspection_url: {issuer}/token/introspection\n  client_id: bridge\n  client_secret: bridge-secret\n  allow_loopback_idp: true\n{registration}endpoints:\n  - path: /mcp/sdk\n    target: http://127.0.0.1:{port}/mcp\n"
    );
    let b = Bridge::start_on(
        bridge_port,
        "  public_url: http://127.0.0.1:{BRIDGE_PORT}\n",
        &body,
        &[],
    )
    .await;
    let dir = temp_dir("mcp-remote");
    let err_log = dir.join("stderr.log");
    let mut child = Command::new("node")
        .arg(e2e_dir().join("node_modules/mcp-remote/dist/proxy.js"))
        .arg(b.url("/mcp/sdk"))
        .arg(cb_port.to_string())
        .arg("--allow-http")
        .args(match mode {
            Remote::Broker => vec![],
            Remote::Register => vec![
                "--static-oauth-client-metadata",
                r#"{"token_endpoint_auth_method":"client_secret_basic"}"#,
            ],
            Remote::Preset => vec![
                "--static-oauth-client-metadata",
                r#"{"token_endpoint_auth_method":"client_secret_basic"}"#,
                "--static-oauth-client-info",
                r#"{"client_id":"remote","client_secret":"remote-secret"}"#,
            ],
        })
        .env("MCP_REMOTE_CONFIG_DIR", dir.join("auth"))
        .env("BROWSER", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_log).unwrap())
        .spawn()
        .unwrap();
    // The lifecycle a client keeps: initialize, and nothing else until its answer came.
    let mut stdin = child.stdin.take().unwrap();
    send_lines(
        &mut stdin,
        &[
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#,
        ],
    );
    let child = Node(child);
    // mcp-remote prints the authorize URL it wants a browser to open: the bridge's.
    let prefix = b.url("/authorize?");
    let deadline = std::time::Instant::now() + HANG_GUARD;
    let auth_url = loop {
        let log = std::fs::read_to_string(&err_log).unwrap_or_default();
        // Only a complete line: the log may be read while the URL is half written.
        let complete = log.rfind('\n').map_or("", |end| &log[..end]);
        if let Some(line) = complete.lines().find(|l| l.starts_with(&prefix)) {
            break line.trim().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mcp-remote never asked for authorization:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(!std::fs::read_to_string(&err_log)
        .unwrap()
        .contains("IssuerMismatch"));
    if mode == Remote::Broker {
        let out = Command::new("node")
            .arg(e2e_dir().join("browse-consent.mjs"))
            .args([auth_url.as_str(), &format!("http://localhost:{cb_port}/")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{}\nbridge log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            b.stderr()
        );
        let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(seen["iss"], b.url(""), "{seen}");
        assert_eq!(seen["code"], true, "{seen}");
    } else {
        browse_to_callback(&auth_url, &format!("http://localhost:{cb_port}/")).await;
    }
    let mut child = child;
    let stdout = child.0.stdout.take().unwrap();
    // mcp-remote's output, line by line, as it comes.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines: Vec<String> = Vec::new();
    for (id, then) in [
        (
            "\"id\":1",
            &[
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            ][..],
        ),
        ("\"id\":2", &[][..]),
    ] {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        while !lines.iter().any(|l| l.contains(id)) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) => lines.push(line),
                _ => panic!(
                    "no answer with {id} from mcp-remote; its output: {lines:?}\nits log:\n{}\nbridge log:\n{}",
                    std::fs::read_to_string(&err_log).unwrap_or_default(),
                    b.stderr()
                ),
            }
        }
        send_lines(&mut stdin, then);
    }
    let answer = |id: &str| -> serde_json::Value {
        let line = lines.iter().find(|l| l.contains(id)).unwrap();
        serde_json::from_str(line).unwrap()
    };
    let init = answer("\"id\":1");
    assert_eq!(init["result"]["serverInfo"]["name"], "e2e-upstream");
    let list = answer("\"id\":2");
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| {
            panic!(
                "the tools/list answer has no tools: {list}\nmcp-remote's output: {lines:?}\nits log:\n{}\nbridge log:\n{}",
                std::fs::read_to_string(&err_log).unwrap_or_default(),
                b.stderr()
            )
        })
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"echo"), "{list}");
    b.wait_for_log("sub=1001").await;
    b
}

/// `tailbridge demo` works end to end with nothing else running: the MCP SDK client through
/// the demo bridge to the built-in MCP server, progress streamed.
#[tokio::test]
async fn the_demo_works_with_the_sdk_client() {
    let (port, admin) = (free_port(), free_port());
    let child = Command::new(bin())
        .args([
            "demo",
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _demo = Node(child);
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    wait_for_health(&format!("http://127.0.0.1:{admin}/healthz"), 200).await;
    let v = run_sdk_client(format!("http://127.0.0.1:{port}/mcp/demo"), Vec::new())
        .await
        .unwrap_or_else(|out| panic!("client failed: {out}"));
    assert_eq!(v["server"]["name"], "tailbridge-demo", "{v}");
    assert_eq!(v["tools"], serde_json::json!(["count", "echo", "time"]));
    assert_eq!(v["progress"], serde_json::json!([1, 2, 3, 4, 5]));
    assert_eq!(v["callResult"], "counted to 5");
    assert_eq!(v["echo"], "héllo ✓");
}
