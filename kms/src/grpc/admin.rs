//! `kms.v1.AdminService`.

use kms_proto::v1 as pb;
use kms_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use super::{Shared, principal_to_proto};
use crate::authz::{self, Resource};
use crate::core::StatusReport;
use crate::hsm::Capabilities;

const RESOURCE: Resource = Resource::Service("AdminService");

/// The AdminService implementation.
pub struct AdminApi {
    shared: Shared,
}

impl AdminApi {
    /// Wraps the shared state.
    pub fn new(shared: Shared) -> AdminApi {
        AdminApi { shared }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        self.shared
            .handle("AdminService/WhoAmI", request, |core, principal, _req| async move {
                let proof = core.authorize::<authz::WhoAmI>(&principal, &RESOURCE).await?;
                Ok(pb::WhoAmIResponse { principal: Some(principal_to_proto(core.who_am_i(&proof))) })
            })
            .await
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        self.shared
            .handle("AdminService/GetStatus", request, |core, principal, _req| async move {
                let proof = core.authorize::<authz::GetStatus>(&principal, &RESOURCE).await?;
                Ok(status_to_proto(core.status(&proof).await?))
            })
            .await
    }

    async fn get_capabilities(
        &self,
        request: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::GetCapabilitiesResponse>, Status> {
        self.shared
            .handle("AdminService/GetCapabilities", request, |core, principal, _req| async move {
                let proof = core.authorize::<authz::GetCapabilities>(&principal, &RESOURCE).await?;
                let info = core.hsm.info();
                Ok(capabilities_to_proto(core.capabilities(&proof), &info.token_label))
            })
            .await
    }

    async fn reload_policies(
        &self,
        request: Request<pb::ReloadPoliciesRequest>,
    ) -> Result<Response<pb::ReloadPoliciesResponse>, Status> {
        super::admin_plans::reload_policies(&self.shared, request).await
    }

    async fn create_production_plan(
        &self,
        request: Request<pb::CreateProductionPlanRequest>,
    ) -> Result<Response<pb::ProductionPlan>, Status> {
        super::admin_plans::create(&self.shared, request).await
    }

    async fn get_production_plan(
        &self,
        request: Request<pb::GetProductionPlanRequest>,
    ) -> Result<Response<pb::ProductionPlan>, Status> {
        super::admin_plans::get(&self.shared, request).await
    }

    async fn list_production_plans(
        &self,
        request: Request<pb::ListProductionPlansRequest>,
    ) -> Result<Response<pb::ListProductionPlansResponse>, Status> {
        super::admin_plans::list(&self.shared, request).await
    }

    async fn revoke_production_plan(
        &self,
        request: Request<pb::RevokeProductionPlanRequest>,
    ) -> Result<Response<pb::ProductionPlan>, Status> {
        super::admin_plans::revoke(&self.shared, request).await
    }

    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        super::admin_audit::query(&self.shared, request).await
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        super::admin_audit::verify(&self.shared, request).await
    }

    type ExportAuditStream = super::admin_audit::ExportStream;

    async fn export_audit(
        &self,
        request: Request<pb::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        super::admin_audit::export(&self.shared, request).await
    }
}

fn status_to_proto(r: StatusReport) -> pb::GetStatusResponse {
    pb::GetStatusResponse {
        version: r.version.to_owned(),
        uptime_seconds: r.uptime_seconds,
        module: Some(pb::ModuleStatus {
            path: r.module.path,
            library: r.module.library,
            library_version: r.module.library_version,
            token_label: r.module.token_label,
            token_serial: r.module.token_serial,
            state: if r.pool.up && r.module_error.is_none() { "up" } else { "down" }.to_owned(),
            sessions_open: r.pool.open as u32,
            sessions_in_use: r.pool.in_use as u32,
            sessions_max: r.pool.max as u32,
            sessions_recovered: r.pool.recovered,
            error: r.module_error.unwrap_or_default(),
        }),
        database: Some(pb::DatabaseStatus {
            backend: r.backend.name().to_owned(),
            reachable: r.database_reachable,
            audit_records: r.audit_records,
            schema_version: r.schema_version,
        }),
    }
}

/// Converts the capability table to its protobuf form.
pub fn capabilities_to_proto(c: &Capabilities, token_label: &str) -> pb::GetCapabilitiesResponse {
    pb::GetCapabilitiesResponse {
        module_path: c.module.clone(),
        token_label: token_label.to_owned(),
        capabilities: c
            .rows
            .iter()
            .map(|r| pb::Capability {
                name: r.name.to_owned(),
                mechanism: r.mechanism,
                mechanism_name: r.mechanism_name.clone(),
                available: r.available,
                flags: r.flags.iter().map(|f| (*f).to_owned()).collect(),
                min_key_size: r.min_key_size,
                max_key_size: r.max_key_size,
                detail: r.detail.clone(),
            })
            .collect(),
        wrapping: c
            .wraps
            .iter()
            .map(|w| pb::WrapCapability {
                wrapping_key_type: w.wrapping_key_type.to_owned(),
                mechanism: w.mechanism.clone(),
                wrapped_key_type: w.wrapped_key_type.to_owned(),
                supported: w.supported,
                error: w.error.clone(),
            })
            .collect(),
    }
}
