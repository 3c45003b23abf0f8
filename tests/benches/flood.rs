//! The flood benchmark (`scripts/bench flood`): a real `dcp` (`DCP_BIN`) on
//! loopback under `DCP_BENCH_LOGINS` (500) clients sending wrong passwords as
//! fast as they are answered, and `DCP_BENCH_SLOW` (1,000) connections
//! dripping a header byte a second (reconnecting when closed), while one
//! signed-in client lists clusters over its keep-alive connection for
//! `DCP_BENCH_SECS` (20) seconds. Prints the client's p50/p99/max latency,
//! its non-200 answers, the login answers by status, and the server's peak
//! resident memory (`VmHWM` of /proc/<pid>/status).
//!
//! The server is killed if its resident memory passes `DCP_BENCH_RSS_CAP_MB`
//! (4,096), so a build without a bound on hashing cannot take the machine
//! down; the report then says so.
//!
//! Targets (issue 14): p99 < 100 ms, peak RSS < 256 MB, no 5xx.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a benchmark: any failure should stop it loudly"
)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use dcp_tests::{Server, ServerOptions};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PASSWORD: &str = "bench-admin-password";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `VmHWM` and `VmRSS` of `pid`, in MiB.
fn memory_mb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb / 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// One slow client for as long as `running`: connect, send half a header,
/// then a byte a second; start over when the server closes it.
async fn slow_client(addr: String, running: Arc<AtomicBool>, reaped: Arc<AtomicU64>) {
    while running.load(Ordering::Relaxed) {
        let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if stream
            .write_all(b"GET /api/v1/clusters HTTP/1.1\r\nHost: dcp\r\n")
            .await
            .is_err()
        {
            continue;
        }
        let mut buf = [0_u8; 1024];
        while running.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {
                    reaped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Ok(_)) => {}
                Err(_) => {
                    if stream.write_all(b"X").await.is_err() {
                        reaped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let logins = env_or("DCP_BENCH_LOGINS", 500);
    let slow = env_or("DCP_BENCH_SLOW", 1000);
    let secs = env_or("DCP_BENCH_SECS", 20);
    let rss_cap = env_or("DCP_BENCH_RSS_CAP_MB", 4096);
    let mut server = Server::start(&ServerOptions {
        admin_password: Some(PASSWORD.into()),
        ..ServerOptions::default()
    });
    let pid = server.pid();
    let token = server.api_token(PASSWORD).await;
    let addr = server.base_url.trim_start_matches("http://").to_owned();
    let (start_hwm, _) = memory_mb(pid).unwrap();

    // The signed-in client: one keep-alive connection, warmed up.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let list = |client: &reqwest::Client| {
        client
            .get(format!("{}/api/v1/clusters", server.base_url))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(list(&client).await.unwrap().status(), 200);

    let running = Arc::new(AtomicBool::new(true));
    let over_cap = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let watchdog = {
        let (running, over_cap, peak_rss) = (running.clone(), over_cap.clone(), peak_rss.clone());
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                if let Some((_, rss)) = memory_mb(pid) {
                    peak_rss.fetch_max(rss, Ordering::Relaxed);
                    if rss > rss_cap {
                        over_cap.store(true, Ordering::Relaxed);
                        let _ = std::process::Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let reaped = Arc::new(AtomicU64::new(0));
    let slow_tasks: Vec<_> = (0..slow)
        .map(|_| tokio::spawn(slow_client(addr.clone(), running.clone(), reaped.clone())))
        .collect();
    let login_answers = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let flood = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let login_tasks: Vec<_> = (0..logins)
        .map(|n| {
            let (flood, running, answers) = (flood.clone(), running.clone(), login_answers.clone());
            let url = format!("{}/api/v1/session", server.base_url);
            tokio::spawn(async move {
                while running.load(Ordering::Relaxed) {
                    // A fifth guess at the admin, the rest sprayed over names.
                    let username = if n % 5 == 0 {
                        "admin".to_owned()
                    } else {
                        format!("user{n}")
                    };
                    let answer = flood
                        .post(&url)
                        .json(&json!({"username": username, "password": "wrong"}))
                        .send()
                        .await
                        .map_or_else(
                            |e| {
                                if e.is_timeout() {
                                    "timeout".to_owned()
                                } else {
                                    "error".to_owned()
                                }
                            },
                            |r| r.status().as_u16().to_string(),
                        );
                    *answers.lock().unwrap().entry(answer).or_default() += 1;
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut client_answers = BTreeMap::<String, u64>::new();
    while started.elapsed() < Duration::from_secs(secs) && !over_cap.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let answer = match list(&client).await {
            Ok(reply) => {
                let status = reply.status();
                let _ = reply.bytes().await;
                status.as_u16().to_string()
            }
            Err(e) if e.is_timeout() => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        *client_answers.entry(answer).or_default() += 1;
    }
    let measured = started.elapsed();
    let hwm = memory_mb(pid).map(|(hwm, _)| hwm);
    running.store(false, Ordering::Relaxed);
    for task in login_tasks.into_iter().chain(slow_tasks) {
        task.abort();
    }
    let _ = watchdog.await;

    latencies.sort_by(f64::total_cmp);
    let five_xx = |answers: &BTreeMap<String, u64>| {
        answers
            .iter()
            .filter(|(k, _)| k.starts_with('5'))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    println!(
        "flood: {logins} wrong-login clients, {slow} slow connections, {:.1} s",
        measured.as_secs_f64()
    );
    println!(
        "  signed-in client: {} lists, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, answers {client_answers:?}, 5xx {}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        five_xx(&client_answers)
    );
    let logins_seen = login_answers.lock().unwrap().clone();
    println!("  logins: {logins_seen:?}, 5xx {}", five_xx(&logins_seen));
    println!(
        "  slow connections closed by the server: {}",
        reaped.load(Ordering::Relaxed)
    );
    if over_cap.load(Ordering::Relaxed) {
        println!("  server resident memory passed {rss_cap} MiB: killed (the bench's cap)");
    } else {
        println!(
            "  server memory: peak resident (VmHWM) {} MiB (at start {start_hwm} MiB), largest sampled VmRSS {} MiB",
            hwm.map_or_else(|| "?".to_owned(), |h| h.to_string()),
            peak_rss.load(Ordering::Relaxed)
        );
    }
    server.kill();
}
