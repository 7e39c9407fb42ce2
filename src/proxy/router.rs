//! Path routing: longest segment-prefix match, then upstream path construction.
//!
//! The rules, in order:
//! 1. The request path (without the query) must start with `/`; otherwise 400.
//! 2. It is normalised: empty segments (`//`) are dropped, `.` segments are dropped and `..`
//!    removes the previous segment; `%2e`/`%2E` count as `.` for this, so encoded dot segments
//!    cannot climb out of a prefix. A `..` above the root is a 400. Any other percent-escape,
//!    including `%2F`, stays inside its segment: an encoded `/` is never a separator.
//! 3. An endpoint matches when its segments equal the first segments of the request
//!    (case-sensitive, byte for byte): `/mcp/a` matches `/mcp/a` and `/mcp/a/x`, never `/mcp/ab`.
//!    The longest matching prefix wins.
//! 4. The upstream path is the target's path followed by the remaining segments. A trailing
//!    slash on the request is tolerated: `/mcp/a/` is `/mcp/a`. With a non-empty remainder the
//!    trailing slash is kept (`/mcp/a/x/` → `<target>/x/`).
//! 5. The query string is passed on byte for byte.

use std::borrow::Cow;
use std::sync::Arc;

/// Why a request path could not be routed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (does not start with `/`).
    NotAbsolute,
    /// A `..` segment climbs above the root.
    AboveRoot,
}

/// A normalised request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath<'a> {
    pub segments: Vec<&'a str>,
    pub trailing_slash: bool,
}

impl NormalPath<'_> {
    /// The path as a string, `/` joined, with its trailing slash.
    pub fn to_path(&self) -> String {
        let mut s = String::with_capacity(64);
        for seg in &self.segments {
            s.push('/');
            s.push_str(seg);
        }
        if self.trailing_slash || self.segments.is_empty() {
            s.push('/');
        }
        s
    }
}

fn is_dot(seg: &str) -> bool {
    seg == "." || seg.eq_ignore_ascii_case("%2e")
}

fn is_dot_dot(seg: &str) -> bool {
    let b = seg.as_bytes();
    let mut rest = b;
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && (rest[2] | 0x20) == b'e'
        {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 2
}

/// Normalise a request path (rule 2).
pub fn normalise(path: &str) -> Result<NormalPath<'_>, PathError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    let mut segments: Vec<&str> = Vec::with_capacity(8);
    let mut trailing_slash = path.len() > 1 && path.ends_with('/');
    for seg in rest.split('/') {
        if seg.is_empty() || is_dot(seg) {
            continue;
        }
        if is_dot_dot(seg) {
            if segments.pop().is_none() {
                return Err(PathError::AboveRoot);
            }
            continue;
        }
        segments.push(seg);
    }
    // A path ending in `/.` or `/..` names a directory.
    if let Some(last) = rest.rsplit('/').next() {
        if is_dot(last) || is_dot_dot(last) {
            trailing_slash = !segments.is_empty();
        }
    }
    Ok(NormalPath {
        segments,
        trailing_slash,
    })
}

/// One routable prefix.
#[derive(Debug, Clone)]
struct Route {
    segments: Vec<String>,
    /// The prefix as configured (already normal): a request for exactly this path needs
    /// no normalising.
    prefix: String,
    /// Target path without a trailing `/` (empty for a root target).
    base: String,
    /// Target path exactly as configured, used when nothing remains after the prefix.
    exact: Arc<str>,
    endpoint: usize,
}

/// The routing table: built once from the config, matched per request.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// Sorted longest-first so that the first match is the longest.
    routes: Vec<Route>,
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Index into the config's endpoint list.
    pub endpoint: usize,
    /// Path (plus the original query) for the upstream request; shared with the table
    /// when it is the target path itself.
    pub upstream_path_and_query: Arc<str>,
}

impl Router {
    /// Build from `(prefix, target path)` pairs, in endpoint order. Prefixes are already
    /// validated (start with `/`, no empty or dot segments).
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut routes: Vec<Route> = routes
            .into_iter()
            .enumerate()
            .map(|(endpoint, (prefix, target_path))| Route {
                segments: prefix
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                prefix: prefix.to_string(),
                base: target_path.trim_end_matches('/').to_string(),
                exact: Arc::from(if target_path.is_empty() {
                    "/"
                } else {
                    target_path
                }),
                endpoint,
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.segments.len()));
        Router { routes }
    }

    /// Route a request target (`path[?query]`). `Ok(None)` = no endpoint matches.
    pub fn route(&self, path_and_query: &str) -> Result<Option<Match>, PathError> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        if query.is_none() {
            // The common request: exactly an endpoint's path. No longer prefix can match it.
            let bare = path
                .strip_suffix('/')
                .filter(|p| !p.is_empty())
                .unwrap_or(path);
            if let Some(r) = self.routes.iter().find(|r| r.prefix == bare) {
                return Ok(Some(Match {
                    endpoint: r.endpoint,
                    upstream_path_and_query: r.exact.clone(),
                }));
            }
        }
        let norm = normalise(path)?;
        for r in &self.routes {
            if norm.segments.len() < r.segments.len()
                || !r.segments.iter().zip(&norm.segments).all(|(a, b)| a == b)
            {
                continue;
            }
            let rest = &norm.segments[r.segments.len()..];
            let mut upstream: Cow<'_, str> = if rest.is_empty() {
                Cow::Borrowed(&*r.exact)
            } else {
                let mut s = String::with_capacity(r.base.len() + 32);
                s.push_str(&r.base);
                for seg in rest {
                    s.push('/');
                    s.push_str(seg);
                }
                if norm.trailing_slash {
                    s.push('/');
                }
                Cow::Owned(s)
            };
            if let Some(q) = query {
                let mut s = upstream.into_owned();
                s.push('?');
                s.push_str(q);
                upstream = Cow::Owned(s);
            }
            return Ok(Some(Match {
                endpoint: r.endpoint,
                upstream_path_and_query: match upstream {
                    Cow::Borrowed(_) => r.exact.clone(),
                    Cow::Owned(s) => Arc::from(s),
                },
            }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new([
            ("/mcp/a", "/mcp"),
            ("/mcp/ab", "/"),
            ("/mcp/a/deep", "/deep/"),
            ("/svc", ""),
        ])
    }

    #[test]
    fn routing_table() {
        let r = router();
        let cases: &[(&str, Option<(usize, &str)>)] = &[
            ("/mcp/a", Some((0, "/mcp"))),
            ("/mcp/a/", Some((0, "/mcp"))),
            ("/mcp/a?x=1&y=%2F", Some((0, "/mcp?x=1&y=%2F"))),
            ("/mcp/a/?x", Some((0, "/mcp?x"))),
            ("/mcp/a/sub", Some((0, "/mcp/sub"))),
            ("/mcp/a/sub/", Some((0, "/mcp/sub/"))),
            ("/mcp/ab", Some((1, "/"))),
            ("/mcp/ab/x", Some((1, "/x"))),
            ("/mcp/abc", None),
            ("/mcp/a/deep", Some((2, "/deep/"))),
            ("/mcp/a/deep/x", Some((2, "/deep/x"))),
            ("/mcp/a/deeper", Some((0, "/mcp/deeper"))),
            ("//mcp///a", Some((0, "/mcp"))),
            ("/mcp/./a", Some((0, "/mcp"))),
            ("/mcp/x/../a", Some((0, "/mcp"))),
            ("/mcp/x/%2e%2E/a", Some((0, "/mcp"))),
            ("/mcp/a/../ab", Some((1, "/"))),
            ("/mcp/a/..", None),
            ("/mcp/a%2Fb", None),
            ("/mcp/a/x%2Fy", Some((0, "/mcp/x%2Fy"))),
            ("/MCP/a", None),
            ("/svc", Some((3, "/"))),
            ("/svc/t", Some((3, "/t"))),
            ("/", None),
            ("/mcp", None),
        ];
        for (input, want) in cases {
            let got = r
                .route(input)
                .unwrap()
                .map(|m| (m.endpoint, m.upstream_path_and_query.to_string()));
            let want = want.map(|(e, p)| (e, p.to_string()));
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn bad_paths() {
        let r = router();
        assert_eq!(r.route("mcp/a"), Err(PathError::NotAbsolute));
        assert_eq!(r.route("*"), Err(PathError::NotAbsolute));
        assert_eq!(r.route("/../mcp/a"), Err(PathError::AboveRoot));
        assert_eq!(r.route("/mcp/../../a"), Err(PathError::AboveRoot));
        assert_eq!(r.route("/%2e%2e/x"), Err(PathError::AboveRoot));
    }

    #[test]
    fn normalise_keeps_trailing_slash_and_dots_in_names() {
        let n = normalise("/a/b/").unwrap();
        assert_eq!(n.to_path(), "/a/b/");
        assert_eq!(normalise("/a/.../b").unwrap().to_path(), "/a/.../b");
        assert_eq!(normalise("/a/..b").unwrap().to_path(), "/a/..b");
        assert_eq!(normalise("/a/b/..").unwrap().to_path(), "/a/");
        assert_eq!(normalise("/").unwrap().to_path(), "/");
    }
}
