//! "No per-request heap allocation for parsing": `http1::parse_request` and `parse_response` run
//! under a counting global allocator, and must not allocate.
//!
//! In a file of its own because the allocator is global to the test binary. Only allocations made
//! by this thread while `counting` is set are counted, so the harness's other threads do not
//! disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tollgate::http1::{self, Framing, HeadLimits};
use tollgate::limits::HEADERS_CEILING;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the thread-locals may be gone while a thread is torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every method forwards to `System` unchanged; counting touches only const-initialised
// thread-locals, which neither allocate nor re-enter the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as for `alloc`; `ptr` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations `f` makes on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let out = f();
    COUNTING.with(|on| on.set(false));
    (out, ALLOCS.with(Cell::get))
}

#[test]
fn the_counter_sees_an_allocation() {
    // Without this the test below could pass with a counter that never counts.
    let (v, n) = allocations(|| std::hint::black_box(vec![1u8; 64]));
    assert_eq!(v.len(), 64);
    assert!(n >= 1, "a Vec was allocated but {n} counted");
}

const REQUESTS: &[&[u8]] = &[
    b"GET /v1/orders/42?expand=items&x=%20 HTTP/1.1\r\nHost: api.example.com:8080\r\n\
      User-Agent: curl/8.5.0\r\nAccept: */*\r\nX-Request-Id: 4e5f1b7c-0d2a-93e4-d6e8-feb86659fd93\r\n\
      Cookie: a=b; c=d\r\nConnection: keep-alive\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET http://api.example.com/abs?q=1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /old HTTP/1.0\r\n\r\n",
];

#[test]
fn parsing_requests_allocates_nothing() {
    let limits = HeadLimits::default();
    for &raw in REQUESTS {
        let ((framing, path_len), n) = allocations(|| {
            let mut slots = http1::header_slots::<HEADERS_CEILING>();
            let head = http1::parse_request(raw, &mut slots, &limits)
                .expect("a valid request")
                .expect("a complete head");
            let host = head.host.map(http1::host_without_port);
            std::hint::black_box((host, head.query, head.keep_alive, head.upgrade));
            (head.framing, head.path.len())
        });
        assert_eq!(
            n,
            0,
            "{n} allocation(s) parsing {:?}",
            String::from_utf8_lossy(raw)
        );
        assert!(path_len > 0);
        assert_ne!(framing, Framing::UntilClose);
    }
}

#[test]
fn refusing_and_partial_requests_allocates_nothing() {
    let limits = HeadLimits::default();
    let bad: &[&[u8]] = &[
        // Smuggling shapes, and a head cut short.
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nUser-Ag",
    ];
    for &raw in bad {
        let (outcome, n) = allocations(|| {
            let mut slots = http1::header_slots::<HEADERS_CEILING>();
            match http1::parse_request(raw, &mut slots, &limits) {
                Ok(Some(_)) => "parsed",
                Ok(None) => "partial",
                Err(_) => "refused",
            }
        });
        assert_eq!(
            n,
            0,
            "{n} allocation(s) on {:?}",
            String::from_utf8_lossy(raw)
        );
        assert_ne!(outcome, "parsed", "{:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn parsing_a_response_allocates_nothing() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
                Date: Sun, 22 Nov 2026 16:26:35 GMT\r\n\r\n{}";
    let (framing, n) = allocations(|| {
        let mut slots = http1::header_slots::<HEADERS_CEILING>();
        http1::parse_response(raw, &mut slots, &HeadLimits::default(), false)
            .expect("a valid response")
            .expect("a complete head")
            .framing
    });
    assert_eq!(n, 0, "{n} allocation(s) parsing a response");
    assert_eq!(framing, Framing::Length(2));
}
