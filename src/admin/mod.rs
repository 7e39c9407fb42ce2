//! The admin listener: `/` (the status page), `/metrics` (Prometheus text), `/healthz`,
//! `/readyz`, `/livez`, `/doctor` and `/doctor.json` (the doctor, run inside the bridge).
//! Bind it to loopback or a private interface; it has no authentication.

pub mod status;

use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// The admin HTTP app.
pub struct AdminApp {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<crate::config::Config>,
    /// Where the config was read from (the doctor reads it again, as `tailbridge doctor`).
    pub config_path: Option<std::path::PathBuf>,
}

/// A small complete answer: length set, not cached, no sniffing.
pub(crate) fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return reply(
                405,
                "application/json",
                br#"{"error":"method_not_allowed"}"#.to_vec(),
            );
        }
        match req.uri.path() {
            "/metrics" => reply(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/healthz" | "/readyz" => {
                let (code, body) = self.health.readiness_live().await;
                reply(code, "application/json", body)
            }
            "/livez" => reply(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/" => reply(
                200,
                "text/html; charset=utf-8",
                status::page(&self.config, &self.health, &self.metrics).into_bytes(),
            ),
            "/doctor" | "/doctor.json" => {
                let Some(path) = &self.config_path else {
                    return reply(
                        404,
                        "application/json",
                        br#"{"error":"no config path"}"#.to_vec(),
                    );
                };
                let opts = crate::doctor::Options {
                    endpoint: None,
                    timeout: crate::doctor::DEFAULT_TIMEOUT,
                };
                let report = crate::doctor::run(path, &opts).await;
                if req.uri.path() == "/doctor.json" {
                    reply(200, "application/json", report.json().into_bytes())
                } else {
                    reply(
                        200,
                        "text/html; charset=utf-8",
                        status::doctor_page(&report).into_bytes(),
                    )
                }
            }
            _ => reply(
                404,
                "application/json",
                br#"{"error":"not_found"}"#.to_vec(),
            ),
        }
    }
}
