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
//! - `converge`: the steps, over a `Node` trait (tested natively against a
//!   real HAProxy through a local shell);
//! - `guest` (wasm only): the component, over the host's imports.

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

/// What a failure means to DCP (mapped onto the SDK's `ErrorKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Bad input (configuration, arguments, a backend the node lacks, a
    /// file `haproxy -c` refuses).
    InvalidInput,
    /// The node's state is in the way (another change running, the Runtime
    /// API refusing a command).
    Conflict,
    /// The node refused the SSH credentials or host key.
    Unauthorized,
    /// The node or its HAProxy cannot be reached.
    Unavailable,
    /// No answer in time.
    Timeout,
    /// What the plugin does not do.
    Unsupported,
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
    /// Whether the node's servers or configuration file changed.
    pub(crate) changed: bool,
    /// The steps, one per line.
    pub(crate) log: String,
}
