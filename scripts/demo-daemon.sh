#!/usr/bin/env bash
# Starts `kallad scheduler` on a free local port, submits the sample job over HTTP, waits for it,
# prints its status document and summary.json, and stops the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kalla-target}"
cargo build --release --locked -p kallad
out="$(mktemp -d)"
log="$out/kallad.log"
KALLA_LOG_FORMAT=json "$CARGO_TARGET_DIR/release/kallad" scheduler --http-port 0 --grpc-port 0 \
  --data-dir examples/data --output-dir "$out" 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
addr=""
for _ in $(seq 1 100); do
  addr="$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    try: a = json.loads(l).get("fields", {}).get("addr")
    except ValueError: continue
    if a: print(a); break' "$log")"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "kallad did not start; log:" >&2; cat "$log" >&2; exit 1; }
echo "kallad scheduler at http://$addr"
run_id=5c1f6a3e-2b1d-4c1e-9d53-0d6f6c2b8a10
curl -sS -X POST "http://$addr/api/jobs" -H 'content-type: application/json' \
  --data-binary @examples/invoices-payments.json
echo
for _ in $(seq 1 600); do
  status="$(curl -sS "http://$addr/api/jobs/$run_id")"
  case "$status" in *'"status":"succeeded"'*|*'"status":"failed"'*|*'"status":"cancelled"'*) break ;; esac
  sleep 0.1
done
echo "$status" | python3 -m json.tool
summary="$out/demo/$run_id/summary.json"
[ -f "$summary" ] && { echo "summary.json:"; cat "$summary"; }
