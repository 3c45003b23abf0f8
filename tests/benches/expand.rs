//! Benchmark P2, end to end (`scripts/bench expand`): one expand of
//! `DCP_BENCH_NODES` nodes (default 1000) through a real `dcp` (release),
//! the bundled aliyun plugin and the Aliyun simulator in fleet mode with
//! zero delays. Every node is a machine created through the plugin, a real
//! `sshd` on its own 127.21.x.y, a no-op init (`true`) over SSH, and the
//! service's container started on the local dockerd with its port published
//! on the node's address. Prints the wall time and where it went, per step.
//!
//! Before it, the floor no orchestrator can go below on this machine: the
//! same number of containers started by `docker run` alone (same image, a
//! port published on its own loopback address each), 8 at a time, no SSH,
//! no DCP; they are removed again before DCP's run. `DCP_BENCH_FLOOR=0`
//! skips it.
//!
//! The pool is behind a discovery binding on three real nginx hosts (each
//! behind its own `sshd` on 127.23.x.y), so the expand's template is
//! `expand-registered`: every node ends registered in `default_upstream`.
//! `DCP_BENCH_REGISTER=0` runs the plain expand instead. The wall time is
//! reported as a ratio to the floor.

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
    nginx::NginxHosts,
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
    let image = web_image("1");
    // First, on the same empty daemon DCP then gets: `docker run` slows as
    // containers pile up, so the order of the two runs matters less than
    // that both start from none.
    let floor = if std::env::var("DCP_BENCH_FLOOR").as_deref() == Ok("0") {
        None
    } else {
        Some(docker_floor(nodes, &image).await)
    };
    let register = std::env::var("DCP_BENCH_REGISTER").as_deref() != Ok("0");
    let _containers = Cleanup::new("bench-web");
    let mut cloud = Cloud::start_on(
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
    let balancers = register.then(|| NginxHosts::start(3));
    let binding = match &balancers {
        Some(hosts) => {
            hosts.join_default_unit(api).await;
            Some(api.get("/api/v1/bindings").await["items"][0]["id"].clone())
        }
        None => None,
    };
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
                    "container": {"ports": [{"container_port": 80, "host_port": dcp_tests::web_port()}]}}),
        )
        .await;
    let (_, pool) = api
        .post(
            "/api/v1/pools",
            &json!({"service_id": service["id"], "name": "bench-web-a", "template_id": template,
                    "binding_id": binding}),
        )
        .await;
    let cpu_before = cpu_by_process();
    let started = Instant::now();
    let (status, task) = api
        .post(
            "/api/v1/tasks",
            &json!({"kind": "expand", "pool_id": pool["id"], "count": nodes}),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    // The pool's task list, not the task's 1000 nodes × steps: watching
    // should not load the cores it measures.
    // What an operator watching the task would have seen go wrong.
    let mut refused = std::collections::BTreeMap::<String, u32>::new();
    loop {
        let (status, t) = api
            .get_status(&format!("/api/v1/tasks?pool_id={}", pool["id"]))
            .await;
        if status != 200 {
            *refused
                .entry(format!("{status} {}", t["error"]["message"]))
                .or_default() += 1;
        } else if !matches!(t["items"][0]["state"].as_str(), Some("pending" | "running")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let wall = started.elapsed();
    let cpu = cpu_by_process();
    let detail = api.get(&format!("/api/v1/tasks/{id}")).await;
    println!(
        "expand of {nodes} nodes: {} in {:.1} s ({})",
        detail["task"]["state"],
        wall.as_secs_f64(),
        detail["task"]["reason"]
    );
    if let Some(floor) = floor {
        println!(
            "  {:.2}x the floor ({floor:.1} s)",
            wall.as_secs_f64() / floor
        );
    }
    for (answer, count) in &refused {
        println!("  the task list answered {answer} x{count}");
    }
    for (i, name) in [
        "create_vm (machine + init over SSH)",
        "start_service (docker run over SSH)",
        "register (nginx upstream on 3 hosts)",
    ]
    .iter()
    .take(if register { 3 } else { 2 })
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
    // The containers' phase as a whole, comparable with the floor below.
    let services = detail["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["steps"][1]);
    let first = services
        .clone()
        .filter(|s| !s["started_at"].is_null())
        .map(|s| millis(&s["started_at"]))
        .fold(f64::INFINITY, f64::min);
    let mut done: Vec<f64> = services
        .filter(|s| !s["finished_at"].is_null())
        .map(|s| (millis(&s["finished_at"]) - first) / 1000.0)
        .collect();
    done.sort_by(f64::total_cmp);
    println!(
        "  containers from the first docker run: half done at {:.1} s, all at {:.1} s",
        percentile(&done, 0.5),
        percentile(&done, 1.0)
    );
    // What the steps after the last container cost the wall time.
    let last = |i: usize| {
        detail["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| !n["steps"][i]["finished_at"].is_null())
            .map(|n| millis(&n["steps"][i]["finished_at"]))
            .fold(f64::NEG_INFINITY, f64::max)
    };
    if register {
        println!(
            "  the last register ended {:.1} s after the last container started",
            (last(2) - last(1)) / 1000.0
        );
    }
    // Why nodes failed, most common first: a benchmark that hides its
    // failures measures nothing.
    let mut reasons = std::collections::BTreeMap::<String, u32>::new();
    for node in detail["nodes"].as_array().unwrap() {
        for step in node["steps"].as_array().unwrap() {
            if step["state"] == "failed" {
                let error = step["error"].as_str().unwrap_or_default();
                // docker's own words, not its "See 'docker run --help'".
                let line = error
                    .lines()
                    .find(|line| line.contains("Error"))
                    .or_else(|| error.lines().next())
                    .unwrap_or_default();
                *reasons.entry(line.chars().take(200).collect()).or_default() += 1;
            }
        }
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (reason, count) in reasons.iter().take(5) {
        println!("  failed x{count}: {reason}");
    }
    // Where the two cores went during the expand (the processes' own
    // time and their ended children's).
    print_cpu("during the expand", &cpu_before, &cpu, wall.as_secs_f64());
    println!(
        "  simulator instances: {}, containers: {}",
        cloud.sim.instances().len(),
        containers_of("bench-web").len()
    );
    // Each login costs the node's sshd a key exchange and a process; a
    // pooled connection is reused for the node's next step.
    let logins = cloud
        .api
        .metric("dcp_ssh_connections_total{outcome=\"ok\"}")
        .await;
    let sessions = cloud.api.metric("dcp_ssh_sessions_total").await;
    println!(
        "  SSH logins: {logins} ({:.2} a node), sessions: {sessions} ({:.2} a node)",
        logins / f64::from(nodes),
        sessions / f64::from(nodes)
    );
    // What the run left in the store (the discovery log is part of it).
    let stored: u64 = ["dcp.db", "dcp.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(cloud.api.server.data_dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "  the store after the run (SQLite and its WAL): {:.1} MB",
        stored as f64 / 1e6
    );
    if let Some(hosts) = &balancers {
        let served = hosts
            .read_upstream(0, "default_upstream")
            .matches(" weight=")
            .count();
        let pushes: std::collections::BTreeSet<&str> = detail["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["steps"][2]["output"].as_str())
            .filter_map(|o| o.split(':').next())
            .collect();
        println!(
            "  nginx serves {served} backends; the registers took {} pushes (one reload per host each)",
            pushes.len()
        );
        // A push ends when the first register it covers finishes; pushes
        // take turns, so the gaps between ends are how long pushes took
        // while registers queued behind them.
        let mut ends = std::collections::BTreeMap::<String, f64>::new();
        for node in detail["nodes"].as_array().unwrap() {
            let step = &node["steps"][2];
            let (Some(output), false) = (step["output"].as_str(), step["finished_at"].is_null())
            else {
                continue;
            };
            let revision = output.split(':').next().unwrap_or_default().to_owned();
            let end = millis(&step["finished_at"]);
            let slot = ends.entry(revision).or_insert(end);
            *slot = slot.min(end);
        }
        let mut ends: Vec<f64> = ends.into_values().collect();
        ends.sort_by(f64::total_cmp);
        let mut gaps: Vec<f64> = ends.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_by(f64::total_cmp);
        let mut drains: Vec<f64> = detail["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["steps"][2]["output"].as_str())
            .flat_map(|o| o.split("drained in ").skip(1))
            .filter_map(|rest| rest.split(' ').next()?.parse().ok())
            .collect();
        drains.sort_by(f64::total_cmp);
        println!(
            "  between push ends: median {:.0} ms, p90 {:.0} ms, max {:.0} ms; reload drain per host: median {:.0} ms, max {:.0} ms",
            percentile(&gaps, 0.5),
            percentile(&gaps, 0.9),
            percentile(&gaps, 1.0),
            percentile(&drains, 0.5),
            percentile(&drains, 1.0)
        );
    }
    // The server's warnings and errors during the run, most frequent first
    // (numbers folded, so one kind of complaint counts as one).
    let mut said = std::collections::BTreeMap::<String, u32>::new();
    for line in cloud.api.server.drain_output() {
        // Without the terminal's colours.
        let mut plain = String::with_capacity(line.len());
        let mut in_escape = false;
        for c in line.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (false, c) => plain.push(c),
                (true, 'm') => in_escape = false,
                (true, _) => {}
            }
        }
        let line = plain;
        let Some(at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
            continue;
        };
        let kind: String = line[at..]
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .take(160)
            .collect();
        *said.entry(kind).or_default() += 1;
    }
    let mut said: Vec<_> = said.into_iter().collect();
    said.sort_by_key(|s| std::cmp::Reverse(s.1));
    for (kind, count) in said.iter().take(8) {
        println!("  server log x{count}:{kind}");
    }
}

/// `nodes` containers by `docker run` alone, `CONCURRENCY` at a time;
/// answers the seconds it took.
async fn docker_floor(nodes: u32, image: &str) -> f64 {
    const CONCURRENCY: usize = 8;
    let _containers = Cleanup::new("bench-floor");
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let cpu_before = cpu_by_process();
    let started = Instant::now();
    let runs: Vec<_> = (0..nodes)
        .map(|i| {
            let slots = std::sync::Arc::clone(&slots);
            let image = image.to_owned();
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.unwrap();
                let status = tokio::process::Command::new("docker")
                    .args(["run", "-d", "--name", &format!("bench-floor-{i}")])
                    .args(["--label", "dcp.service=bench-floor", "-p"])
                    .arg(format!(
                        "127.22.{}.{}:{}:80",
                        i / 250,
                        i % 250 + 1,
                        dcp_tests::web_port()
                    ))
                    .arg(&image)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .await
                    .unwrap();
                assert!(status.success(), "docker run {i}: {status}");
                started.elapsed()
            })
        })
        .collect();
    let mut done = Vec::with_capacity(runs.len());
    for run in runs {
        done.push(run.await.unwrap().as_secs_f64());
    }
    let cpu = cpu_by_process();
    done.sort_by(f64::total_cmp);
    let half = percentile(&done, 0.5);
    let all = percentile(&done, 1.0);
    // Printed before the guard removes the containers, which takes a while.
    println!(
        "floor: {nodes} containers by `docker run` alone, {CONCURRENCY} at a time: {all:.1} s \
         (first half {half:.1} s, second half {:.1} s)",
        all - half
    );
    print_cpu("during the floor", &cpu_before, &cpu, all);
    all
}

/// Prints the CPU seconds each process (by command name) used between
/// `before` and `after`, most first, against the `secs` × cores the
/// machine had.
fn print_cpu(
    during: &str,
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    secs: f64,
) {
    let mut spent: Vec<(&String, f64)> = after
        .iter()
        .map(|(name, s)| (name, s - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, s)| *s >= 1.0)
        .collect();
    spent.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "  CPU seconds {during} ({:.0} available, {:.0} used): {}",
        secs * cores(),
        spent.iter().map(|(_, s)| s).sum::<f64>(),
        spent
            .iter()
            .map(|(name, s)| format!("{name} {s:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The machine's cores.
fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// CPU seconds used so far by every live process, summed by command name,
/// with the time of the children each has reaped (an `sshd` session's
/// shells and `docker` clients). The bench's own process (the simulator,
/// this client) is `bench`.
fn cpu_by_process() -> std::collections::BTreeMap<String, f64> {
    // Linux's USER_HZ.
    const TICKS: f64 = 100.0;
    let me = std::process::id().to_string();
    let mut by = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces, so split at
        // its closing parenthesis; utime is the 14th field overall.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = if pid == me {
            "bench".to_owned()
        } else {
            stat[open + 1..close].to_owned()
        };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks: f64 = fields
            .get(11..15)
            .unwrap_or_default()
            .iter()
            .filter_map(|f| f.parse::<f64>().ok())
            .sum();
        *by.entry(name).or_default() += ticks / TICKS;
    }
    by
}
