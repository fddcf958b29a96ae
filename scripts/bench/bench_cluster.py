"""Cluster benchmark: the 2,000,000 x 1,900,000 reconciliation through kallad's HTTP API, in
local mode and on a scheduler + 2 executors on the same machine, from Parquet and from Postgres.

Each configuration is a fresh set of processes (release build): `kallad scheduler --mode local`,
or `kallad scheduler --mode cluster` with two `kallad executor`s of `SLOTS` task slots each. A
run is timed from the POST to the final status; counts must equal across every run. Peak RSS
(VmHWM) of every process is read from /proc when its configuration is done. Called by
scripts/bench-cluster.sh, which provides the Postgres URI prefix in BENCH_PG (or "" to skip).
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from bench_local import MATCH_SQL, generate  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", 3))
SLOTS = os.environ.get("BENCH_SLOTS", "1")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Config:
    """A scheduler (and executors) started for one configuration."""

    def __init__(self, kallad, data_dir, out_dir, executors):
        self.logs = tempfile.mkdtemp(prefix="kalla-bench-logs-")
        self.out_dir = out_dir
        self.http = free_port()
        grpc = free_port()
        mode = "cluster" if executors else "local"
        env = {**os.environ, "RUST_LOG": "warn,kallad=info", "KALLA_LOG_FORMAT": "json"}
        self.scheduler = subprocess.Popen(
            [kallad, "scheduler", "--http-port", str(self.http), "--grpc-port", str(grpc), "--mode", mode,
             "--data-dir", data_dir, "--output-dir", out_dir, "--max-concurrent-jobs", "1"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.logs, "scheduler.log"), "w"), env=env)
        self.executors = []
        # Executors retry until the scheduler answers, so the order does not matter; starting
        # them after it only keeps the logs quiet.
        deadline = time.time() + 60
        while True:
            try:
                self.get("/health")
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit(f"the scheduler did not start; logs in {self.logs}")
                time.sleep(0.1)
        for i in range(executors):
            self.executors.append(subprocess.Popen(
                [kallad, "executor", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(grpc),
                 "--flight-port", str(free_port()), "--grpc-port", str(free_port()),
                 "--concurrent-tasks", SLOTS, "--work-dir", os.path.join(self.logs, f"work{i}")],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.logs, f"executor{i}.log"), "w"),
                env={**os.environ, "RUST_LOG": "warn"}))
        deadline = time.time() + 60
        while True:
            try:
                cluster = self.get("/api/cluster")
                if len(cluster["executors"]) == executors:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit(f"the {mode} configuration did not come up; logs in {self.logs}")
            time.sleep(0.1)

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}") as r:
            body = r.read()
        try:
            return json.loads(body)
        except ValueError:
            return body.decode()

    def run(self, job):
        body = json.dumps(job).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}/api/jobs", data=body,
                                     headers={"content-type": "application/json"})
        start = time.perf_counter()
        urllib.request.urlopen(req).read()
        while True:
            status = self.get(f"/api/jobs/{job['run_id']}")
            if status["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        if status["status"] != "succeeded":
            sys.exit(f"job failed: {status}")
        shutil.rmtree(os.path.join(self.out_dir, job["output_path"]))
        return elapsed, status

    def peaks(self):
        out = {"scheduler": peak_rss_mib(self.scheduler.pid)}
        for i, e in enumerate(self.executors):
            out[f"executor {i + 1}"] = peak_rss_mib(e.pid)
        return out

    def stop(self):
        for p in [self.scheduler, *self.executors]:
            p.kill()
            p.wait()


def job(sources):
    run_id = str(uuid.uuid4())
    return {"run_id": run_id, "match_sql": MATCH_SQL, "sources": sources, "output_path": f"bench/{run_id}"}


def main():
    kallad, data_dir, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out_dir, exist_ok=True)
    generate(data_dir)
    kinds = {"parquet": [
        {"alias": "invoices", "uri": "invoices.parquet", "primary_key": ["invoice_id"]},
        {"alias": "payments", "uri": "payments.parquet", "primary_key": ["payment_id"]},
    ]}
    pg = os.environ.get("BENCH_PG", "")
    if pg:
        kinds["postgres"] = [
            {"alias": "invoices", "uri": f"{pg}invoices", "primary_key": ["invoice_id"]},
            {"alias": "payments", "uri": f"{pg}payments", "primary_key": ["payment_id"]},
        ]
    results = {}
    counts = None
    for name, executors in (("local", 0), ("cluster (2 executors)", 2)):
        config = Config(kallad, data_dir, out_dir, executors)
        try:
            for kind, sources in kinds.items():
                times = []
                for _ in range(RUNS):
                    elapsed, status = config.run(job(sources))
                    mode = "cluster" if executors else "local"
                    if status["mode"] != mode:
                        sys.exit(f"ran in {status['mode']} mode, wanted {mode}")
                    if counts is None:
                        counts = status["counts"]
                    elif status["counts"] != counts:
                        sys.exit(f"counts differ: {status['counts']} vs {counts}")
                    times.append(elapsed)
                results[(kind, name)] = times
            peaks = config.peaks()
        finally:
            config.stop()
        results[("peaks", name)] = peaks
    print(f"counts (equal in every run): {json.dumps(counts)}")
    print(f"executor task slots: {SLOTS} each; runs per cell: {RUNS} (median)")
    print("| source | mode | seconds (each run) | median | cluster / local |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        local = statistics.median(results[(kind, "local")])
        for name in ("local", "cluster (2 executors)"):
            t = results[(kind, name)]
            m = statistics.median(t)
            print(f"| {kind} | {name} | {', '.join(f'{x:.2f}' for x in t)} | {m:.2f} | {m / local:.2f}x |")
    print()
    print("| configuration | peak RSS per process (MiB, VmHWM over all its runs) |")
    print("|---|---|")
    for name in ("local", "cluster (2 executors)"):
        peaks = results[("peaks", name)]
        print(f"| {name} | {', '.join(f'{k} {v:.0f}' for k, v in peaks.items())} |")


if __name__ == "__main__":
    main()
