//! The PROXY protocol header (HAProxy's spec, versions 1 and 2), parsed from the bytes a
//! balancer sends before the client's own. Pure: no I/O. [`parse`] tells the reader how
//! many bytes it needs before it can decide, so that the reader never consumes a byte of
//! the client's request (or TLS ClientHello) that follows the header.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that opens a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A version 1 header is at most 107 bytes, CRLF included.
pub const V1_MAX: usize = 107;

/// The longest version 2 address block and TLVs accepted. The spec allows 65 535; real
/// balancers send the addresses (12, 36 or 216 bytes) and a few small TLVs.
pub const V2_MAX_PAYLOAD: usize = 4096;

/// The fewest bytes every header has: `PROXY UNKNOWN\r\n` is 15, a version 2 header 16.
pub const MIN_HEADER: usize = 15;

/// A version 2 `LOCAL` header: "this connection is the sender's own" (a health check).
/// Local tools (the doctor) send it to reach a listener that requires a header.
pub const V2_LOCAL: [u8; 16] = *b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A proxied connection: the client's address and the address it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer's own connection (v2 `LOCAL`, e.g. a health check) or a family the
    /// header does not carry (v1 `UNKNOWN`, v2 `UNSPEC` or UNIX): keep the socket's address.
    Local,
}

/// The outcome of looking at the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// The header is complete and `len` bytes long.
    Complete { origin: Origin, len: usize },
    /// Not decidable yet: read until `total` bytes are buffered, then parse again.
    Incomplete { total: usize },
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The connection does not start with a PROXY header at all.
    Missing,
    /// A version 1 header that breaks the grammar; says what.
    V1(&'static str),
    /// A version 2 header that breaks the format; says what.
    V2(&'static str),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Missing => write!(f, "the connection did not start with a PROXY header"),
            HeaderError::V1(why) => write!(f, "malformed PROXY v1 header: {why}"),
            HeaderError::V2(why) => write!(f, "malformed PROXY v2 header: {why}"),
        }
    }
}

impl HeaderError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            HeaderError::Missing => "missing",
            HeaderError::V1(_) | HeaderError::V2(_) => "malformed",
        }
    }
}

/// Look at the first bytes of a connection. Call with at least [`MIN_HEADER`] bytes.
pub fn parse(buf: &[u8]) -> Result<Parse, HeaderError> {
    if buf.len() < MIN_HEADER {
        return Ok(Parse::Incomplete { total: MIN_HEADER });
    }
    if buf.starts_with(&V2_SIGNATURE) {
        parse_v2(buf)
    } else if buf.starts_with(b"PROXY ") {
        parse_v1(buf)
    } else {
        Err(HeaderError::Missing)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parse, HeaderError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(HeaderError::V1("no CRLF within 107 bytes"));
        }
        if buf.contains(&b'\n') {
            return Err(HeaderError::V1("a line feed without a carriage return"));
        }
        return Ok(Parse::Incomplete {
            total: buf.len() + 1,
        });
    };
    let len = end + 2;
    if len > V1_MAX {
        return Err(HeaderError::V1("longer than 107 bytes"));
    }
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| HeaderError::V1("not ASCII"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or("");
    if family == "UNKNOWN" {
        // The receiver must ignore everything after UNKNOWN.
        return Ok(Parse::Complete {
            origin: Origin::Local,
            len,
        });
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(HeaderError::V1(
                "the protocol must be TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(HeaderError::V1(
            "expected source, destination, source port and destination port, one space apart",
        ));
    };
    let ip = |s: &str| -> Result<IpAddr, HeaderError> {
        let parsed = if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        parsed.map_err(|_| HeaderError::V1("an address does not match the protocol"))
    };
    let source = SocketAddr::new(ip(src)?, v1_port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, v1_port(dport)?);
    Ok(Parse::Complete {
        origin: Origin::Proxied {
            source,
            destination,
        },
        len,
    })
}

/// A port as the spec writes it: 1 to 5 digits, no leading zero, at most 65535.
fn v1_port(s: &str) -> Result<u16, HeaderError> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(HeaderError::V1("a port is not a number from 0 to 65535"));
    }
    s.parse()
        .map_err(|_| HeaderError::V1("a port is not a number from 0 to 65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Parse, HeaderError> {
    if buf.len() < 16 {
        return Ok(Parse::Incomplete { total: 16 });
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Err(HeaderError::V2("the version must be 2"));
    }
    let payload = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if payload > V2_MAX_PAYLOAD {
        return Err(HeaderError::V2(
            "the address block is longer than 4096 bytes",
        ));
    }
    let len = 16 + payload;
    if buf.len() < len {
        return Ok(Parse::Incomplete { total: len });
    }
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    let body = &buf[16..len];
    match command {
        // LOCAL: the balancer speaking for itself; the address block is ignored.
        0 => {
            return Ok(Parse::Complete {
                origin: Origin::Local,
                len,
            })
        }
        1 => {}
        _ => return Err(HeaderError::V2("the command must be LOCAL or PROXY")),
    }
    if transport > 2 || family > 3 {
        return Err(HeaderError::V2("unknown address family or transport"));
    }
    let origin = match family {
        1 => {
            if body.len() < 12 {
                return Err(HeaderError::V2("too short for IPv4 addresses"));
            }
            let src = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            Origin::Proxied {
                source: SocketAddr::new(src.into(), u16::from_be_bytes([body[8], body[9]])),
                destination: SocketAddr::new(dst.into(), u16::from_be_bytes([body[10], body[11]])),
            }
        }
        2 => {
            if body.len() < 36 {
                return Err(HeaderError::V2("too short for IPv6 addresses"));
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&body[..16]);
            dst.copy_from_slice(&body[16..32]);
            Origin::Proxied {
                source: SocketAddr::new(
                    Ipv6Addr::from(src).into(),
                    u16::from_be_bytes([body[32], body[33]]),
                ),
                destination: SocketAddr::new(
                    Ipv6Addr::from(dst).into(),
                    u16::from_be_bytes([body[34], body[35]]),
                ),
            }
        }
        // UNSPEC or UNIX: nothing an IP-based rule could use.
        _ => Origin::Local,
    };
    Ok(Parse::Complete { origin, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn proxied(src: &str, dst: &str) -> Origin {
        Origin::Proxied {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    #[test]
    fn version_1_table() {
        type Want = Result<(Origin, usize), HeaderError>;
        let cases: Vec<(&[u8], Want)> = vec![
            (
                b"PROXY TCP4 198.51.100.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n",
                Ok((proxied("198.51.100.7:56324", "198.51.100.1:443"), 48)),
            ),
            (
                b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 8900\r\n",
                Ok((proxied("[2001:db8::7]:56324", "[2001:db8::1]:8900"), 47)),
            ),
            (b"PROXY UNKNOWN\r\n", Ok((Origin::Local, 15))),
            (
                b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nGET",
                Ok((Origin::Local, 35)),
            ),
            (b"GET / HTTP/1.1\r\nHost: x\r\n", Err(HeaderError::Missing)),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcd", Err(HeaderError::Missing)),
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1("the protocol must be TCP4, TCP6 or UNKNOWN")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                Err(HeaderError::V1(
                    "expected source, destination, source port and destination port, one space apart",
                )),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
                Err(HeaderError::V1(
                    "expected source, destination, source port and destination port, one space apart",
                )),
            ),
            (
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1(
                    "expected source, destination, source port and destination port, one space apart",
                )),
            ),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
                Err(HeaderError::V1("an address does not match the protocol")),
            ),
            (
                b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
                Err(HeaderError::V1("an address does not match the protocol")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
                Err(HeaderError::V1("a port is not a number from 0 to 65535")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
                Err(HeaderError::V1("a port is not a number from 0 to 65535")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n",
                Err(HeaderError::V1("a port is not a number from 0 to 65535")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
                Err(HeaderError::V1("a line feed without a carriage return")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xff\r\n",
                Err(HeaderError::V1("not ASCII")),
            ),
        ];
        for (input, want) in cases {
            let got = parse(input).map(|p| match p {
                Parse::Complete { origin, len } => (origin, len),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
            });
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn version_1_asks_for_one_byte_at_a_time_and_stops_at_107() {
        let line = b"PROXY TCP4 198.51.100.7 198.51.100.1 56324 443\r\n";
        for cut in MIN_HEADER..line.len() - 1 {
            assert_eq!(
                parse(&line[..cut]),
                Ok(Parse::Incomplete { total: cut + 1 }),
                "cut at {cut}"
            );
        }
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(
            parse(&endless[..V1_MAX]),
            Err(HeaderError::V1("no CRLF within 107 bytes"))
        );
        assert_eq!(parse(b"PROX"), Ok(Parse::Incomplete { total: MIN_HEADER }));
    }

    #[test]
    fn version_2_table() {
        let v4 = [198, 51, 100, 7, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb];
        let mut v6 = Vec::new();
        v6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0xdc, 0x04, 0x22, 0xc4]);
        let with_tlvs = [v4.as_slice(), &[0x01, 0x00, 0x02, b'h', b'2']].concat();
        let mut bad_version = v2(1, 0x11, &v4);
        bad_version[12] = 0x11;
        let mut too_long = v2(1, 0x11, &v4);
        too_long[14..16].copy_from_slice(&4097u16.to_be_bytes());

        type Want = Result<(Origin, usize), HeaderError>;
        let cases: Vec<(&str, Vec<u8>, Want)> = vec![
            (
                "PROXY TCP4",
                v2(1, 0x11, &v4),
                Ok((proxied("198.51.100.7:56324", "198.51.100.1:443"), 28)),
            ),
            (
                "PROXY TCP6",
                v2(1, 0x21, &v6),
                Ok((proxied("[2001:db8::7]:56324", "[2001:db8::1]:8900"), 52)),
            ),
            (
                "TLVs after the addresses are skipped",
                v2(1, 0x11, &with_tlvs),
                Ok((proxied("198.51.100.7:56324", "198.51.100.1:443"), 33)),
            ),
            (
                "LOCAL (health check)",
                v2(0, 0x00, &[]),
                Ok((Origin::Local, 16)),
            ),
            (
                "LOCAL ignores its addresses",
                v2(0, 0x11, &v4),
                Ok((Origin::Local, 28)),
            ),
            ("UNSPEC", v2(1, 0x00, &[]), Ok((Origin::Local, 16))),
            ("UNIX", v2(1, 0x31, &[0u8; 216]), Ok((Origin::Local, 232))),
            (
                "version 1 nibble",
                bad_version,
                Err(HeaderError::V2("the version must be 2")),
            ),
            (
                "command 2",
                v2(2, 0x11, &v4),
                Err(HeaderError::V2("the command must be LOCAL or PROXY")),
            ),
            (
                "family 4",
                v2(1, 0x41, &v4),
                Err(HeaderError::V2("unknown address family or transport")),
            ),
            (
                "IPv4 block too short",
                v2(1, 0x11, &v4[..8]),
                Err(HeaderError::V2("too short for IPv4 addresses")),
            ),
            (
                "IPv6 block too short",
                v2(1, 0x21, &v6[..20]),
                Err(HeaderError::V2("too short for IPv6 addresses")),
            ),
            (
                "declared length above the bound",
                too_long,
                Err(HeaderError::V2(
                    "the address block is longer than 4096 bytes",
                )),
            ),
        ];
        for (name, mut input, want) in cases {
            input.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let got = parse(&input).map(|p| match p {
                Parse::Complete { origin, len } => (origin, len),
                other => panic!("{name}: {other:?}"),
            });
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn version_2_asks_for_exactly_the_declared_length() {
        let v4 = [127, 0, 0, 7, 127, 0, 0, 1, 0, 80, 0, 81];
        let header = v2(1, 0x11, &v4);
        assert_eq!(parse(&header[..15]), Ok(Parse::Incomplete { total: 16 }));
        for cut in 16..header.len() {
            assert_eq!(
                parse(&header[..cut]),
                Ok(Parse::Incomplete { total: 28 }),
                "cut at {cut}"
            );
        }
        // A signature that goes wrong after 15 bytes is not a header.
        let mut wrong = header.clone();
        wrong[11] = b'X';
        assert_eq!(parse(&wrong), Err(HeaderError::Missing));
    }
}
