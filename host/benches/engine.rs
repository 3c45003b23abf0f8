//! P2: the task engine's own cost. A 1000-node expand (create_vm,
//! start_service) driven by the real engine — claim under a lease, pure
//! transitions, every node × step written to the store, heartbeats — with
//! steps that do nothing, so what is measured is scheduling and store
//! writes. On SQLite (a temporary file) and PostgreSQL (`DCP_BENCH_PG_URL`,
//! an admin URL; skipped when unset). See docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use dcp::{
    Store,
    engine::{self, Engine, NodeFacts, StepOutcome, Steps, TaskSteps},
    store::{ClusterChange, NewTask, PoolChange, ServiceChange, TaskNodeRecord, TaskRecord},
};
use dcp_api_types::StepSpec;
use sqlx::{Connection as _, Executor as _};
use tokio_util::sync::CancellationToken;

/// Steps that succeed at once; create_vm reports a node.
#[derive(Debug)]
struct Noop;

#[async_trait::async_trait]
impl Steps for Noop {
    async fn for_task(
        self: Arc<Self>,
        _task: &TaskRecord,
        _specs: Vec<StepSpec>,
    ) -> Result<Arc<dyn TaskSteps>, engine::Error> {
        Ok(Arc::new(NoopTask))
    }
}

struct NoopTask;

#[async_trait::async_trait]
impl TaskSteps for NoopTask {
    async fn run(
        &self,
        node: &TaskNodeRecord,
        step: usize,
        _rerun: bool,
        _abort: &CancellationToken,
    ) -> StepOutcome {
        let mut done = StepOutcome::ok("ok");
        if step == 0 {
            done.node = Some(NodeFacts {
                node_id: 1_000_000 + node.idx,
                machine_id: None,
                address: format!("127.22.{}.{}", node.idx / 250, node.idx % 250 + 1),
            });
        }
        done
    }

    async fn compensate(
        &self,
        _node: &TaskNodeRecord,
        _step: usize,
        _stop: &CancellationToken,
    ) -> StepOutcome {
        // Every step succeeds here, so nothing is ever left to undo.
        StepOutcome::ok("nothing to undo")
    }

    fn deployed_image(&self) -> Option<(i64, String)> {
        None
    }
}

const NODES: usize = 1000;

async fn run(label: &str, url: &str) {
    let store = Store::open(url).await.unwrap();
    let cluster = store
        .create_cluster(&ClusterChange {
            name: "bench".into(),
            description: String::new(),
            business_line: String::new(),
        })
        .await
        .unwrap();
    let service = store
        .create_service(&ServiceChange {
            cluster_id: cluster.id,
            name: "web".into(),
            description: String::new(),
            service_type: String::new(),
            image: "web:1".into(),
            container: "{}".into(),
        })
        .await
        .unwrap();
    let pool = store
        .create_pool(&PoolChange {
            service_id: service.id,
            name: "web-a".into(),
            description: String::new(),
            template_id: None,
            expand_template_id: None,
            shrink_template_id: None,
            deploy_template_id: None,
            binding_id: None,
        })
        .await
        .unwrap();
    let steps = vec![
        StepSpec::builtin("create_vm"),
        StepSpec::builtin("start_service"),
    ];
    let made = Instant::now();
    let task = store
        .create_task(&NewTask {
            kind: "expand".into(),
            pool_id: pool.id,
            template_id: pool.task_templates.expand,
            steps: serde_json::to_string(&steps).unwrap(),
            step_count: steps.len(),
            overrides: "{}".into(),
            batch_size: u32::try_from(NODES).unwrap(),
            created_by: "bench".into(),
            nodes: vec![(None, None, String::new()); NODES],
            exclusive: true,
        })
        .await
        .unwrap();
    let recorded = made.elapsed();
    let started = Instant::now();
    let engine = Engine::start(
        store.clone(),
        Arc::new(Noop),
        engine::Settings {
            lease: Duration::from_secs(15),
            claim_every: Duration::from_millis(10),
        },
    );
    loop {
        let t = store.task(task).await.unwrap();
        if t.state == "succeeded" {
            break;
        }
        assert!(
            !matches!(
                t.state.as_str(),
                "failed" | "partially_failed" | "cancelled"
            ),
            "{t:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed();
    engine.stop();
    let node_steps = NODES * steps.len();
    println!(
        "| {label} | {NODES} | {:.0} ms | {:.2} s | {:.0} µs |",
        recorded.as_secs_f64() * 1000.0,
        wall.as_secs_f64(),
        wall.as_secs_f64() * 1e6 / node_steps as f64,
    );
    store.close().await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    println!(
        "| store | nodes | recording the task | expand wall time | engine time per node-step |"
    );
    println!("|---|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    run(
        "SQLite",
        &format!("sqlite://{}", dir.path().join("bench.db").display()),
    )
    .await;
    match std::env::var("DCP_BENCH_PG_URL") {
        Ok(admin) => {
            let name = format!("dcp_bench_{}", std::process::id());
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            conn.execute(format!("create database {name}").as_str())
                .await
                .unwrap();
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            run("PostgreSQL", &format!("{base}/{name}")).await;
            let _ = conn
                .execute(format!("drop database {name} with (force)").as_str())
                .await;
        }
        Err(_) => println!("(PostgreSQL skipped: set DCP_BENCH_PG_URL)"),
    }
}
