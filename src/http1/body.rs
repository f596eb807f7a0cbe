//! Body framing: a chunked decoder that works in place over whatever bytes arrived.

use std::ops::Range;

/// Why a chunked body was refused (400 from a client, 502 from a backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("invalid chunk size")]
    ChunkSize,
    #[error("chunk size line too long")]
    ChunkLineTooLong,
    #[error("missing CRLF after chunk data")]
    ChunkTerminator,
    #[error("trailer section too large or malformed")]
    Trailers,
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    _todo: (),
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes from `input`. Returns `(consumed, data)`: how many bytes of `input` were used, and
    /// the range of `input` holding body data (possibly empty). Call again with `&input[consumed..]`
    /// while `consumed > 0` and not `is_done()`; `consumed == 0` means more input is needed.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Range<usize>), BodyError> {
        let _ = input;
        todo!("http1 helper")
    }

    /// The last chunk and the trailers have been consumed.
    pub fn is_done(&self) -> bool {
        todo!("http1 helper")
    }
}
