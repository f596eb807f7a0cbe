//! Chunked bodies from arbitrary bytes, whole and split; the checks live in
//! `tollgate::http1::fuzz::chunked`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::http1::fuzz::chunked(data));
