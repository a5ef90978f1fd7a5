//! Fault injection at the FFI boundary (see README.md, "Fault injection").

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cryptoki_sys::{CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED};

use crate::config::FaultConfig;
use crate::error::{Rv, rv_from_name};

/// Runtime fault state of one module instance.
pub(crate) struct Faults {
    latency: Option<Duration>,
    latency_file: Option<PathBuf>,
    fail_rate: Vec<(String, f64)>,
    fail_rv: Rv,
    fail_rate_file: Option<PathBuf>,
    after_calls: u64,
    after_calls_rv: Rv,
    while_file: Option<PathBuf>,
    while_file_rv: Rv,
    calls: AtomicU64,
    rng: Mutex<u64>,
}

fn parse_rv(v: &Option<String>, default: Rv, key: &str) -> Result<Rv, String> {
    match v {
        None => Ok(default),
        Some(s) => rv_from_name(s).ok_or_else(|| format!("[faults] {key}: unknown CKR `{s}`")),
    }
}

impl Faults {
    /// Builds the runtime state from the configuration.
    pub(crate) fn new(cfg: &FaultConfig) -> Result<Self, String> {
        let seed = if cfg.seed == 0 {
            let mut b = [0u8; 8];
            getrandom_fill(&mut b);
            u64::from_le_bytes(b) | 1
        } else {
            cfg.seed
        };
        Ok(Self {
            latency: (cfg.latency_ms > 0).then(|| Duration::from_millis(cfg.latency_ms)),
            latency_file: cfg.latency_file.clone(),
            fail_rate: cfg.fail_rate.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            fail_rv: parse_rv(&cfg.fail_rv, CKR_DEVICE_ERROR, "fail_rv")?,
            fail_rate_file: cfg.fail_rate_file.clone(),
            after_calls: cfg.after_calls,
            after_calls_rv: parse_rv(&cfg.after_calls_rv, CKR_DEVICE_REMOVED, "after_calls_rv")?,
            while_file: cfg.while_file.clone(),
            while_file_rv: parse_rv(&cfg.while_file_rv, CKR_DEVICE_REMOVED, "while_file_rv")?,
            calls: AtomicU64::new(0),
            rng: Mutex::new(seed),
        })
    }

    /// Whether any fault is configured (lets the hot path skip the checks).
    pub(crate) fn active(&self) -> bool {
        self.latency.is_some() || !self.fail_rate.is_empty() || self.after_calls > 0 || self.while_file.is_some()
    }

    /// Called at the start of every entry point (except `C_GetFunctionList`,
    /// `C_Initialize` and `C_Finalize`): sleeps, then decides whether the call
    /// fails and with which value.
    pub(crate) fn check(&self, function: &str) -> Result<(), Rv> {
        if let Some(d) = self.latency
            && self.latency_file.as_ref().is_none_or(|f| f.exists())
        {
            std::thread::sleep(d);
        }
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if self.after_calls > 0 && n > self.after_calls {
            return Err(self.after_calls_rv);
        }
        if let Some(f) = &self.while_file
            && f.exists()
        {
            return Err(self.while_file_rv);
        }
        if let Some((_, rate)) = self.fail_rate.iter().find(|(k, _)| k == function || k == "*")
            && self.fail_rate_file.as_ref().is_none_or(|f| f.exists())
        {
            let x = {
                let mut s = self.rng.lock().map_err(|_| CKR_DEVICE_ERROR)?;
                // xorshift64*: a reproducible stream for a given seed.
                *s ^= *s >> 12;
                *s ^= *s << 25;
                *s ^= *s >> 27;
                s.wrapping_mul(0x2545_F491_4F6C_DD1D)
            };
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            if u < *rate {
                return Err(self.fail_rv);
            }
        }
        Ok(())
    }
}

fn getrandom_fill(buf: &mut [u8]) {
    use rand_core::RngCore;
    rand_core::OsRng.fill_bytes(buf);
}
