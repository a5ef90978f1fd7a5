//! `kms.v1.CertificateService`.

use kms_proto::v1 as pb;
use kms_proto::v1::certificate_service_server::CertificateService;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::authz::{self, Resource};
use crate::certs::{CertFilter, CertRecord, CertStatus, IssuerRecord, IssuerState};
use crate::core::certs::{CreateIssuer, CreateToken, EnrollAuth, EnrollReader, Enrollment, IssueCertificate, Issued};
use crate::error::{Error, Result};

const RESOURCE: Resource = Resource::Service("CertificateService");
const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 100;

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument { field: field.to_owned(), reason: reason.into() }
}

fn or_default(v: &str, default: &str) -> String {
    if v.is_empty() { default.to_owned() } else { v.to_owned() }
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_owned())
}

/// The CertificateService implementation.
pub struct CertificateApi {
    shared: Shared,
}

impl CertificateApi {
    /// Wraps the shared state.
    pub fn new(shared: Shared) -> CertificateApi {
        CertificateApi { shared }
    }
}

fn issuer_to_proto(i: &IssuerRecord, crl_url: Option<String>) -> pb::Issuer {
    pb::Issuer {
        name: i.name.clone(),
        state: match i.state {
            IssuerState::Pending => pb::IssuerState::Pending,
            IssuerState::Active => pb::IssuerState::Active,
            IssuerState::Retired => pb::IssuerState::Retired,
        } as i32,
        key_type: i.key_type.clone(),
        subject: i.subject.clone(),
        certificate: i.certificate.clone(),
        not_before: i.not_before,
        not_after: i.not_after,
        crl_number: u64::try_from(i.crl_number).unwrap_or(0),
        crl_url: crl_url.unwrap_or_default(),
        object_id: i.object_id.clone(),
        created_by: i.created_by.clone(),
        created_at: i.created_at,
    }
}

/// Converts a certificate record.
pub fn cert_to_proto(c: &CertRecord) -> pb::Certificate {
    pb::Certificate {
        serial: c.serial.clone(),
        issuer: c.issuer.clone(),
        profile: c.profile.clone(),
        subject: c.subject.clone(),
        status: match c.status {
            CertStatus::Valid => pb::CertificateStatus::Valid,
            CertStatus::Revoked => pb::CertificateStatus::Revoked,
        } as i32,
        not_before: c.not_before,
        not_after: c.not_after,
        der: c.der.clone(),
        sha256_fingerprint: c.fingerprint.clone(),
        key_type: c.key_type.clone(),
        role: c.role.clone(),
        tenant: c.tenant.clone(),
        paired_serial: c.paired_serial.clone(),
        revoked_at: c.revoked_at,
        revocation_reason: c.revocation_reason.clone(),
        requested_by: c.requested_by.clone(),
        created_at: c.created_at,
    }
}

fn issued_to_proto(i: &Issued) -> pb::IssuedCertificate {
    pb::IssuedCertificate { certificate: Some(cert_to_proto(&i.record)), chain: i.chain.clone() }
}

fn enrollment_to_proto(e: &Enrollment) -> pb::EnrollReaderResponse {
    pb::EnrollReaderResponse {
        signing: Some(issued_to_proto(&e.signing)),
        encryption: e.encryption.as_ref().map(|(i, _)| issued_to_proto(i)),
        encryption_key_envelope: e.encryption.as_ref().map(|(_, env)| env.clone()).unwrap_or_default(),
    }
}

fn reason_from_proto(v: i32) -> Result<kms_ca::RevocationReason> {
    let code = u8::try_from(v).map_err(|_| invalid("reason", format!("{v} is not an RFC 5280 reason code")))?;
    match pb::RevocationReason::try_from(v) {
        Ok(_) => kms_ca::RevocationReason::from_code(code)
            .ok_or_else(|| invalid("reason", format!("{v} is not an RFC 5280 reason code"))),
        Err(_) => Err(invalid("reason", format!("{v} is not an RFC 5280 reason code (7 is unused, 8 is CRL-only)"))),
    }
}

fn status_from_proto(v: i32) -> Result<Option<CertStatus>> {
    match pb::CertificateStatus::try_from(v) {
        Ok(pb::CertificateStatus::Unspecified) => Ok(None),
        Ok(pb::CertificateStatus::Valid) => Ok(Some(CertStatus::Valid)),
        Ok(pb::CertificateStatus::Revoked) => Ok(Some(CertStatus::Revoked)),
        Err(_) => Err(invalid("status", format!("{v} is not a certificate status"))),
    }
}

fn serial_arg(field: &str, s: &str) -> Result<String> {
    let s = s.trim().replace(':', "");
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(field, "must be 1-64 hex digits"));
    }
    Ok(s.to_ascii_uppercase())
}

#[tonic::async_trait]
impl CertificateService for CertificateApi {
    async fn create_issuer(
        &self,
        request: Request<pb::CreateIssuerRequest>,
    ) -> Result<Response<pb::CreateIssuerResponse>, Status> {
        self.shared
            .handle("CertificateService/CreateIssuer", request, |core, principal, req| async move {
                let proof =
                    core.authorize::<authz::CreateIssuer>(&principal, &Resource::Issuer(req.name.clone())).await?;
                let key_type = if req.key_type.is_empty() {
                    kms_ca::KeyType::EcP256
                } else {
                    req.key_type.parse().map_err(|e: kms_ca::UnknownKeyType| invalid("key_type", e.to_string()))?
                };
                let cmd = CreateIssuer {
                    name: req.name,
                    common_name: req.common_name,
                    organization: non_empty(&req.organization),
                    country: non_empty(&req.country),
                    key_type,
                };
                let (issuer, csr) = core.create_issuer(&proof, cmd).await?;
                Ok(pb::CreateIssuerResponse { issuer: Some(issuer_to_proto(&issuer, None)), csr })
            })
            .await
    }

    async fn activate_issuer(
        &self,
        request: Request<pb::ActivateIssuerRequest>,
    ) -> Result<Response<pb::Issuer>, Status> {
        self.shared
            .handle("CertificateService/ActivateIssuer", request, |core, principal, req| async move {
                let proof =
                    core.authorize::<authz::ActivateIssuer>(&principal, &Resource::Issuer(req.name.clone())).await?;
                let issuer = core.activate_issuer(&proof, &req.name, &req.certificate, &req.chain).await?;
                let url = core.ca.crl_url(&issuer.name);
                Ok(issuer_to_proto(&issuer, url))
            })
            .await
    }

    async fn retire_issuer(&self, request: Request<pb::RetireIssuerRequest>) -> Result<Response<pb::Issuer>, Status> {
        self.shared
            .handle("CertificateService/RetireIssuer", request, |core, principal, req| async move {
                let proof =
                    core.authorize::<authz::RetireIssuer>(&principal, &Resource::Issuer(req.name.clone())).await?;
                let issuer = core.retire_issuer(&proof, &req.name).await?;
                let url = core.ca.crl_url(&issuer.name);
                Ok(issuer_to_proto(&issuer, url))
            })
            .await
    }

    async fn list_issuers(
        &self,
        request: Request<pb::ListIssuersRequest>,
    ) -> Result<Response<pb::ListIssuersResponse>, Status> {
        self.shared
            .handle("CertificateService/ListIssuers", request, |core, principal, _req| async move {
                let proof = core.authorize::<authz::ListIssuers>(&principal, &RESOURCE).await?;
                let issuers = core.list_issuers(&proof).await?;
                Ok(pb::ListIssuersResponse {
                    issuers: issuers.iter().map(|i| issuer_to_proto(i, core.ca.crl_url(&i.name))).collect(),
                })
            })
            .await
    }

    async fn list_certificate_profiles(
        &self,
        request: Request<pb::ListCertificateProfilesRequest>,
    ) -> Result<Response<pb::ListCertificateProfilesResponse>, Status> {
        self.shared
            .handle("CertificateService/ListCertificateProfiles", request, |core, principal, _req| async move {
                let proof = core.authorize::<authz::ListCertificateProfiles>(&principal, &RESOURCE).await?;
                let profiles = core.list_cert_profiles(&proof);
                Ok(pb::ListCertificateProfilesResponse {
                    profiles: profiles
                        .iter()
                        .map(|p| pb::CertificateProfile {
                            name: p.name.clone(),
                            description: p.description.clone(),
                            max_validity_days: u32::try_from(p.max_validity.whole_days()).unwrap_or(u32::MAX),
                            key_types: p.key_types.iter().map(|k| k.name().to_owned()).collect(),
                            enrollment: p.enrollment,
                            service_generated_key: p.key_generation == kms_ca::KeyGeneration::Service,
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn create_enrollment_token(
        &self,
        request: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Result<Response<pb::CreateEnrollmentTokenResponse>, Status> {
        self.shared
            .handle("CertificateService/CreateEnrollmentToken", request, |core, principal, req| async move {
                if req.profiles.is_empty() || req.profiles.len() > 8 {
                    return Err(invalid("profiles", "name 1-8 profiles"));
                }
                let mut proofs = Vec::with_capacity(req.profiles.len());
                for name in &req.profiles {
                    proofs.push(
                        core.authorize::<authz::CreateEnrollmentToken>(
                            &principal,
                            &Resource::CertProfile(name.clone()),
                        )
                        .await?,
                    );
                }
                let cmd = CreateToken {
                    reader_serial: req.reader_serial,
                    profiles: req.profiles,
                    issuer: req.issuer,
                    ttl_secs: req.ttl_seconds,
                };
                let t = core.create_token(&proofs, cmd).await?;
                Ok(pb::CreateEnrollmentTokenResponse {
                    token_id: t.id,
                    token: t.secret,
                    expires_at: t.expires_at,
                    issuer: t.issuer,
                })
            })
            .await
    }

    async fn enroll_reader(
        &self,
        request: Request<pb::EnrollReaderRequest>,
    ) -> Result<Response<pb::EnrollReaderResponse>, Status> {
        self.shared
            .handle_unauthenticated("CertificateService/EnrollReader", request, |core, req| async move {
                let auth = match req.authorization {
                    Some(pb::enroll_reader_request::Authorization::Token(t)) => EnrollAuth::Token(t),
                    Some(pb::enroll_reader_request::Authorization::External(x)) => {
                        EnrollAuth::External { certificates: x.certificates, csr_signature: x.csr_signature }
                    }
                    None => return Err(invalid("authorization", "give an enrollment token or an external credential")),
                };
                let cmd = EnrollReader {
                    csr: req.csr,
                    auth,
                    profile: or_default(&req.profile, "reader-sign"),
                    dual: req.dual,
                    encryption_profile: or_default(&req.encryption_profile, "reader-encrypt"),
                    validity_days: req.validity_days,
                };
                Ok(enrollment_to_proto(&core.enroll_reader(cmd).await?))
            })
            .await
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::EnrollReaderResponse>, Status> {
        self.shared
            .handle("CertificateService/RenewCertificate", request, |core, principal, req| async move {
                Ok(enrollment_to_proto(&core.renew_certificate(&principal, &req.csr, req.dual).await?))
            })
            .await
    }

    async fn issue_server_certificate(
        &self,
        request: Request<pb::IssueServerCertificateRequest>,
    ) -> Result<Response<pb::IssuedCertificate>, Status> {
        self.shared
            .handle("CertificateService/IssueServerCertificate", request, |core, principal, req| async move {
                let profile = or_default(&req.profile, "server-tls");
                let proof = core
                    .authorize::<authz::IssueCertificate>(&principal, &Resource::CertProfile(profile.clone()))
                    .await?;
                if req.names.len() > 32 {
                    return Err(invalid("names", "at most 32 names"));
                }
                let cmd = IssueCertificate {
                    csr: req.csr,
                    profile,
                    issuer: req.issuer,
                    names: req.names,
                    role: non_empty(&req.role),
                    tenant: non_empty(&req.tenant),
                    validity_days: req.validity_days,
                };
                Ok(issued_to_proto(&core.issue_certificate(&proof, cmd).await?))
            })
            .await
    }

    async fn revoke_certificate(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::Certificate>, Status> {
        self.shared
            .handle("CertificateService/RevokeCertificate", request, |core, principal, req| async move {
                let serial = serial_arg("serial", &req.serial)?;
                let reason = reason_from_proto(req.reason)?;
                Ok(cert_to_proto(&core.revoke_certificate(&principal, &serial, reason).await?))
            })
            .await
    }

    async fn get_certificate(
        &self,
        request: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::Certificate>, Status> {
        self.shared
            .handle("CertificateService/GetCertificate", request, |core, principal, req| async move {
                let serial = serial_arg("serial", &req.serial)?;
                Ok(cert_to_proto(&core.get_certificate(&principal, &serial).await?))
            })
            .await
    }

    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        self.shared
            .handle("CertificateService/ListCertificates", request, |core, principal, req| async move {
                let resource = if req.issuer.is_empty() {
                    Resource::Issuer("*".into())
                } else {
                    Resource::Issuer(req.issuer.clone())
                };
                let proof = core.authorize::<authz::ReadCertificates>(&principal, &resource).await?;
                let limit = match req.page_size {
                    0 => DEFAULT_PAGE,
                    n if n <= MAX_PAGE => n,
                    _ => return Err(invalid("page_size", format!("must be 0-{MAX_PAGE}"))),
                };
                let after =
                    if req.page_token.is_empty() { String::new() } else { serial_arg("page_token", &req.page_token)? };
                let (subject, contains) = match req.subject.strip_prefix('~') {
                    Some(s) => (s.to_owned(), true),
                    None => (req.subject.clone(), false),
                };
                if subject.len() > 512 {
                    return Err(invalid("subject", "at most 512 bytes"));
                }
                let serial_prefix = if req.serial_prefix.is_empty() {
                    String::new()
                } else {
                    serial_arg("serial_prefix", &req.serial_prefix)?
                };
                let filter = CertFilter {
                    subject,
                    subject_contains: contains,
                    serial_prefix,
                    status: status_from_proto(req.status)?,
                    issuer: req.issuer,
                    expires_before: req.expires_before,
                };
                let page = core.list_certificates(&proof, &filter, &after, limit).await?;
                let next = if page.len() == limit as usize {
                    page.last().map(|c| c.serial.clone()).unwrap_or_default()
                } else {
                    String::new()
                };
                Ok(pb::ListCertificatesResponse {
                    certificates: page.iter().map(cert_to_proto).collect(),
                    next_page_token: next,
                })
            })
            .await
    }

    async fn get_ca_chain(
        &self,
        request: Request<pb::GetCaChainRequest>,
    ) -> Result<Response<pb::GetCaChainResponse>, Status> {
        self.shared
            .handle("CertificateService/GetCaChain", request, |core, principal, req| async move {
                let proof = core
                    .authorize::<authz::GetCaMaterial>(&principal, &Resource::Issuer(or_default(&req.issuer, "*")))
                    .await?;
                let certificates = core.ca_chain(&proof, &req.issuer).await?;
                let pem = certificates.iter().map(|c| kms_ca::pem("CERTIFICATE", c)).collect::<String>();
                Ok(pb::GetCaChainResponse { certificates, pem })
            })
            .await
    }

    async fn get_crl(&self, request: Request<pb::GetCrlRequest>) -> Result<Response<pb::GetCrlResponse>, Status> {
        let limit = self.shared.max_message_bytes;
        self.shared
            .handle("CertificateService/GetCrl", request, |core, principal, req| async move {
                let proof =
                    core.authorize::<authz::GetCaMaterial>(&principal, &Resource::Issuer(req.issuer.clone())).await?;
                let c = core.get_crl(&proof, &req.issuer).await?;
                // why: a CRL of a hundred thousand entries is several MB; say
                // where to get it rather than fail in the encoder.
                if c.der.len() + 1024 > limit {
                    return Err(Error::FailedPrecondition(format!(
                        "the CRL of {} is {} bytes, more than a response may carry (server.max_message_bytes = \
                         {limit}); fetch it from /crl/{}.crl on the ops listener",
                        req.issuer,
                        c.der.len(),
                        req.issuer
                    )));
                }
                Ok(pb::GetCrlResponse {
                    crl: c.der,
                    number: u64::try_from(c.number).unwrap_or(0),
                    this_update: c.this_update,
                    next_update: c.next_update,
                    entries: u64::try_from(c.entries).unwrap_or(0),
                })
            })
            .await
    }
}
