//! Approval: a CSR can ask, the profile decides.
//!
//! [`approve`] checks a parsed [`Csr`] and the request context against a
//! [`CertProfile`] and returns either an [`Approval`] (exactly what will be
//! issued) or a [`Rejection`] with a stable reason code. Nothing is ever
//! silently widened or narrowed, except the validity, which is clamped to
//! the issuer's own notAfter:
//!
//! - a CSR cannot make itself a CA (basicConstraints CA:TRUE on an
//!   end-entity profile is rejected);
//! - a requested validity longer than the profile's maximum is rejected,
//!   not clamped;
//! - a requested extension the profile does not handle or tolerate is
//!   rejected, naming its OID; a requested keyUsage / extendedKeyUsage is
//!   accepted only if it is a subset of what the profile issues, and the
//!   issued values are always the profile's;
//! - subject attributes and SANs outside the profile's rules, and key types
//!   it does not list, are rejected naming the attribute, name or type;
//! - the role and tenant come from the request context (never the CSR) and
//!   must fit the profile's identity rules.
//!
//! An `Approval` can only be made here, so [`issue_certificate`](crate::issue_certificate)
//! cannot be reached without these checks.

use std::collections::HashSet;
use std::fmt;

use time::{Duration, OffsetDateTime};

use crate::csr::{Csr, NameEntry, PublicKey, RequestedValue};
use crate::names::{DistinguishedNameSpec, DnAttribute, San};
use crate::profile::{CertProfile, KeyGeneration, TenantRule, charset_allows};
use crate::tls::{ROLE_URI_PREFIX, TENANT_URI_PREFIX, check_identifier};
use crate::usage::{ExtendedKeyUsage, KeyUsage};

/// Extensions whose requested values the profile's own rules check:
/// subjectKeyIdentifier, keyUsage, subjectAltName, basicConstraints,
/// extendedKeyUsage.
pub(crate) const HANDLED_EXTENSIONS: &[&str] = &["2.5.29.14", "2.5.29.15", "2.5.29.17", "2.5.29.19", "2.5.29.37"];

/// How far notBefore is set back from `now`, for relying parties whose
/// clocks run slightly behind.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);

/// What the service knows about a request besides the CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueContext {
    /// The time of issuance.
    pub now: OffsetDateTime,
    /// The validity the caller asked for; `None`: the profile's default.
    pub requested_validity: Option<Duration>,
    /// An enrollment token's reader serial: the subject's CN or
    /// serialNumber must equal it.
    pub bound_subject: Option<String>,
    /// The role to write, chosen by an operator (or the profile's default).
    pub role: Option<String>,
    /// The tenant to write.
    pub tenant: Option<String>,
    /// The issuing CA certificate's notAfter; validity is clamped to it.
    pub issuer_not_after: OffsetDateTime,
    /// Names an operator adds (e.g. for server certificates); checked
    /// against the profile's SAN rules like requested names.
    pub extra_sans: Vec<San>,
}

impl IssueContext {
    /// A context with no requested validity, binding, role, tenant or extra
    /// names.
    pub fn new(now: OffsetDateTime, issuer_not_after: OffsetDateTime) -> IssueContext {
        IssueContext {
            now,
            requested_validity: None,
            bound_subject: None,
            role: None,
            tenant: None,
            issuer_not_after,
            extra_sans: Vec::new(),
        }
    }
}

/// Why a request was rejected; [`RejectReason::code`] is stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// An end-entity request asked for basicConstraints CA:TRUE.
    CaRequested,
    /// The requested validity exceeds the profile's maximum.
    ValidityTooLong,
    /// The requested validity is zero or negative.
    ValidityInvalid,
    /// The issuing CA's certificate has expired (or expires now).
    IssuerExpired,
    /// The CSR asks for an extension the profile does not allow.
    ForbiddenExtension,
    /// The CSR asks for a keyUsage the profile does not issue.
    KeyUsageNotAllowed,
    /// The CSR asks for an extendedKeyUsage the profile does not issue.
    ExtendedKeyUsageNotAllowed,
    /// A subject attribute is missing, not allowed, or breaks the rules.
    SubjectNotAllowed,
    /// A subject alternative name is not allowed.
    SanNotAllowed,
    /// The key type is not in the profile's list.
    KeyTypeNotAllowed,
    /// The subject does not match the enrollment token's binding.
    SubjectMismatch,
    /// The profile cannot be used with an enrollment token.
    EnrollmentNotAllowed,
    /// The role is not one the profile allows.
    RoleNotAllowed,
    /// The profile needs a role and none was given.
    RoleRequired,
    /// The profile needs a tenant and none was given.
    TenantRequired,
    /// A tenant was given where the profile allows none.
    TenantNotAllowed,
    /// The tenant is not a valid identifier.
    TenantInvalid,
    /// The key pair comes from the other source (CSR vs. service-generated).
    KeySourceMismatch,
}

impl RejectReason {
    /// A stable snake_case code for APIs and audit records.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::CaRequested => "ca_requested",
            RejectReason::ValidityTooLong => "validity_too_long",
            RejectReason::ValidityInvalid => "validity_invalid",
            RejectReason::IssuerExpired => "issuer_expired",
            RejectReason::ForbiddenExtension => "forbidden_extension",
            RejectReason::KeyUsageNotAllowed => "key_usage_not_allowed",
            RejectReason::ExtendedKeyUsageNotAllowed => "extended_key_usage_not_allowed",
            RejectReason::SubjectNotAllowed => "subject_not_allowed",
            RejectReason::SanNotAllowed => "san_not_allowed",
            RejectReason::KeyTypeNotAllowed => "key_type_not_allowed",
            RejectReason::SubjectMismatch => "subject_mismatch",
            RejectReason::EnrollmentNotAllowed => "enrollment_not_allowed",
            RejectReason::RoleNotAllowed => "role_not_allowed",
            RejectReason::RoleRequired => "role_required",
            RejectReason::TenantRequired => "tenant_required",
            RejectReason::TenantNotAllowed => "tenant_not_allowed",
            RejectReason::TenantInvalid => "tenant_invalid",
            RejectReason::KeySourceMismatch => "key_source_mismatch",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refused request: the reason and a message naming what was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// What, for the requester and the audit log (no key material).
    pub message: String,
}

fn reject<T>(reason: RejectReason, message: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection { reason, message: message.into() })
}

/// What the CA will issue for an approved request. Made only by
/// [`approve`] and [`approve_generated`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    profile: String,
    subject: DistinguishedNameSpec,
    sans: Vec<San>,
    role: Option<String>,
    tenant: Option<String>,
    public_key: PublicKey,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    key_usage: Vec<KeyUsage>,
    extended_key_usage: Vec<ExtendedKeyUsage>,
}

impl Approval {
    /// The profile's name.
    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// The subject to issue.
    pub fn subject(&self) -> &DistinguishedNameSpec {
        &self.subject
    }

    /// Every SAN to issue, the CA's role and tenant URIs last.
    pub fn sans(&self) -> &[San] {
        &self.sans
    }

    /// The role written into the certificate.
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// The tenant written into the certificate.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The key to certify.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// notBefore (`now` less [`CLOCK_SKEW`], whole seconds).
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// notAfter (clamped to the issuer's notAfter).
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// keyUsage bits to issue.
    pub fn key_usage(&self) -> &[KeyUsage] {
        &self.key_usage
    }

    /// extendedKeyUsage purposes to issue.
    pub fn extended_key_usage(&self) -> &[ExtendedKeyUsage] {
        &self.extended_key_usage
    }
}

/// Checks `csr` and `ctx` against `profile`.
pub fn approve(profile: &CertProfile, csr: &Csr, ctx: &IssueContext) -> Result<Approval, Rejection> {
    if profile.key_generation == KeyGeneration::Service {
        return reject(
            RejectReason::KeySourceMismatch,
            format!("profile {}: the service generates the key pair; a CSR's key is not certified", profile.name),
        );
    }
    let key = csr.public_key();
    check_key_type(profile, key)?;
    check_extensions(profile, csr, key)?;
    let subject = check_subject(profile, csr.subject())?;
    finish(profile, subject, csr.sans(), key.clone(), ctx)
}

/// Approves a key pair the service generated (e.g. `reader-encrypt`): the
/// subject and names are copied from `subject_from`, the approval of the
/// requester's signing certificate, and checked again against `profile`.
pub fn approve_generated(
    profile: &CertProfile,
    subject_from: &Approval,
    key: PublicKey,
    ctx: &IssueContext,
) -> Result<Approval, Rejection> {
    if profile.key_generation != KeyGeneration::Service {
        return reject(
            RejectReason::KeySourceMismatch,
            format!("profile {}: the requester's CSR supplies the key; the service does not generate it", profile.name),
        );
    }
    check_key_type(profile, &key)?;
    let entries: Vec<NameEntry> = subject_from
        .subject
        .iter()
        .map(|(a, v)| NameEntry { attribute: Some(a), oid: crate::names::oid_to_string(a.oid()), value: v.to_owned() })
        .collect();
    let subject = check_subject(profile, &entries)?;
    let named: Vec<San> = subject_from.sans.iter().filter(|s| !is_identity_uri(s)).cloned().collect();
    finish(profile, subject, &named, key, ctx)
}

fn finish(
    profile: &CertProfile,
    subject: DistinguishedNameSpec,
    requested_sans: &[San],
    public_key: PublicKey,
    ctx: &IssueContext,
) -> Result<Approval, Rejection> {
    check_binding(profile, ctx, &subject)?;
    let mut sans = check_sans(profile, requested_sans, &ctx.extra_sans)?;
    let (role, tenant) = identity(profile, ctx)?;
    if let Some(r) = &role {
        sans.push(San::Uri(format!("{ROLE_URI_PREFIX}{r}")));
    }
    if let Some(t) = &tenant {
        sans.push(San::Uri(format!("{TENANT_URI_PREFIX}{t}")));
    }
    if subject.is_empty() && sans.is_empty() {
        return reject(RejectReason::SubjectNotAllowed, "the certificate would name nobody: no subject and no SAN");
    }
    let (not_before, not_after) = validity(profile, ctx)?;
    Ok(Approval {
        profile: profile.name.clone(),
        subject,
        sans,
        role,
        tenant,
        key_usage: profile.key_usage_for(public_key.key_type()),
        extended_key_usage: profile.extended_key_usage.clone(),
        public_key,
        not_before,
        not_after,
    })
}

fn check_key_type(profile: &CertProfile, key: &PublicKey) -> Result<(), Rejection> {
    if profile.key_types.contains(&key.key_type()) {
        return Ok(());
    }
    let allowed: Vec<&str> = profile.key_types.iter().map(|k| k.name()).collect();
    reject(
        RejectReason::KeyTypeNotAllowed,
        format!(
            "key type {} is not allowed by profile {} (allowed: {})",
            key.key_type(),
            profile.name,
            allowed.join(", ")
        ),
    )
}

fn extension_name(oid: &str) -> &'static str {
    match oid {
        "2.5.29.30" => " (nameConstraints)",
        "2.5.29.31" => " (cRLDistributionPoints)",
        "2.5.29.32" => " (certificatePolicies)",
        "2.5.29.35" => " (authorityKeyIdentifier)",
        "2.5.29.36" => " (policyConstraints)",
        "2.5.29.54" => " (inhibitAnyPolicy)",
        "1.3.6.1.5.5.7.1.1" => " (authorityInfoAccess)",
        "1.3.6.1.5.5.7.1.24" => " (TLS feature)",
        _ => "",
    }
}

fn check_extensions(profile: &CertProfile, csr: &Csr, key: &PublicKey) -> Result<(), Rejection> {
    // CA first: it is the request that matters most, whatever else it asks.
    if csr.requests_ca() && !profile.kind.is_ca() {
        return reject(
            RejectReason::CaRequested,
            format!(
                "the CSR asks for basicConstraints CA:TRUE; profile {} issues end-entity certificates",
                profile.name
            ),
        );
    }
    let issued_ku = profile.key_usage_for(key.key_type());
    for ext in csr.extensions() {
        match &ext.value {
            RequestedValue::BasicConstraints { .. }
            | RequestedValue::SubjectAltName(_)
            | RequestedValue::SubjectKeyIdentifier => {}
            RequestedValue::KeyUsage(asked) => {
                if let Some(u) = asked.iter().find(|u| !issued_ku.contains(u)) {
                    let issued: Vec<&str> = issued_ku.iter().map(|u| u.name()).collect();
                    return reject(
                        RejectReason::KeyUsageNotAllowed,
                        format!(
                            "keyUsage {u} is not issued by profile {} for {} keys (issued: {})",
                            profile.name,
                            key.key_type(),
                            issued.join(", ")
                        ),
                    );
                }
            }
            RequestedValue::ExtendedKeyUsage(asked) => {
                if let Some(e) = asked.iter().find(|e| !profile.extended_key_usage.contains(e)) {
                    let issued: Vec<String> = profile.extended_key_usage.iter().map(|e| e.name()).collect();
                    return reject(
                        RejectReason::ExtendedKeyUsageNotAllowed,
                        format!(
                            "extendedKeyUsage {e} is not issued by profile {} (issued: {})",
                            profile.name,
                            if issued.is_empty() { "none".to_owned() } else { issued.join(", ") }
                        ),
                    );
                }
            }
            _ if profile.tolerated_extensions.contains(&ext.oid) => {}
            _ => {
                return reject(
                    RejectReason::ForbiddenExtension,
                    format!(
                        "extension {}{} is not allowed by profile {}",
                        ext.oid,
                        extension_name(&ext.oid),
                        profile.name
                    ),
                );
            }
        }
    }
    Ok(())
}

fn check_subject(profile: &CertProfile, entries: &[NameEntry]) -> Result<DistinguishedNameSpec, Rejection> {
    let rules = &profile.subject;
    let allowed = || rules.allowed.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ");
    let mut subject = DistinguishedNameSpec::new();
    for entry in entries {
        let Some(attribute) = entry.attribute.filter(|a| rules.allowed.contains(a)) else {
            let name = entry.attribute.map(|a| a.name().to_owned()).unwrap_or_else(|| entry.oid.clone());
            return reject(
                RejectReason::SubjectNotAllowed,
                format!("subject attribute {name} is not allowed by profile {} (allowed: {})", profile.name, allowed()),
            );
        };
        if subject.get(attribute).is_some() {
            return reject(
                RejectReason::SubjectNotAllowed,
                format!("subject attribute {attribute} appears more than once"),
            );
        }
        let value = &entry.value;
        let chars = value.chars().count();
        if chars == 0 || chars > rules.max_length {
            return reject(
                RejectReason::SubjectNotAllowed,
                format!("subject attribute {attribute}: {chars} characters (1 to {} allowed)", rules.max_length),
            );
        }
        let charset_ok = if attribute.printable_only() {
            crate::names::is_encodable_printable(value)
        } else {
            charset_allows(rules.charset, value)
        };
        if !charset_ok {
            return reject(
                RejectReason::SubjectNotAllowed,
                format!("subject attribute {attribute}: {value:?} has characters outside the allowed set"),
            );
        }
        if attribute == DnAttribute::Country && !(value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase())) {
            return reject(
                RejectReason::SubjectNotAllowed,
                format!("subject attribute C: {value:?} is not a two-letter country code"),
            );
        }
        subject.set(attribute, value.clone());
    }
    if let Some(missing) = rules.required.iter().find(|a| subject.get(**a).is_none()) {
        return reject(
            RejectReason::SubjectNotAllowed,
            format!("subject attribute {missing} is required by profile {}", profile.name),
        );
    }
    Ok(subject)
}

fn check_binding(profile: &CertProfile, ctx: &IssueContext, subject: &DistinguishedNameSpec) -> Result<(), Rejection> {
    let Some(bound) = &ctx.bound_subject else { return Ok(()) };
    if !profile.enrollment {
        return reject(
            RejectReason::EnrollmentNotAllowed,
            format!("profile {} cannot be used with an enrollment token", profile.name),
        );
    }
    let cn = subject.get(DnAttribute::CommonName);
    let serial = subject.get(DnAttribute::SerialNumber);
    if cn == Some(bound.as_str()) || serial == Some(bound.as_str()) {
        return Ok(());
    }
    let named = |v: Option<&str>| v.map(|v| format!("{v:?}")).unwrap_or_else(|| "absent".into());
    reject(
        RejectReason::SubjectMismatch,
        format!(
            "the enrollment is bound to reader {bound:?}, but the subject's CN is {} and its serialNumber {}",
            named(cn),
            named(serial)
        ),
    )
}

fn is_identity_uri(san: &San) -> bool {
    matches!(san, San::Uri(u) if u.to_ascii_lowercase().starts_with("urn:kms:"))
}

/// True for a DNS name of letter/digit/hyphen labels (RFC 1123), at most
/// 253 characters; single-label names (`localhost`) included.
pub(crate) fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn check_sans(profile: &CertProfile, requested: &[San], extra: &[San]) -> Result<Vec<San>, Rejection> {
    let rules = &profile.san;
    let mut out: Vec<San> = Vec::new();
    let mut seen = HashSet::new();
    for san in requested.iter().chain(extra) {
        let not_allowed =
            |why: String| reject(RejectReason::SanNotAllowed, format!("subject alternative name {san}: {why}"));
        let Some(kind) = san.kind() else {
            return not_allowed("this name type is never issued".into());
        };
        if !rules.types.contains(&kind) {
            return not_allowed(format!("{kind} names are not allowed by profile {}", profile.name));
        }
        let normalized = match san {
            San::Dns(name) => {
                let name = name.to_ascii_lowercase();
                let base = match name.strip_prefix("*.") {
                    Some(base) if rules.dns_wildcards => base,
                    Some(_) => return not_allowed("wildcard names are not allowed".into()),
                    None => name.as_str(),
                };
                if !is_dns_name(base) {
                    return not_allowed("not a valid DNS name".into());
                }
                if !rules.dns_suffixes.is_empty()
                    && !rules.dns_suffixes.iter().any(|s| base == s || base.ends_with(&format!(".{s}")))
                {
                    return not_allowed(format!("not under an allowed suffix ({})", rules.dns_suffixes.join(", ")));
                }
                San::Dns(name)
            }
            San::Uri(uri) => {
                if is_identity_uri(san) {
                    return not_allowed("urn:kms: names are set by the CA from the request context".into());
                }
                let scheme_ok = uri.split_once(':').is_some_and(|(scheme, rest)| {
                    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                        && !rest.is_empty()
                });
                if !scheme_ok || !uri.bytes().all(|b| b.is_ascii_graphic()) || uri.len() > 1024 {
                    return not_allowed("not an absolute URI of printable ASCII".into());
                }
                san.clone()
            }
            San::Email(address) => {
                let ok = address.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && local.len() <= 64
                        && local.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
                        && is_dns_name(domain)
                });
                if !ok {
                    return not_allowed("not an e-mail address".into());
                }
                san.clone()
            }
            San::Ip(_) => san.clone(),
            San::Unsupported(_) => return not_allowed("this name type is never issued".into()),
        };
        if seen.insert(normalized.clone()) {
            out.push(normalized);
        }
    }
    if out.len() > rules.max {
        return reject(
            RejectReason::SanNotAllowed,
            format!("{} subject alternative names; profile {} allows at most {}", out.len(), profile.name, rules.max),
        );
    }
    if out.len() < rules.min {
        return reject(
            RejectReason::SanNotAllowed,
            format!("profile {} needs at least {} subject alternative name(s)", profile.name, rules.min),
        );
    }
    Ok(out)
}

fn identity(profile: &CertProfile, ctx: &IssueContext) -> Result<(Option<String>, Option<String>), Rejection> {
    let rules = &profile.identity;
    let role = ctx.role.clone().or_else(|| rules.default_role.clone());
    match &role {
        Some(r) if rules.roles.is_empty() => {
            return reject(
                RejectReason::RoleNotAllowed,
                format!("profile {} sets no role (asked for {r:?})", profile.name),
            );
        }
        Some(r) if !rules.roles.contains(r) => {
            return reject(
                RejectReason::RoleNotAllowed,
                format!("role {r:?} is not allowed by profile {} (allowed: {})", profile.name, rules.roles.join(", ")),
            );
        }
        None if !rules.roles.is_empty() => {
            return reject(
                RejectReason::RoleRequired,
                format!("profile {} needs a role (one of {})", profile.name, rules.roles.join(", ")),
            );
        }
        _ => {}
    }
    match (&ctx.tenant, rules.tenant) {
        (None, TenantRule::Required) => {
            return reject(RejectReason::TenantRequired, format!("profile {} needs a tenant", profile.name));
        }
        (Some(t), TenantRule::Forbidden) => {
            return reject(
                RejectReason::TenantNotAllowed,
                format!("profile {} sets no tenant (asked for {t:?})", profile.name),
            );
        }
        (Some(t), _) => {
            if let Err(e) = check_identifier("tenant", t) {
                return reject(RejectReason::TenantInvalid, e.to_string());
            }
        }
        (None, _) => {}
    }
    Ok((role, ctx.tenant.clone()))
}

fn describe(d: Duration) -> String {
    if d.whole_seconds() % 86_400 == 0 {
        format!("{} days", d.whole_days())
    } else if d.whole_seconds() % 3_600 == 0 {
        format!("{} hours", d.whole_hours())
    } else {
        format!("{} seconds", d.whole_seconds())
    }
}

fn validity(profile: &CertProfile, ctx: &IssueContext) -> Result<(OffsetDateTime, OffsetDateTime), Rejection> {
    let requested = ctx.requested_validity.unwrap_or(profile.default_validity);
    if requested <= Duration::ZERO {
        return reject(
            RejectReason::ValidityInvalid,
            format!("requested validity {} is not positive", describe(requested)),
        );
    }
    if requested > profile.max_validity {
        return reject(
            RejectReason::ValidityTooLong,
            format!(
                "requested validity {} exceeds profile {}'s maximum of {}",
                describe(requested),
                profile.name,
                describe(profile.max_validity)
            ),
        );
    }
    let now = ctx.now.replace_nanosecond(0).unwrap_or(ctx.now);
    let issuer_not_after = ctx.issuer_not_after.replace_nanosecond(0).unwrap_or(ctx.issuer_not_after);
    let not_after = (now + requested).min(issuer_not_after);
    if not_after <= now {
        return reject(
            RejectReason::IssuerExpired,
            format!("the issuing CA's certificate expired at {issuer_not_after}"),
        );
    }
    Ok((now - CLOCK_SKEW, not_after))
}
