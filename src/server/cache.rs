//! The response cache on the request path: the cache step of `decide` (key, invalidation,
//! lookup), the `Fill` a miss carries through the relay loops (cacheability decided on the
//! backend's response head, the body collected chunk by chunk as it streams to the client,
//! `complete` or `abort` at the end), waiting on another request's fill, and answering from an
//! entry (HTTP/1.1 bytes here; HTTP/2 builds its head from `replayed`).
//!
//! The cache itself (`crate::cache`) is pure; this is its driver. Nothing here lives across
//! requests: the shard, the key buffer and the extra counters are the core's (`CoreCtx`), and
//! every borrow of them ends before an `.await`.
//!
//! ```text
//! decide ─ step ─┬ Hit{entry}  ─ answer (x-cache: Hit, age)            ← write_hit / replayed
//!                ├ Forbidden   ─ 403
//!                └ Proxy(CacheStep)
//!                     ├ Off            proxy as usual (route or method not cached)
//!                     ├ Pass           proxy, x-cache: Miss
//!                     ├ Fill(fill)     proxy, x-cache: Miss; fill.on_head(..) on the response
//!                     │                head, fill.on_data(..) per body chunk, fill.finish(ok)
//!                     └ Wait(w)        await_fill ─ Some(entry) ▶ answer / None ▶ Pass
//! ```

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::cache::{
    AbortReason, Cacheability, Entry, EntryRef, FillOutcome, FillTicket, FillWait,
    INVALIDATION_IGNORED_HEADER, Invalidation, Lookup, SkipReason, cacheability, invalidation,
    replay_header, wants_refresh,
};
use crate::config::RouteCache;
use crate::http1::{self, encode};
use crate::integration::http_proxy::is_hop_by_hop;
use crate::limits::HEADERS_CEILING;
use crate::router::Method;
use crate::telemetry::metrics::CACHE_RESULTS;

use super::core::{CoreCtx, CoreSnapshot};
use super::decide::{ReqHeaders, RequestView, RouteRef};
use super::respond::{Meta, common_headers};

// Entry head layout. `Entry::head` is the response path's to fill; here it is the status line
// (`HTTP/1.1 200 OK\r\n`), the replayed header lines, then `content-length` (not for 204/304):
// the whole head of an HTTP/1.1 hit but for what changes per response, so a hit copies it in
// one piece. HTTP/2 reads the header lines after the first (`hit_headers`).

/// Indices into `CACHE_RESULTS` of the results the shard does not count itself.
pub const RESULT_PASS: usize = 3;
pub const RESULT_INVALIDATED: usize = 4;
pub const RESULT_FORBIDDEN: usize = 5;
const _: () = assert!(CACHE_RESULTS.len() == 6);

/// What the cache step decided for a request of a cached proxy route.
#[derive(Debug)]
pub enum Step {
    /// Answer from this entry.
    Hit { entry: EntryRef, warn: bool },
    /// An invalidation the caller may not make, under `fail_with_403`.
    Forbidden,
    /// Forward to the backend.
    Proxy(CacheStep),
}

/// What a forwarded request does with the cache.
#[derive(Debug)]
pub enum CacheStep {
    /// The route or the method is not cached: no `x-cache` header.
    Off,
    /// To the backend, nothing stored: `x-cache: Miss`.
    Pass { warn: bool },
    /// To the backend, streamed to the client and stored: `x-cache: Miss`. (Boxed: misses
    /// are rare next to hits, and every request's state would otherwise carry its size.)
    Fill { fill: Box<Fill>, warn: bool },
    /// Another request on this core is fetching the key: `await_fill`, then answer from the
    /// entry, or forward as `Pass`.
    Wait { wait: FillWait, warn: bool },
}

/// The cache headers of a response relayed from the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheTag {
    /// `x-cache: Miss`.
    pub miss: bool,
    /// `INVALIDATION_IGNORED_HEADER`.
    pub warn: bool,
}

impl CacheStep {
    /// The headers a relayed response gets.
    pub fn tag(&self) -> CacheTag {
        match self {
            CacheStep::Off => CacheTag::default(),
            CacheStep::Pass { warn }
            | CacheStep::Fill { warn, .. }
            | CacheStep::Wait { warn, .. } => CacheTag {
                miss: true,
                warn: *warn,
            },
        }
    }

    /// The fill to carry through the relay, if any, and the headers. A `Wait` must be awaited
    /// first; here it becomes a `Pass`.
    pub fn into_fill(self) -> (Option<Box<Fill>>, CacheTag) {
        let tag = self.tag();
        match self {
            CacheStep::Fill { fill, .. } => (Some(fill), tag),
            _ => (None, tag),
        }
    }

    /// Gives up on the cache for this request (e.g. it turned out to be an upgrade): a fill is
    /// aborted so that its waiters go to the backend now.
    pub fn discard(self, ctx: &CoreCtx) {
        if let CacheStep::Fill { mut fill, .. } = self {
            fill.finish(ctx, false);
        }
    }
}

impl CacheTag {
    /// Writes the tag's header lines (HTTP/1.1).
    pub fn write(&self, out: &mut Vec<u8>) {
        if self.miss {
            encode::header(out, b"x-cache", b"Miss");
        }
        if self.warn {
            warning(out);
        }
    }
}

fn warning(out: &mut Vec<u8>) {
    let (name, value) = INVALIDATION_IGNORED_HEADER;
    encode::header(out, name.as_bytes(), value.as_bytes());
}

/// The cache step of a request routed to a cached proxy route: builds the key, applies the
/// invalidation policy and looks the key up in the core's shard. Synchronous; allocates only
/// when a miss makes a fill (its key).
pub fn step(
    ctx: &CoreCtx,
    snap: &Rc<CoreSnapshot>,
    route: RouteRef,
    rc: &RouteCache,
    req: &RequestView<'_>,
) -> Step {
    let Some(method) = Method::from_request(req.method) else {
        return Step::Proxy(CacheStep::Off);
    };
    if matches!(req.headers, ReqHeaders::None) {
        return Step::Proxy(CacheStep::Off);
    }
    let policy = &rc.policy;
    let stage = policy.stage;
    with_slice(req.headers, |headers| {
        let mut buf = ctx.cache_key.borrow_mut();
        let Some(key) = policy.key(&mut buf, method, req.path, req.query, headers) else {
            return Step::Proxy(CacheStep::Off);
        };
        let refresh = wants_refresh(headers);
        let authorized = refresh && rc.authorizes(headers);
        let now = ctx.timers.now();
        let fill = |ticket| {
            Box::new(Fill {
                ticket: Some(ticket),
                snap: snap.clone(),
                route,
                method,
                store: None,
                body_len: 0,
            })
        };
        let mut shard = ctx.cache.borrow_mut();
        let warn = match invalidation(policy, refresh, authorized) {
            Invalidation::Forbidden => {
                ctx.count_cache(stage, RESULT_FORBIDDEN);
                return Step::Forbidden;
            }
            Invalidation::Refetch => {
                ctx.count_cache(stage, RESULT_INVALIDATED);
                if method == Method::Head {
                    // A HEAD response cannot refill a GET entry: drop the entry everywhere and
                    // let the next GET fetch it.
                    shard.invalidate(&key, now);
                    return Step::Proxy(CacheStep::Pass { warn: false });
                }
                return Step::Proxy(match shard.refetch(&key, now) {
                    Some(t) => CacheStep::Fill {
                        fill: fill(t),
                        warn: false,
                    },
                    None => CacheStep::Pass { warn: false },
                });
            }
            Invalidation::Ignore { warn } => warn,
            Invalidation::None => false,
        };
        if method == Method::Head {
            return match shard.peek(&key, now) {
                Some(entry) => Step::Hit { entry, warn },
                None => {
                    ctx.count_cache(stage, RESULT_PASS);
                    Step::Proxy(CacheStep::Pass { warn })
                }
            };
        }
        match shard.lookup(&key, now) {
            Lookup::Hit(entry) => Step::Hit { entry, warn },
            Lookup::Miss(t) => Step::Proxy(CacheStep::Fill {
                fill: fill(t),
                warn,
            }),
            Lookup::Wait(wait) => Step::Proxy(CacheStep::Wait { wait, warn }),
            Lookup::Pass => Step::Proxy(CacheStep::Pass { warn }),
        }
    })
}

/// Waits for another request's fill of the same key, at most `timeout` (the route's
/// integration timeout). `None`: it failed, was not cacheable, or took too long: forward the
/// request yourself, without the cache.
pub async fn await_fill(ctx: &CoreCtx, wait: FillWait, timeout: Duration) -> Option<EntryRef> {
    match ctx.timers.timeout(timeout, wait).await {
        Ok(FillOutcome::Filled(entry)) => Some(entry),
        Ok(FillOutcome::Aborted) | Err(_) => None,
    }
}

/// A miss being filled from the backend's response as it streams to the client. Dropping it
/// without `finish` aborts the fill for its waiters (the shard forgets the fill at its next
/// sweep or lookup of the key).
#[derive(Debug)]
pub struct Fill {
    /// `None` once the fill was ended (not cacheable, body too large).
    ticket: Option<FillTicket>,
    /// Holds the route's policy alive (the request may outlive a snapshot swap).
    snap: Rc<CoreSnapshot>,
    route: RouteRef,
    /// The request's method (never HEAD: a HEAD never fills).
    method: Method,
    /// Set by a storable response head: status, the entry head so far (status line, replayed
    /// header lines), TTL.
    store: Option<(u16, Vec<u8>, Duration)>,
    /// Body bytes collected so far (for the entry's `content-length`).
    body_len: u64,
}

impl Fill {
    /// The backend's final response head: decides whether the response may be stored. If not,
    /// the fill ends here, so that its waiters go to the backend at once.
    pub fn on_head(
        &mut self,
        ctx: &CoreCtx,
        status: u16,
        headers: &[httparse::Header<'_>],
        content_length: Option<u64>,
    ) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let route = self.route.compiled(&self.snap);
        let verdict = match &route.cache {
            Some(rc) => cacheability(&rc.policy, self.method, status, headers, content_length),
            None => Cacheability::Skip(SkipReason::Disabled),
        };
        match verdict {
            Cacheability::Store { ttl } => {
                self.store = Some((status, entry_head(status, headers), ttl));
                self.ticket = Some(ticket);
            }
            Cacheability::Skip(_) => {
                let now = ctx.timers.now();
                ctx.cache
                    .borrow_mut()
                    .abort(ticket, AbortReason::Uncacheable, now);
            }
        }
    }

    /// `on_head` for a response head held in an `http::HeaderMap` (HTTP/2 backends).
    pub fn on_head_map(&mut self, ctx: &CoreCtx, status: u16, headers: &http::HeaderMap) {
        if self.ticket.is_none() {
            return;
        }
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        with_slice(ReqHeaders::H2(headers), |h| {
            self.on_head(ctx, status, h, length)
        });
    }

    /// A piece of the (decoded) body, as it goes to the client. A body that outgrows the
    /// per-entry maximum ends the fill: it keeps streaming, and is not stored.
    pub fn on_data(&mut self, ctx: &CoreCtx, chunk: &[u8]) {
        let Some(t) = self.ticket.as_mut() else {
            return;
        };
        self.body_len += chunk.len() as u64;
        if !t.collect(chunk)
            && let Some(t) = self.ticket.take()
        {
            let now = ctx.timers.now();
            ctx.cache
                .borrow_mut()
                .abort(t, AbortReason::Uncacheable, now);
        }
    }

    /// Ends the fill: `ok` when the whole response reached the client's buffer. Stores the
    /// entry (and answers the waiters from it), or aborts.
    pub fn finish(&mut self, ctx: &CoreCtx, ok: bool) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let now = ctx.timers.now();
        let mut shard = ctx.cache.borrow_mut();
        match self.store.take() {
            Some((status, mut head, ttl)) if ok => {
                if !bodiless(status) {
                    encode::header_u64(&mut head, b"content-length", self.body_len);
                }
                shard.complete(ticket, status, head, ttl, now);
            }
            _ => shard.abort(ticket, AbortReason::Failed, now),
        }
    }
}

/// The start of an entry's head: the status line, then the backend's header lines kept for
/// replay (`name: value\r\n`): end-to-end headers but those every hit writes fresh
/// (`replay_header`) and `age`. `Fill::finish` adds `content-length`.
fn entry_head(status: u16, headers: &[httparse::Header<'_>]) -> Vec<u8> {
    let connection = http1::header_value(headers, "connection").unwrap_or(b"");
    let mut out = Vec::with_capacity(256);
    encode::status_line(&mut out, status);
    for h in headers {
        let name = h.name.as_bytes();
        if !replay_header(h.name)
            || is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"age")
            || http1::has_token(connection, h.name)
        {
            continue;
        }
        encode::header(&mut out, name, h.value);
    }
    out
}

/// Whether a response with this status has no body (RFC 9110 §6.4.1).
fn bodiless(status: u16) -> bool {
    status == 204 || status == 304
}

/// An HTTP/1.1 response from a cache entry: its status line, replayed headers and
/// `content-length` (the entry's head), `x-cache: Hit`, `age`, the common headers, and the body
/// (not for HEAD).
pub fn write_hit(
    out: &mut Vec<u8>,
    e: &Entry,
    now: Instant,
    meta: &Meta<'_>,
    warn: bool,
    is_head: bool,
) {
    out.extend_from_slice(&e.head);
    out.extend_from_slice(b"x-cache: Hit\r\nage: ");
    let mut age = itoa::Buffer::new();
    out.extend_from_slice(age.format(e.age(now).as_secs()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if warn {
        warning(out);
    }
    common_headers(out, meta);
    encode::end_head(out);
    if !is_head && !bodiless(e.status) {
        out.extend_from_slice(&e.body);
    }
}

/// The entry's replayed header lines and `content-length` as `(name, value)`, then `age`,
/// `x-cache: Hit` and the warning if `warn` (for HTTP/2, which has no header bytes to copy).
pub fn hit_headers(
    e: &Entry,
    now: Instant,
    warn: bool,
) -> impl Iterator<Item = (&[u8], Vec<u8>)> + '_ {
    // The first line is the status line.
    let replayed = e.head.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = memchr::memchr(b':', line)?;
        Some((&line[..colon], line[colon + 1..].trim_ascii().to_vec()))
    });
    let ours = [
        Some((&b"age"[..], e.age(now).as_secs().to_string().into_bytes())),
        Some((&b"x-cache"[..], b"Hit".to_vec())),
        warn.then(|| {
            let (n, v) = INVALIDATION_IGNORED_HEADER;
            (n.as_bytes(), v.as_bytes().to_vec())
        }),
    ];
    replayed.chain(ours.into_iter().flatten())
}

/// Runs `f` with the headers as httparse's slice: as they are for HTTP/1.1; for an
/// `http::HeaderMap`, copied into a stack array (references, no allocation; at most
/// `HEADERS_CEILING`, which the server's `headers_max` never exceeds).
pub fn with_slice<R>(h: ReqHeaders<'_>, f: impl FnOnce(&[httparse::Header<'_>]) -> R) -> R {
    match h {
        ReqHeaders::H1(s) => f(s),
        ReqHeaders::None => f(&[]),
        ReqHeaders::H2(map) => {
            let mut arr = [httparse::EMPTY_HEADER; HEADERS_CEILING];
            let mut n = 0;
            for (name, value) in map.iter().take(HEADERS_CEILING) {
                arr[n] = httparse::Header {
                    name: name.as_str(),
                    value: value.as_bytes(),
                };
                n += 1;
            }
            f(&arr[..n])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{OwnedKey, StageId};
    use crate::server::respond::RequestId;
    use std::sync::Arc;

    fn entry(status: u16, head: &[u8], body: &[u8], stored_at: Instant) -> Entry {
        Entry {
            key: OwnedKey {
                stage: StageId(1),
                hash: 1,
                bytes: Arc::from(&b"k"[..]),
            },
            status,
            head: head.into(),
            body: body.into(),
            stored_at,
            expires_at: stored_at + Duration::from_secs(60),
            origin: 0,
        }
    }

    fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn entry_head_keeps_end_to_end_headers_only() {
        let head = entry_head(
            200,
            &[
                h("Content-Type", "text/plain"),
                h("Content-Length", "5"),
                h("Connection", "x-hop"),
                h("x-hop", "1"),
                h("Date", "yesterday"),
                h("Age", "3"),
                h("ETag", "\"v1\""),
                h("Transfer-Encoding", "chunked"),
                h("x-request-id", "theirs"),
            ],
        );
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: \"v1\"\r\n"
        );
    }

    #[test]
    fn hit_renders_fresh_headers_and_the_body() {
        let t0 = Instant::now();
        let e = entry(
            200,
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n",
            b"hello",
            t0,
        );
        let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
        let id = RequestId::new(b"rid");
        let meta = Meta {
            date: &date,
            request_id: &id,
            keep_alive: true,
            http10: false,
        };
        let mut out = Vec::new();
        write_hit(
            &mut out,
            &e,
            t0 + Duration::from_millis(2500),
            &meta,
            true,
            false,
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\
             x-cache: Hit\r\nage: 2\r\nwarning: 199 tollgate \"cache invalidation not authorized; served from cache\"\r\n\
             date: Sun, 06 Nov 1994 08:49:37 GMT\r\nx-request-id: rid\r\n\r\nhello"
        );
        let mut out = Vec::new();
        write_hit(&mut out, &e, t0, &meta, false, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "HEAD: no body: {text}");
    }

    #[test]
    fn hit_headers_for_http2() {
        let t0 = Instant::now();
        let e = entry(
            200,
            b"HTTP/1.1 200 OK\r\ncontent-type: a/b\r\netag: x\r\ncontent-length: 3\r\n",
            b"abc",
            t0,
        );
        let got: Vec<(String, String)> = hit_headers(&e, t0, false)
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8(v).unwrap(),
                )
            })
            .collect();
        let want = [
            ("content-type", "a/b"),
            ("etag", "x"),
            ("content-length", "3"),
            ("age", "0"),
            ("x-cache", "Hit"),
        ];
        assert_eq!(
            got,
            want.map(|(n, v)| (n.to_string(), v.to_string())).to_vec()
        );
        let e = entry(204, b"HTTP/1.1 204 No Content\r\n", b"", t0);
        assert!(hit_headers(&e, t0, true).all(|(n, _)| n != b"content-length"));
        assert!(hit_headers(&e, t0, true).any(|(n, _)| n == b"warning"));
    }

    #[test]
    fn header_maps_become_slices() {
        let mut map = http::HeaderMap::new();
        map.insert("cache-control", "max-age=0".parse().unwrap());
        map.append("x-a", "1".parse().unwrap());
        map.append("x-a", "2".parse().unwrap());
        let n = with_slice(ReqHeaders::H2(&map), |s| {
            assert!(wants_refresh(s));
            s.iter().filter(|h| h.name == "x-a").count()
        });
        assert_eq!(n, 2);
    }
}
