//! `direct` mode: the host's own TCP stack and resolver. Used when the host runs tailscaled
//! with its TUN device and MagicDNS, so tailnet names and 100.x addresses route natively.

use super::{Connector, DialError, TailnetConn, TailnetStatus};
use crate::config::TailnetMode;
use async_trait::async_trait;
use tokio::net::TcpStream;

/// Dials with the host's networking.
#[derive(Debug, Default)]
pub struct Direct;

impl Direct {
    pub fn new() -> Self {
        Direct
    }
}

#[async_trait]
impl Connector for Direct {
    async fn dial(&self, host: &str, port: u16) -> Result<TailnetConn, DialError> {
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| DialError::Resolve {
                host: host.to_string(),
                source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(DialError::NoAddress {
                host: host.to_string(),
            });
        }
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(TailnetConn::Tcp(s)),
                Err(e) => last = Some(e),
            }
        }
        Err(DialError::Connect {
            target: format!("{host}:{port}"),
            source: last.unwrap_or_else(|| std::io::Error::other("no address tried")),
        })
    }

    fn status(&self) -> TailnetStatus {
        // No node of its own: the host's tailscaled carries the traffic. Reachability of the
        // upstreams themselves is reported by the health probes.
        TailnetStatus {
            mode: TailnetMode::Direct,
            ready: true,
            tsnet_connected: false,
            reason: None,
        }
    }
}
