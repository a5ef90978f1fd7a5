//! The certificate authority: issuing CAs whose keys live in the HSM, reader
//! enrollment (with dual certificates), server and client certificates,
//! renewal, revocation and CRLs.
//!
//! The certificate logic (profiles, CSR checks, encoding) is in `kms-ca`;
//! here it meets the HSM, the database, authorization and the audit log.
//! Every issuance, renewal, revocation and token use, allowed or refused, is
//! audited; a certificate is returned only once its record and audit entry
//! are committed.

use std::sync::{Arc, RwLock};

use kms_ca::{CertProfile, CertProfiles, KeyType};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::Core;
use super::keys::event;
use crate::audit::{self, Outcome};
use crate::authz::{self, Action, Authorized, Denied, Resource};
use crate::certs::{
    self, CertFilter, CertRecord, CertStatus, CrlRecord, IssuerRecord, IssuerState, TokenRecord, now_secs,
};
use crate::config::CaConfig;
use crate::error::{Error, Result};
use crate::hsm::HsmError;
use crate::hsm::pki::{self, RecipientKey, RecipientParts};
use crate::hsm::signer::HsmSigner;
use crate::identity::Principal;
use crate::keys::{KeyName, KeyRef, Purpose};

mod issuance;
mod issuers;

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument { field: field.to_owned(), reason: reason.into() }
}

fn ca_error(field: &str, e: kms_ca::CaError) -> Error {
    invalid(field, e.to_string())
}

/// The CA's configuration and profiles, reloadable like card profiles.
pub struct CaState {
    /// Configuration.
    pub config: CaConfig,
    profiles: RwLock<Arc<CertProfiles>>,
    anchors: Vec<Vec<u8>>,
    revoked: RwLock<RevokedView>,
    refreshing: tokio::sync::Mutex<()>,
}

/// What this replica knows of the revoked certificates, for authenticating
/// callers without a database read per call: loaded whole once, then
/// extended with revocations at or after `high_water` at most every
/// `ca.revocation_refresh_ms` (the database stays the source of truth; a
/// revocation on another replica is seen within that interval, one made
/// here at once).
#[derive(Default)]
struct RevokedView {
    serials: std::collections::HashSet<String>,
    high_water: i64,
    refreshed: Option<std::time::Instant>,
}

impl CaState {
    /// Assembles the CA state; `anchors` are the DER certificates of the
    /// external CAs trusted for enrollment.
    pub fn new(config: CaConfig, profiles: CertProfiles, anchors: Vec<Vec<u8>>) -> CaState {
        CaState {
            config,
            profiles: RwLock::new(Arc::new(profiles)),
            anchors,
            revoked: RwLock::new(RevokedView::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn revoked_is_fresh(&self) -> bool {
        let interval = std::time::Duration::from_millis(self.config.revocation_refresh_ms);
        let view = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        view.refreshed.is_some_and(|t| t.elapsed() < interval)
    }

    /// Records a revocation made by this replica.
    fn note_revoked(&self, serial: &str) {
        self.revoked.write().unwrap_or_else(|p| p.into_inner()).serials.insert(serial.to_owned());
    }

    /// The certificate profiles in force.
    pub fn profiles(&self) -> Arc<CertProfiles> {
        self.profiles.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the profiles (SIGHUP).
    pub fn set_profiles(&self, profiles: CertProfiles) {
        *self.profiles.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(profiles);
    }

    /// Brings the revocation view up to date if it is older than the
    /// refresh interval (one incremental query; concurrent callers wait for
    /// one refresh), then answers from it.
    pub async fn is_revoked(&self, store: &crate::store::Store, serial: &str) -> Result<bool> {
        if !self.revoked_is_fresh() {
            let _one = self.refreshing.lock().await;
            if !self.revoked_is_fresh() {
                let since = self.revoked.read().unwrap_or_else(|p| p.into_inner()).high_water;
                let rows = certs::revoked_since(store, since).await?;
                let mut view = self.revoked.write().unwrap_or_else(|p| p.into_inner());
                for (serial, at) in rows {
                    view.high_water = view.high_water.max(at);
                    view.serials.insert(serial);
                }
                view.refreshed = Some(std::time::Instant::now());
            }
        }
        Ok(self.revoked.read().unwrap_or_else(|p| p.into_inner()).serials.contains(serial))
    }

    /// The CRL distribution point of `issuer`, when `ca.crl_base_url` is set.
    pub fn crl_url(&self, issuer: &str) -> Option<String> {
        self.config.crl_base_url.as_ref().map(|b| format!("{}/{issuer}.crl", b.trim_end_matches('/')))
    }
}

/// `CreateIssuer`, parsed.
#[derive(Debug, Clone)]
pub struct CreateIssuer {
    /// Name.
    pub name: String,
    /// Subject common name.
    pub common_name: String,
    /// Optional O.
    pub organization: Option<String>,
    /// Optional C.
    pub country: Option<String>,
    /// Key type.
    pub key_type: KeyType,
}

/// The issuing CA's subject from a `CreateIssuer` request: CN 1-64
/// characters, O at most 64, C two upper-case letters.
fn issuer_subject(cmd: &CreateIssuer) -> Result<kms_ca::DistinguishedNameSpec> {
    use kms_ca::DnAttribute;
    let printable = |v: &str| v.chars().all(|c| !c.is_control());
    if cmd.common_name.trim().is_empty() || cmd.common_name.chars().count() > 64 || !printable(&cmd.common_name) {
        return Err(invalid("common_name", "must be 1-64 characters without control characters"));
    }
    let mut dn = kms_ca::DistinguishedNameSpec::new();
    if let Some(c) = &cmd.country {
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid("country", "must be two upper-case letters (ISO 3166)"));
        }
        dn.set(DnAttribute::Country, c.clone());
    }
    if let Some(o) = &cmd.organization {
        if o.chars().count() > 64 || !printable(o) {
            return Err(invalid("organization", "must be at most 64 characters without control characters"));
        }
        dn.set(DnAttribute::Organization, o.clone());
    }
    dn.set(DnAttribute::CommonName, cmd.common_name.clone());
    Ok(dn)
}

/// A certificate and the chain above it (issuer first, root last).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The record.
    pub record: CertRecord,
    /// The chain, DER.
    pub chain: Vec<Vec<u8>>,
}

/// What enrollment or renewal returns.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The signing certificate.
    pub signing: Issued,
    /// The encryption certificate and its key in CMS, when asked.
    pub encryption: Option<(Issued, Vec<u8>)>,
}

/// How an enrollment is authorized.
#[derive(Clone)]
pub enum EnrollAuth {
    /// An enrollment token's secret.
    Token(String),
    /// A certificate chain of a trusted external CA and a signature over
    /// the CSR with its key.
    External {
        /// Leaf first.
        certificates: Vec<Vec<u8>>,
        /// Signature over the CSR DER.
        csr_signature: Vec<u8>,
    },
}

/// `EnrollReader`, parsed.
#[derive(Debug, Clone)]
pub struct EnrollReader {
    /// CSR bytes (PEM or DER).
    pub csr: Vec<u8>,
    /// Authorization.
    pub auth: EnrollAuth,
    /// Signing profile.
    pub profile: String,
    /// Dual certificates wanted.
    pub dual: bool,
    /// Encryption profile.
    pub encryption_profile: String,
    /// Requested validity in days (0: default).
    pub validity_days: u32,
}

/// `IssueServerCertificate`, parsed.
#[derive(Debug, Clone)]
pub struct IssueCertificate {
    /// CSR bytes.
    pub csr: Vec<u8>,
    /// Profile.
    pub profile: String,
    /// Issuer (empty: newest active).
    pub issuer: String,
    /// DNS names / IP addresses to add.
    pub names: Vec<String>,
    /// Role (client-tls).
    pub role: Option<String>,
    /// Tenant (client-tls).
    pub tenant: Option<String>,
    /// Requested validity in days (0: default).
    pub validity_days: u32,
}

/// `CreateEnrollmentToken`, parsed.
#[derive(Debug, Clone)]
pub struct CreateToken {
    /// Reader serial the CSR must name.
    pub reader_serial: String,
    /// Profiles it may be used with.
    pub profiles: Vec<String>,
    /// Issuer (empty: newest active).
    pub issuer: String,
    /// Lifetime (0: default).
    pub ttl_secs: u64,
}

/// A new token: its id, the secret (shown once) and its expiry.
#[derive(Clone)]
pub struct NewToken {
    /// Public id.
    pub id: String,
    /// The secret.
    pub secret: String,
    /// Expiry.
    pub expires_at: i64,
    /// The issuer it enrolls under.
    pub issuer: String,
}

const TOKEN_PREFIX: &str = "kmset";

fn hex_upper(b: &[u8]) -> String {
    hex::encode_upper(b)
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(b))
}

fn random(n: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    getrandom::getrandom(&mut v).map_err(|e| Error::Hsm(HsmError::Worker(format!("no randomness: {e}"))))?;
    Ok(v)
}

/// Splits concatenated DER certificates or a PEM bundle.
pub fn split_certificates(field: &str, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    if bytes.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(bytes).map_err(|_| invalid(field, "PEM is not UTF-8"))?;
        let mut out = Vec::new();
        for block in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
            let block = block.map_err(|e| invalid(field, format!("PEM: {e}")))?;
            if block.label != "CERTIFICATE" {
                return Err(invalid(field, format!("unexpected PEM block {:?}", block.label)));
            }
            out.push(block.contents);
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (tail, _) = x509_parser::parse_x509_certificate(rest)
            .map_err(|e| invalid(field, format!("certificate {}: {e}", out.len() + 1)))?;
        let used = rest.len() - tail.len();
        out.push(rest[..used].to_vec());
        rest = tail;
    }
    Ok(out)
}

/// Checks that `chain` leads from `cert` to a self-signed root: each
/// certificate signs the one before it and is a CA.
fn check_chain(cert: &[u8], chain: &[Vec<u8>]) -> Result<()> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    fn parse(der: &[u8]) -> Result<X509Certificate<'_>> {
        X509Certificate::from_der(der).map(|(_, c)| c).map_err(|e| invalid("chain", format!("not a certificate: {e}")))
    }
    let mut below = parse(cert)?;
    for (i, der) in chain.iter().enumerate() {
        let c = parse(der)?;
        if !c.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca) {
            return Err(invalid("chain", format!("certificate {} ({}) is not a CA", i + 1, c.subject())));
        }
        below
            .verify_signature(Some(c.public_key()))
            .map_err(|_| invalid("chain", format!("{} is not signed by {}", below.subject(), c.subject())))?;
        below = c;
    }
    if below.verify_signature(None).is_err() {
        return Err(invalid(
            "chain",
            format!("the chain ends at {}, which is not a self-signed root", below.subject()),
        ));
    }
    Ok(())
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

impl Core {
    fn ca(&self) -> &CaState {
        &self.ca
    }

    fn cert_profile(&self, name: &str) -> Result<CertProfile> {
        self.ca()
            .profiles()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound { what: format!("certificate profile {name:?}") })
    }

    async fn issuer_record(&self, name: &str) -> Result<IssuerRecord> {
        certs::issuer(&self.store, name).await?.ok_or_else(|| Error::NotFound { what: format!("issuer {name:?}") })
    }

    /// The named active issuer, or the newest active one.
    async fn active_issuer(&self, name: &str) -> Result<IssuerRecord> {
        if !name.is_empty() {
            let r = self.issuer_record(name).await?;
            if r.state != IssuerState::Active {
                return Err(Error::FailedPrecondition(format!("issuer {name} is {}, not active", r.state)));
            }
            return Ok(r);
        }
        certs::issuers(&self.store)
            .await?
            .into_iter()
            .find(|i| i.state == IssuerState::Active)
            .ok_or_else(|| Error::FailedPrecondition("no active issuer (create and activate one first)".into()))
    }

    async fn audit_failed(&self, p: &Principal, action: &str, resource: String, error: &Error) {
        let e = event(p, action, resource, Outcome::Failed, error.to_string(), json!({}));
        if let Err(e) = audit::record(&self.store, &e).await {
            tracing::error!(error = %e, action, "could not audit a failure");
        }
    }
}

/// What [`Core::approve`] needs besides the profile and CSR.
struct IssueCtx {
    validity_days: u32,
    bound_subject: Option<String>,
    role: Option<String>,
    tenant: Option<String>,
    extra_sans: Vec<kms_ca::San>,
}

/// The issuing CA certificate's pathLenConstraint, if it has one.
fn issuer_path_len(issuer: &IssuerRecord) -> Option<u32> {
    let (_, cert) = x509_parser::parse_x509_certificate(&issuer.certificate).ok()?;
    cert.basic_constraints().ok().flatten().and_then(|b| b.value.path_len_constraint)
}

fn issuer_not_after(issuer: &IssuerRecord) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(issuer.not_after).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn issued_details(r: &CertRecord, approval: &kms_ca::Approval) -> serde_json::Value {
    json!({
        "serial": r.serial, "issuer": r.issuer, "profile": r.profile, "subject": r.subject,
        "not_after": r.not_after, "fingerprint": r.fingerprint, "key_type": r.key_type,
        "role": r.role, "tenant": r.tenant,
        "kcv": { "method": "SPKI_SHA256", "value": sha256_hex(approval.public_key().spki_der()) },
    })
}

// why: a token's secret must not reach a log line through `{:?}`.
impl std::fmt::Debug for EnrollAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnrollAuth::Token(_) => f.write_str("Token(<redacted>)"),
            EnrollAuth::External { certificates, .. } => {
                f.debug_struct("External").field("certificates", &certificates.len()).finish_non_exhaustive()
            }
        }
    }
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("issuer", &self.issuer)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::split_certificates;

    #[test]
    fn token_secrets_stay_out_of_debug_output() {
        let t =
            super::NewToken { id: "ab".into(), secret: "kmset.ab.s3cr3t".into(), expires_at: 1, issuer: "i".into() };
        assert!(!format!("{t:?}").contains("s3cr3t"));
        let a = super::EnrollAuth::Token("kmset.ab.s3cr3t".into());
        assert!(!format!("{a:?}").contains("s3cr3t"));
    }

    #[test]
    fn garbage_is_not_a_certificate_list() {
        assert!(split_certificates("chain", b"\x30\x03\x02\x01\x01").is_err());
        assert!(
            split_certificates("chain", b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n").is_err()
        );
        assert_eq!(split_certificates("chain", b"").map(|v| v.len()).ok(), Some(0));
    }
}
