//! Small DER helpers shared by the certificate, CRL and CMS code.
//!
//! Structures are written with `yasna` (already in the tree through rcgen);
//! this module holds the pieces yasna leaves to the caller: X.509 time
//! encoding, lengths for hand-assembled values, PEM, and hex for messages.

use time::OffsetDateTime;
use time::UtcOffset;

/// Appends a DER definite length.
pub(crate) fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// The identifier octet of a low-tag-number header (tags below 31).
pub(crate) fn identifier_octet(header: &x509_parser::der_parser::asn1_rs::Header<'_>) -> u8 {
    let class = (header.class() as u8) << 6;
    let constructed = if header.is_constructed() { 0x20 } else { 0 };
    class | constructed | (header.tag().0.min(30) as u8)
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An X.509 `Time` TLV (RFC 5280 §4.1.2.5): UTCTime for the years 1950 to
/// 2049, GeneralizedTime otherwise, always in UTC with whole seconds.
pub(crate) fn x509_time(t: OffsetDateTime) -> Vec<u8> {
    let mut buf = [0u8; 17];
    let len = x509_time_into(t, &mut buf);
    buf[..len].to_vec()
}

/// [`x509_time`] into a buffer, without allocating (CRLs write one per
/// entry); returns the length used.
pub(crate) fn x509_time_into(t: OffsetDateTime, buf: &mut [u8; 17]) -> usize {
    let t = t.to_offset(UtcOffset::UTC);
    let year = t.year().clamp(0, 9999) as u32;
    let mut fields = [0u32; 7];
    let utc = (1950..2050).contains(&year);
    let (tag, text_len, first) = if utc { (0x17, 13, 1) } else { (0x18, 15, 0) };
    fields[0] = year / 100;
    fields[1] = year % 100;
    fields[2] = u32::from(u8::from(t.month()));
    fields[3] = u32::from(t.day());
    fields[4] = u32::from(t.hour());
    fields[5] = u32::from(t.minute());
    fields[6] = u32::from(t.second());
    buf[0] = tag;
    buf[1] = text_len as u8;
    let mut at = 2;
    for value in &fields[first..] {
        buf[at] = b'0' + (value / 10) as u8;
        buf[at + 1] = b'0' + (value % 10) as u8;
        at += 2;
    }
    buf[at] = b'Z';
    at + 1
}

/// PEM text (RFC 7468): base64 in 64-character lines.
pub fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]);
            } else {
                b64.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// SHA-256.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        let enc = |n| {
            let mut v = Vec::new();
            push_length(&mut v, n);
            v
        };
        assert_eq!(enc(0), vec![0]);
        assert_eq!(enc(127), vec![127]);
        assert_eq!(enc(128), vec![0x81, 0x80]);
        assert_eq!(enc(256), vec![0x82, 1, 0]);
        assert_eq!(enc(0x01_00_00), vec![0x83, 1, 0, 0]);
    }

    #[test]
    fn pem_matches_rfc4648_base64() {
        // RFC 4648 §10 test vectors, wrapped as PEM.
        for (input, b64) in [("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(pem("X", input.as_bytes()), format!("-----BEGIN X-----\n{b64}\n-----END X-----\n"));
        }
        let long = pem("X", &[0u8; 48]);
        assert_eq!(long.lines().nth(1).map(str::len), Some(64));
    }

    #[test]
    fn times_switch_to_generalized_in_2050() {
        let t = time::macros::datetime!(2049-12-31 23:59:59 UTC);
        assert_eq!(x509_time(t), [&[0x17, 13][..], b"491231235959Z"].concat());
        let t = time::macros::datetime!(2050-01-01 00:00:00 UTC);
        assert_eq!(x509_time(t), [&[0x18, 15][..], b"20500101000000Z"].concat());
        let t = time::macros::datetime!(2030-06-01 08:00:00 +8);
        assert_eq!(x509_time(t), [&[0x17, 13][..], b"300601000000Z"].concat());
    }
}
