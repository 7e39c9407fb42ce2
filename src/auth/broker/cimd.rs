//! Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document): a
//! `client_id` that is an https URL names a JSON document describing the client.
//!
//! Fetching one is a server-side request forgery vector (requirements #52), so a fetch:
//! - goes over the internet, never through the tailnet connector or a proxy;
//! - is https only, follows no redirects, and has time and size limits;
//! - resolves the name once, refuses it when any address is in a special range (loopback,
//!   private, link-local, CGNAT `100.64.0.0/10` = every tailnet address, the Tailscale ULA
//!   `fd7a:115c:a1e0::/48`, multicast, documentation, …) and connects only to the addresses
//!   it checked (the check runs inside the HTTP client's resolver);
//! - is cached as `Cache-Control` says, capped by `cimd.cache_max_ttl`.
//!
//! Pinned documents from config are used as given, never fetched.

use crate::config::broker::{Cimd, PinnedClient};
use moka::future::Cache;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How long a document is cached when the server says nothing.
const DEFAULT_CACHE: Duration = Duration::from_secs(300);
/// How long a failed fetch is remembered (a flood of authorize links costs one fetch).
const FAILURE_CACHE: Duration = Duration::from_secs(30);
/// Cached documents at most.
const CACHE_CAPACITY: u64 = 1000;
/// Fetches of documents not cached yet, per client address per minute.
const FETCHES_PER_MINUTE: u32 = 10;
/// Fetches in flight at once.
const FETCHES_IN_FLIGHT: usize = 4;

/// Whether `id` looks like a metadata-document URL: https, a host, a path other than `/`,
/// no fragment, no user info, no dot segments. Pure.
pub fn is_document_url(id: &str) -> bool {
    let Ok(u) = url::Url::parse(id) else {
        return false;
    };
    u.scheme() == "https"
        && u.host_str().is_some_and(|h| !h.is_empty())
        && u.path() != "/"
        && u.fragment().is_none()
        && u.username().is_empty()
        && u.password().is_none()
        && !id.contains("/./")
        && !id.contains("/../")
        && u.as_str() == id
}

/// Whether an address is one a metadata fetch must never reach. Pure.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = v6.segments();
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, the Tailscale ULA among them
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 (reaches IPv4 space)
                || (s[0] == 0x2002) // 6to4 (embeds IPv4)
                || (s[0] == 0x2001 && s[1] == 0) // Teredo
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard
                || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10: tailnet addresses
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240 // reserved
}

/// A client described by a metadata document (fetched or pinned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentClient {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    /// Whether the document came from config.
    pub pinned: bool,
}

/// Why a document cannot be used. The message is shown on the error page.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CimdError {
    #[error("the client ID metadata document host resolves to a private or special address ({0}); the bridge refuses to fetch it")]
    Forbidden(String),
    #[error("fetching the client ID metadata document failed: {0}")]
    Fetch(String),
    #[error("the client ID metadata document answered HTTP {0}")]
    Status(u16),
    #[error("the client ID metadata document is invalid: {0}")]
    Invalid(String),
    #[error("too many client ID metadata document fetches ({0}); try again in a minute")]
    Busy(&'static str),
}

impl CimdError {
    /// Bounded label for `tailbridge_oauth_cimd_fetches_total{outcome}`.
    pub fn outcome(&self) -> &'static str {
        match self {
            CimdError::Forbidden(_) => "forbidden_address",
            CimdError::Fetch(_) => "fetch_error",
            CimdError::Status(_) => "http_error",
            CimdError::Invalid(_) => "invalid",
            CimdError::Busy(_) => "rate_limited",
        }
    }

    /// What a browser or client is told: no resolved addresses or connection details (they
    /// would let anyone probe names and ports from the bridge); the log has those.
    pub fn shown(&self) -> String {
        match self {
            CimdError::Forbidden(_) => "the client ID metadata document's host resolves to a private or special address; the bridge refuses to fetch it".into(),
            CimdError::Fetch(_) => "the client ID metadata document could not be fetched".into(),
            CimdError::Status(_) | CimdError::Invalid(_) | CimdError::Busy(_) => self.to_string(),
        }
    }
}

/// Read a fetched document: a JSON object whose `client_id` equals the URL it came from,
/// with redirect URIs the broker accepts, for a public client. Pure.
pub fn parse_document(
    url: &str,
    body: &[u8],
    max_redirect_uris: usize,
) -> Result<DocumentClient, CimdError> {
    let bad = |s: &str| CimdError::Invalid(s.to_string());
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad("not JSON"))?;
    let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
    if obj.get("client_id").and_then(|c| c.as_str()) != Some(url) {
        return Err(bad("its client_id is not the URL it was fetched from"));
    }
    let uris: Vec<String> = obj
        .get("redirect_uris")
        .and_then(|r| r.as_array())
        .ok_or_else(|| bad("redirect_uris is missing"))?
        .iter()
        .map(|u| {
            u.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("a redirect URI is not a string"))
        })
        .collect::<Result<_, _>>()?;
    if uris.is_empty() || uris.len() > max_redirect_uris {
        return Err(bad(
            "redirect_uris must list between 1 and the configured maximum",
        ));
    }
    for u in &uris {
        super::redirect::registrable(u)
            .map_err(|why| CimdError::Invalid(format!("redirect URI `{u}`: {why}")))?;
    }
    match obj
        .get("token_endpoint_auth_method")
        .and_then(|m| m.as_str())
    {
        None | Some("none") => {}
        Some(m) => {
            return Err(CimdError::Invalid(format!(
                "token_endpoint_auth_method `{m}` is not supported (only public clients, `none`)"
            )))
        }
    }
    if obj.contains_key("client_secret") {
        return Err(bad("a metadata document must not carry a client_secret"));
    }
    let name = obj
        .get("client_name")
        .and_then(|n| n.as_str())
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect::<String>()
        })
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| url.to_string());
    Ok(DocumentClient {
        client_id: url.to_string(),
        client_name: name,
        redirect_uris: uris,
        pinned: false,
    })
}

/// How long to cache a document given its `Cache-Control` value. Pure.
pub fn cache_ttl(cache_control: Option<&str>, cap: Duration) -> Duration {
    let Some(cc) = cache_control else {
        return DEFAULT_CACHE.min(cap);
    };
    let mut ttl = None;
    for d in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if d == "no-store" || d == "no-cache" || d == "private" {
            return Duration::ZERO;
        }
        if let Some(n) = d.strip_prefix("max-age=") {
            ttl = n
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    ttl.unwrap_or(DEFAULT_CACHE).min(cap)
}

/// The resolver the fetch client uses: resolve, then refuse any special address.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 443))
                .await?
                .collect();
            check_addresses(&host, &addrs, allow_private)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Refuse a name when any of its addresses is forbidden (one bad address is enough: an
/// attacker's DNS could list a public and a private one). Pure.
pub fn check_addresses(
    host: &str,
    addrs: &[SocketAddr],
    allow_private: bool,
) -> Result<(), CimdError> {
    if addrs.is_empty() {
        return Err(CimdError::Fetch(format!("{host} has no address")));
    }
    if allow_private {
        return Ok(());
    }
    match addrs.iter().find(|a| forbidden(a.ip())) {
        Some(a) => Err(CimdError::Forbidden(format!("{host} → {}", a.ip()))),
        None => Ok(()),
    }
}

/// A fetch result and how long to keep it.
#[derive(Clone)]
struct Cached {
    result: Result<Arc<DocumentClient>, CimdError>,
    ttl: Duration,
}

/// Fetches and caches metadata documents; knows the pinned ones.
pub struct Documents {
    http: reqwest::Client,
    cfg: Cimd,
    max_redirect_uris: usize,
    cache: Cache<String, Cached>,
    budget: crate::auth::ratelimit::KeyedLimiter,
    in_flight: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Documents")
    }
}

struct DocExpiry;

impl moka::Expiry<String, Cached> for DocExpiry {
    fn expire_after_create(
        &self,
        _k: &String,
        v: &Cached,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// Why the fetch client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CimdSetupError {
    #[error("auth.broker.cimd.ca_root_file {path}: {reason}")]
    CaRoot { path: String, reason: String },
    #[error("building the metadata-document HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl Documents {
    pub fn new(cfg: Cimd, max_redirect_uris: usize) -> Result<Documents, CimdSetupError> {
        let mut b = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: cfg.allow_private_networks,
            }))
            .user_agent(concat!("tailbridge/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_root_file {
            b = crate::tls::add_root_file(b, path).map_err(|reason| CimdSetupError::CaRoot {
                path: path.display().to_string(),
                reason,
            })?;
        }
        Ok(Documents {
            http: b.build().map_err(CimdSetupError::Client)?,
            cfg,
            max_redirect_uris,
            cache: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .expire_after(DocExpiry)
                .build(),
            budget: crate::auth::ratelimit::KeyedLimiter::new(
                f64::from(FETCHES_PER_MINUTE) / 60.0,
                FETCHES_PER_MINUTE,
            ),
            in_flight: tokio::sync::Semaphore::new(FETCHES_IN_FLIGHT),
        })
    }

    /// The pinned document for `id`, if config has one.
    pub fn pinned(&self, id: &str) -> Option<DocumentClient> {
        self.cfg
            .pinned
            .iter()
            .find(|p: &&PinnedClient| p.client_id == id)
            .map(|p| DocumentClient {
                client_id: p.client_id.clone(),
                client_name: p.client_name.clone(),
                redirect_uris: p.redirect_uris.clone(),
                pinned: true,
            })
    }

    /// The client for `url`: pinned, cached, or fetched now (concurrent requests for one
    /// URL share one fetch). The second value is the fetch outcome for metrics (`None` when
    /// this call fetched nothing).
    /// Documents not cached yet cost the caller's address (`ip`) one fetch of a small
    /// budget, and at most a few fetches run at once: `/authorize` is public, and every new
    /// URL would otherwise be a fetch.
    pub async fn get(
        &self,
        url: &str,
        ip: Option<IpAddr>,
    ) -> (Result<Arc<DocumentClient>, CimdError>, Option<&'static str>) {
        if let Some(p) = self.pinned(url) {
            return (Ok(Arc::new(p)), None);
        }
        if let Some(hit) = self.cache.get(url).await {
            return (hit.result, None);
        }
        let key = ip
            .map(crate::auth::ratelimit::client_key)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if !self.budget.allow(key) {
            let e = CimdError::Busy("from this address");
            return (Err(e.clone()), Some(e.outcome()));
        }
        let Ok(_slot) = self.in_flight.try_acquire() else {
            let e = CimdError::Busy("at once");
            return (Err(e.clone()), Some(e.outcome()));
        };
        let fetched = std::sync::atomic::AtomicBool::new(false);
        let cached = self
            .cache
            .get_with(url.to_string(), async {
                fetched.store(true, std::sync::atomic::Ordering::Relaxed);
                let (result, ttl) = self.fetch(url).await;
                let ttl = match (&result, ttl) {
                    (Ok(_), Some(t)) => t,
                    (Ok(_), None) => Duration::ZERO,
                    (Err(_), _) => FAILURE_CACHE,
                };
                Cached { result, ttl }
            })
            .await;
        let outcome =
            fetched
                .load(std::sync::atomic::Ordering::Relaxed)
                .then(|| match &cached.result {
                    Ok(_) => "ok",
                    Err(e) => e.outcome(),
                });
        (cached.result, outcome)
    }

    async fn fetch(&self, url: &str) -> (Result<Arc<DocumentClient>, CimdError>, Option<Duration>) {
        // The resolver sees names only: check IP literals here.
        if let Ok(u) = url::Url::parse(url) {
            let literal = match u.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(ip) = literal {
                if let Err(e) = check_addresses(
                    &ip.to_string(),
                    &[SocketAddr::new(ip, 443)],
                    self.cfg.allow_private_networks,
                ) {
                    return (Err(e), None);
                }
            }
        }
        let resp = match self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return (Err(classify(&e)), None),
        };
        let status = resp.status().as_u16();
        if status != 200 {
            return (Err(CimdError::Status(status)), None);
        }
        let ttl = cache_ttl(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            self.cfg.cache_max_ttl,
        );
        let body = match crate::auth::introspect::read_capped(resp, self.cfg.max_bytes).await {
            Ok(b) => b,
            Err(e) => return (Err(CimdError::Fetch(e.to_string())), None),
        };
        (
            parse_document(url, &body, self.max_redirect_uris).map(Arc::new),
            Some(ttl),
        )
    }
}

/// A transport error as a refusal: the guard's own verdict comes through as `Forbidden`.
fn classify(e: &reqwest::Error) -> CimdError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(c) = s.downcast_ref::<CimdError>() {
            return c.clone();
        }
        src = s.source();
    }
    CimdError::Fetch(crate::tls::error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_urls() {
        for ok in [
            "https://claude.ai/oauth/mcp-oauth-client-metadata",
            "https://example.com/client.json",
            "https://example.com:8443/c",
        ] {
            assert!(is_document_url(ok), "{ok}");
        }
        for bad in [
            "http://example.com/client.json",
            "https://example.com",
            "https://example.com/",
            "https://example.com/c#x",
            "https://u@example.com/c",
            "https://example.com/a/../c",
            "claude-client",
            "",
        ] {
            assert!(!is_document_url(bad), "{bad}");
        }
    }

    #[test]
    fn forbidden_ranges() {
        let bad = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.100",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.51.100.7",
            "203.0.113.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd7a:115c:a1e0::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:100.64.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "2001:db8::1",
            "ff02::1",
            "::127.0.0.1",
        ];
        for a in bad {
            assert!(forbidden(a.parse().unwrap()), "{a}");
        }
        let ok = [
            "160.79.104.10",
            "1.1.1.1",
            "100.128.0.1",
            "100.63.255.255",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ];
        for a in ok {
            assert!(!forbidden(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn any_bad_address_refuses_the_name() {
        let a = |s: &str| SocketAddr::new(s.parse().unwrap(), 443);
        assert!(check_addresses("h", &[a("1.1.1.1")], false).is_ok());
        assert!(matches!(
            check_addresses("h", &[a("1.1.1.1"), a("100.101.102.103")], false),
            Err(CimdError::Forbidden(_))
        ));
        assert!(check_addresses("h", &[a("127.0.0.1")], true).is_ok());
        assert!(check_addresses("h", &[], true).is_err());
    }

    #[test]
    fn documents() {
        let url = "https://app.example/client.json";
        let good = br#"{"client_id":"https://app.example/client.json","client_name":"App","redirect_uris":["https://app.example/cb","http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}"#;
        let d = parse_document(url, good, 10).unwrap();
        assert_eq!(d.client_name, "App");
        assert_eq!(d.redirect_uris.len(), 2);
        let cases: &[&[u8]] = &[
            br#"{"client_id":"https://other.example/client.json","redirect_uris":["https://app.example/cb"]}"#,
            br#"{"client_id":"https://app.example/client.json"}"#,
            br#"{"client_id":"https://app.example/client.json","redirect_uris":[]}"#,
            br#"{"client_id":"https://app.example/client.json","redirect_uris":["http://evil.example/cb"]}"#,
            br#"{"client_id":"https://app.example/client.json","redirect_uris":["https://a/cb"],"token_endpoint_auth_method":"client_secret_basic"}"#,
            br#"{"client_id":"https://app.example/client.json","redirect_uris":["https://a/cb"],"client_secret":"x"}"#,
            br#"[1]"#,
            b"not json",
        ];
        for c in cases {
            assert!(
                parse_document(url, c, 10).is_err(),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
        let many = format!(
            r#"{{"client_id":"{url}","redirect_uris":[{}]}}"#,
            (0..11)
                .map(|i| format!("\"https://a/{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(parse_document(url, many.as_bytes(), 10).is_err());
        // No name: the URL is shown.
        let d = parse_document(
            url,
            br#"{"client_id":"https://app.example/client.json","redirect_uris":["https://a/cb"]}"#,
            10,
        )
        .unwrap();
        assert_eq!(d.client_name, url);
    }

    #[test]
    fn cache_control() {
        let cap = Duration::from_secs(3600);
        let cases = [
            (None, 300),
            (Some("max-age=60"), 60),
            (Some("public, max-age=86400"), 3600),
            (Some("no-store"), 0),
            (Some("max-age=600, no-cache"), 0),
            (Some("private, max-age=60"), 0),
            (Some("garbage"), 300),
        ];
        for (cc, want) in cases {
            assert_eq!(cache_ttl(cc, cap), Duration::from_secs(want), "{cc:?}");
        }
    }
}
