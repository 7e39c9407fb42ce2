//! The serde mirror of the YAML file.
//!
//! Every struct here matches one YAML mapping, field for field. Unknown keys are captured in
//! `unknown` (instead of `deny_unknown_fields`, which stops at the first one) so that
//! validation can report every misspelt key at once, each with its field path.
//! Nothing here interprets values: strings stay strings until `validate` turns them into
//! real types.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Keys that serde did not recognise, by name.
pub type Unknown = BTreeMap<String, serde_yaml::Value>;

/// A duration written as seconds (`30`) or with a unit (`500ms`, `30s`, `5m`, `1h`).
/// Anything else (a negative number, a list) is kept as written, so that validation can
/// name the field instead of serde naming only the section.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DurationValue {
    Seconds(u64),
    Text(String),
    Other(serde_yaml::Value),
}

/// A byte size written as bytes (`1048576`) or with a unit (`64KiB`, `4MiB`, `1MB`); other
/// values are kept as written for validation to report.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
    Other(serde_yaml::Value),
}

/// A number field: the value, or what was written instead (a negative count, a string,
/// a fraction where a whole number belongs). Never fails to deserialize, so validation
/// reports the field's full path (`limits.max_headers: ...`) with every other error.
#[derive(Debug, Clone)]
pub struct Num<T>(pub Result<T, String>);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Num<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        Ok(Num(T::deserialize(v.clone()).map_err(|_| written(&v))))
    }
}

/// A YAML value as it was written, for error messages.
pub fn written(v: &serde_yaml::Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub server: Option<RawServer>,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub tailnet: Option<RawTailnet>,
    #[serde(default)]
    pub auth: Option<RawAuth>,
    #[serde(default)]
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub log: Option<RawLog>,
    #[serde(default)]
    pub health: Option<RawHealth>,
    #[serde(default)]
    pub endpoints: Option<Vec<RawEndpoint>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    pub public_url: Option<String>,
    pub threads: Option<Num<usize>>,
    pub grace_period: Option<DurationValue>,
    pub shutdown_timeout: Option<DurationValue>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub strip_request_headers: Option<Vec<String>>,
    pub allowed_client_cidrs: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTailnet {
    pub mode: Option<String>,
    pub hostname: Option<String>,
    pub state_dir: Option<String>,
    pub authkey_env: Option<String>,
    pub authkey_file: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<String>,
    pub tags: Option<Vec<String>>,
    pub control_url: Option<String>,
    pub api_url: Option<String>,
    pub ephemeral: Option<bool>,
    pub log_upload: Option<bool>,
    pub socks5: Option<RawSocks5>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSocks5 {
    pub address: Option<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAuth {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub introspection_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<String>,
    pub resource_metadata_url: Option<String>,
    pub advertise: Option<String>,
    pub audience_check: Option<String>,
    pub allowed_client_ids: Option<Vec<String>>,
    pub identity_headers: Option<RawIdentityHeaders>,
    pub cache: Option<RawTokenCache>,
    pub introspection: Option<RawIntrospection>,
    pub registration: Option<RawRegistration>,
    pub metadata_refresh: Option<DurationValue>,
    pub allow_loopback_idp: Option<bool>,
    pub tool_grants_claim: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawIdentityHeaders {
    pub subject: Option<String>,
    pub username: Option<String>,
    pub client_id: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTokenCache {
    pub max_ttl: Option<DurationValue>,
    pub negative_ttl: Option<DurationValue>,
    pub capacity: Option<Num<u64>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawIntrospection {
    pub timeout: Option<DurationValue>,
    pub max_response_bytes: Option<SizeValue>,
    pub max_concurrent: Option<Num<usize>>,
    pub per_client_rate: Option<Num<f64>>,
    pub per_client_burst: Option<Num<u32>>,
    pub global_rate: Option<Num<f64>>,
    pub global_burst: Option<Num<u32>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRegistration {
    pub enabled: Option<bool>,
    pub allowed_redirect_uris: Option<Vec<String>>,
    pub per_minute: Option<Num<u32>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    pub mode: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub hsts: Option<String>,
    pub acme: Option<RawAcme>,
    pub http_listen: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAcme {
    pub domains: Option<Vec<String>>,
    pub email: Option<String>,
    pub directory_url: Option<String>,
    pub ca_root_file: Option<String>,
    pub challenge: Option<String>,
    pub storage_dir: Option<String>,
    pub eab: Option<RawEab>,
    pub retry_initial: Option<DurationValue>,
    pub retry_max: Option<DurationValue>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawEab {
    pub kid: Option<String>,
    pub hmac_key: Option<String>,
    pub hmac_key_env: Option<String>,
    pub hmac_key_file: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub max_request_body: Option<SizeValue>,
    pub max_header_bytes: Option<SizeValue>,
    pub max_headers: Option<Num<usize>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
    pub access_log: Option<bool>,
    pub audit: Option<RawAudit>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAudit {
    pub enabled: Option<bool>,
    pub arguments: Option<bool>,
    pub redact: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHealth {
    pub probe_interval: Option<DurationValue>,
    pub probe_timeout: Option<DurationValue>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawEndpoint {
    pub name: Option<String>,
    pub path: Option<String>,
    pub target: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub upstream_token_env: Option<String>,
    pub upstream_token_file: Option<String>,
    pub timeouts: Option<RawTimeouts>,
    pub tls_verify: Option<bool>,
    pub tools: Option<RawTools>,
    pub allowed_client_cidrs: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTools {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub grants: Option<Vec<RawGrant>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawGrant {
    pub users: Option<Vec<String>>,
    pub clients: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTimeouts {
    pub connect: Option<DurationValue>,
    pub first_byte: Option<DurationValue>,
    pub idle: Option<DurationValue>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
