//! Card-key diversification. Every derived key is a session object inside
//! the HSM that leaves only wrapped under the named transport key, with its
//! KCV, and is destroyed right after.
//!
//! A derivation is planned before the HSM is touched: the profile, the
//! master keys (state, purpose, algorithm, pinned versions), the transport
//! key and every capability the plan needs are checked, so a request that
//! cannot succeed fails with a clear error having derived nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::num::NonZeroUsize;

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::kbkdf::{Endianness, KbkdfCounterFormat, KbkdfParams, PrfDataParam, PrfDataParamType};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use serde::Serialize;
use serde_json::json;

use super::Core;
use crate::audit::{self, AuditEvent, Outcome};
use crate::authz::{self, Action, Authorized};
use crate::card::{self, Card, CardInput};
use crate::error::{Error, Result};
use crate::hsm::keyops::{self, WrapFormat};
use crate::hsm::raw::mechanism_type;
use crate::hsm::{Capabilities, Hsm, HsmError};
use crate::identity::Principal;
use crate::keys::{Kcv, KcvMethod, KeyName, KeyRecord, KeyRef, Purpose};
use crate::profiles::{CardProfile, Method, Role};

/// A derivation request, parsed.
#[derive(Debug, Clone)]
pub struct DeriveRequest {
    /// Card profile name.
    pub profile: String,
    /// Transport key for export.
    pub transport: KeyRef,
    /// Pinned master-key versions.
    pub pins: BTreeMap<KeyName, u32>,
}

/// One role's derived key, as returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DerivedKey {
    /// Role.
    pub role: String,
    /// Master key name.
    pub master_key: String,
    /// Master key version.
    pub master_version: u32,
    /// Derived key algorithm.
    pub algorithm: String,
    /// KCV method.
    pub kcv_method: String,
    /// KCV value.
    pub kcv: String,
    /// Wrapped key, hex.
    pub wrapped: String,
    /// Wrap format.
    pub format: String,
}

/// A checked plan: everything resolved, nothing derived yet.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The profile.
    pub profile: Arc<CardProfile>,
    /// Master key per role, in role order.
    pub masters: Vec<KeyRecord>,
    /// The transport key.
    pub transport: KeyRecord,
    /// The wrap format.
    pub format: WrapFormat,
}

impl Plan {
    /// What the audit log records about the plan.
    pub fn details(&self) -> serde_json::Value {
        json!({
            "profile": self.profile.name,
            "transport_key": self.transport.reference(),
            "transport_kcv": { "method": self.transport.kcv.method.as_str(), "value": self.transport.kcv.value },
            "master_keys": self.masters.iter().map(|m| m.reference()).collect::<std::collections::BTreeSet<_>>(),
            "wrap_format": format!("{:?}", self.format),
        })
    }
}

/// Session keys made during one derivation, destroyed when dropped.
struct SessionKeys<'s> {
    session: &'s Session,
    module: &'s str,
    handles: Vec<ObjectHandle>,
}

impl SessionKeys<'_> {
    fn keep(&mut self, h: ObjectHandle) -> ObjectHandle {
        self.handles.push(h);
        h
    }
}

impl Drop for SessionKeys<'_> {
    fn drop(&mut self) {
        for h in self.handles.drain(..) {
            if let Err(e) = keyops::destroy(self.session, self.module, h) {
                tracing::warn!(error = %e, "could not destroy a derived session key");
            }
        }
    }
}

fn kcv_method(method: Method) -> KcvMethod {
    match method {
        // why: GlobalPlatform checks AES card keys by encrypting 16 bytes of 01.
        Method::GpKdf3 => KcvMethod::AesGp,
        other => other.algorithm().default_kcv(),
    }
}

fn derive_capability(method: Method) -> &'static str {
    match method {
        Method::Pboc3Des | Method::EmvOptionA | Method::EmvOptionB | Method::GpEmv | Method::GpVisa2 => {
            "des3_ecb_encrypt_data"
        }
        Method::Sm4Jtt978 => "sm4_ecb_encrypt_data",
        Method::An10922Aes128 => "an10922_aes128",
        Method::GpKdf3 => "sp800_108_counter_kdf",
        Method::An10922Des2 => "an10922_des2",
    }
}

fn missing(role: &Role, what: &str) -> HsmError {
    HsmError::Wrapper { module: String::new(), reason: format!("role {}: card has no {what}", role.name) }
}

/// Derives one role's key for `card` from `master`, inside the HSM.
fn derive_role(
    keys: &mut SessionKeys<'_>,
    caps: &Capabilities,
    master: ObjectHandle,
    role: &Role,
    card: &Card,
) -> Result<ObjectHandle, HsmError> {
    let s = keys.session;
    let alg = role.method.algorithm();
    match role.method {
        Method::Pboc3Des | Method::Sm4Jtt978 => {
            let mut base = master;
            let levels = role.factors.len();
            for (i, f) in role.factors.iter().enumerate() {
                let d = card.factor(*f).ok_or_else(|| missing(role, f.as_str()))?;
                let k = keyops::derive_ecb(s, caps, base, alg, &card::with_complement(d), alg, i + 1 < levels)?;
                base = keys.keep(k);
            }
            Ok(base)
        }
        Method::EmvOptionA | Method::EmvOptionB => {
            let y = card.emv_y(role.method == Method::EmvOptionB).ok_or_else(|| missing(role, "pan"))?;
            let k = keyops::derive_ecb(s, caps, master, alg, &card::with_complement(y), alg, false)?;
            Ok(keys.keep(k))
        }
        Method::GpEmv | Method::GpVisa2 => {
            let kdd = card.kdd().ok_or_else(|| missing(role, "kdd"))?;
            let gp = role.gp_key.ok_or_else(|| missing(role, "gp_key"))?;
            let data =
                if role.method == Method::GpEmv { card::gp_emv_data(kdd, gp) } else { card::gp_visa2_data(kdd, gp) };
            let k = keyops::derive_ecb(s, caps, master, alg, &data, alg, false)?;
            Ok(keys.keep(k))
        }
        Method::GpKdf3 => {
            let kdd = card.kdd().ok_or_else(|| missing(role, "kdd"))?;
            let gp = role.gp_key.ok_or_else(|| missing(role, "gp_key"))?;
            caps.require("sp800_108_counter_kdf")?;
            caps.require("aes_cmac")?;
            let fixed = card::gp_kdf3_data(kdd, gp);
            let counter = KbkdfCounterFormat::new(Endianness::Big, NonZeroUsize::MIN.saturating_add(7));
            let data = [
                PrfDataParam::new(PrfDataParamType::IterationVariable(Some(&counter))),
                PrfDataParam::new(PrfDataParamType::ByteArray(&fixed)),
            ];
            let params = KbkdfParams::new(cryptoki::mechanism::MechanismType::AES_CMAC, &data, None);
            let template = keyops::session_key_template(caps, alg, false)?;
            let k = s
                .derive_key(&Mechanism::KbkdfCounter(params), master, &template)
                .map_err(|e| HsmError::from_cryptoki(&caps.module, e))?;
            Ok(keys.keep(k))
        }
        Method::An10922Aes128 | Method::An10922Des2 => {
            let (d, capability) = if role.method == Method::An10922Aes128 {
                (card.an10922_input().ok_or_else(|| missing(role, "uid/aid"))?, "an10922_aes128")
            } else {
                // Card::parse keeps M within the 15 bytes 2K3DES allows.
                (card.an10922_message().ok_or_else(|| missing(role, "uid/aid"))?, "an10922_des2")
            };
            let number = caps.require(capability)?;
            let params = cryptoki_sys::CK_KEY_DERIVATION_STRING_DATA {
                pData: d.as_ptr() as *mut u8,
                ulLen: d.len() as cryptoki_sys::CK_ULONG,
            };
            let mechanism =
                Mechanism::VendorDefined(VendorDefinedMechanism::new(mechanism_type(number), Some(&params)));
            let template = keyops::session_key_template(caps, alg, false)?;
            let k =
                s.derive_key(&mechanism, master, &template).map_err(|e| HsmError::from_cryptoki(&caps.module, e))?;
            Ok(keys.keep(k))
        }
    }
}

/// The plan's keys as object handles, looked up once per HSM call.
pub struct Handles {
    transport: ObjectHandle,
    masters: Vec<ObjectHandle>,
}

impl Handles {
    /// Looks up (and checks) the transport and master keys of `plan`.
    pub fn resolve(hsm: &Hsm, session: &Session, plan: &Plan) -> Result<Handles, HsmError> {
        Ok(Handles {
            transport: hsm.object(session, &plan.transport.object_id_bytes())?,
            masters: plan
                .masters
                .iter()
                .map(|m| hsm.object(session, &m.object_id_bytes()))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Derives, checks and wraps every role of `plan` for `card`. Runs inside
/// [`Hsm::run`], with `handles` resolved in the same call.
pub fn derive_card(
    hsm: &Hsm,
    session: &Session,
    plan: &Plan,
    handles: &Handles,
    card: &Card,
) -> Result<Vec<DerivedKey>, HsmError> {
    let caps = hsm.capabilities();
    let transport = handles.transport;
    let mut out = Vec::with_capacity(plan.profile.roles.len());
    for ((role, master), master_handle) in plan.profile.roles.iter().zip(&plan.masters).zip(&handles.masters) {
        let mut keys = SessionKeys { session, module: &caps.module, handles: Vec::new() };
        let master_handle = *master_handle;
        let derived = derive_role(&mut keys, caps, master_handle, role, card)?;
        let alg = role.method.algorithm();
        let kcv: Kcv = keyops::kcv(session, caps, derived, kcv_method(role.method))?;
        let wrapped = keyops::wrap(session, caps, transport, plan.format, derived, alg.key_len())?;
        out.push(DerivedKey {
            role: role.name.clone(),
            master_key: master.name.as_str().to_owned(),
            master_version: master.version,
            algorithm: alg.as_str().to_owned(),
            kcv_method: kcv.method.as_str().to_owned(),
            kcv: kcv.value,
            wrapped: hex::encode_upper(wrapped),
            format: format!("{:?}", plan.format),
        });
    }
    Ok(out)
}

/// The audit view of one card's result: identifiers and KCVs, never the
/// wrapped bytes.
pub fn card_audit(input: &CardInput, keys: &[DerivedKey]) -> serde_json::Value {
    json!({
        "card": input,
        "kcvs": keys.iter().map(|k| json!({
            "role": k.role, "master": format!("{}@v{}", k.master_key, k.master_version),
            "method": k.kcv_method, "kcv": k.kcv,
        })).collect::<Vec<_>>(),
    })
}

impl Core {
    /// Resolves and checks everything a derivation needs.
    pub async fn plan_derivation(&self, req: &DeriveRequest) -> Result<Plan> {
        let profile = self
            .profiles()
            .get(&req.profile)
            .ok_or_else(|| Error::NotFound { what: format!("card profile {:?} (profile)", req.profile) })?;
        let transport = self.usable_key(&req.transport, Purpose::TransportExport, "transport_key").await?;
        let format = WrapFormat::default_for(transport.algorithm);
        for pinned in req.pins.keys() {
            if !profile.roles.iter().any(|r| &r.master_key == pinned) {
                return Err(Error::InvalidArgument {
                    field: "master_key_versions".into(),
                    reason: format!("{pinned} is not a master key of profile {}", profile.name),
                });
            }
        }
        let caps = self.hsm.capabilities();
        let mut masters = Vec::with_capacity(profile.roles.len());
        let mut resolved: BTreeMap<KeyName, KeyRecord> = BTreeMap::new();
        for role in &profile.roles {
            let record = match resolved.get(&role.master_key) {
                Some(r) => r.clone(),
                None => {
                    let key =
                        KeyRef { name: role.master_key.clone(), version: req.pins.get(&role.master_key).copied() };
                    let r = self
                        .usable_key(&key, Purpose::DerivationMaster, &format!("master key of role {}", role.name))
                        .await?;
                    resolved.insert(role.master_key.clone(), r.clone());
                    r
                }
            };
            let alg = role.method.algorithm();
            if record.algorithm != alg {
                return Err(Error::FailedPrecondition(format!(
                    "role {}: method {} needs a {alg} master key; {} is {}",
                    role.name,
                    role.method.as_str(),
                    record.reference(),
                    record.algorithm
                )));
            }
            caps.require(derive_capability(role.method))?;
            caps.require_wrap(transport.algorithm.family(), format.probe_name(), alg.family())?;
            masters.push(record);
        }
        Ok(Plan { profile, masters, transport, format })
    }

    /// `DeriveCardKeys` for one card.
    pub async fn derive_card_keys(
        &self,
        proof: &Authorized<authz::DeriveCardKeys>,
        req: DeriveRequest,
        input: CardInput,
    ) -> Result<(Plan, Vec<DerivedKey>)> {
        let p = proof.principal();
        let result: Result<(Plan, Vec<DerivedKey>)> = async {
            let plan = self.plan_derivation(&req).await?;
            let card = Card::parse(&input, &plan.profile)?;
            let governing = match self.governing_plans(&p.tenant, &req.profile).await? {
                Some(plans) => {
                    let id = card.plan_identifier(&input, &plan.profile);
                    Some(super::plans::plan_for(&plans, &p.tenant, &req.profile, id.as_deref())?.clone())
                }
                None => None,
            };
            let hsm = self.hsm.clone();
            let plan2 = plan.clone();
            let keys = self
                .hsm
                .run("derive_card", move |s| {
                    let handles = Handles::resolve(&hsm, s, &plan2)?;
                    derive_card(&hsm, s, &plan2, &handles, &card)
                })
                .await?;
            let mut details = plan.details();
            details["cards"] = json!(1);
            details["items"] = json!([card_audit(&input, &keys)]);
            // The plan's count and the audit record commit together.
            let mut tx = self.store.begin().await?;
            if let Some(governing) = &governing {
                let grant = crate::plans::consume(&mut tx, &governing.id, 1, crate::certs::now_secs()).await?;
                if grant.granted == 0 {
                    return Err(super::plans::exhausted(governing));
                }
                details["plan"] = json!(governing.id);
                details["plan_used"] = json!(grant.used);
            }
            let e = derive_event(p, &req.profile, Outcome::Success, String::new(), details);
            audit::append(&mut tx, &e).await.map_err(Error::AuditUnavailable)?;
            tx.commit().await?;
            Ok((plan, keys))
        }
        .await;
        if let Err(e) = &result {
            let mut details =
                json!({ "profile": req.profile, "transport_key": req.transport.to_string(), "card": input });
            details["error"] = json!(e.to_string());
            let ev = derive_event(p, &req.profile, Outcome::Failed, e.to_string(), details);
            if let Err(err) = audit::record(&self.store, &ev).await {
                tracing::error!(error = %err, "could not audit a failed derivation");
            }
        }
        result
    }
}

/// The audit event of a derivation.
pub fn derive_event(
    p: &Principal,
    profile: &str,
    outcome: Outcome,
    reason: String,
    details: serde_json::Value,
) -> AuditEvent {
    super::keys::event(
        p,
        authz::DeriveCardKeys::NAME,
        format!("Kms::CardProfile::{profile:?}"),
        outcome,
        reason,
        details,
    )
}
