//! `AdminService`: production plans (quotas) and policy reload.

use kms_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Shared;

/// `ReloadPolicies`.
pub async fn reload_policies(
    _shared: &Shared,
    _request: Request<pb::ReloadPoliciesRequest>,
) -> Result<Response<pb::ReloadPoliciesResponse>, Status> {
    Err(Status::unimplemented("ReloadPolicies: being built"))
}

/// `CreateProductionPlan`.
pub async fn create(
    _shared: &Shared,
    _request: Request<pb::CreateProductionPlanRequest>,
) -> Result<Response<pb::ProductionPlan>, Status> {
    Err(Status::unimplemented("CreateProductionPlan: being built"))
}

/// `GetProductionPlan`.
pub async fn get(
    _shared: &Shared,
    _request: Request<pb::GetProductionPlanRequest>,
) -> Result<Response<pb::ProductionPlan>, Status> {
    Err(Status::unimplemented("GetProductionPlan: being built"))
}

/// `ListProductionPlans`.
pub async fn list(
    _shared: &Shared,
    _request: Request<pb::ListProductionPlansRequest>,
) -> Result<Response<pb::ListProductionPlansResponse>, Status> {
    Err(Status::unimplemented("ListProductionPlans: being built"))
}

/// `RevokeProductionPlan`.
pub async fn revoke(
    _shared: &Shared,
    _request: Request<pb::RevokeProductionPlanRequest>,
) -> Result<Response<pb::ProductionPlan>, Status> {
    Err(Status::unimplemented("RevokeProductionPlan: being built"))
}
