//! `tailnet`: how upstreams and the IdP are reached (embedded node, host tailscaled direct,
//! or SOCKS5).

use super::fields::*;
use super::raw::*;
use super::secrets::SecretSource;
use super::*;
use serde::Deserialize;
use std::path::PathBuf;
use url::Url;

/// The Tailscale API used to mint auth keys from an OAuth client secret.
pub const DEFAULT_TAILSCALE_API: &str = "https://api.tailscale.com";

pub(super) const TAILNET_KEYS: &[&str] = &[
    "mode",
    "hostname",
    "state_dir",
    "authkey_env",
    "authkey_file",
    "client_secret_env",
    "client_secret_file",
    "tags",
    "control_url",
    "api_url",
    "ephemeral",
    "log_upload",
    "socks5",
];

pub(super) const SOCKS5_KEYS: &[&str] = &["address", "username", "password_env", "password_file"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailnetMode {
    Tsnet,
    Socks5,
    Direct,
}

impl TailnetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TailnetMode::Tsnet => "tsnet",
            TailnetMode::Socks5 => "socks5",
            TailnetMode::Direct => "direct",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tailnet {
    pub mode: TailnetMode,
    pub hostname: String,
    pub state_dir: PathBuf,
    pub authkey: Option<SecretSource>,
    pub client_secret: Option<SecretSource>,
    pub tags: Vec<String>,
    pub control_url: Option<Url>,
    /// Tailscale API base, used to mint a tagged auth key from an OAuth client secret
    /// (default [`DEFAULT_TAILSCALE_API`]).
    pub api_url: Option<Url>,
    pub ephemeral: bool,
    /// Let the embedded node upload its logs to Tailscale's log service (default off).
    pub log_upload: bool,
    pub socks5: Option<Socks5>,
}

#[derive(Debug, Clone)]
pub struct Socks5 {
    /// `host:port` of the SOCKS5 server.
    pub address: String,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTailnet {
    pub mode: Option<String>,
    pub hostname: Option<String>,
    pub state_dir: Option<String>,
    pub authkey_env: Option<String>,
    pub authkey_file: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<String>,
    pub tags: Option<Vec<String>>,
    pub control_url: Option<String>,
    pub api_url: Option<String>,
    pub ephemeral: Option<bool>,
    pub log_upload: Option<bool>,
    pub socks5: Option<RawSocks5>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSocks5 {
    pub address: Option<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) fn tailnet(e: &mut Errors, raw: Option<RawTailnet>) -> Tailnet {
    let present = raw.is_some();
    let raw = raw.unwrap_or_default();
    e.unknown("tailnet", &raw.unknown, TAILNET_KEYS);
    // A tsmcp config has no `mode`: it always ran an embedded node.
    let mode = match raw.mode.as_deref() {
        None if present => TailnetMode::Tsnet,
        None => TailnetMode::Direct,
        Some("tsnet") => TailnetMode::Tsnet,
        Some("socks5") => TailnetMode::Socks5,
        Some("direct") => TailnetMode::Direct,
        Some(other) => {
            e.add(
                "tailnet.mode",
                format!("`{other}` is not one of tsnet, socks5, direct"),
            );
            TailnetMode::Direct
        }
    };
    let authkey = e.secret(
        "tailnet",
        "authkey",
        None,
        raw.authkey_env.as_ref(),
        raw.authkey_file.as_ref(),
    );
    let client_secret = e.secret(
        "tailnet",
        "client_secret",
        None,
        raw.client_secret_env.as_ref(),
        raw.client_secret_file.as_ref(),
    );
    let tags = raw.tags.unwrap_or_default();
    for (i, t) in tags.iter().enumerate() {
        let ok = t.strip_prefix("tag:").is_some_and(|n| {
            !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        if !ok {
            e.add(
                format!("tailnet.tags[{i}]"),
                format!("`{t}` is not a tag (tag:name, letters, digits and -)"),
            );
        }
    }
    let hostname = raw.hostname.unwrap_or_else(|| "tailbridge".to_string());
    if hostname.is_empty()
        || hostname.len() > 63
        || !hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        e.add(
            "tailnet.hostname",
            "must be 1-63 letters, digits or - (a tailnet machine name)",
        );
    }
    let control_url = raw.control_url.and_then(|u| match Url::parse(&u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Some(url)
        }
        _ => {
            e.add(
                "tailnet.control_url",
                format!("`{u}` is not an http(s) URL"),
            );
            None
        }
    });
    let api_url = raw.api_url.and_then(|u| match Url::parse(&u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Some(url)
        }
        _ => {
            e.add("tailnet.api_url", format!("`{u}` is not an http(s) URL"));
            None
        }
    });
    if mode == TailnetMode::Tsnet {
        if raw.state_dir.is_none() {
            e.add("tailnet.state_dir", "required when tailnet.mode is tsnet");
        }
        if client_secret.is_some() && tags.is_empty() {
            e.add(
                "tailnet.tags",
                "required with tailnet.client_secret_*: an OAuth client can only create tagged nodes",
            );
        }
        if authkey.is_some() && client_secret.is_some() {
            e.add(
                "tailnet",
                "give either authkey_* or client_secret_*, not both",
            );
        }
    }
    let socks5 = raw.socks5.map(|s| socks5(e, s));
    if mode == TailnetMode::Socks5 && socks5.is_none() {
        e.add(
            "tailnet.socks5.address",
            "required when tailnet.mode is socks5",
        );
    }
    Tailnet {
        mode,
        hostname,
        state_dir: PathBuf::from(
            raw.state_dir
                .unwrap_or_else(|| "/var/lib/tailbridge/tsnet".to_string()),
        ),
        authkey,
        client_secret,
        tags,
        control_url,
        api_url,
        ephemeral: raw.ephemeral.unwrap_or(false),
        log_upload: raw.log_upload.unwrap_or(false),
        socks5,
    }
}

pub(super) fn socks5(e: &mut Errors, raw: RawSocks5) -> Socks5 {
    e.unknown("tailnet.socks5", &raw.unknown, SOCKS5_KEYS);
    let address = raw.address.unwrap_or_default();
    match split_host_port(&address) {
        Some((_, port)) if port != 0 => {}
        _ => e.add(
            "tailnet.socks5.address",
            format!("`{address}` is not host:port (e.g. 127.0.0.1:1055)"),
        ),
    }
    let password = e.secret(
        "tailnet.socks5",
        "password",
        None,
        raw.password_env.as_ref(),
        raw.password_file.as_ref(),
    );
    if password.is_some() != raw.username.is_some() {
        e.add(
            "tailnet.socks5",
            "username and password_env/password_file go together",
        );
    }
    Socks5 {
        address,
        username: raw.username,
        password,
    }
}
