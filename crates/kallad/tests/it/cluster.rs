//! Executors register with the scheduler embedded in `kallad scheduler`: real processes on
//! 127.0.0.1, ephemeral ports.

use crate::daemon::Daemon;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The scheduler's gRPC address, from its log.
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

struct Executor(Child);

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An executor process; its log goes to `log`.
fn executor(scheduler_port: u16, flight: u16, grpc: u16, extra: &[&str], log: &std::path::Path) -> Executor {
    Executor(
        Command::new(env!("CARGO_BIN_EXE_kallad"))
            .args(["executor", "--scheduler-host", "127.0.0.1", "--concurrent-tasks", "2"])
            .args(["--scheduler-port", &scheduler_port.to_string()])
            .args(["--flight-port", &flight.to_string(), "--grpc-port", &grpc.to_string()])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
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

#[test]
fn executors_join_and_leave_a_running_scheduler() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start_logging(
        data.path(),
        Arc::new(tempfile::tempdir().unwrap()),
        &["--executor-timeout", "7s"],
        "info",
    );
    let port = grpc_port(&d);
    assert_eq!(wait_for_executors(&d, 0, Duration::from_secs(1))["mode"], "local");
    let (f1, g1, f2, g2) = (free_port(), free_port(), free_port(), free_port());
    let logs = tempfile::tempdir().unwrap();
    let (log1, log2) = (logs.path().join("first.log"), logs.path().join("second.log"));
    let mut first = executor(port, f1, g1, &[], &log1);
    let body = wait_for_executors(&d, 1, Duration::from_secs(20));
    let e = &body["executors"][0];
    assert_eq!(
        (e["host"].as_str(), e["flight_port"].as_u64(), e["grpc_port"].as_u64()),
        (Some("127.0.0.1"), Some(f1 as u64), Some(g1 as u64))
    );
    assert_eq!(e["slots"], 2);
    // A second one joins without restarting anything.
    let _second = executor(port, f2, g2, &["--memory-limit", "1GiB"], &log2);
    wait_for_executors(&d, 2, Duration::from_secs(20));
    // No --memory-limit: no pool limit (not Ballista's 70 % of the host); with it: that pool.
    let text = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    assert!(text(&log1).contains("Executor memory pool: unbounded"), "{}", text(&log1));
    assert!(text(&log2).contains("configured via --memory-pool-size"), "{}", text(&log2));
    assert_eq!(d.get("/ready").1["executors"], 2);
    let metrics = d.get("/metrics").1.as_str().unwrap_or_default().to_string();
    assert!(metrics.lines().any(|l| l == "kalla_executors_live 2"), "{metrics}");
    // A killed executor is gone within the executor timeout (7 s) plus the reaper's period.
    first.0.kill().unwrap();
    let killed = Instant::now();
    wait_for_executors(&d, 1, Duration::from_secs(12));
    assert!(killed.elapsed() < Duration::from_secs(12));
}
