#!/usr/bin/env bash
# The full cluster matrix on demand: every engine scenario on 1 and 2 executor processes at 1, 2,
# 7 and 16 partitions, each compared with the local-mode outputs (CI runs 1 and 7).
# Usage: scripts/cluster-matrix.sh [partitions, default 1,2,7,16]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kalla-target}"
export KALLA_CLUSTER_PARTITIONS="${1:-1,2,7,16}"
cargo test --locked -p kallad --test it -- --exact \
  cluster::every_scenario_on_one_and_two_executors_gives_the_local_outputs \
  cluster::postgres_sources_are_read_by_the_executors_once_in_one_snapshot_and_cancel_stops_them
