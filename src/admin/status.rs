//! The status page (`GET /` on the admin listener): server-rendered HTML, no JavaScript, no
//! external resources, refreshing itself every 5 seconds. Everything on it comes from the
//! bridge's own state and metrics; it never shows a token, a secret or a request body.

use crate::config::Config;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use prometheus::proto::MetricFamily;
use std::fmt::Write;

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The sum of a counter or gauge family's samples whose labels include every `(name, value)`.
fn sum(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
        .sum()
}

/// Every distinct value of `label` among a family's samples with a non-zero value.
fn label_values(
    families: &[MetricFamily],
    name: &str,
    label: &str,
    filter: &[(&str, &str)],
) -> Vec<String> {
    let mut out: Vec<String> = families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_counter().get_value() > 0.0)
        .filter(|m| {
            filter.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .filter_map(|m| {
            m.get_label()
                .iter()
                .find(|l| l.name() == label)
                .map(|l| l.value().to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn ago(t: std::time::SystemTime) -> String {
    let s = t.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

fn duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.6em}\
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}\
.up{color:#176f2c;font-weight:600}.down{color:#b3261e;font-weight:600}.muted{color:#777}\
code{background:#f4f4f4;padding:0 .25em}";

/// The status page.
pub fn page(config: &Config, health: &Health, metrics: &Metrics) -> String {
    let f = metrics.families();
    let st = health.connector.status();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content=5>\
         <title>tailbridge status</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        h,
        "<h1>tailbridge {}</h1><p id=summary>up {} · tailnet <b>{}</b> · <span id=tailnet-state class={}>{}</span>{} · \
         <a href=/>refresh</a> (every 5 s) · <a href=/doctor>run the doctor</a> · <a href=/metrics>metrics</a></p>",
        env!("CARGO_PKG_VERSION"),
        duration(health.started.elapsed().as_secs()),
        st.mode.as_str(),
        if st.ready { "up" } else { "down" },
        if st.ready { "ready".to_string() } else { esc(st.reason.as_deref().unwrap_or("not ready")) },
        match health.connector.addresses() {
            a if a.is_empty() => String::new(),
            a => format!(" · node {}", esc(&a.join(", "))),
        }
    );
    // Endpoints
    let probes = health.probes.snapshot();
    h.push_str("<h2>Endpoints</h2><table id=endpoints><tr><th>endpoint</th><th>path</th><th>target</th>\
        <th>upstream</th><th>last probe</th><th>requests</th><th>5xx</th><th>open streams</th></tr>");
    for ep in &config.endpoints {
        let (state, probe) = match probes.get(&ep.name) {
            Some(p) if p.up => (
                "<span class=up>up</span>".to_string(),
                format!("{:.1} ms, {}", p.latency.as_secs_f64() * 1000.0, ago(p.at)),
            ),
            Some(p) => (
                "<span class=down>down</span>".to_string(),
                format!(
                    "{} ({})",
                    esc(p.error.as_deref().unwrap_or("unreachable")),
                    ago(p.at)
                ),
            ),
            None if !ep.enabled => ("<span class=muted>disabled</span>".into(), String::new()),
            None => (
                "<span class=muted>not probed yet</span>".into(),
                String::new(),
            ),
        };
        let _ = write!(
            h,
            "<tr data-endpoint=\"{n}\"><td>{n}</td><td><code>{p}</code></td><td><code>{t}</code></td><td class=state>{state}</td>\
             <td>{probe}</td><td>{r}</td><td>{e}</td><td>{s}</td></tr>",
            n = esc(&ep.name),
            p = esc(&ep.path),
            t = esc(ep.target.as_str()),
            r = sum(&f, "tailbridge_requests_total", &[("endpoint", &ep.name)]),
            e = sum(&f, "tailbridge_requests_total", &[("endpoint", &ep.name), ("status_class", "5xx")]),
            s = sum(&f, "tailbridge_active_streams", &[("endpoint", &ep.name)]),
        );
    }
    h.push_str("</table><p class=muted>Requests and 5xx since start.</p>");
    // MCP
    h.push_str("<h2>Tool calls</h2>");
    let mut rows = String::new();
    for ep in &config.endpoints {
        for tool in label_values(
            &f,
            "tailbridge_mcp_requests_total",
            "tool",
            &[("endpoint", &ep.name), ("method", "tools/call")],
        ) {
            let l = |o: &str| {
                sum(
                    &f,
                    "tailbridge_mcp_requests_total",
                    &[
                        ("endpoint", &ep.name),
                        ("method", "tools/call"),
                        ("tool", &tool),
                        ("outcome", o),
                    ],
                )
            };
            let _ = write!(
                rows,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&ep.name),
                esc(&tool),
                l("ok"),
                l("tool_error") + l("error"),
                l("denied"),
                l("cancelled") + l("unanswered")
            );
        }
    }
    if rows.is_empty() {
        h.push_str("<p class=muted>No tool calls yet.</p>");
    } else {
        let _ = write!(
            h,
            "<table id=tools><tr><th>endpoint</th><th>tool</th><th>ok</th><th>errors</th><th>denied</th><th>cancelled / unanswered</th></tr>{rows}</table>"
        );
    }
    // Auth
    h.push_str("<h2>Auth</h2>");
    match &config.auth {
        None => h.push_str("<p>off (authless): every client reaches every endpoint.</p>"),
        Some(a) => {
            let hits = sum(
                &f,
                "tailbridge_token_cache_requests_total",
                &[("result", "hit")],
            );
            let misses = sum(
                &f,
                "tailbridge_token_cache_requests_total",
                &[("result", "miss")],
            );
            let ratio = if hits + misses > 0.0 {
                100.0 * hits / (hits + misses)
            } else {
                0.0
            };
            let _ = write!(
                h,
                "<table id=auth><tr><td>IdP</td><td><code>{}</code></td></tr>\
                 <tr><td>metadata fetches</td><td>{} ok, {} failed</td></tr>\
                 <tr><td>introspections</td><td>{} active, {} inactive, {} failed or timed out, {} rate limited</td></tr>\
                 <tr><td>token cache</td><td>{:.0}% hits ({} hits, {} misses)</td></tr></table>",
                esc(a.issuer.as_str()),
                sum(&f, "tailbridge_idp_metadata_fetches_total", &[("outcome", "ok")]),
                sum(&f, "tailbridge_idp_metadata_fetches_total", &[("outcome", "error")]),
                sum(&f, "tailbridge_introspections_total", &[("outcome", "active")]),
                sum(&f, "tailbridge_introspections_total", &[("outcome", "inactive")]),
                sum(&f, "tailbridge_introspections_total", &[("outcome", "error")])
                    + sum(&f, "tailbridge_introspections_total", &[("outcome", "timeout")]),
                sum(&f, "tailbridge_introspections_total", &[("outcome", "rate_limited")]),
                ratio,
                hits,
                misses,
            );
        }
    }
    // Tool definitions that differ from their pins (or first-seen definitions)
    let mut changes: Vec<(String, String, String, f64)> = f
        .iter()
        .filter(|fam| fam.name() == "tailbridge_mcp_tool_changes_total")
        .flat_map(|fam| fam.get_metric().iter())
        .filter(|m| m.get_counter().get_value() > 0.0)
        .map(|m| {
            let l = |n: &str| {
                m.get_label()
                    .iter()
                    .find(|x| x.name() == n)
                    .map(|x| x.value().to_string())
                    .unwrap_or_default()
            };
            (
                l("endpoint"),
                l("tool"),
                l("change"),
                m.get_counter().get_value(),
            )
        })
        .collect();
    changes.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    h.push_str("<h2>Tool definition changes</h2>");
    if changes.is_empty() {
        h.push_str(
            "<p class=muted>None: every listed tool matches its pin (or its first definition).</p>",
        );
    } else {
        h.push_str("<table id=tool-changes><tr><th>endpoint</th><th>tool</th><th>change</th><th>new definitions seen</th></tr>");
        for (ep, tool, change, n) in &changes {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{n}</td></tr>",
                esc(ep),
                esc(tool),
                esc(change)
            );
        }
        h.push_str("</table><p class=muted>Review each change; if it is wanted, pin again: <code>tailbridge tools pin</code>.</p>");
    }
    // Refusals
    h.push_str("<h2>Recent refusals</h2>");
    let refusals = health.refusals.snapshot();
    if refusals.is_empty() {
        h.push_str("<p class=muted>None.</p>");
    } else {
        h.push_str("<table id=refusals><tr><th>when</th><th>endpoint</th><th>status</th><th>reason</th><th>client</th></tr>");
        for r in refusals.iter().rev() {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                ago(r.at),
                esc(&r.endpoint),
                r.status,
                r.reason,
                esc(&r.client)
            );
        }
        h.push_str("</table>");
    }
    // OAuth broker
    if config.auth.as_ref().is_some_and(|a| a.broker.is_some()) {
        h.push_str("<h2>OAuth broker</h2>");
        let _ = write!(
            h,
            "<p id=oauth-summary>authorizations started {} · allowed {} · denied {} · refused {} · tokens issued {} · refreshes {}</p>",
            sum(&f, "tailbridge_oauth_authorizations_total", &[("outcome", "started")]),
            sum(&f, "tailbridge_oauth_consents_total", &[("decision", "allow")]),
            sum(&f, "tailbridge_oauth_consents_total", &[("decision", "deny")]),
            sum(&f, "tailbridge_oauth_authorizations_total", &[("outcome", "refused")]),
            sum(&f, "tailbridge_oauth_tokens_total", &[("grant", "authorization_code"), ("outcome", "ok")]),
            sum(&f, "tailbridge_oauth_tokens_total", &[("grant", "refresh_token"), ("outcome", "ok")]),
        );
        let events = health.oauth.snapshot();
        if events.is_empty() {
            h.push_str("<p class=muted>No authorizations yet.</p>");
        } else {
            h.push_str("<table id=oauth><tr><th>when</th><th>what</th><th>user</th><th>client</th><th>resource</th></tr>");
            for e in events.iter().rev() {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    ago(e.at),
                    esc(&e.what),
                    esc(&e.user),
                    esc(&e.client),
                    esc(&e.resource)
                );
            }
            h.push_str("</table>");
        }
    }
    // TLS
    h.push_str("<h2>TLS</h2>");
    match health.certificate.get().and_then(|c| c.facts()) {
        Some(facts) => {
            let days = (facts.not_after - crate::tls::unix_now()) / 86_400;
            let next = sum(&f, "tailbridge_acme_next_renewal_timestamp_seconds", &[]);
            let _ = write!(
                h,
                "<p id=tls>certificate for <b>{}</b>, {} days left{}</p>",
                esc(&facts.dns_names.join(", ")),
                days,
                if next > 0.0 {
                    format!(
                        ", next renewal in {}",
                        duration((next as i64 - crate::tls::unix_now()).max(0) as u64)
                    )
                } else {
                    String::new()
                }
            );
        }
        None => h.push_str("<p>off on this listener (or no certificate yet).</p>"),
    }
    h.push_str("<p class=muted>This page is as unauthenticated as /metrics: keep the admin listener on loopback or a private address.</p></body></html>");
    h
}

/// The doctor's report as a page.
pub fn doctor_page(report: &crate::doctor::Report) -> String {
    let mut h = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>tailbridge doctor</title><style>{STYLE}</style></head><body>\
         <h1>tailbridge doctor</h1><p><a href=/doctor>run again</a> · <a href=/doctor.json>JSON</a> · <a href=/>status</a></p><table id=doctor>"
    );
    for c in &report.checks {
        let class = match c.status {
            crate::doctor::Status::Ok => "up",
            crate::doctor::Status::Failure => "down",
            _ => "muted",
        };
        let _ = write!(
            h,
            "<tr><td class={class}>{:?}</td><td>{}</td><td>{}{}</td></tr>",
            c.status,
            esc(&c.name),
            esc(&c.detail),
            c.hint
                .as_deref()
                .map(|x| format!("<br><span class=muted>fix: {}</span>", esc(x)))
                .unwrap_or_default()
        );
    }
    h.push_str("</table></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
