//! The one place where the service reaches below the `cryptoki` crate.
//!
//! why: cryptoki 0.12 has no `MechanismType` constant for several mechanisms
//! the transit key systems need (`CKM_DES3_ECB_ENCRYPT_DATA`,
//! `CKM_DES3_CMAC`, ...), its `TryFrom` rejects them, and
//! `MechanismType::new_vendor_defined` refuses values below
//! `CKM_VENDOR_DEFINED`. Its `get_mechanism_list` even drops them silently,
//! so the capability probe asks `C_GetMechanismInfo` for each number it
//! needs, which takes a `MechanismType`.
#![allow(unsafe_code)]

use cryptoki::mechanism::MechanismType;
use cryptoki_sys::CK_MECHANISM_TYPE;

/// Turns any mechanism number into cryptoki's `MechanismType`.
pub fn mechanism_type(raw: CK_MECHANISM_TYPE) -> MechanismType {
    if let Ok(known) = MechanismType::try_from(raw) {
        return known;
    }
    // SAFETY: `MechanismType` is `#[repr(transparent)]` over
    // `CK_MECHANISM_TYPE` (cryptoki-0.12.1 src/mechanism/mod.rs), so every
    // `CK_MECHANISM_TYPE` value is a valid bit pattern for it; the value is
    // only passed back to the module, which answers CKR_MECHANISM_INVALID
    // for numbers it does not know.
    unsafe { std::mem::transmute::<CK_MECHANISM_TYPE, MechanismType>(raw) }
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
