//! ECDSA signature encoding.
//!
//! why: PKCS#11 `CKM_ECDSA` returns the raw concatenation `r || s`
//! (PKCS#11 v2.40 §2.3.1), while X.509 and CMS carry the DER
//! `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` (RFC 3279 §2.2.3).

use crate::CaError;

/// Converts a raw `r || s` ECDSA signature into its DER encoding.
///
/// The input must have even length between 2 and 264 bytes (P-521 at most).
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, CaError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 264 {
        return Err(CaError::MalformedSignature("ECDSA r||s must have even length, at most 264 bytes"));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let r = der_unsigned_integer(r);
    let s = der_unsigned_integer(s);
    let mut body = Vec::with_capacity(r.len() + s.len());
    body.extend_from_slice(&r);
    body.extend_from_slice(&s);
    let mut out = vec![0x30];
    push_der_length(&mut out, body.len());
    out.extend_from_slice(&body);
    Ok(out)
}

fn der_unsigned_integer(bytes: &[u8]) -> Vec<u8> {
    let first_nonzero = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let trimmed = &bytes[first_nonzero..];
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    // why: DER INTEGER is two's complement; a set top bit needs a leading zero.
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    let mut out = vec![0x02];
    push_der_length(&mut out, content.len());
    out.extend_from_slice(&content);
    out
}

fn push_der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_small_and_high_bit_integers() -> Result<(), CaError> {
        let mut raw = vec![0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s has its top bit set
        let der = ecdsa_raw_to_der(&raw)?;
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 0x21, 0x00]);
        assert_eq!(der.len(), 2 + 3 + 35);
        Ok(())
    }

    #[test]
    fn rejects_odd_length() {
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
        assert!(ecdsa_raw_to_der(&[]).is_err());
    }

    #[test]
    fn zero_integer_is_encoded_as_single_zero_byte() -> Result<(), CaError> {
        let der = ecdsa_raw_to_der(&[0, 0, 0, 1])?;
        assert_eq!(der, vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01]);
        Ok(())
    }
}
