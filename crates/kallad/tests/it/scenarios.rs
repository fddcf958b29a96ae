//! The engine's scenarios (`testdata/scenarios.json`, also run by kalla-core's tests) run through
//! one daemon over HTTP: each job's status document and its `complete` callback carry the counts
//! the scenario expects.

use crate::callbacks::{Receiver, wait_delivered};
use crate::daemon::Daemon;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

pub(crate) fn scenarios() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scenarios.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let scenarios: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
    assert!(!scenarios.is_empty(), "no scenarios in {}", path.display());
    scenarios
}

/// Writes the scenario's files under `<data>/<name>/` and returns its job request, the source
/// URIs pointing there, its outputs under `<prefix>/<name>`.
pub(crate) fn request(data: &Path, s: &Value, callback_url: &str, prefix: &str) -> Value {
    let name = s["name"].as_str().expect("every scenario has a name");
    let dir = data.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, content) in s["files"].as_object().unwrap_or_else(|| panic!("{name}: no files")) {
        std::fs::write(dir.join(file), content.as_str().unwrap()).unwrap();
    }
    let mut sources = s["sources"].clone();
    for source in sources.as_array_mut().unwrap() {
        source["uri"] = json!(format!("{name}/{}", source["uri"].as_str().unwrap()));
    }
    json!({
        "run_id": uuid::Uuid::new_v4().to_string(),
        "match_sql": s["match_sql"],
        "sources": sources,
        "output_path": format!("{prefix}/{name}"),
        "callback_url": callback_url,
    })
}

#[test]
fn every_engine_scenario_over_http_reports_its_counts_in_the_complete_callback() {
    let scenarios = scenarios();
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![]);
    let d = Daemon::start(data.path(), &["--callback-retry", "0s,50ms,50ms"]);
    let callback_url = format!("http://{}/hooks", receiver.addr);
    let mut runs = Vec::new();
    for s in &scenarios {
        let job = request(data.path(), s, &callback_url, "scen");
        let (code, body) = d.post("/api/jobs", &job);
        assert_eq!(code, 202, "{}: {body}", s["name"]);
        runs.push((s, job["run_id"].as_str().unwrap().to_string()));
    }
    for (s, run_id) in &runs {
        let (name, expect) = (s["name"].as_str().unwrap(), &s["expect"]);
        let status = d.wait_final(run_id, Duration::from_secs(120));
        assert_eq!(status["status"], "succeeded", "{name}: {status}");
        assert_eq!(status["counts"]["matched"], expect["matched"], "{name}: matched in {status}");
        assert_eq!(status["counts"]["total"], expect["total"], "{name}: total in {status}");
        assert_eq!(status["counts"]["unmatched"], expect["unmatched"], "{name}: unmatched in {status}");
        wait_delivered(&d, run_id);
    }
    let completes: Vec<Value> =
        receiver.finals("complete").iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
    let errors: Vec<Value> =
        receiver.finals("error").iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
    assert!(errors.is_empty(), "error callbacks: {errors:?}");
    assert_eq!(completes.len(), runs.len(), "one complete callback per job");
    for (s, run_id) in &runs {
        let (name, expect) = (s["name"].as_str().unwrap(), &s["expect"]);
        let mine: Vec<&Value> = completes.iter().filter(|b| b["run_id"] == json!(run_id)).collect();
        assert_eq!(mine.len(), 1, "{name}: complete callbacks for {run_id}: {mine:?}");
        let body = mine[0];
        let left = s["sources"][0]["alias"].as_str().unwrap();
        // A one-source job has no right side: its fields are null.
        let right = |of: &str| s["sources"][1]["alias"].as_str().map_or(Value::Null, |r| expect[of][r].clone());
        assert_eq!(body["matched_count"], expect["matched"], "{name}: matched_count in {body}");
        assert_eq!(body["total_left"], expect["total"][left], "{name}: total_left in {body}");
        assert_eq!(body["total_right"], right("total"), "{name}: total_right in {body}");
        assert_eq!(body["unmatched_left_count"], expect["unmatched"][left], "{name}: unmatched_left_count in {body}");
        assert_eq!(body["unmatched_right_count"], right("unmatched"), "{name}: unmatched_right_count in {body}");
        for (alias, count) in expect["unmatched"].as_object().unwrap() {
            assert_eq!(&body["unmatched"][alias]["count"], count, "{name}: unmatched.{alias}.count in {body}");
        }
    }
}
