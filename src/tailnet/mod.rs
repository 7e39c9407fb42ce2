//! The tailnet connector: how bytes reach upstreams and the IdP.
//!
//! The proxy never knows how a connection is made. Each endpoint gets an [`EndpointDialer`]
//! that pingora calls through `PeerOptions.custom_l4`; the dialer asks the configured
//! [`Connector`] for a stream to `host:port`. Name resolution is the connector's job, so
//! MagicDNS names resolve where they can (the host resolver in `direct` mode, the proxy in
//! `socks5` mode, the embedded node in `tsnet` mode).

mod conn;
pub mod direct;
pub mod socks5;
#[cfg(feature = "tailscale")]
pub mod tsnet;

pub use conn::TailnetConn;

use crate::config::{Config, TailnetMode};
use crate::observe::metrics::Metrics;
use async_trait::async_trait;
use pingora::protocols::l4::socket::SocketAddr as PingoraSocketAddr;
use pingora::protocols::l4::stream::Stream;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a dial failed. Each variant is also a bounded metric label.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolved to no address")]
    NoAddress { host: String },
    #[error("connect to {target} timed out after {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    #[error("connect to {target} failed: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tailnet is not available: {reason}")]
    Unavailable { reason: &'static str },
}

impl DialError {
    /// The metric label for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            DialError::Resolve { .. } | DialError::NoAddress { .. } => "resolve",
            DialError::Timeout { .. } => "timeout",
            DialError::Connect { .. } => "refused",
            DialError::Unavailable { .. } => "unavailable",
        }
    }
}

/// What one dial says about the peer behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// The peer answered: the connection was made, or it was refused (only a host that is
    /// there refuses).
    Answered,
    /// Nothing answered within the connect timeout, or the network says the host cannot be
    /// reached: what a tailnet peer that slept, lost power or was partitioned looks like.
    Gone,
    /// The dial says nothing about the peer (name resolution, our own connector, a SOCKS5
    /// protocol error).
    Unknown,
}

impl PeerState {
    /// The state a dial's outcome shows.
    pub fn of<T>(dialed: &Result<T, DialError>) -> PeerState {
        match dialed {
            Ok(_) => PeerState::Answered,
            Err(e) => e.peer_state(),
        }
    }
}

/// Told the outcome of every dial an [`EndpointDialer`] makes for pingora.
pub trait DialObserver: Send + Sync + fmt::Debug {
    /// A dial that started at `started` ended, showing `peer`.
    fn dialled(&self, started: Instant, peer: PeerState);
}

impl DialError {
    /// What this failure shows about the peer. Only a timeout or an unreachable host counts
    /// as gone: a failure that may be ours never condemns a peer.
    pub fn peer_state(&self) -> PeerState {
        use nix::errno::Errno;
        match self {
            DialError::Timeout { .. } => PeerState::Gone,
            DialError::Connect { source, .. } => match source.kind() {
                std::io::ErrorKind::ConnectionRefused => PeerState::Answered,
                std::io::ErrorKind::TimedOut => PeerState::Gone,
                k if k == kind_of(Errno::EHOSTUNREACH) || k == kind_of(Errno::ENETUNREACH) => {
                    PeerState::Gone
                }
                _ => PeerState::Unknown,
            },
            DialError::Resolve { .. }
            | DialError::NoAddress { .. }
            | DialError::Unavailable { .. } => PeerState::Unknown,
        }
    }
}

/// The I/O error kind of `errno`. Names the kinds of an unreachable host and network,
/// whose `ErrorKind` variants are stable only since Rust 1.83 (the MSRV is 1.82).
pub(crate) fn kind_of(errno: nix::errno::Errno) -> std::io::ErrorKind {
    std::io::Error::from_raw_os_error(errno as i32).kind()
}

/// A live view of the connector, for `/healthz` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailnetStatus {
    pub mode: TailnetMode,
    /// True when the connector can dial right now.
    pub ready: bool,
    /// True only for an embedded node that is connected to the tailnet.
    pub tsnet_connected: bool,
    /// Why the connector is not ready, when it is not.
    pub reason: Option<String>,
}

/// A way to reach the tailnet.
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug {
    /// Open a byte stream to `host:port`, resolving `host` the connector's way.
    /// The returned stream is a plain socket-like stream; TLS is layered on top by pingora.
    async fn dial(&self, host: &str, port: u16) -> Result<TailnetConn, DialError>;

    /// The connector's state now (cheap; called on every `/healthz`).
    fn status(&self) -> TailnetStatus;

    /// Re-check the connector's own state (called by the health prober).
    async fn refresh_status(&self) {}

    /// Stop the connector at shutdown (an ephemeral node logs out).
    fn shutdown(&self) {}

    /// The connector's own tailnet addresses, when it has a node.
    fn addresses(&self) -> Vec<String> {
        Vec::new()
    }

    /// The proxy reqwest must use to reach the tailnet (IdP calls), if any.
    fn reqwest_proxy(&self) -> Option<reqwest::Proxy> {
        None
    }
}

/// Build the connector for `config.tailnet.mode`.
pub fn build(config: &Config) -> Result<Arc<dyn Connector>, StartError> {
    match config.tailnet.mode {
        TailnetMode::Direct => Ok(Arc::new(direct::Direct::new())),
        TailnetMode::Socks5 => {
            let s = config
                .tailnet
                .socks5
                .as_ref()
                .ok_or(StartError::Config("tailnet.socks5.address is required"))?;
            let credentials = match (&s.username, &s.password) {
                (Some(u), Some(p)) => Some((u.clone(), p.resolve()?)),
                _ => None,
            };
            Ok(Arc::new(socks5::Socks5::new(s.address.clone(), credentials)))
        }
        #[cfg(feature = "tailscale")]
        TailnetMode::Tsnet => Ok(Arc::new(tsnet::Tsnet::start(&config.tailnet)?)),
        #[cfg(not(feature = "tailscale"))]
        TailnetMode::Tsnet => Err(StartError::ModeUnavailable {
            mode: "tsnet",
            why: "the embedded tailnet node is not available in this build (build with --features tailscale)",
        }),
    }
}

/// Why the tailnet connector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[cfg(feature = "tailscale")]
    #[error(transparent)]
    Tsnet(#[from] tsnet::TsnetError),
    #[error("tailnet.socks5.password: {0}")]
    Secret(#[from] crate::config::secrets::SecretError),
    #[error("{0}")]
    Config(&'static str),
    #[error("tailnet.mode {mode}: {why}")]
    ModeUnavailable {
        mode: &'static str,
        why: &'static str,
    },
}

/// Dials one endpoint's upstream for pingora (`PeerOptions.custom_l4`).
///
/// The address pingora passes in is a placeholder: the real destination is the endpoint's
/// host and port, resolved by the connector.
#[derive(Debug)]
pub struct EndpointDialer {
    pub endpoint: Arc<str>,
    pub host: String,
    pub port: u16,
    pub connect_timeout: Duration,
    pub connector: Arc<dyn Connector>,
    pub metrics: Arc<Metrics>,
    /// Told what each of pingora's dials showed about the peer.
    pub observer: Option<Arc<dyn DialObserver>>,
}

impl EndpointDialer {
    /// A dial bounded by the connect timeout.
    async fn timed_dial(&self) -> Result<TailnetConn, DialError> {
        tokio::time::timeout(
            self.connect_timeout,
            self.connector.dial(&self.host, self.port),
        )
        .await
        .unwrap_or_else(|_| {
            Err(DialError::Timeout {
                target: format!("{}:{}", self.host, self.port),
                timeout: self.connect_timeout,
            })
        })
    }

    /// A liveness dial: what a fresh dial, bounded by the connect timeout, shows about the
    /// peer. The connection is closed at once.
    pub async fn probe(&self) -> PeerState {
        PeerState::of(&self.timed_dial().await)
    }
}

#[async_trait]
impl pingora::connectors::L4Connect for EndpointDialer {
    async fn connect(&self, _placeholder: &PingoraSocketAddr) -> pingora::Result<Stream> {
        let started = Instant::now();
        let dialed = self.timed_dial().await;
        if let Some(o) = &self.observer {
            o.dialled(started, PeerState::of(&dialed));
        }
        self.metrics
            .upstream_connect_seconds
            .with_label_values(&[&self.endpoint])
            .observe(started.elapsed().as_secs_f64());
        match dialed {
            Ok(conn) => Ok(conn.into_stream(self.connect_timeout)),
            Err(e) => {
                self.metrics
                    .upstream_connect_errors
                    .with_label_values(&[&self.endpoint, e.reason()])
                    .inc();
                let etype = match e {
                    DialError::Timeout { .. } => pingora::ErrorType::ConnectTimedout,
                    DialError::Connect { .. } => pingora::ErrorType::ConnectRefused,
                    DialError::Resolve { .. } | DialError::NoAddress { .. } => {
                        pingora::ErrorType::ConnectNoRoute
                    }
                    DialError::Unavailable { .. } => pingora::ErrorType::ConnectError,
                };
                Err(pingora::Error::explain(etype, e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn what_a_dial_shows_about_the_peer() {
        let connect = |kind| DialError::Connect {
            target: "t:1".into(),
            source: Error::new(kind, "x"),
        };
        let os = |errno: nix::errno::Errno| DialError::Connect {
            target: "t:1".into(),
            source: Error::from_raw_os_error(errno as i32),
        };
        let cases: [(Result<(), DialError>, PeerState); 10] = [
            (Ok(()), PeerState::Answered),
            (
                Err(connect(ErrorKind::ConnectionRefused)),
                PeerState::Answered,
            ),
            (
                Err(DialError::Timeout {
                    target: "t:1".into(),
                    timeout: Duration::from_secs(1),
                }),
                PeerState::Gone,
            ),
            (Err(connect(ErrorKind::TimedOut)), PeerState::Gone),
            (Err(os(nix::errno::Errno::EHOSTUNREACH)), PeerState::Gone),
            (Err(os(nix::errno::Errno::ENETUNREACH)), PeerState::Gone),
            (Err(connect(ErrorKind::Other)), PeerState::Unknown),
            (
                Err(DialError::Resolve {
                    host: "t".into(),
                    source: Error::other("x"),
                }),
                PeerState::Unknown,
            ),
            (
                Err(DialError::NoAddress { host: "t".into() }),
                PeerState::Unknown,
            ),
            (
                Err(DialError::Unavailable {
                    reason: "tailnet dial pool saturated",
                }),
                PeerState::Unknown,
            ),
        ];
        for (dialed, want) in cases {
            assert_eq!(PeerState::of(&dialed), want, "{dialed:?}");
        }
    }
}
