//! Shared test fixtures: software signers (ring), an OpenSSL runner, a
//! two-level PKI (root and issuing CA), CSR builders and the shipped
//! profiles.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kms_ca::{
    CaError, CertProfile, CertProfiles, DistinguishedNameSpec, DnAttribute, IssuedCertificate, Issuer, KeyAlgorithm,
    Signer,
};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use time::{Duration, OffsetDateTime};

/// A private key in memory that signs like an HSM would (raw r||s for ECDSA).
pub struct SoftSigner {
    key: SoftKey,
    algorithm: KeyAlgorithm,
    public: Vec<u8>,
    /// PKCS#8 DER, for handing the key to OpenSSL.
    pub pkcs8: Vec<u8>,
}

enum SoftKey {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl SoftSigner {
    pub fn ec(algorithm: KeyAlgorithm) -> SoftSigner {
        let rng = SystemRandom::new();
        let alg = match algorithm {
            KeyAlgorithm::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            KeyAlgorithm::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            other => panic!("not EC: {other:?}"),
        };
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap().as_ref().to_vec();
        let key = EcdsaKeyPair::from_pkcs8(alg, &pkcs8, &rng).unwrap();
        let public = key.public_key().as_ref().to_vec();
        SoftSigner { key: SoftKey::Ec(key), algorithm, public, pkcs8 }
    }

    /// An EC P-256 signer from a PKCS#8 DER key (e.g. made by OpenSSL).
    pub fn ec_from_pkcs8(pkcs8: Vec<u8>) -> SoftSigner {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
        let public = key.public_key().as_ref().to_vec();
        SoftSigner { key: SoftKey::Ec(key), algorithm: KeyAlgorithm::EcdsaP256Sha256, public, pkcs8 }
    }

    pub fn p256() -> SoftSigner {
        SoftSigner::ec(KeyAlgorithm::EcdsaP256Sha256)
    }

    pub fn p384() -> SoftSigner {
        SoftSigner::ec(KeyAlgorithm::EcdsaP384Sha384)
    }

    /// An RSA signer from a PKCS#8 DER key (e.g. from [`openssl_rsa_pkcs8`]).
    pub fn rsa(pkcs8: Vec<u8>) -> SoftSigner {
        let key = RsaKeyPair::from_pkcs8(&pkcs8).unwrap();
        let public = key.public().as_ref().to_vec();
        SoftSigner { key: SoftKey::Rsa(key), algorithm: KeyAlgorithm::RsaPkcs1Sha256, public, pkcs8 }
    }

    /// Writes the private key as PEM for OpenSSL.
    pub fn write_key(&self, path: &Path) {
        let der = path.with_extension("p8.der");
        std::fs::write(&der, &self.pkcs8).unwrap();
        openssl(&["pkey", "-inform", "DER", "-in", s(&der), "-out", s(path)]);
    }
}

impl Signer for SoftSigner {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        let rng = SystemRandom::new();
        match &self.key {
            SoftKey::Ec(k) => {
                k.sign(&rng, message).map(|s| s.as_ref().to_vec()).map_err(|e| CaError::Signing(e.to_string()))
            }
            SoftKey::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|e| CaError::Signing(e.to_string()))?;
                Ok(sig)
            }
        }
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `openssl args...`; panics with its output unless it succeeds.
pub fn openssl(args: &[&str]) -> String {
    let (ok, out) = openssl_status(args);
    assert!(ok, "openssl {} failed:\n{out}", args.join(" "));
    out
}

/// Runs `openssl args...` and returns (success, stdout + stderr).
pub fn openssl_status(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().expect("openssl is installed");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// An RSA private key from OpenSSL, as PKCS#8 DER.
pub fn openssl_rsa_pkcs8(dir: &Path, bits: u32) -> Vec<u8> {
    let path = dir.join(format!("rsa{bits}-{}.der", rand_u32()));
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        &format!("rsa_keygen_bits:{bits}"),
        "-outform",
        "DER",
        "-out",
        s(&path),
    ]);
    // why: OpenSSL 3.0's genpkey writes RSA keys as PKCS#1 in DER; ring wants PKCS#8.
    let p8 = path.with_extension("p8");
    openssl(&["pkcs8", "-topk8", "-nocrypt", "-inform", "DER", "-in", s(&path), "-outform", "DER", "-out", s(&p8)]);
    std::fs::read(p8).unwrap()
}

pub fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom_bytes(&mut b);
    u32::from_be_bytes(b)
}

pub fn getrandom_bytes(buf: &mut [u8]) {
    ring::rand::SecureRandom::fill(&SystemRandom::new(), buf).unwrap();
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// The shipped profiles in `policies/certificates`.
pub fn shipped_profiles() -> CertProfiles {
    CertProfiles::load_dir(&shipped_dir()).unwrap()
}

pub fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/certificates")
}

pub fn profile(name: &str) -> CertProfile {
    shipped_profiles().get(name).cloned().unwrap_or_else(|| panic!("profile {name} missing"))
}

/// Root (P-256, self-signed) and issuing CA (P-384, key "in the HSM"),
/// the issuing CA made the way the service makes it: `issuer_csr`, then
/// signed by the root.
pub struct Pki {
    pub root: SoftSigner,
    pub root_cert: IssuedCertificate,
    pub ca: SoftSigner,
    pub ca_cert: IssuedCertificate,
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        Pki::with_ca(SoftSigner::p384())
    }

    pub fn with_ca(ca: SoftSigner) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let root = SoftSigner::p256();
        let root_dn = DistinguishedNameSpec::new()
            .with(DnAttribute::Country, "CN")
            .with(DnAttribute::Organization, "Test Transit")
            .with(DnAttribute::CommonName, "Test Root CA");
        let root_cert = kms_ca::make_root(&root, &root_dn, Duration::days(3650)).unwrap();
        let ca_dn = DistinguishedNameSpec::new()
            .with(DnAttribute::Country, "CN")
            .with(DnAttribute::Organization, "Test Transit")
            .with(DnAttribute::CommonName, "Test Issuing CA");
        let csr = kms_ca::issuer_csr(&ca, &ca_dn).unwrap();
        let root_issuer = Issuer { signer: &root, certificate_der: &root_cert.der };
        let ca_cert = kms_ca::sign_subordinate(
            &root_issuer,
            &csr,
            &kms_ca::SubordinateSpec { validity: Duration::days(1825), path_len: Some(1), ..Default::default() },
        )
        .unwrap();
        std::fs::write(dir.path().join("root.pem"), &root_cert.pem).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca_cert.pem).unwrap();
        std::fs::write(dir.path().join("chain.pem"), format!("{}{}", ca_cert.pem, root_cert.pem)).unwrap();
        Pki { root, root_cert, ca, ca_cert, dir }
    }

    pub fn issuer(&self) -> Issuer<'_> {
        Issuer { signer: &self.ca, certificate_der: &self.ca_cert.der }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ctx(&self) -> kms_ca::IssueContext {
        kms_ca::IssueContext::new(OffsetDateTime::now_utc(), self.ca_cert.not_after)
    }

    /// `openssl verify -x509_strict` of `cert` against root + issuing CA.
    pub fn verify(&self, cert: &IssuedCertificate, extra: &[&str]) -> (bool, String) {
        let path = self.path(&format!("leaf-{}.pem", rand_u32()));
        std::fs::write(&path, &cert.pem).unwrap();
        let root = self.path("root.pem");
        let ca = self.path("ca.pem");
        let mut args = vec!["verify", "-x509_strict", "-CAfile", s(&root), "-untrusted", s(&ca)];
        args.extend_from_slice(extra);
        args.push(s(&path));
        openssl_status(&args)
    }

    /// `openssl x509 -text` of a certificate.
    pub fn text(&self, cert: &IssuedCertificate) -> String {
        let path = self.path(&format!("text-{}.pem", rand_u32()));
        std::fs::write(&path, &cert.pem).unwrap();
        openssl(&["x509", "-noout", "-text", "-in", s(&path)])
    }
}

/// A P-256 (or other rcgen-generated) CSR with the given subject; `edit`
/// adds extensions.
pub fn ec_csr(
    key: &rcgen::KeyPair,
    subject: &[(rcgen::DnType, &str)],
    edit: impl FnOnce(&mut rcgen::CertificateParams),
) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    for (t, v) in subject {
        dn.push(t.clone(), *v);
    }
    params.distinguished_name = dn;
    edit(&mut params);
    params.serialize_request(key).unwrap().der().to_vec()
}

pub fn p256_key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// A CSR made by `openssl req` with `key_pem`, `subject` (OpenSSL form,
/// `/CN=x/O=y`) and extra arguments (e.g. `-addext`), as DER.
pub fn openssl_csr(dir: &Path, key_pem: &Path, subject: &str, extra: &[&str]) -> Vec<u8> {
    let out = dir.join(format!("req-{}.der", rand_u32()));
    let mut args = vec!["req", "-new", "-key", s(key_pem), "-subj", subject, "-outform", "DER", "-out", s(&out)];
    args.extend_from_slice(extra);
    openssl(&args);
    std::fs::read(out).unwrap()
}
