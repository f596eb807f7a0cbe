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

use std::mem::MaybeUninit;

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

/// A header array for `parse_request`/`parse_response`, left uninitialized (free to create).
pub fn header_slots<'b, const N: usize>() -> [MaybeUninit<httparse::Header<'b>>; N] {
    [const { MaybeUninit::uninit() }; N]
}

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (unless `buf.len()` already reached the limit, in which case
/// this returns `UriTooLong` or `TooLarge` instead). At most `limits.headers_max` (capped by
/// `headers.len()`) fields are accepted.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [MaybeUninit<httparse::Header<'b>>],
    limits: &HeadLimits,
) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    // Only the first `header_bytes_max` bytes are ever parsed: a head that does not complete inside
    // them is over the limit, whether the rest is already buffered or not.
    let window = &buf[..buf.len().min(limits.header_bytes_max)];
    let slots = limits.headers_max.min(headers.len());
    let (headers, _) = headers.split_at_mut(slots);
    // Uninitialized slots: initializing HEADERS_CEILING headers (8 KiB) per request cost more
    // than parsing a typical request does.
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(window, headers) {
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
    // RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored.
    let upgrade = match (
        fields.conn_upgrade && version == Version::Http11,
        fields.upgrade,
    ) {
        (true, Some(v)) => {
            Some(std::str::from_utf8(v).map_err(|_| HeadError::Bad("non-ASCII Upgrade header"))?)
        }
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
    headers: &'h mut [MaybeUninit<httparse::Header<'b>>],
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
    let mut res = httparse::Response::new(&mut []);
    let head_len = match config.parse_response_with_uninit_headers(&mut res, window, headers) {
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
        match crate::scan::find(b':', host.as_bytes()) {
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
        return Err(HeadError::Bad("both Content-Length and Transfer-Encoding"));
    }
    if version == Version::Http10 {
        return Err(HeadError::Bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    match te {
        TransferCoding::Chunked => Ok(Framing::Chunked),
        TransferCoding::CodedChunked => Err(HeadError::NotImplemented("transfer coding")),
        TransferCoding::NotFinalChunked => {
            Err(HeadError::Bad("final transfer coding is not chunked"))
        }
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
    if crate::scan::find(b'#', target.as_bytes()).is_some() {
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
    // memchr rather than `split_once('?')`: this runs on every request (a profile showed the
    // char searcher).
    match crate::scan::find(b'?', s.as_bytes()) {
        // '?' is ASCII, so both sides are on char boundaries.
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// httparse accepts a bare LF as a line ending; requests must use CRLF.
fn require_crlf(head: &[u8]) -> Result<(), HeadError> {
    if crate::scan::all_lf_after_cr(head) {
        Ok(())
    } else {
        Err(HeadError::Bad("bare LF line ending"))
    }
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
    use super::*;
    use crate::limits::HEADERS_CEILING;
    use proptest::prelude::*;

    /// An owned copy of a `RequestHead`, so tests can compare whole heads.
    #[derive(Debug, Clone, PartialEq)]
    struct Req {
        method: String,
        target: String,
        path: String,
        query: Option<String>,
        version: Version,
        headers: Vec<(String, Vec<u8>)>,
        head_len: usize,
        framing: Framing,
        keep_alive: bool,
        expect_continue: bool,
        host: Option<String>,
        upgrade: Option<String>,
    }

    impl From<RequestHead<'_, '_>> for Req {
        fn from(h: RequestHead<'_, '_>) -> Self {
            Req {
                method: h.method.into(),
                target: h.target.into(),
                path: h.path.into(),
                query: h.query.map(Into::into),
                version: h.version,
                headers: h
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                head_len: h.head_len,
                framing: h.framing,
                keep_alive: h.keep_alive,
                expect_continue: h.expect_continue,
                host: h.host.map(Into::into),
                upgrade: h.upgrade.map(Into::into),
            }
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Res {
        status: u16,
        version: Version,
        headers: usize,
        head_len: usize,
        framing: Framing,
        keep_alive: bool,
    }

    fn req_with(buf: &[u8], limits: HeadLimits) -> Result<Option<Req>, HeadError> {
        let mut h = header_slots::<HEADERS_CEILING>();
        parse_request(buf, &mut h, &limits).map(|o| o.map(Req::from))
    }

    fn req(s: &str) -> Result<Option<Req>, HeadError> {
        req_with(s.as_bytes(), HeadLimits::default())
    }

    fn ok(s: &str) -> Req {
        req(s).expect("valid request").expect("complete request")
    }

    fn err(s: &str) -> HeadError {
        req(s).expect_err("request must be refused")
    }

    fn res_with(s: &str, limits: HeadLimits, was_head: bool) -> Result<Option<Res>, HeadError> {
        let mut h = header_slots::<HEADERS_CEILING>();
        parse_response(s.as_bytes(), &mut h, &limits, was_head).map(|o| {
            o.map(|r| Res {
                status: r.status,
                version: r.version,
                headers: r.headers.len(),
                head_len: r.head_len,
                framing: r.framing,
                keep_alive: r.keep_alive,
            })
        })
    }

    fn res(s: &str) -> Res {
        res_with(s, HeadLimits::default(), false)
            .expect("valid response")
            .expect("complete response")
    }

    fn res_err(s: &str) -> HeadError {
        res_with(s, HeadLimits::default(), false).expect_err("response must be refused")
    }

    fn limits(header_bytes_max: usize, headers_max: usize) -> HeadLimits {
        HeadLimits {
            header_bytes_max,
            headers_max,
        }
    }

    // ---- basics ----

    #[test]
    fn simple_get() {
        let s = "GET /pets/7?sort=asc&x=1 HTTP/1.1\r\nHost: api.example.com:8080\r\nAccept: */*\r\n\r\n";
        let r = ok(s);
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/pets/7?sort=asc&x=1");
        assert_eq!(r.path, "/pets/7");
        assert_eq!(r.query.as_deref(), Some("sort=asc&x=1"));
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.head_len, s.len());
        assert_eq!(r.framing, Framing::Empty);
        assert!(r.keep_alive);
        assert!(!r.expect_continue);
        assert_eq!(r.host.as_deref(), Some("api.example.com:8080"));
        assert_eq!(r.upgrade, None);
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.headers[1], ("Accept".to_string(), b"*/*".to_vec()));
    }

    #[test]
    fn query_split_at_first_question_mark() {
        let r = ok("GET /a?b?c HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("/a", Some("b?c")));
        let r = ok("GET /a? HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("/a", Some("")));
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let s = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
        for end in 0..s.len() {
            assert_eq!(req(&s[..end]), Ok(None), "prefix {end}");
        }
        assert_eq!(ok(s).framing, Framing::Length(3));
    }

    #[test]
    fn pipelined_bytes_after_the_head_are_left_alone() {
        let first = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
        let both = format!("{first}GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(ok(&both).head_len, first.len());
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted() {
        let s = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let r = ok(s);
        assert_eq!(r.path, "/");
        assert_eq!(r.head_len, s.len());
    }

    #[test]
    fn content_length_zero_is_length_zero() {
        let r = ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.framing, Framing::Length(0));
    }

    // ---- limits: 414 vs 431 ----

    const SMALL: &str = "GET /abcdefgh HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n";
    // Request line with its CRLF.
    const SMALL_LINE: usize = "GET /abcdefgh HTTP/1.1\r\n".len();

    #[test]
    fn head_exactly_at_the_limit_is_accepted() {
        let r = req_with(SMALL.as_bytes(), limits(SMALL.len(), 100));
        assert_eq!(r.expect("ok").expect("complete").head_len, SMALL.len());
    }

    #[test]
    fn complete_head_one_byte_over_is_431() {
        let r = req_with(SMALL.as_bytes(), limits(SMALL.len() - 1, 100));
        assert_eq!(r, Err(HeadError::TooLarge("request head")));
        assert_eq!(HeadError::TooLarge("").status(), 431);
    }

    #[test]
    fn full_buffer_with_incomplete_head_is_431() {
        let cut = &SMALL.as_bytes()[..SMALL.len() - 2];
        assert_eq!(req_with(cut, limits(cut.len() + 1, 100)), Ok(None));
        assert_eq!(
            req_with(cut, limits(cut.len(), 100)),
            Err(HeadError::TooLarge("request head"))
        );
    }

    #[test]
    fn request_line_complete_exactly_at_the_limit_is_431() {
        let r = req_with(SMALL.as_bytes(), limits(SMALL_LINE, 100));
        assert_eq!(r, Err(HeadError::TooLarge("request head")));
    }

    #[test]
    fn request_line_one_byte_over_the_limit_is_414() {
        let r = req_with(SMALL.as_bytes(), limits(SMALL_LINE - 1, 100));
        assert_eq!(r, Err(HeadError::UriTooLong));
        assert_eq!(HeadError::UriTooLong.status(), 414);
    }

    #[test]
    fn long_target_in_a_full_buffer_is_414() {
        let mut s = String::from("GET /");
        s.push_str(&"a".repeat(200));
        assert_eq!(
            req_with(s.as_bytes(), limits(100, 100)),
            Err(HeadError::UriTooLong)
        );
        assert_eq!(req_with(s.as_bytes(), limits(300, 100)), Ok(None));
    }

    #[test]
    fn default_limit_boundaries() {
        let base = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: \r\n\r\n";
        let pad = HEADER_BYTES_MAX_FOR_TEST - base.len();
        let exact = base.replace("X-Pad: ", &format!("X-Pad: {}", "p".repeat(pad)));
        assert_eq!(exact.len(), HEADER_BYTES_MAX_FOR_TEST);
        assert!(req(&exact).expect("ok").is_some());
        let over = exact.replace("X-Pad: ", "X-Pad: p");
        assert_eq!(req(&over), Err(HeadError::TooLarge("request head")));
    }
    const HEADER_BYTES_MAX_FOR_TEST: usize = limits::HEADER_BYTES_MAX;

    fn with_fields(n: usize) -> String {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 1..n {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s.push_str("\r\n");
        s
    }

    #[test]
    fn headers_max_exactly_and_one_over() {
        let lim = limits(16 * 1024, 10);
        assert_eq!(
            req_with(with_fields(10).as_bytes(), lim)
                .expect("ok")
                .expect("complete")
                .headers
                .len(),
            10
        );
        assert_eq!(
            req_with(with_fields(11).as_bytes(), lim),
            Err(HeadError::TooLarge("too many header fields"))
        );
    }

    #[test]
    fn header_array_shorter_than_headers_max_caps_it() {
        let four = with_fields(4);
        let mut h = header_slots::<3>();
        let r = parse_request(four.as_bytes(), &mut h, &HeadLimits::default());
        assert_eq!(
            r.map(|o| o.is_some()),
            Err(HeadError::TooLarge("too many header fields"))
        );
        let three = with_fields(3);
        let mut h = header_slots::<3>();
        let r = parse_request(three.as_bytes(), &mut h, &HeadLimits::default());
        assert_eq!(r.expect("ok").expect("complete").headers.len(), 3);
    }

    // ---- smuggling shapes ----

    fn post(extra: &str) -> String {
        format!("POST /u HTTP/1.1\r\nHost: h\r\n{extra}\r\n")
    }

    #[test]
    fn content_length_and_transfer_encoding_together() {
        for extra in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: x\r\n",
        ] {
            assert_eq!(
                err(&post(extra)),
                HeadError::Bad("both Content-Length and Transfer-Encoding"),
                "{extra}"
            );
        }
    }

    #[test]
    fn conflicting_content_lengths() {
        for extra in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: 5,5\r\nContent-Length: 6\r\n",
        ] {
            assert_eq!(
                err(&post(extra)),
                HeadError::Bad("conflicting Content-Length values"),
                "{extra}"
            );
        }
    }

    #[test]
    fn equal_content_lengths_are_fine() {
        for extra in [
            "Content-Length: 5, 5\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 005\r\n",
            "Content-Length:5 \r\n",
        ] {
            assert_eq!(ok(&post(extra)).framing, Framing::Length(5), "{extra}");
        }
    }

    #[test]
    fn malformed_content_lengths() {
        for v in [
            "abc",
            "+5",
            "-5",
            "",
            "5 5",
            "0x5",
            "5,",
            ",5",
            "5.0",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            let extra = format!("Content-Length: {v}\r\n");
            assert_eq!(
                err(&post(&extra)),
                HeadError::Bad("invalid Content-Length"),
                "{v:?}"
            );
        }
        let max = format!("Content-Length: {}\r\n", u64::MAX);
        assert_eq!(ok(&post(&max)).framing, Framing::Length(u64::MAX));
    }

    #[test]
    fn transfer_encoding_chunked_forms() {
        for extra in [
            "Transfer-Encoding: chunked\r\n",
            "Transfer-Encoding: Chunked\r\n",
            "Transfer-Encoding: CHUNKED \r\n",
            "Transfer-Encoding: \tchunked\r\n",
            "Transfer-Encoding: ,chunked,\r\n",
            "Transfer-Encoding: \r\nTransfer-Encoding: chunked\r\n",
        ] {
            assert_eq!(ok(&post(extra)).framing, Framing::Chunked, "{extra:?}");
        }
    }

    #[test]
    fn transfer_encoding_not_final_chunked_is_400() {
        for extra in [
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunkedx\r\n",
            "Transfer-Encoding: chunked;q=1\r\n",
            "Transfer-Encoding: identity\r\n",
        ] {
            assert_eq!(
                err(&post(extra)),
                HeadError::Bad("final transfer coding is not chunked"),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn transfer_encoding_degenerate_lists_are_400() {
        assert_eq!(
            err(&post("Transfer-Encoding: chunked, chunked\r\n")),
            HeadError::Bad("chunked applied more than once")
        );
        assert_eq!(
            err(&post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
            )),
            HeadError::Bad("chunked applied more than once")
        );
        assert_eq!(
            err(&post("Transfer-Encoding: \r\n")),
            HeadError::Bad("empty Transfer-Encoding")
        );
        assert_eq!(
            err(&post("Transfer-Encoding: , ,\r\n")),
            HeadError::Bad("empty Transfer-Encoding")
        );
    }

    #[test]
    fn codings_before_chunked_are_501() {
        for extra in [
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: foo ,chunked\r\n",
        ] {
            let e = err(&post(extra));
            assert_eq!(e, HeadError::NotImplemented("transfer coding"), "{extra:?}");
            assert_eq!(e.status(), 501);
        }
    }

    #[test]
    fn transfer_encoding_in_http10_is_400() {
        let s = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            err(s),
            HeadError::Bad("Transfer-Encoding in an HTTP/1.0 request")
        );
    }

    #[test]
    fn whitespace_before_colon_is_400() {
        for extra in ["Content-Length : 5\r\n", "Transfer-Encoding\t: chunked\r\n"] {
            assert_eq!(
                err(&post(extra)),
                HeadError::Bad("invalid header name"),
                "{extra:?}"
            );
        }
        assert_eq!(err(&post(" Content-Length: 5\r\n")).status(), 400);
    }

    #[test]
    fn obs_fold_is_400() {
        let s = "GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n two\r\n\r\n";
        assert_eq!(err(s), HeadError::Bad("invalid header name"));
        let s = "GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n\ttwo\r\n\r\n";
        assert_eq!(err(s), HeadError::Bad("invalid header name"));
    }

    #[test]
    fn bare_lf_is_400() {
        for s in [
            "GET / HTTP/1.1\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\n\n",
            "GET / HTTP/1.1\nHost: h\n\n",
            "\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(err(s), HeadError::Bad("bare LF line ending"), "{s:?}");
        }
    }

    #[test]
    fn nul_and_cr_in_values_are_400() {
        for s in [
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\r\n\r\n",
        ] {
            assert_eq!(err(s).status(), 400, "{s:?}");
        }
    }

    #[test]
    fn request_line_garbage_is_400() {
        for s in [
            "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET\r\n\r\n",
        ] {
            assert_eq!(err(s).status(), 400, "{s:?}");
        }
    }

    // ---- Host ----

    #[test]
    fn host_rules() {
        assert_eq!(
            err("GET / HTTP/1.1\r\n\r\n"),
            HeadError::Bad("missing Host")
        );
        assert_eq!(
            err("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
            HeadError::Bad("more than one Host")
        );
        assert_eq!(
            err("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
            HeadError::Bad("more than one Host")
        );
        assert_eq!(ok("GET / HTTP/1.0\r\n\r\n").host, None);
        assert_eq!(
            ok("GET / HTTP/1.0\r\nHOST: a\r\n\r\n").host.as_deref(),
            Some("a")
        );
        assert_eq!(
            ok("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")
                .host
                .as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(
            ok("GET / HTTP/1.1\r\nHost:\r\n\r\n").host.as_deref(),
            Some("")
        );
        for bad in ["a b", "a/b", "a\"b", "é", "a@b"] {
            let s = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_eq!(err(&s), HeadError::Bad("invalid Host"), "{bad:?}");
        }
    }

    // ---- versions ----

    #[test]
    fn unsupported_versions_are_505() {
        for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0"] {
            let s = format!("GET / {v}\r\nHost: h\r\n\r\n");
            let e = err(&s);
            assert_eq!(e, HeadError::Version, "{v}");
            assert_eq!(e.status(), 505);
        }
        // Still incomplete, but already not 1.x.
        assert_eq!(req("GET / HTTP/2"), Err(HeadError::Version));
    }

    #[test]
    fn malformed_versions_are_400() {
        for v in ["http/1.1", "HTTP/1", "HTTP/10.0", "HTTP/a.b", "FOO"] {
            let s = format!("GET / {v}\r\nHost: h\r\n\r\n");
            assert_eq!(err(&s), HeadError::Bad("invalid HTTP version"), "{v}");
        }
    }

    #[test]
    fn http10_is_parsed() {
        let r = ok("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(r.version, Version::Http10);
        assert!(!r.keep_alive);
    }

    // ---- Expect ----

    #[test]
    fn expect_continue() {
        let r =
            ok("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(r.expect_continue);
        assert!(ok("PUT / HTTP/1.1\r\nHost: h\r\nexpect: 100-Continue\r\n\r\n").expect_continue);
        // RFC 9110 §10.1.1: ignored from an HTTP/1.0 client.
        assert!(!ok("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn other_expectations_are_417() {
        for v in ["foo", "100-continue, foo", "200-ok", ""] {
            let s = format!("PUT / HTTP/1.1\r\nHost: h\r\nExpect: {v}\r\n\r\n");
            let e = err(&s);
            assert_eq!(e, HeadError::Expectation, "{v:?}");
            assert_eq!(e.status(), 417);
        }
        let s = "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nExpect: x\r\n\r\n";
        assert_eq!(err(s), HeadError::Expectation);
    }

    // ---- request-target forms ----

    #[test]
    fn fragment_is_400() {
        assert_eq!(
            err("GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::Bad("fragment in request-target")
        );
    }

    #[test]
    fn non_ascii_target_is_400() {
        assert_eq!(
            err("GET /caf\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::Bad("non-ASCII request-target")
        );
    }

    #[test]
    fn asterisk_form_only_for_options() {
        let r = ok("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("*", None));
        assert_eq!(
            err("GET * HTTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::Bad("asterisk-form outside OPTIONS")
        );
        assert_eq!(err("OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
    }

    #[test]
    fn absolute_form() {
        let r = ok("GET http://api.example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(r.path, "/a/b");
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert_eq!(r.host.as_deref(), Some("api.example.com:8080"));
        assert_eq!(r.target, "http://api.example.com:8080/a/b?x=1");

        let r = ok("GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            (r.path.as_str(), r.query, r.host.as_deref()),
            ("/", None, Some("h"))
        );
        let r = ok("GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("/", Some("q=1")));
        let r = ok("GET http://[::1]:9/p HTTP/1.0\r\n\r\n");
        assert_eq!(
            (r.path.as_str(), r.host.as_deref()),
            ("/p", Some("[::1]:9"))
        );
    }

    #[test]
    fn absolute_form_refusals() {
        for t in [
            "ftp://h/",
            "http:///x",
            "http://",
            "h/x",
            "http:/h/x",
            "http://a b/",
        ] {
            let s = format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(err(&s).status(), 400, "{t}");
        }
        assert_eq!(
            err("GET http://u:p@h/ HTTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::Bad("userinfo in request-target")
        );
        // The Host header is still required in HTTP/1.1.
        assert_eq!(
            err("GET http://h/ HTTP/1.1\r\n\r\n"),
            HeadError::Bad("missing Host")
        );
    }

    #[test]
    fn connect_is_501() {
        let e = err("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        assert_eq!(e, HeadError::NotImplemented("CONNECT"));
        assert_eq!(
            err("GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::Bad("invalid request-target")
        );
    }

    // ---- keep-alive, upgrade ----

    #[test]
    fn keep_alive_matrix() {
        let cases = [
            ("HTTP/1.1", "", true),
            ("HTTP/1.1", "Connection: close\r\n", false),
            ("HTTP/1.1", "Connection: Close\r\n", false),
            ("HTTP/1.1", "Connection: keep-alive, close\r\n", false),
            (
                "HTTP/1.1",
                "Connection: keep-alive\r\nConnection: close\r\n",
                false,
            ),
            ("HTTP/1.1", "Connection: keep-alive\r\n", true),
            ("HTTP/1.1", "Connection: closed\r\n", true),
            ("HTTP/1.0", "", false),
            ("HTTP/1.0", "Connection: keep-alive\r\n", true),
            ("HTTP/1.0", "Connection: Keep-Alive\r\n", true),
            ("HTTP/1.0", "Connection: foo,  keep-alive \r\n", true),
            ("HTTP/1.0", "Connection: keep-alive, close\r\n", false),
            ("HTTP/1.0", "Connection: close\r\n", false),
        ];
        for (v, conn, want) in cases {
            let s = format!("GET / {v}\r\nHost: h\r\n{conn}\r\n");
            assert_eq!(ok(&s).keep_alive, want, "{v} {conn:?}");
        }
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let s = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(ok(s).upgrade.as_deref(), Some("websocket"));
        let s = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(ok(s).upgrade, None);
        let s = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n";
        assert_eq!(ok(s).upgrade, None);
        let s = "GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(ok(s).upgrade, None);
    }

    // ---- helpers ----

    #[test]
    fn helpers() {
        let h = [
            httparse::Header {
                name: "Accept",
                value: b"a",
            },
            httparse::Header {
                name: "X-Thing",
                value: b"1",
            },
            httparse::Header {
                name: "x-thing",
                value: b"2",
            },
        ];
        assert_eq!(header_value(&h, "x-THING"), Some(&b"1"[..]));
        assert_eq!(header_value(&h, "missing"), None);

        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b" close ", "close"));
        assert!(has_token(b"a,,\tb\t", "b"));
        assert!(!has_token(b"closed", "close"));
        assert!(!has_token(b"", "close"));

        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("[::1"), "[::1");
        assert_eq!(host_without_port(""), "");
    }

    #[test]
    fn parse_decimal_boundaries() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"1a"), None);
        assert_eq!(parse_decimal(b"/"), None);
        assert_eq!(parse_decimal(b":"), None);
    }

    // ---- responses ----

    #[test]
    fn response_with_content_length() {
        let s = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\n";
        let r = res(s);
        assert_eq!(r.status, 200);
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.headers, 2);
        assert_eq!(r.head_len, s.len());
        assert_eq!(r.framing, Framing::Length(12));
        assert!(r.keep_alive);
    }

    #[test]
    fn response_incomplete_prefixes() {
        let s = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n";
        for end in 0..s.len() {
            assert_eq!(res_with(&s[..end], HeadLimits::default(), false), Ok(None));
        }
    }

    #[test]
    fn response_framing_rules() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(res(chunked).framing, Framing::Chunked);
        assert!(res(chunked).keep_alive);

        let coded = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(res(coded).framing, Framing::Chunked);

        let r = res("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));

        let r = res("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));

        let r = res("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::Length(0), true));
    }

    #[test]
    fn response_te_and_cl_te_wins_and_closes() {
        for s in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: nope\r\n\r\n",
        ] {
            let r = res(s);
            assert_eq!(
                (r.framing, r.keep_alive),
                (Framing::Chunked, false),
                "{s:?}"
            );
        }
    }

    #[test]
    fn response_bodiless_statuses_and_head() {
        for status in [
            "204 No Content",
            "304 Not Modified",
            "100 Continue",
            "101 Switching Protocols",
            "103 Early Hints",
        ] {
            let s = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
            let r = res(&s);
            assert_eq!(r.framing, Framing::Empty, "{status}");
            assert!(r.keep_alive);
        }
        let s = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        let r = res_with(s, HeadLimits::default(), true)
            .expect("ok")
            .expect("complete");
        assert_eq!(r.framing, Framing::Empty);
        let s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let r = res_with(s, HeadLimits::default(), true)
            .expect("ok")
            .expect("complete");
        assert_eq!(r.framing, Framing::Empty);
    }

    #[test]
    fn interim_response_then_final() {
        let s = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        let first = res(s);
        assert_eq!((first.status, first.framing), (100, Framing::Empty));
        let second = res(&s[first.head_len..]);
        assert_eq!((second.status, second.framing), (201, Framing::Length(2)));
    }

    #[test]
    fn response_keep_alive_matrix() {
        let cases = [
            ("HTTP/1.1", "", true),
            ("HTTP/1.1", "Connection: close\r\n", false),
            ("HTTP/1.0", "", false),
            ("HTTP/1.0", "Connection: keep-alive\r\n", true),
        ];
        for (v, conn, want) in cases {
            let s = format!("{v} 200 OK\r\nContent-Length: 0\r\n{conn}\r\n");
            assert_eq!(res(&s).keep_alive, want, "{v} {conn:?}");
        }
        // §6.1: an HTTP/1.0 message with Transfer-Encoding is never reused.
        let s = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
        let r = res(s);
        assert_eq!((r.framing, r.keep_alive), (Framing::Chunked, false));
    }

    #[test]
    fn response_refusals() {
        assert_eq!(
            res_err("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            HeadError::Bad("conflicting Content-Length values")
        );
        assert_eq!(
            res_err("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            HeadError::Bad("invalid Content-Length")
        );
        assert_eq!(
            res_err("HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n"),
            HeadError::Bad("invalid Content-Length")
        );
        assert_eq!(
            res_err("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
            HeadError::Bad("chunked applied more than once")
        );
        assert_eq!(
            res_err("HTTP/1.1 099 Odd\r\n\r\n"),
            HeadError::Bad("status code out of range")
        );
        assert_eq!(
            res_err("HTTP/1.1 600 Odd\r\n\r\n"),
            HeadError::Bad("status code out of range")
        );
        assert_eq!(res_err("HTTP/1.1 20 OK\r\n\r\n").status(), 400);
        assert_eq!(res_err("HTTP/2.0 200 OK\r\n\r\n"), HeadError::Version);
        assert_eq!(
            res_err("HTTP/2 200 OK\r\n\r\n"),
            HeadError::Bad("invalid HTTP version")
        );
        assert_eq!(
            res_err("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n").status(),
            400
        );
        assert_eq!(res_err("HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n").status(), 400);
    }

    #[test]
    fn response_leniency() {
        // Bare LF, several spaces in the status line, missing reason, space before the colon.
        let r = res("HTTP/1.1 200 OK\nContent-Length: 3\n\n");
        assert_eq!(r.framing, Framing::Length(3));
        assert_eq!(
            res("HTTP/1.1  200  OK\r\nContent-Length: 1\r\n\r\n").status,
            200
        );
        assert_eq!(res("HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n").status, 200);
        let r = res("HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\n");
        assert_eq!(r.framing, Framing::Length(4));
    }

    #[test]
    fn response_limits() {
        let s = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n";
        assert!(
            res_with(s, limits(s.len(), 10), false)
                .expect("ok")
                .is_some()
        );
        assert_eq!(
            res_with(s, limits(s.len() - 1, 10), false),
            Err(HeadError::TooLarge("response head"))
        );
        assert_eq!(
            res_with(
                "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n",
                limits(1024, 1),
                false
            ),
            Err(HeadError::TooLarge("too many header fields"))
        );
    }

    // ---- properties ----

    /// A request the generator knows the parse of.
    #[derive(Debug, Clone)]
    struct Generated {
        bytes: Vec<u8>,
        want: Req,
    }

    fn header_name() -> impl Strategy<Value = String> {
        "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,15}".prop_filter("not a framing header", |n| {
            let n = n.to_ascii_lowercase();
            ![
                "host",
                "content-length",
                "transfer-encoding",
                "connection",
                "expect",
                "upgrade",
            ]
            .contains(&n.as_str())
        })
    }

    fn field_value() -> impl Strategy<Value = String> {
        // httparse trims surrounding whitespace, so generate values without it.
        prop_oneof![Just(String::new()), "[!-~]([ -~\t]{0,30}[!-~])?"]
    }

    fn request() -> impl Strategy<Value = Generated> {
        (
            prop_oneof![
                Just("GET".to_string()),
                Just("POST".to_string()),
                "[A-Z]{1,10}".prop_filter("CONNECT is refused", |m| m != "CONNECT"),
            ],
            "/[A-Za-z0-9/._~%!$&'()*+,;=:@-]{0,40}",
            proptest::option::of("[A-Za-z0-9/._~%!$&'()*+,;=:@?-]{0,30}"),
            any::<bool>(),
            "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
            proptest::collection::vec((header_name(), field_value()), 0..12),
            proptest::option::of(0u64..1_000_000),
        )
            .prop_map(|(method, path, query, http11, host, fields, len)| {
                let target = match &query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.clone(),
                };
                let version = if http11 {
                    Version::Http11
                } else {
                    Version::Http10
                };
                let mut s = format!(
                    "{method} {target} HTTP/1.{}\r\nHost: {host}\r\n",
                    u8::from(http11)
                );
                let mut headers = vec![("Host".to_string(), host.clone().into_bytes())];
                for (n, v) in &fields {
                    s.push_str(&format!("{n}: {v}\r\n"));
                    headers.push((n.clone(), v.clone().into_bytes()));
                }
                if let Some(len) = len {
                    s.push_str(&format!("Content-Length: {len}\r\n"));
                    headers.push(("Content-Length".into(), len.to_string().into_bytes()));
                }
                s.push_str("\r\n");
                let want = Req {
                    method,
                    target,
                    path,
                    query,
                    version,
                    headers,
                    head_len: s.len(),
                    framing: len.map_or(Framing::Empty, Framing::Length),
                    keep_alive: http11,
                    expect_continue: false,
                    host: Some(host),
                    upgrade: None,
                };
                Generated {
                    bytes: s.into_bytes(),
                    want,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn generated_requests_parse_and_prefixes_are_incomplete(g in request(), body in proptest::collection::vec(any::<u8>(), 0..16)) {
            for end in 0..g.bytes.len() {
                prop_assert_eq!(req_with(&g.bytes[..end], HeadLimits::default()), Ok(None), "prefix {}", end);
            }
            prop_assert_eq!(req_with(&g.bytes, HeadLimits::default()), Ok(Some(g.want.clone())));
            // Whatever follows the head (body, next request) does not change it.
            let mut more = g.bytes.clone();
            more.extend_from_slice(&body);
            prop_assert_eq!(req_with(&more, HeadLimits::default()), Ok(Some(g.want)));
        }

        #[test]
        fn generated_requests_under_a_tight_limit(g in request()) {
            let lim = limits(g.bytes.len(), HEADERS_CEILING);
            prop_assert!(req_with(&g.bytes, lim).expect("fits").is_some());
            let lim = limits(g.bytes.len() - 1, HEADERS_CEILING);
            let e = req_with(&g.bytes, lim).expect_err("over");
            prop_assert!(matches!(e, HeadError::TooLarge(_) | HeadError::UriTooLong));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = req_with(&bytes, HeadLimits::default());
            let _ = req_with(&bytes, limits(32, 2));
            let _ = res_with(&String::from_utf8_lossy(&bytes), HeadLimits::default(), false);
            crate::http1::fuzz::request(&bytes);
        }

        #[test]
        fn mutated_requests_never_panic(g in request(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
            let mut bytes = g.bytes;
            for (i, b) in edits {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            crate::http1::fuzz::request(&bytes);
            if let Ok(Some(r)) = req_with(&bytes, HeadLimits::default()) {
                prop_assert!(r.head_len <= bytes.len());
            }
        }
    }
}
