//! The broker's HTML pages: the consent page and error pages. Server-rendered, no
//! JavaScript, no external resources. Pure functions; every value is escaped.

use crate::admin::status::esc;

/// The response headers every broker page carries: never cached, never framed
/// (clickjacking the Allow button), no referrer leaking the query.
pub const PAGE_HEADERS: &[(&str, &str)] = &[
    ("cache-control", "no-store"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    ),
    // Same-origin: the consent POST carries a real `Origin` (checked), and no URL of the
    // bridge's pages reaches another site.
    ("referrer-policy", "same-origin"),
];

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:3em auto;padding:0 1em;color:#222}\
h1{font-size:1.4em}dl{display:grid;grid-template-columns:max-content 1fr;gap:.3em 1em}dt{color:#555}\
dd{margin:0;overflow-wrap:anywhere}.warn{background:#fff4e5;border-left:4px solid #e69500;padding:.5em 1em}\
button{font-size:1em;padding:.5em 1.5em;margin-right:1em;cursor:pointer}button[value=allow]{background:#0a6;color:#fff;border:0}";

/// What the consent page shows and carries.
#[derive(Debug)]
pub struct ConsentView<'a> {
    pub user: &'a str,
    pub client_name: &'a str,
    /// The metadata-document URL of a CIMD client.
    pub client_document: Option<&'a str>,
    /// Whether the client registered itself (DCR) and names itself.
    pub self_registered: bool,
    pub redirect_host: &'a str,
    /// The endpoints the token will reach (empty = all endpoints).
    pub endpoints: &'a [String],
    /// The sealed consent form and its CSRF token.
    pub consent: &'a str,
    pub csrf: &'a str,
}

/// The consent page: one form, Allow / Deny.
pub fn consent(v: &ConsentView<'_>) -> String {
    let reach = if v.endpoints.is_empty() {
        "<b>all endpoints</b> of this bridge".to_string()
    } else {
        v.endpoints
            .iter()
            .map(|e| format!("<b>{}</b>", esc(e)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let origin = match v.client_document {
        Some(doc) => format!("<dt>Client ID (metadata document)</dt><dd>{}</dd>", esc(doc)),
        None if v.self_registered => {
            "<dt>Client ID</dt><dd>registered itself with this bridge; the name above is its own claim</dd>"
                .to_string()
        }
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
<title>Allow access? · tailbridge</title><style>{STYLE}</style></head><body>\
<h1>Allow <span id=client-name>{name}</span> to use your MCP tools?</h1>\
<p>You are signed in as <b id=user>{user}</b>.</p>\
<dl><dt>Application</dt><dd>{name}</dd>{origin}<dt>Sends you back to</dt><dd id=redirect-host>{host}</dd>\
<dt>Access</dt><dd id=endpoints>{reach}</dd></dl>\
<p class=warn>Allow only if you started this sign-in yourself, just now, from this application. \
It will be able to call tools as you until you remove it there.</p>\
<form method=post action=/oauth/consent>\
<input type=hidden name=consent value=\"{consent}\"><input type=hidden name=csrf value=\"{csrf}\">\
<p><label><input type=checkbox name=confirm value=yes id=confirm> I started this sign-in myself, just now</label></p>\
<p class=buttons><button type=submit name=decision value=deny>Deny</button>\
<button type=submit name=decision value=allow>Allow</button></p></form></body></html>",
        name = esc(v.client_name),
        user = esc(v.user),
        host = esc(v.redirect_host),
        consent = esc(v.consent),
        csrf = esc(v.csrf),
    )
}

/// An error page that says what is wrong and what to do.
pub fn error(title: &str, detail: &str) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{t} · tailbridge</title>\
<style>{STYLE}</style></head><body><h1 id=error-title>{t}</h1><p id=error-detail>{d}</p>\
<p>Start again from your MCP client. If this keeps happening, the bridge's operator can see \
the reason in its log and on its status page.</p></body></html>",
        t = esc(title),
        d = esc(detail),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_page_escapes_and_carries_the_form() {
        let eps = vec!["/mcp/notes".to_string()];
        let page = consent(&ConsentView {
            user: "alice@example.com",
            client_name: "<script>alert(1)</script>",
            client_document: Some("https://app.example/c.json?a=\"b\""),
            self_registered: false,
            redirect_host: "app.example",
            endpoints: &eps,
            consent: "tbk_x.y\"z",
            csrf: "c<s>rf",
        });
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("<button type=submit name=decision value=allow>"));
        assert!(page.contains("<input type=checkbox name=confirm value=yes"));
        assert!(page.contains("<button type=submit name=decision value=deny>"));
        assert!(page.contains("value=\"tbk_x.y&quot;z\""));
        assert!(page.contains("value=\"c&lt;s&gt;rf\""));
        assert!(page.contains("<b>/mcp/notes</b>"));
        assert!(page.contains("c.json?a=&quot;b&quot;"));
        let all = consent(&ConsentView {
            user: "u",
            client_name: "n",
            client_document: None,
            self_registered: true,
            redirect_host: "h",
            endpoints: &[],
            consent: "c",
            csrf: "t",
        });
        assert!(all.contains("all endpoints"));
        assert!(all.contains("registered itself"));
    }

    #[test]
    fn error_page_escapes() {
        let p = error(
            "Bad <request>",
            "redirect_uri `x\"` is <b>not</b> registered",
        );
        assert!(p.contains("Bad &lt;request&gt;"));
        assert!(!p.contains("<b>not</b>"));
    }
}
