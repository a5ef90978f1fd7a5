//! Certificate signing requests (PKCS#10, RFC 2986): parsing, proof of
//! possession, and the public keys the CA certifies.
//!
//! [`parse_csr`] takes PEM or DER (at most [`MAX_CSR_SIZE`] bytes), checks
//! the request's self-signature with the key it carries (proof that the
//! requester holds the private key) and returns a [`Csr`] that says what
//! the request *asks for*: subject attributes, subject alternative names and
//! every requested extension. What is issued is decided later by
//! [`approve`](crate::approve) against a profile; a `Csr` value exists only
//! for requests whose signature verified.
//!
//! Accepted keys: EC P-256 and P-384 (uncompressed points), RSA with a
//! 2048, 3072 or 4096-bit modulus and an odd exponent between 3 and 2^33-1.
//! Accepted signatures: RSA PKCS#1 v1.5 or PSS with SHA-256/384/512, ECDSA
//! with SHA-256/384. SHA-1 signatures, smaller RSA keys, other curves and
//! SM2 (no SM2 verification here yet) are refused with a typed reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::KeyType;
use crate::names::{DnAttribute, San, attribute_text, rfc4514_string};
use crate::usage::{ExtendedKeyUsage, KeyUsage};

/// The largest CSR accepted, in bytes (PEM or DER).
pub const MAX_CSR_SIZE: usize = 16 * 1024;

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_SM2: &str = "1.2.156.10197.1.301";
const OID_EXTENSION_REQUEST: &str = "1.2.840.113549.1.9.14";
const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";

/// Why a CSR (or a public key) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// The input is larger than [`MAX_CSR_SIZE`].
    #[error("CSR too large: {size} bytes (at most {max})")]
    TooLarge {
        /// Input size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not a well-formed PKCS#10 request (PEM, DER or content).
    #[error("malformed CSR: {0}")]
    Malformed(String),
    /// The self-signature does not verify with the request's own key.
    #[error("CSR signature does not verify with its public key (no proof of possession)")]
    BadSignature,
    /// The request is signed with an algorithm the CA does not accept.
    #[error("unsupported CSR signature algorithm: {0}")]
    UnsupportedSignatureAlgorithm(String),
    /// A key type, curve or encoding the CA does not certify.
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    /// A key too weak to certify (e.g. RSA below 2048 bits).
    #[error("weak key: {0}")]
    WeakKey(String),
}

impl CsrError {
    /// A stable snake_case code for APIs and audit records.
    pub fn code(&self) -> &'static str {
        match self {
            CsrError::TooLarge { .. } => "csr_too_large",
            CsrError::Malformed(_) => "csr_malformed",
            CsrError::BadSignature => "csr_bad_signature",
            CsrError::UnsupportedSignatureAlgorithm(_) => "csr_unsupported_signature",
            CsrError::UnsupportedKey(_) => "unsupported_key",
            CsrError::WeakKey(_) => "weak_key",
        }
    }
}

/// A public key the CA can certify, checked and in canonical encoding.
///
/// Built only by [`PublicKey::from_spki_der`] (and by [`parse_csr`]), so
/// its type, SubjectPublicKeyInfo and raw key always agree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    key_type: KeyType,
    spki_der: Vec<u8>,
    raw: Vec<u8>,
}

impl PublicKey {
    /// Parses and checks a DER SubjectPublicKeyInfo (e.g. of a key pair the
    /// service generated in the HSM).
    pub fn from_spki_der(spki_der: &[u8]) -> Result<PublicKey, CsrError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| CsrError::Malformed(format!("SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed("trailing bytes after SubjectPublicKeyInfo".into()));
        }
        PublicKey::from_spki(&spki)
    }

    fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, CsrError> {
        let algorithm = spki.algorithm.algorithm.to_id_string();
        if spki.subject_public_key.unused_bits != 0 {
            return Err(CsrError::Malformed("public key BIT STRING has unused bits".into()));
        }
        let raw: &[u8] = &spki.subject_public_key.data;
        let key_type = match algorithm.as_str() {
            OID_RSA_ENCRYPTION => {
                let null_or_absent =
                    spki.algorithm.parameters.as_ref().is_none_or(|p| p.tag().0 == 5 && p.data.is_empty());
                if !null_or_absent {
                    return Err(CsrError::Malformed("rsaEncryption parameters must be NULL".into()));
                }
                rsa_key_type(raw)?
            }
            OID_EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .ok_or_else(|| CsrError::UnsupportedKey("EC key without a named curve".into()))?;
                let key_type = match curve.as_str() {
                    OID_P256 => KeyType::EcP256,
                    OID_P384 => KeyType::EcP384,
                    OID_SM2 => {
                        return Err(CsrError::UnsupportedKey(
                            "sm2: SM2 keys are not certified by this CA yet (no SM2 signature support)".into(),
                        ));
                    }
                    other => return Err(CsrError::UnsupportedKey(format!("EC curve {other}"))),
                };
                let point_len = if key_type == KeyType::EcP256 { 65 } else { 97 };
                if raw.len() != point_len || raw.first() != Some(&0x04) {
                    return Err(CsrError::UnsupportedKey(format!(
                        "{key_type}: expected an uncompressed point of {point_len} bytes"
                    )));
                }
                key_type
            }
            other => {
                let name = match other {
                    "1.2.840.113549.1.1.10" => "RSASSA-PSS key",
                    "1.3.101.112" => "Ed25519",
                    "1.3.101.110" => "X25519",
                    "1.2.840.10040.4.1" => "DSA",
                    _ => other,
                };
                return Err(CsrError::UnsupportedKey(format!("key algorithm {name}")));
            }
        };
        Ok(PublicKey::canonical(key_type, raw.to_vec()))
    }

    fn canonical(key_type: KeyType, raw: Vec<u8>) -> PublicKey {
        let spki_der = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_sequence(|w| {
                    if key_type.is_rsa() {
                        w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(&[1, 2, 840, 113549, 1, 1, 1]));
                        w.next().write_null();
                    } else {
                        let curve: &[u64] = if key_type == KeyType::EcP256 {
                            &[1, 2, 840, 10045, 3, 1, 7]
                        } else {
                            &[1, 3, 132, 0, 34]
                        };
                        w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(&[1, 2, 840, 10045, 2, 1]));
                        w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(curve));
                    }
                });
                w.next().write_bitvec_bytes(&raw, raw.len() * 8);
            })
        });
        PublicKey { key_type, spki_der, raw }
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The DER SubjectPublicKeyInfo, canonical (RSA parameters NULL, EC
    /// named curve), as it appears in the issued certificate.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The BIT STRING content: the uncompressed EC point, or the DER
    /// PKCS#1 RSAPublicKey.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

impl rcgen::PublicKeyData for PublicKey {
    fn subject_public_key_info(&self) -> Vec<u8> {
        self.spki_der.clone()
    }

    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        // why: rcgen writes the SubjectPublicKeyInfo's AlgorithmIdentifier
        // from this value; the *_SHA* variants carry exactly the key OIDs
        // (ecPublicKey + curve, rsaEncryption + NULL) that `canonical` writes.
        match self.key_type {
            KeyType::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
            // SM2 keys are refused by `from_spki`, so only P-256 is left.
            KeyType::EcP256 | KeyType::Sm2 => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }
}

fn rsa_key_type(raw: &[u8]) -> Result<KeyType, CsrError> {
    let (modulus, exponent) = parse_rsa_public_key(raw)?;
    let modulus = strip_leading_zeros(modulus);
    let exponent = strip_leading_zeros(exponent);
    let bits = match modulus.first() {
        Some(first) => modulus.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    };
    let exponent_value =
        if exponent.len() <= 8 { exponent.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)) } else { u64::MAX };
    // why: the same exponent range ring (and so the CSR check) accepts.
    if exponent_value < 3 || exponent_value % 2 == 0 || exponent_value >= 1 << 33 {
        return Err(CsrError::UnsupportedKey(format!(
            "RSA public exponent must be odd, 3 to 2^33-1 (got {exponent_value})"
        )));
    }
    match bits {
        0..2048 => Err(CsrError::WeakKey(format!("RSA-{bits}: at least 2048 bits are required"))),
        2048 => Ok(KeyType::Rsa2048),
        3072 => Ok(KeyType::Rsa3072),
        4096 => Ok(KeyType::Rsa4096),
        _ => Err(CsrError::UnsupportedKey(format!("RSA-{bits}: only 2048, 3072 or 4096-bit moduli are certified"))),
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Splits a DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn parse_rsa_public_key(raw: &[u8]) -> Result<(&[u8], &[u8]), CsrError> {
    use x509_parser::der_parser::der::parse_der_integer;
    let bad = || CsrError::Malformed("RSAPublicKey is not DER".into());
    let (rest, seq) = x509_parser::der_parser::der::parse_der_sequence_defined(|i| {
        let (i, n) = parse_der_integer(i)?;
        let (i, e) = parse_der_integer(i)?;
        Ok((i, vec![n, e]))
    })(raw)
    .map_err(|_| bad())?;
    if !rest.is_empty() {
        return Err(bad());
    }
    let items = seq.as_sequence().map_err(|_| bad())?;
    let [n, e] = items.as_slice() else { return Err(bad()) };
    let n = n.as_slice().map_err(|_| bad())?;
    let e = e.as_slice().map_err(|_| bad())?;
    // A negative modulus or exponent is not a key.
    if n.first().is_some_and(|b| b & 0x80 != 0) || e.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(CsrError::UnsupportedKey("negative RSA modulus or exponent".into()));
    }
    Ok((n, e))
}

/// One subject attribute as the CSR spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// The attribute, if it is one profiles know.
    pub attribute: Option<DnAttribute>,
    /// The attribute type OID, dotted decimal.
    pub oid: String,
    /// The value as text.
    pub value: String,
}

/// What a requested extension's value says, for the extensions the CA
/// looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestedValue {
    /// basicConstraints.
    BasicConstraints {
        /// Whether the CSR asks to be a CA.
        ca: bool,
        /// The requested path length constraint.
        path_len: Option<u32>,
    },
    /// keyUsage.
    KeyUsage(Vec<KeyUsage>),
    /// extendedKeyUsage.
    ExtendedKeyUsage(Vec<ExtendedKeyUsage>),
    /// subjectAltName (the names are also in [`Csr::sans`]).
    SubjectAltName(Vec<San>),
    /// subjectKeyIdentifier (never copied: the CA computes its own).
    SubjectKeyIdentifier,
    /// Any other extension.
    Other,
}

/// One extension in the CSR's extensionRequest attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedExtension {
    /// The extension OID, dotted decimal.
    pub oid: String,
    /// The critical flag as requested.
    pub critical: bool,
    /// The parsed value.
    pub value: RequestedValue,
}

/// A parsed CSR whose self-signature verified.
#[derive(Debug, Clone)]
pub struct Csr {
    der: Vec<u8>,
    subject: Vec<NameEntry>,
    subject_string: String,
    public_key: PublicKey,
    sans: Vec<San>,
    extensions: Vec<RequestedExtension>,
    attributes: Vec<String>,
    signature_algorithm: String,
}

impl Csr {
    /// The request's DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The requested subject attributes, in the CSR's order.
    pub fn subject(&self) -> &[NameEntry] {
        &self.subject
    }

    /// The requested subject as an RFC 4514 string.
    pub fn subject_string(&self) -> &str {
        &self.subject_string
    }

    /// The first value of `attribute` in the requested subject.
    pub fn subject_value(&self, attribute: DnAttribute) -> Option<&str> {
        self.subject.iter().find(|e| e.attribute == Some(attribute)).map(|e| e.value.as_str())
    }

    /// The key to certify.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The requested subject alternative names.
    pub fn sans(&self) -> &[San] {
        &self.sans
    }

    /// Every requested extension, in the CSR's order.
    pub fn extensions(&self) -> &[RequestedExtension] {
        &self.extensions
    }

    /// OIDs of the request's attributes other than extensionRequest
    /// (e.g. challengePassword); their values are not kept.
    pub fn other_attributes(&self) -> &[String] {
        &self.attributes
    }

    /// The signature algorithm OID of the request.
    pub fn signature_algorithm(&self) -> &str {
        &self.signature_algorithm
    }

    /// True if the request asks for basicConstraints CA:TRUE.
    pub fn requests_ca(&self) -> bool {
        self.extensions.iter().any(|e| matches!(e.value, RequestedValue::BasicConstraints { ca: true, .. }))
    }
}

/// Parses a PEM or DER PKCS#10 request and verifies its self-signature.
pub fn parse_csr(input: &[u8]) -> Result<Csr, CsrError> {
    if input.len() > MAX_CSR_SIZE {
        return Err(CsrError::TooLarge { size: input.len(), max: MAX_CSR_SIZE });
    }
    let der = if looks_like_pem(input) { pem_body(input)? } else { input.to_vec() };
    let (rest, req) = X509CertificationRequest::from_der(&der).map_err(|e| CsrError::Malformed(format!("DER: {e}")))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(format!("{} trailing bytes after the request", rest.len())));
    }
    let info = &req.certification_request_info;
    if info.version.0 != 0 {
        return Err(CsrError::Malformed(format!("version {} (only v1 = 0 exists)", info.version.0)));
    }
    // Key checks first, so a weak or unsupported key is reported as such
    // rather than as a signature that cannot be checked.
    let public_key = PublicKey::from_spki(&info.subject_pki)?;
    let signature_algorithm = req.signature_algorithm.algorithm.to_id_string();
    check_signature_algorithm(&signature_algorithm)?;
    if signature_algorithm == OID_RSASSA_PSS {
        check_pss_parameters(req.signature_algorithm.parameters.as_ref())?;
    }
    req.verify_signature().map_err(|e| match e {
        X509Error::SignatureUnsupportedAlgorithm => {
            CsrError::UnsupportedSignatureAlgorithm(format!("{signature_algorithm} with {}", public_key.key_type))
        }
        _ => CsrError::BadSignature,
    })?;

    let mut subject = Vec::new();
    for attr in info.subject.iter_attributes() {
        let oid = attr.attr_type().to_id_string();
        let value = attribute_text(attr)
            .ok_or_else(|| CsrError::Malformed(format!("subject attribute {oid} is not a string")))?;
        subject.push(NameEntry { attribute: DnAttribute::from_oid_str(&oid), oid, value });
    }
    let subject_string = rfc4514_string(&info.subject);

    let mut extensions: Vec<RequestedExtension> = Vec::new();
    let mut sans = Vec::new();
    let mut attributes = Vec::new();
    let mut seen_extension_request = false;
    for attribute in info.iter_attributes() {
        let oid = attribute.oid.to_id_string();
        let ParsedCriAttribute::ExtensionRequest(request) = attribute.parsed_attribute() else {
            if oid == OID_EXTENSION_REQUEST {
                return Err(CsrError::Malformed("extensionRequest attribute is not a list of extensions".into()));
            }
            attributes.push(oid);
            continue;
        };
        if std::mem::replace(&mut seen_extension_request, true) {
            return Err(CsrError::Malformed("more than one extensionRequest attribute".into()));
        }
        for ext in &request.extensions {
            let oid = ext.oid.to_id_string();
            if extensions.iter().any(|e| e.oid == oid) {
                return Err(CsrError::Malformed(format!("extension {oid} requested twice")));
            }
            let value = match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => {
                    RequestedValue::BasicConstraints { ca: bc.ca, path_len: bc.path_len_constraint }
                }
                ParsedExtension::KeyUsage(ku) => RequestedValue::KeyUsage(KeyUsage::from_flags(ku.flags)),
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    let mut list = Vec::new();
                    for (set, e) in [
                        (eku.server_auth, ExtendedKeyUsage::ServerAuth),
                        (eku.client_auth, ExtendedKeyUsage::ClientAuth),
                        (eku.code_signing, ExtendedKeyUsage::CodeSigning),
                        (eku.email_protection, ExtendedKeyUsage::EmailProtection),
                        (eku.time_stamping, ExtendedKeyUsage::TimeStamping),
                        (eku.ocsp_signing, ExtendedKeyUsage::OcspSigning),
                        (eku.any, ExtendedKeyUsage::Any),
                    ] {
                        if set {
                            list.push(e);
                        }
                    }
                    list.extend(eku.other.iter().map(|o| ExtendedKeyUsage::from_oid_str(&o.to_id_string())));
                    RequestedValue::ExtendedKeyUsage(list)
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    let names =
                        san.general_names.iter().map(general_name_to_san).collect::<Result<Vec<_>, CsrError>>()?;
                    sans.extend(names.iter().cloned());
                    RequestedValue::SubjectAltName(names)
                }
                ParsedExtension::SubjectKeyIdentifier(_) => RequestedValue::SubjectKeyIdentifier,
                ParsedExtension::ParseError { error } => {
                    return Err(CsrError::Malformed(format!("extension {oid}: {error}")));
                }
                _ => RequestedValue::Other,
            };
            extensions.push(RequestedExtension { oid, critical: ext.critical, value });
        }
    }

    Ok(Csr { der, subject, subject_string, public_key, sans, extensions, attributes, signature_algorithm })
}

fn looks_like_pem(input: &[u8]) -> bool {
    input.windows(11).any(|w| w == b"-----BEGIN ")
}

fn pem_body(input: &[u8]) -> Result<Vec<u8>, CsrError> {
    let (rest, pem) = x509_parser::pem::parse_x509_pem(input).map_err(|e| CsrError::Malformed(format!("PEM: {e}")))?;
    if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
        return Err(CsrError::Malformed(format!("PEM label {:?} (expected CERTIFICATE REQUEST)", pem.label)));
    }
    if looks_like_pem(rest) {
        return Err(CsrError::Malformed("more than one PEM block".into()));
    }
    Ok(pem.contents)
}

fn check_signature_algorithm(oid: &str) -> Result<(), CsrError> {
    match oid {
        // sha256/384/512WithRSAEncryption, RSASSA-PSS, ecdsa-with-SHA256/384.
        "1.2.840.113549.1.1.11"
        | "1.2.840.113549.1.1.12"
        | "1.2.840.113549.1.1.13"
        | "1.2.840.113549.1.1.10"
        | "1.2.840.10045.4.3.2"
        | "1.2.840.10045.4.3.3" => Ok(()),
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" | "1.2.840.10045.4.1" => {
            Err(CsrError::UnsupportedSignatureAlgorithm(format!("{oid}: SHA-1 signatures are not accepted")))
        }
        other => Err(CsrError::UnsupportedSignatureAlgorithm(other.to_owned())),
    }
}

/// why: ring verifies RSASSA-PSS only with MGF1 over the message hash and
/// a salt as long as the hash (RFC 8017 §9.1 recommends it); OpenSSL signs
/// with the longest salt unless told `-sigopt rsa_pss_saltlen:digest`. Say
/// so instead of reporting a bad signature.
fn check_pss_parameters(params: Option<&x509_parser::der_parser::asn1_rs::Any<'_>>) -> Result<(), CsrError> {
    use x509_parser::signature_algorithm::RsaSsaPssParams;
    let unsupported = |why: String| Err(CsrError::UnsupportedSignatureAlgorithm(format!("RSASSA-PSS: {why}")));
    let Some(params) = params else { return unsupported("parameters missing".into()) };
    let params =
        RsaSsaPssParams::try_from(params).map_err(|e| CsrError::Malformed(format!("RSASSA-PSS parameters: {e}")))?;
    let hash = params.hash_algorithm_oid().to_id_string();
    let hash_len = match hash.as_str() {
        "2.16.840.1.101.3.4.2.1" => 32,
        "2.16.840.1.101.3.4.2.2" => 48,
        "2.16.840.1.101.3.4.2.3" => 64,
        other => return unsupported(format!("hash {other} (SHA-256, SHA-384 or SHA-512 only)")),
    };
    let mgf = params.mask_gen_algorithm().map_err(|e| CsrError::Malformed(format!("RSASSA-PSS parameters: {e}")))?;
    if mgf.mgf.to_id_string() != "1.2.840.113549.1.1.8" || mgf.hash.to_id_string() != hash {
        return unsupported("the mask generation must be MGF1 with the signature's hash".into());
    }
    if params.salt_length() != hash_len {
        return unsupported(format!(
            "salt length {} (only the hash length, {hash_len}, is accepted)",
            params.salt_length()
        ));
    }
    Ok(())
}

fn general_name_to_san(name: &GeneralName<'_>) -> Result<San, CsrError> {
    Ok(match name {
        GeneralName::DNSName(n) => San::Dns((*n).to_owned()),
        GeneralName::RFC822Name(n) => San::Email((*n).to_owned()),
        GeneralName::URI(n) => San::Uri((*n).to_owned()),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => San::Ip(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
            16 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(bytes);
                San::Ip(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            n => return Err(CsrError::Malformed(format!("iPAddress SAN of {n} bytes"))),
        },
        GeneralName::OtherName(oid, _) => San::Unsupported(format!("otherName {}", oid.to_id_string())),
        GeneralName::DirectoryName(n) => San::Unsupported(format!("directoryName {}", rfc4514_string(n))),
        GeneralName::RegisteredID(oid) => San::Unsupported(format!("registeredID {}", oid.to_id_string())),
        GeneralName::X400Address(_) => San::Unsupported("x400Address".into()),
        GeneralName::EDIPartyName(_) => San::Unsupported("ediPartyName".into()),
    })
}
