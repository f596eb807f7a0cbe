//! The README's quickstart, served: `examples/quickstart.toml` (its listeners moved to port 0,
//! its backend to a refused port) answers exactly what the README shows.
//!
//! The expected response is read from README.md itself, so a change to either side that makes
//! them disagree fails here.

mod common;

use common::{Gateway, get, is_uuid_shape, refused_addr};

const QUICKSTART: &str = include_str!("../examples/quickstart.toml");
const README: &str = include_str!("../README.md");

/// The quickstart with its listeners on free ports and its backend at `backend`.
fn quickstart_on_free_ports(backend: &str) -> String {
    for addr in [
        "\"127.0.0.1:8080\"",
        "\"127.0.0.1:9901\"",
        "\"127.0.0.1:9000\"",
    ] {
        assert_eq!(
            QUICKSTART.matches(addr).count(),
            1,
            "examples/quickstart.toml should name {addr} once (this test rewrites it)"
        );
    }
    QUICKSTART
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9901\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9000\"", &format!("\"{backend}\""))
}

/// The response block the README shows after `curl -i http://127.0.0.1:8080/hello/world`:
/// (status line, header lines, body).
fn documented_response() -> (String, Vec<(String, String)>, String) {
    let lines: Vec<&str> = README.lines().collect();
    let curl = lines
        .iter()
        .position(|l| l.trim() == "curl -i http://127.0.0.1:8080/hello/world")
        .expect("README has the quickstart curl line");
    // The curl's own fence closes, the next fence opens the response.
    let open = curl + 2;
    assert_eq!(lines[curl + 1].trim(), "```", "curl block closes");
    assert_eq!(lines[open].trim(), "```", "response block opens");
    let close = open
        + 1
        + lines[open + 1..]
            .iter()
            .position(|l| l.trim() == "```")
            .expect("response block closes");
    let block = &lines[open + 1..close];
    let blank = block
        .iter()
        .position(|l| l.is_empty())
        .expect("a blank line between head and body");
    let headers = block[1..blank]
        .iter()
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a `name: value` header line");
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    (block[0].to_string(), headers, block[blank + 1..].join("\n"))
}

#[test]
fn quickstart_answers_what_the_readme_shows() {
    let gw = Gateway::start_cores(&quickstart_on_free_ports(&refused_addr().to_string()), None);
    let (status_line, headers, body) = documented_response();

    let r = gw.request(b"GET /hello/world HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n");
    assert_eq!(
        format!("{} {} {}", r.version, r.status, r.reason),
        status_line
    );
    assert_eq!(r.text(), body, "body");
    let got_names: Vec<String> = r
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    let want_names: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    assert_eq!(
        got_names, want_names,
        "header names, in order:\n{}",
        r.raw_head
    );
    for (name, value) in &headers {
        let got = r.header(name).unwrap_or_default();
        match name.as_str() {
            // Differ per request: check the shape only.
            "date" => assert!(
                got.len() == value.len() && got.ends_with(" GMT"),
                "date {got:?}"
            ),
            "x-request-id" => assert!(is_uuid_shape(got), "x-request-id {got:?}"),
            _ => assert_eq!(got, value, "{name}"),
        }
    }
    // The documented content-length is the documented body's.
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

#[test]
fn quickstart_unknown_path_is_404_and_dead_backend_is_502() {
    let gw = Gateway::start_cores(&quickstart_on_free_ports(&refused_addr().to_string()), None);
    let r = gw.request(&get("/nope"));
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), serde_json::json!({"message": "Not Found"}));

    let r = gw.request(&get("/orders/42"));
    assert_eq!(r.status, 502);
    assert_eq!(r.json(), serde_json::json!({"message": "Bad Gateway"}));

    // Admin: the README's /readyz answer.
    let r = gw.admin_request("GET", "/readyz", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"status": "ready"}));

    let metrics = gw.metrics();
    assert!(
        metrics.contains("tollgate_requests_total{") && metrics.contains("status=\"404\""),
        "{metrics}"
    );
}

#[test]
fn quickstart_proxy_route_reaches_the_backend() {
    let backend = common::Backend::start(common::Reply::ok("from backend"));
    let gw = Gateway::start_cores(&quickstart_on_free_ports(&backend.addr.to_string()), None);
    let r = gw.request(&get("/orders/42?x=1"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "from backend");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/orders/42?x=1");
}
