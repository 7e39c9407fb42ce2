//! Observability: metrics, the access log (and the fast path it shares with the audit log),
//! logging setup, health, and OpenTelemetry traces.

pub mod access_log;
pub mod health;
pub mod lines;
pub mod logging;
pub mod metrics;
pub mod text;
pub mod tracing;

/// Send one sd_notify(3) message to the datagram socket named by `NOTIFY_SOCKET` (a path,
/// or `@name` for an abstract socket).
pub fn sd_notify(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        sock.send_to(message.as_bytes(), std::path::Path::new(socket))?;
    }
    Ok(())
}
