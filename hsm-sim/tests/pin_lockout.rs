//! `[module] max_pin_failures`: consecutive wrong PINs lock the PIN, the
//! state survives a restart, and the SO's `C_InitPIN` unlocks the user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{SO_PIN, USER_PIN, init_args, lib_path, write_config};
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

fn rv<T: std::fmt::Debug>(r: cryptoki::error::Result<T>) -> RvError {
    match r {
        Err(Error::Pkcs11(e, _)) => e,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

#[test]
fn wrong_pins_lock_and_so_unlocks() {
    let dir = write_config(1, "");
    let conf = dir.path().join("hsm-sim.toml");
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("pin_kdf_iterations = 1000\n", "pin_kdf_iterations = 1000\nmax_pin_failures = 3\n");
    std::fs::write(&conf, text).unwrap();
    let start = || {
        let p = Pkcs11::new(lib_path()).unwrap();
        p.initialize(init_args()).unwrap();
        let slot = p.get_all_slots().unwrap()[0];
        (p, slot)
    };
    let wrong = AuthPin::new("wrong-pin".into());
    let right = AuthPin::new(USER_PIN.into());
    {
        let (p, slot) = start();
        common::init_token(&p, slot);
        let s = p.open_rw_session(slot).unwrap();
        // A success resets the counter.
        assert_eq!(rv(s.login(UserType::User, Some(&wrong))), RvError::PinIncorrect);
        s.login(UserType::User, Some(&right)).unwrap();
        s.logout().unwrap();
        assert!(!p.get_token_info(slot).unwrap().user_pin_count_low());
        assert_eq!(rv(s.login(UserType::User, Some(&wrong))), RvError::PinIncorrect);
        assert_eq!(rv(s.login(UserType::User, Some(&wrong))), RvError::PinIncorrect);
        let ti = p.get_token_info(slot).unwrap();
        assert!(ti.user_pin_count_low() && ti.user_pin_final_try() && !ti.user_pin_locked());
        assert_eq!(rv(s.login(UserType::User, Some(&wrong))), RvError::PinLocked);
        assert_eq!(rv(s.login(UserType::User, Some(&right))), RvError::PinLocked);
        assert!(p.get_token_info(slot).unwrap().user_pin_locked());
    }
    {
        // Still locked after a restart.
        let (p, slot) = start();
        let s = p.open_rw_session(slot).unwrap();
        assert_eq!(rv(s.login(UserType::User, Some(&right))), RvError::PinLocked);
        // The SO resets the user PIN.
        s.login(UserType::So, Some(&AuthPin::new(SO_PIN.into()))).unwrap();
        s.init_pin(&AuthPin::new("fresh-user-pin".into())).unwrap();
        s.logout().unwrap();
        assert!(!p.get_token_info(slot).unwrap().user_pin_locked());
        s.login(UserType::User, Some(&AuthPin::new("fresh-user-pin".into()))).unwrap();
    }
}
