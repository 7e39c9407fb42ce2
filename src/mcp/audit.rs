//! The audit log: one JSON line per `tools/call`, denied ones included, under the log target
//! `tailbridge::audit` (separate from the access log's `tailbridge::access`, so journald
//! and Loki can route or silence each on its own). Never tokens; arguments only when the
//! operator opts in, with configured keys redacted at any depth.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The log target of audit lines.
pub const TARGET: &str = "tailbridge::audit";
/// What a redacted argument value is replaced with.
pub const REDACTED: &str = "[redacted]";
/// Tool names longer than this are cut in audit lines (the client chose them).
const MAX_TOOL_CHARS: usize = 256;

/// One audit line.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    pub ts: String,
    pub event: &'static str,
    pub endpoint: &'a str,
    pub sub: Option<&'a str>,
    pub username: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub client_ip: Option<String>,
    /// SHA-256 of `Mcp-Session-Id`, first 16 hex digits: correlates a session's calls
    /// without putting the session credential in the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub jsonrpc_id: serde_json::Value,
    pub tool: String,
    pub outcome: &'static str,
    pub duration_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
}

impl AuditRecord<'_> {
    pub fn render(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn emit(&self) {
        crate::observe::lines::emit(TARGET, |out| {
            let _ = serde_json::to_writer(out, self);
        });
    }
}

/// A tool name as it goes into an audit line: at most 256 characters.
pub fn tool_for_log(name: &str) -> String {
    match name.char_indices().nth(MAX_TOOL_CHARS) {
        Some((i, _)) => format!("{}…", &name[..i]),
        None => name.to_string(),
    }
}

/// The hashed session id.
pub fn session_hash(session_id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Sha256::digest(session_id.as_bytes());
    let mut out = String::with_capacity(16);
    for b in d.iter().take(8) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Parse raw `arguments` and replace the value of every key named in `redact`
/// (case-insensitive), at any depth. Unparseable arguments are logged as a marker.
pub fn redact_arguments(raw: &str, redact: &[String]) -> serde_json::Value {
    let mut v: serde_json::Value = match serde_json::from_str(raw) {
        Ok(v) => v,
        Err(_) => return serde_json::Value::String("[unreadable]".into()),
    };
    redact_in(&mut v, redact);
    v
}

fn redact_in(v: &mut serde_json::Value, redact: &[String]) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if redact.iter().any(|r| r.eq_ignore_ascii_case(k)) {
                    *val = serde_json::Value::String(REDACTED.into());
                } else {
                    redact_in(val, redact);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| redact_in(i, redact)),
        _ => {}
    }
}

/// Format a Unix time in milliseconds as RFC 3339 UTC (`2026-12-01T17:30:00.123Z`).
pub fn rfc3339_millis(unix_ms: u128) -> String {
    let secs = crate::observe::lines::rfc3339_seconds((unix_ms / 1000) as u64);
    let ms = (unix_ms % 1000) as u32;
    let mut out = String::with_capacity(24);
    out.extend(secs[..19].iter().map(|&b| b as char));
    out.push('.');
    for div in [100, 10, 1] {
        out.push(char::from(b'0' + (ms / div % 10) as u8));
    }
    out.push('Z');
    out
}

/// Now, as [`rfc3339_millis`].
pub fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    rfc3339_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_table() {
        for (ms, want) in [
            (0u128, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_796_146_200_123, "2026-12-01T17:30:00.123Z"),
            (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(rfc3339_millis(ms), want);
        }
    }

    #[test]
    fn redaction_at_any_depth() {
        let redact = vec!["password".to_string(), "API_KEY".to_string()];
        let v = redact_arguments(
            r#"{"user":"a","Password":"p","nested":{"api_key":"k","list":[{"password":1}]}}"#,
            &redact,
        );
        assert_eq!(
            v,
            serde_json::json!({"user":"a","Password":REDACTED,"nested":{"api_key":REDACTED,"list":[{"password":REDACTED}]}})
        );
        assert_eq!(
            redact_arguments("{bad", &redact),
            serde_json::json!("[unreadable]")
        );
    }

    #[test]
    fn session_hash_is_short_and_stable() {
        assert_eq!(session_hash("abc"), "ba7816bf8f01cfea");
        assert_eq!(tool_for_log(&"x".repeat(300)).chars().count(), 257);
        assert_eq!(tool_for_log("echo"), "echo");
    }

    #[test]
    fn record_shape() {
        let r = AuditRecord {
            ts: rfc3339_millis(0),
            event: "tools/call",
            endpoint: "notes",
            sub: Some("1001"),
            username: Some("alice@example.com"),
            client_id: None,
            client_ip: Some("127.0.0.1".into()),
            session: None,
            jsonrpc_id: serde_json::json!(3),
            tool: "delete_note".into(),
            outcome: "denied",
            duration_ms: 0.5,
            bytes_in: 120,
            bytes_out: 180,
            arguments: None,
        };
        let v: serde_json::Value = serde_json::from_str(&r.render()).unwrap();
        assert_eq!(v["tool"], "delete_note");
        assert_eq!(v["outcome"], "denied");
        assert_eq!(v["client_id"], serde_json::Value::Null);
        assert!(v.get("arguments").is_none());
        assert!(v.get("session").is_none());
    }
}
