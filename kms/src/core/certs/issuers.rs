//! Issuing CAs (create, activate, retire, chain) and their CRLs.

use super::*;

impl Core {
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
            // why: the activation is committed; a CRL that cannot be
            // published now is published by the CRL task (a missing CRL is
            // always stale), so this does not turn into a failed call.
            if let Err(e) = self.publish_crl(&activated).await {
                tracing::error!(error = %e, issuer = name, "activated, but the first CRL could not be published yet");
            }
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

    pub(super) fn chain_of(&self, issuer: &IssuerRecord) -> Result<Vec<Vec<u8>>> {
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
}
