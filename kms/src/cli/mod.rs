//! The operator's client side of `kms`: connecting over mTLS, the
//! commands that print the service's state (`kms status`, `kms whoami`,
//! `kms capabilities`), the key catalogue ([`keys`]: `kms keys ...`),
//! card-key derivation ([`derive`]: `kms derive`), the certificate
//! authority ([`certs`]: `kms certs ...`) and the audit log ([`audit`]:
//! `kms audit ...`).

pub mod audit;
pub mod certs;
pub mod derive;
pub mod keys;
pub mod plans;

use std::path::{Path, PathBuf};

use kms_proto::v1 as pb;
use kms_proto::v1::admin_service_client::AdminServiceClient;
use serde::Deserialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Client failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An option is missing or malformed.
    #[error("{0}")]
    Usage(String),
    /// The connection failed.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The error.
        source: tonic::transport::Error,
    },
    /// The call failed.
    #[error("{rpc} failed: {code:?}: {message}")]
    Call {
        /// The RPC.
        rpc: &'static str,
        /// The status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// A line of an input file (cards for `kms derive`) is malformed.
    #[error("{path} line {line}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// Output could not be written.
    #[error("cannot write {what}: {source}")]
    Write {
        /// Where to (a file name or "standard output").
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The operator did not confirm a destructive command.
    #[error("not confirmed; nothing was done")]
    NotConfirmed,
    /// A file's content is not what it must be (for example an audit
    /// checkpoint file whose signature does not verify).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The server's answers do not fit the request (for example a batch
    /// result out of order, or fewer results than cards sent).
    #[error("unexpected answer from {rpc}: {message}")]
    Protocol {
        /// The RPC.
        rpc: &'static str,
        /// What was unexpected.
        message: String,
    },
}

impl ClientError {
    /// The process exit code for this failure: 2 for a usage error (a flag
    /// missing or malformed, a confirmation that cannot be asked for), 1
    /// for everything else. (`kms derive` uses 3 when the run finished but
    /// some cards failed; that is not an error of this type.)
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => 2,
            ClientError::Read { .. }
            | ClientError::Connect { .. }
            | ClientError::Call { .. }
            | ClientError::Input { .. }
            | ClientError::Write { .. }
            | ClientError::NotConfirmed
            | ClientError::File { .. }
            | ClientError::Protocol { .. } => 1,
        }
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientOptions {
    /// `https://host:port`.
    pub endpoint: String,
    /// CA certificate that signed the server's certificate (PEM).
    pub ca: PathBuf,
    /// Client certificate (PEM).
    pub cert: PathBuf,
    /// Client private key (PEM).
    pub key: PathBuf,
    /// Name to check in the server certificate; defaults to the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

impl ClientOptions {
    /// Reads a `client.toml` (as `kms dev` writes); relative paths are
    /// taken relative to the file.
    pub fn from_file(path: &Path) -> Result<ClientOptions, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::Read {
            what: "client profile",
            path: path.to_owned(),
            source,
        })?;
        let mut o: ClientOptions =
            toml::from_str(&text).map_err(|e| ClientError::Usage(format!("client profile {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut o.ca, &mut o.cert, &mut o.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(o)
    }

    /// Opens an mTLS channel.
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| ClientError::Read { what, path: path.to_owned(), source })
        };
        let ca = read("CA certificate", &self.ca)?;
        let cert = read("client certificate", &self.cert)?;
        let key = zeroize::Zeroizing::new(read("client key", &self.key)?);
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key.as_slice()));
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| ClientError::Usage(format!("endpoint {:?}: {e}", self.endpoint)))?
            .tls_config(tls)
            .map_err(|source| ClientError::Connect { endpoint: self.endpoint.clone(), source })?
            .connect_timeout(std::time::Duration::from_secs(10));
        endpoint.connect().await.map_err(|source| ClientError::Connect { endpoint: self.endpoint.clone(), source })
    }
}

/// The error of a failed call `rpc`.
pub fn call_error(rpc: &'static str, s: tonic::Status) -> ClientError {
    ClientError::Call { rpc, code: s.code(), message: s.message().to_owned() }
}

/// `kms status`: server, module, capability summary and database.
pub async fn status(opts: &ClientOptions, json: bool) -> Result<String, ClientError> {
    let mut client = AdminServiceClient::new(opts.connect().await?);
    let s = client.get_status(pb::GetStatusRequest {}).await.map_err(|e| call_error("GetStatus", e))?.into_inner();
    let c = client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .map_err(|e| call_error("GetCapabilities", e))?
        .into_inner();
    let m = s.module.clone().unwrap_or_default();
    let d = s.database.clone().unwrap_or_default();
    if json {
        let v = serde_json::json!({
            "version": s.version,
            "uptime_seconds": s.uptime_seconds,
            "module": {
                "path": m.path, "library": m.library, "library_version": m.library_version,
                "token_label": m.token_label, "token_serial": m.token_serial, "state": m.state,
                "sessions_open": m.sessions_open, "sessions_in_use": m.sessions_in_use,
                "sessions_max": m.sessions_max, "sessions_recovered": m.sessions_recovered,
                "error": m.error,
            },
            "database": {
                "backend": d.backend, "reachable": d.reachable,
                "audit_records": d.audit_records, "schema_version": d.schema_version,
            },
            "capabilities": capabilities_json(&c),
        });
        return Ok(v.to_string());
    }
    let mut out = String::new();
    out.push_str(&format!("kms {}  up {}s\n", s.version, s.uptime_seconds));
    out.push_str(&format!("module    {} ({} {})\n", m.path, m.library, m.library_version));
    out.push_str(&format!("token     {:?} serial {}  state {}\n", m.token_label, m.token_serial, m.state));
    if !m.error.is_empty() {
        out.push_str(&format!("          module error: {}\n", m.error));
    }
    out.push_str(&format!(
        "sessions  {} open, {} in use, {} max, {} recovered\n",
        m.sessions_open, m.sessions_in_use, m.sessions_max, m.sessions_recovered
    ));
    out.push_str(&format!(
        "database  {} reachable={} schema={} audit_records={}\n",
        d.backend, d.reachable, d.schema_version, d.audit_records
    ));
    out.push_str(&capabilities_text(&c));
    Ok(out)
}

/// `kms capabilities`.
pub async fn capabilities(opts: &ClientOptions, json: bool) -> Result<String, ClientError> {
    let mut client = AdminServiceClient::new(opts.connect().await?);
    let c = client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .map_err(|e| call_error("GetCapabilities", e))?
        .into_inner();
    Ok(if json { capabilities_json(&c).to_string() } else { capabilities_text(&c) })
}

/// `kms whoami`.
pub async fn whoami(opts: &ClientOptions, json: bool) -> Result<String, ClientError> {
    let mut client = AdminServiceClient::new(opts.connect().await?);
    let r = client.who_am_i(pb::WhoAmIRequest {}).await.map_err(|e| call_error("WhoAmI", e))?.into_inner();
    let p = r.principal.unwrap_or_default();
    Ok(if json {
        serde_json::json!({"name": p.name, "role": p.role, "tenant": p.tenant, "certificate_serial": p.certificate_serial})
            .to_string()
    } else {
        format!("{} (role {}, tenant {}, certificate {})\n", p.name, p.role, p.tenant, p.certificate_serial)
    })
}

fn capabilities_json(c: &pb::GetCapabilitiesResponse) -> serde_json::Value {
    serde_json::json!({
        "module_path": c.module_path,
        "token_label": c.token_label,
        "mechanisms": c.capabilities.iter().map(|r| serde_json::json!({
            "name": r.name, "mechanism": r.mechanism, "mechanism_name": r.mechanism_name,
            "available": r.available, "flags": r.flags, "detail": r.detail,
        })).collect::<Vec<_>>(),
        "wrapping": c.wrapping.iter().map(|w| serde_json::json!({
            "wrapping_key_type": w.wrapping_key_type, "mechanism": w.mechanism,
            "wrapped_key_type": w.wrapped_key_type, "supported": w.supported, "error": w.error,
        })).collect::<Vec<_>>(),
    })
}

fn capabilities_text(c: &pb::GetCapabilitiesResponse) -> String {
    let mut out = String::from("capabilities\n");
    for r in &c.capabilities {
        let mark = if r.available { "yes" } else { "no " };
        out.push_str(&format!("  {mark}  {:<24} {:<40} {}\n", r.name, r.mechanism_name, r.detail));
    }
    out.push_str("wrapping (probed with C_WrapKey)\n");
    for w in &c.wrapping {
        let mark = if w.supported { "yes" } else { "no " };
        out.push_str(&format!(
            "  {mark}  {:<5} wraps {:<5} with {:<28} {}\n",
            w.wrapping_key_type, w.wrapped_key_type, w.mechanism, w.error
        ));
    }
    out
}

/// The CLI's text tables: left-aligned columns separated by two spaces;
/// the last column is not padded.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths.get(c).copied().unwrap_or(0).saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
