//! Safe wrappers over libtailscale's C API (`libtailscale-sys`). Every `unsafe` block of the
//! tsnet backend is in this file. All calls block; callers run them on the backend's own
//! threads, never on pingora's workers.

use std::ffi::{c_char, c_int, CString};
use std::os::fd::{FromRawFd, OwnedFd};

/// Why a libtailscale call failed, with the library's own message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{call}: {message}")]
pub struct FfiError {
    pub call: &'static str,
    pub message: String,
}

/// One tsnet server (`tailscale` handle).
#[derive(Debug)]
pub struct Server {
    sd: c_int,
}

fn c(s: &str, call: &'static str) -> Result<CString, FfiError> {
    CString::new(s).map_err(|_| FfiError {
        call,
        message: "string contains a NUL byte".into(),
    })
}

fn text(buf: &[u8]) -> String {
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Server {
    /// Create a server object (no network activity yet).
    pub fn new() -> Self {
        // SAFETY: tailscale_new takes no arguments and returns a handle.
        let sd = unsafe { libtailscale_sys::tailscale_new() };
        Server { sd }
    }

    /// The library's last error message for this server.
    pub fn errmsg(&self) -> String {
        let mut buf = [0u8; 1024];
        // SAFETY: buf is writable for its full length, which we pass.
        let rc = unsafe {
            libtailscale_sys::tailscale_errmsg(self.sd, buf.as_mut_ptr() as *mut c_char, buf.len())
        };
        if rc != 0 {
            return format!("error code {rc}");
        }
        text(&buf)
    }

    fn check(&self, rc: c_int, call: &'static str) -> Result<(), FfiError> {
        if rc == 0 {
            Ok(())
        } else {
            let message = if rc == -1 {
                self.errmsg()
            } else {
                std::io::Error::from_raw_os_error(rc).to_string()
            };
            Err(FfiError { call, message })
        }
    }

    pub fn set_dir(&self, dir: &str) -> Result<(), FfiError> {
        let v = c(dir, "tailscale_set_dir")?;
        // SAFETY: v is a valid NUL-terminated string that outlives the call.
        let rc = unsafe { libtailscale_sys::tailscale_set_dir(self.sd, v.as_ptr()) };
        self.check(rc, "tailscale_set_dir")
    }

    pub fn set_hostname(&self, hostname: &str) -> Result<(), FfiError> {
        let v = c(hostname, "tailscale_set_hostname")?;
        // SAFETY: as above.
        let rc = unsafe { libtailscale_sys::tailscale_set_hostname(self.sd, v.as_ptr()) };
        self.check(rc, "tailscale_set_hostname")
    }

    pub fn set_authkey(&self, key: &str) -> Result<(), FfiError> {
        let v = c(key, "tailscale_set_authkey")?;
        // SAFETY: as above.
        let rc = unsafe { libtailscale_sys::tailscale_set_authkey(self.sd, v.as_ptr()) };
        self.check(rc, "tailscale_set_authkey")
    }

    pub fn set_control_url(&self, url: &str) -> Result<(), FfiError> {
        let v = c(url, "tailscale_set_control_url")?;
        // SAFETY: as above.
        let rc = unsafe { libtailscale_sys::tailscale_set_control_url(self.sd, v.as_ptr()) };
        self.check(rc, "tailscale_set_control_url")
    }

    pub fn set_ephemeral(&self, ephemeral: bool) -> Result<(), FfiError> {
        // SAFETY: plain integer arguments.
        let rc =
            unsafe { libtailscale_sys::tailscale_set_ephemeral(self.sd, c_int::from(ephemeral)) };
        self.check(rc, "tailscale_set_ephemeral")
    }

    /// Connect to the tailnet and wait until the node is usable (blocks).
    pub fn up(&self) -> Result<(), FfiError> {
        // SAFETY: plain integer argument.
        let rc = unsafe { libtailscale_sys::tailscale_up(self.sd) };
        self.check(rc, "tailscale_up")
    }

    /// Dial `addr` (`host:port`) over the tailnet (blocks, without a timeout of its own).
    /// Returns our end of the socketpair the Go side copies through.
    pub fn dial(&self, addr: &str) -> Result<OwnedFd, FfiError> {
        let network = c("tcp", "tailscale_dial")?;
        let a = c(addr, "tailscale_dial")?;
        let mut fd: c_int = -1;
        // SAFETY: both strings are valid NUL-terminated strings; fd is a valid out pointer.
        let rc = unsafe {
            libtailscale_sys::tailscale_dial(self.sd, network.as_ptr(), a.as_ptr(), &mut fd)
        };
        self.check(rc, "tailscale_dial")?;
        if fd < 0 {
            return Err(FfiError {
                call: "tailscale_dial",
                message: "no connection returned".into(),
            });
        }
        // SAFETY: on success the library hands us ownership of a fresh descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The node's tailnet addresses.
    pub fn ips(&self) -> Result<Vec<String>, FfiError> {
        let mut buf = [0u8; 512];
        // SAFETY: buf is writable for its full length, which we pass.
        let rc = unsafe {
            libtailscale_sys::tailscale_getips(self.sd, buf.as_mut_ptr() as *mut c_char, buf.len())
        };
        self.check(rc, "tailscale_getips")?;
        Ok(text(&buf)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Start the loopback listener (SOCKS5 + LocalAPI). Returns (address, SOCKS5 password,
    /// LocalAPI password).
    pub fn loopback(&self) -> Result<(String, String, String), FfiError> {
        let mut addr = [0u8; 256];
        let mut proxy = [0u8; 33];
        let mut local = [0u8; 33];
        // SAFETY: addr is writable for its length; the credential buffers hold 33 bytes as
        // the API requires.
        let rc = unsafe {
            libtailscale_sys::tailscale_loopback(
                self.sd,
                addr.as_mut_ptr() as *mut c_char,
                addr.len(),
                proxy.as_mut_ptr() as *mut c_char,
                local.as_mut_ptr() as *mut c_char,
            )
        };
        self.check(rc, "tailscale_loopback")?;
        Ok((text(&addr), text(&proxy), text(&local)))
    }

    /// Send the library's own log lines to `fd` (which it keeps) instead of stderr.
    pub fn set_logfd(&self, fd: std::os::fd::OwnedFd) -> Result<(), FfiError> {
        use std::os::fd::IntoRawFd;
        let raw = fd.into_raw_fd();
        // SAFETY: plain integer arguments; the library takes ownership of the descriptor.
        let rc = unsafe { libtailscale_sys::tailscale_set_logfd(self.sd, raw) };
        self.check(rc, "tailscale_set_logfd")
    }

    /// Shut the server down. It returns success whether or not an ephemeral node's logout
    /// reached the control server: log out through the LocalAPI first to know.
    pub fn close(&self) -> Result<(), FfiError> {
        // SAFETY: plain integer argument; closing twice returns EBADF, which we report.
        let rc = unsafe { libtailscale_sys::tailscale_close(self.sd) };
        self.check(rc, "tailscale_close")
    }
}
