//! The service core: what the gRPC handlers call once a request is parsed
//! and authorized. It knows nothing about tonic.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::audit::{self, AuditEvent, Outcome};
use crate::authz::{self, Action, Authorized, PolicyEngine, Resource};
use crate::config::{AuditConfig, DeriveConfig};
use crate::error::{Error, Result};
use crate::hsm::{Capabilities, Hsm, HsmError, ModuleInfo, PoolStatus};
use crate::identity::{IdentityError, Principal};
use crate::profiles::CardProfiles;
use crate::store::{Backend, Store};

pub mod audit_log;
pub mod batch;
pub mod certs;
pub mod derive;
pub mod keys;
pub mod plans;

/// The service's shared state.
pub struct Core {
    /// The HSM.
    pub hsm: Hsm,
    /// The metadata store.
    pub store: Store,
    /// The policy engine.
    pub policy: Arc<PolicyEngine>,
    profiles: std::sync::RwLock<Arc<CardProfiles>>,
    /// Derivation limits.
    pub derive_limits: DeriveConfig,
    /// The audit log's checkpoints.
    pub audit_config: AuditConfig,
    /// The certificate authority's configuration and profiles.
    pub ca: certs::CaState,
    /// Production plans.
    pub plans: crate::config::PlansConfig,
    started: Instant,
}

/// The answer to `GetStatus`.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// Crate version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Module and token.
    pub module: ModuleInfo,
    /// Pool figures.
    pub pool: PoolStatus,
    /// Database engine.
    pub backend: Backend,
    /// Database answered.
    pub database_reachable: bool,
    /// Audit records.
    pub audit_records: u64,
    /// Schema version.
    pub schema_version: i64,
    /// Why the module did not answer the live probe, if it did not.
    pub module_error: Option<String>,
}

impl Core {
    /// Assembles the core from its parts.
    pub fn new(
        hsm: Hsm,
        store: Store,
        policy: Arc<PolicyEngine>,
        profiles: CardProfiles,
        derive_limits: DeriveConfig,
        ca: certs::CaState,
        plans: crate::config::PlansConfig,
    ) -> Core {
        Core {
            hsm,
            store,
            policy,
            profiles: std::sync::RwLock::new(Arc::new(profiles)),
            audit_config: AuditConfig::default(),
            derive_limits,
            ca,
            plans,
            started: Instant::now(),
        }
    }

    /// Sets the audit log's configuration (checkpoint key label).
    pub fn with_audit_config(mut self, audit_config: AuditConfig) -> Core {
        self.audit_config = audit_config;
        self
    }

    /// The card profiles in force.
    pub fn profiles(&self) -> Arc<CardProfiles> {
        self.profiles.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the card profiles (after they loaded whole).
    pub fn set_profiles(&self, profiles: CardProfiles) {
        *self.profiles.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(profiles);
    }

    /// `ListCardProfiles`.
    pub fn list_card_profiles(&self, _proof: &Authorized<authz::ListCardProfiles>) -> Arc<CardProfiles> {
        self.profiles()
    }

    /// Asks the policy engine; a denial is audited before it is returned.
    /// If the denial cannot be audited the call is still refused.
    pub async fn authorize<A: Action>(&self, principal: &Principal, resource: &Resource) -> Result<Authorized<A>> {
        self.authorize_in::<A>(principal, resource, &[]).await
    }

    /// As [`Core::authorize`], with context attributes beyond the time
    /// (those the action's context type declares).
    pub async fn authorize_in<A: Action>(
        &self,
        principal: &Principal,
        resource: &Resource,
        extra: &[(&str, authz::ContextValue)],
    ) -> Result<Authorized<A>> {
        match self.policy.authorize_in::<A>(principal, resource, extra) {
            Ok(proof) => Ok(proof),
            Err(denied) => {
                let event = AuditEvent {
                    principal: principal.name.clone(),
                    role: principal.role.clone(),
                    tenant: principal.tenant.clone(),
                    action: A::NAME.to_owned(),
                    resource: resource.to_string(),
                    outcome: Outcome::Denied,
                    reason: denied.reason.clone(),
                    details: json!({ "certificate_serial": principal.certificate_serial }),
                };
                if let Err(e) = audit::record(&self.store, &event).await {
                    tracing::error!(error = %e, action = A::NAME, "could not audit a denial");
                }
                Err(Error::PermissionDenied(denied))
            }
        }
    }

    /// Records a caller whose certificate passed TLS but does not name a
    /// principal (for example, no role field), then returns the error.
    pub async fn reject_identity(&self, action: &str, serial: Option<String>, error: IdentityError) -> Error {
        let event = AuditEvent {
            principal: "-".into(),
            role: "-".into(),
            tenant: "-".into(),
            action: action.to_owned(),
            resource: "-".into(),
            outcome: Outcome::Unauthenticated,
            reason: error.to_string(),
            details: json!({ "certificate_serial": serial }),
        };
        if let Err(e) = audit::record(&self.store, &event).await {
            tracing::error!(error = %e, action, "could not audit a rejected identity");
        }
        Error::Unauthenticated(error)
    }

    /// `WhoAmI`.
    pub fn who_am_i<'a>(&self, proof: &'a Authorized<authz::WhoAmI>) -> &'a Principal {
        proof.principal()
    }

    /// `GetStatus`.
    pub async fn status(&self, _proof: &Authorized<authz::GetStatus>) -> Result<StatusReport> {
        // A live round trip, so the report says whether the module answers
        // now rather than whether it did at the last call.
        let module_error = self
            .hsm
            .run("status_probe", {
                let module = self.hsm.info().path.clone();
                move |s| s.get_session_info().map(|_| ()).map_err(|e| HsmError::from_cryptoki(&module, e))
            })
            .await
            .err()
            .map(|e| e.to_string());
        let reachable = self.store.ping().await;
        let (audit_records, schema_version) = if reachable {
            (audit::count(&self.store).await? as u64, self.store.schema_version().await?)
        } else {
            (0, 0)
        };
        Ok(StatusReport {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            module: self.hsm.info().clone(),
            pool: self.hsm.pool_status(),
            backend: self.store.backend(),
            database_reachable: reachable,
            audit_records,
            schema_version,
            module_error,
        })
    }

    /// `GetCapabilities`.
    pub fn capabilities(&self, _proof: &Authorized<authz::GetCapabilities>) -> &Capabilities {
        self.hsm.capabilities()
    }
}
