//! Incremental UTF-8 validation for text messages that arrive in pieces (fragments, or a frame
//! whose payload arrives over several reads).
//!
//! Owns only the "is this byte stream still a prefix of valid UTF-8" question; it keeps at most
//! the three bytes of a code point split across pieces and never allocates. It fails fast: a piece
//! is refused as soon as it contains a byte after which no continuation could make the text
//! valid (std's `from_utf8` reports an incomplete tail only when it is a valid prefix).

/// The text is not UTF-8 (the WebSocket close code is 1007).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a byte stream piece by piece; `finish` says whether it ended on a code point boundary.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    /// The start of a code point cut by the end of the last piece.
    /// Invariant: `pending[..pending_len]` is a valid but incomplete UTF-8 prefix (0 to 3 bytes).
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    pub const fn new() -> Self {
        Self {
            pending: [0; 4],
            pending_len: 0,
        }
    }

    /// Forgets any partial code point: a new message starts.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }

    /// Takes the next piece. Errors as soon as the stream so far cannot be a prefix of valid UTF-8.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let want = sequence_len(self.pending[0]);
            let take = (want - have).min(bytes.len());
            let mut joined = self.pending;
            joined[have..have + take].copy_from_slice(&bytes[..take]);
            match std::str::from_utf8(&joined[..have + take]) {
                Ok(_) => {
                    self.pending_len = 0;
                    bytes = &bytes[take..];
                }
                // Still a valid prefix, and `bytes` is used up (else `take` would complete it).
                Err(e) if e.error_len().is_none() => {
                    self.pending = joined;
                    self.pending_len = (have + take) as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &bytes[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// The stream ended: valid only if no code point is left unfinished. Resets for the next message.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let unfinished = self.pending_len != 0;
        self.pending_len = 0;
        if unfinished { Err(InvalidUtf8) } else { Ok(()) }
    }
}

/// Length of the sequence a lead byte starts. Only called on leads std accepted as a valid prefix.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xF0.. => 4,
        0xE0.. => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Naive model: the length of the shortest prefix that no continuation can make valid UTF-8,
    /// or `None` when every prefix is fine.
    fn first_bad_prefix(bytes: &[u8]) -> Option<usize> {
        (1..=bytes.len()).find(|&p| match std::str::from_utf8(&bytes[..p]) {
            Ok(_) => false,
            Err(e) => e.error_len().is_some(),
        })
    }

    /// Feeds `bytes` cut at `cuts`; returns the index of the piece that failed, or the finish result.
    fn run(bytes: &[u8], cuts: &[usize]) -> (Option<usize>, bool) {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
        ends.sort_unstable();
        ends.push(bytes.len());
        for end in ends {
            if v.feed(&bytes[start..end]).is_err() {
                return (Some(end), false);
            }
            start = end;
        }
        (None, v.finish().is_ok())
    }

    fn utf8ish() -> impl Strategy<Value = Vec<u8>> {
        // Mostly valid text with a few raw bytes mixed in, so both outcomes are common.
        prop::collection::vec(
            prop_oneof![
                4 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
                1 => any::<u8>().prop_map(|b| vec![b]),
                1 => prop::sample::select(vec![
                    vec![0xED, 0xA0, 0x80], vec![0xF4, 0x90], vec![0xE0, 0x80], vec![0xC0],
                    vec![0xF0, 0x9F, 0x98], vec![0xE2, 0x82],
                ]),
            ],
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn agrees_with_std_at_any_split(bytes in utf8ish(), cuts in prop::collection::vec(0usize..80, 0..6)) {
            let (failed_at, finished_ok) = run(&bytes, &cuts);
            match first_bad_prefix(&bytes) {
                Some(p) => {
                    // Fails fast: on the very piece holding byte p-1.
                    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
                    ends.push(bytes.len());
                    ends.sort_unstable();
                    let expected = ends.into_iter().find(|&e| e >= p);
                    prop_assert_eq!(failed_at, expected);
                }
                None => {
                    prop_assert_eq!(failed_at, None);
                    prop_assert_eq!(finished_ok, std::str::from_utf8(&bytes).is_ok());
                }
            }
        }

        #[test]
        fn one_byte_at_a_time(bytes in utf8ish()) {
            let mut v = Utf8Validator::new();
            let mut failed = None;
            for (i, b) in bytes.iter().enumerate() {
                if v.feed(std::slice::from_ref(b)).is_err() {
                    failed = Some(i + 1);
                    break;
                }
            }
            prop_assert_eq!(failed, first_bad_prefix(&bytes));
            if failed.is_none() {
                prop_assert_eq!(v.finish().is_ok(), std::str::from_utf8(&bytes).is_ok());
            }
        }
    }

    #[test]
    fn known_cases() {
        let mut v = Utf8Validator::new();
        // "κόσμε" split inside a code point, then a surrogate which must fail on its second byte.
        assert!(v.feed(b"\xce\xba\xe1").is_ok());
        assert!(v.feed(b"\xbd\xb9\xcf\x83\xce\xbc\xce\xb5").is_ok());
        assert!(v.finish().is_ok());
        assert!(v.feed(b"ok\xed").is_ok());
        assert_eq!(v.feed(b"\xa0"), Err(InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert!(v.feed(b"\xf0\x9f").is_ok());
        assert_eq!(v.finish(), Err(InvalidUtf8));
        // finish resets: the next message starts clean.
        assert!(v.feed(b"a").is_ok());
        assert!(v.finish().is_ok());
        // Above U+10FFFF is refused on the byte that proves it.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xf4\x90"), Err(InvalidUtf8));
    }
}
