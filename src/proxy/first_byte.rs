//! The first-byte deadline: how long an upstream may take to start answering a request.
//!
//! Pingora has one upstream read timeout for a whole exchange; tailbridge uses it for the
//! idle gap between reads (SSE events) and enforces the (usually shorter) wait for the
//! response head here. When a request has been handed to an upstream connection it is
//! entered in one timer queue for the whole process, served by one thread; when the response
//! head arrives the entry is removed. If an entry's deadline passes first, the thread shuts
//! the socket down, which fails the pending read, and the request is answered with 504.
//! Arming costs a lock and a map insert: no task, no descriptor duplicate, no syscall.
//!
//! The socket is named by its descriptor number. Pingora may close a connection (an error,
//! a client gone) shortly before the request disarms its entry, and the number may then be
//! reused by an unrelated socket. So each entry also carries the socket's kernel cookie
//! (`SO_COOKIE`, unique per socket while the system runs), taken once when the connection is
//! new; the thread shuts a socket down only when the descriptor still carries that cookie.
//!
//! A request that reuses a pooled connection after the endpoint has been quiet can also carry
//! a liveness probe (a fresh dial to the upstream): a tailnet peer that vanished without
//! closing (sleep, power loss, partition) leaves pooled connections that look alive, and in
//! tsnet mode the socketpair never closes. When the probe fails, the socket is shut down at
//! once and the request fails within the connect timeout. Only those requests get a task.

use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What became of an armed request, as the request sees it.
const WAITING: u8 = 0;
const EXPIRED: u8 = 1;
const PEER_GONE: u8 = 2;

/// The process's first-byte timers.
#[derive(Debug)]
pub struct Deadlines {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Armed requests by deadline; the `u64` makes keys unique.
    queue: BTreeMap<(Instant, u64), Entry>,
    next: u64,
    /// The cookie of the socket behind each upstream descriptor, recorded when the
    /// connection was new.
    cookies: HashMap<RawFd, u64>,
}

#[derive(Debug)]
struct Entry {
    fd: RawFd,
    cookie: u64,
    outcome: Arc<AtomicU8>,
}

impl Entry {
    /// End the wait: record why, and shut the socket down if it is still this request's.
    fn end(self, why: u8) {
        self.outcome.store(why, Ordering::Release);
        if pingora::protocols::l4::ext::get_socket_cookie(self.fd).ok() == Some(self.cookie) {
            // shutdown(2) acts on the socket: pingora's pending read returns.
            let _ = nix::sys::socket::shutdown(self.fd, nix::sys::socket::Shutdown::Both);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still
        // consistent (every change is a single insert or remove).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The timer thread: fire every entry whose deadline passed, sleep until the next.
    fn run(&self) {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            while let Some(entry) = st.queue.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                entry.remove().end(EXPIRED);
            }
            st = match st.queue.keys().next().map(|k| k.0) {
                Some(at) => {
                    self.wake
                        .wait_timeout(st, at.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.wake.wait(st).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

impl Deadlines {
    /// Start the timer thread.
    pub fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("tailbridge-first-byte".into())
            .spawn(move || worker.run())?;
        Ok(Deadlines { shared })
    }

    /// Arm a deadline for the request that was just handed to the upstream socket `fd`
    /// (`new_connection`: the socket was dialled for this request, not taken from the pool).
    /// `probe`, when given, runs alongside: if it says the peer is gone before the response
    /// head arrives, the socket is shut down at once.
    pub fn arm(
        &self,
        fd: RawFd,
        new_connection: bool,
        timeout: Duration,
        probe: Option<BoxFuture<'static, bool>>,
    ) -> Armed {
        let outcome = Arc::new(AtomicU8::new(WAITING));
        let at = Instant::now() + timeout;
        let mut st = self.shared.lock();
        let cookie = match st.cookies.get(&fd) {
            Some(c) if !new_connection => *c,
            _ => {
                // Once per connection (and for a socket dialled elsewhere, on every use).
                let c = pingora::protocols::l4::ext::get_socket_cookie(fd).unwrap_or(0);
                st.cookies.insert(fd, c);
                c
            }
        };
        let key = (at, st.next);
        st.next += 1;
        let first = st.queue.keys().next().is_none_or(|k| *k > key);
        st.queue.insert(
            key,
            Entry {
                fd,
                cookie,
                outcome: outcome.clone(),
            },
        );
        drop(st);
        if first {
            self.shared.wake.notify_one();
        }
        if let Some(probe) = probe {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                if !probe.await {
                    let entry = shared.lock().queue.remove(&key);
                    // Still waiting for the head: end the wait now.
                    if let Some(entry) = entry {
                        entry.end(PEER_GONE);
                    }
                }
            });
        }
        Armed {
            shared: self.shared.clone(),
            key,
            outcome,
            armed: true,
        }
    }
}

/// One request's deadline. Dropping it (or calling [`Armed::disarm`]) cancels it.
#[derive(Debug)]
pub struct Armed {
    shared: Arc<Shared>,
    key: (Instant, u64),
    outcome: Arc<AtomicU8>,
    armed: bool,
}

impl Armed {
    /// The response head arrived (or the request ended): cancel the deadline.
    pub fn disarm(&mut self) {
        if std::mem::take(&mut self.armed) {
            self.shared.lock().queue.remove(&self.key);
        }
    }

    /// True when the deadline passed before the response head arrived.
    pub fn fired(&self) -> bool {
        self.outcome.load(Ordering::Acquire) == EXPIRED
    }

    /// True when the liveness probe found the peer gone before the response head arrived.
    pub fn peer_gone(&self) -> bool {
        self.outcome.load(Ordering::Acquire) == PEER_GONE
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use tokio::io::AsyncReadExt;

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        (client, accept.await.unwrap())
    }

    #[tokio::test]
    async fn fires_and_breaks_the_pending_read() {
        let d = Deadlines::start().unwrap();
        let (mut client, _server) = pair().await;
        let w = d.arm(client.as_raw_fd(), true, Duration::from_millis(50), None);
        let mut buf = [0u8; 1];
        // The server never writes: only the deadline can end this read.
        let n = client.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert!(w.fired());
        assert!(!w.peer_gone());
    }

    #[tokio::test]
    async fn a_disarmed_deadline_never_fires_and_later_ones_still_do() {
        let d = Deadlines::start().unwrap();
        let (client, _server) = pair().await;
        let mut w = d.arm(client.as_raw_fd(), true, Duration::from_millis(20), None);
        w.disarm();
        // A second request on the same (pooled) connection, armed later, fires on time.
        let (mut other, _other_server) = pair().await;
        let v = d.arm(other.as_raw_fd(), true, Duration::from_millis(80), None);
        let mut buf = [0u8; 1];
        assert_eq!(other.read(&mut buf).await.unwrap_or(0), 0);
        assert!(v.fired());
        assert!(!w.fired());
        // The first socket still works.
        assert!(client.peer_addr().is_ok());
        assert!(d.shared.lock().queue.is_empty());
    }

    #[tokio::test]
    async fn an_earlier_deadline_armed_later_wakes_the_thread() {
        let d = Deadlines::start().unwrap();
        let (slow, _s1) = pair().await;
        let (mut quick, _s2) = pair().await;
        let _long = d.arm(slow.as_raw_fd(), true, Duration::from_secs(3600), None);
        let w = d.arm(quick.as_raw_fd(), true, Duration::from_millis(30), None);
        let mut buf = [0u8; 1];
        assert_eq!(quick.read(&mut buf).await.unwrap_or(0), 0);
        assert!(w.fired());
    }

    #[tokio::test]
    async fn a_reused_descriptor_number_is_left_alone() {
        let d = Deadlines::start().unwrap();
        let (client, _server) = pair().await;
        let fd = client.as_raw_fd();
        let w = d.arm(fd, true, Duration::from_millis(40), None);
        // The connection closes without disarming; a new socket may take the number.
        drop(client);
        let (replacement, _server2) = pair().await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(w.fired());
        // Whatever number it got, the new socket was not shut down.
        let mut buf = [0u8; 1];
        let peeked = replacement.try_read(&mut buf);
        assert!(
            matches!(&peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{peeked:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_probe_ends_the_wait_early() {
        let d = Deadlines::start().unwrap();
        let (mut client, _server) = pair().await;
        let probe: BoxFuture<'static, bool> = Box::pin(async { false });
        let w = d.arm(
            client.as_raw_fd(),
            true,
            Duration::from_secs(3600),
            Some(probe),
        );
        let mut buf = [0u8; 1];
        let n = client.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "the read ended long before the hour-long deadline");
        assert!(w.peer_gone());
        assert!(!w.fired());
    }
}
