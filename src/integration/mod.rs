//! Integrations: what answers a routed request. `mock` answers from config (rendered by
//! `server::respond`); `http_proxy` forwards to an HTTP/1.1 backend through the per-core
//! keep-alive `pool`.

pub mod http_proxy;
pub mod pool;
