#!/usr/bin/env bash
# Runs the Autobahn WebSocket fuzzingclient against a running server and prints a summary.
#
#   loadtest/autobahn/run.sh ws://127.0.0.1:9001 [CASES]
#
# CASES (optional, comma-separated, e.g. "1.*,5.*") overrides the cases in spec.json.
# Exit status: 0 when no case FAILED (UNIMPLEMENTED 12.*/13.* are expected: no permessage-deflate).
#
# Needs wstest (Python 2.7), installed once with:
#   pip install virtualenv==20.21.1
#   virtualenv -p ~/.pyenv/versions/2.7.18/bin/python /tmp/ab
#   /tmp/ab/bin/pip install autobahntestsuite
# WSTEST=/path/to/wstest overrides where it is looked for.
set -euo pipefail

url=${1:?usage: run.sh ws://HOST:PORT [CASES]}
cases=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
out=${AUTOBAHN_OUT:-$here/../out/autobahn}
wstest=${WSTEST:-$(command -v wstest || echo /tmp/ab/bin/wstest)}
[ -x "$wstest" ] || { echo "wstest not found (see the install steps at the top of $0)" >&2; exit 2; }

mkdir -p "$out"
spec="$out/spec.json"
python3 - "$here/spec.json" "$spec" "$url" "$out/reports" "$cases" <<'PY'
import json, sys
src, dst, url, outdir, cases = sys.argv[1:]
spec = json.load(open(src))
spec.pop("_comment", None)
spec["servers"][0]["url"] = url
spec["outdir"] = outdir
if cases:
    spec["cases"] = cases.split(",")
json.dump(spec, open(dst, "w"), indent=2)
PY

rm -rf "$out/reports"
(cd "$out" && "$wstest" -m fuzzingclient -s "$spec") > "$out/wstest.log" 2>&1 || {
  echo "wstest failed; see $out/wstest.log" >&2
  tail -20 "$out/wstest.log" >&2
  exit 2
}

python3 - "$out/reports/index.json" <<'PY'
import collections, json, sys
index = json.load(open(sys.argv[1]))
failed = []
for agent, results in index.items():
    counts = collections.Counter()
    for case, r in results.items():
        counts[r["behavior"]] += 1
        if r["behavior"] == "FAILED" or r.get("behaviorClose") == "FAILED":
            failed.append((case, r["behavior"], r.get("behaviorClose")))
    print(f"{agent}: {len(results)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
key = lambda c: [int(x) for x in c[0].split(".")]
for case, behavior, close in sorted(failed, key=key):
    print(f"  FAILED {case}: behavior {behavior}, close {close}")
print(f"FAILED: {len(failed)}")
sys.exit(1 if failed else 0)
PY
