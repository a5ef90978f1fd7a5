//! `AdminService`: production plans (quotas) and policy reload.

use kms_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::authz::{self, Resource};
use crate::core::plans::NewPlan;
use crate::error::Error;
use crate::plans::{PlanFilter, PlanRecord};

const RESOURCE: Resource = Resource::Service("AdminService");

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument { field: field.into(), reason: reason.into() }
}

fn plan_to_proto(p: PlanRecord) -> pb::ProductionPlan {
    let state = p.state(crate::certs::now_secs()).to_owned();
    pb::ProductionPlan {
        id: p.id,
        tenant: p.tenant,
        profile: p.profile,
        ranges: p.ranges.into_iter().map(|r| pb::CardRange { first_asn: r.first, last_asn: r.last }).collect(),
        count: p.quota,
        used: p.used.min(p.quota),
        valid_from: p.valid_from,
        valid_until: p.valid_until,
        state,
        created_by: p.created_by,
        created_at: p.created_at,
        note: p.note,
        revocation_reason: p.revocation_reason,
    }
}

/// `ReloadPolicies`.
pub async fn reload_policies(
    shared: &Shared,
    request: Request<pb::ReloadPoliciesRequest>,
) -> Result<Response<pb::ReloadPoliciesResponse>, Status> {
    shared
        .handle("AdminService/ReloadPolicies", request, |core, principal, _req| async move {
            let proof = core.authorize::<authz::ReloadPolicies>(&principal, &RESOURCE).await?;
            let (policies, digest) = core.reload_policies(&proof).await?;
            Ok(pb::ReloadPoliciesResponse { policies: policies as u32, digest })
        })
        .await
}

/// `CreateProductionPlan`.
pub async fn create(
    shared: &Shared,
    request: Request<pb::CreateProductionPlanRequest>,
) -> Result<Response<pb::ProductionPlan>, Status> {
    shared
        .handle("AdminService/CreateProductionPlan", request, |core, principal, req| async move {
            let proof = core.authorize::<authz::ManageProductionPlans>(&principal, &RESOURCE).await?;
            let plan = NewPlan {
                tenant: req.tenant,
                profile: req.profile,
                ranges: req.ranges.into_iter().map(|r| (r.first_asn, r.last_asn)).collect(),
                count: req.count,
                valid_from: req.valid_from,
                valid_until: req.valid_until,
                note: req.note,
            };
            Ok(plan_to_proto(core.create_plan(&proof, plan).await?))
        })
        .await
}

/// `GetProductionPlan`.
pub async fn get(
    shared: &Shared,
    request: Request<pb::GetProductionPlanRequest>,
) -> Result<Response<pb::ProductionPlan>, Status> {
    shared
        .handle("AdminService/GetProductionPlan", request, |core, principal, req| async move {
            let proof = core.authorize::<authz::ReadProductionPlans>(&principal, &RESOURCE).await?;
            Ok(plan_to_proto(core.get_plan(&proof, &req.id).await?))
        })
        .await
}

/// `ListProductionPlans`.
pub async fn list(
    shared: &Shared,
    request: Request<pb::ListProductionPlansRequest>,
) -> Result<Response<pb::ListProductionPlansResponse>, Status> {
    shared
        .handle("AdminService/ListProductionPlans", request, |core, principal, req| async move {
            let proof = core.authorize::<authz::ReadProductionPlans>(&principal, &RESOURCE).await?;
            let limit = match req.page_size {
                0 => 100,
                n @ 1..=500 => n,
                _ => return Err(invalid("page_size", "must be 0-500")),
            };
            let after = if req.page_token.is_empty() {
                String::new()
            } else {
                let bad = || invalid("page_token", "not a token from a previous response");
                String::from_utf8(hex::decode(&req.page_token).map_err(|_| bad())?).map_err(|_| bad())?
            };
            let filter = PlanFilter { tenant: req.tenant, profile: req.profile, after, limit };
            let (plans, next) = core.list_plans(&proof, filter, &req.state).await?;
            Ok(pb::ListProductionPlansResponse {
                plans: plans.into_iter().map(plan_to_proto).collect(),
                next_page_token: if next.is_empty() { String::new() } else { hex::encode(next) },
            })
        })
        .await
}

/// `RevokeProductionPlan`.
pub async fn revoke(
    shared: &Shared,
    request: Request<pb::RevokeProductionPlanRequest>,
) -> Result<Response<pb::ProductionPlan>, Status> {
    shared
        .handle("AdminService/RevokeProductionPlan", request, |core, principal, req| async move {
            let proof = core.authorize::<authz::ManageProductionPlans>(&principal, &RESOURCE).await?;
            Ok(plan_to_proto(core.revoke_plan(&proof, &req.id, &req.reason).await?))
        })
        .await
}
