//! The serving side: the control thread (`control`), each core's event loop and context
//! (`core`), and the HTTP/1.1 connection driver (`conn`, over `downstream`, answering through
//! `respond` or `integration::http_proxy`).

pub mod conn;
pub mod control;
pub mod core;
pub mod decide;
pub mod downstream;
pub mod notify;
pub mod respond;

pub use control::{ServeOptions, StartError, serve};
