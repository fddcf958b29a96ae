//! Jobs whose sources live in Postgres give exactly the results of the same data in files.

use crate::harness::{Fixture, all_rows, job, output_files};
use kalla_testpg::server;
use serde_json::{Value, json};

#[tokio::test]
async fn every_shared_scenario_with_postgres_sources_equals_the_file_results() {
    let pg = server();
    let db = pg.database("scenarios");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scenarios.json");
    let scenarios: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (n, s) in scenarios.iter().enumerate() {
        let name = s["name"].as_str().unwrap();
        let sql = s["match_sql"].as_str().unwrap();
        let f = Fixture::new();
        for (file, content) in s["files"].as_object().unwrap() {
            f.file(file, content.as_str().unwrap());
        }
        let from_files = f.run_once(job(sql, s["sources"].clone()), false, 3).await.unwrap();
        // The same files as tables, typed as the CSV inference types them.
        let mut pg_sources = s["sources"].clone();
        for src in pg_sources.as_array_mut().unwrap() {
            let file = src["uri"].as_str().unwrap().to_string();
            let table = format!("s{n}_{}", file.trim_end_matches(".csv"));
            pg.load_csv(&db, &table, s["files"][&file].as_str().unwrap(), &src["schema"]);
            src["uri"] = json!(pg.uri(&db, &table));
            src.as_object_mut().unwrap().remove("schema");
        }
        // With `roundtrip`, every plan is encoded with Kalla's codec and decoded before it runs,
        // as an executor would receive it.
        // With `rows_per_partition`, the run raises its partitions for its input (its scans stay
        // at the partitions it started with).
        for (variant, partitions, roundtrip, rows_per_partition) in [
            ("first in postgres", 1, false, None),
            ("both in postgres, shipped", 3, true, None),
            ("both, 7 partitions, shipped", 7, true, None),
            ("both, partitions scaled from 2", 2, false, Some(1)),
        ] {
            let mut sources = s["sources"].clone();
            sources[0] = pg_sources[0].clone();
            if variant != "first in postgres"
                && let Some(second) = pg_sources.get(1)
            {
                sources[1] = second.clone();
            }
            let mut request = job(sql, sources);
            request["output_path"] = json!(format!("pg-{n}-{partitions}"));
            let o = f
                .run_scaled(request, roundtrip, partitions, rows_per_partition)
                .await
                .unwrap_or_else(|e| panic!("{name}, {variant}: {e}"));
            assert_eq!(o.counts, from_files.counts, "{name}, {variant}");
            if rows_per_partition.is_some() {
                assert!(o.partitions > partitions, "{name}: {variant} ran with {} partitions", o.partitions);
            }
            assert_eq!(output_files(&from_files.dir), output_files(&o.dir), "{name}, {variant}");
            for file in output_files(&from_files.dir) {
                assert_eq!(
                    all_rows(&from_files.dir.join(&file)),
                    all_rows(&o.dir.join(&file)),
                    "{name}, {variant}: {file}"
                );
            }
            // The audit trail names the snapshot the Postgres sources were read in, and no password.
            let audit = &o.summary["audit"]["sources"][0];
            assert!(audit["postgres"]["snapshot_id"].as_str().is_some_and(|id| !id.is_empty()), "{audit}");
            assert!(audit["uri"].as_str().unwrap().contains(":***@"), "{audit}");
            assert!(!o.summary.to_string().contains("secret"), "{name}: a password reached summary.json");
        }
    }
}

/// The partitions of `plan`'s Postgres scans and of its hash joins.
fn scan_and_join_partitions(
    plan: &std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
) -> (Vec<usize>, Vec<usize>) {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let (mut scans, mut joins) = (Vec::new(), Vec::new());
    plan.apply(|node| {
        let partitions = node.properties().output_partitioning().partition_count();
        if node.name() == "DataSourceExec" {
            scans.push(partitions);
        } else if node.name() == "HashJoinExec" {
            joins.push(partitions);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    (scans, joins)
}

async fn match_plan(planned: &kalla_core::PlannedJob) -> std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan> {
    let frame = datafusion::prelude::DataFrame::new(planned.ctx.state(), planned.match_plan.clone());
    frame.create_physical_plan().await.unwrap()
}

#[tokio::test]
async fn scaled_partitions_reach_the_joins_while_postgres_scans_keep_their_ranges() {
    let pg = server();
    let db = pg.database("scaled");
    let rows: String = (0..5000).map(|i| format!("{i},R{i}\n")).collect();
    for table in ["left_rows", "right_rows"] {
        pg.load_csv(&db, table, &format!("id,ref\n{rows}"), &json!({"id": "bigint", "ref": "text"}));
    }
    let f = Fixture::new();
    let sources = json!([
        {"alias": "l", "uri": pg.uri(&db, "left_rows"), "primary_key": ["id"]},
        {"alias": "r", "uri": pg.uri(&db, "right_rows"), "primary_key": ["id"]}
    ]);
    let planned = f.plan(job("SELECT l.id, r.id AS rid FROM l JOIN r ON l.ref = r.ref", sources), 3).await.unwrap();
    let (scans, joins) = scan_and_join_partitions(&match_plan(&planned).await);
    assert_eq!((scans, joins), (vec![3, 3], vec![3]), "before scaling");
    assert_eq!(kalla_core::session::scale_partitions(&planned.ctx, Some(5000), 500), 10);
    let (scans, joins) = scan_and_join_partitions(&match_plan(&planned).await);
    assert_eq!((scans, joins), (vec![3, 3], vec![10]), "after scaling");
}

#[tokio::test]
async fn a_keyed_postgres_source_with_an_interval_column_is_refused_naming_it() {
    let pg = server();
    let db = pg.database("intervals");
    pg.psql(
        &db,
        "CREATE TABLE waits (id bigint, ref text, waited interval); INSERT INTO waits VALUES (1, 'A', '1 hour')",
    );
    let f = Fixture::new();
    f.file("payments.csv", "payment_id,ref\nP1,A\n");
    let sources = json!([
        {"alias": "waits", "uri": pg.uri(&db, "waits"), "primary_key": ["id"]},
        {"alias": "payments", "uri": "payments.csv", "primary_key": ["payment_id"]}
    ]);
    let sql = "SELECT w.id, p.payment_id FROM waits w JOIN payments p ON w.ref = p.ref";
    let e = f.run_once(job(sql, sources), false, 2).await.unwrap_err();
    assert_eq!((e.code, e.field.as_deref()), (kalla_recipe::ErrorCode::UnsupportedSource, Some("sources[0].uri")));
    assert!(e.message.contains("\"waited\""), "{}", e.message);
}

#[tokio::test]
async fn a_materialized_view_is_read_in_the_jobs_snapshot() {
    // Postgres refuses LOCK TABLE on a materialized view; the job holds its lock by reading it.
    let pg = server();
    let db = pg.database("matview");
    pg.psql(
        &db,
        "CREATE TABLE base (id bigint, ref text); INSERT INTO base SELECT g, 'R' || (g % 7) FROM generate_series(1, 5000) g;
         CREATE MATERIALIZED VIEW mv AS SELECT id, ref FROM base WHERE id <= 3000; ANALYZE mv;",
    );
    let f = Fixture::new();
    f.file("payments.csv", "payment_id,ref\nP1,R1\nP2,R9\n");
    let sources = json!([
        {"alias": "mv", "uri": pg.uri(&db, "mv"), "primary_key": ["id"]},
        {"alias": "payments", "uri": "payments.csv", "primary_key": ["payment_id"]}
    ]);
    let sql = "SELECT m.id, p.payment_id FROM mv m JOIN payments p ON m.ref = p.ref";
    let o = f.run_once(job(sql, sources), false, 3).await.unwrap();
    // 3000 rows: ids ≡ 1 (mod 7) match P1 (429 of them); R9 matches nothing.
    assert_eq!(o.counts.matched, 429);
    assert_eq!(o.counts.total["mv"], 3000);
    assert_eq!(o.counts.unmatched["mv"], Some(3000 - 429));
    assert_eq!(o.counts.unmatched["payments"], Some(1));
}
