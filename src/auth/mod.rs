//! The OAuth resource server: token verification and the tsidp facade.
//!
//! [`bearer`] extracts tokens, [`introspect`] asks tsidp about them (RFC 7662), [`verify`]
//! caches and checks the answers, [`metadata`] builds the discovery documents (RFC 9728,
//! RFC 8414), [`ratelimit`] protects the IdP, [`userinfo`] reads tool grants from tsidp.

pub mod bearer;
pub mod broker;
pub mod introspect;
pub mod metadata;
pub mod ratelimit;
pub mod redirect;
pub mod relay;
pub mod userinfo;
pub mod verify;

pub use verify::{AuthError, Principal, Verifier};

use crate::config::secrets::SecretError;
use crate::config::Auth;
use crate::observe::metrics::Metrics;
use crate::tailnet::Connector;
use ratelimit::KeyedLimiter;
use std::net::IpAddr;
use std::sync::Arc;

/// Everything the proxy needs for auth, built once at start.
#[derive(Debug)]
pub struct AuthRuntime {
    pub cfg: Arc<Auth>,
    pub verifier: Verifier,
    pub metadata: Arc<metadata::AsMetadata>,
    /// reqwest client that reaches tsidp through the tailnet connector.
    pub http: reqwest::Client,
    /// tsidp's base URL without a trailing slash.
    pub idp_base: String,
    pub registrations: KeyedLimiter,
    /// The OAuth broker (`auth.broker.enabled`).
    pub broker: Option<broker::Broker>,
    /// Pass-through refresh grants, coalesced.
    pub relay: relay::TokenRelay,
}

/// Why auth could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth.client_secret: {0}")]
    Secret(#[source] SecretError),
    #[error("building the IdP HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("{0}")]
    Broker(#[from] broker::BrokerSetupError),
}

/// The key all `/register` calls share in the registration rate limiter.
pub const REGISTRATION_KEY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

impl AuthRuntime {
    /// `endpoints` matter only to the broker: the resources it grants.
    pub fn new(
        cfg: Auth,
        connector: &dyn Connector,
        metrics: Arc<Metrics>,
        endpoints: &[crate::config::Endpoint],
        oauth_events: Arc<crate::observe::health::OauthEvents>,
    ) -> Result<Self, AuthSetupError> {
        let secret = cfg
            .client_secret
            .resolve()
            .map_err(AuthSetupError::Secret)?;
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.introspection.timeout)
            .connect_timeout(cfg.introspection.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tailbridge/", env!("CARGO_PKG_VERSION")));
        if let Some(proxy) = connector.reqwest_proxy() {
            builder = builder.proxy(proxy);
        } else {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(AuthSetupError::Client)?;
        for (what, url) in [
            ("auth.issuer", &cfg.issuer),
            ("auth.introspection_url", &cfg.introspection_url),
        ] {
            if crate::config::server::is_loopback_url(url) {
                let msg = format!(
                    "{what} {url} is a loopback address: tsidp grants loopback callers admin and \
                     registration rights and treats them as identified. Run the bridge on its own \
                     node and reach tsidp over the tailnet."
                );
                if cfg.allow_loopback_idp {
                    log::info!("{msg} (auth.allow_loopback_idp is set)");
                } else {
                    log::warn!("{msg}");
                }
            }
        }
        let cfg = Arc::new(cfg);
        let metadata = Arc::new(metadata::AsMetadata::new(&cfg.issuer, cfg.metadata_refresh));
        let idp_base = cfg.issuer.as_str().trim_end_matches('/').to_string();
        let broker = match &cfg.broker {
            Some(b) => Some(broker::Broker::new(
                b.clone(),
                broker::Idp {
                    http: http.clone(),
                    client_id: cfg.client_id.clone(),
                    secret: secret.clone(),
                    metadata: metadata.clone(),
                    issuer: idp_base.clone(),
                    introspection_url: cfg.introspection_url.to_string(),
                    max_bytes: cfg.introspection.max_response_bytes,
                    timeout: cfg.introspection.timeout,
                    tool_grants_claim: cfg.tool_grants_claim.clone(),
                },
                cfg.public_origin.clone(),
                cfg.allowed_client_ids.clone(),
                cfg.audience_check == crate::config::AudienceCheck::Endpoint,
                endpoints
                    .iter()
                    .filter(|e| e.enabled)
                    .map(|e| broker::Resource {
                        path: e.path.clone(),
                        url: format!("{}{}", cfg.public_origin, e.path),
                    })
                    .collect(),
                metrics.clone(),
                oauth_events,
            )?),
            None => None,
        };
        Ok(AuthRuntime {
            relay: relay::TokenRelay::default(),
            broker,
            verifier: Verifier::new(cfg.clone(), http.clone(), secret, metrics, metadata.clone()),
            metadata,
            idp_base,
            registrations: KeyedLimiter::new(
                f64::from(cfg.registration.per_minute) / 60.0,
                cfg.registration.per_minute,
            ),
            http,
            cfg,
        })
    }

    /// The authorization server the bridge advertises in its PRM documents.
    pub fn advertised_server(&self) -> &str {
        if self.broker.is_some() {
            return &self.cfg.public_origin;
        }
        match self.cfg.advertise {
            crate::config::Advertise::Bridge => &self.cfg.public_origin,
            crate::config::Advertise::Idp => &self.idp_base,
        }
    }

    /// Where `/authorize` redirects: tsidp's authorization endpoint from its metadata, or
    /// `<issuer>/authorize` before the metadata was fetched.
    pub fn authorization_endpoint(&self) -> String {
        self.metadata
            .authorization_endpoint()
            .unwrap_or_else(|| format!("{}/authorize", self.idp_base))
    }
}
