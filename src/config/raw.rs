//! The serde mirror of the YAML file.
//!
//! Every struct here matches one YAML mapping, field for field. Unknown keys are captured in
//! `unknown` (instead of `deny_unknown_fields`, which stops at the first one) so that
//! validation can report every misspelt key at once, each with its field path.
//! Nothing here interprets values: strings stay strings until `validate` turns them into
//! real types. Each section's own mirror sits in that section's module.

use super::admin::RawAdmin;
use super::auth::RawAuth;
use super::endpoints::RawEndpoint;
use super::health::RawHealth;
use super::limits::RawLimits;
use super::log::RawLog;
use super::server::RawServer;
use super::tailnet::RawTailnet;
use super::tls::RawTls;
use super::tracing::RawTracing;
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
    pub tracing: Option<RawTracing>,
    #[serde(default)]
    pub endpoints: Option<Vec<RawEndpoint>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
