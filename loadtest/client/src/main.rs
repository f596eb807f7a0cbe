//! `tollgate-load`: the load client `loadtest/run` uses where wrk cannot do the job.
//!
//! Owns: opening C keep-alive connections (HTTP/1.1, or WebSocket after an upgrade), offering
//! requests at a fixed rate from one thread driven by epoll, and printing hdrhistogram
//! percentiles. Latency is measured from each request's *intended* send time (request i is due at
//! `start + i / rate`), so a server that stalls shows up in the tail instead of slowing the
//! client down: no coordinated omission. Each connection carries at most one request at a time
//! (no pipelining); a due request waits for a free connection and that wait counts.
//! Does not own: starting servers or measuring their CPU (the driver reads /proc).
//!
//! ```text
//! tollgate-load [--rate R] [--connections C] [--duration S] [--ws] [--message BYTES] URL
//!   URL         http://host:port/path (also for --ws: the upgrade request's target)
//!   --rate R    requests (or messages) per second offered in total; 0 = closed loop: every
//!               connection sends again as soon as its answer is in (a throughput test)
//!   --ws        upgrade each connection to WebSocket, send masked text frames of BYTES bytes
//!               and time each echo (the server must echo every message)
//! ```
//!
//! Output: `key value` lines on stdout (`requests`, `errors`, `non2xx`, `achieved_rps`,
//! `backlog`, `p50_us` ... `max_us`, and `service_*` from the actual send time).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tollgate-load: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(report) => {
            report.print(&args);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate-load: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: tollgate-load [--rate R] [--connections C] [--duration S] \
                     [--ws] [--message BYTES] http://host:port/path";

/// How long, after the offering window, answers still outstanding are awaited.
const DRAIN_MS: u64 = 2_000;
/// Latencies above this are clamped (they are failures for any purpose here).
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Bytes read per `read` call.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Epoll events handled per wakeup.
const EVENTS_MAX: usize = 256;

struct Args {
    rate: f64,
    connections: usize,
    duration: Duration,
    ws: bool,
    message_bytes: usize,
    host: String,
    port: u16,
    path: String,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut a = Args {
            rate: 0.0,
            connections: 32,
            duration: Duration::from_secs(10),
            ws: false,
            message_bytes: 32,
            host: String::new(),
            port: 80,
            path: String::new(),
        };
        let mut url = None;
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--rate" => a.rate = num(&value("--rate")?)?,
                "--connections" | "-c" => a.connections = num(&value("--connections")?)?,
                "--duration" | "-d" => {
                    a.duration = Duration::from_secs_f64(num(&value("--duration")?)?)
                }
                "--message" => a.message_bytes = num(&value("--message")?)?,
                "--ws" => a.ws = true,
                "-h" | "--help" => return Err("help".into()),
                s if s.starts_with('-') => return Err(format!("unknown option {s}")),
                s => url = Some(s.to_string()),
            }
        }
        if a.connections == 0 || !a.rate.is_finite() || a.rate < 0.0 || a.message_bytes < 2 {
            return Err("need --connections >= 1, --rate >= 0, --message >= 2".into());
        }
        let url = url.ok_or("no URL")?;
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or("the URL must start with http:// or ws://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port in {url}"))?),
            None => (authority, 80),
        };
        a.host = host.to_string();
        a.port = port;
        a.path = path.to_string();
        Ok(a)
    }
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("not a number: {s}"))
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Report {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    requests: u64,
    errors: u64,
    non2xx: u64,
    /// Requests that were due before the window closed but never got a connection.
    backlog: u64,
    elapsed: Duration,
}

struct Conn {
    stream: TcpStream,
    /// Received bytes of the answer in progress.
    buf: Vec<u8>,
    busy: bool,
    intended: Instant,
    sent: Instant,
}

fn run(args: &Args) -> Result<Report, String> {
    let request = if args.ws {
        ws_frame(args.message_bytes)
    } else {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}:{}\r\n\r\n",
            args.path, args.host, args.port
        )
        .into_bytes()
    };
    // SAFETY: epoll_create1 has no memory-safety preconditions; the result is checked.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(format!(
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        conns.push(Some(open(args, epfd, i)?));
    }
    let mut latency = histogram();
    let mut service = histogram();
    let (mut requests, mut errors, mut non2xx, mut issued) = (0u64, 0u64, 0u64, 0u64);
    let mut idle: Vec<usize> = (0..args.connections).rev().collect();
    let mut outstanding = 0usize;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX];
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let interval_ns = if args.rate > 0.0 {
        1e9 / args.rate
    } else {
        0.0
    };
    let start = Instant::now();
    let end = start + args.duration;
    let due = |i: u64| start + Duration::from_nanos((i as f64 * interval_ns) as u64);
    // Open loop: the requests due inside the window, each sent even if the window closed while
    // it waited for a connection (its wait counts). Closed loop: whatever fits in the window.
    let due_total = if args.rate > 0.0 {
        (args.duration.as_secs_f64() * args.rate).ceil() as u64
    } else {
        u64::MAX
    };
    let give_up = end + Duration::from_millis(DRAIN_MS);
    loop {
        let now = Instant::now();
        let offering = if args.rate > 0.0 {
            issued < due_total
        } else {
            now < end
        };
        if now >= give_up {
            break;
        }
        if offering {
            while let Some(&i) = idle.last() {
                let when = if args.rate > 0.0 { due(issued) } else { now };
                if when > now || issued >= due_total {
                    break;
                }
                idle.pop();
                let Some(c) = conns[i].as_mut() else { continue };
                if let Err(e) = write_all(&mut c.stream, &request) {
                    eprintln!("tollgate-load: send: {e}");
                    errors += 1;
                    conns[i] = reopen(args, epfd, i);
                    if conns[i].is_some() {
                        idle.push(i);
                    }
                    continue;
                }
                c.busy = true;
                c.intended = when;
                c.sent = now;
                issued += 1;
                outstanding += 1;
            }
        } else if outstanding == 0 {
            break;
        }
        if conns.iter().all(Option::is_none) {
            return Err("every connection failed".into());
        }
        // Spin (timeout 0) only while a send is due within the millisecond epoll can wait.
        let soon =
            args.rate > 0.0 && !idle.is_empty() && due(issued) < now + Duration::from_millis(1);
        let timeout = if offering && soon { 0 } else { 1 };
        // SAFETY: `events` is a live buffer of EVENTS_MAX epoll_event; epfd is our epoll fd.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), EVENTS_MAX as i32, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {e}"));
        }
        for ev in &events[..n as usize] {
            let i = ev.u64 as usize;
            let Some(c) = conns[i].as_mut() else { continue };
            match receive(c, &mut chunk, args.ws, args.message_bytes) {
                Ok(None) => {}
                Ok(Some(status)) => {
                    let done = Instant::now();
                    latency.saturating_record(nanos(done - c.intended));
                    service.saturating_record(nanos(done - c.sent));
                    requests += 1;
                    if !(200..300).contains(&status) {
                        non2xx += 1;
                    }
                    c.busy = false;
                    outstanding -= 1;
                    idle.push(i);
                }
                Err(e) => {
                    let was_busy = c.busy;
                    if was_busy {
                        eprintln!("tollgate-load: connection {i}: {e}");
                        errors += 1;
                        outstanding -= 1;
                    }
                    conns[i] = reopen(args, epfd, i);
                    if conns[i].is_some() {
                        if was_busy {
                            idle.push(i);
                        }
                    } else if !was_busy {
                        idle.retain(|&x| x != i);
                    }
                }
            }
        }
    }
    let elapsed = start
        .elapsed()
        .min(args.duration + Duration::from_millis(DRAIN_MS));
    errors += outstanding as u64;
    // SAFETY: epfd is our epoll fd and is closed once; the connections' fds close on drop.
    unsafe { libc::close(epfd) };
    Ok(Report {
        latency,
        service,
        requests,
        errors,
        non2xx,
        backlog: if args.rate > 0.0 {
            due_total - issued
        } else {
            0
        },
        elapsed: if args.rate > 0.0 {
            args.duration
        } else {
            elapsed.min(args.duration)
        },
    })
}

fn histogram() -> Histogram<u64> {
    // Cannot fail: the bounds are constant and valid (1 <= low, high >= 2 * low, 3 figures).
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(LATENCY_NS_MAX as u128) as u64
}

impl Report {
    fn print(&self, args: &Args) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        println!("mode {}", if args.ws { "websocket" } else { "http1" });
        println!("connections {}", args.connections);
        println!("offered_rps {:.0}", args.rate);
        println!("achieved_rps {:.1}", self.requests as f64 / secs);
        println!("requests {}", self.requests);
        println!("errors {}", self.errors);
        println!("non2xx {}", self.non2xx);
        println!("backlog {}", self.backlog);
        for (prefix, h) in [("", &self.latency), ("service_", &self.service)] {
            for (name, q) in [
                ("p50", 0.5),
                ("p90", 0.9),
                ("p99", 0.99),
                ("p99.9", 0.999),
                ("p99.99", 0.9999),
            ] {
                println!(
                    "{prefix}{name}_us {:.1}",
                    h.value_at_quantile(q) as f64 / 1e3
                );
            }
            println!("{prefix}max_us {:.1}", h.max() as f64 / 1e3);
            println!("{prefix}mean_us {:.1}", h.mean() / 1e3);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections.

fn open(args: &Args, epfd: i32, index: usize) -> Result<Conn, String> {
    let addr = (args.host.as_str(), args.port);
    let mut stream = TcpStream::connect(addr)
        .map_err(|e| format!("connect {}:{}: {e}", args.host, args.port))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    if args.ws {
        ws_handshake(&mut stream, args)?;
    }
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: index as u64,
    };
    // SAFETY: epfd is our epoll fd, the stream's fd is open, `ev` is a valid event.
    let rc = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut ev) };
    if rc < 0 {
        return Err(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
    }
    Ok(Conn {
        stream,
        buf: Vec::with_capacity(1024),
        busy: false,
        intended: Instant::now(),
        sent: Instant::now(),
    })
}

/// A replacement for a connection the server closed (closing the old fd removes it from epoll).
fn reopen(args: &Args, epfd: i32, index: usize) -> Option<Conn> {
    match open(args, epfd, index) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("tollgate-load: reconnect {index}: {e}");
            None
        }
    }
}

fn write_all(s: &mut TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match s.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            // A few dozen bytes into an idle socket: this only spins if the peer stopped reading.
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what is there; `Some(status)` once the answer in progress is complete (a WebSocket
/// echo reports 200). An error means the connection is unusable.
fn receive(
    c: &mut Conn,
    chunk: &mut [u8],
    ws: bool,
    message_bytes: usize,
) -> Result<Option<u16>, String> {
    loop {
        match c.stream.read(chunk) {
            Ok(0) => return Err("closed by the server".into()),
            Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    if !c.busy {
        return Err(format!("{} unsolicited bytes", c.buf.len()));
    }
    let parsed = if ws {
        ws_echo(&c.buf, message_bytes)?
    } else {
        http_response(&c.buf)?
    };
    let Some((len, status)) = parsed else {
        return Ok(None);
    };
    if len != c.buf.len() {
        return Err(format!("{} bytes after the answer", c.buf.len() - len));
    }
    c.buf.clear();
    Ok(Some(status))
}

/// `Some((length, status))` when `buf` holds a whole response framed by Content-Length.
fn http_response(buf: &[u8]) -> Result<Option<(usize, u16)>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "non-UTF-8 response head")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header {line:?}"))?;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| "bad content-length")?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not supported by this client".into());
        }
    }
    let body = match (length, status) {
        (Some(n), _) => n,
        (None, 204 | 304) => 0,
        (None, _) => return Err("response without content-length".into()),
    };
    let total = head_end + 4 + body;
    Ok((buf.len() >= total).then_some((total, status)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// WebSocket (RFC 6455), just enough for an echo benchmark.

/// The fixed masking key: the server's unmasking work does not depend on its value.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One masked text frame whose payload is a JSON message of exactly `bytes` bytes.
fn ws_frame(bytes: usize) -> Vec<u8> {
    let mut payload = br#"{"action":"echo","data":""#.to_vec();
    while payload.len() + 2 < bytes {
        payload.push(b'x');
    }
    payload.extend_from_slice(b"\"}");
    payload.truncate(bytes);
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

fn ws_handshake(s: &mut TcpStream, args: &Args) -> Result<(), String> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        args.path, args.host, args.port
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte so that nothing after the head is consumed; a handshake is not timed.
    while find(&buf, b"\r\n\r\n").is_none() {
        match s.read(&mut byte) {
            Ok(0) => return Err("closed during the WebSocket handshake".into()),
            Ok(_) => buf.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    if !buf.starts_with(b"HTTP/1.1 101") {
        let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(format!(
            "upgrade refused: {}",
            String::from_utf8_lossy(line)
        ));
    }
    Ok(())
}

/// `Some((length, 200))` when `buf` holds a whole unmasked data frame of `expect` bytes.
fn ws_echo(buf: &[u8], expect: usize) -> Result<Option<(usize, u16)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let opcode = buf[0] & 0x0f;
    if buf[1] & 0x80 != 0 {
        return Err("masked frame from the server".into());
    }
    let (header, len) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (10, u64::from_be_bytes(b) as usize)
        }
        126 | 127 => return Ok(None),
        n => (2, n as usize),
    };
    if buf.len() < header + len {
        return Ok(None);
    }
    match opcode {
        1 | 2 if buf[0] & 0x80 != 0 && len == expect => Ok(Some((header + len, 200))),
        1 | 2 => Err(format!(
            "echo of {len} bytes (fin {}), sent {expect}",
            buf[0] >> 7
        )),
        8 => Err("close frame from the server".into()),
        op => Err(format!("unexpected opcode {op}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_framing() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(http_response(r).unwrap(), Some((r.len(), 200)));
        assert_eq!(http_response(&r[..r.len() - 1]).unwrap(), None);
        assert_eq!(
            http_response(b"HTTP/1.1 204 No\r\n\r\n").unwrap(),
            Some((19, 204))
        );
        assert!(http_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }

    /// A server on one connection that answers at once, except that it stalls `stall` before
    /// answering request number `stall_at`.
    fn stalling_server(stall_at: usize, stall: Duration) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let (mut buf, mut n, mut chunk) = (Vec::new(), 0, [0u8; 4096]);
            loop {
                let Ok(got) = s.read(&mut chunk) else { return };
                if got == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..got]);
                while let Some(end) = find(&buf, b"\r\n\r\n") {
                    buf.drain(..end + 4);
                    n += 1;
                    if n == stall_at {
                        std::thread::sleep(stall);
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        port
    }

    #[test]
    fn open_loop_counts_a_stall_against_every_request_it_delays() {
        let port = stalling_server(100, Duration::from_millis(300));
        let args = Args::parse(
            ["--rate", "1000", "--connections", "1", "--duration", "1"]
                .into_iter()
                .map(String::from)
                .chain([format!("http://127.0.0.1:{port}/x")]),
        )
        .unwrap();
        let r = run(&args).unwrap();
        assert_eq!(r.errors, 0);
        assert_eq!(r.non2xx, 0);
        // Every due request was sent: the client caught up after the stall.
        assert_eq!(r.backlog, 0);
        assert!(
            (990..=1000).contains(&r.requests),
            "{} requests",
            r.requests
        );
        // ~300 requests fell due during the 300 ms stall and waited for it: about a fifth
        // of all requests waited over 100 ms. A client that timed from the actual send would
        // see one slow request (its p90 is the loopback round trip).
        let p90 = r.latency.value_at_quantile(0.9);
        assert!(p90 > 100_000_000, "p90 {p90} ns");
        assert!(r.latency.max() >= 290_000_000);
        assert!(r.service.value_at_quantile(0.9) < 50_000_000);
    }

    #[test]
    fn ws_frames_round_trip() {
        for n in [2, 32, 125, 126, 300, 70_000] {
            let f = ws_frame(n);
            // Unmask what we send and present it as the server's echo.
            let (hdr, mask_at) = match n {
                n if n < 126 => (2, 2),
                n if n <= 65535 => (4, 4),
                _ => (10, 10),
            };
            let mut echo = f[..hdr].to_vec();
            echo[1] &= 0x7f;
            echo.extend(
                f[mask_at + 4..]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ MASK[i % 4]),
            );
            assert_eq!(echo.len(), hdr + n);
            assert_eq!(ws_echo(&echo, n).unwrap(), Some((hdr + n, 200)));
            assert_eq!(ws_echo(&echo[..echo.len() - 1], n).unwrap(), None);
            if n >= 26 {
                assert!(echo[hdr..].starts_with(br#"{"action":"echo","data":"#));
            }
        }
    }
}
