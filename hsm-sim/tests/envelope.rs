//! The operations a CMS EnvelopedData of a freshly generated key pair needs
//! (the key service's dual certificates): ECDH with the ANSI X9.63 KDFs,
//! AES key wrap under a derived KEK, RSA-OAEP wrap of an AES key, and
//! private keys wrapped as PKCS#8 with AES-CBC-PAD and AES key wrap with
//! padding. Results are opened with the `openssl` command line tool, an
//! implementation independent of the module's RustCrypto code; the tests
//! skip when `openssl` is missing unless `HSM_SIM_REQUIRE_TOOLS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{h, hx, token};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

const P256: &str = "06082a8648ce3d030107";
const P384: &str = "06052b81040022";

// RFC 5903 §8.1 (256-bit random ECP group): the initiator's private key i,
// the responder's public key g^r and the shared x coordinate g^ir.
const RFC5903_I: &str = "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433";
const RFC5903_GRX: &str = "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63";
const RFC5903_GRY: &str = "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB";
const RFC5903_GIRX: &str = "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE";

/// DER ECC-CMS-SharedInfo (RFC 5753 §7.2) for id-aes256-wrap, no ukm,
/// suppPubInfo = 256 (bits).
const SHARED_INFO: &str = "3015300b060960864801650304012da206040400000100";

fn openssl() -> bool {
    let ok = Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    if !ok && std::env::var("HSM_SIM_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("openssl is missing and HSM_SIM_REQUIRE_TOOLS=1");
    }
    if !ok {
        eprintln!("openssl not found: skipping");
    }
    ok
}

/// Runs `openssl args...` with `input` on stdin; returns stdout.
fn run_openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

fn attr(s: &Session, o: ObjectHandle, t: AttributeType) -> Vec<u8> {
    match s.get_attributes(o, &[t]).unwrap().pop() {
        Some(Attribute::EcPoint(v) | Attribute::Value(v) | Attribute::Modulus(v)) => v,
        other => panic!("{t:?}: {other:?}"),
    }
}

/// The uncompressed point inside a `CKA_EC_POINT` (DER OCTET STRING).
fn point(s: &Session, public: ObjectHandle) -> Vec<u8> {
    let der = attr(s, public, AttributeType::EcPoint);
    assert_eq!(der[0], 0x04);
    der[2..].to_vec()
}

fn rv<T: std::fmt::Debug>(r: cryptoki::error::Result<T>) -> RvError {
    match r {
        Err(Error::Pkcs11(e, _)) => e,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// A readable AES key of known value (session object).
fn aes(s: &Session, value: &[u8], wrap: bool) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(value.to_vec()),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Wrap(wrap),
        Attribute::Encrypt(true),
    ])
    .unwrap()
}

/// An extractable key pair (session objects) of one of the CA key types.
fn pair(s: &Session, kind: &str) -> (ObjectHandle, ObjectHandle) {
    let private = [Attribute::Token(false), Attribute::Extractable(true), Attribute::Sign(true)];
    match kind {
        "rsa" => s
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[Attribute::Token(false), Attribute::ModulusBits(2048.into())],
                &private,
            )
            .unwrap(),
        curve => s
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[Attribute::Token(false), Attribute::EcParams(h(curve))],
                &private,
            )
            .unwrap(),
    }
}

/// Checks that `pkcs8` (DER PrivateKeyInfo) holds the private key of
/// `public`, by asking openssl for the public key it implies.
fn assert_pkcs8_matches(s: &Session, dir: &Path, pkcs8: &[u8], kind: &str, public: ObjectHandle) {
    let f = file(dir, "key.p8", pkcs8);
    let text = String::from_utf8(run_openssl(&["pkey", "-inform", "DER", "-in", &f, "-noout", "-text"], b"")).unwrap();
    let compact: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_lowercase();
    let expected = match kind {
        "rsa" => hx(&attr(s, public, AttributeType::Modulus)),
        _ => hx(&point(s, public)),
    }
    .to_lowercase();
    assert!(compact.contains(&expected), "openssl's view of the PKCS#8 key does not hold the public key:\n{text}");
}

#[test]
fn ecdh_x963_kdf_rfc5903() {
    let (_p, _slot, s) = token();
    // The RFC 5903 initiator key, imported so Z is known.
    let i = s
        .create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(h(P256)),
            Attribute::Value(h(RFC5903_I)),
            Attribute::Token(false),
            Attribute::Derive(true),
        ])
        .unwrap();
    let mut peer = vec![0x04];
    peer.extend(h(RFC5903_GRX));
    peer.extend(h(RFC5903_GRY));
    let info = h(SHARED_INFO);
    let readable = |kt: KeyType, len: u64| {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(kt),
            Attribute::ValueLen(len.into()),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ]
    };
    let derive = |kdf: EcKdf, public: &[u8], t: &[Attribute]| {
        s.derive_key(&Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(kdf, public)), i, t)
    };
    // CKD_NULL gives Z itself: the RFC's g^ir.
    let z = derive(EcKdf::null(), &peer, &readable(KeyType::GENERIC_SECRET, 32)).unwrap();
    assert_eq!(hx(&attr(&s, z, AttributeType::Value)), RFC5903_GIRX);
    // ANSI X9.63 KDFs over that Z with the shared info. Expected values
    // computed with OpenSSL 3.0: `openssl kdf -keylen N -kdfopt digest:D
    // -kdfopt hexsecret:<g^ir> -kdfopt hexinfo:<SHARED_INFO> X963KDF`; the
    // KDF itself is pinned to the NIST CAVS vectors in src/asym.rs.
    let cases: [(EcKdf, u64, &str); 4] = [
        (EcKdf::sha1(&info), 16, "11165FC7A6B264FF59315809CFCB1254"),
        (EcKdf::sha256(&info), 32, "B06D36A62FCE267A1D92756B8F4977A18E3B5B8D5B38B14DCD5102907D40A890"),
        (
            EcKdf::sha384(&info),
            48,
            "F24666F02A12497036FBA6DE1748486DDAAB7A3BE21063FC4C6254C76F037835E949C3AEAD8A2D7929D7A6991276232A",
        ),
        (
            EcKdf::sha512(&info),
            64,
            "75CC52EDE7753CC3E2B8FF227BE6807647BABA9D936A6D044FC2CEC4F95BC80D\
             B7F25E9EB8FA8F7D984E4710C15CA5B48442428C965B30F8DE30560D8BFDA659",
        ),
    ];
    for (kdf, len, want) in cases {
        let k = derive(kdf, &peer, &readable(KeyType::GENERIC_SECRET, len)).unwrap();
        assert_eq!(hx(&attr(&s, k, AttributeType::Value)), want, "{kdf:?}");
    }
    // The same SHA-256 derivation into an AES-256 key, with the peer point
    // DER-encoded as in CKA_EC_POINT, and a KDF output longer than Z.
    let mut der_peer = vec![0x04, 65];
    der_peer.extend(&peer);
    let k = derive(EcKdf::sha256(&info), &der_peer, &readable(KeyType::AES, 32)).unwrap();
    assert_eq!(hx(&attr(&s, k, AttributeType::Value)), cases[1].2);
    let long = derive(EcKdf::sha256(&info), &peer, &readable(KeyType::GENERIC_SECRET, 40)).unwrap();
    assert!(hx(&attr(&s, long, AttributeType::Value)).starts_with(cases[1].2));
    // Refusals: a KDF needs a length; CKD_NULL takes no shared data; KDFs
    // not offered are named as a bad parameter.
    let no_len = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
    ];
    assert_eq!(rv(derive(EcKdf::sha256(&info), &peer, &no_len)), RvError::TemplateIncomplete);
    let null_with_data = cryptoki_sys::CK_ECDH1_DERIVE_PARAMS {
        kdf: cryptoki_sys::CKD_NULL,
        ulSharedDataLen: info.len() as u64,
        pSharedData: info.as_ptr() as *mut u8,
        ulPublicDataLen: peer.len() as u64,
        pPublicData: peer.as_ptr() as *mut u8,
    };
    let raw = |p: &cryptoki_sys::CK_ECDH1_DERIVE_PARAMS| {
        s.derive_key(
            &Mechanism::VendorDefined(cryptoki::mechanism::vendor_defined::VendorDefinedMechanism::new(
                MechanismType::ECDH1_DERIVE,
                Some(p),
            )),
            i,
            &readable(KeyType::GENERIC_SECRET, 32),
        )
    };
    assert_eq!(rv(raw(&null_with_data)), RvError::MechanismParamInvalid);
    let sha224 = cryptoki_sys::CK_ECDH1_DERIVE_PARAMS { kdf: cryptoki_sys::CKD_SHA224_KDF, ..null_with_data };
    assert_eq!(rv(raw(&sha224)), RvError::MechanismParamInvalid);
    assert_eq!(
        rv(derive(EcKdf::sha256(&info), &peer, &readable(KeyType::GENERIC_SECRET, 4097))),
        RvError::KeySizeRange
    );
}

#[test]
fn aes_key_wrap_under_an_ecdh_kek_opens_with_openssl() {
    if !openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_p, _slot, s) = token();
    // The reader's key pair lives in software (openssl).
    let reader = run_openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], b"");
    let reader_pem = file(dir.path(), "reader.pem", &reader);
    let reader_pub_der = run_openssl(&["pkey", "-in", &reader_pem, "-pubout", "-outform", "DER"], b"");
    let reader_point = reader_pub_der[reader_pub_der.len() - 65..].to_vec();
    // The originator: an ephemeral pair in the module.
    let (eph_pub, eph_priv) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(false), Attribute::EcParams(h(P256))],
            &[Attribute::Token(false), Attribute::Derive(true), Attribute::Sensitive(true)],
        )
        .unwrap();
    let info = h(SHARED_INFO);
    let kek = s
        .derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::sha256(&info), &reader_point)),
            eph_priv,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Wrap(true),
            ],
        )
        .unwrap();
    let cek_value = h("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
    let cek = aes(&s, &cek_value, false);
    let wrapped = s.wrap_key(&Mechanism::AesKeyWrap, kek, cek).unwrap();
    assert_eq!(wrapped.len(), 40);
    // openssl: Z from the reader key and the originator point, the X9.63
    // KDF, then RFC 3394 unwrap.
    let mut eph_spki = h("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    eph_spki.extend(point(&s, eph_pub));
    let eph_der = file(dir.path(), "eph.der", &eph_spki);
    let eph_pem =
        file(dir.path(), "eph.pem", &run_openssl(&["pkey", "-pubin", "-inform", "DER", "-in", &eph_der], b""));
    let z = run_openssl(&["pkeyutl", "-derive", "-inkey", &reader_pem, "-peerkey", &eph_pem], b"");
    let kek_hex = String::from_utf8(run_openssl(
        &[
            "kdf",
            "-keylen",
            "32",
            "-kdfopt",
            "digest:SHA256",
            "-kdfopt",
            &format!("hexsecret:{}", hx(&z)),
            "-kdfopt",
            &format!("hexinfo:{SHARED_INFO}"),
            "X963KDF",
        ],
        b"",
    ))
    .unwrap()
    .replace([':', '\n'], "");
    let plain = run_openssl(&["enc", "-d", "-id-aes256-wrap", "-K", &kek_hex, "-iv", "A6A6A6A6A6A6A6A6"], &wrapped);
    assert_eq!(plain, cek_value);
    // The KEK itself is not readable.
    assert!(s.get_attributes(kek, &[AttributeType::Value]).map(|a| a.is_empty()).unwrap_or(true));
}

#[test]
fn rsa_oaep_sha1_wrap_of_an_aes_key_opens_with_openssl() {
    if !openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_p, _slot, s) = token();
    let reader = run_openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], b"");
    let reader_pem = file(dir.path(), "reader.pem", &reader);
    let text = String::from_utf8(run_openssl(&["rsa", "-in", &reader_pem, "-noout", "-modulus"], b"")).unwrap();
    let modulus = h(text.trim().trim_start_matches("Modulus="));
    // The reader's public key imported as a session object, as the service
    // does with the reader's signing certificate.
    let public = s
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(modulus),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Token(false),
            Attribute::Wrap(true),
        ])
        .unwrap();
    let cek_value = h("F0E0D0C0B0A090807060504030201000FFEEDDCCBBAA99887766554433221100");
    let cek = aes(&s, &cek_value, false);
    let oaep = PkcsOaepParams::new(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, PkcsOaepSource::empty());
    let wrapped = s.wrap_key(&Mechanism::RsaPkcsOaep(oaep), public, cek).unwrap();
    assert_eq!(wrapped.len(), 256);
    let plain =
        run_openssl(&["pkeyutl", "-decrypt", "-inkey", &reader_pem, "-pkeyopt", "rsa_padding_mode:oaep"], &wrapped);
    assert_eq!(plain, cek_value);
}

#[test]
fn private_keys_wrap_as_pkcs8_with_aes_cbc_pad_and_key_wrap_pad() {
    if !openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_p, _slot, s) = token();
    let kek_value = h("8899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF0011223344556677");
    let kek = aes(&s, &kek_value, true);
    let iv: [u8; 16] = h("0F0E0D0C0B0A09080706050403020100").try_into().unwrap();
    for kind in [P256, P384, "rsa"] {
        let (public, private) = pair(&s, kind);
        // AES-CBC-PAD (the CMS encryptedContent of the service's envelope).
        let cbc = s.wrap_key(&Mechanism::AesCbcPad(iv), kek, private).unwrap();
        assert_eq!(cbc.len() % 16, 0);
        let pkcs8 = run_openssl(&["enc", "-d", "-aes-256-cbc", "-K", &hx(&kek_value), "-iv", &hx(&iv)], &cbc);
        assert_pkcs8_matches(&s, dir.path(), &pkcs8, kind, public);
        // AES key wrap with padding (RFC 5649; the service's escrow copy).
        let kwp = s.wrap_key(&Mechanism::AesKeyWrapPad, kek, private).unwrap();
        let pkcs8 = run_openssl(&["enc", "-d", "-id-aes256-wrap-pad", "-K", &hx(&kek_value), "-iv", "A65959A6"], &kwp);
        assert_pkcs8_matches(&s, dir.path(), &pkcs8, kind, public);
        // Both come back in as a working private key.
        for (m, blob) in [(Mechanism::AesCbcPad(iv), &cbc), (Mechanism::AesKeyWrapPad, &kwp)] {
            let back = s
                .unwrap_key(
                    &m,
                    s.create_object(&[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::Value(kek_value.clone()),
                        Attribute::Token(false),
                        Attribute::Unwrap(true),
                    ])
                    .unwrap(),
                    blob,
                    &[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Token(false), Attribute::Sign(true)],
                )
                .unwrap();
            let (sign, verify) = match kind {
                "rsa" => (Mechanism::Sha256RsaPkcs, Mechanism::Sha256RsaPkcs),
                _ => (Mechanism::EcdsaSha256, Mechanism::EcdsaSha256),
            };
            let sig = s.sign(&sign, back, b"escrow").unwrap();
            s.verify(&verify, public, b"escrow", &sig).unwrap();
        }
    }
}
