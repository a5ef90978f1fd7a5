//! Public-key primitives: ECDSA and ECDH on P-256/P-384, SM2 (signature with
//! distinguishing ID, encryption C1C3C2), RSA (PKCS#1 v1.5, PSS, OAEP).

use cryptoki_sys::*;
use elliptic_curve::sec1::ToEncodedPoint;
use rand_core::OsRng;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::Res;

/// DER of OID 1.2.840.10045.3.1.7 (P-256).
pub(crate) const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of OID 1.3.132.0.34 (P-384).
pub(crate) const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of OID 1.2.156.10197.1.301 (sm2p256v1).
pub(crate) const OID_SM2: &[u8] = &[0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d];

/// Default SM2 distinguishing ID (GB/T 35276).
pub(crate) const SM2_DEFAULT_ID: &[u8] = b"1234567812345678";

/// An elliptic curve known here.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Curve {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
    /// SM2 (sm2p256v1).
    Sm2,
}

impl Curve {
    /// The curve named by a `CKA_EC_PARAMS` value (DER OID).
    pub(crate) fn from_params(der: &[u8]) -> Res<Self> {
        match der {
            OID_P256 => Ok(Curve::P256),
            OID_P384 => Ok(Curve::P384),
            OID_SM2 => Ok(Curve::Sm2),
            _ => Err(CKR_CURVE_NOT_SUPPORTED),
        }
    }

    /// DER OID for `CKA_EC_PARAMS`.
    pub(crate) fn params(self) -> &'static [u8] {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
            Curve::Sm2 => OID_SM2,
        }
    }

    /// Field size in bytes.
    pub(crate) fn len(self) -> usize {
        match self {
            Curve::P384 => 48,
            _ => 32,
        }
    }
}

/// Generates a key pair: (private scalar, uncompressed public point).
pub(crate) fn ec_generate(curve: Curve) -> (Zeroizing<Vec<u8>>, Vec<u8>) {
    macro_rules! gen_ {
        ($m:ident) => {{
            let sk = $m::SecretKey::random(&mut OsRng);
            let pt = sk.public_key().to_encoded_point(false).as_bytes().to_vec();
            (Zeroizing::new(sk.to_bytes().to_vec()), pt)
        }};
    }
    match curve {
        Curve::P256 => gen_!(p256),
        Curve::P384 => gen_!(p384),
        Curve::Sm2 => gen_!(sm2),
    }
}

/// The public point for a private scalar (used on `C_CreateObject` checks).
pub(crate) fn ec_public_from_private(curve: Curve, d: &[u8]) -> Res<Vec<u8>> {
    macro_rules! pubk {
        ($m:ident) => {{
            let sk = $m::SecretKey::from_slice(d).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            Ok(sk.public_key().to_encoded_point(false).as_bytes().to_vec())
        }};
    }
    match curve {
        Curve::P256 => pubk!(p256),
        Curve::P384 => pubk!(p384),
        Curve::Sm2 => pubk!(sm2),
    }
}

/// DER OCTET STRING around an uncompressed point (`CKA_EC_POINT`, as SoftHSM).
pub(crate) fn der_octet_string(v: &[u8]) -> Vec<u8> {
    let mut o = vec![0x04];
    if v.len() < 0x80 {
        o.push(v.len() as u8);
    } else {
        o.push(0x81);
        o.push(v.len() as u8);
    }
    o.extend_from_slice(v);
    o
}

/// The raw point from a `CKA_EC_POINT` value or ECDH public data: accepts the
/// DER OCTET STRING form and the raw uncompressed point.
pub(crate) fn raw_point(curve: Curve, v: &[u8]) -> Res<Vec<u8>> {
    let n = 1 + 2 * curve.len();
    if v.len() == n && v[0] == 0x04 {
        return Ok(v.to_vec());
    }
    let inner = match v {
        [0x04, l, rest @ ..] if usize::from(*l) == rest.len() => rest,
        [0x04, 0x81, l, rest @ ..] if usize::from(*l) == rest.len() => rest,
        _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
    };
    if inner.len() == n && inner[0] == 0x04 { Ok(inner.to_vec()) } else { Err(CKR_ATTRIBUTE_VALUE_INVALID) }
}

/// A parsed private key, cached on its object.
pub(crate) enum PrivKey {
    /// P-256 ECDSA key.
    P256(p256::ecdsa::SigningKey),
    /// P-384 ECDSA key.
    P384(p384::ecdsa::SigningKey),
    /// SM2 key.
    Sm2(sm2::SecretKey),
    /// RSA key.
    Rsa(Box<RsaPrivateKey>),
}

/// A parsed public key, cached on its object.
pub(crate) enum PubKey {
    /// P-256 point.
    P256(p256::ecdsa::VerifyingKey),
    /// P-384 point.
    P384(p384::ecdsa::VerifyingKey),
    /// SM2 point (uncompressed bytes).
    Sm2(Vec<u8>),
    /// RSA key.
    Rsa(Box<RsaPublicKey>),
}

impl PrivKey {
    /// Parses an EC/SM2 private scalar.
    pub(crate) fn ec(curve: Curve, d: &[u8]) -> Res<Self> {
        Ok(match curve {
            Curve::P256 => PrivKey::P256(p256::ecdsa::SigningKey::from_slice(d).map_err(bad_key)?),
            Curve::P384 => PrivKey::P384(p384::ecdsa::SigningKey::from_slice(d).map_err(bad_key)?),
            Curve::Sm2 => PrivKey::Sm2(sm2::SecretKey::from_slice(d).map_err(bad_key)?),
        })
    }

    /// Builds an RSA key from its components.
    pub(crate) fn rsa(n: &[u8], e: &[u8], d: &[u8], p: &[u8], q: &[u8]) -> Res<Self> {
        let b = BigUint::from_bytes_be;
        let k =
            RsaPrivateKey::from_components(b(n), b(e), b(d), vec![b(p), b(q)]).map_err(|_| CKR_KEY_HANDLE_INVALID)?;
        Ok(PrivKey::Rsa(Box::new(k)))
    }
}

impl PubKey {
    /// Parses an EC/SM2 public point (raw uncompressed).
    pub(crate) fn ec(curve: Curve, point: &[u8]) -> Res<Self> {
        Ok(match curve {
            Curve::P256 => PubKey::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_key)?),
            Curve::P384 => PubKey::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_key)?),
            Curve::Sm2 => {
                sm2::PublicKey::from_sec1_bytes(point).map_err(bad_key)?;
                PubKey::Sm2(point.to_vec())
            }
        })
    }

    /// Builds an RSA public key.
    pub(crate) fn rsa(n: &[u8], e: &[u8]) -> Res<Self> {
        let k = RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
            .map_err(|_| CKR_KEY_HANDLE_INVALID)?;
        Ok(PubKey::Rsa(Box::new(k)))
    }
}

/// ECDSA over a precomputed hash, raw r||s output.
pub(crate) fn ecdsa_sign(key: &PrivKey, hash: &[u8]) -> Res<Vec<u8>> {
    use ecdsa::signature::hazmat::PrehashSigner;
    match key {
        PrivKey::P256(k) => {
            let d: &p256::NonZeroScalar = k.as_nonzero_scalar();
            p256_fast::sign_prehash(d, hash).map(|s| s.to_vec()).ok_or(CKR_DATA_LEN_RANGE)
        }
        PrivKey::P384(k) => {
            let s: p384::ecdsa::Signature = k.sign_prehash(hash).map_err(|_| CKR_DATA_LEN_RANGE)?;
            Ok(s.to_bytes().to_vec())
        }
        _ => Err(CKR_KEY_TYPE_INCONSISTENT),
    }
}

/// Verifies a raw r||s ECDSA signature over a precomputed hash.
pub(crate) fn ecdsa_verify(key: &PubKey, hash: &[u8], sig: &[u8]) -> Res<()> {
    use ecdsa::signature::hazmat::PrehashVerifier;
    match key {
        PubKey::P256(k) => {
            if sig.len() != 64 {
                return Err(CKR_SIGNATURE_LEN_RANGE);
            }
            let s = p256::ecdsa::Signature::from_slice(sig).map_err(|_| CKR_SIGNATURE_INVALID)?;
            k.verify_prehash(hash, &s).map_err(|_| CKR_SIGNATURE_INVALID)
        }
        PubKey::P384(k) => {
            if sig.len() != 96 {
                return Err(CKR_SIGNATURE_LEN_RANGE);
            }
            let s = p384::ecdsa::Signature::from_slice(sig).map_err(|_| CKR_SIGNATURE_INVALID)?;
            k.verify_prehash(hash, &s).map_err(|_| CKR_SIGNATURE_INVALID)
        }
        _ => Err(CKR_KEY_TYPE_INCONSISTENT),
    }
}

/// ECDH (CKD_NULL): the x coordinate of d * peer.
pub(crate) fn ecdh(curve: Curve, d: &[u8], peer: &[u8]) -> Res<Zeroizing<Vec<u8>>> {
    macro_rules! dh {
        ($m:ident) => {{
            let sk = $m::SecretKey::from_slice(d).map_err(|_| CKR_KEY_HANDLE_INVALID)?;
            let pk = $m::PublicKey::from_sec1_bytes(peer).map_err(bad_key)?;
            let s = $m::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
            Ok(Zeroizing::new(s.raw_secret_bytes().to_vec()))
        }};
    }
    match curve {
        Curve::P256 => dh!(p256),
        Curve::P384 => dh!(p384),
        Curve::Sm2 => Err(CKR_MECHANISM_INVALID),
    }
}

/// The hash of an ANSI X9.63 key derivation function named by a `CKD_*`
/// value (`CK_ECDH1_DERIVE_PARAMS.kdf`), or `None` for `CKD_NULL`.
pub(crate) fn x963_hash(kdf: CK_EC_KDF_TYPE) -> Res<Option<Hash>> {
    match kdf {
        CKD_NULL => Ok(None),
        CKD_SHA1_KDF => Ok(Some(Hash::Sha1)),
        CKD_SHA256_KDF => Ok(Some(Hash::Sha256)),
        CKD_SHA384_KDF => Ok(Some(Hash::Sha384)),
        CKD_SHA512_KDF => Ok(Some(Hash::Sha512)),
        // SHA-224, SHA-3 and the SP 800-56A variants are not offered.
        _ => Err(CKR_MECHANISM_PARAM_INVALID),
    }
}

/// Most output the X9.63 KDF produces here (the longest secret key is 512
/// bytes; a bound keeps a hostile template from asking for gigabytes).
pub(crate) const X963_MAX_LEN: usize = 4096;

/// ANSI X9.63-2001 key derivation (SEC 1 v2 §3.6.1), as PKCS#11 v2.40
/// §2.3.x defines `CKD_SHA*_KDF`: `H(Z || counter || SharedInfo)` for a
/// 32-bit big-endian counter from 1, concatenated and cut to `len` bytes.
pub(crate) fn x963_kdf(hash: Hash, z: &[u8], shared_info: &[u8], len: usize) -> Res<Zeroizing<Vec<u8>>> {
    if len == 0 || len > X963_MAX_LEN {
        return Err(CKR_KEY_SIZE_RANGE);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len + hash.len()));
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut input = Zeroizing::new(Vec::with_capacity(z.len() + 4 + shared_info.len()));
        input.extend_from_slice(z);
        input.extend_from_slice(&counter.to_be_bytes());
        input.extend_from_slice(shared_info);
        let block = Zeroizing::new(hash.digest(&input));
        out.extend_from_slice(&block);
        counter = counter.checked_add(1).ok_or(CKR_KEY_SIZE_RANGE)?;
    }
    out.truncate(len);
    Ok(out)
}

fn bad_key<E>(_: E) -> CK_RV {
    CKR_KEY_HANDLE_INVALID
}

fn distid(id: &[u8]) -> Res<&str> {
    std::str::from_utf8(id).map_err(|_| CKR_MECHANISM_PARAM_INVALID)
}

/// SM2 signature of a raw message with distinguishing ID, raw r||s output.
pub(crate) fn sm2_sign(key: &PrivKey, id: &[u8], msg: &[u8]) -> Res<Vec<u8>> {
    use ecdsa::signature::RandomizedSigner;
    let PrivKey::Sm2(sk) = key else { return Err(CKR_KEY_TYPE_INCONSISTENT) };
    let signer = sm2::dsa::SigningKey::new(distid(id)?, sk).map_err(|_| CKR_KEY_HANDLE_INVALID)?;
    let sig: sm2::dsa::Signature = signer.try_sign_with_rng(&mut OsRng, msg).map_err(|_| CKR_FUNCTION_FAILED)?;
    Ok(sig.to_bytes().to_vec())
}

/// Verifies an SM2 signature (raw r||s) of a raw message with distinguishing ID.
pub(crate) fn sm2_verify(key: &PubKey, id: &[u8], msg: &[u8], sig: &[u8]) -> Res<()> {
    use ecdsa::signature::Verifier;
    let PubKey::Sm2(pt) = key else { return Err(CKR_KEY_TYPE_INCONSISTENT) };
    if sig.len() != 64 {
        return Err(CKR_SIGNATURE_LEN_RANGE);
    }
    let vk = sm2::dsa::VerifyingKey::from_sec1_bytes(distid(id)?, pt).map_err(|_| CKR_KEY_HANDLE_INVALID)?;
    let s = sm2::dsa::Signature::from_slice(sig).map_err(|_| CKR_SIGNATURE_INVALID)?;
    vk.verify(msg, &s).map_err(|_| CKR_SIGNATURE_INVALID)
}

/// The SM2 key-derivation function (GB/T 32918.4, 5.4.3) over SM3.
fn sm2_kdf(z: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut ct: u32 = 1;
    while out.len() < len {
        let mut h = sm3::Sm3::new();
        h.update(z);
        h.update(ct.to_be_bytes());
        out.extend_from_slice(&h.finalize());
        ct = ct.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// SM2 encryption (GB/T 32918.4), output C1 || C3 || C2.
pub(crate) fn sm2_encrypt(key: &PubKey, msg: &[u8]) -> Res<Vec<u8>> {
    let PubKey::Sm2(pt) = key else { return Err(CKR_KEY_TYPE_INCONSISTENT) };
    if msg.is_empty() {
        return Err(CKR_DATA_LEN_RANGE);
    }
    let pk = sm2::PublicKey::from_sec1_bytes(pt).map_err(|_| CKR_KEY_HANDLE_INVALID)?;
    for _ in 0..16 {
        let k = sm2::NonZeroScalar::random(&mut OsRng);
        let c1 = (sm2::ProjectivePoint::GENERATOR * *k).to_affine().to_encoded_point(false);
        let s = (pk.to_projective() * *k).to_affine().to_encoded_point(false);
        let xy = Zeroizing::new(s.as_bytes()[1..].to_vec());
        let t = sm2_kdf(&xy, msg.len());
        if t.iter().all(|&b| b == 0) {
            continue;
        }
        let mut h = sm3::Sm3::new();
        h.update(&xy[..32]);
        h.update(msg);
        h.update(&xy[32..]);
        let mut out = c1.as_bytes().to_vec();
        out.extend_from_slice(&h.finalize());
        out.extend(msg.iter().zip(t.iter()).map(|(a, b)| a ^ b));
        return Ok(out);
    }
    Err(CKR_FUNCTION_FAILED)
}

/// SM2 decryption of C1 || C3 || C2.
pub(crate) fn sm2_decrypt(key: &PrivKey, ct: &[u8]) -> Res<Zeroizing<Vec<u8>>> {
    let PrivKey::Sm2(sk) = key else { return Err(CKR_KEY_TYPE_INCONSISTENT) };
    if ct.len() < 65 + 32 + 1 {
        return Err(CKR_ENCRYPTED_DATA_LEN_RANGE);
    }
    let c1 = sm2::PublicKey::from_sec1_bytes(&ct[..65]).map_err(|_| CKR_ENCRYPTED_DATA_INVALID)?;
    let (c3, c2) = ct[65..].split_at(32);
    let s = (c1.to_projective() * *sk.to_nonzero_scalar()).to_affine().to_encoded_point(false);
    let xy = Zeroizing::new(s.as_bytes()[1..].to_vec());
    let t = sm2_kdf(&xy, c2.len());
    if t.iter().all(|&b| b == 0) {
        return Err(CKR_ENCRYPTED_DATA_INVALID);
    }
    let m = Zeroizing::new(c2.iter().zip(t.iter()).map(|(a, b)| a ^ b).collect::<Vec<u8>>());
    let mut h = sm3::Sm3::new();
    h.update(&xy[..32]);
    h.update(&m[..]);
    h.update(&xy[32..]);
    if bool::from(h.finalize().as_slice().ct_eq(c3)) { Ok(m) } else { Err(CKR_ENCRYPTED_DATA_INVALID) }
}

/// PKCS#8 `PrivateKeyInfo` DER of a private key (for `C_WrapKey`).
pub(crate) fn pkcs8_encode(key: &PrivKey) -> Res<Zeroizing<Vec<u8>>> {
    use elliptic_curve::pkcs8::EncodePrivateKey;
    let doc = match key {
        PrivKey::P256(k) => p256::SecretKey::from(k.as_nonzero_scalar()).to_pkcs8_der(),
        PrivKey::P384(k) => p384::SecretKey::from(k.as_nonzero_scalar()).to_pkcs8_der(),
        PrivKey::Sm2(k) => k.to_pkcs8_der(),
        PrivKey::Rsa(k) => rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&**k),
    }
    .map_err(|_| CKR_KEY_NOT_WRAPPABLE)?;
    Ok(Zeroizing::new(doc.as_bytes().to_vec()))
}

/// A private key recovered from PKCS#8 (for `C_UnwrapKey`).
pub(crate) enum Pkcs8Key {
    /// EC or SM2: curve and private scalar.
    Ec(Curve, Zeroizing<Vec<u8>>),
    /// RSA components.
    Rsa(RsaParts),
}

/// Parses PKCS#8 `PrivateKeyInfo` DER; anything else is
/// `CKR_WRAPPED_KEY_INVALID`.
pub(crate) fn pkcs8_decode(der: &[u8]) -> Res<Pkcs8Key> {
    use elliptic_curve::pkcs8::DecodePrivateKey;
    if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
        return Ok(Pkcs8Key::Ec(Curve::P256, Zeroizing::new(k.to_bytes().to_vec())));
    }
    if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
        return Ok(Pkcs8Key::Ec(Curve::P384, Zeroizing::new(k.to_bytes().to_vec())));
    }
    if let Ok(k) = sm2::SecretKey::from_pkcs8_der(der) {
        return Ok(Pkcs8Key::Ec(Curve::Sm2, Zeroizing::new(k.to_bytes().to_vec())));
    }
    let k =
        <RsaPrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_der(der).map_err(|_| CKR_WRAPPED_KEY_INVALID)?;
    Ok(Pkcs8Key::Rsa(rsa_parts(&k)?))
}

/// RSA key components, big-endian.
pub(crate) struct RsaParts {
    /// Modulus.
    pub n: Vec<u8>,
    /// Public exponent.
    pub e: Vec<u8>,
    /// Private exponent and CRT values: d, p, q, dp, dq, qinv.
    pub private: [Zeroizing<Vec<u8>>; 6],
}

/// Generates an RSA key of `bits` with public exponent `e`.
pub(crate) fn rsa_generate(bits: usize, e: &[u8]) -> Res<RsaParts> {
    let e = BigUint::from_bytes_be(e);
    let k = RsaPrivateKey::new_with_exp(&mut OsRng, bits, &e).map_err(|_| CKR_TEMPLATE_INCONSISTENT)?;
    rsa_parts(&k)
}

fn rsa_parts(k: &RsaPrivateKey) -> Res<RsaParts> {
    let z = |v: &BigUint| Zeroizing::new(v.to_bytes_be());
    let primes = k.primes();
    let (p, q) = match primes {
        [p, q] => (p, q),
        _ => return Err(CKR_FUNCTION_FAILED),
    };
    let dp = k.dp().map(z).ok_or(CKR_FUNCTION_FAILED)?;
    let dq = k.dq().map(z).ok_or(CKR_FUNCTION_FAILED)?;
    let qinv = k.crt_coefficient().map(|c| Zeroizing::new(c.to_bytes_be())).ok_or(CKR_FUNCTION_FAILED)?;
    Ok(RsaParts { n: k.n().to_bytes_be(), e: k.e().to_bytes_be(), private: [z(k.d()), z(p), z(q), dp, dq, qinv] })
}

/// Hash algorithms used by the RSA schemes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Hash {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    /// From a `CKM_SHA*` (hashAlg) or `CKG_MGF1_SHA*` value.
    pub(crate) fn from_ckm(m: CK_ULONG) -> Res<Self> {
        match m {
            CKM_SHA_1 => Ok(Hash::Sha1),
            CKM_SHA256 => Ok(Hash::Sha256),
            CKM_SHA384 => Ok(Hash::Sha384),
            CKM_SHA512 => Ok(Hash::Sha512),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        }
    }

    /// From a `CKG_MGF1_*` value.
    pub(crate) fn from_mgf(m: CK_ULONG) -> Res<Self> {
        match m {
            CKG_MGF1_SHA1 => Ok(Hash::Sha1),
            CKG_MGF1_SHA256 => Ok(Hash::Sha256),
            CKG_MGF1_SHA384 => Ok(Hash::Sha384),
            CKG_MGF1_SHA512 => Ok(Hash::Sha512),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        }
    }

    /// Hashes `data`.
    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha384 => Sha384::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Output length.
    pub(crate) fn len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }
}

/// An RSA signature scheme.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RsaSig {
    /// PKCS#1 v1.5 over caller-supplied DigestInfo (`CKM_RSA_PKCS`).
    Pkcs1Raw,
    /// PKCS#1 v1.5 with the given hash of the message.
    Pkcs1(Hash),
    /// PSS over a caller-supplied hash, salt length.
    Pss(Hash, usize),
}

fn pkcs1(h: Hash) -> Pkcs1v15Sign {
    match h {
        Hash::Sha1 => Pkcs1v15Sign::new::<Sha1>(),
        Hash::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
        Hash::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
        Hash::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
    }
}

fn pss(h: Hash, salt: usize) -> Pss {
    match h {
        Hash::Sha1 => Pss::new_with_salt::<Sha1>(salt),
        Hash::Sha256 => Pss::new_with_salt::<Sha256>(salt),
        Hash::Sha384 => Pss::new_with_salt::<Sha384>(salt),
        Hash::Sha512 => Pss::new_with_salt::<Sha512>(salt),
    }
}

/// RSA signature; `data` is the DigestInfo (raw), the message (hashing
/// variants are hashed here by the caller) or the hash (PSS).
pub(crate) fn rsa_sign(key: &PrivKey, scheme: RsaSig, data: &[u8]) -> Res<Vec<u8>> {
    let PrivKey::Rsa(k) = key else { return Err(CKR_KEY_TYPE_INCONSISTENT) };
    let r = match scheme {
        RsaSig::Pkcs1Raw => k.sign(Pkcs1v15Sign::new_unprefixed(), data),
        RsaSig::Pkcs1(h) => k.sign(pkcs1(h), data),
        RsaSig::Pss(h, salt) => {
            if data.len() != h.len() {
                return Err(CKR_DATA_LEN_RANGE);
            }
            k.sign_with_rng(&mut OsRng, pss(h, salt), data)
        }
    };
    r.map_err(|_| CKR_DATA_LEN_RANGE)
}

/// Verifies an RSA signature (see [`rsa_sign`] for `data`).
pub(crate) fn rsa_verify(key: &PubKey, scheme: RsaSig, data: &[u8], sig: &[u8]) -> Res<()> {
    let PubKey::Rsa(k) = key else { return Err(CKR_KEY_TYPE_INCONSISTENT) };
    if sig.len() != k.size() {
        return Err(CKR_SIGNATURE_LEN_RANGE);
    }
    let r = match scheme {
        RsaSig::Pkcs1Raw => k.verify(Pkcs1v15Sign::new_unprefixed(), data, sig),
        RsaSig::Pkcs1(h) => k.verify(pkcs1(h), data, sig),
        RsaSig::Pss(h, salt) => k.verify(pss(h, salt), data, sig),
    };
    r.map_err(|_| CKR_SIGNATURE_INVALID)
}

/// An RSA encryption scheme.
#[derive(Clone, Debug)]
pub(crate) enum RsaEnc {
    /// PKCS#1 v1.5 encryption.
    Pkcs1,
    /// OAEP with hash, MGF1 hash and optional label.
    Oaep(Hash, Hash, Option<String>),
}

fn oaep(h: Hash, mgf: Hash, label: Option<String>) -> Oaep {
    macro_rules! o {
        ($d:ty) => {
            match (mgf, label) {
                (Hash::Sha1, Some(l)) => Oaep::new_with_mgf_hash_and_label::<$d, Sha1, _>(l),
                (Hash::Sha256, Some(l)) => Oaep::new_with_mgf_hash_and_label::<$d, Sha256, _>(l),
                (Hash::Sha384, Some(l)) => Oaep::new_with_mgf_hash_and_label::<$d, Sha384, _>(l),
                (Hash::Sha512, Some(l)) => Oaep::new_with_mgf_hash_and_label::<$d, Sha512, _>(l),
                (Hash::Sha1, None) => Oaep::new_with_mgf_hash::<$d, Sha1>(),
                (Hash::Sha256, None) => Oaep::new_with_mgf_hash::<$d, Sha256>(),
                (Hash::Sha384, None) => Oaep::new_with_mgf_hash::<$d, Sha384>(),
                (Hash::Sha512, None) => Oaep::new_with_mgf_hash::<$d, Sha512>(),
            }
        };
    }
    match h {
        Hash::Sha1 => o!(Sha1),
        Hash::Sha256 => o!(Sha256),
        Hash::Sha384 => o!(Sha384),
        Hash::Sha512 => o!(Sha512),
    }
}

/// RSA encryption.
pub(crate) fn rsa_encrypt(key: &PubKey, scheme: &RsaEnc, data: &[u8]) -> Res<Vec<u8>> {
    let PubKey::Rsa(k) = key else { return Err(CKR_KEY_TYPE_INCONSISTENT) };
    let r = match scheme {
        RsaEnc::Pkcs1 => k.encrypt(&mut OsRng, Pkcs1v15Encrypt, data),
        RsaEnc::Oaep(h, m, l) => k.encrypt(&mut OsRng, oaep(*h, *m, l.clone()), data),
    };
    r.map_err(|_| CKR_DATA_LEN_RANGE)
}

/// RSA decryption.
pub(crate) fn rsa_decrypt(key: &PrivKey, scheme: &RsaEnc, data: &[u8]) -> Res<Zeroizing<Vec<u8>>> {
    let PrivKey::Rsa(k) = key else { return Err(CKR_KEY_TYPE_INCONSISTENT) };
    if data.len() != k.size() {
        return Err(CKR_ENCRYPTED_DATA_LEN_RANGE);
    }
    let r = match scheme {
        RsaEnc::Pkcs1 => k.decrypt(Pkcs1v15Encrypt, data),
        RsaEnc::Oaep(h, m, l) => k.decrypt(oaep(*h, *m, l.clone()), data),
    };
    r.map(Zeroizing::new).map_err(|_| CKR_ENCRYPTED_DATA_INVALID)
}

/// P-256 ECDSA signing with a precomputed fixed-base table.
///
/// why: k·G dominates signing; the generic double-and-add in `p256` 0.13 has
/// no generator table. Here k·G = Σ T[i][nibble_i(k)] with T[i][j] = j·16^i·G
/// (64 × 16 affine points, built once), each row read with constant-time
/// selects so the nonce does not leak through the table index. The result
/// is the same RFC 6979 signature `ecdsa::SigningKey::sign_prehash` gives.
pub(crate) mod p256_fast {
    use std::sync::OnceLock;

    use elliptic_curve::Group;
    use elliptic_curve::ff::{Field, PrimeField};
    use elliptic_curve::ops::Reduce;
    use elliptic_curve::point::AffineCoordinates;
    use elliptic_curve::subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
    use p256::{AffinePoint, FieldBytes, ProjectivePoint, Scalar, U256};

    /// T[i][j] = j·16^i·G for j in 0..=8 (entry 0 is the identity).
    type Row = [AffinePoint; 9];

    static TABLE: OnceLock<Vec<Row>> = OnceLock::new();

    /// Order n of the P-256 group, big-endian.
    const ORDER: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6,
        0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
    ];

    fn table() -> &'static [Row] {
        TABLE.get_or_init(|| {
            // 65 rows: signed-digit recoding can carry into a 65th digit.
            let mut out = Vec::with_capacity(65);
            let mut base = ProjectivePoint::GENERATOR;
            for _ in 0..65 {
                let mut row = [AffinePoint::IDENTITY; 9];
                let mut acc = ProjectivePoint::IDENTITY;
                for slot in row.iter_mut().skip(1) {
                    acc += base;
                    *slot = acc.to_affine();
                }
                out.push(row);
                for _ in 0..4 {
                    base = base.double();
                }
            }
            out
        })
    }

    /// k·G in constant time with respect to k: signed 4-bit digits in
    /// -8..=8, one constant-time row scan and conditional negation each.
    pub(crate) fn mul_generator(k: &Scalar) -> ProjectivePoint {
        let bytes = k.to_repr();
        let t = table();
        let mut acc = ProjectivePoint::IDENTITY;
        let mut carry: u8 = 0;
        for (i, row) in t.iter().enumerate() {
            let nib = if i == 64 {
                0
            } else {
                let byte = bytes[31 - i / 2];
                if i % 2 == 0 { byte & 0x0f } else { byte >> 4 }
            };
            let d = nib + carry; // 0..=16
            carry = (8u8.wrapping_sub(d) >> 7) & 1; // 1 iff d > 8
            let signed = d as i8 - 16 * carry as i8; // -8..=8
            let neg = ((signed >> 7) & 1) as u8;
            let abs = ((signed as u8) ^ 0u8.wrapping_sub(neg)).wrapping_add(neg);
            let mut sel = AffinePoint::IDENTITY;
            for (j, p) in row.iter().enumerate().skip(1) {
                sel.conditional_assign(p, abs.ct_eq(&(j as u8)));
            }
            let negated = -sel;
            sel.conditional_assign(&negated, Choice::from(neg));
            acc += sel;
        }
        acc
    }

    /// ECDSA over a prehash (bits2field as in `ecdsa`), RFC 6979 nonce,
    /// raw r‖s output; `None` for a too-short hash.
    pub(crate) fn sign_prehash(d: &Scalar, prehash: &[u8]) -> Option<[u8; 64]> {
        if prehash.len() < 16 {
            return None;
        }
        let mut z = FieldBytes::default();
        if prehash.len() >= 32 {
            z.copy_from_slice(&prehash[..32]);
        } else {
            z[32 - prehash.len()..].copy_from_slice(prehash);
        }
        let k_bytes = rfc6979::generate_k::<sha2::Sha256, _>(&d.to_repr(), &FieldBytes::from(ORDER), &z, &[]);
        let k: Scalar = Option::from(Scalar::from_repr(k_bytes))?;
        // why: p256's constant-time scalar inversion costs as much as a third
        // of the signature; invert k·b (uniformly random, so variable time
        // leaks nothing about k) and multiply by the blinding factor b.
        let b = *p256::NonZeroScalar::random(&mut rand_core::OsRng);
        let kb_inv: Scalar = Option::from(elliptic_curve::ops::Invert::invert_vartime(&(k * b)))?;
        let k_inv = kb_inv * b;
        let big_r = mul_generator(&k).to_affine();
        let r = <Scalar as Reduce<U256>>::reduce_bytes(&big_r.x());
        let zs = <Scalar as Reduce<U256>>::reduce_bytes(&z);
        let s = k_inv * (zs + r * d);
        if bool::from(r.is_zero()) || bool::from(s.is_zero()) {
            return None;
        }
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&r.to_repr());
        out[32..].copy_from_slice(&s.to_repr());
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::p256_fast;
    use elliptic_curve::Field;
    use elliptic_curve::ff::PrimeField;

    /// NIST CAVS 12.0 ANS X9.63-2001 KDF vectors (`ansx963_2001.rsp`,
    /// COUNT = 0 of the SHA-1 and SHA-256 sections), also reproduced with
    /// `openssl kdf -keylen N -kdfopt digest:SHA256 -kdfopt hexsecret:Z
    /// -kdfopt hexinfo:SharedInfo X963KDF` (OpenSSL 3.0).
    #[test]
    fn x963_kdf_cavs_vectors() {
        use super::{Hash, x963_kdf};
        let h = |s: &str| {
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<u8>>()
        };
        let cases: [(Hash, &str, &str, &str); 3] = [
            (Hash::Sha1, "1c7d7b5f0597b03d06a018466ed1a93e30ed4b04dc64ccdd", "", "bf71dffd8f4d99223936beb46fee8ccc"),
            (Hash::Sha256, "96c05619d56c328ab95fe84b18264b08725b85e33fd34f08", "", "443024c3dae66b95e6f5670601558f71"),
            (
                Hash::Sha256,
                "22518b10e70f2a3f243810ae3254139efbee04aa57c7af7d",
                "75eef81aa3041e33b80971203d2c0c52",
                "c498af77161cc59f2962b9a713e2b215152d139766ce34a776df11866a69bf2e52a13d9c7c6fc878c50c5ea0bc7b00e0\
                 da2447cfd874f6cf92f30d0097111485500c90c3af8b487872d04685d14c8d1dc8d7fa08beb0ce0ababc11f0bd496269\
                 142d43525a78e5bc79a17f59676a5706dc54d54d4d1f0bd7e386128ec26afc21",
            ),
        ];
        for (hash, z, info, want) in cases {
            let want: String = want.split_whitespace().collect();
            let out = x963_kdf(hash, &h(z), &h(info), want.len() / 2).unwrap();
            assert_eq!(out.as_slice(), h(&want).as_slice(), "{hash:?} Z={z}");
        }
        assert!(x963_kdf(Hash::Sha256, &[1], &[], 0).is_err());
        assert!(x963_kdf(Hash::Sha256, &[1], &[], super::X963_MAX_LEN + 1).is_err());
    }

    #[test]
    fn fixed_base_matches_generic_multiplication() {
        let mut scalars = vec![p256::Scalar::ZERO, p256::Scalar::ONE, -p256::Scalar::ONE];
        // All-0x88 / all-0xff-ish patterns exercise the digit carries.
        for b in [0x88u8, 0x99, 0x77, 0x0f] {
            scalars.push(Option::from(p256::Scalar::from_repr([b; 32].into())).unwrap());
        }
        for _ in 0..64 {
            scalars.push(p256::Scalar::random(&mut rand_core::OsRng));
        }
        for k in scalars {
            assert_eq!(p256_fast::mul_generator(&k), p256::ProjectivePoint::GENERATOR * k);
        }
    }
}
