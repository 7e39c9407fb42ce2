//! Upstream read deadlines: how long an upstream may take to start answering a request
//! (`timeouts.first_byte`), then how long it may stay silent between two reads of the
//! response body (`timeouts.idle`, the gap between SSE events).
//!
//! When a request has been handed to an upstream connection it is entered in one timer
//! queue for the whole process, served by one thread. The response head moves the entry to
//! the idle deadline, each body chunk moves it on (at most every 1/64 of the idle timeout,
//! so a stream's deadline may fire up to that much early), and the end of the response
//! removes it. If an entry's deadline passes, the thread shuts the socket down, which fails
//! the pending read: before the head that is a 504, after it the response ends there.
//! Arming costs a lock and a map insert: no task, no descriptor duplicate, no syscall, and
//! no tokio timer (pingora's own read timeout would register one per read for timeouts
//! above 15 minutes, waking the runtime's driver each time). The thread wakes at least once
//! a second, so arming a deadline later than that needs no wake-up either.
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

/// The longest the thread sleeps: deadlines later than its next wake need no notification.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct State {
    /// Armed requests by deadline; the `u64` makes keys unique.
    queue: BTreeMap<(Instant, u64), Entry>,
    next: u64,
    /// When the thread wakes next (`None`: it is not asleep).
    wake_at: Option<Instant>,
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

    /// Enter `entry` under a fresh key for `at`; wake the thread if it would sleep past it.
    fn insert(&self, st: &mut State, at: Instant, entry: Entry) -> (Instant, u64) {
        let key = (at, st.next);
        st.next += 1;
        st.queue.insert(key, entry);
        if st.wake_at.is_some_and(|w| at < w) {
            self.wake.notify_one();
        }
        key
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
            let at = st
                .queue
                .keys()
                .next()
                .map_or(now + TICK, |k| k.0.min(now + TICK));
            st.wake_at = Some(at);
            st = self
                .wake
                .wait_timeout(st, at.saturating_duration_since(now))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            st.wake_at = None;
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
        let entry = Entry {
            fd,
            cookie,
            outcome: outcome.clone(),
        };
        let key = self.shared.insert(&mut st, at, entry);
        drop(st);
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
            idle: None,
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
    /// Once the head arrived: the idle timeout and when the deadline was last moved.
    idle: Option<(Duration, Instant)>,
}

impl Armed {
    /// The response head arrived: from now on the deadline is `idle` after the last read.
    pub fn head_arrived(&mut self, idle: Duration) {
        self.idle = Some((idle, Instant::now()));
        self.move_to(Instant::now() + idle);
    }

    /// A body chunk arrived: push the idle deadline on (not more often than every 1/64 of
    /// the idle timeout).
    pub fn read(&mut self) {
        let Some((idle, moved)) = self.idle else {
            return;
        };
        let now = Instant::now();
        if now.saturating_duration_since(moved) >= idle / 64 {
            self.idle = Some((idle, now));
            self.move_to(now + idle);
        }
    }

    fn move_to(&mut self, at: Instant) {
        if !self.armed {
            return;
        }
        let mut st = self.shared.lock();
        // Gone: the deadline already passed (the socket is being shut down).
        if let Some(entry) = st.queue.remove(&self.key) {
            self.key = self.shared.insert(&mut st, at, entry);
        } else {
            self.armed = false;
        }
    }

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
    async fn after_the_head_the_idle_gap_counts_and_reads_push_it_on() {
        let d = Deadlines::start().unwrap();
        let (mut client, mut server) = pair().await;
        let mut w = d.arm(client.as_raw_fd(), true, Duration::from_millis(40), None);
        // The head arrives in time: the first-byte deadline no longer applies.
        w.head_arrived(Duration::from_millis(300));
        use tokio::io::AsyncWriteExt;
        let mut buf = [0u8; 8];
        // Reads every 100 ms keep the stream alive well past 300 ms.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            server.write_all(b"x").await.unwrap();
            assert_eq!(client.read(&mut buf).await.unwrap(), 1);
            w.read();
        }
        assert!(!w.fired());
        // Then silence: the idle deadline ends the read.
        assert_eq!(client.read(&mut buf).await.unwrap_or(0), 0);
        assert!(w.fired());
    }

    #[tokio::test]
    async fn deadlines_later_than_the_next_wake_need_no_notification() {
        let d = Deadlines::start().unwrap();
        // Let the thread go to sleep on its one-second tick.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (client, _server) = pair().await;
        let _w = d.arm(client.as_raw_fd(), true, Duration::from_secs(300), None);
        let st = d.shared.lock();
        assert!(st.wake_at.is_some_and(|w| w <= Instant::now() + TICK));
        assert_eq!(st.queue.len(), 1);
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
