//! CMS EnvelopedData (RFC 5652 §6) for returning a reader's
//! service-generated private key, enveloped to its signing certificate.
//!
//! The service generates the reader's encryption key pair in the HSM, wraps
//! the private key there (`C_WrapKey` with `CKM_AES_CBC_PAD` under a fresh
//! content-encryption key: the result is the CBC encryption of the DER
//! PKCS#8 PrivateKeyInfo), and encrypts or agrees the content-encryption
//! key for the reader, also in the HSM. This module only assembles DER from
//! those pieces; it never sees a key.
//!
//! Recipient types:
//! - RSA key transport (KeyTransRecipientInfo, RFC 5652 §6.2.1) with
//!   RSAES-OAEP (SHA-1, MGF1-SHA-1, empty label: RFC 3560, what PKCS#11
//!   `CKM_RSA_PKCS_OAEP` gives on SoftHSM) or RSAES-PKCS1-v1_5;
//! - ECDH key agreement (KeyAgreeRecipientInfo, RFC 5652 §6.2.2, RFC 5753
//!   §3.1) with an ephemeral originator key, `dhSinglePass-stdDH-sha256kdf-scheme`
//!   (X9.63 KDF with SHA-256 over [`ecc_cms_shared_info`]) and AES key wrap
//!   (RFC 3394) of the content-encryption key.
//!
//! why: written by hand rather than with the RustCrypto `cms` crate, one of
//! whose release candidates wrapped content keys under an all-zero key in
//! its ECDH recipient; `tests/cms_openssl.rs` decrypts every recipient type
//! with `openssl cms -decrypt`.

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use yasna::Tag;
use yasna::models::ObjectIdentifier;

use crate::csr::PublicKey;
use crate::{CaError, KeyType};

const OID_ENVELOPED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 3];
const OID_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 1];
const OID_RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
const OID_RSAES_OAEP: &[u64] = &[1, 2, 840, 113549, 1, 1, 7];
const OID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const OID_P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
const OID_P384: &[u64] = &[1, 3, 132, 0, 34];
/// dhSinglePass-stdDH-sha256kdf-scheme (SEC 1 / RFC 5753 §7.1.4).
const OID_ECDH_SHA256_KDF: &[u64] = &[1, 3, 132, 1, 11, 1];
const OID_AES128_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 2];
const OID_AES256_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 42];
const OID_AES128_WRAP: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 5];
const OID_AES256_WRAP: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 45];

fn oid(arcs: &[u64]) -> ObjectIdentifier {
    ObjectIdentifier::from_slice(arcs)
}

/// A recipient named by issuerAndSerialNumber, with the public key its
/// certificate carries (for the HSM's key transport or key agreement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientId {
    issuer_der: Vec<u8>,
    serial_der: Vec<u8>,
    public_key: PublicKey,
}

impl RecipientId {
    /// Reads issuer, serial number and public key from the recipient's
    /// certificate (DER).
    pub fn from_certificate(cert_der: &[u8]) -> Result<RecipientId, CaError> {
        let (rest, cert) = X509Certificate::from_der(cert_der).map_err(|e| CaError::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CaError::Certificate("trailing bytes after the recipient certificate".into()));
        }
        let public_key = PublicKey::from_spki_der(cert.public_key().raw)
            .map_err(|e| CaError::Certificate(format!("recipient key: {e}")))?;
        let serial = cert.raw_serial();
        let mut serial_der = vec![0x02];
        crate::der::push_length(&mut serial_der, serial.len());
        serial_der.extend_from_slice(serial);
        Ok(RecipientId { issuer_der: cert.issuer().as_raw().to_vec(), serial_der, public_key })
    }

    /// The recipient certificate's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    fn write_issuer_and_serial(&self, w: yasna::DERWriter<'_>) {
        w.write_sequence(|w| {
            w.next().write_der(&self.issuer_der);
            w.next().write_der(&self.serial_der);
        })
    }
}

/// AES key wrap (RFC 3394) key size, for the KEK of ECDH recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AesWrap {
    /// id-aes128-wrap.
    Aes128,
    /// id-aes256-wrap.
    Aes256,
}

impl AesWrap {
    /// KEK length in bits (the KDF's output, and suppPubInfo).
    pub fn key_bits(self) -> u32 {
        match self {
            AesWrap::Aes128 => 128,
            AesWrap::Aes256 => 256,
        }
    }

    fn oid(self) -> &'static [u64] {
        match self {
            AesWrap::Aes128 => OID_AES128_WRAP,
            AesWrap::Aes256 => OID_AES256_WRAP,
        }
    }

    /// AlgorithmIdentifier with parameters absent (RFC 3565 §2.3.2).
    fn write_algorithm(self, w: yasna::DERWriter<'_>) {
        w.write_sequence(|w| w.next().write_oid(&oid(self.oid())))
    }
}

/// How the content-encryption key reaches the recipient (computed by the
/// HSM; only the public results are here).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyEncryption {
    /// RSAES-OAEP with SHA-1, MGF1-SHA-1 and an empty label (RFC 3560).
    RsaOaepSha1 {
        /// The encrypted content-encryption key.
        encrypted_key: Vec<u8>,
    },
    /// RSAES-PKCS1-v1_5 (rsaEncryption).
    RsaPkcs1v15 {
        /// The encrypted content-encryption key.
        encrypted_key: Vec<u8>,
    },
    /// Ephemeral-static ECDH, X9.63 KDF with SHA-256, AES key wrap.
    EcdhSha256KdfAesWrap {
        /// The recipient's curve (`ec-p256` or `ec-p384`).
        curve: KeyType,
        /// The ephemeral public key, uncompressed (`04 || X || Y`).
        originator_point: Vec<u8>,
        /// The key wrap algorithm (and KEK size).
        wrap: AesWrap,
        /// Optional user keying material (must match the KDF's shared info).
        ukm: Option<Vec<u8>>,
        /// The wrapped content-encryption key.
        encrypted_key: Vec<u8>,
    },
}

impl KeyEncryption {
    /// Checks that these pieces fit `recipient`'s key (RSA schemes for RSA
    /// keys, ECDH on the recipient's curve with a point of the right size).
    pub fn check(&self, recipient: &RecipientId) -> Result<(), CaError> {
        let key_type = recipient.public_key.key_type();
        let bad = |reason: String| Err(CaError::InvalidField { field: "key_encryption", reason });
        match self {
            KeyEncryption::RsaOaepSha1 { encrypted_key } | KeyEncryption::RsaPkcs1v15 { encrypted_key } => {
                if !key_type.is_rsa() {
                    return bad(format!("RSA key transport for a {key_type} recipient"));
                }
                if encrypted_key.len() * 8 != key_type.bits() as usize {
                    return bad(format!("encrypted key of {} bytes for {key_type}", encrypted_key.len()));
                }
            }
            KeyEncryption::EcdhSha256KdfAesWrap { curve, originator_point, encrypted_key, .. } => {
                if *curve != key_type {
                    return bad(format!("ECDH on {curve} for a {key_type} recipient"));
                }
                let point_len = match curve {
                    KeyType::EcP256 => 65,
                    KeyType::EcP384 => 97,
                    other => return bad(format!("ECDH on {other} is not supported")),
                };
                if originator_point.len() != point_len || originator_point.first() != Some(&0x04) {
                    return bad(format!("originator point must be {point_len} bytes, uncompressed"));
                }
                if encrypted_key.len() < 24 || !encrypted_key.len().is_multiple_of(8) {
                    return bad("AES-wrapped key must be a multiple of 8 bytes, at least 24".into());
                }
            }
        }
        Ok(())
    }
}

/// The content-encryption algorithm of the enveloped content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContentEncryption {
    /// AES-256-CBC with PKCS#7 padding (`CKM_AES_CBC_PAD`).
    Aes256Cbc {
        /// The IV.
        iv: [u8; 16],
    },
    /// AES-128-CBC with PKCS#7 padding (`CKM_AES_CBC_PAD`).
    Aes128Cbc {
        /// The IV.
        iv: [u8; 16],
    },
}

impl ContentEncryption {
    fn write_algorithm(self, w: yasna::DERWriter<'_>) {
        let (arcs, iv) = match self {
            ContentEncryption::Aes256Cbc { iv } => (OID_AES256_CBC, iv),
            ContentEncryption::Aes128Cbc { iv } => (OID_AES128_CBC, iv),
        };
        w.write_sequence(|w| {
            w.next().write_oid(&oid(arcs));
            w.next().write_bytes(&iv);
        })
    }
}

/// The DER `ECC-CMS-SharedInfo` (RFC 5753 §7.2) that is the SharedInfo of
/// the X9.63 KDF for an ECDH recipient: keyInfo = the wrap algorithm
/// (parameters absent), entityUInfo = `ukm` if any, suppPubInfo = the KEK
/// length in bits as 4 bytes big-endian.
pub fn ecc_cms_shared_info(wrap: AesWrap, ukm: Option<&[u8]>) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            wrap.write_algorithm(w.next());
            if let Some(ukm) = ukm {
                w.next().write_tagged(Tag::context(0), |w| w.write_bytes(ukm));
            }
            w.next().write_tagged(Tag::context(2), |w| w.write_bytes(&wrap.key_bits().to_be_bytes()));
        })
    })
}

/// Assembles a DER ContentInfo of type envelopedData for one recipient;
/// the enveloped content type is id-data. `encrypted_content` is the
/// CBC-encrypted (padded) DER PKCS#8 PrivateKeyInfo. The pieces must come
/// from `recipient`'s key (see [`KeyEncryption::check`]).
pub fn enveloped_data(
    recipient: &RecipientId,
    key: &KeyEncryption,
    content: &ContentEncryption,
    encrypted_content: &[u8],
) -> Vec<u8> {
    // why: RFC 5652 §6.1: version 0 when the only recipient is a
    // KeyTransRecipientInfo v0 (issuerAndSerialNumber); 2 with a
    // KeyAgreeRecipientInfo (always v3).
    let version: u8 = match key {
        KeyEncryption::RsaOaepSha1 { .. } | KeyEncryption::RsaPkcs1v15 { .. } => 0,
        KeyEncryption::EcdhSha256KdfAesWrap { .. } => 2,
    };
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_oid(&oid(OID_ENVELOPED_DATA));
            w.next().write_tagged(Tag::context(0), |w| {
                w.write_sequence(|w| {
                    w.next().write_u8(version);
                    w.next().write_set(|w| write_recipient_info(w.next(), recipient, key));
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&oid(OID_DATA));
                        content.write_algorithm(w.next());
                        w.next().write_tagged_implicit(Tag::context(0), |w| w.write_bytes(encrypted_content));
                    });
                })
            });
        })
    })
}

fn write_recipient_info(w: yasna::DERWriter<'_>, recipient: &RecipientId, key: &KeyEncryption) {
    match key {
        KeyEncryption::RsaOaepSha1 { encrypted_key } | KeyEncryption::RsaPkcs1v15 { encrypted_key } => {
            // KeyTransRecipientInfo (RFC 5652 §6.2.1).
            w.write_sequence(|w| {
                w.next().write_u8(0);
                recipient.write_issuer_and_serial(w.next());
                w.next().write_sequence(|w| {
                    if matches!(key, KeyEncryption::RsaOaepSha1 { .. }) {
                        // why: RFC 3560 §3: all-default RSAES-OAEP-params
                        // (SHA-1, MGF1-SHA-1, empty label) are an empty SEQUENCE.
                        w.next().write_oid(&oid(OID_RSAES_OAEP));
                        w.next().write_sequence(|_| {});
                    } else {
                        w.next().write_oid(&oid(OID_RSA_ENCRYPTION));
                        w.next().write_null();
                    }
                });
                w.next().write_bytes(encrypted_key);
            })
        }
        KeyEncryption::EcdhSha256KdfAesWrap { curve, originator_point, wrap, ukm, encrypted_key } => {
            // RecipientInfo's kari alternative: [1] IMPLICIT KeyAgreeRecipientInfo.
            w.write_tagged_implicit(Tag::context(1), |w| {
                w.write_sequence(|w| {
                    w.next().write_u8(3);
                    // originator [0] EXPLICIT OriginatorIdentifierOrKey,
                    // choice originatorKey [1] IMPLICIT OriginatorPublicKey.
                    w.next().write_tagged(Tag::context(0), |w| {
                        w.write_tagged_implicit(Tag::context(1), |w| {
                            w.write_sequence(|w| {
                                w.next().write_sequence(|w| {
                                    w.next().write_oid(&oid(OID_EC_PUBLIC_KEY));
                                    // why: RFC 5753 §3.1.1 allows absent or
                                    // ECParameters; the named curve is explicit.
                                    let curve = if *curve == KeyType::EcP384 { OID_P384 } else { OID_P256 };
                                    w.next().write_oid(&oid(curve));
                                });
                                w.next().write_bitvec_bytes(originator_point, originator_point.len() * 8);
                            })
                        })
                    });
                    if let Some(ukm) = ukm {
                        w.next().write_tagged(Tag::context(1), |w| w.write_bytes(ukm));
                    }
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&oid(OID_ECDH_SHA256_KDF));
                        wrap.write_algorithm(w.next());
                    });
                    // RecipientEncryptedKeys: one RecipientEncryptedKey.
                    w.next().write_sequence(|w| {
                        w.next().write_sequence(|w| {
                            recipient.write_issuer_and_serial(w.next());
                            w.next().write_bytes(encrypted_key);
                        })
                    });
                })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ECC-CMS-SharedInfo written out by hand from the ASN.1 of RFC 5753
    /// §7.2 (`SEQUENCE { keyInfo AlgorithmIdentifier, entityUInfo [0]
    /// EXPLICIT OCTET STRING OPTIONAL, suppPubInfo [2] EXPLICIT OCTET STRING }`)
    /// with the AES wrap OIDs of RFC 3565 §4.3 (id-aes128-wrap
    /// 2.16.840.1.101.3.4.1.5, id-aes256-wrap 2.16.840.1.101.3.4.1.45;
    /// parameters absent per RFC 3565 §2.3.2).
    #[test]
    fn shared_info_known_answers() {
        let aes256 = [
            0x30, 0x15, // SEQUENCE, 21 bytes
            0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2d, // id-aes256-wrap
            0xa2, 0x06, 0x04, 0x04, 0x00, 0x00, 0x01, 0x00, // [2] { OCTET STRING 256 }
        ];
        assert_eq!(ecc_cms_shared_info(AesWrap::Aes256, None), aes256);

        let aes128_ukm = [
            0x30, 0x1d, // SEQUENCE, 29 bytes
            0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x05, // id-aes128-wrap
            0xa0, 0x06, 0x04, 0x04, 0xde, 0xad, 0xbe, 0xef, // [0] { OCTET STRING ukm }
            0xa2, 0x06, 0x04, 0x04, 0x00, 0x00, 0x00, 0x80, // [2] { OCTET STRING 128 }
        ];
        assert_eq!(ecc_cms_shared_info(AesWrap::Aes128, Some(&[0xde, 0xad, 0xbe, 0xef])), aes128_ukm);
    }
}
