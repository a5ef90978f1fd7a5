//! The service's configuration: one typed struct, read from a TOML file,
//! with a few settings that the environment and command-line flags may
//! override (flags win over the environment, which wins over the file).
//!
//! Every limit has a safe default and is checked on load; `docs/configuration.md`
//! and `kms.sample.toml` describe each field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// Why a configuration was refused. Each message names the file and field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct (unknown field, wrong type).
    #[error("configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// A value is out of its allowed range or inconsistent.
    #[error("configuration {field}: {reason}")]
    Invalid {
        /// Dotted field name, e.g. `server.max_message_bytes`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The HSM PIN could not be read.
    #[error("HSM PIN: {0}")]
    Pin(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The gRPC listener and its limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// TLS material for the gRPC listener.
    pub tls: TlsConfig,
    /// The PKCS#11 module and token.
    pub hsm: HsmConfig,
    /// The metadata database.
    pub database: DatabaseConfig,
    /// Authorization policies.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The operations listener (metrics, liveness).
    #[serde(default)]
    pub ops: OpsConfig,
    /// Logging.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Card profiles.
    #[serde(default)]
    pub profiles: ProfilesConfig,
    /// Derivation limits.
    #[serde(default)]
    pub derive: DeriveConfig,
    /// The audit log's signed checkpoints.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The certificate authority.
    #[serde(default)]
    pub ca: CaConfig,
    /// Partners' production plans (quotas).
    #[serde(default)]
    pub plans: PlansConfig,
}

/// Partners' production plans.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlansConfig {
    /// Whether every card-key derivation needs a live production plan of
    /// the caller's tenant covering the card (fail closed). Turn off only
    /// on a development instance.
    pub required: bool,
}

impl Default for PlansConfig {
    fn default() -> Self {
        PlansConfig { required: true }
    }
}

/// The certificate authority: profiles, CRLs, enrollment and escrow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// Directory of certificate profiles (`<name>.toml`).
    pub profiles_dir: PathBuf,
    /// Base URL under which CRLs are published (`<base>/<issuer>.crl`), put
    /// into every issued certificate's CRL distribution point. Usually the
    /// ops listener's `/crl` as relying parties reach it. Unset: no CRL
    /// distribution point.
    pub crl_base_url: Option<String>,
    /// A CRL's validity (nextUpdate - thisUpdate), in hours.
    pub crl_validity_hours: u64,
    /// How often the background task checks whether a CRL needs
    /// republishing (it does when less than half its validity is left).
    pub crl_check_secs: u64,
    /// Lifetime of an enrollment token when the request names none.
    pub token_default_ttl_secs: u64,
    /// Longest lifetime an enrollment token may be given.
    pub token_max_ttl_secs: u64,
    /// PEM files of external CAs (for example the ministry's reader CA)
    /// whose certificates may authorize a reader's enrollment.
    pub external_trust_anchors: Vec<PathBuf>,
    /// Tenant written into certificates of readers enrolled with an
    /// external CA's certificate (a token carries its operator's tenant).
    pub external_tenant: String,
    /// Catalogue key (AES, purpose `escrow`) under which service-generated
    /// encryption private keys are kept wrapped; dual certificates are
    /// refused while it is unset.
    pub escrow_key: Option<String>,
    /// Largest CSR accepted, in bytes (at most the CA's own 16 KiB limit).
    pub max_csr_bytes: usize,
    /// How stale this replica's view of revoked client certificates may be
    /// (a revocation on another replica stops authenticating here within
    /// this time; one made here, at once). 0: read the database on every
    /// call.
    pub revocation_refresh_ms: u64,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            profiles_dir: PathBuf::from("policies/certificates"),
            crl_base_url: None,
            crl_validity_hours: 24,
            crl_check_secs: 300,
            token_default_ttl_secs: 24 * 3600,
            token_max_ttl_secs: 30 * 24 * 3600,
            external_trust_anchors: Vec::new(),
            external_tenant: "external".into(),
            escrow_key: None,
            max_csr_bytes: 16 * 1024,
            revocation_refresh_ms: 1000,
        }
    }
}

/// Where card profiles live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesConfig {
    /// Directory holding `cards/*.toml`.
    pub dir: PathBuf,
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        ProfilesConfig { dir: PathBuf::from("profiles") }
    }
}

/// Limits of card-key derivation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeriveConfig {
    /// Cards a batch stream may carry.
    pub max_batch_cards: u64,
    /// Cards derived, recorded and answered together in a batch stream
    /// (one database transaction and one audit record per chunk).
    pub batch_chunk: usize,
}

impl Default for DeriveConfig {
    fn default() -> Self {
        DeriveConfig { max_batch_cards: 1_000_000, batch_chunk: 32 }
    }
}

/// The gRPC listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (see `ready_file`).
    pub listen: SocketAddr,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Concurrent client connections; further connections wait in the
    /// kernel's backlog.
    pub max_connections: usize,
    /// Deadline for a whole call, in seconds.
    pub request_timeout_secs: u64,
    /// Deadline for a TLS handshake, in seconds.
    pub handshake_timeout_secs: u64,
    /// How long shutdown waits for in-flight calls, in seconds.
    pub shutdown_grace_secs: u64,
    /// If set, a JSON file written once listening, with the bound addresses.
    pub ready_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_streams: 128,
            max_connections: 1024,
            request_timeout_secs: 30,
            handshake_timeout_secs: 10,
            shutdown_grace_secs: 30,
            ready_file: None,
        }
    }
}

/// TLS material. The server requires TLS 1.3 and a client certificate
/// chaining to `client_ca` on every connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain, PEM.
    pub cert: PathBuf,
    /// Server private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to, PEM.
    pub client_ca: PathBuf,
}

/// The PKCS#11 module, token and session pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// Path of the PKCS#11 shared library.
    pub module: PathBuf,
    /// Label of the token to use (slot ids are not stable across restarts
    /// on every module, labels are).
    pub token_label: String,
    /// File holding the user PIN (first line). Exactly one of `pin_file`
    /// and `pin_env` must be set.
    pub pin_file: Option<PathBuf>,
    /// Name of the environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// Sessions kept open and logged in.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Environment variables set for the module before it is loaded (for
    /// example `SOFTHSM2_CONF`), so a module's own configuration file can be
    /// part of the service's configuration.
    #[serde(default)]
    pub module_env: BTreeMap<String, String>,
    /// Reopening dead sessions.
    #[serde(default)]
    pub recovery: RecoveryConfig,
    /// Numbers of vendor-defined mechanisms (SM2/SM3/SM4 have no standard
    /// PKCS#11 numbers; each vendor picked its own).
    #[serde(default)]
    pub vendor: VendorMechanisms,
}

fn default_pool_size() -> usize {
    4
}

/// How dead sessions are reopened.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Attempts to open a fresh session before the module is declared down.
    pub max_attempts: u32,
    /// First back-off between attempts, in milliseconds (doubles each time).
    pub initial_backoff_ms: u64,
    /// Largest back-off, in milliseconds.
    pub max_backoff_ms: u64,
    /// While down, calls fail at once with UNAVAILABLE; after this many
    /// milliseconds the next call tries the module again.
    pub down_retry_ms: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig { max_attempts: 4, initial_backoff_ms: 50, max_backoff_ms: 1000, down_retry_ms: 1000 }
    }
}

/// Vendor-defined mechanism and key-type numbers for the national
/// algorithms. Unset means "this module has none".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VendorMechanisms {
    /// SM4 key generation.
    pub sm4_key_gen: Option<u64>,
    /// SM4-ECB.
    pub sm4_ecb: Option<u64>,
    /// SM4-CBC.
    pub sm4_cbc: Option<u64>,
    /// SM4 MAC.
    pub sm4_mac: Option<u64>,
    /// SM4-ECB encrypt-data derivation.
    pub sm4_ecb_encrypt_data: Option<u64>,
    /// SM3 digest.
    pub sm3: Option<u64>,
    /// SM2 key-pair generation.
    pub sm2_key_pair_gen: Option<u64>,
    /// SM2 signature (with SM3 and a distinguishing ID).
    pub sm2_sign: Option<u64>,
    /// SM2 encryption.
    pub sm2_encrypt: Option<u64>,
    /// Key type number of SM4 keys.
    pub sm4_key_type: Option<u64>,
    /// Mechanism that XORs two key objects into a new one (key components).
    pub key_xor: Option<u64>,
    /// ISO 9797-1 algorithm 3 "retail" MAC (GlobalPlatform SCP02).
    pub retail_mac: Option<u64>,
    /// NXP AN10922 AES-128 diversification as a key derivation.
    pub an10922_aes128: Option<u64>,
    /// NXP AN10922 2K3DES diversification as a key derivation.
    pub an10922_des2: Option<u64>,
}

/// The metadata database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://...`.
    pub url: String,
    /// Connections in the pool.
    #[serde(default = "default_db_connections")]
    pub max_connections: u32,
    /// Seconds to wait for a connection.
    #[serde(default = "default_db_timeout")]
    pub connect_timeout_secs: u64,
    /// SQLite only: `full` (default) syncs the write-ahead log on every
    /// commit, so an audit record that was acknowledged survives a power
    /// loss; `normal` syncs at checkpoints only: much faster single calls,
    /// but the last commits before a power loss (not a crash of kms) may
    /// be lost.
    #[serde(default)]
    pub sqlite_synchronous: SqliteSync,
}

impl DatabaseConfig {
    /// A configuration for `url` with the default limits.
    pub fn for_url(url: &str) -> DatabaseConfig {
        DatabaseConfig {
            url: url.to_owned(),
            max_connections: default_db_connections(),
            connect_timeout_secs: default_db_timeout(),
            sqlite_synchronous: SqliteSync::default(),
        }
    }
}

/// SQLite's `PRAGMA synchronous` in WAL mode.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// Sync on every commit.
    #[default]
    Full,
    /// Sync at checkpoints.
    Normal,
}

fn default_db_connections() -> u32 {
    8
}
fn default_db_timeout() -> u64 {
    5
}

/// Authorization policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directory with `schema.cedarschema` and the `*.cedar` policy files.
    pub dir: PathBuf,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig { dir: PathBuf::from("policies") }
    }
}

/// The operations listener: plain HTTP, for Prometheus and load balancers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Address for `/metrics` and `/healthz`; unset disables the listener.
    pub listen: Option<SocketAddr>,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig { listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))) }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A `tracing` filter, e.g. `info` or `kms=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// Put internal error detail (PKCS#11 return values, database errors)
    /// into the messages clients receive. Off by default: clients get the
    /// code and a short reason, the log gets the detail.
    pub client_error_detail: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { level: "info".into(), format: LogFormat::Text, client_error_detail: false }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// The audit log: how often its head is signed, and with which token key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How often each replica signs a checkpoint of the chain head (only
    /// when the head moved since the newest checkpoint), in seconds. 0
    /// turns checkpoints off; a truncated tail is then no longer
    /// detectable.
    pub checkpoint_interval_secs: u64,
    /// `CKA_LABEL` of the EC P-256 key pair in the token that signs
    /// checkpoints; generated (sensitive, not extractable, sign only) on
    /// first use when the token has none.
    pub checkpoint_key_label: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { checkpoint_interval_secs: 300, checkpoint_key_label: "kms/audit-checkpoint".into() }
    }
}

/// Settings the environment or flags may override. `None` leaves the
/// file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `server.listen`.
    pub listen: Option<SocketAddr>,
    /// `database.url`.
    pub database_url: Option<String>,
    /// `logging.level`.
    pub log_level: Option<String>,
    /// `ops.listen`.
    pub ops_listen: Option<SocketAddr>,
}

impl Config {
    /// Reads, parses and checks a configuration file, then applies
    /// overrides. Relative paths in the file are taken relative to the
    /// file's directory.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Config::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_owned(), message: e.to_string() })
    }

    /// Applies overrides (flags or environment) over the file's values.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(v) = o.listen {
            self.server.listen = v;
        }
        if let Some(v) = &o.database_url {
            self.database.url = v.clone();
        }
        if let Some(v) = &o.log_level {
            self.logging.level = v.clone();
        }
        if let Some(v) = o.ops_listen {
            self.ops.listen = Some(v);
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.tls.client_ca);
        fix(&mut self.hsm.module);
        if let Some(p) = self.hsm.pin_file.as_mut() {
            fix(p);
        }
        fix(&mut self.policy.dir);
        fix(&mut self.profiles.dir);
        if let Some(p) = self.server.ready_file.as_mut() {
            fix(p);
        }
        if let Some(rest) = self.database.url.strip_prefix("sqlite://") {
            let p = Path::new(rest.split('?').next().unwrap_or(rest));
            if p.is_relative() {
                let query = rest.find('?').map(|i| &rest[i..]).unwrap_or("");
                self.database.url = format!("sqlite://{}{}", base.join(p).display(), query);
            }
        }
    }

    /// Checks every limit and cross-field rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        range("server.max_message_bytes", s.max_message_bytes as u64, 1024, 64 * 1024 * 1024)?;
        range("server.max_concurrent_streams", u64::from(s.max_concurrent_streams), 1, 10_000)?;
        range("server.max_connections", s.max_connections as u64, 1, 100_000)?;
        range("server.request_timeout_secs", s.request_timeout_secs, 1, 3600)?;
        range("server.handshake_timeout_secs", s.handshake_timeout_secs, 1, 300)?;
        range("server.shutdown_grace_secs", s.shutdown_grace_secs, 0, 3600)?;
        range("hsm.pool_size", self.hsm.pool_size as u64, 1, 256)?;
        range("hsm.recovery.max_attempts", u64::from(self.hsm.recovery.max_attempts), 1, 100)?;
        range("hsm.recovery.max_backoff_ms", self.hsm.recovery.max_backoff_ms, 1, 60_000)?;
        range("hsm.recovery.down_retry_ms", self.hsm.recovery.down_retry_ms, 1, 600_000)?;
        range("derive.max_batch_cards", self.derive.max_batch_cards, 1, 100_000_000)?;
        range("derive.batch_chunk", self.derive.batch_chunk as u64, 1, 1024)?;
        range("ca.crl_validity_hours", self.ca.crl_validity_hours, 1, 24 * 366)?;
        range("ca.crl_check_secs", self.ca.crl_check_secs, 1, 86_400)?;
        range("ca.token_max_ttl_secs", self.ca.token_max_ttl_secs, 60, 366 * 86_400)?;
        range("ca.token_default_ttl_secs", self.ca.token_default_ttl_secs, 60, self.ca.token_max_ttl_secs)?;
        range("ca.revocation_refresh_ms", self.ca.revocation_refresh_ms, 0, 60_000)?;
        range("ca.max_csr_bytes", self.ca.max_csr_bytes as u64, 256, kms_ca::MAX_CSR_SIZE as u64)?;
        kms_ca::check_identifier("ca.external_tenant", &self.ca.external_tenant)
            .map_err(|e| ConfigError::Invalid { field: "ca.external_tenant", reason: e.to_string() })?;
        if let Some(url) = &self.ca.crl_base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                field: "ca.crl_base_url",
                reason: format!("{url:?} must be an http:// or https:// URL"),
            });
        }
        range("audit.checkpoint_interval_secs", self.audit.checkpoint_interval_secs, 0, 86_400)?;
        let label = &self.audit.checkpoint_key_label;
        if label.is_empty() || label.len() > 128 || label.chars().any(char::is_control) {
            return Err(ConfigError::Invalid {
                field: "audit.checkpoint_key_label",
                reason: format!("{label:?} must be 1-128 bytes without control characters"),
            });
        }
        range("database.max_connections", u64::from(self.database.max_connections), 1, 1000)?;
        range("database.connect_timeout_secs", self.database.connect_timeout_secs, 1, 300)?;
        if self.hsm.token_label.is_empty() || self.hsm.token_label.len() > 32 {
            return Err(ConfigError::Invalid {
                field: "hsm.token_label",
                reason: "must be 1-32 bytes (the CK_TOKEN_INFO label field)".into(),
            });
        }
        match (&self.hsm.pin_file, &self.hsm.pin_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    field: "hsm.pin_file",
                    reason: "set either pin_file or pin_env, not both".into(),
                });
            }
            (None, None) => {
                return Err(ConfigError::Invalid {
                    field: "hsm.pin_file",
                    reason: "one of pin_file or pin_env is required (the PIN is never taken from the command line)"
                        .into(),
                });
            }
            _ => {}
        }
        if !(self.database.url.starts_with("sqlite:") || self.database.url.starts_with("postgres")) {
            return Err(ConfigError::Invalid {
                field: "database.url",
                reason: "must start with sqlite:// or postgres://".into(),
            });
        }
        if self.logging.level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return Err(ConfigError::Invalid {
                field: "logging.level",
                reason: format!("{:?} is not a valid filter", self.logging.level),
            });
        }
        Ok(())
    }

    /// Reads the HSM user PIN from the file or environment variable named
    /// in the configuration. Trailing newlines are removed; an empty PIN is
    /// refused.
    pub fn read_pin(&self) -> Result<SecretString, ConfigError> {
        let raw = if let Some(path) = &self.hsm.pin_file {
            std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Pin(format!("cannot read hsm.pin_file {}: {e}", path.display())))?
        } else if let Some(var) = &self.hsm.pin_env {
            std::env::var(var)
                .map_err(|_| ConfigError::Pin(format!("environment variable {var} (hsm.pin_env) is not set")))?
        } else {
            return Err(ConfigError::Pin("no PIN source configured".into()));
        };
        let pin = raw.lines().next().unwrap_or("").to_owned();
        drop(zeroize::Zeroizing::new(raw));
        if pin.is_empty() {
            return Err(ConfigError::Pin("the PIN is empty".into()));
        }
        Ok(SecretString::from(pin))
    }

    /// The request timeout as a `Duration`.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.server.request_timeout_secs)
    }
}

fn range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid { field, reason: format!("{value} is outside {min}..={max}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [tls]
        cert = "server.pem"
        key = "server.key"
        client_ca = "ca.pem"
        [hsm]
        module = "/usr/lib/softhsm/libsofthsm2.so"
        token_label = "kms"
        pin_env = "KMS_HSM_PIN"
        [database]
        url = "sqlite://kms.db"
    "#;

    fn minimal() -> Result<Config, ConfigError> {
        Config::parse(MINIMAL, Path::new("test.toml"))
    }

    #[test]
    fn defaults_are_safe() -> Result<(), ConfigError> {
        let c = minimal()?;
        c.validate()?;
        assert_eq!(c.server.max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(c.server.listen.ip().to_string(), "127.0.0.1");
        assert!(!c.logging.client_error_detail);
        assert_eq!(c.hsm.pool_size, 4);
        assert_eq!(c.audit.checkpoint_interval_secs, 300);
        assert_eq!(c.audit.checkpoint_key_label, "kms/audit-checkpoint");
        Ok(())
    }

    #[test]
    fn audit_checkpoint_settings_are_checked() -> Result<(), ConfigError> {
        let mut c = minimal()?;
        c.audit.checkpoint_interval_secs = 0;
        c.validate()?;
        c.audit.checkpoint_interval_secs = 86_401;
        let err = c.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("audit.checkpoint_interval_secs"), "{err}");
        c.audit.checkpoint_interval_secs = 60;
        c.audit.checkpoint_key_label = String::new();
        let err = c.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("audit.checkpoint_key_label"), "{err}");
        let text = format!("{MINIMAL}\n[audit]\ncheckpoint_interval_secs = 5\nsurprise = 1\n");
        let err = Config::parse(&text, Path::new("x.toml")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("surprise"), "{err}");
        Ok(())
    }

    #[test]
    fn unknown_field_is_refused_with_its_name() {
        let text = format!("{MINIMAL}\nsurprise = 1\n");
        let err = Config::parse(&text, Path::new("x.toml")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("surprise"), "{err}");
        assert!(err.contains("x.toml"), "{err}");
    }

    #[test]
    fn out_of_range_limit_is_refused() -> Result<(), ConfigError> {
        let mut c = minimal()?;
        c.server.max_message_bytes = 1;
        let err = c.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("server.max_message_bytes"), "{err}");
        Ok(())
    }

    #[test]
    fn pin_source_must_be_exactly_one() -> Result<(), ConfigError> {
        let mut c = minimal()?;
        c.hsm.pin_env = None;
        assert!(c.validate().is_err());
        c.hsm.pin_file = Some("a".into());
        c.hsm.pin_env = Some("B".into());
        assert!(c.validate().is_err());
        Ok(())
    }

    #[test]
    fn overrides_win_over_the_file() -> Result<(), ConfigError> {
        let mut c = minimal()?;
        c.apply(&Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 1))),
            database_url: Some("postgres://x".into()),
            log_level: None,
            ops_listen: None,
        });
        assert_eq!(c.server.listen.port(), 1);
        assert_eq!(c.database.url, "postgres://x");
        assert_eq!(c.logging.level, "info");
        Ok(())
    }

    #[test]
    fn relative_paths_follow_the_file() -> Result<(), ConfigError> {
        let mut c = minimal()?;
        c.resolve_paths(Path::new("/etc/kms"));
        assert_eq!(c.tls.cert, PathBuf::from("/etc/kms/server.pem"));
        assert_eq!(c.database.url, "sqlite:///etc/kms/kms.db");
        Ok(())
    }
}

#[cfg(test)]
mod sample {
    use super::*;

    /// The commented sample in the repository root parses and validates.
    #[test]
    fn sample_configuration_is_valid() -> Result<(), ConfigError> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kms.sample.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let config = Config::parse(&text, &path)?;
        config.validate()?;
        assert_eq!(config.hsm.token_label, "city-3301");
        assert_eq!(config.audit.checkpoint_interval_secs, 300);
        Ok(())
    }
}
