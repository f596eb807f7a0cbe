//! WebSocket connection ids: unique, unguessable, and saying which node and core own the
//! connection, so `/@connections/{id}` on any core can forward to the owner without a lookup.
//!
//! Owns the id format and generation; not the per-core connection table. Layout, 18 bytes:
//! node (u16 BE) · core (u16 BE) · 14 random bytes (112 bits, from the OS CSPRNG), written as 24
//! characters of unpadded base64url (safe in a URL path, unlike Amazon's `L0SM9cOFvHcCIhw=`).
//! Each core owns an `IdGenerator` that draws OS randomness in blocks, so generating an id is
//! a copy and a base64 encode, with one `getrandom` call per `POOL_IDS` ids.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const RAW_BYTES: usize = 18;
const RANDOM_BYTES: usize = 14;
/// Length of an id's text.
pub const ID_CHARS: usize = 24;
/// Ids drawn from one OS randomness call.
const POOL_IDS: usize = 32;

/// A connection id; `as_str` is what clients and the management API see.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId {
    raw: [u8; RAW_BYTES],
    text: [u8; ID_CHARS],
}

impl ConnectionId {
    fn from_raw(raw: [u8; RAW_BYTES]) -> Self {
        let mut text = [0u8; ID_CHARS];
        // 18 bytes are exactly 24 base64 characters.
        let n = URL_SAFE_NO_PAD
            .encode_slice(raw, &mut text)
            .expect("24 bytes hold base64 of 18");
        debug_assert_eq!(n, ID_CHARS);
        Self { raw, text }
    }

    /// Reads an id from its text (e.g. a `/@connections/{id}` path segment).
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != ID_CHARS {
            return None;
        }
        let mut raw = [0u8; RAW_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(s, &mut raw) {
            Ok(RAW_BYTES) => {}
            _ => return None,
        }
        // Refuses non-canonical spellings (unused low bits): one id, one text.
        let id = Self::from_raw(raw);
        (id.as_str() == s).then_some(id)
    }

    pub fn as_str(&self) -> &str {
        // Base64 output is ASCII.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    /// The node that owns the connection (0 until clustering exists).
    pub fn node(&self) -> u16 {
        u16::from_be_bytes([self.raw[0], self.raw[1]])
    }

    /// The core (index into the runtime's cores) that owns the connection.
    pub fn core(&self) -> u16 {
        u16::from_be_bytes([self.raw[2], self.raw[3]])
    }
}

impl std::fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectionId({})", self.as_str())
    }
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OS had no randomness to give (not expected on Linux once booted).
#[derive(Debug, thiserror::Error)]
#[error("reading OS randomness for a connection id: {0}")]
pub struct IdError(getrandom::Error);

/// One core's id source.
pub struct IdGenerator {
    node: u16,
    core: u16,
    pool: [u8; RANDOM_BYTES * POOL_IDS],
    /// Invariant: `pool[used..]` has not been handed out.
    used: usize,
}

impl IdGenerator {
    pub fn new(node: u16, core: u16) -> Self {
        Self {
            node,
            core,
            pool: [0; RANDOM_BYTES * POOL_IDS],
            used: RANDOM_BYTES * POOL_IDS,
        }
    }

    pub fn next_id(&mut self) -> Result<ConnectionId, IdError> {
        if self.used == self.pool.len() {
            getrandom::fill(&mut self.pool).map_err(IdError)?;
            self.used = 0;
        }
        let mut raw = [0u8; RAW_BYTES];
        raw[0..2].copy_from_slice(&self.node.to_be_bytes());
        raw[2..4].copy_from_slice(&self.core.to_be_bytes());
        raw[4..].copy_from_slice(&self.pool[self.used..self.used + RANDOM_BYTES]);
        // Each random byte is used once.
        self.pool[self.used..self.used + RANDOM_BYTES].fill(0);
        self.used += RANDOM_BYTES;
        Ok(ConnectionId::from_raw(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_round_trip_and_differ() {
        let mut g = IdGenerator::new(3, 517);
        let mut seen = HashSet::new();
        for _ in 0..(POOL_IDS * 3 + 5) {
            let id = g.next_id().unwrap();
            assert_eq!(id.as_str().len(), ID_CHARS);
            assert!(
                id.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            let back = ConnectionId::parse(id.as_str()).unwrap();
            assert_eq!(back, id);
            assert_eq!((back.node(), back.core()), (3, 517));
            assert!(seen.insert(id.as_str().to_owned()), "duplicate id");
        }
        // Random parts differ across generators for the same core too.
        let a = IdGenerator::new(0, 0).next_id().unwrap();
        let b = IdGenerator::new(0, 0).next_id().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn parse_refuses_other_text() {
        let id = IdGenerator::new(0, 1).next_id().unwrap();
        let s = id.as_str();
        assert!(ConnectionId::parse(&s[1..]).is_none());
        assert!(ConnectionId::parse(&format!("{s}A")).is_none());
        assert!(ConnectionId::parse(&format!("{}=", &s[..23])).is_none());
        assert!(ConnectionId::parse(&format!("+{}", &s[1..])).is_none());
        assert!(ConnectionId::parse("L0SM9cOFvHcCIhw=").is_none());
    }
}
