//! Zero-downtime reload and upgrade (`tailbridge reload`), built on Pingora's graceful
//! upgrade: the running process hands its listening sockets to a new one.
//!
//! 1. The new config is validated first; an invalid one is refused (exit 64) and the running
//!    process is not touched.
//! 2. A new process (the current binary, so a replaced binary is picked up) starts with
//!    `--upgrade` and waits on `server.upgrade_sock` for the listeners.
//! 3. The running process (pid from `server.pid_file`) gets SIGQUIT: it sends its listening
//!    sockets, keeps accepting for a few seconds, then drains: requests in flight complete
//!    and open event streams continue for up to `server.grace_period`.
//! 4. `reload` returns once the new process answers on its main listener.

use crate::config::Config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `reload` waits for each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no running tailbridge: cannot read pid file {path}: {reason}")]
    NoPid { path: String, reason: String },
    #[error("process {0} from the pid file is not running")]
    NotRunning(i32),
    #[error("cannot start the new process: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the new process exited early ({0}); the running one keeps serving")]
    NewDied(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("cannot signal process {pid}: {source}")]
    Signal {
        pid: i32,
        #[source]
        source: nix::Error,
    },
}

/// Read the pid of the running instance.
pub fn read_pid(path: &Path) -> Result<i32, ReloadError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReloadError::NoPid {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    text.trim().parse().map_err(|_| ReloadError::NoPid {
        path: path.display().to_string(),
        reason: format!("`{}` is not a pid", text.trim()),
    })
}

/// Write this process's pid (Pingora writes one only when it daemonizes).
pub fn write_pid(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(tmp, path)
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

fn wait_for(
    what: &'static str,
    mut ready: impl FnMut() -> Result<bool, ReloadError>,
) -> Result<(), ReloadError> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !ready()? {
        if Instant::now() > deadline {
            return Err(ReloadError::Timeout(what));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Replace the running instance with a new process running `config_path`.
pub fn reload(config: &Config, config_path: &Path, debug: bool) -> Result<i32, ReloadError> {
    let pid_file = &config.server.pid_file;
    let old = read_pid(pid_file)?;
    if !alive(old) {
        return Err(ReloadError::NotRunning(old));
    }
    let sock = &config.server.upgrade_sock;
    let _ = std::fs::remove_file(sock);
    let exe = std::env::current_exe().map_err(ReloadError::Spawn)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--upgrade").arg("--config").arg(config_path);
    if debug {
        cmd.arg("--debug");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .stdout(Stdio::inherit())
        .spawn()
        .map_err(ReloadError::Spawn)?;
    let new_pid = child.id() as i32;
    let died = |child: &mut std::process::Child| -> Result<bool, ReloadError> {
        match child.try_wait() {
            Ok(Some(status)) => Err(ReloadError::NewDied(status.to_string())),
            _ => Ok(false),
        }
    };
    wait_for("the new process to open the upgrade socket", || {
        died(&mut child)?;
        Ok(sock.exists())
    })?;
    kill(Pid::from_raw(old), Signal::SIGQUIT)
        .map_err(|source| ReloadError::Signal { pid: old, source })?;
    wait_for("the new process to take over", || {
        died(&mut child)?;
        Ok(read_pid(pid_file).is_ok_and(|p| p == new_pid) && listening(config))
    })?;
    // The new process outlives this command (systemd learns its pid via MAINPID).
    std::mem::forget(child);
    Ok(new_pid)
}

fn listening(config: &Config) -> bool {
    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
            let _ = s.read(&mut [0u8; 1]);
            true
        }
        Err(_) => false,
    }
}
