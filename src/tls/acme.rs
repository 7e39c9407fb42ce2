//! `tls.mode: acme`: certificates obtained and renewed over ACME (RFC 8555).
//!
//! - The account key and the certificates live under `tls.acme.storage_dir` (directory 0700,
//!   files 0600), in a subdirectory per ACME directory so that staging and production never
//!   mix: `<storage_dir>/<directory host>-<hash>/account.json` and `.../<first domain>/`.
//! - At start a stored certificate that is still valid is served at once, without contacting
//!   the CA. A certificate is ordered when none is stored, when it does not cover every
//!   configured domain, and when a third of its lifetime is left.
//! - A failed attempt is retried after `retry_initial`, doubling up to `retry_max`; the
//!   current certificate stays in service meanwhile, and the log and
//!   `tailbridge_acme_renewals_total{outcome="failure"}` say so.
//! - The CA is reached from the host (not the tailnet). `ca_root_file` adds a trust anchor for
//!   the directory's own HTTPS, next to the system's roots.

use super::challenge::Challenges;
use super::{pair_facts, pair_from_pem, unix_now, CertFacts, ServedCert};
use crate::config::{Acme, AcmeChallenge};
use crate::observe::metrics::Metrics;
use async_trait::async_trait;
use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesBody, BytesResponse,
    ChallengeType, ExternalAccountKey, HttpClient, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sha2::Digest;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for the CA to validate an order and to issue its certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest single sleep of the renewal loop; the expiry gauge is refreshed this often.
const TICK: Duration = Duration::from_secs(60);
/// Cap on a response body from the CA (certificate chains are a few KiB).
const MAX_BODY: usize = 1 << 20;
/// Problem type of a request signed by an account the CA does not know.
const ACCOUNT_UNKNOWN: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// Why an ACME attempt failed, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME directory {url}: {reason}")]
    Directory { url: String, reason: String },
    #[error("{step}: {reason}")]
    Protocol { step: &'static str, reason: String },
    #[error("tls.acme.storage_dir {path}: {reason}")]
    Storage { path: String, reason: String },
    #[error("tls.acme.ca_root_file {path}: {reason}")]
    CaRoot { path: String, reason: String },
    #[error("tls.acme.eab.hmac_key: {0}")]
    Eab(String),
}

/// An error and its sources, one after the other (reqwest hides the cause otherwise).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    super::error_chain(e)
}

fn protocol(step: &'static str) -> impl Fn(instant_acme::Error) -> AcmeError {
    move |e| AcmeError::Protocol {
        step,
        reason: chain(&e),
    }
}

fn storage(path: &Path) -> impl Fn(std::io::Error) -> AcmeError + '_ {
    move |e| AcmeError::Storage {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// instant-acme's HTTP transport on reqwest: system roots plus `ca_root_file`, timeouts,
/// `HTTPS_PROXY` honoured, bounded bodies.
struct ReqwestHttp(reqwest::Client);

/// A response body already read in full.
struct Collected(Option<Bytes>);

#[async_trait]
impl BytesBody for Collected {
    async fn into_bytes(&mut self) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.take().unwrap_or_default())
    }
}

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match http_body_util::BodyExt::collect(body).await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let other = |e: reqwest::Error| instant_acme::Error::Other(chain(&e).into());
            let mut rsp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(other)?;
            let mut head = http::Response::builder().status(rsp.status());
            for (k, v) in rsp.headers() {
                head = head.header(k, v);
            }
            let mut data = Vec::new();
            while let Some(chunk) = rsp.chunk().await.map_err(other)? {
                if data.len() + chunk.len() > MAX_BODY {
                    return Err(instant_acme::Error::Str(
                        "response from the CA is too large",
                    ));
                }
                data.extend_from_slice(&chunk);
            }
            let (parts, ()) = head.body(())?.into_parts();
            Ok(BytesResponse {
                parts,
                body: Box::new(Collected(Some(data.into()))),
            })
        })
    }
}

fn http_client(cfg: &Acme) -> Result<reqwest::Client, AcmeError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("tailbridge/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &cfg.ca_root_file {
        b = super::add_root_file(b, path).map_err(|reason| AcmeError::CaRoot {
            path: path.display().to_string(),
            reason,
        })?;
    }
    b.build().map_err(|e| AcmeError::Directory {
        url: cfg.directory_url.clone(),
        reason: chain(&e),
    })
}

/// Where the account and certificates for this directory and domain list are kept.
#[derive(Debug, Clone)]
pub struct Storage {
    pub dir: PathBuf,
    pub account: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Storage {
    pub fn for_config(cfg: &Acme) -> Self {
        let host = url::Url::parse(&cfg.directory_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "acme".into());
        let digest = sha2::Sha256::digest(cfg.directory_url.as_bytes());
        let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        let dir = cfg.storage_dir.join(format!("{host}-{tag}"));
        let primary = cfg.domains.first().cloned().unwrap_or_default();
        Storage {
            account: dir.join("account.json"),
            cert: dir.join(&primary).join("cert.pem"),
            key: dir.join(&primary).join("key.pem"),
            dir,
        }
    }

    /// Create the directories with mode 0700 (tightening an existing one).
    pub fn prepare(&self, root: &Path) -> Result<(), AcmeError> {
        let cert_dir = self.cert.parent().unwrap_or(&self.dir);
        for d in [root, &self.dir, cert_dir] {
            std::fs::create_dir_all(d).map_err(storage(d))?;
            let mode = std::fs::metadata(d)
                .map_err(storage(d))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                    .map_err(storage(d))?;
            }
        }
        Ok(())
    }

    /// The stored certificate and key, if both exist and match.
    pub fn load_cert(&self) -> Result<Option<(rustls::sign::CertifiedKey, CertFacts)>, AcmeError> {
        let (cert, key) = match (std::fs::read(&self.cert), std::fs::read(&self.key)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            (Err(e), _) => return Err(storage(&self.cert)(e)),
            (_, Err(e)) => return Err(storage(&self.key)(e)),
        };
        let pair = pair_from_pem(&cert, &key).map_err(|e| AcmeError::Storage {
            path: self.cert.display().to_string(),
            reason: e.to_string(),
        })?;
        let facts = pair_facts(&pair).ok_or_else(|| AcmeError::Storage {
            path: self.cert.display().to_string(),
            reason: "not an X.509 certificate".into(),
        })?;
        Ok(Some((pair, facts)))
    }
}

/// Write `data` to `path` with mode 0600, atomically (temporary file, fsync, rename).
fn write_private(path: &Path, data: &[u8]) -> Result<(), AcmeError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(storage(&tmp))?;
    f.write_all(data).map_err(storage(&tmp))?;
    f.sync_all().map_err(storage(&tmp))?;
    std::fs::rename(&tmp, path).map_err(storage(path))
}

/// When a certificate is due: a third of its lifetime before it ends.
pub fn renew_at(facts: &CertFacts) -> i64 {
    facts.not_after - (facts.not_after - facts.not_before).max(0) / 3
}

/// Whether `facts` covers every configured domain.
fn covers(facts: &CertFacts, domains: &[String]) -> bool {
    domains.iter().all(|d| facts.dns_names.contains(d))
}

/// "3d 4h", "12m 5s": a span for log lines.
pub fn span(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let (d, h, m) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    let text = if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {}s", s % 60)
    };
    if secs < 0 {
        format!("-{text}")
    } else {
        text
    }
}

/// Obtains and renews the certificate served on `server.listen`.
pub struct AcmeManager {
    cfg: Acme,
    storage: Storage,
    http: reqwest::Client,
    served: Arc<ServedCert>,
    challenges: Arc<Challenges>,
    metrics: Arc<Metrics>,
}

impl AcmeManager {
    /// Prepare storage and serve a stored certificate if there is a valid one. Errors here
    /// (storage not writable, unreadable `ca_root_file`) stop the start.
    pub fn new(
        cfg: Acme,
        challenges: Arc<Challenges>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AcmeError> {
        let storage = Storage::for_config(&cfg);
        storage.prepare(&cfg.storage_dir)?;
        let http = http_client(&cfg)?;
        let served = Arc::new(ServedCert::default());
        match storage.load_cert() {
            Ok(Some((pair, facts))) if facts.not_after > unix_now() => {
                log::info!(
                    "TLS certificate for {} loaded from {} (expires in {})",
                    facts.dns_names.join(", "),
                    storage.cert.display(),
                    span(facts.not_after - unix_now())
                );
                served.set(pair);
            }
            Ok(Some(_)) => log::warn!(
                "stored certificate {} has expired; ordering a new one",
                storage.cert.display()
            ),
            Ok(None) => log::info!(
                "no stored certificate for {}; ordering one from {}",
                cfg.domains.join(", "),
                cfg.directory_url
            ),
            Err(e) => log::warn!("{e}; ordering a new certificate"),
        }
        let manager = AcmeManager {
            cfg,
            storage,
            http,
            served,
            challenges,
            metrics,
        };
        manager.survey();
        Ok(manager)
    }

    /// What the TLS listener serves.
    pub fn served(&self) -> Arc<ServedCert> {
        self.served.clone()
    }

    /// Export the served certificate's expiry and renewal time, and return the seconds until
    /// the next attempt is due (0 or less = now: no certificate, or one that does not cover
    /// every configured domain, is due at once).
    fn survey(&self) -> i64 {
        let Some(f) = self.served.facts() else {
            self.metrics.acme_next_renewal.set(0);
            return 0;
        };
        let label = self.storage.cert.display().to_string();
        self.metrics
            .cert_expiry
            .with_label_values(&[&label])
            .set(f.not_after - unix_now());
        self.metrics.acme_next_renewal.set(renew_at(&f));
        if covers(&f, &self.cfg.domains) {
            renew_at(&f) - unix_now()
        } else {
            0
        }
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let url = self.cfg.directory_url.clone();
        let directory = |e: instant_acme::Error| AcmeError::Directory {
            url: url.clone(),
            reason: match e {
                instant_acme::Error::Json(j) => {
                    format!("the answer is not an ACME directory ({j})")
                }
                other => chain(&other),
            },
        };
        let builder = || Account::builder_with_http(Box::new(ReqwestHttp(self.http.clone())));
        match std::fs::read(&self.storage.account) {
            Ok(data) => {
                let creds: AccountCredentials =
                    serde_json::from_slice(&data).map_err(|e| AcmeError::Storage {
                        path: self.storage.account.display().to_string(),
                        reason: format!("not an account file: {e}"),
                    })?;
                return builder().from_credentials(creds).await.map_err(directory);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(storage(&self.storage.account)(e)),
        }
        let contact = self.cfg.email.as_ref().map(|m| format!("mailto:{m}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = match &self.cfg.eab {
            Some(eab) => {
                use base64::Engine;
                let key = eab
                    .hmac_key
                    .resolve()
                    .map_err(|e| AcmeError::Eab(e.to_string()))?;
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key.expose().trim().trim_end_matches('='))
                    .map_err(|e| AcmeError::Eab(format!("not base64url: {e}")))?;
                Some(ExternalAccountKey::new(eab.kid.clone(), &raw))
            }
            None => None,
        };
        let (account, creds) = builder()
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.cfg.directory_url.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(|e| match e {
                instant_acme::Error::Api(p) => AcmeError::Protocol {
                    step: "account registration",
                    reason: p.to_string(),
                },
                other => directory(other),
            })?;
        let json = serde_json::to_vec_pretty(&creds).map_err(|e| AcmeError::Storage {
            path: self.storage.account.display().to_string(),
            reason: e.to_string(),
        })?;
        write_private(&self.storage.account, &json)?;
        log::info!(
            "ACME account registered at {} ({})",
            self.cfg.directory_url,
            account.id()
        );
        Ok(account)
    }

    /// Order, validate, finalize and install one certificate.
    async fn obtain(&self, account: &Account) -> Result<CertFacts, AcmeError> {
        let ids: Vec<Identifier> = self
            .cfg
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(protocol("new order"))?;
        let kind = match self.cfg.challenge {
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            AcmeChallenge::Http01 => ChallengeType::Http01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(protocol("authorization"))?;
            let domain = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Protocol {
                        step: "authorization",
                        reason: format!("{domain} is {other:?}"),
                    })
                }
            }
            let mut challenge = authz.challenge(kind.clone()).ok_or(AcmeError::Protocol {
                step: "authorization",
                reason: format!("the CA offers no {kind:?} challenge for {domain}"),
            })?;
            let key_auth = challenge.key_authorization();
            match self.cfg.challenge {
                AcmeChallenge::TlsAlpn01 => self
                    .challenges
                    .offer_alpn(&domain, key_auth.digest().as_ref())
                    .map_err(|e| AcmeError::Protocol {
                        step: "challenge certificate",
                        reason: e.to_string(),
                    })?,
                AcmeChallenge::Http01 => self
                    .challenges
                    .offer_http(&challenge.token, key_auth.as_str()),
            }
            challenge.set_ready().await.map_err(protocol("challenge"))?;
        }
        let retry = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = order
            .poll_ready(&retry)
            .await
            .map_err(protocol("validation"))?;
        if status != OrderStatus::Ready {
            let mut why = Vec::new();
            let mut authorizations = order.authorizations();
            while let Some(Ok(mut authz)) = authorizations.next().await {
                if let Ok(state) = authz.refresh().await {
                    let domain = state.identifier().to_string();
                    for c in state.challenges.iter().filter_map(|c| c.error.as_ref()) {
                        why.push(format!("{domain}: {c}"));
                    }
                }
            }
            return Err(AcmeError::Protocol {
                step: "validation",
                reason: format!(
                    "order is {status:?}{}{}",
                    if why.is_empty() { "" } else { ": " },
                    why.join("; ")
                ),
            });
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| {
            AcmeError::Protocol {
                step: "key generation",
                reason: e.to_string(),
            }
        })?;
        let csr_err = |e: rcgen::Error| AcmeError::Protocol {
            step: "certificate request",
            reason: e.to_string(),
        };
        let mut params =
            rcgen::CertificateParams::new(self.cfg.domains.clone()).map_err(csr_err)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(csr_err)?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(protocol("finalize"))?;
        let chain_pem = order
            .poll_certificate(&retry)
            .await
            .map_err(protocol("certificate download"))?;
        let key_pem = key.serialize_pem();
        let pair = pair_from_pem(chain_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| {
            AcmeError::Protocol {
                step: "certificate download",
                reason: e.to_string(),
            }
        })?;
        let facts = pair_facts(&pair).ok_or(AcmeError::Protocol {
            step: "certificate download",
            reason: "the CA returned something that is not an X.509 certificate".into(),
        })?;
        // Key first: a crash between the two writes leaves a mismatch, which is refused at
        // load and answered with a new order, never served.
        write_private(&self.storage.key, key_pem.as_bytes())?;
        write_private(&self.storage.cert, chain_pem.as_bytes())?;
        self.served.set(pair);
        Ok(facts)
    }

    /// One order with the cached account, registering or loading it first if needed. The
    /// challenge answers are withdrawn afterwards, whatever the outcome.
    async fn order_once(&self, account: &mut Option<Account>) -> Result<CertFacts, AcmeError> {
        let acc = match account {
            Some(a) => a,
            None => account.insert(self.account().await?),
        };
        let result = self.obtain(acc).await;
        self.challenges.clear();
        result
    }

    /// One attempt: a stored account the CA no longer knows is replaced by a new
    /// registration once.
    async fn attempt(&self, account: &mut Option<Account>) -> Result<CertFacts, AcmeError> {
        match self.order_once(account).await {
            Err(AcmeError::Protocol { reason, .. }) if reason.contains(ACCOUNT_UNKNOWN) => {
                log::warn!(
                    "the CA does not know the stored account {}; registering a new one",
                    self.storage.account.display()
                );
                let _ = std::fs::remove_file(&self.storage.account);
                *account = None;
                self.order_once(account).await
            }
            other => other,
        }
    }

    /// The renewal loop: sleep until due, attempt, back off on failure.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut account: Option<Account> = None;
        let mut failures: u32 = 0;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let due_in = self.survey();
            let now = tokio::time::Instant::now();
            let wait = match retry_at {
                Some(at) if at > now => Some(at - now),
                Some(_) => None,
                None => u64::try_from(due_in)
                    .ok()
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs),
            };
            if let Some(wait) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(TICK)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
            retry_at = None;
            let attempt = tokio::select! {
                r = self.attempt(&mut account) => r,
                _ = shutdown.changed() => return,
            };
            match attempt {
                Ok(facts) => {
                    failures = 0;
                    self.metrics
                        .acme_renewals
                        .with_label_values(&["success"])
                        .inc();
                    log::info!(
                        "TLS certificate for {} issued by {} (expires in {}, renewal in {}), stored in {}",
                        facts.dns_names.join(", "),
                        self.cfg.directory_url,
                        span(facts.not_after - unix_now()),
                        span(renew_at(&facts) - unix_now()),
                        self.storage.cert.display()
                    );
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.metrics
                        .acme_renewals
                        .with_label_values(&["failure"])
                        .inc();
                    let delay = self
                        .cfg
                        .retry_initial
                        .saturating_mul(1u32 << (failures - 1).min(16))
                        .min(self.cfg.retry_max);
                    let serving = match self.served.facts() {
                        Some(f) => format!(
                            "still serving the current certificate (expires in {})",
                            span(f.not_after - unix_now())
                        ),
                        None => "no certificate to serve yet".into(),
                    };
                    log::error!(
                        "ACME certificate for {} from {} failed (attempt {failures}): {e}; {serving}; retrying in {}",
                        self.cfg.domains.join(", "),
                        self.cfg.directory_url,
                        span(delay.as_secs() as i64)
                    );
                    retry_at = Some(tokio::time::Instant::now() + delay);
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for AcmeManager {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(not_before: i64, not_after: i64) -> CertFacts {
        CertFacts {
            not_before,
            not_after,
            dns_names: vec!["a.example.com".into()],
        }
    }

    #[test]
    fn renewal_is_due_with_a_third_of_the_lifetime_left() {
        // 90 days → renew 30 days before the end.
        let f = facts(0, 90 * 86_400);
        assert_eq!(renew_at(&f), 60 * 86_400);
        // 6-day certificates → 2 days before.
        assert_eq!(renew_at(&facts(100, 100 + 6 * 86_400)), 100 + 4 * 86_400);
        // A malformed window (after before start) is due at its end.
        assert_eq!(renew_at(&facts(50, 10)), 10);
    }

    #[test]
    fn coverage_needs_every_configured_name() {
        let f = facts(0, 1);
        assert!(covers(&f, &["a.example.com".into()]));
        assert!(!covers(
            &f,
            &["a.example.com".into(), "b.example.com".into()]
        ));
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(90 * 86_400 + 3_600), "90d 1h");
        assert_eq!(span(3 * 3_600 + 120), "3h 2m");
        assert_eq!(span(65), "1m 5s");
        assert_eq!(span(-65), "-1m 5s");
    }

    fn cfg(dir: &Path, url: &str) -> Acme {
        Acme {
            domains: vec!["mcp.example.com".into()],
            email: None,
            directory_url: url.into(),
            ca_root_file: None,
            challenge: AcmeChallenge::TlsAlpn01,
            storage_dir: dir.to_path_buf(),
            eab: None,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(2),
        }
    }

    #[test]
    fn storage_is_per_directory_and_private() {
        let root = std::env::temp_dir().join(format!("tb-acme-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let prod = Storage::for_config(&cfg(&root, "https://acme.example/dir"));
        let staging = Storage::for_config(&cfg(&root, "https://acme.example/staging"));
        assert_ne!(prod.dir, staging.dir);
        assert!(prod.cert.ends_with("mcp.example.com/cert.pem"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        prod.prepare(&root).unwrap();
        for d in [&root, &prod.dir, &prod.cert.parent().unwrap().to_path_buf()] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        assert!(prod.load_cert().unwrap().is_none());
        write_private(&prod.key, b"secret").unwrap();
        let mode = std::fs::metadata(&prod.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A key without a certificate is "nothing stored", not an error.
        assert!(prod.load_cert().unwrap().is_none());
        write_private(&prod.cert, b"not pem").unwrap();
        let err = prod.load_cert().unwrap_err().to_string();
        assert!(err.contains("cert.pem"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
