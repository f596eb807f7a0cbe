//! HTTP/1.1 wire format as pure functions and state machines: request and response heads parsed
//! with `httparse` into caller-provided header arrays (no heap allocation), body framing decoders
//! (Content-Length, chunked) and head encoding.
//!
//! This module owns what is and is not acceptable on the wire (request smuggling shapes, limits).
//! It does no I/O and keeps no connection state: `server::conn` drives it.

pub mod body;
pub mod encode;
pub mod parse;

pub use body::{BodyDecoder, BodyError, ChunkedDecoder, LengthDecoder};
pub use parse::{
    Framing, HeadError, HeadLimits, RequestHead, ResponseHead, Version, has_token, header_slots,
    header_value, host_without_port, parse_request, parse_response,
};

/// Entry points for the fuzz targets in `fuzz/`: they feed bytes here, and these check the
/// invariants every caller relies on (ranges in bounds, progress, split-independence).
#[doc(hidden)]
pub mod fuzz {
    use super::*;
    use crate::limits::HEADERS_CEILING;

    /// Parses a request head with small and default limits; when one is complete, decodes the
    /// body that follows with the decoder its framing selects.
    pub fn request(data: &[u8]) {
        let limits = [
            HeadLimits::default(),
            HeadLimits {
                header_bytes_max: 64,
                headers_max: 4,
            },
        ];
        for limits in limits {
            let mut headers = header_slots::<HEADERS_CEILING>();
            let Ok(Some(head)) = parse_request(data, &mut headers, &limits) else {
                continue;
            };
            assert!(head.head_len <= data.len().min(limits.header_bytes_max));
            assert!(head.headers.len() <= limits.headers_max);
            let _ = host_without_port(head.host.unwrap_or(""));
            drain(BodyDecoder::new(head.framing), &data[head.head_len..]);
        }
        let mut headers = header_slots::<16>();
        if let Ok(Some(head)) = parse_response(data, &mut headers, &HeadLimits::default(), false) {
            assert!(head.head_len <= data.len());
            drain(BodyDecoder::new(head.framing), &data[head.head_len..]);
        }
    }

    /// Decodes `data` as a chunked body twice: whole, and split at a point taken from the first
    /// byte. Both must agree on the data, the bytes consumed and the outcome.
    pub fn chunked(data: &[u8]) {
        let whole = drain(BodyDecoder::Chunked(ChunkedDecoder::new()), data);
        let cut = data
            .first()
            .map_or(0, |&b| usize::from(b) % (data.len() + 1));
        let mut d = BodyDecoder::Chunked(ChunkedDecoder::new());
        let mut out = Outcome::default();
        for piece in [&data[..cut], &data[cut..]] {
            feed(&mut d, piece, &mut out);
            if out.error || d.is_done() {
                break;
            }
        }
        assert_eq!(whole.error, out.error);
        if !whole.error {
            assert_eq!(whole.data, out.data);
            assert_eq!(whole.consumed, out.consumed);
        }
    }

    #[derive(Default)]
    struct Outcome {
        data: Vec<u8>,
        consumed: usize,
        error: bool,
    }

    fn drain(mut d: BodyDecoder, input: &[u8]) -> Outcome {
        let mut out = Outcome::default();
        feed(&mut d, input, &mut out);
        out
    }

    fn feed(d: &mut BodyDecoder, mut input: &[u8], out: &mut Outcome) {
        loop {
            match d.decode(input) {
                Ok((consumed, data)) => {
                    assert!(consumed <= input.len());
                    assert!(data.start <= data.end && data.end <= consumed);
                    out.data.extend_from_slice(&input[data]);
                    out.consumed += consumed;
                    input = &input[consumed..];
                    if consumed == 0 || d.is_done() {
                        return;
                    }
                }
                Err(_) => {
                    out.error = true;
                    return;
                }
            }
        }
    }
}
