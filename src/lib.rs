//! tailbridge: a Pingora edge proxy that exposes private MCP servers on a Tailscale tailnet.
//!
//! Module map: [`config`] (YAML → validated config), [`proxy`] (the `ProxyHttp` phases,
//! routing and header rules), [`tailnet`] (how bytes reach the tailnet), [`observe`]
//! (metrics, access log, health), [`mcp`] (the MCP-aware layer: tool policy, metrics, audit),
//! [`listener`] (the PROXY protocol ahead of HTTP), [`admin`] (metrics/health listener), [`app`] (wiring),
//! [`cli`] (command line), [`doctor`] (`tailbridge doctor`),
//! [`demo`] (`tailbridge demo`).
#![deny(clippy::unwrap_used)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod listener;
pub mod mcp;
pub mod observe;
pub mod proxy;
pub mod reload;
pub mod tailnet;
pub mod tls;

/// Cargo features compiled in, for `tailbridge_build_info`.
pub const FEATURES: &str = if cfg!(feature = "tailscale") {
    "tailscale"
} else {
    "default"
};
