//! tsidp's AS metadata rewritten for the bridge origin, from any JSON.
#![no_main]
use tailbridge::config::Advertise;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for advertise in [Advertise::Bridge, Advertise::Idp] {
        if let Some(doc) = tailbridge::auth::metadata::rewrite_as_metadata(
            &v,
            "https://mcp.example.com",
            advertise,
            true,
        ) {
            assert_eq!(doc["token_endpoint"], "https://mcp.example.com/token");
        }
    }
});
