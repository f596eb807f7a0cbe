//! Observability: log lines, per-core metrics shards merged on read, request ids.
//!
//! Everything here is either core-local (metrics shards, request-id counters, no sharing) or
//! written once at start-up and only read afterwards (the log level).

pub mod log;
pub mod metrics;
pub mod request_id;

pub use metrics::{CoreMetrics, MetricsShard};
pub use request_id::RequestIds;
