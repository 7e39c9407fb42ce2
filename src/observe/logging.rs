//! Logger setup: env_logger, text or JSON lines on stderr. `RUST_LOG` wins over the config's
//! `log.level`; `-d/--debug` raises the default to `debug`.

use crate::config::LogFormat;
use std::io::Write;

/// Install the global logger. Safe to call once; later calls are ignored.
pub fn init(format: LogFormat, default_filter: &str) {
    let env = env_logger::Env::default().default_filter_or(default_filter);
    let mut builder = env_logger::Builder::from_env(env);
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = serde_json::json!({
                "ts": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    let inner = builder.build();
    // Error records always reach `Counting` (it counts handshake failures from them), even
    // when the filter prints none; env_logger still decides what is printed.
    let max = inner.filter().max(log::LevelFilter::Error);
    if log::set_boxed_logger(Box::new(Counting { inner })).is_ok() {
        log::set_max_level(max);
        super::lines::init(format);
    }
}

/// Where pingora's accept loop reports failed downstream handshakes.
const ACCEPT_TARGET: &str = "pingora_core::services::listening";

/// Passes records on, and counts pingora's "Downstream handshake" errors into
/// `tailbridge_tls_handshake_failures_total`: the accept loop reports them only by log.
/// The one record it drops is pingora's error line for a connection that ended after an
/// answered TLS-ALPN-01 validation, which is not an error.
struct Counting {
    inner: env_logger::Logger,
}

/// The `reason` label for a pingora accept-loop error, or `None` if it is not a handshake
/// failure (a TLS-ALPN-01 validation that was answered is not one).
pub fn handshake_failure_reason(target: &str, message: &str) -> Option<&'static str> {
    if !target.starts_with(ACCEPT_TARGET) || !message.starts_with("Downstream handshake") {
        return None;
    }
    if message.contains(crate::tls::challenge::CHALLENGE_DONE)
        || message.contains(crate::listener::PROXY_REFUSED)
    {
        None
    } else if message.starts_with("Downstream handshake timeout") {
        Some("timeout")
    } else {
        Some("error")
    }
}

impl log::Log for Counting {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Error && record.target().starts_with(ACCEPT_TARGET) {
            let message = record.args().to_string();
            if message.contains(crate::tls::challenge::CHALLENGE_DONE)
                || message.contains(crate::listener::PROXY_REFUSED)
            {
                // An answered TLS-ALPN-01 validation, or a connection without a valid PROXY
                // header: each already logged at info where it was handled.
                return;
            }
            if let Some(reason) = handshake_failure_reason(record.target(), &message) {
                if let Some(c) = crate::observe::metrics::HANDSHAKE_FAILURES.get() {
                    c.with_label_values(&[reason]).inc();
                }
            }
        }
        // Pending access and audit lines go first: every line keeps its place in the log.
        super::lines::flush();
        // env_logger applies its own filter here.
        self.inner.log(record);
    }

    fn flush(&self) {
        super::lines::flush();
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_pingora_accept_errors() {
        let t = "pingora_core::services::listening";
        assert_eq!(
            handshake_failure_reason(
                t,
                "Downstream handshake error from 1.2.3.4:5: TLSHandshakeFailure"
            ),
            Some("error")
        );
        assert_eq!(
            handshake_failure_reason(t, "Downstream handshake timeout"),
            Some("timeout")
        );
        assert_eq!(
            handshake_failure_reason(
                t,
                "Downstream handshake error: ACMEChallengeAnswered context: TLS-ALPN-01 challenge answered"
            ),
            None
        );
        assert_eq!(
            handshake_failure_reason(
                t,
                "Downstream handshake error from 127.0.0.1:5: ProxyHeaderRefused context: the connection did not start with a PROXY header"
            ),
            None
        );
        assert_eq!(
            handshake_failure_reason("tailbridge", "Downstream handshake error"),
            None
        );
        assert_eq!(handshake_failure_reason(t, "something else"), None);
    }
}
