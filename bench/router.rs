//! `Router::find` at 10 and 10,000 routes, next to a naive linear scan over the same routes and
//! the router of a snapshot compiled from the equivalent config file; `Router::build` at 10,000
//! routes; and the whole config path at 10,000 routes (read the file, parse the TOML, validate,
//! compile). Run: `cargo bench --bench router` (`-- --quick` for one quick pass).
//!
//! Figures (`cargo bench --bench router -- --quick`, release profile, one run, criterion
//! medians; 2-core VM shared with other builds, load average 3-4 during the run, so absolute
//! numbers are inflated and noisy):
//!
//! | case          | trie, 10 | snapshot, 10 | naive, 10 | trie, 10k | snapshot, 10k | naive, 10k |
//! |---------------|----------|--------------|-----------|-----------|---------------|------------|
//! | literal hit   | 194 ns   | 255 ns       | 513 ns    | 253 ns    | 245 ns        | 419 µs     |
//! | param hit     | 207 ns   | 185 ns       | 681 ns    | 225 ns    | 282 ns        | 590 µs     |
//! | param/sub hit | 281 ns   | 268 ns       | 348 ns    | 254 ns    | 277 ns        | 640 µs     |
//! | greedy hit    | 216 ns   | 215 ns       | 812 ns    | 197 ns    | 174 ns        | 411 µs     |
//! | miss          | 127 ns   | 129 ns       | 383 ns    | 127 ns    | 123 ns        | 208 µs     |
//!
//! The trie does not grow with the table (differences between 10 and 10k are run-to-run noise of
//! the same size as between trie and snapshot, which are the same code); the scan grows
//! linearly. At 10,000 routes: `Router::build` 3.8 ms; `config::load` (read, TOML, validate)
//! 146 ms; load and `compile` 187 ms.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::config;
use tollgate::router::{ApiSpec, Method, Params, RouteKey, Router, Segment};

/// `count` route keys: `/v1/resource{i}/{id}` and `/v1/resource{i}/{id}/sub` pairs, plus a
/// literal health check and a few greedy file routes.
fn key_texts(count: usize) -> Vec<String> {
    let mut keys: Vec<String> = vec!["GET /v1/health".into(), "ANY /v1/files/{proxy+}".into()];
    keys.extend((0..3).map(|j| format!("GET /v1/blobs{j}/{{key+}}")));
    let mut i = 0;
    while keys.len() < count {
        keys.push(format!("GET /v1/resource{i}/{{id}}"));
        keys.push(format!("POST /v1/resource{i}/{{id}}/sub"));
        i += 1;
    }
    keys.truncate(count);
    keys
}

fn keys(count: usize) -> Vec<RouteKey> {
    key_texts(count)
        .iter()
        .map(|k| RouteKey::parse(k).expect("bench keys are valid"))
        .collect()
}

/// The same routes as a config file: GETs answer with a mock (a body template using the path
/// parameter), everything else proxies (a URI template), so validation and compilation see both
/// integrations.
fn config_text(count: usize) -> String {
    let mut text = String::from(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[api]]\nname = \"bench\"\nhost = \"api.example.com\"\n",
    );
    for key in key_texts(count) {
        let integration = if key.starts_with("GET /v1/resource") {
            r#"{ type = "mock", status = 200, headers = { "content-type" = "application/json" }, body = "{\"id\":\"${request.path.id}\"}" }"#
        } else if key.starts_with("POST") {
            r#"{ type = "http_proxy", uri = "http://127.0.0.1:9000/sub/{id}", timeout_ms = 5000 }"#
        } else {
            r#"{ type = "mock", body = "ok" }"#
        };
        text.push_str(&format!(
            "\n[[api.route]]\nkey = \"{key}\"\nintegration = {integration}\n"
        ));
    }
    text
}

/// `config_text(count)` written to a file (for `config::load`, which reads one).
fn config_file(count: usize) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "tollgate-bench-router-{}-{count}.toml",
        std::process::id()
    ));
    std::fs::write(&path, config_text(count)).expect("write bench config");
    path
}

/// Load (read, TOML, validate) and compile, as `serve` and a reload do.
fn snapshot(path: &std::path::Path) -> config::Snapshot {
    let cfg = config::load(path).expect("bench config is valid");
    config::compile(cfg, 1).expect("bench config compiles")
}

fn spec(count: usize) -> Vec<ApiSpec> {
    vec![ApiSpec {
        host: Some("api.example.com".into()),
        base_path: None,
        stages: vec!["$default".into()],
        routes: keys(count),
    }]
}

/// The requests: (name, method, path). The resource index is near the end of the 10k table.
fn requests(count: usize) -> [(&'static str, &'static str, String); 5] {
    let last = (count - 5) / 2 - 1; // the last complete GET/POST pair
    [
        ("literal", "GET", "/v1/health".into()),
        ("param", "GET", format!("/v1/resource{last}/12345")),
        ("param_sub", "POST", format!("/v1/resource{last}/12345/sub")),
        ("greedy", "GET", "/v1/files/a/b/c.txt".into()),
        ("miss", "GET", "/v2/nothing/here".into()),
    ]
}

/// What a simple gateway would do: check every route, keep the most specific that fits.
/// Allocation-free, so the comparison is about the algorithm, not the allocator.
struct Naive {
    routes: Vec<RouteKey>,
}

impl Naive {
    fn find(&self, method: &str, path: &str) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, key) in self.routes.iter().enumerate() {
            let RouteKey::Path {
                method: m,
                segments,
            } = key
            else {
                continue;
            };
            let method_rank = match (*m, method) {
                (Method::Any, _) => 2,
                (m, r) if m.as_str() == r => 0,
                (Method::Get, "HEAD") => 1,
                _ => continue,
            };
            if let Some(rank) = Self::rank(segments, path) {
                let rank = rank * 4 + method_rank;
                if best.is_none_or(|(b, _)| rank < b) {
                    best = Some((rank, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Base-3 digits of segment kinds (literal 0, param 1, greedy 2), most significant first.
    fn rank(segments: &[Segment], path: &str) -> Option<u64> {
        let rest = path.strip_prefix('/')?;
        let mut parts = rest.split('/').filter(|_| !rest.is_empty());
        let mut rank = 0u64;
        let mut offset = 1;
        for (depth, seg) in segments.iter().enumerate() {
            let digit = 3u64.pow(15 - depth as u32);
            match seg {
                Segment::Greedy(_) => return (offset < path.len()).then_some(rank + 2 * digit),
                Segment::Literal(l) => {
                    let part = parts.next()?;
                    if part != l {
                        return None;
                    }
                    offset += part.len() + 1;
                }
                Segment::Param(_) => {
                    let part = parts.next()?;
                    if part.is_empty() {
                        return None;
                    }
                    offset += part.len() + 1;
                    rank += digit;
                }
            }
        }
        parts.next().is_none().then_some(rank)
    }
}

fn find(c: &mut Criterion) {
    for count in [10, 10_000] {
        let specs = spec(count);
        let router = Router::build(&specs).expect("bench routes compile");
        let naive = Naive {
            routes: specs[0].routes.clone(),
        };
        // The router of a snapshot compiled from the config file, as the cores use it.
        let file = config_file(count);
        let snap = snapshot(&file);
        let _ = std::fs::remove_file(&file);
        let mut group = c.benchmark_group(format!("find_{count}"));
        for (name, method, path) in requests(count) {
            let mut params = Params::default();
            let want = router
                .find("API.example.com", method, &path, &mut params)
                .map(|m| m.route);
            assert_eq!(
                naive.find(method, &path),
                want,
                "{name}: naive and trie disagree"
            );
            assert_eq!(want.is_none(), name == "miss", "{name}");
            let from_file = snap
                .router
                .find("API.example.com", method, &path, &mut params)
                .map(|m| m.route);
            assert_eq!(from_file, want, "{name}: compiled config and trie disagree");
            group.bench_function(format!("snapshot/{name}"), |b| {
                b.iter(|| {
                    snap.router.find(
                        black_box("API.example.com"),
                        black_box(method),
                        black_box(&path),
                        &mut params,
                    )
                })
            });
            group.bench_function(format!("trie/{name}"), |b| {
                b.iter(|| {
                    router.find(
                        black_box("API.example.com"),
                        black_box(method),
                        black_box(&path),
                        &mut params,
                    )
                })
            });
            group.bench_function(format!("naive/{name}"), |b| {
                b.iter(|| naive.find(black_box(method), black_box(&path)))
            });
        }
        group.finish();
    }
}

fn build(c: &mut Criterion) {
    let specs = spec(10_000);
    c.bench_function("build_10000", |b| {
        b.iter(|| Router::build(black_box(&specs)))
    });
}

/// The whole start-up (and reload) path for 10,000 routes: read the file, parse the TOML,
/// validate, compile the snapshot (router included).
fn load(c: &mut Criterion) {
    let file = config_file(10_000);
    assert_eq!(
        snapshot(&file)
            .router
            .find(
                "api.example.com",
                "GET",
                "/v1/health",
                &mut Params::default()
            )
            .map(|m| m.route),
        Some(0)
    );
    let mut group = c.benchmark_group("config_10000");
    group.bench_function("load", |b| b.iter(|| config::load(black_box(&file))));
    group.bench_function("load_compile", |b| b.iter(|| snapshot(black_box(&file))));
    group.finish();
    let _ = std::fs::remove_file(&file);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = find, build, load }
criterion_main!(benches);
