//! HTTP/1.1 wire format as pure functions and state machines: request and response heads parsed
//! with `httparse` into caller-provided header arrays (no heap allocation), body framing decoders
//! (Content-Length, chunked) and head encoding.
//!
//! This module owns what is and is not acceptable on the wire (request smuggling shapes, limits).
//! It does no I/O and keeps no connection state: `server::conn` drives it.

pub mod body;
pub mod encode;
pub mod parse;

pub use body::{BodyError, ChunkedDecoder};
pub use parse::{
    Framing, HeadError, HeadLimits, RequestHead, ResponseHead, Version, parse_request,
    parse_response,
};
