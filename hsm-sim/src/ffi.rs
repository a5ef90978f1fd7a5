//! The C ABI: every PKCS#11 v2.40 entry point, reached through
//! `C_GetFunctionList` (and exported by name).
//!
//! This is the only module allowed `unsafe`. Each entry point:
//! 1. catches panics (returning `CKR_GENERAL_ERROR`),
//! 2. applies fault injection,
//! 3. turns raw pointers into owned Rust values (null or inconsistent
//!    pointers/lengths give `CKR_ARGUMENTS_BAD`),
//! 4. calls the safe core and writes results back with the PKCS#11
//!    length-query convention.
#![allow(unsafe_code)]
#![allow(non_snake_case)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use cryptoki_sys::*;

use crate::attrs::Attrs;
use crate::error::Res;
use crate::mech::{self, Layout, Mechanism, Param};
use crate::module::{self, AttrAnswer, Module, Out, Which};
use crate::sym::{GcmParams, KdfData};

/// Upper bound on template sizes accepted at the boundary.
const MAX_ITEMS: CK_ULONG = 1 << 16;
/// Upper bound on one input buffer (and on `C_GenerateRandom`): 64 MiB.
const MAX_BYTES: CK_ULONG = 64 << 20;

fn guard(f: impl FnOnce() -> Res<()>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(rv)) => rv,
        Err(_) => CKR_GENERAL_ERROR,
    }
}

/// Runs `f` with the initialised module after fault injection.
fn with(name: &'static str, f: impl FnOnce(&Arc<Module>) -> Res<()>) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        if m.faults.active() {
            m.faults.check(name)?;
        }
        f(&m)
    })
}

/// Borrows `len` bytes at `p` and copies them into an owned vector.
///
/// # Safety
/// `p` must be null or valid for reads of `len` bytes.
unsafe fn bytes(p: *const u8, len: CK_ULONG) -> Res<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    if len > MAX_BYTES {
        return Err(CKR_DATA_LEN_RANGE);
    }
    // SAFETY: non-null, and the caller guarantees `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len as usize) }.to_vec())
}

/// Reads a template into owned attributes.
///
/// # Safety
/// `p` must be null or point to `n` valid `CK_ATTRIBUTE`s whose `pValue`
/// are null or valid for `ulValueLen` bytes.
unsafe fn template(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Res<Attrs> {
    if n == 0 {
        return Ok(Attrs::new());
    }
    if p.is_null() || n > MAX_ITEMS {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, caller guarantees `n` elements.
    let items = unsafe { std::slice::from_raw_parts(p, n as usize) };
    let mut v = Vec::with_capacity(items.len());
    for a in items {
        // SAFETY: caller guarantees pValue/ulValueLen describe readable memory.
        let val = unsafe { bytes(a.pValue as *const u8, a.ulValueLen) }?;
        v.push((a.type_, val));
    }
    Attrs::from_template(v)
}

/// Reads a parameter struct of type `T`, checking its declared length.
///
/// # Safety
/// `p` must be null or point to a valid `T` when `len == size_of::<T>()`.
unsafe fn param<T: Copy>(p: *const std::ffi::c_void, len: CK_ULONG) -> Res<T> {
    if p.is_null() || len as usize != std::mem::size_of::<T>() {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    // SAFETY: non-null and of the right size; read_unaligned tolerates any
    // alignment the caller used.
    Ok(unsafe { std::ptr::read_unaligned(p as *const T) })
}

/// Param bytes inside a parameter struct (invalid pointers are
/// `CKR_MECHANISM_PARAM_INVALID`).
///
/// # Safety
/// As [`bytes`].
unsafe fn pbytes(p: *const u8, len: CK_ULONG) -> Res<Vec<u8>> {
    // SAFETY: forwarded contract.
    unsafe { bytes(p, len) }.map_err(|_| CKR_MECHANISM_PARAM_INVALID)
}

/// Reads a mechanism and its parameter into an owned [`Mechanism`].
///
/// # Safety
/// `m` must be null or point to a valid `CK_MECHANISM` whose parameter
/// matches the PKCS#11 layout for its type.
unsafe fn mechanism(m: &Module, p: CK_MECHANISM_PTR) -> Res<Mechanism> {
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null; the caller guarantees a valid CK_MECHANISM.
    let cm = unsafe { std::ptr::read_unaligned(p) };
    let (pp, pl) = (cm.pParameter as *const std::ffi::c_void, cm.ulParameterLen);
    let none = pp.is_null() && pl == 0;
    // SAFETY (for every block below): `param` checks null and size; the
    // nested pointers are read with the lengths the caller gave.
    let param = match mech::layout(&m.vendor, cm.mechanism) {
        _ if none => Param::None,
        Layout::Bytes => Param::Bytes(unsafe { pbytes(pp as *const u8, pl) }?),
        Layout::MacGeneral | Layout::Handle => Param::Ulong(unsafe { param::<CK_ULONG>(pp, pl) }?),
        Layout::DeriveString => {
            let d: CK_KEY_DERIVATION_STRING_DATA = unsafe { param(pp, pl) }?;
            Param::Data(unsafe { pbytes(d.pData, d.ulLen) }?)
        }
        Layout::DesCbcDerive => {
            let d: CK_DES_CBC_ENCRYPT_DATA_PARAMS = unsafe { param(pp, pl) }?;
            Param::IvData(d.iv.to_vec(), unsafe { pbytes(d.pData, d.length) }?)
        }
        Layout::AesCbcDerive => {
            let d: CK_AES_CBC_ENCRYPT_DATA_PARAMS = unsafe { param(pp, pl) }?;
            Param::IvData(d.iv.to_vec(), unsafe { pbytes(d.pData, d.length) }?)
        }
        Layout::Gcm => {
            let g: CK_GCM_PARAMS = unsafe { param(pp, pl) }?;
            Param::Gcm(GcmParams {
                iv: unsafe { pbytes(g.pIv, g.ulIvLen) }?,
                aad: unsafe { pbytes(g.pAAD, g.ulAADLen) }?,
                tag_bits: g.ulTagBits,
            })
        }
        Layout::Oaep => {
            let o: CK_RSA_PKCS_OAEP_PARAMS = unsafe { param(pp, pl) }?;
            let label = if o.source == CKZ_DATA_SPECIFIED || o.source == 0 {
                unsafe { pbytes(o.pSourceData as *const u8, o.ulSourceDataLen) }?
            } else {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            };
            Param::Oaep(o.hashAlg, o.mgf, label)
        }
        Layout::Pss => {
            let s: CK_RSA_PKCS_PSS_PARAMS = unsafe { param(pp, pl) }?;
            Param::Pss(s.hashAlg, s.mgf, s.sLen)
        }
        Layout::Ecdh1 => {
            let e: CK_ECDH1_DERIVE_PARAMS = unsafe { param(pp, pl) }?;
            Param::Ecdh(e.kdf, unsafe { pbytes(e.pSharedData, e.ulSharedDataLen) }?, unsafe {
                pbytes(e.pPublicData, e.ulPublicDataLen)
            }?)
        }
        Layout::Sp800108 => {
            let k: CK_SP800_108_KDF_PARAMS = unsafe { param(pp, pl) }?;
            if k.ulNumberOfDataParams == 0 || k.ulNumberOfDataParams > 64 || k.pDataParams.is_null() {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            let items = unsafe { std::slice::from_raw_parts(k.pDataParams, k.ulNumberOfDataParams as usize) };
            let mut data = Vec::new();
            for d in items {
                let vp = d.pValue as *const std::ffi::c_void;
                data.push(match d.type_ {
                    CK_SP800_108_ITERATION_VARIABLE => {
                        let f: CK_SP800_108_COUNTER_FORMAT = unsafe { param(vp, d.ulValueLen) }?;
                        KdfData::Counter { little: f.bLittleEndian != 0, bits: f.ulWidthInBits }
                    }
                    CK_SP800_108_DKM_LENGTH => {
                        let f: CK_SP800_108_DKM_LENGTH_FORMAT = unsafe { param(vp, d.ulValueLen) }?;
                        if f.dkmLengthMethod != CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS
                            && f.dkmLengthMethod != CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS
                        {
                            return Err(CKR_MECHANISM_PARAM_INVALID);
                        }
                        KdfData::DkmLength {
                            little: f.bLittleEndian != 0,
                            bits: f.ulWidthInBits,
                            segments: f.dkmLengthMethod == CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS,
                        }
                    }
                    CK_SP800_108_BYTE_ARRAY => KdfData::Bytes(unsafe { pbytes(d.pValue as *const u8, d.ulValueLen) }?),
                    _ => return Err(CKR_MECHANISM_PARAM_INVALID),
                });
            }
            Param::Kdf(k.prfType, data, k.ulAdditionalDerivedKeys as usize)
        }
    };
    Ok(Mechanism { ty: cm.mechanism, param })
}

/// Writes `v` through `p`.
///
/// # Safety
/// `p` must be null or valid for a write of `T`.
unsafe fn put<T>(p: *mut T, v: T) -> Res<()> {
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null; the caller guarantees writability.
    unsafe { p.write_unaligned(v) };
    Ok(())
}

/// The caller's output capacity: `None` for a length query.
///
/// # Safety
/// `len` must be null or valid for reads.
unsafe fn capacity(out: *mut u8, len: CK_ULONG_PTR) -> Res<Option<usize>> {
    if len.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    if out.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null, caller guarantees readability.
    Ok(Some(unsafe { len.read_unaligned() } as usize))
}

/// Writes an [`Out`] with the length-query convention.
///
/// # Safety
/// `out` must be null or valid for `*len` bytes of writes; `len` valid.
unsafe fn write_out(o: Out, out: *mut u8, len: CK_ULONG_PTR) -> Res<()> {
    match o {
        Out::Data(d) => {
            if !d.is_empty() {
                if out.is_null() {
                    return Err(CKR_ARGUMENTS_BAD);
                }
                // SAFETY: the core only returns Data when it fits the
                // capacity read from `*len`.
                unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), out, d.len()) };
            }
            // SAFETY: `len` checked non-null by `capacity`.
            unsafe { put(len, d.len() as CK_ULONG) }
        }
        Out::Len(n) => {
            // SAFETY: as above.
            unsafe { put(len, n as CK_ULONG) }?;
            if out.is_null() { Ok(()) } else { Err(CKR_BUFFER_TOO_SMALL) }
        }
    }
}

/// Copies a list into a caller array with the length-query convention.
///
/// # Safety
/// `p` null or valid for `*n` elements; `n` valid.
unsafe fn write_list<T: Copy>(items: &[T], p: *mut T, n: CK_ULONG_PTR) -> Res<()> {
    if n.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, caller guarantees validity.
    let cap = unsafe { n.read_unaligned() } as usize;
    // SAFETY: as above.
    unsafe { n.write_unaligned(items.len() as CK_ULONG) };
    if p.is_null() {
        return Ok(());
    }
    if cap < items.len() {
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: `p` has room for `cap >= items.len()` elements.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), p, items.len()) };
    Ok(())
}

fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut b = [b' '; N];
    let src = s.as_bytes();
    let n = src.len().min(N);
    b[..n].copy_from_slice(&src[..n]);
    b
}

const VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

// ----- general purpose ----------------------------------------------------------

/// PKCS#11 `C_Initialize`. Accepts null or a `CK_C_INITIALIZE_ARGS` whose
/// mutex callbacks are all null or all set (OS locking is always used).
///
/// # Safety
/// `args` must be null or point to a valid `CK_C_INITIALIZE_ARGS`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Initialize(args: *mut std::ffi::c_void) -> CK_RV {
    guard(|| {
        if !args.is_null() {
            // SAFETY: non-null; the caller passes a CK_C_INITIALIZE_ARGS.
            let a = unsafe { std::ptr::read_unaligned(args as *const CK_C_INITIALIZE_ARGS) };
            if !a.pReserved.is_null() {
                return Err(CKR_ARGUMENTS_BAD);
            }
            let set =
                [a.CreateMutex.is_some(), a.DestroyMutex.is_some(), a.LockMutex.is_some(), a.UnlockMutex.is_some()];
            if set.iter().any(|x| *x) && !set.iter().all(|x| *x) {
                return Err(CKR_ARGUMENTS_BAD);
            }
            if set[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                // Only application-supplied locks, which this module does not use.
                return Err(CKR_CANT_LOCK);
            }
        }
        module::initialize()
    })
}

/// PKCS#11 `C_Finalize`.
///
/// # Safety
/// `reserved` must be null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Finalize(reserved: *mut std::ffi::c_void) -> CK_RV {
    guard(|| {
        if !reserved.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        module::finalize()
    })
}

/// PKCS#11 `C_GetInfo`.
///
/// # Safety
/// `info` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    with("C_GetInfo", |_| {
        let i = CK_INFO {
            cryptokiVersion: CK_VERSION { major: 2, minor: 40 },
            manufacturerID: padded("hsm-sim"),
            flags: 0,
            libraryDescription: padded("hsm-sim PKCS#11 module"),
            libraryVersion: VERSION,
        };
        // SAFETY: `put` checks null; caller guarantees validity.
        unsafe { put(info, i) }
    })
}

/// PKCS#11 `C_GetFunctionList`.
///
/// # Safety
/// `pp` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(pp: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guard(|| {
        // SAFETY: `put` checks null. The list is a static the caller only reads.
        unsafe { put(pp, &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST) }
    })
}

/// The one interface this module offers: "PKCS 11", version 2.40.
struct Interface(CK_INTERFACE);

// SAFETY: the interface only points at static, immutable data (the name
// literal and FUNCTION_LIST), so sharing it between threads is sound.
unsafe impl Sync for Interface {}

static INTERFACE_NAME: &[u8] = b"PKCS 11\0";

static INTERFACE: Interface = Interface(CK_INTERFACE {
    pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
    pFunctionList: &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut std::ffi::c_void,
    flags: 0,
});

/// PKCS#11 v3.0 `C_GetInterfaceList`: one interface, "PKCS 11" 2.40.
///
/// # Safety
/// `list` null or valid for `*count` interfaces; `count` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterfaceList(list: *mut CK_INTERFACE, count: CK_ULONG_PTR) -> CK_RV {
    guard(|| {
        let one = [CK_INTERFACE { ..INTERFACE.0 }];
        // SAFETY: write_list checks pointers against the caller's count.
        unsafe { write_list(&one, list, count) }
    })
}

/// PKCS#11 v3.0 `C_GetInterface`: the "PKCS 11" interface, version 2.40
/// (a null name or version selects it; anything else is `CKR_ARGUMENTS_BAD`).
///
/// # Safety
/// `name` null or NUL-terminated; `version` null or valid; `out` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    out: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    guard(|| {
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        if !name.is_null() {
            // SAFETY: the caller passes a NUL-terminated string.
            let n = unsafe { std::ffi::CStr::from_ptr(name as *const std::ffi::c_char) };
            if n.to_bytes() != b"PKCS 11" {
                return Err(CKR_ARGUMENTS_BAD);
            }
        }
        if !version.is_null() {
            // SAFETY: non-null; the caller passes a CK_VERSION.
            let v = unsafe { version.read_unaligned() };
            if (v.major, v.minor) != (2, 40) {
                return Err(CKR_ARGUMENTS_BAD);
            }
        }
        if flags & !INTERFACE.0.flags != 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: checked non-null; the caller only reads the static.
        unsafe { put(out, &INTERFACE.0 as *const CK_INTERFACE as *mut CK_INTERFACE) }
    })
}

// ----- slots and tokens ---------------------------------------------------------

/// PKCS#11 `C_GetSlotList` (every slot always has its token present).
///
/// # Safety
/// Pointers as in PKCS#11.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetSlotList(_present: CK_BBOOL, list: CK_SLOT_ID_PTR, n: CK_ULONG_PTR) -> CK_RV {
    with("C_GetSlotList", |m| {
        // SAFETY: write_list checks pointers against the caller's count.
        unsafe { write_list(&m.slot_list(), list, n) }
    })
}

/// PKCS#11 `C_GetSlotInfo`.
///
/// # Safety
/// `info` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    with("C_GetSlotInfo", |m| {
        let s = m.slot_info(slot)?;
        let i = CK_SLOT_INFO {
            slotDescription: padded(&s.description),
            manufacturerID: padded("hsm-sim"),
            flags: CKF_TOKEN_PRESENT,
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
        };
        // SAFETY: `put` checks null.
        unsafe { put(info, i) }
    })
}

/// PKCS#11 `C_GetTokenInfo`.
///
/// # Safety
/// `info` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    with("C_GetTokenInfo", |m| {
        let t = m.token_info(slot)?;
        let i = CK_TOKEN_INFO {
            label: padded(&t.label),
            manufacturerID: padded("hsm-sim"),
            model: padded("hsm-sim"),
            serialNumber: padded(&t.serial),
            flags: t.flags,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: t.sessions as CK_ULONG,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: t.rw_sessions as CK_ULONG,
            ulMaxPinLen: t.max_pin as CK_ULONG,
            ulMinPinLen: t.min_pin as CK_ULONG,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
            utcTime: [b' '; 16],
        };
        // SAFETY: `put` checks null.
        unsafe { put(info, i) }
    })
}

/// PKCS#11 `C_GetMechanismList`.
///
/// # Safety
/// Pointers as in PKCS#11.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetMechanismList(slot: CK_SLOT_ID, list: CK_MECHANISM_TYPE_PTR, n: CK_ULONG_PTR) -> CK_RV {
    with("C_GetMechanismList", |m| {
        let l = m.mechanism_list(slot)?;
        // SAFETY: write_list checks pointers against the caller's count.
        unsafe { write_list(&l, list, n) }
    })
}

/// PKCS#11 `C_GetMechanismInfo`.
///
/// # Safety
/// `info` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    ty: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    with("C_GetMechanismInfo", |m| {
        let (min, max, flags) = m.mechanism_info(slot, ty)?;
        // SAFETY: `put` checks null.
        unsafe { put(info, CK_MECHANISM_INFO { ulMinKeySize: min, ulMaxKeySize: max, flags }) }
    })
}

/// PKCS#11 `C_InitToken`.
///
/// # Safety
/// `pin` valid for `len` bytes; `label` null or 32 bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_InitToken(slot: CK_SLOT_ID, pin: *mut u8, len: CK_ULONG, label: *mut u8) -> CK_RV {
    with("C_InitToken", |m| {
        // SAFETY: pointer/length from the caller.
        let pin = zeroize::Zeroizing::new(unsafe { bytes(pin, len) }?);
        // SAFETY: the label is exactly 32 bytes by PKCS#11.
        let l = unsafe { bytes(label, 32) }?;
        let mut lab = [b' '; 32];
        lab.copy_from_slice(&l);
        m.init_token(slot, &pin, &lab)
    })
}

/// PKCS#11 `C_InitPIN`.
///
/// # Safety
/// `pin` valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_InitPIN(h: CK_SESSION_HANDLE, pin: *mut u8, len: CK_ULONG) -> CK_RV {
    with("C_InitPIN", |m| {
        // SAFETY: pointer/length from the caller.
        let pin = zeroize::Zeroizing::new(unsafe { bytes(pin, len) }?);
        m.init_pin(h, &pin)
    })
}

/// PKCS#11 `C_SetPIN`.
///
/// # Safety
/// PINs valid for their lengths.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SetPIN(
    h: CK_SESSION_HANDLE,
    old: *mut u8,
    ol: CK_ULONG,
    new: *mut u8,
    nl: CK_ULONG,
) -> CK_RV {
    with("C_SetPIN", |m| {
        // SAFETY: pointer/length from the caller.
        let old = zeroize::Zeroizing::new(unsafe { bytes(old, ol) }?);
        // SAFETY: as above.
        let new = zeroize::Zeroizing::new(unsafe { bytes(new, nl) }?);
        m.set_pin(h, &old, &new)
    })
}

// ----- sessions -------------------------------------------------------------------

/// PKCS#11 `C_OpenSession` (no notification callbacks are made).
///
/// # Safety
/// `ph` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut std::ffi::c_void,
    _notify: CK_NOTIFY,
    ph: CK_SESSION_HANDLE_PTR,
) -> CK_RV {
    with("C_OpenSession", |m| {
        if ph.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let h = m.open_session(slot, flags)?;
        // SAFETY: checked non-null above.
        unsafe { put(ph, h) }
    })
}

/// PKCS#11 `C_CloseSession`.
///
/// # Safety
/// None beyond the PKCS#11 contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_CloseSession(h: CK_SESSION_HANDLE) -> CK_RV {
    with("C_CloseSession", |m| m.close_session(h))
}

/// PKCS#11 `C_CloseAllSessions`.
///
/// # Safety
/// None beyond the PKCS#11 contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    with("C_CloseAllSessions", |m| m.close_all_sessions(slot))
}

/// PKCS#11 `C_GetSessionInfo`.
///
/// # Safety
/// `info` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetSessionInfo(h: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO) -> CK_RV {
    with("C_GetSessionInfo", |m| {
        let s = m.session_info(h)?;
        // SAFETY: `put` checks null.
        unsafe { put(info, CK_SESSION_INFO { slotID: s.slot, state: s.state, flags: s.flags, ulDeviceError: 0 }) }
    })
}

/// PKCS#11 `C_Login`.
///
/// # Safety
/// `pin` valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Login(h: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: *mut u8, len: CK_ULONG) -> CK_RV {
    with("C_Login", |m| {
        // SAFETY: pointer/length from the caller.
        let pin = zeroize::Zeroizing::new(unsafe { bytes(pin, len) }?);
        m.login(h, user, &pin)
    })
}

/// PKCS#11 `C_Logout`.
///
/// # Safety
/// None beyond the PKCS#11 contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Logout(h: CK_SESSION_HANDLE) -> CK_RV {
    with("C_Logout", |m| m.logout(h))
}

// ----- objects --------------------------------------------------------------------

/// PKCS#11 `C_CreateObject`.
///
/// # Safety
/// Template and handle pointers as in PKCS#11.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_CreateObject(
    h: CK_SESSION_HANDLE,
    t: CK_ATTRIBUTE_PTR,
    n: CK_ULONG,
    oh: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with("C_CreateObject", |m| {
        if oh.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: template contract from the caller.
        let t = unsafe { template(t, n) }?;
        let o = m.create_object(h, t)?;
        // SAFETY: checked non-null.
        unsafe { put(oh, o) }
    })
}

/// PKCS#11 `C_CopyObject`.
///
/// # Safety
/// Template and handle pointers as in PKCS#11.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_CopyObject(
    h: CK_SESSION_HANDLE,
    src: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_PTR,
    n: CK_ULONG,
    oh: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with("C_CopyObject", |m| {
        if oh.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: template contract from the caller.
        let t = unsafe { template(t, n) }?;
        let o = m.copy_object(h, src, t)?;
        // SAFETY: checked non-null.
        unsafe { put(oh, o) }
    })
}

/// PKCS#11 `C_DestroyObject`.
///
/// # Safety
/// None beyond the PKCS#11 contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DestroyObject(h: CK_SESSION_HANDLE, oh: CK_OBJECT_HANDLE) -> CK_RV {
    with("C_DestroyObject", |m| m.destroy_object(h, oh))
}

/// PKCS#11 `C_GetObjectSize`.
///
/// # Safety
/// `size` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetObjectSize(h: CK_SESSION_HANDLE, oh: CK_OBJECT_HANDLE, size: CK_ULONG_PTR) -> CK_RV {
    with("C_GetObjectSize", |m| {
        if size.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let s = m.object_size(h, oh)?;
        // SAFETY: checked non-null.
        unsafe { put(size, s as CK_ULONG) }
    })
}

/// PKCS#11 `C_GetAttributeValue`, with the v2.40 §5.7 rules: each
/// attribute gets its value, its length (null `pValue`),
/// `CK_UNAVAILABLE_INFORMATION` with `CKR_ATTRIBUTE_SENSITIVE`,
/// `CKR_ATTRIBUTE_TYPE_INVALID` or `CKR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `t` valid for `n` attributes whose buffers are valid for `ulValueLen`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetAttributeValue(
    h: CK_SESSION_HANDLE,
    oh: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_PTR,
    n: CK_ULONG,
) -> CK_RV {
    with("C_GetAttributeValue", |m| {
        if t.is_null() || n > MAX_ITEMS {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: non-null; the caller guarantees `n` attributes.
        let items = unsafe { std::slice::from_raw_parts_mut(t, n as usize) };
        let types: Vec<CK_ATTRIBUTE_TYPE> = items.iter().map(|a| a.type_).collect();
        let answers = m.get_attributes(h, oh, &types)?;
        let mut rv = CKR_OK;
        for (a, ans) in items.iter_mut().zip(answers) {
            match ans {
                AttrAnswer::Sensitive => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = CKR_ATTRIBUTE_SENSITIVE;
                }
                AttrAnswer::Invalid => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = CKR_ATTRIBUTE_TYPE_INVALID;
                }
                AttrAnswer::Value(v) => {
                    if a.pValue.is_null() {
                        a.ulValueLen = v.len() as CK_ULONG;
                    } else if (a.ulValueLen as usize) < v.len() {
                        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        rv = CKR_BUFFER_TOO_SMALL;
                    } else {
                        // SAFETY: the caller's buffer holds ulValueLen >= v.len() bytes.
                        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len()) };
                        a.ulValueLen = v.len() as CK_ULONG;
                    }
                }
            }
        }
        if rv == CKR_OK { Ok(()) } else { Err(rv) }
    })
}

/// PKCS#11 `C_SetAttributeValue`.
///
/// # Safety
/// Template contract as in PKCS#11.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SetAttributeValue(
    h: CK_SESSION_HANDLE,
    oh: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_PTR,
    n: CK_ULONG,
) -> CK_RV {
    with("C_SetAttributeValue", |m| {
        if t.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: template contract from the caller.
        let t = unsafe { template(t, n) }?;
        m.set_attributes(h, oh, t)
    })
}

/// PKCS#11 `C_FindObjectsInit`.
///
/// # Safety
/// Template contract as in PKCS#11.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_FindObjectsInit(h: CK_SESSION_HANDLE, t: CK_ATTRIBUTE_PTR, n: CK_ULONG) -> CK_RV {
    with("C_FindObjectsInit", |m| {
        // SAFETY: template contract from the caller.
        let t = unsafe { template(t, n) }?;
        m.find_init(h, t)
    })
}

/// PKCS#11 `C_FindObjects`.
///
/// # Safety
/// `out` valid for `max` handles; `count` valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_FindObjects(
    h: CK_SESSION_HANDLE,
    out: CK_OBJECT_HANDLE_PTR,
    max: CK_ULONG,
    count: CK_ULONG_PTR,
) -> CK_RV {
    with("C_FindObjects", |m| {
        if count.is_null() || (out.is_null() && max > 0) {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let found = m.find(h, max.min(MAX_ITEMS) as usize)?;
        if !found.is_empty() {
            // SAFETY: `out` holds `max >= found.len()` handles.
            unsafe { std::ptr::copy_nonoverlapping(found.as_ptr(), out, found.len()) };
        }
        // SAFETY: checked non-null.
        unsafe { put(count, found.len() as CK_ULONG) }
    })
}

/// PKCS#11 `C_FindObjectsFinal`.
///
/// # Safety
/// None beyond the PKCS#11 contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_FindObjectsFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    with("C_FindObjectsFinal", |m| m.find_final(h))
}

// ----- encryption, decryption, signing, verification --------------------------------

macro_rules! op_init {
    ($name:ident, $which:expr) => {
        /// PKCS#11 `*Init` for this operation.
        ///
        /// # Safety
        /// `mech` must be null or a valid `CK_MECHANISM`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(h: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) -> CK_RV {
            with(stringify!($name), |m| {
                // SAFETY: mechanism contract from the caller.
                let mech = unsafe { mechanism(m, mech) }?;
                m.init(h, mech, key, $which)
            })
        }
    };
}
op_init!(C_EncryptInit, Which::Encrypt);
op_init!(C_DecryptInit, Which::Decrypt);
op_init!(C_SignInit, Which::Sign);
op_init!(C_VerifyInit, Which::Verify);

macro_rules! op_single {
    ($name:ident, $which:expr) => {
        /// PKCS#11 single-part operation (length-query convention).
        ///
        /// # Safety
        /// Buffers valid for their lengths.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            h: CK_SESSION_HANDLE,
            data: *mut u8,
            dl: CK_ULONG,
            out: *mut u8,
            ol: CK_ULONG_PTR,
        ) -> CK_RV {
            with(stringify!($name), |m| {
                // SAFETY: caller buffers.
                let cap = unsafe { capacity(out, ol) }?;
                // SAFETY: caller buffers.
                let d = zeroize::Zeroizing::new(unsafe { bytes(data, dl) }?);
                let r = m.finish(h, $which, &d, cap)?;
                // SAFETY: caller buffers, capacity read above.
                unsafe { write_out(r, out, ol) }
            })
        }
    };
}
op_single!(C_Encrypt, Which::Encrypt);
op_single!(C_Decrypt, Which::Decrypt);

/// PKCS#11 `C_Sign` (length-query convention).
///
/// # Safety
/// Buffers valid for their lengths.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Sign(
    h: CK_SESSION_HANDLE,
    data: *mut u8,
    dl: CK_ULONG,
    out: *mut u8,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    with("C_Sign", |m| {
        // SAFETY: caller buffers.
        let cap = unsafe { capacity(out, ol) }?;
        // SAFETY: caller buffers.
        let d = unsafe { bytes(data, dl) }?;
        let r = m.finish(h, Which::Sign, &d, cap)?;
        // SAFETY: caller buffers, capacity read above.
        unsafe { write_out(r, out, ol) }
    })
}

macro_rules! op_update {
    ($name:ident, $which:expr) => {
        /// PKCS#11 `*Update`: block modes return every complete block, other
        /// mechanisms buffer until `*Final` (length-query convention).
        ///
        /// # Safety
        /// Buffers valid for their lengths.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            h: CK_SESSION_HANDLE,
            data: *mut u8,
            dl: CK_ULONG,
            out: *mut u8,
            ol: CK_ULONG_PTR,
        ) -> CK_RV {
            with(stringify!($name), |m| {
                // SAFETY: caller buffers.
                let cap = unsafe { capacity(out, ol) }?;
                // SAFETY: caller buffers.
                let d = zeroize::Zeroizing::new(unsafe { bytes(data, dl) }?);
                let r = m.crypt_update(h, $which, &d, cap)?;
                // SAFETY: caller buffers, capacity read above.
                unsafe { write_out(r, out, ol) }
            })
        }
    };
}
op_update!(C_EncryptUpdate, Which::Encrypt);
op_update!(C_DecryptUpdate, Which::Decrypt);

macro_rules! op_final {
    ($name:ident, $which:expr) => {
        /// PKCS#11 `*Final` (length-query convention).
        ///
        /// # Safety
        /// Buffers valid for their lengths.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(h: CK_SESSION_HANDLE, out: *mut u8, ol: CK_ULONG_PTR) -> CK_RV {
            with(stringify!($name), |m| {
                // SAFETY: caller buffers.
                let cap = unsafe { capacity(out, ol) }?;
                let r = m.finish(h, $which, &[], cap)?;
                // SAFETY: caller buffers, capacity read above.
                unsafe { write_out(r, out, ol) }
            })
        }
    };
}
op_final!(C_EncryptFinal, Which::Encrypt);
op_final!(C_DecryptFinal, Which::Decrypt);
op_final!(C_SignFinal, Which::Sign);

/// PKCS#11 `C_SignUpdate`.
///
/// # Safety
/// Buffer valid for its length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SignUpdate(h: CK_SESSION_HANDLE, data: *mut u8, dl: CK_ULONG) -> CK_RV {
    with("C_SignUpdate", |m| {
        // SAFETY: caller buffer.
        let d = unsafe { bytes(data, dl) }?;
        m.update(h, Which::Sign, &d)
    })
}

/// PKCS#11 `C_VerifyUpdate`.
///
/// # Safety
/// Buffer valid for its length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_VerifyUpdate(h: CK_SESSION_HANDLE, data: *mut u8, dl: CK_ULONG) -> CK_RV {
    with("C_VerifyUpdate", |m| {
        // SAFETY: caller buffer.
        let d = unsafe { bytes(data, dl) }?;
        m.update(h, Which::Verify, &d)
    })
}

/// PKCS#11 `C_Verify`.
///
/// # Safety
/// Buffers valid for their lengths.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Verify(
    h: CK_SESSION_HANDLE,
    data: *mut u8,
    dl: CK_ULONG,
    sig: *mut u8,
    sl: CK_ULONG,
) -> CK_RV {
    with("C_Verify", |m| {
        // SAFETY: caller buffers.
        let d = unsafe { bytes(data, dl) }?;
        // SAFETY: caller buffers.
        let s = unsafe { bytes(sig, sl) }?;
        m.verify_finish(h, &d, &s)
    })
}

/// PKCS#11 `C_VerifyFinal`.
///
/// # Safety
/// Buffer valid for its length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_VerifyFinal(h: CK_SESSION_HANDLE, sig: *mut u8, sl: CK_ULONG) -> CK_RV {
    with("C_VerifyFinal", |m| {
        // SAFETY: caller buffer.
        let s = unsafe { bytes(sig, sl) }?;
        m.verify_finish(h, &[], &s)
    })
}

// ----- digests --------------------------------------------------------------------------

/// PKCS#11 `C_DigestInit`.
///
/// # Safety
/// `mech` must be null or a valid `CK_MECHANISM`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DigestInit(h: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR) -> CK_RV {
    with("C_DigestInit", |m| {
        // SAFETY: mechanism contract from the caller.
        let mech = unsafe { mechanism(m, mech) }?;
        m.digest_init(h, mech)
    })
}

/// PKCS#11 `C_Digest`.
///
/// # Safety
/// Buffers valid for their lengths.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Digest(
    h: CK_SESSION_HANDLE,
    data: *mut u8,
    dl: CK_ULONG,
    out: *mut u8,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    with("C_Digest", |m| {
        // SAFETY: caller buffers.
        let cap = unsafe { capacity(out, ol) }?;
        // SAFETY: caller buffers.
        let d = unsafe { bytes(data, dl) }?;
        let r = m.digest_finish(h, &d, cap)?;
        // SAFETY: caller buffers.
        unsafe { write_out(r, out, ol) }
    })
}

/// PKCS#11 `C_DigestUpdate`.
///
/// # Safety
/// Buffer valid for its length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DigestUpdate(h: CK_SESSION_HANDLE, data: *mut u8, dl: CK_ULONG) -> CK_RV {
    with("C_DigestUpdate", |m| {
        // SAFETY: caller buffer.
        let d = unsafe { bytes(data, dl) }?;
        m.digest_update(h, &d)
    })
}

/// PKCS#11 `C_DigestKey`.
///
/// # Safety
/// None beyond the PKCS#11 contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DigestKey(h: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> CK_RV {
    with("C_DigestKey", |m| m.digest_key(h, key))
}

/// PKCS#11 `C_DigestFinal`.
///
/// # Safety
/// Buffers valid for their lengths.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DigestFinal(h: CK_SESSION_HANDLE, out: *mut u8, ol: CK_ULONG_PTR) -> CK_RV {
    with("C_DigestFinal", |m| {
        // SAFETY: caller buffers.
        let cap = unsafe { capacity(out, ol) }?;
        let r = m.digest_finish(h, &[], cap)?;
        // SAFETY: caller buffers.
        unsafe { write_out(r, out, ol) }
    })
}

// ----- key management ------------------------------------------------------------------

/// PKCS#11 `C_GenerateKey`.
///
/// # Safety
/// Pointers as in PKCS#11.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GenerateKey(
    h: CK_SESSION_HANDLE,
    mech: CK_MECHANISM_PTR,
    t: CK_ATTRIBUTE_PTR,
    n: CK_ULONG,
    oh: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with("C_GenerateKey", |m| {
        if oh.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: caller contracts.
        let mech = unsafe { mechanism(m, mech) }?;
        // SAFETY: caller contracts.
        let t = unsafe { template(t, n) }?;
        let k = m.generate_key(h, mech, t)?;
        // SAFETY: checked non-null.
        unsafe { put(oh, k) }
    })
}

/// PKCS#11 `C_GenerateKeyPair`.
///
/// # Safety
/// Pointers as in PKCS#11.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GenerateKeyPair(
    h: CK_SESSION_HANDLE,
    mech: CK_MECHANISM_PTR,
    pt: CK_ATTRIBUTE_PTR,
    pn: CK_ULONG,
    kt: CK_ATTRIBUTE_PTR,
    kn: CK_ULONG,
    ph: CK_OBJECT_HANDLE_PTR,
    kh: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with("C_GenerateKeyPair", |m| {
        if ph.is_null() || kh.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: caller contracts.
        let mech = unsafe { mechanism(m, mech) }?;
        // SAFETY: caller contracts.
        let pt = unsafe { template(pt, pn) }?;
        // SAFETY: caller contracts.
        let kt = unsafe { template(kt, kn) }?;
        let (p, k) = m.generate_key_pair(h, mech, pt, kt)?;
        // SAFETY: checked non-null.
        unsafe { put(ph, p) }?;
        // SAFETY: checked non-null.
        unsafe { put(kh, k) }
    })
}

/// PKCS#11 `C_WrapKey` (length-query convention).
///
/// # Safety
/// Pointers as in PKCS#11.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_WrapKey(
    h: CK_SESSION_HANDLE,
    mech: CK_MECHANISM_PTR,
    wk: CK_OBJECT_HANDLE,
    k: CK_OBJECT_HANDLE,
    out: *mut u8,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    with("C_WrapKey", |m| {
        // SAFETY: caller contracts.
        let cap = unsafe { capacity(out, ol) }?;
        // SAFETY: caller contracts.
        let mech = unsafe { mechanism(m, mech) }?;
        let r = m.wrap_key(h, mech, wk, k, cap)?;
        // SAFETY: caller buffers.
        unsafe { write_out(r, out, ol) }
    })
}

/// PKCS#11 `C_UnwrapKey`.
///
/// # Safety
/// Pointers as in PKCS#11.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_UnwrapKey(
    h: CK_SESSION_HANDLE,
    mech: CK_MECHANISM_PTR,
    uk: CK_OBJECT_HANDLE,
    w: *mut u8,
    wl: CK_ULONG,
    t: CK_ATTRIBUTE_PTR,
    n: CK_ULONG,
    oh: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with("C_UnwrapKey", |m| {
        if oh.is_null() || w.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: caller contracts.
        let mech = unsafe { mechanism(m, mech) }?;
        // SAFETY: caller contracts.
        let w = unsafe { bytes(w, wl) }?;
        // SAFETY: caller contracts.
        let t = unsafe { template(t, n) }?;
        let k = m.unwrap_key(h, mech, uk, &w, t)?;
        // SAFETY: checked non-null.
        unsafe { put(oh, k) }
    })
}

/// PKCS#11 `C_DeriveKey`.
///
/// # Safety
/// Pointers as in PKCS#11.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DeriveKey(
    h: CK_SESSION_HANDLE,
    mech: CK_MECHANISM_PTR,
    base: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_PTR,
    n: CK_ULONG,
    oh: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with("C_DeriveKey", |m| {
        if oh.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: caller contracts.
        let mech = unsafe { mechanism(m, mech) }?;
        // SAFETY: caller contracts.
        let t = unsafe { template(t, n) }?;
        let k = m.derive_key(h, mech, base, t)?;
        // SAFETY: checked non-null.
        unsafe { put(oh, k) }
    })
}

/// PKCS#11 `C_SeedRandom` (`CKR_RANDOM_SEED_NOT_SUPPORTED`).
///
/// # Safety
/// None beyond the PKCS#11 contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SeedRandom(h: CK_SESSION_HANDLE, _seed: *mut u8, _len: CK_ULONG) -> CK_RV {
    with("C_SeedRandom", |m| m.seed_random(h))
}

/// PKCS#11 `C_GenerateRandom`.
///
/// # Safety
/// `out` valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GenerateRandom(h: CK_SESSION_HANDLE, out: *mut u8, len: CK_ULONG) -> CK_RV {
    with("C_GenerateRandom", |m| {
        if len == 0 {
            return m.generate_random(h, 0).map(|_| ());
        }
        if out.is_null() || len > MAX_BYTES {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let r = m.generate_random(h, len as usize)?;
        // SAFETY: `out` is valid for `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), out, r.len()) };
        Ok(())
    })
}

// ----- not supported ---------------------------------------------------------------------

macro_rules! unsupported {
    ($name:ident ( $($a:ident : $t:ty),* ) => $rv:expr) => {
        /// Not supported by this module.
        ///
        /// # Safety
        /// None: no pointer is dereferenced.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($a: $t),*) -> CK_RV {
            $(let _ = $a;)*
            with(stringify!($name), |_| Err($rv))
        }
    };
}
unsupported!(C_GetOperationState(h: CK_SESSION_HANDLE, s: *mut u8, l: CK_ULONG_PTR) => CKR_FUNCTION_NOT_SUPPORTED);
unsupported!(C_SetOperationState(h: CK_SESSION_HANDLE, s: *mut u8, l: CK_ULONG, e: CK_OBJECT_HANDLE, a: CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED);
unsupported!(C_SignRecoverInit(h: CK_SESSION_HANDLE, m: CK_MECHANISM_PTR, k: CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED);
unsupported!(C_SignRecover(h: CK_SESSION_HANDLE, d: *mut u8, dl: CK_ULONG, s: *mut u8, sl: CK_ULONG_PTR) => CKR_FUNCTION_NOT_SUPPORTED);
unsupported!(C_VerifyRecoverInit(h: CK_SESSION_HANDLE, m: CK_MECHANISM_PTR, k: CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED);
unsupported!(C_VerifyRecover(h: CK_SESSION_HANDLE, s: *mut u8, sl: CK_ULONG, d: *mut u8, dl: CK_ULONG_PTR) => CKR_FUNCTION_NOT_SUPPORTED);
unsupported!(C_DigestEncryptUpdate(h: CK_SESSION_HANDLE, a: *mut u8, al: CK_ULONG, b: *mut u8, bl: CK_ULONG_PTR) => CKR_FUNCTION_NOT_SUPPORTED);
unsupported!(C_DecryptDigestUpdate(h: CK_SESSION_HANDLE, a: *mut u8, al: CK_ULONG, b: *mut u8, bl: CK_ULONG_PTR) => CKR_FUNCTION_NOT_SUPPORTED);
unsupported!(C_SignEncryptUpdate(h: CK_SESSION_HANDLE, a: *mut u8, al: CK_ULONG, b: *mut u8, bl: CK_ULONG_PTR) => CKR_FUNCTION_NOT_SUPPORTED);
unsupported!(C_DecryptVerifyUpdate(h: CK_SESSION_HANDLE, a: *mut u8, al: CK_ULONG, b: *mut u8, bl: CK_ULONG_PTR) => CKR_FUNCTION_NOT_SUPPORTED);
unsupported!(C_GetFunctionStatus(h: CK_SESSION_HANDLE) => CKR_FUNCTION_NOT_PARALLEL);
unsupported!(C_CancelFunction(h: CK_SESSION_HANDLE) => CKR_FUNCTION_NOT_PARALLEL);

/// PKCS#11 `C_WaitForSlotEvent`: slots never change here.
///
/// # Safety
/// None: no pointer is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_WaitForSlotEvent(
    flags: CK_FLAGS,
    _slot: CK_SLOT_ID_PTR,
    _r: *mut std::ffi::c_void,
) -> CK_RV {
    with("C_WaitForSlotEvent", |_| {
        if flags & CKF_DONT_BLOCK != 0 { Err(CKR_NO_EVENT) } else { Err(CKR_FUNCTION_NOT_SUPPORTED) }
    })
}

static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION { major: 2, minor: 40 },
    C_Initialize: Some(C_Initialize),
    C_Finalize: Some(C_Finalize),
    C_GetInfo: Some(C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(C_GetSlotList),
    C_GetSlotInfo: Some(C_GetSlotInfo),
    C_GetTokenInfo: Some(C_GetTokenInfo),
    C_GetMechanismList: Some(C_GetMechanismList),
    C_GetMechanismInfo: Some(C_GetMechanismInfo),
    C_InitToken: Some(C_InitToken),
    C_InitPIN: Some(C_InitPIN),
    C_SetPIN: Some(C_SetPIN),
    C_OpenSession: Some(C_OpenSession),
    C_CloseSession: Some(C_CloseSession),
    C_CloseAllSessions: Some(C_CloseAllSessions),
    C_GetSessionInfo: Some(C_GetSessionInfo),
    C_GetOperationState: Some(C_GetOperationState),
    C_SetOperationState: Some(C_SetOperationState),
    C_Login: Some(C_Login),
    C_Logout: Some(C_Logout),
    C_CreateObject: Some(C_CreateObject),
    C_CopyObject: Some(C_CopyObject),
    C_DestroyObject: Some(C_DestroyObject),
    C_GetObjectSize: Some(C_GetObjectSize),
    C_GetAttributeValue: Some(C_GetAttributeValue),
    C_SetAttributeValue: Some(C_SetAttributeValue),
    C_FindObjectsInit: Some(C_FindObjectsInit),
    C_FindObjects: Some(C_FindObjects),
    C_FindObjectsFinal: Some(C_FindObjectsFinal),
    C_EncryptInit: Some(C_EncryptInit),
    C_Encrypt: Some(C_Encrypt),
    C_EncryptUpdate: Some(C_EncryptUpdate),
    C_EncryptFinal: Some(C_EncryptFinal),
    C_DecryptInit: Some(C_DecryptInit),
    C_Decrypt: Some(C_Decrypt),
    C_DecryptUpdate: Some(C_DecryptUpdate),
    C_DecryptFinal: Some(C_DecryptFinal),
    C_DigestInit: Some(C_DigestInit),
    C_Digest: Some(C_Digest),
    C_DigestUpdate: Some(C_DigestUpdate),
    C_DigestKey: Some(C_DigestKey),
    C_DigestFinal: Some(C_DigestFinal),
    C_SignInit: Some(C_SignInit),
    C_Sign: Some(C_Sign),
    C_SignUpdate: Some(C_SignUpdate),
    C_SignFinal: Some(C_SignFinal),
    C_SignRecoverInit: Some(C_SignRecoverInit),
    C_SignRecover: Some(C_SignRecover),
    C_VerifyInit: Some(C_VerifyInit),
    C_Verify: Some(C_Verify),
    C_VerifyUpdate: Some(C_VerifyUpdate),
    C_VerifyFinal: Some(C_VerifyFinal),
    C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
    C_VerifyRecover: Some(C_VerifyRecover),
    C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
    C_GenerateKey: Some(C_GenerateKey),
    C_GenerateKeyPair: Some(C_GenerateKeyPair),
    C_WrapKey: Some(C_WrapKey),
    C_UnwrapKey: Some(C_UnwrapKey),
    C_DeriveKey: Some(C_DeriveKey),
    C_SeedRandom: Some(C_SeedRandom),
    C_GenerateRandom: Some(C_GenerateRandom),
    C_GetFunctionStatus: Some(C_GetFunctionStatus),
    C_CancelFunction: Some(C_CancelFunction),
    C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
};
