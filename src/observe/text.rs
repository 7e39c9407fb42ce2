//! Formatting for what every request writes (header values, access and audit lines)
//! without the `fmt` machinery: IP addresses, unsigned integers, milliseconds with one
//! decimal, RFC 3339 times. Pure.

use std::net::IpAddr;

/// An IP address's text, on the stack: IPv4 digit by digit, IPv6 through `Display`.
pub struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> Self {
        let mut buf = [0u8; 45];
        let len = match ip {
            IpAddr::V4(v4) => {
                let mut n = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[n] = b'.';
                        n += 1;
                    }
                    for (place, skip_below) in [(100, 100), (10, 10), (1, 0)] {
                        if octet >= skip_below {
                            buf[n] = b'0' + octet / place % 10;
                            n += 1;
                        }
                    }
                }
                n
            }
            IpAddr::V6(_) => {
                use std::io::Write;
                let mut w = &mut buf[..];
                // 45 bytes hold the longest IPv6 text (an IPv4-mapped one).
                let _ = write!(w, "{ip}");
                45 - w.len()
            }
        };
        IpText { buf, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Digits, dots, colons and hex letters: always UTF-8.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// Append `n` in decimal.
pub fn push_uint(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Append a duration given in milliseconds with one decimal, a tie going to the even
/// digit (as `{:.1}` writes it), counted in whole nanoseconds.
pub fn push_millis_1(out: &mut Vec<u8>, ms: f64) {
    let ns = (ms.max(0.0) * 1e6).round() as u64;
    let (tenths, rest) = (ns / 100_000, ns % 100_000);
    let tenths = if rest > 50_000 || (rest == 50_000 && tenths % 2 == 1) {
        tenths + 1
    } else {
        tenths
    };
    push_uint(out, tenths / 10);
    out.push(b'.');
    out.push(b'0' + (tenths % 10) as u8);
}

/// Append `unix_ms` as RFC 3339 UTC with milliseconds (`2026-12-01T17:30:00.123Z`).
pub fn push_rfc3339_millis(out: &mut Vec<u8>, unix_ms: u128) {
    let secs = super::lines::rfc3339_seconds((unix_ms / 1000) as u64);
    out.extend_from_slice(&secs[..19]);
    out.push(b'.');
    let ms = (unix_ms % 1000) as u32;
    for div in [100, 10, 1] {
        out.push(b'0' + (ms / div % 10) as u8);
    }
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_display_writes_them() {
        let mut ips: Vec<IpAddr> = vec![
            "::1".parse().unwrap(),
            "2001:db8::7:1".parse().unwrap(),
            "::ffff:198.51.100.7".parse().unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                .parse()
                .unwrap(),
        ];
        for a in [0u8, 1, 9, 10, 42, 99, 100, 101, 110, 199, 200, 255] {
            ips.push(IpAddr::from([a, 255 - a, a / 2, 7]));
        }
        for ip in ips {
            assert_eq!(
                IpText::new(ip).as_bytes(),
                ip.to_string().as_bytes(),
                "{ip}"
            );
        }
    }

    #[test]
    fn numbers_as_display_writes_them() {
        for n in [0u64, 7, 10, 99, 100, 65_535, 1 << 40, u64::MAX] {
            let mut out = Vec::new();
            push_uint(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes(), "{n}");
        }
        // one decimal, as `{:.1}` writes it (ties to even on exact halves)
        for ms in [
            0.0, 0.04, 0.06, 0.25, 1.25, 1.35, 2.0, 9.96, 123.45678, 60_000.0,
        ] {
            let mut out = Vec::new();
            push_millis_1(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{ms:.1}"), "{ms}");
        }
    }
}
