//! What the benchmark binaries (`bench-derive`, `bench-certs`) share: the
//! common command-line options, the raw PKCS#11 loop run in a child process
//! with the module's environment, opening the token there, the service's
//! configuration for a measurement, and percentiles.

use std::path::PathBuf;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::slot::Slot;

use crate::server::Setup;
use crate::token::Module;

/// Options every benchmark takes.
#[derive(Debug, Clone)]
pub struct Common {
    /// Modules to measure (`--module softhsm|hsm-sim`; default both).
    pub modules: Vec<Module>,
    /// Seconds per measurement (`--seconds N`).
    pub seconds: u64,
    /// Raw-loop threads and service HSM sessions (`--threads N`).
    pub threads: usize,
    /// SQLite `synchronous` of the service (`--sqlite-sync full|normal`).
    pub sqlite_sync: &'static str,
}

impl Common {
    /// Defaults: both modules, `seconds` per measurement, two threads,
    /// `synchronous=full`.
    pub fn new(seconds: u64) -> Common {
        Common { modules: vec![Module::SoftHsm, Module::HsmSim], seconds, threads: 2, sqlite_sync: "full" }
    }

    /// Takes `arg` (and its value from `rest`) if it is a common option;
    /// false if it is not one.
    pub fn take(&mut self, arg: &str, rest: &mut impl Iterator<Item = String>) -> bool {
        match arg {
            "--module" => {
                self.modules = vec![match rest.next().as_deref() {
                    Some("softhsm") => Module::SoftHsm,
                    Some("hsm-sim") => Module::HsmSim,
                    other => panic!("--module softhsm|hsm-sim, not {other:?}"),
                }]
            }
            "--seconds" => self.seconds = rest.next().and_then(|s| s.parse().ok()).expect("--seconds N"),
            "--threads" => self.threads = rest.next().and_then(|s| s.parse().ok()).expect("--threads N"),
            "--sqlite-sync" => {
                self.sqlite_sync = match rest.next().as_deref() {
                    Some("full") => "full",
                    Some("normal") => "normal",
                    other => panic!("--sqlite-sync full|normal, not {other:?}"),
                }
            }
            _ => return false,
        }
        true
    }

    /// Usage text of the common options.
    pub const USAGE: &'static str =
        "[--module softhsm|hsm-sim] [--seconds N] [--threads N] [--sqlite-sync full|normal]";
}

/// Runs this benchmark binary again as `<exe> raw MODULE LABEL PIN SECONDS
/// THREADS` with the token's environment, and returns the figure it prints.
pub fn raw_in_child(setup: &Setup, module: Module, c: &Common) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("raw")
        .arg(module.path())
        .arg(&setup.token.label)
        .arg(&setup.token.pin)
        .arg(c.seconds.to_string())
        .arg(c.threads.to_string())
        .envs(setup.token.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "raw loop: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The child side: the arguments after `raw`, the module loaded and
/// initialized, and the slot holding the token.
pub struct RawArgs {
    /// The module.
    pub ctx: Pkcs11,
    /// The token's slot.
    pub slot: Slot,
    /// User PIN.
    pub pin: secrecy::SecretString,
    /// Seconds to run.
    pub seconds: u64,
    /// Threads.
    pub threads: usize,
}

/// Parses `MODULE LABEL PIN SECONDS THREADS` and opens the token.
pub fn raw_args(args: Vec<String>) -> RawArgs {
    let [module, label, pin, seconds, threads]: [String; 5] =
        args.try_into().expect("raw MODULE LABEL PIN SECONDS THREADS");
    let ctx = Pkcs11::new(PathBuf::from(module)).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).map(|i| i.label().trim_end() == label).unwrap_or(false))
        .unwrap();
    RawArgs {
        ctx,
        slot,
        pin: secrecy::SecretString::from(pin),
        seconds: seconds.parse().unwrap(),
        threads: threads.parse().unwrap(),
    }
}

/// Writes the service configuration for a measurement: `threads` HSM
/// sessions, quiet logs, the SQLite `synchronous` asked for, and `extra`
/// TOML. Returns its path.
pub fn service_config(setup: &Setup, c: &Common) -> PathBuf {
    let config = setup.write_config();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("pool_size = 2", &format!("pool_size = {}", c.threads))
        .replace("level = \"info,kms=debug\"", "level = \"warn\"")
        .replace("[database]\n", &format!("[database]\nsqlite_synchronous = \"{}\"\n", c.sqlite_sync));
    std::fs::write(&config, text).unwrap();
    config
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The module's name in result tables.
pub fn module_name(m: Module) -> &'static str {
    match m {
        Module::SoftHsm => "SoftHSM 2.6",
        Module::HsmSim => "hsm-sim",
    }
}
