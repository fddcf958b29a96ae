//! What a job hands to a [`PlanRunner`] (the cluster's seam), observed with a runner that
//! records each plan and runs it in this process.

use crate::harness::{Fixture, csv_sources, job};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use kalla_core::NoObserver;
use kalla_core::keyjoin::builds_in_each_task;
use kalla_core::remote::PlanRunner;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A plan the runner was given: its label, its output partitions, whether it repartitions rows
/// (on the cluster, a shuffle between stages), whether a join in it reads its build side in each
/// task (`TaskBuildJoinExec`).
#[derive(Debug, Clone, PartialEq)]
struct Shipped {
    label: String,
    partitions: usize,
    shuffles: bool,
    builds_in_task: bool,
}

/// Records every plan, then runs it here. A plan named in `hold` is held until the plans listed
/// with it arrived (or fails after a while), so a test can tell what was started while it ran.
#[derive(Debug)]
struct Recording {
    shipped: Arc<Mutex<Vec<Shipped>>>,
    hold: Vec<(String, Vec<String>)>,
}

fn shuffles(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<RepartitionExec>() || plan.children().into_iter().any(shuffles)
}

impl PlanRunner for Recording {
    fn execute(
        &self,
        label: String,
        plan: Arc<dyn ExecutionPlan>,
        ctx: SessionContext,
    ) -> BoxFuture<'static, Result<Vec<SendableRecordBatchStream>, DataFusionError>> {
        let partitions = plan.output_partitioning().partition_count();
        let shipped = Arc::clone(&self.shipped);
        shipped.lock().unwrap().push(Shipped {
            label: label.clone(),
            partitions,
            shuffles: shuffles(&plan),
            builds_in_task: builds_in_each_task(&plan),
        });
        let wanted = self.hold.iter().find(|(held, _)| *held == label).map(|(_, w)| w.clone()).unwrap_or_default();
        Box::pin(async move {
            let arrived = || {
                let seen = shipped.lock().unwrap();
                wanted.iter().all(|w| seen.iter().any(|s| &s.label == w))
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !arrived() {
                if tokio::time::Instant::now() > deadline {
                    return Err(DataFusionError::Execution(format!("{wanted:?} did not start while {label} ran")));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (0..partitions).map(|p| plan.execute(p, ctx.task_ctx())).collect()
        })
    }

    fn writes_parts(&self) -> bool {
        false
    }
}

/// Two columns of strings as a Parquet batch: `key`, `ref`.
fn pairs(key: &str, rows: &[(&str, &str)]) -> RecordBatch {
    let schema =
        Arc::new(Schema::new(vec![Field::new(key, DataType::Utf8, false), Field::new("ref", DataType::Utf8, false)]));
    let keys: ArrayRef = Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>()));
    let refs: ArrayRef = Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()));
    RecordBatch::try_new(schema, vec![keys, refs]).unwrap()
}

const SQL: &str = "SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.ref = p.ref";
const INVOICES: [(&str, &str); 5] = [("I1", "A"), ("I1", "B"), ("I2", "C"), ("I3", "D"), ("I4", "E")];
const PAYMENTS: [(&str, &str); 5] = [("P1", "A"), ("P2", "A"), ("P3", "Z"), ("P3", "Y"), ("P3", "X")];

/// Runs `sources` once locally and once through a [`Recording`] runner holding the match until
/// both key counts arrived and the invoices' anti join until the payments' one did; asserts the
/// same counts and checks, and returns what was shipped.
async fn shipped_by_a_cluster_run(f: &Fixture, sources: serde_json::Value) -> Vec<Shipped> {
    let local = f.run_once(job(SQL, sources.clone()), false, 3).await.unwrap();
    let mut planned = f.plan(job(SQL, sources), 3).await.unwrap();
    let shipped = Arc::new(Mutex::new(Vec::new()));
    let hold = vec![
        ("matching".to_string(), COUNTS.iter().map(|c| c.to_string()).collect()),
        ("unmatched rows of invoices".to_string(), vec!["unmatched rows of payments".to_string()]),
    ];
    planned.runner = Some(Arc::new(Recording { shipped: Arc::clone(&shipped), hold }));
    let outcome = planned.run(&NoObserver).await.expect("the key counts start with the match, the anti joins together");
    assert_eq!(outcome.counts, local.counts);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.out.path().join(&outcome.output_paths.summary)).unwrap()).unwrap();
    assert_eq!(summary["audit"]["checks"], local.summary["audit"]["checks"]);
    let inv = &summary["audit"]["checks"]["invoices"];
    assert_eq!((&inv["total_rows"], &inv["total_keys"], &inv["duplicate_keys"]), (&5.into(), &4.into(), &1.into()));
    let pay = &summary["audit"]["checks"]["payments"];
    assert_eq!(
        (&pay["total_rows"], &pay["duplicate_keys"], &pay["duplicate_key_rows"]),
        (&5.into(), &1.into(), &3.into())
    );
    let shipped = shipped.lock().unwrap().clone();
    for label in COUNTS {
        let plans: Vec<&Shipped> = shipped.iter().filter(|s| s.label == label).collect();
        let one_task = Shipped { label: label.into(), partitions: 1, shuffles: false, builds_in_task: false };
        assert_eq!(plans, [&one_task], "{shipped:?}");
    }
    // The match is planned as ever (its join reads sources, never only the run's outputs).
    let matching = shipped.iter().find(|s| s.label == "matching").unwrap();
    assert!(!matching.builds_in_task, "{matching:?}");
    shipped
}

const COUNTS: [&str; 2] = ["checks of invoices: source keys", "checks of payments: source keys"];

fn anti_joins(shipped: &[Shipped]) -> Vec<(usize, bool, bool)> {
    ["invoices", "payments"]
        .iter()
        .map(|alias| {
            let anti = shipped.iter().find(|s| s.label == format!("unmatched rows of {alias}")).unwrap();
            (anti.partitions, anti.shuffles, anti.builds_in_task)
        })
        .collect()
}

#[tokio::test]
async fn a_cluster_run_reads_each_small_file_source_in_one_task_per_plan_the_key_counts_with_the_match_the_anti_joins_together()
 {
    let f = Fixture::new();
    f.parquet("invoices.parquet", &pairs("invoice_id", &INVOICES));
    f.parquet("payments.parquet", &pairs("payment_id", &PAYMENTS));
    let sources = json!([
        {"alias": "invoices", "uri": "invoices.parquet", "primary_key": ["invoice_id"]},
        {"alias": "payments", "uri": "payments.parquet", "primary_key": ["payment_id"]}
    ]);
    let shipped = shipped_by_a_cluster_run(&f, sources).await;
    // Each anti join is one task that reads the matched keys itself, without a shuffle.
    assert_eq!(anti_joins(&shipped), [(1, false, true), (1, false, true)], "{shipped:?}");
}

#[tokio::test]
async fn an_anti_join_that_cannot_read_the_matched_keys_in_its_task_keeps_the_jobs_partitions() {
    // CSV files carry no row counts, so at one partition DataFusion would collect the source on
    // the build side, which Ballista shuffles into the one task: the job's partitions are kept.
    let f = Fixture::new();
    let csv = |key: &str, rows: &[(&str, &str)]| {
        std::iter::once(format!("{key},ref\n"))
            .chain(rows.iter().map(|(k, r)| format!("{k},{r}\n")))
            .collect::<String>()
    };
    f.file("invoices.csv", &csv("invoice_id", &INVOICES));
    f.file("payments.csv", &csv("payment_id", &PAYMENTS));
    let shipped = shipped_by_a_cluster_run(&f, csv_sources(&["invoice_id"], &["payment_id"])).await;
    assert!(anti_joins(&shipped).iter().all(|(partitions, _, _)| *partitions == 3), "{shipped:?}");
}
