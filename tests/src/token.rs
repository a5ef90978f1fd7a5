//! Tokens for end-to-end tests, in either supported module, each in a
//! directory of its own. `KMS_TEST_MODULE` (`softhsm` or `hsm-sim`) picks
//! the module of tests that do not ask for one; `scripts/test` runs the
//! suite once with each.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::workspace_root;

/// A PKCS#11 module the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    /// SoftHSM 2 (Debian's softhsm2).
    SoftHsm,
    /// The project's own hsm-sim.
    HsmSim,
}

/// Both modules.
pub const ALL_MODULES: [Module; 2] = [Module::SoftHsm, Module::HsmSim];

impl Module {
    /// The module of this run: `KMS_TEST_MODULE`, default SoftHSM.
    pub fn from_env() -> Module {
        match std::env::var("KMS_TEST_MODULE").as_deref() {
            Ok("hsm-sim") => Module::HsmSim,
            Ok("softhsm") | Err(_) => Module::SoftHsm,
            Ok(other) => panic!("KMS_TEST_MODULE={other}: use softhsm or hsm-sim"),
        }
    }

    /// Path of the shared library.
    pub fn path(self) -> PathBuf {
        match self {
            Module::SoftHsm => PathBuf::from(crate::softhsm::MODULE),
            Module::HsmSim => std::env::var_os("HSM_SIM_MODULE").map(PathBuf::from).unwrap_or_else(|| {
                let target = std::env::var("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| workspace_root().join("target"));
                target.join("debug").join("libhsm_sim.so")
            }),
        }
    }

    /// The `[hsm.vendor]` table for this module (hsm-sim's default numbers).
    pub fn vendor_toml(self) -> &'static str {
        match self {
            Module::SoftHsm => "",
            Module::HsmSim => kms::dev::HSM_SIM_VENDOR,
        }
    }
}

/// The environment of `module` with its tokens under `dir` (created with
/// no token initialised: SoftHSM offers a blank slot, hsm-sim's slot 0 is
/// blank until `C_InitToken`).
pub fn module_env(module: Module, dir: &Path) -> Vec<(String, String)> {
    match module {
        Module::SoftHsm => {
            let tokens = dir.join("softhsm-tokens");
            std::fs::create_dir_all(&tokens).unwrap();
            let conf = dir.join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
            )
            .unwrap();
            vec![("SOFTHSM2_CONF".to_owned(), conf.display().to_string())]
        }
        Module::HsmSim => {
            let conf = dir.join("hsm-sim.toml");
            // why: a low KDF cost keeps per-test token set-up fast; production tokens keep the default.
            std::fs::write(
                &conf,
                "[module]\npin_kdf_iterations = 1000\n\n[[slot]]\nid = 0\ndir = \"hsm-sim-tokens/slot0\"\n",
            )
            .unwrap();
            vec![("HSM_SIM_CONF".to_owned(), conf.display().to_string())]
        }
    }
}

/// A token of one module in a test directory.
pub struct Token {
    /// The module.
    pub module: Module,
    /// Environment the module needs (its configuration file).
    pub env: Vec<(String, String)>,
    /// Token label.
    pub label: String,
    /// User PIN (test value).
    pub pin: String,
    /// File holding the user PIN.
    pub pin_file: PathBuf,
    /// Extra TOML for the module's configuration (fault injection).
    pub dir: PathBuf,
}

/// A key of known value to seed.
pub struct SeedKey<'a> {
    /// CKA_LABEL.
    pub label: &'a str,
    /// `AES` or `DES2`.
    pub key_type: &'a str,
    /// Value.
    pub value: &'a [u8],
    /// CKA_WRAP.
    pub wrap: bool,
    /// CKA_UNWRAP.
    pub unwrap: bool,
    /// CKA_DERIVE.
    pub derive: bool,
}

fn test_token_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| crate::server::workspace_bin("KMS_TEST_TOKEN_BIN", "kms-tests", "test-token")).clone()
}

impl Token {
    /// Creates and initialises a token labelled `label` under `dir`.
    pub fn new(module: Module, dir: &Path, label: &str) -> Token {
        let env = module_env(module, dir);
        let token = Token {
            module,
            env,
            label: label.to_owned(),
            pin: format!("pin-{}", crate::unique(4)),
            pin_file: dir.join("user.pin"),
            dir: dir.to_owned(),
        };
        std::fs::write(&token.pin_file, &token.pin).unwrap();
        token.run_tool(serde_json::json!({ "init_so_pin": "so-pin-1234", "keys": [] }));
        token
    }

    fn run_tool(&self, mut req: serde_json::Value) {
        req["module"] = serde_json::json!(self.module.path().display().to_string());
        req["label"] = serde_json::json!(self.label);
        req["pin"] = serde_json::json!(self.pin);
        let mut child = Command::new(test_token_bin())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("test-token");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(req.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "test-token failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Creates sensitive, non-extractable token objects of known value (as
    /// a key ceremony would), before the server starts.
    pub fn seed(&self, keys: &[SeedKey<'_>]) {
        let keys: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "label": k.label, "key_type": k.key_type, "value": hex::encode(k.value),
                    "wrap": k.wrap, "unwrap": k.unwrap, "derive": k.derive,
                })
            })
            .collect();
        self.run_tool(serde_json::json!({ "keys": keys }));
    }

    /// Seeds one DES2 derivation key that is extractable without
    /// `CKA_WRAP_WITH_TRUSTED`: a key the service must refuse to adopt.
    pub fn seed_extractable(&self, label: &str, value: &[u8]) {
        let key = serde_json::json!({
            "label": label, "key_type": "DES2", "value": hex::encode(value),
            "wrap": false, "unwrap": false, "derive": true, "extractable": true,
        });
        self.run_tool(serde_json::json!({ "keys": [key] }));
    }

    /// Appends a `[faults]` table to hsm-sim's configuration (read when the
    /// server loads the module), e.g. an outage while a file exists.
    pub fn hsm_sim_faults(&self, faults_toml: &str) {
        assert_eq!(self.module, Module::HsmSim, "fault injection is an hsm-sim feature");
        let conf = self.dir.join("hsm-sim.toml");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("\n[faults]\n");
        text.push_str(faults_toml);
        std::fs::write(&conf, text).unwrap();
    }

    /// Environment as `(key, value)` pairs for TOML `[hsm.module_env]`.
    pub fn module_env_toml(&self) -> String {
        self.env.iter().map(|(k, v)| format!("{k} = {v:?}\n")).collect()
    }
}
