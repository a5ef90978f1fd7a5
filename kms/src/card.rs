//! Card identifiers and the diversification data computed from them.
//! Everything here is public data; the keys these feed stay in the HSM.

use sha1::{Digest, Sha1};

use crate::error::{Error, Result};
use crate::profiles::{CardProfile, GpKey, Identifier, Method};

/// Identifiers as a request carries them (hex or decimal strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CardInput {
    /// Application serial number, hex, 8 or 10 bytes.
    pub asn: String,
    /// City factor, hex, 8 bytes.
    pub city: String,
    /// PAN, 12-19 decimal digits.
    pub pan: String,
    /// PAN sequence number, 2 decimal digits (empty: 00).
    pub psn: String,
    /// GlobalPlatform KDD, hex, 10 bytes.
    pub kdd: String,
    /// Card UID, hex, 4, 7 or 10 bytes.
    pub uid: String,
    /// AN10922 application id, hex, 3 bytes.
    pub aid: String,
    /// AN10922 system identifier, hex, 0-21 bytes.
    pub system_identifier: String,
}

/// Parsed identifiers, checked against what a profile needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    asn: Option<Vec<u8>>,
    city: Option<[u8; 8]>,
    pan: Option<(String, String)>,
    kdd: Option<[u8; 10]>,
    an10922: Option<Vec<u8>>,
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument { field: format!("card.{field}"), reason: reason.into() }
}

fn hex_field(field: &str, value: &str, lengths: &[usize]) -> Result<Vec<u8>> {
    let bytes = hex::decode(value).map_err(|_| invalid(field, format!("{value:?} is not hex")))?;
    if !lengths.contains(&bytes.len()) {
        let allowed: Vec<String> = lengths.iter().map(|l| l.to_string()).collect();
        return Err(invalid(field, format!("{} bytes; must be {} bytes", bytes.len(), allowed.join(" or "))));
    }
    Ok(bytes)
}

fn required<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() { Err(invalid(field, "is required by this card profile")) } else { Ok(value) }
}

impl Card {
    /// The identifier production plans count this card by, in the form the
    /// keys are derived from, so that two inputs giving the same keys give
    /// the same identifier (a range cannot be stepped around by an alias):
    /// the rightmost 8 bytes of the ASN (16 hex digits); else the KDD bytes
    /// the profile's methods use (`gp-emv`: bytes 4-9; `gp-visa2`: bytes
    /// 0-1 and 4-7; `gp-kdf3` or a mix: all 10); else the rightmost 16
    /// digits of PAN || PSN (EMV's Y before BCD); else the UID (AN10922).
    /// `None` for a profile diversified from no card identifier (city factor
    /// only): such cards cannot be held to a plan.
    pub fn plan_identifier(&self, input: &CardInput, profile: &CardProfile) -> Option<String> {
        if let Some(asn) = &self.asn {
            return Some(hex::encode_upper(&asn[asn.len().saturating_sub(8)..]));
        }
        if let Some(kdd) = &self.kdd {
            let methods: Vec<Method> = profile.roles.iter().map(|r| r.method).collect();
            let only = |m: Method| !methods.is_empty() && methods.iter().all(|x| *x == m);
            return Some(if only(Method::GpEmv) {
                hex::encode_upper(&kdd[4..10])
            } else if only(Method::GpVisa2) {
                format!("{}{}", hex::encode_upper(&kdd[..2]), hex::encode_upper(&kdd[4..8]))
            } else {
                hex::encode_upper(kdd)
            });
        }
        if let Some((pan, psn)) = &self.pan {
            let x = format!("{pan}{psn}");
            return Some(format!("{:0>16}", &x[x.len().saturating_sub(16)..]));
        }
        if self.an10922.is_some() {
            let uid = input.uid.trim().to_ascii_uppercase();
            return (!uid.is_empty()).then_some(uid);
        }
        None
    }

    /// The lengths (characters) [`Card::plan_identifier`] has for
    /// `profile`, and what it is, so a plan's ranges can be checked; `None`
    /// when the profile derives from no card identifier.
    pub fn plan_identifier_form(profile: &CardProfile) -> Option<(&'static [usize], &'static str)> {
        let ids = &profile.identifiers;
        let only = |m: Method| !profile.roles.is_empty() && profile.roles.iter().all(|r| r.method == m);
        if ids.contains(&Identifier::Asn) {
            Some((&[16], "16 hex digits: the rightmost 8 bytes of the ASN, which the keys are derived from"))
        } else if ids.contains(&Identifier::Kdd) {
            if only(Method::GpEmv) || only(Method::GpVisa2) {
                Some((&[12], "12 hex digits: the 6 KDD bytes the profile's GlobalPlatform template uses"))
            } else {
                Some((&[20], "20 hex digits: the 10-byte KDD"))
            }
        } else if ids.contains(&Identifier::Pan) {
            Some((&[16], "16 decimal digits: the rightmost 16 digits of PAN || PSN (EMV's Y)"))
        } else if ids.contains(&Identifier::Uid) {
            Some((&[8, 14, 20], "8, 14 or 20 hex digits: the card UID"))
        } else {
            None
        }
    }

    /// Parses exactly the identifiers `profile` needs.
    pub fn parse(input: &CardInput, profile: &CardProfile) -> Result<Card> {
        let mut card = Card { asn: None, city: None, pan: None, kdd: None, an10922: None };
        for id in &profile.identifiers {
            match id {
                Identifier::Asn => card.asn = Some(hex_field("asn", required("asn", &input.asn)?, &[8, 10])?),
                Identifier::City => {
                    let b = hex_field("city", required("city", &input.city)?, &[8])?;
                    card.city = b.try_into().ok();
                }
                Identifier::Pan => {
                    let pan = required("pan", &input.pan)?;
                    if !(12..=19).contains(&pan.len()) || !pan.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(invalid("pan", "must be 12-19 decimal digits"));
                    }
                    let psn = if input.psn.is_empty() { "00" } else { input.psn.as_str() };
                    if psn.len() != 2 || !psn.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(invalid("psn", "must be 2 decimal digits"));
                    }
                    card.pan = Some((pan.to_owned(), psn.to_owned()));
                }
                Identifier::Kdd => {
                    let b = hex_field("kdd", required("kdd", &input.kdd)?, &[10])?;
                    card.kdd = b.try_into().ok();
                }
                Identifier::Uid | Identifier::Aid => {
                    if card.an10922.is_none() {
                        let uid = hex_field("uid", required("uid", &input.uid)?, &[4, 7, 10])?;
                        let aid = if input.aid.is_empty() { Vec::new() } else { hex_field("aid", &input.aid, &[3])? };
                        let si = if input.system_identifier.is_empty() {
                            Vec::new()
                        } else {
                            hex_field("system_identifier", &input.system_identifier, &(1..=21).collect::<Vec<_>>())?
                        };
                        let mut d = vec![0x01];
                        d.extend_from_slice(&uid);
                        d.extend_from_slice(&aid);
                        d.extend_from_slice(&si);
                        // why: AN10922 pads to two cipher blocks: 32 bytes for AES,
                        // 16 for 2K3DES, one of which is the constant byte.
                        let max = if profile.roles.iter().any(|r| r.method == Method::An10922Des2) { 16 } else { 32 };
                        if d.len() > max {
                            return Err(invalid(
                                "system_identifier",
                                format!("uid, aid and system identifier exceed {} bytes for this profile", max - 1),
                            ));
                        }
                        card.an10922 = Some(d);
                    }
                }
            }
        }
        Ok(card)
    }

    /// The 8-byte factor for `id` (the rightmost 8 bytes of the ASN).
    pub fn factor(&self, id: Identifier) -> Option<[u8; 8]> {
        match id {
            Identifier::Asn => self.asn.as_ref().and_then(|a| a[a.len() - 8..].try_into().ok()),
            Identifier::City => self.city,
            _ => None,
        }
    }

    /// EMV Y for Option A or B.
    pub fn emv_y(&self, option_b: bool) -> Option<[u8; 8]> {
        self.pan.as_ref().map(|(pan, psn)| if option_b { emv_y_option_b(pan, psn) } else { emv_y_option_a(pan, psn) })
    }

    /// The KDD.
    pub fn kdd(&self) -> Option<[u8; 10]> {
        self.kdd
    }

    /// AN10922 input `01 || UID || AID || system identifier`.
    pub fn an10922_input(&self) -> Option<&[u8]> {
        self.an10922.as_deref()
    }

    /// AN10922 diversification data M = `UID || AID || system identifier`
    /// (without the constant byte).
    pub fn an10922_message(&self) -> Option<&[u8]> {
        self.an10922.as_deref().and_then(|d| d.get(1..))
    }
}

/// `D || ~D`: the 16 bytes PBOC 3DES and JT/T 978 SM4 diversification
/// encrypt.
pub fn with_complement(d: [u8; 8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&d);
    for (o, b) in out[8..].iter_mut().zip(d) {
        *o = !b;
    }
    out
}

fn bcd16(digits: &str) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (i, pair) in digits.as_bytes().chunks(2).enumerate().take(8) {
        out[i] = ((pair[0] - b'0') << 4) | (pair.get(1).map_or(0, |d| d - b'0'));
    }
    out
}

/// EMV Book 2 A1.4.1: the rightmost 16 digits of PAN || PSN, zero-padded
/// on the left, as BCD.
pub fn emv_y_option_a(pan: &str, psn: &str) -> [u8; 8] {
    let x = format!("{pan}{psn}");
    let tail = &x[x.len().saturating_sub(16)..];
    bcd16(&format!("{tail:0>16}"))
}

/// EMV Book 2 A1.4.2: as Option A for PANs of at most 16 digits; otherwise
/// SHA-1 of PAN || PSN (BCD, left-padded to even length) decimalised.
pub fn emv_y_option_b(pan: &str, psn: &str) -> [u8; 8] {
    if pan.len() <= 16 {
        return emv_y_option_a(pan, psn);
    }
    let mut x = format!("{pan}{psn}");
    if x.len() % 2 == 1 {
        x.insert(0, '0');
    }
    let bytes: Vec<u8> = x.as_bytes().chunks(2).map(|p| ((p[0] - b'0') << 4) | (p[1] - b'0')).collect();
    let digest = hex::encode(Sha1::digest(&bytes));
    let mut y: String = digest.chars().filter(char::is_ascii_digit).take(16).collect();
    if y.len() < 16 {
        // why: EMV's decimalisation table maps a..f to 0..5 for the shortfall.
        let extra: String = digest
            .chars()
            .filter(|c| ('a'..='f').contains(c))
            .map(|c| char::from(b'0' + (c as u8 - b'a')))
            .take(16 - y.len())
            .collect();
        y.push_str(&extra);
    }
    bcd16(&y)
}

/// GlobalPlatform SCP02 `emv` (CPS) template:
/// `KDD[4..10] || F0 || c || KDD[4..10] || 0F || c`.
pub fn gp_emv_data(kdd: [u8; 10], key: GpKey) -> [u8; 16] {
    let c = key.constant();
    let mut d = [0u8; 16];
    d[..6].copy_from_slice(&kdd[4..10]);
    d[6] = 0xF0;
    d[7] = c;
    d[8..14].copy_from_slice(&kdd[4..10]);
    d[14] = 0x0F;
    d[15] = c;
    d
}

/// GlobalPlatform SCP02 `visa2` template:
/// `KDD[0..2] || KDD[4..8] || F0 || c || KDD[0..2] || KDD[4..8] || 0F || c`.
pub fn gp_visa2_data(kdd: [u8; 10], key: GpKey) -> [u8; 16] {
    let c = key.constant();
    let mut d = [0u8; 16];
    d[..2].copy_from_slice(&kdd[..2]);
    d[2..6].copy_from_slice(&kdd[4..8]);
    d[6] = 0xF0;
    d[7] = c;
    d[8..10].copy_from_slice(&kdd[..2]);
    d[10..14].copy_from_slice(&kdd[4..8]);
    d[14] = 0x0F;
    d[15] = c;
    d
}

/// GlobalPlatformPro's `kdf3` fixed data: `00 00 00 c 00 || KDD`; the KDF
/// puts an 8-bit counter before it.
pub fn gp_kdf3_data(kdd: [u8; 10], key: GpKey) -> [u8; 15] {
    let mut d = [0u8; 15];
    d[3] = key.constant();
    d[5..].copy_from_slice(&kdd);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complement() {
        let d = with_complement([0x45, 0x67, 0x89, 0x01, 0x23, 0x45, 0x67, 0x01]);
        assert_eq!(hex::encode_upper(d), "4567890123456701BA9876FEDCBA98FE");
    }

    // VECTORS.md: for PAN 12345678901234567 / PSN 01, Y = 4567890123456701.
    #[test]
    fn emv_option_a_y() {
        assert_eq!(hex::encode_upper(emv_y_option_a("12345678901234567", "01")), "4567890123456701");
        assert_eq!(hex::encode_upper(emv_y_option_a("123456789012", "00")), "0012345678901200");
    }

    #[test]
    fn emv_option_b_short_pan_is_option_a() {
        assert_eq!(emv_y_option_b("1234567890123456", "01"), emv_y_option_a("1234567890123456", "01"));
    }

    #[test]
    fn gp_templates_pick_the_documented_bytes() {
        let kdd: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(
            hex::encode_upper(gp_emv_data(kdd, GpKey::Enc)),
            "040506070809F001040506070809 0F01".replace(' ', "")
        );
        assert_eq!(
            hex::encode_upper(gp_visa2_data(kdd, GpKey::Dek)),
            "000104050607F003000104050607 0F03".replace(' ', "")
        );
    }
}
