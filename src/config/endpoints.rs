//! `endpoints[]`: the MCP servers behind the bridge: paths, targets, timeouts and tool policy.

use super::fields::*;
use super::raw::*;
use super::secrets::SecretSource;
use super::*;
use crate::mcp::glob::Glob;
use crate::mcp::policy::{Grant, ToolPolicy};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;
use url::Url;

/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default wait for the first response byte: tool calls can run for minutes.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(300);

/// Default gap allowed between two reads of a response (SSE events): generous, so that
/// quiet GET streams without keep-alive comments survive.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Paths served by tailbridge itself; an endpoint may not shadow them.
pub const RESERVED_PATHS: &[&str] = &[
    "/healthz",
    "/livez",
    "/readyz",
    "/.well-known",
    "/authorize",
    "/token",
    "/register",
];

pub(super) const ENDPOINT_KEYS: &[&str] = &[
    "name",
    "path",
    "target",
    "description",
    "enabled",
    "upstream_token_env",
    "upstream_token_file",
    "timeouts",
    "tls_verify",
    "tools",
    "allowed_client_cidrs",
];

pub(super) const TIMEOUT_KEYS: &[&str] = &["connect", "first_byte", "idle"];

pub(super) const TOOLS_KEYS: &[&str] =
    &["allow", "deny", "grants", "pinned", "on_change", "limits"];

pub(super) const LIMIT_KEYS: &[&str] = &["users", "clients", "tools", "per_minute"];

pub(super) const GRANT_KEYS: &[&str] = &["users", "clients", "allow"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Metric/log label: `name`, or the path without its leading `/`.
    pub name: String,
    /// Normalised prefix: starts with `/`, no trailing `/`, no empty or dot segments.
    pub path: String,
    pub target: Url,
    /// Host from the target URL: used for dialing, `Host` and TLS SNI.
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// `host[:port]` as it goes into the upstream `Host` header.
    pub authority: String,
    pub description: String,
    pub enabled: bool,
    pub upstream_token: Option<SecretSource>,
    pub timeouts: Timeouts,
    pub tls_verify: bool,
    /// Which tools may be called, by whom (`tools`).
    pub tools: ToolPolicy,
    /// Pinned tool definitions and per-identity call limits (`tools.pinned`, `tools.limits`).
    pub guard: ToolGuard,
    /// This endpoint's client allowlist, replacing the server's when set.
    pub allowed_client_cidrs: Option<Vec<crate::proxy::cidr::Cidr>>,
}

/// `tools.pinned`, `tools.on_change` and `tools.limits` of one endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolGuard {
    /// The pin file from `tailbridge tools pin` (`None`: trust on first use).
    pub pinned: Option<std::path::PathBuf>,
    pub on_change: crate::mcp::pins::OnChange,
    pub limits: Vec<crate::mcp::limits::ToolLimit>,
}

pub(super) type Target = (Url, String, u16, bool, String);

#[derive(Debug, Default, Deserialize)]
pub struct RawEndpoint {
    pub name: Option<String>,
    pub path: Option<String>,
    pub target: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub upstream_token_env: Option<String>,
    pub upstream_token_file: Option<String>,
    pub timeouts: Option<RawTimeouts>,
    pub tls_verify: Option<bool>,
    pub tools: Option<RawTools>,
    pub allowed_client_cidrs: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTools {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub grants: Option<Vec<RawGrant>>,
    pub pinned: Option<String>,
    pub on_change: Option<String>,
    pub limits: Option<Vec<RawLimit>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLimit {
    pub users: Option<Vec<String>>,
    pub clients: Option<Vec<String>>,
    pub tools: Option<Vec<String>>,
    pub per_minute: Option<Num<u32>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawGrant {
    pub users: Option<Vec<String>>,
    pub clients: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTimeouts {
    pub connect: Option<DurationValue>,
    pub first_byte: Option<DurationValue>,
    pub idle: Option<DurationValue>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Validate an endpoint path and return its normalised form (no trailing `/`).
pub fn normalise_endpoint_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("must start with /".into());
    }
    if path.contains(['?', '#']) {
        return Err("must not contain ? or #".into());
    }
    if path
        .chars()
        .any(|c| c.is_ascii_control() || c == ' ' || c == '%')
    {
        return Err("must not contain spaces, control characters or percent-escapes".into());
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("must name at least one segment (`/` alone would catch every request)".into());
    }
    for seg in trimmed[1..].split('/') {
        match seg {
            "" => return Err("must not contain empty segments (//)".into()),
            "." | ".." => return Err("must not contain . or .. segments".into()),
            _ => {}
        }
    }
    for reserved in RESERVED_PATHS {
        if trimmed == *reserved || trimmed.starts_with(&format!("{reserved}/")) {
            return Err(format!("collides with the built-in route {reserved}"));
        }
    }
    Ok(trimmed.to_string())
}

pub(super) fn endpoints(e: &mut Errors, raw: Vec<RawEndpoint>, auth_on: bool) -> Vec<Endpoint> {
    if raw.is_empty() {
        e.add("endpoints", "at least one endpoint is required");
    }
    let mut paths = HashSet::new();
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, ep) in raw.into_iter().enumerate() {
        let at = format!("endpoints[{i}]");
        e.unknown(&at, &ep.unknown, ENDPOINT_KEYS);
        let allowed_client_cidrs = cidrs(
            e,
            &prefixed(&at, "allowed_client_cidrs"),
            ep.allowed_client_cidrs.as_deref(),
        );
        let (tools, guard) = tools(e, &prefixed(&at, "tools"), ep.tools, auth_on);
        let path = match ep.path.as_deref() {
            None => {
                e.add(prefixed(&at, "path"), "required");
                None
            }
            Some(p) => match normalise_endpoint_path(p) {
                Ok(n) => {
                    if !paths.insert(n.clone()) {
                        e.add(prefixed(&at, "path"), format!("duplicate path `{n}`"));
                    }
                    Some(n)
                }
                Err(msg) => {
                    e.add(prefixed(&at, "path"), msg);
                    None
                }
            },
        };
        let target = match ep.target.as_deref() {
            None => {
                e.add(prefixed(&at, "target"), "required");
                None
            }
            Some(t) => target(e, &prefixed(&at, "target"), t),
        };
        let name = match (&ep.name, &path) {
            (Some(n), _) => {
                let ok = !n.is_empty()
                    && n.len() <= 64
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
                if !ok {
                    e.add(
                        prefixed(&at, "name"),
                        "must be 1-64 characters of letters, digits, - _ . /",
                    );
                }
                Some(n.clone())
            }
            (None, Some(p)) => Some(p[1..].to_string()),
            (None, None) => None,
        };
        if let Some(n) = &name {
            if !names.insert(n.clone()) {
                e.add(
                    prefixed(&at, "name"),
                    format!("duplicate endpoint name `{n}`"),
                );
            }
        }
        let upstream_token = e.secret(
            &at,
            "upstream_token",
            None,
            ep.upstream_token_env.as_ref(),
            ep.upstream_token_file.as_ref(),
        );
        let t = ep.timeouts.unwrap_or_default();
        let tp = prefixed(&at, "timeouts");
        e.unknown(&tp, &t.unknown, TIMEOUT_KEYS);
        let timeouts = Timeouts {
            connect: e.duration(
                &prefixed(&tp, "connect"),
                t.connect.as_ref(),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            first_byte: e.duration(
                &prefixed(&tp, "first_byte"),
                t.first_byte.as_ref(),
                DEFAULT_FIRST_BYTE_TIMEOUT,
            ),
            idle: e.duration(
                &prefixed(&tp, "idle"),
                t.idle.as_ref(),
                DEFAULT_IDLE_TIMEOUT,
            ),
        };
        for (field, d) in [
            ("connect", timeouts.connect),
            ("first_byte", timeouts.first_byte),
            ("idle", timeouts.idle),
        ] {
            if d.is_zero() {
                e.add(prefixed(&tp, field), "must be greater than 0");
            }
        }
        if let (Some(name), Some(path), Some((target, host, port, tls, authority))) =
            (name, path, target)
        {
            out.push(Endpoint {
                name,
                path,
                target,
                host,
                port,
                tls,
                authority,
                description: ep.description.unwrap_or_default(),
                enabled: ep.enabled.unwrap_or(true),
                upstream_token,
                timeouts,
                tls_verify: ep.tls_verify.unwrap_or(true),
                tools,
                guard,
                allowed_client_cidrs,
            });
        }
    }
    out
}

/// `endpoints[].tools`: allow (default `["*"]`), deny, and per-identity grants. Grants need
/// `auth`: without a token there is nobody to grant to.
pub(super) fn tools(
    e: &mut Errors,
    at: &str,
    raw: Option<RawTools>,
    auth_on: bool,
) -> (ToolPolicy, ToolGuard) {
    let Some(raw) = raw else {
        return (ToolPolicy::default(), ToolGuard::default());
    };
    let guard = guard(e, at, raw.pinned, raw.on_change, raw.limits, auth_on);
    e.unknown(at, &raw.unknown, TOOLS_KEYS);
    let allow = match raw.allow {
        Some(a) => globs(e, &prefixed(at, "allow"), a),
        None => vec![Glob::new("*")],
    };
    let deny = globs(e, &prefixed(at, "deny"), raw.deny.unwrap_or_default());
    let raw_grants = raw.grants.unwrap_or_default();
    if !raw_grants.is_empty() && !auth_on {
        e.add(
            prefixed(at, "grants"),
            "needs the auth section: grants name token identities, and this bridge has no tokens",
        );
    }
    let mut grants = Vec::new();
    for (i, g) in raw_grants.into_iter().enumerate() {
        let gp = format!("{at}.grants[{i}]");
        e.unknown(&gp, &g.unknown, GRANT_KEYS);
        let users = g.users.unwrap_or_default();
        let clients = g.clients.unwrap_or_default();
        if users.is_empty() && clients.is_empty() {
            e.add(
                &gp,
                "names nobody: give users (username or sub) or clients (client_id)",
            );
        }
        for (field, list) in [("users", &users), ("clients", &clients)] {
            for (j, v) in list.iter().enumerate() {
                if v.trim().is_empty() {
                    e.add(format!("{gp}.{field}[{j}]"), "must not be empty");
                }
            }
        }
        let allow = match g.allow {
            Some(a) if !a.is_empty() => globs(e, &prefixed(&gp, "allow"), a),
            _ => {
                e.add(
                    prefixed(&gp, "allow"),
                    "required: the tools this grant adds",
                );
                Vec::new()
            }
        };
        grants.push(Grant {
            users,
            clients,
            allow,
        });
    }
    (
        ToolPolicy {
            allow,
            deny,
            grants,
        },
        guard,
    )
}

/// `tools.pinned`, `tools.on_change`, `tools.limits`. Limits that name users or clients need
/// `auth` (without tokens there is nobody to name); without it, each client address has its
/// own budget.
fn guard(
    e: &mut Errors,
    at: &str,
    pinned: Option<String>,
    on_change: Option<String>,
    limits: Option<Vec<RawLimit>>,
    auth_on: bool,
) -> ToolGuard {
    let pinned = match pinned {
        Some(p) if p.trim().is_empty() => {
            e.add(
                prefixed(at, "pinned"),
                "must be a file path (from `tailbridge tools pin`)",
            );
            None
        }
        other => other.map(std::path::PathBuf::from),
    };
    let on_change = match on_change.as_deref() {
        None | Some("alert") => crate::mcp::pins::OnChange::Alert,
        Some("hide") => {
            if pinned.is_none() {
                e.add(
                    prefixed(at, "on_change"),
                    "hide needs tools.pinned: without pins the first definition seen is the reference, and nothing is hidden",
                );
            }
            crate::mcp::pins::OnChange::Hide
        }
        Some(other) => {
            e.add(
                prefixed(at, "on_change"),
                format!("`{other}` is not one of alert, hide"),
            );
            crate::mcp::pins::OnChange::Alert
        }
    };
    let mut out = Vec::new();
    for (i, l) in limits.unwrap_or_default().into_iter().enumerate() {
        let lp = format!("{at}.limits[{i}]");
        e.unknown(&lp, &l.unknown, LIMIT_KEYS);
        let users = l.users.unwrap_or_default();
        let clients = l.clients.unwrap_or_default();
        if (!users.is_empty() || !clients.is_empty()) && !auth_on {
            e.add(
                &lp,
                "users and clients need the auth section; without it, leave them out (each client address gets its own budget)",
            );
        }
        for (field, list) in [("users", &users), ("clients", &clients)] {
            for (j, v) in list.iter().enumerate() {
                if v.trim().is_empty() {
                    e.add(format!("{lp}.{field}[{j}]"), "must not be empty");
                }
            }
        }
        let tools = globs(e, &prefixed(&lp, "tools"), l.tools.unwrap_or_default());
        let per_minute = match l.per_minute {
            None => {
                e.add(
                    prefixed(&lp, "per_minute"),
                    "required: calls allowed per minute",
                );
                0
            }
            Some(n) => e.num(&prefixed(&lp, "per_minute"), Some(n), 0, "a whole number"),
        };
        if per_minute == 0 {
            e.add(prefixed(&lp, "per_minute"), "must be greater than 0");
        }
        out.push(crate::mcp::limits::ToolLimit {
            users,
            clients,
            tools,
            per_minute,
        });
    }
    ToolGuard {
        pinned,
        on_change,
        limits: out,
    }
}

/// The host of a URL as written: between `scheme://` (and any userinfo) and the port or
/// path. The URL parser is lenient (`http:///mcp` becomes host `mcp`), so the check is made on
/// the text itself.
pub fn written_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(hostport.split(':').next().unwrap_or_default())
}

/// Why a host as written cannot be dialed: empty, or not an IP literal and not a DNS name
/// (labels of 1-63 characters, 253 in all). Pure.
pub fn host_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("has no host".into());
    }
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 {
        return Some(format!(
            "host is {} characters long; a DNS name has at most 253",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some(format!("host `{host}` has an empty label"));
        }
        if label.len() > 63 {
            return Some(format!(
                "host label `{}…` is {} characters long; a DNS label has at most 63",
                &label[..16],
                label.len()
            ));
        }
    }
    None
}

pub(super) fn target(e: &mut Errors, path: &str, value: &str) -> Option<Target> {
    if let Some(problem) = written_host(value).and_then(host_problem) {
        e.add(path, format!("`{value}` {problem}"));
        return None;
    }
    let url = match Url::parse(value) {
        Ok(u) => u,
        Err(err) => {
            e.add(path, format!("`{value}` is not a URL: {err}"));
            return None;
        }
    };
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            e.add(path, format!("scheme must be http or https, not `{other}`"));
            return None;
        }
    };
    let Some(host) = url.host_str() else {
        e.add(path, "must have a host");
        return None;
    };
    if url.query().is_some() || url.fragment().is_some() {
        e.add(path, "must not have a query or fragment");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        e.add(path, "must not carry credentials (use upstream_token_env)");
        return None;
    }
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let authority = match url.port() {
        Some(p) if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) => format!("[{host}]:{p}"),
        Some(p) => format!("{host}:{p}"),
        None if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) => format!("[{host}]"),
        None => host.clone(),
    };
    Some((url, host, port, tls, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_as_written_table() {
        let long_label = "a".repeat(64);
        let long_name = ["abcdefghij"; 26].join(".");
        let cases: &[(&str, Option<&str>, bool)] = &[
            ("http:///mcp", Some(""), false),
            ("http://:80/x", Some(""), false),
            (
                "https://notes.tail1234.ts.net/mcp",
                Some("notes.tail1234.ts.net"),
                true,
            ),
            ("http://127.0.0.1:8080/mcp", Some("127.0.0.1"), true),
            ("http://[::1]:8080/mcp", Some("::1"), true),
            ("http://user:pw@host:1/x", Some("host"), true),
            ("http://a..b/x", Some("a..b"), false),
            ("http://host./x", Some("host."), true),
        ];
        for (url, host, ok) in cases {
            assert_eq!(written_host(url), *host, "{url}");
            assert_eq!(host.and_then(host_problem).is_none(), *ok, "{url}");
        }
        assert!(host_problem(&format!("{long_label}.example"))
            .unwrap()
            .contains("at most 63"));
        assert!(host_problem(&long_name).unwrap().contains("at most 253"));
        assert_eq!(host_problem(&"a".repeat(63)), None);
    }
}
