//! `limits`: request body and header bounds.

use super::raw::*;
use super::units::parse_size;
use super::*;
use serde::Deserialize;

/// Default cap on a request body (MCP JSON-RPC messages are small).
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 4 << 20;

/// Default cap on the total size of request headers.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 32 << 10;

/// Default cap on the number of request headers.
pub const DEFAULT_MAX_HEADERS: usize = 100;

pub(super) const LIMITS_KEYS: &[&str] = &["max_request_body", "max_header_bytes", "max_headers"];

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_body: u64,
    pub max_header_bytes: u64,
    pub max_headers: usize,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub max_request_body: Option<SizeValue>,
    pub max_header_bytes: Option<SizeValue>,
    pub max_headers: Option<Num<usize>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) fn limits(e: &mut Errors, raw: RawLimits) -> Limits {
    e.unknown("limits", &raw.unknown, LIMITS_KEYS);
    let mut size = |path: &str, v: Option<&SizeValue>, default: u64| match v.map(parse_size) {
        None => default,
        Some(Ok(0)) => {
            e.add(path, "must be greater than 0");
            default
        }
        Some(Ok(n)) => n,
        Some(Err(err)) => {
            e.add(path, err);
            default
        }
    };
    let max_request_body = size(
        "limits.max_request_body",
        raw.max_request_body.as_ref(),
        DEFAULT_MAX_REQUEST_BODY,
    );
    let max_header_bytes = size(
        "limits.max_header_bytes",
        raw.max_header_bytes.as_ref(),
        DEFAULT_MAX_HEADER_BYTES,
    );
    // Pingora itself refuses headers beyond 1 MiB and 256 fields.
    if max_header_bytes > 1 << 20 {
        e.add("limits.max_header_bytes", "must be at most 1MiB");
    }
    let max_headers = e.count_between(
        "limits.max_headers",
        raw.max_headers,
        DEFAULT_MAX_HEADERS,
        1..=256,
    );
    Limits {
        max_request_body,
        max_header_bytes,
        max_headers,
    }
}
