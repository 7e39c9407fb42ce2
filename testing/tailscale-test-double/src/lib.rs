//! TEST DOUBLE for libtailscale's C API (the functions `libtailscale-sys` binds), so that
//! tailbridge's tsnet backend, FFI included, runs in tests on machines without Go or a
//! tailnet. Linked only through Cargo's `links` override in test invocations
//! (`--config 'target.<triple>.tailscale.rustc-link-lib=["static=tailscale_test_double"]'`).
//!
//! What it does, in place of a real node:
//! - State is `<state_dir>/tailscaled.state`, JSON as tsnet writes it: every start writes a
//!   machine key (`_machinekey`), also one that fails to log in; a successful login adds the
//!   profile (`_current-profile`, `_profiles`).
//! - `tailscale_up` succeeds when the state holds a logged-in profile, or when the auth key
//!   starts with `tskey-` (then it logs in); otherwise it fails with an error message.
//! - Its log lines (`LocalBackend state is …`) go to the descriptor given to
//!   `tailscale_set_logfd`, else to stderr, as the Go library's do.
//! - Where the library would write its own logs, and whether it would upload them, is
//!   recorded in `<state_dir>/test-double-env` (from `TS_LOGS_DIR` and
//!   `TS_NO_LOGS_NO_SUPPORT`; without `TS_LOGS_DIR` the real library uses
//!   `/var/lib/tailscale`).
//! - Every tailnet name resolves to 127.0.0.1: `tailscale_dial` connects to 127.0.0.1:port and
//!   hands back one end of a socketpair, with threads copying bytes (as the Go side does).
//!   Hosts starting with `blackhole` never answer (the real dial has no timeout).
//! - Every dial is appended to `<state_dir>/test-double-dials.log`.
//! - The file `<state_dir>/test-double-offline` simulates losing the tailnet: dials fail and
//!   the LocalAPI status reports `Stopped`.
//! - `tailscale_loopback` serves SOCKS5 (user `tsnet`, password = proxy credential) and the
//!   LocalAPI `/localapi/v0/status` on one loopback port.
//! - The LocalAPI's `POST /localapi/v0/logout` logs the node out (writes
//!   `<state_dir>/test-double-logged-out`) unless the control server is unreachable (the
//!   offline marker), when it answers 500. `tailscale_close` returns 0 either way, as the real
//!   library does, and never logs out by itself.
//! - The file `<state_dir>/test-double-silent` lists ports (one per line) whose peers have
//!   vanished without closing, as a tailnet machine that sleeps, loses power or is
//!   partitioned does (checked against the real library: its socketpair never closes). New
//!   dials to them hang as long as the port is listed (the real dial has no timeout: only the
//!   caller's own timeout ends the wait). Every connection that was open while its port was
//!   listed is dead for good, as a TCP connection whose peer lost its state is: its
//!   socketpair stays open, writes into it are accepted and dropped, and nothing is ever read
//!   back, also after the port is no longer listed. A watcher thread reads the file every
//!   [`VANISH_POLL`], so an idle pooled connection dies too.

// These functions implement a C API: pointer validity is the caller's side of the contract
// written in libtailscale's `tailscale.h`, as for the real library.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// How often the watcher thread looks for vanished peers.
const VANISH_POLL: Duration = Duration::from_millis(50);

const EBADF: c_int = 9;
const ERANGE: c_int = 34;
const IPS: &str = "100.64.0.7,fd7a:115c:a1e0::7";

#[derive(Default, Clone)]
struct Node {
    dir: Option<String>,
    hostname: String,
    authkey: String,
    control_url: String,
    ephemeral: bool,
    up: bool,
    err: String,
    logfd: Option<c_int>,
}

fn nodes() -> &'static Mutex<HashMap<c_int, Node>> {
    static N: OnceLock<Mutex<HashMap<c_int, Node>>> = OnceLock::new();
    N.get_or_init(|| Mutex::new(HashMap::new()))
}

static NEXT: AtomicI32 = AtomicI32::new(1);

fn with<R>(sd: c_int, f: impl FnOnce(&mut Node) -> R) -> Option<R> {
    nodes().lock().ok()?.get_mut(&sd).map(f)
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller passes a NUL-terminated string (C API contract).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn write_out(buf: *mut c_char, len: usize, s: &str) -> c_int {
    if buf.is_null() || len == 0 {
        return ERANGE;
    }
    let bytes = s.as_bytes();
    let n = bytes.len().min(len - 1);
    // SAFETY: buf points to at least `len` writable bytes (C API contract).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, n);
        *buf.add(n) = 0;
    }
    if bytes.len() >= len {
        ERANGE
    } else {
        0
    }
}

fn fail(sd: c_int, msg: &str) -> c_int {
    with(sd, |n| n.err = msg.to_string());
    -1
}

fn dir_of(sd: c_int) -> Option<PathBuf> {
    with(sd, |n| n.dir.clone()).flatten().map(PathBuf::from)
}

fn offline(sd: c_int) -> bool {
    dir_of(sd).is_some_and(|d| d.join("test-double-offline").exists())
}

fn log_dial(sd: c_int, target: &str) {
    if let Some(d) = dir_of(sd) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("test-double-dials.log"))
        {
            let _ = writeln!(f, "{target}");
        }
    }
}

/// Whether the peer on `port` has vanished (listed in `test-double-silent`).
fn silent(dir: Option<&PathBuf>, port: u16) -> bool {
    dir.and_then(|d| std::fs::read_to_string(d.join("test-double-silent")).ok())
        .is_some_and(|s| s.lines().any(|l| l.trim().parse() == Ok(port)))
}

/// Resolve a tailnet name the test double's way: everything is 127.0.0.1.
fn connect(sd: c_int, host: &str, port: u16) -> Result<TcpStream, String> {
    if offline(sd) {
        return Err("tailnet unreachable (test double offline)".into());
    }
    log_dial(sd, &format!("{host}:{port}"));
    if host.starts_with("blackhole") {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    // A vanished peer: the dial hangs (no timeout on the Go side) until it is back.
    while silent(dir_of(sd).as_ref(), port) {
        std::thread::sleep(Duration::from_millis(100));
    }
    TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("dial {host}:{port}: {e}"))
}

/// One open tailnet connection, as the watcher thread sees it.
struct Tracked {
    dir: Option<PathBuf>,
    port: u16,
    dead: Weak<AtomicBool>,
}

fn tracked() -> &'static Mutex<Vec<Tracked>> {
    static T: OnceLock<Mutex<Vec<Tracked>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(Vec::new()))
}

/// Register a connection: it dies when its port is listed in `test-double-silent`, whether
/// or not bytes move on it then. Starts the watcher thread on first use.
fn track(dir: Option<PathBuf>, port: u16) -> Arc<AtomicBool> {
    static WATCHER: OnceLock<()> = OnceLock::new();
    WATCHER.get_or_init(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(VANISH_POLL);
            if let Ok(mut conns) = tracked().lock() {
                conns.retain(|c| match c.dead.upgrade() {
                    Some(dead) => {
                        if silent(c.dir.as_ref(), c.port) {
                            dead.store(true, Ordering::SeqCst);
                        }
                        true
                    }
                    None => false,
                });
            }
        });
    });
    let dead = Arc::new(AtomicBool::new(silent(dir.as_ref(), port)));
    if let Ok(mut conns) = tracked().lock() {
        conns.push(Tracked {
            dir,
            port,
            dead: Arc::downgrade(&dead),
        });
    }
    dead
}

/// Copy `from` to `to` until `from` ends; once the connection is dead, bytes are dropped.
fn copy_unless_dead(
    mut from: impl Read,
    mut to: impl Write,
    dead: &AtomicBool,
    dir: Option<&PathBuf>,
    port: u16,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                // The file is checked too: the watcher may not have looked yet.
                if dead.load(Ordering::SeqCst) || silent(dir, port) {
                    dead.store(true, Ordering::SeqCst);
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn pipe(a: TcpStream, b: UnixStream, dir: Option<PathBuf>, port: u16) {
    let (a2, b2) = match (a.try_clone(), b.try_clone()) {
        (Ok(x), Ok(y)) => (x, y),
        _ => return,
    };
    let dead = track(dir.clone(), port);
    let (dead2, dir2) = (dead.clone(), dir.clone());
    std::thread::spawn(move || {
        copy_unless_dead(&a, &b, &dead, dir.as_ref(), port);
        // A vanished peer never closes: the Go side keeps the socketpair open too.
        if !dead.load(Ordering::SeqCst) {
            let _ = b.shutdown(Shutdown::Write);
        }
    });
    std::thread::spawn(move || {
        copy_unless_dead(&b2, &a2, &dead2, dir2.as_ref(), port);
        let _ = a2.shutdown(Shutdown::Write);
    });
}

#[no_mangle]
pub extern "C" fn tailscale_new() -> c_int {
    let sd = NEXT.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut m) = nodes().lock() {
        m.insert(sd, Node::default());
    }
    sd
}

#[no_mangle]
pub extern "C" fn tailscale_set_dir(sd: c_int, dir: *const c_char) -> c_int {
    let d = cstr(dir);
    with(sd, |n| n.dir = Some(d)).map_or(EBADF, |_| 0)
}

#[no_mangle]
pub extern "C" fn tailscale_set_hostname(sd: c_int, hostname: *const c_char) -> c_int {
    let h = cstr(hostname);
    with(sd, |n| n.hostname = h).map_or(EBADF, |_| 0)
}

#[no_mangle]
pub extern "C" fn tailscale_set_authkey(sd: c_int, authkey: *const c_char) -> c_int {
    let k = cstr(authkey);
    with(sd, |n| n.authkey = k).map_or(EBADF, |_| 0)
}

#[no_mangle]
pub extern "C" fn tailscale_set_control_url(sd: c_int, url: *const c_char) -> c_int {
    let u = cstr(url);
    with(sd, |n| n.control_url = u).map_or(EBADF, |_| 0)
}

#[no_mangle]
pub extern "C" fn tailscale_set_ephemeral(sd: c_int, e: c_int) -> c_int {
    with(sd, |n| n.ephemeral = e != 0).map_or(EBADF, |_| 0)
}

#[no_mangle]
pub extern "C" fn tailscale_set_logfd(sd: c_int, fd: c_int) -> c_int {
    with(sd, |n| n.logfd = Some(fd)).map_or(EBADF, |_| 0)
}

/// Write one Go-style log line where the library would.
fn golog(sd: c_int, line: &str) {
    use std::os::fd::FromRawFd;
    let fd = with(sd, |n| n.logfd).flatten();
    let text = format!("{line}\n");
    match fd {
        Some(fd) if fd >= 0 => {
            // SAFETY: the caller handed this descriptor to the library for its log lines;
            // ManuallyDrop keeps it open after the write.
            let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
            let _ = f.write_all(text.as_bytes());
        }
        Some(_) => {}
        None => eprint!("{text}"),
    }
}

/// What the state file says: (has a machine key, has a logged-in profile).
fn read_state(dir: &std::path::Path) -> (bool, bool) {
    let text = std::fs::read_to_string(dir.join("tailscaled.state")).unwrap_or_default();
    (
        text.contains("\"_machinekey\""),
        text.contains("\"_current-profile\""),
    )
}

#[no_mangle]
pub extern "C" fn tailscale_start(sd: c_int) -> c_int {
    with(sd, |_| ()).map_or(EBADF, |_| 0)
}

#[no_mangle]
pub extern "C" fn tailscale_up(sd: c_int) -> c_int {
    let Some(node) = with(sd, |n| n.clone()) else {
        return EBADF;
    };
    let Some(dir) = node.dir.clone().map(PathBuf::from) else {
        return fail(sd, "no state directory set");
    };
    let logs_dir = std::env::var("TS_LOGS_DIR").unwrap_or_else(|_| "/var/lib/tailscale".into());
    let upload = std::env::var("TS_NO_LOGS_NO_SUPPORT").map_or(true, |v| v != "1");
    let _ = std::fs::write(
        dir.join("test-double-env"),
        format!("logs_dir={logs_dir}\nlog_upload={upload}\n"),
    );
    let (_, logged_in) = read_state(&dir);
    golog(sd, "LocalBackend state is NoState");
    if !logged_in {
        // Every start leaves a machine key behind, also one that never logs in.
        let _ = std::fs::write(dir.join("tailscaled.state"), "{\"_machinekey\":\"bWs=\"}\n");
        golog(sd, "LocalBackend state is NeedsLogin");
        if !node.authkey.starts_with("tskey-") {
            return fail(
                sd,
                "invalid key: unable to validate API key (test double wants tskey-…)",
            );
        }
        let doc = format!(
            "{{\"_machinekey\":\"bWs=\",\"_current-profile\":\"cHJvZmlsZS0x\",\"_profiles\":\"e30=\",\"hostname\":\"{}\",\"control\":\"{}\",\"ephemeral\":{}}}\n",
            node.hostname, node.control_url, node.ephemeral
        );
        if let Err(e) = std::fs::write(dir.join("tailscaled.state"), doc) {
            return fail(sd, &format!("cannot write state: {e}"));
        }
    }
    golog(sd, "LocalBackend state is Running");
    with(sd, |n| n.up = true);
    0
}

#[no_mangle]
pub extern "C" fn tailscale_close(sd: c_int) -> c_int {
    // The real library returns 0 whether or not an ephemeral logout reached the control
    // server; logging out is the LocalAPI's job here.
    match nodes().lock().ok().and_then(|mut m| m.remove(&sd)) {
        Some(_) => 0,
        None => EBADF,
    }
}

#[no_mangle]
pub extern "C" fn tailscale_dial(
    sd: c_int,
    network: *const c_char,
    addr: *const c_char,
    conn_out: *mut c_int,
) -> c_int {
    let (network, addr) = (cstr(network), cstr(addr));
    if with(sd, |n| n.up) != Some(true) {
        return fail(sd, "tsnet: not running");
    }
    if network != "tcp" || conn_out.is_null() {
        return fail(sd, "test double dials tcp only");
    }
    let Some((host, port)) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
    else {
        return fail(sd, &format!("bad address {addr}"));
    };
    let tcp = match connect(sd, &host, port) {
        Ok(s) => s,
        Err(e) => return fail(sd, &e),
    };
    let Ok((ours, theirs)) = UnixStream::pair() else {
        return fail(sd, "socketpair failed");
    };
    pipe(tcp, theirs, dir_of(sd), port);
    // SAFETY: conn_out is non-null (checked) and points to a writable tailscale_conn.
    unsafe { *conn_out = ours.into_raw_fd() };
    0
}

#[no_mangle]
pub extern "C" fn tailscale_getips(sd: c_int, buf: *mut c_char, buflen: usize) -> c_int {
    if with(sd, |_| ()).is_none() {
        return EBADF;
    }
    write_out(buf, buflen, IPS)
}

#[no_mangle]
pub extern "C" fn tailscale_errmsg(sd: c_int, buf: *mut c_char, buflen: usize) -> c_int {
    match with(sd, |n| n.err.clone()) {
        Some(e) => write_out(buf, buflen, &e),
        None => EBADF,
    }
}

fn cred() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:032x}", t ^ 0x5a5a_1234_abcd_0000_ffff_0000_1111_2222)
}

fn serve_socks(sd: c_int, mut s: TcpStream, cred: &str) -> std::io::Result<()> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let mut methods = vec![0u8; usize::from(h[1])];
    s.read_exact(&mut methods)?;
    if !methods.contains(&2) {
        s.write_all(&[5, 0xff])?;
        return Ok(());
    }
    s.write_all(&[5, 2])?;
    let mut v = [0u8; 2];
    s.read_exact(&mut v)?;
    let mut user = vec![0u8; usize::from(v[1])];
    s.read_exact(&mut user)?;
    let mut l = [0u8; 1];
    s.read_exact(&mut l)?;
    let mut pass = vec![0u8; usize::from(l[0])];
    s.read_exact(&mut pass)?;
    if user != b"tsnet" || pass != cred.as_bytes() {
        s.write_all(&[1, 1])?;
        return Ok(());
    }
    s.write_all(&[1, 0])?;
    let mut req = [0u8; 4];
    s.read_exact(&mut req)?;
    let host = match req[3] {
        1 => {
            let mut ip = [0u8; 4];
            s.read_exact(&mut ip)?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let mut n = [0u8; 1];
            s.read_exact(&mut n)?;
            let mut name = vec![0u8; usize::from(n[0])];
            s.read_exact(&mut name)?;
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => {
            s.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0])?;
            return Ok(());
        }
    };
    let mut p = [0u8; 2];
    s.read_exact(&mut p)?;
    match connect(sd, &host, u16::from_be_bytes(p)) {
        Ok(up) => {
            s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])?;
            let (mut a, mut b) = (s.try_clone()?, up.try_clone()?);
            let (mut s, mut up) = (s, up);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(Shutdown::Write);
            });
            let _ = std::io::copy(&mut up, &mut s);
            let _ = s.shutdown(Shutdown::Write);
        }
        Err(_) => s.write_all(&[5, 4, 0, 1, 0, 0, 0, 0, 0, 0])?,
    }
    Ok(())
}

fn serve_localapi(sd: c_int, s: TcpStream, cred: &str) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut sec = false;
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("sec-tailscale:") && lower.contains("localapi") {
            sec = true;
        }
        if lower.starts_with("authorization:") {
            auth = h[14..].trim().to_string();
        }
    }
    // Basic base64(":" + cred) check, decoded by hand to stay dependency-free.
    let ok_auth = auth
        .strip_prefix("Basic ")
        .map(decode_b64)
        .is_some_and(|d| d.ends_with(&format!(":{cred}")));
    let mut s = s;
    if line.starts_with("POST /localapi/v0/logout") && sec && ok_auth {
        if offline(sd) {
            let msg = "logout: control server unreachable (test double offline)";
            write!(s, "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{msg}", msg.len())?;
            return Ok(());
        }
        if let Some(d) = dir_of(sd) {
            let _ = std::fs::write(d.join("test-double-logged-out"), "logged out\n");
            let _ = std::fs::remove_file(d.join("tailscaled.state"));
        }
        s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
        return Ok(());
    }
    if !line.starts_with("GET /localapi/v0/status") || !sec || !ok_auth {
        s.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
        return Ok(());
    }
    let state = if offline(sd) { "Stopped" } else { "Running" };
    let host = with(sd, |n| n.hostname.clone()).unwrap_or_default();
    let body = format!(
        "{{\"BackendState\":\"{state}\",\"TailscaleIPs\":[\"100.64.0.7\",\"fd7a:115c:a1e0::7\"],\"Self\":{{\"HostName\":\"{host}\",\"Online\":{}}}}}",
        state == "Running"
    );
    write!(s, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())?;
    Ok(())
}

fn decode_b64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let Some(v) = T.iter().position(|t| *t == c) else {
            break;
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[no_mangle]
pub extern "C" fn tailscale_loopback(
    sd: c_int,
    addr_out: *mut c_char,
    addrlen: usize,
    proxy_cred_out: *mut c_char,
    local_api_cred_out: *mut c_char,
) -> c_int {
    if with(sd, |n| n.up) != Some(true) {
        return fail(sd, "tsnet: not running");
    }
    let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
        return fail(sd, "cannot listen");
    };
    let Ok(addr) = listener.local_addr() else {
        return fail(sd, "no address");
    };
    let proxy = cred();
    let local = format!(
        "{:032x}",
        u128::from_str_radix(&proxy, 16)
            .unwrap_or(1)
            .wrapping_mul(31)
    );
    let (p2, l2) = (proxy.clone(), local.clone());
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let (p, l) = (p2.clone(), l2.clone());
            std::thread::spawn(move || {
                let mut first = [0u8; 1];
                if s.peek(&mut first).is_ok() {
                    let _ = if first[0] == 5 {
                        serve_socks(sd, s, &p)
                    } else {
                        serve_localapi(sd, s, &l)
                    };
                }
            });
        }
    });
    let rc = write_out(addr_out, addrlen, &addr.to_string());
    write_out(proxy_cred_out, 33, &proxy);
    write_out(local_api_cred_out, 33, &local);
    rc
}

#[no_mangle]
pub extern "C" fn tailscale_listen(
    sd: c_int,
    _n: *const c_char,
    _a: *const c_char,
    _l: *mut c_int,
) -> c_int {
    fail(sd, "listen is not supported by the test double")
}

#[no_mangle]
pub extern "C" fn tailscale_accept(_l: c_int, _c: *mut c_int) -> c_int {
    -1
}

#[no_mangle]
pub extern "C" fn tailscale_getremoteaddr(
    _l: c_int,
    _c: c_int,
    _b: *mut c_char,
    _n: usize,
) -> c_int {
    -1
}

#[no_mangle]
pub extern "C" fn tailscale_enable_funnel_to_localhost_plaintext_http1(
    sd: c_int,
    _p: c_int,
) -> c_int {
    fail(sd, "funnel is not supported by the test double")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_ports_are_read_from_the_marker_file() {
        let d = std::env::temp_dir().join(format!("tsd-silent-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert!(!silent(Some(&d), 18411));
        std::fs::write(d.join("test-double-silent"), "18411\n").unwrap();
        assert!(silent(Some(&d), 18411));
        assert!(!silent(Some(&d), 18412));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_connection_open_while_its_peer_vanished_stays_dead() {
        let d = std::env::temp_dir().join(format!("tsd-dead-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        // An echo upstream on loopback, piped like a dialled connection.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut &s);
                });
            }
        });
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        pipe(
            TcpStream::connect(("127.0.0.1", port)).unwrap(),
            theirs,
            Some(d.clone()),
            port,
        );
        ours.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 4];
        ours.write_all(b"ping").unwrap();
        ours.read_exact(&mut buf).unwrap();
        // The peer vanishes while the connection is idle, then comes back.
        std::fs::write(d.join("test-double-silent"), format!("{port}\n")).unwrap();
        std::thread::sleep(VANISH_POLL * 4);
        std::fs::remove_file(d.join("test-double-silent")).unwrap();
        // Writes are still accepted; nothing comes back, and the socketpair stays open.
        ours.write_all(b"ping").unwrap();
        let err = ours.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
