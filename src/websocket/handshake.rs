//! The opening handshake, server side (RFC 6455 §4.2): checking an HTTP/1.1 upgrade request from
//! headers `http1` already parsed, computing `Sec-WebSocket-Accept`, choosing a subprotocol and
//! writing the `101 Switching Protocols` head.
//!
//! Owns the WebSocket-specific header rules only. It does not parse HTTP (the caller hands in
//! `httparse` headers of an HTTP/1.1 request), does not authorize (`$connect` does), and does not
//! write error responses: a `HandshakeError` says which status and extra header the caller's
//! usual error path must send. No extension is ever negotiated (permessage-deflate offers are
//! declined by not echoing them), which is what lets the decoder refuse every RSV bit.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Appended to the client's key before hashing (RFC 6455 §1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("a WebSocket upgrade must be a GET")]
    Method,
    #[error("Upgrade must name websocket")]
    Upgrade,
    #[error("Connection must contain upgrade")]
    Connection,
    #[error("missing Sec-WebSocket-Version")]
    MissingVersion,
    #[error("unsupported Sec-WebSocket-Version (13 is)")]
    Version,
    #[error("missing or invalid Sec-WebSocket-Key")]
    Key,
}

impl HandshakeError {
    /// The HTTP status to answer with: 426 for a version we do not speak, else 400.
    pub const fn status(self) -> u16 {
        match self {
            Self::Version => 426,
            _ => 400,
        }
    }

    /// A header the error response must carry (RFC 6455 §4.4: the versions we speak).
    pub const fn response_header(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Version => Some(("Sec-WebSocket-Version", "13")),
            _ => None,
        }
    }
}

/// `Sec-WebSocket-Accept`: base64 of SHA-1 of the key and the GUID, always 28 ASCII bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptKey([u8; 28]);

impl AcceptKey {
    /// For a key as sent (its base64 text, trimmed).
    pub fn for_key(key: &[u8]) -> Self {
        let mut sha = sha1_smol::Sha1::new();
        sha.update(key);
        sha.update(GUID);
        let mut out = [0u8; 28];
        // 20 bytes encode to exactly 28 with padding, so the slice always fits.
        let n = STANDARD
            .encode_slice(sha.digest().bytes(), &mut out)
            .expect("28 bytes hold base64 of 20");
        debug_assert_eq!(n, 28);
        Self(out)
    }

    pub fn as_str(&self) -> &str {
        // Base64 output is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A valid upgrade request: what the 101 response needs, still borrowing the request headers.
#[derive(Debug, Clone, Copy)]
pub struct Upgrade<'h> {
    pub accept: AcceptKey,
    headers: &'h [httparse::Header<'h>],
}

/// Checks an upgrade request (`method` and the headers of an HTTP/1.1 request head).
pub fn validate<'h>(
    method: &str,
    headers: &'h [httparse::Header<'h>],
) -> Result<Upgrade<'h>, HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::Method);
    }
    if !any_token(headers, "upgrade", "websocket") {
        return Err(HandshakeError::Upgrade);
    }
    if !any_token(headers, "connection", "upgrade") {
        return Err(HandshakeError::Connection);
    }
    let mut versions = values(headers, "sec-websocket-version");
    match (versions.next(), versions.next()) {
        (None, _) => return Err(HandshakeError::MissingVersion),
        (Some(v), None) if v.trim_ascii() == b"13" => {}
        _ => return Err(HandshakeError::Version),
    }
    let mut keys = values(headers, "sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.trim_ascii(),
        _ => return Err(HandshakeError::Key),
    };
    // A base64 16-byte nonce is exactly 24 characters with padding.
    let mut nonce = [0u8; 18];
    match STANDARD.decode_slice(key, &mut nonce) {
        Ok(16) if key.len() == 24 => {}
        _ => return Err(HandshakeError::Key),
    }
    Ok(Upgrade {
        accept: AcceptKey::for_key(key),
        headers,
    })
}

impl<'h> Upgrade<'h> {
    /// The subprotocols the client offered, in its order of preference (every
    /// `Sec-WebSocket-Protocol` header, comma-separated; entries that are not tokens skipped).
    pub fn offered_protocols(&self) -> impl Iterator<Item = &'h str> + 'h {
        values(self.headers, "sec-websocket-protocol")
            .flat_map(|v| v.split(|&b| b == b','))
            .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
            .filter(|t| is_token(t))
    }

    /// Whether the client offered `protocol` (subprotocol names are case-sensitive).
    pub fn offers(&self, protocol: &str) -> bool {
        self.offered_protocols().any(|p| p == protocol)
    }

    /// The first offered subprotocol that `allowed` contains, if any.
    pub fn select_protocol<S: AsRef<str>>(&self, allowed: &[S]) -> Option<&'h str> {
        self.offered_protocols()
            .find(|p| allowed.iter().any(|a| a.as_ref() == *p))
    }

    /// Appends the `101 Switching Protocols` head, ending with the blank line. `protocol` must
    /// be one the client offered (`select_protocol`, or a caller's choice checked with `offers`);
    /// `extra` headers (e.g. `x-request-id`) are written as given and must be valid field text.
    pub fn write_response(
        &self,
        out: &mut Vec<u8>,
        protocol: Option<&str>,
        extra: &[(&str, &str)],
    ) {
        debug_assert!(protocol.is_none_or(|p| self.offers(p)));
        write_switching_protocols(out, &self.accept, protocol, extra);
    }
}

/// Appends a `101 Switching Protocols` head for an upgrade already validated (its accept key
/// kept, the request head gone), ending with the blank line. `protocol` must be one the
/// client offered; `extra` headers are written as given and must be valid field text.
pub fn write_switching_protocols(
    out: &mut Vec<u8>,
    accept: &AcceptKey,
    protocol: Option<&str>,
    extra: &[(&str, &str)],
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accept.0);
    out.extend_from_slice(b"\r\n");
    if let Some(p) = protocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in extra {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The values of every header called `name` (lowercase), in order.
fn values<'h>(
    headers: &'h [httparse::Header<'h>],
    name: &'static str,
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether any `name` header lists `token` (case-insensitively) among its comma-separated items.
fn any_token(headers: &[httparse::Header<'_>], name: &'static str, token: &str) -> bool {
    values(headers, name).any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// An RFC 9110 token: what a subprotocol name must be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    fn good() -> Vec<httparse::Header<'static>> {
        vec![
            h("Host", "server.example.com"),
            h("Upgrade", "websocket"),
            h("Connection", "keep-alive, Upgrade"),
            h("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            h("Sec-WebSocket-Version", "13"),
            h("Sec-WebSocket-Protocol", "chat, superchat"),
            h("Sec-WebSocket-Protocol", "v2.json"),
        ]
    }

    #[test]
    fn rfc_example_accept() {
        let headers = good();
        let up = validate("GET", &headers).unwrap();
        // RFC 6455 §1.3.
        assert_eq!(up.accept.as_str(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut out = Vec::new();
        up.write_response(&mut out, Some("superchat"), &[("x-request-id", "abc")]);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: superchat\r\n\
             x-request-id: abc\r\n\r\n"
        );
        // The written head parses back as a 101 with the same accept.
        let mut slots = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut slots);
        assert!(resp.parse(&out).unwrap().is_complete());
        assert_eq!(resp.code, Some(101));
    }

    #[test]
    fn subprotocols() {
        let headers = good();
        let up = validate("GET", &headers).unwrap();
        let offered: Vec<_> = up.offered_protocols().collect();
        assert_eq!(offered, ["chat", "superchat", "v2.json"]);
        // Client order wins, and names are case-sensitive.
        assert_eq!(
            up.select_protocol(&["v2.json", "superchat"]),
            Some("superchat")
        );
        assert_eq!(up.select_protocol(&["Chat"]), None);
        assert_eq!(up.select_protocol::<&str>(&[]), None);
        assert!(up.offers("v2.json") && !up.offers("v3"));
        let mut out = Vec::new();
        up.write_response(&mut out, None, &[]);
        assert!(!out.windows(22).any(|w| w == b"Sec-WebSocket-Protocol"));
    }

    #[test]
    fn refusals() {
        let with = |name: &'static str, value: Option<&'static str>| {
            let mut hs: Vec<_> = good()
                .into_iter()
                .filter(|x| !x.name.eq_ignore_ascii_case(name))
                .collect();
            if let Some(v) = value {
                hs.push(h(name, v));
            }
            hs
        };
        let check = |hs: Vec<httparse::Header<'static>>| validate("GET", &hs).err();
        assert_eq!(
            validate("POST", &good()).err(),
            Some(HandshakeError::Method)
        );
        assert_eq!(check(with("Upgrade", None)), Some(HandshakeError::Upgrade));
        assert_eq!(
            check(with("Upgrade", Some("h2c"))),
            Some(HandshakeError::Upgrade)
        );
        assert_eq!(check(with("Upgrade", Some("h2c, WebSocket"))), None);
        assert_eq!(
            check(with("Connection", Some("keep-alive"))),
            Some(HandshakeError::Connection)
        );
        assert_eq!(check(with("Connection", Some("UPGRADE"))), None);
        assert_eq!(
            check(with("Sec-WebSocket-Version", None)),
            Some(HandshakeError::MissingVersion)
        );
        let v8 = check(with("Sec-WebSocket-Version", Some("8")));
        assert_eq!(v8, Some(HandshakeError::Version));
        assert_eq!(v8.map(HandshakeError::status), Some(426));
        assert_eq!(
            v8.and_then(HandshakeError::response_header),
            Some(("Sec-WebSocket-Version", "13"))
        );
        assert_eq!(
            check(with("Sec-WebSocket-Key", None)),
            Some(HandshakeError::Key)
        );
        // 15 bytes, 17 bytes, not base64, two keys.
        for bad in [
            "AAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAA=",
            "dGhlIHNhbXBsZSBub25jZQ",
            "!!!!!!!!!!!!!!!!!!!!!!==",
        ] {
            assert_eq!(
                check(with("Sec-WebSocket-Key", Some(bad))),
                Some(HandshakeError::Key),
                "{bad}"
            );
        }
        let mut two = good();
        two.push(h("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(check(two), Some(HandshakeError::Key));
        assert_eq!(HandshakeError::Key.status(), 400);
    }
}
