//! The overview's aggregates: counts grouped in the database and short,
//! bounded lists, so the page costs the same with ten machines or ten
//! thousand.

use dcp_api_types::{ExecutionState, MachineState, TaskKind, TaskState};
use sqlx::{FromRow, any::AnyRow};
use time::OffsetDateTime;

use super::{
    Error, Result, Store, datetime, millis, parse_name, services::NODE_STATE, tasks::ACTIVE,
};

/// Live machines of one provider in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCountRecord {
    /// The provider plugin, or `adopted`.
    pub provider: String,
    /// The state.
    pub state: MachineState,
    /// How many.
    pub machines: u64,
}

/// A pool and its nodes per state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealthRecord {
    /// The pool.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its service.
    pub service_id: i64,
    /// The service's name.
    pub service_name: String,
    /// Nodes in all.
    pub nodes: u64,
    /// Nodes not started.
    pub pending: u64,
    /// Nodes running the service.
    pub running: u64,
    /// Nodes whose last step failed.
    pub failed: u64,
    /// Nodes being taken out.
    pub removing: u64,
}

/// A task as the overview lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskBriefRecord {
    /// Id.
    pub id: i64,
    /// What it does.
    pub kind: TaskKind,
    /// The pool.
    pub pool_id: i64,
    /// The pool's name.
    pub pool_name: String,
    /// Where it stands.
    pub state: TaskState,
    /// Why.
    pub reason: String,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

/// An execution as the overview lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionBriefRecord {
    /// Id.
    pub id: i64,
    /// What ran.
    pub title: String,
    /// Where it stands.
    pub state: ExecutionState,
    /// Who started it.
    pub created_by: String,
    /// When it was accepted.
    pub created_at: OffsetDateTime,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

/// Work under way and work that failed since a time: counts and the
/// newest few of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity<T> {
    /// How many are under way.
    pub active: u64,
    /// The newest of them, newest first.
    pub active_recent: Vec<T>,
    /// How many ended failed or partially failed since the time.
    pub failed: u64,
    /// The last to end so, last first.
    pub failed_recent: Vec<T>,
}

/// Instance-hour quotas over every template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaTotalsRecord {
    /// Templates.
    pub templates: u64,
    /// Hours granted.
    pub quota_hours: i64,
    /// Hours charged.
    pub used_hours: i64,
}

#[derive(FromRow)]
struct PoolHealthRow {
    id: i64,
    name: String,
    service_id: i64,
    service_name: String,
    nodes: i64,
    pending: i64,
    running: i64,
    failed: i64,
    removing: i64,
}

#[derive(FromRow)]
struct TaskBriefRow {
    id: i64,
    kind: String,
    pool_id: i64,
    pool_name: String,
    state: String,
    reason: String,
    created_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<TaskBriefRow> for TaskBriefRecord {
    type Error = Error;

    fn try_from(r: TaskBriefRow) -> Result<Self> {
        Ok(Self {
            id: r.id,
            kind: parse_name("tasks.kind", &r.kind)?,
            pool_id: r.pool_id,
            pool_name: r.pool_name,
            state: parse_name("tasks.state", &r.state)?,
            reason: r.reason,
            created_at: datetime(r.created_at),
            finished_at: r.finished_at.map(datetime),
        })
    }
}

#[derive(FromRow)]
struct ExecutionBriefRow {
    id: i64,
    title: String,
    state: String,
    created_by: String,
    created_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<ExecutionBriefRow> for ExecutionBriefRecord {
    type Error = Error;

    fn try_from(r: ExecutionBriefRow) -> Result<Self> {
        Ok(Self {
            id: r.id,
            title: r.title,
            state: parse_name("executions.state", &r.state)?,
            created_by: r.created_by,
            created_at: datetime(r.created_at),
            finished_at: r.finished_at.map(datetime),
        })
    }
}

/// The SQL of one kind of work for [`Store::activity`]: `select` lists
/// the columns from `x` (the table, joined as needed); `active` is the
/// list of states under way.
struct ActivitySql {
    table: &'static str,
    select: &'static str,
    active: &'static str,
}

const FAILED: &str = "('failed', 'partially_failed')";

const TASKS: ActivitySql = ActivitySql {
    table: "tasks",
    select: "select x.id, x.kind, x.pool_id, p.name as pool_name, x.state, x.reason, \
             x.created_at, x.finished_at from tasks x join pools p on p.id = x.pool_id",
    active: ACTIVE,
};

const EXECUTIONS: ActivitySql = ActivitySql {
    table: "executions",
    select: "select x.id, x.title, x.state, x.created_by, x.created_at, x.finished_at \
             from executions x",
    active: "('pending', 'running')",
};

impl Store {
    /// Live machines per provider and state, by provider then state.
    pub async fn fleet_counts(&self) -> Result<Vec<FleetCountRecord>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "select provider, state, count(*) from machines where state <> 'deleted' \
             group by provider, state order by provider, state",
        )
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter()
            .map(|(provider, state, machines)| {
                Ok(FleetCountRecord {
                    provider,
                    state: parse_name("machines.state", &state)?,
                    machines: count(machines),
                })
            })
            .collect()
    }

    /// How many pools there are, and at most `limit` of them with their
    /// nodes per state, the least healthy first.
    pub async fn pool_health(&self, limit: u32) -> Result<(u64, Vec<PoolHealthRecord>)> {
        let (total,): (i64,) = sqlx::query_as("select count(*) from pools")
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<PoolHealthRow> = sqlx::query_as(&format!(
            "select p.id, p.name, p.service_id, s.name as service_name, count(n.id) as nodes, \
             count(case when n.state = 'pending' then 1 end) as pending, \
             count(case when n.state = 'running' then 1 end) as running, \
             count(case when n.state = 'failed' then 1 end) as failed, \
             count(case when n.state = 'removing' then 1 end) as removing \
             from pools p join services s on s.id = p.service_id \
             left join (select id, pool_id, {NODE_STATE} as state from nodes) n on n.pool_id = p.id \
             group by p.id, p.name, p.service_id, s.name \
             order by failed desc, pending desc, removing desc, p.name, p.id limit $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        let pools = rows
            .into_iter()
            .map(|r| PoolHealthRecord {
                id: r.id,
                name: r.name,
                service_id: r.service_id,
                service_name: r.service_name,
                nodes: count(r.nodes),
                pending: count(r.pending),
                running: count(r.running),
                failed: count(r.failed),
                removing: count(r.removing),
            })
            .collect();
        Ok((count(total), pools))
    }

    /// Tasks under way and those that failed since `since`, `limit` of each.
    pub async fn task_activity(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Activity<TaskBriefRecord>> {
        self.activity::<TaskBriefRow, _>(&TASKS, since, limit).await
    }

    /// Executions under way and those that failed since `since`, `limit` of each.
    pub async fn execution_activity(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Activity<ExecutionBriefRecord>> {
        self.activity::<ExecutionBriefRow, _>(&EXECUTIONS, since, limit)
            .await
    }

    async fn activity<R, T>(
        &self,
        sql: &ActivitySql,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Activity<T>>
    where
        R: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
        T: TryFrom<R, Error = Error>,
    {
        let ActivitySql {
            table,
            select,
            active,
        } = sql;
        let since = millis(since);
        let failed_since = format!("state in {FAILED} and finished_at >= $1");
        let (active_count, failed_count): (i64, i64) = sqlx::query_as(&format!(
            "select count(case when state in {active} then 1 end), \
             count(case when {failed_since} then 1 end) \
             from {table} where state in {active} or ({failed_since})"
        ))
        .bind(since)
        .fetch_one(&self.reads)
        .await?;
        let active_rows: Vec<R> = sqlx::query_as(&format!(
            "{select} where x.state in {active} order by x.id desc limit $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        let failed_rows: Vec<R> = sqlx::query_as(&format!(
            "{select} where x.state in {FAILED} and x.finished_at >= $1 \
             order by x.finished_at desc, x.id desc limit $2"
        ))
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        Ok(Activity {
            active: count(active_count),
            active_recent: active_rows
                .into_iter()
                .map(T::try_from)
                .collect::<Result<_>>()?,
            failed: count(failed_count),
            failed_recent: failed_rows
                .into_iter()
                .map(T::try_from)
                .collect::<Result<_>>()?,
        })
    }

    /// Quotas granted and hours charged over every template.
    pub async fn quota_totals(&self) -> Result<QuotaTotalsRecord> {
        // `cast(… as bigint)`: SQLite sums integers as integers, PostgreSQL as numeric.
        let (templates, quota_hours, used_hours): (i64, i64, i64) = sqlx::query_as(
            "select (select count(*) from machine_templates), \
             cast(coalesce((select sum(quota_hours) from machine_templates), 0) as bigint), \
             cast(coalesce((select sum(charged_hours) from machines \
             where template_id is not null), 0) as bigint)",
        )
        .fetch_one(&self.reads)
        .await?;
        Ok(QuotaTotalsRecord {
            templates: count(templates),
            quota_hours,
            used_hours,
        })
    }
}

/// A database count as a `u64`.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}
