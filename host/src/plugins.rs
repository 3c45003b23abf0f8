//! Plugins: WebAssembly components that provide clouds, load balancers and
//! remote-command modules, run sandboxed by wasmtime.
//!
//! The rest of DCP sees the domain traits here ([`CloudProvider`], and the
//! load-balancer and remote-command traits as their modules land) and never
//! wasmtime: `runtime` compiles and calls components, `imports` serves what
//! a plugin may ask of the host, `network` decides which addresses its HTTP
//! may reach. Each call gets a fresh store, a memory cap, an epoch-driven
//! yield and a wall-clock deadline that also covers time spent in host
//! imports. See docs/adr/0003-plugin-runtime.md.

mod balancer;
mod bindings;
mod cloud;
mod command;
mod footprint;
mod imports;
mod load_balancers;
pub mod manifest;
pub mod network;
pub mod registry;
mod runtime;

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

pub use self::{
    bindings::{
        dcp::plugin::types::{ErrorKind, PluginError, PluginInfo},
        exports::dcp::plugin::{
            balancer::{Applied, Backend, ConfigFile, Upstream},
            cloud::{Choice, Disk, Instance, InstancePage, InstanceSpec, InstanceState, Internet},
            command::{ModuleInfo, Outcome},
        },
    },
    manifest::{Capabilities, CapabilityDiff, Manifest},
    network::OriginGrant,
    registry::Registry,
    runtime::{CallStats, Plugin, Runtime},
};

/// A plugin bound to the grants of its calls (one cloud account, one
/// execution's targets): the [`CloudProvider`], [`LoadBalancer`] or
/// [`RemoteCommand`] the rest of DCP uses, whichever its world is. Every
/// call runs in a fresh sandbox; calling a function of another world fails
/// as `Incompatible`.
#[derive(Debug, Clone)]
pub struct WasmPlugin {
    plugin: Arc<Plugin>,
    grants: Arc<Grants>,
}

impl WasmPlugin {
    /// Binds `plugin` to `grants`.
    #[must_use]
    pub fn new(plugin: Arc<Plugin>, grants: Grants) -> Self {
        Self {
            plugin,
            grants: Arc::new(grants),
        }
    }

    /// Whether it is a cloud provider that manages its accounts' load
    /// balancers ([`CloudLoadBalancers`]).
    #[must_use]
    pub fn manages_load_balancers(&self) -> bool {
        self.plugin.manages_load_balancers()
    }
}

/// The worlds of `dcp:plugin@0.1.0` a plugin can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// Machines from a cloud or an inventory.
    CloudProvider,
    /// Backends registered with a load balancer.
    LoadBalancer,
    /// Remote-command modules.
    RemoteCommand,
}

impl World {
    /// Every world, in the order DCP lists them.
    pub const ALL: [Self; 3] = [Self::CloudProvider, Self::LoadBalancer, Self::RemoteCommand];
    /// The contract version these worlds belong to.
    pub const PACKAGE: &'static str = "dcp:plugin@0.1.0";

    /// The world's WIT name, e.g. `cloud-provider`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::CloudProvider => "cloud-provider",
            Self::LoadBalancer => "load-balancer",
            Self::RemoteCommand => "remote-command",
        }
    }

    /// The interface the world exports, fully qualified.
    #[must_use]
    pub fn export(self) -> &'static str {
        match self {
            Self::CloudProvider => "dcp:plugin/cloud@0.1.0",
            Self::LoadBalancer => "dcp:plugin/balancer@0.1.0",
            Self::RemoteCommand => "dcp:plugin/command@0.1.0",
        }
    }

    /// The host interfaces the world may import (besides WASI).
    #[must_use]
    pub fn imports(self) -> &'static [&'static str] {
        match self {
            Self::CloudProvider => &[
                "dcp:plugin/types@0.1.0",
                "dcp:plugin/log@0.1.0",
                "dcp:plugin/context@0.1.0",
                "dcp:plugin/http@0.1.0",
                "dcp:plugin/secrets@0.1.0",
            ],
            Self::LoadBalancer => &[
                "dcp:plugin/types@0.1.0",
                "dcp:plugin/log@0.1.0",
                "dcp:plugin/context@0.1.0",
                "dcp:plugin/http@0.1.0",
                "dcp:plugin/secrets@0.1.0",
                "dcp:plugin/ssh@0.1.0",
            ],
            Self::RemoteCommand => &[
                "dcp:plugin/types@0.1.0",
                "dcp:plugin/log@0.1.0",
                "dcp:plugin/context@0.1.0",
                "dcp:plugin/ssh@0.1.0",
            ],
        }
    }

    /// The world named `name` (`cloud-provider`, …).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-call limits; every plugin gets the defaults unless its operator
/// raised or lowered them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory per call: all linear memories and tables of its instances together.
    pub memory_bytes: usize,
    /// Wall-clock time per call, guest code and host imports together.
    pub timeout: Duration,
    /// Log lines kept per call; later ones are counted and dropped.
    pub log_lines: usize,
    /// Log bytes kept per call.
    pub log_bytes: usize,
    /// Largest HTTP response body a plugin may receive.
    pub http_response_bytes: usize,
    /// Output kept per SSH command (stdout and stderr each).
    pub ssh_output_bytes: usize,
    /// Standard error kept per call (shown with traps, e.g. a panic message).
    pub stderr_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            log_lines: 1000,
            log_bytes: 1 << 20,
            http_response_bytes: 16 << 20,
            ssh_output_bytes: 1 << 20,
            stderr_bytes: 64 << 10,
        }
    }
}

impl Limits {
    /// These limits with the operator's `overrides` applied, after checking
    /// each is in its range.
    pub fn with_overrides(
        self,
        overrides: &dcp_api_types::PluginLimits,
    ) -> Result<Self, crate::validate::Invalid> {
        use crate::validate::Invalid;
        let pick = |field: &'static str,
                    value: Option<u64>,
                    range: std::ops::RangeInclusive<u64>,
                    unit: u64| {
            value.map_or(Ok(None), |v| {
                if range.contains(&v) {
                    Ok(Some(
                        usize::try_from(v.saturating_mul(unit)).unwrap_or(usize::MAX),
                    ))
                } else {
                    Err(Invalid::new(
                        field,
                        format!("must be between {} and {}", range.start(), range.end()),
                    ))
                }
            })
        };
        let mut limits = self;
        if let Some(secs) = pick("timeout_secs", overrides.timeout_secs, 1..=600, 1)? {
            limits.timeout = Duration::from_secs(secs as u64);
        }
        if let Some(bytes) = pick("memory_mib", overrides.memory_mib, 1..=1024, 1 << 20)? {
            limits.memory_bytes = bytes;
        }
        if let Some(lines) = pick("log_lines", overrides.log_lines, 0..=100_000, 1)? {
            limits.log_lines = lines;
        }
        if let Some(bytes) = pick("log_kib", overrides.log_kib, 0..=65_536, 1 << 10)? {
            limits.log_bytes = bytes;
        }
        if let Some(bytes) = pick(
            "http_response_mib",
            overrides.http_response_mib,
            1..=256,
            1 << 20,
        )? {
            limits.http_response_bytes = bytes;
        }
        if let Some(bytes) = pick(
            "ssh_output_kib",
            overrides.ssh_output_kib,
            1..=65_536,
            1 << 10,
        )? {
            limits.ssh_output_bytes = bytes;
        }
        Ok(limits)
    }

    /// These limits in the API's units.
    #[must_use]
    pub fn to_api(&self) -> dcp_api_types::PluginLimits {
        let u = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        dcp_api_types::PluginLimits {
            timeout_secs: Some(self.timeout.as_secs()),
            memory_mib: Some(u(self.memory_bytes >> 20)),
            log_lines: Some(u(self.log_lines)),
            log_kib: Some(u(self.log_bytes >> 10)),
            http_response_mib: Some(u(self.http_response_bytes >> 20)),
            ssh_output_kib: Some(u(self.ssh_output_bytes >> 10)),
        }
    }
}

/// A credential a call may use through `secrets.open(name)`. The secret
/// stays in the host; a plugin sees the key id and HMACs.
#[derive(Clone)]
pub struct Secret {
    /// The public half, e.g. an AccessKeyId.
    pub key_id: String,
    /// The secret half.
    pub secret: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("key_id", &self.key_id)
            .field("secret", &"***")
            .finish()
    }
}

/// Runs commands on machines for plugins (the `ssh` import). The remote
/// command channel implements it; a call without one cannot use `ssh`.
#[async_trait::async_trait]
pub trait SshChannel: Send + Sync + fmt::Debug {
    /// Runs `command` on `target`, keeping at most `max_output` bytes of each stream.
    async fn exec(
        &self,
        target: &str,
        command: &str,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecOutput, PluginError>;
    /// Writes a file on `target`.
    async fn put_file(
        &self,
        target: &str,
        path: &str,
        content: Vec<u8>,
        mode: u32,
    ) -> Result<(), PluginError>;
}

/// What a command run over [`SshChannel`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code; `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// Standard output, capped.
    pub stdout: Vec<u8>,
    /// Standard error, capped.
    pub stderr: Vec<u8>,
    /// Whether either stream was cut at the cap.
    pub truncated: bool,
}

/// Everything a plugin call may use: its configuration and what it was
/// granted. Built per plugin instance (e.g. per cloud account).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// The instance's configuration (JSON), returned by `context.config`.
    pub config: String,
    /// Origins its HTTP may reach.
    pub origins: Vec<OriginGrant>,
    /// Credentials by name.
    pub secrets: BTreeMap<String, Secret>,
    /// Targets its `ssh` may connect to.
    pub targets: Vec<String>,
    /// The SSH channel, when the call may use `ssh`.
    pub ssh: Option<Arc<dyn SshChannel>>,
    /// Limits of its calls.
    pub limits: Limits,
    /// A "Try it" from the plugins page: its failures are the user's
    /// experiment (a half-typed configuration), not the plugin's record, so
    /// they do not count among its errors.
    pub trial: bool,
}

/// How a plugin call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The plugin crashed (a panic, an unreachable, a bad memory access).
    #[error("the plugin crashed: {0}")]
    Trap(String),
    /// The call ran past its deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The plugin asked for more memory than it may use.
    #[error("ran out of memory: the limit is {limit} bytes")]
    OutOfMemory {
        /// The memory limit in bytes.
        limit: usize,
    },
    /// The plugin asked for something it was not granted.
    #[error("capability denied: {0}")]
    Denied(String),
    /// The plugin reported an error.
    #[error("{}", describe_plugin_error(.0))]
    Plugin(Box<PluginError>),
    /// The component does not fit DCP's contract.
    #[error("incompatible: {0}")]
    Incompatible(String),
    /// The host could not run the call (e.g. too many calls at once).
    #[error("the host could not run the call: {0}")]
    Host(String),
}

impl Failure {
    /// Whether making the same call again may succeed.
    #[must_use]
    pub fn retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Host(_) => true,
            Self::Plugin(e) => e.retryable,
            Self::Trap(_) | Self::OutOfMemory { .. } | Self::Denied(_) | Self::Incompatible(_) => {
                false
            }
        }
    }
}

/// A plugin's error as people read it: what kind of failure in words (not
/// `ErrorKind::Unauthorized`), the plugin's message, the provider's code.
fn describe_plugin_error(e: &PluginError) -> String {
    let kind = match e.kind {
        ErrorKind::InvalidInput => "invalid input",
        ErrorKind::NotFound => "not found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Unauthorized => "credentials refused",
        ErrorKind::Throttled => "throttled",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Timeout => "timed out",
        ErrorKind::Unsupported => "not supported",
        ErrorKind::Internal => "internal error",
    };
    let mut text = format!("{kind}: {}", e.message);
    if let Some(code) = &e.provider_code {
        text.push_str(&format!(" (code {code}"));
        if let Some(id) = &e.request_id {
            text.push_str(&format!(", request id {id}"));
        }
        text.push(')');
    }
    text
}

/// A failed plugin call, naming the plugin, its version and the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin} {version}, call {call}: {failure}")]
pub struct Error {
    /// The plugin's name.
    pub plugin: Arc<str>,
    /// The plugin's version.
    pub version: Arc<str>,
    /// The call, e.g. `create-instances`.
    pub call: &'static str,
    /// What went wrong.
    pub failure: Failure,
}

/// The records of the `load-balancers` interface (a cloud account's own
/// load balancers), by their WIT names.
pub mod cloud_lb {
    pub use super::bindings::exports::dcp::plugin::load_balancers::{
        AddressType, BackendServer, Health, HealthCheck, Listener, ListenerHealth,
        ListenerProtocol, ListenerSpec, ListenerStatus, LoadBalancer, LoadBalancerDetail,
        LoadBalancerSpec, LoadBalancerStatus,
    };
}

/// A cloud account's own load balancers, as the rest of DCP sees them: the
/// optional `load-balancers` export of a cloud provider. Implemented by
/// [`WasmPlugin`]; a provider without the export fails each call as
/// `Incompatible`. Every change converges when repeated.
#[async_trait::async_trait]
pub trait CloudLoadBalancers: Send + Sync {
    /// Load balancers of a region.
    async fn list_load_balancers(&self, region: &str)
    -> Result<Vec<cloud_lb::LoadBalancer>, Error>;
    /// One load balancer with its listeners and backends' health.
    async fn describe_load_balancer(
        &self,
        region: &str,
        id: &str,
    ) -> Result<cloud_lb::LoadBalancerDetail, Error>;
    /// Creates a load balancer; the same `idempotency_key` answers the first.
    async fn create_load_balancer(
        &self,
        spec: &cloud_lb::LoadBalancerSpec,
        idempotency_key: &str,
    ) -> Result<cloud_lb::LoadBalancer, Error>;
    /// Deletes a load balancer; a gone one is not an error.
    async fn delete_load_balancer(&self, region: &str, id: &str) -> Result<(), Error>;
    /// Activates or stops a load balancer.
    async fn set_load_balancer_status(
        &self,
        region: &str,
        id: &str,
        status: cloud_lb::LoadBalancerStatus,
    ) -> Result<(), Error>;
    /// Creates a listener, stopped; the same spec again is not an error.
    async fn create_listener(
        &self,
        region: &str,
        id: &str,
        spec: &cloud_lb::ListenerSpec,
    ) -> Result<(), Error>;
    /// Starts or stops a listener.
    async fn set_listener_running(
        &self,
        region: &str,
        id: &str,
        port: u16,
        running: bool,
    ) -> Result<(), Error>;
    /// Deletes a listener; a gone one is not an error.
    async fn delete_listener(&self, region: &str, id: &str, port: u16) -> Result<(), Error>;
    /// Makes a listener's white list exactly `entries`, enforced or not.
    async fn set_white_list(
        &self,
        region: &str,
        id: &str,
        port: u16,
        enabled: bool,
        entries: &[String],
    ) -> Result<(), Error>;
}

/// A cloud provider as the rest of DCP sees it: the machine lifecycle and
/// the look-ups of the machine-template form. Implemented by
/// [`WasmPlugin`] for uploaded components, and by fakes in tests.
#[async_trait::async_trait]
pub trait CloudProvider: Send + Sync {
    /// Name, version and configuration schema.
    async fn describe(&self) -> Result<PluginInfo, Error>;
    /// Checks a configuration.
    async fn validate_config(&self, config: &str) -> Result<(), Error>;
    /// Regions.
    async fn list_regions(&self) -> Result<Vec<Choice>, Error>;
    /// Zones of a region.
    async fn list_zones(&self, region: &str) -> Result<Vec<Choice>, Error>;
    /// VPCs of a region.
    async fn list_vpcs(&self, region: &str) -> Result<Vec<Choice>, Error>;
    /// Subnets of a VPC, optionally in one zone.
    async fn list_subnets(
        &self,
        region: &str,
        vpc: &str,
        zone: Option<&str>,
    ) -> Result<Vec<Choice>, Error>;
    /// Images of a region.
    async fn list_images(&self, region: &str) -> Result<Vec<Choice>, Error>;
    /// Instance types of a region (and zone).
    async fn list_instance_types(
        &self,
        region: &str,
        zone: Option<&str>,
    ) -> Result<Vec<Choice>, Error>;
    /// Security groups of a region (and VPC).
    async fn list_security_groups(
        &self,
        region: &str,
        vpc: Option<&str>,
    ) -> Result<Vec<Choice>, Error>;
    /// Disk categories of a zone.
    async fn list_disk_categories(&self, region: &str, zone: &str) -> Result<Vec<Choice>, Error>;
    /// Charge types.
    async fn list_charge_types(&self) -> Result<Vec<Choice>, Error>;
    /// Creates `count` instances; the same key never creates a second batch.
    async fn create_instances(
        &self,
        spec: &InstanceSpec,
        count: u32,
        idempotency_key: &str,
    ) -> Result<Vec<String>, Error>;
    /// One instance.
    async fn get_instance(&self, region: &str, id: &str) -> Result<Instance, Error>;
    /// A page of instances.
    async fn list_instances(
        &self,
        region: &str,
        page: Option<&str>,
        page_size: u32,
    ) -> Result<InstancePage, Error>;
    /// Starts an instance.
    async fn start_instance(&self, region: &str, id: &str) -> Result<(), Error>;
    /// Stops an instance.
    async fn stop_instance(&self, region: &str, id: &str, force: bool) -> Result<(), Error>;
    /// Deletes an instance; one already gone is not an error.
    async fn delete_instance(&self, region: &str, id: &str) -> Result<(), Error>;
    /// Gives an instance a public address.
    async fn allocate_public_ip(&self, region: &str, id: &str) -> Result<String, Error>;
}

/// A load balancer as the rest of DCP sees it. Implemented by
/// [`WasmPlugin`] for uploaded components, and by fakes in tests. Calls
/// carry the whole desired state, so a retried call converges.
#[async_trait::async_trait]
pub trait LoadBalancer: Send + Sync {
    /// Name, version and configuration schema.
    async fn describe(&self) -> Result<PluginInfo, Error>;
    /// Checks a configuration.
    async fn validate_config(&self, config: &str) -> Result<(), Error>;
    /// Makes `target` serve exactly these upstreams' members.
    async fn apply_upstreams(
        &self,
        upstreams: &[Upstream],
        target: Option<&str>,
    ) -> Result<Applied, Error>;
    /// Publishes configuration files to `target`, checked, then reloaded.
    async fn publish(&self, files: &[ConfigFile], target: Option<&str>) -> Result<Applied, Error>;
}

/// Remote-command modules as the rest of DCP sees them. Implemented by
/// [`WasmPlugin`] for uploaded components, and by fakes in tests.
#[async_trait::async_trait]
pub trait RemoteCommand: Send + Sync {
    /// Name, version and configuration schema.
    async fn describe(&self) -> Result<PluginInfo, Error>;
    /// The modules provided.
    async fn modules(&self) -> Result<Vec<ModuleInfo>, Error>;
    /// A dry run of `module` with `params` (JSON).
    async fn plan(&self, module: &str, params: &str) -> Result<String, Error>;
    /// Runs `module` on `target`.
    async fn run(&self, module: &str, target: &str, params: &str) -> Result<Outcome, Error>;
}
