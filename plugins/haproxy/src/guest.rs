//! The component: the `balancer` export over the host's imports (`ssh` to
//! reach the node, `context` for the settings, the call id and deadline).

use std::time::{SystemTime, UNIX_EPOCH};

use dcp_plugin_sdk::balancer::{
    self, ErrorKind, PluginError, PluginInfo, context,
    exports::dcp::plugin::balancer::{Applied, ConfigFile, Guest, Upstream},
    ssh,
};

use crate::{
    Failure, Kind,
    config::{Config, SCHEMA},
    converge::{self, Node, Output},
    script,
    upstream::{self, Backend},
};

struct Haproxy;

fn error(failure: Failure) -> PluginError {
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
fn ssh_failure(error: PluginError) -> Failure {
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
struct Session {
    session: ssh::Session,
    deadline_ms: u64,
}

impl Session {
    fn connect(target: Option<String>) -> Result<Self, Failure> {
        let target = target.ok_or_else(|| {
            Failure::invalid("target: HAProxy runs on a node; give the node's ssh target")
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

impl Guest for Haproxy {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "haproxy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "HAProxy backends over SSH through the Runtime API: servers added, \
                          drained, re-weighted and removed without a reload; the configuration \
                          file rewritten (haproxy -c first) so a restart keeps them"
                .into(),
            config_schema: SCHEMA.into(),
        }
    }

    fn validate_config(config: String) -> Result<(), PluginError> {
        Config::parse(&config).map(|_| ()).map_err(error)
    }

    fn apply_upstreams(
        upstreams: Vec<Upstream>,
        target: Option<String>,
    ) -> Result<Applied, PluginError> {
        let config = Config::parse(&context::config()).map_err(error)?;
        let upstreams: Vec<upstream::Upstream> = upstreams
            .into_iter()
            .map(|u| upstream::Upstream {
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
            .collect();
        // Refuse bad input before reaching for the node.
        upstream::check_all(&upstreams).map_err(error)?;
        let node = Session::connect(target).map_err(error)?;
        let token = script::token(&context::call_id());
        let applied = converge::upstreams(&config, &upstreams, &node, &token).map_err(error)?;
        balancer::info(
            "upstreams applied",
            &[("changed", if applied.changed { "true" } else { "false" })],
        );
        Ok(Applied {
            changed: applied.changed,
            log: applied.log,
        })
    }

    fn publish(_files: Vec<ConfigFile>, _target: Option<String>) -> Result<Applied, PluginError> {
        Err(error(Failure::new(
            Kind::Unsupported,
            "the haproxy plugin does not publish configuration files: it changes backend \
             servers through the Runtime API and keeps their lines in the configuration file; \
             the rest of the file is the operator's",
            false,
        )))
    }
}

dcp_plugin_sdk::balancer::export_load_balancer!(Haproxy with_types_in dcp_plugin_sdk::balancer);
