//! The component glue every balancer plugin needs over the `load-balancer`
//! world: a [`Failure`] as the SDK's `PluginError`, SSH failures
//! classified, the host's SSH session as a [`Node`], and the contract's
//! upstreams and answers converted.

use std::time::{SystemTime, UNIX_EPOCH};

use dcp_plugin_sdk::balancer::{
    self, ErrorKind, PluginError, context, exports::dcp::plugin::balancer as wit, ssh,
};

use crate::{
    Applied, Failure, Kind,
    node::{Node, Output},
    upstream::{Backend, Upstream},
};

/// A failure as the SDK's error, its retryability kept.
pub fn error(failure: Failure) -> PluginError {
    let kind = match failure.kind {
        Kind::InvalidInput => ErrorKind::InvalidInput,
        Kind::Conflict => ErrorKind::Conflict,
        Kind::Unauthorized => ErrorKind::Unauthorized,
        Kind::Unavailable => ErrorKind::Unavailable,
        Kind::Timeout => ErrorKind::Timeout,
        Kind::Unsupported => ErrorKind::Unsupported,
        Kind::Internal => ErrorKind::Internal,
    };
    let mut error = PluginError::new(kind, failure.message);
    error.retryable = failure.retryable;
    error
}

/// An SSH failure: refused credentials or host keys stay what they are;
/// anything else is the node being unreachable for now, worth a retry.
pub fn ssh_failure(error: PluginError) -> Failure {
    let PluginError { kind, message, .. } = error;
    let message = format!("ssh to the node: {message}");
    match kind {
        ErrorKind::Unauthorized => Failure::new(Kind::Unauthorized, message, false),
        ErrorKind::InvalidInput => Failure::invalid(message),
        ErrorKind::Timeout => Failure::new(Kind::Timeout, message, true),
        _ => Failure::new(Kind::Unavailable, message, true),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The node of this call, over the host's SSH channel.
pub struct Session {
    session: ssh::Session,
    deadline_ms: u64,
}

impl Session {
    /// Connects to the call's `target`; `balancer` (`nginx`, `HAProxy`)
    /// names what runs there when there is no target.
    pub fn connect(target: Option<String>, balancer: &str) -> Result<Self, Failure> {
        let target = target.ok_or_else(|| {
            Failure::invalid(format!(
                "target: {balancer} runs on a node; give the node's ssh target"
            ))
        })?;
        Ok(Self {
            session: ssh::connect(&target).map_err(ssh_failure)?,
            deadline_ms: context::deadline_unix_ms(),
        })
    }
}

impl Node for Session {
    fn exec(&self, command: &str, stdin: &[u8], timeout_ms: u32) -> Result<Output, Failure> {
        let out = self
            .session
            .exec(command, Some(stdin), timeout_ms)
            .map_err(ssh_failure)?;
        Ok(Output {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: out.truncated,
        })
    }

    fn put_file(&self, path: &str, content: &[u8], mode: u32) -> Result<(), Failure> {
        self.session
            .put_file(path, content, mode)
            .map_err(ssh_failure)
    }

    fn time_left_ms(&self) -> u64 {
        self.deadline_ms.saturating_sub(now_ms())
    }
}

/// The contract's upstreams as the plugins' own.
pub fn upstreams(upstreams: Vec<wit::Upstream>) -> Vec<Upstream> {
    upstreams
        .into_iter()
        .map(|u| Upstream {
            name: u.name,
            backends: u
                .backends
                .into_iter()
                .map(|b| Backend {
                    address: b.address,
                    port: b.port,
                    weight: b.weight,
                })
                .collect(),
            revision: u.revision,
        })
        .collect()
}

/// What a call did, as the contract's answer, logged as `what` with
/// `fields` and whether it changed anything.
pub fn answer(applied: Applied, what: &str, fields: &[(&str, &str)]) -> wit::Applied {
    let changed = if applied.changed { "true" } else { "false" };
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .copied()
        .chain([("changed", changed)])
        .collect();
    balancer::info(what, &fields);
    wit::Applied {
        changed: applied.changed,
        log: applied.log,
    }
}
