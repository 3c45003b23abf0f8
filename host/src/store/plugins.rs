//! Plugin versions: what was uploaded, what it asks for, what was granted,
//! and which version of each plugin is active.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::{Error, Result, Store, Window, conflict_on, datetime, now_millis};

/// Where a plugin version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginStatus {
    /// Uploaded; its capabilities await an operator's approval.
    Pending,
    /// Granted, not serving.
    Approved,
    /// The version calls go to.
    Active,
    /// Was active, superseded; can be rolled back to.
    Inactive,
}

impl PluginStatus {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Active => "active",
            Self::Inactive => "inactive",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "approved" => Self::Approved,
            "active" => Self::Active,
            "inactive" => Self::Inactive,
            _ => Self::Pending,
        }
    }
}

/// A stored plugin version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersionRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The world it targets.
    pub world: String,
    /// One line on what it does.
    pub description: String,
    /// sha256 of the component, hex.
    pub digest: String,
    /// Size of the component.
    pub size_bytes: i64,
    /// The `plugin.toml` as uploaded.
    pub manifest: String,
    /// Requested capabilities (JSON).
    pub requested: String,
    /// Granted capabilities (JSON), once approved.
    pub granted: Option<String>,
    /// Where it stands.
    pub status: PluginStatus,
    /// Shipped with DCP.
    pub builtin: bool,
    /// The last failure loading or serving it.
    pub last_error: Option<String>,
    /// Operator overrides of its per-call limits (JSON), if any.
    pub limits: Option<String>,
    /// Upload time.
    pub created_at: OffsetDateTime,
    /// Last activation, if ever active.
    pub activated_at: Option<OffsetDateTime>,
}

/// A version to record.
#[derive(Debug, Clone)]
pub struct NewPluginVersion<'a> {
    /// The plugin's name.
    pub name: &'a str,
    /// Its version.
    pub version: &'a str,
    /// The world it targets.
    pub world: &'a str,
    /// One line on what it does.
    pub description: &'a str,
    /// sha256 of the component, hex.
    pub digest: &'a str,
    /// Size of the component.
    pub size_bytes: i64,
    /// The `plugin.toml` as uploaded.
    pub manifest: &'a str,
    /// Requested capabilities (JSON).
    pub requested: &'a str,
    /// Granted capabilities (JSON): set for built-ins, `None` otherwise.
    pub granted: Option<&'a str>,
    /// Shipped with DCP.
    pub builtin: bool,
}

#[derive(FromRow)]
struct Row {
    id: i64,
    name: String,
    version: String,
    world: String,
    description: String,
    digest: String,
    size_bytes: i64,
    manifest: String,
    requested: String,
    granted: Option<String>,
    status: String,
    builtin: i64,
    last_error: Option<String>,
    limits: Option<String>,
    created_at: i64,
    activated_at: Option<i64>,
}

impl From<Row> for PluginVersionRecord {
    fn from(row: Row) -> Self {
        Self {
            id: row.id,
            name: row.name,
            version: row.version,
            world: row.world,
            description: row.description,
            digest: row.digest,
            size_bytes: row.size_bytes,
            manifest: row.manifest,
            requested: row.requested,
            granted: row.granted,
            status: PluginStatus::parse(&row.status),
            builtin: row.builtin != 0,
            last_error: row.last_error,
            limits: row.limits,
            created_at: datetime(row.created_at),
            activated_at: row.activated_at.map(datetime),
        }
    }
}

const COLUMNS: &str = "id, name, version, world, description, digest, size_bytes, manifest, \
                       requested, granted, status, builtin, last_error, limits, created_at, activated_at";

impl Store {
    /// Records an uploaded version as pending (or approved, when granted).
    pub async fn create_plugin_version(
        &self,
        new: &NewPluginVersion<'_>,
    ) -> Result<PluginVersionRecord> {
        let status = if new.granted.is_some() {
            PluginStatus::Approved
        } else {
            PluginStatus::Pending
        };
        let row: Row = sqlx::query_as(&format!(
            "insert into plugin_versions (name, version, world, description, digest, size_bytes, \
             manifest, requested, granted, status, builtin, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) returning {COLUMNS}"
        ))
        .bind(new.name)
        .bind(new.version)
        .bind(new.world)
        .bind(new.description)
        .bind(new.digest)
        .bind(new.size_bytes)
        .bind(new.manifest)
        .bind(new.requested)
        .bind(new.granted)
        .bind(status.as_str())
        .bind(i64::from(new.builtin))
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on(
            "version",
            &format!("{}@{}", new.name, new.version),
        ))?;
        Ok(row.into())
    }

    /// One version.
    pub async fn plugin_version(&self, id: i64) -> Result<PluginVersionRecord> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from plugin_versions where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        row.map(PluginVersionRecord::from).ok_or(Error::NotFound {
            what: "plugin version",
        })
    }

    /// The version `name@version`, if recorded.
    pub async fn plugin_version_named(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<PluginVersionRecord>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from plugin_versions where name = $1 and version = $2"
        ))
        .bind(name)
        .bind(version)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(PluginVersionRecord::from))
    }

    /// A window of versions, by name then newest first; optionally of one plugin.
    pub async fn list_plugin_versions(
        &self,
        name: Option<&str>,
        window: Window,
    ) -> Result<(Vec<PluginVersionRecord>, u64)> {
        let (total,): (i64,) =
            sqlx::query_as("select count(*) from plugin_versions where ($1 is null or name = $1)")
                .bind(name)
                .fetch_one(&self.reads)
                .await?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from plugin_versions where ($1 is null or name = $1) \
             order by name, id desc limit $2 offset $3"
        ))
        .bind(name)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter().map(PluginVersionRecord::from).collect(),
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// Every active version (what `dcp` loads at start).
    pub async fn active_plugin_versions(&self) -> Result<Vec<PluginVersionRecord>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from plugin_versions where status = 'active' order by name"
        ))
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.into_iter().map(PluginVersionRecord::from).collect())
    }

    /// Grants a pending version what it asked for.
    pub async fn approve_plugin_version(
        &self,
        id: i64,
        granted: &str,
    ) -> Result<PluginVersionRecord> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "update plugin_versions set granted = $1, \
             status = case when status = 'pending' then 'approved' else status end, updated_at = $2 \
             where id = $3 returning {COLUMNS}"
        ))
        .bind(granted)
        .bind(now_millis())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(PluginVersionRecord::from).ok_or(Error::NotFound {
            what: "plugin version",
        })
    }

    /// Makes `id` the active version of its plugin; the version active
    /// before becomes inactive. One statement each way, in one transaction.
    pub async fn activate_plugin_version(&self, id: i64) -> Result<PluginVersionRecord> {
        let target = self.plugin_version(id).await?;
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "update plugin_versions set status = 'inactive', updated_at = $1 \
             where name = $2 and status = 'active' and id <> $3",
        )
        .bind(now)
        .bind(&target.name)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let row: Row = sqlx::query_as(&format!(
            "update plugin_versions set status = 'active', activated_at = $1, updated_at = $1, \
             last_error = null where id = $2 returning {COLUMNS}"
        ))
        .bind(now)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// The version of `name` that was active most recently before the current one.
    pub async fn previous_plugin_version(&self, name: &str) -> Result<Option<PluginVersionRecord>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from plugin_versions \
             where name = $1 and status = 'inactive' and activated_at is not null \
             order by activated_at desc limit 1"
        ))
        .bind(name)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(PluginVersionRecord::from))
    }

    /// Sets (or with `None` clears) the operator's limit overrides of a version.
    pub async fn set_plugin_limits(
        &self,
        id: i64,
        limits: Option<&str>,
    ) -> Result<PluginVersionRecord> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "update plugin_versions set limits = $1, updated_at = $2 where id = $3 returning {COLUMNS}"
        ))
        .bind(limits)
        .bind(now_millis())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(PluginVersionRecord::from).ok_or(Error::NotFound {
            what: "plugin version",
        })
    }

    /// Notes why a version failed to load or serve.
    pub async fn set_plugin_error(&self, id: i64, error: &str) -> Result<()> {
        sqlx::query("update plugin_versions set last_error = $1, updated_at = $2 where id = $3")
            .bind(error)
            .bind(now_millis())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a version that is neither active nor built in.
    pub async fn delete_plugin_version(&self, id: i64) -> Result<()> {
        let version = self.plugin_version(id).await?;
        if version.status == PluginStatus::Active {
            return Err(Error::InUse {
                what: "plugin version",
                by: vec![format!(
                    "the active {} plugin (activate or roll back to another version first)",
                    version.name
                )],
            });
        }
        if version.builtin {
            return Err(Error::InUse {
                what: "plugin version",
                by: vec!["DCP itself (it is built in)".to_owned()],
            });
        }
        sqlx::query("delete from plugin_versions where id = $1 and status <> 'active'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many versions share this digest (its artifact is shared too).
    pub async fn count_plugin_digest(&self, digest: &str) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as("select count(*) from plugin_versions where digest = $1")
            .bind(digest)
            .fetch_one(&self.reads)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }
}
