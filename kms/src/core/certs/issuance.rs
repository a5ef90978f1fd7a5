//! Enrollment tokens, issuance, reader enrollment with dual certificates,
//! renewal, revocation and certificate reads.

use super::*;

impl Core {
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
        // why: a real token is 88 characters; anything much longer is not
        // one, and need not be hashed.
        if secret.len() > 256 {
            return Err(unknown());
        }
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
            self.ca.note_revoked(&serial);
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
        self.ca.is_revoked(&self.store, serial).await
    }
}
