//! Value parsers shared by several sections (addresses, URLs, header names, CIDRs, globs).

use super::*;
use crate::mcp::glob::Glob;
use std::net::SocketAddr;
use url::Url;

pub(super) fn socket_addr(e: &mut Errors, path: &str, value: &str) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            e.add(
                path,
                format!("`{value}` is not an IP:port address (e.g. 0.0.0.0:8900 or [::1]:8900)"),
            );
            None
        }
    }
}

/// Split `host:port` or `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

pub(super) fn http_url(e: &mut Errors, path: &str, value: Option<String>) -> Option<Url> {
    let Some(v) = value else {
        e.add(path, "required when auth is present");
        return None;
    };
    match Url::parse(&v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        Ok(_) => {
            e.add(path, "scheme must be http or https, with a host");
            None
        }
        Err(err) => {
            e.add(path, format!("`{v}` is not a URL: {err}"));
            None
        }
    }
}

pub(super) fn header_name(
    e: &mut Errors,
    path: &str,
    value: Option<String>,
    default: &str,
) -> Option<String> {
    let v = value.unwrap_or_else(|| default.to_string());
    if v.is_empty() {
        return None;
    }
    if http::HeaderName::from_bytes(v.as_bytes()).is_err() {
        e.add(path, format!("`{v}` is not a valid header name"));
        return None;
    }
    let lower = v.to_ascii_lowercase();
    if [
        "authorization",
        "host",
        "cookie",
        "content-length",
        "transfer-encoding",
    ]
    .contains(&lower.as_str())
    {
        e.add(path, format!("`{v}` cannot carry identity"));
        return None;
    }
    Some(v)
}

/// A list of networks; `None` when absent.
pub(super) fn cidrs(
    e: &mut Errors,
    path: &str,
    raw: Option<&[String]>,
) -> Option<Vec<crate::proxy::cidr::Cidr>> {
    let raw = raw?;
    let mut out = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        match crate::proxy::cidr::Cidr::parse(c) {
            Ok(n) => out.push(n),
            Err(msg) => e.add(format!("{path}[{i}]"), msg),
        }
    }
    Some(out)
}

/// Tool globs: non-empty strings.
pub(super) fn globs(e: &mut Errors, path: &str, raw: Vec<String>) -> Vec<Glob> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, g)| {
            if g.trim().is_empty() {
                e.add(
                    format!("{path}[{i}]"),
                    "must be a tool name or glob such as delete_*",
                );
                None
            } else {
                Some(Glob::new(g))
            }
        })
        .collect()
}
