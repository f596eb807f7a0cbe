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
#[derive(Debug)]
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
#[derive(Debug, Default)]
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
}
