//! `aliyun-sim`: the simulator as a process, for `scripts/demo` and anyone
//! trying DCP without an Aliyun account.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use aliyun_sim::{DEMO_KEY_ID, DEMO_SECRET, Delays, FleetOptions, Options, Simulator};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A local Aliyun ECS + VPC + SLB API. Sign requests with the demo key it prints.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address of the ECS endpoint (Version 2014-05-26).
    #[arg(long, default_value = "127.21.0.1:8701")]
    ecs: SocketAddr,
    /// Address of the VPC endpoint (Version 2016-04-28).
    #[arg(long, default_value = "127.21.0.2:8702")]
    vpc: SocketAddr,
    /// Address of the SLB endpoint (Version 2014-05-15).
    #[arg(long, default_value = "127.21.0.3:8703")]
    slb: SocketAddr,
    /// Fleet mode (needs root): every running instance gets a real sshd on its
    /// 127.21.x.y address; its files go under this directory.
    #[arg(long)]
    fleet_dir: Option<PathBuf>,
    /// How long each transitional state (Pending, Starting, Stopping,
    /// deleting) lasts, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    delay_ms: u64,
    /// Running instances to seed in cn-hangzhou (for paging demos).
    #[arg(long, default_value_t = 0)]
    extra_instances: usize,
    /// Seed of the fault and quirk generators.
    #[arg(long, default_value_t = Options::default().seed)]
    seed: u64,
    /// Always answer tidy JSON (no numbers as strings, no omitted empty lists).
    #[arg(long)]
    no_quirks: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let delay = Duration::from_millis(cli.delay_ms);
    let options = Options {
        ecs_addr: cli.ecs,
        vpc_addr: cli.vpc,
        slb_addr: cli.slb,
        delays: Delays {
            pending: delay,
            starting: delay,
            stopping: delay,
            deleting: delay,
        },
        fleet: cli.fleet_dir.clone().map(|dir| FleetOptions { dir }),
        seed: cli.seed,
        extra_instances: cli.extra_instances,
        quirks: !cli.no_quirks,
        ..Options::default()
    };
    let sim = match Simulator::start(options).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("aliyun-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("aliyun-sim is serving");
    println!("  ECS  {}   (Version 2014-05-26)", sim.ecs_endpoint());
    println!("  VPC  {}   (Version 2016-04-28)", sim.vpc_endpoint());
    println!("  SLB  {}   (Version 2014-05-15)", sim.slb_endpoint());
    println!("  AccessKeyId {DEMO_KEY_ID}   AccessKeySecret {DEMO_SECRET}");
    match &cli.fleet_dir {
        Some(dir) => println!(
            "  fleet mode: each running instance runs sshd on its 127.21.x.y:22 (files in {})",
            dir.display()
        ),
        None => println!("  fleet mode off: instances have no sshd (--fleet-dir DIR, as root)"),
    }
    println!(
        "  admin: GET {0}/_sim/instances, PUT {0}/_sim/faults (JSON)",
        sim.ecs_endpoint()
    );
    println!("Ctrl-C to stop.");
    wait_for_signal().await;
    println!("aliyun-sim: stopping");
    sim.shutdown().await;
    ExitCode::SUCCESS
}

/// Ctrl-C or SIGTERM (what `kill` and `scripts/demo`'s trap send).
async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!("cannot watch Ctrl-C: {e}");
            }
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
