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
}

impl CaState {
    /// Assembles the CA state; `anchors` are the DER certificates of the
    /// external CAs trusted for enrollment.
    pub fn new(config: CaConfig, profiles: CertProfiles, anchors: Vec<Vec<u8>>) -> CaState {
        CaState { config, profiles: RwLock::new(Arc::new(profiles)), anchors }
    }

    /// The certificate profiles in force.
    pub fn profiles(&self) -> Arc<CertProfiles> {
        self.profiles.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the profiles (SIGHUP).
    pub fn set_profiles(&self, profiles: CertProfiles) {
        *self.profiles.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(profiles);
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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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

    // ---- issuers ----------------------------------------------------------------------------

    /// `CreateIssuer`: a key pair in the HSM and a CSR for the root.
    pub async fn create_issuer(
        &self,
        proof: &Authorized<authz::CreateIssuer>,
        cmd: CreateIssuer,
    ) -> Result<(IssuerRecord, Vec<u8>)> {
        let p = proof.principal();
        let resource = Resource::Issuer(cmd.name.clone()).to_string();
        let result = self.create_issuer_inner(p, cmd).await;
        if let Err(e) = &result {
            self.audit_failed(p, authz::CreateIssuer::NAME, resource, e).await;
        }
        result
    }

    async fn create_issuer_inner(&self, p: &Principal, cmd: CreateIssuer) -> Result<(IssuerRecord, Vec<u8>)> {
        kms_ca::check_identifier("name", &cmd.name).map_err(|e| ca_error("name", e))?;
        if cmd.key_type == KeyType::Sm2 {
            return Err(invalid(
                "key_type",
                "SM2 issuing CAs are not supported yet: the CA cannot encode SM2-with-SM3 signatures (use ec-p256, \
                 ec-p384 or rsa-3072)",
            ));
        }
        if certs::issuer(&self.store, &cmd.name).await?.is_some() {
            return Err(Error::AlreadyExists { what: format!("issuer {}", cmd.name) });
        }
        let subject = issuer_subject(&cmd)?;
        let subject_text = subject.to_string();
        let id = random(16)?;
        let label = format!("kms:ca:{}", cmd.name);
        let hsm = self.hsm.clone();
        let key_type = cmd.key_type;
        let (public, csr) = self
            .hsm
            .run("ca_create_issuer", {
                let id = id.clone();
                move |s| {
                    let caps = hsm.capabilities();
                    let public = pki::generate_signing_key_pair(s, caps, &caps.module, key_type, &label, &id)?;
                    let csr = HsmSigner::find_by_id(s, &caps.module, &id, &hsm.info().token_label).and_then(|signer| {
                        kms_ca::issuer_csr(&signer, &subject)
                            .map_err(|e| HsmError::Worker(format!("issuing-CA CSR: {e}")))
                    });
                    match csr {
                        Ok(csr) => Ok((public, csr)),
                        Err(e) => {
                            let _ = pki::destroy_key_pair(s, &caps.module, &id);
                            Err(e)
                        }
                    }
                }
            })
            .await?;
        let now = now_secs();
        let record = IssuerRecord {
            name: cmd.name.clone(),
            state: IssuerState::Pending,
            key_type: key_type.name().to_owned(),
            subject: subject_text,
            module: self.hsm.info().path.clone(),
            object_id: hex::encode(&id),
            public_key: public.spki_der.clone(),
            certificate: Vec::new(),
            chain: Vec::new(),
            not_before: 0,
            not_after: 0,
            crl_number: 0,
            created_by: p.name.clone(),
            created_at: now,
            updated_at: now,
        };
        let stored: Result<()> = async {
            let mut tx = self.store.begin().await?;
            certs::insert_issuer(&mut tx, &record).await?;
            let e = event(
                p,
                authz::CreateIssuer::NAME,
                Resource::Issuer(record.name.clone()).to_string(),
                Outcome::Success,
                String::new(),
                json!({
                    "issuer": record.name, "subject": record.subject, "key_type": record.key_type,
                    "object_id": record.object_id,
                    "kcv": { "method": "SPKI_SHA256", "value": sha256_hex(&public.spki_der) },
                }),
            );
            audit::append(&mut tx, &e).await.map_err(Error::AuditUnavailable)?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if let Err(e) = stored {
            let hsm = self.hsm.clone();
            let _ = self
                .hsm
                .run("ca_destroy_issuer_key", move |s| pki::destroy_key_pair(s, &hsm.capabilities().module, &id))
                .await;
            return Err(e);
        }
        Ok((record, csr))
    }

    /// `ActivateIssuer`: installs the root-signed certificate.
    pub async fn activate_issuer(
        &self,
        proof: &Authorized<authz::ActivateIssuer>,
        name: &str,
        certificate: &[u8],
        chain: &[u8],
    ) -> Result<IssuerRecord> {
        let p = proof.principal();
        let result = async {
            let issuer = self.issuer_record(name).await?;
            if issuer.state != IssuerState::Pending {
                return Err(Error::FailedPrecondition(format!("issuer {name} is {}, not pending", issuer.state)));
            }
            let cert = split_certificates("certificate", certificate)?;
            let [cert] = cert.as_slice() else {
                return Err(invalid("certificate", "must hold exactly one certificate"));
            };
            let chain = split_certificates("chain", chain)?;
            if chain.is_empty() {
                return Err(invalid("chain", "must hold the chain up to the root"));
            }
            let key = kms_ca::PublicKey::from_spki_der(&issuer.public_key)
                .map_err(|e| Error::Store(crate::store::StoreError::Corrupt(format!("issuer key: {e}"))))?;
            let info = kms_ca::check_issuer_certificate(cert, key.raw()).map_err(|e| ca_error("certificate", e))?;
            check_chain(cert, &chain)?;
            let mut tx = self.store.begin().await?;
            let joined: Vec<u8> = chain.concat();
            if !certs::activate_issuer(
                &mut tx,
                name,
                &info.subject,
                cert,
                &joined,
                (unix(info.not_before), unix(info.not_after)),
            )
            .await?
            {
                return Err(Error::FailedPrecondition(format!("issuer {name} was activated concurrently")));
            }
            let e = event(
                p,
                authz::ActivateIssuer::NAME,
                Resource::Issuer(name.to_owned()).to_string(),
                Outcome::Success,
                String::new(),
                json!({
                    "issuer": name, "subject": info.subject, "certificate_sha256": sha256_hex(cert),
                    "not_after": unix(info.not_after), "chain_length": chain.len(),
                    "kcv": { "method": "SPKI_SHA256", "value": sha256_hex(&issuer.public_key) },
                }),
            );
            audit::append(&mut tx, &e).await.map_err(Error::AuditUnavailable)?;
            tx.commit().await?;
            let activated = self.issuer_record(name).await?;
            self.publish_crl(&activated).await?;
            self.issuer_record(name).await
        }
        .await;
        if let Err(e) = &result {
            self.audit_failed(p, authz::ActivateIssuer::NAME, Resource::Issuer(name.to_owned()).to_string(), e).await;
        }
        result
    }

    /// `RetireIssuer`.
    pub async fn retire_issuer(&self, proof: &Authorized<authz::RetireIssuer>, name: &str) -> Result<IssuerRecord> {
        let p = proof.principal();
        let result = async {
            let mut tx = self.store.begin().await?;
            if !certs::set_issuer_state(&mut tx, name, IssuerState::Active, IssuerState::Retired).await? {
                let what = self.issuer_record(name).await?;
                return Err(Error::FailedPrecondition(format!("issuer {name} is {}, not active", what.state)));
            }
            let e = event(
                p,
                authz::RetireIssuer::NAME,
                Resource::Issuer(name.to_owned()).to_string(),
                Outcome::Success,
                String::new(),
                json!({ "issuer": name }),
            );
            audit::append(&mut tx, &e).await.map_err(Error::AuditUnavailable)?;
            tx.commit().await?;
            self.issuer_record(name).await
        }
        .await;
        if let Err(e) = &result {
            self.audit_failed(p, authz::RetireIssuer::NAME, Resource::Issuer(name.to_owned()).to_string(), e).await;
        }
        result
    }

    /// `ListIssuers`.
    pub async fn list_issuers(&self, _proof: &Authorized<authz::ListIssuers>) -> Result<Vec<IssuerRecord>> {
        Ok(certs::issuers(&self.store).await?)
    }

    /// `ListCertificateProfiles`.
    pub fn list_cert_profiles(&self, _proof: &Authorized<authz::ListCertificateProfiles>) -> Arc<CertProfiles> {
        self.ca().profiles()
    }

    /// The issuer's certificate followed by its chain.
    pub async fn ca_chain(&self, _proof: &Authorized<authz::GetCaMaterial>, name: &str) -> Result<Vec<Vec<u8>>> {
        let issuer = if name.is_empty() { self.active_issuer("").await? } else { self.issuer_record(name).await? };
        self.chain_of(&issuer)
    }

    fn chain_of(&self, issuer: &IssuerRecord) -> Result<Vec<Vec<u8>>> {
        if issuer.state == IssuerState::Pending {
            return Err(Error::FailedPrecondition(format!("issuer {} has no certificate yet", issuer.name)));
        }
        let mut out = vec![issuer.certificate.clone()];
        out.extend(split_certificates("chain", &issuer.chain)?);
        Ok(out)
    }

    // ---- CRLs -------------------------------------------------------------------------------

    /// Builds, signs and stores a new CRL for `issuer`.
    pub async fn publish_crl(&self, issuer: &IssuerRecord) -> Result<CrlRecord> {
        let now = now_secs();
        let rows = certs::revoked_for_crl(&self.store, &issuer.name, now).await?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in &rows {
            entries.push(kms_ca::RevokedEntry {
                serial: hex::decode(&r.serial)
                    .map_err(|e| Error::Store(crate::store::StoreError::Corrupt(e.to_string())))?,
                revoked_at: OffsetDateTime::from_unix_timestamp(r.revoked_at).unwrap_or(OffsetDateTime::UNIX_EPOCH),
                reason: r.reason.parse().unwrap_or(kms_ca::RevocationReason::Unspecified),
            });
        }
        let number = certs::next_crl_number(&self.store, &issuer.name).await?;
        let this_update = OffsetDateTime::from_unix_timestamp(now).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let next_update = this_update + time::Duration::hours(self.ca().config.crl_validity_hours as i64);
        let id = hex::decode(&issuer.object_id)
            .map_err(|e| Error::Store(crate::store::StoreError::Corrupt(e.to_string())))?;
        let cert = issuer.certificate.clone();
        let hsm = self.hsm.clone();
        let entries = Arc::new(entries);
        let der = self
            .hsm
            .run("ca_sign_crl", move |s| {
                let signer = HsmSigner::find_by_id(s, &hsm.capabilities().module, &id, &hsm.info().token_label)?;
                let issuer = kms_ca::Issuer { signer: &signer, certificate_der: &cert };
                kms_ca::build_crl(&issuer, number as u64, this_update, next_update, &entries)
                    .map_err(|e| HsmError::Worker(format!("CRL: {e}")))
            })
            .await?;
        let record = CrlRecord {
            issuer: issuer.name.clone(),
            number,
            this_update: unix(this_update),
            next_update: unix(next_update),
            entries: rows.len() as i64,
            der,
        };
        certs::store_crl(&self.store, &record).await?;
        Ok(record)
    }

    /// The current CRL of `issuer` (published now if there is none).
    pub async fn crl(&self, name: &str) -> Result<CrlRecord> {
        if let Some(c) = certs::crl(&self.store, name).await? {
            return Ok(c);
        }
        let issuer = self.issuer_record(name).await?;
        if issuer.state == IssuerState::Pending {
            return Err(Error::FailedPrecondition(format!("issuer {name} has no certificate yet")));
        }
        self.publish_crl(&issuer).await
    }

    /// `GetCrl`.
    pub async fn get_crl(&self, _proof: &Authorized<authz::GetCaMaterial>, name: &str) -> Result<CrlRecord> {
        self.crl(name).await
    }

    /// Republishes every CRL that is missing or has less than half its
    /// validity left; retired issuers publish until their last certificate
    /// expires. Run periodically by the server.
    pub async fn refresh_crls(&self) -> Result<usize> {
        let now = now_secs();
        let half = (self.ca().config.crl_validity_hours as i64) * 3600 / 2;
        let mut published = 0;
        for issuer in certs::issuers(&self.store).await? {
            match issuer.state {
                IssuerState::Pending => continue,
                IssuerState::Retired if certs::last_expiry(&self.store, &issuer.name).await? <= now => continue,
                _ => {}
            }
            // why: also when a revocation is newer than the CRL (its publish
            // after the revocation failed), so the gap lasts one check, not
            // half a CRL's validity.
            let stale = match certs::crl(&self.store, &issuer.name).await? {
                Some(c) => {
                    c.next_update - now < half
                        || certs::last_revocation(&self.store, &issuer.name).await? >= c.this_update
                }
                None => true,
            };
            if stale {
                self.publish_crl(&issuer).await?;
                published += 1;
            }
        }
        Ok(published)
    }

    // ---- tokens -----------------------------------------------------------------------------

    /// `CreateEnrollmentToken`. `proofs` holds one proof per profile named.
    pub async fn create_token(
        &self,
        proofs: &[Authorized<authz::CreateEnrollmentToken>],
        cmd: CreateToken,
    ) -> Result<NewToken> {
        let Some(first) = proofs.first() else {
            return Err(invalid("profiles", "name at least one profile"));
        };
        let p = first.principal();
        let result = async {
            if cmd.reader_serial.is_empty()
                || cmd.reader_serial.len() > 64
                || !cmd.reader_serial.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(invalid("reader_serial", "must be 1-64 of [A-Za-z0-9._-]"));
            }
            let profiles = self.ca().profiles();
            for name in &cmd.profiles {
                let profile = profiles
                    .get(name)
                    .ok_or_else(|| Error::NotFound { what: format!("certificate profile {name:?}") })?;
                if !profile.enrollment {
                    return Err(invalid("profiles", format!("profile {name} is not for reader enrollment")));
                }
            }
            let issuer = self.active_issuer(&cmd.issuer).await?;
            let cfg = &self.ca().config;
            let ttl = if cmd.ttl_secs == 0 { cfg.token_default_ttl_secs } else { cmd.ttl_secs };
            if ttl > cfg.token_max_ttl_secs {
                return Err(invalid(
                    "ttl_seconds",
                    format!("{ttl} exceeds the limit of {} (ca.token_max_ttl_secs)", cfg.token_max_ttl_secs),
                ));
            }
            let id = hex::encode(random(8)?);
            let secret = format!("{TOKEN_PREFIX}.{id}.{}", hex::encode(random(32)?));
            let now = now_secs();
            let record = TokenRecord {
                id: id.clone(),
                secret_hash: sha256_hex(secret.as_bytes()),
                reader_serial: cmd.reader_serial.clone(),
                profiles: cmd.profiles.join(","),
                issuer: issuer.name.clone(),
                tenant: p.tenant.clone(),
                expires_at: now + ttl as i64,
                used_at: 0,
                used_for: String::new(),
                created_by: p.name.clone(),
                created_at: now,
            };
            let mut tx = self.store.begin().await?;
            certs::insert_token(&mut tx, &record).await?;
            let e = event(
                p,
                authz::CreateEnrollmentToken::NAME,
                format!("token:{id}"),
                Outcome::Success,
                String::new(),
                json!({ "token_id": id, "reader_serial": record.reader_serial, "profiles": cmd.profiles,
                        "issuer": record.issuer, "expires_at": record.expires_at }),
            );
            audit::append(&mut tx, &e).await.map_err(Error::AuditUnavailable)?;
            tx.commit().await?;
            Ok(NewToken { id, secret, expires_at: record.expires_at, issuer: record.issuer })
        }
        .await;
        if let Err(e) = &result {
            self.audit_failed(p, authz::CreateEnrollmentToken::NAME, format!("reader:{}", cmd.reader_serial), e).await;
        }
        result
    }

    /// Resolves an enrollment token to the principal it stands for.
    async fn token_principal(&self, secret: &str) -> Result<(Principal, TokenRecord)> {
        let unknown =
            || Error::Unauthenticated(crate::identity::IdentityError::Token("enrollment token not recognised".into()));
        let mut parts = secret.splitn(3, '.');
        let (Some(TOKEN_PREFIX), Some(id), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(unknown());
        };
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let record = certs::token(&self.store, id).await?.ok_or_else(unknown)?;
        let presented = sha256_hex(secret.as_bytes());
        // why: compare digests, not secrets, so the comparison's timing
        // says nothing about the stored value.
        if presented.as_bytes().iter().zip(record.secret_hash.as_bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) != 0
            || presented.len() != record.secret_hash.len()
        {
            return Err(unknown());
        }
        let principal = Principal {
            name: format!("token:{}", record.id),
            role: "enrollee".into(),
            tenant: record.tenant.clone(),
            certificate_serial: String::new(),
        };
        Ok((principal, record))
    }

    // ---- issuance ---------------------------------------------------------------------------

    /// Signs `approval` under `issuer` in the HSM.
    async fn sign_certificate(
        &self,
        issuer: &IssuerRecord,
        profile: &CertProfile,
        approval: kms_ca::Approval,
    ) -> Result<kms_ca::IssuedCertificate> {
        let id = hex::decode(&issuer.object_id)
            .map_err(|e| Error::Store(crate::store::StoreError::Corrupt(e.to_string())))?;
        let cert = issuer.certificate.clone();
        let hsm = self.hsm.clone();
        let profile = profile.clone();
        let crl_url = self.ca().crl_url(&issuer.name);
        let serial = kms_ca::new_serial().map_err(|e| ca_error("serial", e))?;
        Ok(self
            .hsm
            .run("ca_sign_certificate", move |s| {
                let signer = HsmSigner::find_by_id(s, &hsm.capabilities().module, &id, &hsm.info().token_label)?;
                let issuer = kms_ca::Issuer { signer: &signer, certificate_der: &cert };
                kms_ca::issue_certificate(&issuer, &profile, &approval, &serial, crl_url.as_deref())
                    .map_err(|e| HsmError::Worker(format!("certificate: {e}")))
            })
            .await?)
    }

    fn record_for(
        &self,
        issued: &kms_ca::IssuedCertificate,
        issuer: &IssuerRecord,
        profile: &CertProfile,
        approval: &kms_ca::Approval,
        requested_by: &str,
    ) -> CertRecord {
        CertRecord {
            serial: hex_upper(&issued.serial),
            issuer: issuer.name.clone(),
            profile: profile.name.clone(),
            subject: issued.subject.clone(),
            status: CertStatus::Valid,
            not_before: unix(issued.not_before),
            not_after: unix(issued.not_after),
            der: issued.der.clone(),
            fingerprint: hex_upper(&issued.sha256_fingerprint),
            key_type: approval.public_key().key_type().name().to_owned(),
            role: approval.role().unwrap_or_default().to_owned(),
            tenant: approval.tenant().unwrap_or_default().to_owned(),
            paired_serial: String::new(),
            revoked_at: 0,
            revocation_reason: String::new(),
            requested_by: requested_by.to_owned(),
            created_at: now_secs(),
        }
    }

    fn approve(
        &self,
        profile: &CertProfile,
        csr: &kms_ca::Csr,
        issuer: &IssuerRecord,
        ctx: IssueCtx,
    ) -> Result<kms_ca::Approval> {
        let ctx = kms_ca::IssueContext {
            now: OffsetDateTime::now_utc(),
            requested_validity: (ctx.validity_days > 0).then(|| time::Duration::days(i64::from(ctx.validity_days))),
            bound_subject: ctx.bound_subject,
            role: ctx.role,
            tenant: ctx.tenant,
            issuer_not_after: issuer_not_after(issuer),
            extra_sans: ctx.extra_sans,
        };
        kms_ca::approve(profile, csr, &ctx).map_err(|r| invalid("csr", format!("{}: {}", r.reason.code(), r.message)))
    }

    fn parse_csr(&self, bytes: &[u8]) -> Result<kms_ca::Csr> {
        if bytes.len() > self.ca().config.max_csr_bytes {
            return Err(invalid(
                "csr",
                format!(
                    "{} bytes exceeds the limit of {} (ca.max_csr_bytes)",
                    bytes.len(),
                    self.ca().config.max_csr_bytes
                ),
            ));
        }
        kms_ca::parse_csr(bytes).map_err(|e| invalid("csr", format!("{}: {e}", e.code())))
    }

    /// `IssueServerCertificate`.
    pub async fn issue_certificate(
        &self,
        proof: &Authorized<authz::IssueCertificate>,
        cmd: IssueCertificate,
    ) -> Result<Issued> {
        let p = proof.principal();
        let resource = Resource::CertProfile(cmd.profile.clone()).to_string();
        let result = async {
            let profile = self.cert_profile(&cmd.profile)?;
            if profile.enrollment {
                return Err(invalid(
                    "profile",
                    format!("{} is a reader profile: readers use EnrollReader", profile.name),
                ));
            }
            let csr = self.parse_csr(&cmd.csr)?;
            let issuer = self.active_issuer(&cmd.issuer).await?;
            if matches!(profile.kind, kms_ca::ProfileKind::SubCa { .. }) && issuer_path_len(&issuer) == Some(0) {
                return Err(Error::FailedPrecondition(format!(
                    "issuer {} has pathLenConstraint 0: a CA certificate under it would not verify",
                    issuer.name
                )));
            }
            let extra_sans = cmd
                .names
                .iter()
                .map(|n| match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => kms_ca::San::Ip(ip),
                    Err(_) => kms_ca::San::Dns(n.to_ascii_lowercase()),
                })
                .collect::<Vec<_>>();
            let approval = self.approve(
                &profile,
                &csr,
                &issuer,
                IssueCtx {
                    validity_days: cmd.validity_days,
                    bound_subject: None,
                    role: cmd.role.clone(),
                    tenant: cmd.tenant.clone(),
                    extra_sans,
                },
            )?;
            let issued = self.sign_certificate(&issuer, &profile, approval.clone()).await?;
            let record = self.record_for(&issued, &issuer, &profile, &approval, &p.name);
            let mut tx = self.store.begin().await?;
            certs::insert_cert(&mut tx, &record).await?;
            let e = event(
                p,
                authz::IssueCertificate::NAME,
                resource.clone(),
                Outcome::Success,
                String::new(),
                issued_details(&record, &approval),
            );
            audit::append(&mut tx, &e).await.map_err(Error::AuditUnavailable)?;
            tx.commit().await?;
            Ok(Issued { chain: self.chain_of(&issuer)?, record })
        }
        .await;
        if let Err(e) = &result {
            self.audit_failed(p, authz::IssueCertificate::NAME, resource, e).await;
        }
        result
    }

    /// `EnrollReader`: authorizes by token or external certificate, then
    /// issues. Nothing is consumed or recorded unless a certificate is issued.
    pub async fn enroll_reader(&self, cmd: EnrollReader) -> Result<Enrollment> {
        let anonymous = Principal {
            name: "-".into(),
            role: "enrollee".into(),
            tenant: "-".into(),
            certificate_serial: String::new(),
        };
        let (principal, token, bound, issuer_name) = match &cmd.auth {
            EnrollAuth::Token(secret) => match self.token_principal(secret).await {
                Ok((p, t)) => {
                    let bound = t.reader_serial.clone();
                    let issuer = t.issuer.clone();
                    (p, Some(t), bound, issuer)
                }
                Err(e) => {
                    self.audit_failed(&anonymous, authz::EnrollReader::NAME, "token:?".into(), &e).await;
                    return Err(e);
                }
            },
            EnrollAuth::External { certificates, csr_signature } => {
                match kms_ca::verify_external(
                    &self.ca().anchors,
                    certificates,
                    &cmd.csr,
                    csr_signature,
                    OffsetDateTime::now_utc(),
                ) {
                    Ok(ext) => {
                        let p = Principal {
                            name: format!("external:{}", ext.reader_serial),
                            role: "enrollee".into(),
                            tenant: self.ca().config.external_tenant.clone(),
                            certificate_serial: ext.serial_hex,
                        };
                        (p, None, ext.reader_serial, String::new())
                    }
                    Err(e) => {
                        let e = Error::Unauthenticated(crate::identity::IdentityError::Token(format!(
                            "external certificate: {e}"
                        )));
                        self.audit_failed(&anonymous, authz::EnrollReader::NAME, "external:?".into(), &e).await;
                        return Err(e);
                    }
                }
            }
        };
        let resource = Resource::CertProfile(cmd.profile.clone()).to_string();
        let result = self.enroll_inner(&principal, token.as_ref(), &bound, &issuer_name, &cmd).await;
        if let Err(e) = &result {
            self.audit_failed(&principal, authz::EnrollReader::NAME, resource, e).await;
        }
        result
    }

    async fn enroll_inner(
        &self,
        p: &Principal,
        token: Option<&TokenRecord>,
        bound: &str,
        issuer_name: &str,
        cmd: &EnrollReader,
    ) -> Result<Enrollment> {
        let mut wanted = vec![cmd.profile.clone()];
        if cmd.dual {
            wanted.push(cmd.encryption_profile.clone());
        }
        for name in &wanted {
            self.authorize::<authz::EnrollReader>(p, &Resource::CertProfile(name.clone())).await?;
        }
        if let Some(t) = token {
            let now = now_secs();
            if t.used_at != 0 {
                return Err(Error::FailedPrecondition(format!(
                    "enrollment token {} was already used (certificate {})",
                    t.id, t.used_for
                )));
            }
            if t.expires_at <= now {
                return Err(Error::FailedPrecondition(format!("enrollment token {} expired", t.id)));
            }
            let allowed: Vec<&str> = t.profiles.split(',').collect();
            for name in &wanted {
                if !allowed.contains(&name.as_str()) {
                    return Err(Error::PermissionDenied(Denied {
                        action: authz::EnrollReader::NAME,
                        reason: format!("enrollment token {} does not allow profile {name}", t.id),
                    }));
                }
            }
        }
        let profile = self.cert_profile(&cmd.profile)?;
        let csr = self.parse_csr(&cmd.csr)?;
        let issuer = self.active_issuer(issuer_name).await?;
        let ctx = IssueCtx {
            validity_days: cmd.validity_days,
            bound_subject: Some(bound.to_owned()),
            role: Some("reader".into()),
            tenant: Some(p.tenant.clone()),
            extra_sans: Vec::new(),
        };
        let approval = self.approve(&profile, &csr, &issuer, ctx)?;
        self.issue_reader_pair(
            p,
            authz::EnrollReader::NAME,
            &issuer,
            &profile,
            approval,
            cmd.dual.then_some(cmd.encryption_profile.as_str()),
            token,
            cmd.validity_days,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn issue_reader_pair(
        &self,
        p: &Principal,
        action: &str,
        issuer: &IssuerRecord,
        profile: &CertProfile,
        approval: kms_ca::Approval,
        encryption_profile: Option<&str>,
        token: Option<&TokenRecord>,
        validity_days: u32,
    ) -> Result<Enrollment> {
        // why: everything that can refuse a dual request is checked before
        // the first signature, so a refusal leaves no signed certificate.
        let dual = match encryption_profile {
            Some(enc_name) => {
                let enc_profile = self.cert_profile(enc_name)?;
                if enc_profile.key_generation != kms_ca::KeyGeneration::Service {
                    return Err(invalid(
                        "encryption_profile",
                        format!("{enc_name} does not have the service generate keys"),
                    ));
                }
                Some((enc_profile, self.escrow_key().await?))
            }
            None => None,
        };
        let signing = self.sign_certificate(issuer, profile, approval.clone()).await?;
        let mut signing_record = self.record_for(&signing, issuer, profile, &approval, &p.name);
        let mut encryption = None;
        let mut escrow = None;
        if let Some((enc_profile, escrow_key)) = dual {
            let signing_type = approval.public_key().key_type();
            // why: the encryption key is of the signing key's type when the
            // profile allows it (same curve for ECDH), else the profile's first.
            let enc_type = if enc_profile.key_types.contains(&signing_type) {
                signing_type
            } else {
                *enc_profile.key_types.first().ok_or_else(|| invalid("encryption_profile", "allows no key type"))?
            };
            let recipient = RecipientKey { key_type: signing_type, raw: approval.public_key().raw().to_vec() };
            let shared_info = kms_ca::ecc_cms_shared_info(kms_ca::AesWrap::Aes256, None);
            let escrow_id = escrow_key.object_id_bytes();
            let hsm = self.hsm.clone();
            let enveloped = self
                .hsm
                .run("ca_envelope_key", move |s| {
                    let caps = hsm.capabilities();
                    let escrow = hsm.object(s, &escrow_id)?;
                    pki::envelope_new_key_pair(s, caps, &caps.module, enc_type, &recipient, &shared_info, escrow)
                })
                .await?;
            let enc_key = kms_ca::PublicKey::from_spki_der(&enveloped.enc_public.spki_der)
                .map_err(|e| invalid("encryption key", e.to_string()))?;
            let mut ctx = kms_ca::IssueContext::new(OffsetDateTime::now_utc(), issuer_not_after(issuer));
            ctx.requested_validity = (validity_days > 0).then(|| time::Duration::days(i64::from(validity_days)));
            ctx.role = approval.role().map(str::to_owned);
            ctx.tenant = approval.tenant().map(str::to_owned);
            let enc_approval = kms_ca::approve_generated(&enc_profile, &approval, enc_key, &ctx)
                .map_err(|r| invalid("encryption_profile", format!("{}: {}", r.reason.code(), r.message)))?;
            let enc_cert = self.sign_certificate(issuer, &enc_profile, enc_approval.clone()).await?;
            let mut enc_record = self.record_for(&enc_cert, issuer, &enc_profile, &enc_approval, &p.name);
            enc_record.paired_serial = signing_record.serial.clone();
            signing_record.paired_serial = enc_record.serial.clone();
            let recipient_id =
                kms_ca::RecipientId::from_certificate(&signing.der).map_err(|e| ca_error("signing certificate", e))?;
            let key_encryption = match enveloped.recipient {
                RecipientParts::RsaOaepSha1 { encrypted_key } => kms_ca::KeyEncryption::RsaOaepSha1 { encrypted_key },
                RecipientParts::EcdhSha256Kdf { originator_point, encrypted_key } => {
                    kms_ca::KeyEncryption::EcdhSha256KdfAesWrap {
                        curve: signing_type,
                        originator_point,
                        wrap: kms_ca::AesWrap::Aes256,
                        ukm: None,
                        encrypted_key,
                    }
                }
            };
            let envelope = kms_ca::enveloped_data(
                &recipient_id,
                &key_encryption,
                &kms_ca::ContentEncryption::Aes256Cbc { iv: enveloped.content_iv },
                &enveloped.encrypted_content,
            );
            escrow = Some((
                enc_record.serial.clone(),
                escrow_key.reference(),
                enveloped.escrow_mechanism,
                enveloped.escrow_wrapped,
                escrow_key.kcv.clone(),
            ));
            encryption = Some((enc_record, enc_approval, envelope));
        }
        let mut tx = self.store.begin().await?;
        if let Some(t) = token
            && !certs::consume_token(&mut tx, &t.id, now_secs(), &signing_record.serial).await?
        {
            return Err(Error::FailedPrecondition(format!("enrollment token {} was used or expired meanwhile", t.id)));
        }
        certs::insert_cert(&mut tx, &signing_record).await?;
        let mut details = issued_details(&signing_record, &approval);
        if let Some(t) = token {
            details["token_id"] = json!(t.id);
        }
        if let Some((enc_record, enc_approval, _)) = &encryption {
            certs::insert_cert(&mut tx, enc_record).await?;
            details["encryption"] = issued_details(enc_record, enc_approval);
        }
        if let Some((serial, key, mechanism, wrapped, kcv)) = &escrow {
            certs::insert_escrow(&mut tx, serial, key, mechanism, wrapped).await?;
            details["escrow"] = json!({ "key": key, "mechanism": mechanism, "kcv": { "method": kcv.method.as_str(), "value": kcv.value } });
        }
        let e = event(
            p,
            action,
            Resource::CertProfile(signing_record.profile.clone()).to_string(),
            Outcome::Success,
            String::new(),
            details,
        );
        audit::append(&mut tx, &e).await.map_err(Error::AuditUnavailable)?;
        tx.commit().await?;
        let chain = self.chain_of(issuer)?;
        Ok(Enrollment {
            signing: Issued { record: signing_record, chain: chain.clone() },
            encryption: encryption.map(|(record, _, envelope)| (Issued { record, chain }, envelope)),
        })
    }

    async fn escrow_key(&self) -> Result<crate::keys::KeyRecord> {
        let Some(name) = &self.ca().config.escrow_key else {
            return Err(Error::FailedPrecondition(
                "dual certificates need an escrow key (ca.escrow_key is not set)".into(),
            ));
        };
        let key = KeyRef { name: KeyName::parse("ca.escrow_key", name)?, version: None };
        self.usable_key(&key, Purpose::Escrow, "ca.escrow_key").await
    }

    /// `RenewCertificate`: the caller's own, valid certificate; same
    /// subject, new key.
    pub async fn renew_certificate(&self, p: &Principal, csr: &[u8], dual: bool) -> Result<Enrollment> {
        let result = async {
            let current = certs::cert(&self.store, &p.certificate_serial).await?.ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "certificate {} was not issued by this service",
                    p.certificate_serial
                ))
            })?;
            self.authorize::<authz::RenewCertificate>(p, &Resource::CertProfile(current.profile.clone())).await?;
            let now = now_secs();
            if current.status == CertStatus::Revoked {
                return Err(Error::FailedPrecondition(format!(
                    "certificate {} is revoked ({})",
                    current.serial, current.revocation_reason
                )));
            }
            if current.not_after <= now {
                return Err(Error::FailedPrecondition(format!("certificate {} has expired", current.serial)));
            }
            let profile = self.cert_profile(&current.profile)?;
            let csr = self.parse_csr(csr)?;
            let (_, old) = x509_parser::parse_x509_certificate(&current.der)
                .map_err(|e| Error::Store(crate::store::StoreError::Corrupt(e.to_string())))?;
            if old.public_key().raw == csr.public_key().spki_der() {
                return Err(invalid("csr", "renewal needs a new key: the CSR certifies the current key"));
            }
            let issuer = match self.issuer_record(&current.issuer).await? {
                i if i.state == IssuerState::Active => i,
                _ => self.active_issuer("").await?,
            };
            // why: the enrollment binding is for reader profiles; for the
            // others the subject comparison below keeps renewal to the same
            // subject.
            let bound = old.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).map(str::to_owned);
            let ctx = IssueCtx {
                validity_days: 0,
                bound_subject: if profile.enrollment { bound } else { None },
                role: (!current.role.is_empty()).then(|| current.role.clone()),
                tenant: (!current.tenant.is_empty()).then(|| current.tenant.clone()),
                extra_sans: Vec::new(),
            };
            let approval = self.approve(&profile, &csr, &issuer, ctx)?;
            let asked = approval.subject().to_string();
            if asked != current.subject {
                return Err(invalid(
                    "csr",
                    format!("renewal keeps the subject {:?}; the CSR asks for {asked:?}", current.subject),
                ));
            }
            let encryption = if dual {
                let paired = certs::cert(&self.store, &current.paired_serial).await?;
                Some(paired.map(|c| c.profile).unwrap_or_else(|| "reader-encrypt".into()))
            } else {
                None
            };
            self.issue_reader_pair(
                p,
                authz::RenewCertificate::NAME,
                &issuer,
                &profile,
                approval,
                encryption.as_deref(),
                None,
                0,
            )
            .await
        }
        .await;
        if let Err(e) = &result {
            self.audit_failed(p, authz::RenewCertificate::NAME, format!("certificate:{}", p.certificate_serial), e)
                .await;
        }
        result
    }

    /// `RevokeCertificate`, then a new CRL for its issuer.
    pub async fn revoke_certificate(
        &self,
        p: &Principal,
        serial: &str,
        reason: kms_ca::RevocationReason,
    ) -> Result<CertRecord> {
        let serial = serial.to_ascii_uppercase();
        let result = async {
            // why: first whether the caller may revoke at all, so an
            // unauthorized caller cannot learn which serials exist.
            self.authorize::<authz::RevokeCertificate>(p, &Resource::Issuer("*".into())).await?;
            let record = certs::cert(&self.store, &serial)
                .await?
                .ok_or_else(|| Error::NotFound { what: format!("certificate {serial}") })?;
            self.authorize::<authz::RevokeCertificate>(p, &Resource::Issuer(record.issuer.clone())).await?;
            if record.status == CertStatus::Revoked {
                return Err(Error::FailedPrecondition(format!("certificate {serial} is already revoked ({})", record.revocation_reason)));
            }
            let now = now_secs();
            let mut tx = self.store.begin().await?;
            if !certs::revoke_cert(&mut tx, &serial, now, reason.name()).await? {
                return Err(Error::FailedPrecondition(format!("certificate {serial} was revoked concurrently")));
            }
            let e = event(
                p,
                authz::RevokeCertificate::NAME,
                Resource::Issuer(record.issuer.clone()).to_string(),
                Outcome::Success,
                String::new(),
                json!({ "serial": serial, "subject": record.subject, "reason": reason.name(), "reason_code": reason.code() }),
            );
            audit::append(&mut tx, &e).await.map_err(Error::AuditUnavailable)?;
            tx.commit().await?;
            let issuer = self.issuer_record(&record.issuer).await?;
            if let Err(e) = self.publish_crl(&issuer).await {
                tracing::error!(error = %e, issuer = %issuer.name, "revoked, but the CRL could not be published now; the CRL task retries");
            }
            certs::cert(&self.store, &serial).await?.ok_or_else(|| Error::NotFound { what: format!("certificate {serial}") })
        }
        .await;
        if let Err(e) = &result {
            self.audit_failed(p, authz::RevokeCertificate::NAME, format!("certificate:{serial}"), e).await;
        }
        result
    }

    /// `GetCertificate`.
    pub async fn get_certificate(&self, p: &Principal, serial: &str) -> Result<CertRecord> {
        let serial = serial.to_ascii_uppercase();
        // why: authorized before the lookup, so the answer does not tell an
        // unauthorized caller whether the serial exists.
        self.authorize::<authz::ReadCertificates>(p, &Resource::Issuer("*".into())).await?;
        let record = certs::cert(&self.store, &serial)
            .await?
            .ok_or_else(|| Error::NotFound { what: format!("certificate {serial}") })?;
        self.authorize::<authz::ReadCertificates>(p, &Resource::Issuer(record.issuer.clone())).await?;
        Ok(record)
    }

    /// `ListCertificates`: one page.
    pub async fn list_certificates(
        &self,
        _proof: &Authorized<authz::ReadCertificates>,
        filter: &CertFilter,
        after: &str,
        limit: u32,
    ) -> Result<Vec<CertRecord>> {
        Ok(certs::list_certs(&self.store, filter, after, limit).await?)
    }

    /// Whether a client certificate this service issued has been revoked
    /// (certificates of other CAs are not in the table and pass).
    pub async fn is_revoked(&self, serial: &str) -> Result<bool> {
        Ok(certs::cert(&self.store, serial).await?.is_some_and(|c| c.status == CertStatus::Revoked))
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

#[cfg(test)]
mod tests {
    use super::split_certificates;

    #[test]
    fn garbage_is_not_a_certificate_list() {
        assert!(split_certificates("chain", b"\x30\x03\x02\x01\x01").is_err());
        assert!(
            split_certificates("chain", b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n").is_err()
        );
        assert_eq!(split_certificates("chain", b"").map(|v| v.len()).ok(), Some(0));
    }
}
