//! `socks5` mode: every connection goes through a SOCKS5 proxy (RFC 1928), typically
//! `tailscaled --tun=userspace-networking --socks5-server=127.0.0.1:1055`. Host names are
//! sent to the proxy unresolved (ATYP domain, the "socks5h" behaviour), so MagicDNS names
//! resolve on the tailnet side. Username/password auth per RFC 1929.

use super::{Connector, DialError, TailnetConn, TailnetStatus};
use crate::config::secrets::Secret;
use crate::config::TailnetMode;
use async_trait::async_trait;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Dials through a SOCKS5 proxy.
#[derive(Debug)]
pub struct Socks5 {
    address: String,
    credentials: Option<(String, Secret)>,
    /// Whether the proxy itself answered on the last attempt.
    proxy_up: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// SOCKS5 reply codes (RFC 1928 §6), for error messages.
fn reply_text(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown SOCKS error",
    }
}

/// The I/O error kind a SOCKS5 failure reply stands for: what the proxy learnt about the
/// peer (a refusal means the peer is there; an unreachable host or an expired TTL, that it
/// is not).
fn reply_kind(code: u8) -> std::io::ErrorKind {
    use nix::errno::Errno;
    use std::io::ErrorKind;
    match code {
        3 => super::kind_of(Errno::ENETUNREACH),
        4 => super::kind_of(Errno::EHOSTUNREACH),
        5 => ErrorKind::ConnectionRefused,
        6 => ErrorKind::TimedOut,
        _ => ErrorKind::Other,
    }
}

fn proto_err(target: &str, msg: impl Into<String>) -> DialError {
    DialError::Connect {
        target: target.to_string(),
        source: std::io::Error::other(msg.into()),
    }
}

impl Socks5 {
    pub fn new(address: String, credentials: Option<(String, Secret)>) -> Self {
        Socks5 {
            address,
            credentials,
            proxy_up: AtomicBool::new(true),
            last_error: Mutex::new(None),
        }
    }

    fn mark(&self, up: bool, err: Option<String>) {
        self.proxy_up.store(up, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = err;
        }
    }

    async fn connect_proxy(&self) -> Result<TcpStream, DialError> {
        match TcpStream::connect(&self.address).await {
            Ok(s) => {
                self.mark(true, None);
                Ok(s)
            }
            Err(source) => {
                self.mark(
                    false,
                    Some(format!(
                        "SOCKS5 proxy {} unreachable: {source}",
                        self.address
                    )),
                );
                Err(DialError::Unavailable {
                    reason: "SOCKS5 proxy unreachable",
                })
            }
        }
    }

    async fn handshake(&self, s: &mut TcpStream, host: &str, port: u16) -> Result<(), DialError> {
        let target = format!("{host}:{port}");
        let io = |e: std::io::Error| DialError::Connect {
            target: target.clone(),
            source: e,
        };
        let method: u8 = if self.credentials.is_some() {
            0x02
        } else {
            0x00
        };
        s.write_all(&[0x05, 0x01, method]).await.map_err(io)?;
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).await.map_err(io)?;
        if choice[0] != 0x05 || choice[1] != method {
            return Err(proto_err(
                &target,
                "SOCKS5 proxy refused the authentication method",
            ));
        }
        if let Some((user, pass)) = &self.credentials {
            let (u, p) = (user.as_bytes(), pass.expose().as_bytes());
            if u.len() > 255 || p.len() > 255 {
                return Err(proto_err(
                    &target,
                    "SOCKS5 username or password longer than 255 bytes",
                ));
            }
            let mut msg = vec![0x01, u.len() as u8];
            msg.extend_from_slice(u);
            msg.push(p.len() as u8);
            msg.extend_from_slice(p);
            s.write_all(&msg).await.map_err(io)?;
            let mut status = [0u8; 2];
            s.read_exact(&mut status).await.map_err(io)?;
            if status[1] != 0x00 {
                return Err(proto_err(
                    &target,
                    "SOCKS5 proxy rejected the username/password",
                ));
            }
        }
        let mut req = vec![0x05, 0x01, 0x00];
        match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => {
                req.push(0x01);
                req.extend_from_slice(&ip.octets());
            }
            Ok(IpAddr::V6(ip)) => {
                req.push(0x04);
                req.extend_from_slice(&ip.octets());
            }
            Err(_) => {
                if host.len() > 255 {
                    return Err(proto_err(&target, "host name longer than 255 bytes"));
                }
                req.push(0x03);
                req.push(host.len() as u8);
                req.extend_from_slice(host.as_bytes());
            }
        }
        req.extend_from_slice(&port.to_be_bytes());
        s.write_all(&req).await.map_err(io)?;
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.map_err(io)?;
        if head[1] != 0x00 {
            return Err(DialError::Connect {
                target,
                source: std::io::Error::new(
                    reply_kind(head[1]),
                    format!("SOCKS5: {}", reply_text(head[1])),
                ),
            });
        }
        let skip = match head[3] {
            0x01 => 4,
            0x04 => 16,
            0x03 => {
                let mut n = [0u8; 1];
                s.read_exact(&mut n).await.map_err(io)?;
                usize::from(n[0])
            }
            _ => return Err(proto_err(&target, "SOCKS5: bad reply address type")),
        } + 2;
        let mut rest = vec![0u8; skip];
        s.read_exact(&mut rest).await.map_err(io)?;
        Ok(())
    }
}

#[async_trait]
impl Connector for Socks5 {
    async fn dial(&self, host: &str, port: u16) -> Result<TailnetConn, DialError> {
        let mut s = self.connect_proxy().await?;
        self.handshake(&mut s, host, port).await?;
        Ok(TailnetConn::Tcp(s))
    }

    fn status(&self) -> TailnetStatus {
        let up = self.proxy_up.load(Ordering::Relaxed);
        TailnetStatus {
            mode: TailnetMode::Socks5,
            ready: up,
            tsnet_connected: false,
            reason: if up {
                None
            } else {
                self.last_error.lock().ok().and_then(|e| e.clone())
            },
        }
    }

    async fn refresh_status(&self) {
        let _ = self.connect_proxy().await;
    }

    fn reqwest_proxy(&self) -> Option<reqwest::Proxy> {
        let url = format!("socks5h://{}", self.address);
        let proxy = reqwest::Proxy::all(url).ok()?;
        Some(match &self.credentials {
            Some((u, p)) => proxy.basic_auth(u, p.expose()),
            None => proxy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailnet::PeerState;

    #[test]
    fn failure_replies_say_what_the_proxy_learnt_about_the_peer() {
        for (code, want) in [
            (1, PeerState::Unknown),
            (2, PeerState::Unknown),
            (3, PeerState::Gone),
            (4, PeerState::Gone),
            (5, PeerState::Answered),
            (6, PeerState::Gone),
            (7, PeerState::Unknown),
            (8, PeerState::Unknown),
            (9, PeerState::Unknown),
        ] {
            let e = DialError::Connect {
                target: "t:1".into(),
                source: std::io::Error::new(reply_kind(code), reply_text(code)),
            };
            assert_eq!(e.peer_state(), want, "reply {code}");
        }
    }
}
