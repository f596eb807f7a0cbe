//! Close codes (RFC 6455 §7.4) and the close frame payload: which codes a peer may send, and
//! parsing `code + UTF-8 reason`. Encoding a close frame lives in `frame`.

use std::ops::Range;

/// A WebSocket close status code. Also the error type of every protocol check: failing the
/// connection means sending a close frame with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: Self = Self(1000);
    /// Server shutting down (SIGTERM drain) or the connection's age/idle limit.
    pub const GOING_AWAY: Self = Self(1001);
    pub const PROTOCOL_ERROR: Self = Self(1002);
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// Text that is not UTF-8.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// A frame or message over its size limit.
    pub const TOO_BIG: Self = Self(1009);
    pub const INTERNAL_ERROR: Self = Self(1011);

    /// Whether a peer may put this code on the wire (RFC 6455 §7.4.1-2 plus the IANA registry):
    /// 1000-1003, 1007-1014 and the application ranges 3000-4999. 1004 is reserved, 1005, 1006
    /// and 1015 are never sent, 1016-2999 are unassigned, below 1000 and from 5000 undefined.
    pub const fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A close frame's payload, understood. `reason` is a range into the payload, valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosePayload {
    /// `None` for an empty payload (the peer gave no code: RFC's 1005 "no status received").
    pub code: Option<CloseCode>,
    pub reason: Range<usize>,
}

/// Parses a received close payload: empty, or a valid code then a UTF-8 reason.
/// One byte or an invalid code is a protocol error (1002); a non-UTF-8 reason is 1007.
pub fn parse_close_payload(payload: &[u8]) -> Result<ClosePayload, CloseCode> {
    match payload {
        [] => Ok(ClosePayload {
            code: None,
            reason: 0..0,
        }),
        [_] => Err(CloseCode::PROTOCOL_ERROR),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(CloseCode::PROTOCOL_ERROR);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(CloseCode::INVALID_PAYLOAD);
            }
            Ok(ClosePayload {
                code: Some(code),
                reason: 2..payload.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_table() {
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ];
        let invalid = [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 5001, 65535,
        ];
        for c in valid {
            assert!(CloseCode(c).is_valid_on_wire(), "{c}");
        }
        for c in invalid {
            assert!(!CloseCode(c).is_valid_on_wire(), "{c}");
        }
        // Exhaustively against the table as the RFC and registry write it.
        for c in 0..=u16::MAX {
            let expected = (1000..=1003).contains(&c)
                || (1007..=1014).contains(&c)
                || (3000..5000).contains(&c);
            assert_eq!(CloseCode(c).is_valid_on_wire(), expected, "{c}");
        }
    }

    #[test]
    fn payloads() {
        assert_eq!(
            parse_close_payload(b""),
            Ok(ClosePayload {
                code: None,
                reason: 0..0
            })
        );
        assert_eq!(parse_close_payload(b"\x03"), Err(CloseCode::PROTOCOL_ERROR));
        assert_eq!(
            parse_close_payload(b"\x03\xe8"),
            Ok(ClosePayload {
                code: Some(CloseCode::NORMAL),
                reason: 2..2
            })
        );
        assert_eq!(
            parse_close_payload(b"\x03\xe9bye \xce\xba"),
            Ok(ClosePayload {
                code: Some(CloseCode::GOING_AWAY),
                reason: 2..8
            })
        );
        assert_eq!(
            parse_close_payload(b"\x03\xedxx"),
            Err(CloseCode::PROTOCOL_ERROR)
        ); // 1005
        assert_eq!(
            parse_close_payload(b"\x03\xe7"),
            Err(CloseCode::PROTOCOL_ERROR)
        ); // 999
        assert_eq!(
            parse_close_payload(b"\x13\x88"),
            Err(CloseCode::PROTOCOL_ERROR)
        ); // 5000
        assert_eq!(
            parse_close_payload(b"\x03\xe8\xff"),
            Err(CloseCode::INVALID_PAYLOAD)
        );
    }
}
