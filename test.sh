#!/usr/bin/env bash
# Runs every test Tollgate has, on a fresh machine: installs what the tests need, checks format
# and lints, builds, runs unit, property and integration tests, then smoke-runs the load-test
# driver. `.ci/run` calls exactly this.
#
#   ./test.sh            everything
#   ./test.sh --quick    skip the load-test smoke run
set -euo pipefail
cd "$(dirname "$0")"

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

step() { printf '\n==> %s\n' "$*"; }

# wrk and nginx: the load-test smoke run (loadtest/run) compares against nginx with wrk.
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v taskset >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})) && ((quick == 0)); then
    step "installing ${need[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${need[@]}" >/dev/null; }
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo build --all-targets"
cargo build --all-targets --quiet

step "cargo test (unit, property, integration over real sockets)"
cargo test --quiet

step "fuzz targets compile (run them with cargo fuzz; see README)"
(cd fuzz && cargo check --quiet --bins)

step "tollgate validate examples/*.toml"
for f in examples/*.toml; do ./target/debug/tollgate validate "$f"; done

step "load client unit tests (loadtest/client, its own workspace)"
(cd loadtest/client && cargo test --quiet)

if ((quick == 0)); then
    step "load-test driver smoke run (mock, 1 round, 2 s; figures are not meaningful here)"
    loadtest/run --quick --no-install
fi

step "all tests passed"
