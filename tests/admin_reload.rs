//! The admin listener (health, readiness, metrics, reload, token) and config reloads by admin and
//! SIGHUP, including reloads under continuous keep-alive load.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    Backend, BackendSpec, Gateway, Reply, config, config_with, eventually, get, refused_addr,
};

/// One API: a mock `GET /m`, a route only this generation has (`GET /gen{generation}`), a
/// `/version` mock saying the generation, and proxy routes to `fast` and `slow`.
fn generation_config(generation: u32, fast: SocketAddr, slow: SocketAddr) -> String {
    config(&format!(
        r#"
[[api]]
name = "adm"

[[api.route]]
key = "GET /m"
integration = {{ type = "mock", body = "m" }}

[[api.route]]
key = "GET /gen{generation}"
integration = {{ type = "mock", body = "gen {generation}" }}

[[api.route]]
key = "GET /version"
integration = {{ type = "mock", body = "v{generation}" }}

[[api.route]]
key = "ANY /p/{{proxy+}}"
integration = {{ type = "http_proxy", uri = "http://{fast}/{{proxy}}", timeout_ms = 10000 }}

[[api.route]]
key = "ANY /slow/{{proxy+}}"
integration = {{ type = "http_proxy", uri = "http://{slow}/{{proxy}}", timeout_ms = 10000 }}

# Reload tests drive more than the account default (10,000 rps); throttling is tested apart.
[account.throttle]
rate = 1000000000
burst = 1000000000
"#
    ))
}

fn simple(generation: u32) -> String {
    generation_config(generation, refused_addr(), refused_addr())
}

#[test]
fn healthz_and_readyz() {
    let gw = Gateway::start(&simple(1));
    let r = gw.admin_request("GET", "/healthz", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let r = gw.admin_request("GET", "/readyz", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ready");
    assert_eq!(gw.admin_request("GET", "/nope", &[]).status, 404);
}

#[test]
fn metrics_count_requests_by_api_stage_route_and_status() {
    let gw = Gateway::start(&simple(1));
    let mut c = gw.client();
    for _ in 0..3 {
        assert_eq!(c.roundtrip(&get("/m")).status, 200);
    }
    assert_eq!(c.roundtrip(&get("/nope")).status, 404);
    assert_eq!(c.roundtrip(&get("/nope")).status, 404);
    assert_eq!(c.roundtrip(&get("/p/x")).status, 502);

    let m200 =
        r#"tollgate_requests_total{api="adm",stage="$default",route="GET /m",status="200"} 3"#;
    let p502 = r#"tollgate_requests_total{api="adm",stage="$default",route="ANY /p/{proxy+}",status="502"} 1"#;
    let text = eventually("request counters in /metrics", || {
        let t = gw.metrics();
        (t.lines().any(|l| l == m200) && t.lines().any(|l| l == p502)).then_some(t)
    });
    let not_found: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tollgate_requests_total{") && l.contains(r#"status="404""#))
        .collect();
    assert_eq!(not_found.len(), 1, "{text}");
    assert!(not_found[0].ends_with("} 2"), "{text}");
    assert!(
        text.contains("# TYPE tollgate_request_duration_seconds histogram"),
        "{text}"
    );
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_request_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no histogram count in {text}"));
    assert!(count >= 6, "histogram counted {count} of 6 requests");
    let inf = format!("tollgate_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
    assert!(text.lines().any(|l| l == inf), "{text}");
}

#[test]
fn admin_reload_swaps_routes() {
    let gw = Gateway::start(&simple(1));
    assert_eq!(gw.request(&get("/gen1")).status, 200);
    assert_eq!(gw.request(&get("/gen2")).status, 404);
    gw.rewrite_config(&simple(2));
    let r = gw.reload();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "reloaded");
    assert_eq!(r.json()["generation"], 2);
    assert_eq!(gw.request(&get("/gen2")).text(), "gen 2");
    assert_eq!(gw.request(&get("/gen1")).status, 404);
}

#[test]
fn admin_reload_of_an_invalid_file_is_400_and_the_old_config_keeps_serving() {
    let gw = Gateway::start(&simple(1));
    // Line 5 of this file is the bad one.
    let bad =
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\nbogus_key = 1\n";
    gw.rewrite_config(bad);
    let r = gw.reload();
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    assert!(body["message"].is_string());
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {body}"));
    assert!(!errors.is_empty());
    let path = gw.config_path.display().to_string();
    assert!(
        errors.iter().any(|e| e
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("{path}:5:")))),
        "no error located at {path}:5: {errors:?}"
    );
    assert_eq!(
        gw.request(&get("/gen1")).text(),
        "gen 1",
        "the old config keeps serving"
    );

    // A semantic error (not TOML syntax) is refused the same way.
    let mut semantic = simple(2);
    semantic.push_str("\n[[api]]\nname = \"bad name!\"\n");
    gw.rewrite_config(&semantic);
    assert_eq!(gw.reload().status, 400);
    assert_eq!(gw.request(&get("/gen1")).status, 200);

    gw.rewrite_config(&simple(2));
    let r = gw.reload();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["generation"],
        2,
        "refused reloads do not use up generations"
    );
}

#[test]
fn reload_needs_the_token_when_one_is_set() {
    let apis = "[[api]]\nname = \"t\"\n[[api.route]]\nkey = \"GET /m\"\nintegration = { type = \"mock\", body = \"m\" }\n";
    let gw = Gateway::start(&config_with("", "token = \"s3cret\"", apis));
    assert_eq!(gw.reload().status, 401);
    assert_eq!(
        gw.admin_request("POST", "/reload", &[("Authorization", "Bearer nope")])
            .status,
        401
    );
    assert_eq!(
        gw.admin_request("POST", "/reload", &[("Authorization", "s3cret")])
            .status,
        401
    );
    let r = gw.admin_request("POST", "/reload", &[("Authorization", "Bearer s3cret")]);
    assert_eq!(r.status, 200, "{}", r.text());
    // Reads stay open.
    assert_eq!(gw.admin_request("GET", "/metrics", &[]).status, 200);
    assert_eq!(gw.admin_request("GET", "/healthz", &[]).status, 200);
}

#[test]
fn sighup_reloads_and_an_invalid_file_keeps_the_old_config() {
    let gw = Gateway::start(&simple(1));
    gw.rewrite_config(&simple(2));
    gw.sighup();
    eventually("SIGHUP reload to serve /gen2", || {
        (gw.request(&get("/gen2")).status == 200).then_some(())
    });
    assert_eq!(gw.request(&get("/gen1")).status, 404);

    gw.rewrite_config("[server]\nthis is not toml\n");
    gw.sighup();
    eventually("the refused SIGHUP reload to be logged", || {
        gw.stderr().contains("refused").then_some(())
    });
    assert_eq!(gw.request(&get("/gen2")).text(), "gen 2");

    gw.rewrite_config(&simple(3));
    gw.sighup();
    eventually("SIGHUP reload to serve /gen3", || {
        (gw.request(&get("/gen3")).status == 200).then_some(())
    });
}

#[test]
fn reload_under_load_drops_nothing() {
    let fast = Backend::start(Reply::ok("fast"));
    let slow = Backend::start_spec(BackendSpec {
        delay: Duration::from_millis(300),
        ..BackendSpec::new(Reply::ok("slow"))
    });
    let cfg = |g: u32| generation_config(g, fast.addr, slow.addr);
    let gw = Arc::new(Gateway::start_cores(&cfg(0), Some(2)));
    let stop = Arc::new(AtomicBool::new(false));

    // Four keep-alive clients, one connection each for the whole test.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (gw, stop) = (gw.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = gw.client();
                let paths = ["/m", "/p/a", "/version", "/p/b"];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let path = paths[(n as usize + w) % paths.len()];
                    c.send(&get(path));
                    let r = c
                        .try_read_response(false)
                        .unwrap_or_else(|e| panic!("worker {w}, request {n} ({path}): {e:?}"));
                    assert_eq!(
                        r.status,
                        200,
                        "worker {w}, request {n} ({path}): {}",
                        r.text()
                    );
                    assert!(
                        !r.says_close(),
                        "worker {w}: the gateway closed a keep-alive connection"
                    );
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Slow proxied requests, always one in flight.
    let slow_client = {
        let (gw, stop) = (gw.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = gw.client();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.send(&get("/slow/x"));
                let r = c
                    .try_read_response(false)
                    .unwrap_or_else(|e| panic!("slow request {n}: {e:?}"));
                assert_eq!(
                    (r.status, r.text()),
                    (200, "slow".to_string()),
                    "slow request {n}"
                );
                n += 1;
            }
            n
        })
    };

    for generation in 1..=10u32 {
        std::thread::sleep(Duration::from_millis(150));
        gw.rewrite_config(&cfg(generation));
        if generation % 2 == 1 {
            let r = gw.reload();
            assert_eq!(r.status, 200, "reload {generation}: {}", r.text());
            assert_eq!(r.json()["generation"], generation + 1);
            // A 200 means every core serves it: no waiting.
            assert_eq!(gw.request(&get(&format!("/gen{generation}"))).status, 200);
        } else {
            gw.sighup();
            // SIGHUP has no answer, and cores swap at their own tick: poll both checks.
            let want = format!("v{generation}");
            let new_route = format!("/gen{generation}");
            eventually(&format!("SIGHUP reload {generation}"), || {
                let version = gw.request(&get("/version")).text();
                let route = gw.request(&get(&new_route)).status;
                (version == want && route == 200).then_some(())
            });
        }
    }
    stop.store(true, Ordering::Relaxed);

    let mut counts = Vec::new();
    for (i, w) in workers.into_iter().enumerate() {
        let n = w.join().unwrap_or_else(|_| panic!("worker {i} failed"));
        assert!(n > 0, "worker {i} made no request");
        counts.push(n);
    }
    eprintln!(
        "reload under load: {total} keep-alive requests by 4 clients",
        total = counts.iter().sum::<u64>()
    );
    let slow_done = slow_client
        .join()
        .unwrap_or_else(|_| panic!("slow client failed"));
    assert!(slow_done >= 2, "only {slow_done} slow requests completed");
}

#[test]
fn in_flight_request_completes_when_a_reload_removes_its_route() {
    let fast = Backend::start(Reply::ok("fast"));
    let slow = Backend::start_spec(BackendSpec {
        delay: Duration::from_millis(500),
        ..BackendSpec::new(Reply::ok("slow"))
    });
    let gw = Gateway::start(&generation_config(1, fast.addr, slow.addr));
    let mut c = gw.client();
    c.send(&get("/slow/x"));
    eventually("the slow request to reach the backend", || {
        (!slow.requests().is_empty()).then_some(())
    });

    // The new config has no /slow route at all.
    let without_slow = simple(2).replace("ANY /slow/", "ANY /gone/");
    gw.rewrite_config(&without_slow);
    let r = gw.reload();
    assert_eq!(r.status, 200, "{}", r.text());

    let r = c.read_response();
    assert_eq!(
        (r.status, r.text()),
        (200, "slow".to_string()),
        "the in-flight request was cut"
    );
    assert!(!r.says_close());
    // The same connection now sees the new config.
    assert_eq!(c.roundtrip(&get("/slow/x")).status, 404);
    assert_eq!(c.roundtrip(&get("/gen2")).status, 200);
}

#[test]
fn reload_applies_new_server_limits() {
    let apis = "[[api]]\nname = \"l\"\n[[api.route]]\nkey = \"GET /m\"\nintegration = { type = \"mock\", body = \"m\" }\n";
    let gw = Gateway::start(&config_with("", "", apis));
    let req = format!(
        "GET /m HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(3000)
    );
    assert_eq!(gw.request(req.as_bytes()).status, 200);
    gw.rewrite_config(&config_with("header_bytes_max = 2048", "", apis));
    assert_eq!(gw.reload().status, 200);
    assert_eq!(gw.request(req.as_bytes()).status, 431);
}

#[test]
fn reload_refuses_changes_that_need_a_restart() {
    let gw = Gateway::start(&simple(1));
    let moved = simple(2).replacen(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:1\"]",
        1,
    );
    gw.rewrite_config(&moved);
    let r = gw.reload();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("server.listen"), "{}", r.text());
    assert_eq!(gw.request(&get("/gen1")).status, 200);
    assert_eq!(gw.request(&get("/gen2")).status, 404);
}
