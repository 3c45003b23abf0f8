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
    publish::File,
    script,
    upstream::{self, Backend},
};

struct Nginx;

fn error(failure: Failure) -> PluginError {
    let kind = match failure.kind {
        Kind::InvalidInput => ErrorKind::InvalidInput,
        Kind::Conflict => ErrorKind::Conflict,
        Kind::Unauthorized => ErrorKind::Unauthorized,
        Kind::Unavailable => ErrorKind::Unavailable,
        Kind::Timeout => ErrorKind::Timeout,
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
            Failure::invalid("target: nginx runs on a node; give the node's ssh target")
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

fn settings() -> Result<Config, PluginError> {
    Config::parse(&context::config()).map_err(error)
}

fn answer(applied: crate::Applied, what: &str) -> Applied {
    balancer::info(
        what,
        &[("changed", if applied.changed { "true" } else { "false" })],
    );
    Applied {
        changed: applied.changed,
        log: applied.log,
    }
}

impl Guest for Nginx {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "nginx".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "nginx upstreams and configuration files over SSH: checked with nginx -t, \
                          reloaded gracefully and verified, the previous files restored on failure"
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
        let config = settings()?;
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
        converge::upstreams(&config, &upstreams, &node, &token)
            .map(|applied| answer(applied, "upstreams applied"))
            .map_err(error)
    }

    fn publish(files: Vec<ConfigFile>, target: Option<String>) -> Result<Applied, PluginError> {
        let config = settings()?;
        let files: Vec<File> = files
            .into_iter()
            .map(|f| File {
                path: f.path,
                content: f.content,
            })
            .collect();
        crate::publish::check(&files).map_err(error)?;
        let node = Session::connect(target).map_err(error)?;
        let token = script::token(&context::call_id());
        converge::files(&config, &files, &node, &token)
            .map(|applied| answer(applied, "files published"))
            .map_err(error)
    }
}

dcp_plugin_sdk::balancer::export_load_balancer!(Nginx with_types_in dcp_plugin_sdk::balancer);
