//! Side-by-side throughput of hsm-sim and SoftHSM on the same PKCS#11 work:
//!
//! (a) derive a DES2 card key with `CKM_DES3_ECB_ENCRYPT_DATA`, read its
//!     `CKA_CHECK_VALUE`, wrap it under an AES transport key with
//!     `CKM_AES_KEY_WRAP`, destroy it;
//! (b) ECDSA P-256 sign (`CKM_ECDSA` over a 32-byte hash),
//!
//! each with 1 and 2 threads (one session per thread). Run with
//! `cargo bench` (release build). `HSM_SIM_BENCH_SECS` sets the time per
//! measurement (default 2); `SOFTHSM_MODULE` overrides the SoftHSM path.
#![allow(unsafe_code, missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

const PIN: &str = "bench-1234";
const SO: &str = "bench-so-1234";

struct Target {
    p11: Pkcs11,
    slot: Slot,
    mk: ObjectHandle,
    tk: ObjectHandle,
    ec: ObjectHandle,
}

fn hsm_sim_lib() -> PathBuf {
    if let Some(p) = std::env::var_os("HSM_SIM_MODULE") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for p in [deps.join("libhsm_sim.so"), deps.parent().unwrap().join("libhsm_sim.so")] {
        if p.exists() {
            return p;
        }
    }
    panic!("libhsm_sim.so not found next to {}", exe.display());
}

fn setup(lib: PathBuf) -> Target {
    let p11 = Pkcs11::new(lib).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
    let slot = p11.get_slots_with_token().unwrap()[0];
    p11.init_token(slot, &AuthPin::new(SO.into()), "bench").unwrap();
    // SoftHSM moves the initialised token to a new slot: find it by label.
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).map(|t| t.label() == "bench").unwrap_or(false))
        .unwrap();
    {
        let s = p11.open_rw_session(slot).unwrap();
        s.login(UserType::So, Some(&AuthPin::new(SO.into()))).unwrap();
        s.init_pin(&AuthPin::new(PIN.into())).unwrap();
        s.logout().unwrap();
    }
    let s = p11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::new(PIN.into()))).unwrap();
    let mk = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::DES2),
            Attribute::Value(hex("0123456789ABCDEFFEDCBA9876543210")),
            Attribute::Token(true),
            Attribute::Derive(true),
            Attribute::Sensitive(true),
        ])
        .unwrap();
    let tk = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(16.into()), Attribute::Token(true), Attribute::Wrap(true)],
        )
        .unwrap();
    let (_pk, ec) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(hex("06082a8648ce3d030107")), Attribute::Token(true)],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    // Keep the login alive by leaking this session for the process lifetime.
    std::mem::forget(s);
    Target { p11, slot, mk, tk, ec }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn derive_kcv_wrap(t: &Target, s: &Session, n: u64) {
    let mut d = n.to_be_bytes().to_vec();
    d.extend(n.to_be_bytes().iter().map(|b| !b));
    let p = cryptoki_sys::CK_KEY_DERIVATION_STRING_DATA { pData: d.as_mut_ptr(), ulLen: 16 };
    let m = Mechanism::VendorDefined(VendorDefinedMechanism::new(des3_ecb_encrypt_data(), Some(&p)));
    let dk = s
        .derive_key(
            &m,
            t.mk,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::DES2),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
            ],
        )
        .unwrap();
    let kcv = s.get_attributes(dk, &[AttributeType::CheckValue]).unwrap();
    assert!(!kcv.is_empty());
    let w = s.wrap_key(&Mechanism::AesKeyWrap, t.tk, dk).unwrap();
    assert_eq!(w.len(), 24);
    s.destroy_object(dk).unwrap();
}

fn des3_ecb_encrypt_data() -> MechanismType {
    // SAFETY: MechanismType is #[repr(transparent)] over CK_MECHANISM_TYPE
    // (DESIGN.md §5); cryptoki has no name for this standard mechanism.
    unsafe { std::mem::transmute::<u64, MechanismType>(cryptoki_sys::CKM_DES3_ECB_ENCRYPT_DATA) }
}

fn ecdsa(t: &Target, s: &Session, n: u64) {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&n.to_be_bytes());
    let sig = s.sign(&Mechanism::Ecdsa, t.ec, &h).unwrap();
    assert_eq!(sig.len(), 64);
}

/// One benchmarked operation.
type OpFn = fn(&Target, &Session, u64);

fn measure(t: &Arc<Target>, threads: usize, secs: f64, op: OpFn) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let sessions: Vec<Session> = (0..threads).map(|_| t.p11.open_rw_session(t.slot).unwrap()).collect();
    // Warm up each session once.
    for (i, s) in sessions.iter().enumerate() {
        op(t, s, i as u64);
    }
    let start = Instant::now();
    let handles: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let (t, stop, count) = (t.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut n = (i as u64) << 40;
                while !stop.load(Ordering::Relaxed) {
                    op(&t, &s, n);
                    n += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let secs: f64 = std::env::var("HSM_SIM_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("hsm-sim.toml");
    std::fs::write(&conf, "[module]\npin_kdf_iterations = 1000\n[[slot]]\nid = 0\ndir = \"hsm-sim\"\n").unwrap();
    let shconf = dir.path().join("softhsm2.conf");
    std::fs::create_dir_all(dir.path().join("softhsm")).unwrap();
    std::fs::write(
        &shconf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.path().join("softhsm").display()
        ),
    )
    .unwrap();
    // SAFETY: single-threaded here; both modules read these at C_Initialize.
    unsafe {
        std::env::set_var("HSM_SIM_CONF", &conf);
        std::env::set_var("SOFTHSM2_CONF", &shconf);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("cores: {cores}; {secs} s per measurement; one session per thread");
    let mut targets = vec![Arc::new(setup(hsm_sim_lib()))];
    let softhsm = std::env::var_os("SOFTHSM_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/lib/softhsm/libsofthsm2.so".into());
    if softhsm.exists() {
        targets.push(Arc::new(setup(softhsm)));
    } else {
        println!("SoftHSM not found at {}: hsm-sim only", softhsm.display());
    }
    let ops: [(&str, OpFn); 2] =
        [("derive DES2 + KCV + AES-KW wrap + destroy", derive_kcv_wrap), ("ECDSA P-256 sign", ecdsa)];
    println!("{:<44} {:>7} {:>14} {:>14} {:>8}", "operation", "threads", "hsm-sim op/s", "SoftHSM op/s", "ratio");
    for (name, op) in ops {
        for threads in [1, 2] {
            let r: Vec<f64> = targets.iter().map(|t| measure(t, threads, secs, op)).collect();
            let soft = r.get(1).copied();
            println!(
                "{:<44} {:>7} {:>14.0} {:>14} {:>8}",
                name,
                threads,
                r[0],
                soft.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into()),
                soft.map(|v| format!("{:.1}x", r[0] / v)).unwrap_or_else(|| "-".into())
            );
        }
    }
}
