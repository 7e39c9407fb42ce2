//! One access-log line per request, under the log target `tailbridge::access` (so
//! `RUST_LOG=tailbridge::access=off` silences it). Text or JSON. Only the path is logged,
//! never the query string (it may carry codes or tokens), headers or bodies.

use super::text::{push_millis_1, push_uint, IpText};
use crate::config::LogFormat;
use serde::Serialize;

/// The log target of access lines.
pub const TARGET: &str = "tailbridge::access";

/// The client's address as an access line shows it: the IP, or `-` when there is none.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub Option<std::net::IpAddr>);

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => f.write_str(IpText::new(ip).as_str()),
            None => f.write_str("-"),
        }
    }
}

impl Serialize for Client {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What one access line records.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub client: Client,
    pub method: &'a str,
    pub path: &'a str,
    pub endpoint: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub upstream: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
}

impl AccessRecord<'_> {
    /// Format the record as one line.
    pub fn render(&self, format: LogFormat) -> String {
        let mut out = Vec::with_capacity(160);
        self.render_into(format, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Format the record straight into `out`.
    pub fn render_into(&self, format: LogFormat, out: &mut Vec<u8>) {
        match format {
            LogFormat::Json => {
                let _ = serde_json::to_writer(&mut *out, self);
            }
            LogFormat::Text => {
                // `{client} "{method} {path}" {status} {ms:.1}ms in= out= endpoint= upstream=`,
                // written piece by piece (the formatting machinery cost more than the rest).
                match self.client.0 {
                    Some(ip) => out.extend_from_slice(IpText::new(ip).as_bytes()),
                    None => out.push(b'-'),
                }
                for (piece, text) in [(&b" \""[..], self.method), (b" ", self.path)] {
                    out.extend_from_slice(piece);
                    out.extend_from_slice(text.as_bytes());
                }
                out.extend_from_slice(b"\" ");
                push_uint(out, u64::from(self.status));
                out.push(b' ');
                push_millis_1(out, self.duration_ms);
                out.extend_from_slice(b"ms in=");
                push_uint(out, self.bytes_in);
                out.extend_from_slice(b" out=");
                push_uint(out, self.bytes_out);
                for (key, value) in [
                    (&b" endpoint="[..], Some(self.endpoint)),
                    (b" upstream=", Some(self.upstream)),
                    (b" reason=", self.reason),
                    (b" sub=", self.sub),
                    (b" client_id=", self.client_id),
                ] {
                    if let Some(v) = value {
                        out.extend_from_slice(key);
                        out.extend_from_slice(v.as_bytes());
                    }
                }
            }
        }
    }

    /// Write the record to the access log.
    pub fn emit(&self, format: LogFormat) {
        super::lines::emit(TARGET, |out| self.render_into(format, out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json() {
        let r = AccessRecord {
            client: Client(Some("127.0.0.1".parse().unwrap())),
            method: "POST",
            path: "/mcp/a",
            endpoint: "mcp/a",
            status: 200,
            duration_ms: 1.25,
            bytes_in: 10,
            bytes_out: 20,
            upstream: "up:80",
            reason: None,
            sub: Some("123"),
            client_id: None,
        };
        assert_eq!(
            r.render(LogFormat::Text),
            "127.0.0.1 \"POST /mcp/a\" 200 1.2ms in=10 out=20 endpoint=mcp/a upstream=up:80 sub=123"
        );
        let v: serde_json::Value = serde_json::from_str(&r.render(LogFormat::Json)).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["endpoint"], "mcp/a");
        assert_eq!(v["client"], "127.0.0.1");
        assert!(v.get("client_id").is_none());
        let none = AccessRecord {
            client: Client(None),
            ..r
        };
        assert!(none.render(LogFormat::Text).starts_with("- \"POST"));
        let v: serde_json::Value = serde_json::from_str(&none.render(LogFormat::Json)).unwrap();
        assert_eq!(v["client"], "-");
        let all = AccessRecord {
            client: Client(Some("2001:db8::1".parse().unwrap())),
            status: 403,
            duration_ms: 12_345.678,
            reason: Some("tool_denied"),
            client_id: Some("claude"),
            ..r
        };
        assert_eq!(
            all.render(LogFormat::Text),
            "2001:db8::1 \"POST /mcp/a\" 403 12345.7ms in=10 out=20 endpoint=mcp/a upstream=up:80 reason=tool_denied sub=123 client_id=claude"
        );
        let v: serde_json::Value = serde_json::from_str(&all.render(LogFormat::Json)).unwrap();
        assert_eq!(v["client"], "2001:db8::1");
        assert_eq!(v["duration_ms"], 12_345.678);
    }
}
