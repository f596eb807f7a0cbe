//! Fuzzes `config::parse`: any UTF-8 text must give a config or located errors, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tollgate::config::parse(text);
    }
});
