//! What DCP's load-balancer plugins share, one piece of code for each piece
//! of logic that is the same in them:
//!
//! - [`Failure`] and [`Kind`]: a failed call, as the plugins that reach a
//!   node over SSH (`nginx`, `haproxy`) report it; [`Applied`]: what a
//!   successful call did (`slb` too);
//! - [`upstream`]: the contract's upstreams and backends, and the checks of
//!   upstream names and backend addresses, ports and weights;
//! - [`settings`]: reading a settings document field by field, and the
//!   checks of the paths it gives;
//! - [`node`]: the [`Node`](node::Node) trait (a balancer node reached
//!   over SSH) and what a command produced;
//! - [`script`]: shell quoting, the command that runs a script, and the
//!   shell helpers and answers the plugins' scripts have in common;
//! - `guest` (wasm only): the component glue — [`Failure`] as the SDK's
//!   `PluginError`, SSH failures classified, the host's SSH session as a
//!   node, the contract's upstreams converted;
//! - `testing` (feature `testing`, native): a local node that runs commands
//!   the way the host's SSH channel does, test HTTP backends and loopback
//!   addresses, for the plugins' live tests.

pub mod node;
pub mod script;
pub mod settings;
pub mod upstream;

#[cfg(target_arch = "wasm32")]
pub mod guest;

#[cfg(all(any(test, feature = "testing"), not(target_arch = "wasm32")))]
pub mod testing;

/// What a failure means to DCP (mapped onto the SDK's `ErrorKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad input (configuration, arguments, something the balancer
    /// refuses to load).
    InvalidInput,
    /// The node's state is in the way (another change running, the
    /// balancer refusing a change).
    Conflict,
    /// The node refused the SSH credentials or host key.
    Unauthorized,
    /// The node or its balancer cannot be reached or is not running.
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
pub struct Failure {
    /// What it means.
    pub kind: Kind,
    /// For humans, naming what failed.
    pub message: String,
    /// Whether the same call may succeed later.
    pub retryable: bool,
}

impl Failure {
    /// Bad input; retrying will not help.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidInput, message, false)
    }

    /// A failure of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable,
        }
    }
}

/// What a successful call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Whether the balancer's members or configuration changed.
    pub changed: bool,
    /// The steps, one per line.
    pub log: String,
}

impl Applied {
    /// Nothing changed; `log` says why.
    pub fn unchanged(log: impl Into<String>) -> Self {
        Self {
            changed: false,
            log: log.into(),
        }
    }
}
