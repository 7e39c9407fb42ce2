//! A connection produced by a tailnet connector, handed to pingora as a real socket.
//!
//! Pingora's connection pool identifies streams by their file descriptor, so connectors
//! must return real sockets (a TCP socket, or the AF_UNIX end of a socketpair for the
//! embedded node), never a virtual stream.

use pingora::protocols::l4::stream::Stream;

/// A socket from a connector.
#[derive(Debug)]
pub enum TailnetConn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl TailnetConn {
    /// Convert into pingora's stream type, with Nagle off for TCP.
    pub fn into_stream(self) -> Stream {
        match self {
            TailnetConn::Tcp(s) => {
                let _ = s.set_nodelay(true);
                Stream::from(s)
            }
            TailnetConn::Unix(s) => Stream::from(s),
        }
    }
}
