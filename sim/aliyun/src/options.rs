//! How a simulator is set up: where it listens, who may call it, how fast
//! its instances move and whether they get a real `sshd`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

/// The AccessKeyId of the account every default simulator knows; the demo
/// (`scripts/demo`) and DCP's machine tests sign with it.
pub const DEMO_KEY_ID: &str = "LTAIdcpdemo000000000";
/// The AccessKeySecret of [`DEMO_KEY_ID`].
pub const DEMO_SECRET: &str = "dcp-demo-secret";

/// Everything [`crate::Simulator::start`] needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the ECS endpoint listens (port 0 picks a free one). Each product
    /// has its own address, as Aliyun routes products by host.
    pub ecs_addr: SocketAddr,
    /// Where the VPC endpoint listens (port 0 picks a free one).
    pub vpc_addr: SocketAddr,
    /// Where the SLB endpoint listens (port 0 picks a free one).
    pub slb_addr: SocketAddr,
    /// The access keys the simulator accepts.
    pub accounts: Vec<Account>,
    /// How long each asynchronous instance state lasts.
    pub delays: Delays,
    /// Fleet mode: a real `sshd` per running instance. `None` = API only.
    pub fleet: Option<FleetOptions>,
    /// Seed of the fault and quirk random number generators, so a failing
    /// run can be replayed.
    pub seed: u64,
    /// Running instances created at start in cn-hangzhou (never with an
    /// `sshd`), so paging past 100 can be tested.
    pub extra_instances: usize,
    /// Lenient-parsing fodder (reference §5.9): now and then answer numbers
    /// as strings and leave out empty list wrappers, as the real API does.
    pub quirks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ecs_addr: SocketAddr::from((Ipv4Addr::new(127, 21, 0, 1), 0)),
            vpc_addr: SocketAddr::from((Ipv4Addr::new(127, 21, 0, 2), 0)),
            slb_addr: SocketAddr::from((Ipv4Addr::new(127, 21, 0, 3), 0)),
            accounts: vec![Account {
                key_id: DEMO_KEY_ID.to_owned(),
                secret: DEMO_SECRET.to_owned(),
                active: true,
            }],
            delays: Delays::default(),
            fleet: None,
            seed: 0x5eed,
            extra_instances: 0,
            quirks: true,
        }
    }
}

/// An access key pair.
#[derive(Clone, Debug)]
pub struct Account {
    /// The AccessKeyId.
    pub key_id: String,
    /// The AccessKeySecret.
    pub secret: String,
    /// A disabled key is refused with `InvalidAccessKeyId.Inactive`.
    pub active: bool,
}

/// How long each transitional instance state lasts, on real time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delays {
    /// `Pending` after RunInstances, before `Starting`.
    pub pending: Duration,
    /// `Starting` before `Running` (plus the time its `sshd` takes to listen).
    pub starting: Duration,
    /// `Stopping` before `Stopped`.
    pub stopping: Duration,
    /// From DeleteInstance until the instance is gone from every answer.
    pub deleting: Duration,
}

impl Default for Delays {
    fn default() -> Self {
        let second = Duration::from_secs(1);
        Self {
            pending: second,
            starting: second,
            stopping: second,
            deleting: second,
        }
    }
}

/// Fleet mode: every running instance is a real OpenSSH `sshd` on its
/// private (and public) 127.21.x.y address, port 22, trusting the public key
/// of its key pair for `root`. Needs root (port 22, `/run/sshd`).
///
/// Instances created with only a `Password` get an `sshd` nobody can log in
/// to: the simulator never sets passwords, key pairs are the only way in.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Where each instance's host key, `authorized_keys`, `sshd_config` and
    /// `sshd.log` live (one directory per instance id).
    pub dir: PathBuf,
}
