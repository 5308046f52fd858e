//! CRC-32 (IEEE 802.3, the zlib/PNG polynomial) over snapshot bodies.
//!
//! The archive validator proves a snapshot is well-formed; the checksum proves it is the one that was written
//! (a flipped bit inside a value is still a well-formed archive).

const POLYNOMIAL_REFLECTED: u32 = 0xEDB8_8320;

const TABLE: [u32; 256] = build_table();

const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = index as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLYNOMIAL_REFLECTED } else { crc >> 1 };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
}

pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let crc = bytes.iter().fold(!0u32, |crc, byte| {
        let index = usize::from((crc as u8) ^ byte);
        (crc >> 8) ^ TABLE[index]
    });
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
