//! `Router::find` at 10 and 10,000 routes, next to a naive linear scan over the same routes, and
//! `Router::build` at 10,000 routes. Run: `cargo bench --bench router`.
//!
//! Figures (2-core VM shared with other builds, load average ~2.8 during the run, so absolute
//! numbers are inflated and noisy; release profile, one run, criterion medians):
//!
//! | case          | trie, 10 | naive, 10 | trie, 10k | naive, 10k |
//! |---------------|----------|-----------|-----------|------------|
//! | literal hit   | 138 ns   | 404 ns    | 155 ns    | 231 µs     |
//! | param hit     | 182 ns   | 475 ns    | 162 ns    | 332 µs     |
//! | param/sub hit | 266 ns   | 223 ns    | 126 ns    | 254 µs     |
//! | greedy hit    | 116 ns   | 338 ns    | 113 ns    | 205 µs     |
//! | miss          | 63 ns    | 231 ns    | 65 ns     | 117 µs     |
//!
//! The trie does not grow with the table; the scan grows linearly. `Router::build` with 10,000
//! routes: 2.4 ms.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::router::{ApiSpec, Method, Params, RouteKey, Router, Segment};

/// `count` routes: `/v1/resource{i}/{id}` and `/v1/resource{i}/{id}/sub` pairs, plus a literal
/// health check and a few greedy file routes.
fn keys(count: usize) -> Vec<RouteKey> {
    let mut keys: Vec<String> = vec!["GET /v1/health".into(), "ANY /v1/files/{proxy+}".into()];
    keys.extend((0..3).map(|j| format!("GET /v1/blobs{j}/{{key+}}")));
    let mut i = 0;
    while keys.len() < count {
        keys.push(format!("GET /v1/resource{i}/{{id}}"));
        keys.push(format!("POST /v1/resource{i}/{{id}}/sub"));
        i += 1;
    }
    keys.truncate(count);
    keys.iter()
        .map(|k| RouteKey::parse(k).expect("bench keys are valid"))
        .collect()
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

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = find, build }
criterion_main!(benches);
