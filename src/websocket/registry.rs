//! One core's table of open WebSocket connections, and the management API's commands to them
//! (`POST`/`GET`/`DELETE /@connections/{id}`).
//!
//! Owns connection ids (each core has its own `IdGenerator`, so an id says which core owns the
//! connection), each connection's inbox (messages pushed and close requests from elsewhere on
//! this core) and what the management API may read (connectedAt, lastActiveAt, sourceIp). Does
//! no I/O: the connection task (`websocket::conn`) drains its inbox and writes; the admin request
//! reaches this core as a `ToCore::WebSocket` message that the core's tick hands to `handle`.
//!
//! Core-local (`Rc`, `Cell`, `RefCell`): nothing here is touched by another thread. The reply
//! channel is the only thing that leaves the core.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use ahash::AHashMap;
use crossbeam_channel::Sender;

use super::id::IdError;
use super::{CloseCode, ConnectionId, IdGenerator};
use crate::limits::WS_QUEUE_BYTES_MAX;

/// A management API request for one connection, on its way to the owning core.
#[derive(Debug)]
pub struct AdminCommand {
    pub id: ConnectionId,
    pub op: AdminOp,
    /// Answered by the owning core (or by the control thread when the core is unknown).
    pub reply: Sender<AdminReply>,
}

#[derive(Debug)]
pub enum AdminOp {
    /// `POST`: send the body as a message (text when it is UTF-8, else binary).
    Post(Vec<u8>),
    /// `GET`: the connection's facts.
    Get,
    /// `DELETE`: close it (1000).
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminReply {
    /// The message is queued on the connection (200).
    Posted,
    Info(ConnectionInfo),
    /// The close is queued (204).
    Deleted,
    /// No such connection (410 `{"message":"Gone"}`).
    Gone,
    /// Larger than the connection's API accepts as a message (413).
    TooLarge,
    /// The connection has `WS_QUEUE_BYTES_MAX` queued already: it is not reading (429).
    Busy,
    /// The owning core could not be reached (503).
    Unavailable,
}

/// What `GET /@connections/{id}` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// Milliseconds since the Unix epoch of the last frame received from the client.
    pub last_active_at_ms: u64,
    pub source_ip: Option<IpAddr>,
}

/// What the connection task finds in its inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A message to send; text when `text`.
    Send { payload: Vec<u8>, text: bool },
    /// Start the close handshake with this code.
    Close(CloseCode),
}

/// One connection as the rest of the core sees it. The task holds one `Rc`, the registry another.
#[derive(Debug)]
pub struct ConnShared {
    pub id: ConnectionId,
    pub source_ip: Option<IpAddr>,
    /// Wall clock at the upgrade, ms since the Unix epoch.
    pub connected_at_ms: u64,
    connected: Instant,
    /// The core's coarse clock at the last frame from the client.
    last_active: Cell<Instant>,
    /// The connection's API's message limit: longer pushes are refused.
    message_bytes_max: usize,
    queue: RefCell<VecDeque<Command>>,
    queued_bytes: Cell<usize>,
    waker: RefCell<Option<Waker>>,
}

impl ConnShared {
    pub fn touch(&self, now: Instant) {
        self.last_active.set(now);
    }

    pub fn info(&self) -> ConnectionInfo {
        let since = |t: Instant| t.saturating_duration_since(self.connected).as_millis() as u64;
        ConnectionInfo {
            connected_at_ms: self.connected_at_ms,
            last_active_at_ms: self.connected_at_ms + since(self.last_active.get()),
            source_ip: self.source_ip,
        }
    }

    /// Queues a command and wakes the task.
    pub fn push(&self, cmd: Command) {
        if let Command::Send { payload, .. } = &cmd {
            self.queued_bytes
                .set(self.queued_bytes.get() + payload.len());
        }
        self.queue.borrow_mut().push_back(cmd);
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The next queued command.
    pub fn pop(&self) -> Option<Command> {
        let cmd = self.queue.borrow_mut().pop_front()?;
        if let Command::Send { payload, .. } = &cmd {
            self.queued_bytes
                .set(self.queued_bytes.get().saturating_sub(payload.len()));
        }
        Some(cmd)
    }

    /// Resolves once a command is queued.
    pub fn ready(&self) -> InboxReady<'_> {
        InboxReady(self)
    }
}

/// See `ConnShared::ready`.
pub struct InboxReady<'a>(&'a ConnShared);

impl Future for InboxReady<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.queue.borrow().is_empty() {
            *self.0.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// One core's open connections.
pub struct Registry {
    ids: IdGenerator,
    conns: AHashMap<ConnectionId, Rc<ConnShared>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("open", &self.conns.len())
            .finish()
    }
}

impl Registry {
    /// The registry of core `core` (its index in the runtime: ids carry it).
    pub fn new(core: usize) -> Self {
        Registry {
            ids: IdGenerator::new(0, core as u16),
            conns: AHashMap::new(),
        }
    }

    /// Registers a new connection under a fresh id.
    pub fn open(
        &mut self,
        source_ip: Option<IpAddr>,
        connected_at_ms: u64,
        now: Instant,
        message_bytes_max: usize,
    ) -> Result<Rc<ConnShared>, IdError> {
        let id = loop {
            let id = self.ids.next_id()?;
            // 112 random bits: a collision is not expected, but an id must name one connection.
            if !self.conns.contains_key(&id) {
                break id;
            }
        };
        let shared = Rc::new(ConnShared {
            id,
            source_ip,
            connected_at_ms,
            connected: now,
            last_active: Cell::new(now),
            message_bytes_max,
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            waker: RefCell::new(None),
        });
        self.conns.insert(id, shared.clone());
        Ok(shared)
    }

    pub fn close(&mut self, id: &ConnectionId) {
        self.conns.remove(id);
    }

    pub fn get(&self, id: &ConnectionId) -> Option<&Rc<ConnShared>> {
        self.conns.get(id)
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Carries out a management API command; the answer for the admin.
    pub fn apply(&self, id: &ConnectionId, op: AdminOp) -> AdminReply {
        let Some(conn) = self.conns.get(id) else {
            return AdminReply::Gone;
        };
        match op {
            AdminOp::Get => AdminReply::Info(conn.info()),
            AdminOp::Delete => {
                conn.push(Command::Close(CloseCode::NORMAL));
                AdminReply::Deleted
            }
            AdminOp::Post(payload) => {
                if payload.len() > conn.message_bytes_max {
                    return AdminReply::TooLarge;
                }
                if conn.queued_bytes.get() + payload.len() > WS_QUEUE_BYTES_MAX.max(payload.len()) {
                    return AdminReply::Busy;
                }
                let text = std::str::from_utf8(&payload).is_ok();
                conn.push(Command::Send { payload, text });
                AdminReply::Posted
            }
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2024-05-01T12:34:56.789Z` for a time in ms since the Unix epoch (what `GET
/// /@connections/{id}` answers, like Amazon's ISO 8601 timestamps).
pub fn iso8601_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Renders an admin reply: status and JSON body.
pub fn reply_http(reply: &AdminReply) -> (u16, String) {
    match reply {
        AdminReply::Posted => (200, String::new()),
        AdminReply::Deleted => (204, String::new()),
        AdminReply::Info(i) => (
            200,
            serde_json::json!({
                "connectedAt": iso8601_ms(i.connected_at_ms),
                "lastActiveAt": iso8601_ms(i.last_active_at_ms),
                "identity": { "sourceIp": i.source_ip.map(|ip| ip.to_string()) },
            })
            .to_string(),
        ),
        AdminReply::Gone => (410, r#"{"message":"Gone"}"#.into()),
        AdminReply::TooLarge => (413, r#"{"message":"Request Entity Too Large"}"#.into()),
        AdminReply::Busy => (429, r#"{"message":"Too Many Requests"}"#.into()),
        AdminReply::Unavailable => (503, r#"{"message":"Service Unavailable"}"#.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reg() -> (Registry, Instant) {
        (Registry::new(3), Instant::now())
    }

    #[test]
    fn ids_name_the_core_and_unknown_ids_are_gone() {
        let (mut r, now) = reg();
        let c = r.open(None, 0, now, 100).unwrap();
        assert_eq!(c.id.core(), 3);
        assert_eq!(r.len(), 1);
        let other = IdGenerator::new(0, 3).next_id().unwrap();
        assert_eq!(r.apply(&other, AdminOp::Get), AdminReply::Gone);
        r.close(&c.id);
        assert_eq!(r.apply(&c.id, AdminOp::Delete), AdminReply::Gone);
        assert!(r.is_empty());
    }

    #[test]
    fn posts_queue_in_order_with_limits() {
        let (mut r, now) = reg();
        let c = r
            .open(Some("10.0.0.7".parse().unwrap()), 5_000, now, 100)
            .unwrap();
        assert_eq!(
            r.apply(&c.id, AdminOp::Post(b"one".to_vec())),
            AdminReply::Posted
        );
        assert_eq!(
            r.apply(&c.id, AdminOp::Post(vec![0xff])),
            AdminReply::Posted
        );
        assert_eq!(
            r.apply(&c.id, AdminOp::Post(vec![1; 101])),
            AdminReply::TooLarge
        );
        assert_eq!(r.apply(&c.id, AdminOp::Delete), AdminReply::Deleted);
        assert_eq!(
            c.pop(),
            Some(Command::Send {
                payload: b"one".to_vec(),
                text: true
            })
        );
        assert_eq!(
            c.pop(),
            Some(Command::Send {
                payload: vec![0xff],
                text: false
            })
        );
        assert_eq!(c.pop(), Some(Command::Close(CloseCode::NORMAL)));
        assert_eq!(c.pop(), None);
        assert_eq!(c.queued_bytes.get(), 0);
    }

    #[test]
    fn a_connection_that_does_not_drain_its_inbox_is_busy() {
        let (mut r, now) = reg();
        let c = r.open(None, 0, now, WS_QUEUE_BYTES_MAX).unwrap();
        let chunk = WS_QUEUE_BYTES_MAX / 4;
        for _ in 0..4 {
            assert_eq!(
                r.apply(&c.id, AdminOp::Post(vec![b'a'; chunk])),
                AdminReply::Posted
            );
        }
        assert_eq!(r.apply(&c.id, AdminOp::Post(vec![b'a'])), AdminReply::Busy);
        c.pop();
        assert_eq!(
            r.apply(&c.id, AdminOp::Post(vec![b'a'])),
            AdminReply::Posted
        );
    }

    #[test]
    fn info_tracks_last_activity() {
        let (mut r, now) = reg();
        let c = r
            .open(Some("::1".parse().unwrap()), 1_000_000, now, 10)
            .unwrap();
        c.touch(now + Duration::from_millis(2_500));
        assert_eq!(
            r.apply(&c.id, AdminOp::Get),
            AdminReply::Info(ConnectionInfo {
                connected_at_ms: 1_000_000,
                last_active_at_ms: 1_002_500,
                source_ip: Some("::1".parse().unwrap()),
            })
        );
        let (status, body) = reply_http(&r.apply(&c.id, AdminOp::Get));
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["connectedAt"], "1970-01-01T00:16:40.000Z");
        assert_eq!(v["lastActiveAt"], "1970-01-01T00:16:42.500Z");
        assert_eq!(v["identity"]["sourceIp"], "::1");
    }

    #[test]
    fn iso8601_matches_http_dates() {
        // Against httpdate's formatter for the date and time, across leap years and centuries.
        for secs in [
            0u64,
            951_782_400,
            1_709_164_800,
            4_107_542_399,
            1_234_567_890,
        ] {
            let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            let http = httpdate::fmt_http_date(t); // "Sun, 06 Nov 1994 08:49:37 GMT"
            let iso = iso8601_ms(secs * 1000 + 7);
            let parts: Vec<&str> = http.split(' ').collect();
            let month = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ]
            .iter()
            .position(|m| *m == parts[2])
            .unwrap()
                + 1;
            let want = format!("{}-{month:02}-{}T{}.007Z", parts[3], parts[1], parts[4]);
            assert_eq!(iso, want, "{secs}");
        }
    }

    #[test]
    fn inbox_wakes_its_task() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (mut r, now) = reg();
        let c = r.open(None, 0, now, 10).unwrap();
        let mut ready = c.ready();
        assert!(Pin::new(&mut ready).poll(&mut cx).is_pending());
        r.apply(&c.id, AdminOp::Delete);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut ready).poll(&mut cx).is_ready());
    }
}
