//! The durable task engine (OpenDCP's orion flows, without their flaws):
//! expand, shrink, deploy and ad-hoc tasks over a pool's nodes.
//!
//! `transition` is the pure core (state + event → state + effects); this
//! module is the effect runner. Every process runs a claimer that leases
//! tasks needing a driver (`FOR UPDATE SKIP LOCKED` on PostgreSQL, a
//! compare-and-set on SQLite) and renews the lease while it drives them; a
//! task whose driver died is claimed again once its lease expires, and its
//! interrupted steps run again under the same idempotency keys — derived
//! from (task, node, step) — so a replay never makes a second VM or
//! container. Pause, resume, retry and cancel are commands stored on the
//! task and carried out by whichever process holds its lease.

pub mod rules;
mod steps;
pub mod transition;

pub use self::steps::Builtins;

use std::{
    collections::{BTreeSet, HashSet},
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::FutureExt as _;

use dcp_api_types::{
    Compensation, NodeCounts, RemoveNode, RollbackInput, StepSpec, StepState, Task, TaskDetail,
    TaskFilter, TaskInput, TaskKind, TaskNode, TaskOverrides, TaskState, TaskStep, TaskTemplate,
    TaskTemplateInput, TemplatePurpose,
};
use tokio::{
    sync::{Notify, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

pub use self::rules::{DEFAULT_TIMEOUT_SECS, template_change};
use self::transition::{Effect, Event, NodeRun, Plan, StepRule, StepRun, transition};
use crate::{
    api::rfc3339,
    machines,
    store::{
        self, NewTask, PoolRecord, Store, TaskNodeRecord, TaskRecord, TaskStepRecord,
        TaskTemplateRecord, now_millis as now_ms,
    },
    validate::{self, Invalid},
};

/// Most nodes one task works on.
pub const MAX_NODES: u32 = 1000;

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field breaks a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The operation does not fit the task's state, or the pool is busy.
    #[error("{0}")]
    Conflict(String),
}

/// How the engine runs; from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a claimed task stays leased without a heartbeat.
    pub lease: Duration,
    /// How often a process looks for tasks to claim.
    pub claim_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(15),
            claim_every: Duration::from_millis(500),
        }
    }
}

/// What a node became known as (expand: once its machine is made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The pool node.
    pub node_id: i64,
    /// Its machine.
    pub machine_id: Option<i64>,
    /// Its address.
    pub address: String,
}

/// How an attempt of a step ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// It succeeded.
    pub ok: bool,
    /// What it printed or did.
    pub output: String,
    /// Why it failed.
    pub error: String,
    /// What the node became known as.
    pub node: Option<NodeFacts>,
}

impl StepOutcome {
    /// A success with `output`.
    pub fn ok(output: impl Into<String>) -> Self {
        Self {
            ok: true,
            output: output.into(),
            ..Self::default()
        }
    }

    /// A failure saying `error`.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            ..Self::default()
        }
    }
}

/// The effect runner's hands: what carries out steps. DCP's are
/// [`Builtins`]; the engine's benchmark uses no-op steps to measure the
/// engine alone.
#[async_trait::async_trait]
pub trait Steps: Send + Sync + std::fmt::Debug {
    /// Prepares the steps of one task (its pool, service, image).
    async fn for_task(
        self: Arc<Self>,
        task: &TaskRecord,
        specs: Vec<StepSpec>,
    ) -> Result<Arc<dyn TaskSteps>, Error>;
}

/// The steps of one task.
#[async_trait::async_trait]
pub trait TaskSteps: Send + Sync {
    /// Runs an attempt of `step` on `node` (`rerun`: an earlier attempt
    /// failed), stopping when `abort` fires. Idempotent per (task, node, step).
    async fn run(
        &self,
        node: &TaskNodeRecord,
        step: usize,
        rerun: bool,
        abort: &CancellationToken,
    ) -> StepOutcome;

    /// Undoes what the attempts of `step` on `node` left behind (the
    /// machines of a `create_vm` that did not finish), stopping only when
    /// `stop` fires. Idempotent: a second run finds what is left to undo.
    async fn compensate(
        &self,
        node: &TaskNodeRecord,
        step: usize,
        stop: &CancellationToken,
    ) -> StepOutcome;

    /// The service and image a succeeded deploy records as the service's.
    fn deployed_image(&self) -> Option<(i64, String)>;
}

/// The task engine of one DCP process.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    steps: Arc<dyn Steps>,
    settings: Settings,
    /// This process, as the holder of leases.
    owner: String,
    /// Wakes the claimer (a task was made or asked to change).
    wake: Notify,
    /// Moves whenever this process changes a task, so event streams look at
    /// their task's version at once instead of waiting for their next poll.
    changed: watch::Sender<u64>,
    stop: CancellationToken,
    driving: Mutex<HashSet<i64>>,
}

fn ms_time(ms: i64) -> String {
    rfc3339(store::datetime(ms))
}

fn corrupt(column: &'static str, value: &str) -> store::Error {
    store::Error::Corrupt {
        column,
        value: value.chars().take(200).collect(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(column: &'static str, value: &str) -> Result<T, Error> {
    serde_json::from_str(value).map_err(|_| corrupt(column, value).into())
}

fn name<T: serde::de::DeserializeOwned>(column: &'static str, value: &str) -> Result<T, Error> {
    Ok(store::parse_name(column, value)?)
}

fn template_to_api(t: TaskTemplateRecord) -> Result<TaskTemplate, Error> {
    Ok(TaskTemplate {
        id: t.id,
        purpose: name("task_templates.purpose", &t.purpose)?,
        steps: parse("task_templates.steps", &t.steps)?,
        name: t.name,
        description: t.description,
        seeded: t.seeded,
        created_at: rfc3339(t.created_at),
        updated_at: rfc3339(t.updated_at),
    })
}

impl Engine {
    /// Starts the engine: its claimer picks up every task that needs a
    /// driver, including the ones a killed process was running.
    pub fn start(store: Store, steps: Arc<dyn Steps>, settings: Settings) -> Arc<Self> {
        let engine = Arc::new(Self {
            store,
            steps,
            settings,
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::now_v7()),
            wake: Notify::new(),
            changed: watch::Sender::new(0),
            stop: CancellationToken::new(),
            driving: Mutex::new(HashSet::new()),
        });
        tokio::spawn(claimer(Arc::downgrade(&engine), engine.stop.clone()));
        engine
    }

    /// Stops claiming and driving (the leases expire; another process or
    /// the next start resumes the tasks).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    // ---- templates ----

    /// A window of the task templates, by name, and how many there are.
    pub async fn templates(
        &self,
        window: store::Window,
    ) -> Result<(Vec<TaskTemplate>, u64), Error> {
        let (templates, total) = self.store.task_templates(window).await?;
        let templates = templates
            .into_iter()
            .map(template_to_api)
            .collect::<Result<_, _>>()?;
        Ok((templates, total))
    }

    /// One task template.
    pub async fn template(&self, id: i64) -> Result<TaskTemplate, Error> {
        template_to_api(self.store.task_template(id).await?)
    }

    async fn checked_template(
        &self,
        input: TaskTemplateInput,
    ) -> Result<store::TaskTemplateChange, Error> {
        for (i, step) in input.steps.iter().enumerate() {
            if let Some(group) = step.group_id {
                match self.store.group(group).await {
                    Ok(_) => {}
                    Err(store::Error::NotFound { .. }) => {
                        return Err(Invalid::new(
                            format!("steps[{i}].group_id"),
                            format!("no command group with id {group}"),
                        )
                        .into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(rules::template_change(input)?)
    }

    /// Creates a task template.
    pub async fn create_template(&self, input: TaskTemplateInput) -> Result<TaskTemplate, Error> {
        let change = self.checked_template(input).await?;
        template_to_api(self.store.create_task_template(&change).await?)
    }

    /// Replaces a task template; the pools bound to it must still accept it.
    pub async fn update_template(
        &self,
        id: i64,
        input: TaskTemplateInput,
    ) -> Result<TaskTemplate, Error> {
        let (purpose, steps) = (input.purpose, input.steps.clone());
        let change = self.checked_template(input).await?;
        for pool in self.store.pools_bound_to(id).await? {
            let pool = self.store.pool_record(pool).await?;
            let expected = if pool.task_templates.expand == id {
                TemplatePurpose::Expand
            } else if pool.task_templates.shrink == id {
                TemplatePurpose::Shrink
            } else {
                TemplatePurpose::Deploy
            };
            rules::binding(
                "purpose",
                expected,
                &change.name,
                purpose,
                &steps,
                &pool.name,
                pool.binding_id.is_some(),
            )?;
        }
        template_to_api(self.store.update_task_template(id, &change).await?)
    }

    /// Deletes a task template no pool or task uses.
    pub async fn delete_template(&self, id: i64) -> Result<(), Error> {
        Ok(self.store.delete_task_template(id).await?)
    }

    /// Checks the templates a pool is to be bound to (`field` names them).
    pub async fn check_pool_templates(
        &self,
        pool: &str,
        has_binding: bool,
        bindings: [(&str, TemplatePurpose, Option<i64>); 3],
    ) -> Result<(), Error> {
        for (field, purpose, id) in bindings {
            let Some(id) = id else { continue };
            let template = match self.store.task_template(id).await {
                Ok(t) => template_to_api(t)?,
                Err(store::Error::NotFound { .. }) => {
                    return Err(Invalid::new(
                        field.to_owned(),
                        format!("no task template with id {id}"),
                    )
                    .into());
                }
                Err(e) => return Err(e.into()),
            };
            rules::binding(
                field,
                purpose,
                &template.name,
                template.purpose,
                &template.steps,
                pool,
                has_binding,
            )?;
        }
        Ok(())
    }

    // ---- tasks ----

    /// Records a task after checking it; it starts as soon as a process
    /// claims it (or, with `queue`, once the pool's current task ends).
    pub async fn create_task(&self, input: TaskInput, user: &str) -> Result<Task, Error> {
        let pool = match self.store.pool_record(input.pool_id).await {
            Ok(p) => p,
            Err(store::Error::NotFound { .. }) => {
                return Err(
                    Invalid::new("pool_id", format!("no pool with id {}", input.pool_id)).into(),
                );
            }
            Err(e) => return Err(e.into()),
        };
        let (purpose, bound) = match input.kind {
            TaskKind::Expand => (TemplatePurpose::Expand, Some(pool.task_templates.expand)),
            TaskKind::Shrink => (TemplatePurpose::Shrink, Some(pool.task_templates.shrink)),
            TaskKind::Deploy => (TemplatePurpose::Deploy, Some(pool.task_templates.deploy)),
            TaskKind::Adhoc => (TemplatePurpose::Adhoc, None),
        };
        let template_id = input
            .template_id
            .or(bound)
            .ok_or_else(|| Invalid::new("template_id", "an ad-hoc task names its task template"))?;
        let template = match self.store.task_template(template_id).await {
            Ok(t) => template_to_api(t)?,
            Err(store::Error::NotFound { .. }) => {
                return Err(Invalid::new(
                    "template_id",
                    format!("no task template with id {template_id}"),
                )
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        rules::binding(
            "template_id",
            purpose,
            &template.name,
            template.purpose,
            &template.steps,
            &pool.name,
            pool.binding_id.is_some(),
        )?;
        let tag = match (input.kind, &input.tag) {
            (TaskKind::Deploy, Some(tag)) => {
                validate::image_tag("tag", tag)?;
                Some(tag.clone())
            }
            (TaskKind::Deploy, None) => {
                return Err(Invalid::new("tag", "a deploy names the image tag to roll out").into());
            }
            (_, Some(_)) => {
                return Err(Invalid::new("tag", "only a deploy takes an image tag").into());
            }
            (_, None) => None,
        };
        let nodes = self.task_nodes(&input, &pool).await?;
        let batch = match (input.batch_size, input.kind) {
            (Some(b), _) if b == 0 || b > MAX_NODES => {
                return Err(Invalid::new(
                    "batch_size",
                    format!("must be between 1 and {MAX_NODES}"),
                )
                .into());
            }
            (Some(b), _) => b,
            (None, TaskKind::Deploy) => 1,
            (None, _) => u32::try_from(nodes.len()).unwrap_or(MAX_NODES).max(1),
        };
        let overrides = TaskOverrides {
            template_id: input.template_id,
            tag,
            ..TaskOverrides::default()
        };
        let task = NewTask {
            kind: input.kind.as_str().to_owned(),
            pool_id: pool.id,
            template_id,
            steps: serde_json::to_string(&template.steps).unwrap_or_default(),
            step_count: template.steps.len(),
            overrides: serde_json::to_string(&overrides).unwrap_or_default(),
            batch_size: batch,
            created_by: user.to_owned(),
            nodes,
            exclusive: !input.queue,
        };
        self.record_task(&pool, &task).await
    }

    /// Rolls `service` back: a deploy of its rollback image (see
    /// [`store::ServiceRecord::rollback_image`]) on each of its pools with
    /// nodes, queued behind what a pool runs. `input.tag` must be that
    /// image's tag, so a rollback asked twice does not roll forward.
    pub async fn rollback(
        &self,
        service_id: i64,
        input: RollbackInput,
        user: &str,
    ) -> Result<(String, Vec<Task>), Error> {
        validate::image_tag("tag", &input.tag)?;
        let service = self.store.service(service_id).await?;
        let image = service.rollback_image().ok_or_else(|| {
            Error::Conflict(format!(
                "service {} has no earlier version to roll back to",
                service.name
            ))
        })?;
        let tag = validate::image_tag_of(image).ok_or_else(|| {
            Error::Conflict(format!(
                "{image} is pinned by digest: deploy it by tag instead"
            ))
        })?;
        if tag != input.tag {
            return Err(Error::Conflict(format!(
                "service {} now rolls back to {tag}, not {}: it changed since you looked",
                service.name, input.tag
            )));
        }
        let (pools, _) = self
            .store
            .list_pools(
                Some(service.id),
                store::Window {
                    limit: MAX_NODES,
                    offset: 0,
                },
            )
            .await?;
        let pools: Vec<PoolRecord> = pools.into_iter().filter(|p| p.nodes > 0).collect();
        if pools.is_empty() {
            return Err(Error::Conflict(format!(
                "service {} has no nodes to roll back",
                service.name
            )));
        }
        let mut tasks = Vec::with_capacity(pools.len());
        for pool in pools {
            let deploy = TaskInput {
                kind: TaskKind::Deploy,
                pool_id: pool.id,
                count: None,
                addresses: Vec::new(),
                tag: Some(tag.to_owned()),
                batch_size: input.batch_size,
                template_id: None,
                queue: true,
            };
            tasks.push(self.create_task(deploy, user).await?);
        }
        Ok((tag.to_owned(), tasks))
    }

    /// Takes a node out of its pool as a shrink task on it alone (the
    /// pool's shrink template: stop its container, then return its machine
    /// — released or kept by `release_machine`, see [`RemoveNode`]). While
    /// that task is unfinished, asking again answers it rather than
    /// starting another.
    pub async fn remove_node(
        &self,
        pool_id: i64,
        node_id: i64,
        how: &RemoveNode,
        user: &str,
    ) -> Result<Task, Error> {
        let pool = self.store.pool_record(pool_id).await?;
        if let Some(id) = self.store.removal_of_node(pool.id, node_id).await? {
            return self.task(id).await;
        }
        let node = self
            .store
            .pool_nodes(pool.id)
            .await?
            .into_iter()
            .find(|n| n.id == node_id)
            .ok_or(store::Error::NotFound { what: "node" })?;
        let release = match (how.release_machine, node.machine_id) {
            (Some(release), _) => release,
            (None, Some(machine)) => self.store.machine(machine).await?.template_id.is_some(),
            (None, None) => false,
        };
        let template =
            template_to_api(self.store.task_template(pool.task_templates.shrink).await?)?;
        let overrides = TaskOverrides {
            release_machines: Some(release),
            ..TaskOverrides::default()
        };
        let task = NewTask {
            kind: TaskKind::Shrink.as_str().to_owned(),
            pool_id: pool.id,
            template_id: template.id,
            steps: serde_json::to_string(&template.steps).unwrap_or_default(),
            step_count: template.steps.len(),
            overrides: serde_json::to_string(&overrides).unwrap_or_default(),
            batch_size: 1,
            created_by: user.to_owned(),
            nodes: vec![(Some(node.id), node.machine_id, node.address)],
            exclusive: !how.queue,
        };
        match self.record_task(&pool, &task).await {
            // A removal of the same node asked for at the same time won.
            Err(Error::Conflict(busy)) => match self.store.removal_of_node(pool.id, node_id).await?
            {
                Some(id) => self.task(id).await,
                None => Err(Error::Conflict(busy)),
            },
            done => done,
        }
    }

    /// Records a checked task and wakes the claimer; a busy pool is a conflict.
    async fn record_task(&self, pool: &PoolRecord, task: &NewTask) -> Result<Task, Error> {
        let id = self.store.create_task(task).await.map_err(|e| match e {
            store::Error::InUse { by, .. } => Error::Conflict(format!(
                "pool {} is busy with {}; ask again with \"queue\": true to run after it",
                pool.name,
                by.join(", ")
            )),
            other => other.into(),
        })?;
        self.wake.notify_one();
        self.task(id).await
    }

    /// The nodes a task will work on: (node, machine, address).
    async fn task_nodes(
        &self,
        input: &TaskInput,
        pool: &PoolRecord,
    ) -> Result<Vec<(Option<i64>, Option<i64>, String)>, Error> {
        if input.kind == TaskKind::Expand {
            let count = input
                .count
                .ok_or_else(|| Invalid::new("count", "an expand says how many nodes to add"))?;
            if count == 0 || count > MAX_NODES {
                return Err(
                    Invalid::new("count", format!("must be between 1 and {MAX_NODES}")).into(),
                );
            }
            if pool.template_id.is_none() {
                return Err(Invalid::new(
                    "pool_id",
                    format!(
                        "pool {} has no machine template to make nodes from",
                        pool.name
                    ),
                )
                .into());
            }
            return Ok((0..count).map(|_| (None, None, String::new())).collect());
        }
        if input.count.is_some() {
            return Err(Invalid::new("count", "only an expand takes a count").into());
        }
        let all = self.store.pool_nodes(pool.id).await?;
        let chosen: Vec<_> = if input.addresses.is_empty() {
            if input.kind == TaskKind::Shrink {
                return Err(Invalid::new(
                    "addresses",
                    "a shrink names the nodes to remove, by address",
                )
                .into());
            }
            all
        } else {
            let mut chosen = Vec::new();
            for (i, address) in input.addresses.iter().enumerate() {
                let node = all.iter().find(|n| &n.address == address).ok_or_else(|| {
                    Invalid::new(
                        format!("addresses[{i}]"),
                        format!("{address} is not a node of pool {}", pool.name),
                    )
                })?;
                if chosen.iter().any(|n: &store::NodeRecord| n.id == node.id) {
                    return Err(Invalid::new(
                        format!("addresses[{i}]"),
                        format!("{address} is named twice"),
                    )
                    .into());
                }
                chosen.push(node.clone());
            }
            chosen
        };
        if chosen.is_empty() {
            return Err(Invalid::new(
                "pool_id",
                format!("pool {} has no nodes to work on", pool.name),
            )
            .into());
        }
        Ok(chosen
            .into_iter()
            .map(|n| (Some(n.id), n.machine_id, n.address))
            .collect())
    }

    /// One task as listed.
    pub async fn task(&self, id: i64) -> Result<Task, Error> {
        let record = self.store.task(id).await?;
        let counts = self.store.task_node_counts(&[id]).await?;
        task_to_api(record, &counts)
    }

    /// A page of tasks, newest first.
    pub async fn tasks(
        &self,
        filter: &TaskFilter,
        window: store::Window,
    ) -> Result<(Vec<Task>, u64), Error> {
        let (records, total) = self
            .store
            .list_tasks(filter.pool_id, filter.service_id, window)
            .await?;
        let ids: Vec<i64> = records.iter().map(|t| t.id).collect();
        let counts = self.store.task_node_counts(&ids).await?;
        let tasks = records
            .into_iter()
            .map(|t| task_to_api(t, &counts))
            .collect::<Result<_, _>>()?;
        Ok((tasks, total))
    }

    /// A task with every node × step.
    pub async fn detail(&self, id: i64) -> Result<TaskDetail, Error> {
        let record = self.store.task(id).await?;
        let steps: Vec<StepSpec> = parse("tasks.steps", &record.steps)?;
        let task = task_to_api(record, &self.store.task_node_counts(&[id]).await?)?;
        let rows = self.store.task_steps(id).await?;
        let nodes = self
            .store
            .task_nodes(id)
            .await?
            .into_iter()
            .map(|n| {
                let steps = rows
                    .iter()
                    .filter(|s| s.node_idx == n.idx)
                    .map(|s| {
                        Ok(TaskStep {
                            state: name("task_steps.state", &s.state)?,
                            attempts: u32::try_from(s.attempts).unwrap_or_default(),
                            started_at: s.started_at.map(ms_time),
                            finished_at: s.finished_at.map(ms_time),
                            output: s.output.clone(),
                            error: s.error.clone(),
                            compensation: s
                                .compensation
                                .as_deref()
                                .map(|state| {
                                    Ok::<_, Error>(Compensation {
                                        state: name("task_steps.compensation", state)?,
                                        output: s.compensation_output.clone(),
                                    })
                                })
                                .transpose()?,
                        })
                    })
                    .collect::<Result<_, Error>>()?;
                Ok(TaskNode {
                    index: u32::try_from(n.idx).unwrap_or_default(),
                    node_id: n.node_id,
                    machine_id: n.machine_id,
                    address: n.address,
                    state: name("task_nodes.state", &n.state)?,
                    steps,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(TaskDetail { task, steps, nodes })
    }

    /// A task's version, which moves whenever [`Engine::detail`] would
    /// answer something else (see [`Store::task_version`]).
    pub async fn version(&self, id: i64) -> Result<i64, Error> {
        Ok(self.store.task_version(id).await?)
    }

    /// Fires whenever this process changed some task; changes made by other
    /// replicas show only in [`Engine::version`].
    #[must_use]
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Tells [`Engine::changes`] subscribers that a task changed.
    fn touched(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Asks for `command` (pause, resume, retry, cancel) if it fits the
    /// task's state; the process driving the task carries it out.
    pub async fn command(&self, id: i64, command: &str) -> Result<Task, Error> {
        let task = self.task(id).await?;
        let fits = match command {
            "pause" => matches!(task.state, TaskState::Pending | TaskState::Running),
            "resume" => task.state == TaskState::Paused || task.command.as_deref() == Some("pause"),
            "retry" => matches!(task.state, TaskState::PartiallyFailed | TaskState::Failed),
            "cancel" => !task.state.is_final(),
            _ => false,
        };
        let verb = match command {
            "pause" => "paused",
            "resume" => "resumed",
            "retry" => "retried",
            _ => "cancelled",
        };
        if !fits {
            return Err(Error::Conflict(format!(
                "task {id} is {}; it cannot be {verb}",
                task.state.as_str(),
            )));
        }
        if task.command.as_deref() == Some("cancel") {
            // The cancel stays until the task's leftovers are undone; no
            // other command may take its place, and asking again is a no-op.
            if command == "cancel" {
                return Ok(task);
            }
            return Err(Error::Conflict(format!(
                "task {id} is being cancelled; it cannot be {verb}"
            )));
        }
        if command == "retry"
            && let Some((other, kind, state)) = self.store.active_task(task.pool_id).await?
            && other != id
        {
            return Err(Error::Conflict(format!(
                "pool {} is busy with task {other} ({kind}, {state}); retry once it ends",
                task.pool_name
            )));
        }
        self.store.set_task_command(id, command).await?;
        self.touched();
        self.wake.notify_one();
        self.task(id).await
    }
}

fn task_to_api(t: TaskRecord, counts: &[(i64, String, i64)]) -> Result<Task, Error> {
    let mut c = NodeCounts::default();
    for (_, state, n) in counts.iter().filter(|(task, ..)| *task == t.id) {
        let n = u32::try_from(*n).unwrap_or_default();
        match name::<StepState>("task_nodes.state", state)? {
            StepState::Pending => c.pending += n,
            StepState::Running => c.running += n,
            StepState::Succeeded => c.succeeded += n,
            StepState::Failed => c.failed += n,
            StepState::Skipped => c.skipped += n,
        }
    }
    Ok(Task {
        id: t.id,
        kind: name("tasks.kind", &t.kind)?,
        pool_id: t.pool_id,
        pool_name: t.pool_name,
        template_id: t.template_id,
        overrides: parse("tasks.overrides", &t.overrides)?,
        batch_size: u32::try_from(t.batch_size).unwrap_or(1),
        state: name("tasks.state", &t.state)?,
        reason: t.reason,
        command: t.command,
        counts: c,
        created_by: t.created_by,
        created_at: ms_time(t.created_at),
        started_at: t.started_at.map(ms_time),
        finished_at: t.finished_at.map(ms_time),
    })
}

/// Claims tasks that need a driver until the engine stops.
async fn claimer(engine: std::sync::Weak<Engine>, stop: CancellationToken) {
    loop {
        let Some(this) = engine.upgrade() else { return };
        let lease = i64::try_from(this.settings.lease.as_millis()).unwrap_or(i64::MAX);
        match this.store.claim_tasks(&this.owner, lease, 16).await {
            Ok(ids) => {
                for id in ids {
                    if this
                        .driving
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id)
                    {
                        let engine = Arc::clone(&this);
                        tokio::spawn(async move {
                            if let Err(e) = drive(&engine, id).await {
                                tracing::error!(task = id, "driving the task failed: {e}");
                            }
                            engine
                                .driving
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&id);
                        });
                    }
                }
            }
            Err(e) => tracing::warn!("claiming tasks failed: {e}"),
        }
        let every = this.settings.claim_every;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
            () = this.wake.notified() => {}
        }
    }
}

/// What ended in a driver: an attempt of a step, or the undoing of one.
enum Ended {
    Step(usize, usize, StepOutcome),
    Compensation(usize, usize, StepOutcome),
}

/// What a driver keeps about its task.
struct Driven {
    plan: Plan,
    nodes: Vec<TaskNodeRecord>,
}

fn load_plan(
    task: &TaskRecord,
    specs: &[StepSpec],
    nodes: &[TaskNodeRecord],
    rows: &[TaskStepRecord],
) -> Result<Plan, Error> {
    let rules = specs
        .iter()
        .map(|s| StepRule {
            retries: s.retries,
            retry_delay_ms: i64::from(s.retry_delay_secs) * 1000,
            ignore_error: s.ignore_error,
            compensate: s.group_id.is_none() && s.name == dcp_api_types::builtin::CREATE_VM,
        })
        .collect();
    let mut runs = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut steps = vec![StepRun::default(); specs.len()];
        for row in rows.iter().filter(|r| r.node_idx == node.idx) {
            let Some(step) = usize::try_from(row.step_idx)
                .ok()
                .and_then(|i| steps.get_mut(i))
            else {
                continue;
            };
            *step = StepRun {
                state: name("task_steps.state", &row.state)?,
                attempts: u32::try_from(row.attempts).unwrap_or_default(),
                not_before: row.not_before,
                started_at: row.started_at,
                finished_at: row.finished_at,
                output: row.output.clone(),
                error: row.error.clone(),
                compensation: row
                    .compensation
                    .as_deref()
                    .map(|c| name("task_steps.compensation", c))
                    .transpose()?,
                compensation_output: row.compensation_output.clone(),
            };
        }
        runs.push(NodeRun {
            state: name("task_nodes.state", &node.state)?,
            steps,
        });
    }
    Ok(Plan {
        state: name("tasks.state", &task.state)?,
        reason: task.reason.clone(),
        batch: usize::try_from(task.batch_size).unwrap_or(1).max(1),
        // A deploy stops at its first unhealthy batch: the rest keep
        // serving the version they run.
        halt_on_failure: task.kind == TaskKind::Deploy.as_str(),
        rules,
        nodes: runs,
        pausing: false,
        cancelling: false,
    })
}

/// Drives one claimed task until it pauses, ends, or the lease is lost.
async fn drive(engine: &Arc<Engine>, id: i64) -> Result<(), Error> {
    let store = &engine.store;
    let task = store.task(id).await?;
    let specs: Vec<StepSpec> = parse("tasks.steps", &task.steps)?;
    let nodes = store.task_nodes(id).await?;
    let rows = store.task_steps(id).await?;
    let plan = load_plan(&task, &specs, &nodes, &rows)?;
    let context = Arc::clone(&engine.steps).for_task(&task, specs).await?;
    let mut driven = Driven { plan, nodes };
    let abort = engine.stop.child_token();
    let mut in_flight: JoinSet<Ended> = JoinSet::new();
    let lease = i64::try_from(engine.settings.lease.as_millis()).unwrap_or(i64::MAX);
    let beat =
        (engine.settings.lease / 5).clamp(Duration::from_millis(100), Duration::from_secs(2));
    let mut wake_at: Option<i64> = None;

    // A queued task is claimed only for its command (pause, cancel); it
    // starts in its turn. A paused or ended one is claimed only for its
    // command (resume, retry, cancel), which then applies.
    let mut pending = Vec::new();
    if !(driven.plan.state == TaskState::Pending && store.is_queued(id).await?) {
        pending.push(Event::Claimed { now: now_ms() });
    }
    let mut carried = store.task_command(id, &engine.owner).await?;
    pending.extend(carried.as_deref().and_then(command_event));
    loop {
        // A round: every event that came in together. Node saves gather
        // and go to the store in one transaction; the steps they start run
        // once their nodes are saved.
        let mut unsaved = BTreeSet::new();
        let mut starts = Vec::new();
        for event in pending.drain(..) {
            let effects = transition(&mut driven.plan, event);
            for effect in effects {
                match effect {
                    Effect::Start { node, step, .. } => {
                        starts.push(Deferred::Step {
                            node,
                            step,
                            rerun: !driven.plan.nodes[node].steps[step].error.is_empty(),
                            record: driven.nodes[node].clone(),
                        });
                    }
                    Effect::Compensate { node, step } => starts.push(Deferred::Undo {
                        node,
                        step,
                        record: driven.nodes[node].clone(),
                    }),
                    Effect::SaveNode(n) => {
                        unsaved.insert(n);
                    }
                    Effect::SaveTask => {
                        // The task's state never runs ahead of its nodes'.
                        save_nodes(store, id, &driven, &mut unsaved).await?;
                        engine.touched();
                        let plan = &driven.plan;
                        let held = store
                            .save_task_state(
                                id,
                                &engine.owner,
                                plan.state.as_str(),
                                &plan.reason,
                                plan.state == TaskState::Running,
                                plan.state.is_final(),
                            )
                            .await?;
                        if !held {
                            abort.cancel();
                            return Ok(());
                        }
                        engine.touched();
                        if plan.state.is_final()
                            && let Some((service, image)) = context.deployed_image()
                        {
                            // Later expands run what was rolled out; what a
                            // rollback deploys follows.
                            store
                                .deploy_ended(service, &image, plan.state == TaskState::Succeeded)
                                .await?;
                        }
                    }
                    Effect::AbortAll => abort.cancel(),
                    Effect::WakeAt(at) => wake_at = Some(wake_at.map_or(at, |w| w.min(at))),
                    // Acted on below, once nothing is in flight.
                    Effect::Release => {}
                }
            }
        }
        if !unsaved.is_empty() {
            save_nodes(store, id, &driven, &mut unsaved).await?;
            engine.touched();
        }
        for run in starts {
            let context = Arc::clone(&context);
            match run {
                Deferred::Step {
                    node,
                    step,
                    rerun,
                    record,
                } => {
                    let abort = abort.child_token();
                    in_flight.spawn(async move {
                        // A panicking step fails its node, not the task.
                        let done = AssertUnwindSafe(context.run(&record, step, rerun, &abort))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| {
                                StepOutcome::failed(
                                    "the step panicked (a DCP bug; see the server log)",
                                )
                            });
                        Ended::Step(node, step, done)
                    });
                }
                Deferred::Undo { node, step, record } => {
                    // Only a shutdown stops it (the lease then runs out and
                    // the next driver undoes what is left).
                    let stop = engine.stop.child_token();
                    in_flight.spawn(async move {
                        let done = AssertUnwindSafe(context.compensate(&record, step, &stop))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| {
                                StepOutcome::failed(
                                    "undoing the step panicked (a DCP bug; see the server log)",
                                )
                            });
                        Ended::Compensation(node, step, done)
                    });
                }
            }
        }
        // Cleared only once its effects are stored: a reader never sees
        // the command gone and the task not yet changed. A pause stays until
        // the task is paused, and a cancel until it is cancelled (its
        // leftovers undone), so a process dying meanwhile does not lose it.
        if let Some(command) = carried.take()
            && !(matches!(command.as_str(), "pause" | "cancel")
                && driven.plan.state == TaskState::Running)
        {
            store.clear_task_command(id, &command).await?;
            engine.touched();
        }
        if driven.plan.state != TaskState::Running && in_flight.is_empty() {
            // Paused or ended (or claimed only for a command that did not
            // apply): the task needs no driver until its next command.
            store.release_lease(id, &engine.owner).await?;
            engine.wake.notify_one();
            return Ok(());
        }
        let sleep = wake_at.map_or(beat, |at| {
            Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(beat)
        });
        tokio::select! {
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                // Steps are never aborted through the set and catch their
                // panics, so a join error cannot happen.
                let Ok(ended) = joined else { continue };
                pending.push(ended_event(&mut driven, ended));
                // What else has ended meanwhile joins this round, so a
                // burst of step ends costs one store transaction, not one
                // each (steps are never aborted through the set and catch
                // their panics, so a join error cannot happen).
                while let Some(Ok(ended)) = in_flight.try_join_next() {
                    pending.push(ended_event(&mut driven, ended));
                }
            }
            () = tokio::time::sleep(sleep) => {
                if !store.renew_lease(id, &engine.owner, lease).await? {
                    tracing::warn!(task = id, "lease lost; another process drives the task");
                    abort.cancel();
                    return Ok(());
                }
                carried = store.task_command(id, &engine.owner).await?;
                pending.extend(carried.as_deref().and_then(command_event));
                if wake_at.is_some_and(|at| at <= now_ms()) {
                    wake_at = None;
                }
                pending.push(Event::Tick { now: now_ms() });
            }
            () = engine.stop.cancelled() => {
                // Shutting down: in-flight steps are cut; the lease runs out
                // and the next process runs them again.
                abort.cancel();
                return Ok(());
            }
        }
    }
}

/// The event of a step or compensation that ended; the node's facts it
/// learned (its pool node, machine, address) are kept.
fn ended_event(driven: &mut Driven, ended: Ended) -> Event {
    let (Ended::Step(node, _, done) | Ended::Compensation(node, _, done)) = &ended;
    if let Some(facts) = &done.node {
        let n = &mut driven.nodes[*node];
        n.node_id = Some(facts.node_id);
        n.machine_id = facts.machine_id;
        n.address.clone_from(&facts.address);
    }
    match ended {
        Ended::Step(node, step, done) => Event::StepEnded {
            node,
            step,
            ok: done.ok,
            output: done.output,
            error: done.error,
            now: now_ms(),
        },
        Ended::Compensation(node, step, done) => Event::Compensated {
            node,
            step,
            ok: done.ok,
            output: [done.output.trim_end(), done.error.as_str()]
                .iter()
                .filter(|part| !part.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("\n"),
            now: now_ms(),
        },
    }
}

/// A step or compensation to start once the round's node saves are stored.
enum Deferred {
    Step {
        node: usize,
        step: usize,
        rerun: bool,
        record: TaskNodeRecord,
    },
    Undo {
        node: usize,
        step: usize,
        record: TaskNodeRecord,
    },
}

fn command_event(command: &str) -> Option<Event> {
    let now = now_ms();
    match command {
        "pause" => Some(Event::Pause),
        "resume" => Some(Event::Resume { now }),
        "retry" => Some(Event::RetryFailed { now }),
        "cancel" => Some(Event::Cancel { now }),
        _ => None,
    }
}

/// Writes the nodes of `unsaved` (and their steps) in one transaction,
/// and empties it.
async fn save_nodes(
    store: &Store,
    task: i64,
    driven: &Driven,
    unsaved: &mut BTreeSet<usize>,
) -> Result<(), Error> {
    if unsaved.is_empty() {
        return Ok(());
    }
    let nodes: Vec<(TaskNodeRecord, Vec<TaskStepRecord>)> = std::mem::take(unsaved)
        .into_iter()
        .map(|n| {
            let run = &driven.plan.nodes[n];
            let mut record = driven.nodes[n].clone();
            record.state = run.state.as_str().to_owned();
            let steps = run
                .steps
                .iter()
                .enumerate()
                .map(|(i, step)| TaskStepRecord {
                    node_idx: record.idx,
                    step_idx: i64::try_from(i).unwrap_or_default(),
                    state: step.state.as_str().to_owned(),
                    attempts: i64::from(step.attempts),
                    not_before: step.not_before,
                    started_at: step.started_at,
                    finished_at: step.finished_at,
                    output: step.output.clone(),
                    error: step.error.clone(),
                    compensation: step.compensation.map(|c| c.as_str().to_owned()),
                    compensation_output: step.compensation_output.clone(),
                })
                .collect();
            (record, steps)
        })
        .collect();
    store.save_task_nodes(task, &nodes).await?;
    Ok(())
}

impl From<machines::Error> for Error {
    fn from(e: machines::Error) -> Self {
        match e {
            machines::Error::Invalid(i) => Self::Invalid(i),
            machines::Error::Store(s) => Self::Store(s),
            other => Self::Conflict(other.to_string()),
        }
    }
}
