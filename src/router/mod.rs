//! Request routing: which API (by host and base path), which stage (by the first path segment),
//! which route (by method and path). Pure: compiled once per config snapshot, then read-only.
//!
//! Matching cost does not grow with the number of routes: routes compile into a segment trie
//! with hashed literal children, so 10,000 routes match as fast as 10. The matching rules (host
//! classes, base paths, stages, specificity, methods, empty segments) are spelled out at the top of `table.rs`.

mod key;
mod table;

pub use key::{Method, RouteKey, Segment};
pub use table::{ApiSpec, Match, Params, Router, RouterError};
