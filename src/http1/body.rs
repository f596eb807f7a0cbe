//! Body framing: decoders that work in place over whatever bytes arrived, for Content-Length and
//! chunked bodies, behind one `BodyDecoder` the I/O layer drives.
//!
//! Owns: where body data starts and ends in the read buffer, and what chunk framing is acceptable
//! (strict: CRLF everywhere, bounded size lines and trailers). Does not own: body size limits per
//! route (413), reading, or forwarding; trailers are consumed and dropped, never exposed.
//!
//! Every decoder has the same shape: `decode(input) -> (consumed, data)`, where `data` is a range
//! of `input` inside `input[..consumed]`. Data is returned as soon as any arrives (a chunk is never
//! buffered whole), and one call returns at most one contiguous range.

use std::ops::Range;

use crate::http1::parse::Framing;
use crate::limits::{CHUNK_LINE_BYTES_MAX, TRAILER_BYTES_MAX};

/// Why a chunked body was refused (400 from a client, 502 from a backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Bad chunk-size line: empty or non-hex size, more than 15 hex digits, a bad byte in the
    /// extensions, or a size line not ended by CRLF.
    #[error("invalid chunk size")]
    ChunkSize,
    #[error("chunk size line too long")]
    ChunkLineTooLong,
    #[error("missing CRLF after chunk data")]
    ChunkTerminator,
    #[error("trailer section too large or malformed")]
    Trailers,
}

/// One decoder for any framing, so the connection code drives every body the same way.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    Length(LengthDecoder),
    Chunked(ChunkedDecoder),
    /// Everything until the peer closes (responses only); never done by itself: EOF ends it.
    UntilClose,
    /// No body.
    Empty,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => BodyDecoder::Empty,
            Framing::Length(n) => BodyDecoder::Length(LengthDecoder::new(n)),
            Framing::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => BodyDecoder::UntilClose,
        }
    }

    /// As `ChunkedDecoder::decode`: `(consumed, data range of input)`.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Range<usize>), BodyError> {
        match self {
            BodyDecoder::Length(d) => d.decode(input),
            BodyDecoder::Chunked(d) => d.decode(input),
            BodyDecoder::UntilClose => Ok((input.len(), 0..input.len())),
            BodyDecoder::Empty => Ok((0, 0..0)),
        }
    }

    /// The body is complete; bytes after it belong to the next message.
    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Length(d) => d.is_done(),
            BodyDecoder::Chunked(d) => d.is_done(),
            BodyDecoder::UntilClose => false,
            BodyDecoder::Empty => true,
        }
    }
}

/// A `Content-Length` body: exactly `remaining` more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthDecoder {
    remaining: u64,
}

impl LengthDecoder {
    pub fn new(len: u64) -> Self {
        Self { remaining: len }
    }

    /// Body bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Takes up to `remaining` bytes of `input`, all of them data. Never fails; the `Result`
    /// keeps the shape of the other decoders.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Range<usize>), BodyError> {
        let n = clamp(self.remaining, input.len());
        self.remaining -= n as u64;
        Ok((n, 0..n))
    }

    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }
}

/// `min(remaining, available)` without truncating `remaining` on 32-bit targets.
fn clamp(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// Incremental `Transfer-Encoding: chunked` decoder (RFC 9112 §7.1).
#[derive(Debug, Default, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Chunk size being read, then data bytes left in the current chunk.
    size: u64,
    /// Hex digits read in the current size line.
    digits: u8,
    /// Bytes of the current size line before its CRLF.
    line_bytes: usize,
    /// Bytes of the trailer section so far, final CRLF included.
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    #[default]
    Size,
    /// Whitespace after the size; only `;` may follow (BWS before a chunk extension).
    SizeWs,
    /// Chunk extensions, discarded, up to CR.
    Ext,
    /// CR of the size line seen; LF must follow.
    SizeLf,
    /// `size` data bytes left.
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer field line, or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// More hex digits than this could overflow u64 (16 digits) and are refused, even as zeros.
const SIZE_DIGITS_MAX: u8 = 15;

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes from `input`. Returns `(consumed, data)`: how many bytes of `input` were used, and
    /// the range of `input` holding body data (possibly empty). Call again with `&input[consumed..]`
    /// while `consumed > 0` and not `is_done()`; `consumed == 0` means more input is needed.
    ///
    /// Framing after the returned data is consumed in the same call up to the next data byte, so
    /// the call that returns the last data usually also finishes the body. An error found after
    /// data in the same call is held back: the data is returned, and the next call fails.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Range<usize>), BodyError> {
        let mut pos = 0;
        let mut data = 0..0;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Data if !data.is_empty() => break,
                State::Data => {
                    let n = clamp(self.size, input.len() - pos);
                    data = pos..pos + n;
                    pos += n;
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => match self.step(input[pos]) {
                    Ok(()) => pos += 1,
                    // Invariant: `step` changes nothing when it fails, so the next call sees the
                    // same byte and reports the error then.
                    Err(_) if !data.is_empty() => break,
                    Err(e) => return Err(e),
                },
            }
        }
        Ok((pos, data))
    }

    /// The last chunk and the trailers have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// One framing byte. Must leave `self` untouched when it returns an error.
    fn step(&mut self, b: u8) -> Result<(), BodyError> {
        use State::*;
        match self.state {
            Size | SizeWs | Ext if b != b'\r' => {
                if self.line_bytes >= CHUNK_LINE_BYTES_MAX {
                    return Err(BodyError::ChunkLineTooLong);
                }
                self.state = self.size_line_byte(b)?;
                self.line_bytes += 1;
            }
            Size | Ext => {
                if self.digits == 0 {
                    return Err(BodyError::ChunkSize);
                }
                self.state = SizeLf;
            }
            SizeWs => return Err(BodyError::ChunkSize),
            SizeLf => {
                if b != b'\n' {
                    return Err(BodyError::ChunkSize);
                }
                self.state = if self.size == 0 { TrailerStart } else { Data };
                self.digits = 0;
                self.line_bytes = 0;
            }
            DataCr | DataLf => {
                let (want, next) = if self.state == DataCr {
                    (b'\r', DataLf)
                } else {
                    (b'\n', Size)
                };
                if b != want {
                    return Err(BodyError::ChunkTerminator);
                }
                self.state = next;
            }
            TrailerStart | TrailerName | TrailerValue | TrailerLf | FinalLf => {
                if self.trailer_bytes >= TRAILER_BYTES_MAX {
                    return Err(BodyError::Trailers);
                }
                self.state = self.trailer_byte(b)?;
                self.trailer_bytes += 1;
            }
            // `decode` handles data and never steps past the end.
            Data | Done => {}
        }
        Ok(())
    }

    /// A byte of the size line other than CR: the next state, updating the size on a digit.
    fn size_line_byte(&mut self, b: u8) -> Result<State, BodyError> {
        match (self.state, b) {
            (State::Size, _) if b.is_ascii_hexdigit() => {
                if self.digits >= SIZE_DIGITS_MAX {
                    return Err(BodyError::ChunkSize);
                }
                let d = (b as char).to_digit(16).map_or(0, u64::from);
                self.size = (self.size << 4) | d;
                self.digits += 1;
                Ok(State::Size)
            }
            (State::Size, b' ' | b'\t' | b';') if self.digits == 0 => Err(BodyError::ChunkSize),
            (State::Size | State::SizeWs, b' ' | b'\t') => Ok(State::SizeWs),
            (State::Size | State::SizeWs, b';') => Ok(State::Ext),
            // Extension text: tokens, quoted strings, obs-text; no control bytes, no bare LF.
            (State::Ext, b'\t' | b' '..=b'~' | 0x80..=0xff) => Ok(State::Ext),
            _ => Err(BodyError::ChunkSize),
        }
    }

    /// A trailer section byte: `name: value` lines, then CRLF.
    fn trailer_byte(&self, b: u8) -> Result<State, BodyError> {
        use State::*;
        match (self.state, b) {
            (TrailerStart, b'\r') => Ok(FinalLf),
            (TrailerStart | TrailerName, _) if is_tchar(b) => Ok(TrailerName),
            (TrailerName, b':') => Ok(TrailerValue),
            (TrailerValue, b'\r') => Ok(TrailerLf),
            (TrailerValue, b'\t' | b' '..=b'~' | 0x80..=0xff) => Ok(TrailerValue),
            (TrailerLf, b'\n') => Ok(TrailerStart),
            (FinalLf, b'\n') => Ok(Done),
            _ => Err(BodyError::Trailers),
        }
    }
}

/// RFC 9110 token character.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a whole input did to a decoder: body data, bytes consumed, and how it ended.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Outcome {
        Done { data: Vec<u8>, consumed: usize },
        Incomplete { data: Vec<u8> },
        Error(BodyError),
    }

    /// Feeds `pieces` one after the other, as reads would deliver them, calling `decode` until
    /// each piece is used up (or the body ends).
    fn run(pieces: &[&[u8]]) -> Outcome {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            let mut input = *piece;
            while !input.is_empty() && !d.is_done() {
                match d.decode(input) {
                    Ok((n, range)) => {
                        assert!(n > 0, "non-empty input must make progress");
                        assert!(range.end <= n);
                        data.extend_from_slice(&input[range]);
                        consumed += n;
                        input = &input[n..];
                    }
                    Err(e) => return Outcome::Error(e),
                }
            }
            if d.is_done() {
                return Outcome::Done { data, consumed };
            }
        }
        Outcome::Incomplete { data }
    }

    fn whole(input: &[u8]) -> Outcome {
        run(&[input])
    }

    fn bytewise(input: &[u8]) -> Outcome {
        let pieces: Vec<&[u8]> = input.chunks(1).collect();
        run(&pieces)
    }

    fn done(data: &[u8], consumed: usize) -> Outcome {
        Outcome::Done {
            data: data.to_vec(),
            consumed,
        }
    }

    // ---- naive reference: whole buffer, slices and `find`, no state machine ----

    #[derive(Debug, PartialEq, Eq)]
    enum Naive {
        Done { data: Vec<u8>, consumed: usize },
        Incomplete,
        Error,
    }

    fn find_crlf(s: &[u8]) -> Option<usize> {
        s.windows(2).position(|w| w == b"\r\n")
    }

    fn text_ok(s: &[u8]) -> bool {
        s.iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
    }

    fn naive(input: &[u8]) -> Naive {
        let mut pos = 0;
        let mut data = Vec::new();
        loop {
            let Some(end) = find_crlf(&input[pos..]) else {
                return Naive::Incomplete;
            };
            let line = &input[pos..pos + end];
            if line.len() > CHUNK_LINE_BYTES_MAX {
                return Naive::Error;
            }
            let (size, ext) = match line.iter().position(|&b| b == b';') {
                Some(i) => (&line[..i], Some(&line[i + 1..])),
                None => (line, None),
            };
            let size = match ext {
                Some(_) => {
                    let trimmed = size.len()
                        - size
                            .iter()
                            .rev()
                            .take_while(|&&b| b == b' ' || b == b'\t')
                            .count();
                    &size[..trimmed]
                }
                None => size,
            };
            if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
                return Naive::Error;
            }
            if !ext.is_none_or(text_ok) {
                return Naive::Error;
            }
            let size = u64::from_str_radix(std::str::from_utf8(size).expect("hex"), 16)
                .expect("15 digits fit");
            pos += end + 2;
            if size == 0 {
                break;
            }
            let size = size as usize;
            if input.len() - pos < size {
                return Naive::Incomplete;
            }
            data.extend_from_slice(&input[pos..pos + size]);
            pos += size;
            let after = &input[pos..input.len().min(pos + 2)];
            if !b"\r\n".starts_with(after) {
                return Naive::Error;
            }
            if after.len() < 2 {
                return Naive::Incomplete;
            }
            pos += 2;
        }
        let trailers = pos;
        loop {
            let Some(end) = find_crlf(&input[pos..]) else {
                return Naive::Incomplete;
            };
            let line = &input[pos..pos + end];
            pos += end + 2;
            if pos - trailers > TRAILER_BYTES_MAX {
                return Naive::Error;
            }
            if line.is_empty() {
                return Naive::Done {
                    data,
                    consumed: pos,
                };
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Naive::Error;
            };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) || !text_ok(value) {
                return Naive::Error;
            }
        }
    }

    /// The decoder and the reference agree: same data when either finishes, an error wherever the
    /// reference sees one, and never finished where the reference still wants bytes (the decoder
    /// may fail earlier there, as it checks each byte as it comes).
    fn agree(input: &[u8]) -> Result<(), TestCaseError> {
        let got = whole(input);
        match (naive(input), &got) {
            (Naive::Done { data, consumed }, _) => {
                prop_assert_eq!(&got, &Outcome::Done { data, consumed })
            }
            (Naive::Error, Outcome::Error(_)) => {}
            (Naive::Incomplete, Outcome::Incomplete { .. } | Outcome::Error(_)) => {}
            (n, g) => prop_assert!(false, "reference {:?}, decoder {:?}", n, g),
        }
        prop_assert_eq!(bytewise(input), got);
        Ok(())
    }

    // ---- unit tests ----

    #[test]
    fn one_call_decodes_a_small_body_and_finishes() {
        let input = b"5\r\nhello\r\n0\r\n\r\nGET";
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(input), Ok((input.len() - 3, 3..8)));
        assert!(d.is_done());
        assert_eq!(d.decode(b"GET"), Ok((0, 0..0)));
    }

    #[test]
    fn data_comes_before_the_chunk_is_complete() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(b"a\r\nhel"), Ok((6, 3..6)));
        assert_eq!(d.decode(b"lo"), Ok((2, 0..2)));
        assert_eq!(d.decode(b"world\r"), Ok((6, 0..5)));
        assert_eq!(d.decode(b"\n"), Ok((1, 0..0)));
        assert!(!d.is_done());
        assert_eq!(d.decode(b""), Ok((0, 0..0)));
    }

    #[test]
    fn one_range_per_call() {
        let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(input), Ok((11, 3..6)));
        assert_eq!(d.decode(&input[11..]), Ok((input.len() - 11, 0..2)));
        assert!(d.is_done());
    }

    #[test]
    fn byte_at_a_time() {
        let input =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: v\r\n\r\n";
        assert_eq!(
            bytewise(input),
            done(b"Wikipedia in\r\n\r\nchunks.", input.len())
        );
        assert_eq!(whole(input), bytewise(input));
    }

    #[test]
    fn size_forms() {
        for (size_line, len) in [
            ("a", 10),
            ("A", 10),
            ("0a", 10),
            ("00000000000000a", 10),
            ("10", 16),
            ("1F", 31),
            ("a;x", 10),
            ("a;x=1;y=\"q z\"", 10),
            ("a \t ;x", 10),
            ("a;", 10),
        ] {
            let body = vec![b'z'; len];
            let mut input = format!("{size_line}\r\n").into_bytes();
            input.extend_from_slice(&body);
            input.extend_from_slice(b"\r\n0\r\n\r\n");
            assert_eq!(whole(&input), done(&body, input.len()), "{size_line:?}");
        }
    }

    #[test]
    fn bad_sizes() {
        for size_line in [
            "",
            "+5",
            "-5",
            "0x5",
            " 5",
            "5 ",
            "g",
            "5 5",
            ";x",
            "1234567890abcdef",
            "5\0",
        ] {
            let input = format!("{size_line}\r\n");
            assert_eq!(
                whole(input.as_bytes()),
                Outcome::Error(BodyError::ChunkSize),
                "{size_line:?}"
            );
        }
        // 15 digits is the most we take, whatever their value.
        let input = b"fffffffffffffff\r\n";
        assert_eq!(whole(input), Outcome::Incomplete { data: vec![] });
        let input = b"000000000000000f\r\n";
        assert_eq!(whole(input), Outcome::Error(BodyError::ChunkSize));
    }

    #[test]
    fn bare_lf_is_refused() {
        assert_eq!(whole(b"5\nhello\r\n"), Outcome::Error(BodyError::ChunkSize));
        assert_eq!(
            whole(b"5;x\nhello\r\n"),
            Outcome::Error(BodyError::ChunkSize)
        );
        assert_eq!(
            whole(b"5\r\rhello\r\n"),
            Outcome::Error(BodyError::ChunkSize)
        );
        assert_eq!(
            whole(b"5\r\nhello\n0\r\n\r\n"),
            Outcome::Error(BodyError::ChunkTerminator)
        );
        assert_eq!(
            whole(b"5\r\nhelloX\r\n"),
            Outcome::Error(BodyError::ChunkTerminator)
        );
        assert_eq!(
            whole(b"5\r\nhello\rX"),
            Outcome::Error(BodyError::ChunkTerminator)
        );
        assert_eq!(whole(b"0\r\n\n"), Outcome::Error(BodyError::Trailers));
        assert_eq!(
            whole(b"0\r\nA: b\n\r\n"),
            Outcome::Error(BodyError::Trailers)
        );
    }

    #[test]
    fn error_after_data_is_reported_on_the_next_call() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(b"2\r\nokXX"), Ok((5, 3..5)));
        assert_eq!(d.decode(b"XX"), Err(BodyError::ChunkTerminator));
        // And it stays refused.
        assert_eq!(d.decode(b"XX"), Err(BodyError::ChunkTerminator));
    }

    #[test]
    fn size_line_limit() {
        let ext = "x".repeat(CHUNK_LINE_BYTES_MAX - 2);
        let exact = format!("1;{ext}\r\nz\r\n0\r\n\r\n");
        assert_eq!(whole(exact.as_bytes()), done(b"z", exact.len()));
        let over = format!("1;{ext}x\r\nz\r\n0\r\n\r\n");
        assert_eq!(
            whole(over.as_bytes()),
            Outcome::Error(BodyError::ChunkLineTooLong)
        );
        // Caught before the CRLF arrives.
        let over = format!("1;{ext}xx");
        assert_eq!(
            whole(over.as_bytes()),
            Outcome::Error(BodyError::ChunkLineTooLong)
        );
        let ws = format!("1{}", " ".repeat(CHUNK_LINE_BYTES_MAX));
        assert_eq!(
            whole(ws.as_bytes()),
            Outcome::Error(BodyError::ChunkLineTooLong)
        );
    }

    #[test]
    fn trailers_are_consumed_and_dropped() {
        let input = b"1\r\nz\r\n0\r\nX-Sum: abc\r\nX-Other:\r\nX-T:\tv v \r\n\r\nnext";
        assert_eq!(whole(input), done(b"z", input.len() - 4));
        let input = b"0;ext\r\n\r\n";
        assert_eq!(whole(input), done(b"", input.len()));
    }

    #[test]
    fn trailer_limit() {
        // One field line plus the final CRLF, exactly at the limit.
        let value = "v".repeat(TRAILER_BYTES_MAX - "X:\r\n\r\n".len());
        let exact = format!("0\r\nX:{value}\r\n\r\n");
        assert_eq!(whole(exact.as_bytes()), done(b"", exact.len()));
        let over = format!("0\r\nX:{value}v\r\n\r\n");
        assert_eq!(whole(over.as_bytes()), Outcome::Error(BodyError::Trailers));
    }

    #[test]
    fn malformed_trailers() {
        for t in [
            "X\r\n",
            ": v\r\n",
            "X : v\r\n",
            " X: v\r\n",
            "X: v\r\n v\r\n",
            "X: \0\r\n",
            "X: v\rv\r\n",
        ] {
            let input = format!("0\r\n{t}\r\n");
            assert_eq!(
                whole(input.as_bytes()),
                Outcome::Error(BodyError::Trailers),
                "{t:?}"
            );
        }
    }

    #[test]
    fn length_decoder() {
        let mut d = LengthDecoder::new(5);
        assert_eq!(d.decode(b"abc"), Ok((3, 0..3)));
        assert_eq!(d.remaining(), 2);
        assert!(!d.is_done());
        assert_eq!(d.decode(b"defgh"), Ok((2, 0..2)));
        assert!(d.is_done());
        assert_eq!(d.decode(b"gh"), Ok((0, 0..0)));
        assert!(LengthDecoder::new(0).is_done());
        let mut big = LengthDecoder::new(u64::MAX);
        assert_eq!(big.decode(b"xy"), Ok((2, 0..2)));
        assert_eq!(big.remaining(), u64::MAX - 2);
    }

    #[test]
    fn body_decoder_dispatch() {
        let mut d = BodyDecoder::new(Framing::Empty);
        assert!(d.is_done());
        assert_eq!(d.decode(b"GET /"), Ok((0, 0..0)));

        let mut d = BodyDecoder::new(Framing::Length(0));
        assert!(d.is_done());
        assert_eq!(d.decode(b"x"), Ok((0, 0..0)));

        let mut d = BodyDecoder::new(Framing::Length(3));
        assert_eq!(d.decode(b"abcd"), Ok((3, 0..3)));
        assert!(d.is_done());

        let mut d = BodyDecoder::new(Framing::UntilClose);
        assert_eq!(d.decode(b"abcd"), Ok((4, 0..4)));
        assert!(!d.is_done());

        let mut d = BodyDecoder::new(Framing::Chunked);
        assert_eq!(d.decode(b"1\r\na\r\n0\r\n\r\n"), Ok((11, 3..4)));
        assert!(d.is_done());
        assert_eq!(
            BodyDecoder::new(Framing::Chunked).decode(b"x"),
            Err(BodyError::ChunkSize)
        );
    }

    #[test]
    fn naive_reference_sanity() {
        assert_eq!(
            naive(b"2\r\nab\r\n0\r\n\r\nzz"),
            Naive::Done {
                data: b"ab".to_vec(),
                consumed: 12
            }
        );
        assert_eq!(naive(b"2\r\nab"), Naive::Incomplete);
        assert_eq!(naive(b"2\r\nabX"), Naive::Error);
        assert_eq!(naive(b"x\r\n"), Naive::Error);
    }

    // ---- properties ----

    #[derive(Debug, Clone)]
    struct Body {
        encoded: Vec<u8>,
        data: Vec<u8>,
    }

    fn ext() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => Just(String::new()),
            1 => "[ \t]{0,2};[a-z]{1,5}(=[a-z0-9]{1,5})?(;[a-z]{1,3}=\"[ a-z]{0,4}\")?",
        ]
    }

    fn chunk() -> impl Strategy<Value = (Vec<u8>, bool, usize, String)> {
        (
            proptest::collection::vec(any::<u8>(), 1..300),
            any::<bool>(),
            0usize..3,
            ext(),
        )
    }

    fn body() -> impl Strategy<Value = Body> {
        (
            proptest::collection::vec(chunk(), 0..8),
            0usize..3,
            ext(),
            proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}"), 0..3),
        )
            .prop_map(|(chunks, last_zeros, last_ext, trailers)| {
                let mut encoded = Vec::new();
                let mut data = Vec::new();
                for (bytes, upper, zeros, ext) in chunks {
                    let size = if upper {
                        format!("{:X}", bytes.len())
                    } else {
                        format!("{:x}", bytes.len())
                    };
                    encoded.extend_from_slice(
                        format!("{}{size}{ext}\r\n", "0".repeat(zeros)).as_bytes(),
                    );
                    encoded.extend_from_slice(&bytes);
                    encoded.extend_from_slice(b"\r\n");
                    data.extend_from_slice(&bytes);
                }
                encoded.extend_from_slice(
                    format!("{}0{last_ext}\r\n", "0".repeat(last_zeros)).as_bytes(),
                );
                for (name, value) in trailers {
                    encoded.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                encoded.extend_from_slice(b"\r\n");
                Body { encoded, data }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn valid_bodies_split_anywhere_decode_exactly(
            b in body(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut input = b.encoded.clone();
            input.extend_from_slice(&tail);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            cuts.push(0);
            cuts.push(input.len());
            cuts.sort_unstable();
            let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &input[w[0]..w[1]]).collect();
            let want = Outcome::Done { data: b.data.clone(), consumed: b.encoded.len() };
            prop_assert_eq!(run(&pieces), want.clone());
            prop_assert_eq!(bytewise(&input), want);
            prop_assert_eq!(naive(&input), Naive::Done { data: b.data, consumed: b.encoded.len() });
            agree(&input)?;
        }

        #[test]
        fn strict_prefixes_of_valid_bodies_are_incomplete(b in body(), cut in any::<prop::sample::Index>()) {
            let end = cut.index(b.encoded.len());
            let got = whole(&b.encoded[..end]);
            prop_assert!(matches!(got, Outcome::Incomplete { .. }), "{:?}", got);
        }

        #[test]
        fn mutated_bodies_agree_with_the_reference(
            b in body(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut input = b.encoded;
            for (i, byte, op) in edits {
                let i = i.index(input.len());
                match op {
                    0 => input[i] = byte,
                    1 => input.insert(i, byte),
                    _ => { input.remove(i); }
                }
                if input.is_empty() {
                    break;
                }
            }
            agree(&input)?;
            crate::http1::fuzz::chunked(&input);
        }

        #[test]
        fn garbage_never_panics(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(b'0'), Just(b'a'), Just(b';'), Just(b':')],
                0..300,
            ),
        ) {
            agree(&bytes)?;
            crate::http1::fuzz::chunked(&bytes);
        }
    }
}
