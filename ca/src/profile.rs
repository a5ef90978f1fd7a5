//! Certificate profiles: data files that say what the CA issues for each
//! kind of certificate, whatever a CSR asks for.
//!
//! One TOML file per profile in `policies/certificates/<name>.toml`; the
//! profile's name is the file name. `policies/certificates/README.md`
//! describes every field for operators. A short example:
//!
//! ```toml
//! description = "reader signing certificate"
//! kind = "end-entity"
//! max_validity_days = 1095
//! default_validity_days = 730
//! key_types = ["ec-p256", "rsa-2048"]
//! key_usage = ["digitalSignature"]
//! extended_key_usage = ["clientAuth"]
//! enrollment = true
//!
//! [subject]
//! allowed = ["CN", "O", "serialNumber"]
//! required = ["CN"]
//!
//! [identity]
//! roles = ["reader"]
//! default_role = "reader"
//! tenant = "required"
//! ```
//!
//! A malformed file, an unknown field, key type, usage or attribute, or an
//! inconsistent profile (keyCertSign on an end-entity profile, a sub-CA
//! profile without keyCertSign, ...) is refused with a [`ProfileError`]
//! naming the file, line and field.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::Duration;
use toml::Spanned;

use crate::KeyType;
use crate::names::{DnAttribute, SanKind, is_printable_string, parse_dotted_oid};
use crate::tls::check_identifier;
use crate::usage::{ExtendedKeyUsage, KeyUsage};

/// Why a profile file was refused. Displays as `file:line: field: reason`
/// (`file: field: reason` when the problem concerns the whole file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ProfileError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line of the offending value; 0 when it concerns the whole file.
    pub line: usize,
    /// The field, dotted for nested tables (`subject.max_length`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}: {}", self.file.display(), self.field, self.reason)
        } else {
            write!(f, "{}:{}: {}: {}", self.file.display(), self.line, self.field, self.reason)
        }
    }
}

/// What a profile issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProfileKind {
    /// An end-entity certificate: basicConstraints CA:FALSE.
    EndEntity,
    /// A subordinate CA: basicConstraints CA:TRUE with a path length.
    SubCa {
        /// pathLenConstraint: how many CA certificates may follow it.
        path_len: u8,
    },
}

impl ProfileKind {
    /// True for [`ProfileKind::SubCa`].
    pub fn is_ca(self) -> bool {
        matches!(self, ProfileKind::SubCa { .. })
    }
}

/// Where the certified key pair comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyGeneration {
    /// The requester's key, from its CSR.
    Requester,
    /// The service generates the key pair in the HSM (key-management-centre
    /// model, e.g. `reader-encrypt`); a CSR's key is never used.
    Service,
}

/// The characters subject values may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Charset {
    /// ASN.1 PrintableString: `A-Z a-z 0-9 space ' ( ) + , - . / : = ?`.
    Printable,
    /// Any Unicode text without control characters.
    Utf8,
}

/// Which subject attributes a certificate may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRules {
    /// Attributes that may appear (each at most once).
    pub allowed: Vec<DnAttribute>,
    /// Attributes that must appear.
    pub required: Vec<DnAttribute>,
    /// Longest value, in characters.
    pub max_length: usize,
    /// Allowed characters (`C` and `serialNumber` are always PrintableString).
    pub charset: Charset,
}

/// Which subject alternative names a certificate may carry (besides the
/// role and tenant URIs the CA sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanRules {
    /// Name types that may appear.
    pub types: Vec<SanKind>,
    /// DNS names must equal one of these or end in `.` + one of these;
    /// empty means any syntactically valid name.
    pub dns_suffixes: Vec<String>,
    /// Whether `*.` wildcard DNS names are allowed.
    pub dns_wildcards: bool,
    /// Fewest names (request and operator names together).
    pub min: usize,
    /// Most names (request and operator names together).
    pub max: usize,
}

/// Whether a certificate names a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantRule {
    /// A tenant must be given.
    Required,
    /// A tenant may be given.
    Optional,
    /// No tenant may be given.
    Forbidden,
}

/// The role and tenant the CA writes as `urn:kms:role:<r>` /
/// `urn:kms:tenant:<t>` URI SANs, from the request context, never from a
/// CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRules {
    /// Roles that may be set; empty means no role.
    pub roles: Vec<String>,
    /// The role set when the request context names none.
    pub default_role: Option<String>,
    /// Whether a tenant is required, optional or forbidden.
    pub tenant: TenantRule,
}

/// DNS name constraints written into sub-CA certificates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameConstraintRules {
    /// permittedSubtrees dNSName entries.
    pub permitted_dns: Vec<String>,
    /// excludedSubtrees dNSName entries.
    pub excluded_dns: Vec<String>,
}

/// A loaded, checked certificate profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertProfile {
    /// Name (the file name without `.toml`).
    pub name: String,
    /// For operators.
    pub description: String,
    /// End entity or sub-CA.
    pub kind: ProfileKind,
    /// Longest validity a request may ask for.
    pub max_validity: Duration,
    /// Validity when the request names none.
    pub default_validity: Duration,
    /// Key types that may be certified.
    pub key_types: Vec<KeyType>,
    /// keyUsage bits issued (those that fit the key type, see
    /// [`KeyUsage::applies_to`]).
    pub key_usage: Vec<KeyUsage>,
    /// extendedKeyUsage purposes issued; empty: no extension.
    pub extended_key_usage: Vec<ExtendedKeyUsage>,
    /// Subject rules.
    pub subject: SubjectRules,
    /// SAN rules.
    pub san: SanRules,
    /// Role and tenant rules.
    pub identity: IdentityRules,
    /// Name constraints (sub-CA profiles only).
    pub name_constraints: NameConstraintRules,
    /// Whether readers may use the profile with an enrollment token.
    pub enrollment: bool,
    /// Who generates the key pair.
    pub key_generation: KeyGeneration,
    /// Extension OIDs a CSR may carry that are ignored (never copied);
    /// any other unknown extension rejects the request.
    pub tolerated_extensions: Vec<String>,
}

impl CertProfile {
    /// The keyUsage bits issued for a key of `key_type`.
    pub fn key_usage_for(&self, key_type: KeyType) -> Vec<KeyUsage> {
        self.key_usage.iter().copied().filter(|u| u.applies_to(key_type)).collect()
    }
}

/// Every certificate profile, by name.
#[derive(Debug, Clone, Default)]
pub struct CertProfiles {
    by_name: BTreeMap<String, CertProfile>,
}

impl CertProfiles {
    /// Loads every `*.toml` file in `dir`; one bad file rejects the set.
    pub fn load_dir(dir: &Path) -> Result<CertProfiles, ProfileError> {
        let whole =
            |file: &Path, reason: String| ProfileError { file: file.to_owned(), line: 0, field: "file".into(), reason };
        let entries = std::fs::read_dir(dir).map_err(|e| whole(dir, e.to_string()))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| whole(dir, e.to_string()))?.path();
            if path.extension().is_some_and(|x| x == "toml") {
                files.push(path);
            }
        }
        files.sort();
        let mut profiles = CertProfiles::default();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| whole(&path, e.to_string()))?;
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let profile = parse(&path, &name, &text)?;
            profiles.by_name.insert(name, profile);
        }
        Ok(profiles)
    }

    /// Parses one profile from text, as if it were the file `<name>.toml`;
    /// for tests and fuzzing.
    pub fn parse_str(name: &str, text: &str) -> Result<CertProfile, ProfileError> {
        parse(&PathBuf::from(format!("{name}.toml")), name, text)
    }

    /// A set from already parsed profiles (later ones replace earlier ones
    /// of the same name).
    pub fn from_profiles(profiles: impl IntoIterator<Item = CertProfile>) -> CertProfiles {
        CertProfiles { by_name: profiles.into_iter().map(|p| (p.name.clone(), p)).collect() }
    }

    /// A profile by name.
    pub fn get(&self, name: &str) -> Option<&CertProfile> {
        self.by_name.get(name)
    }

    /// Every profile, by name.
    pub fn iter(&self) -> impl Iterator<Item = &CertProfile> {
        self.by_name.values()
    }

    /// Every profile name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Number of profiles.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True if there is none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(default)]
    description: String,
    kind: S<String>,
    path_len: Option<S<u8>>,
    max_validity_days: S<u32>,
    default_validity_days: Option<S<u32>>,
    key_types: S<Vec<S<String>>>,
    key_usage: S<Vec<S<String>>>,
    #[serde(default)]
    extended_key_usage: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    enrollment: Option<S<bool>>,
    #[serde(default)]
    key_generation: Option<S<String>>,
    #[serde(default)]
    tolerated_extensions: Option<S<Vec<S<String>>>>,
    subject: S<RawSubject>,
    #[serde(default)]
    san: Option<S<RawSan>>,
    #[serde(default)]
    identity: Option<S<RawIdentity>>,
    #[serde(default)]
    name_constraints: Option<S<RawNameConstraints>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    allowed: S<Vec<S<String>>>,
    #[serde(default)]
    required: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    max_length: Option<S<u32>>,
    #[serde(default)]
    charset: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSan {
    types: S<Vec<S<String>>>,
    #[serde(default)]
    dns_suffixes: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    dns_wildcards: Option<S<bool>>,
    #[serde(default)]
    min: Option<S<u32>>,
    max: S<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    #[serde(default)]
    roles: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    default_role: Option<S<String>>,
    tenant: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNameConstraints {
    #[serde(default)]
    permitted_dns: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    excluded_dns: Option<S<Vec<S<String>>>>,
}

/// Longest validity any profile may allow (100 years).
const MAX_VALIDITY_DAYS: u32 = 36_500;

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        let prefix = self.text.get(..end).unwrap_or(self.text);
        prefix.matches('\n').count() + 1
    }

    fn err(&self, span: &Range<usize>, field: &str, reason: impl Into<String>) -> ProfileError {
        ProfileError {
            file: self.file.to_owned(),
            line: self.line(span),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// Turns a TOML or serde error into a ProfileError, finding the field
    /// from the message or from the key on the error's line.
    fn toml_err(&self, e: &toml::de::Error) -> ProfileError {
        // why: toml's messages can span lines ("invalid string\nexpected ...")
        // and are empty for some syntax errors (a control character).
        let message = e.message().trim().lines().map(str::trim).collect::<Vec<_>>().join("; ");
        let message = if message.is_empty() {
            let column = e.span().map(|s| self.column(s.start)).unwrap_or(0);
            format!("TOML syntax error at column {column} (control characters are not allowed)")
        } else {
            message
        };
        let quoted = ["unknown field `", "missing field `", "duplicate key `"].iter().find_map(|prefix| {
            let start = message.find(prefix)? + prefix.len();
            let len = message[start..].find('`')?;
            Some(message[start..start + len].to_owned())
        });
        let line = e.span().map(|s| self.line(&s)).unwrap_or(0);
        // An error on a `[table]` header line is about that table itself.
        if let Some(header) = e.span().map(|s| self.line_text(s.start).trim()).filter(|l| l.starts_with('[')) {
            let name = header.trim_start_matches('[').split(']').next().unwrap_or("").trim();
            let field = if name.is_empty() || name == "\"\"" { "\"\"".to_owned() } else { name.to_owned() };
            return ProfileError { file: self.file.to_owned(), line, field, reason: message };
        }
        let table = e.span().and_then(|s| self.table_at(s.start));
        let key_on_line = e.span().and_then(|s| self.key_at(s.start));
        // why: TOML allows an empty key (`[""]`, `"" = 1`); name it visibly.
        let field = quoted.or(key_on_line).unwrap_or_else(|| "toml".into());
        let field = if field.is_empty() { "\"\"".to_owned() } else { field };
        let field = match table {
            Some(t) if !field.contains('.') && field != "toml" => format!("{t}.{field}"),
            _ => field,
        };
        ProfileError { file: self.file.to_owned(), line, field, reason: message }
    }

    fn column(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        let start = self.text.get(..offset).and_then(|t| t.rfind('\n')).map(|i| i + 1).unwrap_or(0);
        self.text.get(start..offset).map(|t| t.chars().count()).unwrap_or(0) + 1
    }

    fn line_text(&self, offset: usize) -> &str {
        let offset = offset.min(self.text.len());
        let start = self.text.get(..offset).and_then(|t| t.rfind('\n')).map(|i| i + 1).unwrap_or(0);
        let end = self.text.get(offset..).and_then(|t| t.find('\n')).map(|i| offset + i).unwrap_or(self.text.len());
        self.text.get(start..end).unwrap_or("")
    }

    fn key_at(&self, offset: usize) -> Option<String> {
        let line = self.line_text(offset);
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
    }

    /// The `[table]` header above `offset`, if any.
    fn table_at(&self, offset: usize) -> Option<String> {
        let before = self.text.get(..offset.min(self.text.len()))?;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let header = before[..line_start].lines().rev().map(str::trim).find(|l| l.starts_with('['))?;
        let name = header.trim_start_matches('[').split(']').next()?.trim();
        (!name.is_empty()).then(|| name.to_owned())
    }
}

fn parse(file: &Path, name: &str, text: &str) -> Result<CertProfile, ProfileError> {
    let cx = Ctx { file, text };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(ProfileError {
            file: file.to_owned(),
            line: 0,
            field: "name".into(),
            reason: format!("profile name {name:?} (from the file name) must be [a-z0-9-]"),
        });
    }
    let raw: RawProfile = toml::from_str(text).map_err(|e| cx.toml_err(&e))?;

    let kind = match raw.kind.get_ref().as_str() {
        "end-entity" => {
            if let Some(p) = &raw.path_len {
                return Err(cx.err(&p.span(), "path_len", "only a sub-ca profile has a path length"));
            }
            ProfileKind::EndEntity
        }
        "sub-ca" => {
            let path_len = raw
                .path_len
                .as_ref()
                .ok_or_else(|| cx.err(&raw.kind.span(), "path_len", "a sub-ca profile must set path_len"))?;
            ProfileKind::SubCa { path_len: *path_len.get_ref() }
        }
        other => {
            return Err(cx.err(&raw.kind.span(), "kind", format!("unknown kind {other:?} (end-entity, sub-ca)")));
        }
    };

    let max_days = *raw.max_validity_days.get_ref();
    if max_days == 0 || max_days > MAX_VALIDITY_DAYS {
        return Err(cx.err(
            &raw.max_validity_days.span(),
            "max_validity_days",
            format!("{max_days}: must be 1 to {MAX_VALIDITY_DAYS}"),
        ));
    }
    let default_days = match &raw.default_validity_days {
        Some(d) if *d.get_ref() == 0 || *d.get_ref() > max_days => {
            return Err(cx.err(
                &d.span(),
                "default_validity_days",
                format!("{}: must be 1 to max_validity_days ({max_days})", d.get_ref()),
            ));
        }
        Some(d) => *d.get_ref(),
        None => max_days,
    };

    let mut key_types = Vec::new();
    for k in raw.key_types.get_ref() {
        let key_type: KeyType = k.get_ref().parse().map_err(|e| cx.err(&k.span(), "key_types", format!("{e}")))?;
        if key_type == KeyType::Sm2 {
            return Err(cx.err(&k.span(), "key_types", "sm2: SM2 certificates are not supported by this CA yet"));
        }
        if key_types.contains(&key_type) {
            return Err(cx.err(&k.span(), "key_types", format!("{key_type} is listed twice")));
        }
        key_types.push(key_type);
    }
    if key_types.is_empty() {
        return Err(cx.err(&raw.key_types.span(), "key_types", "list at least one key type"));
    }

    let mut key_usage = Vec::new();
    for u in raw.key_usage.get_ref() {
        let usage: KeyUsage = u.get_ref().parse().map_err(|()| {
            cx.err(
                &u.span(),
                "key_usage",
                format!(
                    "unknown key usage {:?} (digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment, keyAgreement, keyCertSign, cRLSign, encipherOnly, decipherOnly)",
                    u.get_ref()
                ),
            )
        })?;
        if key_usage.contains(&usage) {
            return Err(cx.err(&u.span(), "key_usage", format!("{usage} is listed twice")));
        }
        let ca_only = matches!(usage, KeyUsage::KeyCertSign | KeyUsage::CrlSign);
        if ca_only && !kind.is_ca() {
            return Err(cx.err(
                &u.span(),
                "key_usage",
                format!("{usage} is only for CA certificates (kind = \"sub-ca\")"),
            ));
        }
        if matches!(usage, KeyUsage::EncipherOnly | KeyUsage::DecipherOnly)
            && !raw.key_usage.get_ref().iter().any(|x| x.get_ref() == "keyAgreement")
        {
            return Err(cx.err(&u.span(), "key_usage", format!("{usage} needs keyAgreement (RFC 5280 §4.2.1.3)")));
        }
        key_usage.push(usage);
    }
    if kind.is_ca() && !key_usage.contains(&KeyUsage::KeyCertSign) {
        return Err(cx.err(&raw.key_usage.span(), "key_usage", "a sub-ca profile must include keyCertSign"));
    }
    for key_type in &key_types {
        if !key_usage.iter().any(|u| u.applies_to(*key_type)) {
            return Err(cx.err(
                &raw.key_usage.span(),
                "key_usage",
                format!("no usage applies to {key_type} keys (keyEncipherment is for RSA, keyAgreement for EC)"),
            ));
        }
    }

    let mut extended_key_usage = Vec::new();
    if let Some(list) = &raw.extended_key_usage {
        for e in list.get_ref() {
            let eku: ExtendedKeyUsage = e.get_ref().parse().map_err(|()| {
                cx.err(
                    &e.span(),
                    "extended_key_usage",
                    format!(
                        "unknown extended key usage {:?} (serverAuth, clientAuth, codeSigning, emailProtection, timeStamping, OCSPSigning, anyExtendedKeyUsage, or a dotted OID)",
                        e.get_ref()
                    ),
                )
            })?;
            if extended_key_usage.contains(&eku) {
                return Err(cx.err(&e.span(), "extended_key_usage", format!("{eku} is listed twice")));
            }
            extended_key_usage.push(eku);
        }
    }

    let enrollment = raw.enrollment.as_ref().map(|e| *e.get_ref()).unwrap_or(false);
    if let Some(e) = raw.enrollment.as_ref().filter(|_| enrollment && kind.is_ca()) {
        return Err(cx.err(&e.span(), "enrollment", "readers cannot enroll for a sub-CA certificate"));
    }
    let key_generation = match &raw.key_generation {
        None => KeyGeneration::Requester,
        Some(k) => match k.get_ref().as_str() {
            "requester" => KeyGeneration::Requester,
            "service" if kind.is_ca() => {
                return Err(cx.err(&k.span(), "key_generation", "a sub-CA's key is generated by its holder"));
            }
            "service" => KeyGeneration::Service,
            other => {
                return Err(cx.err(
                    &k.span(),
                    "key_generation",
                    format!("unknown key_generation {other:?} (requester, service)"),
                ));
            }
        },
    };

    let mut tolerated_extensions = Vec::new();
    if let Some(list) = &raw.tolerated_extensions {
        for o in list.get_ref() {
            if parse_dotted_oid(o.get_ref()).is_none() {
                return Err(cx.err(
                    &o.span(),
                    "tolerated_extensions",
                    format!("{:?} is not a dotted-decimal OID", o.get_ref()),
                ));
            }
            if crate::approve::HANDLED_EXTENSIONS.contains(&o.get_ref().as_str()) {
                return Err(cx.err(
                    &o.span(),
                    "tolerated_extensions",
                    format!("{} is checked by the profile's own rules, not tolerated", o.get_ref()),
                ));
            }
            tolerated_extensions.push(o.get_ref().clone());
        }
    }

    let subject = subject_rules(&cx, raw.subject.get_ref())?;
    let san = match &raw.san {
        None => SanRules { types: Vec::new(), dns_suffixes: Vec::new(), dns_wildcards: false, min: 0, max: 0 },
        Some(s) => san_rules(&cx, s.get_ref())?,
    };
    let identity = match &raw.identity {
        None => IdentityRules { roles: Vec::new(), default_role: None, tenant: TenantRule::Forbidden },
        Some(i) if kind.is_ca() => {
            return Err(cx.err(&i.span(), "identity", "a sub-CA certificate carries no role or tenant"));
        }
        Some(i) => identity_rules(&cx, i.get_ref(), &i.span())?,
    };
    if subject.required.is_empty() && san.min == 0 && identity.roles.is_empty() {
        return Err(cx.err(
            &raw.subject.span(),
            "subject.required",
            "require a subject attribute or at least one SAN (san.min), or a certificate could name nobody",
        ));
    }
    let name_constraints = match &raw.name_constraints {
        None => NameConstraintRules::default(),
        Some(n) if !kind.is_ca() => {
            return Err(cx.err(&n.span(), "name_constraints", "name constraints are only for sub-ca profiles"));
        }
        Some(n) => NameConstraintRules {
            permitted_dns: dns_list(&cx, n.get_ref().permitted_dns.as_ref(), "name_constraints.permitted_dns")?,
            excluded_dns: dns_list(&cx, n.get_ref().excluded_dns.as_ref(), "name_constraints.excluded_dns")?,
        },
    };

    Ok(CertProfile {
        name: name.to_owned(),
        description: raw.description,
        kind,
        max_validity: Duration::days(i64::from(max_days)),
        default_validity: Duration::days(i64::from(default_days)),
        key_types,
        key_usage,
        extended_key_usage,
        subject,
        san,
        identity,
        name_constraints,
        enrollment,
        key_generation,
        tolerated_extensions,
    })
}

fn attribute_list(cx: &Ctx<'_>, list: &S<Vec<S<String>>>, field: &str) -> Result<Vec<DnAttribute>, ProfileError> {
    let mut out = Vec::new();
    for a in list.get_ref() {
        let attribute: DnAttribute = a.get_ref().parse().map_err(|()| {
            cx.err(
                &a.span(),
                field,
                format!("unknown subject attribute {:?} (CN, O, OU, C, L, ST, serialNumber)", a.get_ref()),
            )
        })?;
        if out.contains(&attribute) {
            return Err(cx.err(&a.span(), field, format!("{attribute} is listed twice")));
        }
        out.push(attribute);
    }
    Ok(out)
}

fn subject_rules(cx: &Ctx<'_>, raw: &RawSubject) -> Result<SubjectRules, ProfileError> {
    let allowed = attribute_list(cx, &raw.allowed, "subject.allowed")?;
    let required = match &raw.required {
        Some(r) => attribute_list(cx, r, "subject.required")?,
        None => Vec::new(),
    };
    if let Some(r) = &raw.required {
        for (a, spanned) in required.iter().zip(r.get_ref()) {
            if !allowed.contains(a) {
                return Err(cx.err(&spanned.span(), "subject.required", format!("{a} is required but not allowed")));
            }
        }
    }
    let max_length = match &raw.max_length {
        Some(m) if *m.get_ref() == 0 || *m.get_ref() > 256 => {
            return Err(cx.err(&m.span(), "subject.max_length", format!("{}: must be 1 to 256", m.get_ref())));
        }
        Some(m) => *m.get_ref() as usize,
        None => 64,
    };
    let charset = match &raw.charset {
        None => Charset::Utf8,
        Some(c) => match c.get_ref().as_str() {
            "printable" => Charset::Printable,
            "utf8" => Charset::Utf8,
            other => {
                return Err(cx.err(
                    &c.span(),
                    "subject.charset",
                    format!("unknown charset {other:?} (printable, utf8)"),
                ));
            }
        },
    };
    Ok(SubjectRules { allowed, required, max_length, charset })
}

fn san_rules(cx: &Ctx<'_>, raw: &RawSan) -> Result<SanRules, ProfileError> {
    let mut types = Vec::new();
    for t in raw.types.get_ref() {
        let kind: SanKind = t.get_ref().parse().map_err(|()| {
            cx.err(&t.span(), "san.types", format!("unknown SAN type {:?} (dns, ip, uri, email)", t.get_ref()))
        })?;
        if types.contains(&kind) {
            return Err(cx.err(&t.span(), "san.types", format!("{kind} is listed twice")));
        }
        types.push(kind);
    }
    let dns_suffixes = dns_list(cx, raw.dns_suffixes.as_ref(), "san.dns_suffixes")?;
    if let Some(s) = raw.dns_suffixes.as_ref().filter(|_| !dns_suffixes.is_empty() && !types.contains(&SanKind::Dns)) {
        return Err(cx.err(&s.span(), "san.dns_suffixes", "dns_suffixes without \"dns\" in san.types"));
    }
    let dns_wildcards = raw.dns_wildcards.as_ref().map(|w| *w.get_ref()).unwrap_or(false);
    let max = *raw.max.get_ref() as usize;
    if max == 0 || max > 100 {
        return Err(cx.err(&raw.max.span(), "san.max", format!("{max}: must be 1 to 100")));
    }
    let min = raw.min.as_ref().map(|m| *m.get_ref() as usize).unwrap_or(0);
    if let Some(m) = raw.min.as_ref().filter(|_| min > max) {
        return Err(cx.err(&m.span(), "san.min", format!("{min} is more than san.max ({max})")));
    }
    if types.is_empty() {
        return Err(cx.err(&raw.types.span(), "san.types", "list at least one type, or leave out [san]"));
    }
    Ok(SanRules { types, dns_suffixes, dns_wildcards, min, max })
}

fn identity_rules(cx: &Ctx<'_>, raw: &RawIdentity, span: &Range<usize>) -> Result<IdentityRules, ProfileError> {
    let mut roles: Vec<String> = Vec::new();
    if let Some(list) = &raw.roles {
        for r in list.get_ref() {
            check_identifier("role", r.get_ref()).map_err(|e| cx.err(&r.span(), "identity.roles", e.to_string()))?;
            if roles.contains(r.get_ref()) {
                return Err(cx.err(&r.span(), "identity.roles", format!("{:?} is listed twice", r.get_ref())));
            }
            roles.push(r.get_ref().clone());
        }
    }
    let default_role = match &raw.default_role {
        Some(d) if !roles.contains(d.get_ref()) => {
            return Err(cx.err(
                &d.span(),
                "identity.default_role",
                format!("{:?} is not in identity.roles", d.get_ref()),
            ));
        }
        Some(d) => Some(d.get_ref().clone()),
        None => None,
    };
    let tenant = match raw.tenant.get_ref().as_str() {
        "required" => TenantRule::Required,
        "optional" => TenantRule::Optional,
        "forbidden" => TenantRule::Forbidden,
        other => {
            return Err(cx.err(
                &raw.tenant.span(),
                "identity.tenant",
                format!("unknown tenant rule {other:?} (required, optional, forbidden)"),
            ));
        }
    };
    if roles.is_empty() && tenant == TenantRule::Forbidden {
        return Err(cx.err(span, "identity", "an [identity] with no roles and no tenant says nothing; leave it out"));
    }
    Ok(IdentityRules { roles, default_role, tenant })
}

fn dns_list(cx: &Ctx<'_>, list: Option<&S<Vec<S<String>>>>, field: &str) -> Result<Vec<String>, ProfileError> {
    let mut out = Vec::new();
    for d in list.map(|l| l.get_ref().as_slice()).unwrap_or(&[]) {
        let name = d.get_ref().trim_start_matches('.');
        if !crate::approve::is_dns_name(name) || name != name.to_ascii_lowercase() {
            return Err(cx.err(
                &d.span(),
                field,
                format!("{:?} is not a lower-case DNS name (labels of a-z, 0-9, -)", d.get_ref()),
            ));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

/// Checks a value against a charset: `Printable` per X.680 PrintableString,
/// `Utf8` rejects control characters.
pub(crate) fn charset_allows(charset: Charset, value: &str) -> bool {
    match charset {
        Charset::Printable => is_printable_string(value),
        Charset::Utf8 => !value.chars().any(char::is_control),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"description = "test"
kind = "end-entity"
max_validity_days = 365
default_validity_days = 90
key_types = ["ec-p256", "rsa-2048"]
key_usage = ["digitalSignature", "keyEncipherment"]
extended_key_usage = ["serverAuth"]

[subject]
allowed = ["CN", "O"]
required = ["CN"]
max_length = 64

[san]
types = ["dns", "ip"]
dns_suffixes = ["transit.example"]
max = 4
"#;

    fn err(text: &str) -> ProfileError {
        match CertProfiles::parse_str("demo", text) {
            Ok(p) => ProfileError { file: "ok".into(), line: 0, field: "ok".into(), reason: format!("{p:?}") },
            Err(e) => e,
        }
    }

    #[test]
    fn good_profile_loads() -> Result<(), ProfileError> {
        let p = CertProfiles::parse_str("demo", GOOD)?;
        assert_eq!(p.name, "demo");
        assert_eq!(p.kind, ProfileKind::EndEntity);
        assert_eq!(p.max_validity, Duration::days(365));
        assert_eq!(p.default_validity, Duration::days(90));
        assert_eq!(p.key_usage_for(KeyType::EcP256), vec![KeyUsage::DigitalSignature]);
        assert_eq!(p.key_usage_for(KeyType::Rsa2048), vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]);
        assert_eq!(p.san.dns_suffixes, vec!["transit.example".to_owned()]);
        assert_eq!(p.identity.tenant, TenantRule::Forbidden);
        Ok(())
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let cases: &[(&str, &str, usize, &str, &str)] = &[
            (
                "key_types = [\"ec-p256\", \"rsa-2048\"]",
                "key_types = [\"ec-p256\", \"rsa-1024\"]",
                5,
                "key_types",
                "rsa-1024",
            ),
            ("\"keyEncipherment\"]", "\"keyCertSign\"]", 6, "key_usage", "only for CA"),
            ("[\"serverAuth\"]", "[\"serverAuthentication\"]", 7, "extended_key_usage", "unknown extended key usage"),
            (
                "allowed = [\"CN\", \"O\"]",
                "allowed = [\"CN\", \"E\"]",
                10,
                "subject.allowed",
                "unknown subject attribute",
            ),
            ("max_length = 64", "max_length = 64\nsurprise = 1", 13, "subject.surprise", "unknown field"),
            ("max_length = 64", "max_length = -1", 12, "subject.max_length", "invalid value"),
            ("kind = \"end-entity\"", "kind = \"root\"", 2, "kind", "unknown kind"),
            (
                "default_validity_days = 90",
                "default_validity_days = 900",
                4,
                "default_validity_days",
                "max_validity_days",
            ),
            ("types = [\"dns\", \"ip\"]", "types = [\"dns\", \"x400\"]", 15, "san.types", "unknown SAN type"),
            ("\"transit.example\"", "\"Transit_Example\"", 16, "san.dns_suffixes", "not a lower-case DNS name"),
            ("kind = \"end-entity\"", "kind = \"end-entity\"\npath_len = 0", 3, "path_len", "only a sub-ca"),
            ("description = \"test\"", "description = \"test\"\nsurprise = true", 2, "surprise", "unknown field"),
        ];
        for (from, to, line, field, reason) in cases {
            assert!(GOOD.contains(from), "{from}");
            let e = err(&GOOD.replacen(from, to, 1));
            assert_eq!((e.line, e.field.as_str()), (*line, *field), "{to}: {e}");
            assert!(e.reason.contains(reason), "{to}: {e}");
            assert!(e.to_string().starts_with(&format!("demo.toml:{line}: {field}: ")), "{e}");
        }
    }

    #[test]
    fn inconsistent_profiles_are_refused() {
        let sub_ca_without_keycertsign = GOOD.replace("kind = \"end-entity\"", "kind = \"sub-ca\"\npath_len = 0");
        let e = err(&sub_ca_without_keycertsign);
        assert_eq!(e.field, "key_usage");
        assert!(e.reason.contains("keyCertSign"), "{e}");

        let sub_ca_without_path_len = GOOD
            .replace("kind = \"end-entity\"", "kind = \"sub-ca\"")
            .replace("\"keyEncipherment\"]", "\"keyCertSign\"]");
        let e = err(&sub_ca_without_path_len);
        assert_eq!((e.field.as_str(), e.line), ("path_len", 2), "{e}");

        let ec_only_encipherment = GOOD.replace("\"digitalSignature\", \"keyEncipherment\"", "\"keyEncipherment\"");
        let e = err(&ec_only_encipherment);
        assert!(e.reason.contains("ec-p256"), "{e}");

        let sm2 = GOOD.replace("\"ec-p256\", \"rsa-2048\"", "\"sm2\"");
        assert!(err(&sm2).reason.contains("SM2"));

        let name_constraints_on_ee = format!("{GOOD}\n[name_constraints]\npermitted_dns = [\"a.example\"]\n");
        let e = err(&name_constraints_on_ee);
        assert_eq!((e.field.as_str(), e.line), ("name_constraints", 19), "{e}");

        let bad_role = format!("{GOOD}\n[identity]\nroles = [\"Admin\"]\ntenant = \"required\"\n");
        let e = err(&bad_role);
        assert_eq!((e.field.as_str(), e.line), ("identity.roles", 20), "{e}");

        let control = GOOD.replace("description = \"test\"", "# a\u{1c}b\ndescription = \"test\"");
        let e = err(&control);
        assert_eq!(e.line, 1, "{e}");
        assert!(e.reason.contains("column 4"), "{e}");
        let two_lines = GOOD.replace("kind = \"end-entity\"", "kind = end");
        let e = err(&two_lines);
        assert!(!e.reason.contains('\n') && e.reason.contains("; "), "{e}");

        // Found by fuzzing: an empty table name gave an empty field.
        let e = err(&format!("{GOOD}\n[\"\"]\nx = 1\n"));
        assert_eq!(e.field, "\"\"", "{e}");
        let e = err(&format!("{GOOD}\n[surprise]\nx = 1\n"));
        assert_eq!((e.field.as_str(), e.line), ("surprise", 19), "{e}");

        let missing = GOOD.replace("max_validity_days = 365\n", "");
        let e = err(&missing);
        assert_eq!(e.field, "max_validity_days", "{e}");

        let e = CertProfiles::parse_str("Bad_Name", GOOD).err().map(|e| e.field);
        assert_eq!(e.as_deref(), Some("name"));
    }
}
