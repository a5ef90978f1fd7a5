//! Partners' production plans (quotas) and their storage.
//!
//! A plan lets one tenant have cards of one card profile derived: cards
//! whose identifier falls in one of the plan's ranges, up to a count,
//! within a validity period. The identifier is the one the profile
//! diversifies from: the ASN (PBOC/MOHURD, MOT), else the KDD
//! (GlobalPlatform), else the PAN (EMV), else the UID (AN10922). Ranges are
//! inclusive, compared as same-length strings (upper-case hex or decimal
//! digits), and may not overlap within a plan or with another live plan of
//! the same tenant and profile, so each card belongs to one plan.
//!
//! Consumption is decided in the transaction that records the work:
//! [`consume`] first touches the plan's row (taking its lock: PostgreSQL's
//! row lock, SQLite's write lock), then reads what is left and grants what
//! fits. Concurrent calls and replicas therefore never overrun a plan.
//! Times are Unix seconds.

use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::store::{Store, StoreError, Tx};

/// Most ranges in one plan.
pub const MAX_RANGES: usize = 64;
/// Largest count of one plan.
pub const MAX_COUNT: u64 = 1_000_000_000;
/// Longest validity of one plan (10 years).
pub const MAX_VALIDITY_SECS: i64 = 10 * 366 * 86_400;
/// Longest note.
pub const MAX_NOTE: usize = 512;

/// An inclusive range of card identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRange {
    /// First identifier.
    pub first: String,
    /// Last identifier.
    pub last: String,
}

impl CardRange {
    /// Whether `id` (same form) is in the range.
    pub fn contains(&self, id: &str) -> bool {
        id.len() == self.first.len() && self.first.as_str() <= id && id <= self.last.as_str()
    }

    /// Whether two ranges share an identifier.
    pub fn overlaps(&self, other: &CardRange) -> bool {
        self.first.len() == other.first.len() && self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for CardRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.first, self.last)
    }
}

/// Checks and normalises ranges: each end 4-38 hex digits or decimal digits
/// (upper-cased), both ends the same length, first <= last, no two ranges
/// overlapping.
pub fn check_ranges(ranges: &[(String, String)]) -> Result<Vec<CardRange>, String> {
    if ranges.is_empty() {
        return Err("at least one range is needed".into());
    }
    if ranges.len() > MAX_RANGES {
        return Err(format!("at most {MAX_RANGES} ranges"));
    }
    let mut out: Vec<CardRange> = Vec::with_capacity(ranges.len());
    for (i, (first, last)) in ranges.iter().enumerate() {
        let norm = |s: &str| -> Result<String, String> {
            let s = s.trim().to_ascii_uppercase();
            if !(4..=38).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("range {}: {s:?} is not 4-38 hex or decimal digits", i + 1));
            }
            Ok(s)
        };
        let r = CardRange { first: norm(first)?, last: norm(last)? };
        if r.first.len() != r.last.len() {
            return Err(format!("range {}: {r}: both ends must have the same length", i + 1));
        }
        if r.first > r.last {
            return Err(format!("range {}: {r} is empty (first is after last)", i + 1));
        }
        if let Some(j) = out.iter().position(|o| o.overlaps(&r)) {
            return Err(format!("range {} ({r}) overlaps range {} ({})", i + 1, j + 1, out[j]));
        }
        out.push(r);
    }
    Ok(out)
}

/// A stored plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRecord {
    /// Identifier.
    pub id: String,
    /// The partner.
    pub tenant: String,
    /// Card profile.
    pub profile: String,
    /// Ranges.
    pub ranges: Vec<CardRange>,
    /// Cards allowed.
    pub quota: u64,
    /// Cards derived under it.
    pub used: u64,
    /// Validity start (inclusive).
    pub valid_from: i64,
    /// Validity end (exclusive).
    pub valid_until: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// Why.
    pub revocation_reason: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: i64,
    /// Free text.
    pub note: String,
}

impl PlanRecord {
    /// `active`, `not_yet_valid`, `expired`, `exhausted` or `revoked`, at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if now < self.valid_from {
            "not_yet_valid"
        } else if now >= self.valid_until {
            "expired"
        } else if self.used >= self.quota {
            "exhausted"
        } else {
            "active"
        }
    }

    /// Whether it is live at `now` (neither revoked nor out of its period;
    /// an exhausted plan is live: it still owns its ranges).
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.valid_until
    }

    /// Whether `id` falls in one of its ranges.
    pub fn covers(&self, id: &str) -> bool {
        self.ranges.iter().any(|r| r.contains(id))
    }
}

const COLUMNS: &str = "id, tenant, profile, ranges, quota, used, valid_from, valid_until, revoked_at, \
                       revocation_reason, created_by, created_at, note";

fn from_row(r: &sqlx::any::AnyRow) -> Result<PlanRecord, StoreError> {
    let ranges: String = r.try_get("ranges")?;
    let ranges: Vec<CardRange> =
        serde_json::from_str(&ranges).map_err(|e| StoreError::Corrupt(format!("plan ranges: {e}")))?;
    Ok(PlanRecord {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        profile: r.try_get("profile")?,
        ranges,
        quota: r.try_get::<i64, _>("quota")?.max(0) as u64,
        used: r.try_get::<i64, _>("used")?.max(0) as u64,
        valid_from: r.try_get("valid_from")?,
        valid_until: r.try_get("valid_until")?,
        revoked_at: r.try_get("revoked_at")?,
        revocation_reason: r.try_get("revocation_reason")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        note: r.try_get("note")?,
    })
}

/// Inserts a plan (its id chosen by the caller).
pub async fn insert(tx: &mut Tx, p: &PlanRecord) -> Result<(), StoreError> {
    let ranges = serde_json::to_string(&p.ranges).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(&format!(
        "INSERT INTO production_plans ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, '', $9, $10, $11)"
    ))
    .bind(&p.id)
    .bind(&p.tenant)
    .bind(&p.profile)
    .bind(ranges)
    .bind(p.quota as i64)
    .bind(p.used as i64)
    .bind(p.valid_from)
    .bind(p.valid_until)
    .bind(&p.created_by)
    .bind(p.created_at)
    .bind(&p.note)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One plan.
pub async fn get(store: &Store, id: &str) -> Result<Option<PlanRecord>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM production_plans WHERE id = $1"))
        .bind(id)
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The live plans of `tenant` for `profile` at `now`, oldest first.
pub async fn live(store: &Store, tenant: &str, profile: &str, now: i64) -> Result<Vec<PlanRecord>, StoreError> {
    live_in(store.pool(), tenant, profile, now).await
}

/// As [`live`], inside a transaction (for checks before an insert).
pub async fn live_tx(tx: &mut Tx, tenant: &str, profile: &str, now: i64) -> Result<Vec<PlanRecord>, StoreError> {
    live_in(&mut **tx, tenant, profile, now).await
}

async fn live_in<'e, E>(exec: E, tenant: &str, profile: &str, now: i64) -> Result<Vec<PlanRecord>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM production_plans WHERE tenant = $1 AND profile = $2 AND revoked_at IS NULL \
         AND valid_until > $3 ORDER BY created_at, id"
    ))
    .bind(tenant)
    .bind(profile)
    .bind(now)
    .fetch_all(exec)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Filters of [`list`]; empty strings match all.
#[derive(Debug, Clone, Default)]
pub struct PlanFilter {
    /// Tenant.
    pub tenant: String,
    /// Profile.
    pub profile: String,
    /// Only ids after this one (paging).
    pub after: String,
    /// Page size.
    pub limit: u32,
}

/// Plans by filter, by id.
pub async fn list(store: &Store, f: &PlanFilter) -> Result<Vec<PlanRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM production_plans WHERE ($1 = '' OR tenant = $1) AND ($2 = '' OR profile = $2) \
         AND id > $3 ORDER BY id LIMIT $4"
    ))
    .bind(&f.tenant)
    .bind(&f.profile)
    .bind(&f.after)
    .bind(i64::from(f.limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

/// Revokes a live plan; returns whether it was live.
pub async fn revoke(tx: &mut Tx, id: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE production_plans SET revoked_at = $1, revocation_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What [`consume`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Cards granted (0..=asked).
    pub granted: u64,
    /// The plan's count.
    pub quota: u64,
    /// Used after the grant.
    pub used: u64,
}

/// Takes up to `n` cards from plan `id` in `tx`, if it is active at `now`.
/// The first statement writes the row (a no-op update), which takes its
/// lock until the transaction ends, so what is read next cannot change
/// under this transaction.
pub async fn consume(tx: &mut Tx, id: &str, n: u64, now: i64) -> Result<Grant, StoreError> {
    sqlx::query("UPDATE production_plans SET used = used WHERE id = $1").bind(id).execute(&mut **tx).await?;
    let row = sqlx::query(
        "SELECT quota, used FROM production_plans WHERE id = $1 AND revoked_at IS NULL AND valid_from <= $2 \
         AND valid_until > $2",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(Grant { granted: 0, quota: 0, used: 0 });
    };
    let quota = row.try_get::<i64, _>("quota")?.max(0) as u64;
    let used = row.try_get::<i64, _>("used")?.max(0) as u64;
    let granted = n.min(quota.saturating_sub(used));
    if granted > 0 {
        sqlx::query("UPDATE production_plans SET used = used + $1 WHERE id = $2")
            .bind(granted as i64)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(Grant { granted, quota, used: used + granted })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: &str, b: &str) -> (String, String) {
        (a.into(), b.into())
    }

    #[test]
    fn ranges_are_checked_and_normalised() {
        let ok = check_ranges(&[r("3301000000000000", "33010000000fffff"), r("3302000000000000", "3302000000000010")]);
        assert_eq!(ok.as_ref().map(|v| v[0].last.clone()), Ok("33010000000FFFFF".to_owned()));
        let cases = [
            (vec![], "at least one range"),
            (vec![r("0010", "0001")], "is empty"),
            (vec![r("0001", "00010")], "same length"),
            (vec![r("00G1", "0010")], "not 4-38 hex"),
            (vec![r("0001", "0100"), r("0050", "0200")], "overlaps range 1"),
        ];
        for (ranges, want) in cases {
            let e = check_ranges(&ranges).err().unwrap_or_default();
            assert!(e.contains(want), "{ranges:?}: {e}");
        }
    }

    #[test]
    fn containment_needs_the_same_length() {
        let range = CardRange { first: "3301000000000000".into(), last: "33010000000FFFFF".into() };
        assert!(range.contains("3301000000000000"));
        assert!(range.contains("33010000000FFFFF"));
        assert!(!range.contains("3301000000100000"));
        assert!(!range.contains("33010000000000"));
    }
}
