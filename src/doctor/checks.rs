//! The doctor's checks, in the order a connector depends on them.

use super::{Check, Options};
use crate::config::{Config, Endpoint, TailnetMode, TlsMode};
use crate::tailnet::Connector;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The scopes tsidp can grant (requirements #2, #32).
const TSIDP_SCOPES: &[&str] = &["openid", "email", "profile"];

pub async fn all(path: &std::path::Path, opts: &Options) -> Vec<Check> {
    let mut out = Vec::new();
    let config = match crate::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail(
                "config",
                format!("{}: {e}", path.display()),
                "fix the fields named above (`tailbridge check` lists every problem)",
            ));
            return out;
        }
    };
    config_checks(&config, path, &mut out);
    // The bridge's own listeners, as a client reaches them: whatever certificate they serve is
    // judged by the TLS checks, not here.
    let client = match http_client(opts, None, false) {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail("doctor", e, "report this as a bug"));
            return out;
        }
    };
    let running = bridge_checks(&config, &client, opts.timeout, &mut out).await;
    let endpoints: Vec<&Endpoint> = config
        .endpoints
        .iter()
        .filter(|e| {
            opts.endpoint
                .as_deref()
                .is_none_or(|want| e.name == want || e.path == want)
        })
        .collect();
    if endpoints.is_empty() {
        out.push(Check::fail(
            "endpoints",
            format!(
                "no endpoint named {}",
                opts.endpoint.as_deref().unwrap_or("?")
            ),
            "give --endpoint an endpoint's name or path from the config",
        ));
        return out;
    }
    let connector = tailnet_checks(&config, running.as_ref(), &mut out).await;
    for ep in &endpoints {
        endpoint_checks(
            &config,
            ep,
            connector.as_ref(),
            running.as_ref(),
            opts,
            &mut out,
        )
        .await;
    }
    if let Some(auth) = &config.auth {
        idp_checks(auth, connector.as_ref(), opts, &mut out).await;
        if let Some(b) = &auth.broker {
            broker_checks(auth, b, connector.as_ref(), opts, &mut out).await;
        }
    }
    discovery_checks(&config, &endpoints, &client, running.is_some(), &mut out).await;
    super::tls::public_tls_checks(&config, opts, &mut out).await;
    out
}

fn config_checks(config: &Config, path: &std::path::Path, out: &mut Vec<Check>) {
    let problems = crate::cli::start_problems(config);
    if problems.is_empty() {
        out.push(Check::ok(
            "config",
            format!(
                "{} is valid ({} endpoints)",
                path.display(),
                config.endpoints.len()
            ),
        ));
    } else {
        for p in problems {
            out.push(Check::fail("config", p, "fix the field named above"));
        }
    }
    for w in crate::cli::warnings(config) {
        out.push(Check::warn("config", w, None));
    }
}

/// A reqwest client with the doctor's timeout, through `proxy` when given.
fn http_client(
    opts: &Options,
    proxy: Option<reqwest::Proxy>,
    verify: bool,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(opts.timeout)
        .connect_timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tailbridge-doctor/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(!verify);
    b = match proxy {
        Some(p) => b.proxy(p),
        None => b.no_proxy(),
    };
    b.build()
        .map_err(|e| format!("building an HTTP client: {e}"))
}

/// Where the local listener answers: an unspecified address is reached on loopback.
fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        std::net::IpAddr::V6(v) if v.is_unspecified() => {
            SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], addr.port()))
        }
        _ => addr,
    }
}

/// What the running bridge said about itself.
pub struct Running {
    pub health: Value,
}

async fn bridge_checks(
    config: &Config,
    client: &reqwest::Client,
    timeout: std::time::Duration,
    out: &mut Vec<Check>,
) -> Option<Running> {
    let Some(admin) = config.admin.listen else {
        out.push(Check::skip(
            "bridge",
            "admin.listen is off: cannot ask a running bridge about itself",
        ));
        return None;
    };
    let admin = local(admin);
    let health = client.get(format!("http://{admin}/healthz")).send().await;
    let Ok(resp) = health else {
        out.push(Check::warn(
            "bridge",
            format!("no bridge answers on the admin listener {admin}: it is not running here"),
            Some("start it (systemctl start tailbridge); the checks below run without it where they can".into()),
        ));
        return None;
    };
    let status = resp.status().as_u16();
    let health: Value = resp.json().await.unwrap_or_default();
    let mode = health["mode"].as_str().unwrap_or("?").to_string();
    let about = format!(
        "tailbridge {}, up {} s, tailnet mode {mode}, admin {admin}",
        health["version"].as_str().unwrap_or("?"),
        health["uptime_seconds"].as_u64().unwrap_or(0)
    );
    if status == 200 {
        out.push(Check::ok("bridge", format!("running: {about}")));
    } else {
        let reasons = health["reasons"].to_string();
        out.push(Check::fail(
            "bridge",
            format!("running but not ready (health {status}): {reasons}"),
            "see the reasons; `journalctl -u tailbridge` has the details",
        ));
    }
    let main = local(config.server.listen);
    let scheme = if config.tls.mode == TlsMode::Off {
        "http"
    } else {
        "https"
    };
    // With the PROXY protocol on, a plain client is refused: speak it (a LOCAL header).
    let answered = if config.server.proxy_protocol {
        let raw = super::tls::livez_raw(config, main);
        match tokio::time::timeout(timeout, raw).await {
            Ok(Ok(200)) => Ok("answers (PROXY protocol on: through a LOCAL header)".to_string()),
            Ok(Ok(status)) => Err(format!("answered {status} to /livez")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    } else {
        match client.get(format!("{scheme}://{main}/livez")).send().await {
            Ok(_) => Ok("answers".to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    if let Ok(how) = &answered {
        out.push(Check::ok(
            "bridge.listen",
            format!("{scheme}://{main} {how}"),
        ));
    } else if let (true, Err(why)) = (config.server.proxy_protocol, &answered) {
        out.push(Check::fail(
            "bridge.listen",
            format!("server.listen {main} ({scheme}, PROXY protocol on): {why}"),
            "a connection with a PROXY header was refused: is this the config the bridge runs with?",
        ));
    } else {
        out.push(Check::fail(
            "bridge.listen",
            format!("nothing answers on server.listen {main} ({scheme})"),
            "check server.listen and that no firewall drops it; the admin listener answered",
        ));
    }
    Some(Running { health })
}

async fn tailnet_checks(
    config: &Config,
    running: Option<&Running>,
    out: &mut Vec<Check>,
) -> Option<Arc<dyn Connector>> {
    match config.tailnet.mode {
        TailnetMode::Tsnet => {
            // The embedded node belongs to the running bridge (its state directory is
            // locked to it): read its state from there.
            match running {
                Some(r) => {
                    let connected = r.health["tsnet_connected"].as_bool().unwrap_or(false);
                    let addrs = r.health["addresses"].to_string();
                    if connected {
                        out.push(Check::ok(
                            "tailnet",
                            format!("tsnet node running, addresses {addrs}"),
                        ));
                    } else {
                        out.push(Check::fail(
                            "tailnet",
                            format!("tsnet node not running: {}", r.health["reasons"]),
                            "check the node in the Tailscale admin console and tailnet.authkey_* / state_dir",
                        ));
                    }
                }
                None => out.push(Check::skip(
                    "tailnet",
                    "tsnet mode: the node runs inside the bridge, which is not running",
                )),
            }
            None
        }
        TailnetMode::Direct | TailnetMode::Socks5 => match crate::tailnet::build(config) {
            Ok(c) => {
                c.refresh_status().await;
                let st = c.status();
                if st.ready {
                    let what = match config.tailnet.mode {
                        TailnetMode::Socks5 => "the SOCKS5 proxy answers",
                        _ => "the host's network and resolver (tailscaled with MagicDNS)",
                    };
                    out.push(Check::ok(
                        "tailnet",
                        format!("{} mode: {what}", st.mode.as_str()),
                    ));
                } else {
                    out.push(Check::fail(
                        "tailnet",
                        format!(
                            "{} mode: {}",
                            st.mode.as_str(),
                            st.reason.unwrap_or_else(|| "not ready".into())
                        ),
                        "check tailnet.socks5.address and that tailscaled's SOCKS5 server runs",
                    ));
                }
                Some(c)
            }
            Err(e) => {
                out.push(Check::fail(
                    "tailnet",
                    e.to_string(),
                    "fix the tailnet section",
                ));
                None
            }
        },
    }
}

async fn endpoint_checks(
    config: &Config,
    ep: &Endpoint,
    connector: Option<&Arc<dyn Connector>>,
    running: Option<&Running>,
    opts: &Options,
    out: &mut Vec<Check>,
) {
    let name = format!("endpoint {}", ep.name);
    let Some(connector) = connector else {
        // tsnet: the running bridge's probes tell.
        match running.and_then(|r| r.health["upstreams"].get(&ep.name).cloned()) {
            Some(v) if v == "up" => out.push(Check::ok(
                format!("{name}: reach"),
                format!("{}:{} answers the bridge's probes", ep.host, ep.port),
            )),
            Some(v) => out.push(Check::fail(
                format!("{name}: reach"),
                format!("{}:{} does not answer the bridge's probes ({v})", ep.host, ep.port),
                "allow the bridge's tag to reach the MCP server's tag and port in the tailnet policy file",
            )),
            None => out.push(Check::skip(format!("{name}: reach"), "no probe result from a running bridge")),
        }
        return;
    };
    if config.tailnet.mode == TailnetMode::Direct {
        match tokio::time::timeout(
            opts.timeout,
            tokio::net::lookup_host((ep.host.as_str(), ep.port)),
        )
        .await
        {
            Ok(Ok(addrs)) => {
                let a: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                out.push(Check::ok(
                    format!("{name}: resolve"),
                    format!("{} → {}", ep.host, a.join(", ")),
                ));
            }
            Ok(Err(e)) => {
                out.push(Check::fail(
                    format!("{name}: resolve"),
                    format!("{}: {e}", ep.host),
                    "use the MagicDNS name or the ts.net FQDN of the MCP server in endpoints[].target, and check that MagicDNS is on",
                ));
                return;
            }
            Err(_) => {
                out.push(Check::fail(
                    format!("{name}: resolve"),
                    format!("{}: no answer within {:?}", ep.host, opts.timeout),
                    "check the host's resolver (MagicDNS)",
                ));
                return;
            }
        }
    }
    let started = Instant::now();
    match tokio::time::timeout(
        opts.timeout.min(ep.timeouts.connect),
        connector.dial(&ep.host, ep.port),
    )
    .await
    {
        Ok(Ok(_)) => out.push(Check::ok(
            format!("{name}: dial"),
            format!(
                "{}:{} in {:.1} ms",
                ep.host,
                ep.port,
                started.elapsed().as_secs_f64() * 1000.0
            ),
        )),
        Ok(Err(e)) => {
            out.push(Check::fail(
                format!("{name}: dial"),
                e.to_string(),
                "is the MCP server running on that port? Does the tailnet policy let the bridge reach it (e.g. tag:tailbridge → tag:mcp)?",
            ));
            return;
        }
        Err(_) => {
            out.push(Check::fail(
                format!("{name}: dial"),
                format!("{}:{} did not answer within {:?}", ep.host, ep.port, opts.timeout),
                "a peer that does not answer: the machine is off or asleep, or the tailnet policy drops the bridge's packets",
            ));
            return;
        }
    }
    let client = match http_client(opts, connector.reqwest_proxy(), ep.tls_verify) {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail(
                format!("{name}: mcp"),
                e,
                "report this as a bug",
            ));
            return;
        }
    };
    mcp_probe(ep, &client, &name, out).await;
    if let Some(path) = &ep.guard.pinned {
        pin_check(ep, path, &client, &name, out).await;
    }
}

/// The live tool list against the endpoint's pins: each difference named.
async fn pin_check(
    ep: &Endpoint,
    path: &std::path::Path,
    client: &reqwest::Client,
    name: &str,
    out: &mut Vec<Check>,
) {
    use crate::mcp::pins::{compare, PinFile};
    let check = format!("{name}: pins");
    let pins = match PinFile::load(path).and_then(|f| f.endpoint(path, &ep.name).cloned()) {
        Ok(p) => p,
        Err(e) => {
            out.push(Check::fail(
                check,
                e.to_string(),
                "pin the endpoint: tailbridge tools pin > pins.json",
            ));
            return;
        }
    };
    let (tools, _) = match crate::mcp::listing::list_tools(ep, client).await {
        Ok(t) => t,
        Err(e) => {
            out.push(Check::fail(
                check,
                format!("cannot list the tools: {e}"),
                "see the mcp check above",
            ));
            return;
        }
    };
    let reference = pins
        .tools
        .iter()
        .map(|(k, v)| (k.clone(), v.sha256.clone()))
        .collect();
    let findings = compare(&tools, &reference, true);
    if findings.is_empty() {
        out.push(Check::ok(
            check,
            format!(
                "{} tool(s) match their pins in {}",
                tools.len(),
                path.display()
            ),
        ));
        return;
    }
    let listed: Vec<String> = findings
        .iter()
        .map(|f| format!("{} {}", f.tool, f.change.as_str()))
        .collect();
    let hint = match ep.guard.on_change {
        crate::mcp::pins::OnChange::Hide => "these are hidden from clients: review the upstream's change, then pin again (tailbridge tools pin)",
        crate::mcp::pins::OnChange::Alert => "clients see these changes: review them, then pin again (tailbridge tools pin)",
    };
    out.push(Check::warn(
        check,
        format!("differs from {}: {}", path.display(), listed.join(", ")),
        Some(hint.into()),
    ));
}

/// The first JSON-RPC message in a JSON or SSE body.
fn first_message(body: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return Some(v);
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
}

async fn mcp_probe(ep: &Endpoint, client: &reqwest::Client, name: &str, out: &mut Vec<Check>) {
    let token = ep.upstream_token.as_ref().and_then(|t| t.resolve().ok());
    let mut req = client
        .post(ep.target.as_str())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "tailbridge-doctor", "version": env!("CARGO_PKG_VERSION")}}})
            .to_string(),
        );
    if let Some(t) = &token {
        req = req.bearer_auth(t.expose());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("{e:#}");
            let hint = if msg.contains("certificate") || msg.contains("Certificate") {
                "the upstream's certificate is not valid for its name: serve a cert for the ts.net name (`tailscale cert`), or set endpoints[].tls_verify: false for a self-signed one on the tailnet"
            } else {
                "the upstream accepted the connection but the request failed: is it an MCP streamable HTTP server at that path?"
            };
            out.push(Check::fail(format!("{name}: mcp"), msg, hint));
            return;
        }
    };
    let status = resp.status().as_u16();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.text().await.unwrap_or_default();
    match status {
        200 => {}
        421 => {
            out.push(Check::fail(
                format!("{name}: mcp"),
                format!("HTTP 421 Misdirected Request from {}", ep.target),
                format!(
                    "the upstream refuses the Host header `{}`: allow that host in the MCP server (its allowed hosts / DNS-rebinding protection), or point endpoints[].target at the name it expects",
                    ep.authority
                ),
            ));
            return;
        }
        401 | 403 => {
            out.push(Check::fail(
                format!("{name}: mcp"),
                format!("HTTP {status} from {}", ep.target),
                "the upstream wants its own credentials: set endpoints[].upstream_token_env or upstream_token_file",
            ));
            return;
        }
        _ => {
            let head: String = body.chars().take(160).collect();
            out.push(Check::fail(
                format!("{name}: mcp"),
                format!("HTTP {status} from {}: {head}", ep.target),
                "check that endpoints[].target is the MCP endpoint's full URL (often …/mcp)",
            ));
            return;
        }
    }
    let Some(msg) = first_message(&body) else {
        out.push(Check::fail(
            format!("{name}: mcp"),
            "the initialize answer is not JSON-RPC",
            "check that endpoints[].target is an MCP streamable HTTP endpoint",
        ));
        return;
    };
    let info = &msg["result"]["serverInfo"];
    out.push(Check::ok(
        format!("{name}: mcp"),
        format!(
            "{} {} speaks {}",
            info["name"]
                .as_str()
                .filter(|v| !v.is_empty())
                .unwrap_or("?"),
            info["version"]
                .as_str()
                .filter(|v| !v.is_empty())
                .unwrap_or("?"),
            msg["result"]["protocolVersion"].as_str().unwrap_or("?")
        ),
    ));
    discover_probe(ep, client, token.as_ref().map(|t| t.expose()), name, out).await;
    if let Some(sid) = session {
        // End the probe's session.
        let mut del = client
            .delete(ep.target.as_str())
            .header("mcp-session-id", sid);
        if let Some(t) = &token {
            del = del.bearer_auth(t.expose());
        }
        let _ = del.send().await;
    }
}

/// The 2026-07-28 probe: `server/discover`, stateless, with the revision's mirrored headers
/// and `_meta` envelope. A server that does not speak the revision is not a failure.
async fn discover_probe(
    ep: &Endpoint,
    client: &reqwest::Client,
    token: Option<&str>,
    name: &str,
    out: &mut Vec<Check>,
) {
    let mut req = client
        .post(ep.target.as_str())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .body(
            json!({"jsonrpc": "2.0", "id": 2, "method": "server/discover", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "tailbridge-doctor", "version": env!("CARGO_PKG_VERSION")}}}})
            .to_string(),
        );
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let answer = match req.send().await {
        Ok(r) if r.status().is_success() => r.text().await.ok().and_then(|b| first_message(&b)),
        _ => None,
    };
    match answer.filter(|m| m.get("result").is_some()) {
        Some(m) => {
            let versions = m["result"]["supportedVersions"].to_string();
            out.push(Check::ok(
                format!("{name}: 2026-07-28"),
                format!("server/discover answers (supported versions {versions})"),
            ));
        }
        None => out.push(Check::ok(
            format!("{name}: 2026-07-28"),
            "no server/discover: the server speaks 2025-11-25 only (fine: the bridge carries both)",
        )),
    }
}

/// The OAuth broker: its key file, `public_url`, and tsidp accepting the bridge's client
/// for the broker's callback (a made-up code must be refused as `invalid_grant`, not
/// `invalid_client`).
async fn broker_checks(
    auth: &crate::config::Auth,
    b: &crate::config::broker::Broker,
    connector: Option<&Arc<dyn Connector>>,
    opts: &Options,
    out: &mut Vec<Check>,
) {
    for f in &b.key_files {
        out.push(match key_file_state(f) {
            Ok(()) => Check::ok("broker: key file", format!("{} (mode 0600)", f.display())),
            Err(KeyState::Missing) => Check::warn(
                "broker: key file",
                format!("{} does not exist yet", f.display()),
                Some("it is created (0600) at the first start; give every instance of a fleet the same file".into()),
            ),
            Err(KeyState::Mode(m)) => Check::fail(
                "broker: key file",
                format!("{} has mode {m:o}: others can read the key that seals every token", f.display()),
                format!("chmod 600 {}", f.display()),
            ),
            Err(KeyState::Bad(why)) => Check::fail(
                "broker: key file",
                format!("{}: {why}", f.display()),
                "restore the file, or remove it to have a new key made (every client must then register again)",
            ),
        });
    }
    let origin = &auth.public_origin;
    let callback = format!("{origin}{}", crate::auth::broker::CALLBACK_PATH);
    if origin.starts_with("https://") {
        out.push(Check::ok(
            "broker: public_url",
            format!("{origin}; callback to register at tsidp: {callback}"),
        ));
    } else {
        out.push(Check::warn(
            "broker: public_url",
            format!("{origin} is not https (loopback only, for tests); callback to register at tsidp: {callback}"),
            Some("set server.public_url to the https URL clients use".into()),
        ));
    }
    let proxy = connector.and_then(|c| c.reqwest_proxy());
    let Ok(client) = http_client(opts, proxy, true) else {
        return;
    };
    let secret = match auth.client_secret.resolve() {
        Ok(s) => s,
        Err(e) => {
            out.push(Check::fail(
                "broker: tsidp client",
                e.to_string(),
                "set auth.client_secret_env or _file",
            ));
            return;
        }
    };
    let base = auth.issuer.as_str().trim_end_matches('/');
    let token_url = format!("{base}/token");
    let sent = client
        .post(&token_url)
        .basic_auth(&auth.client_id, Some(secret.expose()))
        .header("accept", "application/json")
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "tailbridge-doctor-made-up-code"),
            ("redirect_uri", callback.as_str()),
            (
                "code_verifier",
                "tailbridge-doctor-made-up-verifier-0123456789abcdef",
            ),
        ])
        .send()
        .await;
    match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or_default();
            let err = v["error"].as_str().unwrap_or("").to_string();
            match err.as_str() {
                "invalid_grant" => out.push(Check::ok(
                    "broker: tsidp client",
                    format!("tsidp accepts client {} (a made-up code is invalid_grant)", auth.client_id),
                )),
                "invalid_client" | "unauthorized_client" => out.push(Check::fail(
                    "broker: tsidp client",
                    format!("tsidp refuses the bridge's client {}: {err}", auth.client_id),
                    format!("check auth.client_id and its secret; the client must list the redirect URI {callback}"),
                )),
                _ => out.push(Check::warn(
                    "broker: tsidp client",
                    format!("{token_url} answered HTTP {status} {err}"),
                    Some(format!("make sure tsidp's client {} lists {callback}", auth.client_id)),
                )),
            }
        }
        Err(e) => out.push(Check::fail(
            "broker: tsidp client",
            format!("{token_url}: {e}"),
            "tsidp must be reachable over the tailnet",
        )),
    }
}

enum KeyState {
    Missing,
    Mode(u32),
    Bad(String),
}

fn key_file_state(path: &std::path::Path) -> Result<(), KeyState> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyState::Missing),
        Err(e) => return Err(KeyState::Bad(e.to_string())),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyState::Mode(mode));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| KeyState::Bad(e.to_string()))?;
    crate::auth::broker::seal::parse_key(&text)
        .map(|_| ())
        .ok_or_else(|| KeyState::Bad("not a broker key (32 bytes, base64url)".into()))
}

async fn idp_checks(
    auth: &crate::config::Auth,
    connector: Option<&Arc<dyn Connector>>,
    opts: &Options,
    out: &mut Vec<Check>,
) {
    let proxy = connector.and_then(|c| c.reqwest_proxy());
    let client = match http_client(opts, proxy, true) {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail("idp", e, "report this as a bug"));
            return;
        }
    };
    let base = auth.issuer.as_str().trim_end_matches('/');
    let url = format!("{base}/.well-known/oauth-authorization-server");
    match client
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            let v: Value = r.json().await.unwrap_or_default();
            let issuer = v["issuer"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string();
            let pkce = v["code_challenge_methods_supported"].to_string();
            out.push(Check::ok(
                "idp: metadata",
                format!(
                    "{url}: issuer {issuer}, authorization {}, PKCE {pkce}",
                    v["authorization_endpoint"]
                ),
            ));
            if issuer != base {
                out.push(Check::fail(
                    "idp: issuer",
                    format!("tsidp says its issuer is {issuer}, auth.issuer is {base}"),
                    format!("set auth.issuer to {issuer}"),
                ));
            }
        }
        Ok(r) => out.push(Check::fail(
            "idp: metadata",
            format!("{url} answered HTTP {}", r.status().as_u16()),
            "check auth.issuer: it is tsidp's URL (https://idp.<tailnet>.ts.net)",
        )),
        Err(e) => {
            out.push(Check::fail(
                "idp: metadata",
                format!("{url}: {e}"),
                "the bridge cannot reach tsidp: allow the bridge's tag to reach tsidp on 443 in the tailnet policy file",
            ));
            return;
        }
    }
    let secret = match auth.client_secret.resolve() {
        Ok(s) => s,
        Err(e) => {
            out.push(Check::fail(
                "idp: introspection",
                format!("auth.client_secret: {e}"),
                "set the secret the config names",
            ));
            return;
        }
    };
    let probe_token = format!("tailbridge-doctor-{}", crate::mcp::audit::now_rfc3339());
    let started = Instant::now();
    let res = client
        .post(auth.introspection_url.as_str())
        .basic_auth(&auth.client_id, Some(secret.expose()))
        .header("accept", "application/json")
        .form(&[("token", probe_token.as_str())])
        .send()
        .await;
    match res {
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or_default();
            match (status, v["active"].as_bool()) {
                (200, Some(false)) => out.push(Check::ok(
                    "idp: introspection",
                    format!(
                        "{} answers with the bridge's credentials in {:.0} ms",
                        auth.introspection_url,
                        started.elapsed().as_secs_f64() * 1000.0
                    ),
                )),
                (400 | 401 | 403, _) => out.push(Check::fail(
                    "idp: introspection",
                    format!("{} refused the bridge's credentials (HTTP {status})", auth.introspection_url),
                    "auth.client_id / auth.client_secret must be a client registered at tsidp",
                )),
                _ => out.push(Check::fail(
                    "idp: introspection",
                    format!("{} answered HTTP {status}: {v}", auth.introspection_url),
                    "check auth.introspection_url (tsidp: <issuer>/introspect)",
                )),
            }
        }
        Err(e) => out.push(Check::fail(
            "idp: introspection",
            format!("{}: {e}", auth.introspection_url),
            "a timeout means the tailnet or its policy: allow the bridge's tag to reach tsidp on 443",
        )),
    }
}

/// RFC 8414 §3.1: the metadata URL of an issuer, with the well-known segment inserted
/// before the issuer's path.
pub fn as_metadata_url(issuer: &str) -> Option<String> {
    let u = url::Url::parse(issuer).ok()?;
    let path = u.path().trim_end_matches('/');
    Some(format!(
        "{}/.well-known/oauth-authorization-server{path}",
        u.origin().ascii_serialization()
    ))
}

async fn discovery_checks(
    config: &Config,
    endpoints: &[&Endpoint],
    client: &reqwest::Client,
    running: bool,
    out: &mut Vec<Check>,
) {
    let Some(auth) = &config.auth else {
        out.push(Check::skip(
            "discovery",
            "no auth section: clients connect without OAuth",
        ));
        return;
    };
    let public = auth.public_origin.trim_end_matches('/').to_string();
    if let Ok(u) = url::Url::parse(&public) {
        if u.scheme() != "https" || u.port_or_known_default() != Some(443) {
            out.push(Check::warn(
                "discovery: public_url",
                format!("{public} is not https on port 443"),
                Some("Claude.ai reaches connectors on 443 only: serve the bridge (or a proxy in front) at https://<host>/ and set server.public_url to it".into()),
            ));
        }
    }
    if !running {
        out.push(Check::skip(
            "discovery",
            "the bridge is not running: the chain cannot be followed",
        ));
        return;
    }
    let c = client;
    for ep in endpoints {
        let name = format!("discovery {}", ep.name);
        let url = format!("{public}{}", ep.path);
        let r = match c
            .post(&url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                out.push(Check::fail(
                    format!("{name}: 401"),
                    format!("POST {url}: {e}"),
                    "server.public_url must be where clients reach this bridge (DNS, port, TLS)",
                ));
                continue;
            }
        };
        let www = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let prm = www
            .split("resource_metadata=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .map(str::to_string);
        let (Some(prm), 401) = (prm, r.status().as_u16()) else {
            out.push(Check::fail(
                format!("{name}: 401"),
                format!(
                    "POST {url} → HTTP {} without a resource_metadata challenge",
                    r.status().as_u16()
                ),
                "server.public_url points somewhere else than this bridge (another port or proxy?)",
            ));
            continue;
        };
        out.push(Check::ok(
            format!("{name}: 401"),
            format!("POST {url} → 401, resource_metadata {prm}"),
        ));
        let doc: Value = match c.get(&prm).send().await {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
            other => {
                out.push(Check::fail(
                    format!("{name}: PRM"),
                    format!(
                        "GET {prm} → {}",
                        other
                            .map(|r| r.status().as_u16().to_string())
                            .unwrap_or_else(|e| e.to_string())
                    ),
                    "the protected-resource document must be served at the URL the challenge names",
                ));
                continue;
            }
        };
        let resource = doc["resource"].as_str().unwrap_or_default();
        let as_url = doc["authorization_servers"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if crate::auth::verify::normalise_url(resource) != url {
            out.push(Check::fail(
                format!("{name}: PRM"),
                format!("resource is {resource}, the endpoint is {url}"),
                "set server.public_url to the origin clients use",
            ));
            continue;
        }
        out.push(Check::ok(
            format!("{name}: PRM"),
            format!("GET {prm} → 200, authorization server {as_url}"),
        ));
        let Some(meta_url) = as_metadata_url(&as_url) else {
            out.push(Check::fail(
                format!("{name}: AS metadata"),
                format!("`{as_url}` is not a URL"),
                "check auth.advertise",
            ));
            continue;
        };
        let meta: Value = match c.get(&meta_url).send().await {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
            other => {
                out.push(Check::fail(
                    format!("{name}: AS metadata"),
                    format!("GET {meta_url} → {}", other.map(|r| r.status().as_u16().to_string()).unwrap_or_else(|e| e.to_string())),
                    "the bridge serves tsidp's metadata when tsidp is reachable: see the idp checks",
                ));
                continue;
            }
        };
        let mut problems = Vec::new();
        if crate::auth::verify::normalise_url(meta["issuer"].as_str().unwrap_or_default())
            != crate::auth::verify::normalise_url(&as_url)
        {
            problems.push(format!(
                "issuer {} is not {as_url} (RFC 8414 §3.3: strict clients refuse it)",
                meta["issuer"]
            ));
        }
        if !meta["token_endpoint"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&public)
        {
            problems.push(format!(
                "token_endpoint {} is not at the bridge",
                meta["token_endpoint"]
            ));
        }
        // With the bridge as issuer (advertise: bridge, or the broker) `/authorize` is the
        // bridge's (it redirects to tsidp); with advertise: idp it is tsidp's own.
        let idp = auth.issuer.as_str().trim_end_matches('/');
        let bridge_issuer =
            auth.broker.is_some() || auth.advertise == crate::config::Advertise::Bridge;
        let (want, at) = if bridge_issuer {
            (
                format!("{}/authorize", public.trim_end_matches('/')),
                "the bridge",
            )
        } else {
            (idp.to_string(), "tsidp")
        };
        if !meta["authorization_endpoint"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&want)
        {
            problems.push(format!(
                "authorization_endpoint {} is not at {at}",
                meta["authorization_endpoint"]
            ));
        }
        if meta["code_challenge_methods_supported"]
            .as_array()
            .is_none_or(|a| a.is_empty())
        {
            problems.push("no code_challenge_methods_supported (clients must refuse it)".into());
        }
        if let Some(scopes) = meta["scopes_supported"].as_array() {
            let bad: Vec<&str> = scopes
                .iter()
                .filter_map(|s| s.as_str())
                .filter(|s| !TSIDP_SCOPES.contains(s))
                .collect();
            if !bad.is_empty() {
                out.push(Check::warn(
                    format!("{name}: scopes"),
                    format!("the AS metadata lists scopes tsidp cannot grant: {}", bad.join(", ")),
                    Some("clients that ask for them get invalid_scope from tsidp; the protected-resource document names openid, profile, email".into()),
                ));
            }
        }
        if problems.is_empty() {
            out.push(Check::ok(
                format!("{name}: AS metadata"),
                format!("GET {meta_url} → issuer, endpoints and PKCE in order"),
            ));
        } else {
            out.push(Check::fail(
                format!("{name}: AS metadata"),
                problems.join("; "),
                "auth.advertise: bridge makes the bridge origin the issuer; auth.issuer must be tsidp's URL",
            ));
            continue;
        }
        let authz = format!("{public}/authorize?response_type=code&client_id=doctor&state=doctor");
        match c.get(&authz).send().await {
            Ok(r) if r.status().as_u16() == 302 => {
                let loc = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                out.push(Check::ok(format!("{name}: authorize"), format!("GET /authorize → 302 {}", loc.split('?').next().unwrap_or_default())));
            }
            other => out.push(Check::fail(
                format!("{name}: authorize"),
                format!("GET /authorize → {}", other.map(|r| r.status().as_u16().to_string()).unwrap_or_else(|e| e.to_string())),
                "the bridge redirects /authorize to tsidp; the user's browser must be on the tailnet to follow it",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8414_metadata_urls() {
        for (issuer, want) in [
            (
                "https://mcp.example.com",
                "https://mcp.example.com/.well-known/oauth-authorization-server",
            ),
            (
                "https://mcp.example.com/",
                "https://mcp.example.com/.well-known/oauth-authorization-server",
            ),
            (
                "https://h.example/tenant/a",
                "https://h.example/.well-known/oauth-authorization-server/tenant/a",
            ),
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/.well-known/oauth-authorization-server",
            ),
        ] {
            assert_eq!(as_metadata_url(issuer).as_deref(), Some(want), "{issuer}");
        }
    }

    #[test]
    fn first_message_from_json_or_sse() {
        assert_eq!(first_message(r#"{"a":1}"#), Some(json!({"a": 1})));
        assert_eq!(
            first_message("event: message\ndata: {\"b\":2}\n\n"),
            Some(json!({"b": 2}))
        );
        assert_eq!(first_message("nope"), None);
    }
}
