//! Remote commands (OpenDCP's octans): commands with typed parameters,
//! command groups, and executions that fan a command out over SSH.
//!
//! The rules live here, between the API and the store: what a valid
//! command is, how `{{param}}` values are checked and handed to the shell
//! (as variables, never as script text: see `quoting`), and how
//! a command becomes steps run by remote-command plugins. `ssh` is the
//! transport, `runner` fans an execution out under a fork limit.

mod quoting;
mod runner;
pub mod ssh;
mod template;

pub(crate) use self::template::shell_quote;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use dcp_api_types::{
    CommandGroupInput, CommandInput, CommandMode, Execution, ExecutionEvent, ExecutionHost,
    ExecutionInput, ExecutionStep, ExecutionSummary, HostInput, HostOutput, ModuleEntry,
    OutputStream, ParamDef, ParamType,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::{
    api::rfc3339,
    plugins::{Registry, RemoteCommand as _, WasmPlugin, World},
    store::{
        self, CommandChange, CommandRecord, ExecutionRecord, GroupChange, GroupRecord, HostRecord,
        NewExecution, NewHost, Store, StoredOutput,
    },
    validate::{self, Invalid},
};

/// Longest command or group name.
pub const NAME_MAX: usize = 64;
/// Longest description.
pub const DESCRIPTION_MAX: usize = 1024;
/// Largest script, in bytes.
pub const SCRIPT_MAX: usize = 64 << 10;
/// Most parameters of one command.
pub const PARAMS_MAX: usize = 50;
/// Most commands in one group.
pub const GROUP_MAX: usize = 100;
/// Most hosts in one execution.
pub const HOSTS_MAX: usize = 5000;
/// Forks when an execution names none.
pub const DEFAULT_FORKS: u32 = 50;
/// Per-host time limit when an execution names none.
pub const DEFAULT_TIMEOUT_SECS: u32 = 300;
/// The longest per-host time limit.
pub const MAX_TIMEOUT_SECS: u32 = 24 * 3600;
/// The most [`Remote::look`]s under way at once.
pub const LOOKS_MAX: usize = 8;
/// How long a look waits for a turn before it is refused (503).
const LOOK_QUEUE_TIME: Duration = Duration::from_secs(5);
/// The bundled plugin that runs `shell` and `longscript` commands.
pub const SHELL_PLUGIN: &str = "shell-command";

/// Why a remote-commands operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field breaks a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The operation does not fit the execution's state.
    #[error("{0}")]
    Conflict(String),
    /// A plugin needed to run is not there.
    #[error("{0}")]
    Unavailable(String),
    /// A host could not be reached or logged in to.
    #[error("{0}")]
    Unreachable(String),
}

/// Why [`Remote::finished`] stopped waiting before the execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The waiter was cancelled.
    Cancelled,
    /// The waiter's deadline passed.
    Deadline,
}

/// A step as resolved when an execution starts: which plugin module runs
/// with which arguments. Stored with the execution (credentials never are).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The command's name.
    pub name: String,
    /// The plugin.
    pub plugin: String,
    /// Its module.
    pub module: String,
    /// The module's arguments, placeholders filled.
    pub args: Value,
}

/// The remote-commands service: checks, starts, tracks and cancels
/// executions. One per DCP process.
#[derive(Debug)]
pub struct Remote {
    store: Store,
    plugins: Arc<Registry>,
    transport: Arc<ssh::Transport>,
    /// Resolves `machine_ids` to SSH targets.
    inventory: Arc<dyn Inventory>,
    /// This process, as the owner of the executions it runs.
    owner: String,
    max_forks: u32,
    /// The most output bytes one execution keeps, all hosts together.
    max_execution_output: usize,
    live: Mutex<HashMap<i64, Live>>,
    /// Bounds [`Remote::look`]s under way, all nodes together: a flood of
    /// them must not take the SSH sessions a node allows (sshd's
    /// `MaxSessions`, 10 by default) from the deploys and commands on it.
    looks: Semaphore,
    /// Set when the process shuts down: cancels say why.
    stopping: AtomicBool,
}

/// An execution this process runs.
#[derive(Debug, Clone)]
struct Live {
    cancel: CancellationToken,
    events: broadcast::Sender<ExecutionEvent>,
}

/// A parameter value as substituted into scripts.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Remote {
    /// The service over `store`, running modules from `plugins` over
    /// `transport` on hosts given by address or found in `inventory`, with at most `max_forks` hosts at once per execution.
    /// Ends executions whose DCP process died and keeps this process's
    /// executions marked alive.
    #[must_use]
    pub fn new(
        store: Store,
        plugins: Arc<Registry>,
        transport: Arc<ssh::Transport>,
        inventory: Arc<dyn Inventory>,
        max_forks: u32,
        max_execution_output: usize,
    ) -> Arc<Self> {
        let remote = Arc::new(Self {
            store,
            plugins,
            transport,
            inventory,
            owner: uuid::Uuid::now_v7().to_string(),
            max_forks,
            max_execution_output,
            live: Mutex::new(HashMap::new()),
            looks: Semaphore::new(LOOKS_MAX),
            stopping: AtomicBool::new(false),
        });
        tokio::spawn(runner::keep_alive(Arc::downgrade(&remote)));
        remote
    }

    /// Runs a short, read-only `script` on a node — as its machine's login,
    /// or with DCP's default key for a server added by address — and
    /// answers what it printed. Not an execution: a look at a container is
    /// not worth a record. Bounded by `timeout`, `max_output` and
    /// [`LOOKS_MAX`] under way at once.
    pub async fn look(
        &self,
        machine_id: Option<i64>,
        endpoint: ssh::Endpoint,
        script: &str,
        timeout: Duration,
        max_output: usize,
    ) -> Result<crate::plugins::ExecOutput, Error> {
        let _turn = tokio::time::timeout(LOOK_QUEUE_TIME, self.looks.acquire())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "{LOOKS_MAX} looks at containers are under way; try again shortly"
                ))
            })?;
        let target = self.target(machine_id, endpoint).await?;
        self.transport
            .exec(
                &target,
                script,
                None,
                timeout,
                max_output,
                &CancellationToken::new(),
            )
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))
    }

    /// Runs `script` on a node, feeding it `stdin` — for what must not be
    /// kept, as an execution's script and output are (a registry login for
    /// one pull). Not an execution: bounded by `timeout` and `max_output`,
    /// stopped by `cancel`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the node, the script and its bounds"
    )]
    pub async fn feed(
        &self,
        machine_id: Option<i64>,
        endpoint: ssh::Endpoint,
        script: &str,
        stdin: Vec<u8>,
        timeout: Duration,
        max_output: usize,
        cancel: &CancellationToken,
    ) -> Result<crate::plugins::ExecOutput, Error> {
        let target = self.target(machine_id, endpoint).await?;
        self.transport
            .exec(&target, script, Some(stdin), timeout, max_output, cancel)
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))
    }

    /// How to reach a node: as its machine's login, or with DCP's default
    /// key for a server added by address.
    async fn target(
        &self,
        machine_id: Option<i64>,
        endpoint: ssh::Endpoint,
    ) -> Result<ssh::Target, Error> {
        match machine_id {
            Some(id) => self
                .inventory
                .targets(&[id])
                .await
                .map_err(|e| Error::Unreachable(e.message))?
                .pop()
                .ok_or_else(|| Error::Unreachable(format!("machine {id} is gone"))),
            None => Ok(ssh::Target {
                endpoint,
                credential: ssh::Credential::Default,
            }),
        }
    }

    /// An `ssh` grant for one plugin call that is not an execution (a
    /// balancer push): machine `machine_id` only, as its login, known to
    /// the plugin as the target id answered, until `deadline`.
    pub async fn plugin_channel(
        &self,
        machine_id: i64,
        deadline: std::time::Instant,
        cancel: CancellationToken,
    ) -> Result<(String, Arc<dyn crate::plugins::SshChannel>), Error> {
        let target = self
            .inventory
            .targets(&[machine_id])
            .await
            .map_err(|e| Error::Unreachable(e.message))?
            .pop()
            .ok_or_else(|| Error::Unreachable(format!("machine {machine_id} is gone")))?;
        let id = format!("machine-{machine_id}");
        let channel = runner::Channel::standalone(
            self.transport.clone(),
            target,
            id.clone(),
            deadline.into(),
            cancel,
        );
        Ok((id, Arc::new(channel)))
    }

    /// Keeps the SSH connections to `address` open while the hold lives
    /// (see [`ssh::Transport::hold`]).
    #[must_use]
    pub fn hold(&self, address: &str) -> ssh::Hold {
        self.transport.hold(address)
    }

    /// The SSH transport executions use (adoption probes hosts with it too).
    #[must_use]
    pub fn transport(&self) -> &Arc<ssh::Transport> {
        &self.transport
    }

    /// Starts shutting down: every execution this process runs is
    /// cancelled (its remote processes killed), so none is left running on
    /// hosts with nobody to record it, and event streams end.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for live in self.live_map().values() {
            live.cancel.cancel();
        }
    }

    /// Whether [`Remote::stop`] was called.
    #[must_use]
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// After [`Remote::stop`]: waits up to `grace` for the executions to
    /// record their end, then closes the SSH connections.
    pub async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.live_map().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.transport.close_all().await;
    }

    /// Every module of the active remote-command plugins.
    pub async fn modules(&self) -> Vec<ModuleEntry> {
        let mut entries = Vec::new();
        for active in self.plugins.active_in(World::RemoteCommand) {
            let plugin = WasmPlugin::new(
                active.plugin.clone(),
                crate::plugins::Grants {
                    limits: active.limits,
                    ..Default::default()
                },
            );
            match plugin.modules().await {
                Ok(modules) => entries.extend(modules.into_iter().map(|m| ModuleEntry {
                    plugin: active.plugin.name.to_string(),
                    module: m.name,
                    description: m.description,
                    params_schema: m.params_schema,
                })),
                Err(e) => {
                    tracing::warn!(plugin = %active.plugin.name, "listing modules failed: {e}")
                }
            }
        }
        entries
    }

    /// Finds the plugin module `name` names: `plugin/module`, a module name
    /// only one plugin has, or a plugin with a single module.
    async fn module(&self, field: &'static str, name: &str) -> Result<ModuleEntry, Invalid> {
        let modules = self.modules().await;
        let found: Vec<&ModuleEntry> = match name.split_once('/') {
            Some((plugin, module)) => modules
                .iter()
                .filter(|m| m.plugin == plugin && m.module == module)
                .collect(),
            None => {
                let by_module: Vec<_> = modules.iter().filter(|m| m.module == name).collect();
                if by_module.is_empty() {
                    let by_plugin: Vec<_> = modules.iter().filter(|m| m.plugin == name).collect();
                    if by_plugin.len() == 1 {
                        by_plugin
                    } else {
                        Vec::new()
                    }
                } else {
                    by_module
                }
            }
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Invalid::new(
                field,
                format!(
                    "no remote-command module {name:?} is active (available: {})",
                    if modules.is_empty() {
                        "none".to_owned()
                    } else {
                        modules
                            .iter()
                            .map(|m| format!("{}/{}", m.plugin, m.module))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            )),
            many => Err(Invalid::new(
                field,
                format!(
                    "{name:?} is ambiguous: name one of {}",
                    many.iter()
                        .map(|m| format!("{}/{}", m.plugin, m.module))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// Checks a command's fields: name, parameters, and a script whose
    /// placeholders are all parameters; an `expert` script must name an
    /// active module.
    pub async fn command_change(&self, input: CommandInput) -> Result<CommandChange, Error> {
        // The form's fields are checked together, so one answer names them all.
        let mut checks = validate::Checks::default();
        checks.check(validate::identifier("name", &input.name, NAME_MAX));
        checks.check(validate::max_chars(
            "description",
            &input.description,
            DESCRIPTION_MAX,
        ));
        checks.check(check_params(&input.params));
        checks.check(check_script(input.mode, &input.script, &input.params));
        checks.finish()?;
        if input.mode == CommandMode::Expert {
            let call = expert_call(&input.script)?;
            self.module("script", &call.module).await?;
        }
        Ok(CommandChange {
            name: input.name,
            description: input.description,
            mode: input.mode,
            script: input.script,
            params: serde_json::to_string(&input.params).unwrap_or_else(|_| "[]".to_owned()),
        })
    }

    /// Checks a group's fields: its commands exist and agree on the
    /// parameters they share.
    pub async fn group_change(&self, input: CommandGroupInput) -> Result<GroupChange, Error> {
        validate::identifier("name", &input.name, NAME_MAX)?;
        validate::max_chars("description", &input.description, DESCRIPTION_MAX)?;
        if input.command_ids.is_empty() {
            return Err(Invalid::new("command_ids", "must name at least one command").into());
        }
        if input.command_ids.len() > GROUP_MAX {
            return Err(Invalid::new(
                "command_ids",
                format!("may name at most {GROUP_MAX} commands"),
            )
            .into());
        }
        let commands = self.store.commands(&input.command_ids).await?;
        let mut steps = Vec::with_capacity(input.command_ids.len());
        for (i, id) in input.command_ids.iter().enumerate() {
            let command = commands.get(id).ok_or_else(|| {
                Invalid::new(
                    format!("command_ids[{i}]"),
                    format!("no command with id {id}"),
                )
            })?;
            steps.push(command.clone());
        }
        group_params(&steps)?;
        Ok(GroupChange {
            name: input.name,
            description: input.description,
            command_ids: input.command_ids,
        })
    }

    /// Starts an execution; the work runs in the background. Answers the
    /// execution's id once every input is checked and the hosts are recorded.
    pub async fn start(self: &Arc<Self>, input: ExecutionInput, user: &str) -> Result<i64, Error> {
        self.start_titled(input, user, None).await
    }

    /// [`Remote::start`] for DCP's own runs (a machine's init, a task's
    /// step), titled by what they are for, then by what they run.
    pub async fn start_titled(
        self: &Arc<Self>,
        input: ExecutionInput,
        user: &str,
        purpose: Option<&str>,
    ) -> Result<i64, Error> {
        if self.stopping() {
            return Err(Error::Unavailable("DCP is shutting down".to_owned()));
        }
        let forks = input.forks.unwrap_or(DEFAULT_FORKS);
        if forks == 0 || forks > self.max_forks {
            return Err(Invalid::new(
                "forks",
                format!(
                    "must be between 1 and {} (the server's max_forks)",
                    self.max_forks
                ),
            )
            .into());
        }
        let timeout_secs = input.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout_secs == 0 || timeout_secs > MAX_TIMEOUT_SECS {
            return Err(Invalid::new(
                "timeout_secs",
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            )
            .into());
        }
        let (title, steps, params) = self.plan(&input).await?;
        let title = match purpose {
            Some(purpose) => format!("{purpose}: {title}"),
            None => title,
        };
        let targets = self.targets(&input).await?;
        let new = NewExecution {
            title,
            command_id: input.command_id,
            group_id: input.group_id,
            steps: serde_json::to_string(&steps).unwrap_or_default(),
            params: serde_json::to_string(&params).unwrap_or_default(),
            forks,
            timeout_secs,
            created_by: user.to_owned(),
            owner: self.owner.clone(),
            hosts: targets
                .iter()
                .map(|t| NewHost {
                    address: t.endpoint.address.clone(),
                    port: t.endpoint.port,
                    user: t.endpoint.user.clone(),
                })
                .collect(),
        };
        let id = self.store.create_execution(&new).await?;
        let live = Live {
            cancel: CancellationToken::new(),
            events: broadcast::channel(1024).0,
        };
        self.live_map().insert(id, live.clone());
        let run = runner::Run {
            id,
            steps,
            targets,
            forks,
            timeout: Duration::from_secs(u64::from(timeout_secs)),
            cancel: live.cancel,
            events: live.events,
            output_budget: Arc::new(std::sync::atomic::AtomicUsize::new(
                self.max_execution_output,
            )),
        };
        tokio::spawn(runner::run(self.clone(), run));
        Ok(id)
    }

    /// Cancels a running execution: every host not done ends `cancelled`
    /// and its remote processes are killed.
    pub async fn cancel(&self, id: i64) -> Result<(), Error> {
        if self.stopping() {
            return Err(Error::Unavailable("DCP is shutting down".to_owned()));
        }
        let execution = self.store.execution(id).await?;
        if execution.state.is_final() {
            return Err(Error::Conflict(format!(
                "execution {id} already ended ({})",
                execution.state.as_str()
            )));
        }
        match self.live_map().get(&id) {
            Some(live) => {
                live.cancel.cancel();
                Ok(())
            }
            // Run by another DCP process: it will see nothing; say so
            // rather than pretend.
            None => Err(Error::Unavailable(format!(
                "execution {id} is run by another DCP replica; cancel it there"
            ))),
        }
    }

    /// The record of execution `id` once it has ended; or, when `cancel`
    /// fires or `deadline` passes first, the execution is cancelled and the
    /// answer says which gave up. Waits for the execution's events channel
    /// to close (the runner closes it once the end is stored) instead of
    /// asking the store every moment: a thousand machines' inits and steps
    /// asking four or five times a second were most of a large expand's
    /// store work. A look every few seconds is the safety net (another
    /// replica's execution has no channel here).
    pub async fn finished(
        &self,
        id: i64,
        deadline: Option<tokio::time::Instant>,
        cancel: &CancellationToken,
    ) -> Result<Result<ExecutionRecord, GaveUp>, store::Error> {
        /// How often a waiter looks at the store when no channel tells it.
        const LOOK: Duration = Duration::from_secs(5);
        let mut events = self.subscribe(id);
        loop {
            let record = self.store.execution(id).await?;
            if record.state.is_final() {
                return Ok(Ok(record));
            }
            let closed = async {
                match events.as_mut() {
                    Some(receiver) => {
                        while !matches!(
                            receiver.recv().await,
                            Err(broadcast::error::RecvError::Closed)
                        ) {}
                    }
                    None => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            };
            let gave_up = tokio::select! {
                () = closed => {
                    events = None;
                    None
                }
                () = tokio::time::sleep(LOOK) => None,
                () = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => Some(GaveUp::Deadline),
                () = cancel.cancelled() => Some(GaveUp::Cancelled),
            };
            if let Some(why) = gave_up {
                // Its remote processes are killed; an execution that ended
                // meanwhile refuses, which is as good.
                let _ = self.cancel(id).await;
                return Ok(Err(why));
            }
        }
    }

    /// Live events of an execution this process runs; `None` once it ended
    /// (or when another replica runs it).
    #[must_use]
    pub fn subscribe(&self, id: i64) -> Option<broadcast::Receiver<ExecutionEvent>> {
        self.live_map().get(&id).map(|l| l.events.subscribe())
    }

    fn live_map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What runs: the title, the steps with placeholders filled, and the
    /// parameter values used.
    async fn plan(
        &self,
        input: &ExecutionInput,
    ) -> Result<(String, Vec<Step>, BTreeMap<String, Value>), Error> {
        exactly_one(
            "command_id",
            [
                ("command_id", input.command_id.is_some()),
                ("group_id", input.group_id.is_some()),
                ("command", input.command.is_some()),
            ],
        )?;
        if let Some(inline) = &input.command {
            if inline.mode == CommandMode::Expert {
                return Err(Invalid::new(
                    "command.mode",
                    "an inline command is shell or longscript; save an expert command first",
                )
                .into());
            }
            if inline.script.trim().is_empty() {
                return Err(Invalid::new("command.script", "is required").into());
            }
            if !input.params.is_empty() {
                return Err(Invalid::new(
                    "params",
                    "an inline command takes no parameters: its script runs as written",
                )
                .into());
            }
            let step = Step {
                name: "ad-hoc".to_owned(),
                plugin: SHELL_PLUGIN.to_owned(),
                module: inline.mode.as_str().to_owned(),
                args: serde_json::json!({ "script": inline.script }),
            };
            self.ensure_plugin(SHELL_PLUGIN)?;
            return Ok((
                format!("ad-hoc {}", inline.mode.as_str()),
                vec![step],
                BTreeMap::new(),
            ));
        }
        let (title, commands) = if let Some(id) = input.command_id {
            let command = self.store.command(id).await.map_err(|e| match e {
                store::Error::NotFound { .. } => Error::from(Invalid::new(
                    "command_id",
                    format!("no command with id {id}"),
                )),
                other => other.into(),
            })?;
            (command.name.clone(), vec![command])
        } else {
            let id = input.group_id.unwrap_or_default();
            let group: GroupRecord = self.store.group(id).await.map_err(|e| match e {
                store::Error::NotFound { .. } => Error::from(Invalid::new(
                    "group_id",
                    format!("no command group with id {id}"),
                )),
                other => other.into(),
            })?;
            (group.name, group.steps)
        };
        let defs = union_params(&commands)?;
        let values = param_values(&defs, &input.params)?;
        let field = if input.command_id.is_some() {
            "command_id"
        } else {
            "group_id"
        };
        let mut steps = Vec::with_capacity(commands.len());
        for command in &commands {
            steps.push(self.step(field, command, &values).await?);
        }
        Ok((title, steps, values))
    }

    /// One command as a plugin call, placeholders filled.
    async fn step(
        &self,
        field: &'static str,
        command: &CommandRecord,
        values: &BTreeMap<String, Value>,
    ) -> Result<Step, Error> {
        let (plugin, module, args) = match command.mode {
            CommandMode::Shell | CommandMode::Longscript => {
                self.ensure_plugin(SHELL_PLUGIN)?;
                // Checked when saved; checked again for commands saved
                // before the check existed.
                let script = quoting::render(&command.script, |name| {
                    values.get(name).map(text_of).unwrap_or_default()
                })
                .map_err(|r| {
                    Invalid::new(field, format!("command {}: {}", command.name, r.message()))
                })?;
                (
                    SHELL_PLUGIN.to_owned(),
                    command.mode.as_str().to_owned(),
                    serde_json::json!({ "script": script }),
                )
            }
            CommandMode::Expert => {
                let call = expert_call(&command.script)?;
                let module = self.module("command_id", &call.module).await?;
                let args = fill_json(call.args, values);
                // The module checks its arguments before any host is touched.
                if let Some(active) = self.plugins.active(&module.plugin) {
                    let plugin = WasmPlugin::new(
                        active.plugin.clone(),
                        crate::plugins::Grants {
                            limits: active.limits,
                            ..Default::default()
                        },
                    );
                    plugin
                        .plan(&module.module, &args.to_string())
                        .await
                        .map_err(|e| {
                            Invalid::new(
                                "params",
                                format!("{} refused the arguments: {e}", command.name),
                            )
                        })?;
                }
                (module.plugin, module.module, args)
            }
        };
        Ok(Step {
            name: command.name.clone(),
            plugin,
            module,
            args,
        })
    }

    fn ensure_plugin(&self, name: &str) -> Result<(), Error> {
        if self.plugins.active(name).is_some() {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "the {name} plugin is not active: check the plugin directory or the Plugins page"
            )))
        }
    }
}

/// Machines DCP manages, as SSH targets: the machines module resolves ids
/// to addresses and opens their keys.
#[async_trait::async_trait]
pub trait Inventory: Send + Sync + std::fmt::Debug {
    /// The targets of `ids`, in order; an unknown or unusable machine is
    /// [`Invalid`] on `machine_ids[i]`.
    async fn targets(&self, ids: &[i64]) -> Result<Vec<ssh::Target>, Invalid>;
    /// The targets of a pool's nodes; an unknown or empty pool is [`Invalid`] on `pool_id`.
    async fn pool_targets(&self, pool_id: i64) -> Result<Vec<ssh::Target>, Invalid>;
}

impl Remote {
    /// The hosts to run on, with their credentials.
    async fn targets(&self, input: &ExecutionInput) -> Result<Vec<ssh::Target>, Error> {
        exactly_one(
            "hosts",
            [
                ("machine_ids", input.machine_ids.is_some()),
                ("pool_id", input.pool_id.is_some()),
                ("hosts", input.hosts.is_some()),
            ],
        )?;
        if let Some(ids) = &input.machine_ids {
            if ids.len() > HOSTS_MAX {
                return Err(Invalid::new(
                    "machine_ids",
                    format!("may name at most {HOSTS_MAX} machines"),
                )
                .into());
            }
            return Ok(self.inventory.targets(ids).await?);
        }
        if let Some(id) = input.pool_id {
            return Ok(self.inventory.pool_targets(id).await?);
        }
        let hosts = input.hosts.as_deref().unwrap_or_default();
        if hosts.is_empty() {
            return Err(Invalid::new("hosts", "must name at least one host").into());
        }
        if hosts.len() > HOSTS_MAX {
            return Err(
                Invalid::new("hosts", format!("may name at most {HOSTS_MAX} hosts")).into(),
            );
        }
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| host_target(i, h))
            .collect()
    }
}

/// An execution's summary as the API shows it.
#[must_use]
pub fn summary_to_api(e: ExecutionRecord) -> ExecutionSummary {
    ExecutionSummary {
        id: e.id,
        title: e.title,
        state: e.state,
        counts: e.counts,
        command_id: e.command_id,
        group_id: e.group_id,
        forks: e.forks,
        timeout_secs: e.timeout_secs,
        created_by: e.created_by,
        created_at: rfc3339(e.created_at),
        finished_at: e.finished_at.map(rfc3339),
    }
}

/// An execution as the API shows it (its hosts are paged separately).
#[must_use]
pub fn execution_to_api(e: ExecutionRecord) -> Execution {
    let steps: Vec<Step> = serde_json::from_str(&e.steps).unwrap_or_default();
    let params = serde_json::from_str(&e.params).unwrap_or_default();
    Execution {
        steps: steps
            .into_iter()
            .map(|s| ExecutionStep {
                name: s.name,
                plugin: s.plugin,
                module: s.module,
            })
            .collect(),
        params,
        summary: summary_to_api(e),
    }
}

/// A host of an execution as the API shows it.
#[must_use]
pub fn host_to_api(h: HostRecord) -> ExecutionHost {
    ExecutionHost {
        index: h.position,
        address: h.address,
        port: h.port,
        user: h.user,
        state: h.report.state,
        exit_code: h.report.exit_code,
        stdout_bytes: h.stdout_bytes,
        stderr_bytes: h.stderr_bytes,
        truncated: h.report.truncated,
        message: h.report.message,
        started_at: h.report.started_at.map(rfc3339),
        finished_at: h.report.finished_at.map(rfc3339),
    }
}

/// The piece of a host's stored output stream that starts at `offset` and
/// holds at most `limit` bytes, never splitting a UTF-8 character; an
/// offset inside a character or past the end is refused on `offset`.
pub fn output_piece(
    index: u32,
    stream: OutputStream,
    stored: &StoredOutput,
    offset: u64,
    limit: u32,
) -> Result<HostOutput, Invalid> {
    let text = stored.text.as_str();
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    if start > text.len() {
        return Err(Invalid::new(
            "offset",
            format!("is past the end of the output ({} bytes)", text.len()),
        ));
    }
    if !text.is_char_boundary(start) {
        return Err(Invalid::new(
            "offset",
            "falls inside a character; use a next_offset from an earlier read",
        ));
    }
    let mut end = start
        .saturating_add(usize::try_from(limit).unwrap_or(usize::MAX))
        .min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // A limit smaller than the character at `start` still makes progress.
    if end == start && start < text.len() {
        end = start + text[start..].chars().next().map_or(0, char::len_utf8);
    }
    Ok(HostOutput {
        index,
        stream,
        offset,
        data: text[start..end].to_owned(),
        next_offset: end as u64,
        total_bytes: text.len() as u64,
        complete: stored.done && end == text.len(),
        truncated: stored.truncated,
    })
}

/// Refuses, on `field`, anything but exactly one of `choices` given.
fn exactly_one(field: &'static str, choices: [(&str, bool); 3]) -> Result<(), Invalid> {
    if choices.iter().filter(|(_, given)| *given).count() == 1 {
        return Ok(());
    }
    let [a, b, c] = choices.map(|(name, _)| name);
    Err(Invalid::new(
        field,
        format!("give exactly one of {a}, {b} and {c}"),
    ))
}

/// An ad-hoc host as a target, or why not.
fn host_target(i: usize, host: &HostInput) -> Result<ssh::Target, Error> {
    let field = |name: &str| format!("hosts[{i}].{name}");
    let address = host.address.trim();
    validate::address(field("address"), address)?;
    let port = host.port.unwrap_or(22);
    if port == 0 {
        return Err(Invalid::new(field("port"), "must be between 1 and 65535").into());
    }
    let user = host.user.clone().unwrap_or_else(|| "root".to_owned());
    if user.is_empty()
        || user.len() > 32
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(Invalid::new(field("user"), "is not a valid login name").into());
    }
    let credential = match (&host.private_key, &host.password) {
        (Some(_), Some(_)) => {
            return Err(Invalid::new(
                field("password"),
                "give a private_key or a password, not both",
            )
            .into());
        }
        (Some(key), None) => ssh::Credential::parse_key(key)
            .map_err(|reason| Invalid::new(field("private_key"), reason))?,
        (None, Some(password)) => ssh::Credential::Password(password.as_str().into()),
        (None, None) => ssh::Credential::Default,
    };
    Ok(ssh::Target {
        endpoint: ssh::Endpoint {
            address: address.to_owned(),
            port,
            user,
        },
        credential,
    })
}

/// Checks parameter definitions: unique names, defaults of their type,
/// choices only (and always) for enums.
fn check_params(params: &[ParamDef]) -> Result<(), Invalid> {
    if params.len() > PARAMS_MAX {
        return Err(Invalid::new(
            "params",
            format!("at most {PARAMS_MAX} parameters"),
        ));
    }
    for (i, def) in params.iter().enumerate() {
        let field = |name: &str| format!("params[{i}].{name}");
        let name = &def.name;
        let starts_well = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if !starts_well
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(Invalid::new(
                field("name"),
                "must be 1–64 characters of a-z, 0-9 and _, starting with a letter",
            ));
        }
        if params[..i].iter().any(|other| other.name == *name) {
            return Err(Invalid::new(
                field("name"),
                format!("{name:?} is defined twice"),
            ));
        }
        if def.description.chars().count() > DESCRIPTION_MAX {
            return Err(Invalid::new(
                field("description"),
                format!("must be at most {DESCRIPTION_MAX} characters"),
            ));
        }
        match def.kind {
            ParamType::Enum if def.choices.is_empty() => {
                return Err(Invalid::new(
                    field("choices"),
                    "an enum needs at least one choice",
                ));
            }
            ParamType::Enum => {}
            _ if !def.choices.is_empty() => {
                return Err(Invalid::new(
                    field("choices"),
                    "only enum parameters have choices",
                ));
            }
            _ => {}
        }
        if let Some(default) = &def.default {
            coerce(def, default).map_err(|reason| Invalid::new(field("default"), reason))?;
        }
    }
    Ok(())
}

/// Checks a script: present, not too large, and every placeholder a parameter.
fn check_script(mode: CommandMode, script: &str, params: &[ParamDef]) -> Result<(), Invalid> {
    if script.trim().is_empty() {
        return Err(Invalid::new("script", "is required"));
    }
    if script.len() > SCRIPT_MAX {
        return Err(Invalid::new(
            "script",
            format!("must be at most {SCRIPT_MAX} bytes"),
        ));
    }
    if mode == CommandMode::Shell && script.trim().contains('\n') {
        return Err(Invalid::new(
            "script",
            "a shell command is one line; use longscript for a multi-line script",
        ));
    }
    for (_, name) in template::placeholders(script) {
        if !params.iter().any(|p| p.name == name) {
            return Err(Invalid::new(
                "script",
                format!("unknown placeholder {{{{{name}}}}}: define a parameter {name:?}"),
            ));
        }
    }
    if mode != CommandMode::Expert {
        quoting::contexts(script).map_err(|r| Invalid::new("script", r.message()))?;
    }
    Ok(())
}

/// The `expert` module call.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpertCall {
    module: String,
    #[serde(default = "empty_object")]
    args: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

fn expert_call(script: &str) -> Result<ExpertCall, Invalid> {
    let call: ExpertCall = serde_json::from_str(script).map_err(|e| {
        Invalid::new(
            "script",
            format!("an expert command is JSON {{\"module\": \"...\", \"args\": {{...}}}}: {e}"),
        )
    })?;
    if call.module.trim().is_empty() {
        return Err(Invalid::new("script", "module is required"));
    }
    if !call.args.is_object() {
        return Err(Invalid::new("script", "args must be a JSON object"));
    }
    Ok(call)
}

/// Fills placeholders in a module's arguments: a string that is exactly one
/// placeholder takes the value with its type; others get the value as text.
fn fill_json(value: Value, values: &BTreeMap<String, Value>) -> Value {
    match value {
        Value::String(s) => {
            let found = template::placeholders(&s);
            if let [(range, name)] = found.as_slice()
                && *range == (0..s.len())
            {
                return values.get(*name).cloned().unwrap_or(Value::Null);
            }
            Value::String(template::render(&s, |name| {
                values.get(name).map(text_of).unwrap_or_default()
            }))
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| fill_json(v, values)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, fill_json(v, values)))
                .collect(),
        ),
        other => other,
    }
}

/// The parameters of a group: every command's, each name once; two
/// commands defining one name differently is an error naming both.
pub fn group_params(commands: &[CommandRecord]) -> Result<Vec<ParamDef>, Invalid> {
    let mut union: Vec<(ParamDef, &str)> = Vec::new();
    for command in commands {
        for def in command_params(command) {
            match union.iter().find(|(d, _)| d.name == def.name) {
                Some((existing, owner))
                    if existing.kind != def.kind || existing.choices != def.choices =>
                {
                    return Err(Invalid::new(
                        "command_ids",
                        format!(
                            "parameter {:?} is a {} in {owner} but a {} in {}",
                            def.name,
                            existing.kind.as_str(),
                            def.kind.as_str(),
                            command.name
                        ),
                    ));
                }
                Some(_) => {}
                None => union.push((def, &command.name)),
            }
        }
    }
    Ok(union.into_iter().map(|(d, _)| d).collect())
}

fn union_params(commands: &[CommandRecord]) -> Result<Vec<ParamDef>, Invalid> {
    group_params(commands).map_err(|e| Invalid::new("group_id", e.message))
}

/// A stored command's parameter definitions.
#[must_use]
pub fn command_params(command: &CommandRecord) -> Vec<ParamDef> {
    serde_json::from_str(&command.params).unwrap_or_default()
}

/// The value of every parameter: given, else the default; unknown names,
/// missing required values and values of the wrong type are errors naming
/// `params.<name>`.
fn param_values(
    defs: &[ParamDef],
    given: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, Invalid> {
    if let Some(unknown) = given.keys().find(|k| !defs.iter().any(|d| &d.name == *k)) {
        return Err(Invalid::new(
            format!("params.{unknown}"),
            format!(
                "is not a parameter (parameters: {})",
                if defs.is_empty() {
                    "none".to_owned()
                } else {
                    defs.iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ));
    }
    let mut values = BTreeMap::new();
    for def in defs {
        let field = format!("params.{}", def.name);
        let value = match given
            .get(&def.name)
            .filter(|v| !v.is_null())
            .or(def.default.as_ref())
        {
            Some(value) => coerce(def, value).map_err(|reason| Invalid::new(field, reason))?,
            None if def.required => return Err(Invalid::new(field, "is required")),
            None => Value::String(String::new()),
        };
        values.insert(def.name.clone(), value);
    }
    Ok(values)
}

/// `value` as a value of `def`'s type (numbers and booleans may come as
/// text from forms), or why it is not one.
fn coerce(def: &ParamDef, value: &Value) -> Result<Value, String> {
    match (def.kind, value) {
        (ParamType::String, Value::String(s)) => {
            if s.contains('\0') {
                Err("must not contain NUL characters".to_owned())
            } else {
                Ok(value.clone())
            }
        }
        (ParamType::Integer, Value::Number(n)) if n.is_i64() => Ok(value.clone()),
        (ParamType::Integer, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("must be an integer, not {s:?}")),
        (ParamType::Boolean, Value::Bool(_)) => Ok(value.clone()),
        (ParamType::Boolean, Value::String(s)) if s == "true" || s == "false" => {
            Ok(Value::Bool(s == "true"))
        }
        (ParamType::Enum, Value::String(s)) if def.choices.contains(s) => Ok(value.clone()),
        (ParamType::Enum, _) => Err(format!("must be one of {}", def.choices.join(", "))),
        (kind, other) => Err(format!("must be a {}, not {other}", kind.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, kind: ParamType) -> ParamDef {
        ParamDef {
            name: name.to_owned(),
            kind,
            required: true,
            ..ParamDef::default()
        }
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let err = check_script(CommandMode::Shell, "echo {{who}}", &[]).unwrap_err();
        assert_eq!(err.field, "script");
        assert!(err.message.contains("{{who}}"), "{}", err.message);
    }

    #[test]
    fn values_are_checked_against_their_types() {
        let defs = [
            def("port", ParamType::Integer),
            def("on", ParamType::Boolean),
        ];
        let given = BTreeMap::from([
            ("port".to_owned(), Value::from("80")),
            ("on".to_owned(), Value::from("true")),
        ]);
        let values = param_values(&defs, &given).unwrap();
        assert_eq!(values["port"], Value::from(80));
        assert_eq!(values["on"], Value::Bool(true));

        let given = BTreeMap::from([("port".to_owned(), Value::from("eighty"))]);
        let err = param_values(&defs, &given).unwrap_err();
        assert_eq!(err.field, "params.port");

        let err = param_values(&defs[1..], &BTreeMap::new()).unwrap_err();
        assert_eq!(
            (err.field.as_ref(), err.message.as_str()),
            ("params.on", "is required")
        );
    }

    #[test]
    fn whole_placeholders_keep_their_type_in_module_args() {
        let values = BTreeMap::from([("n".to_owned(), Value::from(3))]);
        let filled = fill_json(
            serde_json::json!({"count": "{{n}}", "label": "x{{n}}"}),
            &values,
        );
        assert_eq!(filled, serde_json::json!({"count": 3, "label": "x3"}));
    }
}
