"""Kalla's benchmark suite (run by scripts/bench.sh): correctness at scale, growth, memory bound.

For each cell of the plan below it generates the data once with `kalla-datagen` (seeded; ground
truth in truth.json beside the data, cross-checked with DuckDB by truth_duckdb.py), starts fresh
kallad processes (`kallad scheduler --mode local`, or `--mode cluster` plus N `kallad executor`s),
submits the job through the HTTP API with a callback URL served by this script, and times it from
the POST to the `complete` callback. Every run's counts (status and callback) must equal the
truth or the suite stops. Peak RSS is each process's VmHWM, read from /proc when its cell is done
(fresh processes per cell, so it is that cell's peak). Peers in the same run, for every local
file or Postgres cell of the goals, shapes and growth: DuckDB 2.0 doing the same work (match, two
anti joins, three Parquet writes) on the same Parquet or CSV files, and for Postgres a raw
`COPY … TO STDOUT (FORMAT binary)` of both tables into /dev/null.

Writes WORK/results.json and prints Markdown; scripts/bench.sh puts both into docs/.
Environment: BENCH_PLAN (quick|goals|full, default full), BENCH_RUNS (default 3), BENCH_EXECUTORS (2),
BENCH_PG (a postgres:// URI prefix ending in `table=`, set by bench.sh; empty skips Postgres).
"""
import http.server
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import duckdb

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from truth_duckdb import QUERIES  # noqa: E402  (the shapes' DuckDB queries, one copy)

RUNS = int(os.environ.get("BENCH_RUNS", 3))
EXECUTORS = int(os.environ.get("BENCH_EXECUTORS", 2))
PG = os.environ.get("BENCH_PG", "")
THREADS = os.cpu_count() or 2
M = 1_000_000


def plan(kind):
    """The cells: (group, shape, invoices, payments, source kind, mode, memory limit, runs)."""
    cells = []
    if kind == "quick":
        for shape in ("one-to-one", "split", "batch", "many-to-many"):
            cells.append(("shapes", shape, 100_000, None, "parquet", "local", None, 1))
        cells.append(("shapes", "one-to-one", 100_000, None, "csv", "local", None, 1))
        cells.append(("shapes", "one-to-one", 100_000, None, "postgres", "local", None, 1))
        cells.append(("shapes", "one-to-one", 100_000, None, "parquet", "cluster", None, 1))
        return cells
    # Goals: 2M x 1.9M from Parquet and Postgres, local and on the cluster, against the peers.
    for source in ("parquet", "postgres"):
        for mode in ("local", "cluster"):
            cells.append(("goal", "one-to-one", 2 * M, 1_900_000, source, mode, None, RUNS))
    if kind == "goals":
        return cells
    # Every shape at 1M per side, every source kind, both modes.
    for shape in ("one-to-one", "split", "batch", "many-to-many"):
        for source in ("parquet", "csv", "postgres"):
            for mode in ("local", "cluster"):
                cells.append(("shapes", shape, M, None, source, mode, None, 1))
    # Growth: 1:1 at N x N, local, Parquet and Postgres.
    for source in ("parquet", "postgres"):
        for n in (1, 2, 5, 10):
            cells.append(("growth", "one-to-one", n * M, n * M, source, "local", None, RUNS))
    # Memory bound: 10M x 10M with --memory-limit 2GiB; and what fits in how much.
    cells.append(("memory", "one-to-one", 10 * M, 10 * M, "parquet", "local", "2GiB", 1))
    for limit in ("1GiB", "1536MiB"):
        cells.append(("memory fit", "one-to-one", 10 * M, 10 * M, "parquet", "local", limit, 1))
    for limit in ("256MiB", "384MiB", "512MiB"):
        cells.append(("memory fit", "one-to-one", 2 * M, 1_900_000, "parquet", "local", limit, 1))
    return cells


def free_ports(n):
    """`n` distinct ports free at the time of asking (held open together so none repeats)."""
    held = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
    ports = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    return ports


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return None


class Callbacks:
    """An HTTP server receiving kallad's callbacks; `wait(run_id)` returns the final one."""

    def __init__(self):
        self.final = {}
        self.cond = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                kind = self.path.rstrip("/").rsplit("/", 1)[-1]
                if kind in ("complete", "error"):
                    doc = json.loads(body)
                    with outer.cond:
                        outer.final[doc["run_id"]] = (time.perf_counter(), kind, doc)
                        outer.cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, run_id, timeout):
        with self.cond:
            if not self.cond.wait_for(lambda: run_id in self.final, timeout):
                sys.exit(f"no complete/error callback for {run_id} within {timeout}s")
            return self.final.pop(run_id)


class Daemon:
    """A scheduler (and executors) started for one cell; stopped by `stop`."""

    def __init__(self, kallad, data_dir, out_dir, executors, memory_limit):
        self.logs = tempfile.mkdtemp(prefix="kalla-bench-logs-")
        self.out_dir = out_dir
        self.http, grpc = free_ports(2)
        mode = "cluster" if executors else "local"
        args = [kallad, "scheduler", "--http-port", str(self.http), "--grpc-port", str(grpc), "--mode", mode,
                "--data-dir", data_dir, "--output-dir", out_dir, "--max-concurrent-jobs", "1"]
        if memory_limit:
            args += ["--memory-limit", memory_limit]
        env = {**os.environ, "RUST_LOG": "warn"}
        self.scheduler = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                          stderr=open(os.path.join(self.logs, "scheduler.log"), "w"), env=env)
        self.executors = []
        self.wait_for(lambda: self.get_raw("/health") is not None, "the scheduler did not start")

        def executor(i):
            # A port another process took between asking and binding makes the executor exit
            # (with an error naming the port); it is started again on new ports, twice at most.
            flight, grpc_e = free_ports(2)
            return subprocess.Popen(
                [kallad, "executor", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(grpc),
                 "--flight-port", str(flight), "--grpc-port", str(grpc_e),
                 "--concurrent-tasks", "1", "--work-dir", os.path.join(self.logs, f"work{i}")],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.logs, f"executor{i}.log"), "a"), env=env)

        self.executors = [executor(i) for i in range(executors)]
        restarts = [0] * executors

        def up():
            for i, e in enumerate(self.executors):
                if e.poll() is not None and restarts[i] < 2:
                    restarts[i] += 1
                    self.executors[i] = executor(i)
            return len(self.get("/api/cluster")["executors"]) == executors

        self.wait_for(up, f"the {mode} configuration did not come up")

    def wait_for(self, ready, what):
        deadline = time.time() + 60
        while True:
            try:
                if ready():
                    return
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit(f"{what}; logs in {self.logs}")
            time.sleep(0.1)

    def get_raw(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}") as r:
            return r.read()

    def get(self, path):
        return json.loads(self.get_raw(path))

    def run(self, job, callbacks):
        """Submits `job`; returns (seconds to the final callback, its kind, its body, status)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}/api/jobs", data=json.dumps(job).encode(),
                                     headers={"content-type": "application/json"})
        start = time.perf_counter()
        try:
            urllib.request.urlopen(req).read()
        except urllib.error.HTTPError as e:
            sys.exit(f"submission refused: {e.code} {e.read().decode()}")
        at, kind, body = callbacks.wait(job["run_id"], 3600)
        status = self.get(f"/api/jobs/{job['run_id']}")
        out = os.path.join(self.out_dir, job["output_path"])
        if os.path.exists(out):
            shutil.rmtree(out)
        return at - start, kind, body, status

    def alive(self):
        return all(p.poll() is None for p in [self.scheduler, *self.executors])

    def peaks(self):
        out = {"scheduler": peak_rss_mib(self.scheduler.pid)}
        for i, e in enumerate(self.executors):
            out[f"executor {i + 1}"] = peak_rss_mib(e.pid)
        return out

    def stop(self):
        for p in [self.scheduler, *self.executors]:
            p.kill()
            p.wait()
        shutil.rmtree(self.logs, ignore_errors=True)


def dataset(datagen, work, shape, invoices, payments):
    """Generates (once) the data of one shape and size; returns (dir, truth, job template)."""
    name = f"{shape}-{invoices}x{payments or 'default'}"
    d = os.path.join(work, "data", name)
    if not os.path.exists(os.path.join(d, "truth.json")):
        args = [datagen, "--shape", shape, "--invoices", str(invoices), "--seed", "42", "--out", d,
                "--format", "parquet,csv"]
        if payments:
            args += ["--payments", str(payments)]
        t = time.perf_counter()
        subprocess.run(args, check=True)
        print(f"generated {name} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        check = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "truth_duckdb.py"), d])
        if check.returncode != 0:
            sys.exit(f"DuckDB disagrees with the generator's truth for {name}")
    with open(os.path.join(d, "truth.json")) as f:
        truth = json.load(f)
    with open(os.path.join(d, "job.json")) as f:
        template = json.load(f)
    return name, d, truth, template


def load_postgres(name, d):
    """Loads the dataset's CSV files into Postgres tables `<name>_<source>` (once); returns names."""
    tables = {}
    con = duckdb.connect()
    for source in ("invoices", "payments"):
        table = f"{name.replace('-', '_')}_{source}"
        tables[source] = table
        exists = psql(f"SELECT to_regclass('{table}') IS NOT NULL").strip()
        if exists == "t":
            continue
        cols = con.execute(f"DESCRIBE SELECT * FROM '{d}/{source}.parquet'").fetchall()
        ddl = ", ".join(f'"{c[0]}" {duck_to_pg(c[1])}' for c in cols)
        t = time.perf_counter()
        psql(f'CREATE TABLE {table} ({ddl})')
        psql(f"\\copy {table} FROM '{d}/{source}.csv' CSV HEADER")
        psql(f"VACUUM ANALYZE {table}")
        print(f"loaded {table} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return tables


def duck_to_pg(t):
    t = t.upper()
    if t.startswith("DECIMAL"):
        return "numeric" + t[len("DECIMAL"):]
    return {"BIGINT": "bigint", "INTEGER": "integer", "VARCHAR": "text", "DATE": "date",
            "TIMESTAMP WITH TIME ZONE": "timestamptz", "TIMESTAMP": "timestamp", "BOOLEAN": "boolean"}[t]


def psql(command):
    return subprocess.run(os.environ["BENCH_PSQL"].split() + ["-c", command], check=True,
                          capture_output=True, text=True).stdout


def raw_copy_seconds(tables):
    """Seconds for a binary COPY of both tables to /dev/null, one after the other (the read limit)."""
    start = time.perf_counter()
    for table in tables.values():
        with open(os.devnull, "wb") as sink:
            subprocess.run(os.environ["BENCH_PSQL"].split() + ["-c", f"COPY {table} TO STDOUT (FORMAT binary)"],
                           check=True, stdout=sink)
    return time.perf_counter() - start


def duckdb_seconds(d, truth, out_dir, kind="parquet"):
    """DuckDB doing the job's work on the Parquet (or CSV) files: the match into matched.parquet,
    each source's unmatched rows (keys in no matched row) into its own file. Returns (seconds,
    counts). The shape's DuckDB query and key expressions are truth_duckdb's; CSV columns get the
    types the job's `schema` gives them (so amounts are decimals, as for kallad)."""
    o = os.path.join(out_dir, "duckdb")
    shutil.rmtree(o, ignore_errors=True)
    os.makedirs(o)
    sql, invoice_keys, payment_keys = QUERIES[truth["shape"]]
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {THREADS}")
    if kind == "csv":
        with open(os.path.join(d, "job-csv.json")) as f:
            for src in json.load(f)["sources"]:
                types = ", ".join(f"'{c}': '{t.upper()}'" for c, t in src.get("schema", {}).items())
                con.execute(f"CREATE VIEW {src['alias']} AS SELECT * FROM read_csv('{d}/{src['uri']}', "
                            f"header = true, types = {{{types}}})")
    else:
        con.execute(f"CREATE VIEW invoices AS SELECT * FROM '{d}/invoices.parquet'")
        con.execute(f"CREATE VIEW payments AS SELECT * FROM '{d}/payments.parquet'")
    con.execute(f"COPY ({sql}) TO '{o}/matched.parquet' (FORMAT parquet)")
    counts = {"matched": con.execute(f"SELECT count(*) FROM '{o}/matched.parquet'").fetchone()[0]}
    for source, key, traced in (("invoices", "invoice_id", invoice_keys), ("payments", "payment_id", payment_keys)):
        # `[column]` is a plain key column: read it as is rather than unnesting a one-element list.
        keys = f"SELECT {traced[1:-1]} AS k FROM '{o}/matched.parquet'" if traced.startswith("[") \
            else f"SELECT unnest({traced}) AS k FROM '{o}/matched.parquet'"
        con.execute(f"COPY (SELECT * FROM {source} WHERE {key} NOT IN ({keys})) "
                    f"TO '{o}/unmatched_{source}.parquet' (FORMAT parquet)")
        counts[source] = con.execute(f"SELECT count(*) FROM '{o}/unmatched_{source}.parquet'").fetchone()[0]
    return time.perf_counter() - start, counts


def sources_for(kind, d, template, tables):
    """The job's sources for one source kind: the generator's Parquet job, its CSV job (typed
    columns given as `schema`), or the Parquet job pointed at the loaded Postgres tables."""
    if kind == "csv":
        with open(os.path.join(d, "job-csv.json")) as f:
            return json.load(f)["sources"]
    out = []
    for s in template["sources"]:
        s = dict(s)
        if kind == "postgres":
            s["uri"] = PG + tables[s["alias"]]
        out.append(s)
    return out


def counts_of(status):
    c = status["counts"]
    return (c["matched"], c["unmatched"]["invoices"], c["unmatched"]["payments"])


def callback_counts(body):
    return (body["matched_count"], body["unmatched"]["invoices"]["count"], body["unmatched"]["payments"]["count"])


def main():
    kallad, datagen, work = sys.argv[1], sys.argv[2], sys.argv[3]
    kind = os.environ.get("BENCH_PLAN", "full")
    callbacks = Callbacks()
    results = []
    for group, shape, invoices, payments, source, mode, memory, runs in plan(kind):
        if source == "postgres" and not PG:
            continue
        name, d, truth, template = dataset(datagen, work, shape, invoices, payments)
        tables = load_postgres(name, d) if source == "postgres" else {}
        out_dir = os.path.join(work, "out")
        os.makedirs(out_dir, exist_ok=True)
        want = (truth["matched"], truth["unmatched"]["invoices"], truth["unmatched"]["payments"])
        daemon = Daemon(kallad, d, out_dir, EXECUTORS if mode == "cluster" else 0, memory)
        seconds, outcome = [], "succeeded"
        error = None
        try:
            for _ in range(runs):
                run_id = str(uuid.uuid4())
                job = {"run_id": run_id, "callback_url": callbacks.url, "match_sql": template["match_sql"],
                       "sources": sources_for(source, d, template, tables), "output_path": f"bench/{run_id}"}
                elapsed, cb_kind, body, status = daemon.run(job, callbacks)
                if cb_kind == "error":
                    # Under a memory limit a job may fail cleanly with memory_limit_exceeded;
                    # any other failure fails the suite.
                    if memory and body.get("code") == "memory_limit_exceeded":
                        outcome, error = "failed", {"code": body.get("code"), "message": body.get("error")}
                        break
                    sys.exit(f"{name} {source} {mode}: job failed: {body}")
                if callback_counts(body) != want or counts_of(status) != want:
                    sys.exit(f"{name} {source} {mode}: counts {counts_of(status)} (callback "
                             f"{callback_counts(body)}), truth {want}")
                if status["mode"] != mode:
                    sys.exit(f"{name} {source} {mode}: ran in mode {status['mode']}")
                seconds.append(elapsed)
            alive = daemon.alive()
            peaks = daemon.peaks()
        finally:
            daemon.stop()
        row = {"group": group, "shape": shape, "rows": truth["rows"], "source": source, "mode": mode,
               "executors": EXECUTORS if mode == "cluster" else 0, "memory_limit": memory,
               "outcome": outcome, "error": error, "daemon_alive": alive, "seconds": seconds,
               "median": statistics.median(seconds) if seconds else None, "peak_rss_mib": peaks}
        total = truth["rows"]["invoices"] + truth["rows"]["payments"]
        row["rows_per_second"] = round(total / row["median"]) if row["median"] else None
        if source in ("parquet", "csv") and group in ("goal", "growth", "shapes") and mode == "local":
            peer = [duckdb_seconds(d, truth, out_dir, source) for _ in range(runs)]
            for _, c in peer:
                if (c["matched"], c["invoices"], c["payments"]) != want:
                    sys.exit(f"{name}: DuckDB counts {c} differ from the truth {want}")
            row["duckdb_seconds"] = [round(s, 3) for s, _ in peer]
        if source == "postgres" and group in ("goal", "growth", "shapes") and mode == "local":
            row["raw_copy_seconds"] = [round(raw_copy_seconds(tables), 3) for _ in range(runs)]
        results.append(row)
        print(json.dumps(row), file=sys.stderr)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump({"machine": machine(), "duckdb": duckdb.__version__, "runs": RUNS, "results": results}, f, indent=1)


def machine():
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // (1024 * 1024)
    return {"cores": os.cpu_count(), "ram_gib": mem}


if __name__ == "__main__":
    main()
