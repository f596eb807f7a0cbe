//! Request and response heads over `httparse`, with the framing decision and smuggling checks.
//!
//! Owns: what a head may look like (limits, request-target forms, versions) and how its body is
//! delimited (RFC 9112 §6). Does not own: reading bytes, body decoding (`body.rs`), routing, or
//! what to answer: a `HeadError` says which status applies and the caller writes it.
//!
//! Everything borrows from the caller's read buffer and header array; nothing allocates.
//!
//! Decisions where the RFCs leave room (each has a test):
//! - Bare LF line endings: refused in requests (400) although httparse accepts them, because a
//!   request head is the classic desync vector; accepted in upstream responses (RFC 9112 §2.2 MAY),
//!   whose framing we decide ourselves.
//! - `Content-Length: 0` is `Framing::Length(0)`, not `Empty`, so a forwarder can still send the
//!   header (some backends answer a POST without it with 411).
//! - `HTTP/1.2` and other well-formed `HTTP/x.y` versions are answered 505, not downgraded to 1.1.
//! - `Transfer-Encoding: chunked, chunked` is 400 in requests and 502 (`Bad`) in responses.
//! - `Expect: 100-continue` in an HTTP/1.0 request is ignored (RFC 9110 §10.1.1); any other
//!   expectation is 417 whatever the version.
//! - Request-targets must be ASCII (non-ASCII must be percent-encoded); `Host` and absolute-form
//!   authorities must use only URI host characters; absolute-form accepts `http` and `https` only,
//!   and refuses userinfo (`user@host`).
//! - Upstream responses: multiple spaces in the status line and whitespace before a header colon
//!   are tolerated (we re-encode what we forward); obs-fold and invalid header lines are not.
//!   An HTTP/1.0 response with Transfer-Encoding is framed by it but never kept alive (§6.1).

use crate::limits;

/// Limits applied while parsing a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Request line (or status line) plus headers plus the final CRLFCRLF, in bytes.
    pub header_bytes_max: usize,
    /// Header fields; must not exceed the length of the header array passed in.
    pub headers_max: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            header_bytes_max: limits::HEADER_BYTES_MAX,
            headers_max: limits::HEADERS_MAX,
        }
    }
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
    /// The target up to (not including) `?`; for absolute-form the path part only (`/` when the
    /// target has none); `*` for `OPTIONS *`.
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
    /// `Expect: 100-continue` was sent (HTTP/1.1 only).
    pub expect_continue: bool,
    /// The `Host` header value (with any port), if present; for an absolute-form target the
    /// authority of the target instead (RFC 9112 §3.2.2).
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

/// Why a head was refused. Each maps to the status the client gets. For upstream responses the
/// caller answers 502 whatever the variant.
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
    /// A transfer coding we cannot decode, or a method form we do not serve (CONNECT): 501.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// Not HTTP/1.0 or HTTP/1.1: 505.
    #[error("HTTP version not supported")]
    Version,
    /// An `Expect` other than `100-continue`: 417.
    #[error("expectation failed")]
    Expectation,
}

impl HeadError {
    /// The HTTP status this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Bad(_) => 400,
            HeadError::UriTooLong => 414,
            HeadError::Expectation => 417,
            HeadError::TooLarge(_) => 431,
            HeadError::NotImplemented(_) => 501,
            HeadError::Version => 505,
        }
    }
}

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (unless `buf.len()` already reached the limit, in which case
/// this returns `UriTooLong` or `TooLarge` instead). At most `limits.headers_max` (capped by
/// `headers.len()`) fields are accepted.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limits: &HeadLimits,
) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    // Only the first `header_bytes_max` bytes are ever parsed: a head that does not complete inside
    // them is over the limit, whether the rest is already buffered or not.
    let window = &buf[..buf.len().min(limits.header_bytes_max)];
    let slots = limits.headers_max.min(headers.len());
    let (headers, _) = headers.split_at_mut(slots);
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limits.header_bytes_max => {
            return Err(request_over_limit(window));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(request_error(e, window)),
    };
    let httparse::Request {
        method,
        path,
        version,
        headers,
    } = req;
    let (Some(method), Some(target), Some(minor)) = (method, path, version) else {
        // A complete parse always fills the request line; refuse rather than unwrap.
        return Err(HeadError::Bad("incomplete request line"));
    };
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    require_crlf(&buf[..head_len])?;

    if method == "CONNECT" {
        return Err(HeadError::NotImplemented("CONNECT"));
    }
    let target_parts = split_target(method, target)?;
    let fields = Fields::scan(headers);

    let framing = request_framing(&fields, version)?;
    let host = request_host(&fields, version, target_parts.authority)?;
    let expect_continue = match fields.expect {
        Expect::None => false,
        Expect::Continue => version == Version::Http11,
        Expect::Other => return Err(HeadError::Expectation),
    };
    let upgrade = match (fields.conn_upgrade, fields.upgrade) {
        (true, Some(v)) => Some(
            std::str::from_utf8(v).map_err(|_| HeadError::Bad("non-ASCII Upgrade header"))?,
        ),
        _ => None,
    };

    Ok(Some(RequestHead {
        method,
        target,
        path: target_parts.path,
        query: target_parts.query,
        version,
        headers,
        head_len,
        framing,
        keep_alive: fields.keep_alive(version),
        expect_continue,
        host,
        upgrade,
    }))
}

/// Parses an upstream response head at the start of `buf`. `request_was_head`: the request was
/// HEAD, so the response has no body whatever its headers say.
///
/// Interim responses (1xx, `Framing::Empty`) parse like any other: the caller skips them by
/// `head_len` and parses again.
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limits: &HeadLimits,
    request_was_head: bool,
) -> Result<Option<ResponseHead<'h, 'b>>, HeadError> {
    let window = &buf[..buf.len().min(limits.header_bytes_max)];
    let slots = limits.headers_max.min(headers.len());
    let (headers, _) = headers.split_at_mut(slots);
    let mut config = httparse::ParserConfig::default();
    config
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_spaces_after_header_name_in_responses(true);
    let mut res = httparse::Response::new(headers);
    let head_len = match config.parse_response(&mut res, window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limits.header_bytes_max => {
            return Err(HeadError::TooLarge("response head"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(response_error(e, window)),
    };
    let httparse::Response {
        version,
        code,
        headers,
        ..
    } = res;
    let (Some(minor), Some(status)) = (version, code) else {
        return Err(HeadError::Bad("incomplete status line"));
    };
    if !(100..=599).contains(&status) {
        return Err(HeadError::Bad("status code out of range"));
    }
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let fields = Fields::scan(headers);
    let mut keep_alive = fields.keep_alive(version);
    let te = fields.transfer_encoding();
    if te.is_some() && (fields.content_length.is_some() || version == Version::Http10) {
        // §6.1 and §6.3(3): TE overrides CL, but the message was framed ambiguously or by an
        // HTTP/1.0 sender, so the connection must not be reused.
        keep_alive = false;
    }
    let framing = if request_was_head || status < 200 || status == 204 || status == 304 {
        // Still refuse a malformed Content-Length: an upstream sending one is not to be trusted.
        if te.is_none() {
            fields.content_length()?;
        }
        Framing::Empty
    } else if let Some(te) = te {
        match te {
            TransferCoding::Chunked | TransferCoding::CodedChunked => Framing::Chunked,
            TransferCoding::NotFinalChunked => Framing::UntilClose,
            TransferCoding::Invalid(why) => return Err(HeadError::Bad(why)),
        }
    } else if let Some(n) = fields.content_length()? {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        head_len,
        framing,
        keep_alive,
    }))
}

/// The first value of header `name` (ASCII case-insensitive).
pub fn header_value<'b>(headers: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether the comma-separated list `value` contains `token` (ASCII case-insensitive, OWS
/// trimmed), as in `Connection: keep-alive, Upgrade`.
pub fn has_token(value: &[u8], token: &str) -> bool {
    list_elements(value).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

/// The host part of a `Host` value or authority: `example.com:8080` → `example.com`,
/// `[::1]:8080` → `[::1]` (brackets kept, as in URIs).
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.find(':') {
            Some(colon) => &host[..colon],
            None => host,
        }
    }
}

/// `value` split at commas, each element OWS-trimmed, empty elements skipped (RFC 9110 §5.6.1).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// What the framing-relevant header fields said, gathered in one pass over the headers.
#[derive(Default)]
struct Fields<'b> {
    /// `Ok(None)`: no Content-Length; `Err`: present but invalid or conflicting.
    content_length: Option<Result<u64, &'static str>>,
    te: TeScan,
    hosts: usize,
    host: Option<&'b [u8]>,
    conn_close: bool,
    conn_keep_alive: bool,
    conn_upgrade: bool,
    upgrade: Option<&'b [u8]>,
    expect: Expect,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Expect {
    #[default]
    None,
    Continue,
    Other,
}

/// The Transfer-Encoding list across all its field lines, in order.
#[derive(Default)]
struct TeScan {
    present: bool,
    elements: usize,
    chunked: usize,
    last_is_chunked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferCoding {
    /// Exactly `chunked`.
    Chunked,
    /// Other codings, then `chunked` last.
    CodedChunked,
    /// The final coding is not `chunked`.
    NotFinalChunked,
    Invalid(&'static str),
}

impl<'b> Fields<'b> {
    fn scan(headers: &[httparse::Header<'b>]) -> Self {
        let mut f = Fields::default();
        for h in headers {
            // Dispatch on length first: one compare per header for the common, unrelated ones.
            let name = h.name.as_bytes();
            match name.len() {
                4 if name.eq_ignore_ascii_case(b"host") => {
                    f.hosts += 1;
                    f.host.get_or_insert(h.value);
                }
                6 if name.eq_ignore_ascii_case(b"expect") => {
                    let e = if h.value.eq_ignore_ascii_case(b"100-continue") {
                        Expect::Continue
                    } else {
                        Expect::Other
                    };
                    if f.expect != Expect::Other {
                        f.expect = e;
                    }
                }
                7 if name.eq_ignore_ascii_case(b"upgrade") => {
                    f.upgrade.get_or_insert(h.value);
                }
                10 if name.eq_ignore_ascii_case(b"connection") => {
                    for t in list_elements(h.value) {
                        f.conn_close |= t.eq_ignore_ascii_case(b"close");
                        f.conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                        f.conn_upgrade |= t.eq_ignore_ascii_case(b"upgrade");
                    }
                }
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    f.content_length = Some(match f.content_length {
                        Some(Err(e)) => Err(e),
                        prev => merge_content_length(prev.and_then(Result::ok), h.value),
                    });
                }
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    f.te.present = true;
                    for coding in list_elements(h.value) {
                        let chunked = coding.eq_ignore_ascii_case(b"chunked");
                        f.te.elements += 1;
                        f.te.chunked += usize::from(chunked);
                        f.te.last_is_chunked = chunked;
                    }
                }
                _ => {}
            }
        }
        f
    }

    fn content_length(&self) -> Result<Option<u64>, HeadError> {
        match self.content_length {
            None => Ok(None),
            Some(Ok(n)) => Ok(Some(n)),
            Some(Err(why)) => Err(HeadError::Bad(why)),
        }
    }

    fn transfer_encoding(&self) -> Option<TransferCoding> {
        let te = &self.te;
        if !te.present {
            return None;
        }
        Some(if te.elements == 0 {
            TransferCoding::Invalid("empty Transfer-Encoding")
        } else if te.chunked > 1 {
            TransferCoding::Invalid("chunked applied more than once")
        } else if !te.last_is_chunked {
            TransferCoding::NotFinalChunked
        } else if te.elements > 1 {
            TransferCoding::CodedChunked
        } else {
            TransferCoding::Chunked
        })
    }

    fn keep_alive(&self, version: Version) -> bool {
        match version {
            Version::Http11 => !self.conn_close,
            Version::Http10 => self.conn_keep_alive && !self.conn_close,
        }
    }
}

/// One more Content-Length field line, itself possibly a list (`5, 5`): every element must be
/// the same decimal number, and equal to what earlier lines said.
fn merge_content_length(prev: Option<u64>, value: &[u8]) -> Result<u64, &'static str> {
    let mut seen = prev;
    for element in value.split(|&b| b == b',').map(trim_ows) {
        let n = parse_decimal(element).ok_or("invalid Content-Length")?;
        match seen {
            Some(m) if m != n => return Err("conflicting Content-Length values"),
            _ => seen = Some(n),
        }
    }
    // `split` yields at least one element, so `seen` is set or we returned an error above.
    seen.ok_or("invalid Content-Length")
}

/// `1*DIGIT` as u64: no sign, no whitespace, no overflow.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

fn request_framing(fields: &Fields<'_>, version: Version) -> Result<Framing, HeadError> {
    let Some(te) = fields.transfer_encoding() else {
        return Ok(match fields.content_length()? {
            Some(n) => Framing::Length(n),
            None => Framing::Empty,
        });
    };
    if fields.content_length.is_some() {
        return Err(HeadError::Bad(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if version == Version::Http10 {
        return Err(HeadError::Bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    match te {
        TransferCoding::Chunked => Ok(Framing::Chunked),
        TransferCoding::CodedChunked => Err(HeadError::NotImplemented("transfer coding")),
        TransferCoding::NotFinalChunked => Err(HeadError::Bad(
            "final transfer coding is not chunked",
        )),
        TransferCoding::Invalid(why) => Err(HeadError::Bad(why)),
    }
}

/// RFC 9112 §3.2: exactly one Host in HTTP/1.1 (at most one in 1.0), with a valid value; an
/// absolute-form authority takes its place.
fn request_host<'b>(
    fields: &Fields<'b>,
    version: Version,
    authority: Option<&'b str>,
) -> Result<Option<&'b str>, HeadError> {
    match (fields.hosts, version) {
        (0, Version::Http11) => return Err(HeadError::Bad("missing Host")),
        (2.., _) => return Err(HeadError::Bad("more than one Host")),
        _ => {}
    }
    let host = match fields.host {
        Some(v) if is_host_chars(v) => {
            // `is_host_chars` admits ASCII only, so this is valid UTF-8.
            std::str::from_utf8(v).map_err(|_| HeadError::Bad("invalid Host"))?
        }
        Some(_) => return Err(HeadError::Bad("invalid Host")),
        None => return Ok(authority),
    };
    Ok(Some(authority.unwrap_or(host)))
}

/// reg-name / IP-literal / port characters (RFC 3986 §3.2.2), ASCII only.
fn is_host_chars(v: &[u8]) -> bool {
    v.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

struct TargetParts<'b> {
    path: &'b str,
    query: Option<&'b str>,
    /// The authority of an absolute-form target.
    authority: Option<&'b str>,
}

/// Splits a request-target (RFC 9112 §3.2) into path and query.
fn split_target<'b>(method: &str, target: &'b str) -> Result<TargetParts<'b>, HeadError> {
    if !target.is_ascii() {
        return Err(HeadError::Bad("non-ASCII request-target"));
    }
    if memchr::memchr(b'#', target.as_bytes()).is_some() {
        return Err(HeadError::Bad("fragment in request-target"));
    }
    if target.starts_with('/') {
        let (path, query) = split_query(target);
        return Ok(TargetParts {
            path,
            query,
            authority: None,
        });
    }
    if target == "*" {
        if method != "OPTIONS" {
            return Err(HeadError::Bad("asterisk-form outside OPTIONS"));
        }
        return Ok(TargetParts {
            path: "*",
            query: None,
            authority: None,
        });
    }
    absolute_form(target)
}

fn absolute_form(target: &str) -> Result<TargetParts<'_>, HeadError> {
    let invalid = HeadError::Bad("invalid request-target");
    let (scheme, rest) = target.split_once("://").ok_or(invalid)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(invalid);
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_query) = rest.split_at(end);
    if authority.contains('@') {
        return Err(HeadError::Bad("userinfo in request-target"));
    }
    if authority.is_empty() || !is_host_chars(authority.as_bytes()) {
        return Err(invalid);
    }
    let (path, query) = match path_query.strip_prefix('?') {
        Some(query) => ("/", Some(query)),
        None if path_query.is_empty() => ("/", None),
        None => split_query(path_query),
    };
    Ok(TargetParts {
        path,
        query,
        authority: Some(authority),
    })
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (s, None),
    }
}

/// httparse accepts a bare LF as a line ending; requests must use CRLF.
fn require_crlf(head: &[u8]) -> Result<(), HeadError> {
    for i in memchr::memchr_iter(b'\n', head) {
        if i == 0 || head[i - 1] != b'\r' {
            return Err(HeadError::Bad("bare LF line ending"));
        }
    }
    Ok(())
}

/// The head did not complete within the limit: 414 when not even the request line did.
fn request_over_limit(window: &[u8]) -> HeadError {
    let line = skip_empty_lines(window);
    if memchr::memchr(b'\n', line).is_some() {
        HeadError::TooLarge("request head")
    } else {
        HeadError::UriTooLong
    }
}

fn request_error(e: httparse::Error, window: &[u8]) -> HeadError {
    match e {
        httparse::Error::Version => {
            // method SP target SP version: the version is the third word.
            let mut words = first_line(window).splitn(3, |&b| b == b' ');
            version_error(words.nth(2).unwrap_or_default(), window)
        }
        httparse::Error::TooManyHeaders => HeadError::TooLarge("too many header fields"),
        httparse::Error::HeaderName => HeadError::Bad("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Bad("invalid header value"),
        httparse::Error::NewLine => HeadError::Bad("invalid line ending"),
        httparse::Error::Token | httparse::Error::Status => HeadError::Bad("invalid request line"),
    }
}

fn response_error(e: httparse::Error, window: &[u8]) -> HeadError {
    match e {
        httparse::Error::Version => {
            let word = first_line(window).split(|&b| b == b' ').next();
            version_error(word.unwrap_or_default(), window)
        }
        httparse::Error::TooManyHeaders => HeadError::TooLarge("too many header fields"),
        httparse::Error::HeaderName => HeadError::Bad("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Bad("invalid header value"),
        httparse::Error::NewLine => HeadError::Bad("invalid line ending"),
        httparse::Error::Token | httparse::Error::Status => HeadError::Bad("invalid status line"),
    }
}

/// httparse reports every unknown version the same way: a well-formed `HTTP/d.d` (or a prefix of
/// one, when the line is still incomplete) is 505, anything else is malformed.
fn version_error(word: &[u8], window: &[u8]) -> HeadError {
    const PATTERN: &[u8; 8] = b"HTTP/d.d";
    let line_complete = memchr::memchr(b'\n', skip_empty_lines(window)).is_some();
    let word = trim_cr(word);
    let fits = word.len() <= PATTERN.len()
        && (!line_complete || word.len() == PATTERN.len())
        && word.iter().zip(PATTERN).all(|(&b, &p)| match p {
            b'd' => b.is_ascii_digit(),
            _ => b == p,
        });
    if fits {
        HeadError::Version
    } else {
        HeadError::Bad("invalid HTTP version")
    }
}

fn skip_empty_lines(mut s: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = s {
        s = rest;
    }
    s
}

fn first_line(window: &[u8]) -> &[u8] {
    let s = skip_empty_lines(window);
    let end = memchr::memchr(b'\n', s).unwrap_or(s.len());
    &s[..end]
}

fn trim_cr(s: &[u8]) -> &[u8] {
    s.strip_suffix(b"\r").unwrap_or(s)
}

#[cfg(test)]
mod tests {
}
