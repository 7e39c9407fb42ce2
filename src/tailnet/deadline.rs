//! A stream wrapper that enforces the two upstream read timeouts pingora cannot tell apart:
//! the wait for the first response byte after a request was written (long: tool calls can be
//! slow), and the gap between two reads once the response is flowing (SSE idle gap).
//!
//! There is deliberately no write timeout and no total-duration limit: an event stream may
//! stay open for as long as both ends want it.

use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A connection produced by a tailnet connector.
pub trait TailnetConn: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug {
    /// Disable Nagle where the transport has it.
    fn set_nodelay(&self) -> io::Result<()>;
}

impl TailnetConn for tokio::net::TcpStream {
    fn set_nodelay(&self) -> io::Result<()> {
        tokio::net::TcpStream::set_nodelay(self, true)
    }
}

impl TailnetConn for tokio::net::UnixStream {
    fn set_nodelay(&self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request was written; waiting for the first byte of its response.
    AwaitingFirstByte,
    /// The response is flowing (or the connection sits idle between requests).
    Flowing,
}

/// Read deadlines around a tailnet connection.
pub struct DeadlineStream {
    inner: Box<dyn TailnetConn>,
    first_byte: Duration,
    idle: Duration,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
}

impl fmt::Debug for DeadlineStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineStream")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish()
    }
}

impl DeadlineStream {
    pub fn new(inner: Box<dyn TailnetConn>, first_byte: Duration, idle: Duration) -> Self {
        DeadlineStream {
            inner,
            first_byte,
            idle,
            phase: Phase::Flowing,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn arm(&mut self, phase: Phase) {
        self.phase = phase;
        let wait = match phase {
            Phase::AwaitingFirstByte => self.first_byte,
            Phase::Flowing => self.idle,
        };
        self.timer.as_mut().reset(Instant::now() + wait);
    }
}

/// The io error a read deadline produces (kind `TimedOut`).
pub fn is_deadline_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut *this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.arm(Phase::Flowing);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let what = match this.phase {
                        Phase::AwaitingFirstByte => "upstream first-byte timeout",
                        Phase::Flowing => "upstream idle timeout",
                    };
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut *this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = res {
            if n > 0 {
                this.arm(Phase::AwaitingFirstByte);
            }
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

impl VirtualSocket for DeadlineStream {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.inner.set_nodelay(),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn first_byte_then_idle_deadlines() {
        let (a, mut b) = tokio::io::duplex(64);
        let _ = &mut b;
        #[derive(Debug)]
        struct Duplex(tokio::io::DuplexStream);
        impl AsyncRead for Duplex {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
            }
        }
        impl AsyncWrite for Duplex {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                d: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.get_mut().0).poll_write(cx, d)
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().0).poll_flush(cx)
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
            }
        }
        impl TailnetConn for Duplex {
            fn set_nodelay(&self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut s = DeadlineStream::new(
            Box::new(Duplex(a)),
            Duration::from_secs(100),
            Duration::from_secs(10),
        );
        s.write_all(b"GET").await.unwrap();
        // Waiting 50 s for the first byte is fine (first-byte timeout is 100 s).
        let peer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(50)).await;
            b.write_all(b"x").await.unwrap();
            // Then 11 s of silence: longer than the idle timeout.
            tokio::time::sleep(Duration::from_secs(11)).await;
            b.write_all(b"y").await.unwrap();
            b
        });
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"x");
        let err = s.read_exact(&mut one).await.unwrap_err();
        assert!(is_deadline_error(&err));
        assert_eq!(err.to_string(), "upstream idle timeout");
        drop(peer);
    }
}
