//! Responses Tollgate writes itself: error bodies, mock integrations, and the headers every
//! response carries (`date`, `x-request-id`, `connection` when it matters). Pure: appends to
//! the connection's output buffer.

use crate::config::MockResponse;
use crate::error::ErrorKind;
use crate::http1::encode;
use crate::router::Params;

/// A request id: generated or taken from a well-formed incoming `x-request-id`.
#[derive(Clone, Copy)]
pub struct RequestId {
    buf: [u8; crate::limits::REQUEST_ID_BYTES_MAX],
    len: u8,
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl RequestId {
    pub fn new(v: &[u8]) -> Self {
        let mut buf = [0u8; crate::limits::REQUEST_ID_BYTES_MAX];
        let len = v.len().min(buf.len());
        buf[..len].copy_from_slice(&v[..len]);
        RequestId {
            buf,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// What the common headers of a response depend on.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub date: &'a [u8; 29],
    pub request_id: &'a RequestId,
    /// The connection stays open after this response.
    pub keep_alive: bool,
    /// The client spoke HTTP/1.0 (keep-alive must then be announced).
    pub http10: bool,
}

/// `date`, `x-request-id` and, when needed, `connection`.
pub fn common_headers(out: &mut Vec<u8>, meta: &Meta<'_>) {
    encode::header(out, b"date", meta.date);
    encode::header(out, b"x-request-id", meta.request_id.as_bytes());
    if !meta.keep_alive {
        encode::header(out, b"connection", b"close");
    } else if meta.http10 {
        encode::header(out, b"connection", b"keep-alive");
    }
}

/// A complete JSON error response.
pub fn error(out: &mut Vec<u8>, kind: ErrorKind, meta: &Meta<'_>, is_head: bool) {
    error_with(out, kind, meta, is_head, None);
}

/// `error`, with `Retry-After: secs` when given (429).
pub fn error_with(
    out: &mut Vec<u8>,
    kind: ErrorKind,
    meta: &Meta<'_>,
    is_head: bool,
    retry_after_s: Option<u64>,
) {
    let body = kind.body();
    encode::status_line(out, kind.status());
    encode::header(out, b"content-type", b"application/json");
    encode::header_u64(out, b"content-length", body.len() as u64);
    if let Some(s) = retry_after_s {
        encode::header_u64(out, b"retry-after", s);
    }
    common_headers(out, meta);
    encode::end_head(out);
    if !is_head {
        out.extend_from_slice(body);
    }
}

/// A complete mock response. Configured headers come first; `content-length` and the common
/// headers are ours (a configured `content-length`, `date`, `connection` or `x-request-id` was
/// refused by config validation or is overridden here).
pub fn mock(
    out: &mut Vec<u8>,
    m: &MockResponse,
    path: &str,
    params: &Params,
    meta: &Meta<'_>,
    is_head: bool,
) {
    let bodiless = m.bodiless();
    if let Some(head) = &m.head_static {
        out.extend_from_slice(head);
    } else {
        encode::status_line(out, m.status);
        for (name, value) in &m.headers {
            if MockResponse::is_managed(name) {
                continue;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            value.render(path, params, out);
            out.extend_from_slice(b"\r\n");
        }
        if !bodiless {
            encode::header_u64(out, b"content-length", m.body.len(path, params) as u64);
        }
    }
    common_headers(out, meta);
    encode::end_head(out);
    if !is_head && !bodiless {
        m.body.render(path, params, out);
    }
}

/// The interim response sent before reading a body the client announced with `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rendered;

    fn meta<'a>(date: &'a [u8; 29], id: &'a RequestId, keep_alive: bool, http10: bool) -> Meta<'a> {
        Meta {
            date,
            request_id: id,
            keep_alive,
            http10,
        }
    }

    #[test]
    fn error_response_is_complete_json() {
        let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
        let id = RequestId::new(b"abc");
        let mut out = Vec::new();
        error(
            &mut out,
            ErrorKind::NotFound,
            &meta(&date, &id, true, false),
            false,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("content-type: application/json\r\n"));
        assert!(text.contains("content-length: 23\r\n"));
        assert!(text.contains("x-request-id: abc\r\n"));
        assert!(!text.contains("connection:"));
        assert!(text.ends_with("\r\n\r\n{\"message\":\"Not Found\"}"));
    }

    #[test]
    fn connection_header_follows_keep_alive_and_version() {
        let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
        let id = RequestId::new(b"x");
        let mut out = Vec::new();
        error(
            &mut out,
            ErrorKind::BadRequest,
            &meta(&date, &id, false, false),
            true,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n"), "HEAD has no body");
        let mut out = Vec::new();
        error(
            &mut out,
            ErrorKind::NotFound,
            &meta(&date, &id, true, true),
            false,
        );
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("connection: keep-alive\r\n")
        );
    }

    #[test]
    fn mock_skips_managed_headers_and_sizes_the_body() {
        let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
        let id = RequestId::new(b"x");
        let headers = vec![
            (
                b"content-type".to_vec().into(),
                Rendered::literal(b"text/plain"),
            ),
            (b"content-length".to_vec().into(), Rendered::literal(b"999")),
        ];
        // Both ways of writing the head (pre-encoded, and per request) give the same bytes.
        let fast = MockResponse::new(201, headers.clone(), Rendered::literal(b"hello"));
        assert!(fast.head_static.is_some());
        let mut slow = MockResponse::new(201, headers, Rendered::literal(b"hello"));
        slow.head_static = None;
        let mut a = Vec::new();
        let mut b = Vec::new();
        mock(
            &mut a,
            &fast,
            "/",
            &Params::default(),
            &meta(&date, &id, true, false),
            false,
        );
        mock(
            &mut b,
            &slow,
            "/",
            &Params::default(),
            &meta(&date, &id, true, false),
            false,
        );
        assert_eq!(a, b);
        let m = fast;
        let mut out = Vec::new();
        mock(
            &mut out,
            &m,
            "/",
            &Params::default(),
            &meta(&date, &id, true, false),
            false,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n"
            ),
            "{text}"
        );
        assert!(!text.contains("999"));
        assert!(text.ends_with("\r\n\r\nhello"));
    }
}
