//! Vendor-defined mechanism and key-type numbers.
//!
//! why: SM2, SM3 and SM4 (and the payment-HSM helpers below) have no standard
//! PKCS#11 numbers; every HSM vendor picked its own. The defaults here sit in
//! the `CKM_VENDOR_DEFINED` (0x80000000) range; SM4-ECB's default
//! (0x80000108) is the TASS/Sansec number (DESIGN.md §2), the others are this
//! module's own choices. Each can be overridden in the
//! `[vendor]` table of the configuration file so the module can mimic a real
//! vendor's numbering (see README.md).

use cryptoki_sys::{CK_KEY_TYPE, CK_MECHANISM_TYPE};
use serde::Deserialize;

/// Default `CKK_SM2` (vendor-defined key type for SM2 key pairs).
pub const CKK_SM2: CK_KEY_TYPE = 0x8000_0001;
/// Default `CKK_SM4` (vendor-defined key type for SM4 secret keys).
pub const CKK_SM4: CK_KEY_TYPE = 0x8000_0002;

/// SM2 key-pair generation (CKA_EC_PARAMS = OID 1.2.156.10197.1.301).
pub const CKM_SM2_KEY_PAIR_GEN: CK_MECHANISM_TYPE = 0x8000_0200;
/// SM2 signature with SM3 and distinguishing ID: the input is the raw message,
/// Z = SM3(ENTL||ID||a||b||xG||yG||xA||yA) is computed inside; output raw r||s.
/// Parameter: the ID bytes (absent or empty = `1234567812345678`).
pub const CKM_SM2_SM3_SIGN: CK_MECHANISM_TYPE = 0x8000_0201;
/// SM2 public-key encryption, ciphertext C1||C3||C2 (C1 uncompressed 04||x||y).
pub const CKM_SM2_ENCRYPT: CK_MECHANISM_TYPE = 0x8000_0202;
/// SM3 digest (GB/T 32905).
pub const CKM_SM3: CK_MECHANISM_TYPE = 0x8000_0301;
/// SM4 key generation (16 bytes).
pub const CKM_SM4_KEY_GEN: CK_MECHANISM_TYPE = 0x8000_0107;
/// SM4-ECB (no padding), encrypt/decrypt/wrap/unwrap.
pub const CKM_SM4_ECB: CK_MECHANISM_TYPE = 0x8000_0108;
/// SM4-CBC (no padding), 16-byte IV parameter, encrypt/decrypt/wrap/unwrap.
pub const CKM_SM4_CBC: CK_MECHANISM_TYPE = 0x8000_0109;
/// SM4 CBC-MAC: ISO/IEC 9797-1 MAC algorithm 1 with padding method 2
/// (0x80 then zeros), optional 16-byte IV parameter (default zero), full
/// 16-byte output.
pub const CKM_SM4_MAC: CK_MECHANISM_TYPE = 0x8000_010A;
/// Derivation: new key = SM4-ECB(base, data), parameter
/// `CK_KEY_DERIVATION_STRING_DATA` (as `CKM_AES_ECB_ENCRYPT_DATA`).
pub const CKM_SM4_ECB_ENCRYPT_DATA: CK_MECHANISM_TYPE = 0x8000_010B;
/// ISO/IEC 9797-1 MAC algorithm 3 ("retail MAC", single-DES CBC under the left
/// key half, final block 3DES), padding method 2, 8-byte output; optional
/// 8-byte ICV parameter (GlobalPlatform SCP02 C-MAC chaining).
pub const CKM_DES3_RETAIL_MAC: CK_MECHANISM_TYPE = 0x8000_0400;
/// As [`CKM_DES3_RETAIL_MAC`] without padding: data must be a multiple of 8.
pub const CKM_DES3_RETAIL_MAC_NOPAD: CK_MECHANISM_TYPE = 0x8000_0401;
/// As [`CKM_DES3_RETAIL_MAC`] (padding method 2), but the 8-byte parameter
/// (required) is first encrypted with single DES under the key's left half:
/// GlobalPlatform SCP02 C-MAC chaining with "ICV encryption" (i = 0x55),
/// where the parameter is the previous command's C-MAC.
pub const CKM_DES3_RETAIL_MAC_ENC_ICV: CK_MECHANISM_TYPE = 0x8000_0402;
/// Derivation: new key = base XOR second key, the second key's handle is the
/// parameter (`CK_OBJECT_HANDLE`); both must have `CKA_DERIVE` true and the
/// same length. Lets a ceremony combine key components inside the module.
pub const CKM_XOR_BASE_AND_KEY: CK_MECHANISM_TYPE = 0x8000_0500;

/// Derivation: new single-DES key = left half ⊕ right half of a DES2 base
/// key (odd parity forced), as PBOC e-purse TAC computation uses the DTK.
/// No parameter.
pub const CKM_DES2_XOR_HALVES: CK_MECHANISM_TYPE = 0x8000_0501;
/// NXP AN10922 AES-128 key diversification as a derivation: new key =
/// CMAC(base, D) where D (the parameter, `CK_KEY_DERIVATION_STRING_DATA`,
/// 1..=32 bytes, its first byte the diversification constant, e.g. 0x01) is
/// padded with `80 00…` to 32 bytes when shorter (the AN10922 rule: the
/// padded last block takes the K2 subkey), so a short D differs from plain
/// CMAC. Base: AES-128.
pub const CKM_AES_AN10922_DERIVE: CK_MECHANISM_TYPE = 0x8000_0600;
/// NXP AN10922 2K3DES key diversification as a derivation: new DES2 key =
/// CMAC(base, 21 || M) || CMAC(base, 22 || M) with 3DES CMAC and the
/// AN10922 padding rule (shorter than 16 bytes: padded to 16, K2 subkey),
/// odd parity forced. The parameter (`CK_KEY_DERIVATION_STRING_DATA`) is M,
/// 1..=15 bytes (UID || AID || system identifier). Base: DES2.
pub const CKM_DES2_AN10922_DERIVE: CK_MECHANISM_TYPE = 0x8000_0601;

/// The vendor numbers in force for one module instance.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct VendorIds {
    /// Key type for SM2 keys.
    pub ckk_sm2: CK_KEY_TYPE,
    /// Key type for SM4 keys (alias `sm4_key_type`, the service's name).
    #[serde(alias = "sm4_key_type")]
    pub ckk_sm4: CK_KEY_TYPE,
    /// See [`CKM_SM2_KEY_PAIR_GEN`].
    pub sm2_key_pair_gen: CK_MECHANISM_TYPE,
    /// See [`CKM_SM2_SM3_SIGN`] (alias `sm2_sign`, the service's name).
    #[serde(alias = "sm2_sign")]
    pub sm2_sm3_sign: CK_MECHANISM_TYPE,
    /// See [`CKM_SM2_ENCRYPT`].
    pub sm2_encrypt: CK_MECHANISM_TYPE,
    /// See [`CKM_SM3`].
    pub sm3: CK_MECHANISM_TYPE,
    /// See [`CKM_SM4_KEY_GEN`].
    pub sm4_key_gen: CK_MECHANISM_TYPE,
    /// See [`CKM_SM4_ECB`].
    pub sm4_ecb: CK_MECHANISM_TYPE,
    /// See [`CKM_SM4_CBC`].
    pub sm4_cbc: CK_MECHANISM_TYPE,
    /// See [`CKM_SM4_MAC`].
    pub sm4_mac: CK_MECHANISM_TYPE,
    /// See [`CKM_SM4_ECB_ENCRYPT_DATA`].
    pub sm4_ecb_encrypt_data: CK_MECHANISM_TYPE,
    /// See [`CKM_DES3_RETAIL_MAC`] (alias `retail_mac`, the service's name).
    #[serde(alias = "retail_mac")]
    pub des3_retail_mac: CK_MECHANISM_TYPE,
    /// See [`CKM_DES3_RETAIL_MAC_NOPAD`].
    pub des3_retail_mac_nopad: CK_MECHANISM_TYPE,
    /// See [`CKM_DES3_RETAIL_MAC_ENC_ICV`].
    pub des3_retail_mac_enc_icv: CK_MECHANISM_TYPE,
    /// See [`CKM_XOR_BASE_AND_KEY`] (alias `key_xor`, the service's name).
    #[serde(alias = "key_xor")]
    pub xor_base_and_key: CK_MECHANISM_TYPE,
    /// See [`CKM_AES_AN10922_DERIVE`].
    pub aes_an10922_derive: CK_MECHANISM_TYPE,
    /// See [`CKM_DES2_XOR_HALVES`].
    pub des2_xor_halves: CK_MECHANISM_TYPE,
    /// See [`CKM_DES2_AN10922_DERIVE`] (alias `an10922_des2`, the service's name).
    #[serde(alias = "an10922_des2")]
    pub des2_an10922_derive: CK_MECHANISM_TYPE,
}

impl Default for VendorIds {
    fn default() -> Self {
        Self {
            ckk_sm2: CKK_SM2,
            ckk_sm4: CKK_SM4,
            sm2_key_pair_gen: CKM_SM2_KEY_PAIR_GEN,
            sm2_sm3_sign: CKM_SM2_SM3_SIGN,
            sm2_encrypt: CKM_SM2_ENCRYPT,
            sm3: CKM_SM3,
            sm4_key_gen: CKM_SM4_KEY_GEN,
            sm4_ecb: CKM_SM4_ECB,
            sm4_cbc: CKM_SM4_CBC,
            sm4_mac: CKM_SM4_MAC,
            sm4_ecb_encrypt_data: CKM_SM4_ECB_ENCRYPT_DATA,
            des3_retail_mac: CKM_DES3_RETAIL_MAC,
            des3_retail_mac_nopad: CKM_DES3_RETAIL_MAC_NOPAD,
            des3_retail_mac_enc_icv: CKM_DES3_RETAIL_MAC_ENC_ICV,
            xor_base_and_key: CKM_XOR_BASE_AND_KEY,
            aes_an10922_derive: CKM_AES_AN10922_DERIVE,
            des2_xor_halves: CKM_DES2_XOR_HALVES,
            des2_an10922_derive: CKM_DES2_AN10922_DERIVE,
        }
    }
}

impl VendorIds {
    /// Every vendor mechanism number with its configuration key.
    pub fn mechanisms(&self) -> [(&'static str, CK_MECHANISM_TYPE); 16] {
        [
            ("sm2_key_pair_gen", self.sm2_key_pair_gen),
            ("sm2_sm3_sign", self.sm2_sm3_sign),
            ("sm2_encrypt", self.sm2_encrypt),
            ("sm3", self.sm3),
            ("sm4_key_gen", self.sm4_key_gen),
            ("sm4_ecb", self.sm4_ecb),
            ("sm4_cbc", self.sm4_cbc),
            ("sm4_mac", self.sm4_mac),
            ("sm4_ecb_encrypt_data", self.sm4_ecb_encrypt_data),
            ("des3_retail_mac", self.des3_retail_mac),
            ("des3_retail_mac_nopad", self.des3_retail_mac_nopad),
            ("des3_retail_mac_enc_icv", self.des3_retail_mac_enc_icv),
            ("xor_base_and_key", self.xor_base_and_key),
            ("aes_an10922_derive", self.aes_an10922_derive),
            ("des2_xor_halves", self.des2_xor_halves),
            ("des2_an10922_derive", self.des2_an10922_derive),
        ]
    }

    /// Checks that no two vendor numbers collide and none shadows a standard
    /// number below `CKM_VENDOR_DEFINED`.
    pub fn validate(&self) -> Result<(), String> {
        let mechs = self.mechanisms();
        for (i, (name, v)) in mechs.iter().enumerate() {
            if *v < cryptoki_sys::CKM_VENDOR_DEFINED {
                return Err(format!("[vendor] {name} = {v:#x} is below CKM_VENDOR_DEFINED"));
            }
            if let Some((other, _)) = mechs[..i].iter().find(|(_, w)| w == v) {
                return Err(format!("[vendor] {name} and {other} share the number {v:#x}"));
            }
        }
        for (name, v) in [("ckk_sm2", self.ckk_sm2), ("ckk_sm4", self.ckk_sm4)] {
            if v < cryptoki_sys::CKK_VENDOR_DEFINED {
                return Err(format!("[vendor] {name} = {v:#x} is below CKK_VENDOR_DEFINED"));
            }
        }
        if self.ckk_sm2 == self.ckk_sm4 {
            return Err("[vendor] ckk_sm2 and ckk_sm4 are equal".into());
        }
        Ok(())
    }
}
