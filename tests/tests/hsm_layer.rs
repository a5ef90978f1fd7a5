//! The HSM layer against real SoftHSM, in-process: start-up errors, the
//! capability table, and recovery of sessions the module invalidates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// why: one raw PKCS#11 call (C_CloseAllSessions) that cryptoki does not
// offer, to make the module itself invalidate the service's sessions.
#![allow(unsafe_code)]

use std::sync::Arc;

use kms::config::{HsmConfig, RecoveryConfig, VendorMechanisms};
use kms::hsm::{Hsm, HsmError};
use kms::metrics::Metrics;
use kms_tests::softhsm::{MODULE, SoftHsmToken};
use secrecy::SecretString;

fn config(token: &SoftHsmToken) -> HsmConfig {
    HsmConfig {
        module: MODULE.into(),
        token_label: token.label.clone(),
        pin_file: Some(token.pin_file.clone()),
        pin_env: None,
        pool_size: 2,
        module_env: Default::default(),
        recovery: RecoveryConfig { max_attempts: 3, initial_backoff_ms: 10, max_backoff_ms: 50, down_retry_ms: 200 },
        vendor: VendorMechanisms::default(),
    }
}

fn open(token: &SoftHsmToken, pin: &str) -> Result<Hsm, HsmError> {
    Hsm::open(&config(token), SecretString::from(pin.to_owned()), Arc::new(Metrics::new()))
}

fn token() -> (tempfile::TempDir, SoftHsmToken) {
    let dir = tempfile::tempdir().unwrap();
    let t = SoftHsmToken::in_process(dir.path(), &format!("t-{}", kms_tests::unique(4)));
    (dir, t)
}

#[test]
fn wrong_pin_refuses_to_start_with_ckr_pin_incorrect() {
    let (_d, t) = token();
    let err = open(&t, "not-the-pin").err().expect("must fail");
    let text = err.to_string();
    assert!(matches!(err, HsmError::Login { .. }), "{text}");
    assert!(text.contains("CKR_PIN_INCORRECT") && text.contains(&t.label), "{text}");
}

#[test]
fn unknown_token_label_lists_the_tokens_present() {
    let (_d, t) = token();
    let mut cfg = config(&t);
    cfg.token_label = "no-such-token".into();
    let err = Hsm::open(&cfg, SecretString::from(t.pin.clone()), Arc::new(Metrics::new())).err().expect("must fail");
    let text = err.to_string();
    assert!(text.contains("no-such-token") && text.contains(&t.label) && text.contains(MODULE), "{text}");
}

#[test]
fn missing_module_is_named() {
    let (_d, t) = token();
    let mut cfg = config(&t);
    cfg.module = "/nonexistent/libpkcs11.so".into();
    let err = Hsm::open(&cfg, SecretString::from(t.pin.clone()), Arc::new(Metrics::new())).err().expect("must fail");
    assert!(err.to_string().contains("/nonexistent/libpkcs11.so"), "{err}");
}

#[test]
fn softhsm_capability_table_matches_what_is_known() {
    let (_d, t) = token();
    let hsm = open(&t, &t.pin).unwrap();
    let caps = hsm.capabilities();
    // DESIGN.md §5: what SoftHSM 2.6 supports.
    for name in [
        "des3_ecb_encrypt_data",
        "des3_cbc_encrypt_data",
        "aes_ecb_encrypt_data",
        "aes_cbc_encrypt_data",
        "aes_cmac",
        "des3_cmac",
        "aes_key_wrap",
        "aes_key_wrap_pad",
        "aes_gcm",
        "ecdsa",
        "ecdh1_derive",
        "rsa_pkcs_oaep",
    ] {
        assert!(caps.require(name).is_ok(), "SoftHSM should offer {name}: {:?}", caps.row(name));
    }
    // ... and what it does not: no national algorithms, no 3DES wrapping.
    for name in ["sm4_ecb", "sm3", "sm2_sign", "sm4_ecb_encrypt_data"] {
        let err = caps.require(name).expect_err("no SM algorithms in SoftHSM");
        assert!(err.to_string().contains(MODULE) && err.to_string().contains(name), "{err}");
    }
    let err = caps.require_wrap("DES2", "CKM_DES3_ECB", "DES2").expect_err("SoftHSM cannot wrap with 3DES");
    assert!(err.to_string().contains("CKR_MECHANISM_INVALID"), "{err}");
    assert!(caps.require_wrap("AES", "CKM_AES_KEY_WRAP", "DES2").is_ok());
    assert!(caps.require_wrap("AES", "CKM_AES_KEY_WRAP_PAD", "AES").is_ok());
}

fn close_all_sessions(slot: u64) {
    // SAFETY: loads the same shared library the Hsm already loaded (dlopen
    // returns the same instance), and calls C_CloseAllSessions with a slot
    // id the module gave us; the function takes no pointers.
    let rv = unsafe {
        let lib = cryptoki_sys::Pkcs11::new(MODULE).expect("load module");
        lib.C_CloseAllSessions(slot)
    };
    assert_eq!(rv, cryptoki_sys::CKR_OK, "C_CloseAllSessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_invalidated_by_the_module_are_recovered() {
    let (_d, t) = token();
    let hsm = open(&t, &t.pin).unwrap();
    let random = |hsm: Hsm| async move {
        hsm.run("random", |s| s.generate_random_vec(16).map_err(|e| HsmError::from_cryptoki("t", e))).await
    };
    assert_eq!(random(hsm.clone()).await.unwrap().len(), 16);
    assert_eq!(hsm.pool_status().recovered, 0);

    close_all_sessions(hsm.slot_id());

    // Every pooled session is now invalid (and logged out); calls still work.
    for _ in 0..4 {
        assert_eq!(random(hsm.clone()).await.unwrap().len(), 16);
    }
    let status = hsm.pool_status();
    assert!(status.recovered >= 1, "{status:?}");
    assert!(status.up);
    // Operations that need the login work on the reopened sessions too.
    let n = hsm
        .run("find", |s| {
            s.find_objects(&[cryptoki::object::Attribute::Private(true)]).map_err(|e| HsmError::from_cryptoki("t", e))
        })
        .await
        .unwrap();
    assert!(n.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_handle_is_checked_before_use() {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    let (_d, t) = token();
    let hsm = open(&t, &t.pin).unwrap();
    let make = |id: &'static [u8]| {
        move |s: &cryptoki::session::Session| {
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(16.into()),
                    Attribute::Token(true),
                    Attribute::Id(id.to_vec()),
                ],
            )
            .map_err(|e| HsmError::from_cryptoki("t", e))
        }
    };
    hsm.run("gen", make(b"key-x")).await.unwrap();
    let h2 = hsm.clone();
    let first = hsm.run("lookup", move |s| h2.object(s, b"key-x")).await.unwrap();
    // Another replica destroys the object (our cache is not told) and a new
    // object appears.
    hsm.run("destroy", move |s| s.destroy_object(first).map_err(|e| HsmError::from_cryptoki("t", e))).await.unwrap();
    hsm.run("gen", make(b"key-y")).await.unwrap();
    let h2 = hsm.clone();
    let again = hsm.run("lookup", move |s| h2.object(s, b"key-x")).await;
    assert!(
        matches!(again, Err(HsmError::ObjectNotFound { .. })),
        "stale handle returned: {:?}",
        again.map(|h| h.handle())
    );
    let h2 = hsm.clone();
    assert!(hsm.run("lookup", move |s| h2.object(s, b"key-y")).await.is_ok());
}
