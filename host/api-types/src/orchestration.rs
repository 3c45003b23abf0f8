//! Orchestration below clusters (OpenDCP's orion): services, pools and nodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// A published container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// The port inside the container.
    pub container_port: u16,
    /// The port on the node's address; the container port when absent.
    #[serde(default)]
    pub host_port: Option<u16>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: PortProtocol,
}

/// A port's protocol.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A directory of the node mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// An absolute path on the node.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^/[^\n\u0000,]*$"))]
    pub host_path: String,
    /// An absolute path in the container, mounted once per container.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^/[^\n\u0000,]*$"))]
    pub container_path: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// When Docker restarts the container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never.
    No,
    /// Always, also after the Docker daemon restarts.
    Always,
    /// Always, unless it was stopped on purpose.
    #[default]
    UnlessStopped,
    /// When it exits non-zero.
    OnFailure,
}

/// How a service's container runs (the defaults of every node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Mounted directories.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// The restart policy.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// CPU cores the container may use (e.g. 0.5).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 256))]
    pub cpu_limit: Option<f64>,
    /// Memory the container may use, in MiB.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 6, maximum = 4_194_304))]
    pub memory_limit_mb: Option<u64>,
    /// Replaces the image's entrypoint.
    #[serde(default)]
    pub command: Vec<String>,
    /// Arguments (the image's CMD).
    #[serde(default)]
    pub args: Vec<String>,
    /// How DCP tells that a newly started container is ready: absent, a
    /// container counts as started once Docker runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// A service's health check. `start_service` succeeds only once the new
/// container passes it; a deploy stops at the first node whose container
/// does not. The check runs on the node (over DCP's SSH channel), so it
/// needs no route from DCP to the service's ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// What is checked.
    pub probe: HealthProbe,
    /// Seconds between checks.
    #[serde(default = "HealthCheck::default_interval")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 300, default = 5))]
    pub interval_secs: u32,
    /// Seconds one check may take before it counts as failed.
    #[serde(default = "HealthCheck::default_timeout")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 60, default = 3))]
    pub timeout_secs: u32,
    /// Failed checks in a row (after the start period) that make the
    /// container unhealthy.
    #[serde(default = "HealthCheck::default_retries")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100, default = 3))]
    pub retries: u32,
    /// Seconds after the start during which failed checks do not count
    /// (a passing one still makes the container healthy at once).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 3600, default = 0))]
    pub start_period_secs: u32,
}

impl HealthCheck {
    /// Longest interval, timeout and start period, in seconds.
    pub const MAX_INTERVAL_SECS: u32 = 300;
    /// Longest time one check may take, in seconds.
    pub const MAX_TIMEOUT_SECS: u32 = 60;
    /// Most failed checks in a row.
    pub const MAX_RETRIES: u32 = 100;
    /// Longest start period, in seconds.
    pub const MAX_START_PERIOD_SECS: u32 = 3600;

    const fn default_interval() -> u32 {
        5
    }
    const fn default_timeout() -> u32 {
        3
    }
    const fn default_retries() -> u32 {
        3
    }

    /// The longest a container can take to be found healthy or not: a
    /// step's timeout shorter than this may cut the check short.
    #[must_use]
    pub fn longest_secs(&self) -> u64 {
        // The checks within the start period, then `retries` failures in a
        // row; each takes up to its timeout and waits an interval.
        let checks = u64::from(self.start_period_secs.div_ceil(self.interval_secs.max(1)))
            + u64::from(self.retries);
        checks * (u64::from(self.interval_secs) + u64::from(self.timeout_secs))
    }
}

/// What a health check asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthProbe {
    /// An HTTP GET of `path` on the node's address at the port published
    /// for `port`: a 2xx or 3xx answer is healthy. Made with the node's
    /// `curl`, `wget` or `busybox wget`, whichever it has.
    Http {
        /// The path, with any query: starts with `/`, printable ASCII
        /// without spaces.
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 1024, pattern = "^/[!-~]*$")
        )]
        path: String,
        /// The container port asked: one of the service's published TCP
        /// ports.
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
        port: u16,
    },
    /// A program run inside the container (`docker exec`, no shell): exit
    /// status 0 is healthy.
    Exec {
        /// The program, then its arguments.
        #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 64))]
        command: Vec<String>,
    },
}

/// A service: what runs, as a container image with its default spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Service {
    /// Id.
    pub id: i64,
    /// The cluster it belongs to.
    pub cluster_id: i64,
    /// Unique name: 1–64 characters of `a-z`, `0-9`, `-`, `_`.
    pub name: String,
    /// Free text.
    pub description: String,
    /// A label, e.g. `web` or `worker`.
    pub service_type: String,
    /// The image with its tag, e.g. `registry.local/shop/web:1.4`.
    pub image: String,
    /// How the container runs.
    pub container: ContainerSpec,
    /// The tag `POST /services/{id}/rollback` deploys: the tag every node
    /// ran before a deploy that did not finish, or else the tag before the
    /// last finished deploy. Absent when there is nothing to go back to.
    pub rollback_tag: Option<String>,
    /// Its pools.
    pub pools: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// What creates or replaces a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceInput {
    /// The cluster.
    pub cluster_id: i64,
    /// Unique name.
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 64,
            pattern = "^[a-z0-9_-]+$"
        )
    )]
    pub name: String,
    /// Free text.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: String,
    /// A label.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub service_type: String,
    /// The image reference, by Docker's grammar:
    /// `[registry[:port]/]path[:tag][@digest]`, e.g.
    /// `registry.local:5000/shop/web:1.4`. The path is lowercase; the name
    /// (registry and path) is at most 255 characters; the tag is 1–128 of
    /// `[A-Za-z0-9_.-]`, not starting with `.` or `-`; a digest is
    /// `sha256:` (or `sha384:`, `sha512:`) and its lowercase hex digits.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 520,
            pattern = r"^(?:(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@(?:sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128}))?$"
        )
    )]
    pub image: String,
    /// How the container runs.
    #[serde(default)]
    pub container: ContainerSpec,
}

/// What `POST /services/{id}/rollback` rolls back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RollbackInput {
    /// The service's `rollback_tag` as the caller saw it: a rollback asked
    /// twice does not roll forward again (409 once the tag has moved on).
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
        )
    )]
    pub tag: String,
    /// Nodes deployed at once in each pool (default 1).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub batch_size: Option<u32>,
}

/// The deploys a rollback started, one per pool with nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Rollback {
    /// The tag deployed.
    pub tag: String,
    /// The deploy tasks.
    pub tasks: Vec<crate::Task>,
}

/// Filters of `GET /services`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
pub struct ServiceFilter {
    /// Only services of this cluster.
    #[serde(default)]
    pub cluster_id: Option<i64>,
}

/// A pool: servers that run one service, grown from one machine template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Pool {
    /// Id.
    pub id: i64,
    /// The service.
    pub service_id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The machine template new nodes are made from.
    pub template_id: Option<i64>,
    /// The task template an expand runs.
    pub expand_template_id: i64,
    /// The task template a shrink runs.
    pub shrink_template_id: i64,
    /// The task template a deploy runs.
    pub deploy_template_id: i64,
    /// The discovery binding its nodes are registered with (`register` and
    /// `unregister` steps need one).
    pub binding_id: Option<i64>,
    /// Its nodes.
    pub nodes: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// What creates or replaces a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PoolInput {
    /// The service.
    pub service_id: i64,
    /// Unique name.
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 64,
            pattern = "^[a-z0-9_-]+$"
        )
    )]
    pub name: String,
    /// Free text.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: String,
    /// The machine template new nodes are made from.
    #[serde(default)]
    pub template_id: Option<i64>,
    /// The task template an expand runs; DCP's seeded `expand` when absent.
    #[serde(default)]
    pub expand_template_id: Option<i64>,
    /// The task template a shrink runs; DCP's seeded `shrink` when absent.
    #[serde(default)]
    pub shrink_template_id: Option<i64>,
    /// The task template a deploy runs; DCP's seeded `upgrade` when absent.
    #[serde(default)]
    pub deploy_template_id: Option<i64>,
    /// The discovery binding its nodes are registered with. With one, the
    /// seeded templates in effect are those that register nodes once
    /// healthy and drain them before their containers stop
    /// (`expand-registered`, `shrink-drained`, `upgrade-drained`).
    #[serde(default)]
    pub binding_id: Option<i64>,
}

/// Filters of `GET /pools`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
pub struct PoolFilter {
    /// Only pools of this service.
    #[serde(default)]
    pub service_id: Option<i64>,
}

/// How `DELETE /pools/{id}/nodes/{node_id}` removes a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
pub struct RemoveNode {
    /// Release the node's machine once its container is stopped. Absent:
    /// a machine DCP created from a template is released (it was made for
    /// the pool and costs money), an adopted server is kept (it predates
    /// DCP; releasing it would only make DCP forget it).
    #[serde(default)]
    pub release_machine: Option<bool>,
    /// Wait behind the pool's current task instead of being refused (409).
    #[serde(default)]
    pub queue: bool,
    /// Take the node out of the pool at once (204), running nothing on it:
    /// for a server that is gone. A container it still runs is left there.
    #[serde(default)]
    pub force: bool,
}

/// Where a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// In the pool; the service has not been started on it.
    Pending,
    /// The service runs on it.
    Running,
    /// The last step on it failed.
    Failed,
    /// A task is taking it out of the pool (stopping its container,
    /// returning or keeping its machine); the row goes when it succeeds.
    Removing,
}

/// A server of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Node {
    /// Id.
    pub id: i64,
    /// The pool.
    pub pool_id: i64,
    /// The machine, when DCP manages it; none for a server added by address.
    pub machine_id: Option<i64>,
    /// Its address.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Current state.
    pub state: NodeState,
    /// The image DCP last started its container from; absent before the
    /// first start.
    pub image: Option<String>,
    /// That image's tag (`latest` when it names none).
    pub tag: Option<String>,
    /// When it joined (RFC 3339).
    pub created_at: String,
}

/// A node's container, as Docker on the node reports it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NodeContainer {
    /// Its name: `dcp-<service>-<node id>`.
    pub name: String,
    /// Docker's state: `created`, `running`, `restarting`, `paused`,
    /// `exited`, `dead`; `missing` when the node has no such container.
    pub state: String,
    /// The image it runs.
    pub image: Option<String>,
    /// That image's tag.
    pub tag: Option<String>,
    /// When it last started (RFC 3339).
    pub started_at: Option<String>,
    /// How many times Docker restarted it.
    pub restart_count: Option<u32>,
    /// Its last exit code (0 while it has not exited).
    pub exit_code: Option<i32>,
    /// The service's health check, asked once now: `healthy` or
    /// `unhealthy`; absent when the service has none or the container
    /// does not run.
    pub health: Option<String>,
    /// What the failed check said.
    pub health_detail: String,
}

/// How much of a node container's log `GET …/logs` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
pub struct LogsQuery {
    /// The last lines (1–5000, default 200).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 5000))]
    pub tail: Option<u32>,
    /// Only lines after this time (RFC 3339, e.g. the `at` of the last line
    /// seen): what following the log asks for.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(format = DateTime))]
    pub since: Option<String>,
}

/// Lines of a node container's log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NodeLogs {
    /// The container.
    pub name: String,
    /// The lines (stdout and stderr together, as Docker keeps them).
    pub lines: Vec<LogLine>,
    /// The answer was cut at its size limit (1 MiB): ask again with `since`.
    pub truncated: bool,
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LogLine {
    /// When Docker received it (RFC 3339 with nanoseconds).
    pub at: String,
    /// The text, without its newline.
    pub text: String,
}

/// A server to add to a pool by address (logged in with DCP's default key;
/// refused when none is configured: adopt the server and add it by machine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    /// IP address or host name.
    pub address: String,
    /// SSH port (default 22).
    #[serde(default)]
    pub port: Option<u16>,
    /// Login user (default `root`).
    #[serde(default)]
    pub user: Option<String>,
}

/// Adds nodes to a pool: machines DCP manages and/or servers by address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddNodes {
    /// Machines (ready) to add.
    #[serde(default)]
    pub machine_ids: Vec<i64>,
    /// Servers to add by address.
    #[serde(default)]
    pub addresses: Vec<NodeAddress>,
}
