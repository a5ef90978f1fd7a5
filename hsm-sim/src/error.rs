//! The module's one error type: a PKCS#11 return value.
//!
//! Every safe inner function returns `Res<T>`; the FFI layer hands the `CK_RV`
//! to the caller unchanged. Messages never carry key material.

use cryptoki_sys::CK_RV;

/// A PKCS#11 return value (`CKR_*`), as produced by a safe inner function.
pub(crate) type Rv = CK_RV;

/// Result of a safe inner function.
pub(crate) type Res<T> = Result<T, Rv>;

/// Parses a `CKR_*` name (as used in the fault-injection configuration).
pub(crate) fn rv_from_name(name: &str) -> Option<Rv> {
    use cryptoki_sys::*;
    let v = match name.trim() {
        "CKR_DEVICE_REMOVED" => CKR_DEVICE_REMOVED,
        "CKR_DEVICE_ERROR" => CKR_DEVICE_ERROR,
        "CKR_DEVICE_MEMORY" => CKR_DEVICE_MEMORY,
        "CKR_SESSION_HANDLE_INVALID" => CKR_SESSION_HANDLE_INVALID,
        "CKR_SESSION_CLOSED" => CKR_SESSION_CLOSED,
        "CKR_TOKEN_NOT_PRESENT" => CKR_TOKEN_NOT_PRESENT,
        "CKR_GENERAL_ERROR" => CKR_GENERAL_ERROR,
        "CKR_FUNCTION_FAILED" => CKR_FUNCTION_FAILED,
        "CKR_USER_NOT_LOGGED_IN" => CKR_USER_NOT_LOGGED_IN,
        "CKR_HOST_MEMORY" => CKR_HOST_MEMORY,
        other => {
            let hex = other.strip_prefix("0x").or_else(|| other.strip_prefix("0X"))?;
            CK_RV::from_str_radix(hex, 16).ok()?
        }
    };
    Some(v)
}
