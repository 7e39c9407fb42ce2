//! Observability: metrics, the access log, logging setup and health.

pub mod access_log;
pub mod health;
pub mod logging;
pub mod metrics;
