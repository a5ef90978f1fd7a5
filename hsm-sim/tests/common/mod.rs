//! Shared test helpers: load the built `libhsm_sim.so` through `cryptoki`,
//! one token (slot) per test, hex helpers and raw mechanism construction.
#![allow(dead_code, unsafe_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

pub const SO_PIN: &str = "so-pin-1234";
pub const USER_PIN: &str = "user-1234";
pub const SLOTS: usize = 48;

/// Path of the cdylib: `HSM_SIM_MODULE`; else the `libhsm_sim.so` cargo
/// built for this test run beside the test executable (`target/<profile>/deps`);
/// else `target/<profile>/libhsm_sim.so`, building it if missing.
pub fn lib_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HSM_SIM_MODULE") {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(PathBuf::from)) {
        let p = dir.join("libhsm_sim.so");
        if p.exists() {
            return p;
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("libhsm_sim.so");
        if p.exists() {
            return p;
        }
    }
    let st = std::process::Command::new(env!("CARGO"))
        .args(["build", "--lib", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .status()
        .expect("cargo build");
    assert!(st.success());
    target.join("debug").join("libhsm_sim.so")
}

/// Writes a config with `slots` slots under a fresh temp dir and points
/// `HSM_SIM_CONF` at it. Returns the temp dir (kept alive by the caller).
pub fn write_config(slots: usize, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut s = String::from("[module]\npin_kdf_iterations = 1000\n\n");
    for i in 0..slots {
        s.push_str(&format!("[[slot]]\nid = {i}\ndir = \"slot{i}\"\n\n"));
    }
    s.push_str(extra);
    std::fs::write(dir.path().join("hsm-sim.toml"), s).unwrap();
    // SAFETY-free: tests set the variable before the module is initialised.
    unsafe { std::env::set_var("HSM_SIM_CONF", dir.path().join("hsm-sim.toml")) };
    dir
}

pub fn init_args() -> CInitializeArgs {
    CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)
}

struct Shared {
    p11: Pkcs11,
    _dir: tempfile::TempDir,
}

static SHARED: OnceLock<Shared> = OnceLock::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// The process-wide module, initialised once with `SLOTS` slots.
pub fn p11() -> &'static Pkcs11 {
    let _g = INIT_LOCK.lock().unwrap();
    &SHARED
        .get_or_init(|| {
            let dir = write_config(SLOTS, "");
            let p11 = Pkcs11::new(lib_path()).unwrap();
            p11.initialize(init_args()).unwrap();
            Shared { p11, _dir: dir }
        })
        .p11
}

/// A fresh token for one test: initialised, user PIN set, and a RW session
/// logged in as the user.
pub fn token() -> (&'static Pkcs11, Slot, Session) {
    let p = p11();
    let i = NEXT.fetch_add(1, Ordering::SeqCst);
    assert!(i < SLOTS, "raise SLOTS");
    let slot = p.get_all_slots().unwrap().into_iter().find(|s| s.id() == i as u64).unwrap();
    init_token(p, slot);
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))).unwrap();
    (p, slot, s)
}

/// Initialises a token and its user PIN.
pub fn init_token(p: &Pkcs11, slot: Slot) {
    p.init_token(slot, &AuthPin::new(SO_PIN.into()), &format!("test{}", slot.id())).unwrap();
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::So, Some(&AuthPin::new(SO_PIN.into()))).unwrap();
    s.init_pin(&AuthPin::new(USER_PIN.into())).unwrap();
    s.logout().unwrap();
}

/// Any `CKM_*` value as a `MechanismType` (cryptoki names only some).
pub fn mech_type(v: u64) -> MechanismType {
    if v >= cryptoki_sys::CKM_VENDOR_DEFINED {
        return MechanismType::new_vendor_defined(v).unwrap();
    }
    if let Ok(t) = MechanismType::try_from(v) {
        return t;
    }
    // SAFETY: MechanismType is #[repr(transparent)] over CK_MECHANISM_TYPE
    // (DESIGN.md §5); every u64 is a valid CK_MECHANISM_TYPE.
    unsafe { std::mem::transmute::<u64, MechanismType>(v) }
}

pub fn h(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

pub fn hx(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}
