//! `--cores 2`: many concurrent connections, all served (which core takes which is the kernel's
//! SO_REUSEPORT choice and is not asserted).

mod common;

use common::{Backend, Client, Gateway, Reply, config, get};

#[test]
fn fifty_concurrent_connections_on_two_cores_are_all_served() {
    let backend = Backend::start(Reply::ok("proxied"));
    let gw = Gateway::start_cores(
        &config(&format!(
            r#"
[[api]]
name = "mc"

[[api.route]]
key = "GET /m/{{n}}"
integration = {{ type = "mock", body = "mock ${{request.path.n}}" }}

[[api.route]]
key = "GET /p/{{n}}"
integration = {{ type = "http_proxy", uri = "http://{}/{{n}}", timeout_ms = 10000 }}
"#,
            backend.addr
        )),
        Some(2),
    );
    // All 50 open at once, each with a request in flight before any answer is read.
    let mut clients: Vec<Client> = (0..50).map(|_| gw.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let path = if i % 2 == 0 {
            format!("/m/{i}")
        } else {
            format!("/p/{i}")
        };
        c.send(&get(&path));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response();
        assert_eq!(r.status, 200, "connection {i}: {}", r.text());
        let want = if i % 2 == 0 {
            format!("mock {i}")
        } else {
            "proxied".to_string()
        };
        assert_eq!(r.text(), want, "connection {i}");
    }
    // Every connection is still usable.
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.roundtrip(&get(&format!("/m/again{i}"))).text(),
            format!("mock again{i}")
        );
    }
    let mut targets: Vec<String> = backend.requests().into_iter().map(|s| s.target).collect();
    targets.sort();
    assert_eq!(targets.len(), 25);
    assert!(
        gw.stderr().contains("2 core(s)"),
        "not started on 2 cores: {}",
        gw.stderr()
    );
}
