//! In-process TLS: the certificate served on each handshake (`ServedCert`), certificate files
//! reloaded on change (`FileResolver`), automatic certificates over ACME (`acme`), the
//! TLS-ALPN-01 and HTTP-01 challenge responders (`challenge`) and the plain-HTTP listener that
//! redirects to HTTPS (`redirect`).

pub mod acme;
pub mod challenge;
pub mod redirect;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a certificate file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no PEM certificate found")]
    NoPem(String),
    #[error("{0}: not an X.509 certificate")]
    NotX509(String),
}

/// The first certificate's `notAfter`, in seconds since the epoch.
pub fn not_after(path: &Path) -> Result<i64, CertError> {
    let shown = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| CertError::Read {
        path: shown.clone(),
        source,
    })?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(&data).map_err(|_| CertError::NoPem(shown.clone()))?;
    cert_facts(&pem.contents)
        .map(|f| f.not_after)
        .ok_or(CertError::NotX509(shown))
}

/// An error and its sources, one `: ` apart, each said once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// Trust the PEM certificates in `path` as extra roots of an HTTP client (a lab or test CA);
/// `Err` says why the file cannot be used.
pub fn add_root_file(
    mut b: reqwest::ClientBuilder,
    path: &Path,
) -> Result<reqwest::ClientBuilder, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| error_chain(&e))?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    for c in certs {
        b = b.add_root_certificate(c);
    }
    Ok(b)
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Seconds until `path`'s certificate expires (negative once expired).
pub fn seconds_left(path: &Path) -> Result<i64, CertError> {
    Ok(not_after(path)? - unix_now())
}

/// Validity window and DNS names of a DER certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub not_before: i64,
    pub not_after: i64,
    pub dns_names: Vec<String>,
}

/// Facts about the leaf certificate of a served pair.
pub fn pair_facts(pair: &CertifiedKey) -> Option<CertFacts> {
    cert_facts(pair.end_entity_cert().ok()?.as_ref())
}

/// Read the validity window and subject alternative DNS names of a DER certificate.
pub fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(CertFacts {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
    })
}

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

/// Why a certificate/key pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("tls.cert_file {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("tls.key_file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("tls.key_file does not match tls.cert_file: {0}")]
    Mismatch(String),
}

/// Load and check a certificate chain and its private key.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, LoadError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| e.to_string());
    let cert_err = |reason: String| LoadError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let key_err = |reason: String| LoadError::Key {
        path: key.display().to_string(),
        reason,
    };
    let cert_pem = read(cert).map_err(cert_err)?;
    let key_pem = read(key).map_err(key_err)?;
    pair_from_pem(&cert_pem, &key_pem).map_err(|e| match e {
        PemError::Cert(r) => cert_err(r),
        PemError::Key(r) => key_err(r),
        PemError::Mismatch(r) => LoadError::Mismatch(r),
    })
}

/// Why PEM text is not a usable certificate/key pair.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("certificate: {0}")]
    Cert(String),
    #[error("private key: {0}")]
    Key(String),
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(String),
}

/// Build a served pair from a PEM chain and PEM private key, checking that they match.
pub fn pair_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, PemError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PemError::Cert(e.to_string()))?;
    if chain.is_empty() {
        return Err(PemError::Cert("no certificate in the file".into()));
    }
    let der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| PemError::Key(e.to_string()))?;
    let signer = any_supported_type(&der).map_err(|e| PemError::Key(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signer);
    pair.keys_match()
        .map_err(|e| PemError::Mismatch(e.to_string()))?;
    Ok(pair)
}

/// The certificate handed to every handshake, swapped atomically on reload or renewal.
/// `None` until a first certificate exists (ACME before the first issuance): handshakes
/// then fail, which is all a client could be told.
#[derive(Debug, Default)]
pub struct ServedCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ServedCert {
    pub fn new(pair: Option<CertifiedKey>) -> Self {
        ServedCert {
            current: RwLock::new(pair.map(Arc::new)),
        }
    }

    pub fn set(&self, pair: CertifiedKey) {
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(Arc::new(pair));
        }
    }

    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Facts about the leaf certificate in service.
    pub fn facts(&self) -> Option<CertFacts> {
        pair_facts(self.get()?.as_ref())
    }
}

impl ResolvesServerCert for ServedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

fn mtimes(a: &Path, b: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(a), m(b))
}

/// Serves the certificate from `tls.cert_file`/`tls.key_file` and swaps in a new pair when
/// the files change. Handshakes always see a complete, matching pair: a half-written or
/// mismatched update is refused and the current certificate stays in service.
#[derive(Debug)]
pub struct FileResolver {
    cert: PathBuf,
    key: PathBuf,
    served: Arc<ServedCert>,
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl FileResolver {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, LoadError> {
        let pair = load_pair(cert, key)?;
        Ok(FileResolver {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            served: Arc::new(ServedCert::new(Some(pair))),
            seen: Mutex::new(mtimes(cert, key)),
        })
    }

    /// What the TLS listener serves.
    pub fn served(&self) -> Arc<ServedCert> {
        self.served.clone()
    }

    /// Reload when either file changed. `Ok(true)` = a new pair is in service.
    pub fn reload_if_changed(&self) -> Result<bool, LoadError> {
        let now = mtimes(&self.cert, &self.key);
        let changed = self.seen.lock().map(|s| *s != now).unwrap_or(false);
        if !changed {
            return Ok(false);
        }
        // Remember this state either way: a refused change is reported once, and retried
        // when either file changes again.
        if let Ok(mut s) = self.seen.lock() {
            *s = now;
        }
        self.served.set(load_pair(&self.cert, &self.key)?);
        Ok(true)
    }
}
