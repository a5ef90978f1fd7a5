//! `kms certs ...`: the certificate authority from the operator's side, and
//! from the reader's for `kms certs enroll`.
//!
//! Every command prints either aligned text or, with `--json`, one JSON
//! object per result (JSON lines for `list`). Times are RFC 3339 in UTC.
//! Certificates and chains are written as PEM; a CRL as DER; a reader's
//! encryption key exactly as received, a DER CMS envelope only the reader's
//! signing key opens. The CLI never holds a private key.
//!
//! `kms certs enroll` is the one command that connects without a client
//! certificate: a reader being enrolled has none yet, and the service lets
//! such a connection through for `EnrollReader` only. Its authorization is an
//! enrollment token or a certificate of a trusted external CA.

use super::table;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::builder::PossibleValuesParser;
use clap::{ArgGroup, Args, ValueEnum};
use kms_proto::v1 as pb;
use kms_proto::v1::certificate_service_client::CertificateServiceClient;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::{ClientError, ClientOptions, call_error};

/// File names `enroll` and `renew` write into `--out-dir`.
pub mod files {
    /// The signing certificate (PEM).
    pub const SIGNING: &str = "signing.crt";
    /// The issuing CA's certificate up to the root (PEM, in order).
    pub const CHAIN: &str = "chain.pem";
    /// The encryption certificate of a dual pair (PEM).
    pub const ENCRYPTION: &str = "encryption.crt";
    /// The encryption private key, DER CMS EnvelopedData to the signing certificate.
    pub const ENCRYPTION_KEY: &str = "encryption-key.p7m";
}

/// Examples shown at the end of `--help`.
pub mod help {
    /// `kms certs --help`.
    pub const CERTS: &str = "\
Examples:
  kms certs issuer create --name city-3301-2026 --common-name \"City 3301 Transit Issuing CA 2026\" --csr-out issuer.csr
  kms certs issuer activate --name city-3301-2026 --certificate issuer.crt --chain root.crt
  kms certs token create --reader-serial R-000123 --profile reader-sign --profile reader-encrypt --ttl 24h
  kms certs enroll --endpoint https://kms.city.example:7443 --ca kms-ca.pem \\
      --csr reader.csr --token-file token.txt --dual --out-dir reader
  kms certs list --subject-contains R-000123
  kms certs revoke 4F2A09C1 --reason key-compromise
  kms certs crl --issuer city-3301-2026 --out city-3301-2026.crl

Exit status: 0 success; 1 the call failed (the message carries the gRPC status, e.g.
InvalidArgument, and the server's reason, such as validity_too_long) or a file could
not be read or written; 2 usage error.";

    /// `kms certs issuer create --help`.
    pub const ISSUER_CREATE: &str = "\
Example:
  kms certs issuer create --name city-3301-2026 --common-name \"City 3301 Transit Issuing CA 2026\" \\
      --organization \"City 3301 Transit\" --country CN --key-type ec-p384 --csr-out city-3301-2026.csr

The root signs the CSR as a CA certificate with basicConstraints=critical,CA:true,pathlen:0
and keyUsage=critical,keyCertSign,cRLSign (docs/certificates.md shows the openssl commands).";

    /// `kms certs issuer activate --help`.
    pub const ISSUER_ACTIVATE: &str = "\
Example:
  kms certs issuer activate --name city-3301-2026 --certificate city-3301-2026.crt --chain root.crt

--certificate is not --cert: --cert is your client certificate.";

    /// `kms certs token create --help`.
    pub const TOKEN_CREATE: &str = "\
Examples:
  kms certs token create --reader-serial R-000123 --profile reader-sign
  kms certs token create --reader-serial R-000123 --profile reader-sign --profile reader-encrypt \\
      --issuer city-3301-2026 --ttl 4h --json > R-000123.token.json";

    /// `kms certs enroll --help`.
    pub const ENROLL: &str = "\
Examples:
  openssl ecparam -name prime256v1 -genkey -noout -out signing.key
  openssl req -new -key signing.key -subj \"/CN=R-000123\" -out reader.csr
  kms certs enroll --endpoint https://kms.city.example:7443 --ca kms-ca.pem \\
      --csr reader.csr --token-file token.txt --dual --out-dir reader
  openssl cms -decrypt -inform DER -in reader/encryption-key.p7m -inkey signing.key \\
      -recip reader/signing.crt -out encryption-key.der

With a ministry certificate instead of a token (sign the CSR's DER bytes; -sha384 for a P-384 key):
  openssl req -in reader.csr -outform DER -out reader.csr.der
  openssl dgst -sha256 -sign ministry.key -out reader.csr.sig reader.csr.der
  kms certs enroll --endpoint https://kms.city.example:7443 --ca kms-ca.pem --csr reader.csr.der \\
      --external-cert ministry.crt --external-signature reader.csr.sig --out-dir reader";

    /// `kms certs renew --help`.
    pub const RENEW: &str = "\
Example (the current certificate and key authenticate the call):
  openssl ecparam -name prime256v1 -genkey -noout -out signing-2.key
  openssl req -new -key signing-2.key -subj \"/CN=R-000123\" -out renew.csr
  kms certs renew --endpoint https://kms.city.example:7443 --ca kms-ca.pem \\
      --cert reader/signing.crt --key signing.key --csr renew.csr --dual --out-dir reader-2";

    /// `kms certs issue --help`.
    pub const ISSUE: &str = "\
Examples:
  kms certs issue --csr web.csr --name kms.city.example --name 10.0.0.5 --out kms.crt --chain-out kms-chain.pem
  kms certs issue --csr so-2.csr --profile client-tls --role security_officer --tenant 3301 --out so-2.crt";

    /// `kms certs revoke --help`.
    pub const REVOKE: &str = "\
Examples:
  kms certs revoke 4F2A09C1 --reason key-compromise
  kms certs revoke 4f:2a:09:c1 --reason superseded --yes";

    /// `kms certs list --help`.
    pub const LIST: &str = "\
Examples:
  kms certs list --subject-contains R-000123 --all
  kms certs list --issuer city-3301-2026 --status valid --expires-within 30d
  kms certs list --status revoked --json | jq -r .serial";
}

/// An RFC 5280 §5.3.1 CRL reason, as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Reason {
    /// unspecified (0): no better reason applies.
    Unspecified,
    /// keyCompromise (1): the subject's private key is, or may be, known to someone else.
    KeyCompromise,
    /// cACompromise (2): the issuing CA's key is compromised.
    CaCompromise,
    /// affiliationChanged (3): the subject's name or relationship changed.
    AffiliationChanged,
    /// superseded (4): replaced by a new certificate.
    Superseded,
    /// cessationOfOperation (5): the reader or server is out of service.
    CessationOfOperation,
    /// certificateHold (6): suspended (the API has no way to release a hold).
    CertificateHold,
    /// privilegeWithdrawn (9): the subject may no longer do what the certificate allows.
    PrivilegeWithdrawn,
    /// aACompromise (10): an attribute authority is compromised.
    AaCompromise,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 9] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::CertificateHold,
        Reason::PrivilegeWithdrawn,
        Reason::AaCompromise,
    ];

    /// The wire value.
    pub fn to_proto(self) -> pb::RevocationReason {
        match self {
            Reason::Unspecified => pb::RevocationReason::Unspecified,
            Reason::KeyCompromise => pb::RevocationReason::KeyCompromise,
            Reason::CaCompromise => pb::RevocationReason::CaCompromise,
            Reason::AffiliationChanged => pb::RevocationReason::AffiliationChanged,
            Reason::Superseded => pb::RevocationReason::Superseded,
            Reason::CessationOfOperation => pb::RevocationReason::CessationOfOperation,
            Reason::CertificateHold => pb::RevocationReason::CertificateHold,
            Reason::PrivilegeWithdrawn => pb::RevocationReason::PrivilegeWithdrawn,
            Reason::AaCompromise => pb::RevocationReason::AaCompromise,
        }
    }

    /// The reason for a wire value, if it is one.
    pub fn from_proto(v: i32) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.to_proto() as i32 == v)
    }

    /// The command-line name (`key-compromise`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "key-compromise",
            Reason::CaCompromise => "ca-compromise",
            Reason::AffiliationChanged => "affiliation-changed",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessation-of-operation",
            Reason::CertificateHold => "certificate-hold",
            Reason::PrivilegeWithdrawn => "privilege-withdrawn",
            Reason::AaCompromise => "aa-compromise",
        }
    }
}

/// A certificate status filter, as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Status {
    /// Issued and not revoked (it may have expired).
    Valid,
    /// Revoked.
    Revoked,
}

impl Status {
    fn to_proto(self) -> pb::CertificateStatus {
        match self {
            Status::Valid => pb::CertificateStatus::Valid,
            Status::Revoked => pb::CertificateStatus::Revoked,
        }
    }
}

fn status_name(v: i32) -> String {
    match pb::CertificateStatus::try_from(v) {
        Ok(pb::CertificateStatus::Valid) => "valid".into(),
        Ok(pb::CertificateStatus::Revoked) => "revoked".into(),
        Ok(pb::CertificateStatus::Unspecified) | Err(_) => format!("unknown({v})"),
    }
}

fn issuer_state_name(v: i32) -> String {
    match pb::IssuerState::try_from(v) {
        Ok(pb::IssuerState::Pending) => "pending".into(),
        Ok(pb::IssuerState::Active) => "active".into(),
        Ok(pb::IssuerState::Retired) => "retired".into(),
        Ok(pb::IssuerState::Unspecified) | Err(_) => format!("unknown({v})"),
    }
}

/// The key type names the service knows (profiles and `--key-type`).
fn key_types() -> PossibleValuesParser {
    PossibleValuesParser::new(kms_ca::KeyType::ALL.map(kms_ca::KeyType::name))
}

/// Parses an issuer name: 1-64 of `[a-z0-9_.-]` (it is also a file name).
pub fn parse_issuer_name(s: &str) -> Result<String, ClientError> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
        && s != "."
        && s != "..";
    if ok {
        Ok(s.to_owned())
    } else {
        Err(ClientError::Usage(format!("issuer name {s:?}: expected 1-64 of [a-z0-9_.-], e.g. city-3301-2026")))
    }
}

/// Parses a subject country: two ASCII letters, returned upper-case.
pub fn parse_country(s: &str) -> Result<String, ClientError> {
    if s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(s.to_ascii_uppercase())
    } else {
        Err(ClientError::Usage(format!("country {s:?}: expected an ISO 3166 two-letter code, e.g. CN")))
    }
}

/// Parses a certificate serial number as the service spells it: upper-case
/// hex. Accepts OpenSSL's `0a:1b:...`, spaces and a `0x` prefix.
pub fn parse_serial(s: &str) -> Result<String, ClientError> {
    let hex = serial_hex(s, "serial")?;
    // why: RFC 5280 §4.1.2.2 caps serial numbers at 20 octets.
    if hex.len() > 40 {
        return Err(ClientError::Usage(format!("serial {s:?}: longer than 20 bytes (RFC 5280 §4.1.2.2)")));
    }
    Ok(hex)
}

/// Parses a serial number prefix (any number of hex digits).
pub fn parse_serial_prefix(s: &str) -> Result<String, ClientError> {
    serial_hex(s, "serial prefix")
}

fn serial_hex(s: &str, what: &str) -> Result<String, ClientError> {
    let compact: String = s.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    let digits = compact.strip_prefix("0x").or_else(|| compact.strip_prefix("0X")).unwrap_or(&compact);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClientError::Usage(format!("{what} {s:?}: expected hex, e.g. 4F2A09 or 4f:2a:09")));
    }
    Ok(digits.to_ascii_uppercase())
}

/// Parses a duration such as `90m`, `24h`, `30d` or `1d12h` (units `s`,
/// `m`, `h`, `d`, `w`). A bare number is refused: seconds or days?
pub fn parse_duration(s: &str) -> Result<Duration, ClientError> {
    let bad = |why: &str| ClientError::Usage(format!("duration {s:?}: {why} (expected e.g. 90m, 24h, 30d or 1d12h)"));
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad(&format!("unknown unit {c:?}"))),
        };
        if digits.is_empty() {
            return Err(bad(&format!("{c:?} without a number before it")));
        }
        let n: u64 = digits.parse().map_err(|_| bad("too long"))?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(|| bad("too long"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad("a number without a unit"));
    }
    if total == 0 {
        return Err(bad("must be longer than zero"));
    }
    Ok(Duration::from_secs(total))
}

/// Parses a point in time: a date `YYYY-MM-DD` (00:00 UTC that day) or an
/// RFC 3339 time (`2026-12-31T12:00:00Z`, `2026-12-31T20:00:00+08:00`).
/// Returns Unix seconds.
pub fn parse_instant(s: &str) -> Result<i64, ClientError> {
    let bad = || {
        ClientError::Usage(format!(
            "time {s:?}: expected a date YYYY-MM-DD or an RFC 3339 time such as 2026-12-31T12:00:00Z"
        ))
    };
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month: u8 = m.parse().map_err(|_| bad())?;
    let day: u8 = d.parse().map_err(|_| bad())?;
    let month = Month::try_from(month).map_err(|_| bad())?;
    let date = Date::from_calendar_date(year, month, day).map_err(|_| bad())?;
    Ok(date.midnight().assume_utc().unix_timestamp())
}

/// The `subject` filter of `ListCertificates`: an exact DN, or `~` and a
/// substring.
pub fn subject_filter(exact: Option<&str>, contains: Option<&str>) -> Result<String, ClientError> {
    match (exact, contains) {
        (Some(_), Some(_)) => Err(ClientError::Usage("give --subject or --subject-contains, not both".into())),
        // why: the API reads a leading "~" as "substring"; an exact DN that
        // starts with one would silently become a substring search.
        (Some(s), None) if s.starts_with('~') => Err(ClientError::Usage(format!(
            "--subject {s:?} starts with \"~\", which the service reads as a substring search; use --subject-contains"
        ))),
        (Some(s), None) => Ok(s.to_owned()),
        (None, Some("")) => Err(ClientError::Usage("--subject-contains is empty".into())),
        (None, Some(s)) => Ok(format!("~{s}")),
        (None, None) => Ok(String::new()),
    }
}

/// Seconds since the Unix epoch, by this machine's clock.
fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix seconds as RFC 3339 in UTC (`2026-11-21T08:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

/// A time for a table: `-` when unset (0).
fn time_cell(secs: i64) -> String {
    if secs == 0 { "-".into() } else { rfc3339(secs) }
}

/// A time for JSON: `null` when unset (0).
fn time_json(secs: i64) -> Value {
    if secs == 0 { Value::Null } else { Value::String(rfc3339(secs)) }
}

/// DER as PEM with the given label (RFC 7468: base64 in lines of 64).
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Standard base64 with padding (RFC 4648 §4).
// why: no base64 encoder is a direct dependency of kms, and PEM output is
// all this needs; rustls-pki-types only decodes.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let mut b = [0u8; 3];
        b[..chunk.len()].copy_from_slice(chunk);
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (n >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn is_pem(bytes: &[u8]) -> bool {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    bytes[start..].starts_with(b"-----BEGIN ")
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read { what, path: path.to_owned(), source })
}

/// Reads a PKCS#10 CSR, PEM or DER, and returns its DER.
///
/// The CSR goes to the service as DER: an external credential's signature
/// covers the CSR's DER bytes, so that is what must be sent.
pub fn read_csr(path: &Path) -> Result<Vec<u8>, ClientError> {
    let bytes = read_file("CSR", path)?;
    csr_der(&bytes).map_err(|why| ClientError::Usage(format!("--csr {}: {why}", path.display())))
}

fn csr_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if is_pem(bytes) {
        return CertificateSigningRequestDer::from_pem_slice(bytes)
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| format!("not a PEM CERTIFICATE REQUEST: {e}"));
    }
    // why: every DER CSR is a SEQUENCE (0x30); anything else is the wrong file.
    if bytes.first() == Some(&0x30) { Ok(bytes.to_vec()) } else { Err("neither a PEM nor a DER CSR".into()) }
}

/// Reads certificates, PEM (one or more) or DER (one), as DER.
fn read_certificates(flag: &str, path: &Path) -> Result<Vec<Vec<u8>>, ClientError> {
    let bytes = read_file("certificate file", path)?;
    certificates_der(&bytes).map_err(|why| ClientError::Usage(format!("{flag} {}: {why}", path.display())))
}

fn certificates_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if is_pem(bytes) {
        let certs = CertificateDer::pem_slice_iter(bytes)
            .map(|c| c.map(|c| c.as_ref().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad PEM: {e}"))?;
        if certs.is_empty() {
            return Err("no CERTIFICATE in the PEM file".into());
        }
        return Ok(certs);
    }
    if bytes.first() == Some(&0x30) { Ok(vec![bytes.to_vec()]) } else { Err("neither PEM nor DER".into()) }
}

/// Writes a file, readable only by its owner when `private`.
fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), ClientError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.flush()))
        .map_err(|source| ClientError::Write { what: path.display().to_string(), source })
}

/// Makes sure files can be created in `dir` (creating it if needed) before
/// a call whose answer cannot be asked for twice.
fn check_writable_dir(dir: &Path) -> Result<(), ClientError> {
    let err = |source| ClientError::Write { what: dir.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".kms-write-check");
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&probe).map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)
}

/// The directory a file will be written to.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Where `kms certs enroll` connects: the server and the CA that signed its
/// TLS certificate. No client certificate: a reader being enrolled has none.
#[derive(Debug, Clone)]
pub struct EnrollServer {
    /// `https://host:port`.
    pub endpoint: String,
    /// CA certificate that signed the server's certificate (PEM).
    pub ca: PathBuf,
    /// Name to check in the server certificate; defaults to the endpoint's host.
    pub server_name: Option<String>,
}

/// A client profile as `enroll` reads it: `cert` and `key` may be present
/// (an operator's `client.toml`) but are not used.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerProfile {
    endpoint: String,
    ca: PathBuf,
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default, rename = "cert")]
    _cert: Option<PathBuf>,
    #[serde(default, rename = "key")]
    _key: Option<PathBuf>,
}

impl EnrollServer {
    /// From `--endpoint` and `--ca`, else from a client profile (default
    /// `kms-dev/client.toml`), of which only `endpoint`, `ca` and
    /// `server_name` are used.
    pub fn resolve(
        profile: Option<&Path>,
        endpoint: Option<&str>,
        ca: Option<&Path>,
    ) -> Result<EnrollServer, ClientError> {
        match (endpoint, ca) {
            (Some(endpoint), Some(ca)) => {
                Ok(EnrollServer { endpoint: endpoint.to_owned(), ca: ca.to_owned(), server_name: None })
            }
            (Some(_), None) => Err(ClientError::Usage("--endpoint needs --ca".into())),
            (None, _) => EnrollServer::from_file(profile.unwrap_or(Path::new("kms-dev/client.toml"))),
        }
    }

    /// Reads a client profile; a relative `ca` is taken relative to the file.
    pub fn from_file(path: &Path) -> Result<EnrollServer, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::Read {
            what: "client profile",
            path: path.to_owned(),
            source,
        })?;
        let p: ServerProfile =
            toml::from_str(&text).map_err(|e| ClientError::Usage(format!("client profile {}: {e}", path.display())))?;
        let ca = if p.ca.is_relative() { path.parent().unwrap_or(Path::new(".")).join(&p.ca) } else { p.ca };
        Ok(EnrollServer { endpoint: p.endpoint, ca, server_name: p.server_name })
    }

    /// Opens a TLS channel that checks the server but presents no client certificate.
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        let ca = read_file("CA certificate", &self.ca)?;
        let mut tls = ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| ClientError::Usage(format!("endpoint {:?}: {e}", self.endpoint)))?
            .tls_config(tls)
            .map_err(|source| ClientError::Connect { endpoint: self.endpoint.clone(), source })?
            .connect_timeout(Duration::from_secs(10));
        endpoint.connect().await.map_err(|source| ClientError::Connect { endpoint: self.endpoint.clone(), source })
    }
}

/// `kms certs issuer create`.
#[derive(Debug, Clone, Args)]
pub struct IssuerCreateArgs {
    /// Issuer name (1-64 of [a-z0-9_.-], e.g. city-3301-2026); also its CRL's file name.
    #[arg(long, value_parser = parse_issuer_name)]
    pub name: String,
    /// Subject common name (CN) of the issuing CA.
    #[arg(long)]
    pub common_name: String,
    /// Subject organization (O).
    #[arg(long)]
    pub organization: Option<String>,
    /// Subject country (C), two letters.
    #[arg(long, value_parser = parse_country)]
    pub country: Option<String>,
    /// Type of the key pair the HSM generates for the issuing CA.
    #[arg(long, default_value = "ec-p256", value_parser = key_types())]
    pub key_type: String,
    /// Where to write the CSR (PEM) for the offline root to sign.
    #[arg(long, value_name = "FILE")]
    pub csr_out: PathBuf,
}

/// `kms certs issuer activate`.
#[derive(Debug, Clone, Args)]
pub struct IssuerActivateArgs {
    /// The pending issuer.
    #[arg(long, value_parser = parse_issuer_name)]
    pub name: String,
    /// The issuing CA's certificate the root signed (PEM or DER).
    // why: not --cert, which is the client certificate to connect with.
    #[arg(long, value_name = "FILE")]
    pub certificate: PathBuf,
    /// The chain above it up to and including the root: PEM, or concatenated
    /// DER certificates, each signing the one before.
    #[arg(long, value_name = "FILE")]
    pub chain: PathBuf,
}

/// `kms certs issuer retire`.
#[derive(Debug, Clone, Args)]
pub struct IssuerRetireArgs {
    /// The active issuer to retire.
    #[arg(long, value_parser = parse_issuer_name)]
    pub name: String,
    /// Do not ask for confirmation (required when standard input is not a terminal).
    #[arg(long)]
    pub yes: bool,
}

/// `kms certs token create`.
#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    /// The reader's serial: its CSR's subject CN or serialNumber must equal it.
    #[arg(long)]
    pub reader_serial: String,
    /// Certificate profile the token may be used with; repeat for a dual
    /// enrollment (--profile reader-sign --profile reader-encrypt).
    #[arg(long = "profile", value_name = "PROFILE", required = true)]
    pub profiles: Vec<String>,
    /// Issuer to enroll under (default: the newest active issuer now; the
    /// token stays bound to it).
    #[arg(long, value_parser = parse_issuer_name)]
    pub issuer: Option<String>,
    /// Lifetime, e.g. 30m, 24h, 7d (default: the service's ca.token_default_ttl_secs;
    /// longer than ca.token_max_ttl_secs is refused).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
}

/// `kms certs enroll`.
#[derive(Clone, Args)]
#[command(group(ArgGroup::new("authorization").args(["token", "token_file", "external_cert"])))]
pub struct EnrollArgs {
    /// The reader's CSR for its signing key (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub csr: PathBuf,
    /// The enrollment token itself. Visible in the process list and shell
    /// history: prefer --token-file or the prompt (neither flag given).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// File holding the enrollment token (- reads standard input).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Instead of a token: a certificate of a trusted external CA (PEM, the
    /// certificate then any intermediates; or one DER certificate).
    #[arg(long, value_name = "FILE", requires = "external_signature")]
    pub external_cert: Option<PathBuf>,
    /// Signature over the CSR's DER bytes with the external certificate's key
    /// (ECDSA: DER Ecdsa-Sig-Value with the curve's hash; RSA: PKCS#1 v1.5
    /// SHA-256), as a binary file, e.g. from openssl dgst -sha256 -sign.
    #[arg(long, value_name = "FILE", requires = "external_cert")]
    pub external_signature: Option<PathBuf>,
    /// Also issue an encryption certificate; the service generates its key
    /// and returns it enveloped to the signing certificate.
    #[arg(long)]
    pub dual: bool,
    /// Signing profile (default: reader-sign).
    #[arg(long)]
    pub profile: Option<String>,
    /// Encryption profile with --dual (default: reader-encrypt).
    #[arg(long, requires = "dual")]
    pub encryption_profile: Option<String>,
    /// Requested validity in days (default: the profile's; more than the
    /// profile's maximum is refused, validity_too_long). The certificate
    /// ends no later than its issuing CA's certificate.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub validity_days: Option<u32>,
    /// Directory to write signing.crt, chain.pem and, with --dual,
    /// encryption.crt and encryption-key.p7m into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

impl std::fmt::Debug for EnrollArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollArgs")
            .field("csr", &self.csr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("external_cert", &self.external_cert)
            .field("external_signature", &self.external_signature)
            .field("dual", &self.dual)
            .field("profile", &self.profile)
            .field("encryption_profile", &self.encryption_profile)
            .field("validity_days", &self.validity_days)
            .field("out_dir", &self.out_dir)
            .finish()
    }
}

/// `kms certs renew`.
#[derive(Debug, Clone, Args)]
pub struct RenewArgs {
    /// CSR for the new key, with the same subject as the current certificate (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub csr: PathBuf,
    /// Also renew the paired encryption certificate, with a new service-generated key.
    #[arg(long)]
    pub dual: bool,
    /// Directory to write the new files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// `kms certs issue`.
#[derive(Debug, Clone, Args)]
pub struct IssueArgs {
    /// The CSR (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub csr: PathBuf,
    /// Certificate profile: server-tls (default), client-tls, sub-ca, or another the service loaded.
    #[arg(long)]
    pub profile: Option<String>,
    /// DNS name or IP address to put in the certificate (server-tls); repeat for more.
    #[arg(long = "name", value_name = "DNS|IP")]
    pub names: Vec<String>,
    /// Role the certificate carries (client-tls), e.g. operator; the profile lists the roles allowed.
    #[arg(long)]
    pub role: Option<String>,
    /// Tenant the certificate carries (client-tls), e.g. 3301.
    #[arg(long, requires = "role")]
    pub tenant: Option<String>,
    /// Issuer (default: the newest active issuer).
    #[arg(long, value_parser = parse_issuer_name)]
    pub issuer: Option<String>,
    /// Requested validity in days (default: the profile's; more than the
    /// profile's maximum is refused, validity_too_long). The certificate
    /// ends no later than its issuing CA's certificate.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub validity_days: Option<u32>,
    /// Where to write the certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Where to write the chain, issuing CA up to the root (PEM).
    #[arg(long, value_name = "FILE")]
    pub chain_out: Option<PathBuf>,
}

/// `kms certs revoke`.
#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    /// Serial number, hex (OpenSSL's 0a:1b:... form is accepted).
    #[arg(value_parser = parse_serial)]
    pub serial: String,
    /// RFC 5280 reason.
    #[arg(long, value_enum)]
    pub reason: Reason,
    /// Do not ask for confirmation (required when standard input is not a terminal).
    #[arg(long)]
    pub yes: bool,
}

/// `kms certs get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Serial number, hex.
    #[arg(value_parser = parse_serial)]
    pub serial: String,
    /// Also write the certificate (PEM) to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `kms certs list`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("subject_filter").args(["subject", "subject_contains"])))]
#[command(group(ArgGroup::new("expiry").args(["expires_before", "expires_within"])))]
pub struct ListArgs {
    /// Only this exact subject DN (RFC 4514, e.g. "CN=R-000123,O=City 3301 Transit").
    #[arg(long, value_name = "DN")]
    pub subject: Option<String>,
    /// Only subjects containing this text.
    #[arg(long, value_name = "TEXT")]
    pub subject_contains: Option<String>,
    /// Only serial numbers starting with these hex digits.
    #[arg(long, value_parser = parse_serial_prefix)]
    pub serial_prefix: Option<String>,
    /// Only valid (not revoked) or only revoked certificates.
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    /// Only certificates of this issuer.
    #[arg(long, value_parser = parse_issuer_name)]
    pub issuer: Option<String>,
    /// Only certificates expiring before this date (YYYY-MM-DD, 00:00 UTC) or RFC 3339 time.
    #[arg(long, value_name = "DATE", value_parser = parse_instant)]
    pub expires_before: Option<i64>,
    /// Only certificates expiring within this time from now, e.g. 30d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires_within: Option<Duration>,
    /// Include certificates that have already expired (left out by default).
    #[arg(long)]
    pub all: bool,
    /// Certificates per request, 1-500 (default: the server's, 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub page_size: Option<u32>,
    /// Stop after this many certificates (default: follow the pages to the end).
    #[arg(long)]
    pub limit: Option<u64>,
}

/// `kms certs chain`.
#[derive(Debug, Clone, Args)]
pub struct ChainArgs {
    /// Issuer (default: the newest active issuer).
    #[arg(long, value_parser = parse_issuer_name)]
    pub issuer: Option<String>,
    /// Write the chain (PEM) to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `kms certs crl`.
#[derive(Debug, Clone, Args)]
pub struct CrlArgs {
    /// Issuer whose current CRL to fetch.
    #[arg(long, value_parser = parse_issuer_name)]
    pub issuer: String,
    /// Write the CRL (DER) to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// One `kms certs` command that connects with a client certificate, parsed.
#[derive(Debug, Clone)]
pub enum CertsCommand {
    /// Generate an issuing CA's key in the HSM and write its CSR.
    IssuerCreate(IssuerCreateArgs),
    /// Install a pending issuer's root-signed certificate.
    IssuerActivate(IssuerActivateArgs),
    /// Stop an issuer issuing.
    IssuerRetire(IssuerRetireArgs),
    /// List issuers.
    IssuerList,
    /// List the certificate profiles the service loaded.
    Profiles,
    /// Make a one-time enrollment token for a reader.
    TokenCreate(TokenCreateArgs),
    /// Renew the caller's own certificate.
    Renew(RenewArgs),
    /// Issue a server, client or sub-CA certificate.
    Issue(IssueArgs),
    /// Revoke a certificate.
    Revoke(RevokeArgs),
    /// Show one certificate.
    Get(GetArgs),
    /// List certificates.
    List(ListArgs),
    /// Fetch an issuer's chain.
    Chain(ChainArgs),
    /// Fetch an issuer's current CRL.
    Crl(CrlArgs),
}

type Client = CertificateServiceClient<Channel>;

async fn client(opts: &ClientOptions) -> Result<Client, ClientError> {
    Ok(CertificateServiceClient::new(opts.connect().await?))
}

/// Runs one `kms certs` command over mutual TLS and returns what to print.
pub async fn run(opts: &ClientOptions, json: bool, command: CertsCommand) -> Result<String, ClientError> {
    match command {
        CertsCommand::IssuerCreate(a) => issuer_create(opts, json, a).await,
        CertsCommand::IssuerActivate(a) => {
            let certificate = read_file("issuer certificate", &a.certificate)?;
            let chain = read_file("chain", &a.chain)?;
            let issuer = client(opts)
                .await?
                .activate_issuer(pb::ActivateIssuerRequest { name: a.name, certificate, chain })
                .await
                .map_err(|e| call_error("ActivateIssuer", e))?
                .into_inner();
            Ok(show_issuers(&[issuer], json))
        }
        CertsCommand::IssuerRetire(a) => {
            refuse_unconfirmed_script(a.yes, &format!("retire issuer {}", a.name))?;
            let mut c = client(opts).await?;
            if !a.yes {
                let issuers =
                    c.list_issuers(pb::ListIssuersRequest {}).await.map_err(|e| call_error("ListIssuers", e))?;
                let summary = match issuers.into_inner().issuers.into_iter().find(|i| i.name == a.name) {
                    Some(i) => show_issuers(&[i], false),
                    None => format!("issuer {} (not listed)\n", a.name),
                };
                confirm(
                    &summary,
                    "This stops the issuer issuing certificates; it keeps publishing CRLs until its last \
                     certificate expires. The API has no way to make it active again.",
                    &a.name,
                )?;
            }
            let issuer = c
                .retire_issuer(pb::RetireIssuerRequest { name: a.name })
                .await
                .map_err(|e| call_error("RetireIssuer", e))?
                .into_inner();
            Ok(show_issuers(&[issuer], json))
        }
        CertsCommand::IssuerList => {
            let r = client(opts)
                .await?
                .list_issuers(pb::ListIssuersRequest {})
                .await
                .map_err(|e| call_error("ListIssuers", e))?
                .into_inner();
            if !json && r.issuers.is_empty() {
                return Ok("no issuers\n".into());
            }
            Ok(show_issuers(&r.issuers, json))
        }
        CertsCommand::Profiles => {
            let r = client(opts)
                .await?
                .list_certificate_profiles(pb::ListCertificateProfilesRequest {})
                .await
                .map_err(|e| call_error("ListCertificateProfiles", e))?
                .into_inner();
            Ok(show_profiles(&r.profiles, json))
        }
        CertsCommand::TokenCreate(a) => {
            let r = client(opts)
                .await?
                .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                    reader_serial: a.reader_serial.clone(),
                    profiles: a.profiles.clone(),
                    issuer: a.issuer.clone().unwrap_or_default(),
                    ttl_seconds: a.ttl.map_or(0, |d| d.as_secs()),
                })
                .await
                .map_err(|e| call_error("CreateEnrollmentToken", e))?
                .into_inner();
            Ok(show_token(&r, &a, json))
        }
        CertsCommand::Renew(a) => {
            let csr = read_csr(&a.csr)?;
            check_writable_dir(&a.out_dir)?;
            let r = client(opts)
                .await?
                .renew_certificate(pb::RenewCertificateRequest { csr, dual: a.dual })
                .await
                .map_err(|e| call_error("RenewCertificate", e))?
                .into_inner();
            save_enrollment("RenewCertificate", &r, a.dual, &a.out_dir, json)
        }
        CertsCommand::Issue(a) => issue(opts, json, a).await,
        CertsCommand::Revoke(a) => {
            refuse_unconfirmed_script(a.yes, &format!("revoke certificate {}", a.serial))?;
            let mut c = client(opts).await?;
            if !a.yes {
                let current = get(&mut c, &a.serial).await?;
                confirm(
                    &certificate_detail(&current, now_secs()),
                    &format!(
                        "This revokes the certificate ({}) and publishes a new CRL; it cannot be undone.",
                        a.reason.name()
                    ),
                    &current.serial,
                )?;
            }
            let cert = c
                .revoke_certificate(pb::RevokeCertificateRequest {
                    serial: a.serial,
                    reason: a.reason.to_proto() as i32,
                })
                .await
                .map_err(|e| call_error("RevokeCertificate", e))?
                .into_inner();
            Ok(show_certificate(&cert, json))
        }
        CertsCommand::Get(a) => {
            let cert = get(&mut client(opts).await?, &a.serial).await?;
            let mut out = show_certificate(&cert, json);
            if let Some(path) = &a.out {
                write_file(path, pem("CERTIFICATE", &cert.der).as_bytes(), false)?;
                if !json {
                    out.push_str(&format!("written to {}\n", path.display()));
                }
            }
            Ok(out)
        }
        CertsCommand::List(a) => {
            let subject = subject_filter(a.subject.as_deref(), a.subject_contains.as_deref())?;
            list(&mut client(opts).await?, subject, a, json).await
        }
        CertsCommand::Chain(a) => {
            let r = client(opts)
                .await?
                .get_ca_chain(pb::GetCaChainRequest { issuer: a.issuer.clone().unwrap_or_default() })
                .await
                .map_err(|e| call_error("GetCaChain", e))?
                .into_inner();
            show_chain(&r, a.out.as_deref(), json)
        }
        CertsCommand::Crl(a) => {
            let r = client(opts)
                .await?
                .get_crl(pb::GetCrlRequest { issuer: a.issuer.clone() })
                .await
                .map_err(|e| call_error("GetCrl", e))?
                .into_inner();
            if let Some(path) = &a.out {
                write_file(path, &r.crl, false)?;
            }
            Ok(show_crl(&a.issuer, &r, a.out.as_deref(), json))
        }
    }
}

async fn issuer_create(opts: &ClientOptions, json: bool, a: IssuerCreateArgs) -> Result<String, ClientError> {
    // why: the CSR exists only in this answer; make sure it can be kept
    // before the HSM generates a key for it.
    check_writable_dir(parent_dir(&a.csr_out))?;
    let r = client(opts)
        .await?
        .create_issuer(pb::CreateIssuerRequest {
            name: a.name.clone(),
            common_name: a.common_name,
            organization: a.organization.unwrap_or_default(),
            country: a.country.unwrap_or_default(),
            key_type: a.key_type,
        })
        .await
        .map_err(|e| call_error("CreateIssuer", e))?
        .into_inner();
    let csr_pem = pem("CERTIFICATE REQUEST", &r.csr);
    if let Err(e) = write_file(&a.csr_out, csr_pem.as_bytes(), false) {
        // why: the issuer and its HSM key exist now; losing the CSR would
        // leave a pending issuer nobody can activate.
        eprintln!("kms: could not write the CSR; here it is:\n{csr_pem}");
        return Err(e);
    }
    let issuer = r.issuer.unwrap_or_default();
    if json {
        let mut v = issuer_json(&issuer);
        v["csr_file"] = json!(a.csr_out.display().to_string());
        return Ok(format!("{v}\n"));
    }
    let mut out = show_issuers(std::slice::from_ref(&issuer), false);
    out.push_str(&format!(
        "\nCSR written to {csr}. Have the root sign it as a CA certificate (basicConstraints CA:true, \
         pathlen:0; keyUsage keyCertSign, cRLSign), then:\n  \
         kms certs issuer activate --name {name} --certificate ISSUER.crt --chain ROOT-CHAIN.pem\n",
        csr = a.csr_out.display(),
        name = a.name,
    ));
    Ok(out)
}

async fn issue(opts: &ClientOptions, json: bool, a: IssueArgs) -> Result<String, ClientError> {
    let csr = read_csr(&a.csr)?;
    check_writable_dir(parent_dir(&a.out))?;
    let r = client(opts)
        .await?
        .issue_server_certificate(pb::IssueServerCertificateRequest {
            csr,
            profile: a.profile.unwrap_or_default(),
            issuer: a.issuer.unwrap_or_default(),
            names: a.names,
            role: a.role.unwrap_or_default(),
            tenant: a.tenant.unwrap_or_default(),
            validity_days: a.validity_days.unwrap_or(0),
        })
        .await
        .map_err(|e| call_error("IssueServerCertificate", e))?
        .into_inner();
    let cert = r.certificate.unwrap_or_default();
    write_file(&a.out, pem("CERTIFICATE", &cert.der).as_bytes(), false)?;
    if let Some(path) = &a.chain_out {
        write_file(path, chain_pem(&r.chain).as_bytes(), false)?;
    }
    if json {
        let mut v = certificate_json(&cert);
        v["file"] = json!(a.out.display().to_string());
        v["chain_file"] = a.chain_out.as_ref().map_or(Value::Null, |p| json!(p.display().to_string()));
        return Ok(format!("{v}\n"));
    }
    let mut out = certificate_detail(&cert, now_secs());
    out.push_str(&format!("\ncertificate written to {}\n", a.out.display()));
    if let Some(path) = &a.chain_out {
        out.push_str(&format!("chain ({} certificates) written to {}\n", r.chain.len(), path.display()));
    }
    Ok(out)
}

async fn get(client: &mut Client, serial: &str) -> Result<pb::Certificate, ClientError> {
    Ok(client
        .get_certificate(pb::GetCertificateRequest { serial: serial.to_owned() })
        .await
        .map_err(|e| call_error("GetCertificate", e))?
        .into_inner())
}

async fn list(client: &mut Client, subject: String, a: ListArgs, json: bool) -> Result<String, ClientError> {
    let now = now_secs();
    let expires_before = match (a.expires_before, a.expires_within) {
        (Some(t), _) => t,
        (None, Some(d)) => now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        (None, None) => 0,
    };
    let limit = a.limit.unwrap_or(u64::MAX);
    let mut certs = Vec::new();
    let mut hidden = 0u64;
    let mut page_token = String::new();
    while (certs.len() as u64) < limit {
        let page = client
            .list_certificates(pb::ListCertificatesRequest {
                subject: subject.clone(),
                serial_prefix: a.serial_prefix.clone().unwrap_or_default(),
                status: a.status.map_or(pb::CertificateStatus::Unspecified, Status::to_proto) as i32,
                issuer: a.issuer.clone().unwrap_or_default(),
                expires_before,
                page_size: a.page_size.unwrap_or(0),
                page_token: page_token.clone(),
            })
            .await
            .map_err(|e| call_error("ListCertificates", e))?
            .into_inner();
        for c in page.certificates {
            if (certs.len() as u64) >= limit {
                break;
            }
            if !a.all && is_expired(&c, now) {
                hidden += 1;
            } else {
                certs.push(c);
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        if page.next_page_token == page_token {
            return Err(ClientError::Protocol {
                rpc: "ListCertificates",
                message: "the same page token came back twice".into(),
            });
        }
        page_token = page.next_page_token;
    }
    if json {
        return Ok(show_certificates(&certs, true, now));
    }
    let mut out = if certs.is_empty() { "no certificates\n".to_owned() } else { show_certificates(&certs, false, now) };
    if hidden > 0 {
        out.push_str(&format!("({hidden} expired not shown; --all shows them)\n"));
    }
    Ok(out)
}

fn is_expired(c: &pb::Certificate, now: i64) -> bool {
    c.not_after != 0 && c.not_after < now
}

/// `kms certs enroll`: a reader's certificates for its CSR, authorized by an
/// enrollment token or an external certificate, over TLS without a client
/// certificate. Returns what to print.
pub async fn enroll(server: &EnrollServer, json: bool, a: EnrollArgs) -> Result<String, ClientError> {
    let csr = read_csr(&a.csr)?;
    let authorization = match (&a.external_cert, &a.external_signature) {
        (Some(cert), Some(signature)) => {
            let certificates = read_certificates("--external-cert", cert)?;
            let csr_signature = read_file("external signature", signature)?;
            if csr_signature.is_empty() {
                return Err(ClientError::Usage(format!("--external-signature {} is empty", signature.display())));
            }
            pb::enroll_reader_request::Authorization::External(pb::ExternalCredential { certificates, csr_signature })
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(ClientError::Usage("--external-cert and --external-signature go together".into()));
        }
        (None, None) => {
            let token = enrollment_token(a.token.as_deref(), a.token_file.as_deref())?;
            // why: the one place the token becomes a plain string: the wire
            // message carries it so.
            pb::enroll_reader_request::Authorization::Token(token.expose_secret().to_owned())
        }
    };
    // why: a token is consumed and an encryption key generated only once;
    // find out now, not after the call, whether the answer can be kept.
    check_writable_dir(&a.out_dir)?;
    let mut c = CertificateServiceClient::new(server.connect().await?);
    let r = c
        .enroll_reader(pb::EnrollReaderRequest {
            csr,
            authorization: Some(authorization),
            profile: a.profile.unwrap_or_default(),
            dual: a.dual,
            encryption_profile: a.encryption_profile.unwrap_or_default(),
            validity_days: a.validity_days.unwrap_or(0),
        })
        .await
        .map_err(|e| call_error("EnrollReader", e))?
        .into_inner();
    save_enrollment("EnrollReader", &r, a.dual, &a.out_dir, json)
}

/// The enrollment token from `--token` (with a warning), `--token-file`
/// (`-`: standard input) or, with neither, a prompt that does not echo.
fn enrollment_token(flag: Option<&str>, file: Option<&Path>) -> Result<SecretString, ClientError> {
    let text = match (flag, file) {
        (Some(t), _) => {
            eprintln!(
                "kms: warning: --token leaves the enrollment token in your shell history and the process list; \
                 prefer --token-file or the prompt"
            );
            zeroize::Zeroizing::new(t.to_owned())
        }
        (None, Some(path)) => read_token_file(path)?,
        (None, None) => prompt_token()?,
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(ClientError::Usage("the enrollment token is empty".into()));
    }
    Ok(SecretString::from(token.to_owned()))
}

/// Reads the token from a file, or standard input for `-`.
fn read_token_file(path: &Path) -> Result<zeroize::Zeroizing<String>, ClientError> {
    let mut text = zeroize::Zeroizing::new(String::new());
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|source| ClientError::Read { what: "enrollment token", path: path.to_owned(), source })?;
    Ok(text)
}

/// Asks for the token on the terminal with echo off.
fn prompt_token() -> Result<zeroize::Zeroizing<String>, ClientError> {
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Usage(
            "no enrollment token: give --token-file FILE (or --token-file - to read standard input), \
             or run on a terminal to be asked for it"
                .into(),
        ));
    }
    let write_err = |source| ClientError::Write { what: "standard error".into(), source };
    let mut err = std::io::stderr();
    err.write_all(b"Enrollment token (not echoed): ").and_then(|()| err.flush()).map_err(write_err)?;
    let answer = {
        let _echo = EchoOff::new()?;
        let mut s = zeroize::Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut s).map_err(|source| ClientError::Read {
            what: "enrollment token",
            path: PathBuf::from("<stdin>"),
            source,
        })?;
        s
    };
    err.write_all(b"\n").map_err(write_err)?;
    Ok(answer)
}

/// Terminal echo turned off for as long as this lives.
// why: no terminal crate is a dependency; stty(1) is POSIX and acts on the
// terminal it inherits as standard input.
struct EchoOff;

impl EchoOff {
    fn new() -> Result<EchoOff, ClientError> {
        match std::process::Command::new("stty").arg("-echo").stdin(std::process::Stdio::inherit()).status() {
            Ok(s) if s.success() => Ok(EchoOff),
            Ok(_) | Err(_) => Err(ClientError::Usage(
                "cannot turn off terminal echo (stty -echo failed); give --token-file FILE instead".into(),
            )),
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // Nothing more can be done if this fails; the user can type `stty echo`.
        let _ = std::process::Command::new("stty").arg("echo").stdin(std::process::Stdio::inherit()).status();
    }
}

/// Writes what `EnrollReader` or `RenewCertificate` returned into `dir`
/// and says what was written.
fn save_enrollment(
    rpc: &'static str,
    r: &pb::EnrollReaderResponse,
    dual: bool,
    dir: &Path,
    json: bool,
) -> Result<String, ClientError> {
    let written = write_enrollment(rpc, r, dual, dir)?;
    Ok(show_enrollment(r, &written, json))
}

/// Paths of the files an enrollment wrote.
#[derive(Debug, Default, PartialEq, Eq)]
struct Written {
    signing: PathBuf,
    chain: PathBuf,
    encryption: Option<PathBuf>,
    encryption_key: Option<PathBuf>,
}

fn write_enrollment(
    rpc: &'static str,
    r: &pb::EnrollReaderResponse,
    dual: bool,
    dir: &Path,
) -> Result<Written, ClientError> {
    let Some(signing) = &r.signing else {
        return Err(ClientError::Protocol { rpc, message: "no signing certificate in the answer".into() });
    };
    let mut written =
        Written { signing: dir.join(files::SIGNING), chain: dir.join(files::CHAIN), ..Written::default() };
    // The envelope first: unlike the certificates, it cannot be fetched again.
    if !r.encryption_key_envelope.is_empty() {
        let path = dir.join(files::ENCRYPTION_KEY);
        write_file(&path, &r.encryption_key_envelope, true)?;
        written.encryption_key = Some(path);
    }
    if let Some(enc) = &r.encryption {
        let path = dir.join(files::ENCRYPTION);
        write_file(&path, pem("CERTIFICATE", &enc.certificate.clone().unwrap_or_default().der).as_bytes(), false)?;
        written.encryption = Some(path);
    }
    write_file(
        &written.signing,
        pem("CERTIFICATE", &signing.certificate.clone().unwrap_or_default().der).as_bytes(),
        false,
    )?;
    write_file(&written.chain, chain_pem(&signing.chain).as_bytes(), false)?;
    if dual && (written.encryption.is_none() || written.encryption_key.is_none()) {
        return Err(ClientError::Protocol {
            rpc,
            message: format!(
                "--dual was asked but the answer lacks the encryption certificate or its key; the signing \
                 certificate was written to {}",
                written.signing.display()
            ),
        });
    }
    Ok(written)
}

fn chain_pem(chain: &[Vec<u8>]) -> String {
    chain.iter().map(|der| pem("CERTIFICATE", der)).collect()
}

fn show_enrollment(r: &pb::EnrollReaderResponse, w: &Written, json: bool) -> String {
    let signing = r.signing.clone().unwrap_or_default();
    let signing_cert = signing.certificate.unwrap_or_default();
    let encryption_cert = r.encryption.clone().and_then(|e| e.certificate);
    let path = |p: &Path| p.display().to_string();
    if json {
        let mut v = json!({
            "signing": certificate_json(&signing_cert),
            "signing_file": path(&w.signing),
            "chain_file": path(&w.chain),
            "encryption": encryption_cert.as_ref().map_or(Value::Null, certificate_json),
            "encryption_file": w.encryption.as_deref().map_or(Value::Null, |p| json!(path(p))),
            "encryption_key_file": w.encryption_key.as_deref().map_or(Value::Null, |p| json!(path(p))),
        });
        if let Value::Object(m) = &mut v {
            m.retain(|_, x| !x.is_null());
        }
        return format!("{v}\n");
    }
    let mut rows = vec![["WHAT", "SERIAL", "NOT AFTER", "FILE"].map(String::from).to_vec()];
    rows.push(vec![
        "signing certificate".into(),
        signing_cert.serial.clone(),
        time_cell(signing_cert.not_after),
        path(&w.signing),
    ]);
    if let (Some(c), Some(p)) = (&encryption_cert, &w.encryption) {
        rows.push(vec!["encryption certificate".into(), c.serial.clone(), time_cell(c.not_after), path(p)]);
    }
    if let Some(p) = &w.encryption_key {
        rows.push(vec!["encryption key (CMS)".into(), "-".into(), "-".into(), path(p)]);
    }
    rows.push(vec![format!("chain ({} certificates)", signing.chain.len()), "-".into(), "-".into(), path(&w.chain)]);
    let mut out = format!("subject {}\n", signing_cert.subject);
    out.push_str(&table(&rows));
    if let Some(p) = &w.encryption_key {
        out.push_str(&format!(
            "\nThe encryption key is enveloped to the signing certificate. Open it with the signing key:\n  \
             openssl cms -decrypt -inform DER -in {} -inkey SIGNING-KEY.pem -recip {} -out encryption-key.der\n",
            path(p),
            path(&w.signing)
        ));
    }
    out
}

fn show_token(r: &pb::CreateEnrollmentTokenResponse, a: &TokenCreateArgs, json: bool) -> String {
    if json {
        let v = json!({
            "token_id": r.token_id, "token": r.token, "expires_at": time_json(r.expires_at), "issuer": r.issuer
        });
        return format!("{v}\n");
    }
    let rows = vec![
        vec!["token id".to_owned(), r.token_id.clone()],
        vec!["reader".into(), a.reader_serial.clone()],
        vec!["profiles".into(), a.profiles.join(", ")],
        vec![
            "issuer".into(),
            if r.issuer.is_empty() { a.issuer.clone().unwrap_or_default() } else { r.issuer.clone() },
        ],
        vec!["expires at".into(), time_cell(r.expires_at)],
    ];
    format!(
        "{}\nEnrollment token, shown only this once (the service keeps only its hash):\n\n    {}\n\n\
         Give it to the reader's installer over a channel you trust. It works once, for reader {} with \
         these profiles, until it expires.\n",
        table(&rows),
        r.token,
        a.reader_serial
    )
}

/// One certificate record as JSON (the shape of `--json` output).
pub fn certificate_json(c: &pb::Certificate) -> Value {
    json!({
        "serial": c.serial,
        "issuer": c.issuer,
        "profile": c.profile,
        "subject": c.subject,
        "status": status_name(c.status),
        "not_before": time_json(c.not_before),
        "not_after": time_json(c.not_after),
        "sha256_fingerprint": c.sha256_fingerprint,
        "key_type": c.key_type,
        "role": c.role,
        "tenant": c.tenant,
        "paired_serial": c.paired_serial,
        "revoked_at": time_json(c.revoked_at),
        "revocation_reason": c.revocation_reason,
        "requested_by": c.requested_by,
        "created_at": time_json(c.created_at),
    })
}

/// The STATUS column: `expired` for a valid certificate past its notAfter.
fn status_cell(c: &pb::Certificate, now: i64) -> String {
    if c.status == pb::CertificateStatus::Valid as i32 && is_expired(c, now) {
        "expired".into()
    } else {
        status_name(c.status)
    }
}

/// Certificates as JSON lines, or as an aligned table.
pub fn show_certificates(certs: &[pb::Certificate], json: bool, now: i64) -> String {
    if json {
        return certs.iter().map(|c| format!("{}\n", certificate_json(c))).collect();
    }
    let mut rows = vec![["SERIAL", "STATUS", "NOT AFTER", "PROFILE", "ISSUER", "SUBJECT"].map(String::from).to_vec()];
    for c in certs {
        rows.push(vec![
            c.serial.clone(),
            status_cell(c, now),
            time_cell(c.not_after),
            c.profile.clone(),
            c.issuer.clone(),
            c.subject.clone(),
        ]);
    }
    table(&rows)
}

fn show_certificate(c: &pb::Certificate, json: bool) -> String {
    if json { format!("{}\n", certificate_json(c)) } else { certificate_detail(c, now_secs()) }
}

/// One certificate, one field per line.
fn certificate_detail(c: &pb::Certificate, now: i64) -> String {
    let mut rows = vec![
        vec!["serial".to_owned(), c.serial.clone()],
        vec!["subject".into(), c.subject.clone()],
        vec!["status".into(), status_cell(c, now)],
        vec!["issuer".into(), c.issuer.clone()],
        vec!["profile".into(), c.profile.clone()],
        vec!["key type".into(), c.key_type.clone()],
        vec!["not before".into(), time_cell(c.not_before)],
        vec!["not after".into(), time_cell(c.not_after)],
    ];
    if !c.role.is_empty() || !c.tenant.is_empty() {
        rows.push(vec!["role".into(), c.role.clone()]);
        rows.push(vec!["tenant".into(), c.tenant.clone()]);
    }
    if !c.paired_serial.is_empty() {
        rows.push(vec!["paired with".into(), c.paired_serial.clone()]);
    }
    if c.status == pb::CertificateStatus::Revoked as i32 {
        rows.push(vec!["revoked at".into(), time_cell(c.revoked_at)]);
        rows.push(vec!["reason".into(), c.revocation_reason.clone()]);
    }
    rows.push(vec!["sha-256".into(), c.sha256_fingerprint.clone()]);
    rows.push(vec!["requested by".into(), format!("{} at {}", c.requested_by, time_cell(c.created_at))]);
    table(&rows)
}

/// One issuer as JSON (without its certificate).
pub fn issuer_json(i: &pb::Issuer) -> Value {
    json!({
        "name": i.name,
        "state": issuer_state_name(i.state),
        "key_type": i.key_type,
        "subject": i.subject,
        "not_before": time_json(i.not_before),
        "not_after": time_json(i.not_after),
        "crl_number": i.crl_number,
        "crl_url": i.crl_url,
        "object_id": i.object_id,
        "created_by": i.created_by,
        "created_at": time_json(i.created_at),
    })
}

/// Issuers as JSON lines, or as an aligned table.
pub fn show_issuers(issuers: &[pb::Issuer], json: bool) -> String {
    if json {
        return issuers.iter().map(|i| format!("{}\n", issuer_json(i))).collect();
    }
    let mut rows = vec![["NAME", "STATE", "KEY TYPE", "NOT AFTER", "CRL", "SUBJECT"].map(String::from).to_vec()];
    for i in issuers {
        rows.push(vec![
            i.name.clone(),
            issuer_state_name(i.state),
            i.key_type.clone(),
            time_cell(i.not_after),
            i.crl_number.to_string(),
            i.subject.clone(),
        ]);
    }
    table(&rows)
}

fn show_profiles(profiles: &[pb::CertificateProfile], json: bool) -> String {
    if json {
        return profiles
            .iter()
            .map(|p| {
                let v = json!({
                    "name": p.name,
                    "description": p.description,
                    "max_validity_days": p.max_validity_days,
                    "key_types": p.key_types,
                    "enrollment": p.enrollment,
                    "service_generated_key": p.service_generated_key,
                });
                format!("{v}\n")
            })
            .collect();
    }
    if profiles.is_empty() {
        return "no certificate profiles\n".into();
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let mut rows =
        vec![["NAME", "MAX DAYS", "KEY TYPES", "ENROLLMENT", "SERVICE KEY", "DESCRIPTION"].map(String::from).to_vec()];
    for p in profiles {
        rows.push(vec![
            p.name.clone(),
            p.max_validity_days.to_string(),
            p.key_types.join(","),
            yes_no(p.enrollment),
            yes_no(p.service_generated_key),
            p.description.clone(),
        ]);
    }
    table(&rows)
}

/// What `kms certs chain` says of one certificate of the chain.
fn chain_entry(der: &[u8]) -> (String, i64, String) {
    let fingerprint = hex::encode_upper(Sha256::digest(der));
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => (c.subject().to_string(), c.validity().not_after.timestamp(), fingerprint),
        Err(_) => ("(not a parsable certificate)".into(), 0, fingerprint),
    }
}

fn show_chain(r: &pb::GetCaChainResponse, out: Option<&Path>, json: bool) -> Result<String, ClientError> {
    let pem_text = if r.pem.is_empty() { chain_pem(&r.certificates) } else { r.pem.clone() };
    if let Some(path) = out {
        write_file(path, pem_text.as_bytes(), false)?;
    }
    let entries: Vec<_> = r.certificates.iter().map(|d| chain_entry(d)).collect();
    if json {
        let v = json!({
            "certificates": entries.iter().map(|(subject, not_after, sha256)| json!({
                "subject": subject, "not_after": time_json(*not_after), "sha256_fingerprint": sha256,
            })).collect::<Vec<_>>(),
            "file": out.map_or(Value::Null, |p| json!(p.display().to_string())),
            "pem": if out.is_none() { json!(pem_text) } else { Value::Null },
        });
        return Ok(format!("{v}\n"));
    }
    let Some(path) = out else {
        return Ok(pem_text);
    };
    let mut rows = vec![["#", "SUBJECT", "NOT AFTER", "SHA-256"].map(String::from).to_vec()];
    for (n, (subject, not_after, sha256)) in entries.into_iter().enumerate() {
        rows.push(vec![n.to_string(), subject, time_cell(not_after), sha256]);
    }
    let mut text = table(&rows);
    text.push_str(&format!("written to {}\n", path.display()));
    Ok(text)
}

fn show_crl(issuer: &str, r: &pb::GetCrlResponse, out: Option<&Path>, json: bool) -> String {
    if json {
        let v = json!({
            "issuer": issuer,
            "number": r.number,
            "this_update": time_json(r.this_update),
            "next_update": time_json(r.next_update),
            "entries": r.entries,
            "file": out.map_or(Value::Null, |p| json!(p.display().to_string())),
        });
        return format!("{v}\n");
    }
    let rows = vec![
        vec!["issuer".to_owned(), issuer.to_owned()],
        vec!["crl number".into(), r.number.to_string()],
        vec!["this update".into(), time_cell(r.this_update)],
        vec!["next update".into(), time_cell(r.next_update)],
        vec!["entries".into(), r.entries.to_string()],
        vec![
            "file".into(),
            out.map_or_else(
                || "(not saved; --out FILE writes the DER)".to_owned(),
                |p| format!("{} ({} bytes, DER)", p.display(), r.crl.len()),
            ),
        ],
    ];
    table(&rows)
}

/// Refuses a destructive command without `--yes` when nobody can be asked.
fn refuse_unconfirmed_script(yes: bool, what: &str) -> Result<(), ClientError> {
    if !yes && !std::io::stdin().is_terminal() {
        // why: a script must say --yes; guessing an answer for it would be
        // the one mistake these commands cannot undo.
        return Err(ClientError::Usage(format!(
            "refusing to {what} without --yes: standard input is not a terminal, so there is no one to ask"
        )));
    }
    Ok(())
}

/// Shows what is about to change and asks for `expected` to be typed.
fn confirm(summary: &str, consequence: &str, expected: &str) -> Result<(), ClientError> {
    let mut err = std::io::stderr();
    let prompt = format!("{}\n{consequence}\nType {expected} to confirm: ", summary.trim_end());
    err.write_all(prompt.as_bytes())
        .and_then(|()| err.flush())
        .map_err(|source| ClientError::Write { what: "standard error".into(), source })?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|source| ClientError::Read {
        what: "confirmation",
        path: PathBuf::from("<stdin>"),
        source,
    })?;
    if answer.trim().eq_ignore_ascii_case(expected) { Ok(()) } else { Err(ClientError::NotConfirmed) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
        match r {
            Err(ClientError::Usage(m)) => m,
            other => format!("not a usage error: {other:?}"),
        }
    }

    #[test]
    fn reasons_carry_their_rfc_5280_codes() {
        // RFC 5280 §5.3.1 CRLReason; 7 is unused and removeFromCRL (8) is for delta CRLs.
        let codes = [
            ("unspecified", 0),
            ("key-compromise", 1),
            ("ca-compromise", 2),
            ("affiliation-changed", 3),
            ("superseded", 4),
            ("cessation-of-operation", 5),
            ("certificate-hold", 6),
            ("privilege-withdrawn", 9),
            ("aa-compromise", 10),
        ];
        assert_eq!(codes.len(), Reason::ALL.len());
        for (name, code) in codes {
            let r = Reason::from_str(name, false).map_err(|e| e.to_string());
            let Ok(r) = r else { unreachable!("{name}: {r:?}") };
            assert_eq!(r.name(), name);
            assert_eq!(r.to_proto() as i32, code, "{name}");
            assert_eq!(Reason::from_proto(code), Some(r));
        }
        assert_eq!(Reason::from_proto(7), None);
        assert_eq!(Reason::from_proto(8), None);
        assert!(Reason::from_str("keyCompromise", false).is_err());
    }

    #[test]
    fn value_enum_names_are_the_documented_names() {
        for r in Reason::ALL {
            let pv = r.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(pv.as_deref(), Some(r.name()));
        }
    }

    #[test]
    fn durations() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs()).map_err(|e| e.to_string());
        assert_eq!(secs("24h"), Ok(86_400));
        assert_eq!(secs("30d"), Ok(30 * 86_400));
        assert_eq!(secs("90m"), Ok(5_400));
        assert_eq!(secs("45s"), Ok(45));
        assert_eq!(secs("2w"), Ok(14 * 86_400));
        assert_eq!(secs("1d12h"), Ok(36 * 3600));
        assert!(usage(parse_duration("24")).contains("without a unit"));
        assert!(usage(parse_duration("h")).contains("without a number"));
        assert!(usage(parse_duration("3y")).contains("unknown unit"));
        assert!(usage(parse_duration("0h")).contains("longer than zero"));
        assert!(usage(parse_duration("")).contains("longer than zero"));
        assert!(usage(parse_duration("99999999999999999999d")).contains("too long"));
        assert!(usage(parse_duration("9999999999999999d")).contains("too long"));
    }

    #[test]
    fn instants() {
        assert_eq!(parse_instant("2026-12-31").map_err(|e| e.to_string()), Ok(1_798_675_200));
        assert_eq!(parse_instant("2026-12-31T00:00:00Z").map_err(|e| e.to_string()), Ok(1_798_675_200));
        assert_eq!(parse_instant("2026-12-31T08:00:00+08:00").map_err(|e| e.to_string()), Ok(1_798_675_200));
        assert!(parse_instant("2026-02-30").is_err());
        assert!(parse_instant("2026-13-01").is_err());
        assert!(parse_instant("31/12/2026").is_err());
        assert!(parse_instant("2026-1-1").is_err());
    }

    #[test]
    fn times_are_rfc_3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_798_675_200), "2026-12-31T00:00:00Z");
        assert_eq!(time_cell(0), "-");
        assert_eq!(time_json(0), Value::Null);
        assert_eq!(time_json(1), json!("1970-01-01T00:00:01Z"));
    }

    #[test]
    fn serials() {
        assert_eq!(parse_serial("4f:2a:09").map_err(|e| e.to_string()), Ok("4F2A09".into()));
        assert_eq!(parse_serial("0x0A1b").map_err(|e| e.to_string()), Ok("0A1B".into()));
        assert_eq!(parse_serial("0A 1B").map_err(|e| e.to_string()), Ok("0A1B".into()));
        assert!(parse_serial("").is_err());
        assert!(parse_serial("xyz").is_err());
        assert!(usage(parse_serial(&"0".repeat(42))).contains("20 bytes"));
        assert_eq!(parse_serial_prefix("4f2").map_err(|e| e.to_string()), Ok("4F2".into()));
    }

    #[test]
    fn issuer_names_and_countries() {
        assert!(parse_issuer_name("city-3301-2026").is_ok());
        assert!(parse_issuer_name("city_3301.v2").is_ok());
        assert!(parse_issuer_name("City").is_err());
        assert!(parse_issuer_name("a/b").is_err());
        assert!(parse_issuer_name("").is_err());
        assert!(parse_issuer_name("..").is_err());
        assert!(parse_issuer_name(&"a".repeat(65)).is_err());
        assert_eq!(parse_country("cn").map_err(|e| e.to_string()), Ok("CN".into()));
        assert!(parse_country("CHN").is_err());
        assert!(parse_country("C1").is_err());
    }

    #[test]
    fn subject_filters() {
        assert_eq!(subject_filter(None, None).map_err(|e| e.to_string()), Ok(String::new()));
        assert_eq!(subject_filter(Some("CN=R-1"), None).map_err(|e| e.to_string()), Ok("CN=R-1".into()));
        assert_eq!(subject_filter(None, Some("R-1")).map_err(|e| e.to_string()), Ok("~R-1".into()));
        assert!(usage(subject_filter(Some("~CN=R-1"), None)).contains("--subject-contains"));
        assert!(subject_filter(None, Some("")).is_err());
        assert!(subject_filter(Some("a"), Some("b")).is_err());
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        // RFC 4648 §10.
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }

    #[test]
    fn pem_wraps_at_64_and_round_trips() {
        let der: Vec<u8> = std::iter::once(0x30).chain((0..=255u8).cycle().take(200)).collect();
        let text = pem("CERTIFICATE", &der);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text.ends_with("-----END CERTIFICATE-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
        let back = CertificateDer::from_pem_slice(text.as_bytes()).map(|c| c.as_ref().to_vec());
        assert_eq!(back.map_err(|e| e.to_string()), Ok(der.clone()));
        let chain = chain_pem(&[der.clone(), der.clone()]);
        assert_eq!(certificates_der(chain.as_bytes()), Ok(vec![der.clone(), der]));
    }

    #[test]
    fn csrs_are_sent_as_der() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x00];
        assert_eq!(csr_der(&der), Ok(der.clone()));
        let text = format!("\n{}", pem("CERTIFICATE REQUEST", &der));
        assert_eq!(csr_der(text.as_bytes()), Ok(der.clone()));
        assert!(csr_der(pem("CERTIFICATE", &der).as_bytes()).is_err());
        assert!(csr_der(b"hello").is_err());
        assert!(certificates_der(b"").is_err());
    }

    fn cert(serial: &str, status: pb::CertificateStatus, not_after: i64) -> pb::Certificate {
        pb::Certificate {
            serial: serial.into(),
            issuer: "city-3301-2026".into(),
            profile: "reader-sign".into(),
            subject: "CN=R-000123".into(),
            status: status as i32,
            not_before: 1_798_675_200,
            not_after,
            key_type: "ec-p256".into(),
            requested_by: "token:t1".into(),
            created_at: 1_798_675_200,
            ..pb::Certificate::default()
        }
    }

    #[test]
    fn certificate_table_marks_expired() {
        let now = 1_800_000_000;
        let certs = [
            cert("0A", pb::CertificateStatus::Valid, 1_830_211_200),
            cert("0B", pb::CertificateStatus::Valid, 1_798_761_600),
            cert("0C", pb::CertificateStatus::Revoked, 1_830_211_200),
        ];
        assert_eq!(
            show_certificates(&certs, false, now),
            "SERIAL  STATUS   NOT AFTER             PROFILE      ISSUER          SUBJECT\n\
             0A      valid    2027-12-31T00:00:00Z  reader-sign  city-3301-2026  CN=R-000123\n\
             0B      expired  2027-01-01T00:00:00Z  reader-sign  city-3301-2026  CN=R-000123\n\
             0C      revoked  2027-12-31T00:00:00Z  reader-sign  city-3301-2026  CN=R-000123\n"
        );
    }

    #[test]
    fn certificate_json_is_one_line_per_certificate() {
        let certs = [cert("0A", pb::CertificateStatus::Valid, 1_830_211_200)];
        let out = show_certificates(&certs, true, 0);
        assert_eq!(out.lines().count(), 1);
        let v: Value = serde_json::from_str(out.trim_end()).unwrap_or_default();
        assert_eq!(v["serial"], "0A");
        assert_eq!(v["status"], "valid");
        assert_eq!(v["not_after"], "2027-12-31T00:00:00Z");
        assert_eq!(v["revoked_at"], Value::Null);
    }

    #[test]
    fn token_json_has_exactly_id_secret_expiry_and_issuer() {
        let r = pb::CreateEnrollmentTokenResponse {
            token_id: "t1".into(),
            token: "s3cr3t".into(),
            expires_at: 1_798_675_200,
            issuer: "city-3301".into(),
        };
        let a = TokenCreateArgs {
            reader_serial: "R-000123".into(),
            profiles: vec!["reader-sign".into()],
            issuer: None,
            ttl: None,
        };
        let out = show_token(&r, &a, true);
        assert_eq!(out.lines().count(), 1);
        let v: Value = serde_json::from_str(out.trim_end()).unwrap_or_default();
        assert_eq!(
            v,
            json!({"token_id": "t1", "token": "s3cr3t", "expires_at": "2026-12-31T00:00:00Z", "issuer": "city-3301"})
        );
        let text = show_token(&r, &a, false);
        assert!(text.contains("shown only this once"));
        assert!(text.contains("\n    s3cr3t\n"));
    }

    #[test]
    fn enrollment_files_are_written_and_a_missing_half_of_a_dual_pair_is_reported() {
        let Ok(dir) = tempfile::tempdir() else { unreachable!("temporary directory") };
        let issued = |serial: &str| pb::IssuedCertificate {
            certificate: Some(pb::Certificate { serial: serial.into(), der: vec![0x30, 0x00], ..Default::default() }),
            chain: vec![vec![0x30, 0x01, 0x00], vec![0x30, 0x01, 0x01]],
        };
        let full = pb::EnrollReaderResponse {
            signing: Some(issued("0A")),
            encryption: Some(issued("0B")),
            encryption_key_envelope: vec![0x30, 0x80],
        };
        let w = write_enrollment("EnrollReader", &full, true, dir.path()).map_err(|e| e.to_string());
        let Ok(w) = w else { unreachable!("{w:?}") };
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap_or_default();
        assert_eq!(read(files::ENCRYPTION_KEY), vec![0x30, 0x80]);
        assert_eq!(certificates_der(&read(files::CHAIN)).map(|c| c.len()), Ok(2));
        assert_eq!(certificates_der(&read(files::SIGNING)), Ok(vec![vec![0x30, 0x00]]));
        assert_eq!(w.encryption, Some(dir.path().join(files::ENCRYPTION)));
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(files::ENCRYPTION_KEY)).map(|m| m.permissions().mode());
            assert_eq!(mode.map(|m| m & 0o777).map_err(|e| e.to_string()), Ok(0o600));
        }
        let text = show_enrollment(&full, &w, false);
        assert!(text.contains("openssl cms -decrypt -inform DER"));

        let half = pb::EnrollReaderResponse { encryption: None, encryption_key_envelope: vec![], ..full };
        assert!(matches!(write_enrollment("EnrollReader", &half, true, dir.path()), Err(ClientError::Protocol { .. })));
        assert!(write_enrollment("EnrollReader", &half, false, dir.path()).is_ok());
        assert!(matches!(
            write_enrollment("EnrollReader", &pb::EnrollReaderResponse::default(), false, dir.path()),
            Err(ClientError::Protocol { .. })
        ));
    }

    #[test]
    fn enroll_server_from_a_profile_ignores_the_client_certificate() {
        let Ok(dir) = tempfile::tempdir() else { unreachable!("temporary directory") };
        let path = dir.path().join("client.toml");
        let written = std::fs::write(
            &path,
            "endpoint = \"https://127.0.0.1:7443\"\nca = \"ca.pem\"\ncert = \"admin.crt\"\nkey = \"admin.key\"\n",
        );
        assert!(written.is_ok());
        let s = EnrollServer::resolve(Some(&path), None, None).map_err(|e| e.to_string());
        let Ok(s) = s else { unreachable!("{s:?}") };
        assert_eq!(s.endpoint, "https://127.0.0.1:7443");
        assert_eq!(s.ca, dir.path().join("ca.pem"));
        let flags = EnrollServer::resolve(Some(&path), Some("https://kms:7443"), Some(Path::new("/etc/ca.pem")));
        assert_eq!(flags.map(|s| s.endpoint).map_err(|e| e.to_string()), Ok("https://kms:7443".into()));
        assert!(EnrollServer::resolve(None, Some("https://kms:7443"), None).is_err());
    }

    #[test]
    fn token_sources() {
        let Ok(dir) = tempfile::tempdir() else { unreachable!("temporary directory") };
        let path = dir.path().join("token");
        assert!(std::fs::write(&path, "abc123\n").is_ok());
        let t = enrollment_token(None, Some(&path)).map(|s| s.expose_secret().to_owned());
        assert_eq!(t.map_err(|e| e.to_string()), Ok("abc123".into()));
        assert!(std::fs::write(&path, " \n").is_ok());
        assert!(usage(enrollment_token(None, Some(&path))).contains("empty"));
        let args = format!(
            "{:?}",
            EnrollArgs {
                csr: "r.csr".into(),
                token: Some("abc123".into()),
                token_file: None,
                external_cert: None,
                external_signature: None,
                dual: false,
                profile: None,
                encryption_profile: None,
                validity_days: None,
                out_dir: "out".into(),
            }
        );
        assert!(!args.contains("abc123"), "{args}");
    }

    #[test]
    fn tables_are_aligned() {
        let rows = vec![vec!["A".to_string(), "BB".into(), "C".into()], vec!["AAA".into(), "B".into(), "C".into()]];
        assert_eq!(table(&rows), "A    BB  C\nAAA  B   C\n");
    }
}
