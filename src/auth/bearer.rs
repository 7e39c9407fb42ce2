//! Bearer token extraction (RFC 6750 §2.1). Tokens are accepted only in the
//! `Authorization` header; a token in the query string (§2.3) is refused, as the MCP
//! authorization spec requires.

/// What the request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No Authorization header.
    Nothing,
    /// Authorization with another scheme (e.g. Basic).
    OtherScheme,
    /// `Bearer` with a value that is not a b64token.
    Malformed,
    Token(&'a str),
}

/// Parse an `Authorization` header value.
pub fn parse(header: Option<&[u8]>) -> Presented<'_> {
    let Some(raw) = header else {
        return Presented::Nothing;
    };
    let Ok(text) = std::str::from_utf8(raw) else {
        return Presented::Malformed;
    };
    let text = text.trim();
    let Some((scheme, rest)) = text.split_once(' ') else {
        return if text.eq_ignore_ascii_case("bearer") {
            Presented::Malformed
        } else {
            Presented::OtherScheme
        };
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Presented::OtherScheme;
    }
    let token = rest.trim_start_matches(' ');
    // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && token.len() <= 4096
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if ok {
        Presented::Token(token)
    } else {
        Presented::Malformed
    }
}

/// True when the query string carries an `access_token` parameter.
pub fn token_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next().is_some_and(|k| k == "access_token"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(Option<&str>, Presented)] = &[
            (None, Presented::Nothing),
            (
                Some("Bearer abc.DEF-123_~+/=="),
                Presented::Token("abc.DEF-123_~+/=="),
            ),
            (Some("bearer abc"), Presented::Token("abc")),
            (Some("BEARER   abc"), Presented::Token("abc")),
            (Some("Basic dXNlcjpwYXNz"), Presented::OtherScheme),
            (Some("Bearer"), Presented::Malformed),
            (Some("Bearer "), Presented::Malformed),
            (Some("Bearer a b"), Presented::Malformed),
            (Some("Bearer a\"b"), Presented::Malformed),
            (Some("Bearer ==="), Presented::Malformed),
            (Some("Token abc"), Presented::OtherScheme),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input.map(str::as_bytes)), *want, "{input:?}");
        }
        assert_eq!(parse(Some(b"Bearer \xff")), Presented::Malformed);
    }

    #[test]
    fn query_tokens() {
        assert!(token_in_query(Some("access_token=x")));
        assert!(token_in_query(Some("a=1&access_token=x")));
        assert!(!token_in_query(Some("my_access_token=x")));
        assert!(!token_in_query(None));
    }
}
