# Sourced by the engine benchmarks after `cd` to the repository: the persistent target dir, DuckDB
# 2.0 (the peer, and the data generator), a release build of kallad, and the machine line.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kalla-target}"
python3 -c 'import duckdb, sys; sys.exit(0 if duckdb.__version__.startswith("2.0") else 1)' 2>/dev/null \
  || python3 -m pip install --quiet "duckdb==2.0.0"
cargo build --release --locked -p kallad
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
