//! `health`: upstream probes.

use super::raw::*;
use super::*;
use serde::Deserialize;
use std::time::Duration;

/// Default interval between upstream reachability probes.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(15);

pub(super) const HEALTH_KEYS: &[&str] = &["probe_interval", "probe_timeout"];

#[derive(Debug, Clone)]
pub struct Health {
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHealth {
    pub probe_interval: Option<DurationValue>,
    pub probe_timeout: Option<DurationValue>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) fn health(e: &mut Errors, raw: RawHealth) -> Health {
    e.unknown("health", &raw.unknown, HEALTH_KEYS);
    let probe_interval = e.duration(
        "health.probe_interval",
        raw.probe_interval.as_ref(),
        DEFAULT_PROBE_INTERVAL,
    );
    if probe_interval < Duration::from_secs(1) {
        e.add("health.probe_interval", "must be at least 1s");
    }
    Health {
        probe_interval,
        probe_timeout: e.duration(
            "health.probe_timeout",
            raw.probe_timeout.as_ref(),
            Duration::from_secs(3),
        ),
    }
}
