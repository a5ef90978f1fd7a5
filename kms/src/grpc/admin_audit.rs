//! `AdminService`: the audit log for auditors (query, verify, export).

use kms_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Shared;

/// The stream `ExportAudit` returns.
pub type ExportStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::AuditRecord, Status>> + Send>>;

/// `QueryAudit`.
pub async fn query(
    _shared: &Shared,
    _request: Request<pb::QueryAuditRequest>,
) -> Result<Response<pb::QueryAuditResponse>, Status> {
    Err(Status::unimplemented("QueryAudit: being built"))
}

/// `VerifyAudit`.
pub async fn verify(
    _shared: &Shared,
    _request: Request<pb::VerifyAuditRequest>,
) -> Result<Response<pb::VerifyAuditResponse>, Status> {
    Err(Status::unimplemented("VerifyAudit: being built"))
}

/// `ExportAudit`.
pub async fn export(
    _shared: &Shared,
    _request: Request<pb::ExportAuditRequest>,
) -> Result<Response<ExportStream>, Status> {
    Err(Status::unimplemented("ExportAudit: being built"))
}
