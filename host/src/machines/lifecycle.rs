//! One machine's work, from its stored state on: create the instance, wait
//! for it to run, init it over SSH, or release it. Every step reads the
//! state from the store and moves it with a compare-and-set, so a step
//! replayed after a restart (or raced by a delete) does no harm; the cloud
//! create carries the machine's own idempotency key.

use std::{sync::Arc, time::Duration};

use dcp_api_types::{
    ExecutionInput, ExecutionState, HostState, InlineCommand, MachineState, TemplateSpec,
};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use super::{Error, Machines};
use crate::{
    plugins::{
        self, CloudProvider, Disk, ErrorKind, Failure, InstanceSpec, InstanceState, Internet,
    },
    remote::ssh,
    store::{self, MachineRecord, MachineUpdate},
};

/// Attempts of a cloud call that failed retryably (the plugin retries
/// within each attempt too).
const CLOUD_ATTEMPTS: u32 = 3;
/// How long a new instance may be absent from the cloud's answers
/// (eventual consistency) before it counts as gone.
const NOT_FOUND_GRACE: Duration = Duration::from_secs(60);
/// Output lines of each init stream kept in the machine's log.
const INIT_LOG_LINES: usize = 200;

/// Why a step stopped.
enum Stop {
    /// Shutdown or delete: leave the state for whoever comes next.
    Cancelled,
    /// The step failed: the machine goes to `state` with `reason`.
    Failed(MachineState, String),
    /// The store failed: try again on the next start.
    Store(store::Error),
}

impl From<store::Error> for Stop {
    fn from(e: store::Error) -> Self {
        Self::Store(e)
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(e) => Self::Store(e),
            other => Self::Failed(MachineState::Error, other.to_string()),
        }
    }
}

/// How long a machine's driver keeps trying while the store is
/// unavailable (a SQLite pool busy with a thousand machines' writes, a
/// PostgreSQL restart) before it leaves the work to the next start.
const STORE_PATIENCE: Duration = Duration::from_secs(120);

/// Drives machine `id` until it rests (ready, failed, released) or `cancel` fires.
pub(super) async fn drive(machines: &Arc<Machines>, id: i64, cancel: &CancellationToken) {
    let mut unavailable_since: Option<Instant> = None;
    // A store that is only busy answers again soon: the driver waits and
    // goes on from the state the store holds, rather than leaving the
    // machine half made until the process restarts (or a step takes it
    // over).
    let patient = |e: &store::Error, since: &mut Option<Instant>| {
        matches!(e, store::Error::Unavailable(_))
            && since.get_or_insert_with(Instant::now).elapsed() < STORE_PATIENCE
    };
    loop {
        let machine = match machines.store.machine(id).await {
            Ok(m) => m,
            Err(e) if patient(&e, &mut unavailable_since) => {
                tracing::warn!(
                    machine = id,
                    "reading the machine failed, trying again: {e}"
                );
                if pause(Duration::from_secs(1), cancel).await.is_err() {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(machine = id, "reading the machine failed: {e}");
                return;
            }
        };
        let from = machine.state;
        let step = match from {
            MachineState::Creating => create(machines, &machine, cancel).await,
            MachineState::Starting => wait_running(machines, &machine, cancel).await,
            MachineState::Initializing => init(machines, &machine, cancel).await,
            MachineState::Deleting => release(machines, &machine, cancel).await,
            _ => return,
        };
        match step {
            Ok(()) => unavailable_since = None,
            Err(Stop::Cancelled) => return,
            // Creating (under its idempotency key), waiting and releasing
            // are safe to replay; an init is not run twice.
            Err(Stop::Store(e))
                if from != MachineState::Initializing && patient(&e, &mut unavailable_since) =>
            {
                tracing::warn!(machine = id, "store unavailable, trying again: {e}");
                if pause(Duration::from_secs(1), cancel).await.is_err() {
                    return;
                }
            }
            Err(Stop::Store(e)) => {
                tracing::error!(
                    machine = id,
                    "store failed; the machine's work resumes on the next start: {e}"
                );
                return;
            }
            Err(Stop::Failed(state, reason)) => {
                log(machines, id, format!("{}: {reason}", state.as_str())).await;
                if let Err(e) = machines
                    .store
                    .transition_machine(id, &[from], state, &reason, &MachineUpdate::default())
                    .await
                {
                    tracing::error!(machine = id, "recording the failure failed: {e}");
                }
                return;
            }
        }
    }
}

/// Appends a line to the machine's log; a failure costs only the line.
async fn log(machines: &Machines, id: i64, line: String) {
    if let Err(e) = machines.store.log_machine(id, &[line]).await {
        tracing::warn!(machine = id, "writing the machine log failed: {e}");
    }
}

/// Moves the machine on; `Cancelled` when someone else moved it first
/// (a delete during init).
async fn advance(
    machines: &Machines,
    machine: &MachineRecord,
    to: MachineState,
    reason: &str,
    update: &MachineUpdate,
) -> Result<(), Stop> {
    match machines
        .store
        .transition_machine(machine.id, &[machine.state], to, reason, update)
        .await
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Stop::Cancelled),
        // The cloud gave it an address DCP already reaches another machine
        // on: commands for either would land on one server, so this one is
        // not used (its instance stays for the user to release).
        Err(e @ store::Error::Claimed { .. }) => Err(Stop::Failed(
            MachineState::Error,
            format!("{e}; a server is one machine"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The cloud provider of a template's machine, with the template's spec.
async fn provider_of(
    machines: &Machines,
    machine: &MachineRecord,
) -> Result<(Arc<dyn CloudProvider>, store::TemplateRecord), Stop> {
    let template_id = machine.template_id.ok_or_else(|| {
        Stop::Failed(
            MachineState::Error,
            "the machine's template was deleted".to_owned(),
        )
    })?;
    let template = machines.store.template(template_id).await?;
    let account = machines.store.account(template.account_id).await?;
    Ok((machines.provider(&account)?, template))
}

/// How a failed cloud call reads in a machine's reason and log.
fn cloud_failure(e: &plugins::Error) -> String {
    e.to_string()
}

/// Waits `d` unless cancelled.
async fn pause(d: Duration, cancel: &CancellationToken) -> Result<(), Stop> {
    tokio::select! {
        () = sleep(d) => Ok(()),
        () = cancel.cancelled() => Err(Stop::Cancelled),
    }
}

/// Calls the cloud, trying again (with the same arguments, so the same
/// idempotency key) while the failure says a retry may succeed.
async fn with_retries<T, F, Fut>(
    machines: &Machines,
    machine: &MachineRecord,
    what: &str,
    cancel: &CancellationToken,
    mut call: F,
) -> Result<Result<T, plugins::Error>, Stop>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, plugins::Error>>,
{
    let mut attempt = 1;
    loop {
        let result = tokio::select! {
            r = call() => r,
            () = cancel.cancelled() => return Err(Stop::Cancelled),
        };
        match result {
            Err(e) if e.failure.retryable() && attempt < CLOUD_ATTEMPTS => {
                log(
                    machines,
                    machine.id,
                    format!("cloud: {what} failed (attempt {attempt} of {CLOUD_ATTEMPTS}), retrying: {}", cloud_failure(&e)),
                )
                .await;
                pause(machines.settings.poll, cancel).await?;
                attempt += 1;
            }
            other => return Ok(other),
        }
    }
}

async fn create(
    machines: &Machines,
    machine: &MachineRecord,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let (provider, template) = provider_of(machines, machine).await?;
    let spec: TemplateSpec = serde_json::from_str(&template.spec).map_err(|_| {
        Stop::Failed(
            MachineState::Error,
            format!("template {} has an unreadable spec", template.name),
        )
    })?;
    let instance_spec = instance_spec(&spec, machine, &template.name);
    // Unique per machine and stable across replays: the cloud answers a
    // replay with the instance it made the first time.
    let key = format!(
        "dcp-{}",
        &crate::sha256_hex(
            machine
                .public_key
                .as_deref()
                .unwrap_or(&machine.name)
                .as_bytes()
        )[..40]
    );
    log(
        machines,
        machine.id,
        format!(
            "cloud: create-instances via {} ({} {} in {}, idempotency key {key})",
            template.provider, spec.instance_type, spec.image, spec.zone
        ),
    )
    .await;
    let created = with_retries(machines, machine, "create-instances", cancel, || {
        provider.create_instances(&instance_spec, 1, &key)
    })
    .await?;
    let ids = created.map_err(|e| Stop::Failed(MachineState::Error, cloud_failure(&e)))?;
    let [instance_id] = <[String; 1]>::try_from(ids).map_err(|ids| {
        Stop::Failed(
            MachineState::Error,
            format!(
                "the provider answered {} instance ids for one machine",
                ids.len()
            ),
        )
    })?;
    log(
        machines,
        machine.id,
        format!("cloud: instance {instance_id} created"),
    )
    .await;
    advance(
        machines,
        machine,
        MachineState::Starting,
        &format!("instance {instance_id} created"),
        &MachineUpdate {
            instance_id: Some(instance_id),
            ..MachineUpdate::default()
        },
    )
    .await
}

fn instance_spec(spec: &TemplateSpec, machine: &MachineRecord, template: &str) -> InstanceSpec {
    let data_disks = spec
        .data_disks
        .as_ref()
        .map(|d| {
            (0..d.count)
                .map(|_| Disk {
                    category: d.category.clone(),
                    size_gb: d.size_gb,
                })
                .collect()
        })
        .unwrap_or_default();
    InstanceSpec {
        region: spec.region.clone(),
        zone: spec.zone.clone(),
        vpc: spec.vpc.clone(),
        subnet: spec.subnet.clone(),
        security_group: spec.security_group.clone(),
        instance_type: spec.instance_type.clone(),
        image: spec.image.clone(),
        system_disk: Disk {
            category: spec.system_disk.category.clone(),
            size_gb: spec.system_disk.size_gb,
        },
        data_disks,
        internet: (spec.bandwidth_mbps > 0).then(|| Internet {
            charge_type: spec.internet_charge_type.clone(),
            max_bandwidth_out: spec.bandwidth_mbps,
        }),
        instance_charge_type: spec.instance_charge_type.clone(),
        name_prefix: machine.name.clone(),
        ssh_public_key: machine.public_key.clone(),
        tags: vec![
            ("dcp-machine".to_owned(), machine.id.to_string()),
            ("dcp-template".to_owned(), template.to_owned()),
        ],
    }
}

async fn wait_running(
    machines: &Machines,
    machine: &MachineRecord,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let (provider, _) = provider_of(machines, machine).await?;
    let instance = machine.instance_id.clone().unwrap_or_default();
    let started = Instant::now();
    let mut asked_to_start = false;
    loop {
        if started.elapsed() > machines.settings.start_timeout {
            return Err(Stop::Failed(
                MachineState::Error,
                format!(
                    "instance {instance} did not run within {} s",
                    machines.settings.start_timeout.as_secs()
                ),
            ));
        }
        let seen = tokio::select! {
            r = provider.get_instance(&machine.region, &instance) => r,
            () = cancel.cancelled() => return Err(Stop::Cancelled),
        };
        match seen {
            Ok(i) if i.state == InstanceState::Running => {
                let address = match i.private_ips.first().or(i.public_ips.first()) {
                    Some(ip) => ip.clone(),
                    // No address to reach it on: ask for a public one.
                    None => provider
                        .allocate_public_ip(&machine.region, &instance)
                        .await
                        .map_err(|e| Stop::Failed(MachineState::Error, cloud_failure(&e)))?,
                };
                log(
                    machines,
                    machine.id,
                    format!("cloud: instance {instance} is running at {address}"),
                )
                .await;
                return advance(
                    machines,
                    machine,
                    MachineState::Initializing,
                    &format!("running at {address}"),
                    &MachineUpdate {
                        address: Some(address),
                        ..MachineUpdate::default()
                    },
                )
                .await;
            }
            // Created stopped (CreateInstance-style providers): start it.
            Ok(i) if i.state == InstanceState::Stopped && !asked_to_start => {
                asked_to_start = true;
                log(
                    machines,
                    machine.id,
                    format!("cloud: instance {instance} is stopped; starting it"),
                )
                .await;
                if let Err(e) = provider.start_instance(&machine.region, &instance).await
                    && !e.failure.retryable()
                {
                    return Err(Stop::Failed(MachineState::Error, cloud_failure(&e)));
                }
            }
            Ok(_) => {}
            Err(e) if is_not_found(&e) && started.elapsed() < NOT_FOUND_GRACE => {}
            Err(e) if e.failure.retryable() => {
                log(
                    machines,
                    machine.id,
                    format!(
                        "cloud: get-instance failed, will ask again: {}",
                        cloud_failure(&e)
                    ),
                )
                .await;
            }
            Err(e) => return Err(Stop::Failed(MachineState::Error, cloud_failure(&e))),
        }
        pause(machines.settings.poll, cancel).await?;
    }
}

fn is_not_found(e: &plugins::Error) -> bool {
    matches!(&e.failure, Failure::Plugin(p) if p.kind == ErrorKind::NotFound)
}

async fn init(
    machines: &Machines,
    machine: &MachineRecord,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let (group_id, timeout_secs) = match machine.template_id {
        Some(id) => {
            let template = machines.store.template(id).await?;
            (template.init_group_id, template.init_timeout_secs)
        }
        None => (None, 600),
    };
    let group_id = match group_id {
        Some(id) => Some(id),
        None => default_group(machines).await?,
    };
    let input = ExecutionInput {
        group_id,
        // Without a group, init proves the machine answers over SSH.
        command: group_id.is_none().then(|| InlineCommand {
            mode: dcp_api_types::CommandMode::Shell,
            script: "uname -a".to_owned(),
        }),
        machine_ids: Some(vec![machine.id]),
        forks: Some(1),
        timeout_secs: Some(timeout_secs),
        ..ExecutionInput::default()
    };
    let execution = machines
        .remote
        .start_titled(
            input,
            "dcp (machine init)",
            Some(&format!("init of machine {}", machine.name)),
        )
        .await
        .map_err(|e| {
            Stop::Failed(
                MachineState::InitFailed,
                format!("init could not start: {e}"),
            )
        })?;
    log(
        machines,
        machine.id,
        format!("init: execution {execution} started (timeout {timeout_secs} s)"),
    )
    .await;
    // Its own timeout ends it; deleted or shutting down, it is cancelled
    // (its remote processes killed).
    let Ok(record) = machines.remote.finished(execution, None, cancel).await? else {
        return Err(Stop::Cancelled);
    };
    let host = machines
        .store
        .execution_hosts(execution)
        .await?
        .into_iter()
        .next();
    let Some(host) = host else {
        return Err(Stop::Failed(
            MachineState::InitFailed,
            format!("init execution {execution} ran on no host"),
        ));
    };
    let report = host.report;
    let mut lines = Vec::new();
    for (stream, text) in [("stdout", &report.stdout), ("stderr", &report.stderr)] {
        let all: Vec<&str> = text.lines().collect();
        let skip = all.len().saturating_sub(INIT_LOG_LINES);
        if skip > 0 {
            lines.push(format!("init {stream}: … {skip} earlier lines left out"));
        }
        lines.extend(all[skip..].iter().map(|l| format!("init {stream}: {l}")));
    }
    machines.store.log_machine(machine.id, &lines).await?;
    let ended = format!(
        "exit code {}",
        report
            .exit_code
            .map_or_else(|| "none".to_owned(), |c| c.to_string())
    );
    log(
        machines,
        machine.id,
        format!(
            "init: execution {execution} ended {} ({ended})",
            record.state.as_str()
        ),
    )
    .await;
    match (record.state, report.state) {
        (ExecutionState::Succeeded, _) => {
            advance(
                machines,
                machine,
                MachineState::Ready,
                &format!("init succeeded (execution {execution})"),
                &MachineUpdate::default(),
            )
            .await
        }
        (_, HostState::TimedOut) => Err(Stop::Failed(
            MachineState::InitTimeout,
            format!("init did not finish within {timeout_secs} s (execution {execution})"),
        )),
        _ => {
            let why = report.failure();
            Err(Stop::Failed(
                MachineState::InitFailed,
                format!("init failed with {ended}: {why} (execution {execution})"),
            ))
        }
    }
}

/// The server's default init group, by name.
async fn default_group(machines: &Machines) -> Result<Option<i64>, Stop> {
    let Some(name) = &machines.settings.default_init_group else {
        return Ok(None);
    };
    let (groups, _) = machines
        .store
        .list_groups(
            Some(name),
            store::Window {
                limit: 100,
                offset: 0,
            },
        )
        .await?;
    match groups.into_iter().find(|g| &g.name == name) {
        Some(group) => Ok(Some(group.id)),
        None => Err(Stop::Failed(
            MachineState::InitFailed,
            format!("the default init command group {name:?} (default_init_group) does not exist"),
        )),
    }
}

async fn release(
    machines: &Machines,
    machine: &MachineRecord,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let done = |hours: i64, why: String| async move {
        // Before the state moves, so a release replayed after a crash
        // forgets it too.
        forget_host_key(machines, machine).await?;
        log(
            machines,
            machine.id,
            format!("released: {why}; charged {hours} instance-hour(s)"),
        )
        .await;
        let moved = advance(
            machines,
            machine,
            MachineState::Deleted,
            &why,
            &MachineUpdate {
                charged_hours: Some(hours),
                ..MachineUpdate::default()
            },
        )
        .await;
        machines.record_fleet(&machine.provider).await;
        moved
    };
    let Some(instance) = machine
        .instance_id
        .clone()
        .filter(|_| machine.template_id.is_some())
    else {
        let why = if machine.provider == super::ADOPTED {
            "forgotten (adopted; the server itself is left as it is)"
        } else {
            "no instance was created"
        };
        return done(0, why.to_owned()).await;
    };
    let (provider, _) = provider_of(machines, machine).await?;
    let region = machine.region.clone();
    log(
        machines,
        machine.id,
        format!("cloud: force-stopping instance {instance}"),
    )
    .await;
    let stopped = with_retries(machines, machine, "stop-instance", cancel, || {
        provider.stop_instance(&region, &instance, true)
    })
    .await?;
    let gone = match stopped {
        Ok(()) => false,
        Err(e) if is_not_found(&e) => true,
        // Already stopping or stopped.
        Err(e) if matches!(&e.failure, Failure::Plugin(p) if p.kind == ErrorKind::Conflict) => {
            false
        }
        Err(e) => {
            return Err(Stop::Failed(
                MachineState::Error,
                format!("delete failed: {}", cloud_failure(&e)),
            ));
        }
    };
    if !gone {
        let stopped = |i: &plugins::Instance| i.state == InstanceState::Stopped;
        await_instance(
            machines,
            provider.as_ref(),
            &region,
            &instance,
            cancel,
            stopped,
            "did not stop",
        )
        .await?;
    }
    log(
        machines,
        machine.id,
        format!("cloud: deleting instance {instance}"),
    )
    .await;
    let deleted = with_retries(machines, machine, "delete-instance", cancel, || {
        provider.delete_instance(&region, &instance)
    })
    .await?;
    // The plugin counts an instance already gone as deleted.
    deleted.map_err(|e| {
        Stop::Failed(
            MachineState::Error,
            format!("delete failed: {}", cloud_failure(&e)),
        )
    })?;
    // Released means gone from the cloud, not just asked to go.
    await_instance(
        machines,
        provider.as_ref(),
        &region,
        &instance,
        cancel,
        |_| false,
        "was not deleted",
    )
    .await?;
    let hours = super::billable_hours(machine.created_at, time::OffsetDateTime::now_utc());
    done(hours, format!("instance {instance} deleted")).await
}

/// Forgets the host key trusted for a machine being released: its address
/// may go to another server (a cloud reuses addresses), whose new key would
/// otherwise be refused as a changed one. Kept while a machine not released
/// shares the address.
async fn forget_host_key(machines: &Machines, machine: &MachineRecord) -> Result<(), Stop> {
    let Some(address) = &machine.address else {
        return Ok(());
    };
    let host = ssh::Endpoint {
        address: address.clone(),
        port: machine.port,
        user: machine.user.clone(),
    }
    .host();
    let forgot = machines
        .store
        .forget_released_host_key(&host, address, machine.port, machine.id)
        .await?;
    if forgot {
        log(
            machines,
            machine.id,
            format!("forgot the SSH host key of {host}"),
        )
        .await;
    }
    Ok(())
}

/// Polls an instance until `reached` holds or it is gone, while releasing
/// it; `failed` says what it did not do in time.
async fn await_instance(
    machines: &Machines,
    provider: &dyn CloudProvider,
    region: &str,
    instance: &str,
    cancel: &CancellationToken,
    reached: impl Fn(&plugins::Instance) -> bool,
    failed: &str,
) -> Result<(), Stop> {
    let started = Instant::now();
    loop {
        let seen = tokio::select! {
            r = provider.get_instance(region, instance) => r,
            () = cancel.cancelled() => return Err(Stop::Cancelled),
        };
        match seen {
            Ok(i) if reached(&i) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.failure.retryable() => {}
            Err(e) => {
                return Err(Stop::Failed(
                    MachineState::Error,
                    format!("delete failed: {}", cloud_failure(&e)),
                ));
            }
        }
        if started.elapsed() > machines.settings.start_timeout {
            return Err(Stop::Failed(
                MachineState::Error,
                format!(
                    "delete failed: instance {instance} {failed} within {} s",
                    machines.settings.start_timeout.as_secs()
                ),
            ));
        }
        pause(machines.settings.poll, cancel).await?;
    }
}
