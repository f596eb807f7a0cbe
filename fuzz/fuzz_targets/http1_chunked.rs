#![no_main]
// TODO: fuzz target
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});
