//! Log lines on stderr, one line per event, journald-friendly: `<N>level where: message`, where
//! `<N>` is the syslog priority journald reads (and strips) and `where` names the component or
//! core. Logging is for events (start, reload, errors), never per request on success.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

/// Severity, ordered from most to least severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 3,
    Warn = 4,
    Info = 6,
    Debug = 7,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    /// `TOLLGATE_LOG=error|warn|info|debug`.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" | "trace" => Level::Debug,
            _ => return None,
        })
    }
}

// Written once at start-up, then only loaded (a plain read, not a read-modify-write).
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most verbose level that is written. Call at start-up.
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Reads `TOLLGATE_LOG` (default `info`).
pub fn init_from_env() {
    if let Ok(v) = std::env::var("TOLLGATE_LOG") {
        match Level::parse(&v) {
            Some(l) => set_max_level(l),
            None => write(
                Level::Warn,
                "log",
                format_args!("TOLLGATE_LOG={v:?} is not error|warn|info|debug; using info"),
            ),
        }
    }
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Writes one line. Prefer the `error!`/`warn!`/`info!`/`debug!` macros.
pub fn write(level: Level, whence: &str, args: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = format!("<{}>{} {whence}: {args}\n", level as u8, level.word());
    // One write per line so lines from different cores do not interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Per-core gate for per-request log lines (a dead backend under load must not turn into
/// 100,000 lines a second): at most `LINES_PER_SECOND` a second, and the next line that passes
/// says how many were dropped. Core-local, no atomics.
#[derive(Debug, Default)]
pub struct LogGate {
    second: std::cell::Cell<u64>,
    written: std::cell::Cell<u32>,
    dropped: std::cell::Cell<u64>,
}

impl LogGate {
    pub const LINES_PER_SECOND: u32 = 10;

    /// `Some(dropped since the last line)` when a line may be written in second `now_s`.
    pub fn admit(&self, now_s: u64) -> Option<u64> {
        if self.second.get() != now_s {
            self.second.set(now_s);
            self.written.set(0);
        }
        if self.written.get() >= Self::LINES_PER_SECOND {
            self.dropped.set(self.dropped.get() + 1);
            return None;
        }
        self.written.set(self.written.get() + 1);
        Some(self.dropped.replace(0))
    }
}

#[macro_export]
macro_rules! log_error { ($whence:expr, $($t:tt)*) => { $crate::telemetry::log::write($crate::telemetry::log::Level::Error, $whence, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_warn { ($whence:expr, $($t:tt)*) => { $crate::telemetry::log::write($crate::telemetry::log::Level::Warn, $whence, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_info { ($whence:expr, $($t:tt)*) => { $crate::telemetry::log::write($crate::telemetry::log::Level::Info, $whence, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_debug { ($whence:expr, $($t:tt)*) => { if $crate::telemetry::log::enabled($crate::telemetry::log::Level::Debug) { $crate::telemetry::log::write($crate::telemetry::log::Level::Debug, $whence, format_args!($($t)*)) } } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_caps_lines_per_second_and_counts_the_rest() {
        let g = LogGate::default();
        for _ in 0..LogGate::LINES_PER_SECOND {
            assert_eq!(g.admit(7), Some(0));
        }
        assert_eq!(g.admit(7), None);
        assert_eq!(g.admit(7), None);
        assert_eq!(g.admit(8), Some(2));
        assert_eq!(g.admit(8), Some(0));
    }

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse("nope"), None);
        assert!(Level::Error < Level::Debug);
    }
}
