//! Service discovery (OpenDCP's hubble): balancer groups → units → nodes,
//! upstreams whose desired membership DCP owns, bindings that tie pools to
//! them, and the operation log of every change.
//!
//! DCP's store is the source of truth. A change is a compare-and-set on the
//! upstream's revision (no lost update), recorded once under its
//! idempotency key, then *converged*: the upstream is pushed to every
//! balancer node of its group by the unit's load-balancer plugin, and what
//! each node confirmed is recorded, so drift shows and a node that was down
//! catches up on a re-sync (or the next push). Pushes of one upstream take
//! turns; changes made while one is under way go out together in the next,
//! so a storm of registrations costs a few reloads, not one each. Nothing
//! about nginx lives here: the plugin renders, checks, swaps and reloads.

mod app_keys;
mod releases;

pub use self::{
    app_keys::{PRIVILEGES, Refusal, hash_key},
    releases::{FILE_MAX, FILES_MAX, PATH_MAX},
};

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dcp_api_types::{
    BackendSpec, BindingInput, LbGroupInput, LbNodeInput, LbUnitInput, member_delta,
};
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    lock, machines,
    plugins::{
        Applied, Backend, Grants, LoadBalancer as _, Registry, Secret, SshChannel, Upstream,
        WasmPlugin, World,
    },
    remote::Remote,
    store::{
        self, AppliedChange, BindingChange, BindingRecord, ChangeRecord, LbGroupRecord,
        LbNodeRecord, LbUnitRecord, NewChange, NodeHost, PushTarget, Store, UnitChange,
        UpstreamRecord,
    },
    validate::{self, Checks, Invalid},
    vault::Vault,
};

/// Longest group, unit, upstream or binding name.
pub const NAME_MAX: usize = 64;
/// Longest description.
pub const DESCRIPTION_MAX: usize = 1024;
/// Most backends of one upstream.
pub const BACKENDS_MAX: usize = 5000;
/// Most backends one change names.
pub const CHANGE_MAX: usize = 1000;
/// Largest plugin settings document, in bytes.
pub const SETTINGS_MAX: usize = 16 << 10;
/// The highest weight.
pub const WEIGHT_MAX: u32 = 100;
/// The weight of a binding that names none (OpenDCP's default).
pub const DEFAULT_WEIGHT: u32 = 10;
/// How long one push to one node may take (the plugin's own reload wait
/// is shorter).
const PUSH_TIME: Duration = Duration::from_secs(60);
/// Most nodes pushed to at once, all upstreams together.
const PUSHES_MAX: usize = 32;
/// The most alterations recorded and not yet applied, all keys together:
/// each waits for its upstream's turn, so a flood must not queue forever.
const ALTERATIONS_PENDING_MAX: usize = 10_000;
/// Once this many changes that moved members are logged after an
/// upstream's newest snapshot, its members are kept whole again, so
/// replaying one change's before and after applies at most this many
/// changes and those committed with it (a request must stay cheap: other
/// systems poll their alterations by id).
const SNAPSHOT_EVERY: i64 = 64;
/// How many times a change retries a compare-and-set lost to another.
const CAS_TRIES: usize = 100;

/// Why a discovery operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field breaks a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Too much work is waiting; try again shortly (503).
    #[error("{0}")]
    Busy(String),
    /// The request conflicts with the current state (409).
    #[error("{field}: {message}")]
    Conflict {
        /// The field it is about.
        field: String,
        /// Why.
        message: String,
    },
}

/// Which way a membership change goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Add backends (one already there takes the new weight).
    Register,
    /// Remove backends (one absent is not an error).
    Unregister,
    /// Replace every backend.
    Set,
}

impl Op {
    const ALL: [Self; 3] = [Self::Register, Self::Unregister, Self::Set];

    fn action(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Unregister => "unregister",
            Self::Set => "set-backends",
        }
    }
}

/// A membership change to make.
#[derive(Debug, Clone)]
pub struct MemberChange {
    /// Who asks: `user:<name>`, `task:<id>`, `app-key:<name>`.
    pub actor: String,
    /// The upstream.
    pub upstream_id: i64,
    /// Which way.
    pub op: Op,
    /// The backends.
    pub backends: Vec<BackendSpec>,
    /// Allow leaving the upstream without backends.
    pub force: bool,
    /// The caller's correlation id.
    pub correlation_id: String,
    /// Makes a retry apply once.
    pub idempotency_key: Option<String>,
}

/// What one node did with a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeResult {
    /// The node.
    pub node_id: i64,
    /// Its address, or a cloud load balancer's label (see [`node_label`]).
    pub address: String,
    /// Whether it now serves the pushed revision.
    pub ok: bool,
    /// What the plugin said: its log, or the error.
    pub message: String,
}

/// What a push did, node by node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// The revision pushed.
    pub revision: i64,
    /// One result per node of the group.
    pub nodes: Vec<NodeResult>,
}

impl Pushed {
    /// `succeeded` (every node, or there are none), `partial` or `failed`.
    #[must_use]
    pub fn state(&self) -> &'static str {
        let ok = self.nodes.iter().filter(|n| n.ok).count();
        if ok == self.nodes.len() {
            "succeeded"
        } else if ok > 0 {
            "partial"
        } else {
            "failed"
        }
    }

    /// Node by node, for the log and a task step's output.
    #[must_use]
    pub fn summary(&self) -> String {
        if self.nodes.is_empty() {
            return format!(
                "revision {}: the group has no balancer node yet",
                self.revision
            );
        }
        let mut lines = vec![format!(
            "revision {}: {} of {} nodes serve it",
            self.revision,
            self.nodes.iter().filter(|n| n.ok).count(),
            self.nodes.len()
        )];
        for n in &self.nodes {
            let first = n.message.lines().last().unwrap_or_default();
            lines.push(format!(
                "{} {}: {}",
                if n.ok { "ok" } else { "FAILED" },
                n.address,
                if n.ok { first } else { n.message.as_str() }
            ));
        }
        lines.join("\n")
    }
}

/// The last push of one upstream by this process.
#[derive(Debug, Default)]
struct Turn {
    pushed: Option<Pushed>,
}

/// A change waiting for its upstream's writer, and where its outcome goes.
#[derive(Debug)]
struct Waiting {
    record_id: i64,
    change: MemberChange,
    outcome: oneshot::Sender<Result<i64, Error>>,
}

/// The changes waiting to edit one upstream, and its writer.
#[derive(Debug, Default)]
struct Edits {
    waiting: Mutex<Vec<Waiting>>,
    writer: tokio::sync::Mutex<()>,
}

/// The service. One per DCP process.
#[derive(Debug)]
pub struct Discovery {
    store: Store,
    plugins: Arc<Registry>,
    remote: Arc<Remote>,
    /// Opens the secret of a cloud load balancer's account.
    vault: Arc<Vault>,
    /// One turn per upstream: pushes of it take turns.
    turns: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<Turn>>>>,
    /// One writer per upstream in this process, committing every change
    /// that waits for it at once (group commit): a storm of changes to one
    /// upstream would otherwise starve in compare-and-set retries (each
    /// winner makes every other writer read again), or queue for one read,
    /// rewrite and write each. Replicas still race, and the compare-and-set
    /// keeps them honest.
    edits: Mutex<HashMap<i64, Arc<Edits>>>,
    /// Bounds the alterations applied in the background.
    alterations: Arc<Semaphore>,
    pushes: Semaphore,
}

/// A settings document: a JSON object of at most [`SETTINGS_MAX`] bytes.
fn settings(field: &'static str, value: &Value) -> Result<String, Invalid> {
    if !value.is_object() {
        return Err(Invalid::new(field, "must be a JSON object"));
    }
    let text = value.to_string();
    if text.len() > SETTINGS_MAX {
        return Err(Invalid::new(
            field,
            format!("must be at most {SETTINGS_MAX} bytes as JSON"),
        ));
    }
    Ok(text)
}

/// What a plugin call may reach besides its origins.
enum Access {
    /// Nothing: a check of settings.
    None,
    /// One machine over SSH, known to the plugin by this target id.
    Ssh(String, Arc<dyn SshChannel>),
    /// A cloud account's API, through the secrets it is granted (the
    /// account's key as the secret `account`); no target.
    Account(BTreeMap<String, Secret>),
}

impl Access {
    /// A cloud load balancer's: its account's key, opened from `vault`.
    fn account(vault: &Vault, account: &store::AccountRecord) -> Result<Self, String> {
        machines::account_secrets(vault, account)
            .map(Self::Account)
            .map_err(|e| format!("account {}: {e}", account.name))
    }

    /// `grants` with this access: target ids, SSH channel and secrets.
    fn grant(self, grants: Grants) -> Grants {
        match self {
            Self::None => grants,
            Self::Ssh(id, channel) => Grants {
                targets: vec![id],
                ssh: Some(channel),
                ..grants
            },
            Self::Account(secrets) => Grants { secrets, ..grants },
        }
    }
}

/// How a node is named for people: its machine's address, or its account
/// and the load balancer its settings (`merged`, the unit's with its own
/// over them) name — as the UI shows it.
#[must_use]
pub fn node_label(address: Option<&str>, account: Option<&str>, merged: &str) -> String {
    match (address, account) {
        (Some(address), _) => address.to_owned(),
        (None, Some(account)) => {
            let settings: Map<String, Value> = serde_json::from_str(merged).unwrap_or_default();
            match settings.get("load_balancer_id").and_then(Value::as_str) {
                Some(id) => format!("{account} · {id}"),
                None => account.to_owned(),
            }
        }
        (None, None) => "?".to_owned(),
    }
}

/// The unit's settings with the node's own over them.
pub fn merged(unit: &str, node: &str) -> String {
    let mut base: Map<String, Value> = serde_json::from_str(unit).unwrap_or_default();
    let own: Map<String, Value> = serde_json::from_str(node).unwrap_or_default();
    base.extend(own);
    Value::Object(base).to_string()
}

/// Upstream names end up in file names and balancer configs.
fn upstream_name(value: &str) -> Result<(), Invalid> {
    validate::name("name", value, NAME_MAX)?;
    if let Some(bad) = value
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !matches!(c, '_' | '-'))
    {
        return Err(Invalid::new(
            "name",
            format!("may contain only letters, digits, '-' and '_' (found {bad:?})"),
        ));
    }
    Ok(())
}

/// Checks backends named in a request under `field`.
pub fn check_backends(field: &str, backends: &[BackendSpec], max: usize) -> Result<(), Invalid> {
    if backends.len() > max {
        return Err(Invalid::new(
            field.to_owned(),
            format!("names at most {max} backends"),
        ));
    }
    let mut checks = Checks::default();
    for (i, b) in backends.iter().enumerate() {
        checks.check(validate::address(
            format!("{field}[{i}].address"),
            &b.address,
        ));
        if b.port == 0 {
            checks.check(Err(Invalid::new(
                format!("{field}[{i}].port"),
                "must be between 1 and 65535",
            )));
        }
        if b.weight.is_some_and(|w| w > WEIGHT_MAX) {
            checks.check(Err(Invalid::new(
                format!("{field}[{i}].weight"),
                format!("must be between 0 and {WEIGHT_MAX}"),
            )));
        }
    }
    checks.finish()
}

/// The stored members of an upstream.
pub fn members(upstream: &UpstreamRecord) -> Vec<BackendSpec> {
    parse_members(&upstream.backends)
}

/// A member count as the store keeps it.
fn count(members: &[BackendSpec]) -> i64 {
    i64::try_from(members.len()).unwrap_or(i64::MAX)
}

/// Members as the store keeps them (JSON); nothing if unreadable.
fn parse_members(text: &str) -> Vec<BackendSpec> {
    serde_json::from_str(text).unwrap_or_default()
}

/// What a logged change did to its upstream's members: the members it
/// added and removed (re-weighted ones in both), and how many there were
/// before and after. `None` until it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moves {
    /// Added, and re-weighted in their new form.
    pub added: Vec<BackendSpec>,
    /// Removed, and re-weighted in their old form.
    pub removed: Vec<BackendSpec>,
    /// How many members there were before.
    pub before: usize,
    /// How many after.
    pub after: usize,
}

/// The whole members before and after, as changes logged before migration
/// 0016 keep them.
fn stored_whole(change: &ChangeRecord) -> Option<(Vec<BackendSpec>, Vec<BackendSpec>)> {
    Some((
        parse_members(change.before.as_deref()?),
        parse_members(change.after.as_deref()?),
    ))
}

/// What `change` moved, from its log entry.
#[must_use]
pub fn moves(change: &ChangeRecord) -> Option<Moves> {
    if let Some((before, after)) = stored_whole(change) {
        let (added, removed) = member_delta(&before, &after);
        return Some(Moves {
            added,
            removed,
            before: before.len(),
            after: after.len(),
        });
    }
    let size = |n: Option<i64>| n.and_then(|n| usize::try_from(n).ok());
    Some(Moves {
        added: parse_members(change.added.as_deref()?),
        removed: parse_members(change.removed.as_deref()?),
        before: size(change.members_before)?,
        after: size(change.members_after)?,
    })
}

/// The members a logged change left, given those it found: `apply` is a
/// pure function of them and the change's arguments, so this is what it
/// did then. `None` if the entry does not say what it asked for.
fn replay(logged: &ChangeRecord, current: &[BackendSpec]) -> Option<Vec<BackendSpec>> {
    let op = Op::ALL
        .into_iter()
        .find(|op| op.action() == logged.action)?;
    let mut args: Value = serde_json::from_str(&logged.args).ok()?;
    let given: Vec<BackendSpec> = serde_json::from_value(args.get_mut("backends")?.take()).ok()?;
    Some(apply(op, current, &given))
}

/// The members after `op`.
fn apply(op: Op, current: &[BackendSpec], given: &[BackendSpec]) -> Vec<BackendSpec> {
    let weighted = |b: &BackendSpec| BackendSpec {
        weight: Some(b.weight.unwrap_or(DEFAULT_WEIGHT)),
        ..b.clone()
    };
    match op {
        Op::Register => {
            let mut out: Vec<BackendSpec> = current.to_vec();
            for b in given {
                match out.iter_mut().find(|c| c.same_backend(b)) {
                    Some(c) => c.weight = Some(b.weight.unwrap_or(DEFAULT_WEIGHT)),
                    None => out.push(weighted(b)),
                }
            }
            out
        }
        Op::Unregister => current
            .iter()
            .filter(|c| !given.iter().any(|b| c.same_backend(b)))
            .cloned()
            .collect(),
        Op::Set => {
            let mut out: Vec<BackendSpec> = Vec::new();
            for b in given {
                if !out.iter().any(|c| c.same_backend(b)) {
                    out.push(weighted(b));
                }
            }
            out
        }
    }
}

/// The members after `change`, or why it may not be made.
fn next_members(
    upstream: &str,
    current: &[BackendSpec],
    change: &MemberChange,
) -> Result<Vec<BackendSpec>, Error> {
    let after = apply(change.op, current, &change.backends);
    if after.len() > BACKENDS_MAX {
        return Err(Error::Conflict {
            field: "backends".into(),
            message: format!("an upstream has at most {BACKENDS_MAX} backends"),
        });
    }
    if after.is_empty() && !current.is_empty() && !change.force {
        return Err(Error::Conflict {
            field: "backends".into(),
            message: format!(
                "this would leave upstream {upstream} without backends, so every request through it would fail; \
                 remove its last backend with force"
            ),
        });
    }
    Ok(after)
}

impl Discovery {
    /// The service over `store`, pushing with the load-balancer plugins of
    /// `plugins` over `remote`'s SSH channel, or to a cloud load balancer
    /// with its account's key opened by `vault`.
    #[must_use]
    pub fn new(
        store: Store,
        plugins: Arc<Registry>,
        remote: Arc<Remote>,
        vault: Arc<Vault>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            plugins,
            remote,
            vault,
            turns: Mutex::new(HashMap::new()),
            edits: Mutex::new(HashMap::new()),
            alterations: Arc::new(Semaphore::new(ALTERATIONS_PENDING_MAX)),
            pushes: Semaphore::new(PUSHES_MAX),
        })
    }

    // ---- groups ----

    /// Checks a group's fields.
    fn group_fields(input: &LbGroupInput) -> Result<(), Invalid> {
        let mut checks = Checks::default();
        checks.check(validate::identifier("name", &input.name, NAME_MAX));
        checks.check(validate::max_chars(
            "description",
            &input.description,
            DESCRIPTION_MAX,
        ));
        checks.finish()
    }

    /// Creates a group.
    pub async fn create_group(&self, input: LbGroupInput) -> Result<LbGroupRecord, Error> {
        Self::group_fields(&input)?;
        Ok(self
            .store
            .create_lb_group(&input.name, &input.description)
            .await?)
    }

    /// Replaces a group's fields.
    pub async fn update_group(&self, id: i64, input: LbGroupInput) -> Result<LbGroupRecord, Error> {
        Self::group_fields(&input)?;
        Ok(self
            .store
            .update_lb_group(id, &input.name, &input.description)
            .await?)
    }

    // ---- units ----

    async fn unit_change(&self, input: &LbUnitInput) -> Result<UnitChange, Error> {
        let mut checks = Checks::default();
        checks.check(validate::identifier("name", &input.name, NAME_MAX));
        checks.check(validate::max_chars(
            "description",
            &input.description,
            DESCRIPTION_MAX,
        ));
        let config = settings("config", &input.config);
        checks.check(config.as_ref().map(|_| ()).map_err(Clone::clone));
        checks.finish()?;
        let config = config?;
        let plugin = self
            .balancer(&input.plugin, &config, Access::None)
            .map_err(|why| Invalid::new("plugin", why))?;
        plugin
            .validate_config(&config)
            .await
            .map_err(|e| Invalid::new("config", e.to_string()))?;
        if let Some(group) = input.publish_group_id {
            self.exists("publish_group_id", group, self.store.group(group))
                .await?;
        }
        Ok(UnitChange {
            name: input.name.clone(),
            description: input.description.clone(),
            plugin: input.plugin.clone(),
            config,
            publish_group_id: input.publish_group_id,
        })
    }

    /// Creates a unit; its plugin must be an active load-balancer plugin
    /// that accepts the settings.
    pub async fn create_unit(&self, input: LbUnitInput) -> Result<LbUnitRecord, Error> {
        let change = self.unit_change(&input).await?;
        self.exists(
            "group_id",
            input.group_id,
            self.store.lb_group(input.group_id),
        )
        .await?;
        Ok(self.store.create_lb_unit(input.group_id, &change).await?)
    }

    /// Replaces a unit's fields (its group stays).
    pub async fn update_unit(&self, id: i64, input: LbUnitInput) -> Result<LbUnitRecord, Error> {
        let unit = self.store.lb_unit(id).await?;
        if unit.group_id != input.group_id {
            return Err(Invalid::new("group_id", "a unit cannot move to another group").into());
        }
        let change = self.unit_change(&input).await?;
        Ok(self.store.update_lb_unit(id, &change).await?)
    }

    // ---- nodes ----

    /// Adds a node to a unit — a machine (by id, or by the address of a
    /// machine DCP has), or a cloud account's load balancer — then brings
    /// it to the group's desired state.
    pub async fn add_node(
        &self,
        unit_id: i64,
        input: LbNodeInput,
        actor: &str,
    ) -> Result<(LbNodeRecord, Pushed), Error> {
        let unit = self.store.lb_unit(unit_id).await?;
        let own = settings("settings", &input.settings)?;
        if input.port.is_some() && input.address.is_none() {
            // A port silently ignored would hide a mistake.
            return Err(Invalid::new(
                "port",
                "goes only with address: a node named by machine_id or account_id takes no SSH port",
            )
            .into());
        }
        let host = match (input.machine_id, &input.address, input.account_id) {
            (Some(id), None, None) => {
                self.exists("machine_id", id, self.store.machine(id))
                    .await?;
                NodeHost::Machine(id)
            }
            (None, None, Some(id)) => {
                self.exists("account_id", id, self.store.account(id))
                    .await?;
                self.takes_account(&unit.plugin)
                    .map_err(|why| Invalid::new("account_id", why))?;
                NodeHost::Account(id)
            }
            (None, Some(address), None) => {
                validate::address("address", address)?;
                let port = input.port.unwrap_or(22);
                self.store
                    .live_machine_at(address, port)
                    .await?
                    .ok_or_else(|| {
                        Invalid::new(
                            "address",
                            format!(
                                "no machine has address {address} port {port}: adopt the server first (Machines → Adopt)"
                            ),
                        )
                    })
                    .map(NodeHost::Machine)?
            }
            (machine_id, address, account_id) => {
                // Name the field that is one too many, or the first one
                // missing when none is given.
                let field = match (machine_id, address, account_id) {
                    (_, _, Some(_)) => "account_id",
                    (Some(_), Some(_), None) => "address",
                    _ => "machine_id",
                };
                return Err(Invalid::new(
                    field,
                    "name exactly one of machine_id, address (a machine) or account_id \
                     (a cloud load balancer)",
                )
                .into());
            }
        };
        self.balancer(&unit.plugin, &merged(&unit.config, &own), Access::None)
            .map_err(|why| Invalid::new("settings", why))?
            .validate_config(&merged(&unit.config, &own))
            .await
            .map_err(|e| Invalid::new("settings", e.to_string()))?;
        let node = self.store.add_lb_node(unit_id, host, &own).await?;
        let pushed = self.resync_node(node.id, actor).await?;
        Ok((node, pushed))
    }

    /// Replaces a node's own settings.
    pub async fn update_node(&self, id: i64, value: &Value) -> Result<LbNodeRecord, Error> {
        let node = self.store.lb_node(id).await?;
        let unit = self.store.lb_unit(node.unit_id).await?;
        let own = settings("settings", value)?;
        self.balancer(&unit.plugin, &merged(&unit.config, &own), Access::None)
            .map_err(|why| Invalid::new("settings", why))?
            .validate_config(&merged(&unit.config, &own))
            .await
            .map_err(|e| Invalid::new("settings", e.to_string()))?;
        Ok(self.store.update_lb_node(id, &own).await?)
    }

    // ---- upstreams ----

    /// Creates an upstream with no members.
    pub async fn create_upstream(
        &self,
        group_id: i64,
        name: &str,
    ) -> Result<UpstreamRecord, Error> {
        upstream_name(name)?;
        self.exists("group_id", group_id, self.store.lb_group(group_id))
            .await?;
        Ok(self.store.create_upstream(group_id, name).await?)
    }

    // ---- bindings ----

    /// Checks a binding's fields; its upstream must exist.
    pub async fn binding_change(&self, input: BindingInput) -> Result<BindingChange, Error> {
        let mut checks = Checks::default();
        checks.check(validate::identifier("name", &input.name, NAME_MAX));
        checks.check(validate::max_chars(
            "description",
            &input.description,
            DESCRIPTION_MAX,
        ));
        if input.port == Some(0) {
            checks.check(Err(Invalid::new("port", "must be between 1 and 65535")));
        }
        if input.weight.is_some_and(|w| w > WEIGHT_MAX) {
            checks.check(Err(Invalid::new(
                "weight",
                format!("must be between 0 and {WEIGHT_MAX}"),
            )));
        }
        checks.finish()?;
        self.exists(
            "upstream_id",
            input.upstream_id,
            self.store.upstream(input.upstream_id),
        )
        .await?;
        Ok(BindingChange {
            name: input.name,
            description: input.description,
            upstream_id: input.upstream_id,
            port: input.port,
            weight: input.weight.unwrap_or(DEFAULT_WEIGHT),
        })
    }

    /// The backend a pool node joins its binding's upstream as.
    pub fn backend_of(
        binding: &BindingRecord,
        address: &str,
        service_port: Option<u16>,
    ) -> Result<BackendSpec, String> {
        let port = binding
            .port
            .and_then(|p| u16::try_from(p).ok())
            .or(service_port)
            .ok_or_else(|| {
                format!(
                    "binding {} names no port and the service publishes no TCP port",
                    binding.name
                )
            })?;
        Ok(BackendSpec {
            address: address.to_owned(),
            port,
            weight: u32::try_from(binding.weight).ok(),
        })
    }

    // ---- membership ----

    /// Makes a membership change: recorded once (under its idempotency
    /// key), applied by compare-and-set, then pushed to the group's nodes.
    /// A change replayed under its key pushes again if it has to but
    /// edits the membership only once.
    pub async fn change(&self, change: MemberChange) -> Result<ChangeRecord, Error> {
        let (record, fresh) = self.open(&change).await?;
        self.complete(record, fresh, &change).await
    }

    /// Checks a change and records it as pending; answers the record and
    /// whether it is new (not a replay under its idempotency key).
    pub async fn open(&self, change: &MemberChange) -> Result<(ChangeRecord, bool), Error> {
        check_backends("backends", &change.backends, CHANGE_MAX)?;
        let upstream = self
            .exists(
                "upstream_id",
                change.upstream_id,
                self.store.upstream(change.upstream_id),
            )
            .await?;
        Ok(self
            .store
            .begin_change(&NewChange {
                actor: change.actor.clone(),
                action: change.op.action().to_owned(),
                upstream_id: Some(upstream.id),
                target: format!("upstream {}", upstream.name),
                args: serde_json::json!({"backends": change.backends, "force": change.force})
                    .to_string(),
                correlation_id: change.correlation_id.clone(),
                idempotency_key: change.idempotency_key.clone(),
            })
            .await?)
    }

    /// Applies and pushes a change [`Discovery::open`] recorded.
    pub async fn complete(
        &self,
        record: ChangeRecord,
        fresh: bool,
        change: &MemberChange,
    ) -> Result<ChangeRecord, Error> {
        let revision = match record.revision {
            Some(revision) if !fresh => revision,
            _ => match self.edit(&record, change).await {
                Ok(revision) => revision,
                Err(e) => {
                    self.store
                        .finish_change(record.id, "failed", &e.to_string())
                        .await?;
                    return Err(e);
                }
            },
        };
        let pushed = self.converge(change.upstream_id, revision).await?;
        Ok(self
            .store
            .finish_change(record.id, pushed.state(), &pushed.summary())
            .await?)
    }

    /// Edits the membership; answers the revision that holds the change.
    /// The change waits for the upstream's writer; whoever holds it takes
    /// every change waiting and commits them together, in arrival order,
    /// in one compare-and-set, so a thousand registers cost a few edits.
    async fn edit(&self, record: &ChangeRecord, change: &MemberChange) -> Result<i64, Error> {
        let edits = lock(&self.edits)
            .entry(change.upstream_id)
            .or_default()
            .clone();
        let (outcome, mut answer) = oneshot::channel();
        lock(&edits.waiting).push(Waiting {
            record_id: record.id,
            change: change.clone(),
            outcome,
        });
        {
            let _writing = edits.writer.lock().await;
            // An earlier writer may have taken this change with its batch.
            if let Ok(outcome) = answer.try_recv() {
                return outcome;
            }
            let batch = std::mem::take(&mut *lock(&edits.waiting));
            if !batch.is_empty() {
                self.commit(change.upstream_id, batch).await;
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(Error::Busy(
                "the upstream's writer stopped before this change; try again".into(),
            ))
        })
    }

    /// A change of the operation log with the upstream's whole membership
    /// before and after it (`None` before it is applied, or once its
    /// upstream is deleted). Changes logged since migration 0016 keep only
    /// what they moved; their before and after are replayed from the
    /// upstream's newest snapshot below them, and checked against what
    /// they moved.
    pub async fn logged_change(
        &self,
        id: i64,
    ) -> Result<(ChangeRecord, Option<(Vec<BackendSpec>, Vec<BackendSpec>)>), Error> {
        let change = self.store.change(id).await?;
        if let Some(whole) = stored_whole(&change) {
            return Ok((change, Some(whole)));
        }
        let (Some(upstream_id), Some(revision)) = (change.upstream_id, change.revision) else {
            return Ok((change, None));
        };
        // A change that moved nothing left the members of its revision;
        // one that moved some is replayed from the revision before.
        let base_at_most = if change.seq.is_some() {
            revision - 1
        } else {
            revision
        };
        let (_, base, log) = self
            .store
            .membership_log(upstream_id, base_at_most, revision)
            .await?;
        let mut current = parse_members(&base);
        let unreplayable = |change: ChangeRecord| {
            tracing::warn!(
                change = id,
                "the log cannot replay this change to what it says it moved"
            );
            Ok((change, None))
        };
        for logged in &log {
            let Some(after) = replay(logged, &current) else {
                return unreplayable(change);
            };
            if logged.id == change.id {
                let whole = (current, after);
                let (added, removed) = member_delta(&whole.0, &whole.1);
                if moves(&change).is_some_and(|m| m.added == added && m.removed == removed) {
                    return Ok((change, Some(whole)));
                }
                return unreplayable(change);
            }
            current = after;
        }
        let whole = change.seq.is_none().then(|| (current.clone(), current));
        Ok((change, whole))
    }

    /// Applies `batch` to the upstream by compare-and-set, in order, and
    /// tells each change its outcome: a change that breaks a rule fails
    /// alone, the others commit in one revision.
    async fn commit(&self, upstream_id: i64, batch: Vec<Waiting>) {
        let outcome = async {
            for _ in 0..CAS_TRIES {
                let upstream = self.store.upstream(upstream_id).await?;
                let start = members(&upstream);
                let mut current = start;
                let mut applied = Vec::new();
                let mut refused = Vec::new();
                let mut moved = false;
                for (i, w) in batch.iter().enumerate() {
                    match next_members(&upstream.name, &current, &w.change) {
                        Ok(after) => {
                            let (added, removed) = member_delta(&current, &after);
                            // A replacement may only reorder the members.
                            moved |= after != current;
                            applied.push(AppliedChange {
                                id: w.record_id,
                                seq: i64::try_from(applied.len()).ok(),
                                added: serde_json::to_string(&added).unwrap_or_default(),
                                removed: serde_json::to_string(&removed).unwrap_or_default(),
                                members_before: count(&current),
                                members_after: count(&after),
                            });
                            current = after;
                        }
                        Err(e) => refused.push((i, e)),
                    }
                }
                // A commit that moved a member makes a revision, even if a
                // later change of it moved that member back: the log
                // replays each change's step from the revision before.
                if !moved {
                    for a in &mut applied {
                        a.seq = None;
                    }
                }
                let backends = moved.then(|| serde_json::to_string(&current).unwrap_or_default());
                if let Some(revision) = self
                    .store
                    .commit_edit(
                        upstream.id,
                        upstream.revision,
                        backends.as_deref(),
                        SNAPSHOT_EVERY,
                        &applied,
                    )
                    .await?
                {
                    return Ok((revision, refused));
                }
            }
            Err(Error::Conflict {
                field: "upstream_id".into(),
                message: "the upstream changed too often to apply this; try again".into(),
            })
        }
        .await;
        match outcome {
            Ok((revision, mut refused)) => {
                for (i, w) in batch.into_iter().enumerate() {
                    let result = match refused.iter().position(|(at, _)| *at == i) {
                        Some(p) => Err(refused.swap_remove(p).1),
                        None => Ok(revision),
                    };
                    let _ = w.outcome.send(result);
                }
            }
            Err(e) => {
                let message = e.to_string();
                for w in batch {
                    let _ = w.outcome.send(Err(match &e {
                        Error::Conflict { field, message } => Error::Conflict {
                            field: field.clone(),
                            message: message.clone(),
                        },
                        _ => Error::Busy(format!("the upstream could not be edited: {message}")),
                    }));
                }
            }
        }
    }

    /// Pushes the upstream to every node of its group unless a push of
    /// `revision` or later already went out. Pushes of one upstream take
    /// turns; a push sends the newest membership, so the changes made
    /// while another push ran go out together.
    pub async fn converge(&self, upstream_id: i64, revision: i64) -> Result<Pushed, Error> {
        let turn = lock(&self.turns).entry(upstream_id).or_default().clone();
        let mut turn = turn.lock().await;
        if let Some(pushed) = turn.pushed.as_ref().filter(|p| p.revision >= revision) {
            return Ok(pushed.clone());
        }
        let upstream = self.store.upstream(upstream_id).await?;
        let targets = self.store.push_targets(upstream.group_id).await?;
        let nodes = self.push(&targets, std::slice::from_ref(&upstream)).await?;
        let pushed = Pushed {
            revision: upstream.revision,
            nodes,
        };
        turn.pushed = Some(pushed.clone());
        Ok(pushed)
    }

    /// Pushes every upstream of the node's group to it, in one reload.
    pub async fn resync_node(&self, node_id: i64, actor: &str) -> Result<Pushed, Error> {
        let node = self.store.lb_node(node_id).await?;
        let unit = self.store.lb_unit(node.unit_id).await?;
        let label = node_label(
            node.address.as_deref(),
            node.account_name.as_deref(),
            &merged(&unit.config, &node.settings),
        );
        self.resync(
            unit.group_id,
            Some(node_id),
            actor,
            &format!("node {label}"),
        )
        .await
    }

    /// Pushes every upstream of the unit's group to each of its nodes.
    pub async fn resync_unit(&self, unit_id: i64, actor: &str) -> Result<Pushed, Error> {
        let unit = self.store.lb_unit(unit_id).await?;
        self.resync(unit.group_id, None, actor, &format!("unit {}", unit.name))
            .await
    }

    async fn resync(
        &self,
        group_id: i64,
        node_id: Option<i64>,
        actor: &str,
        target: &str,
    ) -> Result<Pushed, Error> {
        let targets: Vec<PushTarget> = self
            .store
            .push_targets(group_id)
            .await?
            .into_iter()
            .filter(|t| node_id.is_none_or(|id| t.node_id == id))
            .collect();
        let (record, _) = self
            .store
            .begin_change(&NewChange {
                actor: actor.to_owned(),
                action: "resync".into(),
                target: target.to_owned(),
                args: "{}".into(),
                ..NewChange::default()
            })
            .await?;
        let upstreams = self.store.upstreams(Some(group_id)).await?;
        let nodes = self.push(&targets, &upstreams).await?;
        let pushed = Pushed {
            revision: upstreams.iter().map(|u| u.revision).max().unwrap_or(0),
            nodes,
        };
        self.store
            .finish_change(record.id, pushed.state(), &pushed.summary())
            .await?;
        Ok(pushed)
    }

    /// Applies `upstreams` on each of `targets`, at most [`PUSHES_MAX`]
    /// nodes at once, and records what each node serves.
    async fn push(
        &self,
        targets: &[PushTarget],
        upstreams: &[UpstreamRecord],
    ) -> Result<Vec<NodeResult>, Error> {
        let wanted: Vec<Upstream> = upstreams
            .iter()
            .map(|u| Upstream {
                name: u.name.clone(),
                backends: members(u)
                    .into_iter()
                    .map(|b| Backend {
                        address: b.address,
                        port: b.port,
                        weight: b.weight.unwrap_or(DEFAULT_WEIGHT),
                    })
                    .collect(),
                revision: u64::try_from(u.revision).unwrap_or_default(),
            })
            .collect();
        let calls = targets.iter().map(|t| {
            let wanted = &wanted;
            async move {
                let _turn = self.pushes.acquire().await;
                let message = self
                    .on_node(t, async |plugin, id| {
                        plugin.apply_upstreams(wanted, id.as_deref()).await
                    })
                    .await;
                NodeResult {
                    node_id: t.node_id,
                    address: node_label(
                        t.address.as_deref(),
                        t.account_name.as_deref(),
                        &merged(&t.config, &t.settings),
                    ),
                    ok: message.is_ok(),
                    message: message.unwrap_or_else(|e| e),
                }
            }
        });
        let nodes = futures_util::future::join_all(calls).await;
        // What each node now serves, or why not: drift shows from here.
        for n in &nodes {
            for u in upstreams {
                let error = if n.ok { "" } else { n.message.as_str() };
                self.store
                    .record_upstream_state(u.id, n.node_id, u.revision, error)
                    .await?;
            }
        }
        Ok(nodes)
    }

    /// Runs `call` with the node's unit plugin and says what it did. A
    /// machine's plugin is granted SSH to it (known to the plugin as the
    /// target id `call` gets); a cloud load balancer's is granted its
    /// account's key instead, and `call` gets no target.
    async fn on_node(
        &self,
        target: &PushTarget,
        call: impl AsyncFnOnce(WasmPlugin, Option<String>) -> Result<Applied, crate::plugins::Error>,
    ) -> Result<String, String> {
        let (id, access) = match (target.machine_id, target.account_id) {
            (Some(machine), _) => {
                let deadline = Instant::now() + PUSH_TIME;
                let (id, channel) = self
                    .remote
                    .plugin_channel(machine, deadline, CancellationToken::new())
                    .await
                    .map_err(|e| e.to_string())?;
                (Some(id.clone()), Access::Ssh(id, channel))
            }
            (None, Some(account)) => {
                let account = self
                    .store
                    .account(account)
                    .await
                    .map_err(|e| format!("its account: {e}"))?;
                (None, Access::account(&self.vault, &account)?)
            }
            // The store's check keeps this from happening.
            (None, None) => return Err("the node names neither a machine nor an account".into()),
        };
        let config = merged(&target.config, &target.settings);
        let plugin = self.balancer(&target.plugin, &config, access)?;
        let applied = call(plugin, id).await.map_err(|e| e.to_string())?;
        Ok(if applied.changed {
            applied.log
        } else {
            format!("{}\nalready served", applied.log)
        })
    }

    /// Refuses when the active plugin `name` was not granted the secret an
    /// account's key is handed over as: an operator approved what it may
    /// open, and a plugin that never asked for a key (nginx) gets none.
    fn takes_account(&self, name: &str) -> Result<(), String> {
        match self.plugins.active(name) {
            Some(active) if !active.granted.secrets.contains(machines::ACCOUNT_GRANT) => {
                Err(format!(
                    "the unit's plugin {name:?} is not granted the secret {:?}, so it cannot \
                     drive a cloud load balancer; use a unit whose plugin is (e.g. slb)",
                    machines::ACCOUNT_GRANT
                ))
            }
            // No such plugin: `balancer` says which are active.
            _ => Ok(()),
        }
    }

    /// The active load-balancer plugin `name`, configured with `config`,
    /// granted `access` (SSH to one machine, or an account's key).
    fn balancer(&self, name: &str, config: &str, access: Access) -> Result<WasmPlugin, String> {
        if matches!(access, Access::Account(_)) {
            self.takes_account(name)?;
        }
        let active = self.plugins.active(name).ok_or_else(|| {
            let names: Vec<String> = self
                .plugins
                .active_in(World::LoadBalancer)
                .into_iter()
                .map(|a| a.plugin.name.to_string())
                .collect();
            format!(
                "no active load-balancer plugin {name:?}; active: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )
        })?;
        if active.plugin.world != World::LoadBalancer {
            return Err(format!(
                "plugin {name:?} is a {} plugin, not a load balancer",
                active.plugin.world
            ));
        }
        let origins = active
            .granted
            .origins()
            .map_err(|e| format!("plugin {name:?} has a bad grant: {e}"))?;
        Ok(WasmPlugin::new(
            active.plugin,
            access.grant(Grants {
                config: config.to_owned(),
                origins,
                secrets: BTreeMap::new(),
                targets: Vec::new(),
                ssh: None,
                limits: active.limits,
                trial: false,
            }),
        ))
    }

    async fn exists<T>(
        &self,
        field: &'static str,
        id: i64,
        found: impl std::future::Future<Output = store::Result<T>>,
    ) -> Result<T, Error> {
        found.await.map_err(|e| match e {
            store::Error::NotFound { what } => {
                Invalid::new(field, format!("no {what} with id {id}")).into()
            }
            other => other.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(address: &str, port: u16, weight: Option<u32>) -> BackendSpec {
        BackendSpec {
            address: address.into(),
            port,
            weight,
        }
    }

    #[test]
    fn register_adds_once_and_reweighs_what_is_there() {
        let now = apply(Op::Register, &[], &[b("127.0.0.1", 80, None)]);
        assert_eq!(now, vec![b("127.0.0.1", 80, Some(DEFAULT_WEIGHT))]);
        let again = apply(
            Op::Register,
            &now,
            &[b("127.0.0.1", 80, Some(5)), b("127.0.0.2", 80, None)],
        );
        assert_eq!(
            again,
            vec![b("127.0.0.1", 80, Some(5)), b("127.0.0.2", 80, Some(10))]
        );
    }

    #[test]
    fn unregister_removes_by_address_and_port_only() {
        let now = vec![b("127.0.0.1", 80, Some(10)), b("127.0.0.1", 81, Some(10))];
        assert_eq!(
            apply(Op::Unregister, &now, &[b("127.0.0.1", 80, Some(99))]),
            vec![b("127.0.0.1", 81, Some(10))]
        );
        assert_eq!(
            apply(Op::Unregister, &now, &[b("127.0.0.9", 80, None)]),
            now
        );
    }

    #[test]
    fn set_drops_duplicates() {
        assert_eq!(
            apply(
                Op::Set,
                &[b("127.0.0.5", 1, None)],
                &[b("127.0.0.1", 80, None), b("127.0.0.1", 80, Some(3))]
            ),
            vec![b("127.0.0.1", 80, Some(10))]
        );
    }

    #[test]
    fn only_force_empties_an_upstream_and_the_limit_holds() {
        let change = |op, backends, force| MemberChange {
            actor: "user:t".into(),
            upstream_id: 1,
            op,
            backends,
            force,
            correlation_id: String::new(),
            idempotency_key: None,
        };
        let one = [b("127.0.0.5", 80, None)];
        let last = change(Op::Unregister, one.to_vec(), false);
        assert!(matches!(
            next_members("web", &one, &last),
            Err(Error::Conflict { field, .. }) if field == "backends"
        ));
        let forced = change(Op::Unregister, one.to_vec(), true);
        assert_eq!(next_members("web", &one, &forced).ok(), Some(vec![]));
        let many: Vec<BackendSpec> = (0..=BACKENDS_MAX)
            .map(|i| {
                b(
                    "127.0.0.5",
                    u16::try_from(i % 60_000 + 1).unwrap_or(1),
                    None,
                )
            })
            .collect();
        let flood = change(Op::Set, many, false);
        assert!(next_members("web", &one, &flood).is_err());
    }

    #[test]
    fn a_nodes_settings_override_its_units() {
        let m: Value = serde_json::from_str(&merged(
            r#"{"prefix":"/etc/nginx","conf":"a"}"#,
            r#"{"prefix":"/srv"}"#,
        ))
        .unwrap_or_default();
        assert_eq!(m, serde_json::json!({"prefix": "/srv", "conf": "a"}));
    }

    #[test]
    fn a_cloud_load_balancer_gets_its_accounts_key_and_no_target() {
        let vault = Vault::from_base64("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
        let account = store::AccountRecord {
            id: 1,
            name: "prod".into(),
            provider: "aliyun".into(),
            config: "{}".into(),
            key_id: "LTAI-key".into(),
            secret_sealed: vault.seal(machines::ACCOUNT_SECRET, b"s3cret"),
            templates: 0,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let grants = Access::account(&vault, &account)
            .unwrap()
            .grant(Grants::default());
        assert!(grants.targets.is_empty(), "no SSH target: {grants:?}");
        assert!(grants.ssh.is_none());
        let secrets = &grants.secrets;
        let key = &secrets["account"];
        assert_eq!(
            (key.key_id.as_str(), key.secret.as_str()),
            ("LTAI-key", "s3cret")
        );
        assert_eq!(secrets.len(), 1);
        // A secret sealed by another vault does not open: the push fails
        // naming the account instead of calling the plugin without a key.
        let other = Vault::from_base64("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=").unwrap();
        let refused = Access::account(&other, &account).err().unwrap_or_default();
        assert!(refused.starts_with("account prod:"), "{refused}");
    }

    #[test]
    fn a_node_is_labelled_by_its_address_or_its_account_and_load_balancer() {
        assert_eq!(node_label(Some("10.0.0.5"), None, "{}"), "10.0.0.5");
        assert_eq!(
            node_label(None, Some("prod"), r#"{"load_balancer_id":"lb-1"}"#),
            "prod · lb-1"
        );
        assert_eq!(node_label(None, Some("prod"), "{}"), "prod");
    }

    #[test]
    fn a_push_is_partial_when_some_nodes_failed() {
        let node = |ok| NodeResult {
            node_id: 1,
            address: "127.0.0.1".into(),
            ok,
            message: "m".into(),
        };
        let mut p = Pushed {
            revision: 3,
            nodes: vec![node(true), node(false)],
        };
        assert_eq!(p.state(), "partial");
        p.nodes.pop();
        assert_eq!(p.state(), "succeeded");
        p.nodes = vec![node(false)];
        assert_eq!(p.state(), "failed");
        p.nodes.clear();
        assert_eq!(p.state(), "succeeded");
    }
}
