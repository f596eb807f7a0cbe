//! `--cores 2`: many concurrent connections, all served (which core takes which is the kernel's
//! SO_REUSEPORT choice and is not asserted); each core thread pinned to a CPU of its own.

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

/// CPUs in a `Cpus_allowed_list` value such as `0-2,5`.
fn cpu_list(s: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().expect("cpu"), b.parse().expect("cpu"));
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().expect("cpu")),
        }
    }
    cpus
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} missing in:\n{status}"))
        .trim()
        .to_string()
}

#[test]
fn each_core_thread_is_pinned_to_its_own_cpu() {
    let own = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let allowed = cpu_list(&status_field(&own, "Cpus_allowed_list:"));
    if allowed.len() < 2 {
        eprintln!("skipped: this test process may run on one CPU only ({allowed:?})");
        return;
    }
    // At most 4 cores: thread names are cut at 15 bytes (`tollgate-core-9` is the longest kept).
    let cores = allowed.len().min(4);
    let gw = Gateway::start_cores(
        &config(
            "[[api]]\nname = \"pin\"\n[[api.route]]\nkey = \"GET /\"\nintegration = { type = \"mock\" }\n",
        ),
        Some(cores),
    );
    let mut pinned = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{}/task", gw.pid)).expect("read task dir");
    for task in tasks {
        let dir = task.expect("task entry").path();
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue; // a thread that ended meanwhile
        };
        let name = status_field(&status, "Name:");
        if name.starts_with("tollgate-core-") {
            let cpus = cpu_list(&status_field(&status, "Cpus_allowed_list:"));
            assert_eq!(cpus.len(), 1, "{name} may run on {cpus:?}, not one CPU");
            assert!(
                allowed.contains(&cpus[0]),
                "{name} on {cpus:?}, outside {allowed:?}"
            );
            pinned.push((name, cpus[0]));
        }
    }
    pinned.sort();
    assert_eq!(pinned.len(), cores, "core threads: {pinned:?}");
    let mut distinct: Vec<usize> = pinned.iter().map(|(_, cpu)| *cpu).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), cores, "two cores share a CPU: {pinned:?}");
}
