//! The component glue every balancer plugin needs over the `load-balancer`
//! world: a [`Failure`] as the SDK's `PluginError`, SSH failures
//! classified, the host's SSH session as a [`Node`], and the contract's
//! upstreams and answers converted.

use std::{
    marker::PhantomData,
    time::{SystemTime, UNIX_EPOCH},
};

use dcp_plugin_sdk::balancer::{
    self, ErrorKind, PluginError, PluginInfo, context, exports::dcp::plugin::balancer as wit, ssh,
};

use crate::{
    Applied, Failure, Kind,
    node::{Change, Node, Output},
    script,
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

/// A change made on the `balancer` (`nginx`, `HAProxy`) of the call's SSH
/// target: `change` over the node, with the call's token (for the names of
/// uploaded files); the answer logged as `what`.
pub fn on_node(
    target: Option<String>,
    balancer: &str,
    what: &str,
    change: impl FnOnce(&Session, &str) -> Result<Applied, Failure>,
) -> Result<wit::Applied, PluginError> {
    let node = Session::connect(target, balancer).map_err(error)?;
    let token = script::token(&context::call_id());
    change(&node, &token)
        .map(|applied| answer(applied, what, &[]))
        .map_err(error)
}

/// A plugin's change: make the node serve the upstreams.
pub type Apply<C> = fn(&Change<'_, C>) -> Result<Applied, Failure>;

/// What a balancer plugin that changes a node over SSH does beyond what
/// [`Component`] does for every such plugin.
#[derive(Debug)]
pub struct Plugin<C> {
    /// The plugin's name (`nginx`).
    pub name: &'static str,
    /// Its version (its crate's).
    pub version: &'static str,
    /// What it does, for humans.
    pub description: &'static str,
    /// What runs on the node, for messages (`nginx`, `HAProxy`).
    pub balancer: &'static str,
    /// The JSON Schema of its settings.
    pub schema: &'static str,
    /// Reads and checks a settings document.
    pub settings: fn(&str) -> Result<C, Failure>,
    /// Checks a call's upstreams, before the node is reached.
    pub check: fn(&[Upstream]) -> Result<(), Failure>,
    /// Makes the node serve the upstreams.
    pub apply: Apply<C>,
    /// The `publish` call (the settings read by [`settings`] if it needs
    /// them).
    pub publish: fn(Vec<wit::ConfigFile>, Option<String>) -> Result<wit::Applied, PluginError>,
}

/// A balancer plugin that changes a node over SSH.
pub trait SshBalancer {
    /// Its settings.
    type Config;
    /// What it does.
    const PLUGIN: Plugin<Self::Config>;
}

/// The call's settings, read by `parse`.
pub fn settings<C>(parse: fn(&str) -> Result<C, Failure>) -> Result<C, PluginError> {
    parse(&context::config()).map_err(error)
}

/// The component of an [`SshBalancer`]: the contract's `balancer` export
/// ([`export_ssh_balancer!`](crate::export_ssh_balancer) exports it).
pub struct Component<T>(PhantomData<T>);

impl<T: SshBalancer> wit::Guest for Component<T> {
    fn describe() -> PluginInfo {
        let plugin = &T::PLUGIN;
        PluginInfo {
            name: plugin.name.into(),
            version: plugin.version.into(),
            description: plugin.description.into(),
            config_schema: plugin.schema.into(),
        }
    }

    fn validate_config(config: String) -> Result<(), PluginError> {
        (T::PLUGIN.settings)(&config).map(drop).map_err(error)
    }

    fn apply_upstreams(
        upstreams: Vec<wit::Upstream>,
        target: Option<String>,
    ) -> Result<wit::Applied, PluginError> {
        let plugin = &T::PLUGIN;
        let config = settings(plugin.settings)?;
        let upstreams = self::upstreams(upstreams);
        // Refuse bad input before reaching for the node.
        (plugin.check)(&upstreams).map_err(error)?;
        on_node(
            target,
            plugin.balancer,
            "upstreams applied",
            |node, token| {
                (plugin.apply)(&Change {
                    config: &config,
                    upstreams: &upstreams,
                    node,
                    token,
                })
            },
        )
    }

    fn publish(
        files: Vec<wit::ConfigFile>,
        target: Option<String>,
    ) -> Result<wit::Applied, PluginError> {
        (T::PLUGIN.publish)(files, target)
    }
}

/// Exports the component of a balancer plugin that changes a node over SSH,
/// from its settings type and its [`Plugin`]: an [`SshBalancer`] of them,
/// and the SDK's `export_load_balancer!` of its [`Component`].
///
/// ```ignore
/// balancer_kit::export_ssh_balancer!(Config, Plugin { name: "nginx", … });
/// ```
#[macro_export]
macro_rules! export_ssh_balancer {
    ($config:ty, $plugin:expr) => {
        struct Balancer;

        impl $crate::guest::SshBalancer for Balancer {
            type Config = $config;
            const PLUGIN: $crate::guest::Plugin<$config> = $plugin;
        }

        type Component = $crate::guest::Component<Balancer>;

        dcp_plugin_sdk::balancer::export_load_balancer!(
            Component with_types_in dcp_plugin_sdk::balancer
        );
    };
}
