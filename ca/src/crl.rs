//! Certificate revocation lists (RFC 5280 §5).
//!
//! [`build_crl`] writes a version 2 CRL with the two extensions RFC 5280
//! §5.2 requires (authorityKeyIdentifier = the issuer's
//! subjectKeyIdentifier, and cRLNumber) and a reasonCode entry extension
//! for every entry whose reason is not `unspecified` (§5.3.1: "the
//! reasonCode extension SHOULD be absent instead of using the unspecified
//! (0) reasonCode value").
//!
//! why: the TBSCertList is written here directly with yasna in one pass
//! rather than through rcgen's builder: rcgen derives the CRL's
//! authorityKeyIdentifier from the issuer's public key instead of copying
//! the issuer certificate's subjectKeyIdentifier (which an offline root may
//! have computed differently), and it needs an owned copy of every entry.
//! `benches/crl.rs` measures both at 10,000 and 100,000 entries.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;
use yasna::Tag;
use yasna::models::ObjectIdentifier;

use crate::CaError;
use crate::der::x509_time;
use crate::issue::{Issuer, IssuerCert};
use crate::signer::sign_x509;

/// A CRLReason (RFC 5280 §5.3.1); value 7 is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RevocationReason {
    /// unspecified (0): written as no reasonCode extension.
    Unspecified,
    /// keyCompromise (1).
    KeyCompromise,
    /// cACompromise (2).
    CaCompromise,
    /// affiliationChanged (3).
    AffiliationChanged,
    /// superseded (4).
    Superseded,
    /// cessationOfOperation (5).
    CessationOfOperation,
    /// certificateHold (6).
    CertificateHold,
    /// removeFromCRL (8): only in delta CRLs, so [`build_crl`] refuses it.
    RemoveFromCrl,
    /// privilegeWithdrawn (9).
    PrivilegeWithdrawn,
    /// aACompromise (10).
    AaCompromise,
}

impl RevocationReason {
    /// Every reason, by code.
    pub const ALL: [RevocationReason; 10] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The CRLReason value.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
            RevocationReason::RemoveFromCrl => 8,
            RevocationReason::PrivilegeWithdrawn => 9,
            RevocationReason::AaCompromise => 10,
        }
    }

    /// The reason for a CRLReason value (`None` for 7 and above 10).
    pub fn from_code(code: u8) -> Option<RevocationReason> {
        RevocationReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The RFC 5280 name (`keyCompromise`, `cACompromise`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::CertificateHold => "certificateHold",
            RevocationReason::RemoveFromCrl => "removeFromCRL",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A revocation reason name that RFC 5280 does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown revocation reason {0:?} (unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, removeFromCRL, privilegeWithdrawn, aACompromise)"
)]
pub struct UnknownRevocationReason(pub String);

impl FromStr for RevocationReason {
    type Err = UnknownRevocationReason;

    /// Parses the RFC 5280 name, ignoring case (`keyCompromise`, `keycompromise`).
    fn from_str(s: &str) -> Result<RevocationReason, UnknownRevocationReason> {
        RevocationReason::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownRevocationReason(s.to_owned()))
    }
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The certificate's serial number magnitude, big-endian.
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: RevocationReason,
}

/// id-ce-cRLNumber.
const OID_CRL_NUMBER: &[u64] = &[2, 5, 29, 20];
/// id-ce-cRLReasons.
const OID_CRL_REASON: &[u64] = &[2, 5, 29, 21];
/// id-ce-authorityKeyIdentifier.
const OID_AUTHORITY_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 35];

fn oid(arcs: &[u64]) -> ObjectIdentifier {
    ObjectIdentifier::from_slice(arcs)
}

fn magnitude(serial: &[u8]) -> &[u8] {
    let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    &serial[first..]
}

/// Builds and signs a full CRL (DER). `next_update` must be after
/// `this_update`; serials must be 1 to 20 bytes and distinct.
pub fn build_crl(
    issuer: &Issuer<'_>,
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    revoked: &[RevokedEntry],
) -> Result<Vec<u8>, CaError> {
    if next_update <= this_update {
        return Err(CaError::InvalidField { field: "next_update", reason: "must be later than this_update".into() });
    }
    let issuer_cert = IssuerCert::parse(issuer.certificate_der)?;
    issuer_cert.check_signer(issuer.signer, true)?;
    let mut seen = HashSet::with_capacity(revoked.len());
    for entry in revoked {
        let serial = magnitude(&entry.serial);
        if serial.is_empty() || serial.len() > 20 {
            return Err(CaError::InvalidField {
                field: "serial",
                reason: format!("revoked serial {} must be 1 to 20 bytes", crate::der::hex(&entry.serial)),
            });
        }
        if entry.reason == RevocationReason::RemoveFromCrl {
            return Err(CaError::InvalidField {
                field: "reason",
                reason: "removeFromCRL is only used in delta CRLs (RFC 5280 §5.3.1)".into(),
            });
        }
        if !seen.insert(serial) {
            return Err(CaError::InvalidField {
                field: "serial",
                reason: format!("serial {} is listed twice", crate::der::hex(serial)),
            });
        }
    }
    let aki = issuer_cert.authority_key_id(issuer.signer);
    let algorithm = issuer.signer.algorithm().signature_algorithm_der();

    let tbs = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(1); // v2
            w.next().write_der(algorithm);
            w.next().write_der(&issuer_cert.subject_raw);
            w.next().write_der(&x509_time(this_update));
            w.next().write_der(&x509_time(next_update));
            if !revoked.is_empty() {
                // why: RFC 5280 §5.1.2.6: absent, not empty, when nothing is revoked.
                w.next().write_sequence_of(|w| {
                    for entry in revoked {
                        w.next().write_sequence(|w| {
                            w.next().write_bigint_bytes(&entry.serial, true);
                            w.next().write_der(&x509_time(entry.revoked_at));
                            if entry.reason != RevocationReason::Unspecified {
                                w.next().write_sequence_of(|w| {
                                    w.next().write_sequence(|w| {
                                        w.next().write_oid(&oid(OID_CRL_REASON));
                                        let value =
                                            yasna::construct_der(|w| w.write_enum(i64::from(entry.reason.code())));
                                        w.next().write_bytes(&value);
                                    })
                                });
                            }
                        })
                    }
                });
            }
            w.next().write_tagged(Tag::context(0), |w| {
                w.write_sequence_of(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&oid(OID_AUTHORITY_KEY_IDENTIFIER));
                        let value = yasna::construct_der(|w| {
                            w.write_sequence(|w| {
                                w.next().write_tagged_implicit(Tag::context(0), |w| w.write_bytes(&aki))
                            })
                        });
                        w.next().write_bytes(&value);
                    });
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&oid(OID_CRL_NUMBER));
                        let value = yasna::construct_der(|w| w.write_u64(number));
                        w.next().write_bytes(&value);
                    });
                })
            });
        })
    });
    let signature = sign_x509(issuer.signer, &tbs)?;
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(&tbs);
            w.next().write_der(algorithm);
            w.next().write_bitvec_bytes(&signature, signature.len() * 8);
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::from_code(r.code()), Some(r));
            assert_eq!(r.name().parse::<RevocationReason>(), Ok(r));
        }
        assert_eq!(RevocationReason::from_code(7), None);
        assert_eq!(RevocationReason::from_code(11), None);
        assert_eq!("KEYCOMPROMISE".parse::<RevocationReason>(), Ok(RevocationReason::KeyCompromise));
        assert!("compromised".parse::<RevocationReason>().is_err());
        let codes: Vec<u8> = RevocationReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6, 8, 9, 10]);
    }
}
