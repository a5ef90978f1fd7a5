//! Production plans: granted by operators, consumed by derivations.

use serde_json::json;

use super::Core;
use crate::audit::{self, Outcome};
use crate::authz::{self, Action, Authorized};
use crate::certs::now_secs;
use crate::error::{Error, Result};
use crate::identity::Principal;
use crate::plans::{self, MAX_COUNT, MAX_NOTE, MAX_VALIDITY_SECS, PlanFilter, PlanRecord};

/// A plan to create.
#[derive(Debug, Clone)]
pub struct NewPlan {
    /// The partner's tenant.
    pub tenant: String,
    /// Card profile.
    pub profile: String,
    /// Ranges (first, last).
    pub ranges: Vec<(String, String)>,
    /// Cards allowed.
    pub count: u64,
    /// Start (Unix seconds; 0 = now).
    pub valid_from: i64,
    /// End (Unix seconds, exclusive).
    pub valid_until: i64,
    /// Free text.
    pub note: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument { field: field.into(), reason: reason.into() }
}

/// Whether a principal sees every tenant's plans (else only its own).
fn sees_all(p: &Principal) -> bool {
    matches!(p.role.as_str(), "operator" | "security_officer" | "auditor")
}

fn plan_details(p: &PlanRecord) -> serde_json::Value {
    json!({
        "plan": p.id, "tenant": p.tenant, "profile": p.profile,
        "ranges": p.ranges.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "count": p.quota, "used": p.used, "valid_from": p.valid_from, "valid_until": p.valid_until, "note": p.note,
    })
}

fn plan_event(p: &Principal, outcome: Outcome, reason: String, details: serde_json::Value) -> audit::AuditEvent {
    super::keys::event(
        p,
        authz::ManageProductionPlans::NAME,
        "Kms::Service::\"AdminService\"".into(),
        outcome,
        reason,
        details,
    )
}

impl Core {
    /// `CreateProductionPlan`: checks the plan (profile known, ranges
    /// well-formed and not overlapping each other or another live plan of
    /// the tenant and profile, count and period sane), then records it and
    /// its audit record together.
    pub async fn create_plan(
        &self,
        proof: &Authorized<authz::ManageProductionPlans>,
        req: NewPlan,
    ) -> Result<PlanRecord> {
        let p = proof.principal();
        let result = self.create_plan_inner(p, req.clone()).await;
        if let Err(e) = &result {
            let details =
                json!({ "tenant": req.tenant, "profile": req.profile, "count": req.count, "error": e.to_string() });
            if let Err(err) = audit::record(&self.store, &plan_event(p, Outcome::Failed, e.to_string(), details)).await
            {
                tracing::error!(error = %err, "could not audit a refused production plan");
            }
        }
        result
    }

    async fn create_plan_inner(&self, p: &Principal, req: NewPlan) -> Result<PlanRecord> {
        kms_ca::check_identifier("tenant", &req.tenant).map_err(|e| invalid("tenant", e.to_string()))?;
        let Some(profile) = self.profiles().get(&req.profile) else {
            return Err(invalid("profile", format!("no card profile {:?}", req.profile)));
        };
        let Some((lengths, form)) = crate::card::Card::plan_identifier_form(&profile) else {
            return Err(invalid(
                "profile",
                format!("profile {} derives from no card identifier a plan can range over", req.profile),
            ));
        };
        let ranges = plans::check_ranges(&req.ranges).map_err(|e| invalid("ranges", e))?;
        if let Some(r) = ranges.iter().find(|r| !lengths.contains(&r.first.len())) {
            return Err(invalid("ranges", format!("{r}: a {} plan ranges over {form}", req.profile)));
        }
        if req.count == 0 || req.count > MAX_COUNT {
            return Err(invalid("count", format!("must be 1 to {MAX_COUNT}")));
        }
        let now = now_secs();
        let valid_from = if req.valid_from == 0 { now } else { req.valid_from };
        if valid_from < now - 86_400 || valid_from > now + MAX_VALIDITY_SECS {
            return Err(invalid("valid_from", "must be from a day ago to 10 years ahead"));
        }
        if req.valid_until <= valid_from || req.valid_until <= now {
            return Err(invalid("valid_until", "must be after valid_from and in the future"));
        }
        if req.valid_until.saturating_sub(valid_from) > MAX_VALIDITY_SECS {
            return Err(invalid("valid_until", "a plan lasts at most 10 years"));
        }
        if req.note.len() > MAX_NOTE {
            return Err(invalid("note", format!("at most {MAX_NOTE} bytes")));
        }
        let mut id = [0u8; 8];
        getrandom::getrandom(&mut id)
            .map_err(|e| Error::FailedPrecondition(format!("no randomness for a plan id: {e}")))?;
        let record = PlanRecord {
            id: format!("plan-{}", hex::encode(id)),
            tenant: req.tenant,
            profile: req.profile,
            ranges,
            quota: req.count,
            used: 0,
            valid_from,
            valid_until: req.valid_until,
            revoked_at: None,
            revocation_reason: String::new(),
            created_by: p.name.clone(),
            created_at: now,
            note: req.note,
        };
        let mut tx = self.store.begin().await?;
        // why: the overlap check and the insert must not interleave with
        // another creation for the same tenant and profile. PostgreSQL:
        // a transaction-scoped advisory lock on them; SQLite: the insert
        // takes the database's write lock before the check reads.
        if self.store.backend() == crate::store::Backend::Postgres {
            let key = i64::from_be_bytes(
                <sha2::Sha256 as sha2::Digest>::digest(
                    format!("plans|{}|{}", record.tenant, record.profile).as_bytes(),
                )[..8]
                    .try_into()
                    .unwrap_or([0; 8]),
            );
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(&mut *tx).await?;
        }
        plans::insert(&mut tx, &record).await?;
        for other in plans::live_tx(&mut tx, &record.tenant, &record.profile, now).await? {
            if other.id == record.id {
                continue;
            }
            for r in &record.ranges {
                if let Some(o) = other.ranges.iter().find(|o| o.overlaps(r)) {
                    return Err(invalid("ranges", format!("{r} overlaps {o} of live plan {}", other.id)));
                }
            }
        }
        audit::append(&mut tx, &plan_event(p, Outcome::Success, String::new(), plan_details(&record)))
            .await
            .map_err(Error::AuditUnavailable)?;
        tx.commit().await?;
        Ok(record)
    }

    /// `GetProductionPlan`. A partner sees its own tenant's plans only;
    /// another tenant's plan is "not found".
    pub async fn get_plan(&self, proof: &Authorized<authz::ReadProductionPlans>, id: &str) -> Result<PlanRecord> {
        let p = proof.principal();
        match plans::get(&self.store, id).await? {
            Some(plan) if sees_all(p) || plan.tenant == p.tenant => Ok(plan),
            _ => Err(Error::NotFound { what: format!("production plan {id:?}") }),
        }
    }

    /// `ListProductionPlans`: by id, paged; a partner's list is its own.
    pub async fn list_plans(
        &self,
        proof: &Authorized<authz::ReadProductionPlans>,
        mut filter: PlanFilter,
        state: &str,
    ) -> Result<(Vec<PlanRecord>, String)> {
        let p = proof.principal();
        if !sees_all(p) {
            if !filter.tenant.is_empty() && filter.tenant != p.tenant {
                return Ok((Vec::new(), String::new()));
            }
            filter.tenant = p.tenant.clone();
        }
        let states = ["", "active", "not_yet_valid", "expired", "exhausted", "revoked"];
        if !states.contains(&state) {
            return Err(invalid("state", format!("{state:?} is not one of {}", states[1..].join(", "))));
        }
        let limit = filter.limit;
        let now = now_secs();
        let mut out = Vec::new();
        let mut next = String::new();
        // State is computed, so pages are filled by reading on, at most
        // MAX_SCANNED_PAGES reads per call: a short page with a token means
        // "go on from here".
        const MAX_SCANNED_PAGES: usize = 10;
        for scanned in 1..=MAX_SCANNED_PAGES {
            let page = plans::list(&self.store, &filter).await?;
            let last = page.last().map(|r| r.id.clone());
            let full = page.len() as u32 == filter.limit;
            for plan in page {
                if state.is_empty() || plan.state(now) == state {
                    out.push(plan);
                    if out.len() as u32 == limit {
                        next = out.last().map(|r| r.id.clone()).unwrap_or_default();
                        return Ok((out, next));
                    }
                }
            }
            match last {
                Some(l) if full && scanned == MAX_SCANNED_PAGES => return Ok((out, l)),
                Some(l) if full => filter.after = l,
                _ => break,
            }
        }
        next.clear();
        Ok((out, next))
    }

    /// `RevokeProductionPlan`.
    pub async fn revoke_plan(
        &self,
        proof: &Authorized<authz::ManageProductionPlans>,
        id: &str,
        reason: &str,
    ) -> Result<PlanRecord> {
        let p = proof.principal();
        if reason.len() > MAX_NOTE {
            return Err(invalid("reason", format!("at most {MAX_NOTE} bytes")));
        }
        let Some(plan) = plans::get(&self.store, id).await? else {
            return Err(Error::NotFound { what: format!("production plan {id:?}") });
        };
        let now = now_secs();
        let mut tx = self.store.begin().await?;
        if !plans::revoke(&mut tx, id, reason, now).await? {
            return Err(Error::FailedPrecondition(format!("production plan {id} is already revoked")));
        }
        let mut details = plan_details(&plan);
        details["event"] = json!("revoked");
        details["reason"] = json!(reason);
        audit::append(&mut tx, &plan_event(p, Outcome::Success, String::new(), details))
            .await
            .map_err(Error::AuditUnavailable)?;
        tx.commit().await?;
        plans::get(&self.store, id).await?.ok_or_else(|| Error::NotFound { what: format!("production plan {id:?}") })
    }

    /// `ReloadPolicies`: the new set replaces the old only if it loads and
    /// validates whole, and only once its audit record is written; a
    /// rejected set is audited too.
    pub async fn reload_policies(&self, proof: &Authorized<authz::ReloadPolicies>) -> Result<(usize, String)> {
        self.reload_policies_as(proof.principal()).await
    }

    /// A reload on SIGHUP: the same, recorded as the service's own.
    pub async fn reload_policies_on_signal(&self) -> Result<(usize, String)> {
        let system = Principal {
            name: "SIGHUP".into(),
            role: "system".into(),
            tenant: "-".into(),
            certificate_serial: String::new(),
        };
        self.reload_policies_as(&system).await
    }

    async fn reload_policies_as(&self, p: &Principal) -> Result<(usize, String)> {
        let event = |outcome, reason: String, details| {
            super::keys::event(
                p,
                authz::ReloadPolicies::NAME,
                "Kms::Service::\"AdminService\"".into(),
                outcome,
                reason,
                details,
            )
        };
        match self.policy.load_candidate() {
            Ok(candidate) => {
                let (n, digest) = (candidate.policy_count(), candidate.digest().to_owned());
                audit::record(
                    &self.store,
                    &event(Outcome::Success, String::new(), json!({ "policies": n, "digest": digest })),
                )
                .await
                .map_err(Error::AuditUnavailable)?;
                self.policy.install(candidate);
                tracing::info!(policies = n, digest, "policies reloaded");
                Ok((n, digest))
            }
            Err(e) => {
                let reason = format!("rejected whole, the set in force stays ({}): {e}", self.policy.digest());
                if let Err(err) = audit::record(&self.store, &event(Outcome::Failed, reason.clone(), json!({}))).await {
                    tracing::error!(error = %err, "could not audit a rejected policy reload");
                }
                Err(invalid("policies", reason))
            }
        }
    }

    /// The live plans a derivation for `tenant` and `profile` is held to,
    /// or `None` when plans are not required.
    pub(crate) async fn governing_plans(&self, tenant: &str, profile: &str) -> Result<Option<Vec<PlanRecord>>> {
        if !self.plans.required {
            return Ok(None);
        }
        Ok(Some(plans::live(&self.store, tenant, profile, now_secs()).await?))
    }
}

/// The plan among `plans` covering card `identifier`: an error naming the
/// card when none does, or when the one that does is not usable now. A card
/// with no identifier (a profile diversified from the city factor only)
/// cannot be held to a plan and is refused.
pub fn plan_for<'a>(
    plans: &'a [PlanRecord],
    tenant: &str,
    profile: &str,
    identifier: Option<&str>,
) -> Result<&'a PlanRecord> {
    let Some(identifier) = identifier else {
        return Err(Error::FailedPrecondition(format!(
            "profile {profile} derives from no card identifier a production plan can range over; \
             it cannot be used while plans are required"
        )));
    };
    let now = now_secs();
    let Some(plan) = plans.iter().find(|p| p.covers(identifier)) else {
        return Err(Error::OutsidePlan(format!(
            "card {identifier} is outside every live production plan of tenant {tenant:?} for profile {profile}"
        )));
    };
    match plan.state(now) {
        "active" => Ok(plan),
        "exhausted" => Err(exhausted(plan)),
        state => Err(Error::OutsidePlan(format!("production plan {} covering card {identifier} is {state}", plan.id))),
    }
}

/// The error of a used-up plan.
pub fn exhausted(plan: &PlanRecord) -> Error {
    Error::QuotaExhausted(format!(
        "production plan {} has no cards left ({} of {} used)",
        plan.id,
        plan.used.min(plan.quota),
        plan.quota
    ))
}
