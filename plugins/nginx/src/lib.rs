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
//! - `converge`: the steps, over a `Node` trait (tested natively against a
//!   real nginx through a local shell);
//! - `guest` (wasm only): the component, over the host's imports.

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

/// What a failure means to DCP (mapped onto the SDK's `ErrorKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Bad input (configuration, arguments, a configuration nginx refuses).
    InvalidInput,
    /// The node's state is in the way (another change running, nginx
    /// refusing the configuration at reload time).
    Conflict,
    /// The node refused the SSH credentials or host key.
    Unauthorized,
    /// The node or its nginx cannot be reached or is not running.
    Unavailable,
    /// No answer in time.
    Timeout,
    /// Anything else.
    Internal,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// What it means.
    pub(crate) kind: Kind,
    /// For humans, naming what failed.
    pub(crate) message: String,
    /// Whether the same call may succeed later.
    pub(crate) retryable: bool,
}

impl Failure {
    /// Bad input; retrying will not help.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidInput, message, false)
    }

    /// A failure of `kind`.
    pub(crate) fn new(kind: Kind, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable,
        }
    }
}

/// What a successful call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Whether the node's configuration changed.
    pub(crate) changed: bool,
    /// The steps, one per line.
    pub(crate) log: String,
}
