//! Listening sockets: one SO_REUSEPORT socket per core per listener address, bound before the
//! cores start so that a port-0 address resolves to the same port on every core.
//!
//! This module owns socket options and binding; it does not accept connections (the cores do).
//! `tls` builds rustls configs and drives TLS over buffers; `io_compat` adapts a compio socket
//! (plain or TLS) to the poll-based traits the h2 crate needs.

pub mod io_compat;
pub mod listener;
pub mod tls;
pub mod x509;

pub use listener::{BoundListeners, bind_listeners, bind_reuseport};
