//! DCP's Aliyun cloud provider: ECS instances and the VPC look-ups of the
//! machine-template form, through Aliyun's RPC OpenAPI (signature V1).
//!
//! - `rpc`: the account's settings and products, over `aliyun_rpc::client`
//!   (signed requests, retries, error classification — shared with `slb`);
//! - `cloud`: the cloud functions as ECS/VPC actions;
//! - `guest` (wasm only): the component, over the host's imports.

// Natively only the tests use the logic; the component (wasm) uses all of it.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod cloud;
mod rpc;

#[cfg(target_arch = "wasm32")]
mod guest;
