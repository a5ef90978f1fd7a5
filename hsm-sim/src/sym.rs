//! Symmetric primitives: block ciphers (3DES, AES, SM4), modes, MACs, key
//! check values, DES parity, key wrap, GCM and the SP 800-108 counter KDF.
//!
//! Modes are written here over the raw block functions so that one code path
//! serves every cipher; each is covered by published vectors in the tests.

use aes::{Aes128, Aes192, Aes256};
use cipher::generic_array::GenericArray;
use cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use cryptoki_sys::*;
use des::{Des, TdesEde2, TdesEde3};
use sm4::Sm4;
use zeroize::Zeroizing;

use crate::error::Res;

/// A keyed block cipher.
pub(crate) enum Block {
    /// Single DES (only inside the retail MAC).
    Des(Box<Des>),
    /// Two-key 3DES.
    Tdes2(Box<TdesEde2>),
    /// Three-key 3DES.
    Tdes3(Box<TdesEde3>),
    /// AES-128.
    Aes128(Box<Aes128>),
    /// AES-192.
    Aes192(Box<Aes192>),
    /// AES-256.
    Aes256(Box<Aes256>),
    /// SM4.
    Sm4(Box<Sm4>),
}

/// The cipher family a secret key belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Family {
    /// Single DES (PBOC e-purse session keys).
    Des,
    /// DES2/DES3.
    Tdes,
    /// AES.
    Aes,
    /// SM4.
    Sm4,
}

macro_rules! each {
    ($s:expr, $c:ident => $e:expr) => {
        match $s {
            Block::Des($c) => $e,
            Block::Tdes2($c) => $e,
            Block::Tdes3($c) => $e,
            Block::Aes128($c) => $e,
            Block::Aes192($c) => $e,
            Block::Aes256($c) => $e,
            Block::Sm4($c) => $e,
        }
    };
}

impl Block {
    /// Keys a cipher of `family` with `key`; a wrong length is
    /// `CKR_KEY_SIZE_RANGE`.
    pub(crate) fn new(family: Family, key: &[u8]) -> Res<Self> {
        let bad = |_| CKR_KEY_SIZE_RANGE;
        Ok(match (family, key.len()) {
            (Family::Des, 8) => Block::Des(Box::new(Des::new_from_slice(key).map_err(bad)?)),
            (Family::Tdes, 16) => Block::Tdes2(Box::new(TdesEde2::new_from_slice(key).map_err(bad)?)),
            (Family::Tdes, 24) => Block::Tdes3(Box::new(TdesEde3::new_from_slice(key).map_err(bad)?)),
            (Family::Aes, 16) => Block::Aes128(Box::new(Aes128::new_from_slice(key).map_err(bad)?)),
            (Family::Aes, 24) => Block::Aes192(Box::new(Aes192::new_from_slice(key).map_err(bad)?)),
            (Family::Aes, 32) => Block::Aes256(Box::new(Aes256::new_from_slice(key).map_err(bad)?)),
            (Family::Sm4, 16) => Block::Sm4(Box::new(Sm4::new_from_slice(key).map_err(bad)?)),
            _ => return Err(CKR_KEY_SIZE_RANGE),
        })
    }

    /// Single DES under an 8-byte key.
    pub(crate) fn des(key: &[u8]) -> Res<Self> {
        Ok(Block::Des(Box::new(Des::new_from_slice(key).map_err(|_| CKR_KEY_SIZE_RANGE)?)))
    }

    /// Block size in bytes.
    pub(crate) fn bs(&self) -> usize {
        match self {
            Block::Des(_) | Block::Tdes2(_) | Block::Tdes3(_) => 8,
            _ => 16,
        }
    }

    /// Encrypts one block in place (`b.len() == bs()`).
    pub(crate) fn enc(&self, b: &mut [u8]) {
        each!(self, c => c.encrypt_block(GenericArray::from_mut_slice(b)))
    }

    /// Decrypts one block in place (`b.len() == bs()`).
    pub(crate) fn dec(&self, b: &mut [u8]) {
        each!(self, c => c.decrypt_block(GenericArray::from_mut_slice(b)))
    }

    /// ECB encryption; data must be a multiple of the block size.
    pub(crate) fn ecb_enc(&self, data: &[u8], err: CK_RV) -> Res<Vec<u8>> {
        let bs = self.bs();
        if !data.len().is_multiple_of(bs) {
            return Err(err);
        }
        let mut out = data.to_vec();
        for b in out.chunks_exact_mut(bs) {
            self.enc(b);
        }
        Ok(out)
    }

    /// ECB decryption; data must be a multiple of the block size.
    pub(crate) fn ecb_dec(&self, data: &[u8], err: CK_RV) -> Res<Vec<u8>> {
        let bs = self.bs();
        if !data.len().is_multiple_of(bs) {
            return Err(err);
        }
        let mut out = data.to_vec();
        for b in out.chunks_exact_mut(bs) {
            self.dec(b);
        }
        Ok(out)
    }

    /// CBC encryption; data must be a multiple of the block size.
    pub(crate) fn cbc_enc(&self, iv: &[u8], data: &[u8], err: CK_RV) -> Res<Vec<u8>> {
        let bs = self.bs();
        if !data.len().is_multiple_of(bs) {
            return Err(err);
        }
        if iv.len() != bs {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        let mut out = data.to_vec();
        let mut prev = iv.to_vec();
        for b in out.chunks_exact_mut(bs) {
            b.iter_mut().zip(&prev).for_each(|(x, p)| *x ^= p);
            self.enc(b);
            prev.copy_from_slice(b);
        }
        Ok(out)
    }

    /// CBC decryption; data must be a multiple of the block size.
    pub(crate) fn cbc_dec(&self, iv: &[u8], data: &[u8], err: CK_RV) -> Res<Vec<u8>> {
        let bs = self.bs();
        if !data.len().is_multiple_of(bs) {
            return Err(err);
        }
        if iv.len() != bs {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        let mut out = data.to_vec();
        let mut prev = iv.to_vec();
        for b in out.chunks_exact_mut(bs) {
            let c = b.to_vec();
            self.dec(b);
            b.iter_mut().zip(&prev).for_each(|(x, p)| *x ^= p);
            prev = c;
        }
        Ok(out)
    }

    /// CBC with PKCS#7 padding.
    pub(crate) fn cbc_pad_enc(&self, iv: &[u8], data: &[u8]) -> Res<Vec<u8>> {
        let bs = self.bs();
        let n = bs - data.len() % bs;
        let mut d = data.to_vec();
        d.extend(std::iter::repeat_n(n as u8, n));
        self.cbc_enc(iv, &d, CKR_DATA_LEN_RANGE)
    }

    /// Inverse of [`Block::cbc_pad_enc`]; bad padding is `err`.
    pub(crate) fn cbc_pad_dec(&self, iv: &[u8], data: &[u8], err: CK_RV) -> Res<Vec<u8>> {
        if data.is_empty() {
            return Err(err);
        }
        let mut d = self.cbc_dec(iv, data, err)?;
        let n = usize::from(*d.last().ok_or(err)?);
        if n == 0 || n > self.bs() || d[d.len() - n..].iter().any(|&b| usize::from(b) != n) {
            return Err(err);
        }
        d.truncate(d.len() - n);
        Ok(d)
    }

    /// CMAC (NIST SP 800-38B), full block output.
    pub(crate) fn cmac(&self, data: &[u8]) -> Vec<u8> {
        let bs = self.bs();
        let (k1, k2) = self.subkeys();
        let n = data.len().div_ceil(bs).max(1);
        let complete = !data.is_empty() && data.len().is_multiple_of(bs);
        let mut x = vec![0u8; bs];
        for i in 0..n {
            let start = i * bs;
            let mut blk = vec![0u8; bs];
            let chunk = &data[start.min(data.len())..(start + bs).min(data.len())];
            blk[..chunk.len()].copy_from_slice(chunk);
            if i == n - 1 {
                if complete {
                    blk.iter_mut().zip(&k1).for_each(|(a, b)| *a ^= b);
                } else {
                    blk[chunk.len()] = 0x80;
                    blk.iter_mut().zip(&k2).for_each(|(a, b)| *a ^= b);
                }
            }
            x.iter_mut().zip(&blk).for_each(|(a, b)| *a ^= b);
            self.enc(&mut x);
        }
        x
    }

    /// CMAC with the NXP AN10922 padding rule: input shorter than two blocks
    /// is padded (`80 00…`) to exactly two blocks and the last block takes
    /// the K2 subkey; a full two-block input is plain CMAC.
    pub(crate) fn cmac_an10922(&self, data: &[u8]) -> Res<Vec<u8>> {
        let bs = self.bs();
        if data.is_empty() || data.len() > 2 * bs {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        if data.len() == 2 * bs {
            return Ok(self.cmac(data));
        }
        let mut d = data.to_vec();
        d.push(0x80);
        d.resize(2 * bs, 0);
        let (first, second) = d.split_at(bs);
        let mut x = first.to_vec();
        self.enc(&mut x);
        let k2 = self.subkeys().1;
        x.iter_mut().zip(second.iter().zip(&k2)).for_each(|(a, (b, k))| *a ^= b ^ k);
        self.enc(&mut x);
        Ok(x)
    }

    /// CMAC subkeys (K1, K2) per SP 800-38B §6.1.
    fn subkeys(&self) -> (Vec<u8>, Vec<u8>) {
        let bs = self.bs();
        let rb: u8 = if bs == 8 { 0x1b } else { 0x87 };
        let dbl = |v: &[u8]| -> Vec<u8> {
            let mut o = vec![0u8; bs];
            for i in 0..bs {
                o[i] = (v[i] << 1) | if i + 1 < bs { v[i + 1] >> 7 } else { 0 };
            }
            if v[0] >> 7 == 1 {
                o[bs - 1] ^= rb;
            }
            o
        };
        let mut l = vec![0u8; bs];
        self.enc(&mut l);
        let k1 = dbl(&l);
        let k2 = dbl(&k1);
        (k1, k2)
    }

    /// CBC-MAC (ISO/IEC 9797-1 MAC algorithm 1) with padding method 2 and the
    /// given IV; full block output.
    pub(crate) fn cbc_mac_m2(&self, iv: &[u8], data: &[u8]) -> Res<Vec<u8>> {
        let padded = pad_m2(data, self.bs());
        let out = self.cbc_enc(iv, &padded, CKR_DATA_LEN_RANGE)?;
        Ok(out[out.len() - self.bs()..].to_vec())
    }
}

/// ISO/IEC 9797-1 padding method 2: 0x80 then zeros to a block multiple.
pub(crate) fn pad_m2(data: &[u8], bs: usize) -> Vec<u8> {
    let mut d = data.to_vec();
    d.push(0x80);
    while !d.len().is_multiple_of(bs) {
        d.push(0);
    }
    d
}

/// ISO/IEC 9797-1 MAC algorithm 3 ("retail MAC") under a 16- or 24-byte 3DES
/// key (only the first two DES keys are used), 8-byte output. With `pad`,
/// padding method 2; without, data must be a non-empty multiple of 8.
pub(crate) fn retail_mac(key: &[u8], iv: &[u8], data: &[u8], pad: bool) -> Res<Vec<u8>> {
    if key.len() != 16 && key.len() != 24 {
        return Err(CKR_KEY_SIZE_RANGE);
    }
    let d = if pad { pad_m2(data, 8) } else { data.to_vec() };
    if d.is_empty() || d.len() % 8 != 0 {
        return Err(CKR_DATA_LEN_RANGE);
    }
    let kl = Block::des(&key[..8])?;
    let kr = Block::des(&key[8..16])?;
    let mut h = iv.to_vec();
    if h.len() != 8 {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    for b in d.chunks_exact(8) {
        h.iter_mut().zip(b).for_each(|(a, x)| *a ^= x);
        kl.enc(&mut h);
    }
    kr.dec(&mut h);
    kl.enc(&mut h);
    Ok(h)
}

/// `CKA_CHECK_VALUE` of a secret key: the first 3 bytes of encrypting a zero
/// block (DES: 8 zero bytes; AES and SM4: 16 zero bytes, the PKCS#11 3.0
/// definition).
pub(crate) fn kcv(family: Family, key: &[u8]) -> Res<Vec<u8>> {
    let c = Block::new(family, key)?;
    let mut z = vec![0u8; c.bs()];
    c.enc(&mut z);
    z.truncate(3);
    Ok(z)
}

/// Forces odd parity on every byte of a DES key.
pub(crate) fn set_odd_parity(key: &mut [u8]) {
    for b in key.iter_mut() {
        let ones = (*b & 0xfe).count_ones();
        *b = (*b & 0xfe) | u8::from(ones % 2 == 0);
    }
}

/// AES key wrap (RFC 3394) or, with `pad`, key wrap with padding (RFC 5649).
pub(crate) fn aes_kw_wrap(kek: &[u8], data: &[u8], pad: bool) -> Res<Vec<u8>> {
    use aes_kw::{KekAes128, KekAes192, KekAes256};
    let r = match kek.len() {
        16 => {
            let k = KekAes128::new(GenericArray::from_slice(kek));
            if pad { k.wrap_with_padding_vec(data) } else { k.wrap_vec(data) }
        }
        24 => {
            let k = KekAes192::new(GenericArray::from_slice(kek));
            if pad { k.wrap_with_padding_vec(data) } else { k.wrap_vec(data) }
        }
        32 => {
            let k = KekAes256::new(GenericArray::from_slice(kek));
            if pad { k.wrap_with_padding_vec(data) } else { k.wrap_vec(data) }
        }
        _ => return Err(CKR_KEY_SIZE_RANGE),
    };
    r.map_err(|_| CKR_DATA_LEN_RANGE)
}

/// Inverse of [`aes_kw_wrap`]; an integrity failure is `err`.
pub(crate) fn aes_kw_unwrap(kek: &[u8], data: &[u8], pad: bool, err: CK_RV) -> Res<Vec<u8>> {
    use aes_kw::{KekAes128, KekAes192, KekAes256};
    let r = match kek.len() {
        16 => {
            let k = KekAes128::new(GenericArray::from_slice(kek));
            if pad { k.unwrap_with_padding_vec(data) } else { k.unwrap_vec(data) }
        }
        24 => {
            let k = KekAes192::new(GenericArray::from_slice(kek));
            if pad { k.unwrap_with_padding_vec(data) } else { k.unwrap_vec(data) }
        }
        32 => {
            let k = KekAes256::new(GenericArray::from_slice(kek));
            if pad { k.unwrap_with_padding_vec(data) } else { k.unwrap_vec(data) }
        }
        _ => return Err(CKR_KEY_SIZE_RANGE),
    };
    r.map_err(|_| err)
}

/// AES-GCM parameters as accepted here: 12-byte IV, AAD, 128-bit tag.
pub(crate) struct GcmParams {
    /// The IV (12 bytes).
    pub iv: Vec<u8>,
    /// Additional authenticated data.
    pub aad: Vec<u8>,
    /// Tag length in bits (only 128 is accepted).
    pub tag_bits: u64,
}

/// AES-GCM encryption: ciphertext || tag.
pub(crate) fn gcm(key: &[u8], p: &GcmParams, data: &[u8], encrypt: bool) -> Res<Vec<u8>> {
    use aes_gcm::aead::{Aead, Payload};
    use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
    type Aes192Gcm = AesGcm<Aes192, cipher::consts::U12>;
    if p.iv.len() != 12 || p.tag_bits != 128 {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let nonce = GenericArray::from_slice(&p.iv);
    let payload = Payload { msg: data, aad: &p.aad };
    let err = if encrypt { CKR_DATA_LEN_RANGE } else { CKR_ENCRYPTED_DATA_INVALID };
    macro_rules! run {
        ($t:ty) => {{
            let c = <$t>::new_from_slice(key).map_err(|_| CKR_KEY_SIZE_RANGE)?;
            if encrypt { c.encrypt(nonce, payload) } else { c.decrypt(nonce, payload) }
        }};
    }
    let r = match key.len() {
        16 => run!(Aes128Gcm),
        24 => run!(Aes192Gcm),
        32 => run!(Aes256Gcm),
        _ => return Err(CKR_KEY_SIZE_RANGE),
    };
    r.map_err(|_| err)
}

/// One data parameter of `CKM_SP800_108_COUNTER_KDF`.
pub(crate) enum KdfData {
    /// The counter: big-endian unless `little`, `bits` wide (8..=32, /8).
    Counter {
        /// Little-endian encoding.
        little: bool,
        /// Width in bits.
        bits: u64,
    },
    /// The derived length L in bits.
    DkmLength {
        /// Little-endian encoding.
        little: bool,
        /// Width in bits.
        bits: u64,
        /// `CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS`: L counts every PRF
        /// output block, not just the key.
        segments: bool,
    },
    /// Fixed bytes.
    Bytes(Vec<u8>),
}

fn encode_int(v: u64, little: bool, bits: u64) -> Res<Vec<u8>> {
    if !(8..=64).contains(&bits) || !bits.is_multiple_of(8) {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let n = (bits / 8) as usize;
    if bits < 64 && v >> bits != 0 {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let mut b = v.to_be_bytes()[8 - n..].to_vec();
    if little {
        b.reverse();
    }
    Ok(b)
}

/// NIST SP 800-108 KDF in counter mode with a CMAC PRF under `prf`, producing
/// `len` bytes. Exactly one counter parameter is required.
pub(crate) fn sp800_108_counter(prf: &Block, data: &[KdfData], len: usize) -> Res<Zeroizing<Vec<u8>>> {
    if len == 0 || len > 4096 {
        return Err(CKR_KEY_SIZE_RANGE);
    }
    if data.iter().filter(|d| matches!(d, KdfData::Counter { .. })).count() != 1 {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let h = prf.bs();
    let n = len.div_ceil(h);
    let mut out = Zeroizing::new(Vec::with_capacity(n * h));
    for i in 1..=n as u64 {
        let mut input = Vec::new();
        for d in data {
            match d {
                KdfData::Counter { little, bits } => input.extend(encode_int(i, *little, *bits)?),
                KdfData::DkmLength { little, bits, segments } => {
                    let l = if *segments { n * h } else { len };
                    input.extend(encode_int(l as u64 * 8, *little, *bits)?)
                }
                KdfData::Bytes(b) => input.extend_from_slice(b),
            }
        }
        out.extend(prf.cmac(&input));
    }
    out.truncate(len);
    Ok(out)
}
