//! `kallad run` as a real process on the bundled example.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn kallad_run(job: &Path, output_dir: &Path) -> (i32, Value) {
    let root = repo_root();
    let out = Command::new(env!("CARGO_BIN_EXE_kallad"))
        .arg("run")
        .arg(job)
        .arg("--data-dir")
        .arg(root.join("examples/data"))
        .arg("--output-dir")
        .arg(output_dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not a status document ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap_or(-1), status)
}

#[test]
fn the_example_job_reconciles_the_sample_data() {
    let out = tempfile::tempdir().unwrap();
    let (code, status) = kallad_run(&repo_root().join("examples/invoices-payments.json"), out.path());
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["status"], "succeeded");
    // By construction of examples/data: 8 invoices are paid (3 exactly, 2 within 1%, 2 by split
    // payments, 1 more exactly), INV-006 (1.33% short), INV-009 (split not summing), INV-010 and
    // INV-012 (no payment) are not; PAY-506, PAY-512, PAY-513 and PAY-514 (unknown reference) are left.
    assert_eq!(status["counts"]["matched"], 8);
    assert_eq!(status["counts"]["total"]["invoices"], 12);
    assert_eq!(status["counts"]["total"]["payments"], 15);
    assert_eq!(status["counts"]["unmatched"]["invoices"], 4);
    assert_eq!(status["counts"]["unmatched"]["payments"], 4);
    let dir = out.path().join("demo/5c1f6a3e-2b1d-4c1e-9d53-0d6f6c2b8a10");
    for f in ["matched.parquet", "unmatched_invoices.parquet", "unmatched_payments.parquet", "summary.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // Running the same job again must not overwrite the committed result.
    let (code, status) = kallad_run(&repo_root().join("examples/invoices-payments.json"), out.path());
    assert_eq!(code, 1);
    assert_eq!(status["error"]["code"], "output_exists");
}

#[test]
fn a_refused_job_exits_1_with_the_error_in_the_status_document() {
    let out = tempfile::tempdir().unwrap();
    let job = out.path().join("job.json");
    std::fs::write(
        &job,
        r#"{"run_id": "9b2f0c1e-0000-4000-8000-000000000001", "match_sql": "DROP TABLE invoices",
            "sources": [{"alias": "invoices", "uri": "invoices.csv", "primary_key": ["invoice_id"]}],
            "output_path": "x"}"#,
    )
    .unwrap();
    let (code, status) = kallad_run(&job, out.path());
    assert_eq!(code, 1);
    assert_eq!(status["status"], "failed");
    assert_eq!(status["error"]["code"], "forbidden_statement");
    assert_eq!(status["error"]["field"], "match_sql");
    assert_eq!(status["stage"], "queued", "refused before it ran");
    assert!(!out.path().join("x").exists());
}

/// Flag values past their bounds (durations over 10 years, counts a semaphore or a planner
/// cannot take) are refused when kallad starts, with exit status 2 and the flag named, rather
/// than panicking later (on SIGTERM, or when a job waits for an executor).
#[test]
fn flags_past_their_bounds_are_refused_at_start() {
    let job = repo_root().join("examples/invoices-payments.json");
    let job = job.to_str().unwrap();
    for (args, flag) in [
        (vec!["scheduler", "--cluster-wait", "300000000000y"], "--cluster-wait"),
        (vec!["scheduler", "--shutdown-grace", "3651d"], "--shutdown-grace"),
        (vec!["scheduler", "--max-concurrent-jobs", "18446744073709551615"], "--max-concurrent-jobs"),
        (vec!["scheduler", "--max-concurrent-jobs", "0"], "--max-concurrent-jobs"),
        (vec!["scheduler", "--callback-retry", "0s,20y"], "--callback-retry"),
        (vec!["executor", "--concurrent-tasks", "100000"], "--concurrent-tasks"),
        (vec!["executor", "--shutdown-grace", "11y"], "--shutdown-grace"),
        (vec!["run", job, "--partitions", "0"], "--partitions"),
    ] {
        // Ports 0: a scheduler or executor that accepted the value would start (and be killed).
        let mut child = Command::new(env!("CARGO_BIN_EXE_kallad"))
            .args(&args)
            .args(if args[0] == "run" { vec![] } else { vec!["--grpc-port", "0"] })
            .args(if args[0] == "scheduler" { vec!["--http-port", "0"] } else { vec![] })
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} was accepted: kallad started");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // The bound itself is accepted.
    let out = Command::new(env!("CARGO_BIN_EXE_kallad"))
        .args(["run", job, "--partitions", "4096", "--data-dir", "/nonexistent-kalla-dir"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_panic_in_the_engine_fails_the_job_with_a_status_document() {
    // DataFusion 55 panics (first_last.rs) on DISTINCT ON with an ORDER BY naming a column twice;
    // with one partition it does so on the thread that runs the job.
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.json");
    let request = serde_json::json!({
        "run_id": "00000000-0000-4000-8000-0000000000aa",
        "match_sql": "SELECT DISTINCT ON (i.customer) i.customer, i.invoice_id FROM invoices i \
                      ORDER BY i.customer, i.invoice_id, i.customer, i.amount",
        "sources": [{"alias": "invoices", "uri": "invoices.csv", "primary_key": ["invoice_id"]}],
        "output_path": "panics"
    });
    std::fs::write(&job, serde_json::to_vec(&request).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kallad"))
        .arg("run")
        .arg(&job)
        .args(["--partitions", "1", "--data-dir"])
        .arg(repo_root().join("examples/data"))
        .arg("--output-dir")
        .arg(dir.path().join("out"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not a status document ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(out.status.code(), Some(1), "{status}");
    assert_eq!((status["status"].as_str(), status["error"]["code"].as_str()), (Some("failed"), Some("internal")));
    // The stage the run was in when it failed, as the daemon reports it.
    assert_eq!(status["stage"], "matching", "{status}");
    assert!(!dir.path().join("out/panics").exists());
}
