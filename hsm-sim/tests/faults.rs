//! Fault injection from the `[faults]` table and `HSM_SIM_FAULTS`.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{USER_PIN, init_args, lib_path, write_config};
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

fn rv<T: std::fmt::Debug>(r: cryptoki::error::Result<T>) -> RvError {
    match r {
        Err(Error::Pkcs11(e, _)) => e,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// Starts the module with `faults` (TOML body of `[faults]`) and an
/// optional `HSM_SIM_FAULTS`; returns a logged-in session.
fn start(faults: &str, env: Option<&str>) -> (tempfile::TempDir, Pkcs11, Session) {
    // Initialise the token without faults first.
    let dir = write_config(1, "");
    // SAFETY: single-threaded test; no other thread reads the environment.
    unsafe { std::env::remove_var("HSM_SIM_FAULTS") };
    {
        let p = Pkcs11::new(lib_path()).unwrap();
        p.initialize(init_args()).unwrap();
        let slot = p.get_all_slots().unwrap()[0];
        common::init_token(&p, slot);
    }
    let conf = dir.path().join("hsm-sim.toml");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!("[faults]\n{faults}\n"));
    std::fs::write(&conf, text).unwrap();
    if let Some(e) = env {
        // SAFETY: as above.
        unsafe { std::env::set_var("HSM_SIM_FAULTS", e) };
    }
    let p = Pkcs11::new(lib_path()).unwrap();
    p.initialize(init_args()).unwrap();
    let slot = p.get_all_slots().unwrap()[0];
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))).unwrap();
    (dir, p, s)
}

#[test]
fn fault_injection() {
    // 1. While a file exists every call fails; removing it recovers, and
    //    the session survives the outage.
    let flag = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let flag_path = flag.to_path_buf();
    flag.close().unwrap();
    let (_d, _p, s) = start(&format!("while_file = \"{}\"\n", flag_path.display()), None);
    s.generate_random_vec(8).unwrap();
    std::fs::write(&flag_path, b"").unwrap();
    assert_eq!(rv(s.generate_random_vec(8)), RvError::DeviceRemoved);
    assert_eq!(rv(s.get_session_info()), RvError::DeviceRemoved);
    std::fs::remove_file(&flag_path).unwrap();
    s.generate_random_vec(8).unwrap();
    drop((s, _p, _d));

    // 2. After N calls: CKR_SESSION_HANDLE_INVALID from then on (env form).
    let (_d, _p, s) = start("", Some("after_calls=5;after_calls_rv=CKR_SESSION_HANDLE_INVALID"));
    let mut ok = 0;
    let err = loop {
        match s.generate_random_vec(4) {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
        assert!(ok < 100);
    };
    assert!(matches!(err, Error::Pkcs11(RvError::SessionHandleInvalid, _)));
    assert!(ok < 5, "calls before the fault include open/login");
    assert_eq!(rv(s.generate_random_vec(4)), RvError::SessionHandleInvalid);
    drop((s, _p, _d));

    // 3. Failure rate per function: C_Sign always fails, C_Encrypt never.
    let (_d, _p, s) = start("fail_rate = { C_Sign = 1.0 }\nfail_rv = \"CKR_DEVICE_ERROR\"\nseed = 7\n", None);
    let k = s.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(16.into())]).unwrap();
    assert_eq!(rv(s.sign(&Mechanism::AesCMac, k, b"x")), RvError::DeviceError);
    s.encrypt(&Mechanism::AesEcb, k, &[0; 16]).unwrap();
    drop((s, _p, _d));

    // 4. A rate of 0.5 fails some calls and not others (fixed seed).
    let (_d, _p, s) = start("", Some("fail_rate.C_GenerateRandom=0.5,seed=42"));
    let results: Vec<bool> = (0..64).map(|_| s.generate_random_vec(1).is_ok()).collect();
    assert!(results.iter().any(|x| *x) && results.iter().any(|x| !*x));
    drop((s, _p, _d));

    // 4b. A rate that applies only while a file exists: C_WrapKey fails
    //     while it is there, every other function keeps working.
    let flaky = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let flaky_path = flaky.to_path_buf();
    flaky.close().unwrap();
    let (_d, _p, s) = start(
        &format!(
            "fail_rate = {{ C_WrapKey = 1.0 }}\nfail_rv = \"CKR_FUNCTION_FAILED\"\nfail_rate_file = \"{}\"\n",
            flaky_path.display()
        ),
        None,
    );
    let kek = s.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(16.into()), Attribute::Wrap(true)]).unwrap();
    let k =
        s.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(16.into()), Attribute::Extractable(true)]).unwrap();
    s.wrap_key(&Mechanism::AesKeyWrap, kek, k).unwrap();
    std::fs::write(&flaky_path, b"").unwrap();
    assert_eq!(rv(s.wrap_key(&Mechanism::AesKeyWrap, kek, k)), RvError::FunctionFailed);
    s.encrypt(&Mechanism::AesEcb, k, &[0; 16]).unwrap();
    std::fs::remove_file(&flaky_path).unwrap();
    s.wrap_key(&Mechanism::AesKeyWrap, kek, k).unwrap();
    drop((s, _p, _d));

    // 5. Latency.
    let (_d, _p, s) = start("latency_ms = 30\n", None);
    let t = std::time::Instant::now();
    s.generate_random_vec(1).unwrap();
    assert!(t.elapsed() >= std::time::Duration::from_millis(30));
    drop((s, _p, _d));

    // 6. A bad fault specification refuses to initialise.
    let _d = write_config(1, "[faults]\nafter_calls_rv = \"CKR_NOT_A_THING\"\n");
    // SAFETY: as above.
    unsafe { std::env::remove_var("HSM_SIM_FAULTS") };
    let p = Pkcs11::new(lib_path()).unwrap();
    assert_eq!(rv(p.initialize(init_args())), RvError::GeneralError);
}
