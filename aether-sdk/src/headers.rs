//! HTTP header fields as they cross the boundary, both ways: their bounds and what a name or value may
//! hold.
//!
//! Invariants (checked by the request and response decoders on either side, and by the encoders):
//! at most [`HEADERS_MAX`] fields and [`HEADER_BYTES_MAX`] bytes of names and values together; a
//! name is a non-empty HTTP token (letters, digits and ``!#$%&'*+-.^_`|~``); a value holds no CR, LF
//! or NUL. Lookups compare names ASCII-case-insensitively and keep repeated fields in order.

use std::fmt;

/// Most header fields in one request or response.
pub const HEADERS_MAX: usize = 64;
/// Most bytes of header names and values together in one request or response.
pub const HEADER_BYTES_MAX: usize = 8 * 1024;

/// Why a header field, or a set of them, is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// More than [`HEADERS_MAX`] fields.
    TooMany { count: usize },
    /// More than [`HEADER_BYTES_MAX`] bytes of names and values.
    TooLarge { bytes: usize },
    /// The name is empty or not an HTTP token.
    BadName { name: String },
    /// The value of `name` holds CR, LF or NUL.
    BadValue { name: String },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::TooMany { count } => write!(f, "{count} header fields, over the limit of {HEADERS_MAX}"),
            HeaderError::TooLarge { bytes } => {
                write!(f, "{bytes} bytes of header fields, over the limit of {HEADER_BYTES_MAX}")
            }
            HeaderError::BadName { name } => write!(f, "header name {name:?} is not an HTTP token"),
            HeaderError::BadValue { name } => write!(f, "the value of header {name:?} holds CR, LF or NUL"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// `TOKEN[b]`: whether byte `b` may appear in a header name (an HTTP token).
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        b += 1;
    }
    table
};

fn is_token_byte(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// Whether `name: value` may cross the boundary.
pub fn check_field(name: &str, value: &str) -> Result<(), HeaderError> {
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(HeaderError::BadName { name: name.chars().take(64).collect() });
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(HeaderError::BadValue { name: name.to_owned() });
    }
    Ok(())
}

/// Whether a whole set of fields may cross the boundary (count, size, every field).
pub fn check_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), HeaderError> {
    let (mut count, mut bytes) = (0usize, 0usize);
    for (name, value) in fields {
        count += 1;
        bytes = bytes.saturating_add(name.len()).saturating_add(value.len());
        if count > HEADERS_MAX {
            return Err(HeaderError::TooMany { count });
        }
        if bytes > HEADER_BYTES_MAX {
            return Err(HeaderError::TooLarge { bytes });
        }
        check_field(name, value)?;
    }
    Ok(())
}

/// Fields that belong to one HTTP connection and are the server's to write, never a slice's:
/// `Connection`, `Keep-Alive`, `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`, `Proxy-Connection`,
/// and `Content-Length` (the server frames the body it sends).
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "content-length",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_bytes_in_names_and_values_are_refused() {
        assert!(check_field("X-Ok", "fine value, with: colons").is_ok());
        for name in ["", "Bad Name", "X:Y", "X\r\nInjected", "X\0"] {
            assert!(matches!(check_field(name, "v"), Err(HeaderError::BadName { .. })), "{name:?}");
        }
        for value in ["a\r\nSet-Cookie: x", "a\nb", "a\rb", "a\0b"] {
            assert!(matches!(check_field("X", value), Err(HeaderError::BadValue { .. })), "{value:?}");
        }
    }

    #[test]
    fn counts_and_sizes_are_bounded() {
        let many: Vec<(String, String)> = (0..=HEADERS_MAX).map(|i| (format!("x-{i}"), "v".into())).collect();
        let refs = |v: &[(String, String)]| v.iter().map(|(a, b)| (a.clone(), b.clone())).collect::<Vec<_>>();
        let many = refs(&many);
        assert_eq!(
            check_fields(many.iter().map(|(a, b)| (a.as_str(), b.as_str()))),
            Err(HeaderError::TooMany { count: HEADERS_MAX + 1 })
        );
        assert!(check_fields(many[..HEADERS_MAX].iter().map(|(a, b)| (a.as_str(), b.as_str()))).is_ok());
        let big = "v".repeat(HEADER_BYTES_MAX);
        assert!(matches!(check_fields([("x", big.as_str())]), Err(HeaderError::TooLarge { .. })));
    }

    #[test]
    fn hop_by_hop_fields_are_known_in_any_case() {
        assert!(is_hop_by_hop("Content-Length") && is_hop_by_hop("TRANSFER-ENCODING") && is_hop_by_hop("connection"));
        assert!(!is_hop_by_hop("Location") && !is_hop_by_hop("Content-Type"));
    }
}
