//! Benchmark P2, end to end (`scripts/bench expand`): one expand of
//! `DCP_BENCH_NODES` nodes (default 1000) through a real `dcp` (release),
//! the bundled aliyun plugin and the Aliyun simulator in fleet mode with
//! zero delays. Every node is a machine created through the plugin, a real
//! `sshd` on its own 127.21.x.y, a no-op init (`true`) over SSH, and the
//! service's container started on the local dockerd with its port published
//! on the node's address. Prints the wall time and where it went, per step.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark: any failure should stop it loudly"
)]

use std::time::{Duration, Instant};

use aliyun_sim::Delays;
use dcp_tests::{
    ServerOptions,
    cloud::Cloud,
    docker::{Cleanup, containers_of, web_image},
};
use serde_json::{Value, json};

fn millis(at: &Value) -> f64 {
    let at = time::OffsetDateTime::parse(
        at.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    (at.unix_timestamp_nanos() / 1_000_000) as f64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let nodes: u32 = std::env::var("DCP_BENCH_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let _containers = Cleanup::new("bench-web");
    let image = web_image("1");
    let cloud = Cloud::start_on(
        Delays {
            pending: Duration::ZERO,
            starting: Duration::ZERO,
            stopping: Duration::ZERO,
            deleting: Duration::ZERO,
        },
        ServerOptions {
            env: vec![("DCP_MAX_FORKS".into(), "2000".into())],
            ..ServerOptions::default()
        },
    )
    .await;
    let api = &cloud.api;
    let init = cloud.group("noop", "true").await;
    let template = cloud
        .template("bench-vm", Some(init), json!({"quota_hours": 100_000}))
        .await;
    let (_, cluster) = api
        .post("/api/v1/clusters", &json!({"name": "bench"}))
        .await;
    let (_, service) = api
        .post(
            "/api/v1/services",
            &json!({"cluster_id": cluster["id"], "name": "bench-web", "image": image,
                    "container": {"ports": [{"container_port": 80, "host_port": 8080}]}}),
        )
        .await;
    let (_, pool) = api
        .post(
            "/api/v1/pools",
            &json!({"service_id": service["id"], "name": "bench-web-a", "template_id": template}),
        )
        .await;
    let started = Instant::now();
    let (status, task) = api
        .post(
            "/api/v1/tasks",
            &json!({"kind": "expand", "pool_id": pool["id"], "count": nodes}),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    let detail = loop {
        let t = api.get(&format!("/api/v1/tasks/{id}")).await;
        if !matches!(t["task"]["state"].as_str(), Some("pending" | "running")) {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let wall = started.elapsed();
    println!(
        "expand of {nodes} nodes: {} in {:.1} s ({})",
        detail["task"]["state"],
        wall.as_secs_f64(),
        detail["task"]["reason"]
    );
    for (i, name) in [
        "create_vm (machine + init over SSH)",
        "start_service (docker run over SSH)",
    ]
    .iter()
    .enumerate()
    {
        let mut took: Vec<f64> = detail["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| !n["steps"][i]["finished_at"].is_null())
            .map(|n| millis(&n["steps"][i]["finished_at"]) - millis(&n["steps"][i]["started_at"]))
            .collect();
        took.sort_by(f64::total_cmp);
        println!(
            "  {name}: median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
            percentile(&took, 0.5),
            percentile(&took, 0.9),
            percentile(&took, 1.0)
        );
    }
    println!(
        "  simulator instances: {}, containers: {}",
        cloud.sim.instances().len(),
        containers_of("bench-web").len()
    );
}
