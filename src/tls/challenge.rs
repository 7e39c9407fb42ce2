//! ACME challenge responders.
//!
//! - HTTP-01 (RFC 8555 §8.3): tokens kept here are served by the plain-HTTP listener
//!   (`tls::redirect`) under `/.well-known/acme-challenge/`.
//! - TLS-ALPN-01 (RFC 8737): answered on the TLS listener itself. pingora's rustls listener
//!   offers only h2 and http/1.1, and rustls refuses a client whose ALPN list shares nothing
//!   with the server's, so validation connections never reach the certificate resolver.
//!   `AlpnChallengeHook` runs before pingora's handshake: while a challenge is pending it
//!   reads the ClientHello, and when that offers `acme-tls/1` it completes the handshake
//!   itself with the challenge certificate, then closes the connection. Every other
//!   connection gets its bytes back untouched. With nothing pending it reads nothing.

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as L4Stream;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The ALPN protocol id of TLS-ALPN-01 validation connections.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Path prefix of HTTP-01 challenge requests.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
/// How long a connection may take to send its ClientHello, or to finish a challenge handshake.
const CHALLENGE_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest TLS record (2^14 bytes plus the allowed expansion).
const MAX_RECORD: usize = 16_384 + 2_048;

/// The challenges currently offered to the CA.
#[derive(Debug, Default)]
pub struct Challenges {
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    http: RwLock<HashMap<String, String>>,
}

impl Challenges {
    /// Offer a TLS-ALPN-01 answer for `domain`: a self-signed certificate carrying the
    /// SHA-256 digest of the key authorization in the critical acmeIdentifier extension.
    pub fn offer_alpn(&self, domain: &str, key_auth_digest: &[u8]) -> Result<(), rcgen::Error> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])?;
        params.custom_extensions =
            vec![rcgen::CustomExtension::new_acme_identifier(key_auth_digest)];
        let cert = params.self_signed(&key)?;
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signer = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
        let pair = CertifiedKey::new(vec![cert.der().clone()], signer);
        if let Ok(mut m) = self.alpn.write() {
            m.insert(domain.to_ascii_lowercase(), Arc::new(pair));
        }
        Ok(())
    }

    /// Offer an HTTP-01 answer: `token` → key authorization.
    pub fn offer_http(&self, token: &str, key_authorization: &str) {
        if let Ok(mut m) = self.http.write() {
            m.insert(token.to_string(), key_authorization.to_string());
        }
    }

    /// Withdraw every answer (the order is done, one way or the other).
    pub fn clear(&self) {
        if let Ok(mut m) = self.alpn.write() {
            m.clear();
        }
        if let Ok(mut m) = self.http.write() {
            m.clear();
        }
    }

    /// The key authorization for an HTTP-01 token, if offered.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        self.http.read().ok()?.get(token).cloned()
    }

    fn alpn_pending(&self) -> bool {
        self.alpn.read().map(|m| !m.is_empty()).unwrap_or(false)
    }

    fn alpn_cert(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn
            .read()
            .ok()?
            .get(&domain.to_ascii_lowercase())
            .cloned()
    }
}

/// Serves challenge certificates by SNI to `acme-tls/1` connections.
#[derive(Debug)]
struct ChallengeResolver(Arc<Challenges>);

impl ResolvesServerCert for ChallengeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.alpn_cert(hello.server_name()?)
    }
}

/// Answers TLS-ALPN-01 validation connections ahead of pingora's TLS handshake.
pub struct AlpnChallengeHook {
    challenges: Arc<Challenges>,
    config: Arc<rustls::ServerConfig>,
}

impl AlpnChallengeHook {
    pub fn new(challenges: Arc<Challenges>) -> Self {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(ChallengeResolver(challenges.clone())));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        AlpnChallengeHook {
            challenges,
            config: Arc::new(config),
        }
    }

    async fn answer(&self, stream: &mut L4Stream) -> std::io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        let mut tls = acceptor.accept(stream).await?;
        let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
        log::info!("answered a TLS-ALPN-01 validation for {sni}");
        // The validator only looks at the certificate; close cleanly.
        let _ = tls.shutdown().await;
        Ok(())
    }
}

#[async_trait]
impl pingora::listeners::PreTlsProcess for AlpnChallengeHook {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        if !self.challenges.alpn_pending() {
            return Ok(());
        }
        let hello = match tokio::time::timeout(CHALLENGE_IO_TIMEOUT, read_hello(stream)).await {
            Ok(bytes) => bytes,
            // Part of a ClientHello may have been read and cannot be put back: end it here.
            Err(_) => {
                return pingora::Error::e_explain(
                    pingora::ErrorType::ReadTimedout,
                    "no ClientHello within 10 s while an ACME challenge was pending",
                )
            }
        };
        let offers_acme = offers_alpn(&hello, ACME_TLS_ALPN);
        stream.rewind(&hello);
        if !offers_acme {
            return Ok(());
        }
        match tokio::time::timeout(CHALLENGE_IO_TIMEOUT, self.answer(stream)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("TLS-ALPN-01 validation handshake failed: {e}"),
            Err(_) => log::warn!("TLS-ALPN-01 validation handshake timed out"),
        }
        // Ends the connection here: it was a validation, not a client.
        pingora::Error::e_explain(
            pingora::ErrorType::Custom(CHALLENGE_DONE),
            "TLS-ALPN-01 challenge answered",
        )
    }
}

/// Error kind that ends a TLS-ALPN-01 validation connection (not a handshake failure).
pub const CHALLENGE_DONE: &str = "ACMEChallengeAnswered";

/// Read the first TLS record (the ClientHello) without judging it, so that it can be put
/// back. A record that is not a handshake, or too large, is returned after its header.
/// A connection that closes early gets nothing back: it has nothing left to say.
async fn read_hello(stream: &mut L4Stream) -> Vec<u8> {
    let mut head = [0u8; 5];
    if stream.read_exact(&mut head).await.is_err() {
        return Vec::new();
    }
    let mut buf = head.to_vec();
    let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
    if head[0] != 22 || len > MAX_RECORD {
        return buf;
    }
    buf.resize(5 + len, 0);
    if stream.read_exact(&mut buf[5..]).await.is_err() {
        return Vec::new();
    }
    buf
}

/// Whether a TLS record holding a ClientHello offers `proto` in its ALPN extension.
/// Anything malformed or truncated counts as "no".
pub fn offers_alpn(record: &[u8], proto: &[u8]) -> bool {
    alpn_list(record).is_some_and(|list| list.contains(&proto))
}

fn alpn_list(record: &[u8]) -> Option<Vec<&[u8]>> {
    let mut r = Reader(record);
    if r.u8()? != 22 {
        return None;
    }
    r.take(2)?; // record version
    let mut rec = Reader(r.vec16()?);
    if rec.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = rec.u24()?;
    let mut hello = Reader(rec.take(len)?);
    hello.take(2 + 32)?; // client_version, random
    hello.vec8()?; // session id
    hello.vec16()?; // cipher suites
    hello.vec8()?; // compression methods
    let mut exts = Reader(hello.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let body = exts.vec16()?;
        if kind == 16 {
            let mut list = Reader(Reader(body).vec16()?);
            let mut out = Vec::new();
            while !list.0.is_empty() {
                out.push(list.vec8()?);
            }
            return Some(out);
        }
    }
    None
}

/// A cursor over TLS wire data.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first record a real rustls client sends with the given ALPN list.
    fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from("mcp.example.com").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn finds_acme_alpn_in_a_real_client_hello() {
        let hello = client_hello(&[ACME_TLS_ALPN]);
        assert!(offers_alpn(&hello, ACME_TLS_ALPN));
        let browser = client_hello(&[b"h2", b"http/1.1"]);
        assert!(!offers_alpn(&browser, ACME_TLS_ALPN));
        assert!(offers_alpn(&browser, b"http/1.1"));
        assert!(!offers_alpn(&client_hello(&[]), ACME_TLS_ALPN));
    }

    #[test]
    fn truncated_or_foreign_bytes_are_not_a_challenge() {
        let hello = client_hello(&[ACME_TLS_ALPN]);
        for cut in [0, 1, 5, 40, hello.len() - 1] {
            assert!(!offers_alpn(&hello[..cut], ACME_TLS_ALPN), "cut at {cut}");
        }
        assert!(!offers_alpn(b"GET / HTTP/1.1\r\n\r\n", ACME_TLS_ALPN));
    }

    #[test]
    fn challenge_certificate_carries_the_digest_for_its_domain_only() {
        let c = Challenges::default();
        assert!(!c.alpn_pending());
        c.offer_alpn("mcp.example.com", &[7u8; 32]).unwrap();
        assert!(c.alpn_pending());
        let pair = c
            .alpn_cert("MCP.example.com")
            .expect("served by SNI, any case");
        let (_, cert) = x509_parser::parse_x509_certificate(pair.cert[0].as_ref()).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // DER OCTET STRING of the 32-byte digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &[7u8; 32]);
        assert!(c.alpn_cert("other.example.com").is_none());
        c.offer_http("tok", "tok.thumb");
        assert_eq!(c.http_answer("tok").as_deref(), Some("tok.thumb"));
        c.clear();
        assert!(!c.alpn_pending());
        assert!(c.http_answer("tok").is_none());
    }
}
