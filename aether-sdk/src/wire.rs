//! Byte-level helpers shared by the request and response encodings: little-endian integers, and
//! the `u16 name length, name, u32 value length, value` entry both use.
//!
//! Invariant: every reader checks its bounds and answers a [`CodecError`], never panics.

use crate::codec::CodecError;

pub(crate) fn count_u16(what: &'static str, len: usize) -> Result<u16, CodecError> {
    u16::try_from(len).map_err(|_| CodecError::TooLarge { what, len })
}

pub(crate) fn put_str_u16(out: &mut Vec<u8>, what: &'static str, text: &str) -> Result<(), CodecError> {
    out.extend_from_slice(&count_u16(what, text.len())?.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

pub(crate) fn put_str_u32(out: &mut Vec<u8>, what: &'static str, text: &str) -> Result<(), CodecError> {
    let len = u32::try_from(text.len()).map_err(|_| CodecError::TooLarge { what, len: text.len() })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

pub(crate) fn put_entry(out: &mut Vec<u8>, name: &str, value: &str) -> Result<(), CodecError> {
    put_str_u16(out, "entry name", name)?;
    put_str_u32(out, "entry value", value)
}

pub(crate) fn read_u16(bytes: &[u8], at: usize) -> Result<u16, CodecError> {
    let raw = bytes.get(at..at.saturating_add(2)).ok_or(CodecError::Truncated { at })?;
    Ok(u16::from_le_bytes([raw[0], raw[1]]))
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> Result<u32, CodecError> {
    let raw = bytes.get(at..at.saturating_add(4)).ok_or(CodecError::Truncated { at })?;
    Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> Result<u64, CodecError> {
    let raw = bytes.get(at..at.saturating_add(8)).ok_or(CodecError::Truncated { at })?;
    let mut le = [0u8; 8];
    le.copy_from_slice(raw);
    Ok(u64::from_le_bytes(le))
}

pub(crate) fn read_str(bytes: &[u8], at: usize, len: usize) -> Result<&str, CodecError> {
    let end = at.checked_add(len).ok_or(CodecError::Truncated { at })?;
    let raw = bytes.get(at..end).ok_or(CodecError::Truncated { at })?;
    std::str::from_utf8(raw).map_err(|_| CodecError::NotUtf8 { at })
}

/// A `u16`-length text at `at`: (text, offset after it).
pub(crate) fn read_str_u16(bytes: &[u8], at: usize) -> Result<(&str, usize), CodecError> {
    let len = usize::from(read_u16(bytes, at)?);
    Ok((read_str(bytes, at + 2, len)?, at + 2 + len))
}

/// A `u32`-length text at `at`: (text, offset after it).
pub(crate) fn read_str_u32(bytes: &[u8], at: usize) -> Result<(&str, usize), CodecError> {
    let len = read_u32(bytes, at)? as usize;
    let start = at.checked_add(4).ok_or(CodecError::Truncated { at })?;
    let end = start.checked_add(len).ok_or(CodecError::Truncated { at })?;
    Ok((read_str(bytes, start, len)?, end))
}

/// One entry at `at`: (name, value, offset of the next entry).
pub(crate) fn read_entry(bytes: &[u8], at: usize) -> Result<(&str, &str, usize), CodecError> {
    let (name, value_at) = read_str_u16(bytes, at)?;
    let (value, next) = read_str_u32(bytes, value_at)?;
    Ok((name, value, next))
}
