//! Mechanisms: the internal kinds, their parameter layouts, and the
//! `C_GetMechanismInfo` table (which must tell the truth: every flag listed
//! here is implemented in `ops.rs`).

use cryptoki_sys::*;

use crate::sym::{GcmParams, KdfData};
use crate::vendor::VendorIds;

/// Internal mechanism kinds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub(crate) enum Mk {
    Des2KeyGen,
    Des3KeyGen,
    Des3Ecb,
    Des3Cbc,
    Des3CbcPad,
    Des3EcbEncryptData,
    Des3CbcEncryptData,
    Des3Cmac,
    Des3CmacGeneral,
    Des3RetailMac,
    Des3RetailMacNoPad,
    Des3RetailMacEncIcv,
    AesKeyGen,
    AesEcb,
    AesCbc,
    AesCbcPad,
    AesGcm,
    AesEcbEncryptData,
    AesCbcEncryptData,
    AesCmac,
    AesCmacGeneral,
    AesKeyWrap,
    AesKeyWrapPad,
    Sp800108Counter,
    Sm4KeyGen,
    Sm4Ecb,
    Sm4Cbc,
    Sm4Mac,
    Sm4EcbEncryptData,
    Sm3,
    Sm2KeyPairGen,
    Sm2Sm3Sign,
    Sm2Encrypt,
    EcKeyPairGen,
    Ecdsa,
    EcdsaSha1,
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    Ecdh1Derive,
    RsaKeyPairGen,
    RsaPkcs,
    Sha1RsaPkcs,
    Sha256RsaPkcs,
    Sha384RsaPkcs,
    Sha512RsaPkcs,
    RsaPkcsPss,
    Sha1RsaPkcsPss,
    Sha256RsaPkcsPss,
    Sha384RsaPkcsPss,
    Sha512RsaPkcsPss,
    RsaPkcsOaep,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    GenericSecretKeyGen,
    XorBaseAndData,
    XorBaseAndKey,
    AesAn10922Derive,
    Des2An10922Derive,
    DesKeyGen,
    DesEcb,
    DesCbc,
    DesMac,
    DesMacGeneral,
    Des2XorHalves,
    Sha1Hmac,
    Sha256Hmac,
    Sha384Hmac,
    Sha512Hmac,
}

/// How the FFI layer must read a mechanism's parameter.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Layout {
    /// Plain bytes (IVs, SM2 IDs) or none.
    Bytes,
    /// `CK_MAC_GENERAL_PARAMS` (a `CK_ULONG`).
    MacGeneral,
    /// `CK_KEY_DERIVATION_STRING_DATA`.
    DeriveString,
    /// `CK_DES_CBC_ENCRYPT_DATA_PARAMS`.
    DesCbcDerive,
    /// `CK_AES_CBC_ENCRYPT_DATA_PARAMS`.
    AesCbcDerive,
    /// `CK_GCM_PARAMS`.
    Gcm,
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep,
    /// `CK_RSA_PKCS_PSS_PARAMS`.
    Pss,
    /// `CK_ECDH1_DERIVE_PARAMS`.
    Ecdh1,
    /// `CK_SP800_108_KDF_PARAMS`.
    Sp800108,
    /// A `CK_OBJECT_HANDLE`.
    Handle,
}

/// A parsed, owned mechanism parameter.
pub(crate) enum Param {
    /// No parameter.
    None,
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A `CK_ULONG` (MAC length or object handle).
    Ulong(CK_ULONG),
    /// Derivation data.
    Data(Vec<u8>),
    /// CBC derivation: IV and data.
    IvData(Vec<u8>, Vec<u8>),
    /// GCM.
    Gcm(GcmParams),
    /// OAEP: hash, MGF, label.
    Oaep(CK_ULONG, CK_ULONG, Vec<u8>),
    /// PSS: hash, MGF, salt length.
    Pss(CK_ULONG, CK_ULONG, CK_ULONG),
    /// ECDH: KDF, shared data, public data.
    Ecdh(CK_ULONG, Vec<u8>, Vec<u8>),
    /// SP 800-108: PRF mechanism, data parameters, additional keys requested.
    Kdf(CK_ULONG, Vec<KdfData>, usize),
}

/// A mechanism as received at the boundary.
pub(crate) struct Mechanism {
    /// The `CKM_*` value.
    pub ty: CK_MECHANISM_TYPE,
    /// Its parameter.
    pub param: Param,
}

impl Mechanism {
    /// The parameter as an IV of `n` bytes.
    pub(crate) fn iv(&self, n: usize) -> crate::error::Res<&[u8]> {
        match &self.param {
            Param::Bytes(b) if b.len() == n => Ok(b),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        }
    }
}

const STD: &[(CK_MECHANISM_TYPE, Mk)] = &[
    (CKM_DES_KEY_GEN, Mk::DesKeyGen),
    (CKM_DES_ECB, Mk::DesEcb),
    (CKM_DES_CBC, Mk::DesCbc),
    (CKM_DES_MAC, Mk::DesMac),
    (CKM_DES_MAC_GENERAL, Mk::DesMacGeneral),
    (CKM_DES2_KEY_GEN, Mk::Des2KeyGen),
    (CKM_DES3_KEY_GEN, Mk::Des3KeyGen),
    (CKM_DES3_ECB, Mk::Des3Ecb),
    (CKM_DES3_CBC, Mk::Des3Cbc),
    (CKM_DES3_CBC_PAD, Mk::Des3CbcPad),
    (CKM_DES3_ECB_ENCRYPT_DATA, Mk::Des3EcbEncryptData),
    (CKM_DES3_CBC_ENCRYPT_DATA, Mk::Des3CbcEncryptData),
    (CKM_DES3_CMAC, Mk::Des3Cmac),
    (CKM_DES3_CMAC_GENERAL, Mk::Des3CmacGeneral),
    (CKM_AES_KEY_GEN, Mk::AesKeyGen),
    (CKM_AES_ECB, Mk::AesEcb),
    (CKM_AES_CBC, Mk::AesCbc),
    (CKM_AES_CBC_PAD, Mk::AesCbcPad),
    (CKM_AES_GCM, Mk::AesGcm),
    (CKM_AES_ECB_ENCRYPT_DATA, Mk::AesEcbEncryptData),
    (CKM_AES_CBC_ENCRYPT_DATA, Mk::AesCbcEncryptData),
    (CKM_AES_CMAC, Mk::AesCmac),
    (CKM_AES_CMAC_GENERAL, Mk::AesCmacGeneral),
    (CKM_AES_KEY_WRAP, Mk::AesKeyWrap),
    (CKM_AES_KEY_WRAP_PAD, Mk::AesKeyWrapPad),
    (CKM_SP800_108_COUNTER_KDF, Mk::Sp800108Counter),
    (CKM_EC_KEY_PAIR_GEN, Mk::EcKeyPairGen),
    (CKM_ECDSA, Mk::Ecdsa),
    (CKM_ECDSA_SHA1, Mk::EcdsaSha1),
    (CKM_ECDSA_SHA256, Mk::EcdsaSha256),
    (CKM_ECDSA_SHA384, Mk::EcdsaSha384),
    (CKM_ECDSA_SHA512, Mk::EcdsaSha512),
    (CKM_ECDH1_DERIVE, Mk::Ecdh1Derive),
    (CKM_RSA_PKCS_KEY_PAIR_GEN, Mk::RsaKeyPairGen),
    (CKM_RSA_PKCS, Mk::RsaPkcs),
    (CKM_SHA1_RSA_PKCS, Mk::Sha1RsaPkcs),
    (CKM_SHA256_RSA_PKCS, Mk::Sha256RsaPkcs),
    (CKM_SHA384_RSA_PKCS, Mk::Sha384RsaPkcs),
    (CKM_SHA512_RSA_PKCS, Mk::Sha512RsaPkcs),
    (CKM_RSA_PKCS_PSS, Mk::RsaPkcsPss),
    (CKM_SHA1_RSA_PKCS_PSS, Mk::Sha1RsaPkcsPss),
    (CKM_SHA256_RSA_PKCS_PSS, Mk::Sha256RsaPkcsPss),
    (CKM_SHA384_RSA_PKCS_PSS, Mk::Sha384RsaPkcsPss),
    (CKM_SHA512_RSA_PKCS_PSS, Mk::Sha512RsaPkcsPss),
    (CKM_RSA_PKCS_OAEP, Mk::RsaPkcsOaep),
    (CKM_SHA_1, Mk::Sha1),
    (CKM_SHA256, Mk::Sha256),
    (CKM_SHA384, Mk::Sha384),
    (CKM_SHA512, Mk::Sha512),
    (CKM_GENERIC_SECRET_KEY_GEN, Mk::GenericSecretKeyGen),
    (CKM_SHA_1_HMAC, Mk::Sha1Hmac),
    (CKM_SHA256_HMAC, Mk::Sha256Hmac),
    (CKM_SHA384_HMAC, Mk::Sha384Hmac),
    (CKM_SHA512_HMAC, Mk::Sha512Hmac),
    (CKM_XOR_BASE_AND_DATA, Mk::XorBaseAndData),
];

fn vendor_table(v: &VendorIds) -> [(CK_MECHANISM_TYPE, Mk); 16] {
    [
        (v.sm2_key_pair_gen, Mk::Sm2KeyPairGen),
        (v.sm2_sm3_sign, Mk::Sm2Sm3Sign),
        (v.sm2_encrypt, Mk::Sm2Encrypt),
        (v.sm3, Mk::Sm3),
        (v.sm4_key_gen, Mk::Sm4KeyGen),
        (v.sm4_ecb, Mk::Sm4Ecb),
        (v.sm4_cbc, Mk::Sm4Cbc),
        (v.sm4_mac, Mk::Sm4Mac),
        (v.sm4_ecb_encrypt_data, Mk::Sm4EcbEncryptData),
        (v.des3_retail_mac, Mk::Des3RetailMac),
        (v.des3_retail_mac_nopad, Mk::Des3RetailMacNoPad),
        (v.des3_retail_mac_enc_icv, Mk::Des3RetailMacEncIcv),
        (v.xor_base_and_key, Mk::XorBaseAndKey),
        (v.aes_an10922_derive, Mk::AesAn10922Derive),
        (v.des2_an10922_derive, Mk::Des2An10922Derive),
        (v.des2_xor_halves, Mk::Des2XorHalves),
    ]
}

/// The internal kind of a `CKM_*` value under the configured vendor numbers.
pub(crate) fn kind(v: &VendorIds, ty: CK_MECHANISM_TYPE) -> Option<Mk> {
    if ty >= CKM_VENDOR_DEFINED {
        vendor_table(v).iter().find(|(t, _)| *t == ty).map(|(_, k)| *k)
    } else {
        STD.iter().find(|(t, _)| *t == ty).map(|(_, k)| *k)
    }
}

/// Every supported `CKM_*` value.
pub(crate) fn list(v: &VendorIds) -> Vec<CK_MECHANISM_TYPE> {
    let mut l: Vec<_> = STD.iter().map(|(t, _)| *t).collect();
    l.extend(vendor_table(v).iter().map(|(t, _)| *t));
    l
}

/// The parameter layout of a mechanism (unknown ones: bytes, rejected later).
pub(crate) fn layout(v: &VendorIds, ty: CK_MECHANISM_TYPE) -> Layout {
    match kind(v, ty) {
        Some(Mk::Des3CmacGeneral | Mk::AesCmacGeneral | Mk::DesMacGeneral) => Layout::MacGeneral,
        Some(
            Mk::Des3EcbEncryptData
            | Mk::AesEcbEncryptData
            | Mk::Sm4EcbEncryptData
            | Mk::XorBaseAndData
            | Mk::AesAn10922Derive
            | Mk::Des2An10922Derive,
        ) => Layout::DeriveString,
        Some(Mk::Des3CbcEncryptData) => Layout::DesCbcDerive,
        Some(Mk::AesCbcEncryptData) => Layout::AesCbcDerive,
        Some(Mk::AesGcm) => Layout::Gcm,
        Some(Mk::RsaPkcsOaep) => Layout::Oaep,
        Some(
            Mk::RsaPkcsPss | Mk::Sha1RsaPkcsPss | Mk::Sha256RsaPkcsPss | Mk::Sha384RsaPkcsPss | Mk::Sha512RsaPkcsPss,
        ) => Layout::Pss,
        Some(Mk::Ecdh1Derive) => Layout::Ecdh1,
        Some(Mk::Sp800108Counter) => Layout::Sp800108,
        Some(Mk::XorBaseAndKey) => Layout::Handle,
        _ => Layout::Bytes,
    }
}

const ED: CK_FLAGS = CKF_ENCRYPT | CKF_DECRYPT;
const SV: CK_FLAGS = CKF_SIGN | CKF_VERIFY;
const WU: CK_FLAGS = CKF_WRAP | CKF_UNWRAP;
const EC_FLAGS: CK_FLAGS = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;

/// `(ulMinKeySize, ulMaxKeySize, flags)` for `C_GetMechanismInfo`. Key sizes
/// are in bytes for DES/AES/SM4/generic secrets and in bits for RSA/EC/SM2.
pub(crate) fn info(k: Mk) -> (CK_ULONG, CK_ULONG, CK_FLAGS) {
    // why: everything runs inside the module (the "device"); OpenSC's
    // `pkcs11-tool --test` only exercises mechanisms flagged CKF_HW.
    let (min, max, f) = info_sw(k);
    (min, max, f | CKF_HW)
}

fn info_sw(k: Mk) -> (CK_ULONG, CK_ULONG, CK_FLAGS) {
    use Mk::*;
    match k {
        DesKeyGen => (8, 8, CKF_GENERATE),
        DesEcb | DesCbc => (8, 8, ED),
        DesMac | DesMacGeneral => (8, 8, SV),
        Des2XorHalves => (16, 16, CKF_DERIVE),
        Des2KeyGen => (16, 16, CKF_GENERATE),
        Des3KeyGen => (24, 24, CKF_GENERATE),
        Des3Ecb | Des3Cbc => (16, 24, ED | WU),
        Des3CbcPad => (16, 24, ED | WU),
        Des3EcbEncryptData | Des3CbcEncryptData => (16, 24, CKF_DERIVE),
        Des3Cmac | Des3CmacGeneral | Des3RetailMac | Des3RetailMacNoPad | Des3RetailMacEncIcv => (16, 24, SV),
        AesKeyGen => (16, 32, CKF_GENERATE),
        AesEcb | AesCbc | AesCbcPad => (16, 32, ED | WU),
        AesGcm => (16, 32, ED),
        AesEcbEncryptData | AesCbcEncryptData => (16, 32, CKF_DERIVE),
        AesCmac | AesCmacGeneral => (16, 32, SV),
        AesAn10922Derive => (16, 16, CKF_DERIVE),
        Des2An10922Derive => (16, 16, CKF_DERIVE),
        AesKeyWrap | AesKeyWrapPad => (16, 32, ED | WU),
        Sp800108Counter => (16, 32, CKF_DERIVE),
        Sm4KeyGen => (16, 16, CKF_GENERATE),
        Sm4Ecb | Sm4Cbc => (16, 16, ED | WU),
        Sm4Mac => (16, 16, SV),
        Sm4EcbEncryptData => (16, 16, CKF_DERIVE),
        Sm3 | Sha1 | Sha256 | Sha384 | Sha512 => (0, 0, CKF_DIGEST),
        Sm2KeyPairGen => (256, 256, CKF_GENERATE_KEY_PAIR | EC_FLAGS),
        Sm2Sm3Sign => (256, 256, SV | EC_FLAGS),
        Sm2Encrypt => (256, 256, ED | EC_FLAGS),
        EcKeyPairGen => (256, 384, CKF_GENERATE_KEY_PAIR | EC_FLAGS),
        Ecdsa | EcdsaSha1 | EcdsaSha256 | EcdsaSha384 | EcdsaSha512 => (256, 384, SV | EC_FLAGS),
        Ecdh1Derive => (256, 384, CKF_DERIVE | EC_FLAGS),
        RsaKeyPairGen => (2048, 4096, CKF_GENERATE_KEY_PAIR),
        RsaPkcs => (2048, 4096, ED | SV | WU),
        RsaPkcsOaep => (2048, 4096, ED | WU),
        Sha1RsaPkcs | Sha256RsaPkcs | Sha384RsaPkcs | Sha512RsaPkcs | RsaPkcsPss | Sha1RsaPkcsPss
        | Sha256RsaPkcsPss | Sha384RsaPkcsPss | Sha512RsaPkcsPss => (2048, 4096, SV),
        GenericSecretKeyGen => (1, 512, CKF_GENERATE),
        Sha1Hmac | Sha256Hmac | Sha384Hmac | Sha512Hmac => (1, 512, SV),
        XorBaseAndData | XorBaseAndKey => (1, 512, CKF_DERIVE),
    }
}
