//! Key catalogue operations: each creates or changes an HSM object and the
//! catalogue record together, and appends an audit record carrying the KCV
//! in the same transaction. If the record cannot be written, the HSM object
//! made for it is destroyed again and the call fails.

use serde_json::json;

use super::Core;
use crate::audit::{self, AuditEvent, Outcome};
use crate::authz::{self, Action, Authorized};
use crate::error::{Error, Result};
use crate::hsm::keyops::{self, WrapFormat};
use crate::hsm::{Hsm, HsmError};
use crate::identity::Principal;
use crate::keys::{self, Algorithm, KcvMethod, KeyName, KeyRecord, KeyRef, KeyState, ListFilter, Origin, Purpose};

/// `CreateKey`, parsed.
#[derive(Debug, Clone)]
pub struct CreateKey {
    /// Name (must not exist).
    pub name: KeyName,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Purpose.
    pub purpose: Purpose,
    /// KCV method.
    pub kcv_method: KcvMethod,
}

/// Where an imported key comes from.
#[derive(Debug, Clone)]
pub enum ImportSource {
    /// Wrapped under a catalogue transport key.
    Wrapped {
        /// The transport key.
        transport: KeyRef,
        /// Encoding; `None` picks the transport key's default.
        format: Option<WrapFormat>,
        /// The bytes.
        wrapped: Vec<u8>,
    },
    /// An existing token object, by label.
    HsmObject {
        /// CKA_LABEL.
        label: String,
    },
}

/// `ImportKey`, parsed.
#[derive(Debug, Clone)]
pub struct ImportKey {
    /// Name; an existing name gets a new version.
    pub name: KeyName,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Purpose.
    pub purpose: Purpose,
    /// Source.
    pub source: ImportSource,
    /// Expected KCV.
    pub expected_kcv: (KcvMethod, String),
}

fn random_id() -> Result<Vec<u8>> {
    let mut id = vec![0u8; 16];
    getrandom::getrandom(&mut id)
        .map_err(|e| Error::Hsm(HsmError::Worker(format!("no randomness for an object id: {e}"))))?;
    Ok(id)
}

/// What a new key version is.
struct KeySpec {
    name: KeyName,
    version: u32,
    algorithm: Algorithm,
    purpose: Purpose,
}

/// The CKA_LABEL of a catalogue key version.
pub fn object_label(name: &KeyName, version: u32) -> String {
    format!("kms:{name}@v{version}")
}

/// An audit event by `p`.
pub(crate) fn event(
    p: &Principal,
    action: &str,
    resource: String,
    outcome: Outcome,
    reason: String,
    details: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        principal: p.name.clone(),
        role: p.role.clone(),
        tenant: p.tenant.clone(),
        action: action.to_owned(),
        resource,
        outcome,
        reason,
        details,
    }
}

fn key_details(r: &KeyRecord) -> serde_json::Value {
    json!({
        "key": r.reference(),
        "algorithm": r.algorithm.as_str(),
        "purpose": r.purpose.as_str(),
        "state": r.state.as_str(),
        "kcv": { "method": r.kcv.method.as_str(), "value": r.kcv.value },
        "origin": r.origin,
        "object_id": r.object_id,
    })
}

impl Core {
    /// Records a failed attempt of an allowed operation (best effort: the
    /// operation has already failed and changed nothing).
    pub(crate) async fn audit_failure<A: Action>(&self, p: &Principal, resource: String, error: &Error) {
        let e = event(p, A::NAME, resource, Outcome::Failed, error.to_string(), json!({}));
        if let Err(e) = audit::record(&self.store, &e).await {
            tracing::error!(error = %e, action = A::NAME, "could not audit a failure");
        }
    }

    /// Resolves a key reference to a usable record: it must exist, be in a
    /// usable state (active; deprecated only when named by version) and
    /// have `purpose`.
    pub async fn usable_key(&self, key: &KeyRef, purpose: Purpose, field: &str) -> Result<KeyRecord> {
        let record = keys::find(&self.store, key).await?.ok_or_else(|| Error::NotFound {
            what: match key.version {
                Some(_) => format!("key {key} ({field})"),
                None => format!("active version of key {} ({field})", key.name),
            },
        })?;
        match record.state {
            KeyState::Active => {}
            KeyState::Deprecated if key.version.is_some() => {}
            state => {
                return Err(Error::FailedPrecondition(format!(
                    "{field}: key {} is {state}{}",
                    record.reference(),
                    if state == KeyState::Deprecated { " (name its version to use it)" } else { "" }
                )));
            }
        }
        if record.purpose != purpose {
            return Err(Error::FailedPrecondition(format!(
                "{field}: key {} has purpose {}, this needs {purpose}",
                record.reference(),
                record.purpose
            )));
        }
        if record.module != self.hsm.info().path {
            return Err(Error::FailedPrecondition(format!(
                "{field}: key {} lives in module {}, not {}",
                record.reference(),
                record.module,
                self.hsm.info().path
            )));
        }
        Ok(record)
    }

    async fn store_new_version(
        &self,
        p: &Principal,
        action: &str,
        mut record: KeyRecord,
        handle_id: Vec<u8>,
    ) -> Result<KeyRecord> {
        let result: Result<KeyRecord> = async {
            let mut tx = self.store.begin().await?;
            let latest = keys::latest_version(&mut tx, &record.name).await?;
            if latest + 1 != record.version {
                return Err(Error::AlreadyExists { what: format!("key {}@v{}", record.name, record.version) });
            }
            let deprecated = keys::deprecate_older(&mut tx, &record.name, record.version).await?;
            keys::insert(&mut tx, &record).await?;
            let mut details = key_details(&record);
            details["deprecated_versions"] = json!(deprecated);
            audit::append(
                &mut tx,
                &event(
                    p,
                    action,
                    format!("Kms::Key::{:?}", record.name.as_str()),
                    Outcome::Success,
                    String::new(),
                    details,
                ),
            )
            .await
            .map_err(Error::AuditUnavailable)?;
            tx.commit().await?;
            record.updated_at = keys::now_ms();
            Ok(record)
        }
        .await;
        if result.is_err() {
            // Compensate: the HSM object must not outlive a failed record.
            let module = self.hsm.info().path.clone();
            let _ = self
                .hsm
                .run("destroy_orphan", move |s| match keyops::find_by_id(s, &module, &handle_id)? {
                    Some(h) => keyops::destroy(s, &module, h),
                    None => Ok(()),
                })
                .await;
        }
        result
    }

    fn new_record(&self, p: &Principal, spec: KeySpec, kcv: keys::Kcv, origin: Origin, id: &[u8]) -> KeyRecord {
        let now = keys::now_ms();
        KeyRecord {
            name: spec.name,
            version: spec.version,
            algorithm: spec.algorithm,
            purpose: spec.purpose,
            state: KeyState::Active,
            kcv,
            origin: origin.as_str().to_owned(),
            module: self.hsm.info().path.clone(),
            object_id: hex::encode(id),
            created_by: p.name.clone(),
            created_at: now,
            updated_at: now,
        }
    }

    async fn next_version(&self, name: &KeyName) -> Result<u32> {
        let mut tx = self.store.begin().await?;
        let v = keys::latest_version(&mut tx, name).await?;
        tx.rollback().await?;
        Ok(v + 1)
    }

    async fn generate_version(
        &self,
        p: &Principal,
        action: &str,
        spec: KeySpec,
        kcv_method: KcvMethod,
    ) -> Result<KeyRecord> {
        let id = random_id()?;
        let label = object_label(&spec.name, spec.version);
        let (algorithm, purpose) = (spec.algorithm, spec.purpose);
        let hsm: Hsm = self.hsm.clone();
        let id2 = id.clone();
        let kcv = self
            .hsm
            .run("generate_key", move |s| {
                let caps = hsm.capabilities();
                let h = keyops::generate(s, caps, algorithm, purpose, &label, &id2, keyops::Export::Never)?;
                match keyops::kcv(s, caps, h, kcv_method) {
                    Ok(k) => Ok(k),
                    Err(e) => {
                        let _ = keyops::destroy(s, &caps.module, h);
                        Err(e)
                    }
                }
            })
            .await?;
        let record = self.new_record(p, spec, kcv, Origin::Generated, &id);
        self.store_new_version(p, action, record, id).await
    }

    /// `CreateKey`: version 1 of a new name, generated in the HSM.
    pub async fn create_key(&self, proof: &Authorized<authz::CreateKey>, cmd: CreateKey) -> Result<KeyRecord> {
        let p = proof.principal();
        let result = async {
            cmd.purpose.check_algorithm(cmd.algorithm)?;
            if self.next_version(&cmd.name).await? != 1 {
                return Err(Error::AlreadyExists {
                    what: format!("key {} (use RotateKey or ImportKey for a new version)", cmd.name),
                });
            }
            let spec = KeySpec { name: cmd.name.clone(), version: 1, algorithm: cmd.algorithm, purpose: cmd.purpose };
            self.generate_version(p, authz::CreateKey::NAME, spec, cmd.kcv_method).await
        }
        .await;
        if let Err(e) = &result {
            self.audit_failure::<authz::CreateKey>(p, format!("Kms::Key::{:?}", cmd.name.as_str()), e).await;
        }
        result
    }

    /// `RotateKey`: a new generated version; older active versions become
    /// deprecated.
    pub async fn rotate_key(&self, proof: &Authorized<authz::RotateKey>, name: KeyName) -> Result<KeyRecord> {
        let p = proof.principal();
        let result = async {
            let current = keys::find(&self.store, &KeyRef { name: name.clone(), version: None })
                .await?
                .ok_or_else(|| Error::NotFound { what: format!("active version of key {name}") })?;
            if current.origin != Origin::Generated.as_str() {
                return Err(Error::FailedPrecondition(format!(
                    "key {name} was {}; rotate it by importing the new version its owner delivers",
                    current.origin
                )));
            }
            let version = self.next_version(&name).await?;
            let spec = KeySpec { name: name.clone(), version, algorithm: current.algorithm, purpose: current.purpose };
            self.generate_version(p, authz::RotateKey::NAME, spec, current.kcv.method).await
        }
        .await;
        if let Err(e) = &result {
            self.audit_failure::<authz::RotateKey>(p, format!("Kms::Key::{:?}", name.as_str()), e).await;
        }
        result
    }

    /// `ImportKey` from a wrapped delivery.
    pub async fn import_key(&self, proof: &Authorized<authz::ImportKey>, cmd: ImportKey) -> Result<KeyRecord> {
        let result = self.import_inner(proof.principal(), authz::ImportKey::NAME, cmd.clone()).await;
        if let Err(e) = &result {
            self.audit_failure::<authz::ImportKey>(proof.principal(), format!("Kms::Key::{:?}", cmd.name.as_str()), e)
                .await;
        }
        result
    }

    /// `ImportKey` adopting a token object (security officers).
    pub async fn adopt_key(&self, proof: &Authorized<authz::AdoptKey>, cmd: ImportKey) -> Result<KeyRecord> {
        let result = self.import_inner(proof.principal(), authz::AdoptKey::NAME, cmd.clone()).await;
        if let Err(e) = &result {
            self.audit_failure::<authz::AdoptKey>(proof.principal(), format!("Kms::Key::{:?}", cmd.name.as_str()), e)
                .await;
        }
        result
    }

    async fn import_inner(&self, p: &Principal, action: &str, cmd: ImportKey) -> Result<KeyRecord> {
        let (method, expected) = cmd.expected_kcv.clone();
        KcvMethod::parse_for("expected_kcv.method", method.as_str(), cmd.algorithm)?;
        cmd.purpose.check_algorithm(cmd.algorithm)?;
        let version = self.next_version(&cmd.name).await?;
        let label = object_label(&cmd.name, version);
        let id = random_id()?;
        let hsm = self.hsm.clone();
        let algorithm = cmd.algorithm;
        let purpose = cmd.purpose;
        let (origin, kcv) = match cmd.source.clone() {
            ImportSource::Wrapped { transport, format, wrapped } => {
                let t = self.usable_key(&transport, Purpose::TransportImport, "wrapped.transport_key").await?;
                let format = format.unwrap_or_else(|| WrapFormat::default_for(t.algorithm));
                if !format.fits(t.algorithm) {
                    return Err(Error::InvalidArgument {
                        field: "wrapped.format".into(),
                        reason: format!(
                            "{format:?} does not apply to the {} transport key {}",
                            t.algorithm,
                            t.reference()
                        ),
                    });
                }
                if wrapped.len() != format.wrapped_len(algorithm.key_len()) {
                    return Err(Error::InvalidArgument {
                        field: "wrapped.wrapped".into(),
                        reason: format!(
                            "{} bytes; a {algorithm} key wrapped as {format:?} is {} bytes",
                            wrapped.len(),
                            format.wrapped_len(algorithm.key_len())
                        ),
                    });
                }
                let transport_id = t.object_id_bytes();
                let id2 = id.clone();
                let kcv = self
                    .hsm
                    .run("import_key", move |s| {
                        let caps = hsm.capabilities();
                        let tk = keyops::find_by_id(s, &caps.module, &transport_id)?.ok_or_else(|| {
                            HsmError::ObjectNotFound {
                                label: hex::encode(&transport_id),
                                token: hsm.info().token_label.clone(),
                            }
                        })?;
                        let h = keyops::unwrap(
                            s,
                            caps,
                            tk,
                            format,
                            &wrapped,
                            algorithm,
                            purpose,
                            &label,
                            &id2,
                            keyops::Export::Never,
                        )?;
                        match keyops::kcv(s, caps, h, method) {
                            Ok(k) if k.matches(method, &expected) => Ok(Ok(k)),
                            Ok(k) => {
                                keyops::destroy(s, &caps.module, h)?;
                                Ok(Err(k))
                            }
                            Err(e) => {
                                let _ = keyops::destroy(s, &caps.module, h);
                                Err(e)
                            }
                        }
                    })
                    .await?;
                (Origin::Imported, kcv)
            }
            ImportSource::HsmObject { label: existing } => {
                let id2 = id.clone();
                let kcv = self
                    .hsm
                    .run("adopt_key", move |s| {
                        let caps = hsm.capabilities();
                        let h = keyops::find_by_label(s, &caps.module, &existing)?.ok_or_else(|| {
                            HsmError::ObjectNotFound { label: existing.clone(), token: hsm.info().token_label.clone() }
                        })?;
                        let problems = keyops::adoption_problems(s, caps, h, algorithm)?;
                        if !problems.is_empty() {
                            return Ok(Err(Err(problems.join("; "))));
                        }
                        let k = keyops::kcv(s, caps, h, method)?;
                        if !k.matches(method, &expected) {
                            return Ok(Err(Ok(k)));
                        }
                        keyops::relabel(s, &caps.module, h, &label, &id2)?;
                        Ok(Ok(k))
                    })
                    .await?;
                let kcv = match kcv {
                    Ok(k) => Ok(k),
                    Err(Ok(k)) => Err(k),
                    Err(Err(problems)) => {
                        return Err(Error::FailedPrecondition(format!("hsm_object_label: cannot adopt: {problems}")));
                    }
                };
                (Origin::Adopted, kcv)
            }
        };
        let kcv = kcv.map_err(|actual| {
            Error::FailedPrecondition(format!(
                "expected_kcv: the key's KCV is {} {}, not {}; nothing was imported",
                actual.method,
                actual.value,
                cmd.expected_kcv.1.to_ascii_uppercase()
            ))
        })?;
        let record = self.new_record(p, KeySpec { name: cmd.name, version, algorithm, purpose }, kcv, origin, &id);
        self.store_new_version(p, action, record, id).await
    }

    /// `GetKey`.
    pub async fn get_key(&self, _proof: &Authorized<authz::GetKey>, key: &KeyRef) -> Result<KeyRecord> {
        keys::find(&self.store, key).await?.ok_or_else(|| Error::NotFound { what: format!("key {key}") })
    }

    /// `ListKeys`: one page and the token for the next.
    pub async fn list_keys(
        &self,
        _proof: &Authorized<authz::ListKeys>,
        filter: &ListFilter,
        after: Option<(String, u32)>,
        page_size: u32,
    ) -> Result<(Vec<KeyRecord>, Option<(String, u32)>)> {
        let mut page = keys::list(&self.store, filter, after, page_size + 1).await?;
        let next = if page.len() > page_size as usize {
            page.truncate(page_size as usize);
            page.last().map(|r| (r.name.as_str().to_owned(), r.version))
        } else {
            None
        };
        Ok((page, next))
    }

    /// `SetKeyState`: active, deprecated and suspended, in any direction;
    /// destroyed keys stay destroyed.
    pub async fn set_key_state(
        &self,
        proof: &Authorized<authz::SetKeyState>,
        name: KeyName,
        version: u32,
        state: KeyState,
        reason: String,
    ) -> Result<KeyRecord> {
        self.transition::<authz::SetKeyState>(proof.principal(), name, version, state, reason).await
    }

    /// `DestroyKey`: the HSM object goes; the record stays, destroyed. The
    /// record change and its audit record are written, then the object is
    /// destroyed, then the transaction commits: if the HSM step fails nothing
    /// changes, and a crash before the commit leaves the record usable with
    /// no object behind it, which the next use reports as not found.
    pub async fn destroy_key(
        &self,
        proof: &Authorized<authz::DestroyKey>,
        name: KeyName,
        version: u32,
        reason: String,
    ) -> Result<KeyRecord> {
        self.transition::<authz::DestroyKey>(proof.principal(), name, version, KeyState::Destroyed, reason).await
    }

    async fn transition<A: Action>(
        &self,
        p: &Principal,
        name: KeyName,
        version: u32,
        to: KeyState,
        reason: String,
    ) -> Result<KeyRecord> {
        let resource = format!("Kms::Key::{:?}", name.as_str());
        let result = async {
            let key = KeyRef { name: name.clone(), version: Some(version) };
            let mut record =
                keys::find(&self.store, &key).await?.ok_or_else(|| Error::NotFound { what: format!("key {key}") })?;
            if record.state == KeyState::Destroyed {
                return Err(Error::FailedPrecondition(format!("key {} is destroyed", record.reference())));
            }
            let from = record.state;
            let mut tx = self.store.begin().await?;
            keys::set_state(&mut tx, &name, version, to).await?;
            record.state = to;
            let mut details = key_details(&record);
            details["from_state"] = json!(from.as_str());
            audit::append(&mut tx, &event(p, A::NAME, resource.clone(), Outcome::Success, reason.clone(), details))
                .await
                .map_err(Error::AuditUnavailable)?;
            if to == KeyState::Destroyed {
                let id = record.object_id_bytes();
                let module = self.hsm.info().path.clone();
                let id2 = id.clone();
                self.hsm
                    .run("destroy_key", move |s| match keyops::find_by_id(s, &module, &id2)? {
                        Some(h) => keyops::destroy(s, &module, h),
                        None => Ok(()),
                    })
                    .await?;
                self.hsm.forget_handle(&id);
            }
            tx.commit().await?;
            Ok(record)
        }
        .await;
        if let Err(e) = &result {
            self.audit_failure::<A>(p, resource, e).await;
        }
        result
    }
}
