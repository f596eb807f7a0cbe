//! The systemd notification protocol (`sd_notify(3)`): datagrams of `KEY=VALUE` lines sent to
//! the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//!
//! Owned by the control thread. Without `$NOTIFY_SOCKET` (not run by systemd, `Type=` other than
//! `notify`) every call is a no-op. A few lines over a Unix datagram socket do the job, so no
//! crate is needed.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, Target)>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; disabled when unset or unusable (logged).
    pub fn from_env() -> Notifier {
        let Some(raw) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        let raw = raw.to_string_lossy().into_owned();
        let target = match raw.strip_prefix('@') {
            Some(name) => Target::Abstract(name.as_bytes().to_vec()),
            None => Target::Path(raw.clone().into()),
        };
        match UnixDatagram::unbound() {
            Ok(sock) => Notifier {
                target: Some((sock, target)),
            },
            Err(e) => {
                crate::log_warn!(
                    "notify",
                    "NOTIFY_SOCKET={raw}: cannot create a socket: {e}; not notifying systemd"
                );
                Notifier { target: None }
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification (several `KEY=VALUE` lines joined by `\n`).
    pub fn send(&self, msg: &str) {
        let Some((sock, target)) = &self.target else {
            return;
        };
        let res = match target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| sock.send_to_addr(msg.as_bytes(), &addr))
            }
        };
        if let Err(e) = res {
            crate::log_warn!(
                "notify",
                "sd_notify {:?}: {e}",
                msg.lines().next().unwrap_or("")
            );
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// Before a reload: `RELOADING=1` with the monotonic time systemd asks for.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining");
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, if it is meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// `CLOCK_MONOTONIC` in microseconds, as `MONOTONIC_USEC=` wants it.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("tollgate-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), Target::Path(path.clone()))),
        };
        n.ready("ok");
        n.reloading();
        let mut buf = [0u8; 256];
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1\nSTATUS=ok");
        let k = rx.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..k]).unwrap();
        assert!(msg.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{msg}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn disabled_without_socket_is_silent() {
        let n = Notifier { target: None };
        assert!(!n.enabled());
        n.ready("x");
    }
}
