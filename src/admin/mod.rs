//! The admin listener (loopback by default): `GET /healthz`, `GET /readyz`, `GET /metrics`,
//! `POST /reload`. It runs on its own small thread, off the data cores, one short-lived thread
//! per admin connection; it reaches the cores only through the control thread.
//!
//! When `admin.token` is set, `POST` endpoints require `Authorization: Bearer <token>`.
//! With `admin.debug_endpoints = true` (tests only), `POST /debug/stall?core=N&ms=M` blocks a
//! core's thread for M ms, as a stuck event loop would (to test the systemd watchdog).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};

use crate::server::control::{AdminRequest, AdminShared, lock};

/// Largest admin request head we read, in bytes.
const ADMIN_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Read/write timeout on an admin connection.
const ADMIN_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an admin request waits for the control thread.
const ADMIN_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the admin accept thread.
pub fn spawn(
    listener: TcpListener,
    control: Sender<AdminRequest>,
    shared: Arc<AdminShared>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("tollgate-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let control = control.clone();
                let shared = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("tollgate-admin-conn".into())
                    .spawn(move || {
                        let _ = handle(stream, &control, &shared);
                    });
            }
        })?;
    Ok(())
}

/// A response: status, content type, body.
type Answer = (u16, &'static str, String);

fn handle(
    mut stream: TcpStream,
    control: &Sender<AdminRequest>,
    shared: &AdminShared,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(ADMIN_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(ADMIN_IO_TIMEOUT))?;
    let mut buf = vec![0u8; ADMIN_HEAD_BYTES_MAX];
    let mut len = 0;
    let answer = loop {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let method = req.method.unwrap_or("");
                let path = req.path.unwrap_or("/");
                let auth = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| h.value);
                break route(method, path, auth, control, shared);
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            Ok(httparse::Status::Partial) => {
                break json(431, r#"{"message":"Request Header Fields Too Large"}"#);
            }
            Err(_) => break json(400, r#"{"message":"Bad Request"}"#),
        }
    };
    let (status, ctype, body) = answer;
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        crate::http1::encode::reason(status),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    Ok(())
}

fn json(status: u16, body: &str) -> Answer {
    (status, "application/json", body.to_string())
}

fn route(
    method: &str,
    target: &str,
    auth: Option<&[u8]>,
    control: &Sender<AdminRequest>,
    shared: &AdminShared,
) -> Answer {
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET" | "HEAD", "/healthz") => json(200, r#"{"status":"ok"}"#),
        ("GET" | "HEAD", "/readyz") => {
            if shared.ready.load(Ordering::Acquire) {
                json(200, r#"{"status":"ready"}"#)
            } else {
                json(503, r#"{"status":"starting"}"#)
            }
        }
        ("GET" | "HEAD", "/metrics") => {
            let (tx, rx) = bounded(1);
            if control.send(AdminRequest::Metrics(tx)).is_err() {
                return json(503, r#"{"message":"Service Unavailable"}"#);
            }
            match rx.recv_timeout(ADMIN_ANSWER_TIMEOUT) {
                Ok(text) => (200, "text/plain; version=0.0.4", text),
                Err(_) => json(503, r#"{"message":"Service Unavailable"}"#),
            }
        }
        ("POST", "/reload") => {
            if !authorized(auth, shared) {
                return json(401, r#"{"message":"Unauthorized"}"#);
            }
            let (tx, rx) = bounded(1);
            if control.send(AdminRequest::Reload(tx)).is_err() {
                return json(503, r#"{"message":"Service Unavailable"}"#);
            }
            match rx.recv_timeout(ADMIN_ANSWER_TIMEOUT) {
                Ok(Ok(generation)) => json(200, &serde_json::json!({"status": "reloaded", "generation": generation}).to_string()),
                Ok(Err(errors)) => json(400, &serde_json::json!({"message": "config refused; the previous config keeps serving", "errors": errors}).to_string()),
                Err(_) => json(503, r#"{"message":"Service Unavailable"}"#),
            }
        }
        ("POST", "/debug/stall") if shared.debug_endpoints.load(Ordering::Acquire) => {
            if !authorized(auth, shared) {
                return json(401, r#"{"message":"Unauthorized"}"#);
            }
            let query = target.split_once('?').map_or("", |(_, q)| q);
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let (Some(core), Some(ms)) = (param("core"), param("ms")) else {
                return json(400, r#"{"message":"expected ?core=N&ms=M"}"#);
            };
            let (tx, rx) = bounded(1);
            let req = AdminRequest::Stall {
                core: core as usize,
                duration: Duration::from_millis(ms.min(600_000)),
                reply: tx,
            };
            if control.send(req).is_err() {
                return json(503, r#"{"message":"Service Unavailable"}"#);
            }
            match rx.recv_timeout(ADMIN_ANSWER_TIMEOUT) {
                Ok(true) => json(200, r#"{"status":"stalling"}"#),
                Ok(false) => json(404, r#"{"message":"no such core"}"#),
                Err(_) => json(503, r#"{"message":"Service Unavailable"}"#),
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/reload") => {
            json(405, r#"{"message":"Method Not Allowed"}"#)
        }
        _ => json(404, r#"{"message":"Not Found"}"#),
    }
}

fn authorized(auth: Option<&[u8]>, shared: &AdminShared) -> bool {
    let token = lock(&shared.token);
    match token.as_deref() {
        None => true,
        Some(t) => auth
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .is_some_and(|v| constant_time_eq(v, t.as_bytes())),
    }
}

/// Compares without an early exit, so the time taken does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check() {
        let shared = AdminShared::default();
        assert!(authorized(None, &shared));
        *lock(&shared.token) = Some("s3cret".into());
        assert!(!authorized(None, &shared));
        assert!(!authorized(Some(b"Bearer nope!!"), &shared));
        assert!(!authorized(Some(b"s3cret"), &shared));
        assert!(authorized(Some(b"Bearer s3cret"), &shared));
    }

    #[test]
    fn unknown_paths_and_methods() {
        let (tx, _rx) = bounded(1);
        let shared = AdminShared::default();
        assert_eq!(route("GET", "/nope", None, &tx, &shared).0, 404);
        assert_eq!(route("DELETE", "/healthz", None, &tx, &shared).0, 405);
        assert_eq!(route("GET", "/readyz", None, &tx, &shared).0, 503);
        shared.ready.store(true, Ordering::Release);
        assert_eq!(route("GET", "/readyz?verbose", None, &tx, &shared).0, 200);
    }
}
