//! Fuzz target: consensus messages and forwarded invocations from the network decode to a value or an
//! error, never a panic, and never read an unchecked archive.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = consensus::decode_message(data);
    let _ = invoke::InvokeRequest::decode(data);
    let _ = invoke::InvokeReply::decode(data);
});
