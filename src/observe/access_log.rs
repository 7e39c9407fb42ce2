//! One access-log line per request, under the log target `tailbridge::access` (so
//! `RUST_LOG=tailbridge::access=off` silences it). Text or JSON. Only the path is logged,
//! never the query string (it may carry codes or tokens), headers or bodies.

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
            Some(ip) => ip.fmt(f),
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
        use std::io::Write;
        match format {
            LogFormat::Json => {
                let _ = serde_json::to_writer(&mut *out, self);
            }
            LogFormat::Text => {
                let _ = write!(
                    out,
                    "{} \"{} {}\" {} {:.1}ms in={} out={} endpoint={} upstream={}",
                    self.client,
                    self.method,
                    self.path,
                    self.status,
                    self.duration_ms,
                    self.bytes_in,
                    self.bytes_out,
                    self.endpoint,
                    self.upstream,
                );
                for (key, value) in [
                    (&b" reason="[..], self.reason),
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
    }
}
