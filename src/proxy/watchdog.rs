//! The first-byte deadline: how long an upstream may take to start answering a request.
//!
//! Pingora has one upstream read timeout for a whole exchange; tailbridge uses it for the
//! idle gap between reads (SSE events) and enforces the (usually shorter) wait for the
//! response head here. When a request has been handed to an upstream connection, a timer
//! starts; if the response head has not arrived when it fires, the watchdog shuts the
//! socket down, which fails the pending read, and the request is answered with 504.
//!
//! The watchdog works on its own duplicate of the socket's descriptor, so it can never
//! touch an unrelated socket that reused the number after pingora closed its own.
//!
//! A request that reuses a pooled connection after the endpoint has been quiet can also carry
//! a liveness probe (a fresh dial to the upstream): a tailnet peer that vanished without
//! closing (sleep, power loss, partition) leaves pooled connections that look alive, and in
//! tsnet mode the socketpair never closes. When the probe fails, the watchdog shuts the
//! socket down at once and the request fails within the connect timeout.

use futures::future::BoxFuture;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A running first-byte timer. Dropping it (or calling [`FirstByteWatchdog::disarm`])
/// cancels it.
#[derive(Debug)]
pub struct FirstByteWatchdog {
    disarmed: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
    peer_gone: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FirstByteWatchdog {
    /// Arm a watchdog on the socket `fd` (owned by pingora and open for the duration of
    /// this call). `probe`, when given, runs alongside: if it says the peer is gone before
    /// the response head arrives, the socket is shut down at once.
    pub fn arm(
        fd: RawFd,
        timeout: Duration,
        probe: Option<BoxFuture<'static, bool>>,
    ) -> std::io::Result<Self> {
        // SAFETY: pingora passes the descriptor of the upstream connection it holds open
        // while `connected_to_upstream` runs; we only borrow it long enough to duplicate it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let own: OwnedFd = borrowed.try_clone_to_owned()?;
        let disarmed = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let peer_gone = Arc::new(AtomicBool::new(false));
        let (d, f, g) = (disarmed.clone(), fired.clone(), peer_gone.clone());
        let task = tokio::spawn(async move {
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            if let Some(probe) = probe {
                tokio::select! {
                    _ = &mut deadline => {}
                    alive = probe => {
                        if alive {
                            deadline.await;
                        } else if !d.load(Ordering::Acquire) {
                            g.store(true, Ordering::Release);
                        }
                    }
                }
            } else {
                deadline.await;
            }
            if !d.load(Ordering::Acquire) {
                if !g.load(Ordering::Acquire) {
                    f.store(true, Ordering::Release);
                }
                // shutdown(2) acts on the socket, not on this descriptor: the pending read
                // in pingora returns and the request fails.
                let sock = std::net::TcpStream::from(own);
                let _ = sock.shutdown(std::net::Shutdown::Both);
            }
        });
        Ok(FirstByteWatchdog {
            disarmed,
            fired,
            peer_gone,
            task,
        })
    }

    /// The response head arrived: stop the timer.
    pub fn disarm(&self) {
        self.disarmed.store(true, Ordering::Release);
        self.task.abort();
    }

    /// True when the deadline passed before the response head arrived.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// True when the liveness probe found the peer gone before the response head arrived.
    pub fn peer_gone(&self) -> bool {
        self.peer_gone.load(Ordering::Acquire)
    }
}

impl Drop for FirstByteWatchdog {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn fires_and_breaks_the_pending_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _server = accept.await.unwrap();
        let w =
            FirstByteWatchdog::arm(client.as_raw_fd(), Duration::from_millis(50), None).unwrap();
        let mut buf = [0u8; 1];
        // The server never writes: only the watchdog can end this read.
        let n = client.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert!(w.fired());
    }

    #[tokio::test]
    async fn disarmed_watchdog_never_fires() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _server = accept.await.unwrap();
        let w =
            FirstByteWatchdog::arm(client.as_raw_fd(), Duration::from_millis(20), None).unwrap();
        w.disarm();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!w.fired());
        // The socket still works.
        assert!(client.peer_addr().is_ok());
    }

    #[tokio::test]
    async fn a_failed_probe_ends_the_wait_early() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _server = accept.await.unwrap();
        let probe: BoxFuture<'static, bool> = Box::pin(async { false });
        let w = FirstByteWatchdog::arm(client.as_raw_fd(), Duration::from_secs(3600), Some(probe))
            .unwrap();
        let mut buf = [0u8; 1];
        let n = client.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "the read ended long before the hour-long deadline");
        assert!(w.peer_gone());
        assert!(!w.fired());
    }
}
