#!/usr/bin/env bash
# Builds kallad and reconciles the bundled sample data (examples/data): invoices against
# payments with exact matches, 1% tolerance matches, split payments and orphans. Prints the
# status document, then the first rows of each output.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kalla-target}"
cargo build --release --locked -p kallad
out="$(mktemp -d)"
"$CARGO_TARGET_DIR/release/kallad" run examples/invoices-payments.json \
  --data-dir examples/data --output-dir "$out"
echo
echo "outputs in $out/demo/5c1f6a3e-2b1d-4c1e-9d53-0d6f6c2b8a10:"
ls -l "$out/demo/5c1f6a3e-2b1d-4c1e-9d53-0d6f6c2b8a10"
