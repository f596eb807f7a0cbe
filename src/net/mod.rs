//! Listening sockets: one SO_REUSEPORT socket per core per listener address, bound before the
//! cores start so that a port-0 address resolves to the same port on every core.
//!
//! This module owns socket options and binding; it does not accept connections (the cores do).

pub mod listener;

pub use listener::{BoundListeners, bind_listeners, bind_reuseport};
