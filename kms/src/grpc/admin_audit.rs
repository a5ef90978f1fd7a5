//! `AdminService`: the audit log for auditors (query, verify, export), and
//! the conversions between its protobuf messages and the domain types
//! (also used by `kms audit`).

use kms_proto::v1 as pb;
use prost::Message;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Shared, status};
use crate::audit::AuditRecord;
use crate::audit::checkpoint::{Checkpoint, FILE_FORMAT};
use crate::audit::query::{AuditFilter, AuditPage, AuditRange, DEFAULT_PAGE, MAX_PAGE, PageToken};
use crate::audit::verify::Verdict;
use crate::authz::{self, Resource};
use crate::error::{Error, Result};

const RESOURCE: Resource = Resource::Service("AdminService");

/// Bytes of a `QueryAudit` response kept free for the page token, the
/// checkpoint and framing.
const RESPONSE_RESERVE: usize = 8 * 1024;

/// The stream `ExportAudit` returns.
pub type ExportStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::AuditRecord, Status>> + Send>>;

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument { field: field.to_owned(), reason: reason.into() }
}

/// A stored record as sent.
pub fn record_to_pb(r: &AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: u64::try_from(r.seq).unwrap_or(0),
        time_ms: r.ts_ms,
        principal: r.principal.clone(),
        role: r.role.clone(),
        tenant: r.tenant.clone(),
        action: r.action.clone(),
        resource: r.resource.clone(),
        outcome: r.outcome.clone(),
        reason: r.reason.clone(),
        details_json: r.details.clone(),
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
    }
}

/// A received record as stored (for `kms audit`, whose JSON lines are the
/// stored records' fields).
pub fn record_from_pb(r: pb::AuditRecord) -> AuditRecord {
    AuditRecord {
        seq: i64::try_from(r.seq).unwrap_or(i64::MAX),
        ts_ms: r.time_ms,
        principal: r.principal,
        role: r.role,
        tenant: r.tenant,
        action: r.action,
        resource: r.resource,
        outcome: r.outcome,
        reason: r.reason,
        details: r.details_json,
        prev_hash: r.prev_hash,
        hash: r.hash,
    }
}

/// A checkpoint as sent.
pub fn checkpoint_to_pb(c: &Checkpoint) -> pb::AuditCheckpoint {
    pb::AuditCheckpoint {
        seq: u64::try_from(c.seq).unwrap_or(0),
        head_hash: c.head_hash.clone(),
        time_ms: c.time_ms,
        algorithm: c.algorithm.clone(),
        key_label: c.key_label.clone(),
        key_fingerprint: c.key_fingerprint.clone(),
        public_key: hex::decode(&c.public_key).unwrap_or_default(),
        signature: hex::decode(&c.signature).unwrap_or_default(),
    }
}

/// A received checkpoint, its shape checked; `field` names it in errors.
pub fn checkpoint_from_pb(field: &str, c: pb::AuditCheckpoint) -> Result<Checkpoint> {
    let seq =
        i64::try_from(c.seq).map_err(|_| invalid(&format!("{field}.seq"), "beyond the largest sequence number"))?;
    let checkpoint = Checkpoint {
        format: FILE_FORMAT.to_owned(),
        seq,
        head_hash: c.head_hash,
        time_ms: c.time_ms,
        algorithm: c.algorithm,
        key_label: c.key_label,
        key_fingerprint: c.key_fingerprint,
        public_key: hex::encode(c.public_key),
        signature: hex::encode(c.signature),
    };
    checkpoint.check_shape().map_err(|m| invalid(&format!("{field}.{}", m.field), m.reason))?;
    Ok(checkpoint)
}

/// A page as sent: records are cut short (and the token moved back) so
/// the response stays within `max_bytes`.
fn page_to_pb(page: AuditPage, newest: Option<Checkpoint>, max_bytes: usize) -> Result<pb::QueryAuditResponse> {
    let budget = max_bytes.saturating_sub(RESPONSE_RESERVE);
    let mut used = 0usize;
    let mut records = Vec::with_capacity(page.records.len());
    let mut next = page.next;
    let mut last_kept = None;
    for r in &page.records {
        let m = record_to_pb(r);
        let size = m.encoded_len() + 8;
        if used + size > budget {
            let Some(last) = last_kept else {
                return Err(Error::FailedPrecondition(format!(
                    "audit record {} is larger than one response may carry (server.max_message_bytes = {max_bytes})",
                    r.seq
                )));
            };
            next = Some(PageToken::after_seq(last));
            break;
        }
        used += size;
        last_kept = Some(r.seq);
        records.push(m);
    }
    Ok(pb::QueryAuditResponse {
        records,
        next_page_token: next.map(PageToken::encode).unwrap_or_default(),
        newest_checkpoint: newest.as_ref().map(checkpoint_to_pb),
    })
}

fn verdict_to_pb(v: Verdict) -> pb::VerifyAuditResponse {
    pb::VerifyAuditResponse {
        ok: v.fault.is_none(),
        records: u64::try_from(v.records).unwrap_or(0),
        head_hash: v.head_hash,
        fault_seq: v.fault.as_ref().map_or(0, |f| u64::try_from(f.position()).unwrap_or(0)),
        fault: v.fault.as_ref().map(ToString::to_string).unwrap_or_default(),
        checkpoints: u64::try_from(v.checkpoints).unwrap_or(0),
        last_checkpoint_seq: v.newest_checkpoint.as_ref().map_or(0, |c| u64::try_from(c.seq).unwrap_or(0)),
        fault_kind: v.fault.as_ref().map(|f| f.kind().to_owned()).unwrap_or_default(),
        checkpoint_key_fingerprint: v.key_fingerprint.unwrap_or_default(),
        newest_checkpoint: v.newest_checkpoint.as_ref().map(checkpoint_to_pb),
        external_checkpoint_ok: v.external_ok == Some(true),
    }
}

/// `QueryAudit`.
pub async fn query(
    shared: &Shared,
    request: Request<pb::QueryAuditRequest>,
) -> Result<Response<pb::QueryAuditResponse>, Status> {
    let max_bytes = shared.max_message_bytes;
    shared
        .handle("AdminService/QueryAudit", request, |core, principal, req| async move {
            let filter = AuditFilter {
                range: AuditRange::from_wire(req.from_seq, req.to_seq, req.from_time_ms, req.to_time_ms)?,
                principal: AuditFilter::text("principal", req.principal)?,
                tenant: AuditFilter::text("tenant", req.tenant)?,
                action: AuditFilter::text("action", req.action)?,
                outcome: AuditFilter::outcome("outcome", &req.outcome)?,
            };
            let limit = match req.page_size {
                0 => DEFAULT_PAGE,
                n @ 1..=MAX_PAGE => n,
                _ => return Err(invalid("page_size", format!("must be 0-{MAX_PAGE}"))),
            };
            let after = PageToken::parse("page_token", &req.page_token)?;
            let proof = core.authorize::<authz::ReadAudit>(&principal, &RESOURCE).await?;
            let (page, newest) = core.query_audit(&proof, &filter, after, limit).await?;
            page_to_pb(page, newest, max_bytes)
        })
        .await
}

/// `VerifyAudit`.
pub async fn verify(
    shared: &Shared,
    request: Request<pb::VerifyAuditRequest>,
) -> Result<Response<pb::VerifyAuditResponse>, Status> {
    shared
        .handle("AdminService/VerifyAudit", request, |core, principal, req| async move {
            let external = req.checkpoint.map(|c| checkpoint_from_pb("checkpoint", c)).transpose()?;
            let proof = core.authorize::<authz::ReadAudit>(&principal, &RESOURCE).await?;
            Ok(verdict_to_pb(core.verify_audit(&proof, external).await?))
        })
        .await
}

/// `ExportAudit`.
pub async fn export(
    shared: &Shared,
    request: Request<pb::ExportAuditRequest>,
) -> Result<Response<ExportStream>, Status> {
    const RPC: &str = "AdminService/ExportAudit";
    let detail = shared.client_error_detail;
    shared
        .handle(RPC, request, |core, principal, req| async move {
            let range = AuditRange::from_wire(req.from_seq, req.to_seq, req.from_time_ms, req.to_time_ms)?;
            let proof = core.authorize::<authz::ReadAudit>(&principal, &RESOURCE).await?;
            let records = core.export_audit(&proof, range).await?;
            let stream = ReceiverStream::new(records)
                .map(move |item| item.map(|r| record_to_pb(&r)).map_err(|e| status::to_status(&e, RPC, detail)));
            Ok(Box::pin(stream) as ExportStream)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64, details: &str) -> AuditRecord {
        AuditRecord {
            seq,
            ts_ms: 1,
            principal: "p".into(),
            role: "r".into(),
            tenant: "t".into(),
            action: "a".into(),
            resource: "x".into(),
            outcome: "success".into(),
            reason: String::new(),
            details: details.into(),
            prev_hash: "0".repeat(64),
            hash: "1".repeat(64),
        }
    }

    #[test]
    fn pages_are_cut_to_the_message_limit_and_continue_where_cut() -> Result<()> {
        let big = "x".repeat(3000);
        let page = AuditPage { records: (1..=10).map(|s| record(s, &big)).collect(), next: None };
        let out = page_to_pb(page.clone(), None, RESPONSE_RESERVE + 10_000)?;
        assert_eq!(out.records.len(), 3);
        assert_eq!(PageToken::parse("t", &out.next_page_token)?, Some(PageToken::after_seq(3)));
        let all = page_to_pb(page, None, 4 * 1024 * 1024)?;
        assert_eq!((all.records.len(), all.next_page_token.as_str()), (10, ""));
        let huge = AuditPage { records: vec![record(1, &"y".repeat(20_000))], next: None };
        assert!(page_to_pb(huge, None, RESPONSE_RESERVE + 10_000).is_err());
        Ok(())
    }

    #[test]
    fn records_survive_the_wire() {
        let r = record(7, "{\"kcv\":\"08D7B4\"}");
        assert_eq!(record_from_pb(record_to_pb(&r)), r);
    }
}
