//! Service discovery (OpenDCP's hubble): balancer groups, units and nodes,
//! upstreams and their members, bindings, and the operation log.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// A balancer group: a product line's balancer hosts and upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LbGroup {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// What creates or replaces a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LbGroupInput {
    /// Unique name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")
    )]
    pub name: String,
    /// Free text.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: String,
}

/// A unit: the balancer hosts that serve one service, run by one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LbUnit {
    /// Id.
    pub id: i64,
    /// Its group.
    pub group_id: i64,
    /// Name, unique in the group.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The load-balancer plugin that applies changes to its nodes.
    pub plugin: String,
    /// The plugin's settings (the plugin's schema says which).
    pub config: Value,
    /// A command group run on its nodes after each publish.
    pub publish_group_id: Option<i64>,
    /// Its nodes, with what each serves.
    pub nodes: Vec<LbNode>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// What creates or replaces a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LbUnitInput {
    /// Its group (fixed once created).
    pub group_id: i64,
    /// Name, unique in the group.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")
    )]
    pub name: String,
    /// Free text.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: String,
    /// An active load-balancer plugin; `nginx` when absent.
    #[serde(default = "nginx")]
    pub plugin: String,
    /// The plugin's settings, a JSON object of at most 16 KiB, checked by
    /// the plugin.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// A command group to run on its nodes after each publish (OpenDCP's
    /// publish scripts), e.g. to warm caches or notify monitoring.
    #[serde(default)]
    pub publish_group_id: Option<i64>,
}

fn nginx() -> String {
    "nginx".to_owned()
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// A balancer node: a machine that runs the unit's balancer, or a cloud
/// load balancer the unit's plugin drives through a cloud account (exactly
/// one of `machine_id` and `account_id` is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LbNode {
    /// Id.
    pub id: i64,
    /// Its unit.
    pub unit_id: i64,
    /// The machine; null for a cloud load balancer.
    pub machine_id: Option<i64>,
    /// The cloud account of its load balancer; null for a machine.
    pub account_id: Option<i64>,
    /// That account's name; null for a machine.
    pub account_name: Option<String>,
    /// The machine's address; null for a cloud load balancer.
    pub address: Option<String>,
    /// The machine's state; null for a cloud load balancer.
    pub machine_state: Option<String>,
    /// Its own plugin settings, over the unit's.
    pub settings: Value,
    /// Whether it serves every upstream of its group at its current revision.
    pub in_sync: bool,
    /// Upstreams it does not serve at their current revision.
    pub drift: Vec<UpstreamNodeState>,
    /// When it was added (RFC 3339).
    pub created_at: String,
}

/// What adds a node to a unit: a machine DCP has (made or adopted), by id
/// or by address, or a cloud load balancer of a cloud account. Exactly one
/// of `machine_id`, `address` and `account_id` is given; otherwise 422
/// naming the field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LbNodeInput {
    /// The machine.
    #[serde(default)]
    pub machine_id: Option<i64>,
    /// Or the address of a machine DCP has.
    #[serde(default)]
    pub address: Option<String>,
    /// With `address` only: its SSH port (default 22).
    #[serde(default)]
    pub port: Option<u16>,
    /// Or a cloud account: the node is a load balancer of its cloud (which
    /// one, the settings say, e.g. `load_balancer_id` for `slb`), driven by
    /// the unit's plugin through the cloud's API with the account's key.
    #[serde(default)]
    pub account_id: Option<i64>,
    /// Its own plugin settings over the unit's (e.g. another prefix, or
    /// the cloud load balancer's id).
    #[serde(default = "empty_object")]
    pub settings: Value,
}

/// Replaces a node's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LbNodeUpdate {
    /// Its own plugin settings over the unit's.
    pub settings: Value,
}

/// A backend of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// An IP address or host name.
    pub address: String,
    /// Its port.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u16,
    /// Its weight, 0–100 (0: listed, sent no new traffic); 10 when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    pub weight: Option<u32>,
}

impl BackendSpec {
    /// The same backend: the same port, and the same address however its
    /// letters are cased (weights aside).
    #[must_use]
    pub fn same_backend(&self, other: &Self) -> bool {
        self.port == other.port && self.address.eq_ignore_ascii_case(&other.address)
    }
}

/// What moved from `before` to `after`: the members added (and re-weighted
/// ones, in their new form), then the members removed (and re-weighted ones,
/// in their old form), each in its list's order. Linear in the members: an
/// upstream holds thousands, and every change of the log is measured so.
#[must_use]
pub fn member_delta(
    before: &[BackendSpec],
    after: &[BackendSpec],
) -> (Vec<BackendSpec>, Vec<BackendSpec>) {
    fn key(b: &BackendSpec) -> (String, u16) {
        (b.address.to_ascii_lowercase(), b.port)
    }
    let index = |list: &[BackendSpec]| -> HashMap<(String, u16), Option<u32>> {
        list.iter().map(|b| (key(b), b.weight)).collect()
    };
    let moved = |from: &[BackendSpec], to: &HashMap<(String, u16), Option<u32>>| {
        from.iter()
            .filter(|b| to.get(&key(b)) != Some(&b.weight))
            .cloned()
            .collect::<Vec<_>>()
    };
    (moved(after, &index(before)), moved(before, &index(after)))
}

/// What one balancer node serves of one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UpstreamNodeState {
    /// The upstream.
    pub upstream_id: i64,
    /// Its name.
    pub upstream: String,
    /// The node.
    pub node_id: i64,
    /// The node's address; null for a cloud load balancer.
    pub address: Option<String>,
    /// The node as people name it: its address, or for a cloud load
    /// balancer `<account name> · <load_balancer_id>`.
    pub label: String,
    /// The revision it confirmed serving; none before its first push.
    pub revision: Option<i64>,
    /// Whether that is the upstream's current revision.
    pub in_sync: bool,
    /// Why its last push failed; empty when it did not.
    pub error: String,
}

/// An upstream: backends every balancer node of its group serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UpstreamView {
    /// Id.
    pub id: i64,
    /// Its group.
    pub group_id: i64,
    /// Name, unique in the group (the balancer's upstream name).
    pub name: String,
    /// The desired members, DCP's source of truth.
    pub backends: Vec<BackendSpec>,
    /// The membership's revision: it grows with every change.
    pub revision: i64,
    /// What each node of the group serves.
    pub nodes: Vec<UpstreamNodeState>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When its members last changed (RFC 3339).
    pub updated_at: String,
}

/// What creates an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpstreamInput {
    /// Its group.
    pub group_id: i64,
    /// Name, unique in the group.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")
    )]
    pub name: String,
}

/// A change to an upstream's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MembersInput {
    /// The backends (at most 1000).
    pub backends: Vec<BackendSpec>,
    /// Allow leaving the upstream without backends (every request through
    /// it then fails).
    #[serde(default)]
    pub force: bool,
}

/// Upstreams to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
pub struct GroupFilter {
    /// Only this group's.
    #[serde(default)]
    pub group_id: Option<i64>,
}

/// A discovery binding: where a pool's nodes are registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Binding {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The upstream nodes join.
    pub upstream_id: i64,
    /// The backend port; none: the service's first published TCP port.
    pub port: Option<u16>,
    /// The weight nodes join with.
    pub weight: u32,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// What creates or replaces a binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BindingInput {
    /// Unique name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")
    )]
    pub name: String,
    /// Free text.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: String,
    /// The upstream nodes join.
    pub upstream_id: i64,
    /// The backend port; the service's first published TCP port when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: Option<u16>,
    /// The weight nodes join with, 0–100; 10 when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    pub weight: Option<u32>,
}

/// One entry of the operation log: a discovery change and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DiscoveryChange {
    /// Id.
    pub id: i64,
    /// When it was asked for (RFC 3339).
    pub at: String,
    /// Who: `user:<name>`, `task:<id>`, `app-key:<name>`.
    pub actor: String,
    /// `register`, `unregister`, `set-backends` or `resync`.
    pub action: String,
    /// The upstream it changed.
    pub upstream_id: Option<i64>,
    /// What it is about, for humans.
    pub target: String,
    /// Its arguments.
    pub args: Value,
    /// The upstream's whole membership before the change. Only when one
    /// change is read by id (`GET /discovery-changes/{id}`, `GET
    /// /alterations/{id}`): lists and other answers leave it null, as it
    /// is once the upstream is deleted or before the change is applied.
    pub before: Option<Vec<BackendSpec>>,
    /// The whole membership after the change; as `before`.
    pub after: Option<Vec<BackendSpec>>,
    /// The members the change added, and re-weighted ones with their new
    /// weight; null until it is applied.
    pub added: Option<Vec<BackendSpec>>,
    /// The members it removed, and re-weighted ones with their old weight
    /// (a member in both lists is a new weight); null until it is applied.
    pub removed: Option<Vec<BackendSpec>>,
    /// How many members the upstream had before the change.
    pub members_before: Option<u32>,
    /// How many it had after.
    pub members_after: Option<u32>,
    /// The upstream revision holding the change.
    pub revision: Option<i64>,
    /// `pending`, `succeeded` (every node serves it), `partial` (some
    /// nodes do not yet: they show drift) or `failed`.
    pub state: String,
    /// How it ended, node by node.
    pub message: String,
    /// The caller's correlation id (`X-Correlation-Id`).
    pub correlation_id: String,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
}

/// Operation-log entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
pub struct ChangeFilter {
    /// Only this upstream's.
    #[serde(default)]
    pub upstream_id: Option<i64>,
    /// Only this actor's (e.g. `task:12`).
    #[serde(default)]
    pub actor: Option<String>,
    /// Only this action.
    #[serde(default)]
    pub action: Option<String>,
    /// Only this correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Only entries whose target, arguments or message contain this text.
    #[serde(default)]
    pub q: Option<String>,
}

/// What a re-sync did, node by node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SyncReport {
    /// `succeeded`, `partial` or `failed`.
    pub state: String,
    /// Node by node.
    pub message: String,
}

/// A version of one of a unit's configuration files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ConfigFileVersion {
    /// Its path, relative to the balancer's configuration directory.
    pub path: String,
    /// Its version: 1, 2, … per path.
    pub version: i64,
    /// Its text; left out of lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Who wrote it.
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
}

/// A new version of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConfigFileInput {
    /// Its path, relative to the balancer's configuration directory, e.g.
    /// `nginx.conf` or `conf.d/gzip.conf`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[A-Za-z0-9._-][A-Za-z0-9._/-]*$"
        )
    )]
    pub path: String,
    /// Its whole text (at most 1 MiB).
    pub content: String,
}

/// A file version in a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// The file's path.
    pub path: String,
    /// Its version.
    pub version: i64,
}

/// What publishes a release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReleaseInput {
    /// The file versions to publish; the newest version of every file of
    /// the unit when absent.
    #[serde(default)]
    pub files: Option<Vec<FileRef>>,
}

/// One node's part in a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ReleaseNode {
    /// The node.
    pub node_id: i64,
    /// Its address.
    pub address: String,
    /// `pending`, `running`, `succeeded`, `failed` or `skipped` (an
    /// earlier node failed, so this one was left as it was).
    pub state: String,
    /// What the plugin did, or the balancer's own error.
    pub log: String,
    /// When it began (RFC 3339).
    pub started_at: Option<String>,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
}

/// A release: file versions published to a unit's nodes, one node at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Release {
    /// Id.
    pub id: i64,
    /// Its unit.
    pub unit_id: i64,
    /// The file versions.
    pub files: Vec<FileRef>,
    /// `pending`, `running`, `succeeded`, `partial` or `failed`.
    pub state: String,
    /// The release it rolled back to, if it is a rollback.
    pub rollback_of: Option<i64>,
    /// Who asked.
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
    /// The execution of the unit's publish command group, if it has one.
    pub execution_id: Option<i64>,
    /// Node by node.
    pub nodes: Vec<ReleaseNode>,
}

/// An interface an app key may call (the wire form is the string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum Privilege {
    /// `POST /alterations/register`.
    #[serde(rename = "alterations.register")]
    AlterationsRegister,
    /// `POST /alterations/unregister`.
    #[serde(rename = "alterations.unregister")]
    AlterationsUnregister,
    /// `GET /alterations/{id}`.
    #[serde(rename = "alterations.read")]
    AlterationsRead,
}

/// An app key: how another system calls the discovery API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AppKey {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    /// The interfaces it may call: `alterations.register`,
    /// `alterations.unregister`, `alterations.read`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Privilege>))]
    pub privileges: Vec<String>,
    /// Who made it.
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// When it was last used (RFC 3339).
    pub last_used_at: Option<String>,
    /// When it was revoked (RFC 3339); a revoked key is refused.
    pub revoked_at: Option<String>,
}

/// What creates an app key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppKeyInput {
    /// Unique name, e.g. the calling system's.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")
    )]
    pub name: String,
    /// The interfaces it may call.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Privilege>))]
    pub privileges: Vec<String>,
}

/// Replaces an app key's privileges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppKeyPrivileges {
    /// The interfaces it may call.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Privilege>))]
    pub privileges: Vec<String>,
}

/// A new app key: the secret is shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AppKeyCreated {
    /// The key.
    pub key: AppKey,
    /// The secret to send as `X-App-Key`; DCP keeps only its hash.
    pub secret: String,
}

/// A backend another system registers or unregisters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AlterationBackend {
    /// An IP address or host name.
    pub address: String,
    /// Its port; the binding's port when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: Option<u16>,
    /// Its weight, 0–100; the binding's when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    pub weight: Option<u32>,
}

/// An alteration: register or unregister backends in a binding
/// (OpenDCP's `auto_alteration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AlterationInput {
    /// The binding, by name.
    pub binding: String,
    /// The backends (at most 1000).
    pub backends: Vec<AlterationBackend>,
    /// With unregister: allow removing the upstream's last backend.
    #[serde(default)]
    pub force: bool,
}
