//! The HSM layer: one PKCS#11 module, one token, a pool of logged-in
//! sessions, and the capability table probed at start.
//!
//! Every PKCS#11 call runs on tokio's blocking pool through [`Hsm::run`],
//! never on an async worker. A `Session` moves between threads but is never
//! shared: each call borrows one session from the pool for its whole
//! duration.
//!
//! Sessions that the module invalidates (`CKR_SESSION_HANDLE_INVALID`,
//! `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`, ...) are dropped and
//! reopened with bounded, doubling back-off. When reopening fails the module
//! is marked down: calls fail at once with [`HsmError::Unavailable`] until
//! `hsm.recovery.down_retry_ms` has passed, then the next call tries again,
//! so the service recovers by itself when the module comes back.

mod caps;
mod der;
mod error;
pub mod keyops;
pub mod pki;
pub mod raw;
pub mod signer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;
use tokio::sync::Semaphore;

pub use caps::{Capabilities, CapabilityRow, WrapRow};
pub use error::{HsmError, Pkcs11Failure, rv_name};

use crate::config::{HsmConfig, RecoveryConfig, VendorMechanisms};
use crate::metrics::Metrics;

/// A point-in-time view of the session pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Sessions open (idle plus lent out).
    pub open: usize,
    /// Sessions lent to a call right now.
    pub in_use: usize,
    /// Configured size.
    pub max: usize,
    /// Sessions reopened since start.
    pub recovered: u64,
    /// False while the module is marked down.
    pub up: bool,
}

/// Facts about the module and token, read at start.
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    /// Path of the shared library.
    pub path: String,
    /// Manufacturer and description from `C_GetInfo`.
    pub library: String,
    /// Library version, `major.minor`.
    pub library_version: String,
    /// Token label.
    pub token_label: String,
    /// Token serial number.
    pub token_serial: String,
}

struct Down {
    retry_at: Instant,
    reason: String,
}

struct Inner {
    ctx: Pkcs11,
    slot: Slot,
    info: ModuleInfo,
    pin: SecretString,
    idle: Mutex<Vec<Session>>,
    permits: Semaphore,
    max: usize,
    open: AtomicUsize,
    in_use: AtomicUsize,
    recovered: AtomicU64,
    down: Mutex<Option<Down>>,
    recovery: RecoveryConfig,
    capabilities: Capabilities,
    metrics: Arc<Metrics>,
    handles: Mutex<std::collections::HashMap<Vec<u8>, cryptoki::object::ObjectHandle>>,
}

/// A handle on the service's PKCS#11 module and token. Cheap to clone.
#[derive(Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // why: a panic while holding these locks cannot leave their data
    // inconsistent (a Vec of sessions, an Option), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hsm {
    /// Loads the module, finds the token by label, logs in, fills the
    /// session pool and probes capabilities. Blocking: call it before the
    /// runtime starts or from `spawn_blocking`.
    pub fn open(cfg: &HsmConfig, pin: SecretString, metrics: Arc<Metrics>) -> Result<Hsm, HsmError> {
        let module = cfg.module.display().to_string();
        if !Path::new(&cfg.module).is_file() {
            return Err(HsmError::ModuleLoad { module, reason: "no such file".into() });
        }
        let ctx = Pkcs11::new(&cfg.module)
            .map_err(|e| HsmError::ModuleLoad { module: module.clone(), reason: e.to_string() })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(HsmError::ModuleLoad { module, reason: e.to_string() }),
        }
        let (slot, token_serial) = find_token(&ctx, &module, &cfg.token_label)?;
        let lib = ctx.get_library_info().map_err(|e| HsmError::from_cryptoki(&module, e))?;
        let info = ModuleInfo {
            path: module.clone(),
            library: format!("{} {}", lib.manufacturer_id().trim(), lib.library_description().trim()),
            library_version: format!("{}.{}", lib.library_version().major(), lib.library_version().minor()),
            token_label: cfg.token_label.clone(),
            token_serial,
        };
        let first = open_logged_in(&ctx, slot, &pin, &info)?;
        let capabilities = Capabilities::probe(&ctx, slot, &first, &module, &cfg.vendor);
        let mut sessions = vec![first];
        for _ in 1..cfg.pool_size {
            sessions.push(open_logged_in(&ctx, slot, &pin, &info)?);
        }
        let inner = Inner {
            ctx,
            slot,
            info,
            pin,
            open: AtomicUsize::new(sessions.len()),
            idle: Mutex::new(sessions),
            permits: Semaphore::new(cfg.pool_size),
            max: cfg.pool_size,
            in_use: AtomicUsize::new(0),
            recovered: AtomicU64::new(0),
            down: Mutex::new(None),
            recovery: cfg.recovery.clone(),
            capabilities,
            metrics,
            handles: Mutex::new(std::collections::HashMap::new()),
        };
        Ok(Hsm { inner: Arc::new(inner) })
    }

    /// The module and token this handle uses.
    pub fn info(&self) -> &ModuleInfo {
        &self.inner.info
    }

    /// The handle of the secret key with CKA_ID `id`, from a cache filled
    /// on first use. Call inside [`Hsm::run`]. A cached handle is used only
    /// after its CKA_ID is read back and matches: another replica may have
    /// destroyed the object, and modules may reuse handle numbers. The cache
    /// is emptied when a session is reopened and entries are dropped by
    /// [`Hsm::forget_handle`].
    pub fn object(&self, session: &Session, id: &[u8]) -> Result<cryptoki::object::ObjectHandle, HsmError> {
        let cached = lock(&self.inner.handles).get(id).copied();
        if let Some(h) = cached {
            let same = session
                .get_attributes(h, &[cryptoki::object::AttributeType::Id])
                .map(|a| matches!(a.first(), Some(cryptoki::object::Attribute::Id(v)) if v.as_slice() == id))
                .unwrap_or(false);
            if same {
                return Ok(h);
            }
            self.forget_handle(id);
        }
        let h = keyops::find_by_id(session, &self.inner.info.path, id)?.ok_or_else(|| HsmError::ObjectNotFound {
            label: format!("CKA_ID {}", hex::encode(id)),
            token: self.inner.info.token_label.clone(),
        })?;
        lock(&self.inner.handles).insert(id.to_vec(), h);
        Ok(h)
    }

    /// Drops a cached handle (after the object is destroyed, or when a call
    /// found it invalid).
    pub fn forget_handle(&self, id: &[u8]) {
        lock(&self.inner.handles).remove(id);
    }

    /// The PKCS#11 slot id of the token (unstable across restarts on some
    /// modules; shown for diagnostics).
    pub fn slot_id(&self) -> u64 {
        self.inner.slot.id()
    }

    /// The capability table probed at start.
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.capabilities
    }

    /// The vendor numbers the capability table was probed with.
    pub fn vendor_numbers(cfg: &HsmConfig) -> &VendorMechanisms {
        &cfg.vendor
    }

    /// Current pool figures.
    pub fn pool_status(&self) -> PoolStatus {
        let i = &self.inner;
        PoolStatus {
            open: i.open.load(Ordering::Relaxed),
            in_use: i.in_use.load(Ordering::Relaxed),
            max: i.max,
            recovered: i.recovered.load(Ordering::Relaxed),
            up: lock(&i.down).is_none(),
        }
    }

    /// Runs `f` with a logged-in session from the pool, on the blocking
    /// thread pool. If the session turns out dead, it is replaced and `f`
    /// runs again (at most `hsm.recovery.max_attempts` times), so `f` must
    /// be safe to repeat: a dead session means the module did not perform
    /// the call. `op` names the operation in metrics.
    pub async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: Fn(&Session) -> Result<T, HsmError> + Send + 'static,
    {
        self.fail_fast_if_down()?;
        let permit = self.inner.permits.acquire().await.map_err(|_| HsmError::Unavailable {
            module: self.inner.info.path.clone(),
            reason: "session pool closed".into(),
        })?;
        let inner = self.inner.clone();
        let started = Instant::now();
        inner.in_use.fetch_add(1, Ordering::Relaxed);
        inner.metrics.set_pool(inner.open.load(Ordering::Relaxed), inner.in_use.load(Ordering::Relaxed));
        let joined = tokio::task::spawn_blocking(move || {
            let result = inner.run_blocking(&f);
            inner.in_use.fetch_sub(1, Ordering::Relaxed);
            inner.metrics.set_pool(inner.open.load(Ordering::Relaxed), inner.in_use.load(Ordering::Relaxed));
            result
        })
        .await;
        drop(permit);
        let result = joined.map_err(|e| HsmError::Worker(e.to_string())).and_then(|r| r);
        let error = result.as_ref().err().map(|e| match e.pkcs11_failure() {
            Some(f) => (f.function.to_string(), f.rv_name()),
            None => (op.to_owned(), "unavailable".to_owned()),
        });
        self.inner.metrics.observe_hsm(op, started.elapsed(), error.as_ref().map(|(f, r)| (f.as_str(), r.as_str())));
        result
    }

    fn fail_fast_if_down(&self) -> Result<(), HsmError> {
        let down = lock(&self.inner.down);
        match &*down {
            Some(d) if Instant::now() < d.retry_at => {
                Err(HsmError::Unavailable { module: self.inner.info.path.clone(), reason: d.reason.clone() })
            }
            _ => Ok(()),
        }
    }
}

impl Inner {
    fn run_blocking<T>(&self, f: &dyn Fn(&Session) -> Result<T, HsmError>) -> Result<T, HsmError> {
        let mut session = lock(&self.idle).pop();
        let mut attempts = 0u32;
        let mut backoff = Duration::from_millis(self.recovery.initial_backoff_ms);
        let max_backoff = Duration::from_millis(self.recovery.max_backoff_ms);
        loop {
            let current = match session.take() {
                Some(s) => s,
                None => match self.reopen() {
                    Ok(s) => s,
                    Err(e) => {
                        attempts += 1;
                        if attempts >= self.recovery.max_attempts {
                            return Err(self.mark_down(&e));
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(max_backoff);
                        continue;
                    }
                },
            };
            match f(&current) {
                Err(e) if e.session_is_dead() => {
                    tracing::warn!(module = %self.info.path, error = %e, "PKCS#11 session is dead; reopening");
                    self.discard(current);
                    attempts += 1;
                    if attempts >= self.recovery.max_attempts {
                        return Err(self.mark_down(&e));
                    }
                }
                result => {
                    lock(&self.idle).push(current);
                    self.mark_up();
                    return result;
                }
            }
        }
    }

    fn discard(&self, session: Session) {
        // why: closing an invalid handle fails; cryptoki logs and ignores it.
        drop(session);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn reopen(&self) -> Result<Session, HsmError> {
        let session = match open_logged_in(&self.ctx, self.slot, &self.pin, &self.info) {
            Err(e) if e.pkcs11_failure().is_some_and(|f| f.rv == RvError::CryptokiNotInitialized) => {
                // why: a module that was finalised (restarted) needs C_Initialize again.
                let _ = self.ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
                open_logged_in(&self.ctx, self.slot, &self.pin, &self.info)?
            }
            other => other?,
        };
        self.open.fetch_add(1, Ordering::Relaxed);
        self.recovered.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).clear();
        self.metrics.session_recovered();
        tracing::info!(module = %self.info.path, "PKCS#11 session reopened");
        Ok(session)
    }

    fn mark_down(&self, cause: &HsmError) -> HsmError {
        let reason = cause.to_string();
        tracing::error!(module = %self.info.path, %reason, "PKCS#11 module marked down");
        *lock(&self.down) = Some(Down {
            retry_at: Instant::now() + Duration::from_millis(self.recovery.down_retry_ms),
            reason: reason.clone(),
        });
        self.metrics.set_module_up(false);
        HsmError::Unavailable { module: self.info.path.clone(), reason }
    }

    fn mark_up(&self) {
        let mut down = lock(&self.down);
        if down.take().is_some() {
            tracing::info!(module = %self.info.path, "PKCS#11 module is back");
            self.metrics.set_module_up(true);
        }
    }
}

fn find_token(ctx: &Pkcs11, module: &str, label: &str) -> Result<(Slot, String), HsmError> {
    let slots = ctx.get_slots_with_token().map_err(|e| HsmError::from_cryptoki(module, e))?;
    let mut present = Vec::new();
    for slot in slots {
        let info = match ctx.get_token_info(slot) {
            Ok(i) => i,
            Err(_) => continue,
        };
        let l = info.label().trim_end().to_owned();
        if l == label && info.token_initialized() {
            return Ok((slot, info.serial_number().trim_end().to_owned()));
        }
        if info.token_initialized() {
            present.push(format!("{l:?}"));
        }
    }
    Err(HsmError::TokenNotFound {
        module: module.to_owned(),
        label: label.to_owned(),
        present: if present.is_empty() { "none".into() } else { present.join(", ") },
    })
}

fn open_logged_in(ctx: &Pkcs11, slot: Slot, pin: &SecretString, info: &ModuleInfo) -> Result<Session, HsmError> {
    let session = ctx.open_rw_session(slot).map_err(|e| HsmError::from_cryptoki(&info.path, e))?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(cryptoki::error::Error::Pkcs11(rv, function))
            if matches!(
                rv,
                RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired | RvError::PinLenRange
            ) =>
        {
            Err(HsmError::Login {
                module: info.path.clone(),
                label: info.token_label.clone(),
                failure: Pkcs11Failure { rv, function },
            })
        }
        Err(e) => Err(HsmError::from_cryptoki(&info.path, e)),
    }
}
