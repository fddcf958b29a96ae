//! `kallad scheduler` on an ephemeral port, driven over real HTTP.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A running `kallad scheduler`; killed on drop.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    base: String,
    pub(crate) out: Arc<tempfile::TempDir>,
    data: PathBuf,
    client: reqwest::blocking::Client,
    token: Option<String>,
    /// Every log line the daemon wrote so far.
    pub(crate) logs: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    pub(crate) fn start(data: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_in(data, Arc::new(tempfile::tempdir().unwrap()), extra)
    }

    /// Starts a daemon on an existing output root (and so on its journal).
    pub(crate) fn start_in(data: &Path, out: Arc<tempfile::TempDir>, extra: &[&str]) -> Daemon {
        Daemon::start_logging(data, out, extra, "info")
    }

    /// Starts a daemon logging at `level` (`RUST_LOG`).
    pub(crate) fn start_logging(data: &Path, out: Arc<tempfile::TempDir>, extra: &[&str], level: &str) -> Daemon {
        Daemon::start_env(data, out, extra, level, &[])
    }

    /// Starts a daemon with extra environment variables.
    pub(crate) fn start_env(
        data: &Path,
        out: Arc<tempfile::TempDir>,
        extra: &[&str],
        level: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kallad"))
            .args(["scheduler", "--http-port", "0", "--data-dir"])
            .arg(data)
            .arg("--output-dir")
            .arg(out.path())
            .args(extra)
            // A free gRPC port unless the test chose one.
            .args(if extra.contains(&"--grpc-port") { &[][..] } else { &["--grpc-port", "0"][..] })
            .env("RUST_LOG", level)
            .env("KALLA_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && let Some(addr) = v["fields"]["addr"].as_str()
                {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("the daemon did not report its address");
        let token = extra.iter().position(|a| *a == "--api-token").map(|i| extra[i + 1].to_string());
        Daemon {
            child,
            base: format!("http://{addr}"),
            out,
            data: data.to_path_buf(),
            client: reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            token,
            logs,
        }
    }

    fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "POST" => self.client.post(url),
            _ => self.client.get(url),
        };
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send("POST", path, Some(serde_json::to_vec(body).unwrap()))
    }

    pub(crate) fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, None)
    }

    /// Polls the job until it reaches a final state (or panics after `limit`).
    pub(crate) fn wait_final(&self, run_id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (code, s) = self.get(&format!("/api/jobs/{run_id}"));
            assert_eq!(code, 200, "{s}");
            if ["succeeded", "failed", "cancelled"].contains(&s["status"].as_str().unwrap_or("")) {
                return s;
            }
            assert!(Instant::now() < deadline, "job {run_id} not final after {limit:?}: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn wait_status(&self, run_id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get(&format!("/api/jobs/{run_id}")).1["status"] != want {
            assert!(Instant::now() < deadline, "job {run_id} never became {want}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn example_job() -> Value {
    serde_json::from_slice(&std::fs::read(repo_root().join("examples/invoices-payments.json")).unwrap()).unwrap()
}

pub(crate) fn examples() -> PathBuf {
    repo_root().join("examples/data")
}

#[test]
fn the_example_job_runs_over_http_and_resubmission_is_idempotent() {
    let d = Daemon::start(&examples(), &[]);
    assert_eq!(d.get("/health").0, 200);
    let job = example_job();
    let (code, body) = d.post("/api/jobs", &job);
    assert_eq!(code, 202, "{body}");
    assert_eq!(body, json!({"run_id": job["run_id"], "status": "queued"}));
    let s = d.wait_final(job["run_id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["counts"]["matched"], 8);
    assert_eq!(s["counts"]["unmatched"], json!({"invoices": 4, "payments": 4}));
    assert_eq!(s["progress"], 1.0);
    assert!(d.out.path().join("demo/5c1f6a3e-2b1d-4c1e-9d53-0d6f6c2b8a10/summary.json").is_file());
    // The same request (keys in another order) answers the job's status.
    let mut reordered = serde_json::Map::new();
    for (k, v) in job.as_object().unwrap().iter().rev() {
        reordered.insert(k.clone(), v.clone());
    }
    let (code, again) = d.post("/api/jobs", &Value::Object(reordered));
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["status"], "succeeded");
    // Another request under the same run_id is a conflict.
    let mut other = job.clone();
    other["output_path"] = json!("demo/elsewhere");
    let (code, e) = d.post("/api/jobs", &other);
    assert_eq!((code, e["error"]["code"].as_str()), (409, Some("run_id_conflict")));
    assert_eq!(d.get("/api/cluster"), (200, json!({"mode": "local", "executors": []})));
    let (code, metrics) = d.get("/metrics");
    assert_eq!(code, 200);
    let text = metrics.as_str().unwrap_or_default().to_string();
    // Both sources are keyed CSV files: each is read three times (match, anti join, checks).
    let csv_bytes: u64 =
        ["invoices.csv", "payments.csv"].iter().map(|f| std::fs::metadata(examples().join(f)).unwrap().len()).sum();
    let rows_line = format!("kalla_source_rows_read_total{{kind=\"csv\"}} {}", 3 * (12 + 15));
    let bytes_line = format!("kalla_source_bytes_read_total{{kind=\"csv\"}} {}", 3 * csv_bytes);
    for line in [
        rows_line.as_str(),
        bytes_line.as_str(),
        "kalla_callbacks_pending 0",
        "kalla_jobs_total{outcome=\"succeeded\"} 1",
        "kalla_job_duration_seconds_count{mode=\"local\"} 1",
        "kalla_jobs_queued 0",
        "kalla_jobs_running 0",
        "kalla_executors_live 0",
        "kalla_memory_pool_reserved_bytes 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
    }
    assert_eq!(d.get("/ready"), (200, json!({"mode": "local", "executors": 0, "queued": 0, "running": 0})));
    let (code, list) = d.get("/api/jobs?limit=5");
    assert_eq!(code, 200);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_input_gets_its_status_and_code_and_the_daemon_stays_healthy() {
    let d = Daemon::start(&examples(), &[]);
    let mut job = example_job();
    job["run_id"] = json!("4f1d3c55-6b4e-4c8a-9d0e-1a2b3c4d5e6f");
    job["output_path"] = json!("bad/one");
    let cases: Vec<(Vec<u8>, u16, &str, Option<&str>)> = vec![
        (b"{not json".to_vec(), 400, "bad_json", None),
        (serde_json::to_vec(&json!({"run_id": "x"})).unwrap(), 422, "invalid_field", None),
        (
            serde_json::to_vec(&{
                let mut j = job.clone();
                j["run_id"] = json!("run-1");
                j
            })
            .unwrap(),
            422,
            "invalid_field",
            Some("run_id"),
        ),
        (
            serde_json::to_vec(&{
                let mut j = job.clone();
                j["extra"] = json!(1);
                j
            })
            .unwrap(),
            422,
            "invalid_field",
            Some("extra"),
        ),
        (
            serde_json::to_vec(&{
                let mut j = job.clone();
                j["sources"] = json!("x");
                j
            })
            .unwrap(),
            422,
            "invalid_field",
            Some("sources"),
        ),
        (
            serde_json::to_vec(&{
                let mut j = job.clone();
                j["match_sql"] = json!("DELETE FROM invoices");
                j
            })
            .unwrap(),
            422,
            "forbidden_statement",
            Some("match_sql"),
        ),
        (
            serde_json::to_vec(&{
                let mut j = job.clone();
                j["sources"][0]["uri"] = json!("../../etc/passwd");
                j
            })
            .unwrap(),
            422,
            "source_outside_root",
            Some("sources[0].uri"),
        ),
        (
            serde_json::to_vec(&{
                let mut j = job.clone();
                j["output_path"] = json!("../x");
                j
            })
            .unwrap(),
            422,
            "output_outside_root",
            Some("output_path"),
        ),
        (vec![b' '; 1024 * 1024 + 10], 413, "payload_too_large", None),
    ];
    for (body, status, code, field) in cases {
        let (got, e) = d.send("POST", "/api/jobs", Some(body));
        assert_eq!(got, status, "{e}");
        assert_eq!(e["error"]["code"], code, "{e}");
        if let Some(f) = field {
            assert_eq!(e["error"]["field"], f, "{e}");
        }
    }
    // A refused run_id is not used up: the corrected request is accepted.
    let (code, _) = d.post("/api/jobs", &job);
    assert_eq!(code, 202);
    assert_eq!(d.wait_final("4f1d3c55-6b4e-4c8a-9d0e-1a2b3c4d5e6f", Duration::from_secs(60))["status"], "succeeded");
    assert!(!d.out.path().join("x").exists() && !d.out.path().join("../x").exists());
    assert_eq!(d.get("/health").0, 200);
    assert_eq!(d.get("/api/jobs/00000000-0000-4000-8000-00000000dead").0, 404);
}

/// SPEC 8's families are there from the start, at 0, before any job, read or callback.
#[test]
fn every_metric_family_is_exposed_before_the_first_job() {
    let d = Daemon::start(&examples(), &[]);
    let text = d.get("/metrics").1.as_str().unwrap_or_default().to_string();
    for line in [
        "kalla_jobs_total{outcome=\"succeeded\"} 0",
        "kalla_jobs_total{outcome=\"failed\"} 0",
        "kalla_jobs_total{outcome=\"cancelled\"} 0",
        "kalla_job_duration_seconds_count{mode=\"local\"} 0",
        "kalla_job_duration_seconds_count{mode=\"cluster\"} 0",
        "kalla_source_rows_read_total{kind=\"postgres\"} 0",
        "kalla_source_bytes_read_total{kind=\"csv\"} 0",
        "kalla_callback_attempts_total{kind=\"complete\",result=\"failed\"} 0",
        "kalla_callback_attempts_total{kind=\"progress\",result=\"delivered\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
    }
}

#[test]
fn the_api_token_is_required_when_set() {
    let mut d = Daemon::start(&examples(), &["--api-token", "s3cret-token"]);
    assert_eq!(d.get("/api/jobs").0, 200);
    d.token = Some("wrong".into());
    let (code, e) = d.get("/api/jobs");
    assert_eq!((code, e["error"]["code"].as_str()), (401, Some("unauthorized")));
    d.token = None;
    assert_eq!(d.post("/api/jobs", &example_job()).0, 401);
    assert_eq!(d.get("/health").0, 200);
    // The scheme is case-insensitive (RFC 7235); a 401 names the scheme it wants.
    let url = format!("{}/api/jobs", d.base);
    for header in ["bearer s3cret-token", "BEARER s3cret-token"] {
        assert_eq!(
            d.client.get(&url).header("authorization", header).send().unwrap().status().as_u16(),
            200,
            "{header}"
        );
    }
    let refused = d.client.get(&url).header("authorization", "Basic s3cret-token").send().unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
}

/// SPEC 3: every error is `{"error": …}`, a method an endpoint does not take too; a missing
/// field or a bad query parameter is named in `field`.
#[test]
fn a_wrong_method_and_a_missing_field_get_the_error_document() {
    let d = Daemon::start(&examples(), &[]);
    let resp = d.client.delete(format!("{}/api/jobs", d.base)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    let mut job = example_job();
    job.as_object_mut().unwrap().remove("match_sql");
    let (code, e) = d.post("/api/jobs", &job);
    assert_eq!(
        (code, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (422, Some("invalid_field"), Some("match_sql")),
        "{e}"
    );
    let (code, e) = d.get("/api/jobs?status=weird");
    assert_eq!((code, e["error"]["field"].as_str()), (422, Some("status")), "{e}");
}

/// A job that runs for a long time: a join whose output grows quadratically.
pub(crate) fn long_job(data: &Path, name: &str) -> Value {
    let mut csv = String::from("id,g\n");
    for i in 0..20_000 {
        csv.push_str(&format!("{i},{}\n", i % 4));
    }
    std::fs::write(data.join("a.csv"), &csv).unwrap();
    std::fs::write(data.join("b.csv"), &csv).unwrap();
    let id = uuid_for(name);
    json!({
        "run_id": id,
        "match_sql": "SELECT a.id AS aid, b.id AS bid FROM a JOIN b ON a.g = b.g",
        "sources": [{"alias": "a", "uri": "a.csv", "primary_key": ["id"]}, {"alias": "b", "uri": "b.csv", "primary_key": ["id"]}],
        "output_path": format!("long/{name}")
    })
}

fn uuid_for(name: &str) -> String {
    let n: u64 = name.bytes().fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff)
}

#[test]
fn cancelling_running_and_queued_jobs_stops_them_and_writes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &["--max-concurrent-jobs", "1"]);
    let a = long_job(data.path(), "a");
    let b = long_job(data.path(), "b");
    assert_eq!(d.post("/api/jobs", &a).0, 202);
    assert_eq!(d.post("/api/jobs", &b).0, 202);
    let (a_id, b_id) = (a["run_id"].as_str().unwrap(), b["run_id"].as_str().unwrap());
    d.wait_status(a_id, "running");
    assert_eq!(d.get(&format!("/api/jobs/{b_id}")).1["status"], "queued");
    assert_eq!(d.post(&format!("/api/jobs/{b_id}/cancel"), &json!({})).0, 202);
    assert_eq!(d.wait_final(b_id, Duration::from_secs(5))["error"]["code"], "cancelled");
    let asked = Instant::now();
    assert_eq!(d.post(&format!("/api/jobs/{a_id}/cancel"), &json!({})).0, 202);
    let s = d.wait_final(a_id, Duration::from_secs(5));
    assert!(asked.elapsed() < Duration::from_secs(1), "cancel took {:?}", asked.elapsed());
    assert_eq!(s["status"], "cancelled");
    // Cancelling again is fine.
    assert_eq!(d.post(&format!("/api/jobs/{a_id}/cancel"), &json!({})).0, 202);
    let long = d.out.path().join("long");
    let left: Vec<_> = std::fs::read_dir(&long).map(|r| r.collect()).unwrap_or_default();
    assert!(left.is_empty(), "cancelled jobs left {left:?}");
}

/// `--queue-capacity` counts the jobs waiting for a slot: with 0, a job that finds a free slot
/// runs, and one that would have to wait is refused.
#[test]
fn the_queue_capacity_counts_only_jobs_waiting_for_a_slot() {
    let data = tempfile::tempdir().unwrap();
    for (capacity, admitted) in [("0", 1), ("1", 2)] {
        let d = Daemon::start(data.path(), &["--max-concurrent-jobs", "1", "--queue-capacity", capacity]);
        let jobs: Vec<Value> = (0..3).map(|i| long_job(data.path(), &format!("q{capacity}{i}"))).collect();
        let ids: Vec<&str> = jobs.iter().map(|j| j["run_id"].as_str().unwrap()).collect();
        assert_eq!(d.post("/api/jobs", &jobs[0]).0, 202, "capacity {capacity}");
        d.wait_status(ids[0], "running");
        for (i, job) in jobs.iter().enumerate().skip(1) {
            let (code, e) = d.post("/api/jobs", job);
            if i < admitted {
                assert_eq!(code, 202, "capacity {capacity}, job {i}: {e}");
            } else {
                assert_eq!(
                    (code, e["error"]["code"].as_str()),
                    (503, Some("queue_full")),
                    "capacity {capacity}, job {i}"
                );
            }
        }
        for id in &ids[..admitted] {
            assert_eq!(d.post(&format!("/api/jobs/{id}/cancel"), &json!({})).0, 202);
            d.wait_final(id, Duration::from_secs(10));
        }
    }
}

/// SPEC 3.1: an output_path that will not be free is 422 `output_exists` at submission, also
/// while another job that will write it is queued or running (it used to run in full, then fail).
#[test]
fn a_second_job_for_the_output_of_a_job_not_ended_is_refused_at_submission() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &["--max-concurrent-jobs", "1"]);
    let first = long_job(data.path(), "same");
    let mut second = long_job(data.path(), "other");
    second["output_path"] = first["output_path"].clone();
    let first_id = first["run_id"].as_str().unwrap();
    assert_eq!(d.post("/api/jobs", &first).0, 202);
    let (code, e) = d.post("/api/jobs", &second);
    assert_eq!(
        (code, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (422, Some("output_exists"), Some("output_path")),
        "{e}"
    );
    assert!(e["error"]["message"].as_str().unwrap().contains(first_id), "{e}");
    assert_eq!(d.post(&format!("/api/jobs/{first_id}/cancel"), &json!({})).0, 202);
    d.wait_final(first_id, Duration::from_secs(10));
    // Cancelled, the first wrote nothing: the path is free again.
    assert_eq!(d.post("/api/jobs", &second).0, 202);
    let second_id = second["run_id"].as_str().unwrap();
    assert_eq!(d.post(&format!("/api/jobs/{second_id}/cancel"), &json!({})).0, 202);
    d.wait_final(second_id, Duration::from_secs(10));
}

#[test]
fn a_job_past_its_timeout_fails_with_timeout() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &["--job-timeout", "300ms"]);
    let job = long_job(data.path(), "t");
    assert_eq!(d.post("/api/jobs", &job).0, 202);
    let s = d.wait_final(job["run_id"].as_str().unwrap(), Duration::from_secs(10));
    assert_eq!((s["status"].as_str(), s["error"]["code"].as_str()), (Some("failed"), Some("timeout")), "{s}");
    assert!(!d.out.path().join("long/t").exists());
}

/// --job-timeout bounds the whole job from its slot: waiting for an executor counts too (a job
/// used to wait the full --cluster-wait whatever its timeout).
#[test]
fn waiting_for_an_executor_counts_toward_the_job_timeout() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &["--mode", "cluster", "--cluster-wait", "20s", "--job-timeout", "500ms"]);
    let job = long_job(data.path(), "w");
    let asked = Instant::now();
    assert_eq!(d.post("/api/jobs", &job).0, 202);
    let s = d.wait_final(job["run_id"].as_str().unwrap(), Duration::from_secs(15));
    assert_eq!((s["status"].as_str(), s["error"]["code"].as_str()), (Some("failed"), Some("timeout")), "{s}");
    assert!(asked.elapsed() < Duration::from_secs(10), "took {:?}", asked.elapsed());
}

#[test]
fn sigterm_drains_fails_queued_jobs_and_exits_zero() {
    let data = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(data.path(), &["--max-concurrent-jobs", "1", "--shutdown-grace", "200ms"]);
    let a = long_job(data.path(), "sa");
    let b = long_job(data.path(), "sb");
    assert_eq!(d.post("/api/jobs", &a).0, 202);
    assert_eq!(d.post("/api/jobs", &b).0, 202);
    d.wait_status(a["run_id"].as_str().unwrap(), "running");
    let pid = d.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!d.out.path().join("long/sa").exists() && !d.out.path().join("long/sb").exists());
    let _ = &d.data;
}

#[test]
fn validate_describes_the_job_or_refuses_it_like_submit() {
    let d = Daemon::start(&examples(), &[]);
    let job = example_job();
    let (code, plan) = d.post("/api/jobs/validate", &job);
    assert_eq!(code, 200, "{plan}");
    assert_eq!(
        plan["output_columns"],
        json!(["invoice_id", "customer", "amount", "payment_ids", "paid_amount", "payment_count"])
    );
    assert_eq!(plan["key_columns"], json!({"invoices": ["invoice_id"], "payments": ["payment_ids"]}));
    assert_eq!(plan["sources"]["payments"]["columns"][2], json!({"name": "amount", "type": "decimal(12,2)"}));
    // Validation runs nothing and writes nothing.
    assert_eq!(d.get("/api/jobs").1["jobs"], json!([]));
    let written: Vec<String> = std::fs::read_dir(d.out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(written, vec![".kallad"], "only the (empty) journal directory");
    assert!(std::fs::read_dir(d.out.path().join(".kallad")).unwrap().next().is_none());
    let mut bad = job.clone();
    bad["match_sql"] = json!("SELECT i.customer FROM invoices i");
    let (code, e) = d.post("/api/jobs/validate", &bad);
    assert_eq!((code, e["error"]["code"].as_str()), (422, Some("untraceable_key")), "{e}");
}

/// SQL chains deep enough to overflow a daemon thread's stack while planned (or to take
/// seconds planning) are refused on their size; the same shapes at the limits plan in time; the
/// daemon lives through all of them.
#[test]
fn match_sql_at_the_size_limits_plans_and_past_them_is_refused_while_the_daemon_lives() {
    let d = Daemon::start(&examples(), &[]);
    let job = |sql: String| {
        let mut j = example_job();
        j["match_sql"] = json!(sql);
        // Only the invoices' key is traced; payments are counted.
        j["sources"][1].as_object_mut().unwrap().remove("primary_key");
        j
    };
    let select = "SELECT i.invoice_id FROM invoices i";
    let unions = |n: usize| format!("{select}{}", format!(" UNION ALL {select}").repeat(n - 1));
    let ctes = (1..99).map(|k| format!("c{k} AS (SELECT invoice_id FROM c{})", k - 1)).collect::<Vec<_>>();
    let ctes = format!("WITH c0 AS (SELECT invoice_id FROM invoices), {} SELECT invoice_id FROM c98", ctes.join(", "));
    let joins = (0..100).map(|k| format!("JOIN invoices i{k} ON i{k}.invoice_id = i.invoice_id")).collect::<Vec<_>>();
    let joins = format!("{select} {}", joins.join(" "));
    let ors = (0..500).map(|k| format!("i.amount > {k}")).collect::<Vec<_>>();
    let ors = format!("{select} WHERE {}", ors.join(" OR "));
    let commas: String = (0..100).map(|k| format!(", invoices i{k}")).collect();
    let commas = format!("{select}{commas} WHERE i.amount > 0");
    let casts = format!("SELECT i.invoice_id, i.amount{} AS amount FROM invoices i", "::DECIMAL(12,2)".repeat(1000));
    for (what, sql) in [
        ("100 unions", unions(100)),
        ("99 CTEs", ctes),
        ("100 joins", joins),
        ("100 tables in one FROM", commas),
        ("999 operators", ors),
        ("1,000 casts", casts),
    ] {
        let started = Instant::now();
        let (code, plan) = d.post("/api/jobs/validate", &job(sql));
        assert_eq!(code, 200, "{what}: {plan}");
        assert_eq!(plan["key_columns"], json!({"invoices": ["invoice_id"]}), "{what}");
        assert!(started.elapsed() < Duration::from_secs(10), "{what} took {:?}", started.elapsed());
    }
    // 30,000 set operations: far past the limit, and far past what a thread's stack survives.
    for path in ["/api/jobs/validate", "/api/jobs"] {
        let deep = format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(29_999));
        let (code, e) = d.post(path, &job(deep));
        assert_eq!((code, e["error"]["code"].as_str()), (422, Some("invalid_sql")), "{path}: {e}");
        assert_eq!(e["error"]["message"], "match_sql has 30000 query blocks (SELECT); at most 100 are accepted");
        // The same chain without a SELECT in it.
        let deep = format!("VALUES (1){}", " UNION ALL VALUES (1)".repeat(29_999));
        let (code, e) = d.post(path, &job(deep));
        assert_eq!((code, e["error"]["code"].as_str()), (422, Some("invalid_sql")), "{path}: {e}");
        assert_eq!(
            e["error"]["message"],
            "match_sql has 29999 set operations (UNION, INTERSECT, EXCEPT); at most 100 are accepted"
        );
    }
    assert_eq!(d.get("/health").0, 200);
}

#[test]
fn the_openapi_document_describes_the_api_and_its_error_codes() {
    let d = Daemon::start(&examples(), &[]);
    let (code, doc) = d.get("/api/openapi.json");
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"), "{}", doc["openapi"]);
    for path in [
        "/api/jobs",
        "/api/jobs/validate",
        "/api/jobs/{run_id}",
        "/api/jobs/{run_id}/cancel",
        "/api/cluster",
        "/ready",
        "/metrics",
        "/health",
        "/api/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"].as_array().cloned().unwrap_or_default();
    for c in ["bad_json", "run_id_conflict", "untraceable_key", "daemon_restarted", "not_found", "method_not_allowed"] {
        assert!(codes.contains(&json!(c)), "{c} missing from {codes:?}");
    }
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["JobRequest"]["properties"].get("match_sql").is_some());
    // Every answer has a schema a generated client can use, and the token is declared.
    let body = |path: &str, method: &str, status: &str| {
        doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"].clone()
    };
    assert_eq!(body("/api/jobs", "post", "202"), json!("#/components/schemas/Accepted"));
    assert_eq!(body("/api/jobs", "get", "200"), json!("#/components/schemas/JobList"));
    assert_eq!(body("/api/jobs/{run_id}/cancel", "post", "202"), json!("#/components/schemas/CancelRequested"));
    assert_eq!(body("/ready", "get", "200"), json!("#/components/schemas/Readiness"));
    assert_eq!(body("/api/cluster", "get", "200"), json!("#/components/schemas/ClusterView"));
    for field in ["id", "host", "flight_port", "grpc_port", "slots", "last_seen", "last_heartbeat_secs"] {
        assert!(schemas["ExecutorView"]["properties"].get(field).is_some(), "{field}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["paths"]["/api/jobs"]["post"]["security"], json!([{"bearer": []}]));
    // /validate never answers 409 or 503.
    let validate = doc["paths"]["/api/jobs/validate"]["post"]["responses"].as_object().unwrap();
    assert!(!validate.contains_key("409") && !validate.contains_key("503"), "{validate:?}");
    // The documented bodies are the ones served.
    let ready = d.get("/ready").1;
    assert_eq!(ready, json!({"mode": "local", "executors": 0, "queued": 0, "running": 0}));
}

#[test]
fn finished_jobs_are_forgotten_after_the_retention() {
    let d = Daemon::start(&examples(), &["--job-retention", "2s"]);
    let job = example_job();
    let run_id = job["run_id"].as_str().unwrap();
    assert_eq!(d.post("/api/jobs", &job).0, 202);
    assert_eq!(d.wait_final(run_id, Duration::from_secs(60))["status"], "succeeded");
    let journal = d.out.path().join(format!(".kallad/{run_id}.jsonl"));
    assert!(journal.is_file());
    assert_eq!(d.get(&format!("/api/jobs/{run_id}")).0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get(&format!("/api/jobs/{run_id}")).0 == 200 {
        assert!(Instant::now() < deadline, "the job was never forgotten");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, e) = d.get(&format!("/api/jobs/{run_id}"));
    assert_eq!((code, e["error"]["code"].as_str()), (404, Some("not_found")));
    assert!(!journal.exists(), "the journal file of an expired job stays");
    // Its outputs are the caller's and stay.
    assert!(d.out.path().join("demo/5c1f6a3e-2b1d-4c1e-9d53-0d6f6c2b8a10/summary.json").is_file());
}

#[test]
fn a_job_over_the_memory_limit_fails_clearly_and_the_daemon_lives_on() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &["--memory-limit", "64KiB", "--partitions", "1"]);
    let mut job = long_job(data.path(), "mem");
    // An equi-join on the key: the hash table of 20,000 rows cannot live in 64 KiB and a hash
    // join's build side does not spill.
    job["match_sql"] = json!("SELECT a.id AS aid, b.id AS bid FROM a JOIN b ON a.id = b.id");
    assert_eq!(d.post("/api/jobs", &job).0, 202);
    let s = d.wait_final(job["run_id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["error"]["code"], "memory_limit_exceeded", "{s}");
    assert!(s["error"]["message"].as_str().unwrap().contains("--memory-limit"), "{s}");
    assert!(!d.out.path().join("long/mem").exists());
    assert_eq!(d.get("/health").0, 200);
    let text = d.get("/metrics").1.as_str().unwrap_or_default().to_string();
    assert!(text.lines().any(|l| l == "kalla_memory_pool_reserved_bytes 0"), "{text}");
    assert!(text.lines().any(|l| l == "kalla_jobs_total{outcome=\"failed\"} 1"), "{text}");
}

#[test]
fn a_run_killed_with_kallad_has_its_temporary_output_removed_when_kallad_starts_again() {
    let data = tempfile::tempdir().unwrap();
    let out = Arc::new(tempfile::tempdir().unwrap());
    let d = Daemon::start_in(data.path(), Arc::clone(&out), &[]);
    let job = long_job(data.path(), "rk");
    assert_eq!(d.post("/api/jobs", &job).0, 202);
    let id = job["run_id"].as_str().unwrap();
    let tmp = out.path().join(format!("long/rk.tmp-{id}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tmp.is_dir() {
        assert!(Instant::now() < deadline, "the run never created {tmp:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(d); // SIGKILL
    assert!(tmp.is_dir());
    // A removal still being retried when kallad exited leaves the directory renamed aside.
    let removing = out.path().join(format!("long/rk.tmp-{id}.removing-6f1c1f43-9a56-4f1e-8d0e-3c1f8f0e2a11"));
    // Names that are not this run's temporary directory stay.
    let other_run = out.path().join("long/rk.tmp-00000000-0000-4000-8000-00000000beef");
    let output = out.path().join("long/rk-done");
    for dir in [&removing, &other_run, &output] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("part-x.parquet"), b"x").unwrap();
    }

    let d = Daemon::start_in(data.path(), Arc::clone(&out), &[]);
    let (code, s) = d.get(&format!("/api/jobs/{id}"));
    assert_eq!((code, s["error"]["code"].as_str()), (200, Some("daemon_restarted")), "{s}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while tmp.exists() || removing.exists() {
        assert!(Instant::now() < deadline, "left behind: {:?} {:?}", tmp.exists(), removing.exists());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(other_run.join("part-x.parquet").is_file());
    assert!(output.join("part-x.parquet").is_file());
    assert!(!out.path().join("long/rk").exists());
}
