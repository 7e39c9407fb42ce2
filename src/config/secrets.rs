//! Where a secret comes from: inline (tsmcp compatibility), an environment variable
//! (`*_env`) or a file (`*_file`, for systemd `LoadCredential=` and Docker secrets).
//!
//! Secrets are resolved at start, never logged, and never shown by `Debug`.

use std::fmt;
use std::path::PathBuf;

/// The configured source of one secret.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(String),
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(_) => write!(f, "Inline(<redacted>)"),
            SecretSource::Env(name) => write!(f, "Env({name})"),
            SecretSource::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(_) => write!(f, "inline value"),
            SecretSource::Env(name) => write!(f, "environment variable {name}"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set or empty")]
    EnvMissing(String),
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is empty")]
    FileEmpty(String),
}

/// A resolved secret. `Debug` never prints the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret from its value (tests, benches; config goes through `SecretSource`).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret value, for building a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted>)")
    }
}

impl SecretSource {
    /// Read the secret now. File contents are trimmed of surrounding whitespace.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            SecretSource::Inline(v) => Ok(Secret(v.clone())),
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
                _ => Err(SecretError::EnvMissing(name.clone())),
            },
            SecretSource::File(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: shown.clone(),
                    source,
                })?;
                let v = text.trim();
                if v.is_empty() {
                    Err(SecretError::FileEmpty(shown))
                } else {
                    Ok(Secret(v.to_string()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let s = SecretSource::Inline("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        let r = s.resolve().unwrap();
        assert!(!format!("{r:?}").contains("hunter2"));
        assert_eq!(r.expose(), "hunter2");
    }

    #[test]
    fn file_is_trimmed_and_empty_is_an_error() {
        let dir = std::env::temp_dir().join(format!("tb-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tok");
        std::fs::write(&f, "abc\n").unwrap();
        assert_eq!(
            SecretSource::File(f.clone()).resolve().unwrap().expose(),
            "abc"
        );
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(
            SecretSource::File(f).resolve(),
            Err(SecretError::FileEmpty(_))
        ));
        assert!(matches!(
            SecretSource::Env("TAILBRIDGE_TEST_SURELY_UNSET".into()).resolve(),
            Err(SecretError::EnvMissing(_))
        ));
    }
}
