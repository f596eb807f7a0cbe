//! Every limit Tollgate enforces, in one place, with its unit last in the name.
//!
//! These are the defaults; most can be overridden in `[server]` (see `config::ServerConfig`).

/// Request line plus header block, in bytes (431, or 414 when the request line alone is longer).
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// Header fields in one request or upstream response head (431).
pub const HEADERS_MAX: usize = 100;
/// Hard ceiling for `headers_max`: the parser's stack array has this many slots.
pub const HEADERS_CEILING: usize = 256;
/// Default request body limit per route, in bytes (413). Amazon API Gateway's payload limit is 10 MB.
pub const BODY_BYTES_MAX: u64 = 10 * 1024 * 1024;
/// Time allowed to receive a complete request head once its first byte arrived (408, close).
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Idle time allowed on a keep-alive connection between requests (close, no response).
pub const KEEPALIVE_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Listen backlog for every SO_REUSEPORT socket.
pub const LISTEN_BACKLOG: u32 = 4096;
/// Default integration timeout (504), as Amazon API Gateway's 29 s.
pub const INTEGRATION_TIMEOUT_MS: u64 = 29_000;
/// Time a graceful shutdown waits for in-flight requests before closing what remains.
pub const SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
/// Time allowed to connect to a backend before answering 502.
pub const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Idle keep-alive connections kept per backend host, per core.
pub const UPSTREAM_IDLE_PER_HOST_MAX: usize = 64;
/// An idle pooled backend connection older than this is closed rather than reused.
pub const UPSTREAM_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Path parameters captured by one route.
pub const PATH_PARAMS_MAX: usize = 16;
/// Chunk-size line (size, extensions) in a chunked body, in bytes.
pub const CHUNK_LINE_BYTES_MAX: usize = 1024;
/// Trailer section of a chunked body, in bytes.
pub const TRAILER_BYTES_MAX: usize = 8 * 1024;
/// Read buffer per connection, in bytes; grows up to `HEADER_BYTES_MAX` for a head.
pub const READ_BUF_BYTES: usize = 16 * 1024;
/// Read buffer an idle client connection keeps (nginx's `client_header_buffer_size` is 1k too);
/// a head that does not fit grows it, and it shrinks back before the next idle wait.
pub const READ_BUF_IDLE_BYTES: usize = 1024;
/// Output buffer capacity an idle client connection may keep; a larger one is freed.
pub const OUT_BUF_IDLE_BYTES: usize = 4096;
/// Read size while a request or response body streams through, in bytes.
pub const BODY_READ_BYTES: usize = 64 * 1024;
/// Responses a pipelining client may have outstanding before we stop reading its requests.
pub const PIPELINE_DEPTH_MAX: usize = 64;
/// Well-formed incoming `x-request-id` values longer than this are replaced.
pub const REQUEST_ID_BYTES_MAX: usize = 128;
/// Account-wide throttle default, requests per second (Amazon API Gateway's account default).
pub const ACCOUNT_RATE: u64 = 10_000;
/// Account-wide throttle default burst (bucket size).
pub const ACCOUNT_BURST: u64 = 5_000;
/// How often throttle leases are reconciled between cores and the control thread, in ms.
pub const RECONCILE_TICK_MS: u64 = 5;
/// Retry-After for a limit that admits nothing (rate 0 or burst 0), in milliseconds.
pub const RETRY_AFTER_CLOSED_MS: u32 = 60_000;
/// An uncontended core keeps a throttle reserve of at least `burst / (this · cores)` tokens
/// (and at least 1), so an idle core can admit a short burst without asking first.
pub const THROTTLE_RESERVE_DIVISOR: u64 = 4;
/// Capacity of every bounded channel between a core and the control thread.
pub const CONTROL_CHANNEL_CAPACITY: usize = 1024;
/// How often each core looks at its control channel and refreshes its clock, in milliseconds.
pub const CORE_TICK_MS: u64 = 5;
/// Size of a config file we agree to read, in bytes.
pub const CONFIG_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Payload of one inbound WebSocket frame, in bytes (close 1009). Amazon API Gateway's is 32 KB.
/// The read buffer must be able to hold one whole frame plus its header (14 bytes).
pub const WS_FRAME_BYTES_MAX: usize = 32 * 1024;
/// Payload of one inbound WebSocket message, all its fragments together, in bytes (close 1009).
/// Amazon API Gateway's is 128 KB.
pub const WS_MESSAGE_BYTES_MAX: usize = 128 * 1024;
/// Largest `frame_bytes_max` / `message_bytes_max` a websocket API may configure, in bytes
/// (Autobahn's section 9 needs 16 MiB).
pub const WS_PAYLOAD_BYTES_CEILING: usize = 64 * 1024 * 1024;
/// A WebSocket connection without a message from its client for this long is closed with 1001.
/// Amazon API Gateway's idle timeout is 10 minutes.
pub const WS_IDLE_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// A WebSocket connection is closed with 1001 at this age. Amazon API Gateway's is 2 hours.
pub const WS_CONNECTION_AGE_MAX_MS: u64 = 2 * 60 * 60 * 1000;
/// Nothing received from a WebSocket client for this long: the gateway sends a ping; nothing
/// for as long again: the peer is gone and the connection is closed.
pub const WS_PING_INTERVAL_MS: u64 = 30_000;
/// Time a closing WebSocket waits for the client's close frame before closing TCP.
pub const WS_CLOSE_WAIT_MS: u64 = 2_000;
/// Outbound bytes a WebSocket connection may have queued (pushed through `@connections` while
/// it was busy) before further pushes are refused with 429.
pub const WS_QUEUE_BYTES_MAX: usize = 1024 * 1024;
/// Body of an admin request (`POST /@connections/{id}`), in bytes (413 above).
pub const ADMIN_BODY_BYTES_MAX: usize = WS_PAYLOAD_BYTES_CEILING;
/// Response body of an `http` integration (WebSocket events) kept, in bytes (502 above).
pub const INTEGRATION_RESPONSE_BYTES_MAX: usize = 10 * 1024 * 1024;
/// Idle time allowed on a proxied WebSocket (an `Upgrade` relayed to an `http_proxy` backend)
/// with no byte in either direction.
pub const WS_TUNNEL_IDLE_TIMEOUT_MS: u64 = WS_IDLE_TIMEOUT_MS;
/// Time allowed to write what a WebSocket connection has to send; a client that does not read
/// for this long is disconnected.
pub const WS_WRITE_TIMEOUT_MS: u64 = 30_000;
/// Concurrent HTTP/2 streams per connection (`server.http2_streams_max`).
pub const H2_STREAMS_MAX: u32 = 128;
/// HTTP/2 flow-control window a stream opens with, in bytes (request bodies in flight per stream).
pub const H2_STREAM_WINDOW_BYTES: u32 = 256 * 1024;
/// HTTP/2 connection-level flow-control window, in bytes (all streams' request bodies together).
pub const H2_CONN_WINDOW_BYTES: u32 = 1024 * 1024;
/// Response bytes one HTTP/2 stream may have buffered for sending before it waits for window.
pub const H2_SEND_BUFFER_BYTES: usize = 128 * 1024;
/// Streams a client may reset before we accept them (rapid-reset protection, CVE-2023-44487).
pub const H2_PENDING_ACCEPT_RESETS_MAX: usize = 32;
/// Streams we may reset because of the client's protocol errors before the connection is closed.
pub const H2_LOCAL_ERROR_RESETS_MAX: usize = 256;
/// Ciphertext read per TLS socket read, in bytes (one full TLS record is 16 KiB + overhead).
pub const TLS_READ_BYTES: usize = 32 * 1024;
/// Bytes the h2 I/O adapter buffers for writing before it applies backpressure.
pub const H2_WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// TLS sessions (by id) each TLS listener remembers for resumption.
pub const TLS_SESSION_CACHE_MAX: usize = 4096;
