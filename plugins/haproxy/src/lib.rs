//! DCP's HAProxy load balancer. It makes one HAProxy node serve DCP's
//! desired upstream members over the host's `ssh` import, without a
//! reload:
//!
//! - each DCP upstream is an HAProxy `backend` (or `listen`) of the same
//!   name that the node's configuration already has;
//! - DCP's servers in it are named from their address and port
//!   (`dcp_10_0_0_5_8080`) and changed through the Runtime API on the
//!   admin socket (`add server`, `enable server`, `set server … weight`,
//!   `set server … state drain|ready|maint`, `del server`), a removed one
//!   drained first;
//! - the configuration file's `server` lines for them are rewritten too,
//!   checked with `haproxy -c` first, stamped with DCP's revision, so a
//!   restart serves the same set and a node never goes back to an older
//!   revision.
//!
//! - `config`: the plugin's settings and their JSON Schema;
//! - `upstream`: names, backend addresses, HAProxy's server names;
//! - `cfg`: the configuration file: backend sections, DCP's lines in them;
//! - `plan`: what to do, from what the node has and what DCP wants;
//! - `script`: the shell run on the node, and reading its answers;
//! - `converge`: the steps, over `balancer_kit`'s `Node` trait (tested
//!   natively against a real HAProxy through its local shell);
//! - `guest` (wasm only): the component, over the host's imports.
//!
//! What the balancer plugins share — failures, the upstream, backend and
//! path checks, the `Node` trait, quoting, the component glue, the test
//! node — is `balancer_kit`'s.

// Natively only the tests use the logic; the component (wasm) uses all of it.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod cfg;
mod config;
mod converge;
mod plan;
mod script;
mod upstream;

#[cfg(target_arch = "wasm32")]
mod guest;

#[cfg(test)]
mod live_tests;

// Failures and answers are the balancer plugins' shared ones.
pub(crate) use balancer_kit::{Applied, Failure, Kind};
