//! Globs on tool names: `*` matches any run of characters (also none), `?` exactly one,
//! everything else itself (case-sensitive, as MCP tool names are). Pure.

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `*`: everything.
    Any,
    /// No wildcard: exact comparison.
    Exact,
    /// `prefix*`.
    Prefix(String),
    /// Anything else: the general matcher.
    Pattern(Vec<char>),
}

impl Glob {
    /// Compile `text`. Every string is a valid glob.
    pub fn new(text: &str) -> Glob {
        let wild = |c: char| c == '*' || c == '?';
        let kind = if text == "*" {
            Kind::Any
        } else if !text.contains(wild) {
            Kind::Exact
        } else if let Some(p) = text.strip_suffix('*').filter(|p| !p.contains(wild)) {
            Kind::Prefix(p.to_string())
        } else {
            Kind::Pattern(text.chars().collect())
        };
        Glob {
            text: text.to_string(),
            kind,
        }
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Exact => self.text == name,
            Kind::Prefix(p) => name.starts_with(p.as_str()),
            Kind::Pattern(p) => wildcard(p, &name.chars().collect::<Vec<_>>()),
        }
    }

    /// Whether this glob matches every name.
    pub fn is_any(&self) -> bool {
        self.kind == Kind::Any
    }
}

/// Iterative wildcard match with single-star backtracking: O(len(p) * len(s)) at worst.
fn wildcard(p: &[char], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some('?') => {
                pi += 1;
                si += 1;
            }
            Some(c) if *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether any glob in `globs` matches `name`.
pub fn any_match(globs: &[Glob], name: &str) -> bool {
    globs.iter().any(|g| g.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("*", "", true),
            ("echo", "echo", true),
            ("echo", "echo2", false),
            ("echo", "Echo", false),
            ("delete_*", "delete_note", true),
            ("delete_*", "delete_", true),
            ("delete_*", "undelete_note", false),
            ("*_admin", "user_admin", true),
            ("*_admin", "user_admins", false),
            ("*note*", "delete_notes", true),
            ("*note*", "delete_nite", false),
            ("get_?", "get_a", true),
            ("get_?", "get_ab", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a*b*c", "abc", true),
            ("**", "x", true),
            ("", "", true),
            ("", "x", false),
            ("run.shell", "run.shell", true),
            ("é*", "éclair", true),
        ];
        for (glob, name, want) in cases {
            assert_eq!(Glob::new(glob).matches(name), *want, "{glob} ~ {name}");
        }
    }

    #[test]
    fn pathological_pattern_is_linear_enough() {
        let p = Glob::new(&"*a".repeat(30));
        assert!(!p.matches(&"a".repeat(29)));
        assert!(p.matches(&"a".repeat(30)));
    }
}
