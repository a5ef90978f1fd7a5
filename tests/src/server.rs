//! Starts the real `kms` binary and connects to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kms::cli::ClientOptions;
use tonic::transport::Channel;

use crate::pki::{ClientCert, TestPki};
use crate::token::{Module, Token};
use crate::{DbKind, TestDb, workspace_root};

/// The `kms` binary: `$KMS_BIN`, else built once with cargo.
pub fn kms_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("KMS_BIN", "kms", "kms")).clone()
}

/// A binary of the workspace: `$env_var`, else `cargo build -p package
/// --bin name` (a no-op when fresh) and its path in the target directory.
pub fn workspace_bin(env_var: &str, package: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env_var) {
        return PathBuf::from(p);
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", package, "--bin", name])
        .current_dir(workspace_root())
        .status()
        .expect("cargo build");
    assert!(status.success(), "building {name} failed");
    let target =
        std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace_root().join("target"));
    target.join("debug").join(name)
}

/// Everything a server under test needs.
pub struct Setup {
    /// Temporary directory of the test.
    pub dir: tempfile::TempDir,
    /// The CA the server trusts for clients (and that signed its certificate).
    pub pki: TestPki,
    /// An external CA (the ministry's reader CA) whose certificates may
    /// authorize a reader's enrollment (`[ca] external_trust_anchors`).
    pub ministry: TestPki,
    /// The token.
    pub token: Token,
    /// The database.
    pub db: TestDb,
    /// Extra TOML appended to the configuration.
    pub extra_config: String,
    /// Whether derivations need a production plan (`[plans] required`);
    /// off unless a test is about plans.
    pub plans_required: bool,
    /// The policy directory (default: the shipped `policies/`).
    pub policy_dir: PathBuf,
}

impl Setup {
    /// A fresh token (in the module of this run, see
    /// [`Module::from_env`]), PKI and database of `kind`.
    pub async fn new(kind: DbKind) -> Setup {
        Setup::with_module(Module::from_env(), kind).await
    }

    /// A fresh token in `module`, PKI and database of `kind`.
    pub async fn with_module(module: Module, kind: DbKind) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path(), "city");
        let ministry = TestPki::new(dir.path(), "ministry");
        let label = format!("kms-{}", crate::unique(4));
        let token = Token::new(module, dir.path(), &label);
        let db = TestDb::new(kind, dir.path()).await;
        Setup {
            dir,
            pki,
            ministry,
            token,
            db,
            extra_config: String::new(),
            plans_required: false,
            policy_dir: workspace_root().join("policies"),
        }
    }

    /// Writes the configuration file and returns its path.
    pub fn write_config(&self) -> PathBuf {
        let server = self.pki.server();
        let path = self.dir.path().join("kms.toml");
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
ready_file = "{ready}"
shutdown_grace_secs = 5

[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[hsm]
module = "{module}"
token_label = "{label}"
pin_file = "{pin}"
pool_size = 2

[hsm.module_env]
{module_env}
{vendor}

[database]
url = "{db}"

[policy]
dir = "{policies}"

[profiles]
dir = "{profiles}"

[ops]
listen = "127.0.0.1:0"

[ca]
profiles_dir = "{cert_profiles}"
crl_base_url = "http://crl.test/crl"
escrow_key = "city/3301/ca/escrow"
external_trust_anchors = ["{ministry}"]
external_tenant = "city-3301"

[plans]
required = {plans_required}

[logging]
level = "info,kms=debug"
{extra}
"#,
            ready = self.dir.path().join("ready.json").display(),
            plans_required = self.plans_required,
            cert = server.cert.display(),
            key = server.key.display(),
            ca = self.pki.ca_pem.display(),
            module = self.token.module.path().display(),
            label = self.token.label,
            pin = self.token.pin_file.display(),
            module_env = self.token.module_env_toml(),
            vendor = self.token.module.vendor_toml(),
            db = self.db.url,
            policies = self.policy_dir.display(),
            profiles = workspace_root().join("profiles").display(),
            cert_profiles = workspace_root().join("policies/certificates").display(),
            ministry = self.ministry.ca_pem.display(),
            extra = self.extra_config,
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts the server and waits until it listens.
    pub fn start(&self) -> Server {
        let config = self.write_config();
        Server::spawn(&config, self.dir.path())
    }

    /// Client options for a certificate from this setup's CA.
    pub fn client_options(&self, server: &Server, cert: &ClientCert) -> ClientOptions {
        ClientOptions {
            endpoint: format!("https://127.0.0.1:{}", server.grpc_port),
            ca: self.pki.ca_pem.clone(),
            cert: cert.cert.clone(),
            key: cert.key.clone(),
            server_name: Some("localhost".into()),
        }
    }

    /// A connected channel as a principal with `role` in tenant `city-3301`.
    pub async fn channel(&self, server: &Server, role: &str) -> Channel {
        let cert = self.pki.client(&format!("{role}-client"), Some(role), Some("city-3301"));
        self.client_options(server, &cert).connect().await.unwrap()
    }
}

/// A running server process; stopped (SIGTERM, then kill) on drop.
pub struct Server {
    child: Option<Child>,
    /// gRPC port.
    pub grpc_port: u16,
    /// Operations port.
    pub ops_port: u16,
    /// The server's stderr log.
    pub log: PathBuf,
}

impl Server {
    /// Spawns `kms serve --config`, waiting up to 60 s for its ready file.
    pub fn spawn(config: &Path, dir: &Path) -> Server {
        Server::spawn_with(config, dir, &[], &[])
    }

    /// Like [`Server::spawn`], with extra environment and arguments.
    pub fn spawn_with(config: &Path, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = dir.join(format!("server-{}.log", crate::unique(3)));
        let mut child = Command::new(kms_bin())
            .args(["serve", "--config"])
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn kms");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                let port = |k: &str| {
                    v[k].as_str().and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse().ok()).unwrap_or(0)
                };
                return Server { grpc_port: port("grpc"), ops_port: port("ops"), child: Some(child), log };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "kms exited with {status} before listening:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "kms did not start within 60 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to 5 s for `needle` to appear in the server's log.
    pub fn log_contains(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
    }
}

/// Runs `kms serve` with `config` expecting it to refuse to start; returns
/// its stderr.
pub fn expect_startup_failure(config: &Path) -> String {
    expect_startup_failure_with(config, &[], &[])
}

/// Like [`expect_startup_failure`], with extra environment and arguments.
pub fn expect_startup_failure_with(config: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(kms_bin())
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("spawn kms");
    assert!(!out.status.success(), "kms started although it should have refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
