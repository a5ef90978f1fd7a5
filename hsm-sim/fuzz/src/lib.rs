//! Fuzz harness for hsm-sim's C ABI: turns arbitrary bytes into attribute
//! templates and mechanism parameters (always with pointers and lengths that
//! are valid for the caller's side of the contract) and drives
//! `C_CreateObject`, `C_GenerateKey`, `C_DeriveKey`, `C_EncryptInit`/
//! `C_Encrypt`, `C_SignInit`/`C_Sign`, `C_GetAttributeValue`,
//! `C_SetAttributeValue`, `C_FindObjects*`, `C_WrapKey` and `C_UnwrapKey`.
//! Any return value is fine; a crash, hang or panic escaping the module is
//! a bug. Shared with `tests/fuzz_smoke.rs`, which runs it briefly.
#![allow(unsafe_code, missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ptr::null_mut;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use cryptoki_sys::*;
use hsm_sim::ffi;

struct Env {
    h: CK_SESSION_HANDLE,
    keys: Vec<CK_OBJECT_HANDLE>,
    _dir: tempfile::TempDir,
}

static ENV: OnceLock<Env> = OnceLock::new();

const ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_VALUE,
    CKA_KEY_TYPE,
    CKA_VALUE_LEN,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_DERIVE,
    CKA_CHECK_VALUE,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_TRUSTED,
    CKA_WRAP_WITH_TRUSTED,
    CKA_LOCAL,
    CKA_ID,
    CKA_MODIFIABLE,
    CKA_PRIME_1,
];

const MECHS: &[CK_MECHANISM_TYPE] = &[
    CKM_DES2_KEY_GEN,
    CKM_DES3_KEY_GEN,
    CKM_DES3_ECB,
    CKM_DES3_CBC,
    CKM_DES3_CBC_PAD,
    CKM_DES3_ECB_ENCRYPT_DATA,
    CKM_DES3_CBC_ENCRYPT_DATA,
    CKM_DES3_CMAC,
    CKM_DES3_CMAC_GENERAL,
    CKM_AES_KEY_GEN,
    CKM_AES_ECB,
    CKM_AES_CBC,
    CKM_AES_CBC_PAD,
    CKM_AES_GCM,
    CKM_AES_ECB_ENCRYPT_DATA,
    CKM_AES_CBC_ENCRYPT_DATA,
    CKM_AES_CMAC,
    CKM_AES_CMAC_GENERAL,
    CKM_AES_KEY_WRAP,
    CKM_AES_KEY_WRAP_PAD,
    CKM_SP800_108_COUNTER_KDF,
    CKM_ECDSA,
    CKM_ECDSA_SHA256,
    CKM_ECDH1_DERIVE,
    CKM_RSA_PKCS_OAEP,
    CKM_RSA_PKCS_PSS,
    CKM_XOR_BASE_AND_DATA,
    CKM_GENERIC_SECRET_KEY_GEN,
    CKM_SHA256,
    hsm_sim::vendor::CKM_SM4_ECB,
    hsm_sim::vendor::CKM_SM4_CBC,
    hsm_sim::vendor::CKM_SM4_MAC,
    hsm_sim::vendor::CKM_SM4_ECB_ENCRYPT_DATA,
    hsm_sim::vendor::CKM_SM2_SM3_SIGN,
    hsm_sim::vendor::CKM_DES3_RETAIL_MAC,
    hsm_sim::vendor::CKM_XOR_BASE_AND_KEY,
    hsm_sim::vendor::CKM_SM4_KEY_GEN,
];

/// A cursor over the fuzz input.
struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn ulong(&mut self) -> u64 {
        let b = self.bytes(8);
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(a)
    }
}

/// Owned storage that keeps every buffer a template or parameter points to
/// alive for the duration of one call.
#[derive(Default)]
struct Arena {
    bufs: Vec<Vec<u8>>,
    attrs: Vec<Vec<CK_ATTRIBUTE>>,
    prf: Vec<Vec<CK_PRF_DATA_PARAM>>,
}

impl Arena {
    fn buf(&mut self, b: &[u8]) -> (*mut u8, u64) {
        self.bufs.push(b.to_vec());
        let v = self.bufs.last_mut().unwrap();
        (v.as_mut_ptr(), v.len() as u64)
    }
    fn boxed<T>(&mut self, t: T) -> (*mut std::ffi::c_void, u64) {
        let n = std::mem::size_of::<T>();
        // SAFETY: T is a plain C struct; we copy its bytes into an owned buffer.
        let bytes = unsafe { std::slice::from_raw_parts(&t as *const T as *const u8, n) }.to_vec();
        let (p, l) = self.buf(&bytes);
        (p.cast(), l)
    }
}

fn template(i: &mut In, a: &mut Arena) -> (*mut CK_ATTRIBUTE, u64) {
    let n = usize::from(i.byte() % 9);
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let sel = i.byte();
        let ty = if sel < 240 { ATTRS[usize::from(sel) % ATTRS.len()] } else { i.ulong() };
        let len = usize::from(i.byte() % 40);
        let v = i.bytes(len).to_vec();
        let (p, l) = a.buf(&v);
        t.push(CK_ATTRIBUTE {
            type_: ty,
            pValue: if l == 0 && sel.is_multiple_of(2) { null_mut() } else { p.cast() },
            ulValueLen: l,
        });
    }
    a.attrs.push(t);
    let v = a.attrs.last_mut().unwrap();
    (v.as_mut_ptr(), v.len() as u64)
}

fn mechanism(i: &mut In, a: &mut Arena, keys: &[u64]) -> CK_MECHANISM {
    let sel = i.byte();
    let ty = if sel < 250 { MECHS[usize::from(sel) % MECHS.len()] } else { i.ulong() };
    // Half the time no raw bytes, so parameter-less mechanisms get through.
    let b = i.byte();
    let n = if b < 128 { 0 } else { usize::from(b % 48) };
    let raw = i.bytes(n).to_vec();
    let (bp, bl) = a.buf(&raw);
    let (pp, pl) = match ty {
        CKM_DES3_ECB_ENCRYPT_DATA | CKM_AES_ECB_ENCRYPT_DATA | CKM_XOR_BASE_AND_DATA => {
            a.boxed(CK_KEY_DERIVATION_STRING_DATA { pData: bp, ulLen: bl })
        }
        x if x == hsm_sim::vendor::CKM_SM4_ECB_ENCRYPT_DATA => {
            a.boxed(CK_KEY_DERIVATION_STRING_DATA { pData: bp, ulLen: bl })
        }
        CKM_DES3_CBC_ENCRYPT_DATA => {
            a.boxed(CK_DES_CBC_ENCRYPT_DATA_PARAMS { iv: [i.byte(); 8], pData: bp, length: bl })
        }
        CKM_AES_CBC_ENCRYPT_DATA => {
            a.boxed(CK_AES_CBC_ENCRYPT_DATA_PARAMS { iv: [i.byte(); 16], pData: bp, length: bl })
        }
        CKM_AES_GCM => {
            let ivl = u64::from(i.byte() % 17).min(bl);
            a.boxed(CK_GCM_PARAMS {
                pIv: bp,
                ulIvLen: ivl,
                ulIvBits: ivl * 8,
                pAAD: bp,
                ulAADLen: bl,
                ulTagBits: u64::from(i.byte()),
            })
        }
        CKM_DES3_CMAC_GENERAL | CKM_AES_CMAC_GENERAL => a.boxed(u64::from(i.byte())),
        x if x == hsm_sim::vendor::CKM_XOR_BASE_AND_KEY => a.boxed(keys[usize::from(i.byte()) % keys.len()]),
        CKM_RSA_PKCS_OAEP => a.boxed(CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: u64::from(i.byte() % 5),
            source: u64::from(i.byte() % 2),
            pSourceData: bp.cast(),
            ulSourceDataLen: bl,
        }),
        CKM_RSA_PKCS_PSS => {
            a.boxed(CK_RSA_PKCS_PSS_PARAMS { hashAlg: CKM_SHA256, mgf: CKG_MGF1_SHA256, sLen: u64::from(i.byte()) })
        }
        CKM_ECDH1_DERIVE => a.boxed(CK_ECDH1_DERIVE_PARAMS {
            kdf: u64::from(i.byte() % 3),
            ulSharedDataLen: 0,
            pSharedData: null_mut(),
            ulPublicDataLen: bl,
            pPublicData: bp,
        }),
        CKM_SP800_108_COUNTER_KDF => {
            let mut ps = Vec::new();
            for _ in 0..(i.byte() % 5) {
                let p = match i.byte() % 3 {
                    0 => {
                        let (p, l) = a.boxed(CK_SP800_108_COUNTER_FORMAT {
                            bLittleEndian: i.byte() % 2,
                            ulWidthInBits: u64::from(i.byte()),
                        });
                        CK_PRF_DATA_PARAM { type_: CK_SP800_108_ITERATION_VARIABLE, pValue: p, ulValueLen: l }
                    }
                    1 => {
                        let (p, l) = a.boxed(CK_SP800_108_DKM_LENGTH_FORMAT {
                            dkmLengthMethod: u64::from(i.byte() % 3),
                            bLittleEndian: i.byte() % 2,
                            ulWidthInBits: u64::from(i.byte()),
                        });
                        CK_PRF_DATA_PARAM { type_: CK_SP800_108_DKM_LENGTH, pValue: p, ulValueLen: l }
                    }
                    _ => CK_PRF_DATA_PARAM { type_: CK_SP800_108_BYTE_ARRAY, pValue: bp.cast(), ulValueLen: bl },
                };
                ps.push(p);
            }
            a.prf.push(ps);
            let v = a.prf.last_mut().unwrap();
            let (vp, vl) = (v.as_mut_ptr(), v.len() as u64);
            a.boxed(CK_SP800_108_KDF_PARAMS {
                prfType: if i.byte().is_multiple_of(2) { CKM_AES_CMAC } else { CKM_DES3_CMAC },
                ulNumberOfDataParams: vl,
                pDataParams: if vl == 0 { null_mut() } else { vp },
                ulAdditionalDerivedKeys: 0,
                pAdditionalDerivedKeys: null_mut(),
            })
        }
        _ => (bp.cast(), bl),
    };
    CK_MECHANISM { mechanism: ty, pParameter: if pl == 0 { null_mut() } else { pp }, ulParameterLen: pl }
}

fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("hsm-sim.toml");
        std::fs::write(&conf, "[module]\npin_kdf_iterations = 1\n[[slot]]\nid = 0\ndir = \"tok\"\n").unwrap();
        // SAFETY: set before the module reads it in C_Initialize.
        unsafe { std::env::set_var("HSM_SIM_CONF", &conf) };
        // SAFETY: all pointers below are live locals of the declared size.
        unsafe {
            assert_eq!(ffi::C_Initialize(null_mut()), CKR_OK);
            let mut label = [b' '; 32];
            let so = b"fuzz-so";
            assert_eq!(ffi::C_InitToken(0, so.as_ptr() as *mut _, 7, label.as_mut_ptr()), CKR_OK);
            let mut h = 0;
            assert_eq!(ffi::C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, null_mut(), None, &mut h), CKR_OK);
            assert_eq!(ffi::C_Login(h, CKU_SO, so.as_ptr() as *mut _, 7), CKR_OK);
            assert_eq!(ffi::C_InitPIN(h, so.as_ptr() as *mut _, 7), CKR_OK);
            assert_eq!(ffi::C_Logout(h), CKR_OK);
            assert_eq!(ffi::C_Login(h, CKU_USER, so.as_ptr() as *mut _, 7), CKR_OK);
            let mut keys = Vec::new();
            let tru: CK_BBOOL = 1;
            for (m, len) in [(CKM_AES_KEY_GEN, 16u64), (CKM_DES2_KEY_GEN, 0), (hsm_sim::vendor::CKM_SM4_KEY_GEN, 0)] {
                let mut mech = CK_MECHANISM { mechanism: m, pParameter: null_mut(), ulParameterLen: 0 };
                let mut t = vec![
                    CK_ATTRIBUTE { type_: CKA_DERIVE, pValue: &tru as *const u8 as *mut _, ulValueLen: 1 },
                    CK_ATTRIBUTE { type_: CKA_EXTRACTABLE, pValue: &tru as *const u8 as *mut _, ulValueLen: 1 },
                ];
                if len > 0 {
                    t.push(CK_ATTRIBUTE { type_: CKA_VALUE_LEN, pValue: &len as *const u64 as *mut _, ulValueLen: 8 });
                }
                let mut k = 0;
                assert_eq!(ffi::C_GenerateKey(h, &mut mech, t.as_mut_ptr(), t.len() as u64, &mut k), CKR_OK);
                keys.push(k);
            }
            let oid = [0x06u8, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
            let mut pt = [CK_ATTRIBUTE { type_: CKA_EC_PARAMS, pValue: oid.as_ptr() as *mut _, ulValueLen: 10 }];
            let mut mech = CK_MECHANISM { mechanism: CKM_EC_KEY_PAIR_GEN, pParameter: null_mut(), ulParameterLen: 0 };
            let (mut pk, mut sk) = (0, 0);
            assert_eq!(
                ffi::C_GenerateKeyPair(h, &mut mech, pt.as_mut_ptr(), 1, null_mut(), 0, &mut pk, &mut sk),
                CKR_OK
            );
            keys.extend([pk, sk]);
            Env { h, keys, _dir: dir }
        }
    })
}

/// Runs one fuzz input.
/// Every return value is acceptable except `CKR_GENERAL_ERROR`, which the
/// module only returns for a caught panic (or a broken configuration).
fn ok(rv: CK_RV) -> CK_RV {
    assert_ne!(rv, CKR_GENERAL_ERROR, "the module reported an internal error (caught panic?)");
    if rv == CKR_OK {
        let op = CURRENT_OP.load(Ordering::Relaxed);
        HITS[op].fetch_add(1, Ordering::Relaxed);
    }
    rv
}

static CURRENT_OP: AtomicUsize = AtomicUsize::new(0);
static HITS: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];

/// Successful calls so far per operation kind (create, generate, derive,
/// encrypt, sign, get-attribute, set-attribute, find, wrap, unwrap): shows
/// how deep random inputs reach.
pub fn stats() -> [u64; 10] {
    std::array::from_fn(|i| HITS[i].load(Ordering::Relaxed))
}

pub fn run(data: &[u8]) {
    let e = env();
    let mut i = In(data);
    let mut a = Arena::default();
    let key = |i: &mut In| {
        let b = i.byte();
        if b == 255 { u64::from(i.byte()) } else { e.keys[usize::from(b) % e.keys.len()] }
    };
    let mut made = Vec::new();
    // SAFETY: every pointer handed to the module comes from `a` (alive until
    // the end of this function) or from locals, with matching lengths.
    unsafe {
        for _ in 0..4 {
            let op = i.byte() % 10;
            CURRENT_OP.store(usize::from(op), Ordering::Relaxed);
            let mut out = vec![0u8; usize::from(i.byte())];
            let mut out_len = out.len() as u64;
            match op {
                0 => {
                    let (t, n) = template(&mut i, &mut a);
                    let mut k = 0;
                    if ok(ffi::C_CreateObject(e.h, t, n, &mut k)) == CKR_OK {
                        made.push(k);
                    }
                }
                1 => {
                    let mut m = mechanism(&mut i, &mut a, &e.keys);
                    let (t, n) = template(&mut i, &mut a);
                    let mut k = 0;
                    if ok(ffi::C_GenerateKey(e.h, &mut m, t, n, &mut k)) == CKR_OK {
                        made.push(k);
                    }
                }
                2 => {
                    let mut m = mechanism(&mut i, &mut a, &e.keys);
                    let (t, n) = template(&mut i, &mut a);
                    let mut k = 0;
                    if ok(ffi::C_DeriveKey(e.h, &mut m, key(&mut i), t, n, &mut k)) == CKR_OK {
                        made.push(k);
                    }
                }
                3 | 4 => {
                    let mut m = mechanism(&mut i, &mut a, &e.keys);
                    let dl = usize::from(i.byte());
                    let d = i.bytes(dl).to_vec();
                    let (init, step): (unsafe extern "C" fn(_, _, _) -> _, unsafe extern "C" fn(_, _, _, _, _) -> _) =
                        if op == 3 { (ffi::C_EncryptInit, ffi::C_Encrypt) } else { (ffi::C_SignInit, ffi::C_Sign) };
                    if ok(init(e.h, &mut m, key(&mut i))) == CKR_OK {
                        if op == 3 && i.byte() % 2 == 0 {
                            // Multi-part: a few updates (streaming block modes).
                            for c in d.chunks(usize::from(i.byte() % 40) + 1).take(4) {
                                let mut buf = vec![0u8; usize::from(i.byte())];
                                let mut bl = buf.len() as u64;
                                let bp = if buf.is_empty() { null_mut() } else { buf.as_mut_ptr() };
                                let _ =
                                    ok(ffi::C_EncryptUpdate(e.h, c.as_ptr() as *mut u8, c.len() as u64, bp, &mut bl));
                            }
                        }
                        let p = if out.is_empty() { null_mut() } else { out.as_mut_ptr() };
                        let rv = ok(step(e.h, d.as_ptr() as *mut u8, d.len() as u64, p, &mut out_len));
                        if rv == CKR_OK && p.is_null() || rv == CKR_BUFFER_TOO_SMALL {
                            let mut big = vec![0u8; out_len as usize];
                            let _ =
                                ok(step(e.h, d.as_ptr() as *mut u8, d.len() as u64, big.as_mut_ptr(), &mut out_len));
                        }
                        // Make sure no operation stays active for the next run.
                        let _ = if op == 3 {
                            ok(ffi::C_EncryptFinal(e.h, null_mut(), &mut out_len))
                        } else {
                            ok(ffi::C_SignFinal(e.h, null_mut(), &mut out_len))
                        };
                        let mut big = vec![0u8; 4096];
                        let mut bl = 4096;
                        let _ = if op == 3 {
                            ok(ffi::C_EncryptFinal(e.h, big.as_mut_ptr(), &mut bl))
                        } else {
                            ok(ffi::C_SignFinal(e.h, big.as_mut_ptr(), &mut bl))
                        };
                    }
                }
                5 => {
                    let (t, n) = template(&mut i, &mut a);
                    let _ = ok(ffi::C_GetAttributeValue(e.h, key(&mut i), t, n));
                }
                6 => {
                    let (t, n) = template(&mut i, &mut a);
                    let target = made.last().copied().unwrap_or_else(|| key(&mut i));
                    let _ = ok(ffi::C_SetAttributeValue(e.h, target, t, n));
                }
                7 => {
                    let (t, n) = template(&mut i, &mut a);
                    if ok(ffi::C_FindObjectsInit(e.h, t, n)) == CKR_OK {
                        let mut hs = [0u64; 8];
                        let mut c = 0;
                        let _ = ok(ffi::C_FindObjects(e.h, hs.as_mut_ptr(), 8, &mut c));
                        let _ = ok(ffi::C_FindObjectsFinal(e.h));
                    }
                }
                8 => {
                    let mut m = mechanism(&mut i, &mut a, &e.keys);
                    let p = if out.is_empty() { null_mut() } else { out.as_mut_ptr() };
                    let _ = ok(ffi::C_WrapKey(e.h, &mut m, key(&mut i), key(&mut i), p, &mut out_len));
                }
                _ => {
                    let mut m = mechanism(&mut i, &mut a, &e.keys);
                    let wl = usize::from(i.byte());
                    let w = i.bytes(wl).to_vec();
                    let (t, n) = template(&mut i, &mut a);
                    let mut k = 0;
                    if ok(ffi::C_UnwrapKey(
                        e.h,
                        &mut m,
                        key(&mut i),
                        w.as_ptr() as *mut u8,
                        w.len() as u64,
                        t,
                        n,
                        &mut k,
                    )) == CKR_OK
                    {
                        made.push(k);
                    }
                }
            }
        }
        for k in made {
            let _ = ok(ffi::C_DestroyObject(e.h, k));
        }
    }
}
