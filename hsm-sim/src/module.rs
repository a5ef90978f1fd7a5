//! The module core: slots, tokens, sessions, login, objects and operations,
//! as safe functions over owned Rust values.
//!
//! Locking: the module itself sits behind an `RwLock<Option<Arc<Module>>>`
//! taken only to clone the `Arc`. Sessions live in an `RwLock<HashMap>`;
//! each session has its own `Mutex` for operation state. Each token has an
//! `RwLock` over its object map holding `Arc<Object>`s. Cryptography runs
//! after the object `Arc` is cloned and every map lock is released, so
//! sessions on different threads run in parallel.
//!
//! Lock order (a lock on the left may be held while taking one on the
//! right, never the reverse): session `ops` → token `login` → module
//! `sessions`; `login` → `known` → `meta`/`tmk` → `objects`. `meta` is
//! released before `login` is taken.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use cryptoki_sys::*;
use digest::DynDigest;
use zeroize::Zeroizing;

use crate::attrs::Attrs;
use crate::config::{Config, ModuleConfig};
use crate::error::Res;
use crate::faults::Faults;
use crate::mech::{self, Mechanism, Mk};
use crate::object::{self, Kt, Object, Origin};
use crate::ops;
use crate::store::{self, PinRecord, TokenDir, TokenMeta};
use crate::vendor::VendorIds;

static MODULE: RwLock<Option<Arc<Module>>> = RwLock::new(None);

/// The initialised module, or `CKR_CRYPTOKI_NOT_INITIALIZED`.
pub(crate) fn get() -> Res<Arc<Module>> {
    MODULE.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone().ok_or(CKR_CRYPTOKI_NOT_INITIALIZED)
}

/// `C_Initialize`: loads the configuration and every token's public objects.
pub(crate) fn initialize() -> Res<()> {
    let mut g = MODULE.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    // why: PKCS#11 v2.40 §6.7.1 — a forked child must call C_Initialize; the
    // parent's state it inherited is not its own, so that call starts afresh.
    if g.as_ref().is_some_and(|m| m.pid == std::process::id()) {
        return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
    }
    let cfg = Config::load().map_err(|e| {
        eprintln!("hsm-sim: configuration error: {e}");
        CKR_GENERAL_ERROR
    })?;
    let m = Module::new(cfg).map_err(|e| {
        eprintln!("hsm-sim: {e}");
        CKR_GENERAL_ERROR
    })?;
    *g = Some(Arc::new(m));
    Ok(())
}

/// `C_Finalize`.
pub(crate) fn finalize() -> Res<()> {
    let mut g = MODULE.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    if g.take().is_none() {
        return Err(CKR_CRYPTOKI_NOT_INITIALIZED);
    }
    Ok(())
}

/// Output of an operation that writes into a caller buffer.
pub(crate) enum Out {
    /// The result (fits the caller's buffer).
    Data(Zeroizing<Vec<u8>>),
    /// The length needed (length query, or the buffer was too small).
    Len(usize),
}

/// One token (one slot).
pub(crate) struct Token {
    /// Slot id.
    pub slot_id: CK_SLOT_ID,
    /// Slot description.
    pub description: String,
    dir: TokenDir,
    meta: RwLock<Option<TokenMeta>>,
    login: Mutex<Option<CK_USER_TYPE>>,
    tmk: RwLock<Option<Zeroizing<Vec<u8>>>>,
    known: Mutex<Known>,
    objects: RwLock<HashMap<CK_OBJECT_HANDLE, Arc<Object>>>,
    next_handle: AtomicU64,
    index: usize,
}

/// Which object files (and which version of the objects directory) this
/// process has in memory.
#[derive(Default)]
struct Known {
    dir: Option<store::Stamp>,
    files: HashMap<u64, store::Stamp>,
}

/// Multi-part operation state for encrypt/decrypt/sign/verify.
pub(crate) struct Op {
    mk: Mk,
    mech: Mechanism,
    key: Arc<Object>,
    buf: Zeroizing<Vec<u8>>,
    pending: Option<Zeroizing<Vec<u8>>>,
    /// Block-mode state once `*Update` has been called.
    stream: Option<crate::stream::Stream>,
}

/// A running digest.
pub(crate) struct DigestOp {
    h: Box<dyn DynDigest + Send>,
    pending: Option<Vec<u8>>,
}

/// Operation state of one session.
#[derive(Default)]
pub(crate) struct Ops {
    find: Option<Vec<CK_OBJECT_HANDLE>>,
    encrypt: Option<Op>,
    decrypt: Option<Op>,
    sign: Option<Op>,
    verify: Option<Op>,
    digest: Option<DigestOp>,
}

/// One session.
pub(crate) struct Session {
    token: usize,
    rw: bool,
    ops: Mutex<Ops>,
}

/// Slot information for `C_GetSlotInfo`.
pub(crate) struct SlotInfo {
    /// Description.
    pub description: String,
}

/// Token information for `C_GetTokenInfo`.
pub(crate) struct TokenInfo {
    /// Label.
    pub label: String,
    /// Serial number.
    pub serial: String,
    /// Flags.
    pub flags: CK_FLAGS,
    /// Open sessions.
    pub sessions: usize,
    /// Open RW sessions.
    pub rw_sessions: usize,
    /// Minimum PIN length.
    pub min_pin: usize,
    /// Maximum PIN length.
    pub max_pin: usize,
}

/// Session information for `C_GetSessionInfo`.
pub(crate) struct SessionInfo {
    /// Slot id.
    pub slot: CK_SLOT_ID,
    /// `CKS_*` state.
    pub state: CK_STATE,
    /// Flags.
    pub flags: CK_FLAGS,
}

/// One answer of `C_GetAttributeValue`.
pub(crate) enum AttrAnswer {
    /// The value.
    Value(Vec<u8>),
    /// Sensitive or unextractable.
    Sensitive,
    /// Not an attribute of this object.
    Invalid,
}

/// The module.
pub(crate) struct Module {
    /// Vendor numbers in force.
    pub vendor: VendorIds,
    cfg: ModuleConfig,
    tokens: Vec<Token>,
    sessions: RwLock<HashMap<CK_SESSION_HANDLE, Arc<Session>>>,
    next_session: AtomicU64,
    /// Fault injection.
    pub faults: Faults,
    /// Process that initialised this instance (fork detection).
    pid: u32,
}

// why: every entry point catches panics; a panic while a lock is held must
// not turn the token unusable for the rest of the process, so poisoned locks
// are taken over (the guarded maps are valid after any partial update).
fn lock<T>(m: &Mutex<T>) -> Res<MutexGuard<'_, T>> {
    Ok(m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

macro_rules! rd {
    ($l:expr) => {
        $l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    };
}
macro_rules! wr {
    ($l:expr) => {
        $l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    };
}

impl Token {
    fn new(
        index: usize,
        slot_id: CK_SLOT_ID,
        description: String,
        dir: std::path::PathBuf,
        v: &VendorIds,
    ) -> Result<Self, String> {
        let dir = TokenDir(dir);
        let meta = dir.read_meta()?;
        let t = Self {
            slot_id,
            description,
            dir,
            meta: RwLock::new(meta),
            login: Mutex::new(None),
            tmk: RwLock::new(None),
            known: Mutex::new(Known::default()),
            objects: RwLock::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            index,
        };
        t.sync(v, true);
        Ok(t)
    }

    fn new_handle(&self) -> CK_OBJECT_HANDLE {
        ((self.index as u64 + 1) << 40) | self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    fn public_key(&self) -> Option<Vec<u8>> {
        let m = self.meta.read().ok()?;
        store::unhex(&m.as_ref()?.public_key)
    }

    /// Brings the in-memory object map in line with the token directory:
    /// loads files added or replaced by another process (or not yet
    /// readable because the token master key was unknown), drops objects
    /// whose files were removed. Cheap when nothing changed (one `stat`).
    ///
    /// why: the ceremony CLI and the service may use the same token
    /// directory from two processes; keys one creates must become visible to
    /// the other without a restart.
    fn sync(&self, v: &VendorIds, force: bool) {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir_stamp = self.dir.objects_stamp();
        if !force && dir_stamp.is_some() && dir_stamp == known.dir {
            return;
        }
        let Some(public_key) = self.public_key() else { return };
        let tmk = rd!(self.tmk).as_ref().map(|k| Zeroizing::new(k.to_vec()));
        let listing = self.dir.list_objects();
        let present: std::collections::HashSet<u64> = listing.iter().map(|(id, _)| *id).collect();
        let mut bad = 0;
        let mut loaded = Vec::new();
        let mut complete = true;
        for (id, st) in &listing {
            if known.files.get(id) == Some(st) {
                continue;
            }
            match self.dir.read_object(*id, &public_key, tmk.as_deref().map(|k| &k[..])) {
                Ok(Some(a)) => match Object::loaded(a, v, *id) {
                    Ok(o) => loaded.push((*id, *st, o)),
                    Err(_) => bad += 1,
                },
                Ok(None) => complete = false,
                Err(()) => bad += 1,
            }
        }
        if bad > 0 {
            eprintln!("hsm-sim: slot {}: {bad} unreadable object file(s) skipped", self.slot_id);
        }
        {
            let mut map = wr!(self.objects);
            map.retain(|_, o| o.file_id.is_none_or(|id| present.contains(&id) || !known.files.contains_key(&id)));
            for (id, st, o) in loaded {
                let existing = map.iter().find(|(_, x)| x.file_id == Some(id)).map(|(h, _)| *h);
                let h = existing.unwrap_or_else(|| self.new_handle());
                map.insert(h, o);
                known.files.insert(id, st);
            }
        }
        known.files.retain(|id, _| present.contains(id));
        // Keep rescanning while some files still wait for the master key.
        known.dir = if complete { dir_stamp } else { None };
    }

    /// Forgets a file this process just removed.
    fn note_removed(&self, id: u64) {
        if let Ok(mut k) = self.known.lock() {
            k.files.remove(&id);
        }
    }

    fn user(&self) -> Res<Option<CK_USER_TYPE>> {
        Ok(*lock(&self.login)?)
    }

    fn persist(&self, o: &Object) -> Res<()> {
        let Some(id) = o.file_id else { return Ok(()) };
        let secret = o.has_secret() || o.is_private();
        let key = if secret {
            rd!(self.tmk).as_ref().map(|k| k.to_vec()).ok_or(CKR_USER_NOT_LOGGED_IN)?
        } else {
            self.public_key().ok_or(CKR_GENERAL_ERROR)?
        };
        let key = Zeroizing::new(key);
        // Write and record under the `known` lock so a concurrent `sync`
        // never mistakes this file for another process's.
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.dir.write_object(id, secret, &key, &o.attrs)?;
        if let Some(st) = self.dir.object_stamp(id) {
            known.files.insert(id, st);
        }
        Ok(())
    }
}

impl Module {
    fn new(cfg: Config) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (i, s) in cfg.slots.iter().enumerate() {
            let desc = s.label.clone().unwrap_or_else(|| format!("hsm-sim slot {}", s.id));
            tokens.push(Token::new(i, s.id, desc, s.dir.clone(), &cfg.vendor)?);
        }
        Ok(Self {
            vendor: cfg.vendor,
            cfg: cfg.module,
            tokens,
            sessions: RwLock::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            faults: Faults::new(&cfg.faults)?,
            pid: std::process::id(),
        })
    }

    // ----- slots and tokens -------------------------------------------------

    fn token(&self, slot: CK_SLOT_ID) -> Res<&Token> {
        self.tokens.iter().find(|t| t.slot_id == slot).ok_or(CKR_SLOT_ID_INVALID)
    }

    /// `C_GetSlotList`.
    pub(crate) fn slot_list(&self) -> Vec<CK_SLOT_ID> {
        self.tokens.iter().map(|t| t.slot_id).collect()
    }

    /// `C_GetSlotInfo`.
    pub(crate) fn slot_info(&self, slot: CK_SLOT_ID) -> Res<SlotInfo> {
        Ok(SlotInfo { description: self.token(slot)?.description.clone() })
    }

    /// `C_GetTokenInfo`.
    pub(crate) fn token_info(&self, slot: CK_SLOT_ID) -> Res<TokenInfo> {
        let t = self.token(slot)?;
        let meta = rd!(t.meta);
        let mut flags = CKF_RNG | CKF_LOGIN_REQUIRED | CKF_RESTORE_KEY_NOT_NEEDED;
        let (label, serial) = match meta.as_ref() {
            Some(m) => {
                flags |= CKF_TOKEN_INITIALIZED;
                if m.user.is_some() {
                    flags |= CKF_USER_PIN_INITIALIZED;
                }
                let max = self.cfg.max_pin_failures;
                for (n, low, last, locked) in [
                    (m.user_failures, CKF_USER_PIN_COUNT_LOW, CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED),
                    (m.so_failures, CKF_SO_PIN_COUNT_LOW, CKF_SO_PIN_FINAL_TRY, CKF_SO_PIN_LOCKED),
                ] {
                    if n > 0 {
                        flags |= low;
                    }
                    if max > 0 && n + 1 == max {
                        flags |= last;
                    }
                    if max > 0 && n >= max {
                        flags |= locked;
                    }
                }
                (m.label.clone(), m.serial.clone())
            }
            None => (String::new(), format!("{:016x}", t.slot_id)),
        };
        let (mut n, mut rw) = (0, 0);
        for s in rd!(self.sessions).values() {
            if s.token == t.index {
                n += 1;
                rw += usize::from(s.rw);
            }
        }
        Ok(TokenInfo {
            label,
            serial,
            flags,
            sessions: n,
            rw_sessions: rw,
            min_pin: self.cfg.min_pin_len,
            max_pin: self.cfg.max_pin_len,
        })
    }

    /// `C_GetMechanismList`.
    pub(crate) fn mechanism_list(&self, slot: CK_SLOT_ID) -> Res<Vec<CK_MECHANISM_TYPE>> {
        self.token(slot)?;
        Ok(mech::list(&self.vendor))
    }

    /// `C_GetMechanismInfo`.
    pub(crate) fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        ty: CK_MECHANISM_TYPE,
    ) -> Res<(CK_ULONG, CK_ULONG, CK_FLAGS)> {
        self.token(slot)?;
        let k = mech::kind(&self.vendor, ty).ok_or(CKR_MECHANISM_INVALID)?;
        Ok(mech::info(k))
    }

    fn check_pin(&self, pin: &[u8]) -> Res<()> {
        if pin.len() < self.cfg.min_pin_len || pin.len() > self.cfg.max_pin_len {
            return Err(CKR_PIN_LEN_RANGE);
        }
        Ok(())
    }

    /// `C_InitToken`.
    pub(crate) fn init_token(&self, slot: CK_SLOT_ID, so_pin: &[u8], label: &[u8; 32]) -> Res<()> {
        let t = self.token(slot)?;
        if rd!(self.sessions).values().any(|s| s.token == t.index) {
            return Err(CKR_SESSION_EXISTS);
        }
        self.check_pin(so_pin)?;
        // Re-initialisation needs the current SO PIN (and counts failures).
        if let Ok(Some(m)) = t.dir.read_meta() {
            *wr!(t.meta) = Some(m);
        }
        let current = rd!(t.meta).clone();
        if let Some(m) = current {
            self.open_pin(t, true, &m.so, so_pin, m.iterations)?;
        }
        let mut meta = wr!(t.meta);
        let label = String::from_utf8_lossy(label).trim_end().to_string();
        let tmk = store::random(32);
        let iters = self.cfg.pin_kdf_iterations;
        let serial =
            meta.as_ref().map(|m| m.serial.clone()).unwrap_or_else(|| format!("{:016x}", object::random_u64()));
        let m = TokenMeta {
            format: store::FORMAT,
            label,
            serial,
            iterations: iters,
            so: PinRecord::new(so_pin, &tmk, iters)?,
            user: None,
            public_key: store::hex(&store::random(32)),
            so_failures: 0,
            user_failures: 0,
        };
        // The new metadata (new master key) goes first: if wiping then fails,
        // leftover files no longer decrypt and are skipped.
        t.dir.write_meta(&m)?;
        t.dir.wipe_objects()?;
        *meta = Some(m);
        // Lock order: never hold `meta` while taking `login`.
        drop(meta);
        wr!(t.objects).clear();
        *wr!(t.tmk) = None;
        *lock(&t.login)? = None;
        *t.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Known::default();
        Ok(())
    }

    // ----- sessions -----------------------------------------------------------

    fn session(&self, h: CK_SESSION_HANDLE) -> Res<Arc<Session>> {
        rd!(self.sessions).get(&h).cloned().ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    /// `C_OpenSession`.
    pub(crate) fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Res<CK_SESSION_HANDLE> {
        let t = self.token(slot)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        }
        if rd!(t.meta).is_none() {
            return Err(CKR_TOKEN_NOT_RECOGNIZED);
        }
        let rw = flags & CKF_RW_SESSION != 0;
        if !rw && t.user()? == Some(CKU_SO) {
            return Err(CKR_SESSION_READ_WRITE_SO_EXISTS);
        }
        let h = self.next_session.fetch_add(1, Ordering::Relaxed);
        let s = Arc::new(Session { token: t.index, rw, ops: Mutex::new(Ops::default()) });
        wr!(self.sessions).insert(h, s);
        Ok(h)
    }

    fn drop_session_objects(&self, t: &Token, h: CK_SESSION_HANDLE) -> Res<()> {
        wr!(t.objects).retain(|_, o| o.session != Some(h));
        Ok(())
    }

    /// `C_CloseSession`.
    pub(crate) fn close_session(&self, h: CK_SESSION_HANDLE) -> Res<()> {
        let s = wr!(self.sessions).remove(&h).ok_or(CKR_SESSION_HANDLE_INVALID)?;
        let t = &self.tokens[s.token];
        self.drop_session_objects(t, h)?;
        if !rd!(self.sessions).values().any(|o| o.token == s.token) {
            // PKCS#11 v2.40 §5.6: closing the last session logs the token out.
            *lock(&t.login)? = None;
        }
        Ok(())
    }

    /// `C_CloseAllSessions`.
    pub(crate) fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Res<()> {
        let t = self.token(slot)?;
        let closed: Vec<CK_SESSION_HANDLE> = {
            let mut g = wr!(self.sessions);
            let hs: Vec<_> = g.iter().filter(|(_, s)| s.token == t.index).map(|(h, _)| *h).collect();
            for h in &hs {
                g.remove(h);
            }
            hs
        };
        wr!(t.objects).retain(|_, o| o.session.is_none_or(|h| !closed.contains(&h)));
        *lock(&t.login)? = None;
        Ok(())
    }

    /// `C_GetSessionInfo`.
    pub(crate) fn session_info(&self, h: CK_SESSION_HANDLE) -> Res<SessionInfo> {
        let s = self.session(h)?;
        let t = &self.tokens[s.token];
        let state = match (t.user()?, s.rw) {
            (None, false) => CKS_RO_PUBLIC_SESSION,
            (None, true) => CKS_RW_PUBLIC_SESSION,
            (Some(CKU_SO), _) => CKS_RW_SO_FUNCTIONS,
            (Some(_), false) => CKS_RO_USER_FUNCTIONS,
            (Some(_), true) => CKS_RW_USER_FUNCTIONS,
        };
        let flags = CKF_SERIAL_SESSION | if s.rw { CKF_RW_SESSION } else { 0 };
        Ok(SessionInfo { slot: t.slot_id, state, flags })
    }

    // ----- login and PINs -----------------------------------------------------

    fn unlock_tmk(&self, t: &Token, tmk: Zeroizing<Vec<u8>>) -> Res<()> {
        *wr!(t.tmk) = Some(tmk);
        // Objects encrypted under the master key become readable now.
        t.sync(&self.vendor, true);
        Ok(())
    }

    /// `C_Login`.
    pub(crate) fn login(&self, h: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Res<()> {
        let s = self.session(h)?;
        let t = &self.tokens[s.token];
        if !matches!(user, CKU_SO | CKU_USER | CKU_CONTEXT_SPECIFIC) {
            return Err(CKR_USER_TYPE_INVALID);
        }
        if user == CKU_CONTEXT_SPECIFIC {
            // why: no key here has CKA_ALWAYS_AUTHENTICATE.
            return Err(CKR_OPERATION_NOT_INITIALIZED);
        }
        let check_state = |login: &Option<CK_USER_TYPE>| -> Res<()> {
            match *login {
                Some(u) if u == user => return Err(CKR_USER_ALREADY_LOGGED_IN),
                Some(_) => return Err(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
                None => {}
            }
            if user == CKU_SO && rd!(self.sessions).values().any(|o| o.token == s.token && !o.rw) {
                return Err(CKR_SESSION_READ_ONLY_EXISTS);
            }
            Ok(())
        };
        check_state(&*lock(&t.login)?)?;
        // The slow PIN check runs with no lock held, so other sessions keep
        // working while someone logs in.
        // Another process may have changed a PIN: take token.toml from disk.
        if let Ok(Some(m)) = t.dir.read_meta() {
            *wr!(t.meta) = Some(m);
        }
        let meta = rd!(t.meta).clone().ok_or(CKR_TOKEN_NOT_RECOGNIZED)?;
        let rec =
            if user == CKU_SO { meta.so.clone() } else { meta.user.clone().ok_or(CKR_USER_PIN_NOT_INITIALIZED)? };
        let tmk = self.open_pin(t, user == CKU_SO, &rec, pin, meta.iterations)?;
        let mut login = lock(&t.login)?;
        check_state(&login)?;
        self.unlock_tmk(t, tmk)?;
        *login = Some(user);
        Ok(())
    }

    /// Checks a PIN against its record, counting consecutive failures in
    /// `token.toml` and refusing a locked PIN (`[module] max_pin_failures`).
    fn open_pin(&self, t: &Token, so: bool, rec: &PinRecord, pin: &[u8], iters: u32) -> Res<Zeroizing<Vec<u8>>> {
        let max = self.cfg.max_pin_failures;
        let failures = |m: &TokenMeta| if so { m.so_failures } else { m.user_failures };
        if max > 0 && rd!(t.meta).as_ref().is_some_and(|m| failures(m) >= max) {
            return Err(CKR_PIN_LOCKED);
        }
        let r = rec.open(pin, iters);
        let bump = match r {
            Err(CKR_PIN_INCORRECT) => Some(true),
            Ok(_) => Some(false),
            Err(_) => None,
        };
        if let Some(failed) = bump {
            let mut meta = wr!(t.meta);
            if let Some(m) = meta.as_mut() {
                let counter = if so { &mut m.so_failures } else { &mut m.user_failures };
                let new = if failed { counter.saturating_add(1) } else { 0 };
                if new != *counter {
                    let mut copy = m.clone();
                    if so {
                        copy.so_failures = new
                    } else {
                        copy.user_failures = new
                    }
                    t.dir.write_meta(&copy)?;
                    *m = copy;
                }
                if failed && max > 0 && new >= max {
                    return Err(CKR_PIN_LOCKED);
                }
            }
        }
        r
    }

    /// `C_Logout`.
    pub(crate) fn logout(&self, h: CK_SESSION_HANDLE) -> Res<()> {
        let s = self.session(h)?;
        let t = &self.tokens[s.token];
        let mut login = lock(&t.login)?;
        if login.take().is_none() {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        Ok(())
    }

    /// `C_InitPIN` (SO, RW session).
    pub(crate) fn init_pin(&self, h: CK_SESSION_HANDLE, pin: &[u8]) -> Res<()> {
        let s = self.session(h)?;
        let t = &self.tokens[s.token];
        if t.user()? != Some(CKU_SO) || !s.rw {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        self.check_pin(pin)?;
        let tmk = rd!(t.tmk).as_ref().map(|k| Zeroizing::new(k.to_vec())).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        let mut meta = wr!(t.meta);
        let m = meta.as_mut().ok_or(CKR_TOKEN_NOT_RECOGNIZED)?;
        let mut new = m.clone();
        new.user = Some(PinRecord::new(pin, &tmk, m.iterations)?);
        new.user_failures = 0;
        t.dir.write_meta(&new)?;
        *m = new;
        Ok(())
    }

    /// `C_SetPIN`: the SO's PIN if the SO is logged in, else the user's.
    pub(crate) fn set_pin(&self, h: CK_SESSION_HANDLE, old: &[u8], new_pin: &[u8]) -> Res<()> {
        let s = self.session(h)?;
        let t = &self.tokens[s.token];
        if !s.rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        self.check_pin(new_pin)?;
        let so = t.user()? == Some(CKU_SO);
        let m = rd!(t.meta).clone().ok_or(CKR_TOKEN_NOT_RECOGNIZED)?;
        let rec = if so { m.so.clone() } else { m.user.clone().ok_or(CKR_USER_PIN_NOT_INITIALIZED)? };
        let tmk = self.open_pin(t, so, &rec, old, m.iterations)?;
        let record = PinRecord::new(new_pin, &tmk, m.iterations)?;
        let mut meta = wr!(t.meta);
        let cur = meta.as_mut().ok_or(CKR_TOKEN_NOT_RECOGNIZED)?;
        let mut new = cur.clone();
        if so {
            new.so = record;
        } else {
            new.user = Some(record);
        }
        t.dir.write_meta(&new)?;
        *cur = new;
        Ok(())
    }

    // ----- objects --------------------------------------------------------------

    fn visible(&self, t: &Token, o: &Object) -> Res<bool> {
        Ok(!o.is_private() || t.user()? == Some(CKU_USER))
    }

    fn object(&self, s: &Session, oh: CK_OBJECT_HANDLE, err: CK_RV) -> Res<Arc<Object>> {
        let t = &self.tokens[s.token];
        let o = rd!(t.objects).get(&oh).cloned().ok_or(err)?;
        if !self.visible(t, &o)? {
            return Err(err);
        }
        Ok(o)
    }

    fn check_create(&self, s: &Session, a: &Attrs) -> Res<()> {
        let t = &self.tokens[s.token];
        let user = t.user()?;
        if a.flag(CKA_TOKEN) && !s.rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        if a.flag(CKA_PRIVATE) && user != Some(CKU_USER) {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        if a.flag(CKA_TRUSTED) && user != Some(CKU_SO) {
            return Err(CKR_ATTRIBUTE_READ_ONLY);
        }
        Ok(())
    }

    fn insert(&self, s: &Session, h: CK_SESSION_HANDLE, a: Attrs) -> Res<CK_OBJECT_HANDLE> {
        self.check_create(s, &a)?;
        let t = &self.tokens[s.token];
        let token = a.flag(CKA_TOKEN);
        let o = Object::new(a, &self.vendor, if token { None } else { Some(h) })?;
        t.persist(&o)?;
        let oh = t.new_handle();
        wr!(t.objects).insert(oh, o);
        Ok(oh)
    }

    /// `C_CreateObject`.
    pub(crate) fn create_object(&self, h: CK_SESSION_HANDLE, template: Attrs) -> Res<CK_OBJECT_HANDLE> {
        let s = self.session(h)?;
        let a = object::build_created(template, &self.vendor)?;
        self.insert(&s, h, a)
    }

    /// `C_CopyObject`.
    pub(crate) fn copy_object(
        &self,
        h: CK_SESSION_HANDLE,
        oh: CK_OBJECT_HANDLE,
        template: Attrs,
    ) -> Res<CK_OBJECT_HANDLE> {
        let s = self.session(h)?;
        let o = self.object(&s, oh, CKR_OBJECT_HANDLE_INVALID)?;
        if !o.attrs.flag(CKA_COPYABLE) {
            return Err(CKR_ACTION_PROHIBITED);
        }
        let mut changes = template.duplicate();
        // TOKEN and PRIVATE may be chosen for the copy.
        let mut base = o.attrs.duplicate();
        for t in [CKA_TOKEN, CKA_PRIVATE] {
            if let Some(v) = changes.get(t) {
                base.set(t, v.to_vec());
            }
            changes.remove(t);
        }
        let tmp = o.with_attrs(base);
        let a = object::apply_changes(&tmp, &changes, self.tokens[s.token].user()? == Some(CKU_SO))?;
        self.insert(&s, h, a)
    }

    /// `C_DestroyObject`.
    pub(crate) fn destroy_object(&self, h: CK_SESSION_HANDLE, oh: CK_OBJECT_HANDLE) -> Res<()> {
        let s = self.session(h)?;
        let t = &self.tokens[s.token];
        let o = self.object(&s, oh, CKR_OBJECT_HANDLE_INVALID)?;
        if o.is_token() && !s.rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        if !o.attrs.flag(CKA_DESTROYABLE) {
            return Err(CKR_ACTION_PROHIBITED);
        }
        if let Some(id) = o.file_id {
            t.dir.delete_object(id)?;
            t.note_removed(id);
        }
        wr!(t.objects).remove(&oh);
        Ok(())
    }

    /// `C_GetObjectSize`: the size of the stored attributes.
    pub(crate) fn object_size(&self, h: CK_SESSION_HANDLE, oh: CK_OBJECT_HANDLE) -> Res<usize> {
        let s = self.session(h)?;
        Ok(self.object(&s, oh, CKR_OBJECT_HANDLE_INVALID)?.attrs.serialize().len())
    }

    /// `C_GetAttributeValue`.
    pub(crate) fn get_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        oh: CK_OBJECT_HANDLE,
        types: &[CK_ATTRIBUTE_TYPE],
    ) -> Res<Vec<AttrAnswer>> {
        let s = self.session(h)?;
        let o = self.object(&s, oh, CKR_OBJECT_HANDLE_INVALID)?;
        Ok(types
            .iter()
            .map(|&t| {
                if o.is_sensitive_attr(t) {
                    AttrAnswer::Sensitive
                } else {
                    match o.attrs.get(t) {
                        Some(v) => AttrAnswer::Value(v.to_vec()),
                        None => AttrAnswer::Invalid,
                    }
                }
            })
            .collect())
    }

    /// `C_SetAttributeValue`.
    pub(crate) fn set_attributes(&self, h: CK_SESSION_HANDLE, oh: CK_OBJECT_HANDLE, changes: Attrs) -> Res<()> {
        let s = self.session(h)?;
        let t = &self.tokens[s.token];
        let o = self.object(&s, oh, CKR_OBJECT_HANDLE_INVALID)?;
        if o.is_token() && !s.rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        let a = object::apply_changes(&o, &changes, t.user()? == Some(CKU_SO))?;
        let n = o.with_attrs(a);
        t.persist(&n)?;
        wr!(t.objects).insert(oh, n);
        Ok(())
    }

    /// `C_FindObjectsInit`.
    pub(crate) fn find_init(&self, h: CK_SESSION_HANDLE, template: Attrs) -> Res<()> {
        let s = self.session(h)?;
        let t = &self.tokens[s.token];
        let mut ops = lock(&s.ops)?;
        if ops.find.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        t.sync(&self.vendor, false);
        let user = t.user()?;
        let mut found: Vec<CK_OBJECT_HANDLE> = rd!(t.objects)
            .iter()
            .filter(|(_, o)| (!o.is_private() || user == Some(CKU_USER)) && o.attrs.matches(&template))
            .map(|(h, _)| *h)
            .collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        ops.find = Some(found);
        Ok(())
    }

    /// `C_FindObjects`.
    pub(crate) fn find(&self, h: CK_SESSION_HANDLE, max: usize) -> Res<Vec<CK_OBJECT_HANDLE>> {
        let s = self.session(h)?;
        let mut ops = lock(&s.ops)?;
        let f = ops.find.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let mut out = Vec::new();
        while out.len() < max {
            match f.pop() {
                Some(x) => out.push(x),
                None => break,
            }
        }
        Ok(out)
    }

    /// `C_FindObjectsFinal`.
    pub(crate) fn find_final(&self, h: CK_SESSION_HANDLE) -> Res<()> {
        let s = self.session(h)?;
        lock(&s.ops)?.find.take().map(|_| ()).ok_or(CKR_OPERATION_NOT_INITIALIZED)
    }

    // ----- cryptographic operations ------------------------------------------------

    fn kind(&self, m: &Mechanism) -> Res<Mk> {
        mech::kind(&self.vendor, m.ty).ok_or(CKR_MECHANISM_INVALID)
    }

    fn usage(&self, o: &Object, attr: CK_ATTRIBUTE_TYPE) -> Res<()> {
        if o.attrs.flag(attr) { Ok(()) } else { Err(CKR_KEY_FUNCTION_NOT_PERMITTED) }
    }

    /// `CKA_ALLOWED_MECHANISMS`: when present and non-empty, the key may be
    /// used only with the listed mechanisms.
    fn allowed(&self, o: &Object, ty: CK_MECHANISM_TYPE) -> Res<()> {
        match o.attrs.get(CKA_ALLOWED_MECHANISMS) {
            Some(list) if !list.is_empty() => {
                let ok = list.chunks_exact(8).any(|c| c == ty.to_ne_bytes());
                if ok { Ok(()) } else { Err(CKR_MECHANISM_INVALID) }
            }
            _ => Ok(()),
        }
    }

    fn op_init(&self, h: CK_SESSION_HANDLE, m: Mechanism, kh: CK_OBJECT_HANDLE, which: Which) -> Res<()> {
        let s = self.session(h)?;
        let mk = self.kind(&m)?;
        let (flag, attr, private_side) = match which {
            Which::Encrypt => (CKF_ENCRYPT, CKA_ENCRYPT, false),
            Which::Decrypt => (CKF_DECRYPT, CKA_DECRYPT, true),
            Which::Sign => (CKF_SIGN, CKA_SIGN, true),
            Which::Verify => (CKF_VERIFY, CKA_VERIFY, false),
        };
        if mech::info(mk).2 & flag == 0 {
            return Err(CKR_MECHANISM_INVALID);
        }
        let key = self.object(&s, kh, CKR_KEY_HANDLE_INVALID)?;
        ops::check_key(mk, &key, private_side)?;
        self.usage(&key, attr)?;
        self.allowed(&key, m.ty)?;
        ops::check_param(mk, &m)?;
        let mut g = lock(&s.ops)?;
        let slot = which.slot(&mut g);
        if slot.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        *slot = Some(Op { mk, mech: m, key, buf: Zeroizing::new(Vec::new()), pending: None, stream: None });
        Ok(())
    }

    /// `C_EncryptInit` / `C_DecryptInit` / `C_SignInit` / `C_VerifyInit`.
    pub(crate) fn init(&self, h: CK_SESSION_HANDLE, m: Mechanism, kh: CK_OBJECT_HANDLE, which: Which) -> Res<()> {
        self.op_init(h, m, kh, which)
    }

    /// Takes the op out of the session so the cryptography runs without the
    /// session's lock held (a session is used by one thread at a time).
    fn take_op(&self, s: &Session, which: Which) -> Res<Op> {
        let mut g = lock(&s.ops)?;
        which.slot(&mut g).take().ok_or(CKR_OPERATION_NOT_INITIALIZED)
    }

    fn put_op(&self, s: &Session, which: Which, op: Op) -> Res<()> {
        let mut g = lock(&s.ops)?;
        *which.slot(&mut g) = Some(op);
        Ok(())
    }

    /// Single-part `C_Encrypt`/`C_Decrypt`/`C_Sign` and the `*Final` calls:
    /// computes over everything buffered plus `data`, honouring the
    /// length-query convention (the result is kept until it is collected).
    pub(crate) fn finish(&self, h: CK_SESSION_HANDLE, which: Which, data: &[u8], cap: Option<usize>) -> Res<Out> {
        let s = self.session(h)?;
        let mut op = self.take_op(&s, which)?;
        let result = match op.pending.take() {
            Some(r) => r,
            None if op.stream.is_some() => match op.stream.as_mut() {
                // `*Final` after streaming `*Update`s (data is empty then).
                Some(st) => st.finish()?,
                None => return Err(CKR_GENERAL_ERROR),
            },
            None => {
                buffer(&mut op.buf, data)?;
                let r = match which {
                    Which::Encrypt => ops::encrypt(op.mk, &op.mech, &op.key, &op.buf).map(Zeroizing::new),
                    Which::Decrypt => ops::decrypt(op.mk, &op.mech, &op.key, &op.buf, false),
                    Which::Sign => ops::sign(op.mk, &op.mech, &op.key, &op.buf).map(Zeroizing::new),
                    Which::Verify => Err(CKR_GENERAL_ERROR),
                };
                // Errors terminate the operation (it is not put back).
                r?
            }
        };
        match cap {
            Some(c) if c >= result.len() => Ok(Out::Data(result)),
            _ => {
                let n = result.len();
                op.pending = Some(result);
                self.put_op(&s, which, op)?;
                Ok(Out::Len(n))
            }
        }
    }

    /// `C_EncryptUpdate` / `C_DecryptUpdate`: block modes stream (see
    /// `stream.rs`), other mechanisms buffer and return nothing until
    /// `*Final`. A length query or a too-small buffer consumes nothing.
    pub(crate) fn crypt_update(&self, h: CK_SESSION_HANDLE, which: Which, data: &[u8], cap: Option<usize>) -> Res<Out> {
        let s = self.session(h)?;
        let mut g = lock(&s.ops)?;
        let slot = which.slot(&mut g);
        let op = slot.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if op.pending.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        if op.stream.is_none() && op.buf.is_empty() {
            match crate::stream::Stream::new(op.mk, &op.mech, &op.key, which == Which::Encrypt) {
                Ok(st) => op.stream = st,
                Err(e) => {
                    *slot = None;
                    return Err(e);
                }
            }
        }
        match op.stream.as_mut() {
            Some(st) => {
                let n = st.update_len(data.len());
                match cap {
                    Some(c) if c >= n => Ok(Out::Data(st.update(data))),
                    _ => Ok(Out::Len(n)),
                }
            }
            None => {
                if cap.is_some() {
                    buffer(&mut op.buf, data)?;
                    Ok(Out::Data(Zeroizing::new(Vec::new())))
                } else {
                    Ok(Out::Len(0))
                }
            }
        }
    }

    /// `C_SignUpdate` / `C_VerifyUpdate`: input is buffered.
    pub(crate) fn update(&self, h: CK_SESSION_HANDLE, which: Which, data: &[u8]) -> Res<()> {
        let s = self.session(h)?;
        let mut g = lock(&s.ops)?;
        let op = which.slot(&mut g).as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if op.pending.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        buffer(&mut op.buf, data)
    }

    /// `C_Verify` / `C_VerifyFinal`.
    pub(crate) fn verify_finish(&self, h: CK_SESSION_HANDLE, data: &[u8], sig: &[u8]) -> Res<()> {
        let s = self.session(h)?;
        let mut op = self.take_op(&s, Which::Verify)?;
        buffer(&mut op.buf, data)?;
        ops::verify(op.mk, &op.mech, &op.key, &op.buf, sig)
    }

    /// `C_DigestInit`.
    pub(crate) fn digest_init(&self, h: CK_SESSION_HANDLE, m: Mechanism) -> Res<()> {
        let s = self.session(h)?;
        let mk = self.kind(&m)?;
        if mech::info(mk).2 & CKF_DIGEST == 0 {
            return Err(CKR_MECHANISM_INVALID);
        }
        ops::check_param(mk, &m)?;
        let mut g = lock(&s.ops)?;
        if g.digest.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        g.digest = Some(DigestOp { h: ops::digest(mk)?, pending: None });
        Ok(())
    }

    /// `C_DigestUpdate`.
    pub(crate) fn digest_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Res<()> {
        let s = self.session(h)?;
        let mut g = lock(&s.ops)?;
        let d = g.digest.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if d.pending.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        d.h.update(data);
        Ok(())
    }

    /// `C_DigestKey`: only keys whose value could be read anyway.
    pub(crate) fn digest_key(&self, h: CK_SESSION_HANDLE, kh: CK_OBJECT_HANDLE) -> Res<()> {
        let s = self.session(h)?;
        let k = self.object(&s, kh, CKR_KEY_HANDLE_INVALID)?;
        if k.class != CKO_SECRET_KEY || k.is_sensitive_attr(CKA_VALUE) {
            return Err(CKR_KEY_INDIGESTIBLE);
        }
        self.digest_update(h, k.value()?)
    }

    /// `C_Digest` / `C_DigestFinal`.
    pub(crate) fn digest_finish(&self, h: CK_SESSION_HANDLE, data: &[u8], cap: Option<usize>) -> Res<Out> {
        let s = self.session(h)?;
        let mut g = lock(&s.ops)?;
        let mut d = g.digest.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let r = match d.pending.take() {
            Some(r) => r,
            None => {
                d.h.update(data);
                d.h.finalize_reset().to_vec()
            }
        };
        match cap {
            Some(c) if c >= r.len() => Ok(Out::Data(Zeroizing::new(r))),
            _ => {
                let n = r.len();
                d.pending = Some(r);
                g.digest = Some(d);
                Ok(Out::Len(n))
            }
        }
    }

    // ----- key management -----------------------------------------------------------

    fn template_kt(&self, a: &Attrs, default: Option<Kt>) -> Res<Kt> {
        match a.ulong_opt(CKA_KEY_TYPE)? {
            Some(k) => Kt::from_ckk(&self.vendor, k),
            None => default.ok_or(CKR_TEMPLATE_INCOMPLETE),
        }
    }

    fn secret_template(&self, a: &Attrs) -> Res<()> {
        if let Some(c) = a.ulong_opt(CKA_CLASS)?
            && c != CKO_SECRET_KEY
        {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        object::check_template(CKO_SECRET_KEY, a)?;
        if a.has(CKA_VALUE) {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        Ok(())
    }

    /// `C_GenerateKey`.
    pub(crate) fn generate_key(&self, h: CK_SESSION_HANDLE, m: Mechanism, template: Attrs) -> Res<CK_OBJECT_HANDLE> {
        let s = self.session(h)?;
        let mk = self.kind(&m)?;
        self.secret_template(&template)?;
        let (kt, len) = match mk {
            Mk::DesKeyGen => (Kt::Des, 8),
            Mk::Des2KeyGen => (Kt::Des2, 16),
            Mk::Des3KeyGen => (Kt::Des3, 24),
            Mk::Sm4KeyGen => (Kt::Sm4, 16),
            Mk::AesKeyGen => {
                let l = template.ulong_opt(CKA_VALUE_LEN)?.ok_or(CKR_TEMPLATE_INCOMPLETE)? as usize;
                if !matches!(l, 16 | 24 | 32) {
                    return Err(CKR_ATTRIBUTE_VALUE_INVALID);
                }
                (Kt::Aes, l)
            }
            Mk::GenericSecretKeyGen => {
                let l = template.ulong_opt(CKA_VALUE_LEN)?.ok_or(CKR_TEMPLATE_INCOMPLETE)? as usize;
                if !(1..=512).contains(&l) {
                    return Err(CKR_ATTRIBUTE_VALUE_INVALID);
                }
                (Kt::Generic, l)
            }
            _ => return Err(CKR_MECHANISM_INVALID),
        };
        if self.template_kt(&template, Some(kt))? != kt {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        if let Some(l) = template.ulong_opt(CKA_VALUE_LEN)?
            && l as usize != len
        {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        let a = object::build_secret(template, &self.vendor, kt, store::random(len), Origin::Generated(m.ty))?;
        self.insert(&s, h, a)
    }

    /// `C_GenerateKeyPair`.
    pub(crate) fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        m: Mechanism,
        mut pubt: Attrs,
        mut privt: Attrs,
    ) -> Res<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let s = self.session(h)?;
        let mk = self.kind(&m)?;
        for (t, c) in [(&pubt, CKO_PUBLIC_KEY), (&privt, CKO_PRIVATE_KEY)] {
            if let Some(x) = t.ulong_opt(CKA_CLASS)?
                && x != c
            {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
            object::check_template(c, t)?;
        }
        let origin = Origin::Generated(m.ty);
        let kt = match mk {
            Mk::EcKeyPairGen | Mk::Sm2KeyPairGen => {
                let (kt, default) =
                    if mk == Mk::EcKeyPairGen { (Kt::Ec, None) } else { (Kt::Sm2, Some(crate::asym::OID_SM2)) };
                let params = match (pubt.get(CKA_EC_PARAMS).or(privt.get(CKA_EC_PARAMS)), default) {
                    (Some(p), _) => p.to_vec(),
                    (None, Some(d)) => d.to_vec(),
                    (None, None) => return Err(CKR_TEMPLATE_INCOMPLETE),
                };
                let curve = crate::asym::Curve::from_params(&params)?;
                if (curve == crate::asym::Curve::Sm2) != (kt == Kt::Sm2) {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
                if pubt.has(CKA_EC_POINT) || privt.has(CKA_VALUE) {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
                let (d, q) = crate::asym::ec_generate(curve);
                pubt.set(CKA_EC_PARAMS, params.clone());
                pubt.set(CKA_EC_POINT, crate::asym::der_octet_string(&q));
                privt.set(CKA_EC_PARAMS, params);
                privt.set(CKA_VALUE, d.to_vec());
                kt
            }
            Mk::RsaKeyPairGen => {
                let bits = pubt.ulong_opt(CKA_MODULUS_BITS)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                if !(2048..=4096).contains(&bits) || bits % 8 != 0 {
                    return Err(CKR_KEY_SIZE_RANGE);
                }
                let e = pubt.get(CKA_PUBLIC_EXPONENT).map(<[u8]>::to_vec).unwrap_or_else(|| vec![1, 0, 1]);
                let p = crate::asym::rsa_generate(bits as usize, &e)?;
                pubt.set(CKA_MODULUS, p.n.clone());
                pubt.set(CKA_PUBLIC_EXPONENT, p.e.clone());
                privt.set(CKA_MODULUS, p.n);
                privt.set(CKA_PUBLIC_EXPONENT, p.e);
                set_rsa_private(&mut privt, p.private);
                Kt::Rsa
            }
            _ => return Err(CKR_MECHANISM_INVALID),
        };
        for t in [&mut pubt, &mut privt] {
            if self.template_kt(t, Some(kt))? != kt {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
            t.set_ulong(CKA_KEY_TYPE, kt.ckk(&self.vendor));
        }
        object::public_defaults(&mut pubt, &origin);
        object::private_defaults(&mut privt, &origin);
        // Both objects must be creatable before either is stored.
        self.check_create(&s, &pubt)?;
        self.check_create(&s, &privt)?;
        let ph = self.insert(&s, h, pubt)?;
        match self.insert(&s, h, privt) {
            Ok(k) => Ok((ph, k)),
            Err(e) => {
                let _ = self.destroy_object(h, ph);
                Err(e)
            }
        }
    }

    /// `C_WrapKey`.
    pub(crate) fn wrap_key(
        &self,
        h: CK_SESSION_HANDLE,
        m: Mechanism,
        wh: CK_OBJECT_HANDLE,
        kh: CK_OBJECT_HANDLE,
        cap: Option<usize>,
    ) -> Res<Out> {
        let s = self.session(h)?;
        let mk = self.kind(&m)?;
        if mech::info(mk).2 & CKF_WRAP == 0 {
            return Err(CKR_MECHANISM_INVALID);
        }
        let w = self.object(&s, wh, CKR_WRAPPING_KEY_HANDLE_INVALID)?;
        let k = self.object(&s, kh, CKR_KEY_HANDLE_INVALID)?;
        ops::check_key(mk, &w, false).map_err(|_| CKR_WRAPPING_KEY_TYPE_INCONSISTENT)?;
        self.usage(&w, CKA_WRAP)?;
        self.allowed(&w, m.ty)?;
        ops::check_param(mk, &m)?;
        if k.class != CKO_SECRET_KEY && k.class != CKO_PRIVATE_KEY {
            return Err(CKR_KEY_NOT_WRAPPABLE);
        }
        if !k.attrs.flag(CKA_EXTRACTABLE) {
            return Err(CKR_KEY_UNEXTRACTABLE);
        }
        if k.attrs.flag(CKA_WRAP_WITH_TRUSTED) && !w.attrs.flag(CKA_TRUSTED) {
            return Err(CKR_KEY_NOT_WRAPPABLE);
        }
        // Private keys travel as PKCS#8 PrivateKeyInfo (as SoftHSM does).
        let der;
        let value = if k.class == CKO_PRIVATE_KEY {
            der = crate::asym::pkcs8_encode(k.private_key()?)?;
            &der[..]
        } else {
            k.value()?
        };
        if matches!(mk, Mk::Des3Ecb | Mk::Des3Cbc | Mk::AesEcb | Mk::AesCbc | Mk::Sm4Ecb | Mk::Sm4Cbc) {
            let bs = if ops::sym_family(mk) == Some(crate::sym::Family::Tdes) { 8 } else { 16 };
            if value.len() % bs != 0 {
                return Err(CKR_KEY_SIZE_RANGE);
            }
        }
        let out = ops::encrypt(mk, &m, &w, value)
            .map_err(|e| if e == CKR_DATA_LEN_RANGE { CKR_KEY_SIZE_RANGE } else { e })?;
        match cap {
            Some(c) if c >= out.len() => Ok(Out::Data(Zeroizing::new(out))),
            _ => Ok(Out::Len(out.len())),
        }
    }

    fn new_key_len(&self, a: &Attrs, kt: Kt, available: usize) -> Res<usize> {
        let l = match (a.ulong_opt(CKA_VALUE_LEN)?, kt.fixed_len()) {
            (Some(l), Some(f)) if l as usize != f => return Err(CKR_TEMPLATE_INCONSISTENT),
            (Some(l), _) => l as usize,
            (None, Some(f)) => f,
            (None, None) => available,
        };
        if l > available || l == 0 {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        Ok(l)
    }

    /// `C_UnwrapKey`.
    pub(crate) fn unwrap_key(
        &self,
        h: CK_SESSION_HANDLE,
        m: Mechanism,
        uh: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        mut template: Attrs,
    ) -> Res<CK_OBJECT_HANDLE> {
        let s = self.session(h)?;
        let mk = self.kind(&m)?;
        if mech::info(mk).2 & CKF_UNWRAP == 0 {
            return Err(CKR_MECHANISM_INVALID);
        }
        let u = self.object(&s, uh, CKR_UNWRAPPING_KEY_HANDLE_INVALID)?;
        ops::check_key(mk, &u, true).map_err(|_| CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT)?;
        self.usage(&u, CKA_UNWRAP)?;
        self.allowed(&u, m.ty)?;
        ops::check_param(mk, &m)?;
        if template.ulong_opt(CKA_CLASS)? == Some(CKO_PRIVATE_KEY) {
            return self.unwrap_private(&s, h, mk, &m, &u, wrapped, template);
        }
        self.secret_template(&template)?;
        let kt = self.template_kt(&template, None)?;
        if !kt.is_secret() {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        let plain = ops::decrypt(mk, &m, &u, wrapped, true)?;
        let len = match kt.fixed_len() {
            Some(_) => self.new_key_len(&template, kt, plain.len())?,
            None => template.ulong_opt(CKA_VALUE_LEN)?.map(|l| l as usize).unwrap_or(plain.len()),
        };
        if len > plain.len() {
            return Err(CKR_WRAPPED_KEY_LEN_RANGE);
        }
        template.remove(CKA_VALUE_LEN);
        let value = Zeroizing::new(plain[..len].to_vec());
        let a = object::build_secret(template, &self.vendor, kt, value, Origin::Unwrapped)?;
        self.insert(&s, h, a)
    }

    /// `C_UnwrapKey` of a PKCS#8-wrapped private key.
    #[allow(clippy::too_many_arguments)]
    fn unwrap_private(
        &self,
        s: &Session,
        h: CK_SESSION_HANDLE,
        mk: Mk,
        m: &Mechanism,
        u: &Object,
        wrapped: &[u8],
        mut a: Attrs,
    ) -> Res<CK_OBJECT_HANDLE> {
        object::check_template(CKO_PRIVATE_KEY, &a)?;
        for t in [
            CKA_VALUE,
            CKA_EC_PARAMS,
            CKA_MODULUS,
            CKA_PUBLIC_EXPONENT,
            CKA_PRIVATE_EXPONENT,
            CKA_PRIME_1,
            CKA_PRIME_2,
            CKA_EXPONENT_1,
            CKA_EXPONENT_2,
            CKA_COEFFICIENT,
        ] {
            if a.has(t) {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
        }
        let plain = ops::decrypt(mk, m, u, wrapped, true)?;
        let kt = match crate::asym::pkcs8_decode(&plain)? {
            crate::asym::Pkcs8Key::Ec(curve, d) => {
                a.set(CKA_EC_PARAMS, curve.params().to_vec());
                a.set(CKA_VALUE, d.to_vec());
                if curve == crate::asym::Curve::Sm2 { Kt::Sm2 } else { Kt::Ec }
            }
            crate::asym::Pkcs8Key::Rsa(p) => {
                a.set(CKA_MODULUS, p.n);
                a.set(CKA_PUBLIC_EXPONENT, p.e);
                set_rsa_private(&mut a, p.private);
                Kt::Rsa
            }
        };
        if self.template_kt(&a, Some(kt))? != kt {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        a.set_ulong(CKA_KEY_TYPE, kt.ckk(&self.vendor));
        object::private_defaults(&mut a, &Origin::Unwrapped);
        self.insert(s, h, a)
    }

    /// `C_DeriveKey`.
    pub(crate) fn derive_key(
        &self,
        h: CK_SESSION_HANDLE,
        m: Mechanism,
        bh: CK_OBJECT_HANDLE,
        mut template: Attrs,
    ) -> Res<CK_OBJECT_HANDLE> {
        use crate::mech::Param;
        let s = self.session(h)?;
        let mk = self.kind(&m)?;
        if mech::info(mk).2 & CKF_DERIVE == 0 {
            return Err(CKR_MECHANISM_INVALID);
        }
        let base = self.object(&s, bh, CKR_KEY_HANDLE_INVALID)?;
        self.usage(&base, CKA_DERIVE)?;
        self.allowed(&base, m.ty)?;
        self.secret_template(&template)?;
        let mut always_sensitive = base.attrs.flag(CKA_ALWAYS_SENSITIVE);
        let mut never_extractable = base.attrs.flag(CKA_NEVER_EXTRACTABLE);
        let (kt, value): (Kt, Zeroizing<Vec<u8>>) = match mk {
            Mk::Des3EcbEncryptData
            | Mk::AesEcbEncryptData
            | Mk::Sm4EcbEncryptData
            | Mk::Des3CbcEncryptData
            | Mk::AesCbcEncryptData => {
                ops::check_key(mk, &base, false)?;
                let f = ops::sym_family(mk).ok_or(CKR_MECHANISM_INVALID)?;
                let c = crate::sym::Block::new(f, base.value()?)?;
                let out = match (&m.param, mk) {
                    (Param::Data(d), Mk::Des3EcbEncryptData | Mk::AesEcbEncryptData | Mk::Sm4EcbEncryptData) => {
                        c.ecb_enc(d, CKR_MECHANISM_PARAM_INVALID)?
                    }
                    (Param::IvData(iv, d), Mk::Des3CbcEncryptData | Mk::AesCbcEncryptData) => {
                        c.cbc_enc(iv, d, CKR_MECHANISM_PARAM_INVALID)?
                    }
                    _ => return Err(CKR_MECHANISM_PARAM_INVALID),
                };
                let out = Zeroizing::new(out);
                let kt = self.template_kt(&template, base.kt)?;
                let len = self.new_key_len(&template, kt, out.len())?;
                (kt, Zeroizing::new(out[..len].to_vec()))
            }
            Mk::Des2XorHalves => {
                if base.class != CKO_SECRET_KEY || base.kt != Some(Kt::Des2) {
                    return Err(CKR_KEY_TYPE_INCONSISTENT);
                }
                if !matches!(m.param, Param::None) {
                    return Err(CKR_MECHANISM_PARAM_INVALID);
                }
                let v = base.value()?;
                let x: Zeroizing<Vec<u8>> = Zeroizing::new(v[..8].iter().zip(&v[8..16]).map(|(a, b)| a ^ b).collect());
                let kt = self.template_kt(&template, Some(Kt::Des))?;
                let len = self.new_key_len(&template, kt, x.len())?;
                (kt, Zeroizing::new(x[..len].to_vec()))
            }
            Mk::AesAn10922Derive => {
                ops::check_key(mk, &base, false)?;
                let Param::Data(d) = &m.param else { return Err(CKR_MECHANISM_PARAM_INVALID) };
                if base.value()?.len() != 16 {
                    return Err(CKR_KEY_SIZE_RANGE);
                }
                let c = crate::sym::Block::new(crate::sym::Family::Aes, base.value()?)?;
                let out = Zeroizing::new(c.cmac_an10922(d)?);
                let kt = self.template_kt(&template, Some(Kt::Aes))?;
                let len = self.new_key_len(&template, kt, out.len())?;
                (kt, Zeroizing::new(out[..len].to_vec()))
            }
            Mk::Des2An10922Derive => {
                ops::check_key(mk, &base, false)?;
                let Param::Data(msg) = &m.param else { return Err(CKR_MECHANISM_PARAM_INVALID) };
                if base.value()?.len() != 16 {
                    return Err(CKR_KEY_SIZE_RANGE);
                }
                if msg.is_empty() || msg.len() > 15 {
                    return Err(CKR_MECHANISM_PARAM_INVALID);
                }
                let c = crate::sym::Block::new(crate::sym::Family::Tdes, base.value()?)?;
                let mut d = Zeroizing::new(Vec::with_capacity(16));
                d.push(0x21);
                d.extend_from_slice(msg);
                let mut out = Zeroizing::new(c.cmac_an10922(&d)?);
                d[0] = 0x22;
                out.extend_from_slice(&c.cmac_an10922(&d)?);
                crate::sym::set_odd_parity(&mut out);
                let kt = self.template_kt(&template, Some(Kt::Des2))?;
                let len = self.new_key_len(&template, kt, out.len())?;
                (kt, Zeroizing::new(out[..len].to_vec()))
            }
            Mk::Sp800108Counter => {
                let Param::Kdf(prf, data, extra) = &m.param else { return Err(CKR_MECHANISM_PARAM_INVALID) };
                if *extra != 0 {
                    return Err(CKR_MECHANISM_PARAM_INVALID);
                }
                let (f, prf_mk) = match *prf {
                    CKM_AES_CMAC => (crate::sym::Family::Aes, Mk::AesCmac),
                    CKM_DES3_CMAC => (crate::sym::Family::Tdes, Mk::Des3Cmac),
                    _ => return Err(CKR_MECHANISM_PARAM_INVALID),
                };
                ops::check_key(prf_mk, &base, false)?;
                let kt = self.template_kt(&template, Some(Kt::Generic))?;
                let len = match (kt.fixed_len(), template.ulong_opt(CKA_VALUE_LEN)?) {
                    (Some(f), Some(l)) if l as usize != f => return Err(CKR_TEMPLATE_INCONSISTENT),
                    (Some(f), _) => f,
                    (None, Some(l)) => usize::try_from(l).map_err(|_| CKR_KEY_SIZE_RANGE)?,
                    (None, None) => return Err(CKR_TEMPLATE_INCOMPLETE),
                };
                // Check the size before deriving (the template is the caller's).
                kt.check_value_len(len)?;
                let c = crate::sym::Block::new(f, base.value()?)?;
                (kt, crate::sym::sp800_108_counter(&c, data, len)?)
            }
            Mk::XorBaseAndData | Mk::XorBaseAndKey => {
                if base.class != CKO_SECRET_KEY {
                    return Err(CKR_KEY_TYPE_INCONSISTENT);
                }
                let other: Zeroizing<Vec<u8>> = match (&m.param, mk) {
                    (Param::Data(d), Mk::XorBaseAndData) => Zeroizing::new(d.clone()),
                    (Param::Ulong(oh), Mk::XorBaseAndKey) => {
                        let o = self.object(&s, *oh, CKR_MECHANISM_PARAM_INVALID)?;
                        if o.class != CKO_SECRET_KEY {
                            return Err(CKR_KEY_TYPE_INCONSISTENT);
                        }
                        self.usage(&o, CKA_DERIVE)?;
                        let v = o.value()?;
                        if v.len() != base.value()?.len() {
                            return Err(CKR_KEY_SIZE_RANGE);
                        }
                        always_sensitive &= o.attrs.flag(CKA_ALWAYS_SENSITIVE);
                        never_extractable &= o.attrs.flag(CKA_NEVER_EXTRACTABLE);
                        Zeroizing::new(v.to_vec())
                    }
                    _ => return Err(CKR_MECHANISM_PARAM_INVALID),
                };
                let b = base.value()?;
                let x: Zeroizing<Vec<u8>> = Zeroizing::new(b.iter().zip(other.iter()).map(|(a, c)| a ^ c).collect());
                let kt = self.template_kt(&template, base.kt)?;
                let len = self.new_key_len(&template, kt, x.len())?;
                (kt, Zeroizing::new(x[..len].to_vec()))
            }
            Mk::Ecdh1Derive => {
                ops::check_key(mk, &base, true)?;
                let Param::Ecdh(kdf, shared, public) = &m.param else { return Err(CKR_MECHANISM_PARAM_INVALID) };
                let hash = crate::asym::x963_hash(*kdf)?;
                if hash.is_none() && !shared.is_empty() {
                    return Err(CKR_MECHANISM_PARAM_INVALID);
                }
                let curve = base.curve()?;
                let peer = crate::asym::raw_point(curve, public).map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
                let kt = self.template_kt(&template, Some(Kt::Generic))?;
                match hash {
                    None => {
                        let z = crate::asym::ecdh(curve, base.value()?, &peer)?;
                        let len = self.new_key_len(&template, kt, z.len())?;
                        // why: PKCS#11 §2.3.x — with CKD_NULL a shorter key takes the
                        // leading bytes of Z.
                        (kt, Zeroizing::new(z[..len].to_vec()))
                    }
                    Some(hash) => {
                        // why: with a KDF the key length is the template's
                        // (CKA_VALUE_LEN or the key type's fixed length), not Z's.
                        let len = match (kt.fixed_len(), template.ulong_opt(CKA_VALUE_LEN)?) {
                            (Some(f), Some(l)) if l as usize != f => return Err(CKR_TEMPLATE_INCONSISTENT),
                            (Some(f), _) => f,
                            (None, Some(l)) => usize::try_from(l).map_err(|_| CKR_KEY_SIZE_RANGE)?,
                            (None, None) => return Err(CKR_TEMPLATE_INCOMPLETE),
                        };
                        kt.check_value_len(len)?;
                        let z = crate::asym::ecdh(curve, base.value()?, &peer)?;
                        (kt, crate::asym::x963_kdf(hash, &z, shared, len)?)
                    }
                }
            }
            _ => return Err(CKR_MECHANISM_INVALID),
        };
        if !kt.is_secret() {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        template.remove(CKA_VALUE_LEN);
        let origin = Origin::Derived { always_sensitive, never_extractable };
        let a = object::build_secret(template, &self.vendor, kt, value, origin)?;
        self.insert(&s, h, a)
    }

    /// `C_GenerateRandom`.
    pub(crate) fn generate_random(&self, h: CK_SESSION_HANDLE, len: usize) -> Res<Vec<u8>> {
        self.session(h)?;
        Ok(store::random(len).to_vec())
    }

    /// `C_SeedRandom`: the OS generator cannot be seeded.
    pub(crate) fn seed_random(&self, h: CK_SESSION_HANDLE) -> Res<()> {
        self.session(h)?;
        Err(CKR_RANDOM_SEED_NOT_SUPPORTED)
    }
}

/// Most input one buffered multi-part operation accepts (64 MiB).
pub(crate) const MAX_OP_BYTES: usize = 64 << 20;

/// Appends to an operation's input buffer within [`MAX_OP_BYTES`].
fn buffer(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) -> Res<()> {
    if buf.len().saturating_add(data.len()) > MAX_OP_BYTES {
        return Err(CKR_DATA_LEN_RANGE);
    }
    buf.extend_from_slice(data);
    Ok(())
}

/// Which multi-part operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Which {
    /// Encryption.
    Encrypt,
    /// Decryption.
    Decrypt,
    /// Signing / MAC.
    Sign,
    /// Verification.
    Verify,
}

impl Which {
    fn slot(self, o: &mut Ops) -> &mut Option<Op> {
        match self {
            Which::Encrypt => &mut o.encrypt,
            Which::Decrypt => &mut o.decrypt,
            Which::Sign => &mut o.sign,
            Which::Verify => &mut o.verify,
        }
    }
}

/// The attributes of an RSA private key's secret components, in the order
/// `RsaParts::private` holds them.
const RSA_PRIVATE_ATTRS: [CK_ATTRIBUTE_TYPE; 6] =
    [CKA_PRIVATE_EXPONENT, CKA_PRIME_1, CKA_PRIME_2, CKA_EXPONENT_1, CKA_EXPONENT_2, CKA_COEFFICIENT];

/// Puts an RSA key's secret components into a private-key template.
fn set_rsa_private(t: &mut Attrs, private: [Zeroizing<Vec<u8>>; 6]) {
    for (a, v) in RSA_PRIVATE_ATTRS.into_iter().zip(private) {
        t.set(a, v.to_vec());
    }
}
