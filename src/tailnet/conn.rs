//! A connection produced by a tailnet connector, handed to pingora as a real socket.
//!
//! Pingora's connection pool identifies streams by their file descriptor, so connectors
//! must return real sockets (a TCP socket, or the AF_UNIX end of a socketpair for the
//! embedded node), never a virtual stream.

use pingora::protocols::l4::stream::Stream;
use std::time::Duration;

/// Idle time before the kernel probes a pooled TCP connection, the gap between probes, and
/// how many unanswered probes end it: a peer that vanished without closing (a machine that
/// slept or lost power sends no FIN) is dropped from the pool within about 30 s.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 3;

/// A socket from a connector.
#[derive(Debug)]
pub enum TailnetConn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl TailnetConn {
    /// Convert into pingora's stream type. TCP gets Nagle off, keepalive probes, and
    /// `TCP_USER_TIMEOUT` = `unacked_limit`: a request written to a peer that vanished fails
    /// after that long instead of waiting for the first-byte deadline.
    pub fn into_stream(self, unacked_limit: Duration) -> Stream {
        match self {
            TailnetConn::Tcp(s) => {
                let _ = s.set_nodelay(true);
                if let Err(e) = tcp_liveness(&s, unacked_limit) {
                    log::debug!("cannot set TCP keepalive options: {e}");
                }
                Stream::from(s)
            }
            TailnetConn::Unix(s) => Stream::from(s),
        }
    }
}

fn tcp_liveness(s: &tokio::net::TcpStream, unacked_limit: Duration) -> nix::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(s, sockopt::KeepAlive, &true)?;
    setsockopt(s, sockopt::TcpKeepIdle, &(KEEPALIVE_IDLE.as_secs() as u32))?;
    setsockopt(
        s,
        sockopt::TcpKeepInterval,
        &(KEEPALIVE_INTERVAL.as_secs() as u32),
    )?;
    setsockopt(s, sockopt::TcpKeepCount, &KEEPALIVE_PROBES)?;
    let ms = u32::try_from(unacked_limit.as_millis()).unwrap_or(u32::MAX);
    setsockopt(s, sockopt::TcpUserTimeout, &ms)
}
