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

/// What becomes of the machines a `create_vm` step made when the step does
/// not finish (the task is cancelled, or the step fails for good): they are
/// never left running outside every pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LeftoverMachines {
    /// Released: the instance is deleted (once the cloud has made it) and
    /// the machine's template charged.
    #[default]
    Release,
    /// Added to the pool as nodes once ready (their service is not started);
    /// a machine that cannot become ready is released.
    HandToPool,
}

impl LeftoverMachines {
    /// The name used in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::HandToPool => "hand_to_pool",
        }
    }

    fn is_release(&self) -> bool {
        *self == Self::Release
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
    /// `create_vm` only: what becomes of its machines when it does not
    /// finish (cancelled, or failed for good); `release` when absent.
    #[serde(default, skip_serializing_if = "LeftoverMachines::is_release")]
    pub leftover_machines: LeftoverMachines,
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
            leftover_machines: LeftoverMachines::Release,
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
    /// deploy: the image tag to roll out: 1–128 of `[A-Za-z0-9_.-]`, not
    /// starting with `.` or `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
        )
    )]
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
    /// shrink: whether `return_vm` releases the nodes' machines (`false`:
    /// they leave the pool and stay ready); absent: it releases them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_machines: Option<bool>,
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
    /// What was done about the machines of a `create_vm` step that did not
    /// finish; absent when nothing was left to undo.
    #[serde(default)]
    pub compensation: Option<Compensation>,
}

/// The undoing of a `create_vm` step that did not finish: each machine it
/// made is released or handed to the pool (the step's `leftover_machines`),
/// before the task ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Compensation {
    /// pending, running, then succeeded or failed.
    pub state: StepState,
    /// What became of each machine, one line each.
    pub output: String,
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
    /// Only tasks of this service's pools.
    #[serde(default)]
    pub service_id: Option<i64>,
}

/// A task node's own fields, without its steps: a `node` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskNodeChange {
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
}

/// One step on one node, as it is now: a `step` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskStepChange {
    /// The node's position in the task.
    pub node: u32,
    /// The step's position in the task's steps.
    pub index: u32,
    /// The step, whole (its output and error included).
    pub step: TaskStep,
}

/// What `GET /api/v1/tasks/{id}/events` sends; the SSE event name says
/// which. A client keeps the `snapshot` and replaces in it what each later
/// event carries; that gives what `GET /api/v1/tasks/{id}` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(untagged)]
pub enum TaskEvent {
    /// The whole task, sent first on every connection.
    Snapshot(TaskDetail),
    /// The task's own fields (state, reason, command, counts, times)
    /// changed; after a final state with no command waiting the stream ends.
    Task(Task),
    /// A node's own fields changed (its steps come as `step` events).
    Node(TaskNodeChange),
    /// A step on a node changed.
    Step(TaskStepChange),
}

impl TaskEvent {
    /// The SSE event name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Snapshot(_) => "snapshot",
            Self::Task(_) => "task",
            Self::Node(_) => "node",
            Self::Step(_) => "step",
        }
    }

    /// What a client holding `old` needs to hold `new`: the changed steps
    /// and nodes, then the task (so its final state comes last); a snapshot
    /// when the shape differs.
    #[must_use]
    pub fn changes(old: &TaskDetail, new: &TaskDetail) -> Vec<Self> {
        let same_shape = old.steps == new.steps
            && old.nodes.len() == new.nodes.len()
            && old
                .nodes
                .iter()
                .zip(&new.nodes)
                .all(|(a, b)| a.index == b.index && a.steps.len() == b.steps.len());
        if !same_shape {
            return vec![Self::Snapshot(new.clone())];
        }
        let mut events = Vec::new();
        for (before, after) in old.nodes.iter().zip(&new.nodes) {
            for (i, (a, b)) in before.steps.iter().zip(&after.steps).enumerate() {
                if a != b {
                    events.push(Self::Step(TaskStepChange {
                        node: after.index,
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        step: b.clone(),
                    }));
                }
            }
            let change = TaskNodeChange::of(after);
            if TaskNodeChange::of(before) != change {
                events.push(Self::Node(change));
            }
        }
        if old.task != new.task {
            events.push(Self::Task(new.task.clone()));
        }
        events
    }

    /// Applies this event to what a client holds; a delta for a node or
    /// step it does not have is ignored (it came before a snapshot).
    pub fn apply(self, detail: &mut Option<TaskDetail>) {
        match self {
            Self::Snapshot(fresh) => *detail = Some(fresh),
            Self::Task(task) => {
                if let Some(d) = detail {
                    d.task = task;
                }
            }
            Self::Node(change) => {
                if let Some(node) = detail
                    .as_mut()
                    .and_then(|d| d.nodes.iter_mut().find(|n| n.index == change.index))
                {
                    node.node_id = change.node_id;
                    node.machine_id = change.machine_id;
                    node.address = change.address;
                    node.state = change.state;
                }
            }
            Self::Step(change) => {
                if let Some(step) = detail
                    .as_mut()
                    .and_then(|d| d.nodes.iter_mut().find(|n| n.index == change.node))
                    .and_then(|n| n.steps.get_mut(change.index as usize))
                {
                    *step = change.step;
                }
            }
        }
    }
}

impl TaskNodeChange {
    /// The node's own fields.
    #[must_use]
    pub fn of(node: &TaskNode) -> Self {
        Self {
            index: node.index,
            node_id: node.node_id,
            machine_id: node.machine_id,
            address: node.address.clone(),
            state: node.state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(state: StepState, output: &str) -> TaskStep {
        TaskStep {
            state,
            attempts: 1,
            started_at: None,
            finished_at: None,
            output: output.to_owned(),
            error: String::new(),
            compensation: None,
        }
    }

    fn detail(state: TaskState, nodes: Vec<(StepState, Vec<TaskStep>)>) -> TaskDetail {
        TaskDetail {
            task: Task {
                id: 1,
                kind: TaskKind::Adhoc,
                pool_id: 1,
                pool_name: "p".into(),
                template_id: 1,
                overrides: TaskOverrides::default(),
                batch_size: 1,
                state,
                reason: String::new(),
                command: None,
                counts: NodeCounts::default(),
                created_by: "admin".into(),
                created_at: "2026-01-01T00:00:00Z".into(),
                started_at: None,
                finished_at: None,
            },
            steps: vec![StepSpec::builtin("a"), StepSpec::builtin("b")],
            nodes: nodes
                .into_iter()
                .enumerate()
                .map(|(i, (state, steps))| TaskNode {
                    index: u32::try_from(i).unwrap_or_default(),
                    node_id: None,
                    machine_id: None,
                    address: format!("127.0.0.{i}"),
                    state,
                    steps,
                })
                .collect(),
        }
    }

    #[test]
    fn changes_carry_only_what_changed_and_applying_them_gives_the_new_task() {
        let pending = || step(StepState::Pending, "");
        let old = detail(
            TaskState::Running,
            vec![
                (StepState::Running, vec![pending(), pending()]),
                (StepState::Pending, vec![pending(), pending()]),
            ],
        );
        let mut new = old.clone();
        new.nodes[1].state = StepState::Succeeded;
        new.nodes[1].steps[0] = step(StepState::Succeeded, "done\n");
        new.task.state = TaskState::PartiallyFailed;
        let events = TaskEvent::changes(&old, &new);
        let names: Vec<_> = events.iter().map(TaskEvent::name).collect();
        assert_eq!(names, ["step", "node", "task"]);
        let mut held = Some(old);
        for event in events {
            event.apply(&mut held);
        }
        assert_eq!(held, Some(new.clone()));
        assert!(TaskEvent::changes(&new, &new).is_empty());
        // Another shape (cannot happen today) falls back to a snapshot.
        let mut other = new.clone();
        other.nodes.pop();
        assert_eq!(
            TaskEvent::changes(&new, &other),
            [TaskEvent::Snapshot(other)]
        );
    }
}
