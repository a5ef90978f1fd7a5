//! Token objects and token metadata survive a restart (C_Finalize +
//! C_Initialize); values are encrypted at rest; files are replaced atomically.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{SO_PIN, USER_PIN, h, init_args, lib_path, write_config};
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

fn start() -> (Pkcs11, cryptoki::slot::Slot) {
    let p = Pkcs11::new(lib_path()).unwrap();
    p.initialize(init_args()).unwrap();
    let slot = p.get_all_slots().unwrap()[0];
    (p, slot)
}

fn kcv(s: &cryptoki::session::Session, k: cryptoki::object::ObjectHandle) -> Vec<u8> {
    match s.get_attributes(k, &[AttributeType::CheckValue]).unwrap().pop() {
        Some(Attribute::CheckValue(v)) => v,
        o => panic!("{o:?}"),
    }
}

fn all_files(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(all_files(&e.path()));
        } else {
            out.push(std::fs::read(e.path()).unwrap());
        }
    }
    out
}

#[test]
fn token_survives_restart_encrypted_at_rest() {
    let dir = write_config(1, "");
    let secret_value = h("00112233445566778899AABBCCDDEEFF0F1E2D3C4B5A6978");
    let (kcv_before, sig_key_label) = {
        let (p, slot) = start();
        common::init_token(&p, slot);
        let s = p.open_rw_session(slot).unwrap();
        s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))).unwrap();
        let k = s
            .generate_key(
                &Mechanism::AesKeyGen,
                &[Attribute::ValueLen(32.into()), Attribute::Token(true), Attribute::Label(b"master".to_vec())],
            )
            .unwrap();
        s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::DES3),
            Attribute::Value(secret_value.clone()),
            Attribute::Token(true),
            Attribute::Label(b"imported".to_vec()),
        ])
        .unwrap();
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(b"public-data".to_vec()),
            Attribute::Value(b"hello".to_vec()),
        ])
        .unwrap();
        s.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(h("06082a8648ce3d030107")), Attribute::Token(true), Attribute::Label(b"ec".to_vec())],
            &[Attribute::Token(true), Attribute::Sign(true), Attribute::Label(b"ec".to_vec())],
        )
        .unwrap();
        // A session object must not survive.
        s.generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(16.into()), Attribute::Label(b"ephemeral".to_vec())],
        )
        .unwrap();
        (kcv(&s, k), "ec")
    };
    // Encrypted at rest: the imported clear value appears in no file, nor
    // any 8-byte window of it.
    for f in all_files(dir.path()) {
        for w in secret_value.windows(8) {
            assert!(!f.windows(8).any(|x| x == w), "key bytes found on disk");
        }
    }
    // No temp files left behind; every file is owner-only.
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir.path().join("slot0/objects")).unwrap().flatten() {
        assert!(e.file_name().to_string_lossy().ends_with(".obj"));
        assert_eq!(e.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
    let meta = std::fs::metadata(dir.path().join("slot0/token.toml")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    {
        let (p, slot) = start();
        let ti = p.get_token_info(slot).unwrap();
        assert_eq!(ti.label(), "test0");
        assert!(ti.user_pin_initialized());
        let s = p.open_rw_session(slot).unwrap();
        // Before login: public objects only.
        assert_eq!(s.find_objects(&[Attribute::Label(b"public-data".to_vec())]).unwrap().len(), 1);
        assert!(s.find_objects(&[Attribute::Label(b"master".to_vec())]).unwrap().is_empty());
        s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))).unwrap();
        let k = s.find_objects(&[Attribute::Label(b"master".to_vec())]).unwrap();
        assert_eq!(k.len(), 1);
        assert_eq!(kcv(&s, k[0]), kcv_before);
        assert!(s.find_objects(&[Attribute::Label(b"ephemeral".to_vec())]).unwrap().is_empty());
        let imp = s.find_objects(&[Attribute::Label(b"imported".to_vec())]).unwrap()[0];
        let c = s.encrypt(&Mechanism::Des3Ecb, imp, &[0u8; 8]).unwrap();
        assert_eq!(c[..3], kcv(&s, imp)[..]);
        let ec = s
            .find_objects(&[
                Attribute::Label(sig_key_label.as_bytes().to_vec()),
                Attribute::Class(ObjectClass::PRIVATE_KEY),
            ])
            .unwrap()[0];
        let pk = s
            .find_objects(&[
                Attribute::Label(sig_key_label.as_bytes().to_vec()),
                Attribute::Class(ObjectClass::PUBLIC_KEY),
            ])
            .unwrap()[0];
        let sig = s.sign(&Mechanism::EcdsaSha256, ec, b"m").unwrap();
        s.verify(&Mechanism::EcdsaSha256, pk, b"m", &sig).unwrap();
        // Change the user PIN; destroy one object; modify another.
        s.set_pin(&AuthPin::new(USER_PIN.into()), &AuthPin::new("changed-pin".into())).unwrap();
        s.destroy_object(imp).unwrap();
        s.update_attributes(k[0], &[Attribute::Label(b"master-2".to_vec())]).unwrap();
    }
    // Corrupt one object file: it is skipped, the others load.
    let objs: Vec<_> =
        std::fs::read_dir(dir.path().join("slot0/objects")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(objs.len(), 4, "master, public data, EC pair");
    {
        let (p, slot) = start();
        let s = p.open_rw_session(slot).unwrap();
        assert!(s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))).is_err());
        s.login(UserType::User, Some(&AuthPin::new("changed-pin".into()))).unwrap();
        assert!(s.find_objects(&[Attribute::Label(b"imported".to_vec())]).unwrap().is_empty());
        let k = s.find_objects(&[Attribute::Label(b"master-2".to_vec())]).unwrap();
        assert_eq!(kcv(&s, k[0]), kcv_before);
        // SO PIN still opens the token too.
        s.logout().unwrap();
        s.login(UserType::So, Some(&AuthPin::new(SO_PIN.into()))).unwrap();
    }
    let mut bytes = std::fs::read(&objs[0]).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&objs[0], bytes).unwrap();
    {
        let (p, slot) = start();
        let s = p.open_rw_session(slot).unwrap();
        s.login(UserType::User, Some(&AuthPin::new("changed-pin".into()))).unwrap();
        let all = s.find_objects(&[]).unwrap();
        assert_eq!(all.len(), 3, "the corrupted object is skipped");
    }
}
