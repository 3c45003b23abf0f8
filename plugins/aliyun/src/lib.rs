//! DCP's Aliyun cloud provider: ECS instances and the VPC look-ups of the
//! machine-template form, and the account's SLB (CLB) load balancers,
//! through Aliyun's RPC OpenAPI (signature V1). It targets
//! `cloud-provider-with-load-balancers`: `cloud` and `load-balancers`.
//!
//! - `rpc`: the account's settings and products, over `aliyun_rpc::client`
//!   (signed requests, retries, error classification — shared with `slb`);
//! - `cloud`: the cloud functions as ECS/VPC actions;
//! - `balancers`: the load-balancer functions as SLB actions, SLB's answers
//!   read by `aliyun_rpc::slb` (shared with `slb`);
//! - `guest` (wasm only): the component, over the host's imports.

// Natively only the tests use the logic; the component (wasm) uses all of it.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod balancers;
mod cloud;
mod rpc;

#[cfg(test)]
mod sim_tests;

#[cfg(target_arch = "wasm32")]
mod guest;
