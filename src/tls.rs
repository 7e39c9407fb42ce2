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
