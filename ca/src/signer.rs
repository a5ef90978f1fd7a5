//! The signer trait: how the CA asks for a signature without knowing where
//! the key lives.

use crate::{CaError, ecdsa_raw_to_der};

/// Key algorithms the CA can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384Sha384,
    /// RSA PKCS#1 v1.5 with SHA-256 (`sha256WithRSAEncryption`).
    RsaPkcs1Sha256,
}

impl KeyAlgorithm {
    /// The DER `AlgorithmIdentifier` of signatures made with this algorithm
    /// (RFC 5758 §3.2 for ECDSA: no parameters; RFC 4055 §5 for RSA: NULL).
    pub fn signature_algorithm_der(self) -> &'static [u8] {
        match self {
            // ecdsa-with-SHA256 1.2.840.10045.4.3.2
            KeyAlgorithm::EcdsaP256Sha256 => &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
            // ecdsa-with-SHA384 1.2.840.10045.4.3.3
            KeyAlgorithm::EcdsaP384Sha384 => &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
            // sha256WithRSAEncryption 1.2.840.113549.1.1.11, NULL
            KeyAlgorithm::RsaPkcs1Sha256 => {
                &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00]
            }
        }
    }

    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384Sha384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::RsaPkcs1Sha256 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// A private key that can sign, wherever it lives (for the service: in the
/// HSM). Implementations are synchronous; callers run them off the async
/// runtime.
pub trait Signer {
    /// The signature algorithm.
    fn algorithm(&self) -> KeyAlgorithm;
    /// The public key as it appears in SubjectPublicKeyInfo's BIT STRING
    /// (for EC keys, the uncompressed point `04 || X || Y`; for RSA, the
    /// DER `RSAPublicKey` of PKCS#1).
    fn public_key(&self) -> &[u8];
    /// Signs `message` and returns the raw signature: for ECDSA, `r || s`
    /// as PKCS#11 produces it (the CA does the DER encoding); for RSA, the
    /// PKCS#1 v1.5 signature block.
    fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, CaError>;
}

/// Signs `message` and returns the signature as X.509 and CMS carry it
/// (DER `Ecdsa-Sig-Value` for ECDSA).
pub(crate) fn sign_x509(signer: &(impl Signer + ?Sized), message: &[u8]) -> Result<Vec<u8>, CaError> {
    let raw = signer.sign_raw(message)?;
    match signer.algorithm() {
        KeyAlgorithm::EcdsaP256Sha256 | KeyAlgorithm::EcdsaP384Sha384 => ecdsa_raw_to_der(&raw),
        KeyAlgorithm::RsaPkcs1Sha256 => Ok(raw),
    }
}

/// Adapts a [`Signer`] to rcgen's signing traits.
pub(crate) struct RcgenSigner<'a, S: Signer + ?Sized>(pub(crate) &'a S);

impl<S: Signer + ?Sized> rcgen::PublicKeyData for RcgenSigner<'_, S> {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm().rcgen()
    }
}

impl<S: Signer + ?Sized> rcgen::SigningKey for RcgenSigner<'_, S> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let raw = self.0.sign_raw(msg).map_err(|_| rcgen::Error::RemoteKeyError)?;
        match self.0.algorithm() {
            KeyAlgorithm::EcdsaP256Sha256 | KeyAlgorithm::EcdsaP384Sha384 => {
                ecdsa_raw_to_der(&raw).map_err(|_| rcgen::Error::RemoteKeyError)
            }
            KeyAlgorithm::RsaPkcs1Sha256 => Ok(raw),
        }
    }
}
