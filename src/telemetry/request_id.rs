//! Request ids: unique per request, formatted like a UUID (`8-4-4-4-12` lower hex), made on the
//! core that serves the request from a per-process random seed, the core id and a core-local
//! counter. No allocation, no sharing between cores.

use std::cell::Cell;

use crate::limits::REQUEST_ID_BYTES_MAX;

/// Length of a generated id.
pub const REQUEST_ID_LEN: usize = 36;

/// A core's request-id generator.
#[derive(Debug)]
pub struct RequestIds {
    /// High 64 bits: process seed mixed with the core id; fixed for the core's life.
    high: u64,
    counter: Cell<u64>,
}

impl RequestIds {
    pub fn new(process_seed: u64, core: usize) -> Self {
        let high = process_seed ^ (core as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        RequestIds {
            high,
            counter: Cell::new(0),
        }
    }

    /// The next id, written into `out`.
    pub fn next(&self, out: &mut [u8; REQUEST_ID_LEN]) {
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        // Scramble the counter so consecutive ids do not look consecutive (they stay unique:
        // the multiplier is odd, so this is a bijection on u64).
        let low = n.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (n >> 29);
        // Unique as long as `low` is (it is a bijection of the counter); mixing the counter into
        // the high half only makes ids from one core look unrelated.
        let high = self.high ^ (n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(31);
        let v = ((high as u128) << 64) | low as u128;
        format_uuid(v, out);
    }
}

fn format_uuid(v: u128, out: &mut [u8; REQUEST_ID_LEN]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 32];
    for (i, b) in v.to_be_bytes().iter().enumerate() {
        hex[2 * i] = HEX[(b >> 4) as usize];
        hex[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
    out[..8].copy_from_slice(&hex[..8]);
    out[8] = b'-';
    out[9..13].copy_from_slice(&hex[8..12]);
    out[13] = b'-';
    out[14..18].copy_from_slice(&hex[12..16]);
    out[18] = b'-';
    out[19..23].copy_from_slice(&hex[16..20]);
    out[23] = b'-';
    out[24..].copy_from_slice(&hex[20..]);
}

/// A process seed from the kernel's randomness (via std's hasher keys), for `RequestIds::new`.
pub fn process_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// Whether an incoming `x-request-id` is kept: 1..=REQUEST_ID_BYTES_MAX bytes of
/// `[A-Za-z0-9._:-]`. Anything else is replaced by a generated id.
pub fn is_well_formed(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= REQUEST_ID_BYTES_MAX
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_uuid_shaped() {
        let ids = RequestIds::new(42, 1);
        let other = RequestIds::new(42, 2);
        let mut seen = std::collections::HashSet::new();
        let mut buf = [0u8; REQUEST_ID_LEN];
        for _ in 0..10_000 {
            ids.next(&mut buf);
            assert!(seen.insert(buf));
            other.next(&mut buf);
            assert!(seen.insert(buf));
        }
        let s = std::str::from_utf8(&buf).unwrap();
        let groups: Vec<usize> = s.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(s.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
    }

    #[test]
    fn uuid_layout() {
        let mut out = [0u8; REQUEST_ID_LEN];
        format_uuid(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, &mut out);
        assert_eq!(&out, b"01234567-89ab-cdef-fedc-ba9876543210");
    }

    #[test]
    fn incoming_ids_are_checked() {
        assert!(is_well_formed(b"abc-123_x.y:z"));
        assert!(!is_well_formed(b""));
        assert!(!is_well_formed(b"has space"));
        assert!(!is_well_formed(&[b'a'; REQUEST_ID_BYTES_MAX + 1]));
        assert!(is_well_formed(&[b'a'; REQUEST_ID_BYTES_MAX]));
    }
}
