//! Independent sessions on different threads run at the same time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{USER_PIN, h, token};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

#[test]
fn parallel_sessions_smoke() {
    let (p, slot, s) = token();
    let (pk, sk) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(h("06082a8648ce3d030107")), Attribute::Token(true)],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    let mk = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::DES2),
            Attribute::Value(h("0123456789ABCDEFFEDCBA9876543210")),
            Attribute::Token(true),
            Attribute::Derive(true),
        ])
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let s = p.open_rw_session(slot).unwrap();
                // Login state is per token: already logged in by the main session.
                let _ = s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())));
                for i in 0..50u8 {
                    let sig = s.sign(&Mechanism::EcdsaSha256, sk, &[t, i]).unwrap();
                    s.verify(&Mechanism::EcdsaSha256, pk, &[t, i], &sig).unwrap();
                    let mut d = vec![t, i, 0, 0, 0, 0, 0, 0];
                    d.extend(d.iter().map(|b| !b).collect::<Vec<_>>());
                    let p = cryptoki_sys::CK_KEY_DERIVATION_STRING_DATA { pData: d.as_mut_ptr(), ulLen: 16 };
                    let m = Mechanism::VendorDefined(cryptoki::mechanism::vendor_defined::VendorDefinedMechanism::new(
                        common::mech_type(cryptoki_sys::CKM_DES3_ECB_ENCRYPT_DATA),
                        Some(&p),
                    ));
                    let dk = s
                        .derive_key(
                            &m,
                            mk,
                            &[
                                Attribute::Class(ObjectClass::SECRET_KEY),
                                Attribute::KeyType(KeyType::DES2),
                                Attribute::Token(false),
                            ],
                        )
                        .unwrap();
                    let kcv = s.get_attributes(dk, &[AttributeType::CheckValue]).unwrap();
                    assert_eq!(kcv.len(), 1);
                    s.destroy_object(dk).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Derived session objects were all destroyed: only the two keys and MK remain.
    assert_eq!(s.find_objects(&[]).unwrap().len(), 3);
}
