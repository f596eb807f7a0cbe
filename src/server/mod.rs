//! The serving side: the control thread (`control`), each core's event loop and context
//! (`core`), new connections up to their protocol (`accept`: TLS, h2c, ALPN), and the HTTP/1.1
//! connection driver (`conn`, over `downstream`, answering through `respond` or
//! `integration::http_proxy`), and the response cache on the request path (`cache`). HTTP/2 is
//! `crate::http2`.

pub mod accept;
pub mod cache;
pub mod conn;
pub mod control;
pub mod core;
pub mod decide;
pub mod downstream;
pub mod notify;
pub mod respond;

pub use control::{ServeOptions, StartError, serve};
