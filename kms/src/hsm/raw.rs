//! The one place where the service reaches below the `cryptoki` crate.
//!
//! why: cryptoki 0.12 has no `MechanismType` constant for several mechanisms
//! the transit key systems need (`CKM_DES3_ECB_ENCRYPT_DATA`,
//! `CKM_DES3_CMAC`, ...), its `TryFrom` rejects them, and
//! `MechanismType::new_vendor_defined` refuses values below
//! `CKM_VENDOR_DEFINED`. Its `get_mechanism_list` even drops them silently,
//! so the capability probe asks `C_GetMechanismInfo` for each number it
//! needs, which takes a `MechanismType`.
//!
//! why (wrap_key): cryptoki 0.12's `Session::wrap_key` returns the buffer
//! sized by the length query, and PKCS#11 lets a module overstate that
//! length (v2.40 §5.2: the length returned may be "somewhat larger than
//! the precise length"). For formats whose length the caller cannot know in
//! advance (a PKCS#8 private key under `CKM_AES_CBC_PAD` or
//! `CKM_AES_KEY_WRAP_PAD`) only the length the second call reports is
//! right, and cryptoki drops it.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::Function;
use cryptoki::error::Rv;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki_sys::{CK_C_WrapKey, CK_FUNCTION_LIST_PTR, CK_MECHANISM, CK_MECHANISM_TYPE, CK_ULONG};

use super::HsmError;

/// Turns any mechanism number into cryptoki's `MechanismType`.
///
/// why: not `MechanismType::try_from` first: for every number cryptoki has
/// no name for (`CKM_DES3_ECB_ENCRYPT_DATA` among them) it logs an ERROR,
/// which on the derivation path meant a formatted log line per derived key
/// (an eighth of the service's CPU in a batch, and a log full of false
/// errors). The bit pattern is the same either way.
pub fn mechanism_type(raw: CK_MECHANISM_TYPE) -> MechanismType {
    // SAFETY: `MechanismType` is `#[repr(transparent)]` over
    // `CK_MECHANISM_TYPE` (cryptoki-0.12.1 src/mechanism/mod.rs), so every
    // `CK_MECHANISM_TYPE` value is a valid bit pattern for it; the value is
    // only passed back to the module, which answers CKR_MECHANISM_INVALID
    // for numbers it does not know.
    unsafe { std::mem::transmute::<CK_MECHANISM_TYPE, MechanismType>(raw) }
}

/// The module's own `C_WrapKey`, from its function list, with the library
/// kept loaded.
struct WrapFn {
    // why: held so the function pointer below stays valid for the life of
    // the process, even if every cryptoki context on the module is dropped.
    _library: cryptoki_sys::Pkcs11,
    wrap_key: CK_C_WrapKey,
}

fn wrap_fn(module: &str) -> Result<Arc<WrapFn>, HsmError> {
    static LOADED: OnceLock<Mutex<HashMap<String, Arc<WrapFn>>>> = OnceLock::new();
    let failed = |reason: String| HsmError::Wrapper { module: module.to_owned(), reason };
    let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = loaded.get(module) {
        return Ok(f.clone());
    }
    // SAFETY: `module` is the path of the PKCS#11 library the service has
    // already loaded and initialised through cryptoki (`Hsm::open`), so
    // loading it again only takes another reference to the same mapped
    // library (dlopen reference counting) and runs no initialiser twice.
    let library = unsafe { cryptoki_sys::Pkcs11::new(module) }.map_err(|e| failed(e.to_string()))?;
    let get_list = library.C_GetFunctionList.as_ref().map_err(|e| failed(e.to_string()))?;
    let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
    // SAFETY: C_GetFunctionList writes one pointer to the module's static
    // function list into `list`, a valid out-pointer.
    let rv = unsafe { get_list(&mut list) };
    Rv::from(rv).into_result(Function::GetFunctionList).map_err(|e| HsmError::from_cryptoki(module, e))?;
    if list.is_null() {
        return Err(failed("C_GetFunctionList returned no list".into()));
    }
    // SAFETY: `list` is non-null and points to the module's function list,
    // which lives as long as the library stays loaded (we hold it).
    let wrap_key = unsafe { (*list).C_WrapKey };
    if wrap_key.is_none() {
        return Err(failed("the module has no C_WrapKey".into()));
    }
    let f = Arc::new(WrapFn { _library: library, wrap_key });
    loaded.insert(module.to_owned(), f.clone());
    Ok(f)
}

/// `C_WrapKey` that returns exactly the bytes the module reports having
/// written (see the module note). `module` is the path the session's
/// module was loaded from.
pub fn wrap_key(
    module: &str,
    session: &Session,
    mechanism: &Mechanism<'_>,
    wrapping_key: ObjectHandle,
    key: ObjectHandle,
) -> Result<Vec<u8>, HsmError> {
    let f = wrap_fn(module)?;
    let Some(wrap) = f.wrap_key else {
        return Err(HsmError::Wrapper { module: module.to_owned(), reason: "the module has no C_WrapKey".into() });
    };
    let check = |rv| Rv::from(rv).into_result(Function::WrapKey).map_err(|e| HsmError::from_cryptoki(module, e));
    let mut mech: CK_MECHANISM = mechanism.into();
    let mut len: CK_ULONG = 0;
    // SAFETY: the session and object handles come from live cryptoki
    // objects of the same module; `mech` points into `mechanism`, which
    // outlives the call; a null output buffer asks for the length only,
    // written to `len`.
    check(unsafe {
        wrap(session.handle(), &mut mech, wrapping_key.handle(), key.handle(), std::ptr::null_mut(), &mut len)
    })?;
    let capacity =
        usize::try_from(len).map_err(|e| HsmError::Wrapper { module: module.to_owned(), reason: e.to_string() })?;
    let mut out = vec![0u8; capacity];
    // SAFETY: as above; `out` has room for `len` bytes, the length the
    // module asked for, and the module writes at most that many and
    // updates `len` to what it wrote.
    check(unsafe {
        wrap(session.handle(), &mut mech, wrapping_key.handle(), key.handle(), out.as_mut_ptr(), &mut len)
    })?;
    match usize::try_from(len) {
        Ok(written) if written <= out.len() => {
            out.truncate(written);
            Ok(out)
        }
        _ => Err(HsmError::Wrapper {
            module: module.to_owned(),
            reason: format!("C_WrapKey reported {len} bytes written into a {capacity}-byte buffer"),
        }),
    }
}

/// Sets the environment variables a PKCS#11 module reads at load time
/// (for example `SOFTHSM2_CONF`), from `hsm.module_env`.
///
/// Call it from `main` before any thread is started (before the tokio
/// runtime is built): changing the environment while other threads may read
/// it is undefined behaviour on some platforms.
pub fn apply_module_env_before_threads(vars: &std::collections::BTreeMap<String, String>) {
    for (key, value) in vars {
        // SAFETY: the caller guarantees the process is still single-threaded
        // (this runs in `main` before the runtime and any other thread
        // exists), so no concurrent reader of the environment can observe
        // the write.
        unsafe { std::env::set_var(key, value) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_unnamed_and_vendor_numbers() {
        for raw in [cryptoki_sys::CKM_DES3_ECB_ENCRYPT_DATA, cryptoki_sys::CKM_DES3_CMAC, 0x8000_0108, 0x1081] {
            assert_eq!(CK_MECHANISM_TYPE::from(mechanism_type(raw)), raw);
        }
    }
}
