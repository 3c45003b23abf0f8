//! The effect runner's steps: what `create_vm`, `start_service…`,
//! `stop_service`, `return_vm` and command-group steps do to one node.
//! Each is idempotent under its key (task, node, step): a replay after a
//! crash finds the machine, container or removal it made the first time.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dcp_api_types::{
    CommandMode, ContainerSpec, CreateMachines, ExecutionInput, HealthCheck, HostInput,
    InlineCommand, LeftoverMachines, MachineState, NodeState, PortProtocol, RestartPolicy,
    StepSpec, TaskKind, TaskOverrides, builtin,
};
use tokio_util::sync::CancellationToken;

use super::{DEFAULT_TIMEOUT_SECS, Error, NodeFacts, StepOutcome as Done, Steps, TaskSteps, parse};
use crate::{
    containers,
    discovery::{self, Discovery, MemberChange, Op},
    images::Images,
    lock,
    machines::{self, Machines},
    remote::{GaveUp, Remote, shell_quote, ssh},
    store::{
        self, BindingRecord, NewNode, NodeRecord, PoolRecord, ServiceRecord, Store, TaskNodeRecord,
        TaskRecord,
    },
    validate,
};

/// The most output kept per step.
const OUTPUT_MAX: usize = 16 << 10;
/// How long undoing a step may wait for its machines: the machines service
/// ends their creation within its start timeout and their init within the
/// template's, so this is reached only when something is stuck.
const COMPENSATION_TIME: Duration = Duration::from_secs(2 * 3600);

/// `image` with its tag replaced by `tag` (a digest is dropped).
pub(super) fn with_tag(image: &str, tag: &str) -> String {
    format!("{}:{tag}", validate::image_name(image))
}

/// DCP's built-in steps, over the machines, remote-commands and discovery
/// services.
#[derive(Debug)]
pub struct Builtins {
    store: Store,
    machines: Arc<Machines>,
    remote: Arc<Remote>,
    discovery: Arc<Discovery>,
    images: Arc<Images>,
}

impl Builtins {
    /// The built-in steps over these services.
    #[must_use]
    pub fn new(
        store: Store,
        machines: Arc<Machines>,
        remote: Arc<Remote>,
        discovery: Arc<Discovery>,
        images: Arc<Images>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            machines,
            remote,
            discovery,
            images,
        })
    }
}

#[async_trait::async_trait]
impl Steps for Builtins {
    async fn for_task(
        self: Arc<Self>,
        task: &TaskRecord,
        specs: Vec<StepSpec>,
    ) -> Result<Arc<dyn TaskSteps>, Error> {
        Ok(Arc::new(Context::load(self, task, specs).await?))
    }
}

#[async_trait::async_trait]
impl TaskSteps for Context {
    async fn run(
        &self,
        node: &TaskNodeRecord,
        step: usize,
        rerun: bool,
        abort: &CancellationToken,
    ) -> Done {
        Context::run(self, node, step, rerun, abort).await
    }

    async fn compensate(
        &self,
        node: &TaskNodeRecord,
        step: usize,
        stop: &CancellationToken,
    ) -> Done {
        let deadline = Instant::now() + COMPENSATION_TIME;
        let mut log = Vec::new();
        let result = self.leftovers(node, step, deadline, stop, &mut log).await;
        let mut done = match result {
            Ok(facts) => Done {
                ok: true,
                node: facts,
                ..Done::default()
            },
            Err(e) => Done::failed(e.to_string()),
        };
        if log.is_empty() && done.ok {
            log.push("no machine was made".to_owned());
        }
        done.output = log.join("\n");
        done
    }

    fn deployed_image(&self) -> Option<(i64, String)> {
        (self.kind == TaskKind::Deploy).then(|| (self.service.id, self.image.clone()))
    }
}

/// What every step of one task needs.
#[derive(Debug)]
struct Context {
    engine: Arc<Builtins>,
    task: i64,
    kind: TaskKind,
    specs: Vec<StepSpec>,
    pool: PoolRecord,
    service: ServiceRecord,
    container: ContainerSpec,
    /// The image to run (a deploy's tag applied).
    image: String,
    /// Whether `return_vm` releases machines or only takes them out of the pool.
    release_machines: bool,
    /// Where `register` and `unregister` put the pool's nodes.
    binding: Option<BindingRecord>,
    /// The nodes (by position) whose SSH connections are kept for a later
    /// step of this task.
    holds: Mutex<HashMap<i64, ssh::Hold>>,
}

impl Context {
    async fn load(
        engine: Arc<Builtins>,
        task: &TaskRecord,
        specs: Vec<StepSpec>,
    ) -> Result<Self, Error> {
        let pool = engine.store.pool_record(task.pool_id).await?;
        let service = engine.store.service(pool.service_id).await?;
        let container: ContainerSpec = parse("services.container", &service.container)?;
        let overrides: TaskOverrides = parse("tasks.overrides", &task.overrides)?;
        let image = overrides.tag.as_deref().map_or_else(
            || service.image.clone(),
            |tag| with_tag(&service.image, tag),
        );
        let binding = match pool.binding_id {
            Some(id) => Some(engine.store.binding(id).await?),
            None => None,
        };
        Ok(Self {
            binding,
            engine,
            task: task.id,
            kind: super::name("tasks.kind", &task.kind)?,
            specs,
            pool,
            service,
            container,
            image,
            release_machines: overrides.release_machines.unwrap_or(true),
            holds: Mutex::default(),
        })
    }

    /// Runs an attempt of `step` on `node`, bounded by the step's timeout
    /// and `abort`; `rerun` when an earlier attempt of it failed.
    async fn run(
        &self,
        node: &TaskNodeRecord,
        step: usize,
        rerun: bool,
        abort: &CancellationToken,
    ) -> Done {
        let spec = &self.specs[step];
        let secs = spec.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        let deadline = Instant::now() + Duration::from_secs(secs.into());
        let work = async {
            if let Some(group) = spec.group_id {
                return self.group(node, group, spec, deadline, abort).await;
            }
            match spec.name.as_str() {
                builtin::CREATE_VM => {
                    let key = self.live_key(node, step).await?;
                    self.create_vm(&key, rerun, deadline, abort).await
                }
                builtin::RETURN_VM => self.return_vm(node, deadline, abort).await,
                builtin::STOP_SERVICE => self.stop_service(node, deadline, abort).await,
                builtin::REGISTER => self.discover(node, step, Op::Register).await,
                builtin::UNREGISTER => self.discover(node, step, Op::Unregister).await,
                name if name.starts_with(builtin::START_SERVICE) => {
                    self.start_service(node, deadline, abort).await
                }
                other => Ok(Done::failed(format!("unknown step {other}"))),
            }
        };
        let done = tokio::select! {
            done = work => done.unwrap_or_else(|e| Done::failed(e.to_string())),
            () = tokio::time::sleep_until(deadline.into()) => {
                let mut why = format!("did not finish within {secs} s");
                // A health check can take longer than the step may: say so.
                if let Some(check) = &self.container.health_check
                    && spec.name.starts_with(builtin::START_SERVICE)
                    && check.longest_secs() > u64::from(secs)
                {
                    why.push_str(&format!(
                        "; the service's health check may take up to {} s: raise the step's timeout_secs",
                        check.longest_secs()
                    ));
                }
                Done::failed(why)
            }
            () = abort.cancelled() => Done::failed("cancelled"),
        };
        if let Some(node_id) = done.node.as_ref().map(|f| f.node_id).or(node.node_id) {
            let state = match (done.ok, spec.name.as_str()) {
                (false, _) => Some(NodeState::Failed),
                (true, n) if spec.group_id.is_none() && n.starts_with(builtin::START_SERVICE) => {
                    Some(NodeState::Running)
                }
                (true, builtin::STOP_SERVICE) => Some(NodeState::Pending),
                _ => None,
            };
            if let Some(state) = state {
                // The node may be gone already (return_vm).
                let _ = self
                    .engine
                    .store
                    .set_node_state(node_id, node_state(state))
                    .await;
            }
        }
        self.hold_node(node, step, &done);
        done
    }

    /// Keeps the node's SSH connections open while a later step of the task
    /// runs commands on it: one login a node and task, not one a step. In
    /// a large expand a node's init and its `start_service` can be minutes
    /// apart, waiting for dockerd, past the transport's idle time.
    fn hold_node(&self, node: &TaskNodeRecord, step: usize, done: &Done) {
        let address = done
            .node
            .as_ref()
            .map_or(node.address.as_str(), |facts| facts.address.as_str());
        let again =
            done.ok && !address.is_empty() && self.specs[step + 1..].iter().any(runs_on_the_node);
        let mut holds = lock(&self.holds);
        if again {
            holds
                .entry(node.idx)
                .or_insert_with(|| self.engine.remote.hold(address));
        } else {
            holds.remove(&node.idx);
        }
    }

    async fn node(&self, node: &TaskNodeRecord) -> Result<NodeRecord, Error> {
        let id = node
            .node_id
            .ok_or_else(|| Error::Conflict("the node has no machine yet".to_owned()))?;
        self.engine
            .store
            .pool_node(self.pool.id, id)
            .await?
            .ok_or_else(|| Error::Conflict(format!("node {} left the pool", node.address)))
    }

    /// Makes the node's machine (once per key), waits until it is ready
    /// (initialised), and adds it to the pool.
    async fn create_vm(
        &self,
        key: &str,
        rerun: bool,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> Result<Done, Error> {
        let machines = &self.engine.machines;
        let template_id = self.pool.template_id.ok_or_else(|| {
            Error::Conflict(format!("pool {} has no machine template", self.pool.name))
        })?;
        let made = machines
            .create(CreateMachines {
                template_id,
                count: 1,
                idempotency_key: Some(key.to_owned()),
            })
            .await
            .map_err(|e| Error::Conflict(e.to_string()))?;
        let machine = made
            .into_iter()
            .next()
            .ok_or_else(|| Error::Conflict("no machine was made".to_owned()))?;
        // When an earlier attempt failed, a machine whose init failed gets
        // its init run again (once) rather than another machine being made.
        let mut retried = !rerun;
        machines
            .take_over(machine.id)
            .await
            .map_err(|e| Error::Conflict(e.to_string()))?;
        let mut backoff = Backoff::new();
        loop {
            let m = self.engine.store.machine(machine.id).await?;
            match m.state {
                MachineState::Ready => {
                    let facts = self.join_pool(&m).await?;
                    return Ok(Done {
                        ok: true,
                        output: format!("machine {} ready at {}", m.name, facts.address),
                        error: String::new(),
                        node: Some(facts),
                    });
                }
                MachineState::InitFailed | MachineState::InitTimeout if !retried => {
                    retried = true;
                    machines
                        .reinit(m.id)
                        .await
                        .map_err(|e| Error::Conflict(e.to_string()))?;
                }
                MachineState::InitFailed
                | MachineState::InitTimeout
                | MachineState::Error
                | MachineState::Deleting
                | MachineState::Deleted => {
                    let mut done = Done::failed(format!("machine {}: {}", m.name, m.reason));
                    done.output = format!("machine {} is {}", m.name, m.state.as_str());
                    done.node = None;
                    return Ok(done);
                }
                MachineState::Creating | MachineState::Starting | MachineState::Initializing => {}
            }
            backoff.pause(deadline, abort).await?;
        }
    }

    /// Takes the node out of the pool and releases its machine (unless the
    /// task keeps machines).
    async fn return_vm(
        &self,
        node: &TaskNodeRecord,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> Result<Done, Error> {
        if let Some(node_id) = node.node_id {
            match self.engine.store.remove_node(self.pool.id, node_id).await {
                Ok(()) | Err(store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let Some(machine_id) = node.machine_id else {
            return Ok(Done::ok(format!("{} left the pool", node.address)));
        };
        if !self.release_machines {
            return Ok(Done::ok(format!(
                "{} left the pool; machine {machine_id} kept",
                node.address
            )));
        }
        let m = self.release(machine_id, deadline, abort).await?;
        Ok(Done::ok(format!(
            "{} left the pool; machine {} released",
            node.address, m.name
        )))
    }

    /// Releases a machine that is in no pool and waits until its instance
    /// is gone; a machine still being created is released once the cloud
    /// has made it (a pending instance cannot be deleted).
    async fn release(
        &self,
        machine_id: i64,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> Result<store::MachineRecord, Error> {
        let machines = &self.engine.machines;
        let mut asked = false;
        let mut backoff = Backoff::new();
        loop {
            let m = self.engine.store.machine(machine_id).await?;
            match m.state {
                MachineState::Deleted => return Ok(m),
                MachineState::Deleting if asked => {}
                // Refused while it is being created: asked again each time.
                _ => match machines.delete(machine_id).await {
                    Ok(_) => asked = true,
                    Err(machines::Error::Conflict(_)) => {}
                    Err(e) => return Err(Error::Conflict(e.to_string())),
                },
            }
            // This process drives the machine's work if its own driver died.
            machines
                .take_over(machine_id)
                .await
                .map_err(|e| Error::Conflict(e.to_string()))?;
            backoff.pause(deadline, abort).await?;
        }
    }

    /// Adds a ready machine to the pool as a node, unless it is one already.
    async fn join_pool(&self, m: &store::MachineRecord) -> Result<NodeFacts, Error> {
        let address = m.address.clone().unwrap_or_default();
        let node_id = match self.engine.store.node_of_machine(m.id).await? {
            Some(id) => id,
            None => {
                let added = self
                    .engine
                    .store
                    .add_nodes(
                        self.pool.id,
                        &[NewNode {
                            machine_id: Some(m.id),
                            address: address.clone(),
                            port: m.port,
                            user: m.user.clone(),
                        }],
                    )
                    .await?;
                added
                    .first()
                    .map(|n| n.id)
                    .ok_or_else(|| Error::Conflict("the node was not added".into()))?
            }
        };
        Ok(NodeFacts {
            node_id,
            machine_id: Some(m.id),
            address,
        })
    }

    /// The idempotency key `create_vm` makes the machines of `step` on
    /// `node` under: generation 0 first; once its machines were released
    /// (the step was undone, then retried) the next generation, so a retry
    /// makes a new machine instead of finding the released one.
    async fn live_key(&self, node: &TaskNodeRecord, step: usize) -> Result<String, Error> {
        for generation in 0.. {
            let key = step_key(self.task, node.idx, step, generation);
            let made = self.engine.store.machines_of_request(&key).await?;
            let released = |m: &store::MachineRecord| {
                matches!(m.state, MachineState::Deleting | MachineState::Deleted)
            };
            if made.is_empty() || !made.iter().all(released) {
                return Ok(key);
            }
        }
        unreachable!("generations are unbounded")
    }

    /// Undoes what `create_vm` left behind on `node`: every machine made
    /// under the step's keys is released or, by the step's choice, handed
    /// to the pool once ready. `log` gets a line per machine. Answers the
    /// node a machine became, if any.
    async fn leftovers(
        &self,
        node: &TaskNodeRecord,
        step: usize,
        deadline: Instant,
        stop: &CancellationToken,
        log: &mut Vec<String>,
    ) -> Result<Option<NodeFacts>, Error> {
        let choice = self.specs[step].leftover_machines;
        let mut facts = None;
        for generation in 0.. {
            let made = self
                .engine
                .store
                .machines_of_request(&step_key(self.task, node.idx, step, generation))
                .await?;
            if made.is_empty() {
                break;
            }
            for m in made {
                let (line, joined) = self.leftover(m, choice, deadline, stop).await?;
                log.push(line);
                facts = facts.or(joined);
            }
        }
        Ok(facts)
    }

    /// Releases one machine a step left behind, or hands it to the pool.
    async fn leftover(
        &self,
        m: store::MachineRecord,
        choice: LeftoverMachines,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<(String, Option<NodeFacts>), Error> {
        let store = &self.engine.store;
        let mut m = m;
        // Wait until the machine comes to rest: the cloud has made it (or
        // failed to), and with hand_to_pool, it is initialised.
        loop {
            let busy = match m.state {
                MachineState::Creating | MachineState::Starting => true,
                MachineState::Initializing => choice == LeftoverMachines::HandToPool,
                _ => false,
            };
            if !busy {
                break;
            }
            self.engine
                .machines
                .take_over(m.id)
                .await
                .map_err(|e| Error::Conflict(e.to_string()))?;
            pause(deadline, stop).await.map_err(|_| {
                Error::Conflict(format!(
                    "machine {} is still {}; release it from the machines page",
                    m.name,
                    m.state.as_str()
                ))
            })?;
            m = store.machine(m.id).await?;
        }
        let node = store
            .pool_nodes(self.pool.id)
            .await?
            .into_iter()
            .find(|n| n.machine_id == Some(m.id));
        match (choice, m.state) {
            (_, MachineState::Deleted | MachineState::Deleting) if node.is_none() => {
                let m = self.release(m.id, deadline, stop).await?;
                Ok((format!("machine {} released", m.name), None))
            }
            (LeftoverMachines::HandToPool, MachineState::Ready) => {
                let facts = self.join_pool(&m).await?;
                Ok((
                    format!(
                        "machine {} handed to pool {} as node {}",
                        m.name, self.pool.name, facts.address
                    ),
                    Some(facts),
                ))
            }
            (choice, state) => {
                if let Some(other) = store.pool_of_machine(m.id).await?
                    && node.is_none()
                {
                    // Added to another pool by hand meanwhile: it is in use.
                    return Ok((
                        format!(
                            "machine {} is a node of pool {other}; left as it is",
                            m.name
                        ),
                        None,
                    ));
                }
                if let Some(node) = node {
                    match store.remove_node(self.pool.id, node.id).await {
                        Ok(()) | Err(store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let m = self.release(m.id, deadline, stop).await?;
                let why = if choice == LeftoverMachines::HandToPool {
                    format!(
                        " (it was {}; a pool takes only ready machines)",
                        state.as_str()
                    )
                } else {
                    String::new()
                };
                Ok((format!("machine {} released{why}", m.name), None))
            }
        }
    }

    fn container_name(&self, node_id: i64) -> String {
        containers::container_name(&self.service.name, node_id)
    }

    /// Runs the service's image on the node: the same container (by name
    /// and spec label) is left alone, anything else there is replaced.
    async fn start_service(
        &self,
        node: &TaskNodeRecord,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> Result<Done, Error> {
        let record = self.node(node).await?;
        let name = self.container_name(record.id);
        // An image of DCP's registry is pulled first, with a login for
        // this pull alone (a tag built again is pulled again).
        let pulled = if self.engine.images.holds(&self.image) {
            match self.pull(&record, deadline, abort).await? {
                Ok(said) => said,
                Err(why) => return Ok(Done::failed(why)),
            }
        } else {
            String::new()
        };
        let script = run_script(
            &name,
            &self.image,
            &self.container,
            &record.address,
            &[
                ("dcp.service", self.service.name.as_str()),
                ("dcp.pool", self.pool.name.as_str()),
                ("dcp.node", &record.id.to_string()),
            ],
        );
        let mut done = self
            .shell(&record, script, builtin::START_SERVICE, deadline, abort)
            .await?;
        done.output.insert_str(0, &pulled);
        // An unhealthy container runs the new image all the same.
        if done.ok || done.output.contains(&format!("started {name} from")) {
            self.engine
                .store
                .set_node_image(record.id, &self.image)
                .await?;
        }
        Ok(done)
    }

    /// Pulls the service's image from DCP's registry onto `node` with a
    /// login made for this pull, fed on stdin and kept in a directory the
    /// pull's shell removes: never in a step's script or output, never
    /// left on the node; the registry forgets it when the pull ends.
    /// Answers what to add to the step's output, or why the pull failed.
    async fn pull(
        &self,
        node: &NodeRecord,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> Result<Result<String, String>, Error> {
        let pass = match self.engine.images.pull_pass() {
            Ok(pass) => pass,
            Err(e) => return Ok(Err(format!("no login for the registry: {e}"))),
        };
        let script = format!(
            "set -e
             d=$(mktemp -d)
             trap 'rm -rf \"$d\"' EXIT
             cat > \"$d/config.json\"
             docker --config \"$d\" pull -q {}
",
            shell_quote(&self.image)
        );
        let endpoint = ssh::Endpoint {
            address: node.address.clone(),
            port: node.port,
            user: node.user.clone(),
        };
        let out = self
            .engine
            .remote
            .feed(
                node.machine_id,
                endpoint,
                &script,
                pass.docker_config().into_bytes(),
                deadline.saturating_duration_since(Instant::now()),
                OUTPUT_MAX,
                abort,
            )
            .await;
        drop(pass);
        if abort.is_cancelled() {
            pause(deadline, abort).await?;
        }
        let out = match out {
            Ok(out) => out,
            Err(e) => return Ok(Err(format!("pulling {}: {e}", self.image))),
        };
        if out.exit_code == Some(0) {
            return Ok(Ok(format!("pulled {} from DCP's registry\n", self.image)));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no error output");
        Ok(Err(format!("pulling {} failed: {why}", self.image)))
    }

    /// Registers the node with the pool's binding, or unregisters it
    /// (drained: the balancer's plugin returns once the old workers
    /// finished their requests). Applied once under the step's key.
    async fn discover(&self, node: &TaskNodeRecord, step: usize, op: Op) -> Result<Done, Error> {
        let Some(binding) = &self.binding else {
            return Ok(Done::failed(format!(
                "pool {} has no service-discovery binding",
                self.pool.name
            )));
        };
        let record = self.node(node).await?;
        let service_port = self
            .container
            .ports
            .iter()
            .find(|p| p.protocol == PortProtocol::Tcp)
            .map(|p| p.host_port.unwrap_or(p.container_port));
        let backend = match Discovery::backend_of(binding, &record.address, service_port) {
            Ok(b) => b,
            Err(why) => return Ok(Done::failed(why)),
        };
        let change = self
            .engine
            .discovery
            .change(MemberChange {
                actor: format!("task:{}", self.task),
                upstream_id: binding.upstream_id,
                op,
                backends: vec![backend],
                force: false,
                correlation_id: format!("task-{}", self.task),
                idempotency_key: Some(step_key(self.task, node.idx, step, 0)),
            })
            .await;
        Ok(match change {
            Ok(c) if c.state == "failed" => Done::failed(c.message),
            Ok(c) => Done::ok(c.message),
            Err(discovery::Error::Store(e)) => return Err(e.into()),
            Err(e) => Done::failed(e.to_string()),
        })
    }

    async fn stop_service(
        &self,
        node: &TaskNodeRecord,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> Result<Done, Error> {
        let record = self.node(node).await?;
        let name = shell_quote(&self.container_name(record.id));
        let script = format!(
            "if docker inspect {name} >/dev/null 2>&1; then docker rm -f {name} >/dev/null && \
             echo \"stopped and removed {name}\"; else echo \"{name} is not there\"; fi"
        );
        self.shell(&record, script, builtin::STOP_SERVICE, deadline, abort)
            .await
    }

    async fn group(
        &self,
        node: &TaskNodeRecord,
        group: i64,
        spec: &StepSpec,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> Result<Done, Error> {
        let record = self.node(node).await?;
        let input = ExecutionInput {
            group_id: Some(group),
            params: spec.params.clone(),
            ..target(&record)
        };
        self.execute(input, &spec.name, &record, deadline, abort)
            .await
    }

    async fn shell(
        &self,
        node: &NodeRecord,
        script: String,
        step: &str,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> Result<Done, Error> {
        let input = ExecutionInput {
            command: Some(InlineCommand {
                mode: CommandMode::Longscript,
                script,
            }),
            ..target(node)
        };
        self.execute(input, step, node, deadline, abort).await
    }

    /// Runs step `step`'s execution on `node` and waits for it; its output
    /// becomes the step's.
    async fn execute(
        &self,
        mut input: ExecutionInput,
        step: &str,
        node: &NodeRecord,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> Result<Done, Error> {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
        input.timeout_secs = Some(u32::try_from(left.max(1)).unwrap_or(u32::MAX));
        let remote = &self.engine.remote;
        let execution = remote
            .start_titled(
                input,
                &format!("task {}", self.task),
                Some(&format!(
                    "task {} ({}) {step} on {}",
                    self.task,
                    self.kind.as_str(),
                    node.address
                )),
            )
            .await
            .map_err(|e| Error::Conflict(e.to_string()))?;
        let store = &self.engine.store;
        let record = match remote
            .finished(execution, Some(deadline.into()), abort)
            .await?
        {
            Ok(record) => record,
            Err(GaveUp::Cancelled) => return Err(Error::Conflict("cancelled".to_owned())),
            Err(GaveUp::Deadline) => return Err(out_of_time()),
        };
        let host = store.execution_hosts(execution).await?.into_iter().next();
        let Some(host) = host else {
            return Ok(Done::failed(format!(
                "execution {execution} ran on no host"
            )));
        };
        let report = host.report;
        let mut output = String::new();
        let _ = write!(output, "{}", tail(&report.stdout));
        if !report.stderr.is_empty() {
            let _ = write!(output, "\n--- stderr ---\n{}", tail(&report.stderr));
        }
        if record.state == dcp_api_types::ExecutionState::Succeeded {
            return Ok(Done::ok(output));
        }
        let why = report.failure();
        let code = report
            .exit_code
            .map_or_else(|| "no exit code".to_owned(), |c| format!("exit code {c}"));
        Ok(Done {
            ok: false,
            output,
            error: format!("{why} ({code}, execution {execution})"),
            node: None,
        })
    }
}

/// The idempotency key of the machines `create_vm` makes for `step` on
/// node `idx` of `task`, in generation `generation` (see
/// [`Context::live_key`]).
fn step_key(task: i64, idx: i64, step: usize, generation: u32) -> String {
    match generation {
        0 => format!("task{task}-node{idx}-step{step}"),
        g => format!("task{task}-node{idx}-step{step}.{g}"),
    }
}

/// Whether a step runs commands on its node over SSH.
fn runs_on_the_node(spec: &StepSpec) -> bool {
    spec.group_id.is_some()
        || spec.name.starts_with(builtin::START_SERVICE)
        || spec.name == builtin::STOP_SERVICE
}

fn node_state(state: NodeState) -> &'static str {
    match state {
        NodeState::Pending => "pending",
        NodeState::Running => "running",
        NodeState::Failed => "failed",
        NodeState::Removing => "removing",
    }
}

/// An execution target for one node: its machine, or its address with
/// DCP's default key.
fn target(node: &NodeRecord) -> ExecutionInput {
    match node.machine_id {
        Some(machine) => ExecutionInput {
            machine_ids: Some(vec![machine]),
            ..ExecutionInput::default()
        },
        None => ExecutionInput {
            hosts: Some(vec![HostInput {
                address: node.address.clone(),
                port: Some(node.port),
                user: Some(node.user.clone()),
                private_key: None,
                password: None,
            }]),
            ..ExecutionInput::default()
        },
    }
}

/// Waits a little, or fails at the deadline or on abort.
async fn pause(deadline: Instant, abort: &CancellationToken) -> Result<(), Error> {
    wait(Duration::from_millis(200), deadline, abort).await
}

/// A step's error when its deadline passed.
fn out_of_time() -> Error {
    Error::Conflict("the step's time ran out".to_owned())
}

/// Waits `delay`, or fails at the deadline or on abort.
async fn wait(delay: Duration, deadline: Instant, abort: &CancellationToken) -> Result<(), Error> {
    if Instant::now() >= deadline {
        return Err(out_of_time());
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        () = abort.cancelled() => Err(Error::Conflict("cancelled".to_owned())),
    }
}

/// Successive waits between looks at something that takes a while (a
/// machine being made): soon at first, then once a second, so a thousand
/// steps waiting do not keep the store busy answering them.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MOST: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Self(Self::FIRST)
    }

    async fn pause(&mut self, deadline: Instant, abort: &CancellationToken) -> Result<(), Error> {
        let delay = self.0;
        self.0 = (delay * 2).min(Self::MOST);
        wait(delay, deadline, abort).await
    }
}

fn tail(text: &str) -> &str {
    if text.len() <= OUTPUT_MAX {
        return text;
    }
    let mut start = text.len() - OUTPUT_MAX;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The shell script that makes sure container `name` runs `image` with
/// `spec`, its ports published on `address`. A container already running
/// this exact spec (label `dcp.spec`) is left alone: a replay is a no-op.
fn run_script(
    name: &str,
    image: &str,
    spec: &ContainerSpec,
    address: &str,
    labels: &[(&str, &str)],
) -> String {
    let fingerprint = crate::sha256_hex(
        format!(
            "{image}\n{address}\n{}",
            serde_json::to_string(spec).unwrap_or_default()
        )
        .as_bytes(),
    );
    let fingerprint = &fingerprint[..16];
    let q = |s: &str| shell_quote(s);
    let mut run = vec![
        "docker run -d".to_owned(),
        format!("--name {}", q(name)),
        format!("--label dcp.spec={fingerprint}"),
        format!(
            "--restart {}",
            match spec.restart_policy {
                RestartPolicy::No => "no",
                RestartPolicy::Always => "always",
                RestartPolicy::UnlessStopped => "unless-stopped",
                RestartPolicy::OnFailure => "on-failure",
            }
        ),
    ];
    for (k, v) in labels {
        run.push(format!("--label {}", q(&format!("{k}={v}"))));
    }
    for p in &spec.ports {
        let proto = match p.protocol {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        };
        run.push(format!(
            "-p {}",
            q(&format!(
                "{address}:{}:{}/{proto}",
                p.host_port.unwrap_or(p.container_port),
                p.container_port
            ))
        ));
    }
    for (k, v) in &spec.env {
        run.push(format!("-e {}", q(&format!("{k}={v}"))));
    }
    for v in &spec.volumes {
        let ro = if v.read_only { ":ro" } else { "" };
        run.push(format!(
            "-v {}",
            q(&format!("{}:{}{ro}", v.host_path, v.container_path))
        ));
    }
    if let Some(cpus) = spec.cpu_limit {
        run.push(format!("--cpus {cpus}"));
    }
    if let Some(mb) = spec.memory_limit_mb {
        run.push(format!("--memory {mb}m"));
    }
    if let Some(entrypoint) = spec.command.first() {
        run.push(format!("--entrypoint {}", q(entrypoint)));
    }
    run.push(q(image));
    run.extend(spec.command.iter().skip(1).map(|a| q(a)));
    run.extend(spec.args.iter().map(|a| q(a)));
    let health = spec
        .health_check
        .as_ref()
        .map(|check| health_script(name, address, spec, check))
        .unwrap_or_default();
    let name = q(name);
    let image_q = q(image);
    // A fresh node takes one `docker run` (it pulls a missing image
    // itself): each docker client costs a node tens of milliseconds of CPU.
    // When that fails (the name taken by a replay's or an old container, a
    // port, a pull), the careful way: a replay finds the container running
    // and checks it again instead of starting it again; anything else is
    // removed and run once more, which says why it fails.
    let run = run.join(" ");
    format!(
        "set -e\n\
         if {run} 2>/dev/null; then\n\
         \x20 echo \"started {bare} from {bare_image}\"\n\
         elif [ -n \"$(docker ps -q --filter name=^/{bare}$ --filter label=dcp.spec={fingerprint} --filter status=running)\" ]; then\n\
         \x20 echo \"{bare} already runs {bare_image}\"\n\
         else\n\
         \x20 docker image inspect {image_q} >/dev/null 2>&1 || docker pull {image_q}\n\
         \x20 docker rm -f {name} >/dev/null 2>&1 || true\n\
         \x20 {run}\n\
         \x20 echo \"started {bare} from {bare_image}\"\n\
         fi\n\
         {health}",
        bare = name.trim_matches('\''),
        bare_image = image_q.trim_matches('\''),
    )
}

/// The shell that waits until container `name` passes `check`, Docker's
/// way: checks every interval, failures within the start period do not
/// count, `retries` failures in a row (or the container exiting) make it
/// unhealthy. Unhealthy, it prints the container's last log lines, then
/// why, as the last line of stderr (the step's error).
fn health_script(name: &str, address: &str, spec: &ContainerSpec, check: &HealthCheck) -> String {
    let q = |s: &str| shell_quote(s);
    let (what, probe) = containers::probe_script(address, spec, check);
    // Every value reaches the shell quoted, in variables.
    format!(
        "dcp_name={name_q}; dcp_what={what_q}\n\
         dcp_probe() {{\n\
         \x20 {probe}\n\
         }}\n\
         checks=0; failed=0; waited=0\n\
         while :; do\n\
         \x20 checks=$((checks + 1))\n\
         \x20 if last=$(dcp_probe 2>&1); then\n\
         \x20   echo \"$dcp_name is healthy ($dcp_what passed at check $checks, $waited s after the start)\"; exit 0\n\
         \x20 fi\n\
         \x20 last=$(printf '%s\\n' \"$last\" | grep -v '^[[:space:]]*$' | tail -n 1)\n\
         \x20 status=$(docker inspect -f '{{{{.State.Status}}}} {{{{.State.ExitCode}}}}' \"$dcp_name\" 2>/dev/null || echo gone)\n\
         \x20 case \"$status\" in\n\
         \x20 running*|restarting*) ;;\n\
         \x20 *) docker logs --tail 20 \"$dcp_name\" 2>&1 | sed 's/^/log: /' >&2 || true\n\
         \x20    echo \"$dcp_name stopped before it was healthy (docker: $status)\" >&2; exit 1 ;;\n\
         \x20 esac\n\
         \x20 if [ \"$waited\" -ge {start} ]; then failed=$((failed + 1)); fi\n\
         \x20 if [ \"$failed\" -ge {retries} ]; then\n\
         \x20   docker logs --tail 20 \"$dcp_name\" 2>&1 | sed 's/^/log: /' >&2 || true\n\
         \x20   echo \"$dcp_name is unhealthy: $dcp_what failed $failed times in a row${{last:+ (last: $last)}}\" >&2; exit 1\n\
         \x20 fi\n\
         \x20 sleep {interval}; waited=$((waited + {interval}))\n\
         done\n",
        name_q = q(name),
        what_q = q(&what),
        start = check.start_period_secs,
        retries = check.retries,
        interval = check.interval_secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_replace_the_images_tag() {
        assert_eq!(with_tag("web", "2"), "web:2");
        assert_eq!(with_tag("shop/web:1", "2"), "shop/web:2");
        assert_eq!(
            with_tag("registry.local:5000/shop/web:1", "2"),
            "registry.local:5000/shop/web:2"
        );
        assert_eq!(
            with_tag("registry.local:5000/web@sha256:ab", "3"),
            "registry.local:5000/web:3"
        );
    }

    #[test]
    fn the_container_is_published_on_the_nodes_address_only() {
        let spec = ContainerSpec {
            ports: vec![dcp_api_types::PortMapping {
                container_port: 80,
                host_port: Some(8080),
                protocol: PortProtocol::Tcp,
            }],
            env: [("GREETING".to_owned(), "it's me".to_owned())].into(),
            ..ContainerSpec::default()
        };
        let script = run_script("dcp-web-3", "shop/web:2", &spec, "127.21.0.5", &[]);
        assert!(script.contains("-p '127.21.0.5:8080:80/tcp'"), "{script}");
        assert!(script.contains("-e 'GREETING=it'\\''s me'"), "{script}");
        assert!(script.contains("--name 'dcp-web-3'"), "{script}");
        assert!(!script.contains("{{"), "no placeholders: {script}");
    }
}
