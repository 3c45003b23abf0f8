//! Plugin call costs, against the same logic as a native trait call.
//!
//! `scripts/bench plugins` runs it (release build, plugins built first).
//! Measures: fresh store + instantiate + one small call; the same with a
//! 1,000-record answer; the native equivalents; compile time of each
//! component; resident memory per concurrent instance.

#![allow(missing_docs, clippy::unwrap_used, clippy::cast_precision_loss)]

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use dcp::plugins::{Choice, CloudProvider, Grants, Limits, OriginGrant, Runtime, WasmPlugin};

/// The native twin of the chaos provider's `list-zones` and `list-regions` ("many").
struct Native;

impl Native {
    fn zones(region: &str) -> Vec<Choice> {
        vec![choice(format!("{region}-a"))]
    }

    fn many() -> Vec<Choice> {
        (0..1000)
            .map(|i| choice(format!("region-{i:04}")))
            .collect()
    }
}

fn choice(id: String) -> Choice {
    Choice {
        name: id.clone(),
        id,
        details: "{}".into(),
    }
}

#[async_trait]
trait Zones: Send + Sync {
    async fn zones(&self, region: &str) -> Vec<Choice>;
    async fn many(&self) -> Vec<Choice>;
}

#[async_trait]
impl Zones for Native {
    async fn zones(&self, region: &str) -> Vec<Choice> {
        Self::zones(region)
    }

    async fn many(&self) -> Vec<Choice> {
        Self::many()
    }
}

fn plugin_dir() -> PathBuf {
    std::env::var_os("DCP_PLUGIN_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/plugins")),
        PathBuf::from,
    )
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    (at(0.5), at(0.99))
}

async fn measure<F, Fut>(iterations: usize, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..iterations / 10 {
        f().await;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        f().await;
        samples.push(start.elapsed());
    }
    percentiles(samples)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let runtime = Runtime::new().unwrap();
    println!(
        "# plugin benchmark (pooling allocator: {}, slots reset page by page: {})",
        runtime.pooling(),
        runtime.resets_by_page()
    );

    println!("\n## compile (Component::new + checks + InstancePre), median of 5");
    for name in ["shell-command", "chaos-provider"] {
        let wasm = std::fs::read(plugin_dir().join(format!("{name}.wasm"))).unwrap();
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            runtime.load(name, "0.0.0", &wasm).unwrap();
            times.push(start.elapsed());
        }
        times.sort();
        println!(
            "| {name} | {} KiB | {:.1} ms |",
            wasm.len() / 1024,
            times[2].as_secs_f64() * 1e3
        );
    }

    let wasm = std::fs::read(plugin_dir().join("chaos-provider.wasm")).unwrap();
    let plugin = Arc::new(runtime.load("chaos", "0.1.0", &wasm).unwrap());
    let small = WasmPlugin::new(
        Arc::clone(&plugin),
        Grants {
            config: "{}".into(),
            ..Grants::default()
        },
    );
    let many = WasmPlugin::new(
        Arc::clone(&plugin),
        Grants {
            config: r#"{"mode":"many"}"#.into(),
            ..Grants::default()
        },
    );
    let native: Arc<dyn Zones> = Arc::new(Native);

    println!("\n## per call, µs (median / p99)");
    let n = 20_000;
    let (m, p) = measure(n, || async {
        assert_eq!(small.list_zones("r").await.unwrap().len(), 1)
    })
    .await;
    println!("| wasm: new store + instantiate + small call | {m:.1} | {p:.1} |");
    let (m, p) = measure(n, || async { assert_eq!(native.zones("r").await.len(), 1) }).await;
    println!("| native trait call, small | {m:.2} | {p:.2} |");
    let (m, p) = measure(2_000, || async {
        assert_eq!(many.list_regions().await.unwrap().len(), 1000)
    })
    .await;
    println!("| wasm: new store + instantiate + 1,000 records | {m:.1} | {p:.1} |");
    let (m, p) = measure(2_000, || async {
        assert_eq!(native.many().await.len(), 1000)
    })
    .await;
    println!("| native trait call, 1,000 records | {m:.1} | {p:.1} |");

    // Throughput over both cores.
    let calls = 20_000;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let small = small.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..calls / 4 {
                small.list_zones("r").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "| throughput, 4 tasks on 2 cores | {:.0} calls/s |",
        calls as f64 / start.elapsed().as_secs_f64()
    );

    println!("\n## resident memory per concurrent instance");
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.20.9.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let grant = OriginGrant::parse(&format!("{url}#private")).unwrap();
    let concurrent = 100;
    let before = rss_kib();
    let waiting = WasmPlugin::new(
        Arc::clone(&plugin),
        Grants {
            config: format!(r#"{{"mode":"slow-host","url":"{url}/"}}"#),
            origins: vec![grant],
            limits: Limits {
                timeout: Duration::from_secs(10),
                ..Limits::default()
            },
            ..Grants::default()
        },
    );
    let mut calls = Vec::new();
    for _ in 0..concurrent {
        let waiting = waiting.clone();
        calls.push(tokio::spawn(async move { waiting.list_regions().await }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = rss_kib();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    println!(
        "| {concurrent} instances waiting in a host call | {} KiB total | {:.0} KiB per instance |",
        during.saturating_sub(before),
        during.saturating_sub(before) as f64 / f64::from(concurrent)
    );
}
