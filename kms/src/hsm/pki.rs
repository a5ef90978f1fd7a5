//! PKCS#11 operations of the certificate authority: issuing-CA key pairs,
//! and the encryption key pairs of readers' dual certificates, generated in
//! the module and handed out only enveloped.
//!
//! Plain synchronous functions taking a session, like [`super::keyops`];
//! the service runs them inside [`super::Hsm::run`], which may repeat a
//! call on a fresh session, so each one is safe to repeat.
//!
//! The envelope ([`envelope_new_key_pair`]) is the key-management half of a
//! CMS `EnvelopedData` (RFC 5652) whose content is the new private key as
//! PKCS#8 `PrivateKeyInfo`: the module encrypts it under a fresh AES-256
//! content-encryption key (CEK) with `CKM_AES_CBC_PAD`, and wraps the CEK
//! for the reader, either with RSAES-OAEP (RFC 3560 default parameters:
//! SHA-1, MGF1-SHA-1, no label) or with ephemeral-static ECDH and the
//! ANSI X9.63 SHA-256 KDF over the caller's `ECC-CMS-SharedInfo` (RFC 5753
//! `dhSinglePass-stdDH-sha256kdf-scheme` with `id-aes256-wrap`). The DER
//! around these values is the `ca` crate's. No private key or CEK is ever
//! readable on the host: every secret is a sensitive object that leaves
//! the module only wrapped, and every session object made here is
//! destroyed before the function returns, whatever happens.

use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
pub use kms_ca::KeyType;

use super::raw::{mechanism_type, wrap_key};
use super::{Capabilities, HsmError, der};

/// Capability rows probed by generating a key pair of each type.
pub const CAP_GENERATE_EC_P256: &str = "ec_p256_generate";
/// See [`CAP_GENERATE_EC_P256`].
pub const CAP_GENERATE_EC_P384: &str = "ec_p384_generate";
/// See [`CAP_GENERATE_EC_P256`] (probed with 2048 bits; larger sizes are
/// checked against the mechanism's reported maximum).
pub const CAP_GENERATE_RSA: &str = "rsa_generate";
/// Capability rows probed by signing a digest with a generated key.
pub const CAP_SIGN_ECDSA_P256: &str = "ecdsa_p256_sign";
/// See [`CAP_SIGN_ECDSA_P256`].
pub const CAP_SIGN_ECDSA_P384: &str = "ecdsa_p384_sign";
/// `CKM_SHA256_RSA_PKCS`, probed by signing.
pub const CAP_SIGN_RSA_SHA256: &str = "rsa_sha256_sign";
/// `CKM_ECDH1_DERIVE` with `CKD_SHA256_KDF` into an AES-256 KEK, then
/// `CKM_AES_KEY_WRAP` of an AES-256 key under it, probed on P-256.
pub const CAP_ECDH_P256_SHA256_KDF: &str = "ecdh_p256_sha256_kdf";
/// As [`CAP_ECDH_P256_SHA256_KDF`], on P-384.
pub const CAP_ECDH_P384_SHA256_KDF: &str = "ecdh_p384_sha256_kdf";

/// Wrap-probe names of the private keys an envelope wraps (the
/// `wrapped_key_type` of a [`super::WrapRow`]).
pub const WRAPPED_EC: &str = "EC";
/// See [`WRAPPED_EC`].
pub const WRAPPED_RSA: &str = "RSA";
/// See [`WRAPPED_EC`].
pub const WRAPPED_SM2: &str = "SM2";

/// Name of the escrow wrap mechanism in [`Enveloped::escrow_mechanism`].
pub const ESCROW_MECHANISM: &str = "CKM_AES_KEY_WRAP_PAD";

/// A public key read from the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyParts {
    /// The key type.
    pub key_type: KeyType,
    /// The key as SubjectPublicKeyInfo's BIT STRING holds it: the
    /// uncompressed EC point `04 || X || Y`, or the DER PKCS#1
    /// `RSAPublicKey` built from `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`.
    pub raw: Vec<u8>,
    /// The whole DER `SubjectPublicKeyInfo`.
    pub spki_der: Vec<u8>,
}

/// The public key of a reader's signing certificate, which an envelope is
/// made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientKey {
    /// The key type.
    pub key_type: KeyType,
    /// The uncompressed EC point, or the DER PKCS#1 `RSAPublicKey`.
    pub raw: Vec<u8>,
}

/// How the content-encryption key reached the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientParts {
    /// `KeyTransRecipientInfo` with RSAES-OAEP, SHA-1, MGF1-SHA-1, empty
    /// label (RFC 3560's default parameters).
    RsaOaepSha1 {
        /// The CEK encrypted under the reader's RSA key.
        encrypted_key: Vec<u8>,
    },
    /// `KeyAgreeRecipientInfo` with ephemeral-static ECDH, the X9.63
    /// SHA-256 KDF and AES-256 key wrap (RFC 5753).
    EcdhSha256Kdf {
        /// The originator's (ephemeral) public point, uncompressed.
        originator_point: Vec<u8>,
        /// The CEK wrapped with RFC 3394 AES key wrap under the derived KEK.
        encrypted_key: Vec<u8>,
    },
}

/// A new encryption key pair, its private key enveloped for the reader and
/// wrapped for escrow. Holds public and encrypted data only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enveloped {
    /// The public key of the new pair (for the encryption certificate).
    pub enc_public: PublicKeyParts,
    /// The AES-CBC IV of the encrypted content (from `C_GenerateRandom`).
    pub content_iv: [u8; 16],
    /// The PKCS#8 `PrivateKeyInfo`, AES-256-CBC with PKCS#7 padding under
    /// the CEK: the CMS `encryptedContent`.
    pub encrypted_content: Vec<u8>,
    /// The CEK for the reader.
    pub recipient: RecipientParts,
    /// The private key (PKCS#8) wrapped under the escrow key.
    pub escrow_wrapped: Vec<u8>,
    /// The escrow wrap mechanism ([`ESCROW_MECHANISM`]).
    pub escrow_mechanism: &'static str,
}

fn err(module: &str) -> impl Fn(cryptoki::error::Error) -> HsmError + '_ {
    move |e| HsmError::from_cryptoki(module, e)
}

fn unavailable(caps: &Capabilities, mechanism: &str, capability: String) -> HsmError {
    HsmError::MechanismUnavailable { module: caps.module.clone(), mechanism: mechanism.to_owned(), capability }
}

/// How the module handles a key type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    /// NIST curve, with its `CKA_EC_PARAMS` (DER OID).
    Ec(&'static [u8]),
    /// RSA with `CKA_MODULUS_BITS`.
    Rsa(u64),
    /// SM2 (vendor mechanisms).
    Sm2,
}

fn family(module: &str, key_type: KeyType) -> Result<Family, HsmError> {
    match key_type {
        KeyType::EcP256 => Ok(Family::Ec(der::OID_P256)),
        KeyType::EcP384 => Ok(Family::Ec(der::OID_P384)),
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => Ok(Family::Rsa(u64::from(key_type.bits()))),
        KeyType::Sm2 => Ok(Family::Sm2),
        // why: kms_ca::KeyType is non_exhaustive; a type added there needs
        // templates and probes here before the HSM can make it.
        other => Err(HsmError::Wrapper {
            module: module.to_owned(),
            reason: format!("the HSM layer does not know how to make {other} keys"),
        }),
    }
}

/// The wrap-probe name of a private key of `key_type`.
pub fn wrapped_key_label(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::EcP256 | KeyType::EcP384 => WRAPPED_EC,
        KeyType::Sm2 => WRAPPED_SM2,
        _ => WRAPPED_RSA,
    }
}

/// The key-pair generation mechanism for `key_type`, after checking the
/// capability table (probed rows; SM2 only with the vendor mechanisms
/// configured and listed). `for_signing` also requires the signature probe.
fn key_pair_mechanism(
    caps: &Capabilities,
    key_type: KeyType,
    for_signing: bool,
) -> Result<Mechanism<'static>, HsmError> {
    match family(&caps.module, key_type)? {
        Family::Ec(oid) => {
            let (generate, sign) = if oid == der::OID_P256 {
                (CAP_GENERATE_EC_P256, CAP_SIGN_ECDSA_P256)
            } else {
                (CAP_GENERATE_EC_P384, CAP_SIGN_ECDSA_P384)
            };
            caps.require(generate)?;
            if for_signing {
                caps.require(sign)?;
            }
            Ok(Mechanism::EccKeyPairGen)
        }
        Family::Rsa(bits) => {
            caps.require(CAP_GENERATE_RSA)?;
            if for_signing {
                caps.require(CAP_SIGN_RSA_SHA256)?;
            }
            if let Some(row) = caps.row(CAP_GENERATE_RSA)
                && row.max_key_size != 0
                && bits > row.max_key_size
            {
                return Err(unavailable(
                    caps,
                    "CKM_RSA_PKCS_KEY_PAIR_GEN",
                    format!("{key_type} keys (the module reports at most {} bits)", row.max_key_size),
                ));
            }
            Ok(Mechanism::RsaPkcsKeyPairGen)
        }
        Family::Sm2 => {
            let number = caps.require("sm2_key_pair_gen")?;
            if for_signing {
                caps.require("sm2_sign")?;
            }
            Ok(Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(mechanism_type(number), None)))
        }
    }
}

/// The algorithm part of a key-pair template: curve or modulus size.
fn algorithm_attributes(family: Family) -> Vec<Attribute> {
    match family {
        Family::Ec(oid) => vec![Attribute::EcParams(oid.to_vec())],
        Family::Sm2 => vec![Attribute::EcParams(der::OID_SM2.to_vec())],
        Family::Rsa(bits) => {
            vec![Attribute::ModulusBits(bits.into()), Attribute::PublicExponent(vec![0x01, 0x00, 0x01])]
        }
    }
}

/// Reads the public key of a public-key object.
pub fn read_public_key(session: &Session, module: &str, public: ObjectHandle) -> Result<PublicKeyParts, HsmError> {
    let wrapper = |reason: String| HsmError::Wrapper { module: module.to_owned(), reason };
    let kind = session.get_attributes(public, &[AttributeType::KeyType]).map_err(err(module))?;
    let is_rsa = matches!(kind.first(), Some(Attribute::KeyType(t)) if *t == CkKeyType::RSA);
    if is_rsa {
        let attrs = session
            .get_attributes(public, &[AttributeType::Modulus, AttributeType::PublicExponent])
            .map_err(err(module))?;
        let (mut n, mut e) = (None, None);
        for a in attrs {
            match a {
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                _ => {}
            }
        }
        let (Some(n), Some(e)) = (n, e) else {
            return Err(wrapper("RSA public key without CKA_MODULUS or CKA_PUBLIC_EXPONENT".into()));
        };
        let first = n.iter().position(|b| *b != 0).unwrap_or(n.len());
        let key_type = match (n.len() - first) * 8 {
            2048 => KeyType::Rsa2048,
            3072 => KeyType::Rsa3072,
            4096 => KeyType::Rsa4096,
            bits => return Err(wrapper(format!("RSA modulus of {bits} bits is not a CA key type"))),
        };
        let raw = der::rsa_public_key(&n, &e);
        let spki_der = der::rsa_spki(&raw);
        return Ok(PublicKeyParts { key_type, raw, spki_der });
    }
    let attrs =
        session.get_attributes(public, &[AttributeType::EcPoint, AttributeType::EcParams]).map_err(err(module))?;
    let (mut point, mut params) = (None, None);
    for a in attrs {
        match a {
            Attribute::EcPoint(p) => point = Some(p),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    let params = params.ok_or_else(|| wrapper("public key without CKA_EC_PARAMS".into()))?;
    let key_type = match params.as_slice() {
        der::OID_P256 => KeyType::EcP256,
        der::OID_P384 => KeyType::EcP384,
        der::OID_SM2 => KeyType::Sm2,
        other => {
            return Err(wrapper(format!("CKA_EC_PARAMS {} is not P-256, P-384 or SM2", hex::encode(other))));
        }
    };
    let raw = point
        .as_deref()
        .and_then(der::ec_point_from_attribute)
        .ok_or_else(|| wrapper("CKA_EC_POINT is not an uncompressed point".into()))?;
    let expected = if key_type == KeyType::EcP384 { 97 } else { 65 };
    if raw.len() != expected {
        return Err(wrapper(format!("CKA_EC_POINT of {} bytes on {key_type}", raw.len())));
    }
    let spki_der = der::ec_spki(&params, &raw);
    Ok(PublicKeyParts { key_type, raw, spki_der })
}

/// Generates the token key pair of an issuing CA: private key
/// `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not extractable, `CKA_SIGN`
/// only; public key a token object with `CKA_VERIFY`; `label` and `id` on
/// both. Fails with [`HsmError::MechanismUnavailable`] (naming module and
/// mechanism) when the probes showed the module cannot generate or sign
/// with `key_type`. If the public key cannot be read back, the pair is
/// destroyed again.
pub fn generate_signing_key_pair(
    session: &Session,
    caps: &Capabilities,
    module: &str,
    key_type: KeyType,
    label: &str,
    id: &[u8],
) -> Result<PublicKeyParts, HsmError> {
    let mechanism = key_pair_mechanism(caps, key_type, true)?;
    let mut public = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    public.extend(algorithm_attributes(family(module, key_type)?));
    let private = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let (public_handle, private_handle) =
        session.generate_key_pair(&mechanism, &public, &private).map_err(err(module))?;
    match read_public_key(session, module, public_handle) {
        Ok(parts) if parts.key_type == key_type => Ok(parts),
        other => {
            // Roll back: a pair whose public key cannot be published is useless.
            let _ = session.destroy_object(private_handle);
            let _ = session.destroy_object(public_handle);
            match other {
                Err(e) => Err(e),
                Ok(parts) => Err(HsmError::Wrapper {
                    module: module.to_owned(),
                    reason: format!("asked for a {key_type} key pair, the module made {}", parts.key_type),
                }),
            }
        }
    }
}

/// Destroys the key pair (private and public key objects) with `CKA_ID`
/// `id`, for rolling back a CA whose creation failed later. Secret keys
/// with the same id are left alone. Returns how many objects were
/// destroyed (0 when there were none).
pub fn destroy_key_pair(session: &Session, module: &str, id: &[u8]) -> Result<usize, HsmError> {
    let mut destroyed = 0;
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        let found =
            session.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())]).map_err(err(module))?;
        for handle in found {
            session.destroy_object(handle).map_err(err(module))?;
            destroyed += 1;
        }
    }
    Ok(destroyed)
}

/// Session objects that must not outlive one operation: destroyed by
/// [`SessionObjects::destroy_all`] on success, and on drop (best effort)
/// on every error path.
pub(crate) struct SessionObjects<'s> {
    session: &'s Session,
    module: &'s str,
    handles: Vec<ObjectHandle>,
}

impl<'s> SessionObjects<'s> {
    pub(crate) fn new(session: &'s Session, module: &'s str) -> Self {
        SessionObjects { session, module, handles: Vec::new() }
    }

    /// Records an object to destroy; returns it.
    pub(crate) fn keep(&mut self, handle: ObjectHandle) -> ObjectHandle {
        self.handles.push(handle);
        handle
    }

    /// Destroys every object, reporting the first failure (after trying
    /// them all).
    pub(crate) fn destroy_all(mut self) -> Result<(), HsmError> {
        let mut first = None;
        for handle in std::mem::take(&mut self.handles).into_iter().rev() {
            if let Err(e) = self.session.destroy_object(handle) {
                first.get_or_insert(HsmError::from_cryptoki(self.module, e));
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for SessionObjects<'_> {
    fn drop(&mut self) {
        for handle in std::mem::take(&mut self.handles).into_iter().rev() {
            if let Err(e) = self.session.destroy_object(handle) {
                // why: the operation already failed; its error is what the
                // caller needs. A session object left behind dies with the
                // session (which a dead-session error replaces anyway).
                tracing::warn!(module = self.module, error = %e, "could not destroy a session object");
            }
        }
    }
}

/// The reader key in the form the module takes, checked before any object
/// is made.
enum Recipient<'a> {
    Rsa { modulus: &'a [u8], exponent: &'a [u8] },
    Ec { point: &'a [u8], curve: &'static [u8] },
}

fn recipient<'a>(caps: &Capabilities, key: &'a RecipientKey) -> Result<Recipient<'a>, HsmError> {
    let bad = |reason: String| HsmError::Wrapper { module: caps.module.clone(), reason };
    match family(&caps.module, key.key_type)? {
        Family::Rsa(bits) => {
            caps.require_wrap(WRAPPED_RSA, "CKM_RSA_PKCS_OAEP", "AES")?;
            let (modulus, exponent) = der::parse_rsa_public_key(&key.raw)
                .ok_or_else(|| bad("the reader's RSA key is not a DER PKCS#1 RSAPublicKey".into()))?;
            if modulus.len() as u64 * 8 != bits || modulus.first().is_none_or(|b| b & 0x80 == 0) {
                return Err(bad(format!("the reader's RSA modulus is not {bits} bits long")));
            }
            Ok(Recipient::Rsa { modulus, exponent })
        }
        Family::Ec(curve) => {
            let (capability, len) =
                if curve == der::OID_P256 { (CAP_ECDH_P256_SHA256_KDF, 65) } else { (CAP_ECDH_P384_SHA256_KDF, 97) };
            caps.require(capability)?;
            if key.raw.len() != len || key.raw.first() != Some(&0x04) {
                return Err(bad(format!("the reader's {} key is not an uncompressed point", key.key_type)));
            }
            Ok(Recipient::Ec { point: &key.raw, curve })
        }
        Family::Sm2 => Err(unavailable(
            caps,
            "CKM_ECDH1_DERIVE on SM2",
            "CMS key agreement with an SM2 reader key (RFC 5753 covers NIST curves only)".into(),
        )),
    }
}

/// Generates an encryption key pair in the module and returns its private
/// key enveloped for `recipient` (the reader's signing key) and wrapped
/// under `escrow_key` (a long-term AES key with `CKA_WRAP`).
///
/// All inside the module: the pair and an AES-256 CEK are session objects;
/// the private key leaves as PKCS#8 under the CEK (`CKM_AES_CBC_PAD`, IV
/// from `C_GenerateRandom`) and under the escrow key
/// (`CKM_AES_KEY_WRAP_PAD`); the CEK leaves under the reader's key (RSA:
/// the reader's public key imported as a session object,
/// `CKM_RSA_PKCS_OAEP` with SHA-1; EC: an ephemeral pair on the reader's
/// curve, `CKM_ECDH1_DERIVE` with `CKD_SHA256_KDF` over `shared_info` (the
/// DER `ECC-CMS-SharedInfo` of RFC 5753) into an AES-256 KEK, then
/// `CKM_AES_KEY_WRAP`). Every session object is destroyed before return.
///
/// Fails with [`HsmError::MechanismUnavailable`], before creating anything,
/// when a probe at start showed the module cannot do one of the steps.
pub fn envelope_new_key_pair(
    session: &Session,
    caps: &Capabilities,
    module: &str,
    enc_type: KeyType,
    recipient_key: &RecipientKey,
    shared_info: &[u8],
    escrow_key: ObjectHandle,
) -> Result<Enveloped, HsmError> {
    // Preconditions first: nothing is created when the module cannot finish.
    let generate = key_pair_mechanism(caps, enc_type, false)?;
    let wrapped = wrapped_key_label(enc_type);
    caps.require_wrap("AES", "CKM_AES_CBC_PAD", wrapped)?;
    caps.require_wrap("AES", ESCROW_MECHANISM, wrapped)?;
    let reader = recipient(caps, recipient_key)?;

    let mut objects = SessionObjects::new(session, module);
    let fail = err(module);

    // The encryption key pair: extractable only so it can be wrapped.
    let mut public_template =
        vec![Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::Token(false), Attribute::Private(false)];
    public_template.extend(algorithm_attributes(family(module, enc_type)?));
    let private_template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Sign(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    let (enc_pub, enc_priv) =
        session.generate_key_pair(&generate, &public_template, &private_template).map_err(&fail)?;
    objects.keep(enc_pub);
    let enc_priv = objects.keep(enc_priv);
    let enc_public = read_public_key(session, module, enc_pub)?;

    // The content-encryption key.
    let cek = objects.keep(session.generate_key(&Mechanism::AesKeyGen, &aes256_template(true)).map_err(&fail)?);

    // encryptedContent: PKCS#8 under the CEK, AES-256-CBC, random IV.
    let mut content_iv = [0u8; 16];
    session.generate_random_slice(&mut content_iv).map_err(&fail)?;
    let encrypted_content = wrap_key(module, session, &Mechanism::AesCbcPad(content_iv), cek, enc_priv)?;

    // The recipient's copy of the CEK.
    let recipient = match reader {
        Recipient::Rsa { modulus, exponent } => {
            let reader_key = objects.keep(
                session
                    .create_object(&[
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                        Attribute::KeyType(CkKeyType::RSA),
                        Attribute::Token(false),
                        Attribute::Private(false),
                        Attribute::Modulus(modulus.to_vec()),
                        Attribute::PublicExponent(exponent.to_vec()),
                        Attribute::Wrap(true),
                        Attribute::Encrypt(false),
                        Attribute::Verify(false),
                    ])
                    .map_err(&fail)?,
            );
            let encrypted_key = wrap_key(module, session, &oaep_sha1(), reader_key, cek)?;
            RecipientParts::RsaOaepSha1 { encrypted_key }
        }
        Recipient::Ec { point, curve } => {
            let (eph_pub, eph_priv) = session
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &[
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                        Attribute::Token(false),
                        Attribute::EcParams(curve.to_vec()),
                    ],
                    &[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::Token(false),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Derive(true),
                        Attribute::Sign(false),
                    ],
                )
                .map_err(&fail)?;
            objects.keep(eph_pub);
            let eph_priv = objects.keep(eph_priv);
            let originator_point = read_public_key(session, module, eph_pub)?.raw;
            let params = Ecdh1DeriveParams::new(EcKdf::sha256(shared_info), point);
            let kek = objects.keep(
                session
                    .derive_key(&Mechanism::Ecdh1Derive(params), eph_priv, &aes256_template(false))
                    .map_err(&fail)?,
            );
            let encrypted_key = wrap_key(module, session, &Mechanism::AesKeyWrap, kek, cek)?;
            RecipientParts::EcdhSha256Kdf { originator_point, encrypted_key }
        }
    };

    // The escrow copy.
    let escrow_wrapped = wrap_key(module, session, &Mechanism::AesKeyWrapPad, escrow_key, enc_priv)?;

    objects.destroy_all()?;
    Ok(Enveloped {
        enc_public,
        content_iv,
        encrypted_content,
        recipient,
        escrow_wrapped,
        escrow_mechanism: ESCROW_MECHANISM,
    })
}

/// RSAES-OAEP with SHA-1, MGF1-SHA-1 and an empty label: RFC 3560's
/// default `RSAES-OAEP-params`, and the only OAEP SoftHSM 2.6 offers.
pub(crate) fn oaep_sha1() -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, PkcsOaepSource::empty()))
}

/// An AES-256 session key that wraps: sensitive; `extractable` (and able
/// to encrypt) for the CEK, which is itself wrapped for the reader; neither
/// for a KEK, which only wraps the CEK.
pub(crate) fn aes256_template(extractable: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(CkKeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Wrap(true),
        Attribute::Encrypt(extractable),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]
}
