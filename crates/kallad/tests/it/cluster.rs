//! Cluster mode: `kallad scheduler` and `kallad executor` processes of the built binary on
//! 127.0.0.1, ephemeral ports, every process stopped at the end. One cluster at a time (they
//! start many processes on a 2-core machine).
//!
//! What is pinned: executors join and leave; every engine scenario, from files and from Postgres,
//! gives exactly the local-mode outputs on one and two executors at 1 and 7 partitions; every row
//! of a many-partition Postgres table and of a many-file CSV directory is read once; faults
//! injected through `kalla_test_fault` (a task failing once, an executor SIGKILLed in the middle
//! of a job, every executor gone) end as SPEC 7 says, and so does an executor lost between its
//! job's success and the fetch of its results (a pause point in the scheduler); cancellation stops the executors' Postgres
//! reads; no password reaches any process's log.

use crate::callbacks::Receiver;
use crate::daemon::Daemon;
use crate::postgres::password_uri;
use crate::scenarios::{request, scenarios};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use kalla_testpg::rows::all_rows;
use kalla_testpg::{PASSWORD, server};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One cluster at a time in this test binary.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The scheduler's gRPC port, from its log.
fn grpc_port(d: &Daemon) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for line in d.logs.lock().unwrap().iter() {
            if let Ok(v) = serde_json::from_str::<Value>(line)
                && let Some(addr) = v["fields"]["grpc_addr"].as_str()
            {
                return addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "the scheduler did not log its gRPC address");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_executors(d: &Daemon, want: usize, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = d.get("/api/cluster");
        assert_eq!(code, 200);
        if body["executors"].as_array().map(Vec::len) == Some(want) {
            return body;
        }
        assert!(Instant::now() < deadline, "wanted {want} executors, /api/cluster says {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `kallad executor` process, killed on drop.
struct Executor {
    child: Child,
    log: PathBuf,
    flight: u16,
    grpc: u16,
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scheduler and its executors.
struct Cluster {
    d: Daemon,
    grpc: u16,
    executors: Vec<Option<Executor>>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Flags of every executor.
    executor_args: Vec<String>,
    _one: MutexGuard<'static, ()>,
}

impl Cluster {
    /// A scheduler with `extra` flags and `executors` executors, all with `env`.
    fn start(data: &Path, executors: usize, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(data, executors, extra, env, &[])
    }

    /// Like `start`, every executor started with `executor_args`.
    fn start_with(
        data: &Path,
        executors: usize,
        extra: &[&str],
        env: &[(&str, &str)],
        executor_args: &[&str],
    ) -> Cluster {
        let one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
        let d = Daemon::start_env(data, Arc::new(tempfile::tempdir().unwrap()), extra, "info", env);
        let grpc = grpc_port(&d);
        let mut c = Cluster {
            d,
            grpc,
            executors: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            executor_args: executor_args.iter().map(|a| a.to_string()).collect(),
            _one: one,
        };
        for _ in 0..executors {
            c.add_executor(&[]);
        }
        wait_for_executors(&c.d, executors, Duration::from_secs(30));
        c
    }

    /// Starts one more executor (2 task slots); returns its index.
    fn add_executor(&mut self, extra: &[&str]) -> usize {
        let i = self.executors.len();
        let log = self.dir.path().join(format!("executor{i}.log"));
        let (flight, grpc) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_kallad"))
            .args(["executor", "--scheduler-host", "127.0.0.1", "--concurrent-tasks", "2"])
            .args(["--scheduler-port", &self.grpc.to_string()])
            .args(["--flight-port", &flight.to_string(), "--grpc-port", &grpc.to_string()])
            .arg("--work-dir")
            .arg(self.dir.path().join(format!("work{i}")))
            .args(&self.executor_args)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.executors.push(Some(Executor { child, log, flight, grpc }));
        i
    }

    fn pid(&self, i: usize) -> u32 {
        self.executors[i].as_ref().expect("a running executor").child.id()
    }

    /// SIGKILLs executor `i`.
    fn kill(&mut self, i: usize) {
        drop(self.executors[i].take());
    }

    /// Tasks executor `i` ran so far (its log names each).
    fn tasks_run(&self, i: usize) -> usize {
        let e = self.executors[i].as_ref().expect("a running executor");
        std::fs::read_to_string(&e.log).unwrap_or_default().matches("Execute task").count()
    }

    /// Every log line of every process.
    fn all_logs(&self) -> String {
        let mut text = self.d.logs.lock().unwrap().join("\n");
        for i in 0..self.executors.len() {
            text.push_str(
                &std::fs::read_to_string(self.dir.path().join(format!("executor{i}.log"))).unwrap_or_default(),
            );
        }
        text
    }
}

/// Every entry of a finished job's output directory: name → for a Parquet file its Arrow schema,
/// then its sorted rows.
fn outputs(d: &Daemon, status: &Value) -> BTreeMap<String, Vec<String>> {
    let dir = d.out.path().join(Path::new(status["output_paths"]["summary"].as_str().unwrap()).parent().unwrap());
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // Every entry counts (no part or leftover beside the outputs); a Parquet file by its
        // Arrow schema and its rows.
        let content = if path.is_file() && path.extension().is_some_and(|e| e == "parquet") {
            let schema = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap();
            std::iter::once(format!("{:?}", schema.schema())).chain(all_rows(&path)).collect()
        } else {
            Vec::new()
        };
        out.insert(name, content);
    }
    out
}

/// Submits every request, waits for all, and returns each final status in order.
fn run_all(d: &Daemon, requests: &[Value]) -> Vec<Value> {
    for r in requests {
        let (code, body) = d.post("/api/jobs", r);
        assert_eq!(code, 202, "{body}");
    }
    requests.iter().map(|r| d.wait_final(r["run_id"].as_str().unwrap(), Duration::from_secs(180))).collect()
}

/// Each scenario as a job request writing under `prefix`.
fn scenario_requests(data: &Path, callback_url: &str, prefix: &str) -> Vec<Value> {
    scenarios().iter().map(|s| request(data, s, callback_url, prefix)).collect()
}

/// Cluster statuses carry mode `cluster` and the local run's counts; the outputs hold the same rows.
fn assert_same_as_local(what: &str, local: &Daemon, reference: &[Value], c: &Cluster, statuses: &[Value]) {
    let cluster = &c.d;
    assert_eq!(reference.len(), statuses.len());
    for (r, s) in reference.iter().zip(statuses) {
        if s["status"] != "succeeded" {
            let errors: Vec<String> = c
                .all_logs()
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("\"level\":\"ERROR\""))
                .map(|l| l.chars().take(600).collect())
                .collect();
            panic!("{what}: {s}\nerrors logged:\n{}", errors.join("\n"));
        }
        assert_eq!(s["mode"], "cluster", "{what}: {s}");
        assert_eq!(s["counts"], r["counts"], "{what}: counts of {} vs local {}", s["output_paths"], r["output_paths"]);
        assert_eq!(outputs(cluster, s), outputs(local, r), "{what}: output rows of {}", s["output_paths"]);
        assert_eq!(
            checks(cluster, s),
            checks(local, r),
            "{what}: the summary's checks of {} vs local {}",
            s["output_paths"],
            r["output_paths"]
        );
    }
}

/// The `audit.checks` of a finished job's `summary.json`.
fn checks(d: &Daemon, status: &Value) -> Value {
    let path = d.out.path().join(status["output_paths"]["summary"].as_str().unwrap());
    let summary: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    summary["audit"]["checks"].clone()
}

/// Starts an executor on `flight` and `grpc` (no scheduler is needed: the ports are checked
/// before it looks for one), expects it to refuse with exit code 2, and returns its log.
fn refused_executor(flight: &str, grpc: &str, work: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kallad"))
        .args(["executor", "--scheduler-host", "127.0.0.1", "--scheduler-port", &free_port().to_string()])
        .args(["--flight-port", flight, "--grpc-port", grpc])
        .arg("--work-dir")
        .arg(work)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{log}");
    log
}

#[test]
fn an_executor_whose_port_is_taken_exits_with_an_error_naming_the_port() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port().to_string();
    let work = tempfile::tempdir().unwrap();
    let free = free_port().to_string();
    for (flag, flight, grpc) in [("--flight-port", &taken, &free), ("--grpc-port", &free, &taken)] {
        let log = refused_executor(flight, grpc, work.path());
        assert!(log.contains(&format!("cannot listen on 127.0.0.1:{taken} ({flag})")), "{log}");
        // Logs written to a pipe or a file carry no terminal colour codes.
        assert!(!log.contains('\u{1b}'), "{log}");
    }
    drop(held);
    // The same free port for both: the second is refused.
    let port = free_port().to_string();
    let log = refused_executor(&port, &port, work.path());
    assert!(log.contains(&format!("cannot listen on 127.0.0.1:{port} (--grpc-port)")), "{log}");
}

#[test]
fn executors_join_and_leave_a_running_scheduler() {
    let data = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(data.path(), 0, &["--executor-timeout", "7s"], &[]);
    assert_eq!(wait_for_executors(&c.d, 0, Duration::from_secs(1))["mode"], "local");
    let first = c.add_executor(&[]);
    let body = wait_for_executors(&c.d, 1, Duration::from_secs(20));
    assert_eq!(body["mode"], "cluster", "auto mode with a live executor runs jobs on the cluster");
    let e = &body["executors"][0];
    let started = c.executors[first].as_ref().unwrap();
    assert_eq!(
        (e["host"].as_str(), e["flight_port"].as_u64(), e["grpc_port"].as_u64()),
        (Some("127.0.0.1"), Some(started.flight as u64), Some(started.grpc as u64))
    );
    assert_eq!(e["slots"], 2);
    // SPEC 3: when it was last seen (its last heartbeat), an RFC 3339 UTC time of the last minute.
    let seen = chrono::DateTime::parse_from_rfc3339(e["last_seen"].as_str().unwrap()).unwrap();
    let ago = chrono::Utc::now().signed_duration_since(seen).num_seconds();
    assert!((0..60).contains(&ago), "last seen {ago} s ago: {e}");
    // Ballista's own REST API is not built in: its port answers nothing under /api.
    let ballista = reqwest::blocking::get(format!("http://127.0.0.1:{}/api/jobs", c.grpc)).unwrap();
    assert_eq!(ballista.status().as_u16(), 404);
    assert_eq!(c.d.get("/api/jobs").0, 200);
    // A second one joins without restarting anything.
    let second = c.add_executor(&["--memory-limit", "1GiB"]);
    wait_for_executors(&c.d, 2, Duration::from_secs(20));
    // No --memory-limit: no pool limit (not Ballista's 70 % of the host); with it: one Kalla
    // pool of that size for all the executor's tasks (Ballista's own per-task pool stays off).
    let text = |i: usize| std::fs::read_to_string(&c.executors[i].as_ref().unwrap().log).unwrap();
    assert!(text(first).contains("Executor memory pool: unbounded"), "{}", text(first));
    assert!(!text(first).contains("one Kalla pool"), "{}", text(first));
    assert!(
        text(second).contains("one Kalla pool of --memory-limit (1073741824 bytes) for all tasks"),
        "{}",
        text(second)
    );
    assert_eq!(c.d.get("/ready").1["executors"], 2);
    let metrics = c.d.get("/metrics").1.as_str().unwrap_or_default().to_string();
    assert!(metrics.lines().any(|l| l == "kalla_executors_live 2"), "{metrics}");
    // A killed executor is gone within the executor timeout (7 s) plus the reaper's period.
    c.kill(first);
    let killed = Instant::now();
    wait_for_executors(&c.d, 1, Duration::from_secs(12));
    assert!(killed.elapsed() < Duration::from_secs(12));
}

#[test]
fn an_executor_started_before_its_scheduler_joins_when_the_scheduler_comes_up() {
    let one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let log = logs.path().join("executor.log");
    let _early = Executor {
        child: Command::new(env!("CARGO_BIN_EXE_kallad"))
            .args(["executor", "--scheduler-host", "127.0.0.1", "--scheduler-port", &grpc.to_string()])
            .args(["--flight-port", &free_port().to_string(), "--grpc-port", &free_port().to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log: log.clone(),
        flight: 0,
        grpc: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).unwrap().contains("the scheduler does not answer yet") {
        assert!(Instant::now() < deadline, "the executor did not report the missing scheduler");
        std::thread::sleep(Duration::from_millis(20));
    }
    let grpc_flag = grpc.to_string();
    let d = Daemon::start(data.path(), &["--grpc-port", &grpc_flag]);
    wait_for_executors(&d, 1, Duration::from_secs(20));
    drop(one);
}

/// Waits for a process to exit; its status.
fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_executor_exits_0_on_sigterm_and_with_an_error_when_its_scheduler_is_gone() {
    let data = tempfile::tempdir().unwrap();
    let mut c = Cluster::start_with(data.path(), 2, &[], &[], &["--shutdown-grace", "2s"]);
    // Asked to stop with nothing running: it deregisters and exits 0, at the latest when its
    // grace (2 s) is over (Ballista's servers may wait for the scheduler's open connections).
    let pid = c.pid(0);
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let status = exit_within(&mut c.executors[0].as_mut().unwrap().child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    // The scheduler dies: Ballista stops the executor after 5 failed heartbeats (5 s apart); it
    // exits non-zero so that a supervisor restarts it (restarted, it waits for the scheduler).
    c.d.child.kill().unwrap();
    let status = exit_within(&mut c.executors[1].as_mut().unwrap().child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{status:?}");
}

#[test]
fn every_scenario_on_one_and_two_executors_gives_the_local_outputs() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![]);
    let callback_url = format!("http://{}/hooks", receiver.addr);
    let local = Daemon::start(data.path(), &["--mode", "local"]);
    let reference = run_all(&local, &scenario_requests(data.path(), &callback_url, "local"));
    for (s, r) in scenarios().iter().zip(&reference) {
        assert_eq!(r["status"], "succeeded", "{}: {r}", s["name"]);
        assert_eq!(r["counts"]["matched"], s["expect"]["matched"], "{}: {r}", s["name"]);
    }
    let mut cluster_runs = Vec::new();
    // CI runs 1 and 7 partitions; scripts/cluster-matrix.sh runs 1, 2, 7 and 16.
    let matrix = std::env::var("KALLA_CLUSTER_PARTITIONS").unwrap_or_else(|_| "1,7".into());
    for partitions in matrix.split(',') {
        let mut c = Cluster::start(data.path(), 1, &["--partitions", partitions], &[]);
        let one = run_all(&c.d, &scenario_requests(data.path(), &callback_url, &format!("p{partitions}-one")));
        assert_same_as_local(&format!("1 executor, {partitions} partitions"), &local, &reference, &c, &one);
        // An executor started while the scheduler runs is used by the next jobs.
        let new = c.add_executor(&[]);
        wait_for_executors(&c.d, 2, Duration::from_secs(30));
        let two = run_all(&c.d, &scenario_requests(data.path(), &callback_url, &format!("p{partitions}-two")));
        assert_same_as_local(&format!("2 executors, {partitions} partitions"), &local, &reference, &c, &two);
        assert!(c.tasks_run(new) > 0, "the executor that joined ran no task");
        // The outputs were written as parts on the executors (Ballista logs the stages it runs).
        assert!(c.all_logs().contains("ParquetPartsExec"), "no stage wrote output parts");
        cluster_runs.extend(one.into_iter().chain(two));
    }
    {
        // The scheduler fetching every output row and writing the files itself gives the same.
        let c = Cluster::start(data.path(), 2, &["--partitions", "7", "--cluster-outputs", "fetch"], &[]);
        let fetched = run_all(&c.d, &scenario_requests(data.path(), &callback_url, "fetch"));
        assert_same_as_local("2 executors, 7 partitions, outputs fetched", &local, &reference, &c, &fetched);
        assert!(!c.all_logs().contains("ParquetPartsExec"), "a stage wrote output parts");
        cluster_runs.extend(fetched);
    }
    // The complete callbacks of cluster jobs say what the local ones say.
    let completes: BTreeMap<String, Value> = receiver
        .finals("complete")
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .map(|b| (b["run_id"].as_str().unwrap().to_string(), b))
        .collect();
    for (i, s) in cluster_runs.iter().enumerate() {
        let r = &reference[i % reference.len()];
        let (mine, theirs) = (&completes[s["run_id"].as_str().unwrap()], &completes[r["run_id"].as_str().unwrap()]);
        for field in ["matched_count", "unmatched_left_count", "unmatched_right_count", "total_left", "total_right"] {
            assert_eq!(mine[field], theirs[field], "{field} of {mine} vs local {theirs}");
        }
    }
    // A gzip CSV cannot be shipped (DataFusion 55's plan encoding drops the compression): in
    // `auto` mode such a job runs locally.
    let c = Cluster::start(data.path(), 1, &[], &[]);
    let mut gz = scenario_requests(data.path(), &callback_url, "gz").swap_remove(0);
    let plain = data.path().join(gz["sources"][0]["uri"].as_str().unwrap());
    std::fs::write(plain.with_extension("csv.gz"), gzip(&std::fs::read(&plain).unwrap())).unwrap();
    gz["sources"][0]["uri"] = json!(format!("{}.gz", gz["sources"][0]["uri"].as_str().unwrap()));
    let s = &run_all(&c.d, &[gz])[0];
    assert_eq!((s["status"].as_str(), s["mode"].as_str()), (Some("succeeded"), Some("local")), "{s}");
    assert_eq!(s["counts"], reference[0]["counts"]);
}

/// `data` gzip-compressed.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn postgres_sources_are_read_by_the_executors_once_in_one_snapshot_and_cancel_stops_them() {
    let pg = server();
    let db = pg.database("cluster");
    let data = tempfile::tempdir().unwrap();
    // Every scenario with both sources in Postgres.
    let mut requests = Vec::new();
    for (n, s) in scenarios().iter().enumerate() {
        let mut r = request(data.path(), s, "", "pg");
        r.as_object_mut().unwrap().remove("callback_url");
        for src in r["sources"].as_array_mut().unwrap() {
            let file = Path::new(src["uri"].as_str().unwrap()).file_name().unwrap().to_string_lossy().to_string();
            let table = format!("s{n}_{}", file.trim_end_matches(".csv"));
            pg.load_csv(&db, &table, s["files"][&file].as_str().unwrap(), &src["schema"]);
            src["uri"] = json!(password_uri(&db, &table, PASSWORD));
            src.as_object_mut().unwrap().remove("schema");
        }
        requests.push(r);
    }
    // 300,000 rows over many pages (7 ctid ranges at 7 partitions) and the same ids in 7 CSV files.
    pg.psql(
        &db,
        "CREATE TABLE big (id int8, ref text, amount numeric(12,2));
         INSERT INTO big SELECT g, 'R' || g, (g % 1000) / 100.0 FROM generate_series(1, 300000) g;
         CREATE TABLE wide (id int8, ref text);
         INSERT INTO wide SELECT g, 'same' FROM generate_series(1, 30000) g; ANALYZE;",
    );
    std::fs::create_dir_all(data.path().join("many")).unwrap();
    for f in 0..7 {
        let mut text = String::from("id,ref\n");
        for id in (1..=300_000).filter(|id| id % 7 == f) {
            text.push_str(&format!("{id},R{id}\n"));
        }
        std::fs::write(data.path().join(format!("many/part{f}.csv")), text).unwrap();
    }
    let once = |name: &str, right: &str| {
        json!({
            "run_id": uuid::Uuid::new_v4().to_string(),
            "match_sql": "SELECT b.id AS bid, m.id AS mid FROM b JOIN m ON b.id = m.id AND b.ref = m.ref",
            "sources": [
                {"alias": "b", "uri": password_uri(&db, "big", PASSWORD), "primary_key": ["id"]},
                {"alias": "m", "uri": right, "primary_key": ["id"]}
            ],
            "output_path": format!("once/{name}")
        })
    };
    requests.push(once("pg-csv", "many"));
    requests.push(once("pg-pg", &password_uri(&db, "big", PASSWORD)));

    let local = Daemon::start(data.path(), &["--mode", "local", "--partitions", "7"]);
    let reference = run_all(&local, &requests);
    let fresh = |requests: &[Value], tag: &str| -> Vec<Value> {
        requests
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r["run_id"] = json!(uuid::Uuid::new_v4().to_string());
                r["output_path"] = json!(format!("{tag}/{}", r["output_path"].as_str().unwrap()));
                r
            })
            .collect()
    };
    let matrix = std::env::var("KALLA_CLUSTER_PARTITIONS").unwrap_or_else(|_| "1,7".into());
    let matrix: Vec<&str> = matrix.split(',').collect();
    let mut c = None;
    for partitions in &matrix {
        drop(c.take());
        let cluster = c.insert(Cluster::start(data.path(), 1, &["--mode", "cluster", "--partitions", partitions], &[]));
        for executors in [1, 2] {
            if executors == 2 {
                cluster.add_executor(&[]);
                wait_for_executors(&cluster.d, 2, Duration::from_secs(30));
            }
            let what = format!("postgres, {executors} executor(s), {partitions} partitions");
            let statuses = run_all(&cluster.d, &fresh(&requests, &format!("e{executors}")));
            assert_same_as_local(&what, &local, &reference, cluster, &statuses);
            let n = statuses.len();
            for s in &statuses[n - 2..] {
                assert_eq!(
                    s["counts"],
                    json!({"total": {"b": 300000, "m": 300000}, "matched": 300000, "unmatched": {"b": 0, "m": 0}}),
                    "{what}: {s}"
                );
            }
            // Both tables of the last job were read in one snapshot, named in the audit trail.
            let summary: Value = serde_json::from_slice(
                &std::fs::read(cluster.d.out.path().join(statuses[n - 1]["output_paths"]["summary"].as_str().unwrap()))
                    .unwrap(),
            )
            .unwrap();
            let snapshot = |i: usize| summary["audit"]["sources"][i]["postgres"]["snapshot_id"].clone();
            assert!(snapshot(0).as_str().is_some_and(|s| !s.is_empty()), "{summary}");
            assert_eq!(snapshot(0), snapshot(1));
        }
    }
    let c = c.expect("at least one partition count");

    // Cancelling a long cluster job ends the executors' Postgres backends within a second.
    let mut long = once("long", &password_uri(&db, "wide", PASSWORD));
    long["sources"][0]["uri"] = json!(password_uri(&db, "wide", PASSWORD));
    long["match_sql"] = json!("SELECT b.id AS bid, m.id AS mid FROM b JOIN m ON b.ref = m.ref");
    let run_id = long["run_id"].as_str().unwrap().to_string();
    assert_eq!(c.d.post("/api/jobs", &long).0, 202);
    let backends =
        || pg.psql(&db, &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kallad/{run_id}'"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.d.get(&format!("/api/jobs/{run_id}")).1["progress"].as_f64().unwrap_or(0.0) == 0.0 {
        assert!(Instant::now() < deadline, "the long job made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.d.post(&format!("/api/jobs/{run_id}/cancel"), &json!({})).0, 202);
    let asked = Instant::now();
    while backends() != "0" {
        assert!(asked.elapsed() < Duration::from_secs(1), "backends left after cancel");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.d.wait_final(&run_id, Duration::from_secs(5))["status"], "cancelled");
    // No process wrote the password, Ballista's plan logging included.
    let logs = c.all_logs();
    assert!(logs.contains("Submitting execution graph"), "the scheduler logged no plan");
    assert!(!logs.contains(PASSWORD), "the password reached a log");
}

/// A fault budget: `<dir>/<mode>/token-<i>` for `n` tokens.
fn tokens(dir: &Path, mode: &str, n: usize) -> PathBuf {
    let budget = dir.join(mode);
    std::fs::create_dir_all(&budget).unwrap();
    for i in 0..n {
        std::fs::write(budget.join(format!("token-{i}")), b"").unwrap();
    }
    budget
}

/// The pid of the process holding a `hold` fault, once one does.
fn held_pid(dir: &Path) -> u32 {
    let (marker, _) = marker(dir, "held-", "no task took the hold fault");
    marker.file_name().unwrap().to_string_lossy().strip_prefix("held-").unwrap().parse().unwrap()
}

/// The first file of `dir` whose name starts with `prefix` (a fault's marker), once there is one,
/// and its contents; fails with `never` after a minute.
fn marker(dir: &Path, prefix: &str, never: &str) -> (PathBuf, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with(prefix) {
                let detail = std::fs::read_to_string(&path).unwrap_or_default();
                return (path, detail);
            }
        }
        assert!(Instant::now() < deadline, "{never}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Submits `job` with one `hold` token in the budget and waits until a task holds it; the job's
/// run id and the index of the executor holding the task.
fn submit_held(c: &Cluster, faults: &Path, job: &Value) -> (String, usize) {
    tokens(faults, "hold", 1);
    assert_eq!(c.d.post("/api/jobs", job).0, 202);
    let pid = held_pid(faults);
    let holder = (0..c.executors.len())
        .find(|i| c.executors[*i].is_some() && c.pid(*i) == pid)
        .expect("an executor of the cluster holds the fault");
    (job["run_id"].as_str().unwrap().to_string(), holder)
}

/// 60,000 invoice ids in 6 CSV files, a third of them paid: the data of the fault tests.
fn write_paid_third(data: &Path) {
    std::fs::create_dir_all(data.join("inv")).unwrap();
    for f in 0..6 {
        let text: String = std::iter::once("id,amount\n".to_string())
            .chain((1..=60_000).filter(|id| id % 6 == f).map(|id| format!("{id},{}.00\n", id % 500)))
            .collect();
        std::fs::write(data.join(format!("inv/part{f}.csv")), text).unwrap();
    }
    let pay: String = std::iter::once("pid,inv,amount\n".to_string())
        .chain((1..=60_000).filter(|id| id % 3 == 0).map(|id| format!("{},{id},{}.00\n", id + 1_000_000, id % 500)))
        .collect();
    std::fs::write(data.join("pay.csv"), pay).unwrap();
}

/// A job over [`write_paid_third`]'s data whose match calls `kalla_test_fault(fault, …)` for
/// every batch (with an empty budget the function lets every row through).
fn paid_third_job(callback: Option<String>, fault: &str) -> Value {
    json!({
        "run_id": uuid::Uuid::new_v4().to_string(),
        "callback_url": callback,
        "match_sql": format!(
            "SELECT i.id, p.pid FROM i JOIN p ON i.id = p.inv AND tolerance_match(i.amount, p.amount, 0.01) \
             WHERE kalla_test_fault('{fault}', i.id)"
        ),
        "sources": [
            {"alias": "i", "uri": "inv", "primary_key": ["id"], "schema": {"amount": "decimal(12,2)"}},
            {"alias": "p", "uri": "pay.csv", "primary_key": ["pid"], "schema": {"amount": "decimal(12,2)"}}
        ],
        "output_path": format!("faults/{}", uuid::Uuid::new_v4())
    })
}

/// The exact counts of [`paid_third_job`].
fn paid_third_counts() -> Value {
    json!({"total": {"i": 60000, "p": 20000}, "matched": 20000, "unmatched": {"i": 40000, "p": 0}})
}

#[test]
fn executor_loss_and_task_failure_are_survived_and_losing_every_executor_fails_the_job() {
    let faults = tempfile::tempdir().unwrap();
    let env = [("KALLA_TEST_FAULTS", faults.path().to_str().unwrap())];
    let data = tempfile::tempdir().unwrap();
    write_paid_third(data.path());
    let receiver = Receiver::start(vec![]);
    let job = |mode: &str| paid_third_job(Some(format!("http://{}", receiver.addr)), mode);
    let exact = paid_third_counts();
    let mut c = Cluster::start_with(
        data.path(),
        2,
        &["--mode", "cluster", "--partitions", "4", "--executor-timeout", "6s", "--cluster-wait", "3s"],
        &env,
        &["--shutdown-grace", "2s"],
    );

    // A task that fails once with an I/O error is retried; the result is exact.
    let budget = tokens(faults.path(), "io", 1);
    let s = &run_all(&c.d, &[job("io")])[0];
    assert_eq!((s["status"].as_str(), s["mode"].as_str()), (Some("succeeded"), Some("cluster")), "{s}");
    assert_eq!(s["counts"], exact);
    assert_eq!(std::fs::read_dir(&budget).unwrap().count(), 0, "the fault never fired");

    // An executor SIGKILLed while it runs a task of the job: its work re-runs on the other one.
    let (run_id, victim) = submit_held(&c, faults.path(), &job("hold"));
    let pid = c.pid(victim);
    let running = c.d.get(&format!("/api/jobs/{run_id}")).1;
    assert_eq!((running["status"].as_str(), running["mode"].as_str()), (Some("running"), Some("cluster")));
    // Progress comes from Ballista's tasks: the tasks not held finish, the held one does not.
    let deadline = Instant::now() + Duration::from_secs(20);
    let progress = loop {
        let p = c.d.get(&format!("/api/jobs/{run_id}")).1["progress"].as_f64().unwrap();
        if p > 0.0 {
            break p;
        }
        assert!(Instant::now() < deadline, "no progress while one task is held");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(progress < 0.99, "{progress}");
    c.kill(victim);
    std::fs::remove_file(faults.path().join(format!("held-{pid}"))).unwrap();
    let s = c.d.wait_final(&run_id, Duration::from_secs(90));
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["counts"], exact);

    // SIGTERM on the executor holding a task: it takes no new task, waits --shutdown-grace (2 s)
    // for the stuck one, exits 0; the task re-runs on the other executor; the result is exact.
    c.add_executor(&[]);
    wait_for_executors(&c.d, 2, Duration::from_secs(30));
    let (run_id, holder) = submit_held(&c, faults.path(), &job("hold"));
    let pid = c.pid(holder);
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let exit = exit_within(&mut c.executors[holder].as_mut().unwrap().child, Duration::from_secs(15));
    assert!(exit.success(), "{exit:?}");
    std::fs::remove_file(faults.path().join(format!("held-{pid}"))).unwrap();
    let s = c.d.wait_final(&run_id, Duration::from_secs(90));
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["counts"], exact);
    c.kill(holder);

    // Every executor gone in the middle of a job: it fails with `no_executors` within the
    // executor timeout (6 s) plus --cluster-wait (3 s) plus the reaper's and the status polls'
    // periods — it never hangs.
    c.add_executor(&[]);
    wait_for_executors(&c.d, 2, Duration::from_secs(30));
    let (run_id, _) = submit_held(&c, faults.path(), &job("hold"));
    for i in 0..c.executors.len() {
        c.kill(i);
    }
    assert_eq!(c.executors.iter().filter(|e| e.is_some()).count(), 0);
    let killed = Instant::now();
    let s = c.d.wait_final(&run_id, Duration::from_secs(30));
    assert!(killed.elapsed() < Duration::from_secs(6 + 3 + 5), "took {:?}", killed.elapsed());
    assert_eq!((s["status"].as_str(), s["error"]["code"].as_str()), (Some("failed"), Some("no_executors")), "{s}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let errors: Vec<Value> =
            receiver.finals("error").iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
        if let Some(e) = errors.iter().find(|e| e["run_id"] == json!(run_id)) {
            assert_eq!(e["code"], "no_executors", "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "no error callback for {run_id}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn results_lost_with_their_executor_after_the_job_succeeded_are_computed_again() {
    let faults = tempfile::tempdir().unwrap();
    let env = [("KALLA_TEST_FAULTS", faults.path().to_str().unwrap())];
    let data = tempfile::tempdir().unwrap();
    write_paid_third(data.path());
    // Both ways of writing outputs: parts (the results are the parts' reports) and fetch (the
    // results are the matched rows themselves).
    for outputs_flag in ["parts", "fetch"] {
        let mut c = Cluster::start(
            data.path(),
            2,
            &["--mode", "cluster", "--partitions", "4", "--cluster-outputs", outputs_flag],
            &env,
        );
        // The scheduler stops once, after the match's Ballista job succeeded and before it
        // fetches the results; the executor holding the first of them is SIGKILLed meanwhile.
        tokens(faults.path(), "before-fetch", 1);
        let job = paid_third_job(None, "io");
        assert_eq!(c.d.post("/api/jobs", &job).0, 202);
        // The scheduler's marker (`before-fetch-<pid>`, not the token directory `before-fetch`).
        let (marker, holders) = marker(faults.path(), "before-fetch-", "the scheduler never reached before-fetch");
        let first: u16 = holders.lines().next().and_then(|l| l.rsplit(':').next()).unwrap().parse().unwrap();
        let victim = (0..c.executors.len())
            .find(|i| c.executors[*i].as_ref().is_some_and(|e| e.flight == first))
            .unwrap_or_else(|| panic!("no executor has Flight port {first}: {holders}"));
        c.kill(victim);
        std::fs::remove_file(&marker).unwrap();
        let s = c.d.wait_final(job["run_id"].as_str().unwrap(), Duration::from_secs(120));
        assert_eq!(
            (s["status"].as_str(), s["mode"].as_str()),
            (Some("succeeded"), Some("cluster")),
            "{outputs_flag}: {s}"
        );
        assert_eq!(s["counts"], paid_third_counts(), "{outputs_flag}");
        let written: Vec<String> = outputs(&c.d, &s).into_keys().collect();
        assert_eq!(written, ["matched.parquet", "summary.json", "unmatched_i.parquet", "unmatched_p.parquet"]);
        let matched = all_rows(&c.d.out.path().join(job["output_path"].as_str().unwrap()).join("matched.parquet"));
        assert_eq!(matched.len(), 20_000, "{outputs_flag}");
        assert_eq!(
            matched.iter().collect::<std::collections::BTreeSet<_>>().len(),
            20_000,
            "{outputs_flag}: a row twice"
        );
        let logs = c.all_logs();
        assert_eq!(logs.matches("running the plan again").count(), 1, "{outputs_flag}");
    }
}

#[test]
fn cluster_mode_waits_for_an_executor_then_fails_and_refuses_what_cannot_be_distributed() {
    let data = tempfile::tempdir().unwrap();
    let requests = scenario_requests(data.path(), "", "cm");
    let strip = |mut r: Value| {
        r.as_object_mut().unwrap().remove("callback_url");
        r
    };
    let mut c = Cluster::start(data.path(), 0, &["--mode", "cluster", "--cluster-wait", "1s"], &[]);
    assert_eq!(c.d.get("/ready").1["mode"], "cluster");
    let started = Instant::now();
    let s = &run_all(&c.d, &[strip(requests[0].clone())])[0];
    assert_eq!((s["status"].as_str(), s["error"]["code"].as_str()), (Some("failed"), Some("no_executors")), "{s}");
    assert_eq!(s["mode"], "cluster", "{s}");
    assert!(started.elapsed() >= Duration::from_secs(1) && started.elapsed() < Duration::from_secs(5));
    // With an executor the same job runs there; a gzip CSV job is refused: not distributable.
    c.add_executor(&[]);
    wait_for_executors(&c.d, 1, Duration::from_secs(30));
    let mut again = strip(requests[0].clone());
    again["run_id"] = json!(uuid::Uuid::new_v4().to_string());
    let s = &run_all(&c.d, &[again])[0];
    assert_eq!((s["status"].as_str(), s["mode"].as_str()), (Some("succeeded"), Some("cluster")), "{s}");
    let mut gz = strip(requests[1].clone());
    let plain = data.path().join(gz["sources"][0]["uri"].as_str().unwrap());
    std::fs::write(plain.with_extension("csv.gz"), gzip(&std::fs::read(&plain).unwrap())).unwrap();
    gz["sources"][0]["uri"] = json!(format!("{}.gz", gz["sources"][0]["uri"].as_str().unwrap()));
    let s = &run_all(&c.d, &[gz])[0];
    assert_eq!((s["status"].as_str(), s["error"]["code"].as_str()), (Some("failed"), Some("not_distributable")), "{s}");
    assert_eq!(s["mode"], "cluster", "a job refused for the cluster says it was to run there: {s}");
}

#[test]
fn a_postgres_read_cut_off_on_an_executor_is_retried_in_the_same_snapshot() {
    let pg = server();
    let db = pg.database("retry");
    // Ranges of tens of MB: a paused reader's backend is still sending when it is cut off.
    pg.psql(
        &db,
        "CREATE TABLE big (id int8, pad text);
         INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g; ANALYZE;",
    );
    let faults = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let c = Cluster::start(
        data.path(),
        2,
        &["--mode", "cluster", "--partitions", "2"],
        &[("KALLA_TEST_FAULTS", faults.path().to_str().unwrap())],
    );
    tokens(faults.path(), "pause", 1);
    let uri = password_uri(&db, "big", PASSWORD);
    let job = json!({
        "run_id": uuid::Uuid::new_v4().to_string(),
        "match_sql": "SELECT l.id AS lid, r.id AS rid FROM l JOIN r ON l.id = r.id WHERE kalla_test_fault('pause', l.id)",
        "sources": [
            {"alias": "l", "uri": uri, "primary_key": ["id"]},
            {"alias": "r", "uri": uri, "primary_key": ["id"]}
        ],
        "output_path": "retry"
    });
    let run_id = job["run_id"].as_str().unwrap().to_string();
    assert_eq!(c.d.post("/api/jobs", &job).0, 202);
    // A task paused in the middle of its range; its reads are cut off under it.
    let (marker, _) = marker(faults.path(), "paused-", "no task paused");
    let cut = pg.psql(
        &db,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'kallad/{run_id}' AND query LIKE 'COPY%'"
        ),
    );
    assert_ne!(cut, "0", "no Postgres read to cut off");
    std::fs::remove_file(&marker).unwrap();
    let s = c.d.wait_final(&run_id, Duration::from_secs(120));
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(
        s["counts"],
        json!({"total": {"l": 1000000, "r": 1000000}, "matched": 1000000, "unmatched": {"l": 0, "r": 0}})
    );
    // The cut really failed a task, which Ballista ran again.
    let logs = c.all_logs();
    // The cut shows as the server's 57P01 message or as a closed connection, depending on what
    // the reader saw first; both are I/O-class (retryable) read failures.
    let failures: Vec<&str> = logs.lines().filter(|l| l.contains("failed")).collect();
    assert!(
        failures.iter().any(|l| l.contains("IO error: source_read_failed: source l: ")),
        "no task failed on the cut-off read: {failures:#?}"
    );
}
