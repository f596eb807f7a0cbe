//! Validated `Config` → immutable `Snapshot`: router built, stage variables substituted into every
//! template per stage, backend addresses resolved. Runs on the control thread, never on a core.

use std::sync::Arc;

use crate::router::Router;

use super::Config;

/// What every core serves from. Swapped whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub router: Router,
    pub generation: u64,
}

#[derive(Debug)]
pub struct StageRoutes;
#[derive(Debug)]
pub struct CompiledRoute;
#[derive(Debug)]
pub enum CompiledIntegration {}

pub fn compile(config: Config, generation: u64) -> Result<Snapshot, Vec<String>> {
    let _ = (config, generation);
    todo!()
}
