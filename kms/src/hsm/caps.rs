//! The capability table: what the module can do, asked of the module itself.
//!
//! why: mechanism flags are not enough. SoftHSM 2.6 lists `CKM_DES3_ECB`
//! but `C_WrapKey` with it returns `CKR_MECHANISM_INVALID` (DESIGN.md §5),
//! so wrap capabilities are probed by wrapping throw-away session keys.
//! The operations of the CA (key-pair generation, signing, the envelope's
//! wraps and ECDH with a KDF) are probed the same way: SoftHSM 2.6 lists
//! `CKM_ECDH1_DERIVE` with the derive flag, yet accepts only `CKD_NULL`.

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismInfo};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki_sys as sys;

use super::pki::{self, SessionObjects};
use super::raw::mechanism_type;
use super::{HsmError, der};
use crate::config::VendorMechanisms;

/// What a capability needs the mechanism to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Generate,
    GenerateKeyPair,
    Encrypt,
    Sign,
    Derive,
    Wrap,
    Digest,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityRow {
    /// Stable name, used in configuration and errors.
    pub name: &'static str,
    /// Mechanism number (0 with `configured == false` for vendor rows).
    pub mechanism: u64,
    /// `CKM_...` name, or `vendor:<name>`.
    pub mechanism_name: String,
    /// Listed by the module with the flags this capability needs.
    pub available: bool,
    /// Flags the module reported.
    pub flags: Vec<&'static str>,
    /// Reported minimum key size.
    pub min_key_size: u64,
    /// Reported maximum key size.
    pub max_key_size: u64,
    /// Why not available.
    pub detail: String,
}

/// One probed wrap combination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapRow {
    /// Wrapping key type.
    pub wrapping_key_type: &'static str,
    /// Mechanism name.
    pub mechanism: String,
    /// Wrapped key type.
    pub wrapped_key_type: &'static str,
    /// `C_WrapKey` succeeded.
    pub supported: bool,
    /// The `CKR_` value when it did not (or why it was not tried).
    pub error: String,
}

/// The whole table.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// Module path.
    pub module: String,
    /// Mechanism rows.
    pub rows: Vec<CapabilityRow>,
    /// Wrap probes.
    pub wraps: Vec<WrapRow>,
    /// Vendor key-type number of SM4 keys, if configured.
    pub sm4_key_type: Option<u64>,
}

struct Spec {
    name: &'static str,
    mechanism: Option<u64>,
    mechanism_name: &'static str,
    needs: Needs,
}

const fn std(name: &'static str, mechanism: u64, mechanism_name: &'static str, needs: Needs) -> Spec {
    Spec { name, mechanism: Some(mechanism), mechanism_name, needs }
}

fn specs(v: &VendorMechanisms) -> Vec<Spec> {
    use Needs::*;
    let vendor = |name: &'static str, mechanism: Option<u64>, needs: Needs| Spec {
        name,
        mechanism,
        mechanism_name: name,
        needs,
    };
    vec![
        std("des2_key_gen", sys::CKM_DES2_KEY_GEN, "CKM_DES2_KEY_GEN", Generate),
        std("des3_key_gen", sys::CKM_DES3_KEY_GEN, "CKM_DES3_KEY_GEN", Generate),
        std("des3_ecb", sys::CKM_DES3_ECB, "CKM_DES3_ECB", Encrypt),
        std("des3_cbc", sys::CKM_DES3_CBC, "CKM_DES3_CBC", Encrypt),
        std("des3_ecb_encrypt_data", sys::CKM_DES3_ECB_ENCRYPT_DATA, "CKM_DES3_ECB_ENCRYPT_DATA", Derive),
        std("des3_cbc_encrypt_data", sys::CKM_DES3_CBC_ENCRYPT_DATA, "CKM_DES3_CBC_ENCRYPT_DATA", Derive),
        std("des3_cmac", sys::CKM_DES3_CMAC, "CKM_DES3_CMAC", Sign),
        std("aes_key_gen", sys::CKM_AES_KEY_GEN, "CKM_AES_KEY_GEN", Generate),
        std("aes_ecb", sys::CKM_AES_ECB, "CKM_AES_ECB", Encrypt),
        std("aes_cbc", sys::CKM_AES_CBC, "CKM_AES_CBC", Encrypt),
        std("aes_cbc_pad", sys::CKM_AES_CBC_PAD, "CKM_AES_CBC_PAD", Encrypt),
        std("aes_gcm", sys::CKM_AES_GCM, "CKM_AES_GCM", Encrypt),
        std("aes_cmac", sys::CKM_AES_CMAC, "CKM_AES_CMAC", Sign),
        std("aes_ecb_encrypt_data", sys::CKM_AES_ECB_ENCRYPT_DATA, "CKM_AES_ECB_ENCRYPT_DATA", Derive),
        std("aes_cbc_encrypt_data", sys::CKM_AES_CBC_ENCRYPT_DATA, "CKM_AES_CBC_ENCRYPT_DATA", Derive),
        std("aes_key_wrap", sys::CKM_AES_KEY_WRAP, "CKM_AES_KEY_WRAP", Wrap),
        std("aes_key_wrap_pad", sys::CKM_AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD", Wrap),
        std("sp800_108_counter_kdf", sys::CKM_SP800_108_COUNTER_KDF, "CKM_SP800_108_COUNTER_KDF", Derive),
        std("xor_base_and_data", sys::CKM_XOR_BASE_AND_DATA, "CKM_XOR_BASE_AND_DATA", Derive),
        std("ec_key_pair_gen", sys::CKM_EC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN", GenerateKeyPair),
        std("ecdsa", sys::CKM_ECDSA, "CKM_ECDSA", Sign),
        std("ecdh1_derive", sys::CKM_ECDH1_DERIVE, "CKM_ECDH1_DERIVE", Derive),
        std("rsa_key_pair_gen", sys::CKM_RSA_PKCS_KEY_PAIR_GEN, "CKM_RSA_PKCS_KEY_PAIR_GEN", GenerateKeyPair),
        std("rsa_pkcs_pss", sys::CKM_RSA_PKCS_PSS, "CKM_RSA_PKCS_PSS", Sign),
        std("sha256_rsa_pkcs", sys::CKM_SHA256_RSA_PKCS, "CKM_SHA256_RSA_PKCS", Sign),
        std("rsa_pkcs_oaep", sys::CKM_RSA_PKCS_OAEP, "CKM_RSA_PKCS_OAEP", Encrypt),
        std("sha256", sys::CKM_SHA256, "CKM_SHA256", Digest),
        vendor("sm4_key_gen", v.sm4_key_gen, Generate),
        vendor("sm4_ecb", v.sm4_ecb, Encrypt),
        vendor("sm4_cbc", v.sm4_cbc, Encrypt),
        vendor("sm4_mac", v.sm4_mac, Sign),
        vendor("sm4_ecb_encrypt_data", v.sm4_ecb_encrypt_data, Derive),
        vendor("sm3", v.sm3, Digest),
        vendor("sm2_key_pair_gen", v.sm2_key_pair_gen, GenerateKeyPair),
        vendor("sm2_sign", v.sm2_sign, Sign),
        vendor("sm2_encrypt", v.sm2_encrypt, Encrypt),
        vendor("key_xor", v.key_xor, Derive),
        vendor("retail_mac", v.retail_mac, Sign),
        vendor("an10922_aes128", v.an10922_aes128, Derive),
        vendor("an10922_des2", v.an10922_des2, Derive),
    ]
}

fn flags_of(info: &MechanismInfo) -> Vec<&'static str> {
    let mut f = Vec::new();
    let pairs = [
        (info.encrypt(), "encrypt"),
        (info.decrypt(), "decrypt"),
        (info.digest(), "digest"),
        (info.sign(), "sign"),
        (info.verify(), "verify"),
        (info.generate(), "generate"),
        (info.generate_key_pair(), "generate_key_pair"),
        (info.wrap(), "wrap"),
        (info.unwrap(), "unwrap"),
        (info.derive(), "derive"),
    ];
    for (on, name) in pairs {
        if on {
            f.push(name);
        }
    }
    f
}

fn satisfies(info: &MechanismInfo, needs: Needs) -> bool {
    match needs {
        Needs::Generate => info.generate(),
        Needs::GenerateKeyPair => info.generate_key_pair(),
        Needs::Encrypt => info.encrypt(),
        Needs::Sign => info.sign(),
        Needs::Derive => info.derive(),
        Needs::Wrap => info.wrap(),
        Needs::Digest => info.digest(),
    }
}

impl Capabilities {
    /// Probes `slot` of `ctx` using `session` (logged in).
    pub fn probe(ctx: &Pkcs11, slot: Slot, session: &Session, module: &str, vendor: &VendorMechanisms) -> Capabilities {
        let mut rows = Vec::new();
        for spec in specs(vendor) {
            let Some(number) = spec.mechanism else {
                rows.push(CapabilityRow {
                    name: spec.name,
                    mechanism: 0,
                    mechanism_name: format!("vendor:{}", spec.mechanism_name),
                    available: false,
                    flags: vec![],
                    min_key_size: 0,
                    max_key_size: 0,
                    detail: format!("no vendor number configured (hsm.vendor.{})", spec.name),
                });
                continue;
            };
            let mechanism_name = if number >= sys::CKM_VENDOR_DEFINED {
                format!("vendor:{} (0x{number:08X})", spec.mechanism_name)
            } else {
                spec.mechanism_name.to_owned()
            };
            let row = match ctx.get_mechanism_info(slot, mechanism_type(number)) {
                Ok(info) => {
                    let available = satisfies(&info, spec.needs);
                    CapabilityRow {
                        name: spec.name,
                        mechanism: number,
                        mechanism_name,
                        available,
                        flags: flags_of(&info),
                        min_key_size: info.min_key_size() as u64,
                        max_key_size: info.max_key_size() as u64,
                        detail: if available {
                            String::new()
                        } else {
                            format!("listed without the {:?} flag", spec.needs)
                        },
                    }
                }
                Err(e) => CapabilityRow {
                    name: spec.name,
                    mechanism: number,
                    mechanism_name,
                    available: false,
                    flags: vec![],
                    min_key_size: 0,
                    max_key_size: 0,
                    detail: match HsmError::from_cryptoki(module, e).pkcs11_failure() {
                        Some(f) => f.rv_name(),
                        None => "not answered".into(),
                    },
                },
            };
            rows.push(row);
        }
        let mut caps =
            Capabilities { module: module.to_owned(), rows, wraps: Vec::new(), sm4_key_type: vendor.sm4_key_type };
        let (operations, key_wraps) = probe_pki(session, module, &caps);
        caps.rows.extend(operations);
        caps.wraps = probe_wraps(session, module, vendor, &caps);
        caps.wraps.extend(key_wraps);
        caps
    }

    /// The row for `name`, if the table has one.
    pub fn row(&self, name: &str) -> Option<&CapabilityRow> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// The mechanism number of capability `name`, or the error that names
    /// the module and mechanism (invariant 2).
    pub fn require(&self, name: &str) -> Result<u64, HsmError> {
        match self.row(name) {
            Some(r) if r.available => Ok(r.mechanism),
            Some(r) => Err(HsmError::MechanismUnavailable {
                module: self.module.clone(),
                mechanism: r.mechanism_name.clone(),
                capability: format!("{} ({})", r.name, r.detail),
            }),
            None => Err(HsmError::MechanismUnavailable {
                module: self.module.clone(),
                mechanism: name.to_owned(),
                capability: name.to_owned(),
            }),
        }
    }

    /// Whether wrapping `wrapped` under `wrapping` with `mechanism` was
    /// shown to work; otherwise the error naming module and mechanism.
    pub fn require_wrap(&self, wrapping: &str, mechanism: &str, wrapped: &str) -> Result<(), HsmError> {
        match self
            .wraps
            .iter()
            .find(|w| w.wrapping_key_type == wrapping && w.mechanism == mechanism && w.wrapped_key_type == wrapped)
        {
            Some(w) if w.supported => Ok(()),
            Some(w) => Err(HsmError::MechanismUnavailable {
                module: self.module.clone(),
                mechanism: format!("{mechanism} wrap"),
                capability: format!("wrapping a {wrapped} key under a {wrapping} key ({})", w.error),
            }),
            None => Err(HsmError::MechanismUnavailable {
                module: self.module.clone(),
                mechanism: format!("{mechanism} wrap"),
                capability: format!("wrapping a {wrapped} key under a {wrapping} key (not probed)"),
            }),
        }
    }
}

#[derive(Clone, Copy)]
enum ProbeKey {
    Des2,
    Aes128,
    Sm4,
}

impl ProbeKey {
    fn label(self) -> &'static str {
        match self {
            ProbeKey::Des2 => "DES2",
            ProbeKey::Aes128 => "AES",
            ProbeKey::Sm4 => "SM4",
        }
    }
}

fn generate(
    session: &Session,
    kind: ProbeKey,
    wrapping: bool,
    vendor: &VendorMechanisms,
) -> Result<ObjectHandle, String> {
    let mut template = vec![
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(!wrapping),
        Attribute::Wrap(wrapping),
        Attribute::Encrypt(true),
        Attribute::Class(ObjectClass::SECRET_KEY),
    ];
    let err = |e: cryptoki::error::Error| match e {
        cryptoki::error::Error::Pkcs11(rv, _) => super::rv_name(rv),
        other => other.to_string(),
    };
    match kind {
        ProbeKey::Des2 => {
            template.push(Attribute::KeyType(KeyType::DES2));
            session.generate_key(&Mechanism::Des2KeyGen, &template).map_err(err)
        }
        ProbeKey::Aes128 => {
            template.push(Attribute::KeyType(KeyType::AES));
            template.push(Attribute::ValueLen(16.into()));
            session.generate_key(&Mechanism::AesKeyGen, &template).map_err(err)
        }
        ProbeKey::Sm4 => {
            let (Some(gen_mech), Some(key_type)) = (vendor.sm4_key_gen, vendor.sm4_key_type) else {
                return Err("SM4 not configured".into());
            };
            let key_type = KeyType::new_vendor_defined(key_type).map_err(err)?;
            template.push(Attribute::KeyType(key_type));
            let mech = Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(mechanism_type(gen_mech), None));
            session.generate_key(&mech, &template).map_err(err)
        }
    }
}

fn probe_wraps(session: &Session, module: &str, vendor: &VendorMechanisms, caps: &Capabilities) -> Vec<WrapRow> {
    let zero8 = [0u8; 8];
    let zero16 = [0u8; 16];
    let sm4_ready = caps.row("sm4_key_gen").is_some_and(|r| r.available) && vendor.sm4_key_type.is_some();
    let mut wrapped_kinds = vec![ProbeKey::Des2, ProbeKey::Aes128];
    if sm4_ready {
        wrapped_kinds.push(ProbeKey::Sm4);
    }
    let mut cases: Vec<(ProbeKey, String, Mechanism<'_>, ProbeKey)> = Vec::new();
    for wrapped in wrapped_kinds {
        cases.push((ProbeKey::Des2, "CKM_DES3_ECB".into(), Mechanism::Des3Ecb, wrapped));
        cases.push((ProbeKey::Des2, "CKM_DES3_CBC".into(), Mechanism::Des3Cbc(zero8), wrapped));
        cases.push((ProbeKey::Aes128, "CKM_AES_KEY_WRAP".into(), Mechanism::AesKeyWrap, wrapped));
        cases.push((ProbeKey::Aes128, "CKM_AES_KEY_WRAP_PAD".into(), Mechanism::AesKeyWrapPad, wrapped));
        cases.push((ProbeKey::Aes128, "CKM_AES_CBC_PAD".into(), Mechanism::AesCbcPad(zero16), wrapped));
        cases.push((ProbeKey::Aes128, "CKM_AES_ECB".into(), Mechanism::AesEcb, wrapped));
        if let (true, Some(ecb)) = (sm4_ready, vendor.sm4_ecb) {
            let mech = Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(mechanism_type(ecb), None));
            cases.push((ProbeKey::Sm4, "vendor:sm4_ecb".to_owned(), mech, wrapped));
        }
    }
    cases
        .into_iter()
        .map(|(wrapping, name, mech, wrapped)| {
            let result = (|| {
                let k = generate(session, wrapping, true, vendor)?;
                let t = match generate(session, wrapped, false, vendor) {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = session.destroy_object(k);
                        return Err(e);
                    }
                };
                let r = session.wrap_key(&mech, k, t);
                let _ = session.destroy_object(k);
                let _ = session.destroy_object(t);
                r.map(|_| ()).map_err(|e| match e {
                    cryptoki::error::Error::Pkcs11(rv, _) => super::rv_name(rv),
                    other => other.to_string(),
                })
            })();
            if let Err(e) = &result {
                tracing::debug!(module, wrapping = wrapping.label(), mechanism = %name, wrapped = wrapped.label(), error = %e, "wrap probe failed");
            }
            WrapRow {
                wrapping_key_type: wrapping.label(),
                mechanism: name,
                wrapped_key_type: wrapped.label(),
                supported: result.is_ok(),
                error: result.err().unwrap_or_default(),
            }
        })
        .collect()
}

/// Describes a failed cryptoki call as `C_DeriveKey returned CKR_...`, so
/// the table says which step of a multi-step probe failed.
fn describe(e: cryptoki::error::Error) -> String {
    match e {
        cryptoki::error::Error::Pkcs11(rv, function) => format!("C_{function:?} returned {}", super::rv_name(rv)),
        other => other.to_string(),
    }
}

/// A capability row whose availability is the outcome of a real operation
/// (`result`); flags and key sizes come from the mechanism-info row
/// `info_row`.
fn operation_row(
    caps: &Capabilities,
    name: &'static str,
    info_row: &str,
    mechanism_name: String,
    result: &Result<(), String>,
) -> CapabilityRow {
    let info = caps.row(info_row);
    CapabilityRow {
        name,
        mechanism: info.map_or(0, |r| r.mechanism),
        mechanism_name,
        available: result.is_ok(),
        flags: info.map(|r| r.flags.clone()).unwrap_or_default(),
        min_key_size: info.map_or(0, |r| r.min_key_size),
        max_key_size: info.map_or(0, |r| r.max_key_size),
        detail: match result {
            Ok(()) => String::new(),
            Err(e) => format!("probe failed: {e}"),
        },
    }
}

/// A throw-away key pair for the probes: private key able to sign and
/// derive, extractable so the wrap probes can wrap it.
fn probe_pair(
    session: &Session,
    objects: &mut SessionObjects<'_>,
    mechanism: &Mechanism<'_>,
    algorithm: Vec<Attribute>,
    derive: bool,
) -> Result<(ObjectHandle, ObjectHandle), String> {
    let mut public = vec![Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::Token(false), Attribute::Verify(true)];
    public.extend(algorithm);
    let private = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Sign(true),
        Attribute::Derive(derive),
    ];
    let (p, k) = session.generate_key_pair(mechanism, &public, &private).map_err(describe)?;
    objects.keep(p);
    objects.keep(k);
    Ok((p, k))
}

/// Probes what the CA and the dual-certificate envelope need, with session
/// objects destroyed at the end: key-pair generation and signing per key
/// type, ECDH with the X9.63 SHA-256 KDF into an AES-256 KEK followed by
/// AES key wrap under it, and (as wrap rows) private keys under AES-CBC-PAD
/// and AES key wrap with padding, and an AES key under RSA-OAEP (SHA-1).
fn probe_pki(session: &Session, module: &str, caps: &Capabilities) -> (Vec<CapabilityRow>, Vec<WrapRow>) {
    let mut objects = SessionObjects::new(session, module);
    let mut rows = Vec::new();
    let mut wrap_targets: Vec<(&'static str, Result<ObjectHandle, String>)> = Vec::new();
    // A sample RFC 5753 ECC-CMS-SharedInfo (id-aes256-wrap, 256 bits).
    let shared_info: &[u8] = &[
        0x30, 0x15, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2d, 0xa2, 0x06, 0x04,
        0x04, 0x00, 0x00, 0x01, 0x00,
    ];
    // An AES-256 key to be wrapped (the CEK of an envelope).
    let cek = session
        .generate_key(&Mechanism::AesKeyGen, &pki::aes256_template(true))
        .map_err(describe)
        .map(|k| objects.keep(k));

    let curves = [
        (
            der::OID_P256,
            "P-256",
            pki::CAP_GENERATE_EC_P256,
            pki::CAP_SIGN_ECDSA_P256,
            pki::CAP_ECDH_P256_SHA256_KDF,
            32,
        ),
        (
            der::OID_P384,
            "P-384",
            pki::CAP_GENERATE_EC_P384,
            pki::CAP_SIGN_ECDSA_P384,
            pki::CAP_ECDH_P384_SHA256_KDF,
            48,
        ),
    ];
    for (oid, curve, generate, sign, ecdh, hash_len) in curves {
        let pair =
            probe_pair(session, &mut objects, &Mechanism::EccKeyPairGen, vec![Attribute::EcParams(oid.to_vec())], true);
        let generated = pair.as_ref().map(|_| ()).map_err(Clone::clone);
        rows.push(operation_row(
            caps,
            generate,
            "ec_key_pair_gen",
            format!("CKM_EC_KEY_PAIR_GEN ({curve})"),
            &generated,
        ));
        let signed = pair.as_ref().map_err(|e| format!("no {curve} key pair: {e}")).and_then(|(_, k)| {
            session.sign(&Mechanism::Ecdsa, *k, &vec![0x5a; hash_len]).map(|_| ()).map_err(describe)
        });
        rows.push(operation_row(caps, sign, "ecdsa", format!("CKM_ECDSA ({curve})"), &signed));
        let agreed = pair.as_ref().map_err(|e| format!("no {curve} key pair: {e}")).and_then(|(p, k)| {
            let cek = cek.clone()?;
            let point = pki::read_public_key(session, module, *p).map_err(|e| e.to_string())?.raw;
            let params = Ecdh1DeriveParams::new(EcKdf::sha256(shared_info), &point);
            let kek = session
                .derive_key(&Mechanism::Ecdh1Derive(params), *k, &pki::aes256_template(false))
                .map_err(describe)?;
            objects.keep(kek);
            session.wrap_key(&Mechanism::AesKeyWrap, kek, cek).map(|_| ()).map_err(describe)
        });
        rows.push(operation_row(
            caps,
            ecdh,
            "ecdh1_derive",
            format!("CKM_ECDH1_DERIVE with CKD_SHA256_KDF ({curve}), then CKM_AES_KEY_WRAP"),
            &agreed,
        ));
        if oid == der::OID_P256 {
            wrap_targets.push((pki::WRAPPED_EC, pair.map(|(_, k)| k)));
        }
    }

    let rsa = probe_pair(
        session,
        &mut objects,
        &Mechanism::RsaPkcsKeyPairGen,
        vec![Attribute::ModulusBits(2048.into()), Attribute::PublicExponent(vec![1, 0, 1])],
        false,
    );
    let generated = rsa.as_ref().map(|_| ()).map_err(Clone::clone);
    rows.push(operation_row(
        caps,
        pki::CAP_GENERATE_RSA,
        "rsa_key_pair_gen",
        "CKM_RSA_PKCS_KEY_PAIR_GEN (2048 bits)".into(),
        &generated,
    ));
    let signed = rsa.as_ref().map_err(|e| format!("no RSA key pair: {e}")).and_then(|(_, k)| {
        session.sign(&Mechanism::Sha256RsaPkcs, *k, b"capability probe").map(|_| ()).map_err(describe)
    });
    rows.push(operation_row(caps, pki::CAP_SIGN_RSA_SHA256, "sha256_rsa_pkcs", "CKM_SHA256_RSA_PKCS".into(), &signed));
    // The reader's RSA key is imported, not generated: probe that path.
    let oaep = rsa.as_ref().map_err(|e| format!("no RSA key pair: {e}")).and_then(|(p, _)| {
        let cek = cek.clone()?;
        let attrs = session
            .get_attributes(
                *p,
                &[cryptoki::object::AttributeType::Modulus, cryptoki::object::AttributeType::PublicExponent],
            )
            .map_err(describe)?;
        let mut template = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Wrap(true),
        ];
        template.extend(attrs);
        let imported = objects.keep(session.create_object(&template).map_err(describe)?);
        session.wrap_key(&pki::oaep_sha1(), imported, cek).map(|_| ()).map_err(describe)
    });
    let mut wraps = vec![wrap_row(pki::WRAPPED_RSA, "CKM_RSA_PKCS_OAEP", "AES", oaep, module)];
    wrap_targets.push((pki::WRAPPED_RSA, rsa.map(|(_, k)| k)));

    if caps.row("sm2_key_pair_gen").is_some_and(|r| r.available) {
        let sm2 = caps.require("sm2_key_pair_gen").map_err(|e| e.to_string()).and_then(|number| {
            let mech = Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(mechanism_type(number), None));
            probe_pair(session, &mut objects, &mech, vec![Attribute::EcParams(der::OID_SM2.to_vec())], false)
        });
        wrap_targets.push((pki::WRAPPED_SM2, sm2.map(|(_, k)| k)));
    }

    let kek = session
        .generate_key(&Mechanism::AesKeyGen, &pki::aes256_template(false))
        .map_err(describe)
        .map(|k| objects.keep(k));
    for (label, target) in wrap_targets {
        for (name, mechanism) in
            [("CKM_AES_CBC_PAD", Mechanism::AesCbcPad([0u8; 16])), (pki::ESCROW_MECHANISM, Mechanism::AesKeyWrapPad)]
        {
            let result = match (&kek, &target) {
                (Err(e), _) => Err(format!("no AES-256 wrapping key: {e}")),
                (_, Err(e)) => Err(format!("no {label} key pair: {e}")),
                (Ok(kek), Ok(key)) => session.wrap_key(&mechanism, *kek, *key).map(|_| ()).map_err(describe),
            };
            wraps.push(wrap_row("AES", name, label, result, module));
        }
    }
    if let Err(e) = objects.destroy_all() {
        tracing::warn!(module, error = %e, "could not destroy a capability-probe object");
    }
    for r in &rows {
        if !r.available {
            tracing::debug!(module, capability = r.name, detail = %r.detail, "operation probe failed");
        }
    }
    (rows, wraps)
}

fn wrap_row(
    wrapping: &'static str,
    mechanism: &str,
    wrapped: &'static str,
    result: Result<(), String>,
    module: &str,
) -> WrapRow {
    if let Err(e) = &result {
        tracing::debug!(module, wrapping, mechanism, wrapped, error = %e, "wrap probe failed");
    }
    WrapRow {
        wrapping_key_type: wrapping,
        mechanism: mechanism.to_owned(),
        wrapped_key_type: wrapped,
        supported: result.is_ok(),
        error: result.err().unwrap_or_default(),
    }
}
