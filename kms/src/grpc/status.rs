//! The one place where errors become gRPC status codes.
//!
//! | error | code |
//! |---|---|
//! | `Unauthenticated` (no or unusable client identity) | `UNAUTHENTICATED` |
//! | `PermissionDenied` (policy) | `PERMISSION_DENIED` |
//! | `InvalidArgument` | `INVALID_ARGUMENT` |
//! | `NotFound` | `NOT_FOUND` |
//! | `AlreadyExists` | `ALREADY_EXISTS` |
//! | `FailedPrecondition` (key state or purpose, KCV mismatch) | `FAILED_PRECONDITION` |
//! | `OutsidePlan` (card outside the tenant's production plans) | `PERMISSION_DENIED` |
//! | `QuotaExhausted` (the plan's count is used up) | `RESOURCE_EXHAUSTED` |
//! | HSM: mechanism missing from the capability table | `FAILED_PRECONDITION` |
//! | HSM: module marked down, device removed, token absent, worker died | `UNAVAILABLE` |
//! | HSM: `CKR_MECHANISM_INVALID`, `CKR_KEY_TYPE_INCONSISTENT`, `CKR_KEY_FUNCTION_NOT_PERMITTED`, `CKR_KEY_UNEXTRACTABLE`, `CKR_WRAPPING_KEY_TYPE_INCONSISTENT`, `CKR_KEY_NOT_WRAPPABLE` | `FAILED_PRECONDITION` |
//! | HSM: `CKR_DATA_LEN_RANGE`, `CKR_DATA_INVALID`, `CKR_ENCRYPTED_DATA_*`, `CKR_WRAPPED_KEY_*`, `CKR_SIGNATURE_*` | `INVALID_ARGUMENT` |
//! | HSM: `CKR_DEVICE_MEMORY`, `CKR_HOST_MEMORY`, `CKR_SESSION_COUNT` | `RESOURCE_EXHAUSTED` |
//! | HSM: `CKR_OBJECT_HANDLE_INVALID`, object not found | `NOT_FOUND` |
//! | HSM: login failure (`CKR_PIN_*`) after start | `UNAVAILABLE` |
//! | HSM: anything else | `INTERNAL` |
//! | store failure, audit log unavailable | `UNAVAILABLE` |
//!
//! Messages carry the module and `CKR_` name only when
//! `logging.client_error_detail` is on; the log always has the detail.

use cryptoki::error::RvError;
use tonic::{Code, Status};

use crate::error::Error;
use crate::hsm::HsmError;

/// The status code for an HSM error (the table above).
pub fn hsm_code(e: &HsmError) -> Code {
    match e {
        HsmError::MechanismUnavailable { .. } => Code::FailedPrecondition,
        HsmError::Unavailable { .. } | HsmError::Worker(_) | HsmError::Login { .. } => Code::Unavailable,
        HsmError::ModuleLoad { .. } | HsmError::TokenNotFound { .. } => Code::Unavailable,
        HsmError::ObjectNotFound { .. } => Code::NotFound,
        HsmError::Wrapper { .. } => Code::Internal,
        HsmError::Pkcs11 { failure, .. } => match failure.rv {
            RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::KeyTypeInconsistent
            | RvError::KeyFunctionNotPermitted
            | RvError::KeyUnextractable
            | RvError::KeyNotWrappable
            | RvError::WrappingKeyTypeInconsistent
            | RvError::WrappingKeyHandleInvalid
            | RvError::FunctionNotSupported => Code::FailedPrecondition,
            RvError::DataLenRange
            | RvError::DataInvalid
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::SignatureInvalid
            | RvError::SignatureLenRange => Code::InvalidArgument,
            RvError::DeviceMemory | RvError::HostMemory | RvError::SessionCount => Code::ResourceExhausted,
            RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid => Code::NotFound,
            RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::CryptokiNotInitialized
            | RvError::UserNotLoggedIn => Code::Unavailable,
            _ => Code::Internal,
        },
    }
}

/// The status code for any service error. Exhaustive on purpose: a new
/// variant must be given a code here.
pub fn code(e: &Error) -> Code {
    match e {
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::InvalidArgument { .. } => Code::InvalidArgument,
        Error::NotFound { .. } => Code::NotFound,
        Error::AlreadyExists { .. } => Code::AlreadyExists,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::OutsidePlan(_) => Code::PermissionDenied,
        Error::QuotaExhausted(_) => Code::ResourceExhausted,
        Error::Hsm(h) => hsm_code(h),
        Error::Store(_) => Code::Unavailable,
        Error::AuditUnavailable(_) => Code::Unavailable,
    }
}

/// Converts an error to a status. Internal detail goes to the log, and to
/// the client only if `detail` is set.
pub fn to_status(e: &Error, rpc: &str, detail: bool) -> Status {
    let code = code(e);
    let public = match e {
        // These messages are written for the caller and hold no secrets.
        Error::Unauthenticated(_)
        | Error::PermissionDenied(_)
        | Error::InvalidArgument { .. }
        | Error::NotFound { .. }
        | Error::AlreadyExists { .. }
        | Error::FailedPrecondition(_)
        | Error::OutsidePlan(_)
        | Error::QuotaExhausted(_) => e.to_string(),
        Error::Hsm(HsmError::MechanismUnavailable { .. }) => e.to_string(),
        Error::Hsm(_) if detail => e.to_string(),
        Error::Hsm(HsmError::Unavailable { .. }) => "the HSM is unavailable; retry later".to_owned(),
        Error::Hsm(_) => "the HSM refused the operation".to_owned(),
        Error::Store(_) | Error::AuditUnavailable(_) if detail => e.to_string(),
        Error::Store(_) => "the database is unavailable; retry later".to_owned(),
        Error::AuditUnavailable(_) => "the audit log is unavailable; the operation was not performed".to_owned(),
    };
    match code {
        Code::Internal | Code::Unavailable => tracing::error!(rpc, error = %e, ?code, "call failed"),
        _ => tracing::info!(rpc, error = %e, ?code, "call refused"),
    }
    Status::new(code, public)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::Pkcs11Failure;
    use cryptoki::context::Function;

    fn pkcs11(rv: RvError) -> HsmError {
        HsmError::Pkcs11 { module: "m".into(), failure: Pkcs11Failure { rv, function: Function::WrapKey } }
    }

    #[test]
    fn documented_table_holds() {
        assert_eq!(hsm_code(&pkcs11(RvError::MechanismInvalid)), Code::FailedPrecondition);
        assert_eq!(hsm_code(&pkcs11(RvError::DeviceRemoved)), Code::Unavailable);
        assert_eq!(hsm_code(&pkcs11(RvError::SessionHandleInvalid)), Code::Unavailable);
        assert_eq!(hsm_code(&pkcs11(RvError::DataLenRange)), Code::InvalidArgument);
        assert_eq!(hsm_code(&pkcs11(RvError::GeneralError)), Code::Internal);
        let missing =
            HsmError::MechanismUnavailable { module: "m".into(), mechanism: "CKM_X".into(), capability: "c".into() };
        assert_eq!(code(&Error::Hsm(missing)), Code::FailedPrecondition);
    }

    #[test]
    fn internal_detail_stays_out_of_client_messages_by_default() {
        let e = Error::Hsm(pkcs11(RvError::GeneralError));
        assert!(!to_status(&e, "t", false).message().contains("CKR_"));
        assert!(to_status(&e, "t", true).message().contains("CKR_GENERAL_ERROR"));
    }
}
