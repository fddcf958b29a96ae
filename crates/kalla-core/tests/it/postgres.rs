//! Jobs whose sources live in Postgres give exactly the results of the same data in files.

use crate::harness::{Fixture, all_rows, job};
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
            if variant != "first in postgres" {
                sources[1] = pg_sources[1].clone();
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
            for file in ["matched.parquet", "unmatched_invoices.parquet", "unmatched_payments.parquet"] {
                let (a, b) = (from_files.dir.join(file), o.dir.join(file));
                if a.exists() || b.exists() {
                    assert_eq!(all_rows(&a), all_rows(&b), "{name}, {variant}: {file}");
                }
            }
            // The audit trail names the snapshot the Postgres sources were read in, and no password.
            let audit = &o.summary["audit"]["sources"][0];
            assert!(audit["postgres"]["snapshot_id"].as_str().is_some_and(|id| !id.is_empty()), "{audit}");
            assert!(audit["uri"].as_str().unwrap().contains(":***@"), "{audit}");
            assert!(!o.summary.to_string().contains("secret"), "{name}: a password reached summary.json");
        }
    }
}
