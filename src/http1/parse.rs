//! Request and response heads over `httparse`, with the framing decision and smuggling checks.

/// Limits applied while parsing a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Request line (or status line) plus headers plus the final CRLFCRLF, in bytes.
    pub header_bytes_max: usize,
    /// Header fields; must not exceed the length of the header array passed in.
    pub headers_max: usize,
}

/// HTTP version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Responses only: the body runs until the peer closes.
    UntilClose,
}

/// A parsed request head. Everything borrows from the read buffer and the header array.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    pub method: &'b str,
    /// The request-target exactly as sent.
    pub target: &'b str,
    /// The target up to (not including) `?`.
    pub path: &'b str,
    /// The part after `?`, without it; `None` when there is no `?`.
    pub query: Option<&'b str>,
    pub version: Version,
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head including the final empty line.
    pub head_len: usize,
    pub framing: Framing,
    /// Whether the connection may be reused after this exchange (version + `Connection`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The `Host` header value (with any port), if present.
    pub host: Option<&'b str>,
    /// `Connection: upgrade` together with an `Upgrade` header: its value.
    pub upgrade: Option<&'b str>,
}

/// A parsed upstream response head.
#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    pub status: u16,
    pub version: Version,
    pub headers: &'h [httparse::Header<'b>],
    pub head_len: usize,
    pub framing: Framing,
    pub keep_alive: bool,
}

/// Why a head was refused. Each maps to the status the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Malformed or ambiguous (smuggling shapes included): 400, then close.
    #[error("bad request: {0}")]
    Bad(&'static str),
    /// The request line alone exceeds the head limit: 414.
    #[error("request-target too long")]
    UriTooLong,
    /// The head exceeds its byte limit or has too many fields: 431.
    #[error("request header fields too large: {0}")]
    TooLarge(&'static str),
    /// A transfer coding we cannot decode: 501.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// Not HTTP/1.0 or HTTP/1.1: 505.
    #[error("HTTP version not supported")]
    Version,
}

impl HeadError {
    /// The HTTP status this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Bad(_) => 400,
            HeadError::UriTooLong => 414,
            HeadError::TooLarge(_) => 431,
            HeadError::NotImplemented(_) => 501,
            HeadError::Version => 505,
        }
    }
}

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (unless `buf.len()` already reached the limit, in which case
/// this returns `UriTooLong` or `TooLarge` instead).
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limits: &HeadLimits,
) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    let _ = (buf, headers, limits);
    todo!("http1 helper")
}

/// Parses an upstream response head at the start of `buf`. `request_was_head`: the request was
/// HEAD, so the response has no body whatever its headers say.
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limits: &HeadLimits,
    request_was_head: bool,
) -> Result<Option<ResponseHead<'h, 'b>>, HeadError> {
    let _ = (buf, headers, limits, request_was_head);
    todo!("http1 helper")
}
