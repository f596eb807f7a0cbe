//! A WebSocket load client: opens many connections, sends messages that an echo route (or any
//! server that answers each message with one message) sends back, and prints messages/s and
//! round-trip latency percentiles from an `hdrhistogram`.
//!
//!     wsclient [--connections N] [--threads T] [--duration S] [--warmup S] [--size B]
//!              [--binary] [--json] ws://HOST:PORT/PATH
//!
//! Each thread owns N/T connections and runs them closed-loop in lockstep: one message out on
//! every connection, then one answer read from each (so N messages are in flight at a time).
//! Latency is from writing a message to reading its answer. Blocking std sockets, no runtime:
//! what is measured is the server.
//!
//! Checked, so that a wrong server cannot pass for a fast one: the 101's `Sec-WebSocket-Accept`
//! (for the fixed key sent), and that every answer is the message sent, same type and bytes
//! (fragmented answers are reassembled). A wrong answer (a throttled message's "Too Many
//! Requests", say) counts as an error (exit status 1) and drops its connection; it never counts
//! as a message.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

struct Args {
    url: String,
    connections: usize,
    threads: usize,
    duration: Duration,
    warmup: Duration,
    size: usize,
    binary: bool,
    json: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: wsclient [--connections N] [--threads T] [--duration S] [--warmup S] [--size B] [--binary] [--json] ws://HOST:PORT/PATH"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        url: String::new(),
        connections: 64,
        threads: 1,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        size: 64,
        binary: false,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> f64 {
            it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} needs a number");
                usage()
            })
        };
        match arg.as_str() {
            "--connections" | "-c" => a.connections = num("--connections") as usize,
            "--threads" | "-t" => a.threads = num("--threads") as usize,
            "--duration" | "-d" => a.duration = Duration::from_secs_f64(num("--duration")),
            "--warmup" => a.warmup = Duration::from_secs_f64(num("--warmup")),
            "--size" | "-s" => a.size = num("--size") as usize,
            "--binary" => a.binary = true,
            "--json" => a.json = true,
            "-h" | "--help" => usage(),
            u if u.starts_with("ws://") => a.url = u.to_string(),
            _ => usage(),
        }
    }
    if a.url.is_empty() || a.connections == 0 || a.threads == 0 {
        usage();
    }
    a.threads = a.threads.min(a.connections);
    a
}

/// `ws://host:port/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> (String, String) {
    let rest = &url["ws://".len()..];
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// The key every connection sends (RFC 6455 §1.3's example) and the accept value it implies.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    sent_at: Instant,
    /// A fragmented answer being reassembled: its opcode and the payload so far.
    partial: Option<(u8, Vec<u8>)>,
}

fn connect(authority: &str, path: &str) -> io::Result<Conn> {
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::other("closed during the handshake"));
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&buf[..buf.len().min(60)]).into_owned();
                return Err(io::Error::other(format!("upgrade refused: {line}")));
            }
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let accept = head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case("sec-websocket-accept")
                    .then(|| v.trim().to_string())
            });
            if accept.as_deref() != Some(ACCEPT) {
                return Err(io::Error::other(format!(
                    "wrong Sec-WebSocket-Accept: {accept:?}, expected {ACCEPT}"
                )));
            }
            buf.drain(..end + 4);
            return Ok(Conn {
                s,
                buf,
                sent_at: Instant::now(),
                partial: None,
            });
        }
    }
}

/// A masked client frame, into `out`.
fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], key: [u8; 4]) {
    out.clear();
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
}

/// Reads the next data message (pings answered, pongs skipped) and checks that it is
/// `expected` with `opcode_sent`. Errors on a close or a wrong answer.
fn read_message(
    c: &mut Conn,
    scratch: &mut Vec<u8>,
    opcode_sent: u8,
    expected: &[u8],
) -> io::Result<()> {
    let mut tmp = [0u8; 64 * 1024];
    loop {
        if let Some((fin, opcode, header, len)) = parse(&c.buf)
            && c.buf.len() >= header + len
        {
            let payload = &c.buf[header..header + len];
            let mut done = None;
            match (opcode, c.partial.as_mut()) {
                // The usual case, checked in place.
                (0x1 | 0x2, None) if fin => {
                    done = Some(check(opcode, payload, opcode_sent, expected))
                }
                (0x1 | 0x2, None) => c.partial = Some((opcode, payload.to_vec())),
                (0x0, Some((_, so_far))) => {
                    so_far.extend_from_slice(payload);
                    if fin {
                        let (op, whole) = c.partial.take().expect("matched Some");
                        done = Some(check(op, &whole, opcode_sent, expected));
                    }
                }
                (0x9, _) => {
                    frame(scratch, 0xA, payload, [1, 2, 3, 4]);
                    c.s.write_all(scratch)?;
                }
                (0xA, _) => {}
                (0x8, _) => return Err(io::Error::other("the server closed the connection")),
                _ => {
                    return Err(io::Error::other(format!(
                        "unexpected frame, opcode {opcode:#x}"
                    )));
                }
            }
            c.buf.drain(..header + len);
            match done {
                Some(r) => return r,
                None => continue,
            }
        }
        let n = c.s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::other("connection ended"));
        }
        c.buf.extend_from_slice(&tmp[..n]);
    }
}

/// Whether an answer is the message sent.
fn check(opcode: u8, payload: &[u8], opcode_sent: u8, expected: &[u8]) -> io::Result<()> {
    if opcode != opcode_sent {
        return Err(io::Error::other(format!(
            "wrong answer: opcode {opcode:#x}, sent {opcode_sent:#x}"
        )));
    }
    if payload != expected {
        let n = payload.len().min(200);
        return Err(io::Error::other(format!(
            "wrong answer: {} bytes ({:?}), sent {} bytes",
            payload.len(),
            String::from_utf8_lossy(&payload[..n]),
            expected.len()
        )));
    }
    Ok(())
}

/// (fin, opcode, header length, payload length) of the server frame at the start of `b`.
fn parse(b: &[u8]) -> Option<(bool, u8, usize, usize)> {
    let (b0, b1) = (*b.first()?, *b.get(1)?);
    let (len, header) = match b1 & 0x7F {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => {
            let mut x = [0u8; 8];
            x.copy_from_slice(b.get(2..10)?);
            (u64::from_be_bytes(x) as usize, 10)
        }
        n => (n as usize, 2),
    };
    Some((b0 & 0x80 != 0, b0 & 0x0F, header, len))
}

struct Stats {
    hist: Histogram<u64>,
    messages: u64,
    errors: u64,
}

#[allow(clippy::too_many_arguments)]
fn worker(
    authority: String,
    path: String,
    conns: usize,
    payload: Vec<u8>,
    opcode: u8,
    start_at: Instant,
    warm_until: Instant,
    stop_at: Instant,
) -> Stats {
    let mut stats = Stats {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        messages: 0,
        errors: 0,
    };
    let mut cs: Vec<Conn> = Vec::with_capacity(conns);
    for _ in 0..conns {
        match connect(&authority, &path) {
            Ok(c) => cs.push(c),
            Err(e) => {
                eprintln!("connect: {e}");
                stats.errors += 1;
            }
        }
    }
    while Instant::now() < start_at {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut out = Vec::with_capacity(payload.len() + 14);
    let mut scratch = Vec::new();
    let mut key = [7u8, 99, 3, 250];
    while Instant::now() < stop_at && !cs.is_empty() {
        for c in &mut cs {
            key = [
                key[1],
                key[2],
                key[3],
                key[0].wrapping_mul(31).wrapping_add(7),
            ];
            frame(&mut out, opcode, &payload, key);
            c.sent_at = Instant::now();
            if c.s.write_all(&out).is_err() {
                c.buf.clear();
                c.buf.push(0xFF); // mark broken
            }
        }
        let mut broken = Vec::new();
        for (i, c) in cs.iter_mut().enumerate() {
            if c.buf.first() == Some(&0xFF) {
                broken.push(i);
                continue;
            }
            match read_message(c, &mut scratch, opcode, &payload) {
                Ok(_) => {
                    let now = Instant::now();
                    if now >= warm_until {
                        stats.messages += 1;
                        let us = now.duration_since(c.sent_at).as_micros() as u64;
                        stats.hist.saturating_record(us.max(1));
                    }
                }
                Err(e) => {
                    eprintln!("connection: {e}");
                    broken.push(i);
                }
            }
        }
        for i in broken.into_iter().rev() {
            cs.swap_remove(i);
            stats.errors += 1;
        }
    }
    for c in &mut cs {
        frame(&mut out, 0x8, &1000u16.to_be_bytes(), [9, 9, 9, 9]);
        let _ = c.s.write_all(&out);
    }
    for c in &mut cs {
        let _ = c.s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut tmp = [0u8; 4096];
        while matches!(c.s.read(&mut tmp), Ok(n) if n > 0) {}
    }
    stats
}

fn main() {
    let a = parse_args();
    let (authority, path) = split_url(&a.url);
    let payload = if a.binary {
        (0..a.size).map(|i| (i % 251) as u8).collect()
    } else {
        vec![b'x'; a.size]
    };
    let opcode = if a.binary { 0x2 } else { 0x1 };
    // Connections are opened first; the clock starts when every thread is ready.
    let setup = Duration::from_millis(200 + 2 * a.connections as u64);
    let start_at = Instant::now() + setup;
    let warm_until = start_at + a.warmup;
    let stop_at = warm_until + a.duration;
    let handles: Vec<_> = (0..a.threads)
        .map(|t| {
            let n = a.connections / a.threads + usize::from(t < a.connections % a.threads);
            let (authority, path, payload) = (authority.clone(), path.clone(), payload.clone());
            std::thread::spawn(move || {
                worker(
                    authority, path, n, payload, opcode, start_at, warm_until, stop_at,
                )
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let (mut messages, mut errors) = (0u64, 0u64);
    for h in handles {
        let s = h.join().expect("worker thread");
        // Same bounds: cannot fail.
        let _ = hist.add(&s.hist);
        messages += s.messages;
        errors += s.errors;
    }
    let secs = a.duration.as_secs_f64();
    let rate = messages as f64 / secs;
    let mbps = rate * a.size as f64 / 1e6;
    let q = |p: f64| hist.value_at_quantile(p);
    if a.json {
        println!(
            "{{\"url\":\"{}\",\"connections\":{},\"size\":{},\"seconds\":{secs},\"messages\":{messages},\"messages_per_s\":{rate:.0},\"mb_per_s\":{mbps:.2},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"errors\":{errors}}}",
            a.url,
            a.connections,
            a.size,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            hist.max()
        );
    } else {
        println!(
            "{} | {} connections, {} threads | {} B {} messages | {secs:.1} s",
            a.url,
            a.connections,
            a.threads,
            a.size,
            if a.binary { "binary" } else { "text" }
        );
        println!("messages: {messages} ({rate:.0}/s, {mbps:.2} MB/s each way), errors: {errors}");
        println!(
            "latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            hist.max()
        );
    }
    if errors > 0 {
        std::process::exit(1);
    }
}
