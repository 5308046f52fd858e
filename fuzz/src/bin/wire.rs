//! Fuzz target: the frame decoder and the handshake payload decoders never panic, never hand out a frame
//! over the limit, and consume exactly the bytes of the frames they return.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wire::{FrameDecoder, FrameKind, HEADER_LEN};

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let decoder = FrameDecoder::new(LIMIT);
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                assert!(frame.payload.len() <= LIMIT);
                assert_eq!(before - buf.len(), HEADER_LEN + frame.payload.len());
                match frame.kind {
                    FrameKind::Hello => drop(wire::decode::<wire::Hello>(&frame.payload)),
                    FrameKind::Auth => drop(wire::decode::<wire::Auth>(&frame.payload)),
                    FrameKind::Reject => drop(wire::decode::<wire::Reject>(&frame.payload)),
                    _ => {}
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
});
