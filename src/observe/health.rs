//! Health: liveness (`/livez`: the process serves) and readiness (`/healthz`, `/readyz`:
//! the tailnet connector can dial), computed live on every request.
//!
//! The JSON keeps tsmcp's shape (`status`, `tsnet_connected`) and adds `mode`, `reasons`
//! and the last probe result of each endpoint's upstream. An unreachable upstream is
//! reported but does not make the bridge unready: restarting the bridge would not help it.

use crate::config::Endpoint;
use crate::observe::metrics::Metrics;
use crate::tailnet::Connector;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One endpoint's last probe.
#[derive(Debug, Clone)]
pub struct Probe {
    pub up: bool,
    /// How long the dial took (or until it gave up).
    pub latency: Duration,
    pub error: Option<String>,
    pub at: std::time::SystemTime,
}

/// Last known reachability of each endpoint's upstream.
#[derive(Debug, Default)]
pub struct ProbeResults {
    by_endpoint: RwLock<BTreeMap<String, Probe>>,
}

impl ProbeResults {
    fn set(&self, endpoint: &str, probe: Probe) {
        if let Ok(mut m) = self.by_endpoint.write() {
            m.insert(endpoint.to_string(), probe);
        }
    }

    /// Every endpoint's last probe.
    pub fn snapshot(&self) -> BTreeMap<String, Probe> {
        self.by_endpoint
            .read()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

/// One refusal, for the status page (never a token, header or body).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub at: std::time::SystemTime,
    pub endpoint: String,
    pub status: u16,
    pub reason: &'static str,
    pub client: String,
}

/// How many recent refusals the status page lists.
const RECENT_REFUSALS: usize = 20;

/// The last refusals, newest last.
#[derive(Debug, Default)]
pub struct Refusals {
    recent: std::sync::Mutex<std::collections::VecDeque<Refusal>>,
}

impl Refusals {
    pub fn push(&self, r: Refusal) {
        if let Ok(mut q) = self.recent.lock() {
            if q.len() == RECENT_REFUSALS {
                q.pop_front();
            }
            q.push_back(r);
        }
    }

    pub fn snapshot(&self) -> Vec<Refusal> {
        self.recent
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// One OAuth broker event for the status page: a granted or denied authorization, or a
/// refusal.
#[derive(Debug, Clone)]
pub struct OauthEvent {
    pub at: std::time::SystemTime,
    /// `granted`, `denied` or `refused: <what>`.
    pub what: String,
    pub user: String,
    pub client: String,
    pub resource: String,
}

/// The last OAuth broker events, newest last.
#[derive(Debug, Default)]
pub struct OauthEvents {
    recent: std::sync::Mutex<std::collections::VecDeque<OauthEvent>>,
}

impl OauthEvents {
    pub fn push(&self, e: OauthEvent) {
        if let Ok(mut q) = self.recent.lock() {
            if q.len() == RECENT_REFUSALS {
                q.pop_front();
            }
            q.push_back(e);
        }
    }

    pub fn snapshot(&self) -> Vec<OauthEvent> {
        self.recent
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// How stale the connector's own state may be when `/healthz` answers.
const LIVE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Shared health state.
#[derive(Debug)]
pub struct Health {
    pub connector: Arc<dyn Connector>,
    pub probes: ProbeResults,
    pub metrics: Arc<Metrics>,
    pub last_check: std::sync::Mutex<Option<std::time::Instant>>,
    /// The TLS certificate in service, when TLS is on: none yet (ACME before the first
    /// issuance) makes the bridge unready.
    pub certificate: std::sync::OnceLock<Arc<crate::tls::ServedCert>>,
    /// Recent refusals, for the status page.
    pub refusals: Refusals,
    /// Recent OAuth broker authorizations and refusals, for the status page.
    pub oauth: std::sync::Arc<OauthEvents>,
    pub started: std::time::Instant,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    status: &'a str,
    tsnet_connected: bool,
    mode: &'a str,
    reasons: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<String>,
    upstreams: BTreeMap<String, &'a str>,
    version: &'static str,
    uptime_seconds: u64,
}

impl Health {
    pub fn new(connector: Arc<dyn Connector>, metrics: Arc<Metrics>) -> Self {
        Health {
            connector,
            probes: ProbeResults::default(),
            metrics,
            last_check: std::sync::Mutex::new(None),
            certificate: std::sync::OnceLock::new(),
            refusals: Refusals::default(),
            oauth: std::sync::Arc::default(),
            started: std::time::Instant::now(),
        }
    }

    /// Report the listener's certificate in readiness.
    pub fn watch_certificate(&self, served: Arc<crate::tls::ServedCert>) {
        let _ = self.certificate.set(served);
    }

    /// Readiness, re-checking the connector when its state is more than a second old.
    pub async fn readiness_live(&self) -> (u16, Vec<u8>) {
        let due = self
            .last_check
            .lock()
            .map(|mut at| {
                let due = at.is_none_or(|t| t.elapsed() >= LIVE_CHECK_EVERY);
                if due {
                    *at = Some(std::time::Instant::now());
                }
                due
            })
            .unwrap_or(false);
        if due {
            let _ = tokio::time::timeout(LIVE_CHECK_EVERY, self.connector.refresh_status()).await;
        }
        self.readiness()
    }

    /// Readiness from the last known state: `(HTTP status, JSON body)`.
    pub fn readiness(&self) -> (u16, Vec<u8>) {
        let st = self.connector.status();
        self.metrics
            .tailnet_ready
            .with_label_values(&[st.mode.as_str()])
            .set(i64::from(st.ready));
        let mut reasons = Vec::new();
        if let Some(r) = &st.reason {
            reasons.push(format!("tailnet: {r}"));
        }
        let upstreams: BTreeMap<String, &str> = self
            .probes
            .snapshot()
            .into_iter()
            .map(|(k, p)| {
                if !p.up {
                    reasons.push(format!("upstream {k} unreachable"));
                }
                (k, if p.up { "up" } else { "down" })
            })
            .collect();
        let mut ready = st.ready;
        if let Some(cert) = self.certificate.get() {
            if cert.get().is_none() {
                reasons.push("tls: no certificate yet (ACME issuance pending)".into());
                ready = false;
            }
        }
        let report = Report {
            status: if ready { "ok" } else { "degraded" },
            tsnet_connected: st.tsnet_connected,
            mode: st.mode.as_str(),
            reasons,
            addresses: self.connector.addresses(),
            upstreams,
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
        };
        let code = if ready { 200 } else { 503 };
        (code, serde_json::to_vec(&report).unwrap_or_default())
    }

    /// Probe every enabled endpoint's upstream once (a TCP dial through the connector).
    pub async fn probe_all(&self, endpoints: &[Endpoint], timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.connector.refresh_status()).await;
        for ep in endpoints.iter().filter(|e| e.enabled) {
            let started = std::time::Instant::now();
            let error =
                match tokio::time::timeout(timeout, self.connector.dial(&ep.host, ep.port)).await {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!("no answer within {timeout:?}")),
                };
            let up = error.is_none();
            self.probes.set(
                &ep.name,
                Probe {
                    up,
                    latency: started.elapsed(),
                    error,
                    at: std::time::SystemTime::now(),
                },
            );
            self.metrics
                .upstream_up
                .with_label_values(&[&ep.name])
                .set(i64::from(up));
        }
    }
}
