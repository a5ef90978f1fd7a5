//! Production batches of card-key derivations.
//!
//! A batch has a caller-chosen id. Cards are taken in chunks: each chunk is
//! derived in one HSM call, then its item records and one audit record are
//! committed in one transaction, and only then are its results sent. A
//! retried batch (same id, same parameters) answers the cards already
//! recorded from the record (`replayed`), so nothing is derived or audited
//! twice, and goes on with the rest.

use std::collections::BTreeMap;

use serde_json::json;
use sqlx::Row;

use super::Core;
use super::derive::{DeriveRequest, DerivedKey, Handles, Plan, card_audit, derive_card, derive_event};
use crate::audit::{self, Outcome};
use crate::authz::{self, Authorized};
use crate::card::{Card, CardInput};
use crate::error::{Error, Result};
use crate::keys::now_ms;

/// An opened batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The id.
    pub id: String,
    /// The checked plan.
    pub plan: Plan,
    /// The caller's tenant (production plans are per tenant).
    pub tenant: String,
}

/// The outcome of one card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    /// Keys derived (or replayed).
    Keys {
        /// The keys.
        keys: Vec<DerivedKey>,
        /// Answered from the record of an earlier run.
        replayed: bool,
    },
    /// This card failed; the batch goes on.
    Failed {
        /// gRPC code.
        code: tonic::Code,
        /// Message naming the field.
        message: String,
        /// Answered from the record of an earlier run.
        replayed: bool,
    },
}

/// Checks a batch id: 1-64 of `[A-Za-z0-9_.-]`.
pub fn check_batch_id(id: &str) -> Result<()> {
    let ok =
        (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument { field: "header.batch_id".into(), reason: "must be 1-64 of [A-Za-z0-9_.-]".into() })
    }
}

/// A chunk derived but not yet recorded.
#[derive(Debug)]
pub struct PreparedChunk {
    first_index: u64,
    cards: Vec<CardInput>,
    /// Each card as recorded (JSON), computed once for the replay check and
    /// the record.
    card_json: Vec<String>,
    /// Per card: what the HSM derived, if it was derived in this chunk.
    derived: Vec<Option<Result<Vec<DerivedKey>, String>>>,
    /// Per card derived: the production plan it counts against.
    plan_of: Vec<Option<crate::plans::PlanRecord>>,
    results: Vec<Option<ItemResult>>,
}

enum Pending {
    Done(ItemResult),
    Derive(Card),
}

impl Core {
    /// Opens a new batch or resumes one with the same id and parameters.
    pub async fn open_batch(
        &self,
        proof: &Authorized<authz::DeriveCardKeys>,
        id: String,
        req: DeriveRequest,
    ) -> Result<Batch> {
        check_batch_id(&id)?;
        let p = proof.principal();
        let plan = self.plan_derivation(&req).await?;
        let pins = serde_json::to_string(&req.pins.iter().map(|(k, v)| (k.as_str(), v)).collect::<BTreeMap<_, _>>())
            .map_err(|e| Error::InvalidArgument { field: "master_key_versions".into(), reason: e.to_string() })?;
        let transport = req.transport.to_string();
        let mut tx = self.store.begin().await?;
        let existing =
            sqlx::query("SELECT tenant, profile, transport, pins FROM derivation_batches WHERE batch_id = $1")
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
        let resumed = match existing {
            Some(row) => {
                let same = row.try_get::<String, _>("tenant")? == p.tenant
                    && row.try_get::<String, _>("profile")? == req.profile
                    && row.try_get::<String, _>("transport")? == transport
                    && row.try_get::<String, _>("pins")? == pins;
                if !same {
                    return Err(Error::FailedPrecondition(format!(
                        "header.batch_id: batch {id:?} was opened with a different tenant, profile, transport key or pinned versions"
                    )));
                }
                true
            }
            None => {
                sqlx::query(
                    "INSERT INTO derivation_batches (batch_id, principal, tenant, profile, transport, pins, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&id)
                .bind(&p.name)
                .bind(&p.tenant)
                .bind(&req.profile)
                .bind(&transport)
                .bind(&pins)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                false
            }
        };
        let mut details = plan.details();
        details["batch_id"] = json!(id);
        details["event"] = json!(if resumed { "batch resumed" } else { "batch opened" });
        audit::append(&mut tx, &derive_event(p, &req.profile, Outcome::Success, String::new(), details))
            .await
            .map_err(Error::AuditUnavailable)?;
        tx.commit().await?;
        Ok(Batch { id, plan, tenant: p.tenant.clone() })
    }

    /// Processes cards `first_index..` of a batch: replays what is recorded,
    /// derives the rest, records and audits them in one transaction.
    pub async fn process_chunk(
        &self,
        proof: &Authorized<authz::DeriveCardKeys>,
        batch: &Batch,
        first_index: u64,
        cards: Vec<CardInput>,
    ) -> Result<Vec<ItemResult>> {
        let prepared = self.prepare_chunk(batch, first_index, cards).await?;
        self.commit_chunk(proof, batch, prepared).await
    }

    /// The first half of [`Core::process_chunk`]: replays what is recorded
    /// and derives the rest in the HSM. Nothing is recorded or sent yet, so
    /// it may run while the previous chunk commits.
    pub async fn prepare_chunk(&self, batch: &Batch, first_index: u64, cards: Vec<CardInput>) -> Result<PreparedChunk> {
        let last_index = first_index + cards.len() as u64;
        let rows = sqlx::query(
            "SELECT idx, card, ok, result FROM derivation_items WHERE batch_id = $1 AND idx >= $2 AND idx < $3",
        )
        .bind(&batch.id)
        .bind(first_index as i64)
        .bind(last_index as i64)
        .fetch_all(self.store.pool())
        .await?;
        let mut recorded: BTreeMap<u64, (String, bool, String)> = BTreeMap::new();
        for r in rows {
            let idx: i64 = r.try_get("idx")?;
            recorded.insert(idx as u64, (r.try_get("card")?, r.try_get::<i64, _>("ok")? != 0, r.try_get("result")?));
        }
        let mut pending = Vec::with_capacity(cards.len());
        let mut plan_of: Vec<Option<crate::plans::PlanRecord>> = (0..cards.len()).map(|_| None).collect();
        let governing = self.governing_plans(&batch.tenant, &batch.plan.profile.name).await?;
        let card_json: Vec<String> = cards.iter().map(|c| serde_json::to_string(c).unwrap_or_default()).collect();
        for (offset, input) in cards.iter().enumerate() {
            let idx = first_index + offset as u64;
            pending.push(match recorded.remove(&idx) {
                Some((stored_card, _, _)) if stored_card != card_json[offset] => Pending::Done(ItemResult::Failed {
                    code: tonic::Code::FailedPrecondition,
                    message: format!("card {idx}: differs from card {idx} of the first run of batch {}", batch.id),
                    replayed: true,
                }),
                Some((_, true, result)) => match serde_json::from_str::<Vec<DerivedKey>>(&result) {
                    Ok(keys) => Pending::Done(ItemResult::Keys { keys, replayed: true }),
                    Err(e) => {
                        return Err(Error::Store(crate::store::StoreError::Corrupt(format!("batch item {idx}: {e}"))));
                    }
                },
                Some((_, false, message)) => {
                    Pending::Done(ItemResult::Failed { code: tonic::Code::InvalidArgument, message, replayed: true })
                }
                None => match Card::parse(input, &batch.plan.profile) {
                    Ok(card) => match &governing {
                        None => Pending::Derive(card),
                        Some(plans) => {
                            let id = card.plan_identifier(input, &batch.plan.profile);
                            match super::plans::plan_for(plans, &batch.tenant, &batch.plan.profile.name, id.as_deref())
                            {
                                Ok(plan) => {
                                    plan_of[offset] = Some(plan.clone());
                                    Pending::Derive(card)
                                }
                                // Not recorded: a retry after the plan
                                // changed is judged again.
                                Err(e) => Pending::Done(ItemResult::Failed {
                                    code: crate::grpc::status::code(&e),
                                    message: format!("card {idx}: {e}"),
                                    replayed: false,
                                }),
                            }
                        }
                    },
                    Err(e) => Pending::Done(ItemResult::Failed {
                        code: tonic::Code::InvalidArgument,
                        message: format!("card {idx}: {e}"),
                        replayed: false,
                    }),
                },
            });
        }
        let to_derive: Vec<(usize, Card)> = pending
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Pending::Derive(c) => Some((i, c.clone())),
                Pending::Done(_) => None,
            })
            .collect();
        // The chunk is split over the session pool so every session works,
        // as a multi-threaded client of the module would.
        let parts = self.hsm.pool_status().max.clamp(1, to_derive.len().max(1));
        let per_part = to_derive.len().div_ceil(parts).max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for part in to_derive.chunks(per_part) {
            let part: Vec<(usize, Card)> = part.to_vec();
            let hsm = self.hsm.clone();
            let plan = batch.plan.clone();
            tasks.spawn(async move {
                let inner = hsm.clone();
                hsm.run("derive_batch_chunk", move |s| {
                    let handles = Handles::resolve(&inner, s, &plan)?;
                    let mut out = Vec::with_capacity(part.len());
                    for (i, card) in &part {
                        match derive_card(&inner, s, &plan, &handles, card) {
                            Ok(keys) => out.push((*i, Ok(keys))),
                            // A dead session fails the whole part so it is retried.
                            Err(e) if e.session_is_dead() => return Err(e),
                            Err(e) => out.push((*i, Err(e.to_string()))),
                        }
                    }
                    Ok(out)
                })
                .await
            });
        }
        let mut derived: Vec<Option<Result<Vec<DerivedKey>, String>>> = (0..cards.len()).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            let part = joined.map_err(|e| Error::Hsm(crate::hsm::HsmError::Worker(e.to_string())))??;
            for (i, r) in part {
                if let Some(slot) = derived.get_mut(i) {
                    *slot = Some(r);
                }
            }
        }
        let results: Vec<Option<ItemResult>> = pending
            .into_iter()
            .map(|p| match p {
                Pending::Done(r) => Some(r),
                Pending::Derive(_) => None,
            })
            .collect();
        Ok(PreparedChunk { first_index, cards, card_json, derived, plan_of, results })
    }

    /// The second half of [`Core::process_chunk`]: records the chunk's items
    /// and one audit record in one transaction; only then may its results
    /// be sent.
    pub async fn commit_chunk(
        &self,
        proof: &Authorized<authz::DeriveCardKeys>,
        batch: &Batch,
        prepared: PreparedChunk,
    ) -> Result<Vec<ItemResult>> {
        let p = proof.principal();
        let PreparedChunk { first_index, cards, card_json, mut derived, plan_of, mut results } = prepared;
        let mut tx = self.store.begin().await?;
        let mut audit_items = Vec::new();
        // Each plan grants what it has left, in card order; the cards
        // beyond it are refused and not recorded (a retry tries again).
        let mut per_plan: BTreeMap<&str, (&crate::plans::PlanRecord, Vec<usize>)> = BTreeMap::new();
        for (offset, plan) in plan_of.iter().enumerate() {
            if let (Some(plan), Some(Ok(_))) = (plan, &derived[offset]) {
                per_plan.entry(plan.id.as_str()).or_insert((plan, Vec::new())).1.push(offset);
            }
        }
        let mut plan_use = Vec::new();
        for (id, (plan, offsets)) in per_plan {
            let grant = crate::plans::consume(&mut tx, id, offsets.len() as u64, crate::certs::now_secs()).await?;
            plan_use.push(json!({ "plan": id, "cards": grant.granted, "used": grant.used }));
            for &offset in &offsets[grant.granted as usize..] {
                derived[offset] = None;
                let e = super::plans::exhausted(&crate::plans::PlanRecord { used: grant.used, ..plan.clone() });
                results[offset] = Some(ItemResult::Failed {
                    code: crate::grpc::status::code(&e),
                    message: format!("card {}: {e}", first_index + offset as u64),
                    replayed: false,
                });
            }
        }
        let now = now_ms();
        let mut rows: Vec<(i64, String, i64, String)> = Vec::with_capacity(cards.len());
        for ((offset, input), (card_json, derived)) in cards.iter().enumerate().zip(card_json.into_iter().zip(derived))
        {
            let idx = first_index + offset as u64;
            let (ok, result_text) = match derived {
                Some(Ok(keys)) => {
                    audit_items.push(json!({ "index": idx, "result": card_audit(input, &keys) }));
                    let text = serde_json::to_string(&keys).unwrap_or_default();
                    results[offset] = Some(ItemResult::Keys { keys, replayed: false });
                    (true, text)
                }
                Some(Err(message)) => {
                    // HSM-side failures are not recorded: a retry tries again.
                    audit_items.push(json!({ "index": idx, "card": input, "error": message }));
                    results[offset] = Some(ItemResult::Failed {
                        code: tonic::Code::FailedPrecondition,
                        message: message.clone(),
                        replayed: false,
                    });
                    continue;
                }
                None => match &results[offset] {
                    // Bad card input is recorded: a retry answers the same.
                    Some(ItemResult::Failed { code: tonic::Code::InvalidArgument, message, replayed: false }) => {
                        audit_items.push(json!({ "index": idx, "card": input, "error": message }));
                        (false, message.clone())
                    }
                    // Plan refusals are audited, not recorded.
                    Some(ItemResult::Failed { message, replayed: false, .. }) => {
                        audit_items.push(json!({ "index": idx, "card": input, "error": message }));
                        continue;
                    }
                    _ => continue,
                },
            };
            rows.push((idx as i64, card_json, i64::from(ok), result_text));
        }
        // One statement for the chunk's rows: per-row statements cost more
        // than the derivations on a fast module.
        if !rows.is_empty() {
            let mut sql =
                String::from("INSERT INTO derivation_items (batch_id, idx, card, ok, result, created_at) VALUES ");
            for i in 0..rows.len() {
                let b = i * 6;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${}, ${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6));
            }
            let mut q = sqlx::query(&sql);
            for (idx, card_json, ok, result_text) in &rows {
                q = q
                    .bind(&batch.id)
                    .bind(*idx)
                    .bind(card_json.as_str())
                    .bind(*ok)
                    .bind(result_text.as_str())
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        if !audit_items.is_empty() {
            let mut details = batch.plan.details();
            details["batch_id"] = json!(batch.id);
            details["first_index"] = json!(first_index);
            details["cards"] = json!(audit_items.len());
            details["items"] = json!(audit_items);
            if !plan_use.is_empty() {
                details["plans"] = json!(plan_use);
            }
            audit::append(
                &mut tx,
                &derive_event(p, &batch.plan.profile.name, Outcome::Success, String::new(), details),
            )
            .await
            .map_err(Error::AuditUnavailable)?;
        }
        tx.commit().await?;
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or(ItemResult::Failed {
                    code: tonic::Code::Internal,
                    message: "no result".into(),
                    replayed: false,
                })
            })
            .collect())
    }
}
