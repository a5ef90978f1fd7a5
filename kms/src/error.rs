//! The service's error type. Domain code returns [`Error`]; the gRPC layer
//! maps it to a status code in exactly one place (`grpc::status`).

use crate::authz::Denied;
use crate::hsm::HsmError;
use crate::identity::IdentityError;
use crate::store::StoreError;

/// Everything a call into the service can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller could not be identified.
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] IdentityError),
    /// Policy refused the call.
    #[error("permission denied for {}: {}", .0.action, .0.reason)]
    PermissionDenied(Denied),
    /// The request is malformed; `field` names what is wrong.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The request field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The named thing does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What, e.g. `key city/3301/dpk@v2`.
        what: String,
    },
    /// The thing to create exists already.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What.
        what: String,
    },
    /// The request is well-formed but the state of things forbids it (a
    /// key in the wrong state or of the wrong purpose, a KCV mismatch).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The card is outside every live production plan of the caller's
    /// tenant for the profile.
    #[error("{0}")]
    OutsidePlan(String),
    /// The production plan covering the card has no count left.
    #[error("{0}")]
    QuotaExhausted(String),
    /// The HSM failed or lacks a capability.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit record could not be written, so the operation did not
    /// happen (invariant 3).
    #[error("audit log unavailable, operation not performed: {0}")]
    AuditUnavailable(StoreError),
}

/// The service's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(crate::store::StoreError::Query(e))
    }
}
