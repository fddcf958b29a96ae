//! Callbacks against a real HTTP receiver in the test process.

use crate::daemon::{Daemon, example_job, examples, long_job};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Clone)]
pub(crate) struct Received {
    at: Instant,
    path: String,
    headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

/// A minimal HTTP/1.1 receiver: answers final callbacks with the scripted statuses (then 200),
/// everything else with 200, and records every request.
pub(crate) struct Receiver {
    pub(crate) addr: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start_on(listener: TcpListener, script: Vec<u16>) -> Receiver {
        let addr = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let mut script: VecDeque<u16> = script.into();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let code = if path.ends_with("/progress") { 200 } else { script.pop_front().unwrap_or(200) };
                log.lock().unwrap().push(Received { at: Instant::now(), path, headers, body });
                let _ = write!(stream, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Receiver { addr, received }
    }

    pub(crate) fn start(script: Vec<u16>) -> Receiver {
        Receiver::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    pub(crate) fn finals(&self, kind: &str) -> Vec<Received> {
        self.received.lock().unwrap().iter().filter(|r| r.path.ends_with(&format!("/{kind}"))).cloned().collect()
    }
}

fn verify(r: &Received) {
    let id = &r.headers["webhook-id"];
    let ts = &r.headers["webhook-timestamp"];
    let key = base64::engine::general_purpose::STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let want = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(r.headers["webhook-signature"], want, "signature of {r:?}");
}

pub(crate) fn wait_delivered(d: &Daemon, run_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = d.get(&format!("/api/jobs/{run_id}")).1;
        if s["callback"]["delivered"] == true {
            return s;
        }
        assert!(Instant::now() < deadline, "callback never delivered: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn complete_is_retried_with_one_webhook_id_and_signatures_that_verify() {
    let receiver = Receiver::start(vec![500, 500]);
    let d = Daemon::start(&examples(), &["--callback-secret", SECRET, "--callback-retry", "0s,50ms,50ms,50ms"]);
    let mut job = example_job();
    job["callback_url"] = json!(format!("http://{}/api/worker", receiver.addr));
    assert_eq!(d.post("/api/jobs", &job).0, 202);
    let s = wait_delivered(&d, job["run_id"].as_str().unwrap());
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["callback"], json!({"delivered": true, "attempts": 3, "last_error": null}));
    let attempts = receiver.finals("complete");
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0].path, "/api/worker/complete");
    let ids: Vec<&String> = attempts.iter().map(|r| &r.headers["webhook-id"]).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    attempts.iter().for_each(verify);
    let body: Value = serde_json::from_slice(&attempts[2].body).unwrap();
    assert_eq!(body["run_id"], job["run_id"]);
    assert_eq!(body["matched_count"], 8);
    assert_eq!((body["unmatched_left_count"].clone(), body["unmatched_right_count"].clone()), (json!(4), json!(4)));
    assert_eq!((body["total_left"].clone(), body["total_right"].clone()), (json!(12), json!(15)));
    assert_eq!(body["unmatched"]["payments"]["count"], 4);
    assert_eq!(
        body["output_paths"]["unmatched_left"],
        "demo/5c1f6a3e-2b1d-4c1e-9d53-0d6f6c2b8a10/unmatched_invoices.parquet"
    );
    let text = d.get("/metrics").1.as_str().unwrap_or_default().to_string();
    for line in [
        "kalla_callback_attempts_total{kind=\"complete\",result=\"failed\"} 2",
        "kalla_callback_attempts_total{kind=\"complete\",result=\"delivered\"} 1",
        "kalla_callbacks_pending 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
    }
}

#[test]
fn progress_rises_with_rows_read_at_most_once_a_second_and_stays_below_one_while_running() {
    let receiver = Receiver::start(vec![]);
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let mut job = long_job(data.path(), "progress");
    job["callback_url"] = json!(format!("http://{}", receiver.addr));
    let run_id = job["run_id"].as_str().unwrap().to_string();
    assert_eq!(d.post("/api/jobs", &job).0, 202);
    // match_sql reads both 20,000-row sources once of their three passes: a third of the rows
    // expected, while the quadratic join keeps the job running.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = d.get(&format!("/api/jobs/{run_id}")).1;
        if s["progress"].as_f64().unwrap() > 0.3 {
            break s;
        }
        assert!(Instant::now() < deadline, "progress never rose: {s}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["status"], "running", "{status}");
    assert!(status["progress"].as_f64().unwrap() < 1.0, "{status}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.post(&format!("/api/jobs/{run_id}/cancel"), &json!({})).0, 202);
    d.wait_final(&run_id, Duration::from_secs(5));
    let progress = receiver.finals("progress");
    assert!(progress.len() >= 2, "{progress:?}");
    let bodies: Vec<Value> = progress.iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
    for pair in progress.windows(2) {
        assert!(
            pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(900),
            "two progress callbacks within a second"
        );
    }
    for pair in bodies.windows(2) {
        assert!(pair[1]["progress"].as_f64() >= pair[0]["progress"].as_f64(), "{bodies:?}");
        assert!(pair[1]["rows_read"].as_u64() >= pair[0]["rows_read"].as_u64(), "{bodies:?}");
    }
    let last = bodies.last().unwrap();
    assert_eq!(last["run_id"], json!(run_id));
    assert!(last["rows_read"].as_u64().unwrap() >= 40_000, "{last}");
    assert!(last["progress"].as_f64().unwrap() < 1.0, "{last}");
}

#[test]
fn a_dead_receiver_never_blocks_the_job_and_is_delivered_to_when_back() {
    let parked = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = parked.local_addr().unwrap();
    drop(parked);
    let d =
        Daemon::start(&examples(), &["--callback-retry", "0s,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms"]);
    let mut job = example_job();
    job["callback_url"] = json!(format!("http://{addr}/api/worker"));
    assert_eq!(d.post("/api/jobs", &job).0, 202);
    let run_id = job["run_id"].as_str().unwrap();
    let s = d.wait_final(run_id, Duration::from_secs(60));
    assert_eq!(s["status"], "succeeded");
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = d.get(&format!("/api/jobs/{run_id}")).1;
        if s["callback"]["attempts"].as_u64().unwrap_or(0) >= 1 {
            break s;
        }
        assert!(Instant::now() < deadline, "no attempt recorded: {s}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(s["callback"]["delivered"], false);
    assert!(s["callback"]["last_error"].as_str().unwrap_or("").contains("connection failed"), "{s}");
    let receiver = Receiver::start_on(TcpListener::bind(addr).unwrap(), vec![]);
    let s = wait_delivered(&d, run_id);
    assert!(s["callback"]["attempts"].as_u64().unwrap() >= 2);
    assert_eq!(receiver.finals("complete").len(), 1);
}

#[test]
fn a_cancelled_job_sends_an_error_callback() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![]);
    let d = Daemon::start(data.path(), &["--callback-retry", "0s"]);
    let mut job = long_job(data.path(), "cb");
    job["callback_url"] = json!(format!("http://{}/hooks", receiver.addr));
    assert_eq!(d.post("/api/jobs", &job).0, 202);
    let run_id = job["run_id"].as_str().unwrap();
    d.wait_status(run_id, "running");
    assert_eq!(d.post(&format!("/api/jobs/{run_id}/cancel"), &json!({})).0, 202);
    wait_delivered(&d, run_id);
    let errors = receiver.finals("error");
    assert_eq!(errors.len(), 1);
    let body: Value = serde_json::from_slice(&errors[0].body).unwrap();
    assert_eq!((body["run_id"].as_str(), body["code"].as_str()), (Some(run_id), Some("cancelled")));
    assert!(body["error"].as_str().unwrap_or("").contains("cancelled"));
    assert!(!errors[0].headers.contains_key("webhook-signature"), "unsigned without a secret");
}

#[test]
fn sigterm_sends_the_error_callbacks_of_the_jobs_it_shuts_down_before_exiting() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![]);
    let mut d = Daemon::start(data.path(), &["--max-concurrent-jobs", "1", "--shutdown-grace", "200ms"]);
    // Both jobs are written first: long_job rewrites the shared input files.
    let jobs: Vec<Value> = ["ta", "tb"].iter().map(|name| long_job(data.path(), name)).collect();
    let mut ids = Vec::new();
    for mut job in jobs {
        job["callback_url"] = json!(format!("http://{}", receiver.addr));
        assert_eq!(d.post("/api/jobs", &job).0, 202);
        ids.push(job["run_id"].as_str().unwrap().to_string());
    }
    d.wait_status(&ids[0], "running");
    let pid = d.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the daemon did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Both callbacks were received before the process was gone.
    let errors = receiver.finals("error");
    let mut got: Vec<(String, String)> = errors
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            (body["run_id"].as_str().unwrap().to_string(), body["code"].as_str().unwrap().to_string())
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = ids.iter().map(|i| (i.clone(), "shutting_down".to_string())).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn after_kill_9_unfinished_jobs_fail_with_daemon_restarted_and_their_error_callbacks_go_out() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![]);
    let out = Arc::new(tempfile::tempdir().unwrap());
    let d = Daemon::start_in(data.path(), Arc::clone(&out), &["--max-concurrent-jobs", "1"]);
    let mut a = long_job(data.path(), "ra");
    let mut b = long_job(data.path(), "rb");
    for j in [&mut a, &mut b] {
        j["callback_url"] = json!(format!("http://{}/w", receiver.addr));
        assert_eq!(d.post("/api/jobs", j).0, 202);
    }
    let (a_id, b_id) = (a["run_id"].as_str().unwrap(), b["run_id"].as_str().unwrap());
    d.wait_status(a_id, "running");
    drop(d); // SIGKILL
    let d = Daemon::start_in(data.path(), Arc::clone(&out), &["--callback-retry", "0s"]);
    for id in [a_id, b_id] {
        let (code, s) = d.get(&format!("/api/jobs/{id}"));
        assert_eq!(code, 200, "{s}");
        assert_eq!(
            (s["status"].as_str(), s["error"]["code"].as_str()),
            (Some("failed"), Some("daemon_restarted")),
            "{s}"
        );
        wait_delivered(&d, id);
    }
    let errors = receiver.finals("error");
    assert_eq!(errors.len(), 2);
    for e in &errors {
        let body: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(body["code"], "daemon_restarted");
    }
    // The same request again answers the recorded status; another body under the id is 409.
    let (code, s) = d.post("/api/jobs", &a);
    assert_eq!((code, s["error"]["code"].as_str()), (200, Some("daemon_restarted")));
    let mut other = a.clone();
    other["output_path"] = json!("long/other");
    assert_eq!(d.post("/api/jobs", &other).0, 409);
    assert!(!out.path().join("long/ra").exists());
}
