//! Cryptographic dispatch: one function per operation class, given an owned
//! mechanism, a key object and the whole input. Called with no lock held.

use cryptoki_sys::*;
use digest::DynDigest;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::asym::{self, Hash, RsaEnc, RsaSig};
use crate::error::Res;
use crate::mech::{Mechanism, Mk, Param};
use crate::object::{Kt, Object};
use crate::sym::{self, Block, Family};

/// The key family a symmetric mechanism requires.
pub(crate) fn sym_family(mk: Mk) -> Option<Family> {
    use Mk::*;
    match mk {
        Des3Ecb | Des3Cbc | Des3CbcPad | Des3EcbEncryptData | Des3CbcEncryptData | Des3Cmac | Des3CmacGeneral
        | Des3RetailMac | Des3RetailMacNoPad | Des3RetailMacEncIcv => Some(Family::Tdes),
        AesEcb | AesCbc | AesCbcPad | AesGcm | AesEcbEncryptData | AesCbcEncryptData | AesCmac | AesCmacGeneral
        | AesKeyWrap | AesKeyWrapPad | AesAn10922Derive => Some(Family::Aes),
        Sm4Ecb | Sm4Cbc | Sm4Mac | Sm4EcbEncryptData => Some(Family::Sm4),
        DesEcb | DesCbc | DesMac | DesMacGeneral => Some(Family::Des),
        Des2XorHalves | Des2An10922Derive => Some(Family::Tdes),
        _ => None,
    }
}

/// Checks that `key` fits mechanism `mk` (class and key type).
pub(crate) fn check_key(mk: Mk, key: &Object, private_side: bool) -> Res<()> {
    use Mk::*;
    if let Some(f) = sym_family(mk) {
        if key.class != CKO_SECRET_KEY || key.kt.and_then(Kt::family) != Some(f) {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        return Ok(());
    }
    if matches!(mk, Sha1Hmac | Sha256Hmac | Sha384Hmac | Sha512Hmac) {
        // PKCS#11 §2.x: HMAC keys are generic secrets.
        if key.class != CKO_SECRET_KEY || key.kt != Some(Kt::Generic) {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        return Ok(());
    }
    let want_class = if private_side { CKO_PRIVATE_KEY } else { CKO_PUBLIC_KEY };
    let want_kt = match mk {
        Ecdsa | EcdsaSha1 | EcdsaSha256 | EcdsaSha384 | EcdsaSha512 | Ecdh1Derive => Kt::Ec,
        Sm2Sm3Sign | Sm2Encrypt => Kt::Sm2,
        RsaPkcs | Sha1RsaPkcs | Sha256RsaPkcs | Sha384RsaPkcs | Sha512RsaPkcs | RsaPkcsPss | Sha1RsaPkcsPss
        | Sha256RsaPkcsPss | Sha384RsaPkcsPss | Sha512RsaPkcsPss | RsaPkcsOaep => Kt::Rsa,
        _ => return Err(CKR_MECHANISM_INVALID),
    };
    if key.class != want_class || key.kt != Some(want_kt) {
        return Err(CKR_KEY_TYPE_INCONSISTENT);
    }
    Ok(())
}

fn block(key: &Object, f: Family) -> Res<Block> {
    Block::new(f, key.value()?)
}

fn oaep(m: &Mechanism) -> Res<RsaEnc> {
    match &m.param {
        Param::Oaep(h, mgf, label) => {
            let label = if label.is_empty() {
                None
            } else {
                Some(String::from_utf8(label.clone()).map_err(|_| CKR_MECHANISM_PARAM_INVALID)?)
            };
            Ok(RsaEnc::Oaep(Hash::from_ckm(*h)?, Hash::from_mgf(*mgf)?, label))
        }
        _ => Err(CKR_MECHANISM_PARAM_INVALID),
    }
}

/// Validates a mechanism's parameter at `*Init` time.
pub(crate) fn check_param(mk: Mk, m: &Mechanism) -> Res<()> {
    use Mk::*;
    match mk {
        Des3Cbc | Des3CbcPad | DesCbc => m.iv(8).map(|_| ()),
        AesCbc | AesCbcPad | Sm4Cbc => m.iv(16).map(|_| ()),
        AesGcm => match &m.param {
            Param::Gcm(p) if p.iv.len() == 12 && p.tag_bits == 128 => Ok(()),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        },
        RsaPkcsOaep => oaep(m).map(|_| ()),
        RsaPkcsPss | Sha1RsaPkcsPss | Sha256RsaPkcsPss | Sha384RsaPkcsPss | Sha512RsaPkcsPss => {
            rsa_sig(mk, m).map(|_| ())
        }
        Des3CmacGeneral | AesCmacGeneral | DesMacGeneral => match m.param {
            Param::Ulong(l) if l >= 1 && l <= if mk == AesCmacGeneral { 16 } else { 8 } => Ok(()),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        },
        Des3RetailMacEncIcv => m.iv(8).map(|_| ()),
        Des3RetailMac | Des3RetailMacNoPad => match &m.param {
            Param::None => Ok(()),
            Param::Bytes(b) if b.is_empty() || b.len() == 8 => Ok(()),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        },
        Sm4Mac => match &m.param {
            Param::None => Ok(()),
            Param::Bytes(b) if b.is_empty() || b.len() == 16 => Ok(()),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        },
        Des3Ecb | AesEcb | Sm4Ecb | DesEcb | DesMac | AesKeyWrap | AesKeyWrapPad | RsaPkcs | Ecdsa | EcdsaSha1
        | EcdsaSha256 | EcdsaSha384 | EcdsaSha512 | Sha1RsaPkcs | Sha256RsaPkcs | Sha384RsaPkcs | Sha512RsaPkcs
        | Des3Cmac | AesCmac | Sm2Encrypt | Sha1 | Sha256 | Sha384 | Sha512 | Sm3 => match &m.param {
            Param::None => Ok(()),
            Param::Bytes(b) if b.is_empty() || mk == AesKeyWrap || mk == AesKeyWrapPad => Ok(()),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        },
        Sm2Sm3Sign => match &m.param {
            Param::None | Param::Bytes(_) => Ok(()),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        },
        _ => Ok(()),
    }
}

fn kw_iv_ok(m: &Mechanism) -> Res<()> {
    // why: only the default RFC 3394/5649 IVs are supported.
    match &m.param {
        Param::None => Ok(()),
        Param::Bytes(b) if b.is_empty() => Ok(()),
        _ => Err(CKR_MECHANISM_PARAM_INVALID),
    }
}

/// Encrypts `data` (whole input) with `key`.
pub(crate) fn encrypt(mk: Mk, m: &Mechanism, key: &Object, data: &[u8]) -> Res<Vec<u8>> {
    use Mk::*;
    let e = CKR_DATA_LEN_RANGE;
    match mk {
        Des3Ecb | AesEcb | Sm4Ecb | DesEcb => block(key, fam(mk)?)?.ecb_enc(data, e),
        DesCbc => block(key, Family::Des)?.cbc_enc(m.iv(8)?, data, e),
        Des3Cbc => block(key, Family::Tdes)?.cbc_enc(m.iv(8)?, data, e),
        AesCbc | Sm4Cbc => block(key, fam(mk)?)?.cbc_enc(m.iv(16)?, data, e),
        Des3CbcPad => block(key, Family::Tdes)?.cbc_pad_enc(m.iv(8)?, data),
        AesCbcPad => block(key, Family::Aes)?.cbc_pad_enc(m.iv(16)?, data),
        AesGcm => match &m.param {
            Param::Gcm(p) => sym::gcm(key.value()?, p, data, true),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        },
        AesKeyWrap | AesKeyWrapPad => {
            kw_iv_ok(m)?;
            sym::aes_kw_wrap(key.value()?, data, mk == AesKeyWrapPad)
        }
        RsaPkcs => asym::rsa_encrypt(key.public_key()?, &RsaEnc::Pkcs1, data),
        RsaPkcsOaep => asym::rsa_encrypt(key.public_key()?, &oaep(m)?, data),
        Sm2Encrypt => asym::sm2_encrypt(key.public_key()?, data),
        _ => Err(CKR_MECHANISM_INVALID),
    }
}

fn fam(mk: Mk) -> Res<Family> {
    sym_family(mk).ok_or(CKR_MECHANISM_INVALID)
}

/// Decrypts `data` (whole input) with `key`; `err` is the value for
/// malformed input (`CKR_ENCRYPTED_DATA_*` or `CKR_WRAPPED_KEY_*`).
pub(crate) fn decrypt(mk: Mk, m: &Mechanism, key: &Object, data: &[u8], wrapped: bool) -> Res<Zeroizing<Vec<u8>>> {
    use Mk::*;
    let elen = if wrapped { CKR_WRAPPED_KEY_LEN_RANGE } else { CKR_ENCRYPTED_DATA_LEN_RANGE };
    let einv = if wrapped { CKR_WRAPPED_KEY_INVALID } else { CKR_ENCRYPTED_DATA_INVALID };
    let r = match mk {
        Des3Ecb | AesEcb | Sm4Ecb | DesEcb => block(key, fam(mk)?)?.ecb_dec(data, elen)?,
        DesCbc => block(key, Family::Des)?.cbc_dec(m.iv(8)?, data, elen)?,
        Des3Cbc => block(key, Family::Tdes)?.cbc_dec(m.iv(8)?, data, elen)?,
        AesCbc | Sm4Cbc => block(key, fam(mk)?)?.cbc_dec(m.iv(16)?, data, elen)?,
        Des3CbcPad => {
            if !data.len().is_multiple_of(8) {
                return Err(elen);
            }
            block(key, Family::Tdes)?.cbc_pad_dec(m.iv(8)?, data, einv)?
        }
        AesCbcPad => {
            if !data.len().is_multiple_of(16) {
                return Err(elen);
            }
            block(key, Family::Aes)?.cbc_pad_dec(m.iv(16)?, data, einv)?
        }
        AesGcm => match &m.param {
            Param::Gcm(p) => {
                if data.len() < 16 {
                    return Err(elen);
                }
                sym::gcm(key.value()?, p, data, false)?
            }
            _ => return Err(CKR_MECHANISM_PARAM_INVALID),
        },
        AesKeyWrap | AesKeyWrapPad => {
            kw_iv_ok(m)?;
            if !data.len().is_multiple_of(8) || data.len() < 16 {
                return Err(elen);
            }
            sym::aes_kw_unwrap(key.value()?, data, mk == AesKeyWrapPad, einv)?
        }
        RsaPkcs => return asym::rsa_decrypt(key.private_key()?, &RsaEnc::Pkcs1, data).map_err(|e| remap(e, wrapped)),
        RsaPkcsOaep => return asym::rsa_decrypt(key.private_key()?, &oaep(m)?, data).map_err(|e| remap(e, wrapped)),
        Sm2Encrypt => return asym::sm2_decrypt(key.private_key()?, data).map_err(|e| remap(e, wrapped)),
        _ => return Err(CKR_MECHANISM_INVALID),
    };
    Ok(Zeroizing::new(r))
}

fn remap(e: CK_RV, wrapped: bool) -> CK_RV {
    match (e, wrapped) {
        (CKR_ENCRYPTED_DATA_INVALID, true) => CKR_WRAPPED_KEY_INVALID,
        (CKR_ENCRYPTED_DATA_LEN_RANGE, true) => CKR_WRAPPED_KEY_LEN_RANGE,
        _ => e,
    }
}

fn rsa_sig(mk: Mk, m: &Mechanism) -> Res<RsaSig> {
    use Mk::*;
    let pss = |h: Option<Hash>| -> Res<RsaSig> {
        let Param::Pss(ha, mgf, slen) = m.param else { return Err(CKR_MECHANISM_PARAM_INVALID) };
        let ha = Hash::from_ckm(ha)?;
        if Hash::from_mgf(mgf)? != ha || h.is_some_and(|h| h != ha) {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        Ok(RsaSig::Pss(ha, slen as usize))
    };
    Ok(match mk {
        RsaPkcs => RsaSig::Pkcs1Raw,
        Sha1RsaPkcs => RsaSig::Pkcs1(Hash::Sha1),
        Sha256RsaPkcs => RsaSig::Pkcs1(Hash::Sha256),
        Sha384RsaPkcs => RsaSig::Pkcs1(Hash::Sha384),
        Sha512RsaPkcs => RsaSig::Pkcs1(Hash::Sha512),
        RsaPkcsPss => pss(None)?,
        Sha1RsaPkcsPss => pss(Some(Hash::Sha1))?,
        Sha256RsaPkcsPss => pss(Some(Hash::Sha256))?,
        Sha384RsaPkcsPss => pss(Some(Hash::Sha384))?,
        Sha512RsaPkcsPss => pss(Some(Hash::Sha512))?,
        _ => return Err(CKR_MECHANISM_INVALID),
    })
}

/// For hashing RSA variants: the message digest to sign.
fn rsa_input(mk: Mk, scheme: RsaSig, data: &[u8]) -> Vec<u8> {
    use Mk::*;
    match (mk, scheme) {
        (RsaPkcs | RsaPkcsPss, _) => data.to_vec(),
        (_, RsaSig::Pkcs1(h) | RsaSig::Pss(h, _)) => h.digest(data),
        _ => data.to_vec(),
    }
}

fn ecdsa_input(mk: Mk, data: &[u8]) -> Vec<u8> {
    match mk {
        Mk::EcdsaSha1 => Hash::Sha1.digest(data),
        Mk::EcdsaSha256 => Hash::Sha256.digest(data),
        Mk::EcdsaSha384 => Hash::Sha384.digest(data),
        Mk::EcdsaSha512 => Hash::Sha512.digest(data),
        _ => data.to_vec(),
    }
}

fn sm2_id(m: &Mechanism) -> &[u8] {
    match &m.param {
        Param::Bytes(b) if !b.is_empty() => b,
        _ => asym::SM2_DEFAULT_ID,
    }
}

/// Computes a MAC (full length; callers truncate for `_GENERAL`).
fn mac(mk: Mk, m: &Mechanism, key: &Object, data: &[u8]) -> Res<Vec<u8>> {
    use Mk::*;
    match mk {
        Des3Cmac | Des3CmacGeneral => Ok(block(key, Family::Tdes)?.cmac(data)),
        Sha1Hmac => hmac_tag::<sha1::Sha1>(key.value()?, data),
        Sha256Hmac => hmac_tag::<sha2::Sha256>(key.value()?, data),
        Sha384Hmac => hmac_tag::<sha2::Sha384>(key.value()?, data),
        Sha512Hmac => hmac_tag::<sha2::Sha512>(key.value()?, data),
        DesMac | DesMacGeneral => {
            // PKCS#11 DES-MAC: CBC-MAC with a zero IV, data padded with zero
            // bytes to a block multiple (PBOC callers pre-pad with 80 00…).
            let mut d = data.to_vec();
            if d.is_empty() || !d.len().is_multiple_of(8) {
                d.resize(d.len().div_ceil(8).max(1) * 8, 0);
            }
            let c = block(key, Family::Des)?.cbc_enc(&[0u8; 8], &d, CKR_DATA_LEN_RANGE)?;
            Ok(c[c.len() - 8..].to_vec())
        }
        AesCmac | AesCmacGeneral => Ok(block(key, Family::Aes)?.cmac(data)),
        Des3RetailMac | Des3RetailMacNoPad | Des3RetailMacEncIcv => {
            let mut iv = match &m.param {
                Param::Bytes(b) if b.len() == 8 => b.clone(),
                _ if mk == Des3RetailMacEncIcv => return Err(CKR_MECHANISM_PARAM_INVALID),
                _ => vec![0u8; 8],
            };
            let k = key.value()?;
            if mk == Des3RetailMacEncIcv {
                Block::des(k.get(..8).ok_or(CKR_KEY_SIZE_RANGE)?)?.enc(&mut iv);
            }
            sym::retail_mac(k, &iv, data, mk != Des3RetailMacNoPad)
        }
        Sm4Mac => {
            let iv = match &m.param {
                Param::Bytes(b) if b.len() == 16 => b.clone(),
                _ => vec![0u8; 16],
            };
            block(key, Family::Sm4)?.cbc_mac_m2(&iv, data)
        }
        _ => Err(CKR_MECHANISM_INVALID),
    }
}

fn mac_len(mk: Mk, m: &Mechanism, full: usize) -> usize {
    match (mk, &m.param) {
        (Mk::Des3CmacGeneral | Mk::AesCmacGeneral | Mk::DesMacGeneral, Param::Ulong(l)) => (*l as usize).min(full),
        // PKCS#11: CKM_DES_MAC outputs half a block.
        (Mk::DesMac, _) => full / 2,
        _ => full,
    }
}

/// Signs (or MACs) the whole input.
pub(crate) fn sign(mk: Mk, m: &Mechanism, key: &Object, data: &[u8]) -> Res<Vec<u8>> {
    use Mk::*;
    match mk {
        Des3Cmac | Des3CmacGeneral | AesCmac | AesCmacGeneral | Des3RetailMac | Des3RetailMacNoPad
        | Des3RetailMacEncIcv | Sm4Mac | DesMac | DesMacGeneral | Sha1Hmac | Sha256Hmac | Sha384Hmac | Sha512Hmac => {
            let mut t = mac(mk, m, key, data)?;
            t.truncate(mac_len(mk, m, t.len()));
            Ok(t)
        }
        Ecdsa | EcdsaSha1 | EcdsaSha256 | EcdsaSha384 | EcdsaSha512 => {
            asym::ecdsa_sign(key.private_key()?, &ecdsa_input(mk, data))
        }
        Sm2Sm3Sign => asym::sm2_sign(key.private_key()?, sm2_id(m), data),
        _ => {
            let s = rsa_sig(mk, m)?;
            asym::rsa_sign(key.private_key()?, s, &rsa_input(mk, s, data))
        }
    }
}

/// Verifies a signature (or MAC) over the whole input.
pub(crate) fn verify(mk: Mk, m: &Mechanism, key: &Object, data: &[u8], sig: &[u8]) -> Res<()> {
    use Mk::*;
    match mk {
        Des3Cmac | Des3CmacGeneral | AesCmac | AesCmacGeneral | Des3RetailMac | Des3RetailMacNoPad
        | Des3RetailMacEncIcv | Sm4Mac | DesMac | DesMacGeneral | Sha1Hmac | Sha256Hmac | Sha384Hmac | Sha512Hmac => {
            let t = mac(mk, m, key, data)?;
            let n = mac_len(mk, m, t.len());
            if sig.len() != n {
                return Err(CKR_SIGNATURE_LEN_RANGE);
            }
            if bool::from(t[..n].ct_eq(sig)) { Ok(()) } else { Err(CKR_SIGNATURE_INVALID) }
        }
        Ecdsa | EcdsaSha1 | EcdsaSha256 | EcdsaSha384 | EcdsaSha512 => {
            asym::ecdsa_verify(key.public_key()?, &ecdsa_input(mk, data), sig)
        }
        Sm2Sm3Sign => asym::sm2_verify(key.public_key()?, sm2_id(m), data, sig),
        _ => {
            let s = rsa_sig(mk, m)?;
            asym::rsa_verify(key.public_key()?, s, &rsa_input(mk, s, data), sig)
        }
    }
}

fn hmac_tag<D>(key: &[u8], data: &[u8]) -> Res<Vec<u8>>
where
    D: digest::core_api::CoreProxy,
    D::Core: digest::HashMarker
        + digest::core_api::UpdateCore
        + digest::core_api::FixedOutputCore
        + digest::core_api::BufferKindUser<BufferKind = digest::block_buffer::Eager>
        + Default
        + Clone,
    <D::Core as digest::core_api::BlockSizeUser>::BlockSize: digest::typenum::IsLess<digest::typenum::U256>,
    digest::typenum::Le<<D::Core as digest::core_api::BlockSizeUser>::BlockSize, digest::typenum::U256>:
        digest::typenum::NonZero,
{
    use hmac::Mac;
    let mut m = hmac::Hmac::<D>::new_from_slice(key).map_err(|_| CKR_KEY_SIZE_RANGE)?;
    Mac::update(&mut m, data);
    Ok(Mac::finalize(m).into_bytes().to_vec())
}

/// A running digest.
pub(crate) fn digest(mk: Mk) -> Res<Box<dyn DynDigest + Send>> {
    Ok(match mk {
        Mk::Sha1 => Box::new(sha1::Sha1::default()),
        Mk::Sha256 => Box::new(sha2::Sha256::default()),
        Mk::Sha384 => Box::new(sha2::Sha384::default()),
        Mk::Sha512 => Box::new(sha2::Sha512::default()),
        Mk::Sm3 => Box::new(sm3::Sm3::default()),
        _ => return Err(CKR_MECHANISM_INVALID),
    })
}
