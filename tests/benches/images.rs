//! Benchmark P6 (`scripts/bench images`): an image built and pushed through
//! a real `dcp` (release; bollard on the Docker Engine API) against the
//! `docker` CLI (`DOCKER_BUILDKIT=0 docker build`, the same classic builder,
//! and `docker push`), side by side on the same daemon and registry.
//!
//! Each round commits a new random blob of `DCP_BENCH_MB` MiB (default 100)
//! beside a Dockerfile (`FROM` the local busybox image, `COPY` the blob,
//! a `RUN` over it) to a `git daemon` on loopback, so every build sends a
//! context of that size and every push uploads a layer the registry does
//! not have. DCP fetches the commit, builds and pushes (times taken from
//! its build events: queued → pushing is the build, pushing → succeeded
//! the push); the CLI clones the same commit, builds (`--no-cache`) and
//! pushes. Rounds alternate, `DCP_BENCH_ROUNDS` (default 3) each.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark: any failure should stop it loudly"
)]

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use dcp_tests::{
    Api, ServerOptions,
    docker::{docker_in, web_image},
    sse::Events,
    vcs::GitServer,
};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `megabytes` MiB no compressor can shrink.
fn random_blob(megabytes: usize) -> Vec<u8> {
    let mut out = vec![0u8; megabytes << 20];
    let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut urandom, &mut out).unwrap();
    out
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds = env("DCP_BENCH_ROUNDS", 3);
    let megabytes = env("DCP_BENCH_MB", 100);
    let api = Api::start_with(&ServerOptions {
        env: vec![("DCP_REGISTRY_ADDR".into(), "127.26.3.1:5000".into())],
        ..ServerOptions::default()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get("/api/v1/registry").await["serving"] != true {
        assert!(Instant::now() < deadline, "the registry never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = web_image("bench-p6");
    let git = GitServer::start("127.26.3.2");
    let dockerfile = format!(
        "FROM {base}\nCOPY blob /data/blob\nRUN [\"/bin/busybox\", \"wc\", \"-c\", \"/data/blob\"]\n"
    );
    let _ = git.commit("p6", &[("Dockerfile", &dockerfile), ("blob", "")], "v0");
    let (status, project) = api
        .post(
            "/api/v1/image-projects",
            &json!({"repository": "bench/p6",
                    "dockerfile": {"kind": "git", "url": git.url("p6"), "ref": "main"}}),
        )
        .await;
    assert_eq!(status, 201, "{project}");
    let project = project["id"].as_i64().unwrap();

    // The CLI logs in once, with its own configuration.
    let login = api.get("/api/v1/registry/login").await;
    let server = login["server"].as_str().unwrap().to_owned();
    let cli = tempfile::tempdir().unwrap();
    docker_in(
        cli.path(),
        &[
            "login",
            &server,
            "-u",
            login["username"].as_str().unwrap(),
            "--password-stdin",
        ],
        login["password"].as_str().unwrap(),
    )
    .unwrap();

    println!("P6: a {megabytes} MiB context built and pushed, {rounds} rounds each");
    println!("| round | by | build (s) | push (s) |");
    println!("|---|---|---|---|");
    let (mut dcp_build, mut dcp_push, mut cli_build, mut cli_push) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds * 2 {
        // A blob of its own per round: nothing is in a cache or the registry.
        let blob = random_blob(megabytes);
        let tag = format!("r{round}");
        let commit = git.commit_bytes("p6", &[("blob", &blob)], &tag);
        if round % 2 == 0 {
            let started = Instant::now();
            let (status, build) = api
                .post(
                    &format!("/api/v1/image-projects/{project}/builds"),
                    &json!({"tag": tag, "no_cache": true}),
                )
                .await;
            assert_eq!(status, 202, "{build}");
            let id = build["id"].as_i64().unwrap();
            let mut events = Events::open(
                &api.server.base_url,
                &api.token,
                &format!("/api/v1/image-builds/{id}/events"),
            )
            .await;
            let (mut pushing, mut state) = (None, String::new());
            // When the log showed each phase's end, for the table's notes.
            let mut phases = Vec::new();
            while let Some((name, data)) = events.next(Duration::from_secs(600)).await {
                if name == "build" {
                    state = data["state"].as_str().unwrap().to_owned();
                    if state == "pushing" {
                        pushing = Some(started.elapsed());
                    }
                } else {
                    let text = data["text"].as_str().unwrap_or_default();
                    for mark in [
                        "Source at commit",
                        "Sending a build context",
                        "Step 1/",
                        "Step 3/",
                        "Successfully built",
                    ] {
                        if text.contains(mark) {
                            phases.push(format!("{mark} at {}", secs(started.elapsed())));
                        }
                    }
                }
            }
            println!("  DCP round {round}: {}", phases.join("; "));
            let done = started.elapsed();
            assert_eq!(state, "succeeded");
            let built = pushing.unwrap();
            println!(
                "| {round} | DCP | {} | {} |",
                secs(built),
                secs(done - built)
            );
            dcp_build.push(built);
            dcp_push.push(done - built);
        } else {
            let dir = tempfile::tempdir().unwrap();
            let image = format!("{server}/bench/p6:{tag}");
            let started = Instant::now();
            let clone = Command::new("git")
                .args([
                    "clone",
                    "-q",
                    "--depth",
                    "1",
                    "--branch",
                    &tag,
                    &git.url("p6"),
                ])
                .arg(dir.path().join("src"))
                .status()
                .unwrap();
            assert!(clone.success());
            println!("  CLI round {round}: cloned at {}", secs(started.elapsed()));
            let rev = Command::new("git")
                .arg("-C")
                .arg(dir.path().join("src"))
                .args(["rev-parse", "HEAD"])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&rev.stdout).trim(), commit);
            let mut build = Command::new("docker")
                .env("DOCKER_BUILDKIT", "0")
                .arg("--config")
                .arg(cli.path())
                .args(["build", "-q", "--no-cache", "-t", &image])
                .arg(dir.path().join("src"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let status = build.wait().unwrap();
            assert!(status.success(), "docker build failed");
            let built = started.elapsed();
            let pushed = Instant::now();
            docker_in(cli.path(), &["push", &image], "").unwrap();
            let push = pushed.elapsed();
            println!(
                "| {round} | docker CLI | {} | {} |",
                secs(built),
                secs(push)
            );
            cli_build.push(built);
            cli_push.push(push);
        }
        let _ = std::io::stdout().flush();
    }
    let (db, dp, cb, cp) = (
        median(dcp_build),
        median(dcp_push),
        median(cli_build),
        median(cli_push),
    );
    println!();
    println!("| median | build (s) | push (s) |");
    println!("|---|---|---|");
    println!("| DCP (bollard) | {} | {} |", secs(db), secs(dp));
    println!("| docker CLI | {} | {} |", secs(cb), secs(cp));
    println!(
        "| ratio DCP / CLI | {:.2} | {:.2} |",
        db.as_secs_f64() / cb.as_secs_f64(),
        dp.as_secs_f64() / cp.as_secs_f64()
    );
}
