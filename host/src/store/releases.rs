//! Balancer configuration: versioned files per unit, releases that publish
//! a set of file versions to a unit's nodes with per-node progress, and the
//! app keys other systems call the discovery API with.

use sqlx::FromRow;

use super::{Error, Result, Store, Window, conflict_on, now_millis};

/// One version of one configuration file of a unit.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ConfigFileRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// Its unit.
    pub unit_id: i64,
    /// Its path, relative to the balancer's configuration directory.
    pub path: String,
    /// Its version: 1, 2, … per path.
    pub version: i64,
    /// Its text.
    pub content: String,
    /// Who wrote it.
    pub created_by: String,
    /// When (ms).
    pub created_at: i64,
}

/// A release: file versions published to a unit's nodes.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ReleaseRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// Its unit.
    pub unit_id: i64,
    /// JSON array of `{path, version}`.
    pub files: String,
    /// `pending`, `running`, `succeeded`, `partial` or `failed`.
    pub state: String,
    /// The release it rolls back to.
    pub rollback_of: Option<i64>,
    /// Who asked.
    pub created_by: String,
    /// When (ms).
    pub created_at: i64,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
    /// The publish command group's execution.
    pub execution_id: Option<i64>,
}

/// One node's part in a release.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ReleaseNodeRecord {
    /// The release.
    pub release_id: i64,
    /// The node.
    pub node_id: i64,
    /// Its address when the release began.
    pub address: String,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub state: String,
    /// What the plugin did, or why it failed.
    pub log: String,
    /// When it began (ms).
    pub started_at: Option<i64>,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
}

/// A stored app key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AppKeyRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The key's first characters.
    pub prefix: String,
    /// JSON array of interface names.
    pub privileges: String,
    /// Who made it.
    pub created_by: String,
    /// When (ms).
    pub created_at: i64,
    /// When it was last used (ms).
    pub last_used_at: Option<i64>,
    /// When it was revoked (ms).
    pub revoked_at: Option<i64>,
}

const FILE_COLUMNS: &str = "id, unit_id, path, version, content, created_by, created_at";
const RELEASE_COLUMNS: &str =
    "id, unit_id, files, state, rollback_of, created_by, created_at, finished_at, execution_id";
const KEY_COLUMNS: &str =
    "id, name, prefix, privileges, created_by, created_at, last_used_at, revoked_at";

impl Store {
    // ---- configuration files ----

    /// Stores the next version of `path` in a unit.
    pub async fn add_config_file(
        &self,
        unit_id: i64,
        path: &str,
        content: &str,
        by: &str,
    ) -> Result<ConfigFileRecord> {
        // Two writers racing for one version: the unique index refuses the
        // second, which tries the next.
        for _ in 0..10 {
            let inserted = sqlx::query_as(&format!(
                "insert into lb_config_files (unit_id, path, version, content, created_by, created_at) \
                 values ($1, $2, (select coalesce(max(version), 0) + 1 from lb_config_files \
                 where unit_id = $1 and path = $2), $3, $4, $5) returning {FILE_COLUMNS}"
            ))
            .bind(unit_id)
            .bind(path)
            .bind(content)
            .bind(by)
            .bind(now_millis())
            .fetch_one(&self.pool)
            .await;
            match inserted {
                Ok(row) => return Ok(row),
                Err(e) if super::is_unique_violation(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict {
            field: "path",
            value: path.to_owned(),
        })
    }

    /// Every version of every file of a unit (without content), by path,
    /// newest version first.
    pub async fn config_file_versions(&self, unit_id: i64) -> Result<Vec<ConfigFileRecord>> {
        Ok(sqlx::query_as(
            "select id, unit_id, path, version, '' as content, created_by, created_at \
             from lb_config_files where unit_id = $1 order by path, version desc",
        )
        .bind(unit_id)
        .fetch_all(&self.reads)
        .await?)
    }

    /// One version of a unit's file.
    pub async fn config_file(
        &self,
        unit_id: i64,
        path: &str,
        version: i64,
    ) -> Result<ConfigFileRecord> {
        sqlx::query_as(&format!(
            "select {FILE_COLUMNS} from lb_config_files where unit_id = $1 and path = $2 and version = $3"
        ))
        .bind(unit_id)
        .bind(path)
        .bind(version)
        .fetch_optional(&self.reads)
        .await?
        .ok_or(Error::NotFound { what: "file version" })
    }

    // ---- releases ----

    /// Records a release and its nodes as pending.
    pub async fn create_release(
        &self,
        unit_id: i64,
        files: &str,
        rollback_of: Option<i64>,
        by: &str,
        nodes: &[(i64, String)],
    ) -> Result<ReleaseRecord> {
        let mut tx = self.pool.begin().await?;
        let release: ReleaseRecord = sqlx::query_as(&format!(
            "insert into lb_releases (unit_id, files, state, rollback_of, created_by, created_at) \
             values ($1, $2, 'pending', $3, $4, $5) returning {RELEASE_COLUMNS}"
        ))
        .bind(unit_id)
        .bind(files)
        .bind(rollback_of)
        .bind(by)
        .bind(now_millis())
        .fetch_one(&mut *tx)
        .await?;
        for (node, address) in nodes {
            sqlx::query(
                "insert into lb_release_nodes (release_id, node_id, address, state) \
                 values ($1, $2, $3, 'pending')",
            )
            .bind(release.id)
            .bind(node)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(release)
    }

    /// One release.
    pub async fn release(&self, id: i64) -> Result<ReleaseRecord> {
        sqlx::query_as(&format!(
            "select {RELEASE_COLUMNS} from lb_releases where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?
        .ok_or(Error::NotFound { what: "release" })
    }

    /// One window of a unit's releases, newest first, and how many there are.
    pub async fn list_releases(
        &self,
        unit_id: i64,
        window: Window,
    ) -> Result<(Vec<ReleaseRecord>, u64)> {
        let (total,): (i64,) =
            sqlx::query_as("select count(*) from lb_releases where unit_id = $1")
                .bind(unit_id)
                .fetch_one(&self.reads)
                .await?;
        let rows = sqlx::query_as(&format!(
            "select {RELEASE_COLUMNS} from lb_releases where unit_id = $1 \
             order by id desc limit $2 offset $3"
        ))
        .bind(unit_id)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((rows, u64::try_from(total).unwrap_or_default()))
    }

    /// The nodes of a release.
    pub async fn release_nodes(&self, release_id: i64) -> Result<Vec<ReleaseNodeRecord>> {
        Ok(sqlx::query_as(
            "select release_id, node_id, address, state, log, started_at, finished_at \
             from lb_release_nodes where release_id = $1 order by node_id",
        )
        .bind(release_id)
        .fetch_all(&self.reads)
        .await?)
    }

    /// Records a release's state (and its end, once it is not running).
    pub async fn set_release_state(
        &self,
        id: i64,
        state: &str,
        execution_id: Option<i64>,
    ) -> Result<()> {
        let ended = !matches!(state, "pending" | "running");
        sqlx::query(
            "update lb_releases set state = $1, finished_at = $2, \
             execution_id = coalesce($3, execution_id) where id = $4",
        )
        .bind(state)
        .bind(ended.then(now_millis))
        .bind(execution_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records one node's progress in a release.
    pub async fn set_release_node(
        &self,
        release_id: i64,
        node_id: i64,
        state: &str,
        log: &str,
    ) -> Result<()> {
        let now = now_millis();
        sqlx::query(
            "update lb_release_nodes set state = $1, log = $2, \
             started_at = coalesce(started_at, $3), \
             finished_at = case when $1 in ('succeeded', 'failed') then $3 else null end \
             where release_id = $4 and node_id = $5",
        )
        .bind(state)
        .bind(log)
        .bind(now)
        .bind(release_id)
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends the releases a stopped DCP left running: what happened on their
    /// nodes is unknown, so they are failed, not resumed.
    pub async fn end_abandoned_releases(&self) -> Result<u64> {
        let now = now_millis();
        sqlx::query(
            "update lb_release_nodes set state = 'failed', \
             log = log || 'DCP stopped while this node was being published to', finished_at = $1 \
             where state in ('pending', 'running')",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        let done = sqlx::query(
            "update lb_releases set state = 'failed', finished_at = $1 \
             where state in ('pending', 'running')",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    // ---- app keys ----

    /// Stores a new app key by its hash.
    pub async fn create_app_key(
        &self,
        name: &str,
        key_hash: &str,
        prefix: &str,
        privileges: &str,
        by: &str,
    ) -> Result<AppKeyRecord> {
        sqlx::query_as(&format!(
            "insert into app_keys (name, key_hash, prefix, privileges, created_by, created_at) \
             values ($1, $2, $3, $4, $5, $6) returning {KEY_COLUMNS}"
        ))
        .bind(name)
        .bind(key_hash)
        .bind(prefix)
        .bind(privileges)
        .bind(by)
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", name))
    }

    /// Every app key, by name.
    pub async fn app_keys(&self) -> Result<Vec<AppKeyRecord>> {
        Ok(sqlx::query_as(&format!(
            "select {KEY_COLUMNS} from app_keys order by name, id"
        ))
        .fetch_all(&self.reads)
        .await?)
    }

    /// The app key whose hash this is, marking it used.
    pub async fn app_key_by_hash(&self, key_hash: &str) -> Result<Option<AppKeyRecord>> {
        Ok(sqlx::query_as(&format!(
            "update app_keys set last_used_at = $1 where key_hash = $2 returning {KEY_COLUMNS}"
        ))
        .bind(now_millis())
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Replaces a key's privileges.
    pub async fn set_app_key_privileges(&self, id: i64, privileges: &str) -> Result<AppKeyRecord> {
        sqlx::query_as(&format!(
            "update app_keys set privileges = $1 where id = $2 returning {KEY_COLUMNS}"
        ))
        .bind(privileges)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(Error::NotFound { what: "app key" })
    }

    /// Revokes a key (kept, so the log still names it); revoking twice is
    /// not an error.
    pub async fn revoke_app_key(&self, id: i64) -> Result<AppKeyRecord> {
        sqlx::query_as(&format!(
            "update app_keys set revoked_at = coalesce(revoked_at, $1) where id = $2 \
             returning {KEY_COLUMNS}"
        ))
        .bind(now_millis())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(Error::NotFound { what: "app key" })
    }
}
