//! The server side of an RFC 6455 connection after the handshake, as a state machine over the
//! connection's read buffer: frames are checked, unmasked in place, assembled into messages,
//! text is validated as it arrives, and the close handshake is tracked.
//!
//! Owns what a client may send (masking, RSV bits, opcodes, control frame rules, fragmentation
//! order, frame and message size limits, UTF-8, close payloads) and which events that produces.
//! It does no I/O, never writes replies itself and does not know about routes: the connection
//! task reads, calls `Decoder::decode`, acts on the `Event` (answering pings and closes with the
//! encoders in `frame`), and writes.
//!
//! Zero copy for the common case: a message that is one frame is handed out as a range of the
//! caller's buffer (`Payload::Input`). Only fragmented messages are copied, into one buffer the
//! decoder reuses (`Payload::Assembled`). Nothing is allocated per frame once that buffer has
//! grown to the largest message seen.

use std::ops::Range;

use super::close::{CloseCode, parse_close_payload};
use super::frame::{self, CONTROL_PAYLOAD_BYTES_MAX, FrameHeader, HeaderStatus, Opcode};
use super::utf8::Utf8Validator;
use crate::limits::{WS_FRAME_BYTES_MAX, WS_MESSAGE_BYTES_MAX};

/// Size limits on what a client sends; over either, the connection is closed with 1009.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Payload bytes of one frame.
    pub frame_bytes_max: usize,
    /// Payload bytes of one message, all fragments together.
    pub message_bytes_max: usize,
}

impl DecoderLimits {
    /// The read buffer must be able to hold this many bytes: the largest frame, header included.
    pub fn read_buffer_bytes_min(&self) -> usize {
        self.frame_bytes_max.max(CONTROL_PAYLOAD_BYTES_MAX) + frame::HEADER_BYTES_MAX
    }
}

impl Default for DecoderLimits {
    fn default() -> Self {
        Self {
            frame_bytes_max: WS_FRAME_BYTES_MAX,
            message_bytes_max: WS_MESSAGE_BYTES_MAX,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Valid UTF-8, checked.
    Text,
    Binary,
}

/// Where a message's bytes are; read them with `Decoder::payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// This range of the slice given to the `decode` call that returned the event (unmasked).
    Input(Range<usize>),
    /// The decoder's assembly buffer; valid until the next `decode` call.
    Assembled,
}

/// What one `decode` call produced. Ranges index the slice passed to that call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message {
        kind: MessageKind,
        payload: Payload,
    },
    /// Answer with a pong carrying the same bytes (`frame::encode_frame(out, Opcode::Pong, ..)`).
    Ping(Range<usize>),
    Pong(Range<usize>),
    /// The peer's close. `reason` is valid UTF-8. When `reply` is true we have not sent a close
    /// yet: write `frame::encode_close_reply(out, code)`, call `close_sent`, flush, then close the
    /// TCP connection. When false, ours was already sent: close the TCP connection.
    /// After this event the decoder ignores further input.
    Close {
        code: Option<CloseCode>,
        reason: Range<usize>,
        reply: bool,
    },
}

/// The result of one `decode` call. Always drop `consumed` bytes from the front of the buffer
/// (after using the event: its ranges point into them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Event {
        event: Event,
        consumed: usize,
    },
    /// No further event in the buffer. The next frame starts at `consumed` and is `frame_bytes`
    /// long (header included; only the header length while the header itself is incomplete):
    /// make room for that many bytes, read, and call `decode` again with the buffer starting
    /// at the same frame.
    NeedMore {
        consumed: usize,
        frame_bytes: usize,
    },
}

/// The close handshake (RFC 6455 §7), from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseState {
    Open,
    /// We sent a close; data and pings from the peer are now dropped until its close arrives.
    CloseSent,
    /// The peer sent a close that we have not answered yet.
    CloseReceived,
    /// Both closes are sent: only the TCP close is left.
    Closed,
}

/// One connection's inbound protocol state: 88 bytes plus the assembly buffer.
#[derive(Debug)]
pub struct Decoder {
    limits: DecoderLimits,
    state: CloseState,
    /// Set by the first protocol error; every later call returns it.
    failed: Option<CloseCode>,
    /// The frame at the start of the input whose payload had not all arrived.
    partial: Option<Partial>,
    /// The kind of the fragmented message being assembled, if one is open.
    open: Option<MessageKind>,
    assembly: Vec<u8>,
    /// `assembly` holds a message handed out by the last call: clear it on the next.
    assembly_handed_out: bool,
    utf8: Utf8Validator,
}

/// An admitted frame header, and how much of its payload is already unmasked (and validated).
#[derive(Debug, Clone, Copy)]
struct Partial {
    header_len: usize,
    payload_len: usize,
    fin: bool,
    opcode: Opcode,
    key: [u8; 4],
    /// The payload is text (a Text frame, or a continuation of a text message).
    text: bool,
    /// Invariant: `payload[..done]` is unmasked and, if `text`, fed to the validator.
    done: usize,
}

/// What the decoder made of the bytes at the start of its input.
enum FrameStep {
    Incomplete { frame_bytes: usize },
    Frame { len: usize, event: Option<Event> },
}

impl Decoder {
    pub fn new(limits: DecoderLimits) -> Self {
        Self {
            limits,
            state: CloseState::Open,
            failed: None,
            partial: None,
            open: None,
            assembly: Vec::new(),
            assembly_handed_out: false,
            utf8: Utf8Validator::new(),
        }
    }

    /// Decodes frames from the start of `buf` (unmasking them in place) until one yields an
    /// event or the buffer ends. An error is the close code to fail the connection with (send a
    /// close with it unless `state()` says one was sent, then close); it is sticky.
    ///
    /// Contract: bytes not consumed must be passed again, unchanged, at the start of the next
    /// call (the decoder remembers how far it unmasked a partly received frame).
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<Step, CloseCode> {
        if let Some(code) = self.failed {
            return Err(code);
        }
        if self.assembly_handed_out {
            self.assembly.clear();
            self.assembly_handed_out = false;
        }
        let mut pos = 0;
        loop {
            if matches!(self.state, CloseState::CloseReceived | CloseState::Closed) {
                // The peer's close was its last word (RFC 6455 §5.5.1).
                return Ok(Step::NeedMore {
                    consumed: buf.len(),
                    frame_bytes: 0,
                });
            }
            match self.next_frame(&mut buf[pos..]) {
                Err(code) => {
                    self.failed = Some(code);
                    return Err(code);
                }
                Ok(FrameStep::Incomplete { frame_bytes }) => {
                    return Ok(Step::NeedMore {
                        consumed: pos,
                        frame_bytes,
                    });
                }
                Ok(FrameStep::Frame { len, event }) => {
                    let base = pos;
                    pos += len;
                    if let Some(event) = event {
                        return Ok(Step::Event {
                            event: event.shifted(base),
                            consumed: pos,
                        });
                    }
                }
            }
        }
    }

    /// The bytes of a message event: `input` is the slice given to the `decode` call.
    pub fn payload<'a>(&'a self, input: &'a [u8], payload: &Payload) -> &'a [u8] {
        match payload {
            Payload::Input(range) => &input[range.clone()],
            Payload::Assembled => &self.assembly,
        }
    }

    /// Tell the decoder a close frame of ours went into the write buffer.
    pub fn close_sent(&mut self) {
        self.state = match self.state {
            CloseState::Open | CloseState::CloseSent => CloseState::CloseSent,
            CloseState::CloseReceived | CloseState::Closed => CloseState::Closed,
        };
    }

    pub fn state(&self) -> CloseState {
        self.state
    }

    pub fn limits(&self) -> DecoderLimits {
        self.limits
    }

    /// Gives back the assembly buffer's memory when it holds no open message (e.g. on an idle
    /// timer tick: a connection that once got a 128 KiB fragmented message need not keep it).
    pub fn shrink(&mut self) {
        if self.open.is_none() {
            self.assembly = Vec::new();
            self.assembly_handed_out = false;
        }
    }

    /// Handles the frame at the start of `input`: admit its header, unmask and validate what of
    /// its payload is there, and once it is whole, act on it. Ranges in the event are relative
    /// to `input`.
    fn next_frame(&mut self, input: &mut [u8]) -> Result<FrameStep, CloseCode> {
        let mut p = match self.partial.take() {
            Some(p) => p,
            None => match frame::parse_header(input)? {
                HeaderStatus::Incomplete { header_len } => {
                    return Ok(FrameStep::Incomplete {
                        frame_bytes: header_len,
                    });
                }
                HeaderStatus::Complete(h) => self.admit(&h)?,
            },
        };
        let hl = p.header_len;
        let avail = input.len().saturating_sub(hl).min(p.payload_len);
        if avail > p.done {
            let fresh = &mut input[hl + p.done..hl + avail];
            frame::apply_mask(fresh, p.key, p.done);
            if p.text {
                // Fail fast: invalid text is refused as soon as it arrives, mid-frame or not.
                self.utf8
                    .feed(fresh)
                    .map_err(|_| CloseCode::INVALID_PAYLOAD)?;
            }
            p.done = avail;
        }
        let len = hl + p.payload_len;
        if avail < p.payload_len {
            self.partial = Some(p);
            return Ok(FrameStep::Incomplete { frame_bytes: len });
        }
        let event = self.complete(&p, &input[..len])?;
        Ok(FrameStep::Frame { len, event })
    }

    /// Checks a new frame header against the protocol and the limits, before any payload is read.
    fn admit(&mut self, h: &FrameHeader) -> Result<Partial, CloseCode> {
        const PROTOCOL: CloseCode = CloseCode::PROTOCOL_ERROR;
        // No extension is ever negotiated, so every RSV bit is an error (§5.2).
        if h.rsv != 0 {
            return Err(PROTOCOL);
        }
        let opcode = Opcode::from_u8(h.opcode).ok_or(PROTOCOL)?;
        // Clients must mask (§5.1).
        let key = h.mask.ok_or(PROTOCOL)?;
        let mut text = false;
        if opcode.is_control() {
            if !h.fin || h.payload_len > CONTROL_PAYLOAD_BYTES_MAX as u64 {
                return Err(PROTOCOL);
            }
        } else {
            match (opcode, self.open) {
                (Opcode::Continuation, None) => return Err(PROTOCOL),
                (Opcode::Text | Opcode::Binary, Some(_)) => return Err(PROTOCOL),
                _ => {}
            }
            if h.payload_len > self.limits.frame_bytes_max as u64 {
                return Err(CloseCode::TOO_BIG);
            }
            let so_far = if self.open.is_some() {
                self.assembly.len()
            } else {
                0
            };
            // Checked before a byte of payload arrives: a 1 GB frame is refused on its header.
            if so_far.saturating_add(h.payload_len as usize) > self.limits.message_bytes_max {
                return Err(CloseCode::TOO_BIG);
            }
            text = match opcode {
                Opcode::Text => {
                    self.utf8.reset();
                    true
                }
                _ => self.open == Some(MessageKind::Text),
            };
        }
        Ok(Partial {
            header_len: h.header_len,
            payload_len: h.payload_len as usize,
            fin: h.fin,
            opcode,
            key,
            text,
            done: 0,
        })
    }

    /// Acts on a whole, unmasked frame (`frame` is exactly that frame).
    fn complete(&mut self, p: &Partial, frame: &[u8]) -> Result<Option<Event>, CloseCode> {
        let range = p.header_len..frame.len();
        let data = &frame[range.clone()];
        let open = self.state == CloseState::Open;
        match p.opcode {
            Opcode::Ping => Ok(open.then_some(Event::Ping(range))),
            Opcode::Pong => Ok(open.then_some(Event::Pong(range))),
            Opcode::Close => {
                let c = parse_close_payload(data)?;
                self.state = if open {
                    CloseState::CloseReceived
                } else {
                    CloseState::Closed
                };
                Ok(Some(Event::Close {
                    code: c.code,
                    reason: range.start + c.reason.start..range.start + c.reason.end,
                    reply: open,
                }))
            }
            Opcode::Text | Opcode::Binary => {
                let kind = if p.opcode == Opcode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                if !p.fin {
                    self.open = Some(kind);
                    self.assembly.extend_from_slice(data);
                    return Ok(None);
                }
                if p.text {
                    self.utf8.finish().map_err(|_| CloseCode::INVALID_PAYLOAD)?;
                }
                Ok(open.then_some(Event::Message {
                    kind,
                    payload: Payload::Input(range),
                }))
            }
            Opcode::Continuation => {
                self.assembly.extend_from_slice(data);
                if !p.fin {
                    return Ok(None);
                }
                // `admit` refused a continuation with no open message.
                let kind = self.open.take().unwrap_or(MessageKind::Binary);
                if p.text {
                    self.utf8.finish().map_err(|_| CloseCode::INVALID_PAYLOAD)?;
                }
                if !open {
                    self.assembly.clear();
                    return Ok(None);
                }
                self.assembly_handed_out = true;
                Ok(Some(Event::Message {
                    kind,
                    payload: Payload::Assembled,
                }))
            }
        }
    }
}

impl Event {
    /// Moves the ranges from frame-relative to input-relative.
    fn shifted(self, by: usize) -> Self {
        let shift = |r: Range<usize>| r.start + by..r.end + by;
        match self {
            Event::Message {
                kind,
                payload: Payload::Input(r),
            } => Event::Message {
                kind,
                payload: Payload::Input(shift(r)),
            },
            Event::Ping(r) => Event::Ping(shift(r)),
            Event::Pong(r) => Event::Pong(shift(r)),
            Event::Close {
                code,
                reason,
                reply,
            } => Event::Close {
                code,
                reason: shift(reason),
                reply,
            },
            e @ Event::Message {
                payload: Payload::Assembled,
                ..
            } => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::frame::tests::client_frame;
    use crate::websocket::fuzz::{OwnedEvent, run};
    use proptest::prelude::*;

    const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    fn big() -> DecoderLimits {
        DecoderLimits {
            frame_bytes_max: 1 << 20,
            message_bytes_max: 1 << 20,
        }
    }

    fn whole(limits: DecoderLimits, stream: &[u8]) -> (Vec<OwnedEvent>, Option<CloseCode>) {
        run(limits, [stream])
    }

    fn err_of(stream: &[u8]) -> Option<CloseCode> {
        whole(DecoderLimits::default(), stream).1
    }

    fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.concat()
    }

    // ---- model-based round trips ----

    #[derive(Debug, Clone)]
    enum Item {
        /// A message and where to cut it into fragments, with control frames to put between them.
        Message {
            text: bool,
            payload: Vec<u8>,
            cuts: Vec<usize>,
            interleave: Vec<(usize, bool, Vec<u8>)>,
        },
        Ping(Vec<u8>),
        Pong(Vec<u8>),
    }

    fn item() -> impl Strategy<Value = Item> {
        let control = prop::collection::vec(any::<u8>(), 0..=125);
        let payload = prop_oneof![
            8 => any::<bool>().prop_flat_map(|text| {
                let bytes = if text {
                    ".{0,80}".prop_map(String::into_bytes).boxed()
                } else {
                    prop::collection::vec(any::<u8>(), 0..300).boxed()
                };
                (Just(text), bytes)
            }),
            1 => (Just(false), prop::collection::vec(any::<u8>(), 65_530..65_545)),
            1 => (Just(true), Just("ü".repeat(35_000).into_bytes())),
        ];
        prop_oneof![
            6 => (
                payload,
                prop::collection::vec(any::<usize>(), 0..4),
                prop::collection::vec((any::<usize>(), any::<bool>(), control.clone()), 0..3),
            )
                .prop_map(|((text, payload), cuts, interleave)| Item::Message { text, payload, cuts, interleave }),
            1 => control.clone().prop_map(Item::Ping),
            1 => control.prop_map(Item::Pong),
        ]
    }

    /// Client frames for `items`, and the events the naive model expects from them.
    fn encode(items: &[Item], keys: &[[u8; 4]]) -> (Vec<u8>, Vec<OwnedEvent>) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let mut k = 0;
        let mut key = || {
            k += 1;
            keys[k % keys.len()]
        };
        for item in items {
            match item {
                Item::Ping(p) => {
                    stream.extend(client_frame(true, 0x9, p, key()));
                    expected.push(OwnedEvent::Ping(p.clone()));
                }
                Item::Pong(p) => {
                    stream.extend(client_frame(true, 0xA, p, key()));
                    expected.push(OwnedEvent::Pong(p.clone()));
                }
                Item::Message {
                    text,
                    payload,
                    cuts,
                    interleave,
                } => {
                    let mut ends: Vec<usize> =
                        cuts.iter().map(|c| c % (payload.len() + 1)).collect();
                    ends.sort_unstable();
                    ends.dedup();
                    ends.retain(|&e| e < payload.len());
                    ends.push(payload.len());
                    let mut start = 0;
                    for (i, &end) in ends.iter().enumerate() {
                        let opcode = if i == 0 {
                            if *text { 0x1 } else { 0x2 }
                        } else {
                            0x0
                        };
                        let fin = i + 1 == ends.len();
                        stream.extend(client_frame(fin, opcode, &payload[start..end], key()));
                        start = end;
                        if !fin {
                            for (at, ping, p) in interleave {
                                if at % ends.len() == i {
                                    stream.extend(client_frame(
                                        true,
                                        if *ping { 0x9 } else { 0xA },
                                        p,
                                        key(),
                                    ));
                                    expected.push(if *ping {
                                        OwnedEvent::Ping(p.clone())
                                    } else {
                                        OwnedEvent::Pong(p.clone())
                                    });
                                }
                            }
                        }
                    }
                    expected.push(if *text {
                        OwnedEvent::Text(payload.clone())
                    } else {
                        OwnedEvent::Binary(payload.clone())
                    });
                }
            }
        }
        (stream, expected)
    }

    fn split<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        ends.push(stream.len());
        ends.sort_unstable();
        let mut start = 0;
        ends.into_iter()
            .map(|e| {
                let piece = &stream[start..e];
                start = e;
                piece
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn round_trip_at_random_splits(
            items in prop::collection::vec(item(), 0..6),
            keys in prop::collection::vec(any::<[u8; 4]>(), 1..4),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
            close in prop::option::of((prop::sample::select(vec![1000u16, 1001, 1011, 3000, 4999]), "[a-zé ]{0,20}")),
        ) {
            let (mut stream, mut expected) = encode(&items, &keys);
            if let Some((code, reason)) = &close {
                let mut payload = code.to_be_bytes().to_vec();
                payload.extend_from_slice(reason.as_bytes());
                stream.extend(client_frame(true, 0x8, &payload, keys[0]));
                expected.push(OwnedEvent::Close(Some(*code), reason.clone().into_bytes(), true));
                // Anything after the close is ignored, even garbage.
                stream.extend_from_slice(b"\x00\x00garbage");
            }
            let whole = whole(big(), &stream);
            prop_assert_eq!(&whole.0, &expected);
            prop_assert_eq!(whole.1, None);
            prop_assert_eq!(run(big(), split(&stream, &cuts)), whole);
        }

        #[test]
        fn round_trip_one_byte_at_a_time(items in prop::collection::vec(item(), 0..3), key: [u8; 4]) {
            let (stream, expected) = encode(&items, &[key]);
            prop_assume!(stream.len() < 20_000);
            prop_assert_eq!(run(big(), stream.chunks(1)), (expected, None));
        }

        /// Bytes that are not a well-formed client stream: any split gives the same outcome.
        #[test]
        fn garbage_is_split_independent(data in prop::collection::vec(any::<u8>(), 0..400), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
            for stream in [data.clone(), crate::websocket::fuzz::frames_from(&data)] {
                let small = DecoderLimits { frame_bytes_max: 40, message_bytes_max: 100 };
                for limits in [small, DecoderLimits::default()] {
                    let whole = whole(limits, &stream);
                    prop_assert_eq!(&run(limits, split(&stream, &cuts)), &whole);
                    prop_assert_eq!(&run(limits, stream.chunks(1)), &whole);
                }
            }
        }
    }

    // ---- zero copy and buffer reuse ----

    #[test]
    fn single_frame_messages_are_not_copied() {
        let mut buf = client_frame(true, 0x1, b"hello", KEY);
        let mut dec = Decoder::new(DecoderLimits::default());
        let step = dec.decode(&mut buf).unwrap();
        let Step::Event {
            event:
                Event::Message {
                    kind: MessageKind::Text,
                    payload,
                },
            consumed,
        } = step
        else {
            panic!("{step:?}")
        };
        assert_eq!(consumed, buf.len());
        assert_eq!(payload, Payload::Input(6..11));
        // Unmasked in place.
        assert_eq!(&buf[6..11], b"hello");
        assert_eq!(dec.payload(&buf, &payload), b"hello");
    }

    #[test]
    fn fragments_assemble_into_a_reused_buffer() {
        let mut dec = Decoder::new(DecoderLimits::default());
        let msg = cat(&[
            client_frame(false, 0x2, b"ab", KEY),
            client_frame(true, 0x0, b"cd", KEY),
        ]);
        let mut cap = None;
        for _ in 0..3 {
            let mut buf = msg.clone();
            let Step::Event {
                event: Event::Message { payload, .. },
                consumed,
            } = dec.decode(&mut buf).unwrap()
            else {
                panic!()
            };
            assert_eq!((payload.clone(), consumed), (Payload::Assembled, buf.len()));
            assert_eq!(dec.payload(&buf, &payload), b"abcd");
            let c = dec.assembly.capacity();
            assert_eq!(
                *cap.get_or_insert(c),
                c,
                "no reallocation for the same size"
            );
        }
        dec.shrink();
        assert_eq!(dec.assembly.capacity(), 0);
    }

    #[test]
    fn partial_frame_asks_for_the_whole_frame() {
        let frame = client_frame(true, 0x2, &[7; 300], KEY);
        let mut dec = Decoder::new(DecoderLimits::default());
        assert_eq!(
            dec.decode(&mut frame[..1].to_vec()),
            Ok(Step::NeedMore {
                consumed: 0,
                frame_bytes: 2
            })
        );
        assert_eq!(
            dec.decode(&mut frame[..3].to_vec()),
            Ok(Step::NeedMore {
                consumed: 0,
                frame_bytes: 8
            })
        );
        let mut buf = frame[..100].to_vec();
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Step::NeedMore {
                consumed: 0,
                frame_bytes: 308
            })
        );
        // The first 92 payload bytes are unmasked already and are not unmasked twice.
        assert_eq!(&buf[8..100], &[7; 92]);
        buf.extend_from_slice(&frame[100..]);
        let Step::Event {
            event: Event::Message { payload, .. },
            ..
        } = dec.decode(&mut buf).unwrap()
        else {
            panic!()
        };
        assert_eq!(dec.payload(&buf, &payload), &[7; 300]);
    }

    // ---- each protocol error, its close code ----

    #[test]
    fn protocol_errors() {
        let e = CloseCode::PROTOCOL_ERROR;
        let mut unmasked = client_frame(true, 0x1, b"", KEY);
        unmasked[1] &= 0x7F;
        unmasked.truncate(2);
        assert_eq!(err_of(&unmasked), Some(e), "unmasked");
        for rsv in [0x40, 0x20, 0x10] {
            let mut f = client_frame(true, 0x1, b"x", KEY);
            f[0] |= rsv;
            assert_eq!(err_of(&f), Some(e), "rsv {rsv:x}");
        }
        for op in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                err_of(&client_frame(true, op, b"", KEY)),
                Some(e),
                "opcode {op:x}"
            );
        }
        assert_eq!(
            err_of(&client_frame(false, 0x9, b"", KEY)),
            Some(e),
            "fragmented ping"
        );
        assert_eq!(
            err_of(&client_frame(true, 0x9, &[0; 126], KEY)),
            Some(e),
            "126-byte ping"
        );
        assert_eq!(
            err_of(&client_frame(true, 0x0, b"x", KEY)),
            Some(e),
            "continuation first"
        );
        let open = client_frame(false, 0x1, b"a", KEY);
        assert_eq!(
            err_of(&cat(&[open.clone(), client_frame(true, 0x1, b"b", KEY)])),
            Some(e)
        );
        assert_eq!(
            err_of(&cat(&[open.clone(), client_frame(true, 0x2, b"b", KEY)])),
            Some(e)
        );
        // Continuation after a finished message.
        let done = cat(&[
            client_frame(true, 0x2, b"a", KEY),
            client_frame(true, 0x0, b"b", KEY),
        ]);
        assert_eq!(
            whole(DecoderLimits::default(), &done),
            (vec![OwnedEvent::Binary(b"a".to_vec())], Some(e))
        );
        // 64-bit length with its top bit set, refused on the header alone.
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(err_of(&huge), Some(e));
    }

    #[test]
    fn close_payload_errors() {
        let close = |p: &[u8]| err_of(&client_frame(true, 0x8, p, KEY));
        assert_eq!(close(b"\x03"), Some(CloseCode::PROTOCOL_ERROR));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(
                close(&code.to_be_bytes()),
                Some(CloseCode::PROTOCOL_ERROR),
                "{code}"
            );
        }
        assert_eq!(close(b"\x03\xe8\xce"), Some(CloseCode::INVALID_PAYLOAD));
        assert_eq!(close(b"\x03\xe8ok"), None);
    }

    #[test]
    fn size_limits() {
        let limits = DecoderLimits {
            frame_bytes_max: 100,
            message_bytes_max: 250,
        };
        // Refused on the header: the payload never needs to arrive.
        let f = client_frame(true, 0x2, &[0; 101], KEY);
        assert_eq!(run(limits, [&f[..8]]).1, Some(CloseCode::TOO_BIG));
        assert_eq!(
            run(limits, [&client_frame(true, 0x2, &[0; 100], KEY)[..]]).1,
            None
        );
        let frags = cat(&[
            client_frame(false, 0x2, &[0; 100], KEY),
            client_frame(false, 0x0, &[0; 100], KEY),
            client_frame(true, 0x0, &[0; 51], KEY),
        ]);
        assert_eq!(
            run(limits, [&frags[..frags.len() - 51]]).1,
            Some(CloseCode::TOO_BIG)
        );
        let fits = cat(&[
            client_frame(false, 0x2, &[0; 200], KEY),
            client_frame(true, 0x0, &[0; 50], KEY),
        ]);
        let limits = DecoderLimits {
            frame_bytes_max: 200,
            ..limits
        };
        assert_eq!(
            run(limits, [&fits[..]]),
            (vec![OwnedEvent::Binary(vec![0; 250])], None)
        );
        // Control frames are not held to a smaller frame limit.
        let tiny = DecoderLimits {
            frame_bytes_max: 4,
            message_bytes_max: 4,
        };
        assert_eq!(
            run(tiny, [&client_frame(true, 0x9, &[1; 125], KEY)[..]]).0,
            vec![OwnedEvent::Ping(vec![1; 125])]
        );
        // Defaults are Amazon's.
        assert_eq!(
            DecoderLimits::default(),
            DecoderLimits {
                frame_bytes_max: 32 * 1024,
                message_bytes_max: 128 * 1024
            }
        );
    }

    #[test]
    fn invalid_text_fails_fast() {
        let bad = CloseCode::INVALID_PAYLOAD;
        assert_eq!(err_of(&client_frame(true, 0x1, b"ok\xff", KEY)), Some(bad));
        // A code point cut by the end of the message.
        assert_eq!(err_of(&client_frame(true, 0x1, b"\xce", KEY)), Some(bad));
        let msg = cat(&[
            client_frame(false, 0x1, b"\xce", KEY),
            client_frame(true, 0x0, b"", KEY),
        ]);
        assert_eq!(err_of(&msg), Some(bad));
        // Split across fragments is fine.
        let msg = cat(&[
            client_frame(false, 0x1, b"\xce", KEY),
            client_frame(true, 0x0, b"\xba", KEY),
        ]);
        assert_eq!(
            whole(DecoderLimits::default(), &msg),
            (vec![OwnedEvent::Text("κ".into())], None)
        );
        // The second fragment is bad: refused before the third is sent.
        let two = cat(&[
            client_frame(false, 0x1, b"good", KEY),
            client_frame(false, 0x0, b"\xed\xa0\x80", KEY),
        ]);
        assert_eq!(err_of(&two), Some(bad));
        // Mid-frame: the first bytes of a long frame are bad; refused before the rest arrives.
        let long = client_frame(
            true,
            0x1,
            &[b"\xc0\xaf".as_slice(), &[b'a'; 1000]].concat(),
            KEY,
        );
        assert_eq!(run(DecoderLimits::default(), [&long[..12]]).1, Some(bad));
        // Binary is not checked.
        assert_eq!(err_of(&client_frame(true, 0x2, b"\xff", KEY)), None);
    }

    #[test]
    fn errors_are_sticky() {
        let mut dec = Decoder::new(DecoderLimits::default());
        let mut f = client_frame(true, 0x3, b"", KEY);
        assert_eq!(dec.decode(&mut f), Err(CloseCode::PROTOCOL_ERROR));
        let mut ok = client_frame(true, 0x1, b"x", KEY);
        assert_eq!(dec.decode(&mut ok), Err(CloseCode::PROTOCOL_ERROR));
    }

    // ---- close handshake ----

    #[test]
    fn peer_initiated_close() {
        let mut dec = Decoder::new(DecoderLimits::default());
        let mut buf = cat(&[
            client_frame(true, 0x8, b"\x03\xe9bye", KEY),
            client_frame(true, 0x1, b"late", KEY),
        ]);
        let step = dec.decode(&mut buf).unwrap();
        let Step::Event {
            event:
                Event::Close {
                    code,
                    reason,
                    reply,
                },
            consumed,
        } = step
        else {
            panic!("{step:?}")
        };
        assert_eq!(
            (code, &buf[reason], reply, consumed),
            (Some(CloseCode::GOING_AWAY), &b"bye"[..], true, 11)
        );
        assert_eq!(dec.state(), CloseState::CloseReceived);
        // Nothing after the peer's close is looked at.
        assert_eq!(
            dec.decode(&mut buf[11..]),
            Ok(Step::NeedMore {
                consumed: 10,
                frame_bytes: 0
            })
        );
        dec.close_sent();
        assert_eq!(dec.state(), CloseState::Closed);
        let mut out = Vec::new();
        crate::websocket::frame::encode_close_reply(&mut out, code);
        assert_eq!(out, b"\x88\x02\x03\xe9");
    }

    #[test]
    fn server_initiated_close_waits_for_the_peer() {
        let mut dec = Decoder::new(DecoderLimits::default());
        dec.close_sent();
        assert_eq!(dec.state(), CloseState::CloseSent);
        // Data, pings and pongs are dropped; fragmented messages too.
        let stream = cat(&[
            client_frame(true, 0x1, b"data", KEY),
            client_frame(true, 0x9, b"ping", KEY),
            client_frame(false, 0x2, b"fr", KEY),
            client_frame(true, 0xA, b"", KEY),
            client_frame(true, 0x0, b"ag", KEY),
            client_frame(true, 0x8, b"", KEY),
        ]);
        let mut buf = stream.clone();
        let step = dec.decode(&mut buf).unwrap();
        assert_eq!(
            step,
            Step::Event {
                event: Event::Close {
                    code: None,
                    reason: stream.len()..stream.len(),
                    reply: false
                },
                consumed: stream.len()
            }
        );
        assert_eq!(dec.state(), CloseState::Closed);
    }

    #[test]
    fn close_may_interrupt_a_fragmented_message() {
        let stream = cat(&[
            client_frame(false, 0x1, b"half", KEY),
            client_frame(true, 0x8, b"\x03\xe8", KEY),
        ]);
        assert_eq!(
            whole(DecoderLimits::default(), &stream),
            (vec![OwnedEvent::Close(Some(1000), vec![], true)], None)
        );
    }
}
