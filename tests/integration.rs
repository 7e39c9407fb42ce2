//! Process-level tests: the real tailbridge binary between a real client and real upstreams.

mod acme;
mod auth;
mod broker;
mod cli;
mod common;
mod doctor;
mod e2e;
mod fleet;
mod hostile;
mod logs;
mod mcp;
mod monitoring;
mod proxy;
mod reload;
mod status;
mod tailnet;
mod tools;
mod traces;
