//! Commands and command groups: what remote executions run.

use std::collections::BTreeMap;

use dcp_api_types::CommandMode;
use sqlx::FromRow;
use time::OffsetDateTime;

use super::{
    Dependent, Error, Result, Store, Window, conflict_on, contains_pattern, datetime, now_millis,
    parse_name, placeholders,
};

/// Groups that use a command keep it from being deleted.
const COMMAND_DEPENDENTS: &[Dependent] = &[Dependent {
    kind: "command group",
    names_sql: "select distinct g.name from command_group_steps s \
                join command_groups g on g.id = s.group_id where s.command_id = $1 \
                order by g.name limit 10",
}];

/// Tables that reference a command group. Task templates add themselves here.
const GROUP_DEPENDENTS: &[Dependent] = &[Dependent {
    kind: "machine template",
    names_sql: "select name from machine_templates where init_group_id = $1 order by name limit 5",
}];

/// A stored command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// How it runs.
    pub mode: CommandMode,
    /// The command line, script or module call.
    pub script: String,
    /// Parameter definitions (JSON).
    pub params: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    pub updated_at: OffsetDateTime,
}

/// The writable fields of a command, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandChange {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// How it runs.
    pub mode: CommandMode,
    /// The command line, script or module call.
    pub script: String,
    /// Parameter definitions (JSON).
    pub params: String,
}

/// A stored command group with its commands in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The commands, in order.
    pub steps: Vec<CommandRecord>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    pub updated_at: OffsetDateTime,
}

/// The writable fields of a command group, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The commands' ids, in order.
    pub command_ids: Vec<i64>,
}

#[derive(FromRow)]
struct CommandRow {
    id: i64,
    name: String,
    description: String,
    mode: String,
    script: String,
    params: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<CommandRow> for CommandRecord {
    type Error = Error;

    fn try_from(row: CommandRow) -> Result<Self> {
        Ok(Self {
            id: row.id,
            name: row.name,
            description: row.description,
            mode: parse_name("commands.mode", &row.mode)?,
            script: row.script,
            params: row.params,
            created_at: datetime(row.created_at),
            updated_at: datetime(row.updated_at),
        })
    }
}

#[derive(FromRow)]
struct GroupRow {
    id: i64,
    name: String,
    description: String,
    created_at: i64,
    updated_at: i64,
}

const COMMAND_COLUMNS: &str = "id, name, description, mode, script, params, created_at, updated_at";
const NAME_FILTER: &str = "($1 is null or name like $1 escape '\\')";

impl Store {
    /// Creates a command; [`Error::Conflict`] on `name` if it is taken.
    pub async fn create_command(&self, change: &CommandChange) -> Result<CommandRecord> {
        let row: CommandRow = sqlx::query_as(&format!(
            "insert into commands (name, description, mode, script, params, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $6) returning {COMMAND_COLUMNS}"
        ))
        .bind(&change.name)
        .bind(&change.description)
        .bind(change.mode.as_str())
        .bind(&change.script)
        .bind(&change.params)
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        row.try_into()
    }

    /// The command with this id.
    pub async fn command(&self, id: i64) -> Result<CommandRecord> {
        self.commands(&[id])
            .await?
            .remove(&id)
            .ok_or(Error::NotFound { what: "command" })
    }

    /// The commands with these ids that exist, by id.
    pub async fn commands(&self, ids: &[i64]) -> Result<BTreeMap<i64, CommandRecord>> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let sql = format!(
            "select {COMMAND_COLUMNS} from commands where id in ({})",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query_as::<_, CommandRow>(&sql);
        for id in ids {
            query = query.bind(id);
        }
        query
            .fetch_all(&self.reads)
            .await?
            .into_iter()
            .map(|row| CommandRecord::try_from(row).map(|c| (c.id, c)))
            .collect()
    }

    /// One window of the commands whose name contains `name`, ordered by
    /// name, and how many match in all.
    pub async fn list_commands(
        &self,
        name: Option<&str>,
        window: Window,
    ) -> Result<(Vec<CommandRecord>, u64)> {
        let pattern = name.map(contains_pattern);
        let (total,): (i64,) = sqlx::query_as(&format!(
            "select count(*) from commands where {NAME_FILTER}"
        ))
        .bind(&pattern)
        .fetch_one(&self.reads)
        .await?;
        let rows: Vec<CommandRow> = sqlx::query_as(&format!(
            "select {COMMAND_COLUMNS} from commands where {NAME_FILTER} \
             order by name, id limit $2 offset $3"
        ))
        .bind(&pattern)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter()
                .map(CommandRecord::try_from)
                .collect::<Result<_>>()?,
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// Replaces a command's writable fields.
    pub async fn update_command(&self, id: i64, change: &CommandChange) -> Result<CommandRecord> {
        let row: Option<CommandRow> = sqlx::query_as(&format!(
            "update commands set name = $1, description = $2, mode = $3, script = $4, \
             params = $5, updated_at = $6 where id = $7 returning {COMMAND_COLUMNS}"
        ))
        .bind(&change.name)
        .bind(&change.description)
        .bind(change.mode.as_str())
        .bind(&change.script)
        .bind(&change.params)
        .bind(now_millis())
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        row.ok_or(Error::NotFound { what: "command" })?.try_into()
    }

    /// Deletes a command; [`Error::InUse`] while a group uses it.
    pub async fn delete_command(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("command", COMMAND_DEPENDENTS, id)
            .await?;
        let done = sqlx::query("delete from commands where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(in_use_race("command"))?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "command" });
        }
        Ok(())
    }

    /// Creates a command group; [`Error::Conflict`] on `name` if it is taken,
    /// [`Error::NotFound`] if a command does not exist.
    pub async fn create_group(&self, change: &GroupChange) -> Result<GroupRecord> {
        let mut tx = self.pool.begin().await?;
        let (id,): (i64,) = sqlx::query_as(
            "insert into command_groups (name, description, created_at, updated_at) \
             values ($1, $2, $3, $3) returning id",
        )
        .bind(&change.name)
        .bind(&change.description)
        .bind(now_millis())
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict_on("name", &change.name))?;
        insert_steps(&mut tx, id, &change.command_ids).await?;
        tx.commit().await?;
        self.group(id).await
    }

    /// The command group with this id.
    pub async fn group(&self, id: i64) -> Result<GroupRecord> {
        let row: Option<GroupRow> = sqlx::query_as(
            "select id, name, description, created_at, updated_at from command_groups where id = $1",
        )
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        let row = row.ok_or(Error::NotFound {
            what: "command group",
        })?;
        Ok(self.with_steps(vec![row]).await?.remove(0))
    }

    /// One window of the groups whose name contains `name`, ordered by name,
    /// and how many match in all.
    pub async fn list_groups(
        &self,
        name: Option<&str>,
        window: Window,
    ) -> Result<(Vec<GroupRecord>, u64)> {
        let pattern = name.map(contains_pattern);
        let (total,): (i64,) = sqlx::query_as(&format!(
            "select count(*) from command_groups where {NAME_FILTER}"
        ))
        .bind(&pattern)
        .fetch_one(&self.reads)
        .await?;
        let rows: Vec<GroupRow> = sqlx::query_as(&format!(
            "select id, name, description, created_at, updated_at from command_groups \
             where {NAME_FILTER} order by name, id limit $2 offset $3"
        ))
        .bind(&pattern)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            self.with_steps(rows).await?,
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// Replaces a group's fields and its commands.
    pub async fn update_group(&self, id: i64, change: &GroupChange) -> Result<GroupRecord> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "update command_groups set name = $1, description = $2, updated_at = $3 where id = $4",
        )
        .bind(&change.name)
        .bind(&change.description)
        .bind(now_millis())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(conflict_on("name", &change.name))?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                what: "command group",
            });
        }
        sqlx::query("delete from command_group_steps where group_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_steps(&mut tx, id, &change.command_ids).await?;
        tx.commit().await?;
        self.group(id).await
    }

    /// Deletes a command group; [`Error::InUse`] while a task template uses it.
    pub async fn delete_group(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("command group", GROUP_DEPENDENTS, id)
            .await?;
        let done = sqlx::query("delete from command_groups where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                what: "command group",
            });
        }
        Ok(())
    }

    /// Attaches each group's commands, in order, with one query.
    async fn with_steps(&self, rows: Vec<GroupRow>) -> Result<Vec<GroupRecord>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "select s.group_id, c.id, c.name, c.description, c.mode, c.script, c.params, \
             c.created_at, c.updated_at from command_group_steps s \
             join commands c on c.id = s.command_id where s.group_id in ({}) \
             order by s.group_id, s.position",
            placeholders(1, rows.len())
        );
        let mut query = sqlx::query_as::<_, StepRow>(&sql);
        for row in &rows {
            query = query.bind(row.id);
        }
        let mut steps: BTreeMap<i64, Vec<CommandRecord>> = BTreeMap::new();
        for step in query.fetch_all(&self.pool).await? {
            steps
                .entry(step.group_id)
                .or_default()
                .push(step.command.try_into()?);
        }
        Ok(rows
            .into_iter()
            .map(|row| GroupRecord {
                steps: steps.remove(&row.id).unwrap_or_default(),
                id: row.id,
                name: row.name,
                description: row.description,
                created_at: datetime(row.created_at),
                updated_at: datetime(row.updated_at),
            })
            .collect())
    }
}

#[derive(FromRow)]
struct StepRow {
    group_id: i64,
    #[sqlx(flatten)]
    command: CommandRow,
}

async fn insert_steps(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    group_id: i64,
    command_ids: &[i64],
) -> Result<()> {
    for (position, command_id) in command_ids.iter().enumerate() {
        sqlx::query(
            "insert into command_group_steps (group_id, position, command_id) values ($1, $2, $3)",
        )
        .bind(group_id)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(command_id)
        .execute(&mut **tx)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                Error::NotFound { what: "command" }
            }
            _ => Error::from(err),
        })?;
    }
    Ok(())
}

/// A group that gained the command between the check and the delete: the
/// foreign key refuses, and the answer is the same as the check's.
fn in_use_race(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |err| match &err {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => Error::InUse {
            what,
            by: vec!["a command group".to_owned()],
        },
        _ => Error::from(err),
    }
}
