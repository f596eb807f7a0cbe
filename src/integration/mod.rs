//! Integrations: what answers a routed request. `mock` answers from config (rendered by
//! `server::respond`); `http_proxy` forwards to an HTTP/1.1 backend through the per-core
//! keep-alive `pool`; `http_call` POSTs a document and reads the whole answer (WebSocket
//! events); `tunnel` relays an upgraded connection (a proxied WebSocket) byte for byte.

pub mod http_call;
pub mod http_proxy;
pub mod pool;
pub mod tunnel;
