//! The cluster wire format: frames on the :8090 connections and the checked rkyv payloads inside them.
//!
//! A frame is a fixed 12-byte header, `magic(2) | version(1) | kind(1) | len(4, big endian) | crc32(4)`,
//! followed by `len` payload bytes. The crc covers the payload. Payloads are rkyv archives that are
//! validated (bytecheck) before any field is read.
//!
//! Invariants:
//! - Decoding never panics on any byte string and never reserves more than the configured frame limit.
//! - A frame is either returned whole and checked, or not at all: partial input waits for more bytes.
//! - This crate performs no I/O; it turns bytes into frames and back.

mod frame;
mod hello;
mod payload;

pub use frame::{encode_frame, Frame, FrameDecoder, FrameError, FrameKind, HEADER_LEN, MAGIC, VERSION};
pub use hello::{Auth, Hello, Reject, PROTOCOL_VERSION};
pub use payload::{decode, encode, DecodeError};

/// Default largest payload accepted on a connection (16 MiB).
pub const FRAME_LEN_MAX_DEFAULT: usize = 16 * 1024 * 1024;
