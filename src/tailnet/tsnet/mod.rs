//! `tsnet` mode: an embedded tailnet node through libtailscale.
//!
//! libtailscale's calls block (and its dial has no timeout), so they run on threads owned by
//! this backend: one thread brings the node up, and a bounded pool of dial threads serves
//! dials. A dial waits in the caller's (async) timeout; a connection that arrives after its
//! caller gave up is closed by the pool thread. Each target may hold at most a few dial
//! threads, so one unreachable upstream cannot stall the others.
//!
//! reqwest reaches the tailnet through the node's loopback SOCKS5 proxy; the node's state is
//! read from its LocalAPI (`/localapi/v0/status`) for `/healthz`.
//!
//! The node keeps to its state directory: its own logs go to `<state_dir>/logs`
//! (`TS_LOGS_DIR`; the library's default is `/var/lib/tailscale`, which a sandboxed unit or a
//! read-only container cannot create), upload to Tailscale's log service is off unless
//! `tailnet.log_upload` (`TS_NO_LOGS_NO_SUPPORT`), and its log lines go through the `log`
//! crate under target `tailbridge::tsnet` at debug level (`tailscale_set_logfd`).

mod ffi;
mod oauth;

use super::{Connector, DialError, TailnetConn, TailnetStatus};
use crate::config::{Tailnet, TailnetMode};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Dial threads in the pool.
const DIAL_THREADS: usize = 8;
/// Dials that may wait for a thread before new ones are refused.
const DIAL_QUEUE: usize = 64;
/// Dial threads one target may occupy at once; more dials to it wait for a slot (within
/// their connect timeout), as they would for a connection pool.
const DIALS_PER_TARGET: usize = 3;
/// The log target of the library's own log lines.
pub const GO_LOG_TARGET: &str = "tailbridge::tsnet";
/// How long start-up waits for the node to come up.
const UP_TIMEOUT: Duration = Duration::from_secs(90);

/// Why the embedded node could not start.
#[derive(Debug, thiserror::Error)]
pub enum TsnetError {
    #[error("tailnet.state_dir {dir}: {source}")]
    StateDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tailnet: no auth key and no saved node state in {dir}: {why} (the first start needs tailnet.authkey_env or authkey_file)")]
    NoKey { dir: String, why: String },
    #[error("tailnet.authkey: {0}")]
    Secret(#[from] crate::config::secrets::SecretError),
    #[error("tailnet: {0}")]
    Ffi(#[from] ffi::FfiError),
    #[error("tailnet: the node did not come up within {0:?}")]
    UpTimeout(Duration),
    #[error("tailnet.client_secret: {0}")]
    OAuthKey(#[from] oauth::OAuthKeyError),
}

impl TsnetError {
    /// True for problems the operator fixes in the config or its secrets (exit code 64).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            TsnetError::NoKey { .. }
                | TsnetError::Secret(_)
                | TsnetError::OAuthKey(oauth::OAuthKeyError::BadSecret)
        )
    }
}

type DialReply = tokio::sync::oneshot::Sender<Result<std::os::fd::OwnedFd, ffi::FfiError>>;

struct Job {
    addr: String,
    reply: DialReply,
    /// The target's dial slot: released when the library returns, not when the caller
    /// gives up (the thread is busy until then).
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// The embedded node as a connector.
pub struct Tsnet {
    server: Arc<ffi::Server>,
    jobs: SyncSender<Job>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    loopback: (String, String, String),
    http: reqwest::Client,
    connected: AtomicBool,
    reason: Mutex<Option<String>>,
    ephemeral: bool,
    closed: AtomicBool,
    pub ips: Vec<String>,
}

impl std::fmt::Debug for Tsnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tsnet").field("ips", &self.ips).finish()
    }
}

/// Whether the state directory holds a logged-in node: tsnet's `tailscaled.state` with a
/// current profile. A first start that never logged in leaves a state file with only a
/// machine key, which is not enough to start without an auth key.
fn has_state(dir: &std::path::Path) -> bool {
    std::fs::read(dir.join("tailscaled.state"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.get("_current-profile")
                .and_then(|p| p.as_str())
                .map(|p| !p.is_empty())
        })
        .unwrap_or(false)
}

/// Route the library's log lines into the `log` crate: a pipe whose read end a thread reads
/// line by line.
fn route_go_logs(server: &ffi::Server) -> Result<(), TsnetError> {
    let (reader, writer) =
        std::os::unix::net::UnixStream::pair().map_err(|source| TsnetError::StateDir {
            dir: "(log pipe)".into(),
            source,
        })?;
    server.set_logfd(std::os::fd::OwnedFd::from(writer))?;
    let _ = std::thread::Builder::new()
        .name("tsnet-log".into())
        .spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                log::debug!(target: GO_LOG_TARGET, "{}", line.trim_end());
            }
        });
    Ok(())
}

impl Tsnet {
    /// Configure the node and bring it up (blocks up to [`UP_TIMEOUT`]).
    pub fn start(cfg: &Tailnet) -> Result<Tsnet, TsnetError> {
        let dir = cfg.state_dir.display().to_string();
        std::fs::create_dir_all(&cfg.state_dir).map_err(|source| TsnetError::StateDir {
            dir: dir.clone(),
            source,
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700));
        }
        let key = match (&cfg.authkey, &cfg.client_secret) {
            (_, Some(src)) if !has_state(&cfg.state_dir) => {
                let secret = src.resolve()?;
                let api = cfg
                    .api_url
                    .as_ref()
                    .map(|u| u.as_str().to_string())
                    .unwrap_or_else(|| crate::config::tailnet::DEFAULT_TAILSCALE_API.to_string());
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| TsnetError::StateDir {
                        dir: dir.clone(),
                        source,
                    })?;
                let (tags, eph) = (cfg.tags.clone(), cfg.ephemeral);
                // Its own thread and runtime: this runs before pingora's runtimes exist.
                let minted = std::thread::scope(|s| {
                    s.spawn(|| rt.block_on(oauth::mint_key(&api, secret.expose(), &tags, eph)))
                        .join()
                })
                .map_err(|_| oauth::OAuthKeyError::Api {
                    step: "auth key creation",
                    reason: "worker thread panicked".into(),
                })??;
                log::info!(
                    "minted a tagged auth key ({}) from the OAuth client secret",
                    cfg.tags.join(",")
                );
                Some(crate::config::secrets::SecretSource::Inline(minted).resolve()?)
            }
            (_, Some(_)) => None,
            (Some(src), None) => match src.resolve() {
                Ok(k) => Some(k),
                // The key is only needed until the node has state.
                Err(_) if has_state(&cfg.state_dir) => None,
                Err(e) => {
                    return Err(TsnetError::NoKey {
                        dir,
                        why: format!("tailnet.authkey: {e}"),
                    })
                }
            },
            (None, None) => None,
        };
        if key.is_none() && !has_state(&cfg.state_dir) {
            return Err(TsnetError::NoKey {
                dir,
                why: "no authkey_env or authkey_file configured".into(),
            });
        }
        // Where the library keeps its own files, and whether it uploads logs: read from the
        // environment when the server starts (before pingora's threads exist).
        let logs_dir = cfg.state_dir.join("logs");
        let _ = std::fs::create_dir_all(&logs_dir);
        std::env::set_var("TS_LOGS_DIR", &logs_dir);
        if cfg.log_upload {
            std::env::remove_var("TS_NO_LOGS_NO_SUPPORT");
        } else {
            std::env::set_var("TS_NO_LOGS_NO_SUPPORT", "1");
        }
        let server = Arc::new(ffi::Server::new());
        route_go_logs(&server)?;
        server.set_dir(&dir)?;
        server.set_hostname(&cfg.hostname)?;
        server.set_ephemeral(cfg.ephemeral)?;
        if let Some(k) = &key {
            server.set_authkey(k.expose())?;
        }
        if let Some(u) = &cfg.control_url {
            server.set_control_url(u.as_str())?;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = server.clone();
        std::thread::Builder::new()
            .name("tsnet-up".into())
            .spawn(move || {
                let _ = tx.send(s2.up());
            })
            .map_err(|source| TsnetError::StateDir {
                dir: dir.clone(),
                source,
            })?;
        match rx.recv_timeout(UP_TIMEOUT) {
            Ok(r) => r?,
            Err(_) => {
                let _ = server.close();
                return Err(TsnetError::UpTimeout(UP_TIMEOUT));
            }
        }
        let ips = server.ips().unwrap_or_default();
        let loopback = server.loopback()?;
        let (jobs, rx) = sync_channel::<Job>(DIAL_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..DIAL_THREADS {
            let (rx, s) = (rx.clone(), server.clone());
            std::thread::Builder::new()
                .name(format!("tsnet-dial-{i}"))
                .spawn(move || dial_worker(&rx, &s))
                .map_err(|source| TsnetError::StateDir {
                    dir: dir.clone(),
                    source,
                })?;
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        log::info!(
            "tailnet node {} is up, addresses {}",
            cfg.hostname,
            if ips.is_empty() {
                "(none yet)".to_string()
            } else {
                ips.join(", ")
            }
        );
        Ok(Tsnet {
            server,
            jobs,
            slots: Mutex::new(HashMap::new()),
            loopback,
            http,
            connected: AtomicBool::new(true),
            reason: Mutex::new(None),
            ephemeral: cfg.ephemeral,
            closed: AtomicBool::new(false),
            ips,
        })
    }

    /// Log the node out through the LocalAPI (`POST /localapi/v0/logout`), on a thread and
    /// runtime of its own (shutdown runs outside any runtime).
    fn logout(&self) -> Result<(), String> {
        let (addr, _, local) = self.loopback.clone();
        let http = self.http.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async move {
                    let r = http
                        .post(format!("http://{addr}/localapi/v0/logout"))
                        .header("Sec-Tailscale", "localapi")
                        .basic_auth("", Some(local))
                        .send()
                        .await
                        .map_err(|e| format!("LocalAPI unreachable: {e}"))?;
                    if r.status().is_success() {
                        Ok(())
                    } else {
                        let status = r.status().as_u16();
                        let body = r.text().await.unwrap_or_default();
                        Err(format!("LocalAPI answered HTTP {status}: {}", body.trim()))
                    }
                })
            })
            .join()
            .unwrap_or_else(|_| Err("logout thread panicked".into()))
        })
    }

    fn set_state(&self, connected: bool, reason: Option<String>) {
        self.connected.store(connected, Ordering::Relaxed);
        if let Ok(mut r) = self.reason.lock() {
            *r = reason;
        }
    }
}

fn dial_worker(rx: &Mutex<Receiver<Job>>, server: &ffi::Server) {
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let res = server.dial(&job.addr);
        // If the caller gave up, the descriptor comes back here and is closed on drop.
        let _ = job.reply.send(res);
    }
}

/// The library's dial error as an I/O error. It only gives text; Go's net error for a
/// refusal ("connect: connection refused") says that the peer is there
/// ([`super::PeerState`]).
fn dial_error(message: String) -> std::io::Error {
    let kind = if message.contains("connection refused") {
        std::io::ErrorKind::ConnectionRefused
    } else {
        std::io::ErrorKind::Other
    };
    std::io::Error::new(kind, message)
}

#[async_trait]
impl Connector for Tsnet {
    async fn dial(&self, host: &str, port: u16) -> Result<TailnetConn, DialError> {
        let addr = format!("{host}:{port}");
        let sem = {
            let mut m = self.slots.lock().map_err(|_| DialError::Unavailable {
                reason: "dial pool poisoned",
            })?;
            m.entry(addr.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(DIALS_PER_TARGET)))
                .clone()
        };
        // Wait for one of the target's slots; the caller's connect timeout bounds the wait.
        let slot = sem
            .acquire_owned()
            .await
            .map_err(|_| DialError::Unavailable {
                reason: "tailnet node stopped",
            })?;
        let (reply, wait) = tokio::sync::oneshot::channel();
        match self.jobs.try_send(Job {
            addr: addr.clone(),
            reply,
            _slot: slot,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(DialError::Unavailable {
                    reason: "tailnet dial pool saturated",
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(DialError::Unavailable {
                    reason: "tailnet node stopped",
                })
            }
        }
        // The caller's timeout (EndpointDialer) bounds this wait; the slot is held until the
        // library returns or the caller gives up.
        let fd = match wait.await {
            Ok(Ok(fd)) => fd,
            Ok(Err(e)) => {
                return Err(DialError::Connect {
                    target: addr,
                    source: dial_error(e.message),
                })
            }
            Err(_) => {
                return Err(DialError::Unavailable {
                    reason: "tailnet node stopped",
                })
            }
        };
        let std_stream = std::os::unix::net::UnixStream::from(fd);
        let conn = std_stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(std_stream))
            .map_err(|source| DialError::Connect {
                target: addr,
                source,
            })?;
        Ok(TailnetConn::Unix(conn))
    }

    fn status(&self) -> TailnetStatus {
        let connected =
            self.connected.load(Ordering::Relaxed) && !self.closed.load(Ordering::Relaxed);
        TailnetStatus {
            mode: TailnetMode::Tsnet,
            ready: connected,
            tsnet_connected: connected,
            reason: if connected {
                None
            } else {
                self.reason.lock().ok().and_then(|r| r.clone())
            },
        }
    }

    async fn refresh_status(&self) {
        let (addr, _, local) = &self.loopback;
        let res = self
            .http
            .get(format!("http://{addr}/localapi/v0/status"))
            .header("Sec-Tailscale", "localapi")
            .basic_auth("", Some(local))
            .send()
            .await;
        let state = match res {
            Ok(r) if r.status().is_success() => {
                r.json::<serde_json::Value>().await.ok().and_then(|v| {
                    v.get("BackendState")
                        .and_then(|s| s.as_str())
                        .map(str::to_string)
                })
            }
            Ok(r) => Some(format!("LocalAPI answered HTTP {}", r.status().as_u16())),
            Err(e) => Some(format!("LocalAPI unreachable: {e}")),
        };
        match state.as_deref() {
            Some("Running") => self.set_state(true, None),
            Some(other) => self.set_state(false, Some(format!("node state {other}"))),
            None => self.set_state(false, Some("node state unknown".into())),
        }
    }

    fn reqwest_proxy(&self) -> Option<reqwest::Proxy> {
        let (addr, proxy_cred, _) = &self.loopback;
        reqwest::Proxy::all(format!("socks5h://{addr}"))
            .ok()
            .map(|p| p.basic_auth("tsnet", proxy_cred))
    }

    fn shutdown(&self) {
        if self.ephemeral && !self.closed.swap(true, Ordering::SeqCst) {
            // tailscale_close reports success whether or not the logout reached the control
            // server; the LocalAPI's answer tells the truth.
            match self.logout() {
                Ok(()) => log::info!("ephemeral tailnet node logged out"),
                Err(why) => log::warn!(
                    "ephemeral tailnet node could not log out ({why}): it stays listed in the \
                     admin console until the control server expires it"
                ),
            }
            if let Err(e) = self.server.close() {
                log::warn!("closing the tailnet node: {e}");
            }
        }
    }

    fn addresses(&self) -> Vec<String> {
        self.ips.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn dial_errors_keep_what_they_say_about_the_peer() {
        for (message, want) in [
            (
                "dial tcp 100.64.0.9:80: connect: connection refused",
                ErrorKind::ConnectionRefused,
            ),
            (
                "tailnet unreachable (test double offline)",
                ErrorKind::Other,
            ),
            ("tsnet: not running", ErrorKind::Other),
        ] {
            assert_eq!(dial_error(message.into()).kind(), want, "{message}");
        }
    }
}
