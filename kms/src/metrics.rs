//! Prometheus metrics, served on the operations listener at `/metrics`.
//!
//! - `kms_rpc_calls_total{rpc,code}` and `kms_rpc_duration_seconds{rpc}`
//! - `kms_hsm_operation_duration_seconds{op}` and
//!   `kms_hsm_errors_total{function,rv}`
//! - `kms_hsm_sessions_open`, `kms_hsm_sessions_in_use`,
//!   `kms_hsm_sessions_recovered_total`, `kms_hsm_module_up`

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCode {
    rpc: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HsmFailure {
    function: String,
    rv: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// All of the service's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Mutex<Registry>,
    rpc_calls: Family<RpcCode, Counter>,
    rpc_duration: Family<Rpc, Histogram, fn() -> Histogram>,
    hsm_duration: Family<Op, Histogram, fn() -> Histogram>,
    hsm_errors: Family<HsmFailure, Counter>,
    sessions_open: Gauge,
    sessions_in_use: Gauge,
    sessions_recovered: Counter,
    module_up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kms");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            rpc_calls: Family::default(),
            rpc_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            hsm_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            hsm_errors: Family::default(),
            sessions_open: Gauge::default(),
            sessions_in_use: Gauge::default(),
            sessions_recovered: Counter::default(),
            module_up: Gauge::default(),
        };
        registry.register("rpc_calls", "gRPC calls by method and status code", m.rpc_calls.clone());
        registry.register("rpc_duration_seconds", "gRPC call latency by method", m.rpc_duration.clone());
        registry.register("hsm_operation_duration_seconds", "HSM operation latency", m.hsm_duration.clone());
        registry.register("hsm_errors", "PKCS#11 errors by function and return value", m.hsm_errors.clone());
        registry.register("hsm_sessions_open", "PKCS#11 sessions open", m.sessions_open.clone());
        registry.register("hsm_sessions_in_use", "PKCS#11 sessions lent to a call", m.sessions_in_use.clone());
        registry.register("hsm_sessions_recovered", "PKCS#11 sessions reopened", m.sessions_recovered.clone());
        registry.register("hsm_module_up", "1 while the PKCS#11 module answers", m.module_up.clone());
        m.module_up.set(1);
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = registry;
        m
    }

    /// Records one finished gRPC call.
    pub fn observe_rpc(&self, rpc: &str, code: tonic::Code, elapsed: Duration) {
        self.rpc_calls.get_or_create(&RpcCode { rpc: rpc.to_owned(), code: format!("{code:?}") }).inc();
        self.rpc_duration.get_or_create(&Rpc { rpc: rpc.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// Records one HSM operation and, if it failed, the PKCS#11 function
    /// and return value.
    pub fn observe_hsm(&self, op: &str, elapsed: Duration, failure: Option<(&str, &str)>) {
        self.hsm_duration.get_or_create(&Op { op: op.to_owned() }).observe(elapsed.as_secs_f64());
        if let Some((function, rv)) = failure {
            self.hsm_errors.get_or_create(&HsmFailure { function: function.to_owned(), rv: rv.to_owned() }).inc();
        }
    }

    /// Sets the pool gauges.
    pub fn set_pool(&self, open: usize, in_use: usize) {
        self.sessions_open.set(open as i64);
        self.sessions_in_use.set(in_use as i64);
    }

    /// Counts a reopened session.
    pub fn session_recovered(&self) {
        self.sessions_recovered.inc();
    }

    /// Sets the module-up gauge.
    pub fn set_module_up(&self, up: bool) {
        self.module_up.set(i64::from(up));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
