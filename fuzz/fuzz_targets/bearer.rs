//! Authorization header parsing and the token-in-query check.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tailbridge::auth::bearer::parse(Some(data));
    if let Ok(q) = std::str::from_utf8(data) {
        let _ = tailbridge::auth::bearer::token_in_query(Some(q));
    }
});
