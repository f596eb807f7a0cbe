//! WebSocket client streams (raw bytes, or frames built from the bytes) fed to the decoder whole,
//! in pseudo-random pieces and one byte at a time: never panics, same events and error each way.
//! The checks live in `tollgate::websocket::fuzz::frames`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::websocket::fuzz::frames(data));
