#!/usr/bin/env bash
# Starts the units in this directory for real, under a real systemd, on a machine whose PID 1
# is not systemd: boots a throw-away container (systemd-nspawn) whose root is an overlay of the
# host's / (nothing is written to the host), with its own network namespace, installs the
# binary, config and units there, and checks what the unit promises:
#
#   1. `systemctl start` returns once READY=1 arrived; the gateway answers on port 80 as a
#      dynamic non-root user holding only CAP_NET_BIND_SERVICE, under the seccomp filter, with
#      io_uring working and each core pinned to a CPU.
#   2. `systemctl reload` applies a new file; with a broken file it fails and the old config
#      keeps serving.
#   3. A stuck core (debug hook) silences WATCHDOG=1: systemd aborts and restarts the service.
#   4. `systemctl stop` drains and the process exits 0.
#   5. Blue/green upgrade with tollgate@.service, admin listener on its fixed port as in
#      production: green starts beside blue on the same ports (same dynamic UID), blue stops; a
#      client loop sees no failed request, and green answers on the admin port afterwards.
#
#   systemd/boot-test.sh [path/to/tollgate]     (default target/debug/tollgate; run as root)
#
# Exit 0: all passed; 1: a check failed; 77: this machine cannot run it (not root, no
# systemd-nspawn, no overlayfs...).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/debug/tollgate}
skip() { echo "boot-test: SKIPPED: $*" >&2; exit 77; }
fail() { echo "boot-test: FAILED: $*" >&2; failed=1; }
pass() { echo "boot-test: ok: $*"; }

[[ $(id -u) -eq 0 ]] || skip "needs root"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn is not installed (package systemd-container)"
[[ -x $bin ]] || skip "no binary at $bin (cargo build first)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip "no overlayfs"

base=$(mktemp -d /tmp/tollgate-boot.XXXXXX)
root=$base/root
mkdir -p "$base/upper" "$base/work" "$root"
nspawn_pid=""
leader=""
cleanup() {
    local rc=$?
    if [[ $rc -ne 0 && $rc -ne 77 && -n $leader ]]; then
        nsenter -t "$leader" -a journalctl --no-pager -o short-precise -u 'tollgate*' | tail -40 >&2 || true
    fi
    if [[ -n $nspawn_pid ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null || true # nspawn: asks the guest to power off
        for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
    fi
    umount "$root" 2>/dev/null || true
    rm -rf "$base"
}
trap cleanup EXIT
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$root" \
    || skip "cannot mount an overlay of / (no CAP_SYS_ADMIN?)"

# The guest: the host's files, a machine id of its own, our binary, config and units.
systemd-id128 new >"$root/etc/machine-id"
install -m755 "$bin" "$root/usr/local/bin/tollgate"
install -d "$root/etc/tollgate"
install -m644 systemd/tollgate.service systemd/tollgate@.service "$root/etc/systemd/system/"
write_config() { # admin listen, extra admin lines, body
    cat >"$root/etc/tollgate/tollgate.toml" <<EOF
[server]
listen = ["127.0.0.1:80"]
shutdown_timeout_ms = 3000

[admin]
listen = "$1"
$2

[[api]]
name = "boot"

[[api.route]]
key = "GET /who"
integration = { type = "mock", body = "$3" }
EOF
}
write_config "127.0.0.1:9901" "" "one"

# Boot to basic.target only: none of the host's own services (nginx, databases...) start.
systemd-nspawn -q -D "$root" -M "tollgate-boot-$$" --boot --private-network --register=no \
    --keep-unit --link-journal=no --console=pipe -- --unit=basic.target \
    >"$base/console.log" 2>&1 &
nspawn_pid=$!
for _ in $(seq 100); do
    leader=$(pgrep -P "$nspawn_pid" -x systemd || true)
    [[ -n $leader ]] && break
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$base/console.log" >&2; skip "nspawn exited"; }
    sleep 0.1
done
[[ -n $leader ]] || skip "the guest systemd did not start"
guest() { nsenter -t "$leader" -a "$@"; }
for _ in $(seq 100); do
    state=$(guest systemctl is-system-running 2>/dev/null || true)
    [[ $state == running || $state == degraded ]] && break
    sleep 0.1
done
echo "boot-test: guest systemd $(guest systemctl --version | head -1 | cut -d' ' -f2) is $state"
failed=0
show() { guest systemctl show "$1" -p "$2" --value; }
who() { guest curl -s --max-time 5 http://127.0.0.1/who || true; }

# 1. Start.
guest systemctl start tollgate.service || fail "systemctl start tollgate"
pid=$(show tollgate MainPID)
[[ $(who) == one ]] && pass "serves on port 80" || fail "no answer on port 80"
[[ $(show tollgate StatusText) == *"core(s)"* ]] && pass "STATUS= reaches systemctl status" \
    || fail "StatusText: $(show tollgate StatusText)"
st=$(guest cat "/proc/$pid/status" 2>/dev/null || true)
uid=$(awk '/^Uid:/ {print $3}' <<<"$st")
[[ $uid -ne 0 ]] && pass "runs as dynamic uid $uid" || fail "runs as root"
[[ $(awk '/^CapEff:/ {print $2}' <<<"$st") == 0000000000000400 ]] \
    && pass "only CAP_NET_BIND_SERVICE" || fail "capabilities: $(grep ^Cap <<<"$st")"
[[ $(awk '/^Seccomp:/ {print $2}' <<<"$st") == 2 && $(awk '/^NoNewPrivs:/ {print $2}' <<<"$st") == 1 ]] \
    && pass "seccomp filter and no_new_privs on (io_uring works under them)" || fail "no seccomp"
core0=$(guest sh -c "for t in /proc/$pid/task/*; do [ \"\$(cat \$t/comm)\" = tollgate-core-0 ] && grep Cpus_allowed_list \$t/status; done; true" | awk '{print $2}')
if [[ $(nproc) -gt 1 ]]; then
    [[ $core0 =~ ^[0-9]+$ ]] && pass "core 0 pinned to CPU $core0" || fail "core 0 not pinned: $core0"
fi

# 2. Reload, then a broken file.
write_config "127.0.0.1:9901" "" "two"
guest systemctl reload tollgate && [[ $(who) == two ]] && pass "systemctl reload applies the file" \
    || fail "reload did not apply"
echo "[server" >"$root/etc/tollgate/tollgate.toml"
if guest systemctl reload tollgate 2>/dev/null; then fail "reload of a broken file succeeded"; fi
[[ $(show tollgate ActiveState) == active && $(who) == two ]] \
    && pass "a broken file fails the reload; the old config keeps serving" || fail "broken reload"

# 3. Watchdog: a 2 s watchdog (drop-in), core 0 blocked for 8 s.
install -d "$root/etc/systemd/system/tollgate.service.d"
printf '[Service]\nWatchdogSec=2s\n' >"$root/etc/systemd/system/tollgate.service.d/watchdog.conf"
write_config "127.0.0.1:9901" "debug_endpoints = true" "three"
guest systemctl daemon-reload
guest systemctl restart tollgate
old=$(show tollgate MainPID)
guest curl -s -X POST "http://127.0.0.1:9901/debug/stall?core=0&ms=8000" >/dev/null || true
for _ in $(seq 100); do
    [[ $(show tollgate NRestarts) -ge 1 && $(show tollgate ActiveState) == active ]] && break
    sleep 0.1
done
if guest journalctl -u tollgate -o cat | grep -q "Watchdog timeout" \
    && [[ $(show tollgate MainPID) != "$old" && $(who) == three ]]; then
    pass "a stuck core stops WATCHDOG=1: systemd aborted and restarted the service"
else
    fail "no watchdog restart"
fi
rm -r "$root/etc/systemd/system/tollgate.service.d"
guest systemctl daemon-reload

# 4. Stop: drain, exit 0.
guest systemctl stop tollgate
[[ $(show tollgate Result) == success && $(show tollgate ExecMainStatus) == 0 ]] \
    && pass "systemctl stop: drained, exit 0" || fail "stop: $(show tollgate Result)"

# 5. Blue/green, with the admin listener on 9901: both ports are SO_REUSEPORT, so green binds
# them while blue still holds them.
write_config "127.0.0.1:9901" "" "blue"
nsenter -t "$leader" -n sysctl -q -w net.ipv4.tcp_migrate_req=1 || true
guest systemctl start tollgate@blue
cat >"$base/loop.sh" <<'EOF'
ok=0; bad=0
while [ ! -e "$1" ]; do
  c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1/who) || true
  if [ "$c" = 200 ]; then ok=$((ok+1)); else bad=$((bad+1)); fi
done
echo "$ok $bad"
EOF
loops=()
for i in 1 2; do
    nsenter -t "$leader" -n bash "$base/loop.sh" "$base/stop" >"$base/loop$i" &
    loops+=($!)
done
sleep 1
write_config "127.0.0.1:9901" "" "green"
guest systemctl start tollgate@green || fail "green did not start beside blue"
[[ $(guest ps -o uid= -p "$(show tollgate@blue MainPID)") == $(guest ps -o uid= -p "$(show tollgate@green MainPID)") ]] \
    || fail "blue and green run as different users (SO_REUSEPORT needs one uid)"
sleep 0.5
guest systemctl stop tollgate@blue
sleep 1
touch "$base/stop"
wait "${loops[@]}" || true
read -r ok1 bad1 <"$base/loop1"
read -r ok2 bad2 <"$base/loop2"
[[ $((bad1 + bad2)) -eq 0 && $((ok1 + ok2)) -gt 0 && $(who) == green ]] \
    && pass "blue/green: $((ok1 + ok2)) requests, none failed" \
    || fail "blue/green: $((ok1 + ok2)) ok, $((bad1 + bad2)) failed"
[[ $(show tollgate@blue Result) == success ]] || fail "blue did not exit cleanly"
[[ $(guest curl -s --max-time 5 http://127.0.0.1:9901/healthz || true) == *'"ok"'* ]] \
    && pass "green serves the admin port after blue left" || fail "no admin answer from green"
guest systemctl stop tollgate@green

((failed == 0)) || exit 1
echo "boot-test: all passed"
