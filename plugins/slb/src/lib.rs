//! DCP's Aliyun SLB (Classic Load Balancer) plugin. It makes one SLB
//! instance's default server group hold exactly one DCP upstream's members:
//!
//! - `apply-upstreams`: each backend address is mapped to its ECS instance
//!   (DescribeInstances by private address), checked against the
//!   listeners' backend port, and the difference with the load balancer's
//!   backend servers applied with Add/Set/RemoveBackendServers, at most 20
//!   servers a call, reading the load balancer again after any failure so a
//!   lost reply never adds twice or loses a backend;
//! - `publish`: unsupported (SLB has no configuration files).
//!
//! Modules:
//!
//! - `config`: the plugin's settings and their JSON Schema;
//! - `plan`: the difference between wanted and attached servers, in batches;
//! - `converge`: the steps, over `aliyun_rpc::client` (signing, retries and
//!   error classification shared with the `aliyun` plugin) and
//!   `aliyun_rpc::slb` (SLB's answers — listeners, backends, listener
//!   attributes, DescribeHealthStatus — read as the `aliyun` plugin reads
//!   them);
//! - `guest` (wasm only): the component, over the host's imports (the
//!   contract's upstreams converted by `balancer_kit`, shared with the
//!   `nginx` and `haproxy` plugins).

// Natively only the tests use the logic; the component (wasm) uses all of it.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod config;
mod converge;
mod plan;

#[cfg(target_arch = "wasm32")]
mod guest;

#[cfg(test)]
mod sim_tests;

// The contract's upstreams and what a call did are the balancer plugins'
// shared types (`balancer_kit`). SLB's backends are ECS instances' private
// IPv4 addresses, each on a port the listeners send to, weight 0–100 (SLB's
// own scale); the revision is logged only: SLB has nowhere to keep it, the
// load balancer's backends are the state.
pub(crate) use balancer_kit::{
    Applied,
    upstream::{Backend, Upstream},
};
