//! Configuration: the TOML file, parsed into a model, validated with line-precise errors, and
//! compiled (`compile`) into the immutable `Snapshot` every core serves from.
//!
//! This module owns what a valid config is. It does not own serving: `runtime` swaps snapshots.

pub(crate) mod compile;
mod load;
mod model;
pub mod template;

pub use compile::{
    CacheStage, CompiledApi, CompiledIntegration, CompiledRoute, MockResponse, ProxyTarget,
    Rendered, RouteCache, Snapshot, StageRoutes, compile,
};
pub use load::{ConfigError, load, parse};
pub use model::*;
pub use template::{Part, Template};
