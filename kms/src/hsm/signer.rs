//! Signing with a private key held in the token, for the CA.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use kms_ca::{CaError, KeyAlgorithm, Signer};
use sha2::{Digest, Sha256, Sha384};

use super::HsmError;

/// DER of the `prime256v1` OID, as `CKA_EC_PARAMS` wants it.
pub const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// An EC private key in the token, used through one session. The hash is
/// computed on the host (it is public data) and `CKM_ECDSA` signs it.
pub struct HsmSigner<'s> {
    session: &'s Session,
    key: ObjectHandle,
    public: Vec<u8>,
    algorithm: KeyAlgorithm,
}

/// Extracts the uncompressed point from `CKA_EC_POINT`, which modules
/// return either DER-wrapped in an OCTET STRING (PKCS#11 v2.40, SoftHSM) or
/// raw.
pub fn ec_point_from_attribute(value: &[u8]) -> Option<Vec<u8>> {
    match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && rest.first() == Some(&0x04) => Some(rest.to_vec()),
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => Some(rest.to_vec()),
        [0x04, ..] if !value.len().is_multiple_of(2) => Some(value.to_vec()),
        _ => None,
    }
}

impl<'s> HsmSigner<'s> {
    /// Finds the key pair labelled `label` (private and public objects)
    /// and prepares to sign with it.
    pub fn find(session: &'s Session, module: &str, label: &str, token: &str) -> Result<HsmSigner<'s>, HsmError> {
        let find = |class| {
            session
                .find_objects(&[Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())])
                .map_err(|e| HsmError::from_cryptoki(module, e))
        };
        let private = find(ObjectClass::PRIVATE_KEY)?;
        let public = find(ObjectClass::PUBLIC_KEY)?;
        let (Some(key), Some(public)) = (private.first().copied(), public.first().copied()) else {
            return Err(HsmError::ObjectNotFound { label: label.to_owned(), token: token.to_owned() });
        };
        let attrs = session
            .get_attributes(public, &[AttributeType::EcPoint, AttributeType::EcParams])
            .map_err(|e| HsmError::from_cryptoki(module, e))?;
        let mut point = None;
        let mut params = None;
        for a in attrs {
            match a {
                Attribute::EcPoint(p) => point = ec_point_from_attribute(&p),
                Attribute::EcParams(p) => params = Some(p),
                _ => {}
            }
        }
        let public =
            point.ok_or(HsmError::ObjectNotFound { label: format!("{label} (EC point)"), token: token.to_owned() })?;
        let algorithm = match params.as_deref() {
            Some(P256_PARAMS) => KeyAlgorithm::EcdsaP256Sha256,
            _ => KeyAlgorithm::EcdsaP384Sha384,
        };
        Ok(HsmSigner { session, key, public, algorithm })
    }
}

impl Signer for HsmSigner<'_> {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        let digest = match self.algorithm {
            KeyAlgorithm::EcdsaP256Sha256 => Sha256::digest(message).to_vec(),
            _ => Sha384::digest(message).to_vec(),
        };
        self.session.sign(&Mechanism::Ecdsa, self.key, &digest).map_err(|e| CaError::Signing(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::ec_point_from_attribute;

    #[test]
    fn ec_point_forms() {
        let mut raw = vec![0x04];
        raw.extend_from_slice(&[7u8; 64]);
        let mut der = vec![0x04, 65];
        der.extend_from_slice(&raw);
        assert_eq!(ec_point_from_attribute(&der), Some(raw.clone()));
        assert_eq!(ec_point_from_attribute(&raw), Some(raw.clone()));
        assert_eq!(ec_point_from_attribute(&[0x05, 1]), None);
    }
}
