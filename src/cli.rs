//! Command line: `tailbridge [--config PATH]`, `tailbridge check`, `tailbridge healthcheck`.

use crate::config::{Config, TlsMode};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Default config path.
pub const DEFAULT_CONFIG: &str = "/etc/tailbridge/config.yaml";
/// Exit code for an invalid config or invalid usage (EX_USAGE-style, as linkerd does).
pub const EXIT_CONFIG: i32 = 64;
/// Exit code for a failed start.
pub const EXIT_START: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "tailbridge",
    version,
    about = "Expose private MCP servers on a Tailscale tailnet to Claude.ai, in one process"
)]
pub struct Cli {
    /// Path of the YAML config file.
    #[arg(short, long, global = true, default_value = DEFAULT_CONFIG, env = "TAILBRIDGE_CONFIG")]
    pub config: PathBuf,
    /// Log at debug level (RUST_LOG still wins).
    #[arg(short, long, global = true)]
    pub debug: bool,
    /// Take over the listening sockets of a running instance (zero-downtime upgrade).
    #[arg(short, long)]
    pub upgrade: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config, print a summary, exit 0 (valid) or 64 (invalid).
    Check {
        /// Also print the effective config: every setting, defaults filled in (secrets are
        /// shown by their source, never their value).
        #[arg(long)]
        explain: bool,
    },
    /// Replace the running instance without dropping requests: validate the config (exit 64
    /// if invalid, the running process keeps serving), start a new process that takes over the
    /// listening sockets, and let the old one drain.
    Reload,
    /// Walk everything a Claude.ai connector depends on (config, running bridge, upstreams
    /// over the tailnet, tsidp, the discovery chain, TLS) and say what is wrong and how to
    /// fix it; exit 0 when nothing failed, 1 otherwise.
    Doctor {
        /// Print the checks as JSON: {checks: [{name, status, detail, hint}]}.
        #[arg(long)]
        json: bool,
        /// Only this endpoint (name or path).
        #[arg(long)]
        endpoint: Option<String>,
        /// Bound on each network call, in seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Run a demo: a bridge on loopback in front of a small built-in MCP server (echo, time,
    /// count with streamed progress). No auth, no tailnet; prints what to try.
    Demo {
        /// Port of the demo bridge on 127.0.0.1.
        #[arg(long, default_value_t = 8900)]
        port: u16,
        /// Port of its admin listener (status page, metrics) on 127.0.0.1.
        #[arg(long, default_value_t = 9090)]
        admin_port: u16,
    },
    /// Work with the upstreams' tool definitions.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// Probe a /healthz URL; exit 0 when it answers 200, 1 otherwise.
    Healthcheck {
        /// URL to probe (plain http).
        #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

/// `tailbridge tools …`
#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// Ask each endpoint's upstream for its whole tool list (through the configured tailnet
    /// connector, either protocol revision, every page) and print a pin file (JSON) for
    /// `endpoints[].tools.pinned`: one hash per tool over what the model sees, with the
    /// definitions beside them for review.
    Pin {
        /// Only this endpoint (name or path).
        #[arg(long)]
        endpoint: Option<String>,
        /// Bound on each request, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

/// The summary `check` prints for a valid config.
pub fn summary(config: &Config) -> String {
    let mut s = String::new();
    let tls = match &config.tls.mode {
        TlsMode::Off => "plain HTTP".to_string(),
        TlsMode::Files { cert_file, .. } => format!("TLS from {}", cert_file.display()),
        TlsMode::Acme(a) => format!(
            "TLS via ACME for {}, {} challenge, from {}",
            a.domains.join(", "),
            a.challenge.as_str(),
            a.directory_url
        ),
    };
    let proxy = match config.server.proxy_protocol {
        true => ", PROXY protocol header required",
        false => "",
    };
    s.push_str(&format!(
        "listen  {} ({tls}{proxy})\n",
        config.server.listen
    ));
    if let Some(h) = config.tls.http_listen {
        s.push_str(&format!(
            "http    {h} (308 to https, ACME HTTP-01 answers)\n"
        ));
    }
    match config.admin.listen {
        Some(a) => s.push_str(&format!("admin   {a} (/metrics, /healthz)\n")),
        None => s.push_str("admin   off\n"),
    }
    s.push_str(&format!("tailnet {}", config.tailnet.mode.as_str()));
    if config.tailnet.mode == crate::config::TailnetMode::Tsnet {
        s.push_str(&format!(
            " (hostname {}, state {})",
            config.tailnet.hostname,
            config.tailnet.state_dir.display()
        ));
    }
    s.push('\n');
    match &config.auth {
        Some(a) => {
            s.push_str(&format!(
                "auth    introspection at {} (issuer {})\n",
                a.introspection_url, a.issuer
            ));
            if let Some(b) = &a.broker {
                s.push_str(&format!(
                    "broker  on: authorization server at {o}, callback {o}/oauth/callback, key {}, access tokens {}s, {} pinned CIMD client(s)\n",
                    b.key_files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    b.access_token_ttl.as_secs(),
                    b.cimd.pinned.len(),
                    o = a.public_origin,
                ));
            }
        }
        None => s.push_str("auth    off (authless)\n"),
    }
    if config.server.allowed_origins.is_empty() {
        s.push_str("origins any\n");
    } else {
        s.push_str(&format!(
            "origins {}\n",
            config.server.allowed_origins.join(", ")
        ));
    }
    s.push_str("endpoints:\n");
    for ep in &config.endpoints {
        s.push_str(&format!(
            "  {:<24} -> {}{}{}\n",
            ep.path,
            ep.target,
            if ep.enabled { "" } else { "  [disabled]" },
            if ep.description.is_empty() {
                String::new()
            } else {
                format!("  ({})", ep.description)
            }
        ));
        s.push_str(&format!("    tools: {}\n", tool_policy_line(&ep.tools)));
        for g in &ep.tools.grants {
            s.push_str(&format!("    {}\n", grant_line(g)));
        }
    }
    if let Some(claim) = config
        .auth
        .as_ref()
        .and_then(|a| a.tool_grants_claim.as_deref())
    {
        s.push_str(&format!(
            "tool grants also from the `{claim}` claim of tsidp's /userinfo\n"
        ));
    }
    s
}

fn globs(g: &[crate::mcp::glob::Glob]) -> String {
    let v: Vec<&str> = g.iter().map(|g| g.as_str()).collect();
    format!("[{}]", v.join(", "))
}

/// One line for an endpoint's effective tool policy.
pub fn tool_policy_line(p: &crate::mcp::policy::ToolPolicy) -> String {
    let mode = if p.in_force() {
        "enforced"
    } else {
        "not enforced: every tool allowed, calls counted and audited"
    };
    format!(
        "allow {} deny {} grants {} ({mode})",
        globs(&p.allow),
        globs(&p.deny),
        p.grants.len()
    )
}

fn grant_line(g: &crate::mcp::policy::Grant) -> String {
    let mut who = Vec::new();
    if !g.users.is_empty() {
        who.push(format!("users [{}]", g.users.join(", ")));
    }
    if !g.clients.is_empty() {
        who.push(format!("clients [{}]", g.clients.join(", ")));
    }
    format!("grant {} also allow {}", who.join(" and "), globs(&g.allow))
}

/// Problems that would stop `run` at start although the config is well-formed: `check`
/// reports them as errors (exit 64), naming the field.
pub fn start_problems(config: &Config) -> Vec<String> {
    let mut p = Vec::new();
    if let TlsMode::Files {
        cert_file,
        key_file,
    } = &config.tls.mode
    {
        if let Err(e) = crate::tls::load_pair(cert_file, key_file) {
            p.push(e.to_string());
        }
    }
    for (i, ep) in config.endpoints.iter().enumerate() {
        if let Some(path) = &ep.guard.pinned {
            let loaded = crate::mcp::pins::PinFile::load(path)
                .and_then(|f| f.endpoint(path, &ep.name).map(|_| ()));
            if let Err(e) = loaded {
                p.push(format!("endpoints[{i}].tools.pinned: {e}"));
            }
        }
    }
    p
}

/// The pin state of each endpoint, for `check`: pinned tools and what happens on a change,
/// or trust on first use.
pub fn pin_summary(config: &Config) -> String {
    let mut s = String::new();
    for ep in &config.endpoints {
        let line = match &ep.guard.pinned {
            Some(path) => match crate::mcp::pins::PinFile::load(path) {
                Ok(f) => match f.endpoint(path, &ep.name) {
                    Ok(pins) => format!(
                        "{} tool(s) pinned in {} ({}), on change: {}",
                        pins.tools.len(),
                        path.display(),
                        pins.pinned_at.as_deref().unwrap_or("undated"),
                        match ep.guard.on_change {
                            crate::mcp::pins::OnChange::Alert => "alert",
                            crate::mcp::pins::OnChange::Hide => "hide",
                        }
                    ),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            },
            None => "not pinned: the first definition of each tool seen is the reference (trust on first use)".into(),
        };
        let limits = match ep.guard.limits.len() {
            0 => String::new(),
            n => format!("; {n} call limit(s)"),
        };
        s.push_str(&format!("  tools of {}: {line}{limits}\n", ep.name));
    }
    s
}

/// ACME settings that validate but will not work on this host as they stand.
fn acme_warnings(a: &crate::config::Acme, config: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(root) = &a.ca_root_file {
        if let Err(e) = std::fs::read(root) {
            w.push(format!(
                "tls.acme.ca_root_file: cannot read {}: {e}",
                root.display()
            ));
        }
    }
    if let Some(eab) = &a.eab {
        if let Err(e) = eab.hmac_key.resolve() {
            w.push(format!("tls.acme.eab.hmac_key: {e}"));
        }
    }
    let stored = crate::tls::acme::Storage::for_config(a);
    match stored.load_cert() {
        Ok(Some((_, facts))) => w.extend(
            a.domains
                .iter()
                .filter(|d| !facts.dns_names.contains(d))
                .map(|d| {
                    format!(
                        "tls.acme.domains: the stored certificate {} does not cover {d}; a new one will be ordered",
                        stored.cert.display()
                    )
                }),
        ),
        Ok(None) => {}
        Err(e) => w.push(e.to_string()),
    }
    // The CA validates on the standard ports: TLS-ALPN-01 on 443, HTTP-01 on 80.
    let (port, what) = match a.challenge {
        crate::config::AcmeChallenge::TlsAlpn01 => {
            (Some(config.server.listen.port()), "server.listen")
        }
        crate::config::AcmeChallenge::Http01 => {
            (config.tls.http_listen.map(|l| l.port()), "tls.http_listen")
        }
    };
    let want = a.challenge.ca_port();
    if let Some(port) = port.filter(|p| *p != want) {
        w.push(format!(
            "{what}: port {port}; the CA connects to port {want}, so forward {want} to it or validation fails"
        ));
    }
    w
}

/// Things a valid config may still need at run time, shown by `check` as warnings.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if config.tailnet.mode == crate::config::TailnetMode::Tsnet && !cfg!(feature = "tailscale") {
        w.push(
            "tailnet.mode tsnet needs a build with the `tailscale` feature (this one has none)"
                .into(),
        );
    }
    if let TlsMode::Files { cert_file, .. } = &config.tls.mode {
        match crate::tls::seconds_left(cert_file) {
            Ok(left) if left <= 0 => w.push(format!(
                "tls.cert_file: {} has expired",
                cert_file.display()
            )),
            Ok(left) if left < 14 * 86_400 => w.push(format!(
                "tls.cert_file: {} expires in {} day(s)",
                cert_file.display(),
                left / 86_400
            )),
            Ok(_) => {}
            // Unreadable: reported as an error by `start_problems`.
            Err(_) => {}
        }
    }
    if let TlsMode::Acme(a) = &config.tls.mode {
        w.extend(acme_warnings(a, config));
    }
    if config.auth.is_some() && config.tls.mode == TlsMode::Off {
        w.push("auth is on but TLS is off: run behind a TLS-terminating proxy".into());
    }
    if let Some(a) = &config.auth {
        if a.broker.is_some() && a.registration.enabled {
            w.push(
                "auth.registration does not apply while auth.broker is enabled: /register is the \
                 broker's own (it never calls tsidp's)"
                    .into(),
            );
        }
        if a.broker.is_some() {
            w.push(format!(
                "auth.broker: tsidp's client `{}` must list the redirect URI {}/oauth/callback",
                a.client_id, a.public_origin
            ));
        }
    }
    for (i, ep) in config.endpoints.iter().enumerate() {
        if let Some(src) = &ep.upstream_token {
            if let Err(e) = src.resolve() {
                w.push(format!("endpoints[{i}].upstream_token: {e}"));
            }
        }
    }
    if let Some(a) = &config.auth {
        if let Err(e) = a.client_secret.resolve() {
            w.push(format!("auth.client_secret: {e}"));
        }
    }
    w
}

/// Probe `url` with a plain HTTP/1.1 GET. Returns the status code.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("bad --url {url}: {e}"))?;
    if parsed.scheme() != "http" {
        return Err("only http:// URLs can be probed (use the admin listener)".into());
    }
    let host = parsed.host_str().ok_or("--url has no host")?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolved to no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_string(),
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nUser-Agent: tailbridge-healthcheck\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}
