//! PKCE (RFC 7636) with S256 only, the one method the broker accepts. Pure.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Whether `s` is a well-formed verifier: 43–128 unreserved characters (RFC 7636 §4.1).
pub fn valid_verifier(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `s` is a well-formed S256 challenge: base64url of 32 bytes, 43 characters.
pub fn valid_challenge(s: &str) -> bool {
    s.len() == 43 && B64.decode(s).is_ok_and(|b| b.len() == 32)
}

/// The S256 challenge of `verifier`.
pub fn challenge(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` answers `challenge` (constant time over the challenge bytes).
pub fn verify(verifier: &str, challenge_given: &str) -> bool {
    if !valid_verifier(verifier) {
        return false;
    }
    let want = challenge(verifier);
    want.len() == challenge_given.len()
        && want
            .bytes()
            .zip(challenge_given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(challenge(v), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(verify(v, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }

    #[test]
    fn refusals() {
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let c = challenge(v);
        let cases: &[(&str, &str)] = &[
            ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl", &c), // wrong verifier
            (v, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"),  // wrong challenge
            (v, v),                                              // plain method
            ("short", &c),
            (&"a".repeat(129), &c),
            ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjX+", &c), // bad character
            (v, ""),
        ];
        for (verifier, ch) in cases {
            assert!(!verify(verifier, ch), "{verifier} / {ch}");
        }
        for bad in [
            "",
            "abc",
            &"A".repeat(44),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
        ] {
            assert!(!valid_challenge(bad), "{bad}");
        }
    }
}
