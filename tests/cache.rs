//! The response cache over real sockets: hits and misses (`x-cache`, `age`, replayed headers),
//! TTL expiry, what varies the key, one backend call per key across cores once a reconciler tick
//! has passed (with hits shown to come from both cores), coalescing of concurrent misses, a fill
//! streaming to its first client before the backend has finished, a route opting POST in, client
//! invalidation under each strategy, the admin flush on every core, the capacity bound with
//! eviction, what is never stored, HEAD from GET entries, and hits over HTTP/2.
//!
//! Backends count their calls (`Reply::Numbered` puts the call's number in the body), so a
//! response shows which backend call made it. Which core served a connection is read from a
//! WebSocket connection id (it names its core): the connection upgrades once its HTTP part is done.

mod common;
mod tls_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

/// An API `shop` with a cached proxy route `GET /{proxy+}` on stage `prod`, plus `GET /live`
/// (`route_cache` turns it off) and `GET /m` (a mock).
fn api(backend: SocketAddr, cache: &str, stage_extra: &str) -> String {
    format!(
        r#"
[[api]]
name = "shop"

[[api.route]]
key = "GET /live"
integration = {{ type = "http_proxy", uri = "http://{backend}/live" }}

[[api.route]]
key = "ANY /{{proxy+}}"
integration = {{ type = "http_proxy", uri = "http://{backend}/{{proxy}}" }}

[[api.route]]
key = "GET /m"
integration = {{ type = "mock", body = "mock" }}

[[api.stage]]
name = "prod"
cache = {{ enabled = true, {cache} }}
route_cache = {{ "GET /live" = {{ enabled = false }} }}
{stage_extra}
"#
    )
}

fn numbered() -> Backend {
    Backend::start(Reply::Numbered(vec![(
        "content-type".into(),
        "text/plain".into(),
    )]))
}

fn start(backend: &Backend, cache: &str) -> Gateway {
    Gateway::start(&config(&api(backend.addr, cache, "")))
}

fn calls(b: &Backend) -> usize {
    b.requests().len()
}

/// One GET on a fresh connection.
fn fetch(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    gw.request(&request("GET", path, headers, b""))
}

fn head(gw: &Gateway, path: &str) -> Response {
    let mut c = gw.client();
    c.send(&request("HEAD", path, &[], b""));
    c.read_head_response()
}

/// The value of a metric line (`name{labels}`) in the `/metrics` text.
fn metric(gw: &Gateway, series: &str) -> u64 {
    let text = gw.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn results(gw: &Gateway, result: &str) -> u64 {
    metric(
        gw,
        &format!(r#"tollgate_cache_requests_total{{api="shop",stage="prod",result="{result}"}}"#),
    )
}

/// As `results`, for the stage `prod` of another API.
fn results_of(gw: &Gateway, api: &str, result: &str) -> u64 {
    metric(
        gw,
        &format!(r#"tollgate_cache_requests_total{{api="{api}",stage="prod",result="{result}"}}"#),
    )
}

const STAGE: &str = r#"{api="shop",stage="prod"}"#;

#[test]
fn miss_then_hit_with_fresh_headers() {
    let backend = numbered();
    let gw = start(&backend, "ttl_s = 300");
    let first = fetch(&gw, "/prod/a", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "1 /a");
    assert_eq!(first.header("x-cache"), Some("Miss"));
    let hit = fetch(&gw, "/prod/a", &[]);
    assert_eq!(hit.status, 200);
    assert_eq!(hit.text(), "1 /a", "served from the cache");
    assert_eq!(hit.header("x-cache"), Some("Hit"));
    assert_eq!(hit.header("content-type"), Some("text/plain"));
    assert_eq!(hit.header("content-length"), Some("4"));
    assert!(hit.header("date").is_some());
    assert!(hit.header("age").is_some_and(|a| a.parse::<u64>().is_ok()));
    let (a, b) = (first.header("x-request-id"), hit.header("x-request-id"));
    assert!(
        a.is_some() && b.is_some() && a != b,
        "a fresh id per response"
    );
    assert_eq!(calls(&backend), 1);
    // The same connection, keep-alive, and a pipelined pair.
    let mut c = gw.client();
    c.send(&[get("/prod/a"), get("/prod/b")].concat());
    assert_eq!(c.read_response().text(), "1 /a");
    assert_eq!(c.read_response().text(), "2 /b");
    assert_eq!(c.roundtrip(&get("/prod/b")).header("x-cache"), Some("Hit"));
    assert_eq!(calls(&backend), 2);
    // A route with caching off, and a mock: no x-cache, every call goes through.
    for _ in 0..2 {
        let r = fetch(&gw, "/prod/live", &[]);
        assert_eq!(r.header("x-cache"), None);
    }
    assert_eq!(fetch(&gw, "/prod/m", &[]).header("x-cache"), None);
    assert_eq!(calls(&backend), 4);
    // Other methods of the cached route are not cached.
    let post = gw.request(&request("POST", "/prod/a", &[], b"x"));
    assert_eq!(post.text(), "5 /a");
    assert_eq!(post.header("x-cache"), None);
    assert_eq!(results(&gw, "hit"), 3);
    assert_eq!(results(&gw, "miss"), 2);
    assert!(metric(&gw, &format!("tollgate_cache_entries{STAGE}")) == 2);
}

#[test]
fn entries_expire_after_their_ttl() {
    let backend = numbered();
    let gw = start(&backend, "ttl_s = 1");
    assert_eq!(fetch(&gw, "/prod/t", &[]).header("x-cache"), Some("Miss"));
    assert_eq!(fetch(&gw, "/prod/t", &[]).header("x-cache"), Some("Hit"));
    std::thread::sleep(Duration::from_millis(1200));
    let r = fetch(&gw, "/prod/t", &[]);
    assert_eq!(
        (r.header("x-cache"), r.text().as_str()),
        (Some("Miss"), "2 /t")
    );
    assert_eq!(fetch(&gw, "/prod/t", &[]).text(), "2 /t");
    assert_eq!(calls(&backend), 2);
}

#[test]
fn listed_query_parameters_and_headers_vary_the_key_others_do_not() {
    let backend = numbered();
    let gw = start(
        &backend,
        r#"key_query = ["page"], key_headers = ["accept-language"]"#,
    );
    let text = |path: &str, headers: &[(&str, &str)]| fetch(&gw, path, headers).text();
    assert_eq!(text("/prod/k?page=1", &[]), "1 /k?page=1");
    assert_eq!(text("/prod/k?page=2", &[]), "2 /k?page=2");
    // Other parameters and their order do not matter; the listed one does.
    assert_eq!(text("/prod/k?sort=x&page=1", &[]), "1 /k?page=1");
    assert_eq!(text("/prod/k?page=1&utm=z", &[]), "1 /k?page=1");
    assert_eq!(text("/prod/k", &[]), "3 /k");
    assert_eq!(text("/prod/k?other=1", &[]), "3 /k");
    // The path varies the key.
    assert_eq!(text("/prod/k2?page=1", &[]), "4 /k2?page=1");
    // A listed header (any case) varies the key; another header does not.
    let en = [("Accept-Language", "en")];
    let fr = [("accept-language", "fr")];
    assert_eq!(text("/prod/h", &en), "5 /h");
    assert_eq!(text("/prod/h", &fr), "6 /h");
    assert_eq!(
        text("/prod/h", &[("ACCEPT-LANGUAGE", "en"), ("x-other", "1")]),
        "5 /h"
    );
    assert_eq!(text("/prod/h", &[]), "7 /h");
    assert_eq!(text("/prod/h", &[("x-other", "2")]), "7 /h");
    assert_eq!(calls(&backend), 7);
}

#[test]
fn one_backend_call_per_key_across_cores_after_a_tick() {
    let backend = numbered();
    let connects = Backend::start(Reply::ok(""));
    let apis = format!(
        "{}{}",
        api(backend.addr, "ttl_s = 300", ""),
        core_probe_api(&connects)
    );
    let gw = Gateway::start_cores(&config(&apis), Some(2));
    // Before any tick: each core may fill the key once, no more.
    for _ in 0..20 {
        assert_eq!(fetch(&gw, "/prod/a", &[]).status, 200);
    }
    let before = calls(&backend);
    assert!(
        (1..=2).contains(&before),
        "{before} calls for one key on 2 cores"
    );
    // A key filled once, then reconciled: every core hits it.
    assert_eq!(fetch(&gw, "/prod/b", &[]).header("x-cache"), Some("Miss"));
    let after_b = calls(&backend);
    eventually("the fill of /b reaches both cores", || {
        (metric(&gw, &format!("tollgate_cache_entries{STAGE}")) == 4).then_some(())
    });
    // New connections until hits were answered on both cores (the kernel's SO_REUSEPORT hash
    // decides; 40 connections all on one core has p = 2^-39). Each connection, after its hit,
    // upgrades to a WebSocket API on the same socket, whose `$connect` event names the core.
    let mut hits_on = [0usize; 2];
    for i in 0..200 {
        if i >= 20 && hits_on.iter().all(|&n| n > 0) {
            break;
        }
        let mut c = gw.client();
        let r = c.roundtrip(&get("/prod/b"));
        assert_eq!(r.header("x-cache"), Some("Hit"), "request {i}");
        assert_eq!(r.text(), format!("{after_b} /b"));
        hits_on[connection_core(&mut c, &connects, i)] += 1;
    }
    assert!(hits_on.iter().all(|&n| n > 0), "hits per core: {hits_on:?}");
    assert_eq!(calls(&backend), after_b, "one call in total for /b");
    assert!(gw.stderr().contains("2 core(s)"), "{}", gw.stderr());
}

/// A WebSocket API on host `ws.test` (the `shop` API has no host, so it serves every other one)
/// whose `$connect` events go to `connects`: a probe of which core holds a connection.
fn core_probe_api(connects: &Backend) -> String {
    format!(
        "[[api]]\nname = \"probe\"\nprotocol = \"websocket\"\nhost = \"ws.test\"\n\
         [[api.route]]\nkey = \"$connect\"\n\
         integration = {{ type = \"http\", uri = \"http://{}/connect\" }}\n",
        connects.addr
    )
}

/// The core serving `c`'s connection: upgrades it to the probe API (ending its HTTP use) and
/// reads the core from the connection id of the `$connect` event, the `n`-th (0-based) the
/// probe backend has seen.
fn connection_core(c: &mut Client, connects: &Backend, n: usize) -> usize {
    c.send(&ws_upgrade_request("/", &[("Host", "ws.test")]));
    let r = c.read_response();
    assert_eq!(r.status, 101, "upgrade: {}", r.text());
    let events = connects.requests();
    assert_eq!(events.len(), n + 1, "one $connect per probe");
    let event: serde_json::Value = serde_json::from_slice(&events[n].body).expect("event JSON");
    let id = event["requestContext"]["connectionId"]
        .as_str()
        .expect("connectionId");
    usize::from(ws_id_core(id))
}

#[test]
fn concurrent_misses_coalesce_onto_one_backend_call() {
    let mut spec = BackendSpec::new(Reply::Numbered(Vec::new()));
    spec.delay = Duration::from_millis(400);
    let backend = Backend::start_spec(spec);
    let gw = start(&backend, "ttl_s = 300");
    let mut clients: Vec<Client> = (0..10).map(|_| gw.client()).collect();
    for c in &mut clients {
        c.send(&get("/prod/slow"));
    }
    let mut tags = Vec::new();
    for c in &mut clients {
        let r = c.read_response();
        assert_eq!((r.status, r.text().as_str()), (200, "1 /slow"));
        tags.push(r.header("x-cache").unwrap_or("").to_string());
    }
    assert_eq!(
        calls(&backend),
        1,
        "one backend call for 10 concurrent misses"
    );
    assert_eq!(tags.iter().filter(|t| *t == "Miss").count(), 1, "{tags:?}");
    assert_eq!(results(&gw, "coalesced"), 9);
}

/// A backend for one slow response: on its first request it sends a head announcing
/// `2 * half` pattern bytes and the first `half`, then waits until the test releases it. Later
/// requests get the whole body at once. Counts requests.
struct StallingBackend {
    addr: SocketAddr,
    release: std::sync::mpsc::Sender<()>,
    calls: Arc<AtomicUsize>,
}

impl StallingBackend {
    fn start(half: usize) -> StallingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let (release, released) = std::sync::mpsc::channel::<()>();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        std::thread::spawn(move || {
            let mut released = Some(released);
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut gate = released.take();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    // Each request is a head without a body (GET).
                    loop {
                        let mut line = String::new();
                        loop {
                            line.clear();
                            match reader.read_line(&mut line) {
                                Ok(n) if n > 0 => {}
                                _ => return,
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
                             content-length: {}\r\n\r\n",
                            2 * half
                        );
                        let mut out = head.into_bytes();
                        out.extend_from_slice(pattern_at(0, half));
                        if stream.write_all(&out).is_err() {
                            return;
                        }
                        if let Some(gate) = gate.take() {
                            // A closed channel (the test ended) releases too.
                            let _ = gate.recv();
                        }
                        if stream.write_all(pattern_at(half as u64, half)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        StallingBackend {
            addr,
            release,
            calls,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[test]
fn a_fill_streams_to_its_first_client_before_the_backend_finishes() {
    const HALF: usize = 16 * 1024;
    let backend = StallingBackend::start(HALF);
    let gw = Gateway::start(&config(&format!(
        "[[api]]\nname = \"s\"\n[[api.route]]\nkey = \"GET /{{proxy+}}\"\n\
         integration = {{ type = \"http_proxy\", uri = \"http://{}/{{proxy}}\" }}\n\
         [[api.stage]]\nname = \"prod\"\ncache = {{ enabled = true }}\n",
        backend.addr
    )));
    let mut first = gw.client();
    first.send(&get("/prod/slow"));
    // The head and the first half arrive while the backend still holds back the rest: a read
    // that waited for the whole body would time out here.
    let mut got = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&got, b"\r\n\r\n")
            && got.len() >= i + 4 + HALF
        {
            break i + 4;
        }
        let mut buf = [0u8; 64 * 1024];
        let n = first
            .stream
            .read(&mut buf)
            .expect("the first half before the end");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-cache: miss\r\n"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}\r\n", 2 * HALF)),
        "{head}"
    );
    assert_eq!(got.len(), head_end + HALF, "only the first half was sent");
    assert!(pattern_matches(0, &got[head_end..]));
    assert_eq!(backend.calls(), 1);
    // A second client for the key meanwhile waits on the fill instead of calling the backend.
    let mut waiter = gw.client();
    waiter.send(&get("/prod/slow"));
    eventually("the waiter is counted", || {
        (results_of(&gw, "s", "coalesced") == 1).then_some(())
    });
    backend.release.send(()).expect("the backend waits");
    let mut rest = vec![0u8; HALF];
    first
        .stream
        .read_exact(&mut rest)
        .expect("the second half after the release");
    assert!(pattern_matches(HALF as u64, &rest));
    let w = waiter.read_response();
    assert_eq!(w.body.len(), 2 * HALF);
    assert!(pattern_matches(0, &w.body));
    // The streamed response was stored whole.
    let hit = fetch(&gw, "/prod/slow", &[]);
    assert_eq!(hit.header("x-cache"), Some("Hit"));
    assert_eq!(hit.body.len(), 2 * HALF);
    assert!(pattern_matches(0, &hit.body));
    assert_eq!(backend.calls(), 1);
    // The first connection goes on.
    let r = first.roundtrip(&get("/prod/slow"));
    assert_eq!((r.header("x-cache"), r.body.len()), (Some("Hit"), 2 * HALF));
}

#[test]
fn a_route_may_opt_post_in_and_post_is_not_cached_without_it() {
    let backend = numbered();
    let gw = Gateway::start(&config(&format!(
        r#"
[[api]]
name = "shop"

[[api.route]]
key = "ANY /opt/{{proxy+}}"
integration = {{ type = "http_proxy", uri = "http://{b}/opt/{{proxy}}" }}

[[api.route]]
key = "ANY /{{proxy+}}"
integration = {{ type = "http_proxy", uri = "http://{b}/{{proxy}}" }}

[[api.stage]]
name = "prod"
cache = {{ enabled = true }}
route_cache = {{ "ANY /opt/{{proxy+}}" = {{ methods = ["GET", "POST"] }} }}
"#,
        b = backend.addr
    )));
    let post = |path: &str, body: &[u8]| gw.request(&request("POST", path, &[], body));
    // The opted-in route: a POST fills (its body reaches the backend) and the next POST hits.
    let r = post("/prod/opt/x", b"first");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("Miss")));
    assert_eq!(r.text(), "1 /opt/x");
    assert_eq!(backend.requests()[0].method, "POST");
    assert_eq!(backend.requests()[0].body, b"first");
    // The body is not part of the key (as the README says): another body hits the same entry.
    for body in [&b"first"[..], b"second"] {
        let r = post("/prod/opt/x", body);
        assert_eq!(
            (r.header("x-cache"), r.text()),
            (Some("Hit"), "1 /opt/x".into())
        );
    }
    // A chunked request body on a miss is forwarded whole.
    let mut c = gw.client();
    let mut req = b"POST /prod/opt/y HTTP/1.1\r\nHost: test.local\r\n\
                    Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    req.extend_from_slice(&chunked(b"chunked body", &[3, 5]));
    let r = c.roundtrip(&req);
    assert_eq!(
        (r.header("x-cache"), r.text()),
        (Some("Miss"), "2 /opt/y".into())
    );
    assert_eq!(backend.requests()[1].body, b"chunked body");
    let r = c.roundtrip(&request("POST", "/prod/opt/y", &[], b""));
    assert_eq!(r.header("x-cache"), Some("Hit"));
    // The method is part of the key: GET has its own entry.
    let r = fetch(&gw, "/prod/opt/x", &[]);
    assert_eq!(
        (r.header("x-cache"), r.text()),
        (Some("Miss"), "3 /opt/x".into())
    );
    assert_eq!(fetch(&gw, "/prod/opt/x", &[]).text(), "3 /opt/x");
    assert_eq!(calls(&backend), 3);
    // Without the opt-in, POST is not cached: no x-cache, every POST reaches the backend; GET is.
    for n in [4, 5] {
        let r = post("/prod/plain", b"p");
        assert_eq!(
            (r.header("x-cache"), r.text()),
            (None, format!("{n} /plain"))
        );
    }
    assert_eq!(
        fetch(&gw, "/prod/plain", &[]).header("x-cache"),
        Some("Miss")
    );
    assert_eq!(
        fetch(&gw, "/prod/plain", &[]).header("x-cache"),
        Some("Hit")
    );
    assert_eq!(calls(&backend), 6);
    assert_eq!(results(&gw, "hit"), 5);
    assert_eq!(results(&gw, "miss"), 4);
}

/// Stages under each strategy, each with the invalidation token `tok`.
fn invalidation_api(backend: SocketAddr) -> String {
    let stage = |name: &str, how: &str| {
        format!(
            "[[api.stage]]\nname = \"{name}\"\n\
             cache = {{ enabled = true, invalidation_token = \"tok\", {how} }}\n"
        )
    };
    format!(
        "[[api]]\nname = \"inv\"\n[[api.route]]\nkey = \"GET /{{proxy+}}\"\n\
         integration = {{ type = \"http_proxy\", uri = \"http://{backend}/{{proxy}}\" }}\n{}{}{}{}",
        stage("deny", r#"unauthorized_strategy = "fail_with_403""#),
        stage(
            "warn",
            r#"unauthorized_strategy = "succeed_with_response_header""#
        ),
        stage(
            "quiet",
            r#"unauthorized_strategy = "succeed_without_response_header""#
        ),
        stage("open", "require_authorization = false"),
    )
}

#[test]
fn invalidation_by_authorized_and_unauthorized_callers() {
    let backend = numbered();
    let gw = Gateway::start(&config(&invalidation_api(backend.addr)));
    let refresh = [("Cache-Control", "max-age=0")];
    let authorized = [
        ("Cache-Control", "max-age=0"),
        ("Authorization", "Bearer tok"),
    ];
    let wrong = [
        ("cache-control", "no-transform, max-age=0"),
        ("authorization", "Bearer nope"),
    ];
    let mut n = 0;
    for stage in ["deny", "warn", "quiet", "open"] {
        let path = format!("/{stage}/x");
        let target = "/x";
        let r = fetch(&gw, &path, &[]);
        n += 1;
        assert_eq!(r.text(), format!("{n} {target}"), "{stage}: first fill");
        // An authorized caller refetches; everyone then gets the new entry.
        let r = fetch(&gw, &path, &authorized);
        n += 1;
        assert_eq!(r.header("x-cache"), Some("Miss"), "{stage}");
        assert_eq!(r.text(), format!("{n} {target}"), "{stage}: refetched");
        let r = fetch(&gw, &path, &[]);
        assert_eq!(
            (r.header("x-cache"), r.text()),
            (Some("Hit"), format!("{n} {target}"))
        );
        // Unauthorized callers, per strategy.
        for headers in [&refresh[..], &wrong[..]] {
            let r = fetch(&gw, &path, headers);
            match stage {
                "deny" => {
                    assert_eq!(r.status, 403, "{stage}");
                    assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
                    assert_eq!(r.header("content-type"), Some("application/json"));
                }
                "warn" => {
                    assert_eq!(r.header("x-cache"), Some("Hit"));
                    assert_eq!(r.text(), format!("{n} {target}"));
                    assert!(
                        r.header("warning").is_some_and(|w| w.starts_with("199 ")),
                        "{:?}",
                        r.headers
                    );
                }
                "quiet" => {
                    assert_eq!(r.header("x-cache"), Some("Hit"));
                    assert_eq!(r.text(), format!("{n} {target}"));
                    assert_eq!(r.header("warning"), None);
                }
                _ => {
                    // No authorization required: anyone refetches.
                    n += 1;
                    assert_eq!(r.header("x-cache"), Some("Miss"));
                    assert_eq!(r.text(), format!("{n} {target}"));
                }
            }
        }
        assert_eq!(calls(&backend), n, "{stage}");
    }
    let m = gw.metrics();
    assert!(
        m.contains(r#"tollgate_cache_requests_total{api="inv",stage="deny",result="forbidden"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"{api="inv",stage="open",result="invalidated"} 3"#),
        "{m}"
    );
}

#[test]
fn admin_flush_empties_the_stage_on_every_core() {
    let backend = numbered();
    let gw = Gateway::start_cores(
        &config_with(
            "",
            r#"token = "adm""#,
            &api(backend.addr, "ttl_s = 300", ""),
        ),
        Some(2),
    );
    for key in ["/prod/a", "/prod/b"] {
        assert_eq!(fetch(&gw, key, &[]).status, 200);
    }
    eventually("both entries on both cores", || {
        (metric(&gw, &format!("tollgate_cache_entries{STAGE}")) == 4).then_some(())
    });
    let calls_before = calls(&backend);
    let auth = [("Authorization", "Bearer adm")];
    assert_eq!(
        gw.admin_request("DELETE", "/cache/shop/prod", &[]).status,
        401
    );
    assert_eq!(
        gw.admin_request("DELETE", "/cache/shop/nope", &auth).status,
        404
    );
    assert_eq!(
        gw.admin_request("DELETE", "/cache/nope/prod", &auth).status,
        404
    );
    let r = gw.admin_request("DELETE", "/cache/shop/prod", &auth);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "flushed");
    // Answered once every core applied it.
    assert_eq!(metric(&gw, &format!("tollgate_cache_entries{STAGE}")), 0);
    for i in 0..10 {
        let r = fetch(&gw, "/prod/a", &[]);
        assert_ne!(
            r.text(),
            "1 /a",
            "request {i} after the flush: {}",
            r.text()
        );
    }
    assert!(calls(&backend) > calls_before);
}

#[test]
fn capacity_bounds_memory_and_old_entries_are_evicted() {
    const BODY: u64 = 64 * 1024;
    let backend = Backend::start(Reply::Stream(BODY));
    let gw = start(&backend, "capacity_mb = 1");
    let capacity = metric(&gw, &format!("tollgate_cache_capacity_bytes{STAGE}"));
    assert_eq!(capacity, 1024 * 1024);
    for i in 0..40 {
        let r = fetch(&gw, &format!("/prod/big{i}"), &[]);
        assert_eq!(r.body.len() as u64, BODY);
        assert!(pattern_matches(0, &r.body));
        let bytes = metric(&gw, &format!("tollgate_cache_bytes{STAGE}"));
        assert!(bytes <= capacity, "{bytes} bytes held, capacity {capacity}");
    }
    let entries = metric(&gw, &format!("tollgate_cache_entries{STAGE}"));
    assert!(
        (8..=16).contains(&entries),
        "{entries} entries of 64 KiB in 1 MiB"
    );
    assert!(metric(&gw, &format!("tollgate_cache_evictions_total{STAGE}")) >= 24);
    // The newest is still there; the oldest was evicted.
    assert_eq!(
        fetch(&gw, "/prod/big39", &[]).header("x-cache"),
        Some("Hit")
    );
    assert_eq!(
        fetch(&gw, "/prod/big0", &[]).header("x-cache"),
        Some("Miss")
    );
    assert_eq!(calls(&backend), 41);
}

#[test]
fn uncacheable_responses_are_relayed_and_not_stored() {
    let fixed = |status: u16, headers: &[(&str, &str)]| {
        Backend::start(Reply::Fixed {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: b"body".to_vec(),
        })
    };
    let backends = [
        ("cookie", fixed(200, &[("Set-Cookie", "s=1")])),
        ("nostore", fixed(200, &[("Cache-Control", "no-store")])),
        (
            "private",
            fixed(200, &[("cache-control", "max-age=60, private")]),
        ),
        ("missing", fixed(404, &[])),
        ("error", fixed(500, &[])),
    ];
    // Larger than a 1 MiB stage's per-entry maximum (1/8 of it): streamed, not stored.
    let big = Backend::start(Reply::Stream(300 * 1024));
    let mut routes = String::new();
    for (name, b) in backends.iter().map(|(n, b)| (*n, b)).chain([("big", &big)]) {
        routes.push_str(&format!(
            "[[api.route]]\nkey = \"GET /{name}\"\n\
             integration = {{ type = \"http_proxy\", uri = \"http://{}/\" }}\n",
            b.addr
        ));
    }
    let cfg = config(&format!(
        "[[api]]\nname = \"u\"\n{routes}[[api.stage]]\nname = \"s\"\n\
         cache = {{ enabled = true, capacity_mb = 1 }}\n"
    ));
    let gw = Gateway::start(&cfg);
    for (name, b) in &backends {
        for _ in 0..2 {
            let r = fetch(&gw, &format!("/s/{name}"), &[]);
            assert_eq!(r.header("x-cache"), Some("Miss"), "{name}");
            assert_eq!(r.text(), "body", "{name}");
        }
        assert_eq!(calls(b), 2, "{name} was not stored");
    }
    for _ in 0..2 {
        let r = fetch(&gw, "/s/big", &[]);
        assert_eq!(r.body.len(), 300 * 1024);
        assert!(pattern_matches(0, &r.body));
        assert_eq!(r.header("x-cache"), Some("Miss"));
    }
    assert_eq!(calls(&big), 2);
    assert!(
        gw.metrics()
            .contains(r#"tollgate_cache_entries{api="u",stage="s"} 0"#)
    );
}

#[test]
fn head_is_answered_from_get_entries() {
    let backend = numbered();
    let gw = start(&backend, "ttl_s = 300");
    // No entry: the HEAD goes to the backend as a HEAD and stores nothing.
    let r = head(&gw, "/prod/h");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("Miss")));
    assert_eq!(backend.requests()[0].method, "HEAD");
    assert_eq!(fetch(&gw, "/prod/h", &[]).text(), "2 /h");
    let r = head(&gw, "/prod/h");
    assert_eq!(r.header("x-cache"), Some("Hit"));
    assert_eq!(r.header("content-length"), Some("4"));
    assert!(r.body.is_empty());
    assert_eq!(calls(&backend), 2);
    // The connection goes on after a HEAD hit.
    let mut c = gw.client();
    c.send(&request("HEAD", "/prod/h", &[], b""));
    assert_eq!(c.read_head_response().header("x-cache"), Some("Hit"));
    assert_eq!(c.roundtrip(&get("/prod/h")).text(), "2 /h");
}

#[test]
fn http2_clients_fill_and_hit_the_same_cache() {
    let backend = numbered();
    let gw = start(&backend, "ttl_s = 300");
    let addr = gw.addr;
    let rs = tls_common::block_on(async move {
        let mut s = tls_common::h2c(addr).await;
        let mut out = Vec::new();
        for (method, path) in [
            ("GET", "/prod/two"),
            ("GET", "/prod/two"),
            ("HEAD", "/prod/two"),
        ] {
            let uri = format!("http://localhost{path}");
            out.push(
                tls_common::h2_request(&mut s, method, &uri, &[], b"")
                    .await
                    .unwrap(),
            );
        }
        out
    });
    assert_eq!(
        (rs[0].text(), rs[0].header("x-cache")),
        ("1 /two".into(), Some("Miss"))
    );
    assert_eq!(
        (rs[1].text(), rs[1].header("x-cache")),
        ("1 /two".into(), Some("Hit"))
    );
    assert_eq!(rs[1].header("content-type"), Some("text/plain"));
    assert_eq!(rs[1].header("content-length"), Some("6"));
    assert!(rs[1].header("age").is_some() && rs[1].header("date").is_some());
    assert_eq!((rs[2].status, rs[2].body.len()), (200, 0));
    assert_eq!(rs[2].header("x-cache"), Some("Hit"));
    // HTTP/1.1 clients hit what HTTP/2 filled.
    assert_eq!(fetch(&gw, "/prod/two", &[]).header("x-cache"), Some("Hit"));
    assert_eq!(calls(&backend), 1);
}

#[test]
fn http2_backends_fill_the_cache_too() {
    let backend = tls_common::h2_backend(None);
    let gw = Gateway::start(&config(&format!(
        r#"
[[api]]
name = "up"

[[api.route]]
key = "GET /{{proxy+}}"
integration = {{ type = "http_proxy", uri = "http://{backend}/{{proxy}}", upstream_protocol = "h2" }}

[[api.stage]]
name = "s"
cache = {{ enabled = true }}
"#
    )));
    // An HTTP/1.1 client: the miss streams from the HTTP/2 backend and fills.
    let miss = fetch(&gw, "/s/one", &[]);
    assert_eq!(miss.header("x-cache"), Some("Miss"), "{}", miss.text());
    assert_eq!(miss.text(), "h2 backend: GET /one proto=http body=0");
    let hit = fetch(&gw, "/s/one", &[]);
    assert_eq!(hit.header("x-cache"), Some("Hit"));
    assert_eq!(hit.text(), miss.text());
    // An HTTP/2 client, to an HTTP/2 backend.
    let addr = gw.addr;
    let rs = tls_common::block_on(async move {
        let mut s = tls_common::h2c(addr).await;
        let mut out = Vec::new();
        for _ in 0..2 {
            out.push(
                tls_common::h2_request(&mut s, "GET", "http://localhost/s/two", &[], b"")
                    .await
                    .unwrap(),
            );
        }
        out
    });
    assert_eq!(rs[0].header("x-cache"), Some("Miss"));
    assert_eq!(rs[1].header("x-cache"), Some("Hit"));
    assert_eq!(rs[1].text(), "h2 backend: GET /two proto=http body=0");
    assert_eq!(
        rs[1].header("content-length"),
        Some(rs[1].body.len().to_string().as_str())
    );
}
