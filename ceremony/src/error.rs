//! The ceremony's errors. Every one stops the ceremony with a message
//! naming what was wrong; none carries a secret.

use std::path::PathBuf;

use kms::hsm::HsmError;

/// Why a ceremony command stopped.
#[derive(Debug, thiserror::Error)]
pub enum CeremonyError {
    /// The plan file is not valid; nothing was done.
    #[error("plan {path}: {reason}")]
    Plan {
        /// The plan file.
        path: PathBuf,
        /// What is wrong, naming the step, officer or key.
        reason: String,
    },
    /// An input (a component, a share, a file) was refused; the step made
    /// no change.
    #[error("{0}")]
    Refused(String),
    /// An officer cancelled the step (answered "no") or pressed Ctrl-C.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A secret the step needs was not supplied (non-interactive runs).
    #[error("secret {id:?} was not supplied: {hint}")]
    MissingSecret {
        /// The secret's name.
        id: String,
        /// Where it was looked for.
        hint: String,
    },
    /// The PKCS#11 module refused or failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The certificate code refused or failed.
    #[error(transparent)]
    Ca(#[from] kms_ca::CaError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A transcript does not verify.
    #[error("transcript {path}: {reason}")]
    Transcript {
        /// The transcript file.
        path: PathBuf,
        /// The first problem found.
        reason: String,
    },
}

impl CeremonyError {
    /// A file error for `path`.
    pub fn file(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CeremonyError {
        let path = path.into();
        move |source| CeremonyError::File { path, source }
    }

    /// The process exit code: 1 for a failure, 2 for input refused before
    /// anything changed, 130 for an interruption (as a shell reports SIGINT).
    pub fn exit_code(&self) -> u8 {
        match self {
            CeremonyError::Interrupted(_) => 130,
            CeremonyError::Plan { .. } | CeremonyError::Refused(_) | CeremonyError::MissingSecret { .. } => 2,
            _ => 1,
        }
    }
}

/// The module's error for a cryptoki failure.
pub fn hsm(module: &str) -> impl Fn(cryptoki::error::Error) -> CeremonyError + '_ {
    move |e| CeremonyError::Hsm(HsmError::from_cryptoki(module, e))
}
