//! Task templates and tasks: expand, shrink, deploy and ad-hoc work on a
//! pool's nodes, run by DCP's durable task engine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// The built-in steps. Any other step runs a command group.
pub mod builtin {
    /// Creates a machine from the pool's machine template and adds it as a node.
    pub const CREATE_VM: &str = "create_vm";
    /// Removes the node from its pool and releases its machine.
    pub const RETURN_VM: &str = "return_vm";
    /// Pulls and runs the service's image (any step named `start_service…`).
    pub const START_SERVICE: &str = "start_service";
    /// Stops and removes the service's container.
    pub const STOP_SERVICE: &str = "stop_service";
    /// Adds the node to the pool's load balancer.
    pub const REGISTER: &str = "register";
    /// Takes the node out of the pool's load balancer.
    pub const UNREGISTER: &str = "unregister";
}

/// What a template is for: which of the manual's rules its steps must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TemplatePurpose {
    /// Scale out: starts with `create_vm`, has a `start_service…` step.
    Expand,
    /// Scale in: ends with `return_vm`.
    Shrink,
    /// Roll out an image: has a `start_service…` step.
    Deploy,
    /// Anything on existing nodes.
    Adhoc,
}

impl TemplatePurpose {
    /// The name used in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expand => "expand",
            Self::Shrink => "shrink",
            Self::Deploy => "deploy",
            Self::Adhoc => "adhoc",
        }
    }
}

/// One step of a task template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// A built-in (`create_vm`, `return_vm`, `start_service…`,
    /// `stop_service`, `register`, `unregister`) or, with `group_id`, a label
    /// for the command group.
    pub name: String,
    /// The command group this step runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<i64>,
    /// Values of the group's parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Value>,
    /// How many times a failed attempt is tried again (0–10).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 10))]
    pub retries: u32,
    /// Seconds between attempts (0–3600).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 3600))]
    pub retry_delay_secs: u32,
    /// A failure does not stop the node's pipeline.
    #[serde(default)]
    pub ignore_error: bool,
    /// Seconds one attempt may take (1–86400); 600 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86_400))]
    pub timeout_secs: Option<u32>,
}

impl StepSpec {
    /// A built-in step with default settings.
    #[must_use]
    pub fn builtin(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            group_id: None,
            params: BTreeMap::new(),
            retries: 0,
            retry_delay_secs: 0,
            ignore_error: false,
            timeout_secs: None,
        }
    }

    /// Whether this step starts the service (`start_service…`).
    #[must_use]
    pub fn starts_service(&self) -> bool {
        self.group_id.is_none() && self.name.starts_with(builtin::START_SERVICE)
    }
}

/// A task template: ordered steps every node of a task goes through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskTemplate {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Which rules apply.
    pub purpose: TemplatePurpose,
    /// The steps, in order.
    pub steps: Vec<StepSpec>,
    /// Seeded by DCP as a default.
    pub seeded: bool,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// What creates or replaces a task template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskTemplateInput {
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
    /// Which rules apply.
    pub purpose: TemplatePurpose,
    /// The steps, in order (1–50).
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 50))]
    pub steps: Vec<StepSpec>,
}

/// What kind of work a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// New nodes.
    Expand,
    /// Fewer nodes.
    Shrink,
    /// A new image on every node.
    Deploy,
    /// A template on chosen nodes.
    Adhoc,
}

impl TaskKind {
    /// The name used in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expand => "expand",
            Self::Shrink => "shrink",
            Self::Deploy => "deploy",
            Self::Adhoc => "adhoc",
        }
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its turn on the pool or for a worker.
    Pending,
    /// Nodes are going through their steps.
    Running,
    /// Stopped at a step boundary; resume continues it.
    Paused,
    /// Every node succeeded.
    Succeeded,
    /// Some nodes failed, others succeeded.
    PartiallyFailed,
    /// Every node failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl TaskState {
    /// The name used in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::PartiallyFailed => "partially_failed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the task has ended (retry-failed may still reopen a failed one).
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::PartiallyFailed | Self::Failed | Self::Cancelled
        )
    }
}

/// Where one step on one node stands (also a node's overall state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    #[default]
    Pending,
    /// Under way.
    Running,
    /// Done.
    Succeeded,
    /// Failed (after its retries).
    Failed,
    /// Not run: an earlier step failed, or the task was cancelled.
    Skipped,
}

impl StepState {
    /// The name used in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// Asks for a task. Two tasks never work on one pool at once: a second one
/// is refused (409) unless `queue` is set, then it waits its turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    /// expand, shrink, deploy or adhoc.
    pub kind: TaskKind,
    /// The pool.
    pub pool_id: i64,
    /// expand: how many nodes to add (1–1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// shrink / adhoc: the nodes, by address (adhoc: every node when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// deploy: the image tag to roll out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// How many nodes work at once (1–1000); deploy: 1 when absent, others: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Overrides the pool's template for this kind (adhoc: required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<i64>,
    /// Wait behind the pool's current task instead of being refused.
    #[serde(default)]
    pub queue: bool,
}

/// The run-time choices of a task, kept with it for pause/resume and retry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskOverrides {
    /// The template chosen instead of the pool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<i64>,
    /// The image tag to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The service-discovery binding chosen instead of the pool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_id: Option<i64>,
}

/// Nodes of a task per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NodeCounts {
    /// Not started.
    pub pending: u32,
    /// Under way.
    pub running: u32,
    /// Done.
    pub succeeded: u32,
    /// Failed.
    pub failed: u32,
    /// Skipped (cancelled).
    pub skipped: u32,
}

/// A task as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Task {
    /// Id.
    pub id: i64,
    /// Its kind.
    pub kind: TaskKind,
    /// The pool.
    pub pool_id: i64,
    /// The pool's name.
    pub pool_name: String,
    /// The template it runs.
    pub template_id: i64,
    /// Run-time overrides.
    pub overrides: TaskOverrides,
    /// How many nodes work at once.
    pub batch_size: u32,
    /// Where it stands.
    pub state: TaskState,
    /// Why it ended as it did, or what it waits for.
    pub reason: String,
    /// A pause, resume, retry or cancel not yet carried out.
    pub command: Option<String>,
    /// Nodes per state.
    pub counts: NodeCounts,
    /// Who asked for it.
    pub created_by: String,
    /// When it was asked for (RFC 3339).
    pub created_at: String,
    /// When it started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
}

/// One step on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskStep {
    /// Where it stands.
    pub state: StepState,
    /// Attempts made.
    pub attempts: u32,
    /// When the last attempt started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// What it printed or did (capped).
    pub output: String,
    /// Why it failed.
    pub error: String,
}

/// A node of a task with its steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskNode {
    /// Position in the task.
    pub index: u32,
    /// The pool node (expand: once its machine is made).
    pub node_id: Option<i64>,
    /// The machine.
    pub machine_id: Option<i64>,
    /// The node's address (expand: once known).
    pub address: String,
    /// The node's pipeline as a whole.
    pub state: StepState,
    /// One per template step.
    pub steps: Vec<TaskStep>,
}

/// A task with its steps and every node × step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskDetail {
    /// The task.
    pub task: Task,
    /// The steps it runs (as they were when it was made).
    pub steps: Vec<StepSpec>,
    /// Its nodes.
    pub nodes: Vec<TaskNode>,
}

/// Filters of `GET /tasks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
pub struct TaskFilter {
    /// Only tasks of this pool.
    #[serde(default)]
    pub pool_id: Option<i64>,
}
