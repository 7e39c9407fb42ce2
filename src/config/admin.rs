//! `admin`: the loopback listener for metrics, health and the status page.

use super::fields::*;
use super::raw::*;
use super::*;
use serde::Deserialize;
use std::net::SocketAddr;

/// Default admin (metrics and health) listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

pub(super) const ADMIN_KEYS: &[&str] = &["listen"];

#[derive(Debug, Clone)]
pub struct Admin {
    /// `None` when the admin listener is off (`admin.listen: ""`).
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) fn admin(e: &mut Errors, raw: RawAdmin) -> Admin {
    e.unknown("admin", &raw.unknown, ADMIN_KEYS);
    let text = raw
        .listen
        .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_string());
    let listen = if text.is_empty() {
        None
    } else {
        socket_addr(e, "admin.listen", &text)
    };
    Admin { listen }
}
