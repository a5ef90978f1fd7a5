//! Module configuration: the TOML file named by `HSM_SIM_CONF`.
//!
//! See README.md for the reference and a commented sample. Without
//! `HSM_SIM_CONF` the module has one slot (id 0) whose token lives in
//! `$HSM_SIM_DIR` or, if that is unset, `./hsm-sim-tokens`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::vendor::VendorIds;

/// Environment variable naming the configuration file.
pub const ENV_CONF: &str = "HSM_SIM_CONF";
/// Environment variable naming the token directory of the default slot.
pub const ENV_DIR: &str = "HSM_SIM_DIR";
/// Environment variable with fault-injection settings (overrides `[faults]`).
pub const ENV_FAULTS: &str = "HSM_SIM_FAULTS";

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Module-wide settings.
    #[serde(default)]
    pub module: ModuleConfig,
    /// One entry per slot.
    #[serde(default, rename = "slot")]
    pub slots: Vec<SlotConfig>,
    /// Vendor-defined numbers.
    #[serde(default)]
    pub vendor: VendorIds,
    /// Fault injection.
    #[serde(default)]
    pub faults: FaultConfig,
}

/// Module-wide settings (`[module]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModuleConfig {
    /// PBKDF2-HMAC-SHA256 iterations for PIN hashing and the token key's KEK.
    pub pin_kdf_iterations: u32,
    /// Minimum PIN length reported and enforced.
    pub min_pin_len: usize,
    /// Maximum PIN length reported and enforced.
    pub max_pin_len: usize,
    /// Consecutive wrong PINs after which that PIN is locked
    /// (`CKR_PIN_LOCKED`); 0 = never. A locked user PIN is reset by the SO
    /// with `C_InitPIN`; a locked SO PIN only by re-initialising the token
    /// directory.
    pub max_pin_failures: u32,
}

impl Default for ModuleConfig {
    fn default() -> Self {
        Self { pin_kdf_iterations: 100_000, min_pin_len: 4, max_pin_len: 255, max_pin_failures: 0 }
    }
}

/// One slot (`[[slot]]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    /// The slot id reported by `C_GetSlotList`.
    pub id: u64,
    /// Slot description (the token label is set by `C_InitToken`).
    #[serde(default)]
    pub label: Option<String>,
    /// Directory holding this slot's token; relative paths are relative to
    /// the configuration file.
    pub dir: PathBuf,
}

/// Fault injection (`[faults]`); see README.md for the exact semantics.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Milliseconds of sleep added to every call.
    pub latency_ms: u64,
    /// If set, `latency_ms` applies only while this file exists (so a test
    /// can slow the module down after start-up).
    pub latency_file: Option<PathBuf>,
    /// Probability (0..=1) that a call to the named function fails.
    pub fail_rate: BTreeMap<String, f64>,
    /// Return value of a `fail_rate` failure (default `CKR_DEVICE_ERROR`).
    pub fail_rv: Option<String>,
    /// If set, `fail_rate` applies only while this file exists (so a test
    /// can make one function fail after start-up, e.g. in the middle of a
    /// multi-step operation, while every other function keeps working).
    pub fail_rate_file: Option<PathBuf>,
    /// After this many calls, every further call fails (0 = off).
    pub after_calls: u64,
    /// Return value once `after_calls` is reached (default `CKR_DEVICE_REMOVED`).
    pub after_calls_rv: Option<String>,
    /// While this file exists, every call fails.
    pub while_file: Option<PathBuf>,
    /// Return value while `while_file` exists (default `CKR_DEVICE_REMOVED`).
    pub while_file_rv: Option<String>,
    /// Seed of the failure-rate generator (0 = random).
    pub seed: u64,
}

impl Config {
    /// Loads the configuration from `HSM_SIM_CONF`, or the default.
    pub fn load() -> Result<Self, String> {
        let mut cfg = match std::env::var_os(ENV_CONF) {
            Some(path) => Self::from_file(Path::new(&path))?,
            None => Self::default_config(),
        };
        if let Ok(spec) = std::env::var(ENV_FAULTS) {
            cfg.faults.apply_env(&spec)?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a configuration file; relative slot directories are resolved
    /// against the file's directory.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for slot in &mut cfg.slots {
            if slot.dir.is_relative() {
                slot.dir = base.join(&slot.dir);
            }
        }
        if cfg.slots.is_empty() {
            cfg.slots = Self::default_config().slots;
        }
        Ok(cfg)
    }

    /// One slot, id 0, in `$HSM_SIM_DIR` or `./hsm-sim-tokens`.
    pub fn default_config() -> Self {
        let dir = std::env::var_os(ENV_DIR).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("hsm-sim-tokens"));
        Self {
            module: ModuleConfig::default(),
            slots: vec![SlotConfig { id: 0, label: None, dir }],
            vendor: VendorIds::default(),
            faults: FaultConfig::default(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        self.vendor.validate()?;
        for (i, s) in self.slots.iter().enumerate() {
            if self.slots[..i].iter().any(|o| o.id == s.id) {
                return Err(format!("[[slot]] id {} appears twice", s.id));
            }
            if self.slots[..i].iter().any(|o| o.dir == s.dir) {
                return Err(format!("[[slot]] dir {} appears twice", s.dir.display()));
            }
        }
        if self.module.pin_kdf_iterations == 0 {
            return Err("[module] pin_kdf_iterations must be at least 1".into());
        }
        for (f, r) in &self.faults.fail_rate {
            if !(0.0..=1.0).contains(r) {
                return Err(format!("[faults] fail_rate.{f} = {r} is not within 0..=1"));
            }
        }
        Ok(())
    }
}

impl FaultConfig {
    /// Applies `HSM_SIM_FAULTS`: `key=value` pairs separated by `;` or `,`,
    /// keys as in `[faults]`, with `fail_rate.C_Name=0.5` for the map.
    pub fn apply_env(&mut self, spec: &str) -> Result<(), String> {
        for item in spec.split([';', ',']).map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| format!("{ENV_FAULTS}: `{item}` is not key=value"))?;
            let (k, v) = (k.trim(), v.trim());
            let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{ENV_FAULTS}: {k}={v} is not a number"));
            match k {
                "latency_ms" => self.latency_ms = num(v)?,
                "latency_file" => self.latency_file = Some(PathBuf::from(v)),
                "after_calls" => self.after_calls = num(v)?,
                "seed" => self.seed = num(v)?,
                "fail_rv" => self.fail_rv = Some(v.to_string()),
                "fail_rate_file" => self.fail_rate_file = Some(PathBuf::from(v)),
                "after_calls_rv" => self.after_calls_rv = Some(v.to_string()),
                "while_file" => self.while_file = Some(PathBuf::from(v)),
                "while_file_rv" => self.while_file_rv = Some(v.to_string()),
                _ => {
                    let f = k.strip_prefix("fail_rate.").ok_or_else(|| format!("{ENV_FAULTS}: unknown key `{k}`"))?;
                    let r: f64 = v.parse().map_err(|_| format!("{ENV_FAULTS}: {k}={v} is not a number"))?;
                    self.fail_rate.insert(f.to_string(), r);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn sample_file_parses() {
        let dir = std::env::temp_dir().join(format!("hsm-sim-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hsm-sim.toml");
        std::fs::write(&path, include_str!("../hsm-sim.sample.toml")).unwrap();
        let c = Config::from_file(&path).unwrap();
        c.validate().unwrap();
        assert_eq!(c.slots.len(), 2);
        assert_eq!(c.slots[1].dir, dir.join("tokens/slot1"));
        assert_eq!(c.vendor.sm4_ecb, 0x8000_0108);
        assert_eq!(c.module.pin_kdf_iterations, 100_000);
    }

    #[test]
    fn rejects_bad_files() {
        let parse = |s: &str| toml::from_str::<Config>(s).map_err(|e| e.to_string()).and_then(|c| c.validate());
        assert!(parse("[module]\nunknown = 1\n").is_err());
        assert!(parse("[vendor]\nsm4_ecb = 0x108\n").is_err(), "below CKM_VENDOR_DEFINED");
        assert!(parse("[vendor]\nsm4_ecb = 0x80000109\n").is_err(), "collides with sm4_cbc");
        assert!(parse("[[slot]]\nid = 0\ndir = \"a\"\n[[slot]]\nid = 0\ndir = \"b\"\n").is_err());
        assert!(parse("[faults]\nfail_rate = { C_Sign = 1.5 }\n").is_err());
        assert!(parse("[[slot]]\nid = 3\ndir = \"a\"\n").is_ok());
    }

    #[test]
    fn service_vendor_names_are_accepted() {
        // The kms configuration's `[hsm.vendor]` names work here too, so one
        // table can be copied between the two files.
        let c: Config =
            toml::from_str("[vendor]\nsm2_sign = 0x80000A01\nkey_xor = 0x80000A02\nretail_mac = 0x80000A03\nsm4_key_type = 0x80000A04\n")
                .unwrap();
        assert_eq!(c.vendor.sm2_sm3_sign, 0x8000_0A01);
        assert_eq!(c.vendor.xor_base_and_key, 0x8000_0A02);
        assert_eq!(c.vendor.des3_retail_mac, 0x8000_0A03);
        assert_eq!(c.vendor.ckk_sm4, 0x8000_0A04);
    }

    #[test]
    fn env_fault_syntax() {
        let mut f = FaultConfig::default();
        f.apply_env("latency_ms=5; fail_rate.C_Sign=0.25, after_calls=10;after_calls_rv=CKR_SESSION_HANDLE_INVALID;while_file=/tmp/x")
            .unwrap();
        assert_eq!(f.latency_ms, 5);
        assert_eq!(f.fail_rate.get("C_Sign"), Some(&0.25));
        assert_eq!(f.after_calls, 10);
        assert_eq!(f.after_calls_rv.as_deref(), Some("CKR_SESSION_HANDLE_INVALID"));
        assert_eq!(f.while_file, Some(PathBuf::from("/tmp/x")));
        assert!(FaultConfig::default().apply_env("bogus=1").is_err());
        assert!(FaultConfig::default().apply_env("latency_ms=abc").is_err());
        assert!(FaultConfig::default().apply_env("noequals").is_err());
    }
}
