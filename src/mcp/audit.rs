//! The audit log: one JSON line per `tools/call`, denied ones included, under the log target
//! `tailbridge::audit` (separate from the access log's `tailbridge::access`, so journald
//! and Loki can route or silence each on its own). Never tokens; arguments only when the
//! operator opts in, with configured keys redacted at any depth.

use super::jsonrpc::Id;
use crate::observe::text::{push_rfc3339_millis, push_uint, IpText};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// The log target of audit lines.
pub const TARGET: &str = "tailbridge::audit";
/// What a redacted argument value is replaced with.
pub const REDACTED: &str = "[redacted]";
/// Tool names longer than this are cut in audit lines (the client chose them).
const MAX_TOOL_CHARS: usize = 256;

/// One audit line: a JSON object with these members in this order (`session` and
/// `arguments` only when present; the other absent ones as `null`).
#[derive(Debug)]
pub struct AuditRecord<'a> {
    /// When the call started, in Unix milliseconds (written as RFC 3339 `ts`).
    pub ts_ms: u128,
    pub event: &'static str,
    pub endpoint: &'a str,
    pub sub: Option<&'a str>,
    pub username: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    /// SHA-256 of `Mcp-Session-Id`, first 16 hex digits: correlates a session's calls
    /// without putting the session credential in the log.
    pub session: Option<String>,
    pub jsonrpc_id: Option<&'a Id>,
    /// The tool as the client named it (cut at 256 characters when written).
    pub tool: &'a str,
    pub outcome: &'static str,
    pub duration_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub arguments: Option<serde_json::Value>,
}

impl AuditRecord<'_> {
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(320);
        self.render_into(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Write the record as one JSON object, member by member.
    pub fn render_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"ts":""#);
        push_rfc3339_millis(out, self.ts_ms);
        out.extend_from_slice(br#"","event":"#);
        json_str(out, self.event);
        for (key, value) in [
            (&br#","endpoint":"#[..], Some(self.endpoint)),
            (br#","sub":"#, self.sub),
            (br#","username":"#, self.username),
            (br#","client_id":"#, self.client_id),
        ] {
            out.extend_from_slice(key);
            json_opt_str(out, value);
        }
        out.extend_from_slice(br#","client_ip":"#);
        match self.client_ip {
            Some(ip) => {
                out.push(b'"');
                out.extend_from_slice(IpText::new(ip).as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        if let Some(session) = &self.session {
            out.extend_from_slice(br#","session":"#);
            json_str(out, session);
        }
        out.extend_from_slice(br#","jsonrpc_id":"#);
        match self.jsonrpc_id {
            Some(id) => id.write_json(out),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","tool":"#);
        match self.tool.char_indices().nth(MAX_TOOL_CHARS) {
            Some((i, _)) => json_str(out, &format!("{}…", &self.tool[..i])),
            None => json_str(out, self.tool),
        }
        out.extend_from_slice(br#","outcome":"#);
        json_str(out, self.outcome);
        out.extend_from_slice(br#","duration_ms":"#);
        let _ = serde_json::to_writer(&mut *out, &self.duration_ms);
        out.extend_from_slice(br#","bytes_in":"#);
        push_uint(out, self.bytes_in);
        out.extend_from_slice(br#","bytes_out":"#);
        push_uint(out, self.bytes_out);
        if let Some(a) = &self.arguments {
            out.extend_from_slice(br#","arguments":"#);
            let _ = serde_json::to_writer(&mut *out, a);
        }
        out.push(b'}');
    }

    pub fn emit(&self) {
        crate::observe::lines::emit(TARGET, |out| self.render_into(out));
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
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
    let mut out = Vec::with_capacity(24);
    push_rfc3339_millis(&mut out, unix_ms);
    String::from_utf8(out).unwrap_or_default()
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
    }

    #[test]
    fn record_shape() {
        let id = Id::Int(3);
        let r = AuditRecord {
            ts_ms: 1_796_146_200_123,
            event: "tools/call",
            endpoint: "notes",
            sub: Some("1001"),
            username: Some("alice@example.com"),
            client_id: None,
            client_ip: Some("127.0.0.1".parse().unwrap()),
            session: None,
            jsonrpc_id: Some(&id),
            tool: "delete_note",
            outcome: "denied",
            duration_ms: 0.5,
            bytes_in: 120,
            bytes_out: 180,
            arguments: None,
        };
        assert_eq!(
            r.render(),
            r#"{"ts":"2026-12-01T17:30:00.123Z","event":"tools/call","endpoint":"notes","sub":"1001","username":"alice@example.com","client_id":null,"client_ip":"127.0.0.1","jsonrpc_id":3,"tool":"delete_note","outcome":"denied","duration_ms":0.5,"bytes_in":120,"bytes_out":180}"#
        );
        // Whatever the client chose is escaped; optional members appear when present.
        let sid = Id::Str("a\"b\u{1}".into());
        let odd = AuditRecord {
            sub: Some("quote\" and \\ backslash"),
            client_ip: Some("2001:db8::1".parse().unwrap()),
            session: Some(session_hash("abc")),
            jsonrpc_id: Some(&sid),
            tool: "t\u{2028}\n",
            duration_ms: 12.0,
            arguments: Some(serde_json::json!({"a": [1, "two"]})),
            ..r
        };
        let v: serde_json::Value = serde_json::from_str(&odd.render()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "ts": "2026-12-01T17:30:00.123Z", "event": "tools/call", "endpoint": "notes",
                "sub": "quote\" and \\ backslash", "username": "alice@example.com",
                "client_id": null, "client_ip": "2001:db8::1", "session": "ba7816bf8f01cfea",
                "jsonrpc_id": "a\"b\u{1}", "tool": "t\u{2028}\n", "outcome": "denied",
                "duration_ms": 12.0, "bytes_in": 120, "bytes_out": 180,
                "arguments": {"a": [1, "two"]},
            })
        );
        // a long tool name is cut at 256 characters
        let long = "é".repeat(300);
        let cut = AuditRecord {
            tool: &long,
            jsonrpc_id: None,
            ..odd
        };
        let v: serde_json::Value = serde_json::from_str(&cut.render()).unwrap();
        assert_eq!(v["tool"].as_str().unwrap().chars().count(), 257);
        assert_eq!(v["jsonrpc_id"], serde_json::Value::Null);
    }
}
