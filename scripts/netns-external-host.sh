#!/usr/bin/env bash
# --external-host across network namespaces: two `kallad executor`s, each in its own network
# namespace on a private bridge, reachable only at the address they advertise; the scheduler in
# the host namespace runs a job across them in cluster mode and the result is checked against
# the same job run locally (`kallad run`).
#
# Needs root and `ip` (iproute2). When the machine does not allow network namespaces, the script
# says so on its last line ("SKIPPED: ...") and exits 0; any other failure exits non-zero.
# Usage: scripts/netns-external-host.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kalla-target}"

skip() { echo "SKIPPED: --external-host network-namespace test not run: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (creates network namespaces)"
command -v ip >/dev/null || skip "the ip command (iproute2) is missing"

tag="k$$"
ns1="${tag}a"; ns2="${tag}b"; bridge="${tag}br"
if ! ip netns add "$ns1" 2>/dev/null; then skip "ip netns add failed (no permission for network namespaces here)"; fi
ip netns del "$ns1"

# A private /24 no route of this machine uses.
subnet=""
for n in $(seq 203 250); do
  if ! ip -4 route | grep -q "^10\.$n\.0\."; then subnet="10.$n.0"; break; fi
done
[ -n "$subnet" ] || skip "no free private 10.x.0.0/24 subnet"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
  ip netns del "$ns1" 2>/dev/null || true
  ip netns del "$ns2" 2>/dev/null || true
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --locked -p kallad
bin="$CARGO_TARGET_DIR/debug/kallad"

# The bridge in the host namespace carries $subnet.1 (the scheduler); each executor namespace
# gets one end of a veth pair on the bridge with its own address and nothing else but loopback.
ip link add "$bridge" type bridge
ip addr add "$subnet.1/24" dev "$bridge"
ip link set "$bridge" up
i=2
for ns in "$ns1" "$ns2"; do
  ip netns add "$ns"
  ip link add "${ns}h" type veth peer name "${ns}n"
  ip link set "${ns}h" master "$bridge" up
  ip link set "${ns}n" netns "$ns"
  ip -n "$ns" addr add "$subnet.$i/24" dev "${ns}n"
  ip -n "$ns" link set "${ns}n" up
  ip -n "$ns" link set lo up
  i=$((i + 1))
done

out="$work/runs"; mkdir -p "$out"
token="netns-test-token"
KALLA_LOG_FORMAT=json "$bin" scheduler --bind-host 0.0.0.0 --external-host "$subnet.1" --api-token "$token" \
  --http-port 0 --grpc-port 0 \
  --mode cluster --partitions 4 --cluster-wait 30s --data-dir examples/data --output-dir "$out" \
  2>"$work/scheduler.log" &
pids+=($!)
field() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    try: v = json.loads(l).get("fields", {}).get(sys.argv[2])
    except ValueError: continue
    if v: print(v); break' "$1" "$2"; }
http="" grpc=""
for _ in $(seq 1 200); do
  http="$(field "$work/scheduler.log" addr)"; grpc="$(field "$work/scheduler.log" grpc_addr)"
  [ -n "$http" ] && [ -n "$grpc" ] && break
  sleep 0.1
done
[ -n "$http" ] && [ -n "$grpc" ] || { cat "$work/scheduler.log" >&2; echo "FAILED: the scheduler did not start" >&2; exit 1; }
http_port="${http##*:}"; grpc_port="${grpc##*:}"

i=2
for ns in "$ns1" "$ns2"; do
  # Bound to every address of its namespace, advertised at the only one the others can reach.
  ip netns exec "$ns" "$bin" executor --scheduler-host "$subnet.1" --scheduler-port "$grpc_port" \
    --bind-host 0.0.0.0 --external-host "$subnet.$i" --flight-port 50051 --grpc-port 50052 \
    --concurrent-tasks 2 --work-dir "$work/work-$ns" 2>"$work/executor-$ns.log" &
  pids+=($!)
  i=$((i + 1))
done

api() { curl -sS -H "Authorization: Bearer $token" "$@"; }
for _ in $(seq 1 300); do
  n="$(api "http://127.0.0.1:$http_port/api/cluster" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["executors"]))')"
  [ "$n" = 2 ] && break
  sleep 0.1
done
[ "$n" = 2 ] || { echo "FAILED: the executors did not register" >&2; tail -20 "$work"/executor-*.log >&2; exit 1; }
api "http://127.0.0.1:$http_port/api/cluster" | python3 -c '
import json, sys
hosts = sorted(e["host"] for e in json.load(sys.stdin)["executors"])
print("executors advertise", hosts)
assert hosts == sorted(sys.argv[1:]), hosts' "$subnet.2" "$subnet.3"

run_id="$(python3 -c 'import uuid; print(uuid.uuid4())')"
job="$(python3 -c 'import json,sys; j = json.load(open("examples/invoices-payments.json")); j["run_id"] = sys.argv[1]; j["output_path"] = "netns/" + sys.argv[1]; print(json.dumps(j))' "$run_id")"
api -X POST "http://127.0.0.1:$http_port/api/jobs" -H 'content-type: application/json' --data "$job" >/dev/null
status=""
for _ in $(seq 1 600); do
  status="$(api "http://127.0.0.1:$http_port/api/jobs/$run_id")"
  case "$status" in *'"status":"succeeded"'*|*'"status":"failed"'*|*'"status":"cancelled"'*) break ;; esac
  sleep 0.1
done

case "$status" in *'"status":"succeeded"'*) ;; *)
  echo "FAILED: the cluster job did not succeed: $status" >&2
  for f in "$work"/executor-*.log; do echo "== $f" >&2; grep -v heartbeat "$f" | tail -15 >&2; done
  echo "== scheduler" >&2; grep -E '"level":"(WARN|ERROR)"' "$work/scheduler.log" | tail -15 >&2
  exit 1 ;;
esac

# The same job in-process, for the expected counts.
local_out="$work/local"; mkdir -p "$local_out"
"$bin" run examples/invoices-payments.json --data-dir examples/data --output-dir "$local_out" >"$work/local.json" 2>/dev/null
python3 - "$work/local.json" "$status" <<'PY'
import json, sys
local = json.load(open(sys.argv[1]))
cluster = json.loads(sys.argv[2])
assert cluster["status"] == "succeeded", cluster
assert cluster["mode"] == "cluster", cluster
assert cluster["counts"] == local["counts"], (cluster["counts"], local["counts"])
print("cluster job across namespaces:", json.dumps(cluster["counts"]))
PY
for ns in "$ns1" "$ns2"; do
  tasks="$(grep -c 'Execute task' "$work/executor-$ns.log" || true)"
  echo "executor in namespace $ns ran $tasks tasks"
  [ "$tasks" -gt 0 ] || { echo "FAILED: an executor ran no task" >&2; exit 1; }
done
echo "PASSED: --external-host across network namespaces"
