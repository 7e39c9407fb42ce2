//! The shipped alert rules and Grafana dashboard only use metrics that exist.

use crate::common::idp::{Idp, CLIENT_ID, CLIENT_SECRET};
use crate::common::*;
use std::collections::BTreeSet;

/// Every `tailbridge_…` metric name in `text`, with histogram suffixes removed.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("tailbridge_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_string());
        i = end;
    }
    out
}

#[tokio::test]
async fn alert_rules_and_dashboard_match_real_metrics() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let alerts = std::fs::read_to_string(conf.join("alerts.yaml")).unwrap();
    let dashboard = std::fs::read_to_string(conf.join("grafana-dashboard.json")).unwrap();
    // Both files parse.
    let rules: serde_yaml::Value = serde_yaml::from_str(&alerts).unwrap();
    assert!(rules["groups"][0]["rules"].as_sequence().unwrap().len() >= 8);
    let dash: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(dash["panels"].as_array().unwrap().len() >= 10);

    // A bridge with TLS and auth on, so that every metric family exists.
    let (up, idp) = (Upstream::start().await, Idp::start().await);
    let dir = temp_dir("mon");
    let (cert, key) = self_signed(&dir);
    let body = format!(
        "tls:\n  mode: files\n  cert_file: {}\n  key_file: {}\ntailnet:\n  mode: direct\nauth:\n  issuer: {iss}\n  audience: https://mcp.example.com\n  introspection_url: {iss}/introspect\n  client_id: {CLIENT_ID}\n  client_secret: {CLIENT_SECRET}\n  allow_loopback_idp: true\nendpoints:\n  - path: /mcp/a\n    target: {}\n",
        cert.display(),
        key.display(),
        up.url("/"),
        iss = idp.issuer(),
    );
    let b = Bridge::start_tls("", &body).await;
    let wanted = referenced(&alerts)
        .union(&referenced(&dashboard))
        .cloned()
        .collect::<BTreeSet<_>>();
    assert!(wanted.len() >= 15, "{wanted:?}");
    let needles: Vec<String> = wanted.iter().map(|m| format!("# TYPE {m} ")).collect();
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    let metrics = wait_for_metrics(&b, &needles).await;
    // And the expiry gauge reads about two days for the test certificate.
    let line = metrics
        .lines()
        .find(|l| l.starts_with("tailbridge_tls_certificate_expiry_seconds{"))
        .unwrap();
    let secs: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((86_400..=2 * 86_400 + 60).contains(&secs), "{line}");
}
