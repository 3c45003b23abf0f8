//! The image registry's retention rules and clean-up history.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::{Result, Store, Window, datetime, now_millis};

/// How many tags of a repository a clean-up keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRecord {
    /// The repository.
    pub repository: String,
    /// Keep this many newest tags.
    pub keep_last: Option<u32>,
    /// Keep tags built less than this many days ago.
    pub keep_days: Option<u32>,
    /// When it was last set.
    pub updated_at: OffsetDateTime,
    /// Who set it.
    pub updated_by: String,
}

/// One clean-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupRecord {
    /// Its id.
    pub id: i64,
    /// Who ran it.
    pub actor: String,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    /// JSON: the tags it deleted.
    pub deleted: String,
    /// Blobs the garbage collection deleted.
    pub blobs_deleted: u64,
    /// Bytes it freed.
    pub freed_bytes: u64,
    /// What went wrong, or a note.
    pub message: String,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

#[derive(FromRow)]
struct RetentionRow {
    repository: String,
    keep_last: Option<i64>,
    keep_days: Option<i64>,
    updated_at: i64,
    updated_by: String,
}

impl From<RetentionRow> for RetentionRecord {
    fn from(r: RetentionRow) -> Self {
        Self {
            repository: r.repository,
            keep_last: r.keep_last.and_then(|n| u32::try_from(n).ok()),
            keep_days: r.keep_days.and_then(|n| u32::try_from(n).ok()),
            updated_at: datetime(r.updated_at),
            updated_by: r.updated_by,
        }
    }
}

#[derive(FromRow)]
struct CleanupRow {
    id: i64,
    actor: String,
    state: String,
    deleted: String,
    blobs_deleted: i64,
    freed_bytes: i64,
    message: String,
    started_at: i64,
    finished_at: Option<i64>,
}

impl From<CleanupRow> for CleanupRecord {
    fn from(r: CleanupRow) -> Self {
        Self {
            id: r.id,
            actor: r.actor,
            state: r.state,
            deleted: r.deleted,
            blobs_deleted: u64::try_from(r.blobs_deleted).unwrap_or_default(),
            freed_bytes: u64::try_from(r.freed_bytes).unwrap_or_default(),
            message: r.message,
            started_at: datetime(r.started_at),
            finished_at: r.finished_at.map(datetime),
        }
    }
}

const RETENTION: &str = "repository, keep_last, keep_days, updated_at, updated_by";
const CLEANUP: &str = "id, actor, state, deleted, blobs_deleted, freed_bytes, message, \
                       started_at, finished_at";

impl Store {
    /// A window of the retention rules, by repository, and how many there are.
    pub async fn list_retention(&self, window: Window) -> Result<(Vec<RetentionRecord>, u64)> {
        let (total,): (i64,) = sqlx::query_as("select count(*) from registry_retention")
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<RetentionRow> = sqlx::query_as(&format!(
            "select {RETENTION} from registry_retention order by repository limit $1 offset $2"
        ))
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter().map(Into::into).collect(),
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// Every retention rule (a clean-up runs them all).
    pub async fn all_retention(&self) -> Result<Vec<RetentionRecord>> {
        let rows: Vec<RetentionRow> = sqlx::query_as(&format!(
            "select {RETENTION} from registry_retention order by repository"
        ))
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Sets the rule of `repository` (made or replaced).
    pub async fn set_retention(
        &self,
        repository: &str,
        keep_last: Option<u32>,
        keep_days: Option<u32>,
        actor: &str,
    ) -> Result<RetentionRecord> {
        let row: RetentionRow = sqlx::query_as(&format!(
            "insert into registry_retention ({RETENTION}) values ($1, $2, $3, $4, $5) \
             on conflict (repository) do update set keep_last = excluded.keep_last, \
             keep_days = excluded.keep_days, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by returning {RETENTION}"
        ))
        .bind(repository)
        .bind(keep_last.map(i64::from))
        .bind(keep_days.map(i64::from))
        .bind(now_millis())
        .bind(actor)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    /// Removes the rule of `repository`; false when it had none.
    pub async fn delete_retention(&self, repository: &str) -> Result<bool> {
        let done = sqlx::query("delete from registry_retention where repository = $1")
            .bind(repository)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a clean-up that starts now.
    pub async fn start_cleanup(&self, actor: &str) -> Result<CleanupRecord> {
        let row: CleanupRow = sqlx::query_as(&format!(
            "insert into registry_cleanups (actor, state, started_at) values ($1, 'running', $2) \
             returning {CLEANUP}"
        ))
        .bind(actor)
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    /// Records how a clean-up ended.
    pub async fn finish_cleanup(
        &self,
        id: i64,
        state: &str,
        deleted: &str,
        blobs_deleted: u64,
        freed_bytes: u64,
        message: &str,
    ) -> Result<CleanupRecord> {
        let row: CleanupRow = sqlx::query_as(&format!(
            "update registry_cleanups set state = $1, deleted = $2, blobs_deleted = $3, \
             freed_bytes = $4, message = $5, finished_at = $6 where id = $7 returning {CLEANUP}"
        ))
        .bind(state)
        .bind(deleted)
        .bind(i64::try_from(blobs_deleted).unwrap_or(i64::MAX))
        .bind(i64::try_from(freed_bytes).unwrap_or(i64::MAX))
        .bind(message)
        .bind(now_millis())
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    /// A window of the clean-ups, newest first, and how many there are.
    pub async fn list_cleanups(&self, window: Window) -> Result<(Vec<CleanupRecord>, u64)> {
        let (total,): (i64,) = sqlx::query_as("select count(*) from registry_cleanups")
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<CleanupRow> = sqlx::query_as(&format!(
            "select {CLEANUP} from registry_cleanups order by id desc limit $1 offset $2"
        ))
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter().map(Into::into).collect(),
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// Marks the clean-ups a stopped DCP left running as failed; answers
    /// how many.
    pub async fn end_abandoned_cleanups(&self) -> Result<u64> {
        let done = sqlx::query(
            "update registry_cleanups set state = 'failed', finished_at = $1, \
             message = 'DCP stopped during this clean-up; tags it had deleted stay deleted' \
             where state = 'running'",
        )
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
