//! The per-request log lines (access and audit) without env_logger's per-record work.
//!
//! Each line is formatted into a reusable per-thread buffer, in exactly the text or JSON
//! shape env_logger gives every other record, then appended to one pending batch. The batch
//! goes to stderr in one `write` when it passes [`BATCH_BYTES`], every [`FLUSH_EVERY`] from a
//! flusher thread (a quiet bridge still writes within a second), before any other log record
//! (so lines keep their order with everything else), and before the process exits. Batches
//! are written under stderr's own lock, which env_logger takes too: lines never interleave.
//!
//! When stderr is a terminal (colours, someone watching), or before [`init`], lines take the
//! ordinary `log` path instead.

use crate::config::LogFormat;
use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A batch is written once it holds this much.
pub const BATCH_BYTES: usize = 32 << 10;
/// How often the flusher thread writes whatever is pending.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

struct Sink {
    format: LogFormat,
    /// Which targets the logger's filter lets through at info, decided once at start
    /// (`RUST_LOG` and `log.level` do not change while the process runs).
    access: bool,
    audit: bool,
    pending: Mutex<Vec<u8>>,
    dirty: AtomicBool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Take over access and audit lines, with the logger already installed. Stderr on a
/// terminal keeps the ordinary path.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        return;
    }
    let on = |target| log::log_enabled!(target: target, log::Level::Info);
    let sink = Sink {
        format,
        access: on(super::access_log::TARGET),
        audit: on(crate::mcp::audit::TARGET),
        pending: Mutex::new(Vec::with_capacity(BATCH_BYTES * 2)),
        dirty: AtomicBool::new(false),
    };
    if SINK.set(sink).is_ok() {
        let _ = std::thread::Builder::new()
            .name("tailbridge-log-flush".into())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            });
    }
}

/// Write one info line for `target`; `body` writes the message. Through the batch when
/// the fast path is in use, else through `log` (which applies its own filter).
pub fn emit(target: &str, body: impl FnOnce(&mut Vec<u8>)) {
    let Some(sink) = SINK.get() else {
        if log::log_enabled!(target: target, log::Level::Info) {
            let mut msg = Vec::with_capacity(256);
            body(&mut msg);
            log::info!(target: target, "{}", String::from_utf8_lossy(&msg));
        }
        return;
    };
    let on = match target {
        super::access_log::TARGET => sink.access,
        crate::mcp::audit::TARGET => sink.audit,
        _ => false,
    };
    if on {
        line(sink, target, body);
    }
}

thread_local! {
    /// The line being formatted, and a second buffer for JSON's escaped message.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = RefCell::new((Vec::with_capacity(512), Vec::with_capacity(512)));
    /// The formatted timestamp of the current second (text) and its second.
    static CLOCK: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

/// Format one line into the per-thread buffer and append it to the batch.
fn line(sink: &Sink, target: &str, body: impl FnOnce(&mut Vec<u8>)) {
    SCRATCH.with_borrow_mut(|(out, msg)| {
        out.clear();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        match sink.format {
            LogFormat::Text => {
                out.push(b'[');
                CLOCK.with_borrow_mut(|(sec, text)| {
                    if *sec != now.as_secs() {
                        *sec = now.as_secs();
                        *text = rfc3339_seconds(*sec);
                    }
                    out.extend_from_slice(&text[..]);
                });
                out.extend_from_slice(b" INFO  ");
                out.extend_from_slice(target.as_bytes());
                out.extend_from_slice(b"] ");
                body(out);
            }
            LogFormat::Json => {
                msg.clear();
                body(msg);
                let text = String::from_utf8_lossy(msg);
                json_record(out, target, &text, now.as_secs(), now.subsec_millis());
            }
        }
        out.push(b'\n');
        let full = {
            let mut pending = sink.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.extend_from_slice(out);
            pending.len() >= BATCH_BYTES
        };
        sink.dirty.store(true, Ordering::Release);
        if full {
            flush();
        }
    });
}

/// Write whatever is pending, in one `write`, under stderr's lock.
pub fn flush() {
    let Some(sink) = SINK.get() else { return };
    if !sink.dirty.swap(false, Ordering::AcqRel) {
        return;
    }
    let stderr = std::io::stderr();
    let mut out = stderr.lock();
    let batch = {
        let mut pending = sink.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *pending, Vec::with_capacity(BATCH_BYTES * 2))
    };
    let _ = out.write_all(&batch);
    let _ = out.flush();
}

/// One JSON record as `observe::logging` has env_logger write every other record: the same
/// keys, in the same (sorted) order, the timestamp in milliseconds.
fn json_record(out: &mut Vec<u8>, target: &str, msg: &str, secs: u64, millis: u32) {
    out.extend_from_slice(br#"{"level":"INFO","msg":"#);
    let _ = serde_json::to_writer(&mut *out, msg);
    out.extend_from_slice(br#","target":"#);
    let _ = serde_json::to_writer(&mut *out, target);
    out.extend_from_slice(br#","ts":""#);
    super::text::push_rfc3339_millis(out, u128::from(secs) * 1000 + u128::from(millis));
    out.extend_from_slice(br#""}"#);
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (UTC), as env_logger prints.
pub fn rfc3339_seconds(secs: u64) -> [u8; 20] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_table() {
        let cases: &[(u64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (951_868_799, "2000-02-29T23:59:59Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (1_796_157_098, "2026-12-01T20:31:38Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(std::str::from_utf8(&rfc3339_seconds(*secs)).unwrap(), *want);
        }
    }

    #[test]
    fn matches_the_loggers_json_shape() {
        // `observe::logging` builds env_logger's JSON records with serde_json's json!; the
        // fast path writes the same keys in the same order.
        let msg = "127.0.0.1 \"POST /mcp/a\" 200 \u{2713} \\ \"q\"";
        let reference = serde_json::json!({
            "ts": "2026-12-01T20:31:38.123Z",
            "level": "INFO",
            "target": "tailbridge::access",
            "msg": msg,
        })
        .to_string();
        let mut out = Vec::new();
        json_record(&mut out, "tailbridge::access", msg, 1_796_157_098, 123);
        assert_eq!(String::from_utf8_lossy(&out), reference);
        out.clear();
        json_record(&mut out, "tailbridge::audit", "x", 0, 7);
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"level":"INFO","msg":"x","target":"tailbridge::audit","ts":"1970-01-01T00:00:00.007Z"}"#
        );
    }
}
