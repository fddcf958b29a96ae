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
    assert!(!out.path().join("x").exists());
}
