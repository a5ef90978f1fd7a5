//! The tamper-evident audit log.
//!
//! Each record carries the SHA-256 hash of its predecessor, and its own hash
//! covers every field (length-prefixed, so no two different records encode
//! alike). Records are appended inside the transaction of the work they
//! describe: if the record cannot be written, the work is rolled back and
//! the call fails (invariant 3).
//!
//! [`verify_chain`] walks the log and reports the first record that was
//! edited, removed or reordered. Because the hashes carry no key, someone
//! who can write to the database can also rewrite the log consistently
//! from some record on, or cut off its tail: [`checkpoint`] adds the head
//! signed by a key in the HSM, and [`verify::verify`] checks the chain
//! against those signatures. [`query`] reads the log for auditors.

pub mod checkpoint;
pub mod query;
pub mod verify;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::store::{Store, StoreError, Tx};

/// The hash before the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How an audited attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The operation was performed.
    Success,
    /// Policy denied it.
    Denied,
    /// The caller could not be identified.
    Unauthenticated,
    /// It was allowed but failed.
    Failed,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Failed => "failed",
        }
    }

    /// Every outcome, in the order of [`Outcome::as_str`]'s match.
    pub const ALL: [Outcome; 4] = [Outcome::Success, Outcome::Denied, Outcome::Unauthenticated, Outcome::Failed];

    /// The outcome with stored name `s`.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Principal name (certificate CN), or `-` when unknown.
    pub principal: String,
    /// Principal's role, or `-`.
    pub role: String,
    /// Principal's tenant, or `-`.
    pub tenant: String,
    /// The action, e.g. `admin.GetStatus`.
    pub action: String,
    /// The resource, e.g. `Kms::Service::"AdminService"`.
    pub resource: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why (for denials and failures); empty on success.
    pub reason: String,
    /// Structured detail: KCVs, ids, counts. Never a key value.
    pub details: serde_json::Value,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// See [`AuditEvent`].
    pub principal: String,
    /// See [`AuditEvent`].
    pub role: String,
    /// See [`AuditEvent`].
    pub tenant: String,
    /// See [`AuditEvent`].
    pub action: String,
    /// See [`AuditEvent`].
    pub resource: String,
    /// See [`AuditEvent`].
    pub outcome: String,
    /// See [`AuditEvent`].
    pub reason: String,
    /// JSON text.
    pub details: String,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// Hash of this record.
    pub hash: String,
}

impl AuditRecord {
    /// Recomputes this record's hash from its fields.
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"kms-audit-v1");
        h.update(self.seq.to_be_bytes());
        h.update(self.ts_ms.to_be_bytes());
        for field in [
            &self.principal,
            &self.role,
            &self.tenant,
            &self.action,
            &self.resource,
            &self.outcome,
            &self.reason,
            &self.details,
            &self.prev_hash,
        ] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Appends `event` inside `tx`. The head row is updated first, which
/// serialises concurrent appenders on both backends.
pub async fn append(tx: &mut Tx, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, head_hash")
        .fetch_one(&mut **tx)
        .await?;
    let seq: i64 = head.try_get("seq")?;
    let prev_hash: String = head.try_get("head_hash")?;
    let mut record = AuditRecord {
        seq,
        ts_ms: now_ms(),
        principal: event.principal.clone(),
        role: event.role.clone(),
        tenant: event.tenant.clone(),
        action: event.action.clone(),
        resource: event.resource.clone(),
        outcome: event.outcome.as_str().to_owned(),
        reason: event.reason.clone(),
        details: event.details.to_string(),
        prev_hash,
        hash: String::new(),
    };
    record.hash = record.compute_hash();
    sqlx::query(
        "INSERT INTO audit_log (seq, ts_ms, principal, role, tenant, action, resource, outcome, reason, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(record.seq)
    .bind(record.ts_ms)
    .bind(&record.principal)
    .bind(&record.role)
    .bind(&record.tenant)
    .bind(&record.action)
    .bind(&record.resource)
    .bind(&record.outcome)
    .bind(&record.reason)
    .bind(&record.details)
    .bind(&record.prev_hash)
    .bind(&record.hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_head SET head_hash = $1 WHERE id = 1").bind(&record.hash).execute(&mut **tx).await?;
    Ok(record)
}

/// Appends `event` in a transaction of its own.
pub async fn record(store: &Store, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
    let mut tx = store.begin().await?;
    let r = append(&mut tx, event).await?;
    tx.commit().await?;
    Ok(r)
}

/// The chain head as the head row holds it: the newest record's sequence
/// number and hash (0 and [`GENESIS_HASH`] before the first record).
pub async fn head(store: &Store) -> Result<(i64, String), StoreError> {
    let row = sqlx::query("SELECT seq, head_hash FROM audit_head WHERE id = 1").fetch_one(store.pool()).await?;
    Ok((row.try_get("seq")?, row.try_get("head_hash")?))
}

/// Number of records.
pub async fn count(store: &Store) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM audit_log").fetch_one(store.pool()).await?;
    Ok(row.try_get::<i64, _>("n")?)
}

/// The columns of a record, in the order [`row_to_record`] reads them.
const RECORD_COLUMNS: &str =
    "seq, ts_ms, principal, role, tenant, action, resource, outcome, reason, details, prev_hash, hash";

fn row_to_record(row: &sqlx::any::AnyRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        ts_ms: row.try_get("ts_ms")?,
        principal: row.try_get("principal")?,
        role: row.try_get("role")?,
        tenant: row.try_get("tenant")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        outcome: row.try_get("outcome")?,
        reason: row.try_get("reason")?,
        details: row.try_get("details")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Reads records with `seq` in `from..=to`, in order.
pub async fn read_range(store: &Store, from: i64, to: i64) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, ts_ms, principal, role, tenant, action, resource, outcome, reason, details, prev_hash, hash \
         FROM audit_log WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
    )
    .bind(from)
    .bind(to)
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(row_to_record).collect()
}

/// What is wrong with the chain, at the first place it is wrong: the
/// chain's part of [`verify::AuditFault`] (edited, broken link, missing,
/// head mismatch), one type for both walks.
pub use verify::AuditFault as ChainFault;

/// The result of a walk over the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Records checked.
    pub records: i64,
    /// Hash of the last record checked.
    pub head_hash: String,
    /// The first fault, if any.
    pub fault: Option<ChainFault>,
}

/// Walks the whole chain in pages and reports the first fault.
pub async fn verify_chain(store: &Store) -> Result<ChainReport, StoreError> {
    const PAGE: i64 = 1000;
    let mut expected_seq = 1i64;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut checked = 0i64;
    loop {
        let records = verify::records_from(store, expected_seq, PAGE).await?;
        if records.is_empty() {
            break;
        }
        for r in records {
            let fault = verify::check_link(&r, expected_seq, &prev_hash);
            if fault.is_some() {
                return Ok(ChainReport { records: checked, head_hash: prev_hash, fault });
            }
            checked += 1;
            expected_seq += 1;
            prev_hash = r.hash;
        }
    }
    let head = sqlx::query("SELECT seq, head_hash FROM audit_head WHERE id = 1").fetch_one(store.pool()).await?;
    let head_seq: i64 = head.try_get("seq")?;
    let head_hash: String = head.try_get("head_hash")?;
    let fault = (head_seq != checked || head_hash != prev_hash)
        .then_some(ChainFault::HeadMismatch { head_seq, last_seq: checked });
    Ok(ChainReport { records: checked, head_hash: prev_hash, fault })
}
