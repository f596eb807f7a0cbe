//! The admin listener (loopback by default): `GET /healthz`, `GET /readyz`, `GET /metrics`,
//! `POST /reload`, `DELETE /cache/{api}/{stage}` (flush a stage's response cache on every
//! core), and the WebSocket management API `POST`/`GET`/`DELETE /@connections/{id}`.
//! It runs on its own small thread, off the data cores, one short-lived thread per admin
//! connection; it reaches the cores only through the control thread.
//!
//! When `admin.token` is set, `POST` endpoints, cache flushes and every `/@connections` request
//! require `Authorization: Bearer <token>`.
//! With `admin.debug_endpoints = true` (tests only), `POST /debug/stall?core=N&ms=M` blocks a
//! core's thread for M ms, as a stuck event loop would (to test the systemd watchdog).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};

use crate::limits::ADMIN_BODY_BYTES_MAX;
use crate::server::control::{AdminRequest, AdminShared, lock};
use crate::websocket::ConnectionId;
use crate::websocket::registry::{self, AdminCommand, AdminOp};

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
            Ok(httparse::Status::Complete(head_len)) => {
                let method = req.method.unwrap_or("");
                let path = req.path.unwrap_or("/");
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                let auth = header("authorization");
                let body = match read_body(&mut stream, &buf[head_len..len], header) {
                    Ok(b) => b,
                    Err(answer) => break answer,
                };
                break route(method, path, auth, &body, control, shared);
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

/// The request body (`Content-Length` only; a chunked one is refused with 411), of which
/// `first` arrived with the head.
fn read_body<'h>(
    stream: &mut TcpStream,
    first: &[u8],
    header: impl Fn(&str) -> Option<&'h [u8]>,
) -> Result<Vec<u8>, Answer> {
    if header("transfer-encoding").is_some() {
        return Err(json(411, r#"{"message":"Length Required"}"#));
    }
    let len = match header("content-length") {
        None => 0,
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| json(400, r#"{"message":"Bad Request"}"#))?,
    };
    if len > ADMIN_BODY_BYTES_MAX {
        return Err(json(413, r#"{"message":"Request Entity Too Large"}"#));
    }
    let mut body = first[..first.len().min(len)].to_vec();
    if body.len() < len {
        body.resize(len, 0);
        let at = first.len().min(len);
        stream
            .read_exact(&mut body[at..])
            .map_err(|_| json(400, r#"{"message":"Bad Request"}"#))?;
    }
    Ok(body)
}

fn json(status: u16, body: &str) -> Answer {
    (status, "application/json", body.to_string())
}

fn route(
    method: &str,
    target: &str,
    auth: Option<&[u8]>,
    body: &[u8],
    control: &Sender<AdminRequest>,
    shared: &AdminShared,
) -> Answer {
    let path = target.split('?').next().unwrap_or(target);
    if let Some(id) = path.strip_prefix("/@connections/") {
        if !authorized(auth, shared) {
            return json(401, r#"{"message":"Unauthorized"}"#);
        }
        return connections(method, id, body, control);
    }
    if let Some(rest) = path.strip_prefix("/cache/") {
        if method != "DELETE" {
            return json(405, r#"{"message":"Method Not Allowed"}"#);
        }
        if !authorized(auth, shared) {
            return json(401, r#"{"message":"Unauthorized"}"#);
        }
        return flush_cache(rest, control);
    }
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

/// `DELETE /cache/{api}/{stage}` (`rest` is `{api}/{stage}`): answered once every core has
/// dropped the stage's entries.
fn flush_cache(rest: &str, control: &Sender<AdminRequest>) -> Answer {
    let Some((api, stage)) = rest.split_once('/') else {
        return json(404, r#"{"message":"Not Found"}"#);
    };
    // `$default` may come percent-encoded.
    let stage = stage.replace("%24", "$");
    if api.is_empty() || stage.is_empty() || stage.contains('/') {
        return json(404, r#"{"message":"Not Found"}"#);
    }
    let (tx, rx) = bounded(1);
    let req = AdminRequest::CacheFlush {
        api: api.to_string(),
        stage: stage.clone(),
        reply: tx,
    };
    if control.send(req).is_err() {
        return json(503, r#"{"message":"Service Unavailable"}"#);
    }
    match rx.recv_timeout(ADMIN_ANSWER_TIMEOUT) {
        Ok(true) => json(
            200,
            &serde_json::json!({"status": "flushed", "api": api, "stage": stage}).to_string(),
        ),
        Ok(false) => json(404, r#"{"message":"no such API or stage"}"#),
        Err(_) => json(503, r#"{"message":"Service Unavailable"}"#),
    }
}

/// `POST`/`GET`/`DELETE /@connections/{id}`: through the control thread to the owning core.
fn connections(method: &str, id: &str, body: &[u8], control: &Sender<AdminRequest>) -> Answer {
    let op = match method {
        "POST" => AdminOp::Post(body.to_vec()),
        "GET" => AdminOp::Get,
        "DELETE" => AdminOp::Delete,
        _ => return json(405, r#"{"message":"Method Not Allowed"}"#),
    };
    // An id we never issued names no connection: Gone, as for one that closed.
    let Some(id) = ConnectionId::parse(id) else {
        return json(410, r#"{"message":"Gone"}"#);
    };
    let (tx, rx) = bounded(1);
    let cmd = AdminCommand { id, op, reply: tx };
    if control.send(AdminRequest::WebSocket(cmd)).is_err() {
        return json(503, r#"{"message":"Service Unavailable"}"#);
    }
    match rx.recv_timeout(ADMIN_ANSWER_TIMEOUT) {
        Ok(reply) => {
            let (status, body) = registry::reply_http(&reply);
            (status, "application/json", body)
        }
        Err(_) => json(503, r#"{"message":"Service Unavailable"}"#),
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
        assert_eq!(route("GET", "/nope", None, b"", &tx, &shared).0, 404);
        assert_eq!(route("DELETE", "/healthz", None, b"", &tx, &shared).0, 405);
        assert_eq!(route("GET", "/readyz", None, b"", &tx, &shared).0, 503);
        shared.ready.store(true, Ordering::Release);
        assert_eq!(
            route("GET", "/readyz?verbose", None, b"", &tx, &shared).0,
            200
        );
    }

    #[test]
    fn cache_flush_paths() {
        let (tx, rx) = bounded(4);
        let shared = AdminShared::default();
        assert_eq!(route("GET", "/cache/a/b", None, b"", &tx, &shared).0, 405);
        assert_eq!(route("DELETE", "/cache/a", None, b"", &tx, &shared).0, 404);
        assert_eq!(
            route("DELETE", "/cache/a/b/c", None, b"", &tx, &shared).0,
            404
        );
        assert!(rx.is_empty());
        let answer = std::thread::spawn(move || {
            for want in [true, false] {
                let Ok(AdminRequest::CacheFlush { api, stage, reply }) = rx.recv() else {
                    panic!("expected a cache flush")
                };
                assert_eq!((api.as_str(), stage.as_str()), ("shop", "$default"));
                reply.send(want).unwrap();
            }
        });
        let ok = route("DELETE", "/cache/shop/%24default", None, b"", &tx, &shared);
        assert_eq!(ok.0, 200, "{}", ok.2);
        assert!(ok.2.contains("flushed"));
        assert_eq!(
            route("DELETE", "/cache/shop/$default", None, b"", &tx, &shared).0,
            404
        );
        answer.join().unwrap();
        *lock(&shared.token) = Some("t".into());
        assert_eq!(
            route("DELETE", "/cache/a/b", None, b"", &tx, &shared).0,
            401
        );
        assert_eq!(
            route("DELETE", "/cache/a/b", Some(b"Bearer x"), b"", &tx, &shared).0,
            401
        );
    }

    #[test]
    fn connections_paths() {
        let (tx, rx) = bounded(4);
        let shared = AdminShared::default();
        // Not an id we could have issued: Gone without asking anyone.
        let gone = route("GET", "/@connections/nope", None, b"", &tx, &shared);
        assert_eq!((gone.0, gone.2.as_str()), (410, r#"{"message":"Gone"}"#));
        assert_eq!(
            route("PUT", "/@connections/x", None, b"", &tx, &shared).0,
            405
        );
        assert!(rx.is_empty());
        // A real id goes to the control thread, which answers for the core.
        let id = crate::websocket::IdGenerator::new(0, 1).next_id().unwrap();
        let answer = std::thread::spawn(move || {
            let Ok(AdminRequest::WebSocket(cmd)) = rx.recv() else {
                panic!("expected a websocket command")
            };
            assert_eq!(cmd.id.core(), 1);
            assert!(matches!(&cmd.op, AdminOp::Post(b) if b == b"hi"));
            cmd.reply.send(registry::AdminReply::Posted).unwrap();
        });
        let path = format!("/@connections/{id}");
        assert_eq!(route("POST", &path, None, b"hi", &tx, &shared).0, 200);
        answer.join().unwrap();
        *lock(&shared.token) = Some("t".into());
        assert_eq!(route("GET", &path, None, b"", &tx, &shared).0, 401);
    }
}
