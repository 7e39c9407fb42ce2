//! Builds the pingora server from a validated [`Config`] and runs it.

use crate::admin::AdminApp;
use crate::config::{Config, TlsMode};
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::proxy::Bridge;
use async_trait::async_trait;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use std::sync::Arc;
use std::time::Instant;

/// Why the server could not start (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configured secret could not be read (exit code 64, like a config error).
    #[error(transparent)]
    Secret(#[from] crate::config::secrets::SecretError),
    #[error(transparent)]
    Tailnet(#[from] crate::tailnet::StartError),
    #[error(transparent)]
    Proxy(#[from] crate::proxy::BuildError),
    #[error(transparent)]
    Metrics(#[from] crate::observe::metrics::MetricsError),
    #[error("tls: {0}")]
    Tls(String),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthSetupError),
    #[error(transparent)]
    Tracing(#[from] crate::observe::tracing::TracingError),
}

impl StartError {
    /// True when the failure is the operator's configuration (missing secret, unreadable
    /// token file): exit code 64 instead of 1.
    pub fn is_config(&self) -> bool {
        #[cfg(feature = "tailscale")]
        if let StartError::Tailnet(crate::tailnet::StartError::Tsnet(e)) = self {
            return e.is_config();
        }
        matches!(
            self,
            StartError::Secret(_)
                | StartError::Proxy(_)
                | StartError::Tailnet(crate::tailnet::StartError::Secret(_))
                | StartError::Tailnet(crate::tailnet::StartError::Config(_))
                | StartError::Auth(crate::auth::AuthSetupError::Secret(_))
                | StartError::Tracing(crate::observe::tracing::TracingError::Settings(_))
        )
    }
}

/// Options from the command line that are not part of the config file.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Take over the listening sockets of a running instance (pingora graceful upgrade).
    pub upgrade: bool,
    /// The config file, for the doctor on the admin listener.
    pub config_path: Option<std::path::PathBuf>,
}

/// Periodic reachability probes of every endpoint's upstream.
struct Prober {
    health: Arc<Health>,
    config: Arc<Config>,
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.config.health.probe_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.health
                        .probe_all(&self.config.endpoints, self.config.health.probe_timeout)
                        .await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// After a shutdown signal, exits as soon as no request is in flight, instead of always
/// waiting out pingora's full grace period. Streams still open keep the process alive until
/// they end or the grace period runs out.
struct Drain {
    metrics: Arc<Metrics>,
    connector: Arc<dyn crate::tailnet::Connector>,
    grace: std::time::Duration,
    tracing: Option<Arc<crate::observe::tracing::Tracing>>,
}

/// How often the drain watcher looks at the in-flight count.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(100);

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        log::info!(
            "shutting down: draining {} request(s) in flight",
            self.metrics.active_requests.get()
        );
        let started = Instant::now();
        // Leave before pingora's own grace timer so that the connector can shut down (an
        // ephemeral node logs out) instead of being cut off.
        let budget = self.grace.saturating_sub(DRAIN_POLL * 2);
        loop {
            let idle = self.metrics.active_requests.get() <= 0;
            if idle || started.elapsed() >= budget {
                if idle {
                    log::info!("drained, exiting");
                } else {
                    log::warn!(
                        "grace period over with {} request(s) still in flight, exiting",
                        self.metrics.active_requests.get()
                    );
                }
                self.connector.shutdown();
                flush_traces(self.tracing.as_deref());
                std::process::exit(0);
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

/// Send the spans still queued, within [`crate::observe::tracing::FLUSH_BUDGET`].
fn flush_traces(tracing: Option<&crate::observe::tracing::Tracing>) {
    if let Some(t) = tracing {
        t.shutdown(crate::observe::tracing::FLUSH_BUDGET);
    }
}

/// Start tracing when the file or the environment names an OTLP endpoint.
fn start_tracing(
    config: &Config,
    metrics: &Metrics,
) -> Result<Option<Arc<crate::observe::tracing::Tracing>>, StartError> {
    use crate::observe::tracing::{export::Counters, settings, Tracing};
    let env = |name: &str| std::env::var(name).ok();
    let Some(s) = settings::resolve(&config.tracing, &env)
        .map_err(crate::observe::tracing::TracingError::from)?
    else {
        return Ok(None);
    };
    for w in &s.warnings {
        log::warn!("tracing: {w}");
    }
    metrics.init_tracing()?;
    let counters = Counters::new(&metrics.trace_spans_dropped, &metrics.trace_spans_exported);
    let t = Tracing::start(&s, counters)?;
    log::info!(
        "tracing: spans to {} (OTLP/HTTP protobuf), service.name {}, sample ratio {} for new traces",
        t.target(),
        s.service_name,
        s.ratio
    );
    Ok(Some(Arc::new(t)))
}

/// Keeps tsidp's authorization-server metadata fresh (first fetch at start).
struct MetadataRefresher {
    auth: Arc<crate::auth::AuthRuntime>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for MetadataRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.auth.cfg.metadata_refresh);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let max = self.auth.cfg.introspection.max_response_bytes;
                    match self.auth.metadata.refresh(&self.auth.http, max).await {
                        Ok(_) => self.metrics.idp_metadata.with_label_values(&["ok"]).inc(),
                        Err(e) => {
                            self.metrics.idp_metadata.with_label_values(&["error"]).inc();
                            log::warn!("IdP metadata refresh failed: {e}");
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Tells systemd (`Type=notify`) that tailbridge is ready once the main listener accepts
/// connections. Does nothing when `NOTIFY_SOCKET` is unset.
struct SystemdNotify {
    listen: std::net::SocketAddr,
    /// Started by `tailbridge reload`: tell systemd this process is now the main one.
    upgraded: bool,
}

#[async_trait]
impl BackgroundService for SystemdNotify {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        let mut probe = self.listen;
        if probe.ip().is_unspecified() {
            probe.set_ip(match probe {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(probe).await.is_ok() {
                let msg = if self.upgraded {
                    format!(
                        "MAINPID={}\nREADY=1\nSTATUS=serving (reloaded)",
                        std::process::id()
                    )
                } else {
                    "READY=1\nSTATUS=serving".to_string()
                };
                match crate::observe::sd_notify(&socket, &msg) {
                    Ok(()) => log::debug!("told systemd we are ready"),
                    Err(e) => log::warn!("cannot notify systemd: {e}"),
                }
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        log::warn!("main listener never accepted a connection; systemd not notified");
    }
}

/// Watches for SIGQUIT (graceful upgrade) and SIGTERM (shutdown) and flips the proxy into
/// draining mode at once: from then on every response closes its connection, so clients
/// move to fresh connections (served by the new process during an upgrade) instead of
/// reusing one the old process is about to close.
struct DrainSignals {
    draining: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl BackgroundService for DrainSignals {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut quit), Ok(mut term)) =
            (signal(SignalKind::quit()), signal(SignalKind::terminate()))
        else {
            log::warn!(
                "cannot watch SIGQUIT/SIGTERM; connections will not be closed early on reload"
            );
            return;
        };
        tokio::select! {
            _ = quit.recv() => {}
            _ = term.recv() => {}
            _ = shutdown.changed() => {}
        }
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        log::info!("draining: responses now close their connections");
    }
}

/// How often the certificate files are checked for changes.
const CERT_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Reloads the certificate files when they change (no restart, open connections untouched)
/// and exports the served certificate's remaining lifetime.
struct CertWatch {
    file: std::path::PathBuf,
    resolver: Arc<crate::tls::FileResolver>,
    metrics: Arc<Metrics>,
}

impl CertWatch {
    fn check(&self, label: &str) {
        match self.resolver.reload_if_changed() {
            Ok(true) => log::info!("TLS certificate reloaded from {label}"),
            Ok(false) => {}
            Err(e) => {
                log::error!("TLS certificate change refused, still serving the previous one: {e}")
            }
        }
        match crate::tls::seconds_left(&self.file) {
            Ok(left) => {
                self.metrics
                    .cert_expiry
                    .with_label_values(&[label])
                    .set(left);
                if left < 14 * 86_400 {
                    log::warn!(
                        "TLS certificate {label} expires in {} day(s)",
                        left / 86_400
                    );
                }
            }
            Err(e) => log::warn!("TLS certificate: {e}"),
        }
    }
}

#[async_trait]
impl BackgroundService for CertWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(CERT_POLL);
        let label = self.file.display().to_string();
        loop {
            tokio::select! {
                _ = tick.tick() => self.check(&label),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Client connections on `server.listen` read straight from the socket: pingora's HTTP/1
/// reader and rustls read in large chunks into buffers of their own, so the default 64 KiB
/// read buffer below them only held memory (about 8 KiB resident per open connection, most
/// of them long-lived event streams). Writes keep pingora's small coalescing buffer.
fn downstream_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(0)
}

fn server_conf(config: &Config) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads,
        pid_file: s.pid_file.display().to_string(),
        upgrade_sock: s.upgrade_sock.display().to_string(),
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.as_secs()),
        daemon: false,
        ..ServerConf::default()
    }
}

/// Build every service and run until a shutdown signal. Does not return on success.
pub fn run(config: Config, opts: RunOptions) -> Result<(), StartError> {
    let started = Instant::now();
    // One rustls crypto provider for pingora and reqwest alike.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new()?);
    let connector = crate::tailnet::build(&config)?;
    let health = Arc::new(Health::new(connector.clone(), metrics.clone()));
    let tracing = start_tracing(&config, &metrics)?;
    let auth = match &config.auth {
        Some(a) => {
            let mut rt = crate::auth::AuthRuntime::new(
                a.clone(),
                connector.as_ref(),
                metrics.clone(),
                &config.endpoints,
                health.oauth.clone(),
            )?;
            rt.verifier.set_tracing(tracing.clone());
            Some(Arc::new(rt))
        }
        None => None,
    };
    let bridge = Bridge::new(
        &config,
        connector.clone(),
        auth.clone(),
        health.clone(),
        metrics.clone(),
        tracing.clone(),
    )?;
    let draining = bridge.draining();

    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config));
    // With --upgrade this waits for the running instance's listening sockets.
    server.bootstrap();
    if let Err(e) = crate::reload::write_pid(&config.server.pid_file) {
        log::warn!(
            "cannot write pid file {}: {e}",
            config.server.pid_file.display()
        );
    }

    // With `server.proxy_protocol`, a plain listener reads the PROXY header in front of
    // the proxy, a TLS listener before the handshake (see `listener`).
    let headers = config.server.proxy_protocol.then(|| {
        for reason in ["missing", "malformed", "timeout", "closed"] {
            metrics.proxy_protocol_refused.with_label_values(&[reason]);
        }
        crate::listener::ProxyHeaders::new(metrics.proxy_protocol_refused.clone())
    });
    let plain = matches!(config.tls.mode, TlsMode::Off);
    let app = crate::listener::ProxyProtocolApp::new(
        pingora::proxy::http_proxy(&server.configuration, bridge),
        headers.clone().filter(|_| plain),
    );
    let mut proxy = pingora::services::listening::Service::new("tailbridge".into(), app);
    let mut pre_tls: Option<pingora::listeners::PreTlsCallback> = None;
    let listen = config.server.listen.to_string();
    let challenges = Arc::new(crate::tls::challenge::Challenges::default());
    let served = match &config.tls.mode {
        TlsMode::Off => {
            proxy.add_listener(ListenerConfig::tcp(&listen).l4_buffer(downstream_buffers()));
            None
        }
        TlsMode::Files {
            cert_file,
            key_file,
        } => {
            // Loaded here (pingora's own loader panics on a bad file) and swapped on change.
            let resolver = Arc::new(
                crate::tls::FileResolver::load(cert_file, key_file)
                    .map_err(|e| StartError::Tls(e.to_string()))?,
            );
            let served = resolver.served();
            server.add_service(background_service(
                "certificate files",
                CertWatch {
                    file: cert_file.clone(),
                    resolver,
                    metrics: metrics.clone(),
                },
            ));
            Some(served)
        }
        TlsMode::Acme(acme) => {
            let manager = crate::tls::acme::AcmeManager::new(
                acme.clone(),
                challenges.clone(),
                metrics.clone(),
            )
            .map_err(|e| StartError::Tls(e.to_string()))?;
            let served = manager.served();
            if acme.challenge == crate::config::AcmeChallenge::TlsAlpn01 {
                pre_tls = Some(Arc::new(crate::tls::challenge::AlpnChallengeHook::new(
                    challenges.clone(),
                )));
            }
            server.add_service(background_service("acme", manager));
            Some(served)
        }
    };
    if let Some(served) = &served {
        let mut tls = pingora::listeners::tls::TlsSettings::intermediate("", "")
            .map_err(|e| StartError::Tls(e.to_string()))?;
        tls.set_cert_resolver(served.clone());
        tls.enable_h2();
        if let Some(headers) = headers {
            // The header comes first, ahead of any ClientHello (an ACME validation too).
            pre_tls = Some(Arc::new(crate::listener::ProxyHeaderHook::new(
                headers,
                pre_tls.take(),
            )));
        }
        if let Some(hook) = pre_tls {
            proxy.endpoints().set_pre_tls_callback(hook);
        }
        proxy.add_listener(
            ListenerConfig::tcp(&listen)
                .tls(tls)
                .l4_buffer(downstream_buffers()),
        );
        health.watch_certificate(served.clone());
    }
    if let Some(addr) = config.tls.http_listen {
        let app =
            pingora::apps::http_app::HttpServer::new_app(crate::tls::redirect::HttpRedirect {
                challenges: challenges.clone(),
                https_port: config.server.listen.port(),
            });
        let mut svc = pingora::services::listening::Service::new("tailbridge http".into(), app);
        svc.add_tcp(&addr.to_string());
        server.add_service(svc);
    }
    server.add_service(proxy);

    if let Some(admin) = config.admin.listen {
        let app = pingora::apps::http_app::HttpServer::new_app(AdminApp {
            health: health.clone(),
            metrics: metrics.clone(),
            config: config.clone(),
            config_path: opts.config_path.clone(),
        });
        let mut svc = pingora::services::listening::Service::new("tailbridge admin".into(), app);
        svc.add_tcp(&admin.to_string());
        server.add_service(svc);
    }
    server.add_service(background_service(
        "upstream probes",
        Prober {
            health: health.clone(),
            config: config.clone(),
        },
    ));

    if let Some(auth) = auth {
        server.add_service(background_service(
            "idp metadata",
            MetadataRefresher {
                auth,
                metrics: metrics.clone(),
            },
        ));
    }
    server.add_service(background_service(
        "drain signals",
        DrainSignals { draining },
    ));
    server.add_service(background_service(
        "systemd notify",
        SystemdNotify {
            listen: config.server.listen,
            upgraded: opts.upgrade,
        },
    ));
    server.add_service(background_service(
        "drain",
        Drain {
            metrics: metrics.clone(),
            connector: connector.clone(),
            grace: config.server.grace_period,
            tracing: tracing.clone(),
        },
    ));

    // Readiness is live; record the connector state once so the gauge exists from the start.
    let _ = health.readiness();
    metrics
        .startup_seconds
        .observe(started.elapsed().as_secs_f64());
    let addresses = connector.addresses();
    if !addresses.is_empty() {
        log::info!("tailnet addresses: {}", addresses.join(", "));
    }
    log::info!(
        "tailbridge {} listening on {}{} (tailnet mode {}, {} endpoint(s), auth {})",
        env!("CARGO_PKG_VERSION"),
        listen,
        config
            .admin
            .listen
            .map(|a| format!(", admin on {a}"))
            .unwrap_or_default(),
        config.tailnet.mode.as_str(),
        config.endpoints.iter().filter(|e| e.enabled).count(),
        if config.auth.is_some() { "on" } else { "off" },
    );
    if config.auth.is_none() {
        log::warn!("no `auth` section: running authless, every client can reach every endpoint");
    }
    if config.auth.is_some() && config.tls.mode == TlsMode::Off {
        log::warn!(
            "auth is on but TLS is off: bearer tokens cross {} in clear text unless a TLS-terminating proxy sits in front (tls.mode: acme or files serves TLS here)",
            config.server.listen
        );
    }
    server.run(pingora::server::RunArgs::default());
    // Pending access and audit lines and spans are written before the process ends.
    crate::observe::lines::flush();
    flush_traces(tracing.as_deref());
    std::process::exit(0)
}
