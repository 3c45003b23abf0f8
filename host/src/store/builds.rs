//! Image projects and their builds, with each build's log.
//!
//! A build runs in the process that owns it (`owner`), which renews
//! `heartbeat_at` while it is queued or running; a build whose owner
//! stopped renewing is interrupted by whichever process sweeps next.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::{Error, Result, Store, Window, conflict_on, datetime, now_millis};

/// The states of a build that has not ended.
const ACTIVE: &str = "('queued', 'building', 'pushing')";

/// An image project, its JSON parts as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRecord {
    /// Its id.
    pub id: i64,
    /// The registry repository its images go to.
    pub repository: String,
    /// What it is for.
    pub description: String,
    /// JSON: how its Dockerfile is made, without secrets.
    pub dockerfile: String,
    /// JSON: its deploy media without secrets.
    pub media: Option<String>,
    /// The Dockerfile repository's password, sealed.
    pub source_secret_sealed: Option<String>,
    /// The media's password, sealed.
    pub media_secret_sealed: Option<String>,
    /// JSON object of build arguments.
    pub build_args: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// What creates or changes a project.
#[derive(Debug, Clone)]
pub struct ProjectChange {
    /// The repository.
    pub repository: String,
    /// What it is for.
    pub description: String,
    /// JSON: the Dockerfile source.
    pub dockerfile: String,
    /// JSON: the media.
    pub media: Option<String>,
    /// Sealed password of the Dockerfile repository.
    pub source_secret_sealed: Option<String>,
    /// Sealed password of the media.
    pub media_secret_sealed: Option<String>,
    /// JSON object of build arguments.
    pub build_args: String,
}

/// One build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    /// Its id.
    pub id: i64,
    /// Its project.
    pub project_id: i64,
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// `queued`, `building`, `pushing`, `succeeded`, `failed`,
    /// `cancelled` or `interrupted`.
    pub state: String,
    /// Who asked for it.
    pub requested_by: String,
    /// The commit of a git Dockerfile.
    pub source_revision: Option<String>,
    /// The commit or revision of the media.
    pub media_revision: Option<String>,
    /// The pushed manifest's digest.
    pub digest: Option<String>,
    /// Compressed bytes in the registry.
    pub size: Option<u64>,
    /// Why it failed, or a note.
    pub message: String,
    /// Without the layer cache.
    pub no_cache: bool,
    /// JSON object of the build arguments it used.
    pub build_args: String,
    /// Bytes of log.
    pub log_bytes: u64,
    /// Who cancelled it, once someone asked.
    pub cancel_requested: Option<String>,
    /// The process that runs it.
    pub owner: String,
    /// When it was asked for.
    pub created_at: OffsetDateTime,
    /// When a builder took it.
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

impl BuildRecord {
    /// Whether it ended.
    #[must_use]
    pub fn is_final(&self) -> bool {
        !matches!(self.state.as_str(), "queued" | "building" | "pushing")
    }
}

/// A build to record.
#[derive(Debug, Clone)]
pub struct NewBuild<'a> {
    /// The project.
    pub project_id: i64,
    /// The repository.
    pub repository: &'a str,
    /// The tag.
    pub tag: &'a str,
    /// Who asks.
    pub requested_by: &'a str,
    /// Makes a retried request record one build.
    pub idempotency_key: Option<&'a str>,
    /// Without the layer cache.
    pub no_cache: bool,
    /// JSON object of build arguments.
    pub build_args: &'a str,
    /// The process that will run it.
    pub owner: &'a str,
}

/// How a build ended.
#[derive(Debug, Clone, Default)]
pub struct BuildEnd<'a> {
    /// `succeeded`, `failed`, `cancelled` or `interrupted`.
    pub state: &'a str,
    /// Why, or a note.
    pub message: &'a str,
    /// The pushed digest.
    pub digest: Option<&'a str>,
    /// Its size.
    pub size: Option<u64>,
}

#[derive(FromRow)]
struct ProjectRow {
    id: i64,
    repository: String,
    description: String,
    dockerfile: String,
    media: Option<String>,
    source_secret_sealed: Option<String>,
    media_secret_sealed: Option<String>,
    build_args: String,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

impl From<ProjectRow> for ProjectRecord {
    fn from(r: ProjectRow) -> Self {
        Self {
            id: r.id,
            repository: r.repository,
            description: r.description,
            dockerfile: r.dockerfile,
            media: r.media,
            source_secret_sealed: r.source_secret_sealed,
            media_secret_sealed: r.media_secret_sealed,
            build_args: r.build_args,
            created_by: r.created_by,
            created_at: datetime(r.created_at),
            updated_at: datetime(r.updated_at),
        }
    }
}

#[derive(FromRow)]
struct BuildRow {
    id: i64,
    project_id: i64,
    repository: String,
    tag: String,
    state: String,
    requested_by: String,
    source_revision: Option<String>,
    media_revision: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    message: String,
    no_cache: i64,
    build_args: String,
    log_bytes: i64,
    cancel_requested: Option<String>,
    owner: String,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

impl From<BuildRow> for BuildRecord {
    fn from(r: BuildRow) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            repository: r.repository,
            tag: r.tag,
            state: r.state,
            requested_by: r.requested_by,
            source_revision: r.source_revision,
            media_revision: r.media_revision,
            digest: r.digest,
            size: r.size.and_then(|s| u64::try_from(s).ok()),
            message: r.message,
            no_cache: r.no_cache != 0,
            build_args: r.build_args,
            log_bytes: u64::try_from(r.log_bytes).unwrap_or_default(),
            cancel_requested: r.cancel_requested,
            owner: r.owner,
            created_at: datetime(r.created_at),
            started_at: r.started_at.map(datetime),
            finished_at: r.finished_at.map(datetime),
        }
    }
}

const PROJECT: &str = "id, repository, description, dockerfile, media, source_secret_sealed, \
                       media_secret_sealed, build_args, created_by, created_at, updated_at";
const BUILD: &str = "id, project_id, repository, tag, state, requested_by, source_revision, \
                     media_revision, digest, size, message, no_cache, build_args, log_bytes, \
                     cancel_requested, owner, created_at, started_at, finished_at";

impl Store {
    /// Records a new project.
    ///
    /// # Errors
    /// [`Error::Conflict`] on `repository` when a project has it.
    pub async fn create_project(
        &self,
        change: &ProjectChange,
        actor: &str,
    ) -> Result<ProjectRecord> {
        let now = now_millis();
        let row: ProjectRow = sqlx::query_as(&format!(
            "insert into image_projects (repository, description, dockerfile, media, \
             source_secret_sealed, media_secret_sealed, build_args, created_by, created_at, \
             updated_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) returning {PROJECT}"
        ))
        .bind(&change.repository)
        .bind(&change.description)
        .bind(&change.dockerfile)
        .bind(change.media.as_deref())
        .bind(change.source_secret_sealed.as_deref())
        .bind(change.media_secret_sealed.as_deref())
        .bind(&change.build_args)
        .bind(actor)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("repository", &change.repository))?;
        Ok(row.into())
    }

    /// One project.
    pub async fn project(&self, id: i64) -> Result<ProjectRecord> {
        let row: Option<ProjectRow> = sqlx::query_as(&format!(
            "select {PROJECT} from image_projects where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        row.map(Into::into).ok_or(Error::NotFound {
            what: "image project",
        })
    }

    /// A window of the projects, by repository, and how many there are.
    pub async fn list_projects(&self, window: Window) -> Result<(Vec<ProjectRecord>, u64)> {
        let (total,): (i64,) = sqlx::query_as("select count(*) from image_projects")
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<ProjectRow> = sqlx::query_as(&format!(
            "select {PROJECT} from image_projects order by repository limit $1 offset $2"
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

    /// Replaces a project's fields.
    pub async fn update_project(&self, id: i64, change: &ProjectChange) -> Result<ProjectRecord> {
        let row: Option<ProjectRow> = sqlx::query_as(&format!(
            "update image_projects set repository = $1, description = $2, dockerfile = $3, \
             media = $4, source_secret_sealed = $5, media_secret_sealed = $6, build_args = $7, \
             updated_at = $8 where id = $9 returning {PROJECT}"
        ))
        .bind(&change.repository)
        .bind(&change.description)
        .bind(&change.dockerfile)
        .bind(change.media.as_deref())
        .bind(change.source_secret_sealed.as_deref())
        .bind(change.media_secret_sealed.as_deref())
        .bind(&change.build_args)
        .bind(now_millis())
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(conflict_on("repository", &change.repository))?;
        row.map(Into::into).ok_or(Error::NotFound {
            what: "image project",
        })
    }

    /// Deletes a project and its build history; refused while one of its
    /// builds has not ended.
    pub async fn delete_project(&self, id: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let running: Vec<(i64,)> = sqlx::query_as(&format!(
            "select id from image_builds where project_id = $1 and state in {ACTIVE} order by id"
        ))
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        if !running.is_empty() {
            return Err(Error::InUse {
                what: "image project",
                by: running
                    .into_iter()
                    .map(|(b,)| format!("build {b}"))
                    .collect(),
            });
        }
        sqlx::query("delete from image_builds where project_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("delete from image_projects where id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                what: "image project",
            });
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a queued build; with an idempotency key already used on the
    /// project, answers that build instead (`false`).
    pub async fn create_build(&self, new: &NewBuild<'_>) -> Result<(BuildRecord, bool)> {
        if let Some(key) = new.idempotency_key
            && let Some(existing) = self.build_by_key(new.project_id, key).await?
        {
            return Ok((existing, false));
        }
        let now = now_millis();
        let inserted: std::result::Result<BuildRow, sqlx::Error> = sqlx::query_as(&format!(
            "insert into image_builds (project_id, repository, tag, state, requested_by, \
             idempotency_key, no_cache, build_args, owner, heartbeat_at, created_at) \
             values ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $9) returning {BUILD}"
        ))
        .bind(new.project_id)
        .bind(new.repository)
        .bind(new.tag)
        .bind(new.requested_by)
        .bind(new.idempotency_key)
        .bind(i64::from(new.no_cache))
        .bind(new.build_args)
        .bind(new.owner)
        .bind(now)
        .fetch_one(&self.pool)
        .await;
        let e = match inserted {
            Ok(row) => return Ok((row.into(), true)),
            Err(e) => e,
        };
        match new.idempotency_key {
            // The same key raced in from another request.
            Some(key) if super::is_unique_violation(&e) => self
                .build_by_key(new.project_id, key)
                .await?
                .map(|b| (b, false))
                .ok_or_else(|| e.into()),
            _ => Err(e.into()),
        }
    }

    async fn build_by_key(&self, project_id: i64, key: &str) -> Result<Option<BuildRecord>> {
        let row: Option<BuildRow> = sqlx::query_as(&format!(
            "select {BUILD} from image_builds where project_id = $1 and idempotency_key = $2"
        ))
        .bind(project_id)
        .bind(key)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(Into::into))
    }

    /// One build.
    pub async fn build(&self, id: i64) -> Result<BuildRecord> {
        let row: Option<BuildRow> =
            sqlx::query_as(&format!("select {BUILD} from image_builds where id = $1"))
                .bind(id)
                .fetch_optional(&self.reads)
                .await?;
        row.map(Into::into).ok_or(Error::NotFound { what: "build" })
    }

    /// A window of a project's builds, newest first, and how many there are.
    pub async fn list_builds(
        &self,
        project_id: i64,
        window: Window,
    ) -> Result<(Vec<BuildRecord>, u64)> {
        let (total,): (i64,) =
            sqlx::query_as("select count(*) from image_builds where project_id = $1")
                .bind(project_id)
                .fetch_one(&self.reads)
                .await?;
        let rows: Vec<BuildRow> = sqlx::query_as(&format!(
            "select {BUILD} from image_builds where project_id = $1 order by id desc \
             limit $2 offset $3"
        ))
        .bind(project_id)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter().map(Into::into).collect(),
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// The newest build of each of `projects` (one query for a page).
    pub async fn latest_builds(&self, projects: &[i64]) -> Result<Vec<BuildRecord>> {
        if projects.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "select {BUILD} from image_builds where id in (select max(id) from image_builds \
             where project_id in ({}) group by project_id)",
            super::placeholders(1, projects.len())
        );
        let mut query = sqlx::query_as::<_, BuildRow>(&sql);
        for id in projects {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.reads).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// How many builds `owner` has that did not end.
    pub async fn active_builds(&self, owner: &str) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as(&format!(
            "select count(*) from image_builds where owner = $1 and state in {ACTIVE}"
        ))
        .bind(owner)
        .fetch_one(&self.reads)
        .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Moves a build that has not ended to `state` (`building`, `pushing`);
    /// false when it ended meanwhile.
    pub async fn advance_build(&self, id: i64, state: &str) -> Result<bool> {
        let done = sqlx::query(&format!(
            "update image_builds set state = $1, started_at = coalesce(started_at, $2) \
             where id = $3 and state in {ACTIVE}"
        ))
        .bind(state)
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the revisions a build's sources came from.
    pub async fn set_build_revisions(
        &self,
        id: i64,
        source: Option<&str>,
        media: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "update image_builds set source_revision = coalesce($1, source_revision), \
             media_revision = coalesce($2, media_revision) where id = $3",
        )
        .bind(source)
        .bind(media)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Appends to a build's log (`bytes` is `text`'s length).
    pub async fn append_build_log(&self, id: i64, text: &str) -> Result<()> {
        sqlx::query(
            "update image_builds set log = log || $1, log_bytes = log_bytes + $2 where id = $3",
        )
        .bind(text)
        .bind(i64::try_from(text.len()).unwrap_or(i64::MAX))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A build's whole log.
    pub async fn build_log(&self, id: i64) -> Result<String> {
        let row: Option<(String,)> = sqlx::query_as("select log from image_builds where id = $1")
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.map(|(log,)| log)
            .ok_or(Error::NotFound { what: "build" })
    }

    /// Ends a build that has not ended; `None` when it had.
    pub async fn end_build(&self, id: i64, end: &BuildEnd<'_>) -> Result<Option<BuildRecord>> {
        let row: Option<BuildRow> = sqlx::query_as(&format!(
            "update image_builds set state = $1, message = $2, digest = $3, size = $4, \
             finished_at = $5 where id = $6 and state in {ACTIVE} returning {BUILD}"
        ))
        .bind(end.state)
        .bind(end.message)
        .bind(end.digest)
        .bind(end.size.map(|s| i64::try_from(s).unwrap_or(i64::MAX)))
        .bind(now_millis())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    /// Notes that `actor` cancelled a build that has not ended; `None` when
    /// it had.
    pub async fn request_cancel(&self, id: i64, actor: &str) -> Result<Option<BuildRecord>> {
        let row: Option<BuildRow> = sqlx::query_as(&format!(
            "update image_builds set cancel_requested = coalesce(cancel_requested, $1) \
             where id = $2 and state in {ACTIVE} returning {BUILD}"
        ))
        .bind(actor)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    /// Renews `owner`'s claim on its builds; answers the ones a user asked
    /// to cancel.
    pub async fn heartbeat_builds(&self, owner: &str) -> Result<Vec<i64>> {
        sqlx::query(&format!(
            "update image_builds set heartbeat_at = $1 where owner = $2 and state in {ACTIVE}"
        ))
        .bind(now_millis())
        .bind(owner)
        .execute(&self.pool)
        .await?;
        let rows: Vec<(i64,)> = sqlx::query_as(&format!(
            "select id from image_builds where owner = $1 and state in {ACTIVE} \
             and cancel_requested is not null"
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Marks as interrupted the builds not ended whose owner is not
    /// `alive` and stopped renewing before `stale_before` (unix ms), or
    /// every such build with `stale_before` of `None` (one process per
    /// database). Answers how many.
    pub async fn interrupt_builds(&self, alive: &str, stale_before: Option<i64>) -> Result<u64> {
        let done = sqlx::query(&format!(
            "update image_builds set state = 'interrupted', finished_at = $1, \
             message = case when state = 'queued' \
             then 'the DCP it waited in stopped before it ran' \
             else 'the DCP running it stopped; nothing was pushed after that' end \
             where state in {ACTIVE} and owner <> $2 and heartbeat_at < $3"
        ))
        .bind(now_millis())
        .bind(alive)
        .bind(stale_before.unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
