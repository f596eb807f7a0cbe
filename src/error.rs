//! The one error type a request can end in, and what it means in HTTP.
//!
//! Every failure on the request path becomes a `GatewayError`: its `kind` decides the status and
//! the Amazon-API-Gateway-style JSON body the client sees, its `source` says which side was at
//! fault (for logs and metrics), and `context` says where. Per-module errors (`HeadError`,
//! `BodyError`, `io::Error`) convert into it at the boundary of the connection driver.

use std::fmt;

/// Which side of the gateway an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we refuse (4xx).
    Downstream,
    /// The backend failed (5xx).
    Upstream,
    /// Our own limits or state.
    Internal,
}

/// What went wrong; decides the status and the message in the JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    /// A cache invalidation (`Cache-Control: max-age=0`) the caller may not make.
    Forbidden,
    NotFound,
    RequestTimeout,
    PayloadTooLarge,
    UriTooLong,
    HeadersTooLarge,
    ExpectationFailed,
    TooManyRequests,
    UpgradeRequired,
    NotImplemented,
    VersionNotSupported,
    BadGateway,
    GatewayTimeout,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UriTooLong => 414,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::ExpectationFailed => 417,
            ErrorKind::TooManyRequests => 429,
            ErrorKind::UpgradeRequired => 426,
            ErrorKind::NotImplemented => 501,
            ErrorKind::VersionNotSupported => 505,
            ErrorKind::BadGateway => 502,
            ErrorKind::GatewayTimeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    /// The complete JSON body, as Amazon API Gateway words it where it has a word for it.
    pub fn body(self) -> &'static [u8] {
        match self {
            ErrorKind::BadRequest => br#"{"message":"Bad Request"}"#,
            ErrorKind::Forbidden => br#"{"message":"Forbidden"}"#,
            ErrorKind::NotFound => br#"{"message":"Not Found"}"#,
            ErrorKind::RequestTimeout => br#"{"message":"Request Timeout"}"#,
            ErrorKind::PayloadTooLarge => br#"{"message":"Request Entity Too Large"}"#,
            ErrorKind::UriTooLong => br#"{"message":"URI Too Long"}"#,
            ErrorKind::HeadersTooLarge => br#"{"message":"Request Header Fields Too Large"}"#,
            ErrorKind::ExpectationFailed => br#"{"message":"Expectation Failed"}"#,
            ErrorKind::TooManyRequests => br#"{"message":"Too Many Requests"}"#,
            ErrorKind::UpgradeRequired => br#"{"message":"Upgrade Required"}"#,
            ErrorKind::NotImplemented => br#"{"message":"Not Implemented"}"#,
            ErrorKind::VersionNotSupported => br#"{"message":"HTTP Version Not Supported"}"#,
            ErrorKind::BadGateway => br#"{"message":"Bad Gateway"}"#,
            ErrorKind::GatewayTimeout => br#"{"message":"Endpoint request timed out"}"#,
            ErrorKind::Internal => br#"{"message":"Internal server error"}"#,
        }
    }

    /// Whether the connection must be closed after answering: the stream may be out of sync.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorKind::BadRequest
                | ErrorKind::RequestTimeout
                | ErrorKind::UriTooLong
                | ErrorKind::HeadersTooLarge
                | ErrorKind::NotImplemented
                | ErrorKind::VersionNotSupported
        )
    }
}

/// A request-path failure: kind, side, and a static word on where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub side: Side,
    /// What happened and where, for the log line (e.g. "upstream 127.0.0.1:9000: connection refused").
    pub context: String,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, side: Side, context: impl Into<String>) -> Self {
        GatewayError {
            kind,
            side,
            context: context.into(),
        }
    }

    pub fn downstream(kind: ErrorKind, context: impl Into<String>) -> Self {
        Self::new(kind, Side::Downstream, context)
    }

    pub fn upstream(kind: ErrorKind, context: impl Into<String>) -> Self {
        Self::new(kind, Side::Upstream, context)
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            Side::Downstream => "client",
            Side::Upstream => "backend",
            Side::Internal => "gateway",
        };
        write!(
            f,
            "{} {} ({side}): {}",
            self.kind.status(),
            crate::http1::encode::reason(self.kind.status()),
            self.context
        )
    }
}

impl std::error::Error for GatewayError {}

impl From<crate::http1::HeadError> for ErrorKind {
    fn from(e: crate::http1::HeadError) -> Self {
        match e.status() {
            414 => ErrorKind::UriTooLong,
            431 => ErrorKind::HeadersTooLarge,
            417 => ErrorKind::ExpectationFailed,
            501 => ErrorKind::NotImplemented,
            505 => ErrorKind::VersionNotSupported,
            _ => ErrorKind::BadRequest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_with_a_message() {
        for k in [
            ErrorKind::BadRequest,
            ErrorKind::NotFound,
            ErrorKind::RequestTimeout,
            ErrorKind::PayloadTooLarge,
            ErrorKind::UriTooLong,
            ErrorKind::HeadersTooLarge,
            ErrorKind::ExpectationFailed,
            ErrorKind::TooManyRequests,
            ErrorKind::UpgradeRequired,
            ErrorKind::NotImplemented,
            ErrorKind::VersionNotSupported,
            ErrorKind::BadGateway,
            ErrorKind::GatewayTimeout,
            ErrorKind::Internal,
        ] {
            let v: serde_json::Value = serde_json::from_slice(k.body()).unwrap();
            assert!(v["message"].is_string(), "{k:?}");
        }
        assert_eq!(
            ErrorKind::GatewayTimeout.body(),
            br#"{"message":"Endpoint request timed out"}"#
        );
        assert_eq!(ErrorKind::NotFound.status(), 404);
    }
}
