//! YAML → validated config: any text is an error list or a config, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tailbridge::config::parse(text);
    }
});
