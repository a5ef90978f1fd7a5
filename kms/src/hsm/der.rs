//! The little DER the HSM layer needs for public keys: PKCS#1
//! `RSAPublicKey` (RFC 8017 A.1.1) and `SubjectPublicKeyInfo` (RFC 5280
//! §4.1, RFC 5480 for EC). Public data only; nothing secret passes here.

/// DER of OID 1.2.840.10045.3.1.7 (`prime256v1`), as `CKA_EC_PARAMS` holds it.
pub const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of OID 1.3.132.0.34 (`secp384r1`).
pub const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of OID 1.2.156.10197.1.301 (`sm2p256v1`, GB/T 35276).
pub const OID_SM2: &[u8] = &[0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d];
/// DER of OID 1.2.840.10045.2.1 (`id-ecPublicKey`, RFC 5480).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of OID 1.2.840.113549.1.1.1 (`rsaEncryption`, RFC 8017).
const OID_RSA_ENCRYPTION: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(tag);
    push_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A non-negative INTEGER from big-endian magnitude bytes.
fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let first = magnitude.iter().position(|b| *b != 0).unwrap_or(magnitude.len());
    let trimmed = &magnitude[first..];
    let mut body = Vec::with_capacity(trimmed.len() + 1);
    // why: DER INTEGER is two's complement; a set top bit needs a leading zero.
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(trimmed);
    tlv(0x02, &body)
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
pub fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut body = unsigned_integer(modulus);
    body.extend(unsigned_integer(exponent));
    tlv(0x30, &body)
}

/// `SubjectPublicKeyInfo` of an EC key (`id-ecPublicKey` with a named
/// curve) from the curve OID and the uncompressed point.
pub fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let mut alg = OID_EC_PUBLIC_KEY.to_vec();
    alg.extend_from_slice(curve_oid);
    spki(&alg, point)
}

/// `SubjectPublicKeyInfo` of an RSA key from its PKCS#1 `RSAPublicKey`.
pub fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    let mut alg = OID_RSA_ENCRYPTION.to_vec();
    alg.extend_from_slice(&[0x05, 0x00]);
    spki(&alg, rsa_public_key)
}

fn spki(algorithm_body: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(key.len() + 1);
    bits.push(0);
    bits.extend_from_slice(key);
    let mut body = tlv(0x30, algorithm_body);
    body.extend(tlv(0x03, &bits));
    tlv(0x30, &body)
}

/// Reads one TLV with tag `tag` from the front of `input`; returns its
/// body and the rest.
fn take(tag: u8, input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        // why: DER uses the shortest length form; more than 4 length
        // bytes is no public key this service handles.
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        if bytes[0] == 0 {
            return None;
        }
        let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        if len < 0x80 {
            return None;
        }
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

/// A positive INTEGER's magnitude (a sign-bit zero removed); `None` for
/// zero, negative or non-minimal encodings.
fn positive_integer(body: &[u8]) -> Option<&[u8]> {
    match body {
        [] | [0] => None,
        [first, ..] if first & 0x80 != 0 => None,
        [0, second, ..] if second & 0x80 == 0 => None,
        [0, rest @ ..] => Some(rest),
        _ => Some(body),
    }
}

/// Parses a DER PKCS#1 `RSAPublicKey` into (modulus, exponent), big-endian
/// magnitudes. `None` unless it is exactly one well-formed SEQUENCE of two
/// positive INTEGERs.
pub fn parse_rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (seq, rest) = take(0x30, der)?;
    if !rest.is_empty() {
        return None;
    }
    let (n, seq) = take(0x02, seq)?;
    let (e, seq) = take(0x02, seq)?;
    if !seq.is_empty() {
        return None;
    }
    Some((positive_integer(n)?, positive_integer(e)?))
}

/// Lengths of uncompressed points: P-256 and SM2, P-384, P-521.
const POINT_LENS: [usize; 3] = [65, 97, 133];

/// Extracts the uncompressed point from `CKA_EC_POINT`, which modules
/// return either DER-wrapped in an OCTET STRING (PKCS#11 v2.40, SoftHSM,
/// hsm-sim) or raw. The two forms never have the same length, so a raw
/// point whose first coordinate byte happens to look like a DER length is
/// not misread.
pub fn ec_point_from_attribute(value: &[u8]) -> Option<Vec<u8>> {
    if value.first() == Some(&0x04) && POINT_LENS.contains(&value.len()) {
        return Some(value.to_vec());
    }
    let (body, rest) = take(0x04, value)?;
    (rest.is_empty() && body.first() == Some(&0x04) && POINT_LENS.contains(&body.len())).then(|| body.to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rsa_public_key_round_trips() {
        let n = [0x80u8; 256];
        let der = rsa_public_key(&n, &[1, 0, 1]);
        // SEQUENCE, long length; INTEGER with a leading zero.
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x0a]);
        assert_eq!(&der[4..9], &[0x02, 0x82, 0x01, 0x01, 0x00]);
        assert_eq!(parse_rsa_public_key(&der), Some((&n[..], &[1u8, 0, 1][..])));
        // Trailing bytes, a negative modulus, a non-minimal zero are refused.
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(parse_rsa_public_key(&trailing), None);
        assert_eq!(parse_rsa_public_key(&[0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x03]), None);
        assert_eq!(parse_rsa_public_key(&[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x03]), None);
        assert_eq!(parse_rsa_public_key(&[0x30, 0x81, 0x03, 0x02, 0x01, 0x03]), None);
        assert_eq!(parse_rsa_public_key(&[]), None);
    }

    #[test]
    fn spki_matches_known_encodings() {
        // The P-256 SPKI prefix OpenSSL writes (RFC 5480 §2).
        let point = [4u8; 65];
        let spki = ec_spki(OID_P256, &point);
        let prefix = [
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
            0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        assert_eq!(&spki[..prefix.len()], &prefix);
        assert_eq!(spki.len(), prefix.len() + 65);
        let rsa = rsa_spki(&rsa_public_key(&[0xc0; 256], &[1, 0, 1]));
        assert_eq!(
            &rsa[..24],
            &[
                0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                0x05, 0x00, 0x03, 0x82, 0x01, 0x0f, 0x00
            ]
        );
    }

    #[test]
    fn ec_point_forms() {
        let mut raw = vec![0x04];
        raw.extend_from_slice(&[7u8; 64]);
        let mut der = vec![0x04, 65];
        der.extend_from_slice(&raw);
        assert_eq!(ec_point_from_attribute(&der), Some(raw.clone()));
        assert_eq!(ec_point_from_attribute(&raw), Some(raw.clone()));
        let mut p384 = vec![0x04];
        p384.extend_from_slice(&[9u8; 96]);
        let mut der384 = vec![0x04, 97];
        der384.extend_from_slice(&p384);
        assert_eq!(ec_point_from_attribute(&der384), Some(p384));
        assert_eq!(ec_point_from_attribute(&[0x05, 1]), None);
        // A raw point whose X starts with 0x3f is not read as DER.
        let mut tricky = vec![0x04, 0x3f, 0x04];
        tricky.extend_from_slice(&[1u8; 62]);
        assert_eq!(ec_point_from_attribute(&tricky), Some(tricky.clone()));
        assert_eq!(ec_point_from_attribute(&[0x04, 0x03, 0x04, 0x01, 0x02]), None);
    }
}
