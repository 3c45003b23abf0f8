//! Services, pools and nodes: the orchestration tree below clusters.

use dcp_api_types::NodeState;
use sqlx::FromRow;
use time::OffsetDateTime;

use super::{
    Dependent, Error, Result, Store, Window, conflict_on, datetime, now_millis, parse_name,
};

/// Tables that reference a service.
const SERVICE_DEPENDENTS: &[Dependent] = &[Dependent {
    kind: "pool",
    names_sql: "select name from pools where service_id = $1 order by name limit 5",
}];

/// Tables that reference a pool.
const POOL_DEPENDENTS: &[Dependent] = &[
    Dependent {
        kind: "node",
        names_sql: "select address from nodes where pool_id = $1 order by id limit 5",
    },
    // Finished tasks go with their pool; unfinished ones hold it.
    Dependent {
        kind: "task",
        names_sql: "select cast(id as text) from tasks where pool_id = $1 \
                    and state in ('pending', 'running', 'paused') order by id limit 5",
    },
];

/// A stored service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Id.
    pub id: i64,
    /// Its cluster.
    pub cluster_id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// A label.
    pub service_type: String,
    /// Image with tag.
    pub image: String,
    /// The container spec as JSON.
    pub container: String,
    /// The image before the last finished deploy changed it.
    pub previous_image: Option<String>,
    /// The image of a deploy that ended without reaching every node.
    pub unfinished_image: Option<String>,
    /// Its pools.
    pub pools: u64,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    pub updated_at: OffsetDateTime,
}

/// The writable fields of a service, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChange {
    /// Its cluster.
    pub cluster_id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// A label.
    pub service_type: String,
    /// Image with tag.
    pub image: String,
    /// The container spec as JSON.
    pub container: String,
}

/// A stored pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    /// Id.
    pub id: i64,
    /// Its service.
    pub service_id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The machine template of new nodes.
    pub template_id: Option<i64>,
    /// The task templates of expand, shrink and deploy (the seeded ones
    /// where the pool names none).
    pub task_templates: TaskTemplates,
    /// The discovery binding its nodes are registered with.
    pub binding_id: Option<i64>,
    /// Its nodes.
    pub nodes: u64,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    pub updated_at: OffsetDateTime,
}

/// The writable fields of a pool, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolChange {
    /// Its service.
    pub service_id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The machine template of new nodes.
    pub template_id: Option<i64>,
    /// Task templates chosen for expand, shrink and deploy (none: seeded).
    pub expand_template_id: Option<i64>,
    /// See `expand_template_id`.
    pub shrink_template_id: Option<i64>,
    /// See `expand_template_id`.
    pub deploy_template_id: Option<i64>,
    /// The discovery binding its nodes are registered with.
    pub binding_id: Option<i64>,
}

/// A pool's task templates, in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskTemplates {
    /// Expand.
    pub expand: i64,
    /// Shrink.
    pub shrink: i64,
    /// Deploy.
    pub deploy: i64,
}

/// A stored node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Id.
    pub id: i64,
    /// Its pool.
    pub pool_id: i64,
    /// The machine, when DCP manages it.
    pub machine_id: Option<i64>,
    /// Address.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// State.
    pub state: NodeState,
    /// The image its container was last started from.
    pub image: Option<String>,
    /// When it joined.
    pub created_at: OffsetDateTime,
}

/// A node to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNode {
    /// The machine, when DCP manages it.
    pub machine_id: Option<i64>,
    /// Address.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
}

#[derive(FromRow)]
struct ServiceRow {
    id: i64,
    cluster_id: i64,
    name: String,
    description: String,
    service_type: String,
    image: String,
    container: String,
    previous_image: Option<String>,
    unfinished_image: Option<String>,
    pools: i64,
    created_at: i64,
    updated_at: i64,
}

impl ServiceRecord {
    /// The image a rollback deploys: the current one while a deploy of
    /// another did not finish (some nodes run it, the rest do not), else
    /// the one before the last finished deploy. None when that is the
    /// image every node runs already.
    #[must_use]
    pub fn rollback_image(&self) -> Option<&str> {
        match (&self.unfinished_image, &self.previous_image) {
            (Some(_), _) => Some(&self.image),
            (None, Some(previous)) if *previous != self.image => Some(previous),
            _ => None,
        }
    }
}

impl From<ServiceRow> for ServiceRecord {
    fn from(r: ServiceRow) -> Self {
        Self {
            id: r.id,
            cluster_id: r.cluster_id,
            name: r.name,
            description: r.description,
            service_type: r.service_type,
            image: r.image,
            container: r.container,
            previous_image: r.previous_image,
            unfinished_image: r.unfinished_image,
            pools: u64::try_from(r.pools).unwrap_or_default(),
            created_at: datetime(r.created_at),
            updated_at: datetime(r.updated_at),
        }
    }
}

const SERVICE_SELECT: &str = "select s.id, s.cluster_id, s.name, s.description, s.service_type, \
     s.image, s.container, s.previous_image, s.unfinished_image, \
     (select count(*) from pools p where p.service_id = s.id) as pools, \
     s.created_at, s.updated_at from services s";

#[derive(FromRow)]
struct PoolRow {
    id: i64,
    service_id: i64,
    name: String,
    description: String,
    template_id: Option<i64>,
    expand_template_id: i64,
    shrink_template_id: i64,
    deploy_template_id: i64,
    binding_id: Option<i64>,
    nodes: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<PoolRow> for PoolRecord {
    fn from(r: PoolRow) -> Self {
        Self {
            id: r.id,
            service_id: r.service_id,
            name: r.name,
            description: r.description,
            template_id: r.template_id,
            task_templates: TaskTemplates {
                expand: r.expand_template_id,
                shrink: r.shrink_template_id,
                deploy: r.deploy_template_id,
            },
            binding_id: r.binding_id,
            nodes: u64::try_from(r.nodes).unwrap_or_default(),
            created_at: datetime(r.created_at),
            updated_at: datetime(r.updated_at),
        }
    }
}

/// A pool's seeded task template of one purpose: behind a balancer (with a
/// binding) the one that registers and drains its nodes, else the plain one.
macro_rules! seeded_template {
    ($purpose:literal) => {
        concat!(
            "coalesce(p.", $purpose, "_template_id, \
             (select min(id) from task_templates where seeded = 1 and purpose = '", $purpose, "' \
              and (steps like '%\"register\"%' or steps like '%\"unregister\"%') = (p.binding_id is not null)), \
             (select min(id) from task_templates where seeded = 1 and purpose = '", $purpose, "'), 0)"
        )
    };
}

const POOL_SELECT: &str = concat!(
    "select p.id, p.service_id, p.name, p.description, p.template_id, ",
    seeded_template!("expand"),
    " as expand_template_id, ",
    seeded_template!("shrink"),
    " as shrink_template_id, ",
    seeded_template!("deploy"),
    " as deploy_template_id, p.binding_id, \
     (select count(*) from nodes n where n.pool_id = p.id) as nodes, p.created_at, p.updated_at \
     from pools p"
);

#[derive(FromRow)]
struct NodeRow {
    id: i64,
    pool_id: i64,
    machine_id: Option<i64>,
    address: String,
    port: i64,
    login_user: String,
    state: String,
    image: Option<String>,
    created_at: i64,
}

impl TryFrom<NodeRow> for NodeRecord {
    type Error = Error;

    fn try_from(r: NodeRow) -> Result<Self> {
        Ok(Self {
            id: r.id,
            pool_id: r.pool_id,
            machine_id: r.machine_id,
            address: r.address,
            port: u16::try_from(r.port).unwrap_or(22),
            user: r.login_user,
            state: parse_name("nodes.state", &r.state)?,
            image: r.image,
            created_at: datetime(r.created_at),
        })
    }
}

/// A node's state is `removing` while an unfinished shrink works on it:
/// read from the task, not stored, so a task cancelled or failed leaves
/// no node marked for ever. (A macro, so `concat!` can build on it.)
macro_rules! node_state {
    () => {
        "case when exists (select 1 from tasks t join task_nodes tn on tn.task_id = t.id \
         where t.pool_id = nodes.pool_id and t.state in ('pending', 'running', 'paused') \
         and t.kind = 'shrink' and tn.node_id = nodes.id) then 'removing' else state end"
    };
}

/// [`node_state!`]: a node's state as a column of `nodes`.
pub(super) const NODE_STATE: &str = node_state!();

const NODE_COLUMNS: &str = concat!(
    "id, pool_id, machine_id, address, port, login_user, ",
    node_state!(),
    " as state, image, created_at"
);

/// Turns a foreign-key failure on `field` into a clear "no such" error.
fn missing(field: &'static str) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::Database(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
            Error::NotFound { what: field }
        }
        other => other,
    }
}

impl Store {
    /// Creates a service.
    pub async fn create_service(&self, change: &ServiceChange) -> Result<ServiceRecord> {
        let now = now_millis();
        let (id,): (i64,) = sqlx::query_as(
            "insert into services (cluster_id, name, description, service_type, image, container, \
             created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7, $7) returning id",
        )
        .bind(change.cluster_id)
        .bind(&change.name)
        .bind(&change.description)
        .bind(&change.service_type)
        .bind(&change.image)
        .bind(&change.container)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))
        .map_err(missing("cluster"))?;
        self.service(id).await
    }

    /// One service.
    pub async fn service(&self, id: i64) -> Result<ServiceRecord> {
        let row: Option<ServiceRow> = sqlx::query_as(&format!("{SERVICE_SELECT} where s.id = $1"))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.map(Into::into)
            .ok_or(Error::NotFound { what: "service" })
    }

    /// A window of services (of one cluster), by name, and how many match.
    pub async fn list_services(
        &self,
        cluster_id: Option<i64>,
        window: Window,
    ) -> Result<(Vec<ServiceRecord>, u64)> {
        let (total,): (i64,) =
            sqlx::query_as("select count(*) from services where $1 is null or cluster_id = $1")
                .bind(cluster_id)
                .fetch_one(&self.reads)
                .await?;
        let rows: Vec<ServiceRow> = sqlx::query_as(&format!(
            "{SERVICE_SELECT} where $1 is null or s.cluster_id = $1 order by s.name limit $2 offset $3"
        ))
        .bind(cluster_id)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter().map(Into::into).collect(),
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// Replaces a service's fields.
    pub async fn update_service(&self, id: i64, change: &ServiceChange) -> Result<ServiceRecord> {
        let done = sqlx::query(
            "update services set cluster_id = $1, name = $2, description = $3, service_type = $4, \
             image = $5, container = $6, updated_at = $7 where id = $8",
        )
        .bind(change.cluster_id)
        .bind(&change.name)
        .bind(&change.description)
        .bind(&change.service_type)
        .bind(&change.image)
        .bind(&change.container)
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))
        .map_err(missing("cluster"))?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "service" });
        }
        self.service(id).await
    }

    /// Deletes a service without pools.
    pub async fn delete_service(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("service", SERVICE_DEPENDENTS, id)
            .await?;
        let done = sqlx::query("delete from services where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "service" });
        }
        Ok(())
    }

    /// Creates a pool.
    pub async fn create_pool(&self, change: &PoolChange) -> Result<PoolRecord> {
        let now = now_millis();
        let (id,): (i64,) = sqlx::query_as(
            "insert into pools (service_id, name, description, template_id, expand_template_id, \
             shrink_template_id, deploy_template_id, binding_id, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $9, $8, $8) returning id",
        )
        .bind(change.service_id)
        .bind(&change.name)
        .bind(&change.description)
        .bind(change.template_id)
        .bind(change.expand_template_id)
        .bind(change.shrink_template_id)
        .bind(change.deploy_template_id)
        .bind(now)
        .bind(change.binding_id)
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        self.pool_record(id).await
    }

    /// One pool.
    pub async fn pool_record(&self, id: i64) -> Result<PoolRecord> {
        let row: Option<PoolRow> = sqlx::query_as(&format!("{POOL_SELECT} where p.id = $1"))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.map(Into::into).ok_or(Error::NotFound { what: "pool" })
    }

    /// A window of pools (of one service), by name, and how many match.
    pub async fn list_pools(
        &self,
        service_id: Option<i64>,
        window: Window,
    ) -> Result<(Vec<PoolRecord>, u64)> {
        let (total,): (i64,) =
            sqlx::query_as("select count(*) from pools where $1 is null or service_id = $1")
                .bind(service_id)
                .fetch_one(&self.reads)
                .await?;
        let rows: Vec<PoolRow> = sqlx::query_as(&format!(
            "{POOL_SELECT} where $1 is null or p.service_id = $1 order by p.name limit $2 offset $3"
        ))
        .bind(service_id)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter().map(Into::into).collect(),
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// Replaces a pool's fields.
    pub async fn update_pool(&self, id: i64, change: &PoolChange) -> Result<PoolRecord> {
        let done = sqlx::query(
            "update pools set service_id = $1, name = $2, description = $3, template_id = $4, \
             expand_template_id = $5, shrink_template_id = $6, deploy_template_id = $7, \
             updated_at = $8, binding_id = $10 where id = $9",
        )
        .bind(change.service_id)
        .bind(&change.name)
        .bind(&change.description)
        .bind(change.template_id)
        .bind(change.expand_template_id)
        .bind(change.shrink_template_id)
        .bind(change.deploy_template_id)
        .bind(now_millis())
        .bind(id)
        .bind(change.binding_id)
        .execute(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "pool" });
        }
        self.pool_record(id).await
    }

    /// Deletes a pool without nodes or unfinished tasks, and its finished
    /// tasks with it (their history is the pool's).
    pub async fn delete_pool(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("pool", POOL_DEPENDENTS, id)
            .await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "delete from tasks where pool_id = $1 \
             and state not in ('pending', 'running', 'paused')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("delete from pools where id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "pool" });
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds nodes to a pool, all or none; a machine already in a pool is
    /// [`Error::Conflict`] on `machine_ids`.
    pub async fn add_nodes(&self, pool_id: i64, nodes: &[NewNode]) -> Result<Vec<NodeRecord>> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(nodes.len());
        for node in nodes {
            let (id,): (i64,) = sqlx::query_as(
                "insert into nodes (pool_id, machine_id, address, port, login_user, state, \
                 created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7, $7) returning id",
            )
            .bind(pool_id)
            .bind(node.machine_id)
            .bind(&node.address)
            .bind(i64::from(node.port))
            .bind(&node.user)
            .bind("pending")
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(conflict_on(
                if node.machine_id.is_some() {
                    "machine_ids"
                } else {
                    "addresses"
                },
                &node.address,
            ))?;
            ids.push(id);
        }
        tx.commit().await?;
        let all = self.pool_nodes(pool_id).await?;
        Ok(all.into_iter().filter(|n| ids.contains(&n.id)).collect())
    }

    /// A pool's nodes, oldest first.
    pub async fn pool_nodes(&self, pool_id: i64) -> Result<Vec<NodeRecord>> {
        let rows: Vec<NodeRow> = sqlx::query_as(&format!(
            "select {NODE_COLUMNS} from nodes where pool_id = $1 order by id"
        ))
        .bind(pool_id)
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(NodeRecord::try_from).collect()
    }

    /// One node of a pool; `None` once it left the pool.
    pub async fn pool_node(&self, pool_id: i64, node_id: i64) -> Result<Option<NodeRecord>> {
        let row: Option<NodeRow> = sqlx::query_as(&format!(
            "select {NODE_COLUMNS} from nodes where id = $1 and pool_id = $2"
        ))
        .bind(node_id)
        .bind(pool_id)
        .fetch_optional(&self.reads)
        .await?;
        row.map(NodeRecord::try_from).transpose()
    }

    /// A window of a pool's nodes, oldest first, and how many it has.
    pub async fn list_nodes(&self, pool_id: i64, window: Window) -> Result<(Vec<NodeRecord>, u64)> {
        let (total,): (i64,) = sqlx::query_as("select count(*) from nodes where pool_id = $1")
            .bind(pool_id)
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<NodeRow> = sqlx::query_as(&format!(
            "select {NODE_COLUMNS} from nodes where pool_id = $1 order by id limit $2 offset $3"
        ))
        .bind(pool_id)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        let nodes = rows
            .into_iter()
            .map(NodeRecord::try_from)
            .collect::<Result<_>>()?;
        Ok((nodes, u64::try_from(total).unwrap_or_default()))
    }

    /// Removes a node from its pool (the machine stays).
    pub async fn remove_node(&self, pool_id: i64, node_id: i64) -> Result<()> {
        let done = sqlx::query("delete from nodes where id = $1 and pool_id = $2")
            .bind(node_id)
            .bind(pool_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "node" });
        }
        Ok(())
    }

    /// The pool a machine is a node of, if any.
    pub async fn pool_of_machine(&self, machine_id: i64) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "select p.name from nodes n join pools p on p.id = n.pool_id where n.machine_id = $1",
        )
        .bind(machine_id)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|(name,)| name))
    }
}
