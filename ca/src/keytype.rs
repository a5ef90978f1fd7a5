//! Subject and issuer key types, named as profiles and the API name them.

use std::fmt;
use std::str::FromStr;

/// A public-key type and size that a profile can allow and the HSM can
/// generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeyType {
    /// ECDSA / ECDH on NIST P-256 (`prime256v1`).
    EcP256,
    /// ECDSA / ECDH on NIST P-384 (`secp384r1`).
    EcP384,
    /// RSA with a 2048-bit modulus.
    Rsa2048,
    /// RSA with a 3072-bit modulus.
    Rsa3072,
    /// RSA with a 4096-bit modulus.
    Rsa4096,
    /// SM2 (GB/T 32918) on its recommended curve.
    Sm2,
}

impl KeyType {
    /// Every key type, in the order profiles list them.
    pub const ALL: [KeyType; 6] =
        [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048, KeyType::Rsa3072, KeyType::Rsa4096, KeyType::Sm2];

    /// The name used in profiles, the API and the database (`ec-p256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
            KeyType::Sm2 => "sm2",
        }
    }

    /// True for the RSA sizes.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }

    /// The RSA modulus size in bits, or the EC field size.
    pub fn bits(self) -> u32 {
        match self {
            KeyType::EcP256 | KeyType::Sm2 => 256,
            KeyType::EcP384 => 384,
            KeyType::Rsa2048 => 2048,
            KeyType::Rsa3072 => 3072,
            KeyType::Rsa4096 => 4096,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key type name that is not one of [`KeyType::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key type {0:?} (expected one of ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, sm2)")]
pub struct UnknownKeyType(pub String);

impl FromStr for KeyType {
    type Err = UnknownKeyType;

    fn from_str(s: &str) -> Result<KeyType, UnknownKeyType> {
        KeyType::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| UnknownKeyType(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in KeyType::ALL {
            assert_eq!(k.name().parse::<KeyType>(), Ok(k));
        }
        assert!("ec-p521".parse::<KeyType>().is_err());
    }
}
