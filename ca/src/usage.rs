//! Key usage and extended key usage, named as RFC 5280 names them.

use std::fmt;
use std::str::FromStr;

use crate::KeyType;
use crate::names::{oid_to_string, parse_dotted_oid};

/// A keyUsage bit (RFC 5280 §4.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeyUsage {
    /// digitalSignature (bit 0).
    DigitalSignature,
    /// nonRepudiation, renamed contentCommitment (bit 1).
    NonRepudiation,
    /// keyEncipherment (bit 2): RSA key transport.
    KeyEncipherment,
    /// dataEncipherment (bit 3).
    DataEncipherment,
    /// keyAgreement (bit 4): ECDH.
    KeyAgreement,
    /// keyCertSign (bit 5): CA certificates only.
    KeyCertSign,
    /// cRLSign (bit 6): CA certificates only.
    CrlSign,
    /// encipherOnly (bit 7), with keyAgreement.
    EncipherOnly,
    /// decipherOnly (bit 8), with keyAgreement.
    DecipherOnly,
}

impl KeyUsage {
    /// Every usage, in bit order.
    pub const ALL: [KeyUsage; 9] = [
        KeyUsage::DigitalSignature,
        KeyUsage::NonRepudiation,
        KeyUsage::KeyEncipherment,
        KeyUsage::DataEncipherment,
        KeyUsage::KeyAgreement,
        KeyUsage::KeyCertSign,
        KeyUsage::CrlSign,
        KeyUsage::EncipherOnly,
        KeyUsage::DecipherOnly,
    ];

    /// The RFC 5280 name (`digitalSignature`, `cRLSign`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyUsage::DigitalSignature => "digitalSignature",
            KeyUsage::NonRepudiation => "nonRepudiation",
            KeyUsage::KeyEncipherment => "keyEncipherment",
            KeyUsage::DataEncipherment => "dataEncipherment",
            KeyUsage::KeyAgreement => "keyAgreement",
            KeyUsage::KeyCertSign => "keyCertSign",
            KeyUsage::CrlSign => "cRLSign",
            KeyUsage::EncipherOnly => "encipherOnly",
            KeyUsage::DecipherOnly => "decipherOnly",
        }
    }

    /// The bit number in the KeyUsage BIT STRING.
    pub fn bit(self) -> u8 {
        match self {
            KeyUsage::DigitalSignature => 0,
            KeyUsage::NonRepudiation => 1,
            KeyUsage::KeyEncipherment => 2,
            KeyUsage::DataEncipherment => 3,
            KeyUsage::KeyAgreement => 4,
            KeyUsage::KeyCertSign => 5,
            KeyUsage::CrlSign => 6,
            KeyUsage::EncipherOnly => 7,
            KeyUsage::DecipherOnly => 8,
        }
    }

    /// Whether the usage can be asserted for a key of `key_type`.
    ///
    /// why: RFC 3279 §2.3.1 lists no keyAgreement for RSA keys, and RFC 5480
    /// §3 says keyEncipherment and dataEncipherment MUST NOT be asserted for
    /// EC keys. A profile that allows both kinds (e.g. `reader-encrypt`)
    /// lists both usages; each certificate gets those that fit its key.
    pub fn applies_to(self, key_type: KeyType) -> bool {
        match self {
            KeyUsage::KeyEncipherment | KeyUsage::DataEncipherment => key_type.is_rsa(),
            KeyUsage::KeyAgreement | KeyUsage::EncipherOnly | KeyUsage::DecipherOnly => !key_type.is_rsa(),
            _ => true,
        }
    }

    pub(crate) fn to_rcgen(self) -> rcgen::KeyUsagePurpose {
        use rcgen::KeyUsagePurpose as P;
        match self {
            KeyUsage::DigitalSignature => P::DigitalSignature,
            KeyUsage::NonRepudiation => P::ContentCommitment,
            KeyUsage::KeyEncipherment => P::KeyEncipherment,
            KeyUsage::DataEncipherment => P::DataEncipherment,
            KeyUsage::KeyAgreement => P::KeyAgreement,
            KeyUsage::KeyCertSign => P::KeyCertSign,
            KeyUsage::CrlSign => P::CrlSign,
            KeyUsage::EncipherOnly => P::EncipherOnly,
            KeyUsage::DecipherOnly => P::DecipherOnly,
        }
    }

    /// The usages set in a KeyUsage flags word as x509-parser reports it
    /// (bit n of the BIT STRING is bit n of the word).
    pub(crate) fn from_flags(flags: u16) -> Vec<KeyUsage> {
        KeyUsage::ALL.into_iter().filter(|u| flags & (1 << u.bit()) != 0).collect()
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyUsage {
    type Err = ();

    /// Parses an RFC 5280 name; `contentCommitment` is accepted for bit 1.
    fn from_str(s: &str) -> Result<KeyUsage, ()> {
        if s == "contentCommitment" {
            return Ok(KeyUsage::NonRepudiation);
        }
        KeyUsage::ALL.into_iter().find(|u| u.name() == s).ok_or(())
    }
}

/// An extended key usage purpose (RFC 5280 §4.2.1.12).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ExtendedKeyUsage {
    /// id-kp-serverAuth.
    ServerAuth,
    /// id-kp-clientAuth.
    ClientAuth,
    /// id-kp-codeSigning.
    CodeSigning,
    /// id-kp-emailProtection.
    EmailProtection,
    /// id-kp-timeStamping.
    TimeStamping,
    /// id-kp-OCSPSigning.
    OcspSigning,
    /// anyExtendedKeyUsage.
    Any,
    /// Another purpose, by dotted-decimal OID.
    Other(String),
}

impl ExtendedKeyUsage {
    const NAMED: [(ExtendedKeyUsage, &'static str, &'static [u64]); 7] = [
        (ExtendedKeyUsage::ServerAuth, "serverAuth", &[1, 3, 6, 1, 5, 5, 7, 3, 1]),
        (ExtendedKeyUsage::ClientAuth, "clientAuth", &[1, 3, 6, 1, 5, 5, 7, 3, 2]),
        (ExtendedKeyUsage::CodeSigning, "codeSigning", &[1, 3, 6, 1, 5, 5, 7, 3, 3]),
        (ExtendedKeyUsage::EmailProtection, "emailProtection", &[1, 3, 6, 1, 5, 5, 7, 3, 4]),
        (ExtendedKeyUsage::TimeStamping, "timeStamping", &[1, 3, 6, 1, 5, 5, 7, 3, 8]),
        (ExtendedKeyUsage::OcspSigning, "OCSPSigning", &[1, 3, 6, 1, 5, 5, 7, 3, 9]),
        (ExtendedKeyUsage::Any, "anyExtendedKeyUsage", &[2, 5, 29, 37, 0]),
    ];

    /// The RFC 5280 name, or the dotted OID for [`ExtendedKeyUsage::Other`].
    pub fn name(&self) -> String {
        match self {
            ExtendedKeyUsage::Other(oid) => oid.clone(),
            named => ExtendedKeyUsage::NAMED
                .iter()
                .find(|(e, _, _)| e == named)
                .map(|(_, n, _)| (*n).to_owned())
                .unwrap_or_default(),
        }
    }

    /// The purpose's OID arcs.
    pub fn oid(&self) -> Vec<u64> {
        match self {
            ExtendedKeyUsage::Other(oid) => parse_dotted_oid(oid).unwrap_or_default(),
            named => ExtendedKeyUsage::NAMED
                .iter()
                .find(|(e, _, _)| e == named)
                .map(|(_, _, o)| o.to_vec())
                .unwrap_or_default(),
        }
    }

    /// The purpose for an OID in dotted-decimal form.
    pub fn from_oid_str(oid: &str) -> ExtendedKeyUsage {
        ExtendedKeyUsage::NAMED
            .iter()
            .find(|(_, _, arcs)| oid_to_string(arcs) == oid)
            .map(|(e, _, _)| e.clone())
            .unwrap_or_else(|| ExtendedKeyUsage::Other(oid.to_owned()))
    }

    pub(crate) fn to_rcgen(&self) -> rcgen::ExtendedKeyUsagePurpose {
        use rcgen::ExtendedKeyUsagePurpose as P;
        match self {
            ExtendedKeyUsage::ServerAuth => P::ServerAuth,
            ExtendedKeyUsage::ClientAuth => P::ClientAuth,
            ExtendedKeyUsage::CodeSigning => P::CodeSigning,
            ExtendedKeyUsage::EmailProtection => P::EmailProtection,
            ExtendedKeyUsage::TimeStamping => P::TimeStamping,
            ExtendedKeyUsage::OcspSigning => P::OcspSigning,
            ExtendedKeyUsage::Any => P::Any,
            ExtendedKeyUsage::Other(_) => P::Other(self.oid()),
        }
    }
}

impl fmt::Display for ExtendedKeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for ExtendedKeyUsage {
    type Err = ();

    /// Parses an RFC 5280 name (`serverAuth`, `OCSPSigning`, ...) or a
    /// dotted-decimal OID.
    fn from_str(s: &str) -> Result<ExtendedKeyUsage, ()> {
        if let Some((e, _, _)) = ExtendedKeyUsage::NAMED.iter().find(|(_, n, _)| *n == s) {
            return Ok(e.clone());
        }
        match parse_dotted_oid(s) {
            Some(_) => Ok(ExtendedKeyUsage::from_oid_str(s)),
            None => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for u in KeyUsage::ALL {
            assert_eq!(u.name().parse::<KeyUsage>(), Ok(u));
        }
        assert_eq!("contentCommitment".parse::<KeyUsage>(), Ok(KeyUsage::NonRepudiation));
        assert!("crlSign".parse::<KeyUsage>().is_err());
        for (e, n, _) in ExtendedKeyUsage::NAMED {
            assert_eq!(n.parse::<ExtendedKeyUsage>(), Ok(e.clone()));
            assert_eq!(ExtendedKeyUsage::from_oid_str(&oid_to_string(&e.oid())), e);
        }
        assert_eq!("1.3.6.1.5.5.7.3.2".parse::<ExtendedKeyUsage>(), Ok(ExtendedKeyUsage::ClientAuth));
        assert_eq!("1.2.3.4".parse::<ExtendedKeyUsage>(), Ok(ExtendedKeyUsage::Other("1.2.3.4".into())));
        assert!("serverAuthentication".parse::<ExtendedKeyUsage>().is_err());
    }

    #[test]
    fn usages_follow_the_key() {
        assert!(KeyUsage::KeyEncipherment.applies_to(KeyType::Rsa2048));
        assert!(!KeyUsage::KeyEncipherment.applies_to(KeyType::EcP256));
        assert!(KeyUsage::KeyAgreement.applies_to(KeyType::EcP384));
        assert!(!KeyUsage::KeyAgreement.applies_to(KeyType::Rsa3072));
        assert!(KeyUsage::DigitalSignature.applies_to(KeyType::EcP256));
        assert_eq!(
            KeyUsage::from_flags(0b1_0010_0001),
            vec![KeyUsage::DigitalSignature, KeyUsage::KeyCertSign, KeyUsage::DecipherOnly]
        );
    }
}
