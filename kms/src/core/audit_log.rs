//! The audit log for auditors (query, verify, export) and the signed
//! checkpoints of its head.
//!
//! The checkpoint key is an EC P-256 key pair in the token, found by its
//! label (`audit.checkpoint_key_label`). When it is missing, the replica
//! that first needs it generates it (sensitive, not extractable, sign
//! only) while it holds the database's checkpoint-key lock row, and looks
//! again under the lock first, so replicas sharing a database never make
//! two. A key found under the label that is extractable or not sensitive is
//! refused: a key that can leave the HSM cannot vouch for the log.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::Session;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::sync::mpsc;

use super::Core;
use super::keys::event;
use crate::audit::checkpoint::{self, ALGORITHM, Checkpoint, FILE_FORMAT, TrustedKey};
use crate::audit::query::{self, AuditFilter, AuditPage, AuditRange, PageToken};
use crate::audit::verify::{self, AuditFault, Segment, Verdict};
use crate::audit::{self, AuditRecord, GENESIS_HASH, Outcome};
use crate::authz::{self, Action, Authorized, Resource};
use crate::error::{Error, Result};
use crate::hsm::HsmError;
use crate::hsm::pki::{self, CAP_SIGN_ECDSA_P256, KeyType, PublicKeyParts};
use crate::hsm::signer::HsmSigner;

/// Records an export may have read ahead of the client.
const EXPORT_BUFFER: usize = 64;

/// What one round of the checkpoint task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointRun {
    /// The log is empty: nothing to sign.
    EmptyLog,
    /// The newest checkpoint already covers the head (or another replica
    /// stored one for the same head first).
    Unchanged,
    /// A new checkpoint was signed and stored.
    Signed(Checkpoint),
    /// The chain since the newest checkpoint does not hold: nothing was
    /// signed, so the service never vouches for a tampered log.
    Refused(AuditFault),
}

/// The checkpoint key as the token holds it.
struct FoundKey {
    public: PublicKeyParts,
    /// `CKA_EXTRACTABLE` true or `CKA_SENSITIVE` false.
    exportable: bool,
}

/// The `CKA_ID` of the checkpoint key pair: derived from its label, so
/// every replica names the same object.
fn key_id(label: &str) -> Vec<u8> {
    let digest = Sha256::digest(format!("kms audit checkpoint key\0{label}").as_bytes());
    digest[..16].to_vec()
}

/// Looks the checkpoint key pair up by label (inside [`crate::hsm::Hsm::run`]).
fn find_key(session: &Session, module: &str, token: &str, label: &str) -> Result<Option<FoundKey>, HsmError> {
    let signer = match HsmSigner::find(session, module, label, token) {
        Ok(s) => s,
        Err(HsmError::ObjectNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let attributes = session
        .get_attributes(signer.private_key(), &[AttributeType::Extractable, AttributeType::Sensitive])
        .map_err(|e| HsmError::from_cryptoki(module, e))?;
    let exportable = attributes
        .iter()
        .any(|a| matches!(a, Attribute::Extractable(true)) || matches!(a, Attribute::Sensitive(false)));
    Ok(Some(FoundKey { public: signer.public_key_parts().clone(), exportable }))
}

impl Core {
    /// `QueryAudit`: one page of records, and the newest checkpoint.
    pub async fn query_audit(
        &self,
        _proof: &Authorized<authz::ReadAudit>,
        filter: &AuditFilter,
        after: Option<PageToken>,
        limit: u32,
    ) -> Result<(AuditPage, Option<Checkpoint>)> {
        let page = query::query(&self.store, filter, after, limit).await?;
        let newest = checkpoint::newest(&self.store).await?;
        Ok((page, newest))
    }

    /// `VerifyAudit`: the whole chain, every checkpoint in the database and
    /// the auditor's own checkpoint, under the checkpoint key in the token.
    pub async fn verify_audit(
        &self,
        _proof: &Authorized<authz::ReadAudit>,
        external: Option<Checkpoint>,
    ) -> Result<Verdict> {
        let key = self.checkpoint_key().await?;
        let verdict = verify::verify(&self.store, key.as_ref(), external.as_ref()).await?;
        if let Some(f) = &verdict.fault {
            tracing::error!(fault = f.kind(), position = f.position(), detail = %f, "audit log verification found a fault");
        }
        Ok(verdict)
    }

    /// `ExportAudit`: fixes the range (refusing one that starts after the
    /// last record, before anything is recorded), records the export, then
    /// reads the records in bounded pages into the returned channel.
    pub async fn export_audit(
        &self,
        proof: &Authorized<authz::ReadAudit>,
        range: AuditRange,
    ) -> Result<mpsc::Receiver<Result<AuditRecord>>> {
        let range = query::export_range(&self.store, range).await?;
        let e = event(
            proof.principal(),
            authz::ReadAudit::NAME,
            Resource::Service("AdminService").to_string(),
            Outcome::Success,
            String::new(),
            json!({
                "call": "ExportAudit",
                "from_seq": range.from_seq, "to_seq": range.to_seq,
                "from_time_ms": range.from_ms, "to_time_ms": range.to_ms,
            }),
        );
        audit::record(&self.store, &e).await.map_err(Error::AuditUnavailable)?;
        let (tx, rx) = mpsc::channel(EXPORT_BUFFER);
        tokio::spawn(query::export(self.store.clone(), range, tx));
        Ok(rx)
    }

    /// The checkpoint key's public half, from the token; `None` when the
    /// token has no key under the label.
    pub async fn checkpoint_key(&self) -> Result<Option<TrustedKey>> {
        let hsm = self.hsm.clone();
        let label = self.audit_config.checkpoint_key_label.clone();
        let found = self
            .hsm
            .run("audit_checkpoint_key_find", move |s| {
                find_key(s, &hsm.capabilities().module, &hsm.info().token_label, &label)
            })
            .await?;
        found.map(|f| self.trusted(f)).transpose()
    }

    fn trusted(&self, found: FoundKey) -> Result<TrustedKey> {
        let label = &self.audit_config.checkpoint_key_label;
        if found.exportable {
            return Err(Error::FailedPrecondition(format!(
                "the token key labelled {label:?} (audit.checkpoint_key_label) is extractable or not sensitive: a key \
                 that can leave the HSM cannot vouch for the audit log"
            )));
        }
        if found.public.key_type != KeyType::EcP256 {
            return Err(Error::FailedPrecondition(format!(
                "the token key labelled {label:?} (audit.checkpoint_key_label) is a {} key; audit checkpoints are \
                 signed with EC P-256",
                found.public.key_type
            )));
        }
        TrustedKey::from_spki(&found.public.spki_der).map_err(|e| {
            Error::FailedPrecondition(format!("the token key labelled {label:?} has an unusable public key: {e}"))
        })
    }

    /// The checkpoint key, generated in the token if it has none. Replicas
    /// serialise on the lock row, and look again once they hold it.
    async fn ensure_checkpoint_key(&self) -> Result<TrustedKey> {
        if let Some(key) = self.checkpoint_key().await? {
            return Ok(key);
        }
        let mut tx = self.store.begin().await?;
        sqlx::query("UPDATE audit_checkpoint_key_lock SET locked_at = $1 WHERE id = 1")
            .bind(audit::now_ms())
            .execute(&mut *tx)
            .await?;
        let hsm = self.hsm.clone();
        let label = self.audit_config.checkpoint_key_label.clone();
        let made = self
            .hsm
            .run("audit_checkpoint_key_create", move |s| {
                let caps = hsm.capabilities();
                if let Some(found) = find_key(s, &caps.module, &hsm.info().token_label, &label)? {
                    return Ok((found, false));
                }
                let public =
                    pki::generate_signing_key_pair(s, caps, &caps.module, KeyType::EcP256, &label, &key_id(&label))?;
                Ok((FoundKey { public, exportable: false }, true))
            })
            .await;
        let (found, generated) = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e.into());
            }
        };
        tx.commit().await?;
        let key = self.trusted(found)?;
        if generated {
            tracing::info!(
                label = %self.audit_config.checkpoint_key_label,
                fingerprint = key.fingerprint(),
                "audit checkpoint key generated in the token"
            );
        }
        Ok(key)
    }

    /// One round of the checkpoint task: when the head moved since the
    /// newest checkpoint, checks that the records since then descend from
    /// it, and signs the head with the checkpoint key.
    pub async fn checkpoint_audit(&self) -> Result<CheckpointRun> {
        let (head_seq, head_hash) = audit::head(&self.store).await?;
        if head_seq == 0 {
            return Ok(CheckpointRun::EmptyLog);
        }
        let newest = checkpoint::newest(&self.store).await?;
        if let Some(c) = &newest {
            if c.seq == head_seq && c.head_hash == head_hash {
                return Ok(CheckpointRun::Unchanged);
            }
            if c.seq > head_seq {
                let f = AuditFault::Truncated { last_seq: head_seq, checkpoint_seq: c.seq, external: false };
                return Ok(CheckpointRun::Refused(f));
            }
        }
        let key = self.ensure_checkpoint_key().await?;
        let (from, prev) = match &newest {
            None => (1, GENESIS_HASH.to_owned()),
            Some(c) => {
                if let Err(rejection) = key.check(c) {
                    let f = match rejection {
                        checkpoint::Rejection::OtherKey => AuditFault::CheckpointKey {
                            seq: c.seq,
                            fingerprint: c.key_fingerprint.clone(),
                            external: false,
                        },
                        checkpoint::Rejection::BadSignature => {
                            AuditFault::CheckpointSignature { seq: c.seq, external: false }
                        }
                    };
                    return Ok(CheckpointRun::Refused(f));
                }
                let at = audit::read_range(&self.store, c.seq, c.seq).await?;
                match at.first() {
                    Some(r) if r.hash == c.head_hash && r.compute_hash() == r.hash => (c.seq + 1, c.head_hash.clone()),
                    Some(_) => {
                        let f = AuditFault::CheckpointMismatch { seq: c.seq, since: 0, external: false };
                        return Ok(CheckpointRun::Refused(f));
                    }
                    None => {
                        let next = sqlx::query("SELECT MIN(seq) AS n FROM audit_log WHERE seq > $1")
                            .bind(c.seq)
                            .fetch_one(self.store.pool())
                            .await?
                            .try_get::<Option<i64>, _>("n")?;
                        let f = match next {
                            Some(found) => AuditFault::Missing { expected: c.seq, found },
                            None => {
                                AuditFault::Truncated { last_seq: c.seq - 1, checkpoint_seq: c.seq, external: false }
                            }
                        };
                        return Ok(CheckpointRun::Refused(f));
                    }
                }
            }
        };
        match verify::segment(&self.store, from, &prev, head_seq).await? {
            Segment::Broken(f) => return Ok(CheckpointRun::Refused(f)),
            Segment::Intact(last) if last != head_hash => {
                return Ok(CheckpointRun::Refused(AuditFault::HeadMismatch { head_seq, last_seq: head_seq }));
            }
            Segment::Intact(_) => {}
        }
        let time_ms = audit::now_ms();
        let statement = checkpoint::statement(head_seq, &head_hash, time_ms);
        let hsm = self.hsm.clone();
        let label = self.audit_config.checkpoint_key_label.clone();
        let point = key.point().to_vec();
        let signature = self
            .hsm
            .run("audit_checkpoint_sign", move |s| {
                let caps = hsm.capabilities();
                caps.require(CAP_SIGN_ECDSA_P256)?;
                let signer = HsmSigner::find(s, &caps.module, &label, &hsm.info().token_label)?;
                if signer.public_key_parts().raw != point {
                    return Err(HsmError::Wrapper {
                        module: caps.module.clone(),
                        reason: "the audit checkpoint key changed while a checkpoint was being signed".into(),
                    });
                }
                s.sign(&Mechanism::Ecdsa, signer.private_key(), &Sha256::digest(&statement))
                    .map_err(|e| HsmError::from_cryptoki(&caps.module, e))
            })
            .await?;
        // why: a module that returns a malformed signature (for example DER
        // instead of r || s) must not fill the table with checkpoints that
        // will never verify.
        if key.verify(&checkpoint::statement(head_seq, &head_hash, time_ms), &signature).is_err() {
            return Err(Error::Hsm(HsmError::Wrapper {
                module: self.hsm.info().path.clone(),
                reason: "the module's ECDSA signature of an audit checkpoint does not verify".into(),
            }));
        }
        let c = Checkpoint {
            format: FILE_FORMAT.to_owned(),
            seq: head_seq,
            head_hash,
            time_ms,
            algorithm: ALGORITHM.to_owned(),
            key_label: self.audit_config.checkpoint_key_label.clone(),
            key_fingerprint: key.fingerprint().to_owned(),
            public_key: hex::encode(key.spki_der()),
            signature: hex::encode(signature),
        };
        if checkpoint::insert(&self.store, &c).await? {
            Ok(CheckpointRun::Signed(c))
        } else {
            Ok(CheckpointRun::Unchanged)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::key_id;

    #[test]
    fn the_key_id_follows_the_label() {
        assert_eq!(key_id("kms/audit-checkpoint").len(), 16);
        assert_eq!(key_id("a"), key_id("a"));
        assert_ne!(key_id("a"), key_id("b"));
    }
}
