//! Fuzz target: typed control-plane keys and KV commands. Parsing any string never panics, and a key that
//! parses prints back to exactly the same string; command decoding never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = text.parse::<kvstore::AetherKey>() {
            assert_eq!(key.to_string(), text);
        }
    }
    let _ = kvstore::Command::decode(data);
});
