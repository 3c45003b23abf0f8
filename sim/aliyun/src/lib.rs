//! A local simulator of Aliyun's ECS (`2014-05-26`), VPC (`2016-04-28`) and
//! SLB (`2014-05-15`) RPC APIs, faithful where a driver can tell the
//! difference: real
//! signature V1 verification (through the shared canonical form in
//! `aliyun-rpc`), the gateway's common-parameter and error behaviour,
//! paging, ClientToken idempotency, an asynchronous instance state machine
//! on real time, injectable faults, in fleet mode a real `sshd` per
//! running instance on its own loopback address, and load balancers whose
//! running listeners forward real traffic to their instances.
//!
//! The subset and shapes are those DCP's aliyun plugin relies on, checked
//! against Aliyun's docs and SDKs (../shared/reference/aliyun-api.md, §5
//! is the simulator checklist); plugin and simulator are written against
//! the same contract, so a disagreement shows up as a failing end-to-end
//! test rather than a surprise against the real cloud. `README.md` lists
//! what is simulated and what is not.
//!
//! ```no_run
//! # async fn demo() -> Result<(), aliyun_sim::Error> {
//! let sim = aliyun_sim::Simulator::start(aliyun_sim::Options::default()).await?;
//! println!("ECS at {}, VPC at {}, SLB at {}", sim.ecs_endpoint(), sim.vpc_endpoint(), sim.slb_endpoint());
//! # Ok(()) }
//! ```

mod admin;
mod auth;
mod balancers;
mod catalog;
pub mod client;
mod cloud;
mod ecs;
mod error;
mod faults;
mod fleet;
mod gateway;
mod key_pairs;
mod launch;
mod lifecycle;
mod options;
mod params;
mod quirks;
mod reply;
mod signature;
mod simulator;
mod slb;
mod tokens;
mod traffic;
mod transport;
mod vpc;
mod world;
mod xml;

pub use balancers::{ListenerView, LoadBalancerView};
pub use error::Error;
pub use faults::Faults;
pub use options::{Account, DEMO_KEY_ID, DEMO_SECRET, Delays, FleetOptions, Options};
pub use simulator::Simulator;
pub use world::{InstanceStatus, InstanceView};
