//! Signing with a private key held in the token, for the CA.
//!
//! ECDSA: the message is hashed on the host (it is public data; SHA-256
//! for P-256, SHA-384 for P-384) and `CKM_ECDSA` signs the digest, giving
//! raw `r || s`. RSA: `CKM_SHA256_RSA_PKCS` hashes inside the module and
//! gives the PKCS#1 v1.5 signature block.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use kms_ca::CaError;
pub use kms_ca::{KeyAlgorithm, KeyType, Signer};
use sha2::{Digest, Sha256, Sha384};

use super::HsmError;
use super::pki::{PublicKeyParts, read_public_key};

/// DER of the `prime256v1` OID, as `CKA_EC_PARAMS` wants it.
pub const P256_PARAMS: &[u8] = super::der::OID_P256;
/// DER of the `secp384r1` OID.
pub const P384_PARAMS: &[u8] = super::der::OID_P384;

pub use super::der::ec_point_from_attribute;

/// A private key in the token, used through one session.
pub struct HsmSigner<'s> {
    session: &'s Session,
    key: ObjectHandle,
    public: PublicKeyParts,
    algorithm: KeyAlgorithm,
}

impl<'s> HsmSigner<'s> {
    /// Finds the key pair labelled `label` (private and public objects)
    /// and prepares to sign with it (the development CA's lookup).
    pub fn find(session: &'s Session, module: &str, label: &str, token: &str) -> Result<HsmSigner<'s>, HsmError> {
        HsmSigner::locate(session, module, Attribute::Label(label.as_bytes().to_vec()), label, token)
    }

    /// Finds the key pair with `CKA_ID` `id` (as
    /// [`super::pki::generate_signing_key_pair`] made it) and prepares to
    /// sign with it.
    pub fn find_by_id(session: &'s Session, module: &str, id: &[u8], token: &str) -> Result<HsmSigner<'s>, HsmError> {
        HsmSigner::locate(session, module, Attribute::Id(id.to_vec()), &format!("CKA_ID {}", hex::encode(id)), token)
    }

    fn locate(
        session: &'s Session,
        module: &str,
        by: Attribute,
        name: &str,
        token: &str,
    ) -> Result<HsmSigner<'s>, HsmError> {
        let find = |class| {
            session.find_objects(&[Attribute::Class(class), by.clone()]).map_err(|e| HsmError::from_cryptoki(module, e))
        };
        let private = find(ObjectClass::PRIVATE_KEY)?;
        let public = find(ObjectClass::PUBLIC_KEY)?;
        let (key, public) = match (private.as_slice(), public.as_slice()) {
            ([key], [public]) => (*key, *public),
            ([], _) | (_, []) => {
                return Err(HsmError::ObjectNotFound { label: name.to_owned(), token: token.to_owned() });
            }
            (p, q) => {
                // why: signing with whichever of two keys the module lists
                // first could put the wrong key behind a CA certificate.
                return Err(HsmError::Wrapper {
                    module: module.to_owned(),
                    reason: format!("{name} names {} private and {} public keys, not one pair", p.len(), q.len()),
                });
            }
        };
        let public = read_public_key(session, module, public)?;
        let algorithm = match public.key_type {
            KeyType::EcP256 => KeyAlgorithm::EcdsaP256Sha256,
            KeyType::EcP384 => KeyAlgorithm::EcdsaP384Sha384,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => KeyAlgorithm::RsaPkcs1Sha256,
            other => {
                return Err(HsmError::Wrapper {
                    module: module.to_owned(),
                    reason: format!("{name} is a {other} key; the CA has no signature algorithm for it"),
                });
            }
        };
        Ok(HsmSigner { session, key, public, algorithm })
    }

    /// The signing key's public key, with its type and SubjectPublicKeyInfo.
    pub fn public_key_parts(&self) -> &PublicKeyParts {
        &self.public
    }

    /// The object handle of the private key.
    pub fn private_key(&self) -> ObjectHandle {
        self.key
    }
}

impl Signer for HsmSigner<'_> {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &[u8] {
        &self.public.raw
    }

    fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        let signed = match self.algorithm {
            KeyAlgorithm::EcdsaP256Sha256 => self.session.sign(&Mechanism::Ecdsa, self.key, &Sha256::digest(message)),
            KeyAlgorithm::EcdsaP384Sha384 => self.session.sign(&Mechanism::Ecdsa, self.key, &Sha384::digest(message)),
            KeyAlgorithm::RsaPkcs1Sha256 => self.session.sign(&Mechanism::Sha256RsaPkcs, self.key, message),
            other => return Err(CaError::Signing(format!("{other:?} is not offered by the HSM signer"))),
        };
        signed.map_err(|e| CaError::Signing(e.to_string()))
    }
}
