//! PKCS#11 operations on secret keys: generate, unwrap, adopt, KCV, derive
//! (encrypt-data), wrap, destroy. Each takes a session from [`super::Hsm::run`].
//!
//! Long-term keys are token objects with `CKA_SENSITIVE` on and
//! `CKA_EXTRACTABLE` off, and only the usage flags their purpose needs.
//! `CKA_ENCRYPT` is on for every key because PKCS#11 has no KCV function
//! and a module's `CKA_CHECK_VALUE` is not trusted (DESIGN.md §2); the
//! service only ever encrypts the fixed KCV blocks with them.
//!
//! Derived card keys are session objects: sensitive, extractable only so
//! they can be wrapped, destroyed right after use.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys as sys;

use super::raw::mechanism_type;
use super::{Capabilities, HsmError};
use crate::keys::{Algorithm, Kcv, KcvMethod, Purpose};

/// How a key is wrapped for transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum WrapFormat {
    /// RFC 3394 AES key wrap.
    AesKeyWrap,
    /// RFC 5649 AES key wrap with padding.
    AesKeyWrapPad,
    /// 3DES-ECB of the key bytes.
    Des3Ecb,
    /// SM4-ECB of the key bytes.
    Sm4Ecb,
}

impl WrapFormat {
    /// The default format for a transport key of `algorithm`.
    pub fn default_for(algorithm: Algorithm) -> WrapFormat {
        match algorithm {
            Algorithm::Des2 => WrapFormat::Des3Ecb,
            Algorithm::Aes128 | Algorithm::Aes192 | Algorithm::Aes256 => WrapFormat::AesKeyWrap,
            Algorithm::Sm4 => WrapFormat::Sm4Ecb,
        }
    }

    /// Whether a transport key of `algorithm` can use this format.
    pub fn fits(self, algorithm: Algorithm) -> bool {
        matches!(
            (self, algorithm),
            (WrapFormat::Des3Ecb, Algorithm::Des2)
                | (WrapFormat::Sm4Ecb, Algorithm::Sm4)
                | (
                    WrapFormat::AesKeyWrap | WrapFormat::AesKeyWrapPad,
                    Algorithm::Aes128 | Algorithm::Aes192 | Algorithm::Aes256
                )
        )
    }

    /// The mechanism name used in the capability table's wrap probes.
    pub fn probe_name(self) -> &'static str {
        match self {
            WrapFormat::AesKeyWrap => "CKM_AES_KEY_WRAP",
            WrapFormat::AesKeyWrapPad => "CKM_AES_KEY_WRAP_PAD",
            WrapFormat::Des3Ecb => "CKM_DES3_ECB",
            WrapFormat::Sm4Ecb => "vendor:sm4_ecb",
        }
    }

    /// Length of the wrapped form of a `key_len`-byte key.
    pub fn wrapped_len(self, key_len: usize) -> usize {
        match self {
            WrapFormat::AesKeyWrap => key_len + 8,
            WrapFormat::AesKeyWrapPad => key_len.div_ceil(8) * 8 + 8,
            WrapFormat::Des3Ecb | WrapFormat::Sm4Ecb => key_len,
        }
    }
}

fn err(module: &str) -> impl Fn(cryptoki::error::Error) -> HsmError + '_ {
    move |e| HsmError::from_cryptoki(module, e)
}

fn vendor(number: u64) -> Mechanism<'static> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(mechanism_type(number), None))
}

/// The PKCS#11 key type of `algorithm` on this module (SM4's is a vendor
/// number from configuration).
pub fn key_type(caps: &Capabilities, algorithm: Algorithm) -> Result<KeyType, HsmError> {
    match algorithm {
        Algorithm::Des2 => Ok(KeyType::DES2),
        Algorithm::Aes128 | Algorithm::Aes192 | Algorithm::Aes256 => Ok(KeyType::AES),
        Algorithm::Sm4 => {
            caps.require("sm4_ecb")?;
            let number = caps.sm4_key_type.ok_or_else(|| HsmError::MechanismUnavailable {
                module: caps.module.clone(),
                mechanism: "vendor key type sm4 (hsm.vendor.sm4_key_type)".into(),
                capability: "SM4 keys".into(),
            })?;
            KeyType::new_vendor_defined(number).map_err(err(&caps.module))
        }
    }
}

fn usage(purpose: Purpose) -> [Attribute; 6] {
    let (derive, wrap, unwrap, sign) = match purpose {
        Purpose::DerivationMaster => (true, false, false, false),
        Purpose::TransportExport => (false, true, false, false),
        Purpose::TransportImport => (false, false, true, false),
        Purpose::Mac => (false, false, false, true),
        Purpose::Escrow => (false, true, true, false),
    };
    [
        Attribute::Encrypt(true),
        Attribute::Decrypt(false),
        Attribute::Derive(derive),
        Attribute::Wrap(wrap),
        Attribute::Unwrap(unwrap),
        Attribute::Sign(sign),
    ]
}

/// Whether a long-term key may ever leave the token, wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// `CKA_EXTRACTABLE` false: the service's own keys.
    Never,
    /// `CKA_EXTRACTABLE` and `CKA_WRAP_WITH_TRUSTED` true: the key can be
    /// wrapped only under a key whose `CKA_TRUSTED` is true, which only the
    /// security officer can set. A ceremony makes master keys so, to back
    /// them up under a backup key split among custodians.
    TrustedWrapOnly,
}

/// The template of a long-term token key: private, sensitive, the usage
/// flags of `purpose`, `label` and `id`; `with_len` adds `CKA_VALUE_LEN`
/// (for generating AES keys).
pub fn long_term_template(
    caps: &Capabilities,
    algorithm: Algorithm,
    purpose: Purpose,
    label: &str,
    id: &[u8],
    with_len: bool,
    export: Export,
) -> Result<Vec<Attribute>, HsmError> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type(caps, algorithm)?),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    match export {
        Export::Never => t.push(Attribute::Extractable(false)),
        Export::TrustedWrapOnly => t.extend([Attribute::Extractable(true), Attribute::WrapWithTrusted(true)]),
    }
    t.extend(usage(purpose));
    if with_len && matches!(algorithm, Algorithm::Aes128 | Algorithm::Aes192 | Algorithm::Aes256) {
        t.push(Attribute::ValueLen((algorithm.key_len() as u64).into()));
    }
    Ok(t)
}

/// Generates a long-term key in the token.
pub fn generate(
    session: &Session,
    caps: &Capabilities,
    algorithm: Algorithm,
    purpose: Purpose,
    label: &str,
    id: &[u8],
    export: Export,
) -> Result<ObjectHandle, HsmError> {
    let template = long_term_template(caps, algorithm, purpose, label, id, true, export)?;
    let mechanism = match algorithm {
        Algorithm::Des2 => {
            caps.require("des2_key_gen")?;
            Mechanism::Des2KeyGen
        }
        Algorithm::Aes128 | Algorithm::Aes192 | Algorithm::Aes256 => {
            caps.require("aes_key_gen")?;
            Mechanism::AesKeyGen
        }
        Algorithm::Sm4 => vendor(caps.require("sm4_key_gen")?),
    };
    session.generate_key(&mechanism, &template).map_err(err(&caps.module))
}

/// The mechanism of a wrap format.
pub fn wrap_mechanism(caps: &Capabilities, format: WrapFormat) -> Result<Mechanism<'static>, HsmError> {
    Ok(match format {
        WrapFormat::AesKeyWrap => Mechanism::AesKeyWrap,
        WrapFormat::AesKeyWrapPad => Mechanism::AesKeyWrapPad,
        WrapFormat::Des3Ecb => Mechanism::Des3Ecb,
        WrapFormat::Sm4Ecb => vendor(caps.require("sm4_ecb")?),
    })
}

/// Unwraps a delivered key into a long-term token object.
#[allow(clippy::too_many_arguments)]
pub fn unwrap(
    session: &Session,
    caps: &Capabilities,
    transport: ObjectHandle,
    format: WrapFormat,
    wrapped: &[u8],
    algorithm: Algorithm,
    purpose: Purpose,
    label: &str,
    id: &[u8],
    export: Export,
) -> Result<ObjectHandle, HsmError> {
    let template = long_term_template(caps, algorithm, purpose, label, id, false, export)?;
    let mechanism = wrap_mechanism(caps, format)?;
    session.unwrap_key(&mechanism, transport, wrapped, &template).map_err(err(&caps.module))
}

/// Encrypts the KCV block of `method` with `key`.
pub fn kcv(session: &Session, caps: &Capabilities, key: ObjectHandle, method: KcvMethod) -> Result<Kcv, HsmError> {
    let mechanism = match method {
        KcvMethod::Des3Zero => Mechanism::Des3Ecb,
        KcvMethod::AesZero | KcvMethod::AesGp => Mechanism::AesEcb,
        KcvMethod::Sm4Zero => vendor(caps.require("sm4_ecb")?),
    };
    let out = session.encrypt(&mechanism, key, method.input()).map_err(err(&caps.module))?;
    if out.len() < 3 {
        return Err(HsmError::Wrapper {
            module: caps.module.clone(),
            reason: "KCV encryption returned too little".into(),
        });
    }
    Ok(Kcv::from_ciphertext(method, &out))
}

fn find(session: &Session, module: &str, attr: Attribute) -> Result<Option<ObjectHandle>, HsmError> {
    let found = session.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), attr]).map_err(err(module))?;
    Ok(found.first().copied())
}

/// Finds a secret key by CKA_ID.
pub fn find_by_id(session: &Session, module: &str, id: &[u8]) -> Result<Option<ObjectHandle>, HsmError> {
    find(session, module, Attribute::Id(id.to_vec()))
}

/// Finds a secret key by CKA_LABEL.
pub fn find_by_label(session: &Session, module: &str, label: &str) -> Result<Option<ObjectHandle>, HsmError> {
    find(session, module, Attribute::Label(label.as_bytes().to_vec()))
}

/// Why an existing object cannot be adopted into the catalogue.
pub fn adoption_problems(
    session: &Session,
    caps: &Capabilities,
    handle: ObjectHandle,
    algorithm: Algorithm,
) -> Result<Vec<String>, HsmError> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Token,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::WrapWithTrusted,
                AttributeType::KeyType,
                AttributeType::ValueLen,
            ],
        )
        .map_err(err(&caps.module))?;
    let expected = key_type(caps, algorithm)?;
    let mut problems = Vec::new();
    // why: a ceremony's master keys are extractable only under a trusted
    // (security-officer) key, for their backup; any other extractable key
    // could be wrapped out by whoever holds the user PIN.
    let trusted_only = attrs.iter().any(|a| matches!(a, Attribute::WrapWithTrusted(true)));
    for a in attrs {
        match a {
            Attribute::Token(false) => problems.push("it is a session object, not a token object".to_owned()),
            Attribute::Sensitive(false) => problems.push("CKA_SENSITIVE is false".to_owned()),
            Attribute::Extractable(true) if !trusted_only => {
                problems.push("CKA_EXTRACTABLE is true and CKA_WRAP_WITH_TRUSTED is not".to_owned())
            }
            Attribute::KeyType(t) if t != expected => problems.push(format!("key type is {t}, not {algorithm}")),
            Attribute::ValueLen(len)
                if u64::from(len) != algorithm.key_len() as u64 && algorithm != Algorithm::Des2 =>
            {
                problems.push(format!("key length is {} bytes, not {}", u64::from(len), algorithm.key_len()))
            }
            _ => {}
        }
    }
    Ok(problems)
}

/// Sets CKA_ID and CKA_LABEL of an adopted object to the catalogue's.
pub fn relabel(session: &Session, module: &str, handle: ObjectHandle, label: &str, id: &[u8]) -> Result<(), HsmError> {
    session
        .update_attributes(handle, &[Attribute::Label(label.as_bytes().to_vec()), Attribute::Id(id.to_vec())])
        .map_err(err(module))
}

/// Destroys an object.
pub fn destroy(session: &Session, module: &str, handle: ObjectHandle) -> Result<(), HsmError> {
    session.destroy_object(handle).map_err(err(module))
}

/// Derives a session key as the encryption of `data` under `base` in ECB
/// (`CKM_DES3_ECB_ENCRYPT_DATA`, `CKM_AES_ECB_ENCRYPT_DATA` or the SM4
/// vendor equivalent). `intermediate` keys may derive further; final ones
/// may only encrypt (for their KCV) and be wrapped.
pub fn derive_ecb(
    session: &Session,
    caps: &Capabilities,
    base: ObjectHandle,
    base_algorithm: Algorithm,
    data: &[u8],
    out: Algorithm,
    intermediate: bool,
) -> Result<ObjectHandle, HsmError> {
    let capability = match base_algorithm {
        Algorithm::Des2 => "des3_ecb_encrypt_data",
        Algorithm::Aes128 | Algorithm::Aes192 | Algorithm::Aes256 => "aes_ecb_encrypt_data",
        Algorithm::Sm4 => "sm4_ecb_encrypt_data",
    };
    let number = caps.require(capability)?;
    let params =
        sys::CK_KEY_DERIVATION_STRING_DATA { pData: data.as_ptr() as *mut u8, ulLen: data.len() as sys::CK_ULONG };
    let mechanism = Mechanism::VendorDefined(VendorDefinedMechanism::new(mechanism_type(number), Some(&params)));
    let template = session_key_template(caps, out, intermediate)?;
    session.derive_key(&mechanism, base, &template).map_err(err(&caps.module))
}

/// The template of a derived session key: sensitive, extractable only to
/// be wrapped, able to encrypt (its KCV) and, if `intermediate`, to derive.
pub fn session_key_template(
    caps: &Capabilities,
    out: Algorithm,
    intermediate: bool,
) -> Result<Vec<Attribute>, HsmError> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type(caps, out)?),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(false),
        Attribute::Derive(intermediate),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
    ];
    if matches!(out, Algorithm::Aes128 | Algorithm::Aes192 | Algorithm::Aes256 | Algorithm::Sm4) {
        template.push(Attribute::ValueLen((out.key_len() as u64).into()));
    }
    Ok(template)
}

/// Wraps `key` (`key_len` bytes) under `wrapping` in `format`, returning
/// exactly the bytes the format defines.
pub fn wrap(
    session: &Session,
    caps: &Capabilities,
    wrapping: ObjectHandle,
    format: WrapFormat,
    key: ObjectHandle,
    key_len: usize,
) -> Result<Vec<u8>, HsmError> {
    let mechanism = wrap_mechanism(caps, format)?;
    let mut out = session.wrap_key(&mechanism, wrapping, key).map_err(err(&caps.module))?;
    // why: cryptoki 0.12 returns the buffer sized by the length query, which
    // a module may overstate; the format fixes the true length.
    let expected = format.wrapped_len(key_len);
    if out.len() < expected {
        return Err(HsmError::Wrapper {
            module: caps.module.clone(),
            reason: format!("C_WrapKey returned {} bytes, {format:?} needs {expected}", out.len()),
        });
    }
    out.truncate(expected);
    Ok(out)
}
