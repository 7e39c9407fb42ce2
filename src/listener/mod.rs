//! What happens on `server.listen` before HTTP: the PROXY protocol header an L4 balancer
//! puts ahead of each connection (`server.proxy_protocol: true`).
//!
//! The header is read exactly (never a byte of what follows) and the connection's peer
//! address becomes the client's, so the access log, the flood limits and
//! `allowed_client_cidrs` see the real client rather than the balancer. A connection
//! without a valid header within [`HEADER_TIMEOUT`] is closed without an answer: with the
//! option on, a connection that skipped the balancer must not be trusted with an address.
//!
//! On a TLS listener the header comes before the ClientHello, so [`ProxyHeaderHook`] reads
//! it in pingora's pre-TLS step. On a plain listener pingora has no such step: the
//! [`ProxyProtocolApp`] wrapper reads it before handing the connection to the proxy.

pub mod proxy_protocol;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::{PreTlsCallback, PreTlsProcess};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::server::ShutdownWatch;
use prometheus::IntCounterVec;
use proxy_protocol::{HeaderError, Origin, Parse};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a new connection may take to send its PROXY header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The error kind a refused connection ends with on a TLS listener, so that the log
/// filter does not count it as a TLS handshake failure (it is logged here instead).
pub const PROXY_REFUSED: &str = "ProxyHeaderRefused";

/// Why a connection was closed before HTTP.
#[derive(Debug)]
pub enum Refusal {
    Header(HeaderError),
    Timeout,
    /// The peer closed (or reset) the connection within the header.
    Closed(std::io::Error),
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Refusal::Header(e) => e.reason(),
            Refusal::Timeout => "timeout",
            Refusal::Closed(_) => "closed",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Header(e) => e.fmt(f),
            Refusal::Timeout => write!(f, "no PROXY header within {} s", HEADER_TIMEOUT.as_secs()),
            Refusal::Closed(e) => write!(f, "closed before the PROXY header ended ({e})"),
        }
    }
}

/// Read one PROXY header from the start of `stream`, consuming exactly its bytes.
pub async fn read_header<S: AsyncRead + Unpin + ?Sized>(stream: &mut S) -> Result<Origin, Refusal> {
    let mut buf = Vec::with_capacity(proxy_protocol::MIN_HEADER);
    let mut total = proxy_protocol::MIN_HEADER;
    loop {
        let have = buf.len();
        buf.resize(total, 0);
        stream
            .read_exact(&mut buf[have..])
            .await
            .map_err(Refusal::Closed)?;
        match proxy_protocol::parse(&buf).map_err(Refusal::Header)? {
            Parse::Complete { origin, len } => {
                debug_assert_eq!(len, buf.len());
                return Ok(origin);
            }
            Parse::Incomplete { total: more } => total = more,
        }
    }
}

/// Counts and logs refusals; shared by both ways in.
#[derive(Clone)]
pub struct ProxyHeaders {
    refused: IntCounterVec,
}

impl ProxyHeaders {
    pub fn new(refused: IntCounterVec) -> Self {
        ProxyHeaders { refused }
    }

    /// Read the header and give the connection the client's address. `peer` is the
    /// balancer's address, for the log.
    async fn accept<S>(&self, stream: &mut S, fd: RawFd) -> Result<(), Refusal>
    where
        S: AsyncRead + GetSocketDigest + Unpin + Send + ?Sized,
    {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        let read = match tokio::time::timeout(HEADER_TIMEOUT, read_header(stream)).await {
            Ok(r) => r,
            Err(_) => Err(Refusal::Timeout),
        };
        match read {
            Ok(Origin::Proxied {
                source,
                destination,
            }) => {
                let digest = SocketDigest::from_raw_fd(fd);
                let _ = digest.peer_addr.set(Some(source.into()));
                let _ = digest.local_addr.set(Some(destination.into()));
                stream.set_socket_digest(digest);
                Ok(())
            }
            Ok(Origin::Local) => Ok(()),
            Err(refusal) => {
                self.refused.with_label_values(&[refusal.reason()]).inc();
                match &peer {
                    Some(p) => {
                        log::info!("closed a connection from {p} on server.listen: {refusal}")
                    }
                    None => log::info!("closed a connection on server.listen: {refusal}"),
                }
                Err(refusal)
            }
        }
    }
}

/// Reads the header on a TLS listener, before the handshake; then runs the next pre-TLS
/// step (the TLS-ALPN-01 responder), if any.
pub struct ProxyHeaderHook {
    headers: ProxyHeaders,
    next: Option<PreTlsCallback>,
}

impl ProxyHeaderHook {
    pub fn new(headers: ProxyHeaders, next: Option<PreTlsCallback>) -> Self {
        ProxyHeaderHook { headers, next }
    }
}

#[async_trait]
impl PreTlsProcess for ProxyHeaderHook {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let fd = stream.as_raw_fd();
        if let Err(refusal) = self.headers.accept(stream, fd).await {
            return pingora::Error::e_explain(
                pingora::ErrorType::Custom(PROXY_REFUSED),
                refusal.to_string(),
            );
        }
        match &self.next {
            Some(next) => next.process(stream).await,
            None => Ok(()),
        }
    }
}

/// The proxy behind a plain listener: reads the header when the connection arrives
/// (`headers` is `Some`), then serves every request of the connection.
pub struct ProxyProtocolApp<A> {
    inner: Arc<A>,
    headers: Option<ProxyHeaders>,
}

impl<A> ProxyProtocolApp<A> {
    /// `headers: None` passes connections straight through (TLS listeners read the header
    /// before the handshake, and the option may be off).
    pub fn new(inner: A, headers: Option<ProxyHeaders>) -> Self {
        ProxyProtocolApp {
            inner: Arc::new(inner),
            headers,
        }
    }
}

impl<A: ServerApp + Send + Sync + 'static> ProxyProtocolApp<A> {
    /// A connection behind the balancer: the header, then every request of the connection.
    async fn serve_proxied(
        self: &Arc<Self>,
        headers: &ProxyHeaders,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A plain listener's connections are pingora's L4 streams.
        let fd = stream.as_any().downcast_ref::<L4Stream>()?.as_raw_fd();
        // Boxed: the header read (its timer and buffer) is done with before the requests,
        // so it is not carried while they are served.
        Box::pin(headers.accept(stream.as_mut(), fd)).await.ok()?;
        // The header comes once per connection: serve the connection's further requests
        // here rather than handing it back to the accept loop, which would read it again.
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(reused) = next {
            next = self.inner.process_new(reused, shutdown).await;
        }
        None
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ProxyProtocolApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        match &self.headers {
            None => self.inner.process_new(stream, shutdown).await,
            // The PROXY path's state lives in its own allocation: every open connection
            // without it (an event stream, say) would otherwise carry it (3.7 KiB).
            Some(headers) => Box::pin(self.serve_proxied(headers, stream, shutdown)).await,
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_exactly_the_header_and_leaves_the_request() {
        let header = b"PROXY TCP4 198.51.100.7 198.51.100.1 56324 443\r\n";
        let mut v2 = proxy_protocol::V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 12, 127, 0, 0, 9, 127, 0, 0, 1, 0, 80, 0, 81]);
        for head in [header.as_slice(), v2.as_slice()] {
            let input = [head, b"GET / HTTP/1.1\r\n\r\n"].concat();
            let mut reader = input.as_slice();
            let origin = read_header(&mut reader).await.unwrap();
            assert!(matches!(origin, Origin::Proxied { .. }), "{origin:?}");
            assert_eq!(reader, b"GET / HTTP/1.1\r\n\r\n");
        }
        // The shortest header and nothing after it.
        let mut reader = b"PROXY UNKNOWN\r\n".as_slice();
        assert_eq!(read_header(&mut reader).await.unwrap(), Origin::Local);
        assert!(reader.is_empty());
    }

    #[tokio::test]
    async fn refuses_a_missing_a_cut_and_a_malformed_header() {
        let cases: &[(&[u8], &str)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "missing"),
            (b"PROXY TCP4 1.2.3.4", "closed"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "malformed"),
            (b"", "closed"),
        ];
        for (input, reason) in cases {
            let mut reader = *input;
            let refusal = read_header(&mut reader).await.unwrap_err();
            assert_eq!(
                refusal.reason(),
                *reason,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
