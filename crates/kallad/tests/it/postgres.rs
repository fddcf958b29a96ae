//! Postgres sources through the daemon: refusals at submission, failures as callbacks,
//! cancellation that leaves no backend, and no password anywhere.

use crate::callbacks::Receiver;
use crate::daemon::Daemon;
use kalla_testpg::{PASSWORD, PASSWORD_USER, server};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pg_job(run: &str, uri: &str) -> Value {
    json!({
        "run_id": uuid_for(run),
        "match_sql": "SELECT l.id AS lid, r.id AS rid FROM l JOIN r ON l.ref = r.ref",
        "sources": [
            {"alias": "l", "uri": uri, "primary_key": ["id"]},
            {"alias": "r", "uri": uri, "primary_key": ["id"]}
        ],
        "output_path": format!("pg/{run}")
    })
}

fn uuid_for(name: &str) -> String {
    let n: u64 = name.bytes().fold(11u64, |a, b| a.wrapping_mul(131).wrapping_add(b as u64));
    format!("00000000-0000-4000-9000-{:012x}", n & 0xffff_ffff_ffff)
}

/// A URI that needs the password user's real password.
pub(crate) fn password_uri(db: &str, table: &str, password: &str) -> String {
    format!("postgres://{PASSWORD_USER}:{password}@127.0.0.1:{}/{db}?table={table}&sslmode=disable", server().port)
}

#[test]
fn postgres_jobs_run_fail_and_cancel_over_http_without_leaking_the_password() {
    let pg = server();
    let db = pg.database("daemon");
    pg.psql(
        &db,
        "CREATE TABLE t (id int8, ref text, amount numeric(12,2));
         INSERT INTO t SELECT g, 'R' || (g % 1000), g / 100.0 FROM generate_series(1, 4000) g;
         CREATE TABLE nan (id int8, ref text, amount numeric(12,2)); INSERT INTO nan VALUES (1, 'a', 'NaN');
         CREATE TABLE wide (id int8, ref text);
         INSERT INTO wide SELECT g, 'same' FROM generate_series(1, 30000) g; ANALYZE;",
    );
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![]);
    let d = Daemon::start_logging(data.path(), Arc::new(tempfile::tempdir().unwrap()), &[], "debug");

    // Refused at submission: wrong password, missing table, nobody listening.
    let (code, e) = d.post("/api/jobs", &pg_job("wrong", &password_uri(&db, "t", "not-the-password")));
    assert_eq!((code, e["error"]["code"].as_str()), (422, Some("source_unreachable")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("password authentication failed"), "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");
    let (code, e) = d.post("/api/jobs", &pg_job("missing", &password_uri(&db, "nope", PASSWORD)));
    assert_eq!(
        (code, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (422, Some("source_not_found"), Some("sources[0].uri")),
        "{e}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, e) = d
        .post("/api/jobs", &pg_job("closed", &format!("postgres://u:p@127.0.0.1:{closed}/db?table=t&sslmode=disable")));
    assert_eq!((code, e["error"]["code"].as_str()), (422, Some("source_unreachable")), "{e}");

    // A job that runs: each of the 4000 rows meets the 4 rows sharing its ref.
    let mut ok = pg_job("ok", &password_uri(&db, "t", PASSWORD));
    ok["callback_url"] = json!(format!("http://{}", receiver.addr));
    assert_eq!(d.post("/api/jobs", &ok).0, 202);
    let s = d.wait_final(ok["run_id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["counts"], json!({"total": {"l": 4000, "r": 4000}, "matched": 16000, "unmatched": {"l": 0, "r": 0}}));
    // Both keyed sources read the 4000-row table three times each (match, anti join, checks).
    let metrics = d.get("/metrics").1.as_str().unwrap_or_default().to_string();
    assert!(metrics.lines().any(|l| l == "kalla_source_rows_read_total{kind=\"postgres\"} 24000"), "{metrics}");
    assert_eq!(s["progress"], 1.0);

    // A value that cannot be read fails the job with an error callback naming the column.
    let mut bad = pg_job("nan", &password_uri(&db, "nan", PASSWORD));
    bad["callback_url"] = json!(format!("http://{}", receiver.addr));
    assert_eq!(d.post("/api/jobs", &bad).0, 202);
    let s = d.wait_final(bad["run_id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(
        (s["status"].as_str(), s["error"]["code"].as_str()),
        (Some("failed"), Some("source_read_failed")),
        "{s}"
    );
    assert!(s["error"]["message"].as_str().unwrap().contains("column amount: NaN"), "{s}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.finals("error").is_empty() {
        assert!(Instant::now() < deadline, "no error callback");
        std::thread::sleep(Duration::from_millis(20));
    }
    let body: Value = serde_json::from_slice(&receiver.finals("error")[0].body).unwrap();
    assert_eq!(body["code"], "source_read_failed");

    // Cancelling a long job ends its Postgres backends within a second.
    let mut long = pg_job("long", &password_uri(&db, "wide", PASSWORD));
    long["match_sql"] = json!("SELECT l.id AS lid, r.id AS rid FROM l JOIN r ON l.ref = r.ref");
    let run_id = long["run_id"].as_str().unwrap().to_string();
    assert_eq!(d.post("/api/jobs", &long).0, 202);
    let backends =
        || pg.psql(&db, &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kallad/{run_id}'"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while backends() == "0" {
        assert!(Instant::now() < deadline, "the job never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(d.post(&format!("/api/jobs/{run_id}/cancel"), &json!({})).0, 202);
    let asked = Instant::now();
    while backends() != "0" {
        assert!(asked.elapsed() < Duration::from_secs(1), "backends left after cancel");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(d.wait_final(&run_id, Duration::from_secs(5))["status"], "cancelled");

    // The password appears nowhere: statuses, the job list, summaries, logs at debug level.
    let (_, list) = d.get("/api/jobs?limit=100");
    assert!(!list.to_string().contains(PASSWORD));
    let summary = std::fs::read_to_string(d.out.path().join("pg/ok/summary.json")).unwrap();
    assert!(!summary.contains(PASSWORD) && summary.contains(":***@"), "{summary}");
    let logs = d.logs.lock().unwrap().join("\n");
    assert!(!logs.is_empty());
    assert!(!logs.contains(PASSWORD), "the password reached the logs");
    assert!(!logs.contains("not-the-password"), "a password reached the logs");
}
