//! Verifying the log against its signed checkpoints.
//!
//! [`verify`] walks the chain once, in pages, and checks each checkpoint
//! when the walk reaches its seq, so the first fault reported is the one
//! at the lowest position, and memory stays flat however long the log is:
//!
//! - a record that does not match its hash (edited, or moved: the seq is
//!   hashed), a seq that is missing (removed), a record that does not point
//!   at its predecessor (edited together with its hash, or reordered);
//! - a checkpoint that is not signed by the trusted key, or whose signature
//!   does not verify (forged or edited);
//! - a checkpoint whose hash is not the hash of the record at its seq: the
//!   chain up to there was rewritten with recomputed hashes;
//! - a checkpoint beyond the last record: the tail was cut off (even if
//!   `audit_head` was rewound to match);
//! - the head row not matching the last record.
//!
//! The same checks apply to a checkpoint an auditor kept outside the
//! service ("external"), which catches a cut tail even after the
//! checkpoints in the database were deleted too.

use serde::Serialize;

use super::checkpoint::{self, Checkpoint, Rejection, TrustedKey};
use super::{AuditRecord, GENESIS_HASH, RECORD_COLUMNS, row_to_record};
use crate::store::{Store, StoreError};

/// Records and checkpoints read per database round trip.
const PAGE: i64 = 1000;

/// The first thing wrong with the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditFault {
    /// A record's fields do not match its hash: edited, or moved to another
    /// seq.
    Edited {
        /// The record.
        seq: i64,
    },
    /// A record does not point at its predecessor's hash: the predecessor
    /// was edited along with its hash, or records were reordered.
    BrokenLink {
        /// The record whose `prev_hash` does not match.
        seq: i64,
    },
    /// A sequence number is missing: records were removed.
    Missing {
        /// The first missing seq.
        expected: i64,
        /// The next seq present.
        found: i64,
    },
    /// The head row does not match the last record: the tail was removed,
    /// or the head row was edited.
    HeadMismatch {
        /// Seq in the head row.
        head_seq: i64,
        /// Seq of the last record.
        last_seq: i64,
    },
    /// A signed checkpoint lies beyond the last record: the tail was cut
    /// off.
    Truncated {
        /// Seq of the last record left.
        last_seq: i64,
        /// Seq the checkpoint signed.
        checkpoint_seq: i64,
        /// The checkpoint came from the auditor, not the database.
        external: bool,
    },
    /// A signed checkpoint's hash is not the hash of the record at its seq:
    /// the chain was rewritten (hashes recomputed) after the previous good
    /// checkpoint.
    CheckpointMismatch {
        /// The checkpoint's seq.
        seq: i64,
        /// Seq of the newest checkpoint before it that matched (0: none).
        since: i64,
        /// The checkpoint came from the auditor.
        external: bool,
    },
    /// A checkpoint's signature does not verify: forged or edited.
    CheckpointSignature {
        /// The checkpoint's seq.
        seq: i64,
        /// The checkpoint came from the auditor.
        external: bool,
    },
    /// A checkpoint names another key than the trusted one (or there is no
    /// trusted key to check it with).
    CheckpointKey {
        /// The checkpoint's seq.
        seq: i64,
        /// The key it names.
        fingerprint: String,
        /// The checkpoint came from the auditor.
        external: bool,
    },
}

impl AuditFault {
    /// The position of the fault: the first seq that is not as it was
    /// written.
    pub fn position(&self) -> i64 {
        match self {
            AuditFault::Edited { seq }
            | AuditFault::BrokenLink { seq }
            | AuditFault::CheckpointMismatch { seq, .. }
            | AuditFault::CheckpointSignature { seq, .. }
            | AuditFault::CheckpointKey { seq, .. } => *seq,
            AuditFault::Missing { expected, .. } => *expected,
            AuditFault::HeadMismatch { last_seq, .. } | AuditFault::Truncated { last_seq, .. } => last_seq + 1,
        }
    }

    /// A stable snake_case name.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditFault::Edited { .. } => "edited",
            AuditFault::BrokenLink { .. } => "broken_link",
            AuditFault::Missing { .. } => "missing",
            AuditFault::HeadMismatch { .. } => "head_mismatch",
            AuditFault::Truncated { .. } => "truncated",
            AuditFault::CheckpointMismatch { .. } => "checkpoint_mismatch",
            AuditFault::CheckpointSignature { .. } => "checkpoint_signature",
            AuditFault::CheckpointKey { .. } => "checkpoint_key",
        }
    }
}

fn which(external: bool) -> &'static str {
    if external { "the auditor's checkpoint" } else { "the checkpoint" }
}

impl std::fmt::Display for AuditFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditFault::Edited { seq } => {
                write!(f, "record {seq} does not match its hash: it was edited, or moved from another position")
            }
            AuditFault::BrokenLink { seq } => write!(
                f,
                "record {seq} does not point at the hash of record {}: that record was edited and its hash \
                 recomputed, or records were reordered",
                seq - 1
            ),
            AuditFault::Missing { expected, found } => {
                write!(f, "record {expected} is missing (the next record is {found}): records were removed")
            }
            AuditFault::HeadMismatch { head_seq, last_seq } => write!(
                f,
                "the head row names record {head_seq} but the log ends at record {last_seq}: the tail was \
                 removed, or the head row was edited"
            ),
            AuditFault::Truncated { last_seq, checkpoint_seq, external } => write!(
                f,
                "the log ends at record {last_seq} but {} signed record {checkpoint_seq}: records from {} on \
                 were cut off",
                which(*external),
                last_seq + 1
            ),
            AuditFault::CheckpointMismatch { seq, since, external } => write!(
                f,
                "{} at record {seq} signed another hash than record {seq} has now: records after {since} up to \
                 {seq} were rewritten with recomputed hashes",
                which(*external)
            ),
            AuditFault::CheckpointSignature { seq, external } => {
                write!(
                    f,
                    "the signature of {} at record {seq} does not verify: it was forged or edited",
                    which(*external)
                )
            }
            AuditFault::CheckpointKey { seq, fingerprint, external } => write!(
                f,
                "{} at record {seq} is signed by key {fingerprint}, not by the service's checkpoint key",
                which(*external)
            ),
        }
    }
}

/// The verdict on the whole log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Records checked before the first fault (all of them when none).
    pub records: i64,
    /// Hash of the last record checked.
    pub head_hash: String,
    /// Checkpoints in the database.
    pub checkpoints: i64,
    /// The newest of them.
    pub newest_checkpoint: Option<Checkpoint>,
    /// Fingerprint of the key checkpoints were checked with.
    pub key_fingerprint: Option<String>,
    /// Whether the auditor's checkpoint was checked and holds (`None`: none
    /// was given).
    pub external_ok: Option<bool>,
    /// The first fault, if any.
    pub fault: Option<AuditFault>,
}

/// Checks one checkpoint under `key`; `record` is the record at its seq
/// (already checked against the chain), `since` the newest good
/// checkpoint before it.
fn check_checkpoint(
    key: Option<&TrustedKey>,
    c: &Checkpoint,
    record: Option<&AuditRecord>,
    since: i64,
    external: bool,
) -> Option<AuditFault> {
    let Some(key) = key else {
        return Some(AuditFault::CheckpointKey { seq: c.seq, fingerprint: c.key_fingerprint.clone(), external });
    };
    match key.check(c) {
        Err(Rejection::OtherKey) => {
            return Some(AuditFault::CheckpointKey { seq: c.seq, fingerprint: c.key_fingerprint.clone(), external });
        }
        Err(Rejection::BadSignature) => return Some(AuditFault::CheckpointSignature { seq: c.seq, external }),
        Ok(()) => {}
    }
    match record {
        Some(r) if r.seq == c.seq && r.hash == c.head_hash => None,
        Some(_) => Some(AuditFault::CheckpointMismatch { seq: c.seq, since, external }),
        // A signed checkpoint with no record at its seq inside the log (a
        // seq below 1 cannot be signed by the service).
        None => Some(AuditFault::CheckpointSignature { seq: c.seq, external }),
    }
}

/// The link checks of one record.
pub(crate) fn check_link(r: &AuditRecord, expected_seq: i64, prev_hash: &str) -> Option<AuditFault> {
    if r.seq != expected_seq {
        Some(AuditFault::Missing { expected: expected_seq, found: r.seq })
    } else if r.compute_hash() != r.hash {
        Some(AuditFault::Edited { seq: r.seq })
    } else if r.prev_hash != prev_hash {
        Some(AuditFault::BrokenLink { seq: r.seq })
    } else {
        None
    }
}

pub(crate) async fn records_from(store: &Store, seq: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = sqlx::query(&format!("SELECT {RECORD_COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2"))
        .bind(seq)
        .bind(limit)
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(row_to_record).collect()
}

/// Walks the whole log and checks every checkpoint in the database, and
/// `external` if given, under `key` (`None`: the token has no checkpoint
/// key, so any checkpoint is a fault). Reports the fault at the lowest
/// position.
pub async fn verify(
    store: &Store,
    key: Option<&TrustedKey>,
    external: Option<&Checkpoint>,
) -> Result<Verdict, StoreError> {
    let mut verdict = Verdict {
        records: 0,
        head_hash: GENESIS_HASH.to_owned(),
        checkpoints: checkpoint::count(store).await?,
        newest_checkpoint: checkpoint::newest(store).await?,
        key_fingerprint: key.map(|k| k.fingerprint().to_owned()),
        external_ok: external.map(|_| false),
        fault: None,
    };
    let mut expected = 1i64;
    let mut prev_hash = GENESIS_HASH.to_owned();
    // Checkpoints are fetched page by page alongside the records: those
    // with seq in (fetched_upto, last seq of the record page].
    let mut fetched_upto = i64::MIN;
    let mut good_since = 0i64;
    let mut external_pending = external;
    'walk: loop {
        let records = records_from(store, expected, PAGE).await?;
        let Some(last) = records.last().map(|r| r.seq) else { break };
        let mut checkpoints = Vec::new();
        loop {
            let after = checkpoints.last().map_or(fetched_upto, |c: &Checkpoint| c.seq);
            let page = checkpoint::page(store, after, Some(last), PAGE).await?;
            let done = (page.len() as i64) < PAGE;
            checkpoints.extend(page);
            if done {
                break;
            }
        }
        fetched_upto = last;
        let mut checkpoints = checkpoints.into_iter().peekable();
        for r in &records {
            if let Some(f) = check_link(r, expected, &prev_hash) {
                verdict.fault = Some(f);
                break 'walk;
            }
            while let Some(c) = checkpoints.next_if(|c| c.seq <= r.seq) {
                let record = (c.seq == r.seq).then_some(r);
                if let Some(f) = check_checkpoint(key, &c, record, good_since, false) {
                    verdict.fault = Some(f);
                    break 'walk;
                }
                good_since = c.seq;
            }
            if let Some(c) = external_pending.filter(|c| c.seq == r.seq) {
                if let Some(f) = check_checkpoint(key, c, Some(r), good_since, true) {
                    verdict.fault = Some(f);
                    break 'walk;
                }
                verdict.external_ok = Some(true);
                external_pending = None;
            }
            verdict.records += 1;
            expected += 1;
            prev_hash = r.hash.clone();
        }
    }
    verdict.head_hash = prev_hash.clone();
    if verdict.fault.is_some() {
        return Ok(verdict);
    }
    // Checkpoints beyond the last record: a valid one proves the tail was
    // cut off; an invalid one is a forgery, reported only when no valid one
    // follows (the cut is at a lower position than any of them).
    let last_seq = verdict.records;
    let mut forged = None;
    let mut candidates: Vec<(Checkpoint, bool)> = external_pending.map(|c| (c.clone(), true)).into_iter().collect();
    let mut after = fetched_upto;
    loop {
        let page = checkpoint::page(store, after, None, PAGE).await?;
        let done = (page.len() as i64) < PAGE;
        after = page.last().map_or(after, |c| c.seq);
        candidates.extend(page.into_iter().map(|c| (c, false)));
        for (c, external) in candidates.drain(..) {
            let rejection = match key {
                Some(k) => k.check(&c).err(),
                None => Some(Rejection::OtherKey),
            };
            match rejection {
                None => {
                    verdict.fault = Some(AuditFault::Truncated { last_seq, checkpoint_seq: c.seq, external });
                    return Ok(verdict);
                }
                Some(Rejection::OtherKey) => {
                    forged.get_or_insert(AuditFault::CheckpointKey {
                        seq: c.seq,
                        fingerprint: c.key_fingerprint,
                        external,
                    });
                }
                Some(Rejection::BadSignature) => {
                    forged.get_or_insert(AuditFault::CheckpointSignature { seq: c.seq, external });
                }
            }
        }
        if done {
            break;
        }
    }
    if let Some(f) = forged {
        verdict.fault = Some(f);
        return Ok(verdict);
    }
    let (head_seq, head_hash) = super::head(store).await?;
    if head_seq != last_seq || head_hash != prev_hash {
        verdict.fault = Some(AuditFault::HeadMismatch { head_seq, last_seq });
    }
    Ok(verdict)
}

/// The end of a walk over part of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Every record from the start to the end links; the hash of the last.
    Intact(String),
    /// The first fault.
    Broken(AuditFault),
}

/// Checks records `from_seq..=to_seq` against the chain, starting from
/// `prev_hash` (the hash of record `from_seq - 1`). Used before a new
/// checkpoint is signed, so the service never signs a head that does not
/// descend from the previous checkpoint.
pub async fn segment(store: &Store, from_seq: i64, prev_hash: &str, to_seq: i64) -> Result<Segment, StoreError> {
    let mut expected = from_seq;
    let mut prev = prev_hash.to_owned();
    while expected <= to_seq {
        let records = records_from(store, expected, PAGE.min(to_seq - expected + 1)).await?;
        if records.is_empty() {
            return Ok(Segment::Broken(AuditFault::HeadMismatch { head_seq: to_seq, last_seq: expected - 1 }));
        }
        for r in &records {
            if let Some(f) = check_link(r, expected, &prev) {
                return Ok(Segment::Broken(f));
            }
            expected += 1;
            prev = r.hash.clone();
        }
    }
    Ok(Segment::Intact(prev))
}
