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

// ----- The CA's HSM operations (kms::hsm::pki, kms::hsm::signer) -----------------------
//
// SoftHSM runs in this process (its token directory comes from SOFTHSM2_CONF).
// hsm-sim reads HSM_SIM_CONF when it is loaded, and this process must not
// change its own environment while other tests run, so hsm-sim tests re-run
// this test binary as a child process for one test, with the variable set
// from the start (`in_hsm_sim_child`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use kms::hsm::Capabilities;
use kms::hsm::pki::{self, Enveloped, KeyType, RecipientKey, RecipientParts};
use kms::hsm::signer::{HsmSigner, KeyAlgorithm, Signer};
use kms_tests::token::{Module, Token};

/// DER ECC-CMS-SharedInfo (RFC 5753 §7.2) for id-aes256-wrap without ukm,
/// suppPubInfo = 256 (the KEK length in bits), as the CA passes it.
const SHARED_INFO_AES256_WRAP: &str = "3015300b060960864801650304012da206040400000100";

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// Runs `openssl args…` with `stdin`; panics with its stderr on failure.
fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (the independent implementation these tests check against)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

/// A DER SubjectPublicKeyInfo as a PEM file openssl reads.
fn spki_pem(dir: &Path, name: &str, spki: &[u8]) -> String {
    let der = write(dir, &format!("{name}.der"), spki);
    write(dir, &format!("{name}.pem"), &openssl(&["pkey", "-pubin", "-inform", "DER", "-in", &der], b""))
}

/// Raw ECDSA r || s to the DER Ecdsa-Sig-Value (RFC 3279 §2.2.3).
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let b = &b[b.iter().position(|x| *x != 0).unwrap_or(b.len() - 1)..];
        let mut v = vec![0x02];
        let pad = b[0] & 0x80 != 0;
        v.push((b.len() + usize::from(pad)) as u8);
        if pad {
            v.push(0);
        }
        v.extend_from_slice(b);
        v
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = int(r);
    body.extend(int(s));
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend(body);
    out
}

fn open_module(module: &Path, label: &str, pin: &str, vendor: VendorMechanisms) -> Hsm {
    let cfg = HsmConfig {
        module: module.to_owned(),
        token_label: label.to_owned(),
        pin_file: None,
        pin_env: None,
        pool_size: 1,
        module_env: Default::default(),
        recovery: RecoveryConfig { max_attempts: 3, initial_backoff_ms: 10, max_backoff_ms: 50, down_retry_ms: 200 },
        vendor,
    };
    Hsm::open(&cfg, SecretString::from(pin.to_owned()), Arc::new(Metrics::new())).unwrap()
}

/// hsm-sim's vendor numbers, as `kms dev` configures them.
fn hsm_sim_vendor() -> VendorMechanisms {
    let mut v = VendorMechanisms::default();
    for line in kms::dev::HSM_SIM_VENDOR.lines().skip(1) {
        let (k, n) = line.split_once(" = ").unwrap();
        let n = Some(u64::from_str_radix(n.trim().trim_start_matches("0x"), 16).unwrap());
        match k.trim() {
            "sm4_key_gen" => v.sm4_key_gen = n,
            "sm4_ecb" => v.sm4_ecb = n,
            "sm4_cbc" => v.sm4_cbc = n,
            "sm4_mac" => v.sm4_mac = n,
            "sm4_ecb_encrypt_data" => v.sm4_ecb_encrypt_data = n,
            "sm3" => v.sm3 = n,
            "sm2_key_pair_gen" => v.sm2_key_pair_gen = n,
            "sm2_sign" => v.sm2_sign = n,
            "sm2_encrypt" => v.sm2_encrypt = n,
            "sm4_key_type" => v.sm4_key_type = n,
            "key_xor" => v.key_xor = n,
            "retail_mac" => v.retail_mac = n,
            "an10922_aes128" => v.an10922_aes128 = n,
            "an10922_des2" => v.an10922_des2 = n,
            other => panic!("unknown vendor name {other}"),
        }
    }
    v
}

/// Runs `f` with a pooled session, the capability table and the module path.
async fn with_session<T, F>(hsm: &Hsm, f: F) -> Result<T, HsmError>
where
    T: Send + 'static,
    F: Fn(&Session, &Capabilities, &str) -> Result<T, HsmError> + Send + 'static,
{
    let caps = hsm.capabilities().clone();
    let module = hsm.info().path.clone();
    hsm.run("test", move |s| f(s, &caps, &module)).await
}

/// Session objects the service's sessions can see.
async fn session_objects(hsm: &Hsm) -> usize {
    with_session(hsm, |s, _, m| {
        s.find_objects(&[Attribute::Token(false)]).map(|v| v.len()).map_err(|e| HsmError::from_cryptoki(m, e))
    })
    .await
    .unwrap()
}

/// A long-term escrow key: AES-256 token object, sensitive, not
/// extractable, wrap (and, for the test's own check, unwrap).
async fn escrow_key(hsm: &Hsm, wrap: bool) -> ObjectHandle {
    with_session(hsm, move |s, _, m| {
        s.generate_key(
            &cryptoki::mechanism::Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(CkKeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Wrap(wrap),
                Attribute::Unwrap(true),
                Attribute::Label(b"escrow".to_vec()),
                Attribute::Id(b"escrow".to_vec()),
            ],
        )
        .map_err(|e| HsmError::from_cryptoki(m, e))
    })
    .await
    .unwrap()
}

/// Generates a CA key pair of each type, checks its attributes, signs
/// through `HsmSigner` (found by CKA_ID) and verifies with `openssl dgst`;
/// then rolls the pair back with `destroy_key_pair`.
async fn ca_keys_sign_verifiably(hsm: &Hsm, types: &[KeyType]) {
    let dir = tempfile::tempdir().unwrap();
    let token = hsm.info().token_label.clone();
    for &key_type in types {
        let id = format!("ca-{key_type}").into_bytes();
        let (label, id2) = (format!("issuing CA {key_type}"), id.clone());
        let parts =
            with_session(hsm, move |s, caps, m| pki::generate_signing_key_pair(s, caps, m, key_type, &label, &id2))
                .await
                .unwrap();
        assert_eq!(parts.key_type, key_type);
        // openssl reads the SPKI and agrees on the key.
        let pem = spki_pem(dir.path(), &key_type.to_string(), &parts.spki_der);
        let text = String::from_utf8(openssl(&["pkey", "-pubin", "-in", &pem, "-noout", "-text"], b"")).unwrap();
        let bits = if key_type.is_rsa() {
            key_type.bits()
        } else if key_type == KeyType::EcP384 {
            384
        } else {
            256
        };
        assert!(text.contains(&format!("({bits} bit)")), "{key_type}: {text}");
        // The private key: token, private, sensitive, never extractable, sign only.
        let (id2, tok) = (id.clone(), token.clone());
        let message = format!("to be signed by {key_type}").into_bytes();
        let msg = message.clone();
        let (attrs, algorithm, public, signature) = with_session(hsm, move |s, _, m| {
            let signer = HsmSigner::find_by_id(s, m, &id2, &tok)?;
            let attrs = s
                .get_attributes(
                    signer.private_key(),
                    &[
                        AttributeType::Token,
                        AttributeType::Private,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::Sign,
                        AttributeType::Decrypt,
                        AttributeType::Unwrap,
                        AttributeType::Derive,
                        AttributeType::NeverExtractable,
                    ],
                )
                .map_err(|e| HsmError::from_cryptoki(m, e))?;
            let signature = signer.sign_raw(&msg).map_err(|e| HsmError::Worker(e.to_string()))?;
            Ok((attrs, signer.algorithm(), signer.public_key().to_vec(), signature))
        })
        .await
        .unwrap();
        let expected = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::NeverExtractable(true),
        ];
        assert_eq!(attrs, expected, "{key_type}");
        assert_eq!(public, parts.raw, "{key_type}: signer's public key");
        let (sig, digest) = match algorithm {
            KeyAlgorithm::EcdsaP256Sha256 => (ecdsa_der(&signature), "-sha256"),
            KeyAlgorithm::EcdsaP384Sha384 => (ecdsa_der(&signature), "-sha384"),
            KeyAlgorithm::RsaPkcs1Sha256 => (signature.clone(), "-sha256"),
            other => panic!("{other:?}"),
        };
        let expected_algorithm = match key_type {
            KeyType::EcP256 => KeyAlgorithm::EcdsaP256Sha256,
            KeyType::EcP384 => KeyAlgorithm::EcdsaP384Sha384,
            _ => KeyAlgorithm::RsaPkcs1Sha256,
        };
        assert_eq!(algorithm, expected_algorithm);
        let sig_file = write(dir.path(), "sig", &sig);
        let msg_file = write(dir.path(), "msg", &message);
        let ok = openssl(&["dgst", digest, "-verify", &pem, "-signature", &sig_file, &msg_file], b"");
        assert_eq!(String::from_utf8_lossy(&ok).trim(), "Verified OK", "{key_type}");
        // Rollback removes both objects, and the signer is gone with them.
        let (id2, tok) = (id.clone(), token.clone());
        let destroyed = with_session(hsm, move |s, _, m| pki::destroy_key_pair(s, m, &id2)).await.unwrap();
        assert_eq!(destroyed, 2, "{key_type}");
        let gone = with_session(hsm, move |s, _, m| HsmSigner::find_by_id(s, m, &id, &tok).map(|_| ())).await;
        assert!(matches!(gone, Err(HsmError::ObjectNotFound { .. })), "{key_type}: {gone:?}");
    }
}

/// A reader key pair made by openssl: (private key PEM file, RecipientKey).
fn reader_key(dir: &Path, key_type: KeyType) -> (String, RecipientKey) {
    let name = format!("reader-{key_type}");
    let pem = match key_type {
        KeyType::EcP256 => openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], b""),
        KeyType::EcP384 => openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], b""),
        _ => {
            openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", &format!("rsa_keygen_bits:{}", key_type.bits())], b"")
        }
    };
    let file = write(dir, &format!("{name}.pem"), &pem);
    let raw = if key_type.is_rsa() {
        openssl(&["rsa", "-in", &file, "-RSAPublicKey_out", "-outform", "DER"], b"")
    } else {
        // The point is the tail of the SPKI (an uncompressed point ends it).
        let spki = openssl(&["pkey", "-in", &file, "-pubout", "-outform", "DER"], b"");
        let len = if key_type == KeyType::EcP256 { 65 } else { 97 };
        spki[spki.len() - len..].to_vec()
    };
    (file, RecipientKey { key_type, raw })
}

/// Opens an envelope with openssl alone, as the reader would, and checks
/// that the PKCS#8 inside belongs to `enc_public`. Returns the PKCS#8 DER.
fn open_with_openssl(dir: &Path, reader_pem: &str, e: &Enveloped) -> Vec<u8> {
    let cek = match &e.recipient {
        RecipientParts::RsaOaepSha1 { encrypted_key } => openssl(
            &[
                "pkeyutl",
                "-decrypt",
                "-inkey",
                reader_pem,
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha1",
            ],
            encrypted_key,
        ),
        RecipientParts::EcdhSha256Kdf { originator_point, encrypted_key } => {
            let curve = if originator_point.len() == 65 { pki::KeyType::EcP256 } else { pki::KeyType::EcP384 };
            let prefix = match curve {
                KeyType::EcP256 => "3059301306072a8648ce3d020106082a8648ce3d030107034200",
                _ => "3076301006072a8648ce3d020106052b81040022036200",
            };
            let mut spki = unhex(prefix);
            spki.extend(originator_point);
            let originator = spki_pem(dir, "originator", &spki);
            let z = openssl(&["pkeyutl", "-derive", "-inkey", reader_pem, "-peerkey", &originator], b"");
            let kek = String::from_utf8(openssl(
                &[
                    "kdf",
                    "-keylen",
                    "32",
                    "-kdfopt",
                    "digest:SHA256",
                    "-kdfopt",
                    &format!("hexsecret:{}", hex::encode(&z)),
                    "-kdfopt",
                    &format!("hexinfo:{SHARED_INFO_AES256_WRAP}"),
                    "X963KDF",
                ],
                b"",
            ))
            .unwrap()
            .replace([':', '\n'], "");
            openssl(&["enc", "-d", "-id-aes256-wrap", "-K", &kek, "-iv", "A6A6A6A6A6A6A6A6"], encrypted_key)
        }
    };
    assert_eq!(cek.len(), 32, "the CEK is AES-256");
    let pkcs8 = openssl(
        &["enc", "-d", "-aes-256-cbc", "-K", &hex::encode(&cek), "-iv", &hex::encode(e.content_iv)],
        &e.encrypted_content,
    );
    let key = write(dir, "enc.p8", &pkcs8);
    let spki = openssl(&["pkey", "-inform", "DER", "-in", &key, "-pubout", "-outform", "DER"], b"");
    assert_eq!(spki, e.enc_public.spki_der, "the enveloped private key belongs to enc_public");
    pkcs8
}

/// Unwraps the escrow copy inside the HSM (as a recovery would), signs
/// with it and verifies against the envelope's public key with openssl.
async fn escrow_copy_is_the_same_key(hsm: &Hsm, dir: &Path, escrow: ObjectHandle, e: &Enveloped) {
    assert_eq!(e.escrow_mechanism, "CKM_AES_KEY_WRAP_PAD");
    let wrapped = e.escrow_wrapped.clone();
    let rsa = e.enc_public.key_type.is_rsa();
    let digest = openssl(&["dgst", "-sha256", "-binary"], b"recovered");
    let signature = with_session(hsm, move |s, _, m| {
        let fail = |e| HsmError::from_cryptoki(m, e);
        let k = s
            .unwrap_key(
                &cryptoki::mechanism::Mechanism::AesKeyWrapPad,
                escrow,
                &wrapped,
                &[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(if rsa { CkKeyType::RSA } else { CkKeyType::EC }),
                    Attribute::Token(false),
                    Attribute::Sign(true),
                ],
            )
            .map_err(fail)?;
        let sig = if rsa {
            s.sign(&cryptoki::mechanism::Mechanism::Sha256RsaPkcs, k, b"recovered")
        } else {
            s.sign(&cryptoki::mechanism::Mechanism::Ecdsa, k, &digest)
        };
        let _ = s.destroy_object(k);
        sig.map_err(fail)
    })
    .await
    .unwrap();
    let sig = if rsa { signature } else { ecdsa_der(&signature) };
    let pem = spki_pem(dir, "enc-public", &e.enc_public.spki_der);
    let sig_file = write(dir, "escrow.sig", &sig);
    let msg_file = write(dir, "escrow.msg", b"recovered");
    let ok = openssl(&["dgst", "-sha256", "-verify", &pem, "-signature", &sig_file, &msg_file], b"");
    assert_eq!(String::from_utf8_lossy(&ok).trim(), "Verified OK");
}

async fn envelope(
    hsm: &Hsm,
    enc_type: KeyType,
    reader: &RecipientKey,
    escrow: ObjectHandle,
) -> Result<Enveloped, HsmError> {
    let reader = reader.clone();
    with_session(hsm, move |s, caps, m| {
        pki::envelope_new_key_pair(s, caps, m, enc_type, &reader, &unhex(SHARED_INFO_AES256_WRAP), escrow)
    })
    .await
}

/// The probes for CA key pairs and their signatures (every module here has them).
const CA_KEY_PROBES: [&str; 6] = [
    pki::CAP_GENERATE_EC_P256,
    pki::CAP_GENERATE_EC_P384,
    pki::CAP_GENERATE_RSA,
    pki::CAP_SIGN_ECDSA_P256,
    pki::CAP_SIGN_ECDSA_P384,
    pki::CAP_SIGN_RSA_SHA256,
];

fn probe_rows(caps: &Capabilities) -> String {
    let mut out = String::new();
    for name in
        CA_KEY_PROBES.iter().chain(&[pki::CAP_ECDH_P256_SHA256_KDF, pki::CAP_ECDH_P384_SHA256_KDF, "sm2_key_pair_gen"])
    {
        let r = caps.row(name).unwrap();
        out.push_str(&format!("{name}: {} {} {}\n", r.available, r.mechanism_name, r.detail));
    }
    for w in
        caps.wraps.iter().filter(|w| ["EC", "RSA", "SM2"].contains(&w.wrapped_key_type) || w.wrapping_key_type == "RSA")
    {
        out.push_str(&format!(
            "wrap {} under {} with {}: {} {}\n",
            w.wrapped_key_type, w.wrapping_key_type, w.mechanism, w.supported, w.error
        ));
    }
    out
}

/// Runs `body` in a child process of this test binary whose environment
/// points hsm-sim at a fresh token (with `faults` appended to its
/// configuration): the child runs only the test `name`, which calls this
/// function again and, seeing `KMS_HSM_LAYER_CHILD`, runs `body`.
fn in_hsm_sim_child<F, Fut>(name: &str, faults: &str, body: F)
where
    F: FnOnce(Hsm, PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if std::env::var_os("KMS_HSM_LAYER_CHILD").is_some() {
        let var = |k: &str| std::env::var(k).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let hsm = open_module(
                Path::new(&var("HSM_SIM_MODULE")),
                &var("KMS_HSM_LAYER_LABEL"),
                &var("KMS_HSM_LAYER_PIN"),
                hsm_sim_vendor(),
            );
            body(hsm, PathBuf::from(var("KMS_HSM_LAYER_DIR"))).await
        });
        return;
    }
    let module = Module::HsmSim.path();
    assert!(module.is_file(), "{} is missing: build hsm-sim first (cargo build -p hsm-sim)", module.display());
    let dir = tempfile::tempdir().unwrap();
    let token = Token::new(Module::HsmSim, dir.path(), &format!("t-{}", kms_tests::unique(4)));
    if !faults.is_empty() {
        token.hsm_sim_faults(&faults.replace("{dir}", &dir.path().display().to_string()));
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .envs(token.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("HSM_SIM_MODULE", &module)
        .env("KMS_HSM_LAYER_CHILD", "1")
        .env("KMS_HSM_LAYER_LABEL", &token.label)
        .env("KMS_HSM_LAYER_PIN", &token.pin)
        .env("KMS_HSM_LAYER_DIR", dir.path())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "child run of {name} failed:\n{text}");
}

fn wrap_row<'c>(caps: &'c Capabilities, mechanism: &str, wrapped: &str) -> &'c kms::hsm::WrapRow {
    caps.wraps.iter().find(|w| w.mechanism == mechanism && w.wrapped_key_type == wrapped).unwrap()
}

#[test]
fn softhsm_pki_capabilities_are_probed_not_assumed() {
    let (_d, t) = token();
    let hsm = open(&t, &t.pin).unwrap();
    let caps = hsm.capabilities();
    let table = probe_rows(caps);
    // What SoftHSM 2.6.1 does, found by these probes.
    for name in CA_KEY_PROBES {
        assert!(caps.require(name).is_ok(), "{name}:\n{table}");
    }
    // CKM_ECDH1_DERIVE is listed with the derive flag, but only CKD_NULL works.
    assert!(caps.require("ecdh1_derive").is_ok());
    for name in [pki::CAP_ECDH_P256_SHA256_KDF, pki::CAP_ECDH_P384_SHA256_KDF] {
        let err = caps.require(name).expect_err("SoftHSM has no X9.63 KDF").to_string();
        assert!(
            err.contains(MODULE)
                && err.contains("CKD_SHA256_KDF")
                && err.contains("C_DeriveKey returned CKR_MECHANISM_PARAM_INVALID"),
            "{err}"
        );
    }
    // C_WrapKey: RSA-OAEP of an AES key and AES key wrap with padding of
    // private keys work; AES-CBC-PAD of anything is CKR_MECHANISM_INVALID.
    assert!(caps.require_wrap("RSA", "CKM_RSA_PKCS_OAEP", "AES").is_ok(), "{table}");
    for wrapped in ["EC", "RSA"] {
        assert!(wrap_row(caps, "CKM_AES_KEY_WRAP_PAD", wrapped).supported, "{table}");
        let row = wrap_row(caps, "CKM_AES_CBC_PAD", wrapped);
        assert!(!row.supported && row.error == "C_WrapKey returned CKR_MECHANISM_INVALID", "{table}");
    }
    // No probe object is left behind.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    assert_eq!(rt.block_on(session_objects(&hsm)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_ca_key_pairs_sign_verifiably() {
    let (_d, t) = token();
    let hsm = open(&t, &t.pin).unwrap();
    ca_keys_sign_verifiably(
        &hsm,
        &[KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048, KeyType::Rsa3072, KeyType::Rsa4096],
    )
    .await;
    // SM2 needs vendor mechanisms SoftHSM does not have: a precondition
    // error naming the module and the mechanism, and nothing created.
    let err = with_session(&hsm, |s, caps, m| pki::generate_signing_key_pair(s, caps, m, KeyType::Sm2, "sm2", b"sm2"))
        .await
        .expect_err("SoftHSM has no SM2");
    assert!(matches!(err, HsmError::MechanismUnavailable { .. }), "{err}");
    assert_eq!(kms::grpc::status::hsm_code(&err), tonic::Code::FailedPrecondition);
    assert!(err.to_string().contains(MODULE) && err.to_string().contains("sm2_key_pair_gen"), "{err}");
    let n = with_session(&hsm, |s, _, m| {
        s.find_objects(&[Attribute::Id(b"sm2".to_vec())]).map(|v| v.len()).map_err(|e| HsmError::from_cryptoki(m, e))
    })
    .await
    .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_envelope_is_a_clean_precondition_error() {
    let (_d, t) = token();
    let hsm = open(&t, &t.pin).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let escrow = escrow_key(&hsm, true).await;
    for (enc_type, reader_type) in [(KeyType::EcP256, KeyType::Rsa2048), (KeyType::Rsa2048, KeyType::EcP256)] {
        let (_pem, reader) = reader_key(dir.path(), reader_type);
        let err = envelope(&hsm, enc_type, &reader, escrow).await.expect_err("SoftHSM cannot AES-CBC-PAD-wrap");
        let text = err.to_string();
        assert!(matches!(err, HsmError::MechanismUnavailable { .. }), "{text}");
        assert_eq!(kms::grpc::status::hsm_code(&err), tonic::Code::FailedPrecondition);
        assert!(
            text.contains(MODULE) && text.contains("CKM_AES_CBC_PAD") && text.contains("CKR_MECHANISM_INVALID"),
            "{text}"
        );
        assert_eq!(session_objects(&hsm).await, 0, "nothing is created before the check");
    }
}

#[test]
fn hsm_sim_pki_capabilities_and_ca_key_pairs() {
    in_hsm_sim_child("hsm_sim_pki_capabilities_and_ca_key_pairs", "", |hsm, _dir| async move {
        let caps = hsm.capabilities();
        let table = probe_rows(caps);
        for name in CA_KEY_PROBES.iter().chain(&[
            pki::CAP_ECDH_P256_SHA256_KDF,
            pki::CAP_ECDH_P384_SHA256_KDF,
            "sm2_key_pair_gen",
            "sm2_sign",
        ]) {
            assert!(caps.require(name).is_ok(), "{name}:\n{table}");
        }
        for wrapped in ["EC", "RSA", "SM2"] {
            for mechanism in ["CKM_AES_CBC_PAD", "CKM_AES_KEY_WRAP_PAD"] {
                assert!(wrap_row(caps, mechanism, wrapped).supported, "{mechanism} {wrapped}:\n{table}");
            }
        }
        assert!(caps.require_wrap("RSA", "CKM_RSA_PKCS_OAEP", "AES").is_ok());
        assert_eq!(session_objects(&hsm).await, 0);
        ca_keys_sign_verifiably(&hsm, &[KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048, KeyType::Rsa4096]).await;
        // SM2 with the vendor mechanisms configured: generated, with an SPKI
        // openssl reads; the CA has no SM2 signature algorithm yet, so the
        // signer refuses it by name.
        let dir = tempfile::tempdir().unwrap();
        let parts = with_session(&hsm, |s, caps, m| {
            pki::generate_signing_key_pair(s, caps, m, KeyType::Sm2, "sm2 CA", b"sm2-ca")
        })
        .await
        .unwrap();
        assert_eq!(parts.key_type, KeyType::Sm2);
        let pem = spki_pem(dir.path(), "sm2", &parts.spki_der);
        let text = String::from_utf8(openssl(&["pkey", "-pubin", "-in", &pem, "-noout", "-text"], b"")).unwrap();
        assert!(text.contains("SM2"), "{text}");
        let token = hsm.info().token_label.clone();
        let err = with_session(&hsm, move |s, _, m| HsmSigner::find_by_id(s, m, b"sm2-ca", &token).map(|_| ()))
            .await
            .expect_err("no SM2 CA signature yet");
        assert!(err.to_string().contains("sm2"), "{err}");
        assert_eq!(with_session(&hsm, |s, _, m| pki::destroy_key_pair(s, m, b"sm2-ca")).await.unwrap(), 2);
    });
}

#[test]
fn hsm_sim_envelopes_open_with_openssl() {
    in_hsm_sim_child("hsm_sim_envelopes_open_with_openssl", "", |hsm, _dir| async move {
        let dir = tempfile::tempdir().unwrap();
        let escrow = escrow_key(&hsm, true).await;
        let cases = [
            (KeyType::EcP256, KeyType::Rsa2048),
            (KeyType::Rsa2048, KeyType::EcP256),
            (KeyType::EcP384, KeyType::EcP384),
            (KeyType::EcP256, KeyType::EcP256),
            (KeyType::Rsa2048, KeyType::Rsa3072),
            (KeyType::Sm2, KeyType::Rsa2048),
        ];
        for (enc_type, reader_type) in cases {
            let (reader_pem, reader) = reader_key(dir.path(), reader_type);
            let e = envelope(&hsm, enc_type, &reader, escrow).await.unwrap();
            assert_eq!(e.enc_public.key_type, enc_type);
            match (&e.recipient, reader_type.is_rsa()) {
                (RecipientParts::RsaOaepSha1 { encrypted_key }, true) => {
                    assert_eq!(encrypted_key.len() * 8, reader_type.bits() as usize)
                }
                (RecipientParts::EcdhSha256Kdf { originator_point, encrypted_key }, false) => {
                    assert_eq!(originator_point.len(), reader.raw.len());
                    assert_eq!(encrypted_key.len(), 40, "RFC 3394 wrap of a 32-byte CEK");
                }
                (other, _) => panic!("{reader_type} reader got {other:?}"),
            }
            assert_eq!(e.encrypted_content.len() % 16, 0);
            open_with_openssl(dir.path(), &reader_pem, &e);
            // (An SM2 key would need the vendor SM2 signature to be checked.)
            if enc_type != KeyType::Sm2 {
                escrow_copy_is_the_same_key(&hsm, dir.path(), escrow, &e).await;
            }
            assert_eq!(session_objects(&hsm).await, 0, "{enc_type} for a {reader_type} reader left session objects");
        }
        // Two envelopes never share a key or an IV.
        let (_, reader) = reader_key(dir.path(), KeyType::EcP256);
        let a = envelope(&hsm, KeyType::EcP256, &reader, escrow).await.unwrap();
        let b = envelope(&hsm, KeyType::EcP256, &reader, escrow).await.unwrap();
        assert_ne!(a.enc_public, b.enc_public);
        assert_ne!(a.content_iv, b.content_iv);
    });
}

#[test]
fn hsm_sim_envelope_failures_leave_no_session_objects() {
    for function in ["C_DeriveKey", "C_WrapKey"] {
        let faults = format!(
            "fail_rate = {{ {function} = 1.0 }}\nfail_rv = \"CKR_FUNCTION_FAILED\"\nfail_rate_file = \"{{dir}}/flaky\"\n"
        );
        // The child tells which function fails from its HSM_SIM_CONF.
        in_hsm_sim_child("hsm_sim_envelope_failures_leave_no_session_objects", &faults, |hsm, dir| async move {
            let files = tempfile::tempdir().unwrap();
            let escrow = escrow_key(&hsm, true).await;
            let (_, ec_reader) = reader_key(files.path(), KeyType::EcP256);
            let (_, rsa_reader) = reader_key(files.path(), KeyType::Rsa2048);
            assert_eq!(session_objects(&hsm).await, 0);
            // The module starts failing one function in the middle of the
            // envelope: after the key pair and the CEK (C_WrapKey), or
            // after the ephemeral pair too (C_DeriveKey).
            let conf = std::fs::read_to_string(std::env::var("HSM_SIM_CONF").unwrap()).unwrap();
            let failing = if conf.contains("C_DeriveKey") { "DeriveKey" } else { "WrapKey" };
            std::fs::write(dir.join("flaky"), b"").unwrap();
            for reader in [&ec_reader, &rsa_reader] {
                match envelope(&hsm, KeyType::EcP256, reader, escrow).await {
                    Err(HsmError::Pkcs11 { failure, .. }) => {
                        assert_eq!(failure.rv, cryptoki::error::RvError::FunctionFailed);
                        assert_eq!(format!("{:?}", failure.function), failing);
                    }
                    // C_DeriveKey is not on the RSA reader's path.
                    Ok(_) if reader.key_type.is_rsa() && failing == "DeriveKey" => {}
                    other => panic!("{failing}: {other:?}"),
                }
                assert_eq!(session_objects(&hsm).await, 0, "after a failure of {failing}");
            }
            std::fs::remove_file(dir.join("flaky")).unwrap();
            envelope(&hsm, KeyType::EcP256, &ec_reader, escrow).await.unwrap();
            assert_eq!(session_objects(&hsm).await, 0, "after success");
            // A failure at the very last step (an escrow key that may not
            // wrap) also leaves nothing behind.
            let no_wrap = escrow_key(&hsm, false).await;
            let err = envelope(&hsm, KeyType::Rsa2048, &ec_reader, no_wrap).await.expect_err("escrow key cannot wrap");
            assert!(err.to_string().contains("CKR_KEY_FUNCTION_NOT_PERMITTED"), "{err}");
            assert_eq!(session_objects(&hsm).await, 0, "after a failure at the escrow step");
        });
    }
}
