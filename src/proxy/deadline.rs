//! Upstream read deadlines: how long an upstream may take to start answering a request
//! (`timeouts.first_byte`), then how long it may stay silent between two reads of the
//! response body (`timeouts.idle`, the gap between SSE events); and the liveness checks of a
//! request still waiting for its response head.
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
//! ## Liveness
//!
//! A tailnet peer that vanishes without closing (sleep, power loss, partition: no FIN, no
//! RST) leaves connections that look alive: a request written into one is accepted and
//! nothing ever comes back; in tsnet mode the socketpair never closes, and behind a SOCKS5
//! proxy the bridge's own socket is fine. Each endpoint has a [`Watch`]: the last time its
//! peer was seen answering (a response head, a dial that connected or was refused), and the
//! liveness dial in flight. A request's entry first sits in the queue at its *check* time,
//! [`check_after`] after it was handed over (at most [`LIVENESS_WAIT`]), then every
//! [`LIVENESS_RECHECK`] while the head has not come. A request whose head comes before its
//! check (nearly all) costs nothing more than before: the same insert and remove (and a
//! reference count). At a check, the thread asks whether the peer answered within the last
//! `check_after`; if not, it starts one liveness dial for the endpoint (bounded by the
//! connect timeout, on a small runtime of its own; one at a time per endpoint, whatever the
//! number of waiting requests). A dial that connects, or is refused, is an answer: the
//! request goes on waiting, however long the tool call takes. A dial that gets no answer
//! ([`PeerState::Gone`], from the liveness dial or any of pingora's dials to the endpoint),
//! when nothing else answered since it began, ends every request of the endpoint still
//! without a head: the socket is shut down and the request fails with 502. So a request
//! sent to a vanished peer fails within `check_after` + the connect timeout, and one in
//! flight when the peer vanishes within [`LIVENESS_RECHECK`] + `check_after` + the connect
//! timeout, or sooner when another request finds the peer gone. The endpoint's pool
//! generation is bumped too: the dead pooled connections are never reused.

use crate::tailnet::{DialObserver, PeerState};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// What became of an armed request, as the request sees it.
const WAITING: u8 = 0;
const EXPIRED: u8 = 1;
const PEER_GONE: u8 = 2;

/// The longest a request waits for its response head before its peer's liveness is checked.
pub const LIVENESS_WAIT: Duration = Duration::from_millis(1000);
/// The shortest such wait, whatever the connect timeout.
const LIVENESS_WAIT_MIN: Duration = Duration::from_millis(100);
/// How often the check is made again while the head has not come.
pub const LIVENESS_RECHECK: Duration = Duration::from_secs(5);

/// The wait before the first liveness check of a request to an endpoint with this connect
/// timeout: half the connect timeout within [100 ms, [`LIVENESS_WAIT`]], so that a request to a
/// vanished peer fails within 1.5 × the connect timeout (at most 1 s + the connect timeout).
pub fn check_after(connect: Duration) -> Duration {
    (connect / 2).clamp(LIVENESS_WAIT_MIN, LIVENESS_WAIT)
}

/// The time base of the queue and of the watches: nanoseconds since the first use.
fn ns(t: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A queue key: when (ns), then the entry's id, stable for the entry's life.
type Key = (u64, u64);

/// The process's first-byte timers.
#[derive(Debug)]
pub struct Deadlines {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The runtime liveness dials run on.
    probes: tokio::runtime::Handle,
}

/// The longest the thread sleeps: deadlines later than its next wake need no notification.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct State {
    /// Armed requests by their next event (a check or the deadline).
    queue: BTreeMap<Key, Entry>,
    next: u64,
    /// When the thread wakes next (`None`: it is not asleep).
    wake_at: Option<u64>,
    /// The cookie of the socket behind each upstream descriptor, recorded when the
    /// connection was new.
    cookies: HashMap<RawFd, u64>,
}

#[derive(Debug)]
struct Entry {
    fd: RawFd,
    cookie: u64,
    ticket: Arc<Ticket>,
    /// Until the response head: what the liveness checks need.
    waiting: Option<Waiting>,
}

/// A request still waiting for its response head.
#[derive(Debug)]
struct Waiting {
    watch: Arc<Watch>,
    /// Its first-byte deadline.
    deadline: u64,
}

/// What a request and its queue entry share.
#[derive(Debug, Default)]
struct Ticket {
    outcome: AtomicU8,
    /// The time part of the entry's key, which the thread moves at each check. Written and
    /// read under the state lock.
    at: AtomicU64,
}

impl Entry {
    /// End the wait: record why, and shut the socket down if it is still this request's.
    fn end(self, why: u8) {
        let _ =
            self.ticket
                .outcome
                .compare_exchange(WAITING, why, Ordering::AcqRel, Ordering::Acquire);
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

    /// Enter `entry` under `(at, id)`; wake the thread if it would sleep past it.
    fn insert(&self, st: &mut State, at: u64, id: u64, entry: Entry) {
        entry.ticket.at.store(at, Ordering::Relaxed);
        st.queue.insert((at, id), entry);
        if st.wake_at.is_some_and(|w| at < w) {
            self.wake.notify_one();
        }
    }

    /// The timer thread: fire every entry whose time passed, sleep until the next.
    fn run(&self) {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let now_ns = ns(now);
            while let Some(first) = st.queue.first_entry() {
                if first.key().0 > now_ns {
                    break;
                }
                let ((due, id), entry) = first.remove_entry();
                match &entry.waiting {
                    Some(w) if w.deadline > now_ns => {
                        // A check, not the deadline: then the next check, or the deadline.
                        w.watch.check(due, now_ns, &self.probes);
                        let next = due
                            .saturating_add(nanos(LIVENESS_RECHECK))
                            .max(now_ns + 1)
                            .min(w.deadline);
                        entry.ticket.at.store(next, Ordering::Relaxed);
                        st.queue.insert((next, id), entry);
                    }
                    _ => entry.end(EXPIRED),
                }
            }
            let at = st
                .queue
                .keys()
                .next()
                .map_or(now_ns + nanos(TICK), |k| k.0.min(now_ns + nanos(TICK)));
            st.wake_at = Some(at);
            st = self
                .wake
                .wait_timeout(st, Duration::from_nanos(at.saturating_sub(now_ns)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            st.wake_at = None;
        }
    }

    /// A dial to `watch`'s peer that began at `since` got no answer. Unless the peer answered
    /// since then, it is gone: bump the pool generation and end the wait of every request to
    /// it still without a head (none of them had an answer since it was sent: a request on a
    /// new connection counts as one). The check is made under the state lock, which a
    /// request takes to enter the queue after recording its new connection.
    fn peer_gone(&self, watch: &Watch, since: u64) {
        let mut st = self.lock();
        if watch.alive.load(Ordering::Acquire) >= since {
            return;
        }
        watch.forget_pool();
        let doomed: Vec<Key> = st
            .queue
            .iter()
            .filter(|(_, e)| {
                e.waiting
                    .as_ref()
                    .is_some_and(|w| std::ptr::eq(Arc::as_ptr(&w.watch), watch))
            })
            .map(|(k, _)| *k)
            .collect();
        for key in doomed {
            if let Some(entry) = st.queue.remove(&key) {
                entry.end(PEER_GONE);
            }
        }
    }
}

/// A liveness dial: what a fresh dial to the endpoint's upstream shows about the peer.
pub type Probe = Box<dyn Fn() -> BoxFuture<'static, PeerState> + Send + Sync>;

/// What the proxy knows about one endpoint's peer being there. See the module docs.
pub struct Watch {
    shared: Arc<Shared>,
    check_after: u64,
    /// When the peer last answered (ns, only ever moves on).
    alive: AtomicU64,
    /// Bumped when the peer is found gone: its pooled connections are never reused (they
    /// are under another pool key), and idle out.
    generation: AtomicU64,
    probe: OnceLock<Probe>,
    probing: Mutex<Probing>,
}

/// The endpoint's liveness dial in flight.
#[derive(Debug, Default)]
struct Probing {
    /// When it began (ns).
    started: Option<u64>,
    /// A check wanted an answer newer than its start: dial again once it answers.
    again: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("check_after", &Duration::from_nanos(self.check_after))
            .field("alive", &self.alive)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Set the liveness dial (once; the dialer is built after its watch).
    pub fn set_probe(&self, probe: Probe) {
        let _ = self.probe.set(probe);
    }

    /// The endpoint's pool generation: part of its pool key.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The endpoint's pooled connections must not be reused (a request to it failed with a
    /// timeout or an unreachable upstream).
    pub fn forget_pool(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn alive_at(&self, at: u64) {
        self.alive.fetch_max(at, Ordering::AcqRel);
    }

    fn lock_probing(&self) -> MutexGuard<'_, Probing> {
        self.probing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request still without its head at its check, `due` (the thread may come a little
    /// later, at `now`): unless the peer answered within `check_after` before `due` (for the
    /// first check: since the request was handed over), make sure a liveness dial begun
    /// since then is under way.
    fn check(self: &Arc<Self>, due: u64, now: u64, rt: &tokio::runtime::Handle) {
        let fresh_since = due.saturating_sub(self.check_after);
        if self.alive.load(Ordering::Acquire) >= fresh_since {
            return;
        }
        let mut p = self.lock_probing();
        match p.started {
            Some(s) if s >= fresh_since => {}
            Some(_) => p.again = true,
            None => {
                p.started = Some(now);
                rt.spawn(self.clone().probes());
            }
        }
    }

    /// Liveness dials, one at a time, until none is wanted.
    async fn probes(self: Arc<Self>) {
        loop {
            let started = Instant::now();
            let peer = match self.probe.get() {
                Some(probe) => probe().await,
                None => PeerState::Unknown,
            };
            self.dialled(started, peer);
            let mut p = self.lock_probing();
            if peer == PeerState::Answered && std::mem::take(&mut p.again) {
                p.started = Some(ns(Instant::now()));
                continue;
            }
            *p = Probing::default();
            return;
        }
    }
}

impl DialObserver for Watch {
    fn dialled(&self, started: Instant, peer: PeerState) {
        let since = ns(started);
        match peer {
            PeerState::Answered => self.alive_at(since),
            PeerState::Gone => self.shared.peer_gone(self, since),
            PeerState::Unknown => {}
        }
    }
}

impl Deadlines {
    /// Start the timer thread and the liveness dials' runtime.
    pub fn start() -> std::io::Result<Self> {
        ns(Instant::now());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let probes = rt.handle().clone();
        std::thread::Builder::new()
            .name("tailbridge-liveness".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            probes,
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("tailbridge-first-byte".into())
            .spawn(move || worker.run())?;
        Ok(Deadlines { shared })
    }

    /// The liveness watch of an endpoint with this connect timeout.
    pub fn watch(&self, connect: Duration) -> Arc<Watch> {
        Arc::new(Watch {
            shared: self.shared.clone(),
            check_after: nanos(check_after(connect)),
            alive: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            probe: OnceLock::new(),
            probing: Mutex::default(),
        })
    }

    /// Arm a deadline for the request that was just handed to the upstream socket `fd`
    /// (`new_connection`: the socket was dialled for this request, not taken from the pool).
    /// With `watch`, the request's peer is checked while the head has not come (module
    /// docs); a new connection is itself an answer from the peer.
    pub fn arm(
        &self,
        fd: RawFd,
        new_connection: bool,
        timeout: Duration,
        watch: Option<&Arc<Watch>>,
    ) -> Armed {
        let ticket = Arc::new(Ticket::default());
        let now = ns(Instant::now());
        let deadline = now.saturating_add(nanos(timeout));
        let (at, waiting) = match watch {
            Some(w) => {
                if new_connection {
                    w.alive_at(now);
                }
                let waiting = Waiting {
                    watch: w.clone(),
                    deadline,
                };
                (
                    now.saturating_add(w.check_after).min(deadline),
                    Some(waiting),
                )
            }
            None => (deadline, None),
        };
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
        let id = st.next;
        st.next += 1;
        let entry = Entry {
            fd,
            cookie,
            ticket: ticket.clone(),
            waiting,
        };
        self.shared.insert(&mut st, at, id, entry);
        drop(st);
        Armed {
            shared: self.shared.clone(),
            id,
            ticket,
            armed: true,
            idle: None,
        }
    }
}

/// One request's deadline. Dropping it (or calling [`Armed::disarm`]) cancels it.
#[derive(Debug)]
pub struct Armed {
    shared: Arc<Shared>,
    id: u64,
    ticket: Arc<Ticket>,
    armed: bool,
    /// Once the head arrived: the idle timeout and when the deadline was last moved.
    idle: Option<(Duration, Instant)>,
}

impl Armed {
    /// The response head arrived: the peer answered, the liveness checks end, and from now
    /// on the deadline is `idle` after the last read.
    pub fn head_arrived(&mut self, idle: Duration) {
        let now = Instant::now();
        self.idle = Some((idle, now));
        self.move_to(now + idle, true);
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
            self.move_to(now + idle, false);
        }
    }

    fn move_to(&mut self, at: Instant, head: bool) {
        if !self.armed {
            return;
        }
        let mut st = self.shared.lock();
        let key = (self.ticket.at.load(Ordering::Relaxed), self.id);
        // Gone: the deadline already passed (the socket is being shut down).
        if let Some(mut entry) = st.queue.remove(&key) {
            if head {
                if let Some(w) = entry.waiting.take() {
                    w.watch.alive_at(ns(Instant::now()));
                }
            }
            self.shared.insert(&mut st, ns(at), self.id, entry);
        } else {
            self.armed = false;
        }
    }

    /// The response head arrived (or the request ended): cancel the deadline.
    pub fn disarm(&mut self) {
        if std::mem::take(&mut self.armed) {
            let mut st = self.shared.lock();
            let key = (self.ticket.at.load(Ordering::Relaxed), self.id);
            st.queue.remove(&key);
        }
    }

    /// True when the deadline passed before the response head arrived.
    pub fn fired(&self) -> bool {
        self.ticket.outcome.load(Ordering::Acquire) == EXPIRED
    }

    /// True when the peer was found gone before the response head arrived.
    pub fn peer_gone(&self) -> bool {
        self.ticket.outcome.load(Ordering::Acquire) == PEER_GONE
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
        assert!(st.wake_at.is_some_and(|w| w <= ns(Instant::now() + TICK)));
        assert_eq!(st.queue.len(), 1);
    }

    /// A watch (connect timeout 200 ms: checks after 100 ms) whose liveness dial shows
    /// `peer`; the number of dials made.
    fn watch(d: &Deadlines, peer: PeerState) -> (Arc<Watch>, Arc<std::sync::atomic::AtomicUsize>) {
        let w = d.watch(Duration::from_millis(200));
        let dials = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = dials.clone();
        w.set_probe(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { peer })
        }));
        (w, dials)
    }

    fn silent(s: &tokio::net::TcpStream) -> bool {
        let mut buf = [0u8; 1];
        matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    #[test]
    fn the_first_check_comes_after_half_the_connect_timeout_within_bounds() {
        for (connect_ms, want_ms) in [
            (10_000, 1000),
            (3000, 1000),
            (2000, 1000),
            (1000, 500),
            (300, 150),
            (100, 100),
            (1, 100),
        ] {
            assert_eq!(
                check_after(Duration::from_millis(connect_ms)),
                Duration::from_millis(want_ms),
                "connect {connect_ms} ms"
            );
        }
    }

    #[tokio::test]
    async fn a_liveness_dial_that_finds_the_peer_gone_ends_the_wait() {
        let d = Deadlines::start().unwrap();
        let (w, dials) = watch(&d, PeerState::Gone);
        let (mut client, _server) = pair().await;
        // A pooled connection: only the liveness check can tell the peer is gone.
        let armed = d.arm(
            client.as_raw_fd(),
            false,
            Duration::from_secs(3600),
            Some(&w),
        );
        let mut buf = [0u8; 1];
        let n = client.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "the read ended long before the hour-long deadline");
        assert!(armed.peer_gone());
        assert!(!armed.fired());
        assert_eq!(dials.load(Ordering::SeqCst), 1);
        assert_eq!(w.generation(), 1, "the pool is not reused");
    }

    #[tokio::test]
    async fn a_peer_that_answers_keeps_slow_requests_waiting_with_one_dial_for_all() {
        let d = Deadlines::start().unwrap();
        let (w, dials) = watch(&d, PeerState::Answered);
        let mut held = Vec::new();
        for _ in 0..20 {
            let (client, server) = pair().await;
            let armed = d.arm(
                client.as_raw_fd(),
                false,
                Duration::from_secs(3600),
                Some(&w),
            );
            held.push((client, server, armed));
        }
        // Past the first check of every request, before the recheck.
        tokio::time::sleep(Duration::from_millis(600)).await;
        for (client, _, armed) in &held {
            assert!(silent(client), "a live peer's request was cut");
            assert!(!armed.peer_gone() && !armed.fired());
        }
        let n = dials.load(Ordering::SeqCst);
        assert!(
            (1..=2).contains(&n),
            "{n} liveness dials for 20 waiting requests"
        );
        assert_eq!(w.generation(), 0);
    }

    #[tokio::test]
    async fn fast_requests_and_new_connections_need_no_liveness_dial() {
        let d = Deadlines::start().unwrap();
        let (w, dials) = watch(&d, PeerState::Gone);
        // The head comes before the check.
        let (client, _server) = pair().await;
        let mut fast = d.arm(
            client.as_raw_fd(),
            false,
            Duration::from_secs(3600),
            Some(&w),
        );
        fast.head_arrived(Duration::from_secs(3600));
        // A connection dialled for this request: the peer just answered.
        let (fresh, _fresh_server) = pair().await;
        let slow = d.arm(fresh.as_raw_fd(), true, Duration::from_secs(3600), Some(&w));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(dials.load(Ordering::SeqCst), 0);
        assert!(silent(&client) && silent(&fresh));
        assert!(!slow.peer_gone());
    }

    #[tokio::test]
    async fn a_dial_that_finds_the_peer_gone_ends_that_peers_waiting_requests_only() {
        let d = Deadlines::start().unwrap();
        let (a, _) = watch(&d, PeerState::Answered);
        let (b, _) = watch(&d, PeerState::Answered);
        let (a1, _s1) = pair().await;
        let (a_stream, _s2) = pair().await;
        let (b1, _s3) = pair().await;
        let long = Duration::from_secs(3600);
        let w_a1 = d.arm(a1.as_raw_fd(), false, long, Some(&a));
        let mut w_stream = d.arm(a_stream.as_raw_fd(), false, long, Some(&a));
        w_stream.head_arrived(long);
        let w_b1 = d.arm(b1.as_raw_fd(), false, long, Some(&b));
        let dial_began = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Sent on a pooled connection while the dial waited: no answer since either.
        let (a2, _s4) = pair().await;
        let w_a2 = d.arm(a2.as_raw_fd(), false, long, Some(&a));
        // Pingora's dial to A got no answer.
        a.dialled(dial_began, PeerState::Gone);
        assert!(w_a1.peer_gone(), "a request to the gone peer still waits");
        assert!(
            w_a2.peer_gone(),
            "a request sent during the dial still waits"
        );
        assert!(
            !w_stream.peer_gone() && silent(&a_stream),
            "a stream was cut"
        );
        assert!(
            !w_b1.peer_gone() && silent(&b1),
            "another endpoint's request was cut"
        );
        assert_eq!((a.generation(), b.generation()), (1, 0));
    }

    #[tokio::test]
    async fn an_answer_since_the_dial_began_or_an_unknown_outcome_condemns_nobody() {
        let d = Deadlines::start().unwrap();
        let (w, _) = watch(&d, PeerState::Answered);
        let (c1, _s1) = pair().await;
        let long = Duration::from_secs(3600);
        let armed = d.arm(c1.as_raw_fd(), false, long, Some(&w));
        // Another request's head arrived while the dial waited: the peer is there.
        let dial_began = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (c2, _s2) = pair().await;
        let mut answered = d.arm(c2.as_raw_fd(), false, long, Some(&w));
        answered.head_arrived(long);
        w.dialled(dial_began, PeerState::Gone);
        // A connection dialled for a request while the dial waited: the peer is there.
        let dial_began = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (c3, _s3) = pair().await;
        let fresh = d.arm(c3.as_raw_fd(), true, long, Some(&w));
        w.dialled(dial_began, PeerState::Gone);
        w.dialled(Instant::now(), PeerState::Unknown);
        assert!(!armed.peer_gone() && silent(&c1));
        assert!(!fresh.peer_gone() && silent(&c3));
        assert_eq!(w.generation(), 0);
    }
}
