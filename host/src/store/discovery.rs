//! Service discovery: balancer groups, units, nodes, upstreams with their
//! desired membership and what each node applied, bindings, and the
//! operation log.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::{
    Dependent, Error, Result, Store, Window, conflict_on, contains_pattern, is_unique_violation,
    millis, now_millis,
};

const GROUP_DEPENDENTS: &[Dependent] = &[
    Dependent {
        kind: "unit",
        names_sql: "select name from lb_units where group_id = $1 order by name limit 5",
    },
    Dependent {
        kind: "upstream",
        names_sql: "select name from upstreams where group_id = $1 order by name limit 5",
    },
];

const UNIT_DEPENDENTS: &[Dependent] = &[Dependent {
    kind: "node",
    names_sql: "select coalesce(m.address, m.name, a.name) from lb_nodes n \
                left join machines m on m.id = n.machine_id \
                left join cloud_accounts a on a.id = n.account_id \
                where n.unit_id = $1 order by n.id limit 5",
}];

const UPSTREAM_DEPENDENTS: &[Dependent] = &[Dependent {
    kind: "binding",
    names_sql: "select name from bindings where upstream_id = $1 order by name limit 5",
}];

const BINDING_DEPENDENTS: &[Dependent] = &[Dependent {
    kind: "pool",
    names_sql: "select name from pools where binding_id = $1 order by name limit 5",
}];

/// A balancer group: a product line's balancer hosts and upstreams.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LbGroupRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Time of the last change (ms).
    pub updated_at: i64,
}

/// A unit: the balancer hosts serving one service, run by one plugin.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LbUnitRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// Its group.
    pub group_id: i64,
    /// Name, unique in the group.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The load-balancer plugin that applies changes.
    pub plugin: String,
    /// The plugin's settings (a JSON object).
    pub config: String,
    /// The command group run on its nodes after each publish.
    pub publish_group_id: Option<i64>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Time of the last change (ms).
    pub updated_at: i64,
}

/// The writable fields of a unit, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitChange {
    /// Name, unique in the group.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The plugin.
    pub plugin: String,
    /// The plugin's settings (JSON object).
    pub config: String,
    /// The command group run on its nodes after each publish.
    pub publish_group_id: Option<i64>,
}

/// Where a balancer node is: exactly one of a machine or a cloud account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeHost {
    /// A machine running the balancer, reached over SSH.
    Machine(i64),
    /// A cloud load balancer, driven through this account's cloud API (the
    /// node's settings name which one).
    Account(i64),
}

/// A balancer node: a machine running the balancer for a unit, or a cloud
/// account's load balancer.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LbNodeRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// Its unit.
    pub unit_id: i64,
    /// The machine it runs on (`None` for a cloud load balancer).
    pub machine_id: Option<i64>,
    /// The cloud account of its load balancer (`None` for a machine).
    pub account_id: Option<i64>,
    /// That account's name.
    pub account_name: Option<String>,
    /// Its own plugin settings over the unit's (a JSON object).
    pub settings: String,
    /// The machine's address (`None` for a cloud load balancer).
    pub address: Option<String>,
    /// The machine's state (`None` for a cloud load balancer).
    pub machine_state: Option<String>,
    /// Creation time (ms).
    pub created_at: i64,
}

/// A node with what pushing to it needs: its unit's plugin and settings.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PushTarget {
    /// The node.
    pub node_id: i64,
    /// The machine it runs on (`None` for a cloud load balancer).
    pub machine_id: Option<i64>,
    /// The cloud account of its load balancer (`None` for a machine).
    pub account_id: Option<i64>,
    /// That account's name.
    pub account_name: Option<String>,
    /// The machine's address.
    pub address: Option<String>,
    /// Its own settings.
    pub settings: String,
    /// Its unit.
    pub unit_id: i64,
    /// The unit's plugin.
    pub plugin: String,
    /// The unit's settings.
    pub config: String,
}

/// A cloud load balancer node of an account, with its unit's settings
/// (which name the load balancer).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AccountLbNode {
    /// Its unit.
    pub unit_id: i64,
    /// The unit's name.
    pub unit_name: String,
    /// The unit's settings.
    pub config: String,
    /// The node's own settings.
    pub settings: String,
}

/// An upstream: a named set of backends the group's balancers serve.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct UpstreamRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// Its group.
    pub group_id: i64,
    /// Name, unique in the group.
    pub name: String,
    /// The desired members (JSON array of `{address, port, weight}`).
    pub backends: String,
    /// The membership's revision; grows with every change.
    pub revision: i64,
    /// Creation time (ms).
    pub created_at: i64,
    /// Time of the last change (ms).
    pub updated_at: i64,
}

/// What one node last applied of one upstream.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct UpstreamStateRecord {
    /// The upstream.
    pub upstream_id: i64,
    /// The node.
    pub node_id: i64,
    /// The highest revision the node confirmed.
    pub revision: i64,
    /// Why the last attempt failed; empty if it did not.
    pub error: String,
    /// When (ms).
    pub updated_at: i64,
}

/// A discovery binding.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct BindingRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The upstream nodes join.
    pub upstream_id: i64,
    /// The backend port; `None`: the service's first published TCP port.
    pub port: Option<i64>,
    /// The weight nodes join with.
    pub weight: i64,
    /// Creation time (ms).
    pub created_at: i64,
    /// Time of the last change (ms).
    pub updated_at: i64,
}

/// The writable fields of a binding, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingChange {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The upstream.
    pub upstream_id: i64,
    /// The backend port.
    pub port: Option<u16>,
    /// The weight.
    pub weight: u32,
}

/// One entry of the operation log.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ChangeRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// When it was asked for (ms).
    pub at: i64,
    /// Who: `user:<name>`, `task:<id>`, `app-key:<name>`, `dcp`.
    pub actor: String,
    /// What: `register`, `unregister`, `set-backends`, `resync`, …
    pub action: String,
    /// The upstream it changed, if any (null once that is deleted).
    pub upstream_id: Option<i64>,
    /// What it is about, for humans (`upstream default_upstream`, …).
    pub target: String,
    /// Its arguments (JSON).
    pub args: String,
    /// The whole membership before (JSON), kept by changes logged before
    /// migration 0016 only; newer ones are replayed from `seq` on demand.
    pub before: Option<String>,
    /// The whole membership after (JSON); as `before`.
    pub after: Option<String>,
    /// The upstream revision it produced.
    pub revision: Option<i64>,
    /// Its place among the changes its revision committed together; `None`
    /// when that commit moved no member.
    pub seq: Option<i64>,
    /// The members it added, and re-weighted ones with their new weight (JSON).
    pub added: Option<String>,
    /// The members it removed, and re-weighted ones with their old weight (JSON).
    pub removed: Option<String>,
    /// How many members the upstream had before it.
    pub members_before: Option<i64>,
    /// How many members it left.
    pub members_after: Option<i64>,
    /// `pending`, `succeeded`, `partial` or `failed`.
    pub state: String,
    /// How it ended, for humans (per node).
    pub message: String,
    /// The caller's correlation id.
    pub correlation_id: String,
    /// The idempotency key it was made under.
    pub idempotency_key: Option<String>,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
}

/// A change to record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewChange {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// The upstream, if any.
    pub upstream_id: Option<i64>,
    /// What it is about, for humans.
    pub target: String,
    /// Its arguments (JSON).
    pub args: String,
    /// The caller's correlation id.
    pub correlation_id: String,
    /// The idempotency key.
    pub idempotency_key: Option<String>,
}

/// What one change did in a committed edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedChange {
    /// The change's id.
    pub id: i64,
    /// Its place among the edit's changes (`None`: the edit moved nothing).
    pub seq: Option<i64>,
    /// The members it added, re-weighted ones in their new form (JSON).
    pub added: String,
    /// The members it removed, re-weighted ones in their old form (JSON).
    pub removed: String,
    /// How many members there were before it.
    pub members_before: i64,
    /// How many it left.
    pub members_after: i64,
}

/// Which operation-log entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeQuery {
    /// Only this upstream's.
    pub upstream_id: Option<i64>,
    /// Only this actor's.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Only entries whose target, arguments or message contain this text.
    pub text: Option<String>,
}

const UNIT_COLUMNS: &str =
    "id, group_id, name, description, plugin, config, publish_group_id, created_at, updated_at";
const NODE_COLUMNS: &str = "n.id, n.unit_id, n.machine_id, n.account_id, \
                            a.name as account_name, n.settings, m.address, \
                            m.state as machine_state, n.created_at";
/// A node with its machine or its account, whichever it has.
const NODE_FROM: &str = "lb_nodes n left join machines m on m.id = n.machine_id \
                         left join cloud_accounts a on a.id = n.account_id";
const UPSTREAM_COLUMNS: &str = "id, group_id, name, backends, revision, created_at, updated_at";
const BINDING_COLUMNS: &str =
    "id, name, description, upstream_id, port, weight, created_at, updated_at";
const CHANGE_COLUMNS: &str = "id, at, actor, action, upstream_id, target, args, before, after, \
                              revision, seq, added, removed, members_before, members_after, \
                              state, message, correlation_id, idempotency_key, finished_at";

impl Store {
    // ---- groups ----

    /// Creates a group; [`Error::Conflict`] on `name` if it is taken.
    pub async fn create_lb_group(&self, name: &str, description: &str) -> Result<LbGroupRecord> {
        sqlx::query_as(
            "insert into lb_groups (name, description, created_at, updated_at) \
             values ($1, $2, $3, $3) returning id, name, description, created_at, updated_at",
        )
        .bind(name)
        .bind(description)
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", name))
    }

    /// The group with this id.
    pub async fn lb_group(&self, id: i64) -> Result<LbGroupRecord> {
        sqlx::query_as(
            "select id, name, description, created_at, updated_at from lb_groups where id = $1",
        )
        .bind(id)
        .fetch_optional(&self.reads)
        .await?
        .ok_or(Error::NotFound { what: "group" })
    }

    /// One window of the groups, by name, and how many there are.
    pub async fn list_lb_groups(&self, window: Window) -> Result<(Vec<LbGroupRecord>, u64)> {
        let (total,): (i64,) = sqlx::query_as("select count(*) from lb_groups")
            .fetch_one(&self.reads)
            .await?;
        let rows = sqlx::query_as(
            "select id, name, description, created_at, updated_at from lb_groups \
             order by name, id limit $1 offset $2",
        )
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((rows, u64::try_from(total).unwrap_or_default()))
    }

    /// Renames or redescribes a group.
    pub async fn update_lb_group(
        &self,
        id: i64,
        name: &str,
        description: &str,
    ) -> Result<LbGroupRecord> {
        sqlx::query_as(
            "update lb_groups set name = $1, description = $2, updated_at = $3 where id = $4 \
             returning id, name, description, created_at, updated_at",
        )
        .bind(name)
        .bind(description)
        .bind(now_millis())
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(conflict_on("name", name))?
        .ok_or(Error::NotFound { what: "group" })
    }

    /// Deletes a group without units or upstreams.
    pub async fn delete_lb_group(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("group", GROUP_DEPENDENTS, id)
            .await?;
        self.delete_row("lb_groups", "group", id).await
    }

    async fn delete_row(&self, table: &str, what: &'static str, id: i64) -> Result<()> {
        let done = sqlx::query(&format!("delete from {table} where id = $1"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what });
        }
        Ok(())
    }

    // ---- units ----

    /// Creates a unit in `group_id`; [`Error::Conflict`] on `name` if the
    /// group has one by that name.
    pub async fn create_lb_unit(&self, group_id: i64, change: &UnitChange) -> Result<LbUnitRecord> {
        sqlx::query_as(&format!(
            "insert into lb_units (group_id, name, description, plugin, config, created_at, \
             updated_at, publish_group_id) values ($1, $2, $3, $4, $5, $6, $6, $7) \
             returning {UNIT_COLUMNS}"
        ))
        .bind(group_id)
        .bind(&change.name)
        .bind(&change.description)
        .bind(&change.plugin)
        .bind(&change.config)
        .bind(now_millis())
        .bind(change.publish_group_id)
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))
    }

    /// The unit with this id.
    pub async fn lb_unit(&self, id: i64) -> Result<LbUnitRecord> {
        sqlx::query_as(&format!(
            "select {UNIT_COLUMNS} from lb_units where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?
        .ok_or(Error::NotFound { what: "unit" })
    }

    /// The units, of one group or all, by group and name.
    pub async fn lb_units(&self, group_id: Option<i64>) -> Result<Vec<LbUnitRecord>> {
        Ok(sqlx::query_as(&format!(
            "select {UNIT_COLUMNS} from lb_units where ($1 is null or group_id = $1) \
             order by group_id, name, id"
        ))
        .bind(group_id)
        .fetch_all(&self.reads)
        .await?)
    }

    /// Replaces a unit's writable fields.
    pub async fn update_lb_unit(&self, id: i64, change: &UnitChange) -> Result<LbUnitRecord> {
        sqlx::query_as(&format!(
            "update lb_units set name = $1, description = $2, plugin = $3, config = $4, \
             updated_at = $5, publish_group_id = $7 where id = $6 returning {UNIT_COLUMNS}"
        ))
        .bind(&change.name)
        .bind(&change.description)
        .bind(&change.plugin)
        .bind(&change.config)
        .bind(now_millis())
        .bind(id)
        .bind(change.publish_group_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?
        .ok_or(Error::NotFound { what: "unit" })
    }

    /// Deletes a unit without nodes.
    pub async fn delete_lb_unit(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("unit", UNIT_DEPENDENTS, id)
            .await?;
        self.delete_row("lb_units", "unit", id).await
    }

    // ---- nodes ----

    /// Adds a node on `host` to a unit; [`Error::Conflict`] on
    /// `machine_id` if the machine is there already. One account may hold
    /// several of a unit's load balancers (its settings tell them apart).
    pub async fn add_lb_node(
        &self,
        unit_id: i64,
        host: NodeHost,
        settings: &str,
    ) -> Result<LbNodeRecord> {
        let (machine_id, account_id) = match host {
            NodeHost::Machine(id) => (Some(id), None),
            NodeHost::Account(id) => (None, Some(id)),
        };
        let (id,): (i64,) = sqlx::query_as(
            "insert into lb_nodes (unit_id, machine_id, account_id, settings, created_at, \
             updated_at) values ($1, $2, $3, $4, $5, $5) returning id",
        )
        .bind(unit_id)
        .bind(machine_id)
        .bind(account_id)
        .bind(settings)
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on(
            "machine_id",
            &machine_id.unwrap_or_default().to_string(),
        ))?;
        self.lb_node(id).await
    }

    /// The node with this id.
    pub async fn lb_node(&self, id: i64) -> Result<LbNodeRecord> {
        sqlx::query_as(&format!(
            "select {NODE_COLUMNS} from {NODE_FROM} where n.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?
        .ok_or(Error::NotFound { what: "node" })
    }

    /// The nodes of a unit, oldest first.
    pub async fn lb_nodes(&self, unit_id: i64) -> Result<Vec<LbNodeRecord>> {
        Ok(sqlx::query_as(&format!(
            "select {NODE_COLUMNS} from {NODE_FROM} where n.unit_id = $1 order by n.id"
        ))
        .bind(unit_id)
        .fetch_all(&self.reads)
        .await?)
    }

    /// The cloud load balancer nodes of an account, by unit.
    pub async fn account_lb_nodes(&self, account_id: i64) -> Result<Vec<AccountLbNode>> {
        Ok(sqlx::query_as(
            "select u.id as unit_id, u.name as unit_name, u.config, n.settings \
             from lb_nodes n join lb_units u on u.id = n.unit_id \
             where n.account_id = $1 order by u.name, u.id, n.id",
        )
        .bind(account_id)
        .fetch_all(&self.reads)
        .await?)
    }

    /// Replaces a node's own settings.
    pub async fn update_lb_node(&self, id: i64, settings: &str) -> Result<LbNodeRecord> {
        let done = sqlx::query("update lb_nodes set settings = $1, updated_at = $2 where id = $3")
            .bind(settings)
            .bind(now_millis())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "node" });
        }
        self.lb_node(id).await
    }

    /// Removes a node (what it applied is forgotten with it).
    pub async fn delete_lb_node(&self, id: i64) -> Result<()> {
        self.delete_row("lb_nodes", "node", id).await
    }

    /// Every node serving the upstreams of `group_id`, with its unit's plugin.
    pub async fn push_targets(&self, group_id: i64) -> Result<Vec<PushTarget>> {
        Ok(sqlx::query_as(&format!(
            "select n.id as node_id, n.machine_id, n.account_id, a.name as account_name, \
             m.address, n.settings, u.id as unit_id, u.plugin, u.config from {NODE_FROM} \
             join lb_units u on u.id = n.unit_id where u.group_id = $1 order by n.id"
        ))
        .bind(group_id)
        .fetch_all(&self.reads)
        .await?)
    }

    // ---- upstreams ----

    /// Creates an upstream with no members.
    pub async fn create_upstream(&self, group_id: i64, name: &str) -> Result<UpstreamRecord> {
        sqlx::query_as(&format!(
            "insert into upstreams (group_id, name, created_at, updated_at) \
             values ($1, $2, $3, $3) returning {UPSTREAM_COLUMNS}"
        ))
        .bind(group_id)
        .bind(name)
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", name))
    }

    /// The upstream with this id.
    pub async fn upstream(&self, id: i64) -> Result<UpstreamRecord> {
        sqlx::query_as(&format!(
            "select {UPSTREAM_COLUMNS} from upstreams where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?
        .ok_or(Error::NotFound { what: "upstream" })
    }

    /// The upstreams, of one group or all, by group and name.
    pub async fn upstreams(&self, group_id: Option<i64>) -> Result<Vec<UpstreamRecord>> {
        Ok(sqlx::query_as(&format!(
            "select {UPSTREAM_COLUMNS} from upstreams where ($1 is null or group_id = $1) \
             order by group_id, name, id"
        ))
        .bind(group_id)
        .fetch_all(&self.reads)
        .await?)
    }

    /// Deletes an upstream no binding uses.
    pub async fn delete_upstream(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("upstream", UPSTREAM_DEPENDENTS, id)
            .await?;
        self.delete_row("upstreams", "upstream", id).await
    }

    /// Records what a node did with a push of `revision`: served it
    /// (`error` empty) or not. The confirmed revision never goes back.
    pub async fn record_upstream_state(
        &self,
        upstream_id: i64,
        node_id: i64,
        revision: i64,
        error: &str,
    ) -> Result<()> {
        let served = if error.is_empty() { revision } else { -1 };
        sqlx::query(
            "insert into upstream_states (upstream_id, node_id, revision, error, updated_at) \
             values ($1, $2, $3, $4, $5) on conflict (upstream_id, node_id) do update set \
             revision = case when excluded.revision > upstream_states.revision \
                        then excluded.revision else upstream_states.revision end, \
             error = excluded.error, updated_at = excluded.updated_at",
        )
        .bind(upstream_id)
        .bind(node_id)
        .bind(served.max(-1))
        .bind(error)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What the nodes applied, of the upstreams of one group or all.
    pub async fn upstream_states(&self, group_id: Option<i64>) -> Result<Vec<UpstreamStateRecord>> {
        Ok(sqlx::query_as(
            "select s.upstream_id, s.node_id, s.revision, s.error, s.updated_at \
             from upstream_states s join upstreams u on u.id = s.upstream_id \
             where ($1 is null or u.group_id = $1) order by s.upstream_id, s.node_id",
        )
        .bind(group_id)
        .fetch_all(&self.reads)
        .await?)
    }

    // ---- bindings ----

    /// Creates a binding; [`Error::Conflict`] on `name` if it is taken.
    pub async fn create_binding(&self, change: &BindingChange) -> Result<BindingRecord> {
        sqlx::query_as(&format!(
            "insert into bindings (name, description, upstream_id, port, weight, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $6) returning {BINDING_COLUMNS}"
        ))
        .bind(&change.name)
        .bind(&change.description)
        .bind(change.upstream_id)
        .bind(change.port.map(i64::from))
        .bind(i64::from(change.weight))
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))
    }

    /// The binding with this id.
    pub async fn binding(&self, id: i64) -> Result<BindingRecord> {
        sqlx::query_as(&format!(
            "select {BINDING_COLUMNS} from bindings where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?
        .ok_or(Error::NotFound { what: "binding" })
    }

    /// Every binding, by name.
    pub async fn bindings(&self) -> Result<Vec<BindingRecord>> {
        Ok(sqlx::query_as(&format!(
            "select {BINDING_COLUMNS} from bindings order by name, id"
        ))
        .fetch_all(&self.reads)
        .await?)
    }

    /// Replaces a binding's writable fields.
    pub async fn update_binding(&self, id: i64, change: &BindingChange) -> Result<BindingRecord> {
        sqlx::query_as(&format!(
            "update bindings set name = $1, description = $2, upstream_id = $3, port = $4, \
             weight = $5, updated_at = $6 where id = $7 returning {BINDING_COLUMNS}"
        ))
        .bind(&change.name)
        .bind(&change.description)
        .bind(change.upstream_id)
        .bind(change.port.map(i64::from))
        .bind(i64::from(change.weight))
        .bind(now_millis())
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?
        .ok_or(Error::NotFound { what: "binding" })
    }

    /// Deletes a binding no pool uses.
    pub async fn delete_binding(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("binding", BINDING_DEPENDENTS, id)
            .await?;
        self.delete_row("bindings", "binding", id).await
    }

    // ---- the operation log ----

    /// Records a change as pending. Under an idempotency key already used,
    /// answers the change made then and `false`.
    pub async fn begin_change(&self, change: &NewChange) -> Result<(ChangeRecord, bool)> {
        let inserted = sqlx::query_as(&format!(
            "insert into discovery_changes (at, actor, action, upstream_id, target, args, state, \
             correlation_id, idempotency_key) values ($1, $2, $3, $4, $5, $6, 'pending', $7, $8) \
             returning {CHANGE_COLUMNS}"
        ))
        .bind(now_millis())
        .bind(&change.actor)
        .bind(&change.action)
        .bind(change.upstream_id)
        .bind(&change.target)
        .bind(&change.args)
        .bind(&change.correlation_id)
        .bind(&change.idempotency_key)
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(row) => Ok((row, true)),
            Err(e) if is_unique_violation(&e) => {
                let row: ChangeRecord = sqlx::query_as(&format!(
                    "select {CHANGE_COLUMNS} from discovery_changes where idempotency_key = $1"
                ))
                .bind(&change.idempotency_key)
                .fetch_one(&self.pool)
                .await?;
                Ok((row, false))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Commits one edit of an upstream's members in one transaction: the
    /// new members (`None`: they stay as they are) if the revision is still
    /// `expected`, a snapshot of them once `snapshot_every` changes that
    /// moved members are logged after the newest one (these included), and
    /// what each change in `applied` did. Answers the revision that holds
    /// the changes, or `None` when another writer came first and nothing
    /// was written.
    pub async fn commit_edit(
        &self,
        upstream_id: i64,
        expected: i64,
        backends: Option<&str>,
        snapshot_every: i64,
        applied: &[AppliedChange],
    ) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let revision = match backends {
            None => expected,
            Some(backends) => {
                let now: Option<(i64,)> = sqlx::query_as(
                    "update upstreams set backends = $1, revision = revision + 1, updated_at = $2 \
                     where id = $3 and revision = $4 returning revision",
                )
                .bind(backends)
                .bind(now_millis())
                .bind(upstream_id)
                .bind(expected)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((revision,)) = now else {
                    return Ok(None);
                };
                let (since,): (i64,) = sqlx::query_as(
                    "select count(*) from discovery_changes where upstream_id = $1 \
                     and seq is not null and revision > coalesce((select max(revision) \
                     from upstream_snapshots where upstream_id = $1), -1)",
                )
                .bind(upstream_id)
                .fetch_one(&mut *tx)
                .await?;
                let logged = i64::try_from(applied.len()).unwrap_or(i64::MAX);
                if since.saturating_add(logged) >= snapshot_every {
                    sqlx::query(
                        "insert into upstream_snapshots (upstream_id, revision, backends) \
                         values ($1, $2, $3)",
                    )
                    .bind(upstream_id)
                    .bind(revision)
                    .bind(backends)
                    .execute(&mut *tx)
                    .await?;
                }
                revision
            }
        };
        for change in applied {
            sqlx::query(
                "update discovery_changes set revision = $1, seq = $2, added = $3, removed = $4, \
                 members_before = $5, members_after = $6 where id = $7",
            )
            .bind(revision)
            .bind(change.seq)
            .bind(&change.added)
            .bind(&change.removed)
            .bind(change.members_before)
            .bind(change.members_after)
            .bind(change.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(revision))
    }

    /// What replays an upstream's membership up to `revision`: its newest
    /// snapshot at or below `base_at_most` (revision 0, no members, if there
    /// is none), and the changes committed after it up to `revision`, in
    /// the order they were applied.
    pub async fn membership_log(
        &self,
        upstream_id: i64,
        base_at_most: i64,
        revision: i64,
    ) -> Result<(i64, String, Vec<ChangeRecord>)> {
        let base: Option<(i64, String)> = sqlx::query_as(
            "select revision, backends from upstream_snapshots \
             where upstream_id = $1 and revision <= $2 order by revision desc limit 1",
        )
        .bind(upstream_id)
        .bind(base_at_most)
        .fetch_optional(&self.reads)
        .await?;
        let (base, backends) = base.unwrap_or_else(|| (0, "[]".to_owned()));
        let changes = sqlx::query_as(&format!(
            "select {CHANGE_COLUMNS} from discovery_changes where upstream_id = $1 \
             and revision > $2 and revision <= $3 and seq is not null order by revision, seq"
        ))
        .bind(upstream_id)
        .bind(base)
        .bind(revision)
        .fetch_all(&self.reads)
        .await?;
        Ok((base, backends, changes))
    }

    /// Deletes the operation log's changes that ended before `cutoff`,
    /// and the snapshots no change left needs; answers how many changes
    /// went. The changes that moved an upstream's members are replayed
    /// from a snapshot, so they go only up to the newest snapshot below
    /// every change of that upstream still kept (by age or because it has
    /// not ended): a change that ended before the cutoff but after that
    /// snapshot stays, as the ones kept are replayed through it; at most
    /// one snapshot's worth of changes ([`crate::discovery`] takes one
    /// every 64) stays so. The idempotency keys of the changes deleted are
    /// forgotten with them.
    pub async fn delete_changes_ended_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        // Per upstream, the newest snapshot every change kept can be
        // replayed from: below the oldest kept that moved members, at or
        // below the oldest kept that moved none.
        const BASE: &str = "with base as (select u.id as upstream_id, coalesce(( \
             select max(s.revision) from upstream_snapshots s where s.upstream_id = u.id \
             and s.revision < coalesce((select min(case when k.seq is null \
             then k.revision + 1 else k.revision end) from discovery_changes k \
             where k.upstream_id = u.id and k.revision is not null \
             and (k.finished_at is null or k.finished_at >= $1)), u.revision + 1)), -1) as revision \
             from upstreams u)";
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "{BASE} delete from upstream_snapshots where revision < (select b.revision \
             from base b where b.upstream_id = upstream_snapshots.upstream_id)"
        ))
        .bind(millis(cutoff))
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(&format!(
            "{BASE} delete from discovery_changes where finished_at is not null \
             and finished_at < $1 and (upstream_id is null or seq is null or revision <= \
             (select b.revision from base b where b.upstream_id = discovery_changes.upstream_id))"
        ))
        .bind(millis(cutoff))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Records how a change ended.
    pub async fn finish_change(&self, id: i64, state: &str, message: &str) -> Result<ChangeRecord> {
        sqlx::query_as(&format!(
            "update discovery_changes set state = $1, message = $2, finished_at = $3 \
             where id = $4 returning {CHANGE_COLUMNS}"
        ))
        .bind(state)
        .bind(message)
        .bind(now_millis())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(Error::NotFound { what: "change" })
    }

    /// One change.
    pub async fn change(&self, id: i64) -> Result<ChangeRecord> {
        sqlx::query_as(&format!(
            "select {CHANGE_COLUMNS} from discovery_changes where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?
        .ok_or(Error::NotFound { what: "change" })
    }

    /// One window of the changes matching `query`, newest first, and how
    /// many match in all.
    pub async fn list_changes(
        &self,
        query: &ChangeQuery,
        window: Window,
    ) -> Result<(Vec<ChangeRecord>, u64)> {
        const FILTER: &str = "($1 is null or upstream_id = $1) and ($2 is null or actor = $2) \
             and ($3 is null or action = $3) and ($4 is null or correlation_id = $4) \
             and ($5 is null or target like $5 escape '\\' or args like $5 escape '\\' \
                  or message like $5 escape '\\')";
        let text = query.text.as_deref().map(contains_pattern);
        let (total,): (i64,) = sqlx::query_as(&format!(
            "select count(*) from discovery_changes where {FILTER}"
        ))
        .bind(query.upstream_id)
        .bind(&query.actor)
        .bind(&query.action)
        .bind(&query.correlation_id)
        .bind(&text)
        .fetch_one(&self.reads)
        .await?;
        let rows = sqlx::query_as(&format!(
            "select {CHANGE_COLUMNS} from discovery_changes where {FILTER} \
             order by id desc limit $6 offset $7"
        ))
        .bind(query.upstream_id)
        .bind(&query.actor)
        .bind(&query.action)
        .bind(&query.correlation_id)
        .bind(&text)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((rows, u64::try_from(total).unwrap_or_default()))
    }
}
