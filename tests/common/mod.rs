//! Helpers shared by the integration tests: a real HTTP upstream (hyper) that records what
//! it receives, and the real tailbridge binary started on free loopback ports.

#![allow(dead_code)]

pub mod idp;
pub mod pebble;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Upper bound for waits that only guard against a hang; never a performance assertion.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// Install the crypto provider reqwest needs (the crate is built without a default one).
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client() -> reqwest::Client {
    client_builder().build().unwrap()
}

/// The test client's settings: no redirects followed, every request bounded by HANG_GUARD.
fn client_builder() -> reqwest::ClientBuilder {
    init();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HANG_GUARD)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HashMap<String, Vec<String>>,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

type SseSender = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

/// A real HTTP/1.1 upstream:
/// - `.../sse` answers `text/event-stream` whose events the test pushes with [`Upstream::next_stream`];
/// - `.../accepted` answers 202 with no body;
/// - `...?slow_ms=N` answers after N milliseconds;
/// - anything else answers JSON describing the request, with `Mcp-Session-Id: s-123`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    streams: Arc<Mutex<mpsc::UnboundedReceiver<SseSender>>>,
    pub connections: Arc<Mutex<usize>>,
    /// The accept loop: aborted on drop, so a dropped upstream refuses connections.
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0usize));
        let (stream_tx, stream_rx) = mpsc::unbounded_channel::<SseSender>();
        let (s2, c2) = (seen.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                *c2.lock().unwrap() += 1;
                let seen = s2.clone();
                let stream_tx = stream_tx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        let stream_tx = stream_tx.clone();
                        async move { Ok::<_, Infallible>(answer(req, seen, stream_tx).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            streams: Arc::new(Mutex::new(stream_rx)),
            connections,
            accept,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }

    /// The event sender of the next SSE response the upstream opens.
    pub async fn next_stream(&self) -> SseSender {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Ok(tx) = self.streams.lock().unwrap().try_recv() {
                return tx;
            }
            assert!(
                Instant::now() < deadline,
                "upstream never opened an SSE stream"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stream_tx: mpsc::UnboundedSender<SseSender>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path_and_query: path_and_query.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    if path_and_query.contains("/sse") {
        let (tx, rx) = mpsc::channel(16);
        let _ = stream_tx.send(tx);
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        return Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .header("mcp-session-id", "s-123")
            .header("server", "upstream-test")
            .body(BoxBody::new(body))
            .unwrap();
    }
    if let Some(ms) = path_and_query
        .split_once("slow_ms=")
        .and_then(|(_, v)| v.split('&').next()?.parse().ok())
    {
        // A live upstream that takes its time (a long tool call): the head comes late.
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path_and_query.contains("/hang") {
        // Never answer (the bridge's first-byte deadline must end this).
        std::future::pending::<()>().await;
    }
    if path_and_query.contains("/misdirected") {
        // What an MCP SDK server with DNS-rebinding protection answers a Host it does not know.
        return Response::builder()
            .status(421)
            .body(BoxBody::new(Full::new(Bytes::from_static(
                b"Misdirected Request",
            ))))
            .unwrap();
    }
    if path_and_query.contains("/hop-headers") {
        // An upstream that sends connection-level headers of its own.
        return Response::builder()
            .header("content-type", "application/json")
            .header("connection", "close")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "close")
            .header("server", "upstream-test")
            .body(BoxBody::new(Full::new(Bytes::from_static(b"{}"))))
            .unwrap();
    }
    if path_and_query.contains("/accepted") {
        return Response::builder()
            .status(202)
            .body(BoxBody::new(Full::new(Bytes::new())))
            .unwrap();
    }
    let doc = serde_json::json!({
        "method": method,
        "path": path_and_query,
        "body_len": body.len(),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("mcp-session-id", "s-123")
        .header("server", "upstream-test")
        .body(BoxBody::new(Full::new(Bytes::from(doc.to_string()))))
        .unwrap()
}

/// Send a raw HTTP/1.1 request (for targets a URL library would normalise) and return the
/// status code.
pub async fn raw_status(port: u16, request_line: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("{request_line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Wait until `/metrics` contains every needle (metrics are recorded in the logging phase,
/// which runs after the client already has its response).
pub async fn wait_for_metrics(b: &Bridge, needles: &[&str]) -> String {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let m = client()
            .get(b.admin("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let missing: Vec<&&str> = needles.iter().filter(|n| !m.contains(**n)).collect();
        if missing.is_empty() {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {missing:?}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll a health URL until it answers `status`; returns its JSON body.
pub async fn wait_for_health(url: &str, status: u16) -> serde_json::Value {
    let c = client();
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let r = c.get(url).send().await.unwrap();
        if r.status() == status {
            return r.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "{url} never answered {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client whose connections come from the loopback source address `local` (any address
/// in 127.0.0.0/8 works on Linux without configuration).
pub fn client_from(local: std::net::IpAddr) -> reqwest::Client {
    client_builder().local_address(local).build().unwrap()
}

/// How many times each status code came back from the tasks of `set`.
pub async fn tally(
    mut set: tokio::task::JoinSet<Vec<u16>>,
) -> std::collections::BTreeMap<u16, usize> {
    let mut by_status = std::collections::BTreeMap::new();
    while let Some(codes) = set.join_next().await {
        for code in codes.unwrap() {
            *by_status.entry(code).or_insert(0) += 1;
        }
    }
    by_status
}

/// POST `{}` to `url` through `c` with `token` as bearer; the status code.
pub async fn bearer_status(c: &reqwest::Client, url: &str, token: &str) -> u16 {
    c.post(url)
        .bearer_auth(token)
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Worker tasks POSTing `{}` to one URL until stopped, counting the answers: the load a
/// reload must not disturb. Failures are printed as they happen.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<std::sync::atomic::AtomicUsize>,
    failed: Arc<std::sync::atomic::AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// One worker per entry: its client, and whether each of its requests asks for
    /// `Connection: close` (a new connection per request).
    pub fn start(url: &str, workers: Vec<(reqwest::Client, bool)>) -> Load {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers = workers
            .into_iter()
            .map(|(c, close)| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.to_string());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let mut req = c.post(&url).body("{}");
                        if close {
                            req = req.header("connection", "close");
                        }
                        match req.send().await {
                            Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                            Ok(r) => {
                                eprintln!("load: HTTP {}", r.status());
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(e) => {
                                eprintln!("load: {e}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            workers,
        }
    }

    /// Stop the workers; (requests answered 200, requests that failed).
    pub async fn stop(self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Run `tailbridge reload --config cfg`, its output and the new process's (which inherits
/// the command's stdio) going to the file `log`; the command's exit status.
pub async fn reload(cfg: PathBuf, log: PathBuf) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::create(log).unwrap();
        Command::new(bin())
            .args(["reload", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .status()
            .unwrap()
    })
    .await
    .unwrap()
}

/// POST `{}` to `url` with a fresh client; the status code.
pub async fn post_status(url: &str) -> u16 {
    client()
        .post(url)
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// GET `url` and parse its JSON body.
pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// POST `{}` to the bridge's `/mcp/a` with a bearer token.
pub async fn post_bearer(b: &Bridge, token: &str) -> reqwest::Response {
    client()
        .post(b.url("/mcp/a"))
        .bearer_auth(token)
        .body("{}")
        .send()
        .await
        .unwrap()
}

/// The status of `post_bearer`.
pub async fn post_with_token(b: &Bridge, token: &str) -> u16 {
    bearer_status(&client(), &b.url("/mcp/a"), token).await
}

/// A fake upstream that reads one request per connection and drops the connection without
/// answering. Counts the requests whose first bytes start with `prefix` (health probes
/// connect and send nothing, so they are not counted).
pub async fn request_swallower(
    prefix: &'static [u8],
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            if let Ok(n) = s.read(&mut buf).await {
                if n > 0 && buf[..n].starts_with(prefix) {
                    s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    });
    (addr, seen)
}

/// Send one SSE event.
pub async fn send_event(tx: &SseSender, data: &str) {
    tx.send(Ok(Frame::data(Bytes::from(format!("data: {data}\n\n")))))
        .await
        .expect("stream closed");
}

/// The tailbridge binary, started with a config written to a temp dir.
pub struct Bridge {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: PathBuf,
    log: PathBuf,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tailbridge")
}

/// A fresh temp dir for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir =
        std::env::temp_dir().join(format!("tailbridge-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Bridge {
    /// Start tailbridge. `body` is the YAML after the `server:`/`admin:` sections, which this
    /// function writes itself (free ports, pid and upgrade-socket paths in the temp dir).
    pub async fn start(server_extra: &str, body: &str) -> Bridge {
        Self::start_with_env(server_extra, body, &[]).await
    }

    /// Start with TLS on the main listener: readiness is judged on the admin listener only.
    pub async fn start_tls(server_extra: &str, body: &str) -> Bridge {
        Self::admin_ready(server_extra, body, &[]).await
    }

    /// Start a bridge whose main listener a plain probe cannot use (TLS, or the PROXY
    /// protocol): readiness is judged on the admin listener only.
    pub async fn admin_ready(server_extra: &str, body: &str, env: &[(&str, &str)]) -> Bridge {
        Self::launch(server_extra, body, env, false, None).await
    }

    /// Start with TLS on a port chosen by the caller (an ACME test CA must know it first).
    pub async fn start_tls_on(port: u16, body: &str) -> Bridge {
        Self::launch("", body, &[], false, Some(port)).await
    }

    /// `start_tls_on` with extra environment variables.
    pub async fn launch_with_env_on(port: u16, body: &str, env: &[(&str, &str)]) -> Bridge {
        Self::launch("", body, env, false, Some(port)).await
    }

    /// Start on a port chosen by the caller (an IdP must know the callback URL first).
    pub async fn start_on(
        port: u16,
        server_extra: &str,
        body: &str,
        env: &[(&str, &str)],
    ) -> Bridge {
        Self::launch(server_extra, body, env, true, Some(port)).await
    }

    pub async fn start_with_env(server_extra: &str, body: &str, env: &[(&str, &str)]) -> Bridge {
        Self::launch(server_extra, body, env, true, None).await
    }

    async fn launch(
        server_extra: &str,
        body: &str,
        env: &[(&str, &str)],
        plain: bool,
        port: Option<u16>,
    ) -> Bridge {
        let dir = temp_dir("bridge");
        let port = port.unwrap_or_else(free_port);
        let admin_port = free_port();
        // Bodies may refer to the bridge's own port (for public URLs).
        let body = body.replace("{BRIDGE_PORT}", &port.to_string());
        let server_extra = server_extra.replace("{BRIDGE_PORT}", &port.to_string());
        let yaml = format!(
            "server:\n  listen: \"127.0.0.1:{port}\"\n  pid_file: \"{d}/tb.pid\"\n  upgrade_sock: \"{d}/tb.sock\"\n  grace_period: 20s\n  shutdown_timeout: 1s\n{server_extra}admin:\n  listen: \"127.0.0.1:{admin_port}\"\n{body}",
            d = dir.display()
        );
        let cfg = dir.join("config.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let log = dir.join("stderr.log");
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut b = Bridge {
            child,
            port,
            admin_port,
            dir,
            log,
        };
        b.wait_ready(plain).await;
        b
    }

    async fn wait_ready(&mut self, plain: bool) {
        let c = client();
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tailbridge exited early with {status}:\n{}", self.stderr());
            }
            if let Ok(r) = c.get(self.admin("/livez")).send().await {
                if r.status() == 200 && !plain {
                    return;
                }
                if r.status() == 200 {
                    if let Ok(r) = c.get(self.url("/livez")).send().await {
                        if r.status() == 200 {
                            return;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "tailbridge never became ready:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `needle`; returns the log at that point.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let log = self.stderr();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never showed `{needle}`:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Send a signal to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the binary with `args` and a config text; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], config: Option<&str>) -> (i32, String, String) {
    let dir = temp_dir("cli");
    let mut cmd = Command::new(bin());
    if let Some(text) = config {
        let p = dir.join("config.yaml");
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        cmd.arg("--config").arg(p);
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A self-signed certificate for `localhost`/127.0.0.1 (openssl), as (cert, key) paths.
pub fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
