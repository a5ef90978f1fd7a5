//! Ctrl-C outside prompts. At a prompt the terminal is in raw mode and
//! Ctrl-C arrives as a key ([`crate::io`]); elsewhere (deriving a PBKDF2
//! hash, generating or unwrapping keys) SIGINT is caught here and noted,
//! and the ceremony stops at the next check between HSM operations, so it
//! still closes its transcript and destroys its session objects.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::CeremonyError;

/// Set once SIGINT arrived.
#[derive(Clone, Default)]
pub struct Interrupted(Arc<AtomicBool>);

impl Interrupted {
    /// An error if SIGINT arrived.
    pub fn check(&self) -> Result<(), CeremonyError> {
        if self.0.load(Ordering::SeqCst) {
            return Err(CeremonyError::Interrupted("Ctrl-C (SIGINT)".into()));
        }
        Ok(())
    }
}

/// Starts catching SIGINT (from then on it no longer kills the process).
/// Call after the PKCS#11 module's environment is set: this starts a thread.
pub fn watch() -> Interrupted {
    let flag = Interrupted::default();
    let set = flag.0.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("sigint".into()).spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_io().build() else {
            let _ = ready_tx.send(());
            return;
        };
        runtime.block_on(async move {
            let mut sigint = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ready_tx.send(());
                    return;
                }
            };
            let _ = ready_tx.send(());
            while sigint.recv().await.is_some() {
                set.store(true, Ordering::SeqCst);
            }
        });
    });
    if spawned.is_ok() {
        // Wait until the handler is in place (or failed to be).
        let _ = ready_rx.recv_timeout(std::time::Duration::from_secs(5));
    }
    flag
}
