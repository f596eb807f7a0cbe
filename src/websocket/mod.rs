//! WebSocket (RFC 6455, server side) and WebSocket APIs.
//!
//! The protocol core is pure code, with no I/O: the opening handshake (`handshake`), the frame
//! codec (`frame`), the message decoder with its close handshake (`decoder`, `close`, `utf8`),
//! route-key selection (`route_key`) and connection ids (`id`). Nothing there allocates per
//! frame once a connection's buffers have grown; a message that fits in one frame is never
//! copied. Around it, also without I/O: compiled websocket API stages and message routing
//! (`api`), the event JSON sent to `http` integrations (`event`), and each core's table of open
//! connections with the management API's commands (`registry`).
//!
//! `conn` is the one part that does I/O: the connection task that drives all of the above on a
//! core's socket, as sketched below.
//!
//! # How a connection task drives it
//!
//! ```text
//! HTTP/1.1 head with Upgrade (http1::RequestHead::upgrade)
//!   handshake::validate(method, headers)
//!     Err(e) → answer e.status() (400/426) plus e.response_header(), the usual JSON body; close
//!     Ok(up) → $connect route (authorizer, integration), offered subprotocols in
//!              up.offered_protocols() / up.select_protocol(allowed)
//!              id = core's IdGenerator::next_id()
//!              up.write_response(out, protocol, &[("x-request-id", ..)]) → 101
//!              the socket and any bytes read past the head go to a WebSocket task on this core
//! WebSocket task: one Decoder, one write buffer, one read buffer that can hold
//! limits.read_buffer_bytes_min() bytes (a whole frame; it may start at READ_BUF_BYTES and grow)
//!   loop: read into buf[filled..]; then until NeedMore:
//!     match decoder.decode(&mut buf[start..filled])
//!       Ok(Step::Event { event, consumed }) → act, then start += consumed
//!         Message { kind, payload } → bytes = decoder.payload(&buf[start..filled], &payload);
//!                      route key = RouteSelection::select(bytes) (None → $default); integration;
//!                      an answer goes out with frame::encode_frame(out, Opcode::Text, body)
//!         Ping(r)    → frame::encode_frame(out, Opcode::Pong, &input[r])
//!         Pong(_)    → nothing (counts as activity for the idle timer)
//!         Close { code, reply: true }  → frame::encode_close_reply(out, code); decoder.close_sent();
//!                                        flush, close TCP, run $disconnect
//!         Close { reply: false }       → close TCP (our close was answered), $disconnect
//!       Ok(Step::NeedMore { consumed, frame_bytes }) → start += consumed; compact; make room
//!                      for frame_bytes; read again
//!       Err(code) → unless decoder.state() is CloseSent/Closed: frame::encode_close(out, code, "");
//!                   decoder.close_sent(); flush; shut down writes; drain reads briefly; close
//!   server-side close (SIGTERM 1001, idle/age limit 1001, DELETE /@connections 1000):
//!     frame::encode_close(out, code, ""); decoder.close_sent(); keep decoding (data is now
//!     dropped) until Close { reply: false } or a close deadline
//! ```
//!
//! The read buffer contract: bytes a `decode` call did not consume are passed again, unchanged,
//! at the start of the next call (the decoder has unmasked part of a frame in place).

pub mod api;
pub mod close;
pub mod conn;
pub mod decoder;
pub mod event;
pub mod frame;
pub mod handshake;
pub mod id;
pub mod registry;
pub mod route_key;
pub mod utf8;

pub use close::CloseCode;
pub use decoder::{CloseState, Decoder, DecoderLimits, Event, MessageKind, Payload, Step};
pub use frame::{
    FrameWriter, Opcode, encode_close, encode_close_reply, encode_frame, encode_header,
};
pub use handshake::{AcceptKey, HandshakeError, Upgrade};
pub use id::{ConnectionId, IdGenerator};
pub use route_key::{RouteSelection, RouteSelectionError};

/// Entry points for the fuzz targets in `fuzz/` and a test driver: they feed bytes to a
/// `Decoder` the way a connection task would and check what every caller relies on (ranges in
/// bounds, progress, bounded buffer needs, the same outcome however the input is split).
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// An event with its bytes copied out, for comparing runs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum OwnedEvent {
        Text(Vec<u8>),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, Vec<u8>, bool),
    }

    /// Feeds `pieces` in order through one decoder, as reads would arrive; answers closes.
    /// Returns the events and the error that ended the run, if any.
    pub fn run<'a>(
        limits: DecoderLimits,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<OwnedEvent>, Option<CloseCode>) {
        let mut dec = Decoder::new(limits);
        let mut buf: Vec<u8> = Vec::new();
        let mut events = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            let mut start = 0;
            loop {
                let input = &mut buf[start..];
                let len = input.len();
                match dec.decode(input) {
                    Err(code) => {
                        assert_eq!(
                            dec.decode(&mut buf[start..]),
                            Err(code),
                            "errors are sticky"
                        );
                        return (events, Some(code));
                    }
                    Ok(Step::Event { event, consumed }) => {
                        assert!(consumed > 0 && consumed <= len);
                        let e = owned(&dec, &buf[start..start + consumed], event);
                        if let OwnedEvent::Close(_, _, true) = e {
                            dec.close_sent();
                        }
                        events.push(e);
                        start += consumed;
                    }
                    Ok(Step::NeedMore {
                        consumed,
                        frame_bytes,
                    }) => {
                        assert!(consumed <= len);
                        if dec.state() == CloseState::Open || dec.state() == CloseState::CloseSent {
                            assert!(frame_bytes > len - consumed, "asks for more than it has");
                            assert!(frame_bytes <= limits.read_buffer_bytes_min());
                        }
                        start += consumed;
                        break;
                    }
                }
            }
            buf.drain(..start);
        }
        (events, None)
    }

    fn owned(dec: &Decoder, input: &[u8], event: Event) -> OwnedEvent {
        match event {
            Event::Message { kind, payload } => {
                let bytes = dec.payload(input, &payload).to_vec();
                match kind {
                    MessageKind::Text => {
                        assert!(std::str::from_utf8(&bytes).is_ok());
                        OwnedEvent::Text(bytes)
                    }
                    MessageKind::Binary => OwnedEvent::Binary(bytes),
                }
            }
            Event::Ping(r) => OwnedEvent::Ping(input[r].to_vec()),
            Event::Pong(r) => OwnedEvent::Pong(input[r].to_vec()),
            Event::Close {
                code,
                reason,
                reply,
            } => {
                assert!(std::str::from_utf8(&input[reason.clone()]).is_ok());
                OwnedEvent::Close(code.map(|c| c.0), input[reason].to_vec(), reply)
            }
        }
    }

    /// Turns fuzz bytes into client frames: each frame is a first byte (FIN, RSV, opcode as
    /// given), a length byte and that many payload bytes, masked with a key from the data.
    /// Reaches fragmentation, control and close states far more often than raw bytes do.
    pub fn frames_from(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        while let [b0, len, tail @ ..] = rest {
            let n = usize::from(*len & 0x3F).min(tail.len());
            let (payload, after) = tail.split_at(n);
            let key = [*len, b0.wrapping_mul(31), 0x5A, n as u8];
            let masked = len & 0x40 == 0;
            let mut header = Vec::new();
            // Mostly a real opcode; sometimes raw (reserved opcodes, RSV bits).
            let b0 = if b0 & 0x30 == 0x30 { *b0 } else { b0 & 0x8F };
            header.push(b0);
            if len & 0x80 != 0 && n < 126 {
                // Non-minimal 16-bit length, allowed on receive.
                header.push(u8::from(masked) << 7 | 126);
                header.extend_from_slice(&(n as u16).to_be_bytes());
            } else {
                header.push(u8::from(masked) << 7 | n as u8);
            }
            out.extend_from_slice(&header);
            if masked {
                out.extend_from_slice(&key);
            }
            let start = out.len();
            out.extend_from_slice(payload);
            if masked {
                frame::apply_mask(&mut out[start..], key, 0);
            }
            rest = after;
        }
        out
    }

    /// The fuzz target: the same stream whole, in pseudo-random pieces and one byte at a time
    /// gives the same events and the same error, under small and default limits.
    pub fn frames(data: &[u8]) {
        let Some((&mode, data)) = data.split_first() else {
            return;
        };
        let stream = if mode & 1 == 0 {
            frames_from(data)
        } else {
            data.to_vec()
        };
        let limits = if mode & 2 == 0 {
            DecoderLimits::default()
        } else {
            DecoderLimits {
                frame_bytes_max: 40,
                message_bytes_max: 100,
            }
        };
        let whole = run(limits, [&stream[..]]);
        let mut seed = u32::from(mode) | 1;
        let mut pieces = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let n = ((seed >> 16) as usize % 23).min(rest.len());
            let (a, b) = rest.split_at(n);
            pieces.push(a);
            rest = b;
        }
        assert_eq!(run(limits, pieces), whole, "split run differs");
        if stream.len() <= 4096 {
            assert_eq!(
                run(limits, stream.chunks(1)),
                whole,
                "byte-at-a-time run differs"
            );
        }
    }
}
