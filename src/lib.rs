//! Tollgate: a self-hosted, thread-per-core API gateway.
//!
//! The crate is split into pure cores that do no I/O (`http1`, `router`, `config`, `ratelimit`,
//! `cache`) and the thin I/O layer that drives them (`runtime`, `net`, `server`, `integration`,
//! `admin`). See `README.md` and `../shared/design/ARCHITECTURE.md` for the request path.

pub mod admin;
pub mod cache;
pub mod config;
pub mod error;
pub mod http1;
pub mod http2;
pub mod integration;
pub mod limits;
pub mod net;
pub mod ratelimit;
pub mod router;
pub mod runtime;
pub mod scan;
pub mod server;
pub mod telemetry;
pub mod websocket;
