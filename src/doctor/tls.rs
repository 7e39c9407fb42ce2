//! The public listener's certificate, as a client sees it: a TLS handshake that records the
//! chain the bridge serves (without trusting it), then its names and expiry.

use super::{Check, Options};
use crate::config::{Config, TlsMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex};

/// Accepts any chain and keeps it: the doctor judges the certificate itself.
#[derive(Debug, Default)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut c) = self.chain.lock() {
            c.push(end_entity.to_vec());
            c.extend(intermediates.iter().map(|i| i.to_vec()));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TCP connection to the main listener, with the PROXY header it requires when
/// `server.proxy_protocol` is on (a v2 `LOCAL` one: the doctor speaks for itself).
pub(super) async fn connect_main(
    config: &Config,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    if config.server.proxy_protocol {
        tcp.write_all(&crate::listener::proxy_protocol::V2_LOCAL)
            .await?;
    }
    Ok(tcp)
}

/// A TLS connector that completes any handshake and records the chain it was shown.
fn recording_connector() -> (Arc<Recorder>, tokio_rustls::TlsConnector) {
    let recorder = Arc::new(Recorder::default());
    let tls = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    (recorder, tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

/// `GET /livez` on the main listener over a raw connection (through the PROXY header and
/// TLS as configured); the status code.
pub(super) async fn livez_raw(config: &Config, addr: std::net::SocketAddr) -> Result<u16, String> {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    async fn ask<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, host: &str) -> Result<u16, String> {
        let req = format!("GET /livez HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let _ = s.read_to_end(&mut head).await;
        let text = String::from_utf8_lossy(&head);
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| match text.is_empty() {
                true => "the connection was closed unanswered".to_string(),
                false => format!(
                    "not an HTTP answer: {:?}",
                    text.lines().next().unwrap_or("")
                ),
            })
    }
    let tcp = connect_main(config, addr)
        .await
        .map_err(|e| e.to_string())?;
    let host = addr.to_string();
    if config.tls.mode == TlsMode::Off {
        return ask(tcp, &host).await;
    }
    let (_, connector) = recording_connector();
    let name = config
        .server
        .public_url
        .as_ref()
        .and_then(|u| u.host_str())
        .and_then(|h| ServerName::try_from(h.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    ask(tls, &host).await
}

/// Whether `name` is covered by a certificate DNS name (one leading `*.` label allowed).
pub fn name_covered(names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    names.iter().any(|n| match n.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => *n == host,
    })
}

pub async fn public_tls_checks(config: &Config, opts: &Options, out: &mut Vec<Check>) {
    if config.tls.mode == TlsMode::Off {
        return;
    }
    let Some(host) = config
        .server
        .public_url
        .as_ref()
        .and_then(|u| u.host_str())
        .map(str::to_string)
    else {
        out.push(Check::skip(
            "tls",
            "server.public_url is not set: no name to check",
        ));
        return;
    };
    let addr = match config.server.listen.ip() {
        ip if ip.is_unspecified() => {
            std::net::SocketAddr::from(([127, 0, 0, 1], config.server.listen.port()))
        }
        _ => config.server.listen,
    };
    let (recorder, connector) = recording_connector();
    let Ok(sni) = ServerName::try_from(host.clone()) else {
        out.push(Check::fail(
            "tls",
            format!("`{host}` is not a server name"),
            "check server.public_url",
        ));
        return;
    };
    let shake = async {
        let tcp = connect_main(config, addr).await?;
        connector.connect(sni, tcp).await
    };
    match tokio::time::timeout(opts.timeout, shake).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            out.push(Check::fail(
                "tls",
                format!("TLS handshake with {addr} for {host}: {e}"),
                "is the bridge running with tls.mode on? (see the bridge check)",
            ));
            return;
        }
        Err(_) => {
            out.push(Check::fail(
                "tls",
                format!("no TLS answer from {addr} within {:?}", opts.timeout),
                "is the bridge running?",
            ));
            return;
        }
    }
    let chain = recorder.chain.lock().map(|c| c.clone()).unwrap_or_default();
    let Some(facts) = chain.first().and_then(|c| crate::tls::cert_facts(c)) else {
        out.push(Check::fail(
            "tls",
            "the bridge sent no readable certificate",
            "check tls.cert_file / the ACME storage",
        ));
        return;
    };
    let names = facts.dns_names.join(", ");
    if name_covered(&facts.dns_names, &host) {
        out.push(Check::ok(
            "tls: names",
            format!("the certificate covers {host} ({names})"),
        ));
    } else {
        out.push(Check::fail(
            "tls: names",
            format!("the certificate is for {names}, not {host}"),
            match &config.tls.mode {
                TlsMode::Acme(_) => "add the public host to tls.acme.domains".to_string(),
                _ => format!(
                    "serve a certificate for {host} (tls.cert_file), or fix server.public_url"
                ),
            },
        ));
    }
    let left = facts.not_after - crate::tls::unix_now();
    let days = left / 86_400;
    if left <= 0 {
        out.push(Check::fail(
            "tls: expiry",
            "the certificate has expired",
            "renew it (tls.mode acme does this itself)",
        ));
    } else if days < 14 {
        out.push(Check::warn(
            "tls: expiry",
            format!("{days} days left"),
            Some("renew soon; with ACME check the renewal log lines".into()),
        ));
    } else {
        out.push(Check::ok("tls: expiry", format!("{days} days left")));
    }
    out.push(Check::ok(
        "tls: chain",
        format!("the bridge sends {} certificate(s)", chain.len()),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        let names = vec![
            "mcp.example.com".to_string(),
            "*.tail1234.ts.net".to_string(),
        ];
        for (host, want) in [
            ("mcp.example.com", true),
            ("MCP.example.com", true),
            ("bridge.tail1234.ts.net", true),
            ("a.b.tail1234.ts.net", false),
            ("tail1234.ts.net", false),
            ("other.example.com", false),
        ] {
            assert_eq!(name_covered(&names, host), want, "{host}");
        }
    }
}
