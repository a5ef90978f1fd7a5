//! Names in certificates: subject distinguished-name attributes, subject
//! alternative names, and the RFC 4514 string form the API and the audit
//! log show.
//!
//! Profiles allow a small, fixed set of attributes (`CN`, `O`, `OU`, `C`,
//! `L`, `ST`, `serialNumber`); each appears at most once in an issued
//! subject, which is always written in one canonical order
//! (C, ST, L, O, OU, CN, serialNumber), whatever order a CSR used.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{DistinguishedName, DnType, DnValue};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use crate::CaError;

/// A subject attribute a profile can allow, named as in RFC 4514 / RFC 4519.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DnAttribute {
    /// `C`, countryName (2.5.4.6): two upper-case letters (ISO 3166).
    Country,
    /// `ST`, stateOrProvinceName (2.5.4.8).
    StateOrProvince,
    /// `L`, localityName (2.5.4.7).
    Locality,
    /// `O`, organizationName (2.5.4.10).
    Organization,
    /// `OU`, organizationalUnitName (2.5.4.11).
    OrganizationalUnit,
    /// `CN`, commonName (2.5.4.3).
    CommonName,
    /// `serialNumber` (2.5.4.5), e.g. a reader's serial; PrintableString.
    SerialNumber,
}

impl DnAttribute {
    /// Every attribute, in the order issued subjects list them.
    pub const ALL: [DnAttribute; 7] = [
        DnAttribute::Country,
        DnAttribute::StateOrProvince,
        DnAttribute::Locality,
        DnAttribute::Organization,
        DnAttribute::OrganizationalUnit,
        DnAttribute::CommonName,
        DnAttribute::SerialNumber,
    ];

    /// The short name used in profiles and RFC 4514 strings.
    pub fn name(self) -> &'static str {
        match self {
            DnAttribute::Country => "C",
            DnAttribute::StateOrProvince => "ST",
            DnAttribute::Locality => "L",
            DnAttribute::Organization => "O",
            DnAttribute::OrganizationalUnit => "OU",
            DnAttribute::CommonName => "CN",
            DnAttribute::SerialNumber => "serialNumber",
        }
    }

    /// The attribute type's OID arcs (X.520).
    pub fn oid(self) -> &'static [u64] {
        match self {
            DnAttribute::Country => &[2, 5, 4, 6],
            DnAttribute::StateOrProvince => &[2, 5, 4, 8],
            DnAttribute::Locality => &[2, 5, 4, 7],
            DnAttribute::Organization => &[2, 5, 4, 10],
            DnAttribute::OrganizationalUnit => &[2, 5, 4, 11],
            DnAttribute::CommonName => &[2, 5, 4, 3],
            DnAttribute::SerialNumber => &[2, 5, 4, 5],
        }
    }

    /// The attribute for an OID given as dotted decimal, if it is one of ours.
    pub fn from_oid_str(oid: &str) -> Option<DnAttribute> {
        DnAttribute::ALL.into_iter().find(|a| oid_to_string(a.oid()) == oid)
    }

    /// True where X.520 fixes the value to PrintableString (`C`, `serialNumber`).
    pub fn printable_only(self) -> bool {
        matches!(self, DnAttribute::Country | DnAttribute::SerialNumber)
    }

    fn rcgen_type(self) -> DnType {
        match self {
            DnAttribute::Country => DnType::CountryName,
            DnAttribute::StateOrProvince => DnType::StateOrProvinceName,
            DnAttribute::Locality => DnType::LocalityName,
            DnAttribute::Organization => DnType::OrganizationName,
            DnAttribute::OrganizationalUnit => DnType::OrganizationalUnitName,
            DnAttribute::CommonName => DnType::CommonName,
            DnAttribute::SerialNumber => DnType::CustomDnType(vec![2, 5, 4, 5]),
        }
    }
}

impl fmt::Display for DnAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DnAttribute {
    type Err = ();

    /// Parses a short name (`CN`, `serialNumber`, ...); case-sensitive, as
    /// profiles spell them.
    fn from_str(s: &str) -> Result<DnAttribute, ()> {
        DnAttribute::ALL.into_iter().find(|a| a.name() == s).ok_or(())
    }
}

/// True if every character is allowed in an ASN.1 PrintableString (X.680 §41.4).
pub fn is_printable_string(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c))
}

/// True if the CA can write `s` as a PrintableString: X.680's set without
/// `?`.
///
/// why: yasna 0.6 (rcgen's DER writer) `assert!`s on `?` in
/// `write_printable_string` although X.680 allows it, and rcgen's own
/// PrintableString check lets it through; found by the fuzz harness. A
/// value with `?` is refused here instead of panicking in issuance.
pub(crate) fn is_encodable_printable(s: &str) -> bool {
    is_printable_string(s) && !s.contains('?')
}

/// A subject distinguished name the CA writes: at most one value per
/// attribute, encoded in [`DnAttribute::ALL`] order (UTF8String, except
/// PrintableString for `C` and `serialNumber`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistinguishedNameSpec {
    entries: Vec<(DnAttribute, String)>,
}

impl DistinguishedNameSpec {
    /// An empty name.
    pub fn new() -> DistinguishedNameSpec {
        DistinguishedNameSpec::default()
    }

    /// Adds (or replaces) `attribute`, builder style.
    pub fn with(mut self, attribute: DnAttribute, value: impl Into<String>) -> DistinguishedNameSpec {
        self.set(attribute, value);
        self
    }

    /// Sets (or replaces) `attribute`.
    pub fn set(&mut self, attribute: DnAttribute, value: impl Into<String>) {
        let value = value.into();
        match self.entries.iter_mut().find(|(a, _)| *a == attribute) {
            Some(entry) => entry.1 = value,
            None => {
                self.entries.push((attribute, value));
                self.entries.sort_by_key(|(a, _)| *a);
            }
        }
    }

    /// The value of `attribute`, if set.
    pub fn get(&self, attribute: DnAttribute) -> Option<&str> {
        self.entries.iter().find(|(a, _)| *a == attribute).map(|(_, v)| v.as_str())
    }

    /// The attributes, in encoding order.
    pub fn iter(&self) -> impl Iterator<Item = (DnAttribute, &str)> {
        self.entries.iter().map(|(a, v)| (*a, v.as_str()))
    }

    /// True if no attribute is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The rcgen form; fails if a PrintableString attribute has other characters.
    pub(crate) fn to_rcgen(&self) -> Result<DistinguishedName, CaError> {
        let mut dn = DistinguishedName::new();
        for (attribute, value) in &self.entries {
            if value.is_empty() {
                return Err(CaError::InvalidField { field: attribute.name(), reason: "must not be empty".into() });
            }
            let value = if attribute.printable_only() {
                let not_printable = || CaError::InvalidField {
                    field: attribute.name(),
                    reason: format!("{value:?} is not a PrintableString (A-Z a-z 0-9 space '()+,-./:=)"),
                };
                if !is_encodable_printable(value) {
                    return Err(not_printable());
                }
                let printable =
                    rcgen::string::PrintableString::try_from(value.as_str()).map_err(|_| not_printable())?;
                DnValue::PrintableString(printable)
            } else {
                DnValue::Utf8String(value.clone())
            };
            dn.push(attribute.rcgen_type(), value);
        }
        Ok(dn)
    }
}

impl fmt::Display for DistinguishedNameSpec {
    /// The RFC 4514 string: attributes in reverse encoding order, `,`-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.entries.iter().rev().map(|(a, v)| format!("{}={}", a.name(), escape_rfc4514(v))).collect();
        f.write_str(&parts.join(","))
    }
}

/// A subject alternative name type a profile can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SanKind {
    /// dNSName.
    Dns,
    /// iPAddress.
    Ip,
    /// uniformResourceIdentifier.
    Uri,
    /// rfc822Name (an e-mail address).
    Email,
}

impl SanKind {
    /// Every kind, as profiles list them.
    pub const ALL: [SanKind; 4] = [SanKind::Dns, SanKind::Ip, SanKind::Uri, SanKind::Email];

    /// The name used in profiles.
    pub fn name(self) -> &'static str {
        match self {
            SanKind::Dns => "dns",
            SanKind::Ip => "ip",
            SanKind::Uri => "uri",
            SanKind::Email => "email",
        }
    }
}

impl FromStr for SanKind {
    type Err = ();

    fn from_str(s: &str) -> Result<SanKind, ()> {
        SanKind::ALL.into_iter().find(|k| k.name() == s).ok_or(())
    }
}

impl fmt::Display for SanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A subject alternative name, requested or issued.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum San {
    /// dNSName.
    Dns(String),
    /// iPAddress.
    Ip(IpAddr),
    /// uniformResourceIdentifier.
    Uri(String),
    /// rfc822Name.
    Email(String),
    /// A name type the CA never issues (otherName, directoryName, ...),
    /// described for the rejection message; only found in CSRs.
    Unsupported(String),
}

impl San {
    /// The kind, or `None` for [`San::Unsupported`].
    pub fn kind(&self) -> Option<SanKind> {
        match self {
            San::Dns(_) => Some(SanKind::Dns),
            San::Ip(_) => Some(SanKind::Ip),
            San::Uri(_) => Some(SanKind::Uri),
            San::Email(_) => Some(SanKind::Email),
            San::Unsupported(_) => None,
        }
    }

    pub(crate) fn to_rcgen(&self) -> Result<rcgen::SanType, CaError> {
        let ia5 = |s: &str| {
            rcgen::string::Ia5String::try_from(s)
                .map_err(|_| CaError::InvalidField { field: "subject_alt_name", reason: format!("{s:?} is not IA5") })
        };
        Ok(match self {
            San::Dns(n) => rcgen::SanType::DnsName(ia5(n)?),
            San::Ip(ip) => rcgen::SanType::IpAddress(*ip),
            San::Uri(u) => rcgen::SanType::URI(ia5(u)?),
            San::Email(e) => rcgen::SanType::Rfc822Name(ia5(e)?),
            San::Unsupported(what) => {
                return Err(CaError::InvalidField {
                    field: "subject_alt_name",
                    reason: format!("{what} is not issued"),
                });
            }
        })
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(n) => write!(f, "dns:{n}"),
            San::Ip(ip) => write!(f, "ip:{ip}"),
            San::Uri(u) => write!(f, "uri:{u}"),
            San::Email(e) => write!(f, "email:{e}"),
            San::Unsupported(what) => write!(f, "unsupported:{what}"),
        }
    }
}

/// Dotted-decimal form of OID arcs.
pub(crate) fn oid_to_string(arcs: &[u64]) -> String {
    arcs.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// Parses a dotted-decimal OID (at least two arcs, X.660 first-arc rules).
pub(crate) fn parse_dotted_oid(s: &str) -> Option<Vec<u64>> {
    let arcs: Vec<u64> =
        s.split('.').map(|a| a.parse::<u64>().ok().filter(|_| !a.starts_with('+'))).collect::<Option<_>>()?;
    let ok = arcs.len() >= 2
        && arcs[0] <= 2
        && (arcs[0] == 2 || arcs[1] < 40)
        && s.split('.').all(|a| a == "0" || !a.starts_with('0'))
        && arcs[0].checked_mul(40).and_then(|x| x.checked_add(arcs[1])).is_some();
    ok.then_some(arcs)
}

/// Escapes an attribute value for an RFC 4514 string (§2.4).
fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// The RFC 4514 short name of an attribute type OID, if it has one that is
/// registered (RFC 4519 §2, RFC 4514 §3).
fn rfc4514_type_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "2.5.4.5" => "serialNumber",
        _ => return None,
    })
}

/// Decodes a directory string value as text, if it is a string type.
pub(crate) fn attribute_text(attr: &AttributeTypeAndValue<'_>) -> Option<String> {
    if let Ok(s) = attr.as_str() {
        return Some(s.to_owned());
    }
    let value = attr.attr_value();
    let data: &[u8] = value.data;
    match value.tag().0 {
        // BMPString: UCS-2 big endian.
        30 if data.len().is_multiple_of(2) => {
            let units: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        // TeletexString: read as Latin-1, as most software does.
        20 => Some(data.iter().map(|b| char::from(*b)).collect()),
        _ => None,
    }
}

/// The RFC 4514 string of a parsed name (RDNs in reverse order).
pub(crate) fn rfc4514_string(name: &X509Name<'_>) -> String {
    let mut rdns = Vec::new();
    for rdn in name.iter() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|attr| {
                let oid = attr.attr_type().to_id_string();
                match (rfc4514_type_name(&oid), attribute_text(attr)) {
                    (Some(short), Some(text)) => format!("{short}={}", escape_rfc4514(&text)),
                    (short, _) => {
                        // why: RFC 4514 §2.4: types without a registered short
                        // name, and non-string values, are written `#` + hex of the
                        // value's BER encoding.
                        let value = attr.attr_value();
                        let mut der = Vec::new();
                        der.push(crate::der::identifier_octet(&value.header));
                        crate::der::push_length(&mut der, value.data.len());
                        der.extend_from_slice(value.data);
                        format!("{}=#{}", short.map(str::to_owned).unwrap_or(oid), crate::der::hex(&der))
                    }
                }
            })
            .collect();
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_orders_attributes_and_prints_rfc4514() {
        let dn = DistinguishedNameSpec::new()
            .with(DnAttribute::CommonName, "reader, #1")
            .with(DnAttribute::Country, "CN")
            .with(DnAttribute::Organization, " Hangzhou Transit");
        let order: Vec<DnAttribute> = dn.iter().map(|(a, _)| a).collect();
        assert_eq!(order, vec![DnAttribute::Country, DnAttribute::Organization, DnAttribute::CommonName]);
        assert_eq!(dn.to_string(), "CN=reader\\, #1,O=\\ Hangzhou Transit,C=CN");
    }

    #[test]
    fn printable_attributes_are_checked() {
        let dn = DistinguishedNameSpec::new().with(DnAttribute::SerialNumber, "RDR_01");
        assert!(dn.to_rcgen().is_err());
        let dn = DistinguishedNameSpec::new().with(DnAttribute::SerialNumber, "RDR-01");
        assert!(dn.to_rcgen().is_ok());
        // `?` is X.680 PrintableString but yasna panics on it: refused.
        let dn = DistinguishedNameSpec::new().with(DnAttribute::SerialNumber, "RDR?01");
        assert!(dn.to_rcgen().is_err());
    }

    #[test]
    fn dotted_oids() {
        assert_eq!(parse_dotted_oid("1.3.6.1.5.5.7.3.2"), Some(vec![1, 3, 6, 1, 5, 5, 7, 3, 2]));
        for bad in ["", "1", "3.1", "1.40", "1..2", "1.02", "a.b", "1.+2", "2.18446744073709551615"] {
            assert_eq!(parse_dotted_oid(bad), None, "{bad}");
        }
    }
}
