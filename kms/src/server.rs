//! `kms serve`: start-up, the TLS listener, the operations listener and
//! graceful shutdown.
//!
//! Start-up either completes or stops with one [`StartupError`] that names
//! the problem and where it is (configuration field, file, module, token,
//! database). Nothing listens until the HSM, database and policies are up.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kms_proto::v1::admin_service_server::AdminServiceServer;
use kms_proto::v1::certificate_service_server::CertificateServiceServer;
use kms_proto::v1::key_service_server::KeyServiceServer;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::authz::{PolicyEngine, PolicyError};
use crate::config::{Config, ConfigError};
use crate::core::Core;
use crate::grpc::{AdminApi, CertificateApi, KeyApi, Shared};
use crate::hsm::{Hsm, HsmError};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The PKCS#11 module or token.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The policies.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The card profiles.
    #[error(transparent)]
    Profile(#[from] crate::profiles::ProfileError),
    /// The certificate profiles.
    #[error("certificate profiles: {0}")]
    CertProfile(#[from] kms_ca::ProfileError),
    /// An external trust anchor for enrollment.
    #[error("ca.external_trust_anchors {path}: {reason}")]
    TrustAnchor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// TLS material.
    #[error("TLS {what} {path}: {reason}")]
    Tls {
        /// Which file (certificate, key, client CA).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// Anything else (reflection set-up, ready file, worker failure).
    #[error("{0}")]
    Other(String),
}

/// The addresses actually bound (ports may have been 0 in the config).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BoundAddrs {
    /// The gRPC (mTLS) listener.
    pub grpc: SocketAddr,
    /// The operations listener, if enabled.
    pub ops: Option<SocketAddr>,
}

fn tls_error(what: &'static str, path: &Path, reason: impl ToString) -> StartupError {
    StartupError::Tls { what, path: path.to_owned(), reason: reason.to_string() }
}

/// Builds the rustls server configuration: TLS 1.3 only, h2, and client
/// certificates chaining to `client_ca`. A connection without a client
/// certificate is let through the handshake only so that a reader can call
/// `EnrollReader` with a token; every other call on it is refused with
/// `UNAUTHENTICATED` (`grpc::Shared::handle`).
pub fn tls_config(cfg: &crate::config::TlsConfig) -> Result<rustls::ServerConfig, StartupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| tls_error("certificate", &cfg.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error("certificate", &cfg.cert, e))?;
    if certs.is_empty() {
        return Err(tls_error("certificate", &cfg.cert, "no certificate in file"));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| tls_error("key", &cfg.key, e))?;
    let mut roots = rustls::RootCertStore::empty();
    let ca_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.client_ca)
        .map_err(|e| tls_error("client CA", &cfg.client_ca, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error("client CA", &cfg.client_ca, e))?;
    for c in ca_certs {
        roots.add(c).map_err(|e| tls_error("client CA", &cfg.client_ca, e))?;
    }
    if roots.is_empty() {
        return Err(tls_error("client CA", &cfg.client_ca, "no certificate in file"));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_error("client CA", &cfg.client_ca, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("certificate", &cfg.cert, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls_error("key", &cfg.key, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A TLS connection that holds its place under `server.max_connections`.
struct Conn {
    tls: TlsStream<TcpStream>,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.tls.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    max_connections: usize,
    handshake_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => break,
            };
            let (tcp, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
                },
                _ = shutdown.changed() => break,
            };
            // why: gRPC sends small frames; with Nagle's algorithm a reply can
            // wait for the peer's delayed ACK (40 ms on Linux).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(Conn { tls, _permit: permit })).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Loads everything the configuration names and returns the core. Blocking
/// parts (the PKCS#11 module) run on the blocking pool.
pub async fn build_core(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Core>, StartupError> {
    let pin = config.read_pin()?;
    let hsm_cfg = config.hsm.clone();
    let m = metrics.clone();
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(&hsm_cfg, pin, m))
        .await
        .map_err(|e| StartupError::Other(format!("HSM start-up worker failed: {e}")))??;
    log_capabilities(&hsm);
    let store = Store::connect(&config.database).await?;
    let policy = Arc::new(PolicyEngine::load(&config.policy.dir)?);
    let profiles = crate::profiles::CardProfiles::load(&config.profiles.dir)?;
    let cert_profiles = kms_ca::CertProfiles::load_dir(&config.ca.profiles_dir)?;
    let mut anchors = Vec::new();
    for path in &config.ca.external_trust_anchors {
        let bytes =
            std::fs::read(path).map_err(|e| StartupError::TrustAnchor { path: path.clone(), reason: e.to_string() })?;
        let certs = crate::core::certs::split_certificates("anchor", &bytes)
            .map_err(|e| StartupError::TrustAnchor { path: path.clone(), reason: e.to_string() })?;
        if certs.is_empty() {
            return Err(StartupError::TrustAnchor { path: path.clone(), reason: "no certificate in file".into() });
        }
        anchors.extend(certs);
    }
    let ca = crate::core::certs::CaState::new(config.ca.clone(), cert_profiles, anchors);
    tracing::info!(
        module = %hsm.info().path,
        token = %hsm.info().token_label,
        database = store.backend().name(),
        policies = policy.policy_count(),
        "core ready"
    );
    let core = Core::new(hsm, store, policy, profiles, config.derive.clone(), ca, config.plans.clone());
    Ok(Arc::new(core.with_audit_config(config.audit.clone())))
}

fn log_capabilities(hsm: &Hsm) {
    let caps = hsm.capabilities();
    for r in &caps.rows {
        tracing::info!(
            capability = r.name,
            mechanism = %r.mechanism_name,
            available = r.available,
            flags = %r.flags.join(","),
            detail = %r.detail,
            "capability"
        );
    }
    for w in &caps.wraps {
        tracing::info!(
            wrapping = w.wrapping_key_type,
            mechanism = %w.mechanism,
            wrapped = w.wrapped_key_type,
            supported = w.supported,
            error = %w.error,
            "wrap capability"
        );
    }
}

/// Runs the service until `shutdown` turns true (or a signal arrives when
/// `handle_signals` is set), then drains in-flight calls for at most
/// `server.shutdown_grace_secs`.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), StartupError> {
    let metrics = Arc::new(Metrics::new());
    let core = build_core(&config, metrics.clone()).await?;
    let tls = tls_config(&config.tls)?;

    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| StartupError::Bind { addr: config.server.listen, source })?;
    let grpc_addr = listener.local_addr().map_err(|e| StartupError::Other(e.to_string()))?;
    let ops_listener = match config.ops.listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })?),
        None => None,
    };
    let ops_addr = match &ops_listener {
        Some(l) => Some(l.local_addr().map_err(|e| StartupError::Other(e.to_string()))?),
        None => None,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<AdminServiceServer<AdminApi>>().await;
    health_reporter.set_serving::<KeyServiceServer<KeyApi>>().await;
    health_reporter.set_serving::<CertificateServiceServer<CertificateApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kms_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartupError::Other(format!("reflection: {e}")))?;

    let shared = Shared {
        core: core.clone(),
        metrics: metrics.clone(),
        client_error_detail: config.logging.client_error_detail,
        max_message_bytes: config.server.max_message_bytes,
    };
    let limit = config.server.max_message_bytes;
    let admin = AdminServiceServer::new(AdminApi::new(shared.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let keys = KeyServiceServer::new(KeyApi::new(shared.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let certificates = CertificateServiceServer::new(CertificateApi::new(shared))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let incoming = accept_loop(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        config.server.max_connections,
        Duration::from_secs(config.server.handshake_timeout_secs),
        shutdown.clone(),
    );

    if let (Some(listener), Some(_)) = (ops_listener, ops_addr) {
        tokio::spawn(crate::server::ops::serve(listener, core.clone(), metrics.clone(), shutdown.clone()));
    }
    tokio::spawn(watch_hsm_health(core.clone(), health_reporter.clone(), shutdown.clone()));
    tokio::spawn(reload_on_sighup(core.clone(), config.clone(), shutdown.clone()));
    tokio::spawn(refresh_crls(core.clone(), Duration::from_secs(config.ca.crl_check_secs), shutdown.clone()));
    if config.audit.checkpoint_interval_secs > 0 {
        let every = Duration::from_secs(config.audit.checkpoint_interval_secs);
        tokio::spawn(checkpoint_audit(core.clone(), every, shutdown.clone()));
    } else {
        tracing::warn!(
            "audit.checkpoint_interval_secs is 0: no signed checkpoints; a cut-off tail of the audit log is not detectable"
        );
    }

    let bound = BoundAddrs { grpc: grpc_addr, ops: ops_addr };
    if let Some(path) = &config.server.ready_file {
        write_ready_file(path, &bound)?;
    }
    tracing::info!(grpc = %grpc_addr, ops = ?ops_addr, "kms listening (mTLS, TLS 1.3)");

    let mut stop = shutdown.clone();
    let serve = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(config.server.max_concurrent_streams))
        .timeout(config.request_timeout())
        .add_service(health_service)
        .add_service(reflection)
        .add_service(admin)
        .add_service(keys)
        .add_service(certificates)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let mut stop = shutdown.clone();
    let result = tokio::select! {
        r = serve => r.map_err(|e| StartupError::Other(format!("server: {e}"))),
        _ = async { let _ = stop.wait_for(|s| *s).await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight calls did not finish within the grace period");
            Ok(())
        }
    };
    health_reporter.set_not_serving::<AdminServiceServer<AdminApi>>().await;
    core.store.close().await;
    tracing::info!("kms stopped");
    result
}

fn write_ready_file(path: &Path, bound: &BoundAddrs) -> Result<(), StartupError> {
    let text = serde_json::to_string(bound).map_err(|e| StartupError::Other(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| StartupError::Other(format!("cannot write ready file {}: {e}", path.display())))
}

async fn watch_hsm_health(
    core: Arc<Core>,
    reporter: tonic_health::server::HealthReporter,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_up = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
        let up = core.hsm.pool_status().up;
        if up != last_up {
            let status =
                if up { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
            reporter.set_service_status("", status).await;
            last_up = up;
        }
    }
}

/// Republishes CRLs that are missing or past half their validity, and
/// retries any that a revocation could not publish.
async fn refresh_crls(core: Arc<Core>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        match core.refresh_crls().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(crls = n, "CRLs republished"),
            Err(e) => tracing::error!(error = %e, "CRL refresh failed; retrying at the next check"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Signs a checkpoint of the audit chain's head whenever it moved, every
/// `every`. A chain that does not hold since the previous checkpoint is
/// not signed; that is logged as an error at every round until resolved.
async fn checkpoint_audit(core: Arc<Core>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    use crate::core::audit_log::CheckpointRun;
    loop {
        match core.checkpoint_audit().await {
            Ok(CheckpointRun::Signed(c)) => {
                tracing::info!(seq = c.seq, head_hash = %c.head_hash, key = %c.key_fingerprint, "audit checkpoint signed")
            }
            Ok(CheckpointRun::EmptyLog | CheckpointRun::Unchanged) => {}
            Ok(CheckpointRun::Refused(f)) => tracing::error!(
                fault = f.kind(),
                position = f.position(),
                detail = %f,
                "audit chain does not hold since the newest checkpoint; no checkpoint signed"
            ),
            Err(e) => tracing::error!(error = %e, "audit checkpoint failed; retrying at the next round"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn reload_on_sighup(core: Arc<Core>, config: Config, mut shutdown: watch::Receiver<bool>) {
    let profiles_dir = config.profiles.dir.clone();
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Err(e) = core.reload_policies_on_signal().await {
                    tracing::error!(error = %e, "policy reload rejected; the previous set stays in force");
                }
                match crate::profiles::CardProfiles::load(&profiles_dir) {
                    Ok(p) => { core.set_profiles(p); tracing::info!("card profiles reloaded") }
                    Err(e) => tracing::error!(error = %e, "card profile reload rejected; the previous set stays in force"),
                }
                match kms_ca::CertProfiles::load_dir(&config.ca.profiles_dir) {
                    Ok(p) => { core.ca.set_profiles(p); tracing::info!("certificate profiles reloaded") }
                    Err(e) => tracing::error!(error = %e, "certificate profile reload rejected; the previous set stays in force"),
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// A watch channel that turns true on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        let Ok(mut term) = term else { return };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
        }
        let _ = tx.send(true);
    });
    rx
}

pub mod ops {
    //! The operations listener: `/metrics` (Prometheus), `/healthz` (200
    //! when the HSM and the database answer, 503 otherwise) and
    //! `/crl/<issuer>.crl` (the issuer's current CRL, DER). Plain HTTP, no
    //! client certificate: CRLs are public and signed; bind it where relying
    //! parties can fetch them and keep /metrics behind your network policy.

    use std::sync::Arc;

    use axum::Router;
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    use tokio::net::TcpListener;
    use tokio::sync::watch;

    use crate::core::Core;
    use crate::metrics::Metrics;

    #[derive(Clone)]
    struct Ops {
        core: Arc<Core>,
        metrics: Arc<Metrics>,
    }

    async fn metrics(State(ops): State<Ops>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
        (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], ops.metrics.encode())
    }

    async fn healthz(State(ops): State<Ops>) -> (StatusCode, String) {
        let hsm_up = ops.core.hsm.pool_status().up;
        let db_up = ops.core.store.ping().await;
        let code = if hsm_up && db_up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        (code, format!("{{\"hsm\":{hsm_up},\"database\":{db_up}}}\n"))
    }

    async fn crl(State(ops): State<Ops>, Path(file): Path<String>) -> axum::response::Response {
        use axum::response::IntoResponse;
        let Some(issuer) = file.strip_suffix(".crl").filter(|i| kms_ca::check_identifier("issuer", i).is_ok()) else {
            return (StatusCode::NOT_FOUND, "not a CRL name\n").into_response();
        };
        match ops.core.crl(issuer).await {
            Ok(c) => (StatusCode::OK, [("content-type", "application/pkix-crl")], c.der).into_response(),
            Err(crate::error::Error::NotFound { what }) => {
                (StatusCode::NOT_FOUND, format!("{what} not found\n")).into_response()
            }
            // A pending issuer has no certificate and so no CRL yet.
            Err(crate::error::Error::FailedPrecondition(why)) => {
                (StatusCode::NOT_FOUND, format!("{why}\n")).into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, issuer, "CRL not served");
                (StatusCode::SERVICE_UNAVAILABLE, "CRL unavailable\n").into_response()
            }
        }
    }

    /// Serves until shutdown.
    pub async fn serve(listener: TcpListener, core: Arc<Core>, m: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/crl/{file}", get(crl))
            .with_state(Ops { core, metrics: m });
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "operations listener failed");
        }
    }
}
