//! Errors of the HSM layer. PKCS#11 detail stays typed: the `CKR_` value and
//! the function that returned it travel together up to the gRPC edge.

use std::fmt;

use cryptoki::context::Function;
use cryptoki::error::RvError;

/// A PKCS#11 return value together with the function that produced it.
#[derive(Debug, Clone, Copy)]
pub struct Pkcs11Failure {
    /// The return value.
    pub rv: RvError,
    /// The PKCS#11 function, e.g. `C_DeriveKey`.
    pub function: Function,
}

impl Pkcs11Failure {
    /// The standard name of the return value, e.g. `CKR_PIN_INCORRECT`.
    pub fn rv_name(&self) -> String {
        rv_name(self.rv)
    }

    /// True when the failure means the session (or the whole module) is
    /// gone, so the session must be discarded and a new one opened.
    pub fn session_is_dead(&self) -> bool {
        matches!(
            self.rv,
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized
                | RvError::UserNotLoggedIn
        )
    }
}

impl fmt::Display for Pkcs11Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} returned {}", self.function, self.rv_name())
    }
}

/// The `CKR_` name of a return value, derived from cryptoki's variant name
/// (`SessionHandleInvalid` becomes `CKR_SESSION_HANDLE_INVALID`).
pub fn rv_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR_");
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Everything the HSM layer can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The module returned a `CKR_` error.
    #[error("PKCS#11 module {module}: {failure}")]
    Pkcs11 {
        /// Module path, for the operator.
        module: String,
        /// What failed.
        failure: Pkcs11Failure,
    },
    /// The module lacks a mechanism an operation needs (invariant 2: no
    /// silent fall-back to host cryptography).
    #[error("PKCS#11 module {module} does not support {mechanism} (needed for {capability})")]
    MechanismUnavailable {
        /// Module path.
        module: String,
        /// Mechanism name, e.g. `CKM_DES3_ECB` wrap.
        mechanism: String,
        /// The capability that needs it.
        capability: String,
    },
    /// The module is down; calls fail fast until it answers again.
    #[error("PKCS#11 module {module} is unavailable: {reason}")]
    Unavailable {
        /// Module path.
        module: String,
        /// The last failure seen.
        reason: String,
    },
    /// The module could not be loaded or initialised at all.
    #[error("cannot load PKCS#11 module {module}: {reason}")]
    ModuleLoad {
        /// Module path.
        module: String,
        /// Why.
        reason: String,
    },
    /// No token with the configured label.
    #[error("PKCS#11 module {module} has no token labelled {label:?} (tokens present: {present})")]
    TokenNotFound {
        /// Module path.
        module: String,
        /// The label looked for.
        label: String,
        /// The labels that are there.
        present: String,
    },
    /// The user PIN was refused at start.
    #[error("PKCS#11 module {module}: login to token {label:?} failed: {failure}")]
    Login {
        /// Module path.
        module: String,
        /// Token label.
        label: String,
        /// The module's answer, e.g. `CKR_PIN_INCORRECT`.
        failure: Pkcs11Failure,
    },
    /// The cryptoki wrapper failed without a `CKR_` value (conversion,
    /// missing symbol, ...).
    #[error("PKCS#11 module {module}: {reason}")]
    Wrapper {
        /// Module path.
        module: String,
        /// cryptoki's description.
        reason: String,
    },
    /// An object the operation needs is not in the token.
    #[error("object {label:?} not found in token {token:?}")]
    ObjectNotFound {
        /// Object label.
        label: String,
        /// Token label.
        token: String,
    },
    /// A worker thread died (panicked) while holding the session.
    #[error("HSM worker failed: {0}")]
    Worker(String),
}

impl HsmError {
    /// Wraps a cryptoki error, keeping the `CKR_` value and function.
    pub fn from_cryptoki(module: &str, err: cryptoki::error::Error) -> Self {
        match err {
            cryptoki::error::Error::Pkcs11(rv, function) => {
                HsmError::Pkcs11 { module: module.to_owned(), failure: Pkcs11Failure { rv, function } }
            }
            other => HsmError::Wrapper { module: module.to_owned(), reason: other.to_string() },
        }
    }

    /// The PKCS#11 failure inside, if any.
    pub fn pkcs11_failure(&self) -> Option<Pkcs11Failure> {
        match self {
            HsmError::Pkcs11 { failure, .. } | HsmError::Login { failure, .. } => Some(*failure),
            _ => None,
        }
    }

    /// True when the session that produced this error must be discarded.
    pub fn session_is_dead(&self) -> bool {
        self.pkcs11_failure().is_some_and(|f| f.session_is_dead())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rv_names_follow_the_standard() {
        assert_eq!(rv_name(RvError::SessionHandleInvalid), "CKR_SESSION_HANDLE_INVALID");
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(rv_name(RvError::MechanismInvalid), "CKR_MECHANISM_INVALID");
    }
}
