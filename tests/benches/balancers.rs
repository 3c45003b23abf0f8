//! Benchmark (`scripts/bench balancers`): `DCP_BENCH_BACKENDS` (default
//! 100) backends registered one by one, each call waiting until the
//! balancer serves it, under steady HTTP load through the balancer — on
//! nginx (the nginx plugin: a checked, graceful reload per change), HAProxy
//! (the haproxy plugin: Runtime API, no reload) and the simulator's SLB
//! (the slb plugin: DescribeInstances look-ups and AddBackendServers), side
//! by side: the wall time of the registers, each call's median and p90,
//! and the requests that failed through the balancer meanwhile.
//!
//! A release `dcp` on SQLite with the bundled plugins (slb uploaded with the
//! simulator's origins); one nginx host and one HAProxy host, each behind
//! its own `sshd`; the backends are simulator instances (RunInstances),
//! each answered by a tiny HTTP server on its own address and the web port.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark: any failure should stop it loudly"
)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aliyun_sim::client::{Client as SimClient, ids};
use dcp_tests::{
    cloud::{Cloud, quick_delays},
    haproxy::HaproxyHosts,
    nginx::NginxHosts,
};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Answers every request on `address` and the web port with 200, then lets the
/// client close.
async fn serve(address: String) {
    let port = dcp_tests::web_port();
    let listener = tokio::net::TcpListener::bind((address.as_str(), port))
        .await
        .unwrap_or_else(|e| panic!("binding {address}:{port}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                // The whole request head first: closing with unread input
                // makes the kernel reset the connection, which a balancer
                // may see before the answer.
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                    )
                    .await;
                // The balancer closes first, as `Connection: close` asks:
                // the side that closes first keeps the connection's address
                // pair in TIME_WAIT for a minute, and a server doing so for
                // thousands of requests a second runs the balancer out of
                // source ports to it (its connects and health checks fail).
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
            });
        }
    });
}

/// Steady load through one balancer: `workers` clients, each sending one
/// request at a time on a new connection.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_failure: Arc<std::sync::Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, workers: usize) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let (ok, failed, first_failure, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(std::sync::Mutex::new(None)),
            Arc::new(AtomicBool::new(false)),
        );
        let tasks = (0..workers)
            .map(|_| {
                let (client, url) = (client.clone(), url.to_owned());
                let (ok, failed, first_failure, stop) = (
                    ok.clone(),
                    failed.clone(),
                    first_failure.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let why = match client.get(&url).send().await {
                            Ok(reply) if reply.status() == 200 => {
                                let _ = reply.bytes().await;
                                ok.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok(reply) => format!("HTTP {}", reply.status()),
                            Err(e) => e.to_string(),
                        };
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_failure.lock().unwrap().get_or_insert(why);
                    }
                })
            })
            .collect();
        Self {
            ok,
            failed,
            first_failure,
            stop,
            tasks,
        }
    }

    async fn stop(self) -> (u64, u64, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let first = self.first_failure.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            first,
        )
    }
}

/// A group named `name` with an upstream `default_upstream`; answers both ids.
async fn group(cloud: &Cloud, name: &str) -> (i64, i64) {
    let (status, group) = cloud
        .api
        .post("/api/v1/lb-groups", &json!({"name": name}))
        .await;
    assert_eq!(status, 201, "{group}");
    let group = group["id"].as_i64().unwrap();
    let (status, upstream) = cloud
        .api
        .post(
            "/api/v1/upstreams",
            &json!({"group_id": group, "name": "default_upstream"}),
        )
        .await;
    assert_eq!(status, 201, "{upstream}");
    (group, upstream["id"].as_i64().unwrap())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n = env("DCP_BENCH_BACKENDS", 100);
    let workers = env("DCP_BENCH_CLIENTS", 4);
    let cloud = Cloud::start(quick_delays()).await;

    // The backends: instances of the simulated cloud, each answering on its
    // own address (DescribeInstances finds them for the slb plugin).
    let ecs = SimClient::ecs(&cloud.sim);
    let mut instances = Vec::new();
    while instances.len() < n {
        let amount = (n - instances.len()).min(100).to_string();
        let reply = ecs.run(&[("Amount", amount.as_str())]).await.ok();
        instances.extend(ids(&reply));
    }
    for id in &instances {
        ecs.wait_status(id, "Running").await;
    }
    let addresses: Vec<String> = cloud
        .sim
        .instances()
        .into_iter()
        .filter(|i| instances.contains(&i.id))
        .map(|i| i.private_ip.to_string())
        .collect();
    for address in &addresses {
        serve(address.clone()).await;
    }

    // nginx: the default group; HAProxy and the SLB: a group each.
    let nginx = NginxHosts::start(1);
    nginx.join_default_unit(&cloud.api).await;
    let default = cloud.api.get("/api/v1/bindings").await["items"][0]["upstream_id"]
        .as_i64()
        .unwrap();
    let haproxy = HaproxyHosts::start(1);
    let (hap_group, hap_upstream) = group(&cloud, "haproxy").await;
    haproxy.join_group(&cloud.api, hap_group, "haproxy").await;
    let (slb_group, slb_upstream) = group(&cloud, "slb").await;
    let (lb, lb_address) = cloud.load_balancer().await;
    cloud.join_slb(slb_group, &lb).await;

    println!(
        "{n} backends registered one by one under load ({workers} clients, a new connection per request):"
    );
    println!("| balancer | wall | per register median / p90 | requests answered | failed |");
    println!("|---|---|---|---|---|");
    for (name, upstream, url) in [
        ("nginx (reload)", default, nginx.url(0)),
        ("HAProxy (Runtime API)", hap_upstream, haproxy.url(0)),
        (
            "SLB (simulator)",
            slb_upstream,
            format!("http://{lb_address}/"),
        ),
    ] {
        // `DCP_BENCH_ONLY=slb` (or nginx, haproxy) runs one balancer.
        if std::env::var("DCP_BENCH_ONLY")
            .is_ok_and(|only| !name.to_lowercase().starts_with(&only.to_lowercase()))
        {
            continue;
        }
        let register = |address: &str| {
            let api = &cloud.api;
            let body = json!({"backends": [{"address": address, "port": dcp_tests::web_port()}]});
            async move {
                let (status, change) = api
                    .post(&format!("/api/v1/upstreams/{upstream}/register"), &body)
                    .await;
                assert_eq!(status, 200, "{change}");
                assert_eq!(change["state"], "succeeded", "{change}");
            }
        };
        // One backend first, so the balancer answers before the load starts.
        register(&addresses[0]).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
        {
            assert!(
                Instant::now() < deadline,
                "{name} never answered 200 at {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let load = Load::start(&url, workers);
        let started = Instant::now();
        let mut took = Vec::new();
        for address in &addresses[1..] {
            let one = Instant::now();
            register(address).await;
            took.push(one.elapsed().as_secs_f64() * 1000.0);
        }
        let wall = started.elapsed();
        let (ok, failed, first) = load.stop().await;
        took.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.1} s | {:.0} / {:.0} ms | {ok} | {failed}{} |",
            wall.as_secs_f64(),
            percentile(&took, 0.5),
            percentile(&took, 0.9),
            first.map(|f| format!(" (first: {f})")).unwrap_or_default()
        );
    }
}
