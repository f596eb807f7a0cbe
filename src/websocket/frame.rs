//! The RFC 6455 frame on the wire (§5.2): header parsing, in-place (un)masking, and encoding of
//! server frames into a caller's write buffer.
//!
//! Owns the bit layout only. Which headers are acceptable from a client (mask, RSV bits, control
//! frame rules, size limits) is the decoder's call (`decoder`), and so is message assembly.

use super::close::CloseCode;

/// Largest frame header: 2 bytes, 8 of 64-bit length, 4 of mask key.
pub const HEADER_BYTES_MAX: usize = 14;
/// Largest header of a server (unmasked) frame.
pub const SERVER_HEADER_BYTES_MAX: usize = 10;
/// Control frames carry at most this many payload bytes (§5.5).
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// The opcodes RFC 6455 defines; the others are reserved (a client sending one fails with 1002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    pub const fn from_u8(raw: u8) -> Option<Self> {
        Some(match raw {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented, may interleave with fragments.
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// One frame header as sent, before any policy is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as a 3-bit number (RSV1 = 4). Non-zero needs a negotiated extension.
    pub rsv: u8,
    /// The raw 4-bit opcode; see `Opcode::from_u8`.
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes from the frame's first byte to its payload.
    pub header_len: usize,
}

/// What `parse_header` found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderStatus {
    Complete(FrameHeader),
    /// The header is this many bytes long (or at least this many, when only 0-1 bytes are there).
    Incomplete {
        header_len: usize,
    },
}

/// Parses the frame header at the start of `buf`. Non-minimal length encodings are accepted
/// (RFC 6455 requires minimal lengths of senders only); a 64-bit length with its top bit set is a
/// protocol error.
pub fn parse_header(buf: &[u8]) -> Result<HeaderStatus, CloseCode> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(HeaderStatus::Incomplete { header_len: 2 });
    };
    let masked = b1 & 0x80 != 0;
    let (ext_len, len7) = match b1 & 0x7F {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let header_len = 2 + ext_len + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return Ok(HeaderStatus::Incomplete { header_len });
    }
    let payload_len = match (len7, ext_len) {
        (Some(n), _) => n,
        (None, 2) => u64::from(u16::from_be_bytes([rest[0], rest[1]])),
        _ => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&rest[..8]);
            let n = u64::from_be_bytes(be);
            if n >> 63 != 0 {
                return Err(CloseCode::PROTOCOL_ERROR);
            }
            n
        }
    };
    let mask = masked.then(|| {
        let k = &rest[ext_len..ext_len + 4];
        [k[0], k[1], k[2], k[3]]
    });
    Ok(HeaderStatus::Complete(FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0F,
        mask,
        payload_len,
        header_len,
    }))
}

/// XORs `buf` with the mask key in place, as if `buf` started `offset` bytes into the payload
/// (so a payload can be unmasked in pieces). Masking and unmasking are the same operation.
///
/// Eight bytes at a time through `u64` (unaligned loads are fine: `from_ne_bytes` of a copied
/// array); 4-6x the byte-at-a-time loop from 1 KiB up, see `bench/websocket.rs`.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let o = offset & 3;
    let k = [key[o], key[(o + 1) & 3], key[(o + 2) & 3], key[(o + 3) & 3]];
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The tail starts at a multiple of 8 from `buf[0]`, so the key phase is still `k[0]`.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

/// Appends a server frame header (FIN as given, no RSV bits, unmasked, minimal length encoding).
pub fn encode_header(out: &mut Vec<u8>, opcode: Opcode, fin: bool, payload_len: usize) {
    let mut h = [0u8; SERVER_HEADER_BYTES_MAX];
    let n = write_header_into(&mut h, opcode, fin, payload_len);
    out.extend_from_slice(&h[..n]);
}

/// Appends one whole unfragmented server frame. Control frame payloads must be ≤ 125 bytes
/// (debug-asserted: they come from our own code, pings echoed from at most 125 bytes).
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    debug_assert!(!opcode.is_control() || payload.len() <= CONTROL_PAYLOAD_BYTES_MAX);
    out.reserve(SERVER_HEADER_BYTES_MAX + payload.len());
    encode_header(out, opcode, true, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and as much of `reason` as fits in 123 bytes (cut on a
/// character boundary).
pub fn encode_close(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    let mut end = reason.len().min(CONTROL_PAYLOAD_BYTES_MAX - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    encode_header(out, Opcode::Close, true, 2 + end);
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// Appends our answer to a peer's close: the same code back (RFC 6455 §5.5.1), or an empty close
/// when the peer sent none.
pub fn encode_close_reply(out: &mut Vec<u8>, peer_code: Option<CloseCode>) {
    match peer_code {
        Some(code) => encode_close(out, code, ""),
        None => encode_frame(out, Opcode::Close, b""),
    }
}

/// A frame whose payload is written straight into the write buffer before its length is known
/// (e.g. an integration response streamed in): `start` reserves room for the largest header,
/// `finish` writes the real header and, when it is shorter, moves the payload down once.
///
/// When the length is known up front, `encode_header` then writing the payload avoids even that.
#[derive(Debug)]
#[must_use = "finish() writes the header"]
pub struct FrameWriter {
    start: usize,
}

impl FrameWriter {
    pub fn start(out: &mut Vec<u8>) -> Self {
        let start = out.len();
        out.resize(start + SERVER_HEADER_BYTES_MAX, 0);
        Self { start }
    }

    /// Writes the header for everything appended to `out` since `start`.
    pub fn finish(self, out: &mut Vec<u8>, opcode: Opcode) {
        let body = self.start + SERVER_HEADER_BYTES_MAX;
        let payload_len = out.len() - body;
        let mut h = [0u8; SERVER_HEADER_BYTES_MAX];
        let n = write_header_into(&mut h, opcode, true, payload_len);
        out[self.start..self.start + n].copy_from_slice(&h[..n]);
        if n < SERVER_HEADER_BYTES_MAX {
            out.copy_within(body.., self.start + n);
            out.truncate(self.start + n + payload_len);
        }
    }
}

/// A server frame header into a stack array; returns its length.
fn write_header_into(
    h: &mut [u8; SERVER_HEADER_BYTES_MAX],
    opcode: Opcode,
    fin: bool,
    len: usize,
) -> usize {
    h[0] = (u8::from(fin) << 7) | opcode as u8;
    if len < 126 {
        h[1] = len as u8;
        2
    } else if let Ok(n) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&n.to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-at-a-time model every fast path is checked against.
    pub(crate) fn naive_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    /// A client frame as a test peer would send it: masked with `key`.
    pub(crate) fn client_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        let b0 = (u8::from(fin) << 7) | opcode;
        let n = payload.len();
        if n < 126 {
            out.extend_from_slice(&[b0, 0x80 | n as u8]);
        } else if n <= 0xFFFF {
            out.extend_from_slice(&[b0, 0x80 | 126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.extend_from_slice(&[b0, 0x80 | 127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        out.extend_from_slice(&key);
        let start = out.len();
        out.extend_from_slice(payload);
        naive_mask(&mut out[start..], key, 0);
        out
    }

    proptest! {
        #[test]
        fn mask_matches_naive(data in prop::collection::vec(any::<u8>(), 0..300), key: [u8; 4], offset in 0usize..16) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast, key, offset);
            naive_mask(&mut slow, key, offset);
            prop_assert_eq!(&fast, &slow);
            // An involution.
            apply_mask(&mut fast, key, offset);
            prop_assert_eq!(fast, data);
        }

        #[test]
        fn mask_in_pieces_equals_whole(data in prop::collection::vec(any::<u8>(), 0..200), key: [u8; 4], cuts in prop::collection::vec(0usize..200, 0..5)) {
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);
            let mut pieces = data.clone();
            let mut ends: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            ends.push(data.len());
            ends.sort_unstable();
            let mut start = 0;
            for end in ends {
                apply_mask(&mut pieces[start..end], key, start);
                start = end;
            }
            prop_assert_eq!(pieces, whole);
        }

        #[test]
        fn header_round_trip(opcode in prop::sample::select(vec![Opcode::Text, Opcode::Binary, Opcode::Continuation]), fin: bool, len in prop_oneof![0usize..130, 65530usize..65540, Just(70_000usize)]) {
            let mut out = Vec::new();
            encode_header(&mut out, opcode, fin, len);
            let expected_len = if len < 126 { 2 } else if len < 65536 { 4 } else { 10 };
            prop_assert_eq!(out.len(), expected_len);
            let h = parse_header(&out).unwrap();
            prop_assert_eq!(h, HeaderStatus::Complete(FrameHeader {
                fin, rsv: 0, opcode: opcode as u8, mask: None, payload_len: len as u64, header_len: expected_len,
            }));
            // Every strict prefix is incomplete and says how long the header is (once it can know).
            for cut in 0..out.len() {
                match parse_header(&out[..cut]).unwrap() {
                    HeaderStatus::Incomplete { header_len } => prop_assert!(header_len > cut && header_len <= expected_len),
                    HeaderStatus::Complete(_) => prop_assert!(false, "complete at {}", cut),
                }
            }
        }

        #[test]
        fn frame_writer_equals_encode_frame(len in prop_oneof![0usize..300, 65530usize..65540, Just(70_000usize)], prefix in prop::collection::vec(any::<u8>(), 0..4)) {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut expected = prefix.clone();
            encode_frame(&mut expected, Opcode::Binary, &payload);
            let mut out = prefix.clone();
            let w = FrameWriter::start(&mut out);
            out.extend_from_slice(&payload);
            w.finish(&mut out, Opcode::Binary);
            prop_assert_eq!(out, expected);
        }
    }

    #[test]
    fn client_headers() {
        let f = client_frame(true, 0x1, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        // RFC 6455 §5.7: a masked "Hello".
        assert_eq!(
            f,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        let HeaderStatus::Complete(h) = parse_header(&f).unwrap() else {
            panic!()
        };
        assert_eq!(h.header_len, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        let mut payload = f[6..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(payload, b"Hello");
        // RSV bits and raw opcodes come through for the decoder to judge.
        let HeaderStatus::Complete(h) = parse_header(&[0x7B, 0x00]).unwrap() else {
            panic!()
        };
        assert_eq!((h.fin, h.rsv, h.opcode), (false, 7, 0xB));
        // Non-minimal 16-bit length is fine on receive.
        let HeaderStatus::Complete(h) = parse_header(&[0x82, 0x7E, 0x00, 0x05]).unwrap() else {
            panic!()
        };
        assert_eq!((h.payload_len, h.header_len), (5, 4));
        // 64-bit length with the top bit set.
        let mut big = vec![0x82, 0x7F, 0x80];
        big.extend_from_slice(&[0; 7]);
        assert_eq!(parse_header(&big), Err(CloseCode::PROTOCOL_ERROR));
    }

    #[test]
    fn close_encoding() {
        let mut out = Vec::new();
        encode_close(&mut out, CloseCode::GOING_AWAY, "bye");
        assert_eq!(out, b"\x88\x05\x03\xe9bye");
        out.clear();
        encode_close_reply(&mut out, None);
        assert_eq!(out, b"\x88\x00");
        out.clear();
        // Cut to 123 reason bytes, on a char boundary ("é" is 2 bytes: 61 of them are 122 bytes).
        let long = "é".repeat(100);
        encode_close(&mut out, CloseCode::NORMAL, &long);
        assert_eq!(out[1] as usize, 2 + 122);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
