//! Object, template, login and error-code behaviour through `cryptoki`.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{SO_PIN, USER_PIN, h, token};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::TokenInfo;
use cryptoki::types::AuthPin;

fn rv<T: std::fmt::Debug>(r: cryptoki::error::Result<T>) -> RvError {
    match r {
        Err(Error::Pkcs11(e, _)) => e,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

fn aes(s: &Session, extra: &[Attribute]) -> ObjectHandle {
    let mut t = vec![Attribute::ValueLen(16.into()), Attribute::Token(false)];
    t.extend_from_slice(extra);
    s.generate_key(&Mechanism::AesKeyGen, &t).unwrap()
}

fn flag(s: &Session, k: ObjectHandle, t: AttributeType) -> bool {
    match s.get_attributes(k, &[t]).unwrap().pop() {
        Some(Attribute::Sensitive(b))
        | Some(Attribute::Extractable(b))
        | Some(Attribute::AlwaysSensitive(b))
        | Some(Attribute::NeverExtractable(b))
        | Some(Attribute::Local(b))
        | Some(Attribute::Private(b)) => b,
        o => panic!("{o:?}"),
    }
}

#[test]
fn secure_defaults_and_sensitive_value() {
    let (_p, _slot, s) = token();
    let k = aes(&s, &[]);
    assert!(flag(&s, k, AttributeType::Sensitive));
    assert!(!flag(&s, k, AttributeType::Extractable));
    assert!(flag(&s, k, AttributeType::AlwaysSensitive));
    assert!(flag(&s, k, AttributeType::NeverExtractable));
    assert!(flag(&s, k, AttributeType::Local));
    assert!(flag(&s, k, AttributeType::Private));
    let info = s.get_attribute_info(k, &[AttributeType::Value, AttributeType::CheckValue]).unwrap();
    assert!(matches!(info[0], AttributeInfo::Sensitive));
    assert!(matches!(info[1], AttributeInfo::Available(3)));
    // An imported key is neither always sensitive nor never extractable.
    let i = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![1; 16]),
            Attribute::Token(false),
        ])
        .unwrap();
    assert!(flag(&s, i, AttributeType::Sensitive));
    assert!(!flag(&s, i, AttributeType::AlwaysSensitive));
    assert!(!flag(&s, i, AttributeType::NeverExtractable));
    assert!(!flag(&s, i, AttributeType::Local));
}

#[test]
fn set_attribute_restrictions() {
    let (_p, _slot, s) = token();
    let k = aes(&s, &[Attribute::Sensitive(false), Attribute::Extractable(true)]);
    assert!(!flag(&s, k, AttributeType::AlwaysSensitive));
    s.update_attributes(k, &[Attribute::Label(b"renamed".to_vec())]).unwrap();
    s.update_attributes(k, &[Attribute::Sensitive(true)]).unwrap();
    assert_eq!(rv(s.update_attributes(k, &[Attribute::Sensitive(false)])), RvError::AttributeReadOnly);
    s.update_attributes(k, &[Attribute::Extractable(false)]).unwrap();
    assert_eq!(rv(s.update_attributes(k, &[Attribute::Extractable(true)])), RvError::AttributeReadOnly);
    assert_eq!(rv(s.update_attributes(k, &[Attribute::Value(vec![0; 16])])), RvError::AttributeReadOnly);
    assert_eq!(rv(s.update_attributes(k, &[Attribute::Trusted(true)])), RvError::AttributeReadOnly);
    let found = s.find_objects(&[Attribute::Label(b"renamed".to_vec())]).unwrap();
    assert_eq!(found, vec![k]);
}

#[test]
fn usage_flags_enforced() {
    let (_p, _slot, s) = token();
    let k = aes(&s, &[Attribute::Encrypt(false), Attribute::Derive(false)]);
    assert_eq!(rv(s.encrypt(&Mechanism::AesEcb, k, &[0; 16])), RvError::KeyFunctionNotPermitted);
    let data = [0u8; 16];
    let p = cryptoki_sys::CK_KEY_DERIVATION_STRING_DATA { pData: data.as_ptr() as *mut u8, ulLen: 16 };
    let m = Mechanism::VendorDefined(cryptoki::mechanism::vendor_defined::VendorDefinedMechanism::new(
        common::mech_type(cryptoki_sys::CKM_AES_ECB_ENCRYPT_DATA),
        Some(&p),
    ));
    assert_eq!(rv(s.derive_key(&m, k, &[Attribute::Token(false)])), RvError::KeyFunctionNotPermitted);
    // CKA_ALLOWED_MECHANISMS restricts the key to the listed mechanisms.
    use cryptoki::mechanism::MechanismType;
    let only_cbc = aes(&s, &[Attribute::AllowedMechanisms(vec![MechanismType::AES_CBC])]);
    assert_eq!(rv(s.encrypt(&Mechanism::AesEcb, only_cbc, &[0; 16])), RvError::MechanismInvalid);
    s.encrypt(&Mechanism::AesCbc([0; 16]), only_cbc, &[0; 16]).unwrap();
    // Wrong key type for the mechanism.
    let d = s.generate_key(&Mechanism::Des2KeyGen, &[Attribute::Token(false)]).unwrap();
    assert_eq!(rv(s.encrypt(&Mechanism::AesEcb, d, &[0; 16])), RvError::KeyTypeInconsistent);
    // Data length not a block multiple.
    assert_eq!(rv(s.decrypt(&Mechanism::Des3Ecb, d, &[0; 7])), RvError::EncryptedDataLenRange);
}

#[test]
fn wrap_rules_extractable_and_trusted() {
    let (p, slot, s) = token();
    let kek = aes(&s, &[Attribute::Private(false), Attribute::Wrap(true)]);
    let target = aes(&s, &[]);
    assert_eq!(rv(s.wrap_key(&Mechanism::AesKeyWrap, kek, target)), RvError::KeyUnextractable);
    let guarded = aes(&s, &[Attribute::Extractable(true), Attribute::WrapWithTrusted(true)]);
    assert_eq!(rv(s.wrap_key(&Mechanism::AesKeyWrap, kek, guarded)), RvError::KeyNotWrappable);
    // Only the SO may mark the KEK trusted.
    s.logout().unwrap();
    s.login(UserType::So, Some(&AuthPin::new(SO_PIN.into()))).unwrap();
    s.update_attributes(kek, &[Attribute::Trusted(true)]).unwrap();
    s.logout().unwrap();
    s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))).unwrap();
    let w = s.wrap_key(&Mechanism::AesKeyWrap, kek, guarded).unwrap();
    assert_eq!(w.len(), 24);
    // WRAP_WITH_TRUSTED cannot be cleared.
    assert_eq!(rv(s.update_attributes(guarded, &[Attribute::WrapWithTrusted(false)])), RvError::AttributeReadOnly);
    let _ = (p, slot);
}

#[test]
fn templates_handles_and_lengths() {
    let (p, slot, s) = token();
    assert_eq!(rv(s.generate_key(&Mechanism::AesKeyGen, &[Attribute::Token(false)])), RvError::TemplateIncomplete);
    assert_eq!(
        rv(s.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(16.into()), Attribute::KeyType(KeyType::DES3)])),
        RvError::TemplateInconsistent
    );
    assert_eq!(
        rv(s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::DES2),
            Attribute::Value(vec![0; 15]),
        ])),
        RvError::AttributeValueInvalid
    );
    assert_eq!(
        rv(s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![0; 16]),
            Attribute::Modulus(vec![1]),
        ])),
        RvError::AttributeTypeInvalid
    );
    assert_eq!(
        rv(s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![0; 16]),
            Attribute::Local(true),
        ])),
        RvError::AttributeReadOnly
    );
    let k = aes(&s, &[]);
    let bogus = unsafe_handle(k.handle() + 1_000_000);
    assert_eq!(rv(s.get_attributes(bogus, &[AttributeType::Label])), RvError::ObjectHandleInvalid);
    assert_eq!(rv(s.encrypt(&Mechanism::AesEcb, bogus, &[0; 16])), RvError::KeyHandleInvalid);
    assert_eq!(rv(s.destroy_object(bogus)), RvError::ObjectHandleInvalid);
    s.destroy_object(k).unwrap();
    assert_eq!(rv(s.get_attributes(k, &[AttributeType::Label])), RvError::ObjectHandleInvalid);
    assert_eq!(rv(s.encrypt(&Mechanism::Sha256, k, &[0; 16])), RvError::MechanismInvalid);
    // A closed session's handle is invalid.
    let s2 = p.open_ro_session(slot).unwrap();
    let s2h = s2.handle();
    drop(s2);
    let _ = s2h;
    // Calls in the wrong state.
    let k3 = aes(&s, &[]);
    assert_eq!(rv(s.encrypt_final()), RvError::OperationNotInitialized);
    s.encrypt_init(&Mechanism::AesEcb, k3).unwrap();
    assert_eq!(rv(s.encrypt_init(&Mechanism::AesEcb, k3)), RvError::OperationActive);
    assert!(s.encrypt_final().unwrap().is_empty());
    assert_eq!(rv(s.encrypt_final()), RvError::OperationNotInitialized);
    assert_eq!(rv(s.sign_final()), RvError::OperationNotInitialized);
    assert_eq!(rv(s.verify_final(&[0; 16])), RvError::OperationNotInitialized);
    assert_eq!(rv(s.digest_final()), RvError::OperationNotInitialized);
    // AES-GCM with an unsupported tag length.
    let k2 = aes(&s, &[]);
    let mut iv = [0u8; 12];
    let g = cryptoki::mechanism::aead::GcmParams::new(&mut iv, &[], 64.into()).unwrap();
    assert_eq!(rv(s.encrypt(&Mechanism::AesGcm(g), k2, b"x")), RvError::MechanismParamInvalid);
}

fn unsafe_handle(v: u64) -> ObjectHandle {
    // SAFETY: the handle is only passed back to the module, which must
    // reject it; no memory is involved.
    unsafe { ObjectHandle::new_from_raw(v) }
}

#[test]
fn login_states_and_visibility() {
    let (p, slot, s) = token();
    let k = aes(&s, &[Attribute::Label(b"priv".to_vec())]);
    let pubk = aes(&s, &[Attribute::Label(b"pub".to_vec()), Attribute::Private(false)]);
    assert_eq!(rv(s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))), RvError::UserAlreadyLoggedIn);
    s.logout().unwrap();
    assert_eq!(rv(s.logout()), RvError::UserNotLoggedIn);
    assert_eq!(rv(s.login(UserType::User, Some(&AuthPin::new("wrong-pin".into())))), RvError::PinIncorrect);
    // Private objects disappear while logged out; public ones stay.
    assert!(s.find_objects(&[Attribute::Label(b"priv".to_vec())]).unwrap().is_empty());
    assert_eq!(s.find_objects(&[Attribute::Label(b"pub".to_vec())]).unwrap(), vec![pubk]);
    assert_eq!(rv(s.get_attributes(k, &[AttributeType::Label])), RvError::ObjectHandleInvalid);
    // RO session: no token objects; SO login refused while it is open.
    let ro = p.open_ro_session(slot).unwrap();
    assert_eq!(rv(s.login(UserType::So, Some(&AuthPin::new(SO_PIN.into())))), RvError::SessionReadOnlyExists);
    ro.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))).unwrap();
    assert_eq!(
        rv(ro.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(16.into()), Attribute::Token(true)])),
        RvError::SessionReadOnly
    );
    ro.logout().unwrap();
    // Token info flags.
    let ti: TokenInfo = p.get_token_info(slot).unwrap();
    assert!(ti.token_initialized());
    assert!(ti.user_pin_initialized());
    assert!(ti.login_required());
    assert!(ti.rng());
    // Change the user PIN and log in with the new one.
    s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))).unwrap();
    s.set_pin(&AuthPin::new(USER_PIN.into()), &AuthPin::new("new-user-pin".into())).unwrap();
    s.logout().unwrap();
    assert_eq!(rv(s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))), RvError::PinIncorrect);
    s.login(UserType::User, Some(&AuthPin::new("new-user-pin".into()))).unwrap();
    let _ = h("00");
}

#[test]
fn mechanism_info_tells_the_truth() {
    use cryptoki::mechanism::MechanismType;
    let (p, slot, _s) = token();
    let list = p.get_mechanism_list(slot).unwrap();
    assert!(list.contains(&MechanismType::AES_KEY_WRAP));
    // (cryptoki drops vendor numbers from the list; ask for the info directly.)
    let sm4 = p.get_mechanism_info(slot, common::mech_type(hsm_sim::vendor::CKM_SM4_ECB)).unwrap();
    assert!(sm4.encrypt() && sm4.wrap() && !sm4.derive());
    let i = p.get_mechanism_info(slot, MechanismType::AES_KEY_WRAP).unwrap();
    assert!(i.wrap() && i.unwrap() && !i.sign());
    let e = p.get_mechanism_info(slot, MechanismType::ECDSA).unwrap();
    assert!(e.sign() && e.verify() && !e.encrypt());
    assert_eq!((e.min_key_size(), e.max_key_size()), (256, 384));
    let d = p.get_mechanism_info(slot, common::mech_type(cryptoki_sys::CKM_DES3_ECB_ENCRYPT_DATA)).unwrap();
    assert!(d.derive() && !d.encrypt());
    assert!(p.get_mechanism_info(slot, MechanismType::AES_CTR).is_err());
}

#[test]
fn copy_object_and_session_states() {
    use cryptoki::session::SessionState;
    let (p, slot, s) = token();
    assert_eq!(s.get_session_info().unwrap().session_state(), SessionState::RwUser);
    let k = aes(&s, &[Attribute::Label(b"orig".to_vec())]);
    let c = s.copy_object(k, &[Attribute::Label(b"copy".to_vec())]).unwrap();
    assert_ne!(c, k);
    match s.get_attributes(c, &[AttributeType::Label, AttributeType::CheckValue]).unwrap().as_slice() {
        [Attribute::Label(l), Attribute::CheckValue(v)] => {
            assert_eq!(l, b"copy");
            match s.get_attributes(k, &[AttributeType::CheckValue]).unwrap().pop() {
                Some(Attribute::CheckValue(o)) => assert_eq!(&o, v),
                o => panic!("{o:?}"),
            }
        }
        o => panic!("{o:?}"),
    }
    // The copy keeps the original's sensitivity: it cannot be relaxed.
    assert_eq!(rv(s.copy_object(k, &[Attribute::Sensitive(false)])), RvError::AttributeReadOnly);
    let nc = aes(&s, &[Attribute::Copyable(false)]);
    assert_eq!(rv(s.copy_object(nc, &[])), RvError::ActionProhibited);
    // Non-destroyable objects stay.
    let nd = aes(&s, &[Attribute::Destroyable(false)]);
    assert_eq!(rv(s.destroy_object(nd)), RvError::ActionProhibited);
    // Session states.
    let ro = p.open_ro_session(slot).unwrap();
    assert_eq!(ro.get_session_info().unwrap().session_state(), SessionState::RoUser);
    s.logout().unwrap();
    assert_eq!(ro.get_session_info().unwrap().session_state(), SessionState::RoPublic);
    assert_eq!(s.get_session_info().unwrap().session_state(), SessionState::RwPublic);
    drop(ro);
    s.login(UserType::So, Some(&AuthPin::new(SO_PIN.into()))).unwrap();
    assert_eq!(s.get_session_info().unwrap().session_state(), SessionState::RwSecurityOfficer);
    assert_eq!(rv(p.open_ro_session(slot)), RvError::SessionReadWriteSoExists);
    // The SO cannot use private objects.
    assert_eq!(rv(s.get_attributes(k, &[AttributeType::Label])), RvError::ObjectHandleInvalid);
    assert_eq!(rv(s.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(16.into())])), RvError::UserNotLoggedIn);
}
