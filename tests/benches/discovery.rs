//! Benchmark P5 (`scripts/bench discovery`): service discovery through a
//! real `dcp` (release) and the bundled nginx plugin on three real nginx
//! hosts, each behind its own `sshd` (127.23.x.y).
//!
//! 1. An upstream of `DCP_BENCH_BACKENDS` (default 1000) backends replaced
//!    at once (`PUT /upstreams/{id}/backends`), `DCP_BENCH_ROUNDS` times
//!    (default 5), each round a different set: the wall time of the call,
//!    which covers the store's compare-and-set, rendering, the upload to
//!    the three hosts over SSH, `nginx -T`, the swap, the graceful reload
//!    and waiting for the old workers to exit.
//! 2. A storm of `DCP_BENCH_STORM` (default 1000) single-backend registers
//!    by app key, all sent at once (at most 200 requests in flight): the
//!    wall time until every one is applied, and how many pushes (one
//!    reload per host each) carried them.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark: any failure should stop it loudly"
)]

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use dcp_tests::{Api, ServerOptions, cloud::machine_env, nginx::NginxHosts};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `n`th backend address of a set.
fn address(set: usize, n: usize) -> String {
    format!("127.25.{}.{}", set * 8 + n / 250, 1 + n % 250)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let backends = env("DCP_BENCH_BACKENDS", 1000);
    let rounds = env("DCP_BENCH_ROUNDS", 5);
    let storm = env("DCP_BENCH_STORM", 1000);
    let hosts = NginxHosts::start(3);
    let api = Api::start_with(&ServerOptions {
        env: machine_env(),
        ..ServerOptions::default()
    })
    .await;
    hosts.join_default_unit(&api).await;
    let upstream = api.get("/api/v1/bindings").await["items"][0]["upstream_id"]
        .as_i64()
        .unwrap();

    println!(
        "P5: an upstream of {backends} backends on {} nginx hosts",
        hosts.len()
    );
    println!("| round | wall (ms) | state |");
    println!("|---|---|---|");
    let mut walls = Vec::new();
    for round in 0..rounds {
        let set: Vec<Value> = (0..backends)
            .map(|n| json!({"address": address(round % 4, n), "port": 8080 + round}))
            .collect();
        let started = Instant::now();
        let (status, change) = api
            .put(
                &format!("/api/v1/upstreams/{upstream}/backends"),
                &json!({"backends": set}),
            )
            .await;
        let wall = started.elapsed();
        assert_eq!(status, 200, "{change}");
        assert_eq!(change["state"], "succeeded", "{change}");
        for i in 0..hosts.len() {
            let file = hosts.read_upstream(i, "default_upstream");
            assert_eq!(file.matches("server ").count(), backends, "host {i}");
        }
        println!("| {round} | {} | {} |", wall.as_millis(), change["state"]);
        walls.push(wall);
    }
    walls.sort();
    println!(
        "median {} ms, max {} ms",
        walls[walls.len() / 2].as_millis(),
        walls[walls.len() - 1].as_millis()
    );

    // The storm: single-backend registers by app key.
    let (status, key) = api
        .post(
            "/api/v1/app-keys",
            &json!({"name": "storm", "privileges": ["alterations.register", "alterations.read"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["secret"].as_str().unwrap().to_owned();
    let in_flight = Arc::new(Semaphore::new(200));
    let register = api.server.url("/api/v1/alterations/register");
    let started = Instant::now();
    let sent: Vec<_> = (0..storm)
        .map(|n| {
            let (http, url, secret, in_flight) = (
                api.http.clone(),
                register.clone(),
                secret.clone(),
                in_flight.clone(),
            );
            tokio::spawn(async move {
                let _turn = in_flight.acquire().await.unwrap();
                let reply = http
                    .post(url)
                    .header("X-App-Key", &secret)
                    .json(&json!({"binding": "default",
                                  "backends": [{"address": address(5, n), "port": 9000}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(reply.status(), 202);
                let change: Value = reply.json().await.unwrap();
                change["id"].as_i64().unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for s in sent {
        ids.push(s.await.unwrap());
    }
    let accepted = started.elapsed();
    let mut pushes = BTreeSet::new();
    for id in ids {
        loop {
            let reply = api
                .http
                .get(api.server.url(&format!("/api/v1/alterations/{id}")))
                .header("X-App-Key", &secret)
                .send()
                .await
                .unwrap();
            let change: Value = reply.json().await.unwrap();
            if change["state"] != "pending" {
                assert_eq!(change["state"], "succeeded", "{change}");
                let pushed = change["message"]
                    .as_str()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap();
                pushes.insert(pushed.to_owned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let wall = started.elapsed();
    let members = api.get(&format!("/api/v1/upstreams/{upstream}")).await["backends"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(members, backends + storm);
    println!();
    println!("storm: {storm} single-backend registers by app key (200 in flight)");
    println!(
        "all accepted in {} ms, all applied in {} ms; {} pushes (one reload per host each); {members} members",
        accepted.as_millis(),
        wall.as_millis(),
        pushes.len()
    );
}
