//! The capability table: what the module can do, asked of the module itself.
//!
//! why: mechanism flags are not enough. SoftHSM 2.6 lists `CKM_DES3_ECB`
//! but `C_WrapKey` with it returns `CKR_MECHANISM_INVALID` (DESIGN.md §5),
//! so wrap capabilities are probed by wrapping throw-away session keys.

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismInfo};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki_sys as sys;

use super::HsmError;
use super::raw::mechanism_type;
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
    pub(super) fn probe(
        ctx: &Pkcs11,
        slot: Slot,
        session: &Session,
        module: &str,
        vendor: &VendorMechanisms,
    ) -> Capabilities {
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
        caps.wraps = probe_wraps(session, module, vendor, &caps);
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
