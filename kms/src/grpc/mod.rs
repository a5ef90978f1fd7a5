//! The gRPC layer: one struct per service holding the shared core, and the
//! conversions between protobuf messages and domain types.
//!
//! Every handler takes the same four steps: resolve the principal from the
//! client certificate, turn the message into a typed command, authorize,
//! call the core. [`Shared::handle`] does the first and the error mapping
//! and metrics around all of them.

mod admin;
pub mod admin_audit;
mod admin_plans;
mod certs;
mod keys;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

pub use admin::AdminApi;
pub use certs::CertificateApi;
pub use keys::KeyApi;

use crate::core::Core;
use crate::error::Result;
use crate::identity::{IdentityError, Principal};
use crate::metrics::Metrics;

/// What every service struct holds.
#[derive(Clone)]
pub struct Shared {
    /// The core.
    pub core: Arc<Core>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether internal error detail goes to clients.
    pub client_error_detail: bool,
    /// `server.max_message_bytes`: the largest response a call may send.
    pub max_message_bytes: usize,
}

impl Shared {
    /// Resolves the principal, runs `body`, maps errors, records metrics.
    pub async fn handle<Req, Resp, Fut>(
        &self,
        rpc: &'static str,
        request: Request<Req>,
        body: impl FnOnce(Arc<Core>, Principal, Req) -> Fut,
    ) -> std::result::Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Resp>>,
    {
        let started = Instant::now();
        let result = match self.principal(rpc, &request).await {
            Ok(principal) => body(self.core.clone(), principal, request.into_inner()).await,
            Err(e) => Err(e),
        };
        self.respond(rpc, started, result)
    }

    /// Like [`Shared::handle`] for the one call that needs no client
    /// certificate (`EnrollReader`): `body` authenticates the request itself.
    pub async fn handle_unauthenticated<Req, Resp, Fut>(
        &self,
        rpc: &'static str,
        request: Request<Req>,
        body: impl FnOnce(Arc<Core>, Req) -> Fut,
    ) -> std::result::Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Resp>>,
    {
        let started = Instant::now();
        let result = body(self.core.clone(), request.into_inner()).await;
        self.respond(rpc, started, result)
    }

    fn respond<Resp>(
        &self,
        rpc: &'static str,
        started: Instant,
        result: Result<Resp>,
    ) -> std::result::Result<Response<Resp>, Status> {
        let out = result.map(Response::new).map_err(|e| status::to_status(&e, rpc, self.client_error_detail));
        let code = match &out {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.metrics.observe_rpc(rpc, code, started.elapsed());
        out
    }

    async fn principal<T>(&self, rpc: &'static str, request: &Request<T>) -> Result<Principal> {
        let certs = request.peer_certs();
        let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
            return Err(self.core.reject_identity(rpc, None, IdentityError::NoCertificate).await);
        };
        match Principal::from_certificate(leaf.as_ref()) {
            // why: a certificate this service issued and later revoked must
            // stop authenticating at once, not when a CRL reaches the TLS
            // layer; certificates of other CAs are not in the table.
            Ok(p) => match self.core.is_revoked(&p.certificate_serial).await {
                Ok(false) => Ok(p),
                Ok(true) => Err(self
                    .core
                    .reject_identity(
                        rpc,
                        Some(p.certificate_serial.clone()),
                        IdentityError::Revoked(p.certificate_serial),
                    )
                    .await),
                Err(e) => Err(e),
            },
            Err(e) => {
                let serial = x509_parser::parse_x509_certificate(leaf.as_ref())
                    .ok()
                    .map(|(_, c)| hex::encode_upper(c.raw_serial()));
                Err(self.core.reject_identity(rpc, serial, e).await)
            }
        }
    }
}

/// Converts a domain principal to its protobuf form.
pub fn principal_to_proto(p: &Principal) -> kms_proto::v1::Principal {
    kms_proto::v1::Principal {
        name: p.name.clone(),
        role: p.role.clone(),
        tenant: p.tenant.clone(),
        certificate_serial: p.certificate_serial.clone(),
    }
}
