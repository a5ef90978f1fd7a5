//! Officers' credentials: a passphrase each officer chose, stored in the
//! plan only as `pbkdf2-sha256$ITERATIONS$SALT$HASH` (hex), PBKDF2 with
//! HMAC-SHA-256 (RFC 8018 §5.2) and a 16-byte random salt. The tool checks
//! an officer's passphrase before it lets them authorise a step or see or
//! enter a secret.

use std::num::NonZeroU32;

use ring::pbkdf2;
use secrecy::{ExposeSecret, SecretString};

/// Iterations for new credentials (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
pub const ITERATIONS: u32 = 600_000;
/// The fewest iterations a plan may name.
pub const MIN_ITERATIONS: u32 = 100_000;
const PREFIX: &str = "pbkdf2-sha256";

/// A parsed credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl Credential {
    /// Parses `pbkdf2-sha256$ITER$SALTHEX$HASHHEX`.
    pub fn parse(s: &str) -> Result<Credential, String> {
        let parts: Vec<&str> = s.split('$').collect();
        let [prefix, iterations, salt, hash] = parts.as_slice() else {
            return Err("expected pbkdf2-sha256$ITERATIONS$SALT$HASH".into());
        };
        if *prefix != PREFIX {
            return Err(format!("unknown credential scheme {prefix:?}, expected {PREFIX}"));
        }
        let iterations: u32 = iterations.parse().map_err(|_| format!("iterations {iterations:?} is not a number"))?;
        if iterations < MIN_ITERATIONS {
            return Err(format!("{iterations} iterations is fewer than {MIN_ITERATIONS}"));
        }
        let salt = hex::decode(salt).map_err(|_| "the salt is not hex".to_owned())?;
        let hash = hex::decode(hash).map_err(|_| "the hash is not hex".to_owned())?;
        if salt.len() < 16 || hash.len() != 32 {
            return Err("the salt must be at least 16 bytes and the hash 32".into());
        }
        let iterations = NonZeroU32::new(iterations).ok_or("zero iterations")?;
        Ok(Credential { iterations, salt, hash })
    }

    /// Makes a credential for `passphrase` with a fresh salt.
    pub fn new(passphrase: &SecretString, salt: [u8; 16]) -> Credential {
        Credential::with_iterations(passphrase, salt, ITERATIONS)
    }

    /// As [`Credential::new`] with `iterations` (at least [`MIN_ITERATIONS`]).
    pub fn with_iterations(passphrase: &SecretString, salt: [u8; 16], iterations: u32) -> Credential {
        let iterations = NonZeroU32::new(iterations.max(MIN_ITERATIONS)).unwrap_or(NonZeroU32::MIN);
        let mut hash = vec![0u8; 32];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, passphrase.expose_secret().as_bytes(), &mut hash);
        Credential { iterations, salt: salt.to_vec(), hash }
    }

    /// Whether `passphrase` is this credential's (constant-time compare).
    pub fn verify(&self, passphrase: &SecretString) -> bool {
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            self.iterations,
            &self.salt,
            passphrase.expose_secret().as_bytes(),
            &self.hash,
        )
        .is_ok()
    }
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}${}${}${}", self.iterations, hex::encode(&self.salt), hex::encode(&self.hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7914_pbkdf2_sha256_vector() {
        // RFC 7914 §11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1, dkLen=64.
        let mut out = [0u8; 64];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, NonZeroU32::MIN, b"salt", b"passwd", &mut out);
        assert_eq!(
            hex::encode(out),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc\
             49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
        );
    }

    #[test]
    fn round_trip_and_wrong_passphrase() -> Result<(), String> {
        let c = Credential::new(&SecretString::from("correct horse"), [7; 16]);
        let parsed = Credential::parse(&c.to_string())?;
        assert!(parsed.verify(&SecretString::from("correct horse")));
        assert!(!parsed.verify(&SecretString::from("correct horsE")));
        assert!(Credential::parse("pbkdf2-sha256$1000$00$00").is_err());
        assert!(Credential::parse("scrypt$1$2$3").is_err());
        Ok(())
    }
}
