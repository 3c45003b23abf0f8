//! The simulator through its HTTP API, the way a driver uses it: requests
//! signed by an independent client (`client.rs`, built on `aliyun-rpc` and
//! the HMAC crates, not on the simulator's verifier).
//!
//! One test binary with modules (under `simulator/`), so the crate links
//! once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "simulator/client.rs"]
mod client;
#[path = "simulator/ecs.rs"]
mod ecs;
#[path = "simulator/faults.rs"]
mod faults;
#[path = "simulator/fleet.rs"]
mod fleet;
#[path = "simulator/protocol.rs"]
mod protocol;
#[path = "simulator/slb.rs"]
mod slb;
