//! Request heads (and, when complete, the body their framing selects) from arbitrary bytes.
//! The checks live in `tollgate::http1::fuzz::request`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::http1::fuzz::request(data));
