//! DCP's nginx load balancer. It makes one nginx node serve DCP's desired
//! state over the host's `ssh` import:
//!
//! - `apply-upstreams`: one `<upstream_dir>/<name>.conf` per upstream,
//!   stamped with DCP's revision so a node never goes back to an older one;
//! - `publish`: arbitrary configuration files under the prefix.
//!
//! Both go the same way (`converge`): read what the node has, upload only
//! what differs, then one script stages the files, runs `nginx -t`, reloads
//! gracefully and waits for the new worker generation and the old one's
//! drain — restoring the previous files on any failure.
//!
//! - `config`: the plugin's settings and their JSON Schema;
//! - `upstream`: names, backend addresses and the rendered upstream block;
//! - `publish`: checks of published files;
//! - `script`: the shell run on the node, and reading its answers;
//! - `converge`: the steps, over `balancer_kit`'s `Node` trait (tested
//!   natively against a real nginx through its local shell);
//! - `guest` (wasm only): the component, over the host's imports.
//!
//! What the balancer plugins share — failures, the upstream, backend and
//! path checks, the `Node` trait, quoting, the component glue, the test
//! node — is `balancer_kit`'s.

// Natively only the tests use the logic; the component (wasm) uses all of it.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod config;
mod converge;
mod publish;
mod script;
mod upstream;

#[cfg(target_arch = "wasm32")]
mod guest;

#[cfg(test)]
mod live_tests;

// Failures and answers are the balancer plugins' shared ones.
pub(crate) use balancer_kit::{Applied, Failure, Kind};
