//! `x-request-id`: generated (UUID shape, unique) when absent or malformed; a well-formed incoming
//! one (`[A-Za-z0-9._:-]{1,128}`) is kept and forwarded to the backend.

mod common;

use std::collections::HashSet;

use common::{Backend, Gateway, Reply, config, get, is_uuid_shape, request};

fn start(backend: &Backend) -> Gateway {
    Gateway::start(&config(&format!(
        r#"
[[api]]
name = "ids"

[[api.route]]
key = "GET /m"
integration = {{ type = "mock", body = "m" }}

[[api.route]]
key = "ANY /p/{{proxy+}}"
integration = {{ type = "http_proxy", uri = "http://{}/{{proxy}}", timeout_ms = 10000 }}
"#,
        backend.addr
    )))
}

fn with_id(path: &str, id: &str) -> Vec<u8> {
    request("GET", path, &[("X-Request-Id", id)], b"")
}

#[test]
fn generated_ids_are_uuid_shaped_and_unique() {
    let backend = Backend::start(Reply::ok("p"));
    let gw = start(&backend);
    let mut ids = HashSet::new();
    let mut c = gw.client();
    for i in 0..100 {
        // Mock, proxy, 404 and a fresh connection now and then: every path makes an id.
        let r = match i % 4 {
            0 => c.roundtrip(&get("/m")),
            1 => c.roundtrip(&get("/p/x")),
            2 => c.roundtrip(&get("/nope")),
            _ => gw.request(&get("/m")),
        };
        assert_eq!(r.header_count("x-request-id"), 1, "{:?}", r.raw_head);
        let id = r.header("x-request-id").unwrap_or_default().to_string();
        assert!(is_uuid_shape(&id), "not a UUID: {id:?}");
        assert!(ids.insert(id.clone()), "duplicate id {id}");
    }
    // The proxied requests carried their id to the backend.
    for s in backend.requests() {
        let id = s.header("x-request-id").unwrap_or_default();
        assert!(
            ids.contains(id),
            "backend got an id the client never saw: {id:?}"
        );
    }
}

#[test]
fn well_formed_incoming_id_is_kept_and_forwarded() {
    let backend = Backend::start(Reply::Fixed {
        status: 200,
        headers: vec![("X-Request-Id".into(), "from-the-backend".into())],
        body: b"p".to_vec(),
    });
    let gw = start(&backend);
    let id = "Abc-123._:xyz";
    let r = gw.request(&with_id("/m", id));
    assert_eq!(r.header("x-request-id"), Some(id));

    let r = gw.request(&with_id("/p/x", id));
    assert_eq!(r.status, 200);
    assert_eq!(r.header_count("x-request-id"), 1, "{:?}", r.raw_head);
    assert_eq!(
        r.header("x-request-id"),
        Some(id),
        "the gateway's id, not the backend's"
    );
    let s = &backend.requests()[0];
    assert_eq!(s.header("x-request-id"), Some(id));
    assert_eq!(
        s.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-request-id"))
            .count(),
        1
    );

    let longest = "a".repeat(128);
    assert_eq!(
        gw.request(&with_id("/m", &longest)).header("x-request-id"),
        Some(longest.as_str())
    );
}

#[test]
fn malformed_incoming_id_is_replaced() {
    let backend = Backend::start(Reply::ok("p"));
    let gw = start(&backend);
    let too_long = "a".repeat(129);
    for bad in [
        "has space",
        "semi;colon",
        "quote\"d",
        "slash/ed",
        "é",
        too_long.as_str(),
    ] {
        let r = gw.request(&with_id("/m", bad));
        assert_eq!(r.status, 200, "{bad:?}");
        let got = r.header("x-request-id").unwrap_or_default();
        assert!(is_uuid_shape(got), "{bad:?} was answered with id {got:?}");
    }
    let r = gw.request(&with_id("/p/x", "bad id"));
    let got = r.header("x-request-id").unwrap_or_default().to_string();
    assert!(is_uuid_shape(&got));
    assert_eq!(
        backend.requests()[0].header("x-request-id"),
        Some(got.as_str())
    );
}
