//! Routing over real sockets: hosts (exact, `*.suffix`, none), base paths, stages, parameters,
//! greedy parameters, `$default` routes, ANY, precedence, 404, mock templates, 10,000 routes.

mod common;

use common::{Gateway, config, get, request};

const APIS: &str = r#"
[[api]]
name = "exact"
host = "api.example.com"

[[api.route]]
key = "GET /who"
integration = { type = "mock", body = "exact" }

[[api]]
name = "wild"
host = "*.example.org"

[[api.route]]
key = "GET /who"
integration = { type = "mock", body = "wild" }

[[api]]
name = "v1"
base_path = "v1"

[[api.route]]
key = "GET /items/{id}"
integration = { type = "mock", headers = { "x-stage" = "${stageVariables.label}" }, body = "param ${request.path.id} ${stageVariables.label}" }

[[api.route]]
key = "GET /items/special"
integration = { type = "mock", body = "literal ${stageVariables.label}" }

[[api.route]]
key = "GET /items/{rest+}"
integration = { type = "mock", body = "greedy ${request.path.rest}" }

[[api.route]]
key = "GET /items/{id}/detail"
integration = { type = "mock", body = "detail ${request.path.id}" }

[[api.route]]
key = "ANY /any"
integration = { type = "mock", body = "any" }

[[api.route]]
key = "POST /any"
integration = { type = "mock", status = 201, body = "post beats any" }

[[api.route]]
key = "$default"
integration = { type = "mock", status = 418, body = "default route" }

[[api.stage]]
name = "$default"
variables = { label = "dflt" }

[[api.stage]]
name = "prod"
variables = { label = "production" }

[[api]]
name = "root"

[[api.route]]
key = "GET /who"
integration = { type = "mock", body = "root" }

[[api.route]]
key = "GET /json/{name}"
integration = { type = "mock", status = 202, headers = { "content-type" = "application/json" }, body = "{\"hello\":\"${request.path.name}\"}" }
"#;

fn start() -> Gateway {
    Gateway::start(&config(APIS))
}

fn text(gw: &Gateway, host: &str, path: &str) -> (u16, String) {
    let r = gw.request(&request("GET", path, &[("Host", host)], b""));
    (r.status, r.text())
}

#[test]
fn exact_host_matches_case_insensitively_and_without_port() {
    let gw = start();
    assert_eq!(text(&gw, "api.example.com", "/who"), (200, "exact".into()));
    assert_eq!(
        text(&gw, "API.Example.COM:8080", "/who"),
        (200, "exact".into())
    );
    assert_eq!(text(&gw, "other.example.com", "/who"), (200, "root".into()));
}

#[test]
fn wildcard_host_matches_subdomains_only() {
    let gw = start();
    assert_eq!(text(&gw, "a.example.org", "/who"), (200, "wild".into()));
    assert_eq!(text(&gw, "x.y.example.org", "/who"), (200, "wild".into()));
    assert_eq!(
        text(&gw, "example.org", "/who"),
        (200, "root".into()),
        "the bare suffix is not a subdomain"
    );
    assert_eq!(text(&gw, "notexample.org", "/who"), (200, "root".into()));
}

#[test]
fn base_path_and_stages() {
    let gw = start();
    let h = "h.test";
    assert_eq!(text(&gw, h, "/v1/items/42"), (200, "param 42 dflt".into()));
    assert_eq!(
        text(&gw, h, "/v1/prod/items/42"),
        (200, "param 42 production".into())
    );
    // Without the base path it is another API (root), which has no such route.
    assert_eq!(text(&gw, h, "/items/42").0, 404);
    // A base path is a whole segment.
    assert_eq!(text(&gw, h, "/v1x/items/42").0, 404);
}

#[test]
fn literal_beats_param_beats_greedy_with_backtracking() {
    let gw = start();
    let h = "h.test";
    assert_eq!(
        text(&gw, h, "/v1/items/special"),
        (200, "literal dflt".into())
    );
    assert_eq!(
        text(&gw, h, "/v1/prod/items/special"),
        (200, "literal production".into())
    );
    assert_eq!(
        text(&gw, h, "/v1/items/abc"),
        (200, "param abc dflt".into())
    );
    assert_eq!(
        text(&gw, h, "/v1/items/abc/detail"),
        (200, "detail abc".into())
    );
    assert_eq!(
        text(&gw, h, "/v1/items/a/b/c"),
        (200, "greedy a/b/c".into())
    );
    assert_eq!(
        text(&gw, h, "/v1/items/special/x"),
        (200, "greedy special/x".into())
    );
}

#[test]
fn any_matches_every_method_and_an_exact_method_wins() {
    let gw = start();
    for m in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = gw.request(&request(m, "/v1/any", &[], b""));
        assert_eq!((r.status, r.text()), (200, "any".to_string()), "{m}");
    }
    let r = gw.request(&request("POST", "/v1/any", &[], b"x"));
    assert_eq!((r.status, r.text()), (201, "post beats any".to_string()));
}

#[test]
fn default_route_catches_the_rest_of_its_api() {
    let gw = start();
    assert_eq!(
        text(&gw, "h", "/v1/nothing/here"),
        (418, "default route".into())
    );
    assert_eq!(text(&gw, "h", "/v1/prod"), (418, "default route".into()));
    let r = gw.request(&request("DELETE", "/v1/items/42", &[], b""));
    assert_eq!(
        (r.status, r.text()),
        (418, "default route".to_string()),
        "method mismatch falls to $default"
    );
}

#[test]
fn unmatched_is_404_json() {
    let gw = start();
    for path in ["/nothing", "/who/else", "/json"] {
        let r = gw.request(&get(path));
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.text(), r#"{"message":"Not Found"}"#);
    }
    // Method mismatch without a $default route.
    let r = gw.request(&request("POST", "/who", &[], b""));
    assert_eq!(r.status, 404);
}

#[test]
fn mock_templates_substitute_stage_variables_and_path_params() {
    let gw = start();
    let r = gw.request(&get("/v1/prod/items/7"));
    assert_eq!(r.header("x-stage"), Some("production"));
    let r = gw.request(&get("/v1/items/7"));
    assert_eq!(r.header("x-stage"), Some("dflt"));
    let r = gw.request(&get("/json/world"));
    assert_eq!(r.status, 202);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["hello"], "world");
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
}

#[test]
fn head_matches_a_get_route() {
    let gw = start();
    let mut c = gw.client();
    c.send(&request("HEAD", "/v1/items/5", &[], b""));
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some("12"),
        "len of \"param 5 dflt\""
    );
}

#[test]
fn ten_thousand_routes_load_and_serve() {
    let mut apis = String::from("[[api]]\nname = \"many\"\n");
    for i in 0..10_000 {
        apis.push_str(&format!(
            "\n[[api.route]]\nkey = \"GET /r{i}/x\"\nintegration = {{ type = \"mock\", body = \"r{i}\" }}\n"
        ));
    }
    let gw = Gateway::start(&config(&apis));
    let mut c = gw.client();
    for i in [0, 1, 4_999, 9_999] {
        let r = c.roundtrip(&get(&format!("/r{i}/x")));
        assert_eq!((r.status, r.text()), (200, format!("r{i}")));
    }
    assert_eq!(c.roundtrip(&get("/r10000/x")).status, 404);
}

#[test]
fn absolute_form_target_routes_by_its_authority() {
    let gw = start();
    let r = gw.request(b"GET http://api.example.com/who HTTP/1.1\r\nHost: other.test\r\n\r\n");
    assert_eq!((r.status, r.text()), (200, "exact".to_string()));
}

#[test]
fn unknown_methods_match_only_any_routes() {
    let gw = start();
    let r = gw.request(&request("PURGE", "/v1/any", &[], b""));
    assert_eq!((r.status, r.text()), (200, "any".to_string()));
    let r = gw.request(&request("PURGE", "/who", &[], b""));
    assert_eq!(r.status, 404);
}
