//! Reads a Postgres table through Kalla's scan into Arrow and reports rows and seconds.
//! Used by `scripts/bench-pg-scan.sh`:
//!
//! `pg_scan <postgres://…?table=t> <partitions> <runs>` prints one line per run:
//! `partitions=<n> rows=<rows> seconds=<s>`.

use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use kalla_connectors::postgres::open_postgres_source;
use kalla_connectors::postgres::snapshot::SnapshotRegistry;
use kalla_recipe::JobRequest;
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, uri, partitions, runs] = args.as_slice() else {
        return Err("usage: pg_scan <postgres-uri> <partitions> <runs>".into());
    };
    let partitions: usize = partitions.parse()?;
    let runs: usize = runs.parse()?;
    let request = serde_json::json!({
        "run_id": uuid::Uuid::new_v4().to_string(),
        "match_sql": "SELECT * FROM t",
        "sources": [{"alias": "t", "uri": uri}],
        "output_path": "unused"
    });
    let source = JobRequest::from_value(request)?.validate()?.sources.remove(0);
    for _ in 0..runs {
        let started = Instant::now();
        let run_id = uuid::Uuid::new_v4().to_string();
        let registry = Arc::new(SnapshotRegistry::new(&run_id));
        registry.arm();
        let opened = open_postgres_source(&source, uri, &run_id, Arc::clone(&registry)).await?;
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
        let streams = ctx.read_table(opened.provider)?.execute_stream_partitioned().await?;
        let mut tasks = Vec::new();
        for mut stream in streams {
            tasks.push(tokio::spawn(async move {
                let mut rows = 0usize;
                while let Some(batch) = stream.next().await {
                    rows += batch?.num_rows();
                }
                Ok::<usize, datafusion::error::DataFusionError>(rows)
            }));
        }
        let mut rows = 0;
        for t in tasks {
            rows += t.await??;
        }
        println!("partitions={partitions} rows={rows} seconds={:.3}", started.elapsed().as_secs_f64());
    }
    Ok(())
}
