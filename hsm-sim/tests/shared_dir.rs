//! Two module instances on one token directory (as the ceremony CLI and the
//! service would be): objects and PIN changes made by one become visible to
//! the other without a restart. Instance A is the cdylib loaded through
//! `cryptoki`; instance B is this crate's rlib called through its C ABI —
//! separate module state in one test process.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::ptr::null_mut;

use common::{USER_PIN, init_args, lib_path, write_config};
use cryptoki::context::Pkcs11;
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use cryptoki_sys::*;
use hsm_sim::ffi;

#[test]
fn second_instance_sees_changes() {
    let _dir = write_config(1, "");
    let a = Pkcs11::new(lib_path()).unwrap();
    a.initialize(init_args()).unwrap();
    let slot = a.get_all_slots().unwrap()[0];
    common::init_token(&a, slot);
    let sa = a.open_rw_session(slot).unwrap();
    sa.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))).unwrap();

    // SAFETY (whole block): pointers are live locals of the declared sizes.
    let (hb, kb) = unsafe {
        assert_eq!(ffi::C_Initialize(null_mut()), CKR_OK);
        let mut h = 0;
        assert_eq!(ffi::C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, null_mut(), None, &mut h), CKR_OK);
        let pin = USER_PIN.as_bytes();
        assert_eq!(ffi::C_Login(h, CKU_USER, pin.as_ptr() as *mut _, pin.len() as u64), CKR_OK);
        let len: CK_ULONG = 16;
        let tru: CK_BBOOL = 1;
        let label = b"from-b";
        let mut t = [
            CK_ATTRIBUTE { type_: CKA_VALUE_LEN, pValue: &len as *const _ as *mut _, ulValueLen: 8 },
            CK_ATTRIBUTE { type_: CKA_TOKEN, pValue: &tru as *const _ as *mut _, ulValueLen: 1 },
            CK_ATTRIBUTE { type_: CKA_LABEL, pValue: label.as_ptr() as *mut _, ulValueLen: 6 },
        ];
        let mut m = CK_MECHANISM { mechanism: CKM_AES_KEY_GEN, pParameter: null_mut(), ulParameterLen: 0 };
        let mut k = 0;
        assert_eq!(ffi::C_GenerateKey(h, &mut m, t.as_mut_ptr(), 3, &mut k), CKR_OK);
        (h, k)
    };
    let kcv_b = unsafe {
        let mut kcv = [0u8; 3];
        let mut q = [CK_ATTRIBUTE { type_: CKA_CHECK_VALUE, pValue: kcv.as_mut_ptr().cast(), ulValueLen: 3 }];
        assert_eq!(ffi::C_GetAttributeValue(hb, kb, q.as_mut_ptr(), 1), CKR_OK);
        kcv
    };

    // A sees B's key, with the same check value.
    let found = sa.find_objects(&[Attribute::Label(b"from-b".to_vec())]).unwrap();
    assert_eq!(found.len(), 1);
    match sa.get_attributes(found[0], &[AttributeType::CheckValue]).unwrap().pop() {
        Some(Attribute::CheckValue(v)) => assert_eq!(v, kcv_b),
        o => panic!("{o:?}"),
    }
    // A's own token key shows up in B.
    sa.generate_key(
        &cryptoki::mechanism::Mechanism::AesKeyGen,
        &[Attribute::ValueLen(16.into()), Attribute::Token(true), Attribute::Label(b"from-a".to_vec())],
    )
    .unwrap();
    unsafe {
        let label = b"from-a";
        let mut t = [CK_ATTRIBUTE { type_: CKA_LABEL, pValue: label.as_ptr() as *mut _, ulValueLen: 6 }];
        assert_eq!(ffi::C_FindObjectsInit(hb, t.as_mut_ptr(), 1), CKR_OK);
        let mut hs = [0u64; 4];
        let mut n = 0;
        assert_eq!(ffi::C_FindObjects(hb, hs.as_mut_ptr(), 4, &mut n), CKR_OK);
        assert_eq!(n, 1);
        assert_eq!(ffi::C_FindObjectsFinal(hb), CKR_OK);
        // B destroys its key; it disappears from A.
        assert_eq!(ffi::C_DestroyObject(hb, kb), CKR_OK);
        // B changes the user PIN.
        let (old, new) = (USER_PIN.as_bytes(), b"changed-by-b");
        assert_eq!(ffi::C_SetPIN(hb, old.as_ptr() as *mut _, old.len() as u64, new.as_ptr() as *mut _, 12), CKR_OK);
        assert_eq!(ffi::C_Finalize(null_mut()), CKR_OK);
    }
    assert!(sa.find_objects(&[Attribute::Label(b"from-b".to_vec())]).unwrap().is_empty());
    sa.logout().unwrap();
    assert!(sa.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))).is_err());
    sa.login(UserType::User, Some(&AuthPin::new("changed-by-b".into()))).unwrap();
    assert_eq!(sa.find_objects(&[Attribute::Label(b"from-a".to_vec())]).unwrap().len(), 1);
}
