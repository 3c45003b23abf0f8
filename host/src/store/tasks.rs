//! Task templates and the task engine's durable state: tasks, their nodes
//! and every node × step, plus the leases that say which process drives a
//! task.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::{Backend, Dependent, Error, Result, Store, Window, conflict_on, datetime, now_millis};

/// Tables that reference a task template.
const TEMPLATE_DEPENDENTS: &[Dependent] = &[
    Dependent {
        kind: "pool",
        names_sql: "select name from pools where expand_template_id = $1 \
                    or shrink_template_id = $1 or deploy_template_id = $1 order by name limit 5",
    },
    Dependent {
        kind: "task",
        names_sql: "select cast(id as text) from tasks where template_id = $1 order by id desc limit 5",
    },
];

/// Task states that hold their pool: a later task waits or is refused.
/// The states of a task under way.
pub(super) const ACTIVE: &str = "('pending', 'running', 'paused')";

/// Selects the tasks ahead of `t` on its pool (non-empty: `t` waits).
const QUEUED: &str = "select 1 from tasks o where o.pool_id = t.pool_id and o.id < t.id \
     and o.state in ('pending', 'running', 'paused')";

/// A stored task template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTemplateRecord {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// expand, shrink, deploy or adhoc.
    pub purpose: String,
    /// The steps as JSON.
    pub steps: String,
    /// Seeded by DCP.
    pub seeded: bool,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    pub updated_at: OffsetDateTime,
}

/// The writable fields of a task template, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTemplateChange {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// expand, shrink, deploy or adhoc.
    pub purpose: String,
    /// The steps as JSON.
    pub steps: String,
}

#[derive(FromRow)]
struct TemplateRow {
    id: i64,
    name: String,
    description: String,
    purpose: String,
    steps: String,
    seeded: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<TemplateRow> for TaskTemplateRecord {
    fn from(r: TemplateRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            description: r.description,
            purpose: r.purpose,
            steps: r.steps,
            seeded: r.seeded != 0,
            created_at: datetime(r.created_at),
            updated_at: datetime(r.updated_at),
        }
    }
}

const TEMPLATE_COLUMNS: &str =
    "id, name, description, purpose, steps, seeded, created_at, updated_at";

/// A stored task.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TaskRecord {
    /// Id.
    pub id: i64,
    /// expand, shrink, deploy or adhoc.
    pub kind: String,
    /// The pool.
    pub pool_id: i64,
    /// The pool's name.
    pub pool_name: String,
    /// The template.
    pub template_id: i64,
    /// The template's steps when the task was made, as JSON.
    pub steps: String,
    /// Run-time overrides as JSON.
    pub overrides: String,
    /// Nodes working at once.
    pub batch_size: i64,
    /// Where it stands.
    pub state: String,
    /// Why.
    pub reason: String,
    /// A control command not yet carried out.
    pub command: Option<String>,
    /// Who asked.
    pub created_by: String,
    /// When it was asked for (ms).
    pub created_at: i64,
    /// When it started (ms).
    pub started_at: Option<i64>,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
    /// When it last changed (ms).
    pub updated_at: i64,
}

const TASK_SELECT: &str = "select t.id, t.kind, t.pool_id, p.name as pool_name, t.template_id, \
     t.steps, t.overrides, t.batch_size, t.state, t.reason, t.command, t.created_by, \
     t.created_at, t.started_at, t.finished_at, t.updated_at from tasks t join pools p on p.id = t.pool_id";

/// A node of a task.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TaskNodeRecord {
    /// Position in the task.
    pub idx: i64,
    /// The pool node, once there is one.
    pub node_id: Option<i64>,
    /// The machine, once there is one.
    pub machine_id: Option<i64>,
    /// The address, once known.
    pub address: String,
    /// The pipeline's state.
    pub state: String,
}

/// One step on one node.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TaskStepRecord {
    /// The node's position.
    pub node_idx: i64,
    /// The step's position.
    pub step_idx: i64,
    /// Where it stands.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt may start (ms).
    pub not_before: Option<i64>,
    /// When the last attempt started (ms).
    pub started_at: Option<i64>,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
    /// Output (capped).
    pub output: String,
    /// Why it failed.
    pub error: String,
    /// The undoing of what it left behind (a step state), if any is due.
    pub compensation: Option<String>,
    /// What the undoing did.
    pub compensation_output: String,
}

/// A task to record.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// expand, shrink, deploy or adhoc.
    pub kind: String,
    /// The pool.
    pub pool_id: i64,
    /// The template.
    pub template_id: i64,
    /// The template's steps as JSON.
    pub steps: String,
    /// How many steps that is.
    pub step_count: usize,
    /// Overrides as JSON.
    pub overrides: String,
    /// Nodes working at once.
    pub batch_size: u32,
    /// Who asks.
    pub created_by: String,
    /// The nodes: (node, machine, address); expand's are empty slots.
    pub nodes: Vec<(Option<i64>, Option<i64>, String)>,
    /// Refuse when another task holds the pool (else queue behind it).
    pub exclusive: bool,
}

impl Store {
    /// Creates a task template.
    pub async fn create_task_template(
        &self,
        change: &TaskTemplateChange,
    ) -> Result<TaskTemplateRecord> {
        let now = now_millis();
        let (id,): (i64,) = sqlx::query_as(
            "insert into task_templates (name, description, purpose, steps, seeded, created_at, \
             updated_at) values ($1, $2, $3, $4, 0, $5, $5) returning id",
        )
        .bind(&change.name)
        .bind(&change.description)
        .bind(&change.purpose)
        .bind(&change.steps)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        self.task_template(id).await
    }

    /// One task template.
    pub async fn task_template(&self, id: i64) -> Result<TaskTemplateRecord> {
        let row: Option<TemplateRow> = sqlx::query_as(&format!(
            "select {TEMPLATE_COLUMNS} from task_templates where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        row.map(Into::into).ok_or(Error::NotFound {
            what: "task template",
        })
    }

    /// A window of the task templates, by name, and how many there are.
    pub async fn task_templates(&self, window: Window) -> Result<(Vec<TaskTemplateRecord>, u64)> {
        let select = format!("select {TEMPLATE_COLUMNS} from task_templates");
        let (rows, total) = self
            .page::<TemplateRow>(&select, "task_templates", "name, id", window)
            .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    /// Replaces a task template's fields.
    pub async fn update_task_template(
        &self,
        id: i64,
        change: &TaskTemplateChange,
    ) -> Result<TaskTemplateRecord> {
        let done = sqlx::query(
            "update task_templates set name = $1, description = $2, purpose = $3, steps = $4, \
             updated_at = $5 where id = $6",
        )
        .bind(&change.name)
        .bind(&change.description)
        .bind(&change.purpose)
        .bind(&change.steps)
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                what: "task template",
            });
        }
        self.task_template(id).await
    }

    /// Deletes a task template no pool or task uses.
    pub async fn delete_task_template(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("task template", TEMPLATE_DEPENDENTS, id)
            .await?;
        let done = sqlx::query("delete from task_templates where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                what: "task template",
            });
        }
        Ok(())
    }

    /// The seeded template for `purpose` (the pools' default).
    pub async fn seeded_template(&self, purpose: &str) -> Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as(
            "select id from task_templates where seeded = 1 and purpose = $1 order by id limit 1",
        )
        .bind(purpose)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|(id,)| id))
    }

    /// Ids of the pools a template is bound to.
    pub async fn pools_bound_to(&self, template_id: i64) -> Result<Vec<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "select id from pools where expand_template_id = $1 or shrink_template_id = $1 \
             or deploy_template_id = $1 order by id",
        )
        .bind(template_id)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Records a task with its nodes and every node × step pending. With
    /// `exclusive`, refuses ([`Error::InUse`]) while another task holds the pool.
    pub async fn create_task(&self, task: &NewTask) -> Result<i64> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Serialises task creation per pool, so two requests cannot both
            // find it free.
            sqlx::query("select id from pools where id = $1 for update")
                .bind(task.pool_id)
                .execute(&mut *tx)
                .await?;
        }
        if task.exclusive {
            let busy: Vec<(i64, String, String)> = sqlx::query_as(&format!(
                "select id, kind, state from tasks where pool_id = $1 and state in {ACTIVE} \
                 order by id limit 3"
            ))
            .bind(task.pool_id)
            .fetch_all(&mut *tx)
            .await?;
            if !busy.is_empty() {
                return Err(Error::InUse {
                    what: "pool",
                    by: busy
                        .into_iter()
                        .map(|(id, kind, state)| format!("task {id} ({kind}, {state})"))
                        .collect(),
                });
            }
        }
        let (id,): (i64,) = sqlx::query_as(
            "insert into tasks (kind, pool_id, template_id, steps, overrides, batch_size, state, \
             created_by, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $8) returning id",
        )
        .bind(&task.kind)
        .bind(task.pool_id)
        .bind(task.template_id)
        .bind(&task.steps)
        .bind(&task.overrides)
        .bind(i64::from(task.batch_size))
        .bind(&task.created_by)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        for (idx, (node_id, machine_id, address)) in task.nodes.iter().enumerate() {
            let idx = i64::try_from(idx).unwrap_or(i64::MAX);
            sqlx::query(
                "insert into task_nodes (task_id, idx, node_id, machine_id, address, state) \
                 values ($1, $2, $3, $4, $5, 'pending')",
            )
            .bind(id)
            .bind(idx)
            .bind(*node_id)
            .bind(*machine_id)
            .bind(address)
            .execute(&mut *tx)
            .await?;
            for step in 0..task.step_count {
                sqlx::query(
                    "insert into task_steps (task_id, node_idx, step_idx, state) \
                     values ($1, $2, $3, 'pending')",
                )
                .bind(id)
                .bind(idx)
                .bind(i64::try_from(step).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(id)
    }

    /// One task.
    pub async fn task(&self, id: i64) -> Result<TaskRecord> {
        sqlx::query_as(&format!("{TASK_SELECT} where t.id = $1"))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?
            .ok_or(Error::NotFound { what: "task" })
    }

    /// A window of tasks (of one pool, or of one service's pools), newest
    /// first, and how many match.
    pub async fn list_tasks(
        &self,
        pool_id: Option<i64>,
        service_id: Option<i64>,
        window: Window,
    ) -> Result<(Vec<TaskRecord>, u64)> {
        const WHERE: &str = "($1 is null or t.pool_id = $1) and ($2 is null or t.pool_id in \
             (select p.id from pools p where p.service_id = $2))";
        let (total,): (i64,) =
            sqlx::query_as(&format!("select count(*) from tasks t where {WHERE}"))
                .bind(pool_id)
                .bind(service_id)
                .fetch_one(&self.reads)
                .await?;
        let rows = sqlx::query_as(&format!(
            "{TASK_SELECT} where {WHERE} order by t.id desc limit $3 offset $4"
        ))
        .bind(pool_id)
        .bind(service_id)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((rows, u64::try_from(total).unwrap_or_default()))
    }

    /// A task's nodes, in order.
    pub async fn task_nodes(&self, task_id: i64) -> Result<Vec<TaskNodeRecord>> {
        Ok(sqlx::query_as(
            "select idx, node_id, machine_id, address, state from task_nodes \
             where task_id = $1 order by idx",
        )
        .bind(task_id)
        .fetch_all(&self.reads)
        .await?)
    }

    /// A task's node × step rows, by node then step.
    pub async fn task_steps(&self, task_id: i64) -> Result<Vec<TaskStepRecord>> {
        Ok(sqlx::query_as(
            "select node_idx, step_idx, state, attempts, not_before, started_at, finished_at, \
             output, error, compensation, compensation_output from task_steps \
             where task_id = $1 order by node_idx, step_idx",
        )
        .bind(task_id)
        .fetch_all(&self.reads)
        .await?)
    }

    /// Node × step counts per state for many tasks at once: (task, node
    /// state, count).
    pub async fn task_node_counts(&self, task_ids: &[i64]) -> Result<Vec<(i64, String, i64)>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "select task_id, state, count(*) from task_nodes where task_id in ({}) \
             group by task_id, state",
            super::placeholders(1, task_ids.len())
        );
        let mut query = sqlx::query_as(&sql);
        for id in task_ids {
            query = query.bind(*id);
        }
        Ok(query.fetch_all(&self.reads).await?)
    }

    /// Whether a task waits behind an earlier one on its pool.
    pub async fn is_queued(&self, id: i64) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as(&format!(
            "select t.id from tasks t where t.id = $1 and exists ({QUEUED})"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.is_some())
    }

    /// The task holding a pool (running, paused or first in line), if any.
    pub async fn active_task(&self, pool_id: i64) -> Result<Option<(i64, String, String)>> {
        Ok(sqlx::query_as(&format!(
            "select id, kind, state from tasks where pool_id = $1 and state in {ACTIVE} \
             order by id limit 1"
        ))
        .bind(pool_id)
        .fetch_optional(&self.reads)
        .await?)
    }

    /// Asks the process driving a task to pause, resume, retry or cancel it.
    pub async fn set_task_command(&self, id: i64, command: &str) -> Result<()> {
        let done = sqlx::query(
            "update tasks set command = $1, updated_at = $2, version = version + 1 where id = $3",
        )
        .bind(command)
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "task" });
        }
        Ok(())
    }

    /// Claims up to `limit` tasks that need a driver and whose lease is free
    /// or expired, leasing them to `owner` for `ttl_ms`: pending tasks first
    /// in line on their pool, running ones, and any with a command waiting.
    /// On PostgreSQL, rows are locked with `FOR UPDATE SKIP LOCKED` so
    /// replicas never claim the same task.
    pub async fn claim_tasks(&self, owner: &str, ttl_ms: i64, limit: u32) -> Result<Vec<i64>> {
        let now = now_millis();
        // A queued task (an earlier one holds its pool) is claimed only to
        // carry out a command (pause, cancel); it does not start.
        let wanted = format!(
            "((t.state in ('pending', 'running') and not exists ({QUEUED})) \
              or t.command is not null) \
             and (t.lease_until is null or t.lease_until < $1)"
        );
        let mut tx = self.pool.begin().await?;
        let lock = if self.backend == Backend::Postgres {
            " for update skip locked"
        } else {
            ""
        };
        let ids: Vec<(i64,)> = sqlx::query_as(&format!(
            "select t.id from tasks t where {wanted} order by t.id limit $2{lock}"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::new();
        for (id,) in ids {
            // Compare-and-set: on SQLite this is what keeps two processes
            // from both taking an expired lease.
            let done = sqlx::query(
                "update tasks set lease_owner = $1, lease_until = $2 where id = $3 \
                 and (lease_until is null or lease_until < $4)",
            )
            .bind(owner)
            .bind(now + ttl_ms)
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                claimed.push(id);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Extends `owner`'s lease on a task; false when it was lost.
    pub async fn renew_lease(&self, id: i64, owner: &str, ttl_ms: i64) -> Result<bool> {
        let done =
            sqlx::query("update tasks set lease_until = $1 where id = $2 and lease_owner = $3")
                .bind(now_millis() + ttl_ms)
                .bind(id)
                .bind(owner)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a task's lease back (the task is paused or ended).
    pub async fn release_lease(&self, id: i64, owner: &str) -> Result<()> {
        sqlx::query(
            "update tasks set lease_owner = null, lease_until = null \
             where id = $1 and lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The waiting command of a task `owner` drives, if any.
    pub async fn task_command(&self, id: i64, owner: &str) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("select command from tasks where id = $1 and lease_owner = $2")
                .bind(id)
                .bind(owner)
                .fetch_optional(&self.reads)
                .await?;
        Ok(row.and_then(|(command,)| command))
    }

    /// Marks `command` carried out (a newer one stays).
    pub async fn clear_task_command(&self, id: i64, command: &str) -> Result<()> {
        sqlx::query(
            "update tasks set command = null, version = version + 1 where id = $1 and command = $2",
        )
        .bind(id)
        .bind(command)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes a task's state as `owner` (no-op when the lease was lost).
    pub async fn save_task_state(
        &self,
        id: i64,
        owner: &str,
        state: &str,
        reason: &str,
        started: bool,
        finished: bool,
    ) -> Result<bool> {
        let now = now_millis();
        let done = sqlx::query(
            "update tasks set state = $1, reason = $2, updated_at = $3, version = version + 1, \
             started_at = case when $4 = 1 and started_at is null then $3 else started_at end, \
             finished_at = case when $5 = 1 then $3 else null end \
             where id = $6 and lease_owner = $7",
        )
        .bind(state)
        .bind(reason)
        .bind(now)
        .bind(i64::from(started))
        .bind(i64::from(finished))
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Writes task nodes' fields and their steps in one transaction, then
    /// moves the task's version once: a reader that sees the new version
    /// sees every node whole. Nodes that ended together are written
    /// together, which keeps the store's share of a large task small.
    pub async fn save_task_nodes(
        &self,
        task_id: i64,
        nodes: &[(TaskNodeRecord, Vec<TaskStepRecord>)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (node, steps) in nodes {
            sqlx::query(
                "update task_nodes set node_id = $1, machine_id = $2, address = $3, state = $4 \
                 where task_id = $5 and idx = $6",
            )
            .bind(node.node_id)
            .bind(node.machine_id)
            .bind(&node.address)
            .bind(&node.state)
            .bind(task_id)
            .bind(node.idx)
            .execute(&mut *tx)
            .await?;
            for step in steps {
                sqlx::query(
                    "update task_steps set state = $1, attempts = $2, not_before = $3, \
                     started_at = $4, finished_at = $5, output = $6, error = $7, \
                     compensation = $8, compensation_output = $9 \
                     where task_id = $10 and node_idx = $11 and step_idx = $12",
                )
                .bind(&step.state)
                .bind(step.attempts)
                .bind(step.not_before)
                .bind(step.started_at)
                .bind(step.finished_at)
                .bind(&step.output)
                .bind(&step.error)
                .bind(&step.compensation)
                .bind(&step.compensation_output)
                .bind(task_id)
                .bind(step.node_idx)
                .bind(step.step_idx)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("update tasks set updated_at = $1, version = version + 1 where id = $2")
            .bind(now_millis())
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A task's version: it moves whenever what [`Store::task`],
    /// [`Store::task_nodes`] or [`Store::task_steps`] read changes.
    pub async fn task_version(&self, id: i64) -> Result<i64> {
        let row: Option<(i64,)> = sqlx::query_as("select version from tasks where id = $1")
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.map(|(v,)| v).ok_or(Error::NotFound { what: "task" })
    }

    /// Clears the step logs of tasks that ended before `cutoff` (the task
    /// and its steps' states stay); running tasks are never touched.
    /// Returns how many tasks lost logs.
    pub async fn clear_task_logs_ended_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        let (tasks,): (i64,) = sqlx::query_as(
            "select count(distinct task_id) from task_steps where output <> '' and task_id in \
             (select id from tasks where finished_at is not null and finished_at < $1)",
        )
        .bind(super::millis(cutoff))
        .fetch_one(&self.pool)
        .await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "update tasks set version = version + 1 where id in (select task_id from task_steps \
             where output <> '' and task_id in \
             (select id from tasks where finished_at is not null and finished_at < $1))",
        )
        .bind(super::millis(cutoff))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "update task_steps set output = '' where output <> '' and task_id in \
             (select id from tasks where finished_at is not null and finished_at < $1)",
        )
        .bind(super::millis(cutoff))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u64::try_from(tasks).unwrap_or_default())
    }

    /// The unfinished shrink of `pool_id` that removes `node_id`, if any
    /// (so asking again answers the same task).
    pub async fn removal_of_node(&self, pool_id: i64, node_id: i64) -> Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as(&format!(
            "select t.id from tasks t join task_nodes n on n.task_id = t.id \
             where t.pool_id = $1 and n.node_id = $2 and t.kind = 'shrink' \
             and t.state in {ACTIVE} order by t.id limit 1"
        ))
        .bind(pool_id)
        .bind(node_id)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|(id,)| id))
    }

    /// A node of a pool by machine (the expand step's replay check).
    pub async fn node_of_machine(&self, machine_id: i64) -> Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as("select id from nodes where machine_id = $1")
            .bind(machine_id)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.map(|(id,)| id))
    }

    /// Records how a deploy of `image` ended: a finished one makes it the
    /// service's image (the one before it becomes the previous image); one
    /// that stopped short leaves some nodes on it, so a rollback restores
    /// the service's image.
    pub async fn deploy_ended(&self, service_id: i64, image: &str, finished: bool) -> Result<()> {
        // SET expressions read the row as it was before the update.
        let sql = if finished {
            "update services set previous_image = case when image <> $1 then image \
             else previous_image end, image = $1, unfinished_image = null, updated_at = $2 \
             where id = $3"
        } else {
            "update services set unfinished_image = $1, updated_at = $2 \
             where id = $3 and image <> $1"
        };
        sqlx::query(sql)
            .bind(image)
            .bind(now_millis())
            .bind(service_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the image a node's container was started from.
    pub async fn set_node_image(&self, node_id: i64, image: &str) -> Result<()> {
        sqlx::query("update nodes set image = $1, updated_at = $2 where id = $3")
            .bind(image)
            .bind(now_millis())
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets a node's state.
    pub async fn set_node_state(&self, node_id: i64, state: &str) -> Result<()> {
        sqlx::query("update nodes set state = $1, updated_at = $2 where id = $3")
            .bind(state)
            .bind(now_millis())
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
