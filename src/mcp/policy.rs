//! Who may call which tool. Pure.
//!
//! The rule, per endpoint, for a tool name `t` and a caller:
//!
//! ```text
//! allowed(t) =  (t matches allow  AND  t matches no deny)      -- what everyone gets
//!            OR  t matches a grant's allow, for a grant naming the caller
//!            OR  t matches a tool grant from the caller's policy-file claim
//! ```
//!
//! `deny` narrows what everyone gets; it does not bind grants. A grant names people who get
//! more than everyone, and what it allows is allowed even where `deny` matches: `deny:
//! ["delete_*"]` with a grant of `delete_*` to alice means only alice may delete. To make a
//! tool unavailable to everybody, leave it out of `allow` and of every grant.
//!
//! A grant names the caller when each of its non-empty lists matches: `users` against the
//! token's `username` or `sub`, `clients` against its `client_id`.

use super::glob::{any_match, Glob};

/// The tool policy of one endpoint (`endpoints[].tools`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPolicy {
    pub allow: Vec<Glob>,
    pub deny: Vec<Glob>,
    pub grants: Vec<Grant>,
}

impl Default for ToolPolicy {
    /// Every tool, for everyone.
    fn default() -> Self {
        ToolPolicy {
            allow: vec![Glob::new("*")],
            deny: Vec::new(),
            grants: Vec::new(),
        }
    }
}

/// Extra tools for named callers (`endpoints[].tools.grants[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub users: Vec<String>,
    pub clients: Vec<String>,
    pub allow: Vec<Glob>,
}

/// One entry of the tool-grants claim: a tool glob, for one endpoint or for all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimGrant {
    /// Endpoint name or path; `None` means every endpoint.
    pub endpoint: Option<String>,
    pub tool: Glob,
}

/// The caller, as far as the policy needs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub sub: Option<&'a str>,
    pub username: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub claim: &'a [ClaimGrant],
}

impl Caller<'_> {
    /// How the caller is named in messages: username, else sub, else "anonymous".
    pub fn display(&self) -> &str {
        self.username.or(self.sub).unwrap_or("anonymous")
    }
}

/// The endpoint a decision is made for.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub name: &'a str,
    pub path: &'a str,
}

impl ToolPolicy {
    /// Whether this policy can deny anything at all. When it cannot, the layer only counts
    /// and audits; it neither refuses nor filters.
    pub fn in_force(&self) -> bool {
        !(self.allow.iter().any(Glob::is_any) && self.deny.is_empty())
    }

    /// Whether `caller` may call `tool` on the endpoint `scope`.
    pub fn allows(&self, scope: Scope<'_>, tool: &str, caller: &Caller<'_>) -> bool {
        if any_match(&self.allow, tool) && !any_match(&self.deny, tool) {
            return true;
        }
        if self
            .grants
            .iter()
            .any(|g| g.names(caller) && any_match(&g.allow, tool))
        {
            return true;
        }
        caller.claim.iter().any(|c| {
            c.endpoint
                .as_deref()
                .is_none_or(|e| e == scope.name || e == scope.path)
                && c.tool.matches(tool)
        })
    }
}

impl Grant {
    /// Whether this grant names `caller` (a grant that names nobody names nobody).
    pub fn names(&self, caller: &Caller<'_>) -> bool {
        !(self.users.is_empty() && self.clients.is_empty())
            && lists_match(&self.users, &self.clients, caller)
    }
}

/// Whether each non-empty list names `caller`: `users` by username or sub, `clients` by
/// client id (two empty lists match everyone). Pure.
pub fn lists_match(users: &[String], clients: &[String], caller: &Caller<'_>) -> bool {
    let user_ok = users.is_empty()
        || users
            .iter()
            .any(|u| Some(u.as_str()) == caller.username || Some(u.as_str()) == caller.sub);
    let client_ok =
        clients.is_empty() || clients.iter().any(|c| Some(c.as_str()) == caller.client_id);
    user_ok && client_ok
}

/// Read the tool-grants claim from a userinfo document's value: a list of
/// `"<endpoint name or path>:<tool glob>"` or plain `"<tool glob>"` strings (a single string
/// counts as a list of one). Anything else is ignored; a missing claim grants nothing.
pub fn parse_claim(v: Option<&serde_json::Value>) -> Vec<ClaimGrant> {
    let items: Vec<&str> = match v {
        Some(serde_json::Value::String(s)) => vec![s.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str()).collect(),
        _ => Vec::new(),
    };
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once(':') {
            Some((ep, tool)) if !ep.is_empty() && !tool.is_empty() => ClaimGrant {
                endpoint: Some(ep.to_string()),
                tool: Glob::new(tool),
            },
            _ => ClaimGrant {
                endpoint: None,
                tool: Glob::new(s.trim_matches(':')),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(v: &[&str]) -> Vec<Glob> {
        v.iter().map(|g| Glob::new(g)).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const NOTES: Scope<'static> = Scope {
        name: "notes",
        path: "/mcp/notes",
    };

    #[test]
    fn policy_table() {
        let alice = Caller {
            sub: Some("1001"),
            username: Some("alice@example.com"),
            client_id: Some("claude"),
            claim: &[],
        };
        let bob = Caller {
            sub: Some("1002"),
            username: Some("bob@example.com"),
            client_id: Some("cli"),
            claim: &[],
        };
        let anon = Caller::default();
        let everything = ToolPolicy::default();
        let no_delete = ToolPolicy {
            allow: globs(&["*"]),
            deny: globs(&["delete_*"]),
            grants: vec![Grant {
                users: strings(&["alice@example.com"]),
                clients: vec![],
                allow: globs(&["delete_*"]),
            }],
        };
        let closed = ToolPolicy {
            allow: vec![],
            deny: vec![],
            grants: vec![
                Grant {
                    users: strings(&["1002"]),
                    clients: vec![],
                    allow: globs(&["search"]),
                },
                Grant {
                    users: vec![],
                    clients: strings(&["claude"]),
                    allow: globs(&["read_*"]),
                },
                Grant {
                    users: strings(&["bob@example.com"]),
                    clients: strings(&["claude"]),
                    allow: globs(&["write_*"]),
                },
            ],
        };
        let cases: &[(&ToolPolicy, &Caller, &str, bool)] = &[
            (&everything, &anon, "anything", true),
            (&no_delete, &anon, "echo", true),
            (&no_delete, &anon, "delete_note", false),
            (&no_delete, &bob, "delete_note", false),
            // a grant lifts the deny for the people it names
            (&no_delete, &alice, "delete_note", true),
            (&no_delete, &alice, "echo", true),
            (&closed, &anon, "search", false),
            // users match sub as well as username
            (&closed, &bob, "search", true),
            (&closed, &alice, "search", false),
            // clients-only grant
            (&closed, &alice, "read_note", true),
            (&closed, &bob, "read_note", false),
            // both lists must match
            (&closed, &bob, "write_note", false),
            (&closed, &alice, "write_note", false),
        ];
        for (i, (p, who, tool, want)) in cases.iter().enumerate() {
            assert_eq!(p.allows(NOTES, tool, who), *want, "case {i}: {tool}");
        }
        assert!(!everything.in_force());
        assert!(no_delete.in_force());
        assert!(closed.in_force());
    }

    #[test]
    fn claim_grants_act_like_grants() {
        let claim = parse_claim(Some(&serde_json::json!([
            "notes:delete_*",
            "/mcp/wiki:edit",
            "search_*",
            "other:run_shell",
            42,
            "",
        ])));
        assert_eq!(claim.len(), 4);
        let who = Caller {
            username: Some("carol@example.com"),
            claim: &claim,
            ..Caller::default()
        };
        let closed = ToolPolicy {
            allow: vec![],
            deny: globs(&["*"]),
            grants: vec![],
        };
        let wiki = Scope {
            name: "wiki",
            path: "/mcp/wiki",
        };
        let cases: &[(Scope, &str, bool)] = &[
            (NOTES, "delete_note", true),
            (NOTES, "run_shell", false),
            (NOTES, "search_all", true),
            (wiki, "search_all", true),
            (wiki, "edit", true),
            (NOTES, "edit", false),
            (wiki, "delete_note", false),
        ];
        for (scope, tool, want) in cases {
            assert_eq!(
                closed.allows(*scope, tool, &who),
                *want,
                "{} {tool}",
                scope.name
            );
        }
        assert_eq!(
            parse_claim(Some(&serde_json::json!("echo"))),
            vec![ClaimGrant {
                endpoint: None,
                tool: Glob::new("echo")
            }]
        );
        assert!(parse_claim(None).is_empty());
        assert!(parse_claim(Some(&serde_json::json!({"a": 1}))).is_empty());
    }

    #[test]
    fn a_grant_naming_nobody_names_nobody() {
        let g = Grant {
            users: vec![],
            clients: vec![],
            allow: globs(&["*"]),
        };
        assert!(!g.names(&Caller::default()));
    }
}
