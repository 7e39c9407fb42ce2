//! The OAuth broker (`auth.broker`): tailbridge as the authorization server MCP clients
//! expect (RFC 8414 metadata, RFC 7591 registration, client ID metadata documents, PKCE
//! public clients, RFC 9207 `iss`), with tsidp as the only identity source. The threat model
//! is in `docs/oauth-broker.md`.
//!
//! The broker keeps no state a second instance would need: client ids, flows, consent forms,
//! codes and tokens are sealed with the broker key ([`seal`]). Its only memory is per
//! instance and short-lived: codes already redeemed, and refresh answers kept for
//! `refresh_reuse_window` so that a repeated refresh gets the same answer.
//!
//! Each handler takes what the proxy parsed from the request and returns a [`Reply`] (or
//! `None`: not the broker's business, pass it through to tsidp as before). The proxy only
//! sends it.

pub mod cimd;
pub mod page;
pub mod pkce;
pub mod redirect;
pub mod seal;

use super::introspect::{introspect, now_unix, read_capped};
use super::metadata::{AsMetadata, SCOPES};
use super::ratelimit::{client_key, KeyedLimiter};
use super::verify::{normalise_url, AuthError, Principal};
use crate::config::broker::Broker as BrokerConfig;
use crate::config::secrets::Secret;
use crate::observe::metrics::OauthMetrics;
use seal::{KeyRing, Kind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The broker's callback path at the bridge (register `<public_url>/oauth/callback` at tsidp).
pub const CALLBACK_PATH: &str = "/oauth/callback";
/// Where the consent form posts.
pub const CONSENT_PATH: &str = "/oauth/consent";
/// Largest form or JSON body the broker reads.
pub const MAX_BODY: usize = 16 << 10;
/// Largest tsidp token answer read.
const MAX_IDP_ANSWER: u64 = 64 << 10;
/// Longest `state` carried through (printable ASCII, RFC 6749 VSCHAR): the flow cookie
/// must stay under browsers' 4 KiB cookie limit.
const MAX_STATE: usize = 256;
/// Most sign-ins one browser may have in progress (each has its own flow cookie).
const MAX_FLOWS_PER_BROWSER: usize = 8;
/// The longest sealed flow that fits a cookie.
const MAX_FLOW_COOKIE: usize = 3800;
/// Code exchanges at tsidp from `/oauth/callback`, per client address per minute.
const CALLBACKS_PER_MINUTE: u32 = 20;
/// Code exchanges at tsidp in flight at once.
const CALLBACKS_IN_FLIGHT: usize = 16;
/// Redeemed codes remembered at most (each for the code lifetime).
const USED_CODES_CAPACITY: u64 = 100_000;
/// Refresh answers kept at most.
const REFRESH_CAPACITY: u64 = 10_000;

const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";

/// A response the proxy sends as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: JSON,
            headers: vec![
                ("cache-control", "no-store".into()),
                ("pragma", "no-cache".into()),
            ],
            body: v.to_string(),
        }
    }

    /// An RFC 6749 §5.2 error answer: JSON, never cached.
    pub fn oauth_error(status: u16, code: &str, description: &str) -> Reply {
        Reply::json(
            status,
            &json!({"error": code, "error_description": description}),
        )
    }

    fn page(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: HTML,
            headers: page::PAGE_HEADERS
                .iter()
                .map(|(k, v)| (*k, v.to_string()))
                .collect(),
            body,
        }
    }

    fn error_page(status: u16, title: &str, detail: &str) -> Reply {
        Reply::page(status, page::error(title, detail))
    }

    fn redirect(location: String) -> Reply {
        Reply {
            status: 302,
            content_type: HTML,
            headers: vec![("location", location), ("cache-control", "no-store".into())],
            body: String::new(),
        }
    }
}

/// How a DCR client authenticates at `/token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMethod {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "client_secret_basic")]
    Basic,
    #[serde(rename = "client_secret_post")]
    Post,
}

impl AuthMethod {
    fn parse(s: &str) -> Option<AuthMethod> {
        match s {
            "none" => Some(AuthMethod::None),
            "client_secret_basic" => Some(AuthMethod::Basic),
            "client_secret_post" => Some(AuthMethod::Post),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Basic => "client_secret_basic",
            AuthMethod::Post => "client_secret_post",
        }
    }
}

/// A registration, sealed into the client id.
#[derive(Debug, Serialize, Deserialize)]
struct Registration {
    n: String,
    r: Vec<String>,
    m: AuthMethod,
    t: u64,
}

/// A flow from `/authorize` to the consent decision, sealed into a browser cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flow {
    /// The state sent to tsidp; also names the cookie.
    id: String,
    /// Random, bound to this browser: the consent form must carry the same.
    b: String,
    c: String,
    ru: String,
    cc: String,
    st: Option<String>,
    /// Resource (an endpoint URL or the origin).
    r: String,
    /// tsidp PKCE verifier.
    v: String,
    e: u64,
}

/// The consent form's sealed content: the flow plus who the user is.
#[derive(Debug, Serialize, Deserialize)]
struct Consent {
    f: Flow,
    s: Option<String>,
    u: Option<String>,
    g: Option<Value>,
    /// tsidp's refresh token.
    t: Option<String>,
    e: u64,
}

/// An authorization code.
#[derive(Debug, Serialize, Deserialize)]
struct Code {
    j: String,
    c: String,
    ru: String,
    cc: String,
    r: String,
    s: Option<String>,
    u: Option<String>,
    g: Option<Value>,
    t: Option<String>,
    e: u64,
}

/// An access token's claims.
#[derive(Debug, Serialize, Deserialize)]
pub struct Access {
    pub s: Option<String>,
    pub u: Option<String>,
    pub c: String,
    pub r: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub g: Option<Value>,
    pub e: u64,
}

/// A refresh token's claims.
#[derive(Debug, Serialize, Deserialize)]
struct Refresh {
    j: String,
    c: String,
    r: String,
    s: Option<String>,
    u: Option<String>,
    t: String,
    e: u64,
}

/// How many trailing characters of an access token key the verified-token cache: the
/// base64 of the AEAD tag (16 bytes), unique per token.
const VERIFIED_KEY_CHARS: usize = 22;
/// Verified access tokens remembered at most.
const VERIFIED_CAPACITY: u64 = 10_000;

/// An access token already opened.
#[derive(Debug)]
struct Verified {
    token: Box<str>,
    exp: u64,
    resource: String,
    principal: Arc<Principal>,
}

/// A client the broker serves.
#[derive(Debug, Clone)]
pub enum Client {
    Registered {
        id: String,
        name: String,
        redirect_uris: Vec<String>,
        method: AuthMethod,
    },
    Document(Arc<cimd::DocumentClient>),
}

impl Client {
    fn id(&self) -> &str {
        match self {
            Client::Registered { id, .. } => id,
            Client::Document(d) => &d.client_id,
        }
    }

    fn name(&self) -> &str {
        match self {
            Client::Registered { name, .. } => name,
            Client::Document(d) => &d.client_name,
        }
    }

    fn redirect_uris(&self) -> &[String] {
        match self {
            Client::Registered { redirect_uris, .. } => redirect_uris,
            Client::Document(d) => &d.redirect_uris,
        }
    }

    fn method(&self) -> AuthMethod {
        match self {
            Client::Registered { method, .. } => *method,
            Client::Document(_) => AuthMethod::None,
        }
    }
}

pub use crate::observe::health::{OauthEvent, OauthEvents};

/// How tailbridge reaches tsidp on the broker's behalf.
#[derive(Debug)]
pub struct Idp {
    pub http: reqwest::Client,
    pub client_id: String,
    pub secret: Secret,
    pub metadata: Arc<AsMetadata>,
    pub issuer: String,
    pub introspection_url: String,
    pub max_bytes: u64,
    pub timeout: Duration,
    pub tool_grants_claim: Option<String>,
}

/// An endpoint the broker can grant access to.
#[derive(Debug, Clone)]
pub struct Resource {
    pub path: String,
    pub url: String,
}

/// What a finished refresh answers every request that carried the same token.
#[derive(Debug, Clone)]
struct RefreshAnswer(Reply);

/// The broker.
pub struct Broker {
    cfg: BrokerConfig,
    keys: KeyRing,
    docs: cimd::Documents,
    idp: Idp,
    origin: String,
    tls: bool,
    resources: Vec<Resource>,
    used_codes: moka::sync::Cache<String, ()>,
    refreshes: moka::future::Cache<[u8; 32], RefreshAnswer>,
    verified: moka::sync::Cache<String, Arc<Verified>>,
    dcr: KeyedLimiter,
    callbacks: KeyedLimiter,
    exchanges: tokio::sync::Semaphore,
    /// `auth.allowed_client_ids`: when set, only these broker clients (CIMD URLs) are served.
    allowed_clients: Vec<String>,
    /// `auth.audience_check: endpoint`: every authorization must name one endpoint.
    endpoint_resources_only: bool,
    metrics: Arc<crate::observe::metrics::Metrics>,
    recent: Arc<OauthEvents>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Broker")
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerSetupError {
    #[error("auth.broker.key_file: {0}")]
    Key(#[from] seal::KeyError),
    #[error("{0}")]
    Cimd(#[from] cimd::CimdSetupError),
}

/// Parse an `application/x-www-form-urlencoded` text into pairs. Pure.
pub fn form(text: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The single value of `key`: `Ok(None)` when absent, `Err` when given twice (RFC 6749 §3.1:
/// parameters must not repeat).
fn single<'a>(pairs: &'a [(String, String)], key: &str) -> Result<Option<&'a str>, String> {
    let mut it = pairs.iter().filter(|(k, _)| k == key);
    let first = it.next().map(|(_, v)| v.as_str());
    if it.next().is_some() {
        return Err(format!("`{key}` is given more than once"));
    }
    Ok(first.filter(|v| !v.is_empty()))
}

/// A cookie's value from a `Cookie` header. Pure.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// `uri` with `params` added to its query. Pure.
pub fn with_params(uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => uri.to_string(),
    }
}

/// Credentials a client presented at `/token`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Presented {
    pub client_id: Option<String>,
    pub secret: Option<String>,
    pub basic: bool,
}

/// Read client credentials from HTTP Basic (RFC 6749 §2.3.1: both parts form-encoded) or
/// the body. `Err` when both are used or they disagree. Pure.
pub fn presented(
    authorization: Option<&str>,
    body: &[(String, String)],
) -> Result<Presented, String> {
    let body_id = single(body, "client_id")?.map(str::to_string);
    let body_secret = single(body, "client_secret")?.map(str::to_string);
    let basic = authorization.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
    });
    let Some(b64) = basic else {
        return Ok(Presented {
            client_id: body_id,
            secret: body_secret,
            basic: false,
        });
    };
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "the Basic credentials are not base64".to_string())?;
    let raw = String::from_utf8(raw).map_err(|_| "the Basic credentials are not UTF-8")?;
    let (id, secret) = raw
        .split_once(':')
        .ok_or("the Basic credentials have no `:`")?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (id, secret) = (decode(id), decode(secret));
    if body_secret.is_some() {
        return Err("client credentials given both in Authorization and in the body".into());
    }
    if body_id.as_deref().is_some_and(|b| b != id) {
        return Err("client_id in the body differs from the Basic credentials".into());
    }
    Ok(Presented {
        client_id: Some(id),
        secret: Some(secret),
        basic: true,
    })
}

fn now() -> u64 {
    now_unix()
}

impl Broker {
    /// `allowed_clients` and `endpoint_resources_only` come from `auth.allowed_client_ids` and
    /// `auth.audience_check: endpoint`. Cookies are `__Host-`/`Secure` when `origin` is https
    /// (also behind a TLS-terminating balancer).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: BrokerConfig,
        idp: Idp,
        origin: String,
        allowed_clients: Vec<String>,
        endpoint_resources_only: bool,
        resources: Vec<Resource>,
        metrics: Arc<crate::observe::metrics::Metrics>,
        recent: Arc<OauthEvents>,
    ) -> Result<Broker, BrokerSetupError> {
        let keys = KeyRing::load(&cfg.key_files)?;
        log::info!(
            "auth.broker: on; sealing key {} ({} key file(s)); callback to register at tsidp: {origin}{CALLBACK_PATH}",
            keys.sealing_kid(),
            cfg.key_files.len()
        );
        Ok(Broker::assemble(
            cfg,
            keys,
            idp,
            origin,
            allowed_clients,
            endpoint_resources_only,
            resources,
            metrics,
            recent,
        )?)
    }

    /// The broker over loaded keys (also what [`Broker::for_tests`] builds).
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cfg: BrokerConfig,
        keys: KeyRing,
        idp: Idp,
        origin: String,
        allowed_clients: Vec<String>,
        endpoint_resources_only: bool,
        resources: Vec<Resource>,
        metrics: Arc<crate::observe::metrics::Metrics>,
        recent: Arc<OauthEvents>,
    ) -> Result<Broker, cimd::CimdSetupError> {
        let docs = cimd::Documents::new(cfg.cimd.clone(), cfg.max_redirect_uris)?;
        Ok(Broker {
            used_codes: moka::sync::Cache::builder()
                .max_capacity(USED_CODES_CAPACITY)
                .time_to_live(cfg.code_ttl + Duration::from_secs(5))
                .build(),
            refreshes: moka::future::Cache::builder()
                .max_capacity(REFRESH_CAPACITY)
                .time_to_live(cfg.refresh_reuse_window)
                .build(),
            verified: verified_cache(),
            dcr: KeyedLimiter::new(f64::from(cfg.dcr_per_minute) / 60.0, cfg.dcr_per_minute),
            callbacks: KeyedLimiter::new(
                f64::from(CALLBACKS_PER_MINUTE) / 60.0,
                CALLBACKS_PER_MINUTE,
            ),
            exchanges: tokio::sync::Semaphore::new(CALLBACKS_IN_FLIGHT),
            allowed_clients,
            endpoint_resources_only,
            keys,
            docs,
            idp,
            tls: origin.starts_with("https://"),
            origin,
            resources,
            metrics,
            recent,
            cfg,
        })
    }

    /// A broker over a given key ring (tests, benches): no key file, no tsidp.
    pub fn for_tests(keys: KeyRing, origin: &str, resources: Vec<Resource>) -> Broker {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cfg = crate::config::broker::Broker {
            key_files: Vec::new(),
            access_token_ttl: crate::config::broker::DEFAULT_ACCESS_TOKEN_TTL,
            refresh_token_ttl: crate::config::broker::DEFAULT_REFRESH_TOKEN_TTL,
            code_ttl: crate::config::broker::DEFAULT_CODE_TTL,
            flow_ttl: crate::config::broker::DEFAULT_FLOW_TTL,
            refresh_reuse_window: crate::config::broker::DEFAULT_REFRESH_REUSE_WINDOW,
            dcr_per_minute: 3,
            max_redirect_uris: 10,
            cimd: crate::config::broker::Cimd {
                pinned: vec![crate::config::broker::PinnedClient {
                    client_id: "https://app.example/client.json".into(),
                    client_name: "Pinned App".into(),
                    redirect_uris: vec!["https://app.example/cb".into()],
                }],
                allow_private_networks: false,
                timeout: Duration::from_secs(1),
                max_bytes: 16 << 10,
                cache_max_ttl: Duration::from_secs(60),
                ca_root_file: None,
            },
        };
        let issuer = "http://127.0.0.1:9";
        let idp = Idp {
            http: reqwest::Client::new(),
            client_id: "bridge".into(),
            secret: Secret::new("bridge-secret".into()),
            metadata: Arc::new(AsMetadata::new(
                &url::Url::parse(issuer).unwrap_or_else(|_| unreachable!()),
                Duration::from_secs(300),
            )),
            issuer: issuer.into(),
            introspection_url: format!("{issuer}/introspect"),
            max_bytes: 64 << 10,
            timeout: Duration::from_secs(1),
            tool_grants_claim: None,
        };
        let metrics =
            Arc::new(crate::observe::metrics::Metrics::new().unwrap_or_else(|_| unreachable!()));
        // No CA file and a fixed config: building the fetch client cannot fail.
        Broker::assemble(
            cfg,
            keys,
            idp,
            origin.to_string(),
            Vec::new(),
            false,
            resources,
            metrics,
            Arc::default(),
        )
        .unwrap_or_else(|_| unreachable!())
    }

    fn om(&self) -> &OauthMetrics {
        &self.metrics.oauth
    }

    /// The broker's part of the AS metadata (RFC 8414): endpoints at the bridge, what it
    /// supports. Merged over tsidp's document by the caller.
    pub fn metadata(&self) -> Value {
        let o = &self.origin;
        json!({
            "issuer": o,
            "authorization_endpoint": format!("{o}/authorize"),
            "token_endpoint": format!("{o}/token"),
            "registration_endpoint": format!("{o}/register"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": SCOPES,
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        })
    }

    /// Recent authorizations and refusals, newest last.
    pub fn recent(&self) -> Vec<OauthEvent> {
        self.recent.snapshot()
    }

    fn record(&self, what: &str, user: Option<&str>, client: &str, resource: &str) {
        self.recent.push(OauthEvent {
            at: SystemTime::now(),
            what: what.to_string(),
            user: user.unwrap_or("-").to_string(),
            client: self.client_label(client),
            resource: resource.to_string(),
        });
    }

    /// How the status page names a client: a registered one by its name (its id is a
    /// sealed blob), a CIMD one by its URL, anything else as given (cut).
    fn client_label(&self, id: &str) -> String {
        if id.starts_with(Kind::ClientId.prefix()) {
            return match self.open::<Registration>(Kind::ClientId, id) {
                Some(r) => format!("{} (registered {})", r.n, &id[..id.len().min(12)]),
                None => "a client id this bridge did not issue".into(),
            };
        }
        id.chars().take(120).collect()
    }

    fn seal<T: Serialize>(&self, kind: Kind, v: &T) -> Option<String> {
        let plain = serde_json::to_vec(v).ok()?;
        self.keys.seal(kind, &plain)
    }

    fn open<T: for<'de> Deserialize<'de>>(&self, kind: Kind, s: &str) -> Option<T> {
        let plain = self.keys.open(kind, s)?;
        serde_json::from_slice(&plain).ok()
    }

    /// Whether a client id is one the broker answers for (sealed or a document URL).
    pub fn owns_client_id(&self, id: &str) -> bool {
        id.starts_with(Kind::ClientId.prefix()) || cimd::is_document_url(id)
    }

    /// Resolve a client id: `Ok(None)` when it is not the broker's (a client registered at
    /// tsidp itself), `Err` with what is wrong when it is the broker's but unusable.
    pub async fn client(
        &self,
        id: &str,
        ip: Option<IpAddr>,
    ) -> Result<Option<Client>, ClientError> {
        if id.starts_with(Kind::ClientId.prefix()) {
            let reg: Registration = self.open(Kind::ClientId, id).ok_or_else(|| {
                ClientError::Invalid("this client_id was not issued by this bridge (or its key was rotated away); register the client again".to_string())
            })?;
            if !self.allowed_clients.is_empty() {
                return Err(ClientError::Invalid(
                    "self-registered clients are not served while auth.allowed_client_ids is set"
                        .into(),
                ));
            }
            return Ok(Some(Client::Registered {
                id: id.to_string(),
                name: reg.n,
                redirect_uris: reg.r,
                method: reg.m,
            }));
        }
        if cimd::is_document_url(id) {
            if !self.allowed_clients.is_empty() && !self.allowed_clients.iter().any(|c| c == id) {
                return Err(ClientError::Invalid(
                    "this client is not in auth.allowed_client_ids".into(),
                ));
            }
            let (doc, fetched) = self.docs.get(id, ip).await;
            if let Some(outcome) = fetched {
                self.om().cimd_fetches.with_label_values(&[outcome]).inc();
            }
            return match doc {
                Ok(d) => Ok(Some(Client::Document(d))),
                Err(e) => {
                    log::warn!("client ID metadata document {id:?}: {e}");
                    Err(match e {
                        cimd::CimdError::Invalid(_) | cimd::CimdError::Forbidden(_) => {
                            ClientError::Invalid(e.shown())
                        }
                        _ => ClientError::Unavailable(e.shown()),
                    })
                }
            };
        }
        Ok(None)
    }

    /// The resource a request names, checked: an endpoint URL of this bridge or the origin
    /// (trailing slash ignored). `None` when it is neither.
    fn resource(&self, given: Option<&str>) -> Option<String> {
        let Some(r) = given else {
            return (!self.endpoint_resources_only).then(|| self.origin.clone());
        };
        let r = normalise_url(r);
        if r == self.origin {
            return (!self.endpoint_resources_only).then(|| self.origin.clone());
        }
        self.resources
            .iter()
            .find(|x| x.url == r)
            .map(|x| x.url.clone())
    }

    fn flow_cookie_name(&self, id: &str) -> String {
        let prefix = if self.tls { "__Host-" } else { "" };
        format!("{prefix}tailbridge_flow_{id}")
    }

    fn flow_cookie(&self, id: &str, value: &str, max_age: u64) -> String {
        format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
            self.flow_cookie_name(id),
            if self.tls { "; Secure" } else { "" }
        )
    }

    fn refuse_page(&self, client: &str, status: u16, title: &str, detail: &str) -> Reply {
        self.om()
            .authorizations
            .with_label_values(&["refused"])
            .inc();
        self.record(&format!("refused: {title}"), None, client, "-");
        log::info!("/authorize refused for client {client:?}: {title}: {detail:?}");
        Reply::error_page(status, title, detail)
    }

    /// Redirect an error to the client (RFC 6749 §4.1.2.1, RFC 9207 `iss`).
    fn redirect_error(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        code: &str,
        why: &str,
    ) -> Reply {
        let mut p: Vec<(&str, &str)> = vec![("error", code), ("error_description", why)];
        if let Some(s) = state {
            p.push(("state", s));
        }
        p.push(("iss", &self.origin));
        Reply::redirect(with_params(redirect_uri, &p))
    }

    /// `GET /authorize`. `Ok(None)`: the client is not the broker's, pass it to tsidp.
    pub async fn authorize(
        &self,
        query: Option<&str>,
        cookies: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Option<Reply> {
        let q = form(query.unwrap_or(""));
        let client_id = match single(&q, "client_id") {
            Ok(Some(id)) => id.to_string(),
            Ok(None) => {
                return Some(self.refuse_page(
                    "-",
                    400,
                    "client_id is missing",
                    "The authorization request names no client_id.",
                ))
            }
            Err(e) => {
                return Some(self.refuse_page("-", 400, "Malformed authorization request", &e))
            }
        };
        let client = match self.client(&client_id, ip).await {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(ClientError::Invalid(e)) => {
                return Some(self.refuse_page(&client_id, 400, "Unknown or unusable client", &e))
            }
            Err(ClientError::Unavailable(e)) => {
                return Some(self.refuse_page(
                    &client_id,
                    503,
                    "The client cannot be checked now",
                    &e,
                ))
            }
        };
        let flows = cookies
            .unwrap_or("")
            .split(';')
            .filter(|c| {
                c.trim_start()
                    .trim_start_matches("__Host-")
                    .starts_with("tailbridge_flow_")
            })
            .count();
        if flows >= MAX_FLOWS_PER_BROWSER {
            return Some(self.refuse_page(
                &client_id,
                429,
                "Too many sign-ins in progress",
                "This browser has several unfinished sign-ins. Finish one, or wait 10 minutes.",
            ));
        }
        let get = |k: &str| single(&q, k);
        let redirect_uri = match get("redirect_uri") {
            Ok(Some(r)) => {
                if !client
                    .redirect_uris()
                    .iter()
                    .any(|reg| redirect::matches(reg, r))
                {
                    return Some(self.refuse_page(
                        &client_id,
                        400,
                        "redirect_uri is not registered",
                        &format!(
                            "`{r}` is not one of this client's redirect URIs ({}).",
                            client.redirect_uris().join(", ")
                        ),
                    ));
                }
                r.to_string()
            }
            Ok(None) if client.redirect_uris().len() == 1 => client.redirect_uris()[0].clone(),
            Ok(None) => {
                return Some(self.refuse_page(
                    &client_id,
                    400,
                    "redirect_uri is missing",
                    "This client has several redirect URIs: the request must name one.",
                ))
            }
            Err(e) => {
                return Some(self.refuse_page(
                    &client_id,
                    400,
                    "Malformed authorization request",
                    &e,
                ))
            }
        };
        // From here on the redirect URI is good. Errors go back to it when that cannot be
        // an open redirect (a loopback URI, a pinned client); else they are pages too
        // (RFC 9700 §4.11.2: no automatic redirect to an unconsented client's site).
        let may_redirect = matches!(&client, Client::Document(d) if d.pinned)
            || redirect::is_loopback(&redirect_uri);
        let state =
            match get("state") {
                Ok(s)
                    if s.is_none_or(|s| {
                        s.len() <= MAX_STATE && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
                    }) =>
                {
                    s.map(str::to_string)
                }
                _ => return Some(self.refuse_page(
                    &client_id,
                    400,
                    "Malformed authorization request",
                    "state is repeated, too long (256 characters at most) or not printable ASCII",
                )),
            };
        let st = state.as_deref();
        let err = |code: &str, why: &str| {
            self.om()
                .authorizations
                .with_label_values(&["refused"])
                .inc();
            self.record(&format!("refused: {code}"), None, &client_id, "-");
            if may_redirect {
                Some(self.redirect_error(&redirect_uri, st, code, why))
            } else {
                log::info!("/authorize refused for client {client_id:?}: {code}: {why}");
                Some(Reply::error_page(400, code, why))
            }
        };
        match get("response_type") {
            Ok(Some("code")) => {}
            _ => return err("unsupported_response_type", "response_type must be code"),
        }
        let challenge = match (get("code_challenge"), get("code_challenge_method")) {
            (Ok(Some(c)), Ok(Some("S256"))) if pkce::valid_challenge(c) => c.to_string(),
            (Ok(None), _) => {
                return err(
                    "invalid_request",
                    "PKCE is required: send code_challenge with code_challenge_method=S256",
                )
            }
            (_, Ok(Some(m))) if m != "S256" => {
                return err("invalid_request", "code_challenge_method must be S256")
            }
            _ => {
                return err(
                    "invalid_request",
                    "code_challenge must be an S256 challenge (43 base64url characters)",
                )
            }
        };
        let resource = match get("resource") {
            Ok(r) => match self.resource(r) {
                Some(r) => r,
                None if self.endpoint_resources_only => {
                    return err(
                        "invalid_target",
                        "resource must name one endpoint URL of this bridge (auth.audience_check: endpoint)",
                    )
                }
                None => {
                    return err(
                        "invalid_target",
                        "resource must be an endpoint URL of this bridge or its origin",
                    )
                }
            },
            Err(_) => return err("invalid_target", "give one resource"),
        };
        let Some(flow) = (|| {
            Some(Flow {
                id: self.keys.random(12)?,
                b: self.keys.random(24)?,
                c: client_id.clone(),
                ru: redirect_uri.clone(),
                cc: challenge,
                st: state.clone(),
                r: resource.clone(),
                v: self.keys.random(32)?,
                e: now() + self.cfg.flow_ttl.as_secs(),
            })
        })() else {
            return Some(Reply::error_page(
                500,
                "Internal error",
                "no randomness available",
            ));
        };
        let Some(sealed) = self.seal(Kind::Flow, &flow) else {
            return Some(Reply::error_page(500, "Internal error", "sealing failed"));
        };
        if sealed.len() > MAX_FLOW_COOKIE {
            return Some(self.refuse_page(
                &client_id,
                400,
                "Authorization request too large",
                "The client id, redirect URI and state together do not fit a browser cookie.",
            ));
        }
        if self
            .idp
            .metadata
            .get(&self.idp.http, self.idp.max_bytes)
            .await
            .is_err()
        {
            return Some(Reply::error_page(
                503,
                "The identity provider is unreachable",
                "tsidp's metadata cannot be fetched; try again in a moment.",
            ));
        }
        let authz = self
            .idp
            .metadata
            .authorization_endpoint()
            .unwrap_or_else(|| format!("{}/authorize", self.idp.issuer));
        let callback = format!("{}{CALLBACK_PATH}", self.origin);
        let challenge = pkce::challenge(&flow.v);
        let scope = SCOPES.join(" ");
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &self.idp.client_id),
            ("redirect_uri", &callback),
            ("scope", &scope),
            ("state", &flow.id),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ];
        if resource != self.origin {
            params.push(("resource", &resource));
        }
        self.om()
            .authorizations
            .with_label_values(&["started"])
            .inc();
        let mut r = Reply::redirect(with_params(&authz, &params));
        r.headers.push((
            "set-cookie",
            self.flow_cookie(&flow.id, &sealed, self.cfg.flow_ttl.as_secs()),
        ));
        Some(r)
    }

    /// The flow whose cookie this browser carries for `id`, when valid.
    fn flow_from_cookie(&self, cookies: Option<&str>, id: &str) -> Option<Flow> {
        let raw = cookie(cookies, &self.flow_cookie_name(id))?;
        let flow: Flow = self.open(Kind::Flow, raw)?;
        (flow.id == id && flow.e > now()).then_some(flow)
    }

    /// `GET /oauth/callback`: tsidp sent the browser back.
    pub async fn callback(
        &self,
        query: Option<&str>,
        cookies: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Reply {
        let q = form(query.unwrap_or(""));
        let Ok(Some(state)) = single(&q, "state") else {
            return self.refuse_page(
                "-",
                400,
                "state is missing",
                "tsidp's answer carries no state.",
            );
        };
        let Some(flow) = self.flow_from_cookie(cookies, state) else {
            return self.refuse_page(
                "-",
                400,
                "This sign-in cannot be finished in this browser",
                "It was started in another browser, or it expired. Start again from your MCP client.",
            );
        };
        let st = flow.st.as_deref();
        if let Ok(Some(e)) = single(&q, "error") {
            self.om()
                .authorizations
                .with_label_values(&["idp_error"])
                .inc();
            self.record(&format!("tsidp: {e}"), None, &flow.c, &flow.r);
            let code = if e == "access_denied" {
                "access_denied"
            } else {
                "server_error"
            };
            return self.redirect_error(
                &flow.ru,
                st,
                code,
                "the identity provider refused the sign-in",
            );
        }
        let Ok(Some(code)) = single(&q, "code") else {
            return self.refuse_page(
                &flow.c,
                400,
                "code is missing",
                "tsidp's answer carries no code.",
            );
        };
        // Each callback costs a call to tsidp with the bridge's secret: budget them.
        let budget = ip
            .map(client_key)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        if !self.callbacks.allow(budget) {
            return Reply::error_page(
                429,
                "Too many sign-ins from this address",
                "Wait a minute and start again.",
            );
        }
        let Ok(_slot) = self.exchanges.try_acquire() else {
            return Reply::error_page(
                503,
                "The bridge is busy",
                "Too many sign-ins at once; try again in a moment.",
            );
        };
        let tokens = match self.exchange_code(code, &flow.v).await {
            Ok(t) => t,
            Err(IdpFailure::Unavailable(why)) => {
                self.om()
                    .authorizations
                    .with_label_values(&["idp_error"])
                    .inc();
                log::warn!("broker callback: tsidp unreachable: {why}");
                return Reply::error_page(
                    503,
                    "The identity provider is unreachable",
                    "Try again in a moment.",
                );
            }
            Err(IdpFailure::Refused(why)) => {
                self.om()
                    .authorizations
                    .with_label_values(&["idp_error"])
                    .inc();
                self.record("refused: tsidp code exchange", None, &flow.c, &flow.r);
                if !why.contains("invalid_client") && !why.contains("unauthorized_client") {
                    log::info!("broker callback: tsidp refused the code ({why})");
                    return Reply::error_page(
                        400,
                        "The identity provider refused the sign-in",
                        &format!("tsidp answered: {why}. Start again from your MCP client."),
                    );
                }
                log::warn!(
                    "broker callback: tsidp refused the code exchange ({why}); check that tsidp's client {} lists {}{CALLBACK_PATH}",
                    self.idp.client_id, self.origin
                );
                return Reply::error_page(
                    502,
                    "The identity provider refused the sign-in",
                    &format!("tsidp answered: {why}"),
                );
            }
        };
        let who = match self.identify(&tokens.access).await {
            Ok(w) => w,
            Err(e) => {
                self.om()
                    .authorizations
                    .with_label_values(&["idp_error"])
                    .inc();
                log::warn!("broker callback: cannot tell who signed in: {e:?}");
                return Reply::error_page(
                    502,
                    "The identity provider did not say who you are",
                    "Try again in a moment.",
                );
            }
        };
        let consent = Consent {
            s: who.sub,
            u: who.username,
            g: who.grants,
            t: tokens.refresh,
            e: flow.e,
            f: flow,
        };
        let client = match self.client(&consent.f.c, ip).await {
            Ok(Some(c)) => c,
            _ => {
                return self.refuse_page(
                    &consent.f.c,
                    400,
                    "Unknown or unusable client",
                    "The client is no longer valid.",
                )
            }
        };
        let Some(sealed) = self.seal(Kind::Consent, &consent) else {
            return Reply::error_page(500, "Internal error", "sealing failed");
        };
        let csrf = self.keys.mac("csrf", consent.f.b.as_bytes());
        let endpoints: Vec<String> = if consent.f.r == self.origin {
            Vec::new()
        } else {
            self.resources
                .iter()
                .filter(|r| r.url == consent.f.r)
                .map(|r| r.path.clone())
                .collect()
        };
        let user = consent
            .u
            .as_deref()
            .or(consent.s.as_deref())
            .unwrap_or("an unnamed user");
        let host = redirect::shown_host(&consent.f.ru);
        let html = page::consent(&page::ConsentView {
            user,
            client_name: client.name(),
            client_document: match &client {
                Client::Document(d) => Some(&d.client_id),
                Client::Registered { .. } => None,
            },
            self_registered: matches!(client, Client::Registered { .. }),
            redirect_host: &host,
            endpoints: &endpoints,
            consent: &sealed,
            csrf: &csrf,
        });
        Reply::page(200, html)
    }

    /// `POST /oauth/consent`: the user's decision.
    pub async fn consent(
        &self,
        body: &str,
        cookies: Option<&str>,
        origin_header: Option<&str>,
    ) -> Reply {
        if let Some(o) = origin_header {
            if crate::config::server::normalise_origin(o).as_deref() != Some(self.origin.as_str()) {
                return self.refuse_page(
                    "-",
                    403,
                    "Cross-site consent refused",
                    "The consent form was posted from another site.",
                );
            }
        }
        let f = form(body);
        let (Ok(Some(sealed)), Ok(Some(csrf)), Ok(Some(decision))) = (
            single(&f, "consent"),
            single(&f, "csrf"),
            single(&f, "decision"),
        ) else {
            return self.refuse_page(
                "-",
                400,
                "Incomplete consent form",
                "The form lacks its consent, csrf or decision field.",
            );
        };
        let Some(consent) = self.open::<Consent>(Kind::Consent, sealed) else {
            return self.refuse_page(
                "-",
                400,
                "Invalid consent form",
                "The form was not issued by this bridge.",
            );
        };
        if consent.e <= now() {
            return self.refuse_page(
                &consent.f.c,
                400,
                "This sign-in expired",
                "Start again from your MCP client.",
            );
        }
        let Some(flow) = self.flow_from_cookie(cookies, &consent.f.id) else {
            return self.refuse_page(
                &consent.f.c,
                400,
                "This consent does not belong to this browser",
                "The sign-in was started in another browser, or it expired. Start again from your MCP client.",
            );
        };
        if flow.b != consent.f.b || !self.keys.verify_mac("csrf", flow.b.as_bytes(), csrf) {
            return self.refuse_page(
                &consent.f.c,
                400,
                "Invalid consent form",
                "The form's CSRF token does not match this browser's sign-in.",
            );
        }
        let clear = self.flow_cookie(&flow.id, "", 0);
        let st = flow.st.as_deref();
        let user = consent.u.as_deref().or(consent.s.as_deref());
        let mut reply = match decision {
            "deny" => {
                self.om().consents.with_label_values(&["deny"]).inc();
                self.record("denied", user, &flow.c, &flow.r);
                self.redirect_error(&flow.ru, st, "access_denied", "the user denied access")
            }
            "allow" if single(&f, "confirm") != Ok(Some("yes")) => {
                return self.refuse_page(
                    &flow.c,
                    400,
                    "Please confirm",
                    "Tick \"I started this sign-in myself, just now\" before you press Allow.",
                )
            }
            "allow" => {
                let Some(j) = self.keys.random(16) else {
                    return Reply::error_page(500, "Internal error", "no randomness available");
                };
                let code = Code {
                    j,
                    c: flow.c.clone(),
                    ru: flow.ru.clone(),
                    cc: flow.cc.clone(),
                    r: flow.r.clone(),
                    s: consent.s.clone(),
                    u: consent.u.clone(),
                    g: consent.g.clone(),
                    t: consent.t.clone(),
                    e: now() + self.cfg.code_ttl.as_secs(),
                };
                let Some(code) = self.seal(Kind::Code, &code) else {
                    return Reply::error_page(500, "Internal error", "sealing failed");
                };
                self.om().consents.with_label_values(&["allow"]).inc();
                self.record("granted", user, &flow.c, &flow.r);
                audit_grant(user, consent.s.as_deref(), &flow.c, &flow.r);
                let mut p: Vec<(&str, &str)> = vec![("code", &code)];
                if let Some(s) = st {
                    p.push(("state", s));
                }
                p.push(("iss", &self.origin));
                Reply::redirect(with_params(&flow.ru, &p))
            }
            _ => {
                return self.refuse_page(
                    &flow.c,
                    400,
                    "Invalid decision",
                    "decision must be allow or deny.",
                )
            }
        };
        reply.headers.push(("set-cookie", clear));
        reply
    }

    /// `POST /register` (RFC 7591) at the broker.
    pub fn register(&self, body: &[u8], client_ip: Option<IpAddr>) -> Reply {
        let ip = client_ip
            .map(client_key)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        if !self.dcr.allow(ip) {
            self.om()
                .registrations
                .with_label_values(&["rate_limited"])
                .inc();
            let mut r = Reply::oauth_error(
                429,
                "rate_limited",
                "too many registrations from this address; retry in a minute",
            );
            r.headers.push(("retry-after", "60".into()));
            return r;
        }
        match self.registration(body) {
            Ok(v) => {
                self.om().registrations.with_label_values(&["ok"]).inc();
                Reply::json(201, &v)
            }
            Err((code, why)) => {
                self.om()
                    .registrations
                    .with_label_values(&["invalid"])
                    .inc();
                Reply::oauth_error(400, code, &why)
            }
        }
    }

    fn registration(&self, body: &[u8]) -> Result<Value, (&'static str, String)> {
        let meta = |s: &str| ("invalid_client_metadata", s.to_string());
        let v: Value = serde_json::from_slice(body).map_err(|_| meta("the body is not JSON"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| meta("the body is not a JSON object"))?;
        let uris: Vec<String> = obj
            .get("redirect_uris")
            .and_then(Value::as_array)
            .ok_or((
                "invalid_redirect_uri",
                "redirect_uris is required".to_string(),
            ))?
            .iter()
            .map(|u| u.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or((
                "invalid_redirect_uri",
                "every redirect URI must be a string".to_string(),
            ))?;
        if uris.is_empty() || uris.len() > self.cfg.max_redirect_uris {
            return Err((
                "invalid_redirect_uri",
                format!(
                    "give between 1 and {} redirect URIs",
                    self.cfg.max_redirect_uris
                ),
            ));
        }
        if uris.iter().map(String::len).sum::<usize>() > 1024 {
            return Err((
                "invalid_redirect_uri",
                "the redirect URIs together may be at most 1024 characters long".to_string(),
            ));
        }
        for u in &uris {
            redirect::registrable(u)
                .map_err(|why| ("invalid_redirect_uri", format!("`{u}`: {why}")))?;
        }
        let method = match obj.get("token_endpoint_auth_method") {
            None => AuthMethod::Basic, // RFC 7591 §2 default
            Some(Value::String(m)) => AuthMethod::parse(m).ok_or_else(|| {
                meta(&format!("token_endpoint_auth_method `{m}` is not one of none, client_secret_basic, client_secret_post"))
            })?,
            Some(_) => return Err(meta("token_endpoint_auth_method must be a string")),
        };
        let subset = |key: &str, allowed: &[&str]| -> Result<Vec<String>, (&'static str, String)> {
            match obj.get(key) {
                None => Ok(allowed.iter().map(|s| s.to_string()).collect()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| match x.as_str() {
                        Some(s) if allowed.contains(&s) => Ok(s.to_string()),
                        _ => Err(meta(&format!("{key} may list only {}", allowed.join(", ")))),
                    })
                    .collect(),
                Some(_) => Err(meta(&format!("{key} must be a list"))),
            }
        };
        let grant_types = subset("grant_types", &["authorization_code", "refresh_token"])?;
        let response_types = subset("response_types", &["code"])?;
        let name = match obj.get("client_name") {
            None => "an unnamed client".to_string(),
            Some(Value::String(n)) => {
                let n: String = n.chars().filter(|c| !c.is_control()).take(64).collect();
                if n.trim().is_empty() {
                    "an unnamed client".to_string()
                } else {
                    n
                }
            }
            Some(_) => return Err(meta("client_name must be a string")),
        };
        let issued = now();
        let reg = Registration {
            n: name.clone(),
            r: uris.clone(),
            m: method,
            t: issued,
        };
        let id = self
            .seal(Kind::ClientId, &reg)
            .ok_or(("server_error", "sealing failed".to_string()))?;
        let mut out = json!({
            "client_id": id,
            "client_id_issued_at": issued,
            "client_name": name,
            "redirect_uris": uris,
            "grant_types": grant_types,
            "response_types": response_types,
            "token_endpoint_auth_method": method.as_str(),
        });
        if method != AuthMethod::None {
            out["client_secret"] = json!(self.keys.mac("client-secret", id.as_bytes()));
            out["client_secret_expires_at"] = json!(0);
        }
        Ok(out)
    }

    /// Authenticate the client at `/token`.
    async fn authenticate_client(
        &self,
        p: &Presented,
        ip: Option<IpAddr>,
    ) -> Result<Client, Reply> {
        let invalid = |why: &str| {
            let mut r = Reply::oauth_error(401, "invalid_client", why);
            if p.basic {
                r.headers
                    .push(("www-authenticate", "Basic realm=\"tailbridge\"".into()));
            }
            r
        };
        let Some(id) = p.client_id.as_deref() else {
            return Err(invalid("client_id is missing"));
        };
        let client = match self.client(id, ip).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(invalid("unknown client")),
            Err(ClientError::Invalid(e)) => return Err(invalid(&e)),
            // Not the client's fault (a document that cannot be fetched now): `invalid_client`
            // would make clients such as Claude.ai register again.
            Err(ClientError::Unavailable(e)) => {
                let mut r = Reply::oauth_error(503, "temporarily_unavailable", &e);
                r.headers.push(("retry-after", "5".into()));
                return Err(r);
            }
        };
        match (client.method(), p.secret.as_deref()) {
            (AuthMethod::None, None) => Ok(client),
            (AuthMethod::None, Some(_)) => {
                Err(invalid("this client is public: send no client_secret"))
            }
            (_, Some(s)) if self.keys.verify_mac("client-secret", id.as_bytes(), s) => Ok(client),
            (_, Some(_)) => Err(invalid("wrong client_secret")),
            (_, None) => Err(invalid(
                "this client must authenticate with its client_secret",
            )),
        }
    }

    /// Whether a `/token` request is the broker's: its code, its refresh token or its client.
    pub fn owns_token_request(&self, body: &[(String, String)], p: &Presented) -> bool {
        let starts = |k: &str, kind: Kind| {
            body.iter()
                .any(|(key, v)| key == k && v.starts_with(kind.prefix()))
        };
        starts("code", Kind::Code)
            || starts("refresh_token", Kind::RefreshToken)
            || p.client_id
                .as_deref()
                .is_some_and(|id| self.owns_client_id(id))
    }

    /// `POST /token` for the broker's clients.
    pub async fn token(
        &self,
        body: &[(String, String)],
        p: Presented,
        ip: Option<IpAddr>,
    ) -> Reply {
        let grant = match single(body, "grant_type") {
            Ok(Some(g)) => g,
            _ => {
                return Reply::oauth_error(400, "invalid_request", "grant_type is required (once)")
            }
        };
        let label = match grant {
            "authorization_code" => "authorization_code",
            "refresh_token" => "refresh_token",
            _ => {
                return Reply::oauth_error(
                    400,
                    "unsupported_grant_type",
                    "grant_type must be authorization_code or refresh_token",
                )
            }
        };
        let (reply, outcome) = match self.authenticate_client(&p, ip).await {
            Err(r) if r.status == 503 => (r, "idp_unavailable"),
            Err(r) => (r, "invalid_client"),
            Ok(client) => match label {
                "authorization_code" => self.code_grant(body, &client),
                _ => self.refresh_grant(body, &client).await,
            },
        };
        self.om().tokens.with_label_values(&[label, outcome]).inc();
        reply
    }

    fn code_grant(&self, body: &[(String, String)], client: &Client) -> (Reply, &'static str) {
        let bad = |code: &str, why: &str| (Reply::oauth_error(400, code, why), outcome_of(code));
        let (Ok(Some(code)), Ok(verifier), Ok(redirect_uri), Ok(resource)) = (
            single(body, "code"),
            single(body, "code_verifier"),
            single(body, "redirect_uri"),
            single(body, "resource"),
        ) else {
            return bad(
                "invalid_request",
                "code is required, and no parameter may repeat",
            );
        };
        let Some(c) = self.open::<Code>(Kind::Code, code) else {
            return bad("invalid_grant", "the code is invalid");
        };
        if c.e <= now() {
            return bad("invalid_grant", "the code expired");
        }
        if c.c != client.id() {
            return bad("invalid_grant", "the code was issued to another client");
        }
        if redirect_uri.is_some_and(|r| r != c.ru) {
            return bad(
                "invalid_grant",
                "redirect_uri differs from the authorization request's",
            );
        }
        let Some(verifier) = verifier else {
            return bad("invalid_request", "code_verifier is required (PKCE)");
        };
        if !pkce::verify(verifier, &c.cc) {
            return bad(
                "invalid_grant",
                "code_verifier does not match the code_challenge",
            );
        }
        if let Some(r) = resource {
            if normalise_url(r) != c.r {
                return bad(
                    "invalid_target",
                    "resource differs from the one consented to",
                );
            }
        }
        // Single use: the first redemption inserts the code's id; any later one finds it.
        let fresh = self.used_codes.entry(c.j.clone()).or_insert(()).is_fresh();
        if !fresh {
            log::warn!("authorization code replayed for client {}", client.id());
            return bad("invalid_grant", "the code was already used");
        }
        match self.mint(&c.c, &c.r, c.s, c.u, c.g, c.t) {
            Some(v) => (Reply::json(200, &v), "ok"),
            None => bad("server_error", "sealing failed"),
        }
    }

    /// An access token (and a refresh token when tsidp gave one) as a `/token` answer.
    fn mint(
        &self,
        client: &str,
        resource: &str,
        sub: Option<String>,
        username: Option<String>,
        grants: Option<Value>,
        idp_refresh: Option<String>,
    ) -> Option<Value> {
        let ttl = self.cfg.access_token_ttl.as_secs();
        let access = Access {
            s: sub.clone(),
            u: username.clone(),
            c: client.to_string(),
            r: resource.to_string(),
            g: grants,
            e: now() + ttl,
        };
        let at = self.seal(Kind::AccessToken, &access)?;
        let mut out = json!({
            "access_token": at,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": SCOPES.join(" "),
        });
        if let Some(t) = idp_refresh {
            let rt = Refresh {
                j: self.keys.random(12)?,
                c: client.to_string(),
                r: resource.to_string(),
                s: sub,
                u: username,
                t,
                e: now() + self.cfg.refresh_token_ttl.as_secs(),
            };
            out["refresh_token"] = json!(self.seal(Kind::RefreshToken, &rt)?);
        }
        Some(out)
    }

    async fn refresh_grant(
        &self,
        body: &[(String, String)],
        client: &Client,
    ) -> (Reply, &'static str) {
        let bad = |code: &str, why: &str| (Reply::oauth_error(400, code, why), outcome_of(code));
        let (Ok(Some(token)), Ok(resource)) =
            (single(body, "refresh_token"), single(body, "resource"))
        else {
            return bad(
                "invalid_request",
                "refresh_token is required, and no parameter may repeat",
            );
        };
        let Some(rt) = self.open::<Refresh>(Kind::RefreshToken, token) else {
            return bad("invalid_grant", "the refresh token is invalid");
        };
        if rt.e <= now() {
            return bad("invalid_grant", "the refresh token expired");
        }
        if rt.c != client.id() {
            return bad(
                "invalid_grant",
                "the refresh token was issued to another client",
            );
        }
        if resource.is_some_and(|r| normalise_url(r) != rt.r) {
            return bad(
                "invalid_target",
                "resource differs from the one consented to",
            );
        }
        // One refresh per token at a time; a repeat within the window gets the same answer
        // (tsidp's refresh tokens are single-use: a second call would fail and log the user out).
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let ran = std::sync::atomic::AtomicBool::new(false);
        let answer = self
            .refreshes
            .try_get_with(key, async {
                ran.store(true, std::sync::atomic::Ordering::Relaxed);
                self.refresh_at_idp(&rt).await.map(RefreshAnswer)
            })
            .await;
        let first = ran.load(std::sync::atomic::Ordering::Relaxed);
        match answer {
            Ok(a) => {
                let outcome = if !first {
                    "reused"
                } else if a.0.status == 200 {
                    "ok"
                } else {
                    "invalid_grant"
                };
                (a.0, outcome)
            }
            Err(e) => {
                log::warn!("broker refresh: tsidp unavailable: {e}");
                let mut r = Reply::oauth_error(
                    503,
                    "temporarily_unavailable",
                    "the identity provider cannot be reached; retry",
                );
                r.headers.push(("retry-after", "5".into()));
                (r, "idp_unavailable")
            }
        }
    }

    /// Refresh at tsidp and mint new tokens. `Err` only for transient failures (not cached).
    async fn refresh_at_idp(&self, rt: &Refresh) -> Result<Reply, Arc<String>> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.t.as_str()),
        ];
        let tokens = match self.idp_token(&form).await {
            Ok(t) => t,
            Err(IdpFailure::Unavailable(why)) => return Err(Arc::new(why)),
            Err(IdpFailure::Refused(why)) => {
                log::info!("broker refresh refused by tsidp for client {}: {why}", rt.c);
                return Ok(Reply::oauth_error(
                    400,
                    "invalid_grant",
                    &format!("the identity provider refused the refresh ({why}); sign in again"),
                ));
            }
        };
        let who = match self.identify(&tokens.access).await {
            Ok(w) => w,
            Err(IdentifyError::Inactive) => {
                return Ok(Reply::oauth_error(
                    400,
                    "invalid_grant",
                    "the identity provider no longer accepts this user",
                ))
            }
            Err(IdentifyError::Unavailable(why)) => return Err(Arc::new(why)),
        };
        if who.sub.is_some() && rt.s.is_some() && who.sub != rt.s {
            return Ok(Reply::oauth_error(
                400,
                "invalid_grant",
                "the identity provider answered for another user",
            ));
        }
        match self.mint(
            &rt.c,
            &rt.r,
            who.sub.or(rt.s.clone()),
            who.username.or(rt.u.clone()),
            who.grants,
            tokens.refresh,
        ) {
            Some(v) => Ok(Reply::json(200, &v)),
            None => Ok(Reply::oauth_error(500, "server_error", "sealing failed")),
        }
    }

    async fn exchange_code(&self, code: &str, verifier: &str) -> Result<IdpTokens, IdpFailure> {
        let callback = format!("{}{CALLBACK_PATH}", self.origin);
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", callback.as_str()),
            ("code_verifier", verifier),
        ];
        self.idp_token(&form).await
    }

    /// One call to tsidp's token endpoint as the bridge's own client. Never retried.
    async fn idp_token(&self, form: &[(&str, &str)]) -> Result<IdpTokens, IdpFailure> {
        let url = self.idp_endpoint("token_endpoint", "token").await;
        let sent = self
            .idp
            .http
            .post(&url)
            .basic_auth(&self.idp.client_id, Some(self.idp.secret.expose()))
            .header("accept", JSON)
            .form(form)
            .timeout(self.idp.timeout)
            .send()
            .await
            .map_err(|e| IdpFailure::Unavailable(e.to_string()))?;
        let status = sent.status().as_u16();
        let body = read_capped(sent, MAX_IDP_ANSWER)
            .await
            .map_err(|e| IdpFailure::Unavailable(e.to_string()))?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status >= 500 {
            return Err(IdpFailure::Unavailable(format!("HTTP {status}")));
        }
        if status != 200 {
            let what = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("an error")
                .chars()
                .take(64)
                .collect::<String>();
            return Err(IdpFailure::Refused(format!("HTTP {status} {what}")));
        }
        let access = v
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| IdpFailure::Refused("no access_token in the answer".into()))?;
        Ok(IdpTokens {
            access: access.to_string(),
            refresh: v
                .get("refresh_token")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// Who a tsidp access token belongs to (introspection), and their tool grants (userinfo).
    async fn identify(&self, access: &str) -> Result<Who, IdentifyError> {
        let claims = introspect(
            &self.idp.http,
            &self.idp.introspection_url,
            &self.idp.client_id,
            self.idp.secret.expose(),
            access,
            self.idp.max_bytes,
        )
        .await
        .map_err(|e| IdentifyError::Unavailable(e.to_string()))?;
        if !claims.active {
            return Err(IdentifyError::Inactive);
        }
        let grants = match &self.idp.tool_grants_claim {
            None => None,
            Some(claim) => self.userinfo_claim(access, claim).await,
        };
        Ok(Who {
            sub: claims.sub,
            username: claims.username,
            grants,
        })
    }

    async fn userinfo_claim(&self, access: &str, claim: &str) -> Option<Value> {
        let url = self.idp_endpoint("userinfo_endpoint", "userinfo").await;
        let i = &self.idp;
        match super::userinfo::fetch_claim(&i.http, &url, access, claim, i.max_bytes).await {
            Ok(v) => v,
            Err(e) => {
                log::warn!("broker: {e}: no tool grants from the claim");
                None
            }
        }
    }

    /// An endpoint from tsidp's metadata (`<issuer>/<fallback>` before it is known).
    async fn idp_endpoint(&self, key: &str, fallback: &str) -> String {
        let i = &self.idp;
        i.metadata
            .endpoint(&i.http, i.max_bytes, key, &i.issuer, fallback)
            .await
    }

    /// Verify a broker access token for the endpoint at `endpoint_url`. Pure apart from the
    /// clock: no I/O.
    ///
    /// A token opened once is remembered (keyed by its last characters, the AEAD tag, and
    /// compared whole on a hit), so the next request pays a lookup instead of the decryption
    /// and the principal's construction. Expiry, resource and client are checked every time.
    pub fn verify(&self, token: &str, endpoint_url: &str) -> Result<Arc<Principal>, AuthError> {
        let key = token
            .get(token.len().saturating_sub(VERIFIED_KEY_CHARS)..)
            .unwrap_or(token);
        let v = match self.verified.get(key).filter(|v| &*v.token == token) {
            Some(v) => v,
            None => {
                let a: Access = self
                    .open(Kind::AccessToken, token)
                    .ok_or(AuthError::Inactive)?;
                let grants = match &a.g {
                    Some(g) => crate::mcp::policy::parse_claim(Some(g)),
                    None => Vec::new(),
                };
                let v = Arc::new(Verified {
                    token: token.into(),
                    exp: a.e,
                    resource: a.r,
                    principal: Arc::new(Principal::new(a.s, a.u, Some(a.c), grants)),
                });
                if v.exp > now() {
                    self.verified.insert(key.to_string(), v.clone());
                }
                v
            }
        };
        if v.exp <= now() {
            return Err(AuthError::Expired);
        }
        if (v.resource != self.origin || self.endpoint_resources_only)
            && v.resource != normalise_url(endpoint_url)
        {
            return Err(AuthError::WrongAudience);
        }
        let client = v.principal.client_id.as_deref().unwrap_or_default();
        if !self.allowed_clients.is_empty() && !self.allowed_clients.iter().any(|c| c == client) {
            return Err(AuthError::ClientNotAllowed);
        }
        Ok(v.principal.clone())
    }

    /// Seal an access token with these claims (benches and tests; `/token` mints its own).
    pub fn access_token(&self, claims: &Access) -> Option<String> {
        self.seal(Kind::AccessToken, claims)
    }

    /// Whether a bearer token is one the broker issued (by its form, not yet verified).
    pub fn is_broker_token(token: &str) -> bool {
        token.starts_with(Kind::AccessToken.prefix())
    }
}

/// Why a broker client cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The client itself is wrong (forged id, invalid document, not allowed).
    Invalid(String),
    /// Its metadata document cannot be had now (network, its server, the fetch budget).
    Unavailable(String),
}

/// The verified-token cache: bounded, and no entry outlives five minutes (expiry is also
/// checked on every hit).
fn verified_cache() -> moka::sync::Cache<String, Arc<Verified>> {
    moka::sync::Cache::builder()
        .max_capacity(VERIFIED_CAPACITY)
        .time_to_live(Duration::from_secs(300))
        .build()
}

fn outcome_of(code: &str) -> &'static str {
    match code {
        "invalid_grant" => "invalid_grant",
        "invalid_client" => "invalid_client",
        _ => "invalid_request",
    }
}

/// The audit line for a granted authorization (log target `tailbridge::audit`).
fn audit_grant(user: Option<&str>, sub: Option<&str>, client: &str, resource: &str) {
    let line = json!({
        "ts": crate::mcp::audit::now_rfc3339(),
        "event": "oauth.authorization_granted",
        "username": user,
        "sub": sub,
        "client_id": client.chars().take(300).collect::<String>(),
        "resource": resource,
    });
    crate::observe::lines::emit(crate::mcp::audit::TARGET, |out| {
        let _ = serde_json::to_writer(&mut *out, &line);
    });
}

#[derive(Debug)]
struct IdpTokens {
    access: String,
    refresh: Option<String>,
}

#[derive(Debug)]
enum IdpFailure {
    Unavailable(String),
    Refused(String),
}

#[derive(Debug)]
enum IdentifyError {
    Inactive,
    Unavailable(String),
}

#[derive(Debug)]
struct Who {
    sub: Option<String>,
    username: Option<String>,
    grants: Option<Value>,
}

#[cfg(test)]
mod tests;
