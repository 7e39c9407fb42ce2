//! TLS served from certificate files: expiry tracking for `/metrics` and `tailbridge check`.

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
    let cert = pem.parse_x509().map_err(|_| CertError::NotX509(shown))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Seconds until `path`'s certificate expires (negative once expired).
pub fn seconds_left(path: &Path) -> Result<i64, CertError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(not_after(path)? - now)
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
    let cert_err = |reason: String| LoadError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no certificate in the file".into()));
    }
    let key_err = |reason: String| LoadError::Key {
        path: key.display().to_string(),
        reason,
    };
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(e.to_string()))?;
    let signer = any_supported_type(&der).map_err(|e| key_err(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signer);
    pair.keys_match()
        .map_err(|e| LoadError::Mismatch(e.to_string()))?;
    Ok(pair)
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
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl FileResolver {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, LoadError> {
        let pair = load_pair(cert, key)?;
        Ok(FileResolver {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new(mtimes(cert, key)),
        })
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
        let pair = load_pair(&self.cert, &self.key)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = Arc::new(pair);
        }
        Ok(true)
    }
}

impl ResolvesServerCert for FileResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}
