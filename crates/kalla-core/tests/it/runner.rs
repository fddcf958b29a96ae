//! What a job hands to a [`PlanRunner`] (the cluster's seam), observed with a runner that
//! records each plan and runs it in this process.

use crate::harness::{Fixture, csv_sources, job};
use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use kalla_core::NoObserver;
use kalla_core::keyjoin::TaskBuildJoinExec;
use kalla_core::remote::PlanRunner;
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

fn builds_in_task(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<TaskBuildJoinExec>() || plan.children().into_iter().any(builds_in_task)
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
            builds_in_task: builds_in_task(&plan),
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

#[tokio::test]
async fn a_cluster_run_reads_each_small_file_source_in_one_task_per_plan_the_key_counts_with_the_match_the_anti_joins_together()
 {
    let f = Fixture::new();
    f.file("invoices.csv", "invoice_id,ref\nI1,A\nI1,B\nI2,C\nI3,D\nI4,E\n");
    f.file("payments.csv", "payment_id,ref\nP1,A\nP2,A\nP3,Z\nP3,Y\nP3,X\n");
    let sql = "SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.ref = p.ref";
    let sources = csv_sources(&["invoice_id"], &["payment_id"]);
    let counts = ["checks of invoices: source keys", "checks of payments: source keys"];

    let local = f.run_once(job(sql, sources.clone()), false, 3).await.unwrap();

    let mut planned = f.plan(job(sql, sources), 3).await.unwrap();
    let shipped = Arc::new(Mutex::new(Vec::new()));
    let hold = vec![
        ("matching".to_string(), counts.iter().map(|c| c.to_string()).collect()),
        ("unmatched rows of invoices".to_string(), vec!["unmatched rows of payments".to_string()]),
    ];
    planned.runner = Some(Arc::new(Recording { shipped: Arc::clone(&shipped), hold }));
    let outcome = planned.run(&NoObserver).await.expect("the key counts start with the match, the anti joins together");

    let shipped = shipped.lock().unwrap().clone();
    for label in counts {
        let plans: Vec<&Shipped> = shipped.iter().filter(|s| s.label == label).collect();
        let one_task = Shipped { label: label.into(), partitions: 1, shuffles: false, builds_in_task: false };
        assert_eq!(plans, [&one_task], "{shipped:?}");
    }
    // The match keeps the job's partitions; each anti join is one task, without a shuffle.
    let matching = shipped.iter().find(|s| s.label == "matching").unwrap();
    assert_eq!((matching.partitions, matching.shuffles, matching.builds_in_task), (3, true, false));
    for alias in ["invoices", "payments"] {
        let anti = shipped.iter().find(|s| s.label == format!("unmatched rows of {alias}")).unwrap();
        assert_eq!((anti.partitions, anti.shuffles), (1, false), "{anti:?}");
    }
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
}
