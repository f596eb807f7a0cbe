//! Test harness for the integration tests: the gateway binary as a child process, a raw HTTP/1.1
//! client that sends exact bytes, and scriptable in-test backends on port 0.
//!
//! Owns: process lifecycle (spawn, wait for `tollgate ready`, SIGHUP, kill on drop), byte-level
//! response parsing (content-length, chunked, until-close), and backend behaviours. Does not own
//! any assertion about the gateway: the test files do that.
//!
//! Every wait here has a generous upper bound (`IO_TIMEOUT`) so that a broken gateway fails a test
//! instead of hanging it; no bound is ever asserted as a performance threshold.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for any single wait on a socket or the process. Only there to avoid hangs.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Config text

/// A config with free ports for the data and admin listeners, then `apis` (TOML `[[api]]` tables).
pub fn config(apis: &str) -> String {
    config_with("", "", apis)
}

/// As `config`, with extra `[server]` and `[admin]` lines.
pub fn config_with(server_extra: &str, admin_extra: &str, apis: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n{server_extra}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n{admin_extra}\n\n{apis}\n"
    )
}

// ---------------------------------------------------------------------------------------------
// The gateway process

/// A running `tollgate serve`, killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    /// `[[server.tls]]` listeners, in config order (`tollgate listening https` lines).
    pub https: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub pid: u32,
    pub config_path: PathBuf,
    dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn unique_dir(tag: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "tollgate-itest-{tag}-{}-{n}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A file in a fresh temp dir (for `validate`). The dir is left behind for inspection on failure;
/// it is tiny.
pub fn write_temp_config(text: &str) -> PathBuf {
    let path = unique_dir("cfg").join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

impl Gateway {
    /// Starts the gateway on one core.
    pub fn start(config_toml: &str) -> Gateway {
        Self::start_cores(config_toml, Some(1))
    }

    /// Starts the gateway with `--cores N` (`None`: the config's or every CPU).
    pub fn start_cores(config_toml: &str, cores: Option<usize>) -> Gateway {
        Self::start_env(config_toml, cores, &[])
    }

    /// As `start_cores`, with extra environment variables (e.g. `NOTIFY_SOCKET`). The systemd
    /// variables the test process may have inherited are removed first, so that only a test
    /// that asks for them gets them.
    pub fn start_env(config_toml: &str, cores: Option<usize>, env: &[(&str, &str)]) -> Gateway {
        let dir = unique_dir("gw");
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config_toml).expect("write config");
        let mut cmd = Command::new(bin());
        cmd.arg("serve").arg("--config").arg(&config_path);
        if let Some(n) = cores {
            cmd.arg("--cores").arg(n.to_string());
        }
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tollgate");
        let pid = child.id();

        let stderr = Arc::new(Mutex::new(String::new()));
        let err_pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });

        let (tx, rx) = mpsc::channel::<String>();
        let out_pipe = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining so the child never blocks on stdout.
                }
            }
        });

        let mut http = None;
        let mut https = Vec::new();
        let mut admin = None;
        let until = Instant::now() + IO_TIMEOUT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("tollgate listening http ") {
                        http.get_or_insert(a.trim().parse::<SocketAddr>().expect("http addr"));
                    } else if let Some(a) = line.strip_prefix("tollgate listening https ") {
                        https.push(a.trim().parse::<SocketAddr>().expect("https addr"));
                    } else if let Some(a) = line.strip_prefix("tollgate listening admin ") {
                        admin = Some(a.trim().parse::<SocketAddr>().expect("admin addr"));
                    } else if line.trim() == "tollgate ready" {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "tollgate did not get ready (exit: {status:?}); stderr:\n{}",
                        stderr.lock().unwrap_or_else(|p| p.into_inner())
                    );
                }
            }
        }
        Gateway {
            child,
            addr: http.expect("an http listener line before ready"),
            https,
            admin: admin.expect("an admin listener line before ready"),
            pid,
            config_path,
            dir,
            stderr,
        }
    }

    /// Everything the gateway logged so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the config file atomically (a reader sees the old or the new file, never half).
    pub fn rewrite_config(&self, text: &str) {
        let tmp = self.dir.join("config.toml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    pub fn sighup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// A new client connection to the data listener.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn request(&self, bytes: &[u8]) -> Response {
        let mut c = self.client();
        c.send(bytes);
        c.read_response()
    }

    /// An admin request on a fresh connection (the admin listener closes after each answer).
    pub fn admin_request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut c = Client::connect(self.admin);
        c.send(&request(method, path, headers, b""));
        c.read_response()
    }

    pub fn reload(&self) -> Response {
        self.admin_request("POST", "/reload", &[])
    }

    pub fn metrics(&self) -> String {
        let r = self.admin_request("GET", "/metrics", &[]);
        assert_eq!(r.status, 200, "metrics: {}", r.text());
        r.text()
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmHWM:")
    }

    pub fn vm_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmRSS:")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (`libc::SIGTERM`, `libc::SIGQUIT`...) to the process.
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.pid).expect("a pid fits in pid_t");
        // SAFETY: kill(2) takes plain integers; the pid is our own child, not yet reaped (the
        // Child is only waited for by `wait_exit` and drop), so it cannot name another process.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
    }

    /// Waits up to `within` for the process to exit; `None` if it is still running then.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} missing in /proc/{pid}/status"));
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number of kB")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `IO_TIMEOUT`.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + IO_TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Request bytes

pub const HOST: &str = "test.local";

/// `GET path` with a Host header.
pub fn get(path: &str) -> Vec<u8> {
    request("GET", path, &[], b"")
}

/// A request with `Host: test.local` (unless a host header is given), the extra headers, and a
/// Content-Length body when `body` is non-empty or the method is POST/PUT.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        s.push_str(&format!("Host: {HOST}\r\n"));
    }
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        s.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    s.push_str("\r\n");
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `body` as chunks of the given sizes (the last chunk and an empty trailer appended).
pub fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < body.len() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(body.len())
            .clamp(1, body.len() - at);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&body[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Body pattern for the large streaming tests: byte i of a stream is `i % 251`, checkable with
// slice comparisons against one precomputed buffer.

const PATTERN_PERIOD: usize = 251;
const PATTERN_BLOCK: usize = PATTERN_PERIOD * 256;

fn pattern_buf() -> &'static [u8] {
    static BUF: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BUF.get_or_init(|| {
        (0..PATTERN_BLOCK * 2 + PATTERN_PERIOD)
            .map(|i| (i % PATTERN_PERIOD) as u8)
            .collect()
    })
}

/// The pattern bytes at stream offset `offset`, `len` of them (`len <= PATTERN_BLOCK * 2`).
pub fn pattern_at(offset: u64, len: usize) -> &'static [u8] {
    let start = (offset % PATTERN_PERIOD as u64) as usize;
    &pattern_buf()[start..start + len]
}

/// Whether `data`, found at stream offset `offset`, is the pattern.
pub fn pattern_matches(offset: u64, data: &[u8]) -> bool {
    let mut off = offset;
    data.chunks(PATTERN_BLOCK).all(|c| {
        let ok = c == pattern_at(off, c.len());
        off += c.len() as u64;
        ok
    })
}

/// Writes `total` pattern bytes to `w`.
pub fn write_pattern(w: &mut impl Write, total: u64) -> io::Result<()> {
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(PATTERN_BLOCK as u64) as usize;
        w.write_all(pattern_at(sent, n))?;
        sent += n as u64;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Raw client

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// In order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The head bytes exactly as received (status line to the empty line).
    pub raw_head: String,
    /// The body came chunked.
    pub chunked: bool,
}

impl Response {
    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// Whether the gateway said it closes the connection.
    pub fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

/// Why reading a response failed.
#[derive(Debug)]
pub enum ReadFail {
    /// The peer closed (FIN or reset) before a complete response; the bytes seen so far.
    Closed(Vec<u8>),
    /// Nothing (more) arrived within the read timeout; the bytes seen so far.
    Timeout(Vec<u8>),
    /// The bytes are not an HTTP/1.x response.
    Malformed(String),
}

/// A blocking client connection with its own read buffer.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Wraps a stream the test connected itself (to see connect errors instead of panicking),
    /// with the same timeouts as `connect`.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).expect("timeout");
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to gateway");
    }

    /// Sends, then reads one response (not for HEAD requests).
    pub fn roundtrip(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes);
        self.read_response()
    }

    /// The next response; panics when there is none.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false)
            .unwrap_or_else(|e| panic!("no complete response: {e:?}"))
    }

    /// The next response to a HEAD request (no body whatever the headers say).
    pub fn read_head_response(&mut self) -> Response {
        self.try_read_response(true)
            .unwrap_or_else(|e| panic!("no complete response: {e:?}"))
    }

    pub fn try_read_response(&mut self, head_request: bool) -> Result<Response, ReadFail> {
        let mut body = Vec::new();
        let mut r = self.read_response_with(head_request, &mut |d| body.extend_from_slice(d))?;
        r.body = body;
        Ok(r)
    }

    /// Reads a response handing body bytes to `sink` (not stored: for very large bodies).
    pub fn read_response_with(
        &mut self,
        head_request: bool,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<Response, ReadFail> {
        let head_len = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let raw_head = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
        self.buf.drain(..head_len);
        let mut resp = parse_head(&raw_head)?;
        let te = resp
            .header("transfer-encoding")
            .map(str::to_ascii_lowercase);
        let bodiless =
            head_request || resp.status < 200 || resp.status == 204 || resp.status == 304;
        if bodiless {
            return Ok(resp);
        }
        if te.as_deref().is_some_and(|t| t.contains("chunked")) {
            resp.chunked = true;
            self.read_chunked(sink)?;
        } else if let Some(cl) = resp.header("content-length") {
            let n: u64 = cl
                .trim()
                .parse()
                .map_err(|_| ReadFail::Malformed(format!("content-length {cl:?}")))?;
            self.read_exact_body(n, sink)?;
        } else {
            // Until close.
            loop {
                sink(&self.buf);
                self.buf.clear();
                match self.fill() {
                    Ok(_) => {}
                    Err(ReadFail::Closed(_)) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(resp)
    }

    fn read_exact_body(&mut self, n: u64, sink: &mut dyn FnMut(&[u8])) -> Result<(), ReadFail> {
        let mut left = n;
        loop {
            let take = (self.buf.len() as u64).min(left) as usize;
            sink(&self.buf[..take]);
            self.buf.drain(..take);
            left -= take as u64;
            if left == 0 {
                return Ok(());
            }
            self.fill()?;
        }
    }

    fn read_chunked(&mut self, sink: &mut dyn FnMut(&[u8])) -> Result<(), ReadFail> {
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill()?;
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            self.buf.drain(..line_end + 2);
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| ReadFail::Malformed(format!("chunk size line {line:?}")))?;
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    let end = loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            break i;
                        }
                        self.fill()?;
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return Ok(());
                    }
                }
            }
            self.read_exact_body(size, sink)?;
            while self.buf.len() < 2 {
                self.fill()?;
            }
            if &self.buf[..2] != b"\r\n" {
                return Err(ReadFail::Malformed(
                    "chunk data not followed by CRLF".into(),
                ));
            }
            self.buf.drain(..2);
        }
    }

    /// One read appended to the buffer.
    fn fill(&mut self) -> Result<usize, ReadFail> {
        let mut tmp = [0u8; 64 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => Err(ReadFail::Closed(self.buf.clone())),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e) if is_timeout(&e) => Err(ReadFail::Timeout(self.buf.clone())),
            Err(e) if is_reset(&e) => Err(ReadFail::Closed(self.buf.clone())),
            Err(e) => panic!("read from gateway: {e}"),
        }
    }

    /// Everything until the peer closes (panics on timeout).
    pub fn read_until_close(&mut self) -> Vec<u8> {
        loop {
            match self.fill() {
                Ok(_) => {}
                Err(ReadFail::Closed(_)) => return std::mem::take(&mut self.buf),
                Err(e) => panic!("connection not closed: {e:?}"),
            }
        }
    }

    /// Whether the peer closes the connection without sending anything more (waits up to the
    /// read timeout). Bytes already buffered or arriving count as "not closed".
    pub fn closed_without_data(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        matches!(self.fill(), Err(ReadFail::Closed(ref b)) if b.is_empty())
    }

    /// Asserts the connection is closed by the gateway with no further bytes.
    pub fn assert_closed(&mut self) {
        if !self.buf.is_empty() {
            panic!(
                "expected the connection to close, but more bytes are buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
        match self.fill() {
            Err(ReadFail::Closed(b)) if b.is_empty() => {}
            Ok(_) => panic!(
                "expected the connection to close, got more bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!("expected the connection to close, got {e:?}"),
        }
    }

    /// Half-closes our sending side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(raw: &str) -> Result<Response, ReadFail> {
    let mut lines = raw.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_string();
    if !version.starts_with("HTTP/1.") {
        return Err(ReadFail::Malformed(format!("status line {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ReadFail::Malformed(format!("status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| ReadFail::Malformed(format!("header line {line:?}")))?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    Ok(Response {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
        raw_head: raw.to_string(),
        chunked: false,
    })
}

// ---------------------------------------------------------------------------------------------
// Backends

/// What a backend answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, extra headers and body, with Content-Length.
    Fixed {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A chunked body made of these chunks.
    Chunked(Vec<Vec<u8>>),
    /// A Content-Length body of this many pattern bytes (`pattern_at`), streamed.
    Stream(u64),
    /// The request body back, with Content-Length, and the request target in `x-echo-target`.
    Echo,
    /// `"<body bytes received> <pattern ok>"`, e.g. `"104857600 true"`.
    CountBody,
    /// Reads the request, then never answers (until the gateway closes).
    Hang,
    /// A head announcing 1000 bytes, 10 of them, then close.
    CloseMid,
    /// A head that is not HTTP, then waits for the gateway to close.
    Malformed,
    /// A body with neither Content-Length nor chunked: delimited by closing the connection.
    UntilClose(Vec<u8>),
    /// `100 Continue`, then this body with Content-Length.
    AfterInterim(Vec<u8>),
    /// 200 with these headers and the body `"<n> <target>"`, `n` counting the backend's
    /// requests from 1: a response served from a cache shows which backend call made it.
    Numbered(Vec<(String, String)>),
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply::Fixed {
            status: 200,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }
}

/// How a backend behaves around its replies.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    pub reply: Reply,
    /// Wait this long after reading a request, before answering.
    pub delay: Duration,
    /// Close the connection right after each response, without saying `Connection: close`.
    pub close_after_each: bool,
    /// Answer only the first request of each connection; a later one is read, recorded, and the
    /// connection dropped without an answer (a backend that dies mid-request).
    pub answer_first_only: bool,
    /// Request body bytes kept per request (more are counted, not kept).
    pub keep_body_bytes_max: usize,
}

impl BackendSpec {
    pub fn new(reply: Reply) -> BackendSpec {
        BackendSpec {
            reply,
            delay: Duration::ZERO,
            close_after_each: false,
            answer_first_only: false,
            keep_body_bytes_max: 1 << 20,
        }
    }
}

/// One request as a backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// 1-based index of the TCP connection it came on.
    pub conn: usize,
    pub request_line: String,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// At most `keep_body_bytes_max` bytes of the decoded body.
    pub body: Vec<u8>,
    pub body_len: u64,
    pub body_was_chunked: bool,
    pub body_is_pattern: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// A backend listening on 127.0.0.1 port 0, one thread per connection. Its threads are left to
/// the test process's end.
pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Backend {
    pub fn start(reply: Reply) -> Backend {
        Self::start_spec(BackendSpec::new(reply))
    }

    pub fn start_spec(spec: BackendSpec) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let spec = Arc::new(spec);
        let (seen2, conns2) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let conn = conns2.fetch_add(1, Ordering::SeqCst) + 1;
                let (spec, seen) = (spec.clone(), seen2.clone());
                std::thread::spawn(move || serve_backend_conn(stream, conn, &spec, &seen));
            }
        });
        Backend {
            addr,
            seen,
            connections,
        }
    }

    /// Requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// An address nothing listens on (bound, then closed): connecting is refused.
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn serve_backend_conn(stream: TcpStream, conn: usize, spec: &BackendSpec, seen: &Mutex<Vec<Seen>>) {
    let _ = stream.set_nodelay(true);
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut w = write_half;
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let mut answered = 0usize;
    loop {
        let Some(req) = read_backend_request(&mut r, conn, spec.keep_body_bytes_max) else {
            return;
        };
        let is_head = req.method == "HEAD";
        let (target, body, body_len, pattern) = (
            req.target.clone(),
            req.body.clone(),
            req.body_len,
            req.body_is_pattern,
        );
        let number = {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.push(req);
            seen.len()
        };
        if spec.answer_first_only && answered > 0 {
            return;
        }
        if !spec.delay.is_zero() {
            std::thread::sleep(spec.delay);
        }
        let res = match &spec.reply {
            Reply::Fixed {
                status,
                headers,
                body,
            } => write_fixed(&mut w, *status, headers, body, is_head),
            Reply::Chunked(chunks) => {
                let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                if !is_head {
                    for c in chunks {
                        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        out.extend_from_slice(c);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                w.write_all(&out)
            }
            Reply::Stream(n) => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
                w.write_all(head.as_bytes()).and_then(|()| {
                    if is_head {
                        Ok(())
                    } else {
                        write_pattern(&mut w, *n)
                    }
                })
            }
            Reply::Echo => write_fixed(
                &mut w,
                200,
                &[("x-echo-target".to_string(), target)],
                &body,
                is_head,
            ),
            Reply::CountBody => {
                let text = format!("{body_len} {pattern}");
                write_fixed(&mut w, 200, &[], text.as_bytes(), is_head)
            }
            Reply::Hang => {
                // Wait for the gateway to give up; whatever it sends is ignored.
                let mut sink = [0u8; 4096];
                while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
            Reply::CloseMid => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789");
                let _ = w.flush();
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
            Reply::UntilClose(body) => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
                if !is_head {
                    let _ = w.write_all(body);
                }
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
            Reply::Numbered(headers) => {
                let text = format!("{number} {target}");
                write_fixed(&mut w, 200, headers, text.as_bytes(), is_head)
            }
            Reply::AfterInterim(body) => w
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|()| write_fixed(&mut w, 200, &[], body, is_head)),
            Reply::Malformed => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\nthis is not a header line\r\n\r\n");
                let mut sink = [0u8; 4096];
                while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        };
        if res.is_err() {
            return;
        }
        answered += 1;
        if spec.close_after_each {
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn write_fixed(
    w: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    is_head: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} Whatever\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    if !is_head {
        bytes.extend_from_slice(body);
    }
    w.write_all(&bytes)
}

/// Reads one request (head and body). `None` on end of stream or any error.
fn read_backend_request(
    r: &mut BufReader<TcpStream>,
    conn: usize,
    keep_max: usize,
) -> Option<Seen> {
    let mut line = Vec::new();
    // Skip empty lines between requests (RFC 9112 §2.2 robustness).
    let request_line = loop {
        line.clear();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let l = String::from_utf8_lossy(&line).trim_end().to_string();
        if !l.is_empty() {
            break l;
        }
    };
    let mut words = request_line.split(' ');
    let method = words.next()?.to_string();
    let target = words.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let l = String::from_utf8_lossy(&line).trim_end().to_string();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':')?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let chunked =
        value("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    let mut body_len = 0u64;
    let mut pattern = true;
    let mut take = |data: &[u8], body_len: &mut u64| {
        pattern &= pattern_matches(*body_len, data);
        let room = keep_max.saturating_sub(body.len());
        body.extend_from_slice(&data[..data.len().min(room)]);
        *body_len += data.len() as u64;
    };
    if chunked {
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line).ok()? == 0 {
                return None;
            }
            let l = String::from_utf8_lossy(&line).trim().to_string();
            let size = u64::from_str_radix(l.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).ok()? == 0 {
                        return None;
                    }
                    if line.trim_ascii().is_empty() {
                        break;
                    }
                }
                break;
            }
            read_exact_into(r, size, &mut |d| take(d, &mut body_len))?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).ok()?;
        }
    } else if let Some(cl) = value("content-length") {
        let n: u64 = cl.trim().parse().ok()?;
        read_exact_into(r, n, &mut |d| take(d, &mut body_len))?;
    }
    Some(Seen {
        conn,
        request_line,
        method,
        target,
        headers,
        body,
        body_len,
        body_was_chunked: chunked,
        body_is_pattern: pattern,
    })
}

fn read_exact_into(r: &mut BufReader<TcpStream>, n: u64, f: &mut dyn FnMut(&[u8])) -> Option<()> {
    let mut left = n;
    while left > 0 {
        let buf = r.fill_buf().ok()?;
        if buf.is_empty() {
            return None;
        }
        let k = (buf.len() as u64).min(left) as usize;
        f(&buf[..k]);
        r.consume(k);
        left -= k as u64;
    }
    Some(())
}

// ---------------------------------------------------------------------------------------------
// Small checks

/// `8-4-4-4-12` lower-case hex.
pub fn is_uuid_shape(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

// ---------------------------------------------------------------------------------------------
// WebSocket client and backends (std sockets; frames built with the crate's own masking and
// parsed with its own header parser).

/// A frame as received (server frames are never masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl WsFrame {
    pub fn text(&self) -> String {
        assert_eq!(self.opcode, 1, "not a text frame: {self:?}");
        String::from_utf8(self.payload.clone()).expect("UTF-8 text")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text()).expect("a JSON text message")
    }

    /// The code of a close frame (`None`: a close without payload).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, 8, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// The bytes of a masked client frame.
pub fn ws_client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    static KEYS: AtomicU64 = AtomicU64::new(0x1234_5678);
    let key = (KEYS.fetch_add(0x9E37_79B9, Ordering::Relaxed) as u32).to_be_bytes();
    let mut out = vec![(u8::from(fin) << 7) | opcode];
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
    let start = out.len();
    out.extend_from_slice(payload);
    tollgate::websocket::frame::apply_mask(&mut out[start..], key, 0);
    out
}

/// A WebSocket upgrade request for `path` with the RFC 6455 example key and `extra` headers.
pub fn ws_upgrade_request(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", WS_KEY),
        ("Sec-WebSocket-Version", "13"),
    ];
    headers.retain(|(n, _)| !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(n)));
    headers.extend_from_slice(extra);
    request("GET", path, &headers, b"")
}

/// RFC 6455 §1.3's key, and its accept value.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A WebSocket client connection after a successful upgrade.
pub struct WsClient {
    pub c: Client,
    /// The 101 response.
    pub head: Response,
}

impl WsClient {
    /// Upgrades at `path`; `Err` is the response when it was not a 101.
    pub fn connect(
        addr: SocketAddr,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<WsClient, Box<Response>> {
        let mut c = Client::connect(addr);
        c.send(&ws_upgrade_request(path, extra));
        let head = c.read_response();
        if head.status != 101 {
            return Err(Box::new(head));
        }
        Ok(WsClient { c, head })
    }

    /// `connect`, panicking unless it upgraded.
    pub fn open(addr: SocketAddr, path: &str) -> WsClient {
        Self::connect(addr, path, &[])
            .unwrap_or_else(|r| panic!("upgrade refused: {} {}", r.status, r.text()))
    }

    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.c.send(&ws_client_frame(fin, opcode, payload));
    }

    pub fn send_text(&mut self, s: &str) {
        self.send_frame(true, 1, s.as_bytes());
    }

    pub fn send_binary(&mut self, b: &[u8]) {
        self.send_frame(true, 2, b);
    }

    pub fn send_close(&mut self, code: u16) {
        self.send_frame(true, 8, &code.to_be_bytes());
    }

    /// The next frame, or why there is none.
    pub fn try_recv(&mut self) -> Result<WsFrame, ReadFail> {
        use tollgate::websocket::frame::{HeaderStatus, parse_header};
        loop {
            if let Ok(HeaderStatus::Complete(h)) = parse_header(&self.c.buf) {
                assert!(h.mask.is_none(), "server frames are not masked");
                let total = h.header_len + h.payload_len as usize;
                if self.c.buf.len() >= total {
                    let payload = self.c.buf[h.header_len..total].to_vec();
                    self.c.buf.drain(..total);
                    return Ok(WsFrame {
                        fin: h.fin,
                        opcode: h.opcode,
                        payload,
                    });
                }
            }
            self.c.fill()?;
        }
    }

    /// The next frame (panics when there is none).
    pub fn recv(&mut self) -> WsFrame {
        self.try_recv()
            .unwrap_or_else(|e| panic!("no frame from the gateway: {e:?}"))
    }

    /// The next text message (answering nothing else; panics on another frame).
    pub fn recv_text(&mut self) -> String {
        self.recv().text()
    }

    /// Sends a text message and returns the text answer.
    pub fn ask(&mut self, s: &str) -> String {
        self.send_text(s);
        self.recv_text()
    }

    /// Expects a close with `code`, answers it, and expects the TCP connection to end.
    pub fn expect_close(&mut self, code: u16) {
        let f = self.recv();
        assert_eq!(f.close_code(), Some(code), "{f:?}");
        let _ = self
            .c
            .stream
            .write_all(&ws_client_frame(true, 8, &f.payload[..2]));
        self.expect_eof();
    }

    /// Expects the gateway to close TCP with nothing more sent.
    pub fn expect_eof(&mut self) {
        match self.try_recv() {
            Err(ReadFail::Closed(b)) if b.is_empty() => {}
            other => panic!("expected the connection to end, got {other:?}"),
        }
    }

    /// Closes with 1000 and waits for the gateway's answer and the end of the connection.
    pub fn close(mut self) {
        self.send_close(1000);
        let f = self.recv();
        assert_eq!(f.close_code(), Some(1000), "{f:?}");
        self.expect_eof();
    }
}

/// The core a connection id names (bytes 2..4 of its base64url-decoded 18 bytes).
pub fn ws_id_core(id: &str) -> u16 {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .expect("a base64url id");
    assert_eq!(raw.len(), 18, "{id}");
    u16::from_be_bytes([raw[2], raw[3]])
}

/// An in-test WebSocket echo server on 127.0.0.1 port 0 (one thread per connection): the
/// backend for proxied WebSockets. Records each upgrade request's head.
pub struct WsEchoBackend {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl WsEchoBackend {
    pub fn start() -> WsEchoBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind ws backend");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = ws_echo_conn(stream, &seen);
                });
            }
        });
        WsEchoBackend { addr, heads }
    }

    /// The upgrade request heads received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn ws_echo_conn(mut sock: TcpStream, seen: &Mutex<Vec<String>>) -> io::Result<()> {
    use tollgate::websocket::{
        CloseState, Decoder, DecoderLimits, Event, MessageKind, Opcode, Step, encode_close,
        encode_close_reply, encode_frame, handshake,
    };
    let _ = sock.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let head_len = loop {
        let n = sock.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let Some(end) = find(&buf[..filled], b"\r\n\r\n") else {
            continue;
        };
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut slots);
        let _ = req.parse(&buf[..end + 4]);
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(String::from_utf8_lossy(&buf[..end + 4]).into_owned());
        match handshake::validate(req.method.unwrap_or(""), req.headers) {
            Ok(up) => {
                let mut out = Vec::new();
                let proto = up.offered_protocols().next();
                up.write_response(&mut out, proto, &[("X-Backend", "ws-echo")]);
                sock.write_all(&out)?;
            }
            Err(e) => {
                write!(
                    sock,
                    "HTTP/1.1 {} No\r\ncontent-length: 0\r\n\r\n",
                    e.status()
                )?;
                return Ok(());
            }
        }
        break end + 4;
    };
    buf.copy_within(head_len..filled, 0);
    filled -= head_len;
    let mut dec = Decoder::new(DecoderLimits {
        frame_bytes_max: 16 << 20,
        message_bytes_max: 16 << 20,
    });
    let mut out = Vec::new();
    loop {
        let mut start = 0;
        loop {
            match dec.decode(&mut buf[start..filled]) {
                Ok(Step::Event { event, consumed }) => {
                    let input = &buf[start..filled];
                    match event {
                        Event::Message { kind, payload } => {
                            let op = if kind == MessageKind::Text {
                                Opcode::Text
                            } else {
                                Opcode::Binary
                            };
                            encode_frame(&mut out, op, dec.payload(input, &payload));
                        }
                        Event::Ping(r) => encode_frame(&mut out, Opcode::Pong, &input[r]),
                        Event::Pong(_) => {}
                        Event::Close { code, reply, .. } => {
                            if reply {
                                encode_close_reply(&mut out, code);
                            }
                            sock.write_all(&out)?;
                            return Ok(());
                        }
                    }
                    start += consumed;
                }
                Ok(Step::NeedMore {
                    consumed,
                    frame_bytes,
                }) => {
                    start += consumed;
                    if buf.len() < frame_bytes {
                        buf.resize(frame_bytes, 0);
                    }
                    break;
                }
                Err(code) => {
                    if dec.state() == CloseState::Open {
                        encode_close(&mut out, code, "");
                    }
                    sock.write_all(&out)?;
                    return Ok(());
                }
            }
        }
        if !out.is_empty() {
            sock.write_all(&out)?;
            out.clear();
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = sock.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}

impl Gateway {
    /// An admin request with a body (Content-Length), on a fresh connection.
    pub fn admin_body(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let mut c = Client::connect(self.admin);
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\n");
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        c.send(&bytes);
        c.read_response()
    }
}

// ---- WebSocket API configs (tests/websocket.rs, tests/websocket_interop.rs) ----

/// A websocket API `w` with `settings` lines and `routes` (TOML).
pub fn ws_config(settings: &str, routes: &str) -> String {
    config(&format!(
        "[[api]]\nname = \"w\"\nprotocol = \"websocket\"\n{settings}\n{routes}"
    ))
}

/// A websocket API route: its route key and integration (inline TOML table).
pub fn ws_route(key: &str, integration: &str) -> String {
    format!("[[api.route]]\nkey = \"{key}\"\nintegration = {integration}\n")
}

/// The mock integration that echoes every message.
pub const WS_ECHO: &str = "{ type = \"mock\", echo = true }";

/// An `http` integration posting events to `path` on `addr`.
pub fn ws_http(addr: SocketAddr, path: &str) -> String {
    format!("{{ type = \"http\", uri = \"http://{addr}{path}\" }}")
}
