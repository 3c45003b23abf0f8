//! Clusters: the top of the orchestration tree.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::{
    Dependent, Error, Result, Store, Window, conflict_on, contains_pattern, datetime, now_millis,
};

/// Tables that reference a cluster.
const DEPENDENTS: &[Dependent] = &[Dependent {
    kind: "service",
    names_sql: "select name from services where cluster_id = $1 order by name limit 5",
}];

/// A stored cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Id assigned by the database.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Owning business line.
    pub business_line: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    pub updated_at: OffsetDateTime,
}

/// The writable fields of a cluster, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterChange {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Owning business line.
    pub business_line: String,
}

/// Which clusters to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterQuery {
    /// Only names containing this text.
    pub name_contains: Option<String>,
    /// Only this business line.
    pub business_line: Option<String>,
}

#[derive(FromRow)]
struct Row {
    id: i64,
    name: String,
    description: String,
    business_line: String,
    created_at: i64,
    updated_at: i64,
}

impl From<Row> for Cluster {
    fn from(row: Row) -> Self {
        Self {
            id: row.id,
            name: row.name,
            description: row.description,
            business_line: row.business_line,
            created_at: datetime(row.created_at),
            updated_at: datetime(row.updated_at),
        }
    }
}

const COLUMNS: &str = "id, name, description, business_line, created_at, updated_at";

impl Store {
    /// Creates a cluster; [`Error::Conflict`] on `name` if it is taken.
    pub async fn create_cluster(&self, change: &ClusterChange) -> Result<Cluster> {
        let now = now_millis();
        let row: Row = sqlx::query_as(&format!(
            "insert into clusters (name, description, business_line, created_at, updated_at) \
             values ($1, $2, $3, $4, $4) returning {COLUMNS}"
        ))
        .bind(&change.name)
        .bind(&change.description)
        .bind(&change.business_line)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        Ok(row.into())
    }

    /// The cluster with this id.
    pub async fn cluster(&self, id: i64) -> Result<Cluster> {
        let row: Option<Row> =
            sqlx::query_as(&format!("select {COLUMNS} from clusters where id = $1"))
                .bind(id)
                .fetch_optional(&self.reads)
                .await?;
        row.map(Cluster::from)
            .ok_or(Error::NotFound { what: "cluster" })
    }

    /// One window of the clusters matching `query`, ordered by name, and how
    /// many match in all.
    pub async fn list_clusters(
        &self,
        query: &ClusterQuery,
        window: Window,
    ) -> Result<(Vec<Cluster>, u64)> {
        const FILTER: &str = "($1 is null or name like $1 escape '\\') \
                              and ($2 is null or business_line = $2)";
        let name = query.name_contains.as_deref().map(contains_pattern);
        let (total,): (i64,) =
            sqlx::query_as(&format!("select count(*) from clusters where {FILTER}"))
                .bind(&name)
                .bind(&query.business_line)
                .fetch_one(&self.reads)
                .await?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from clusters where {FILTER} order by name, id limit $3 offset $4"
        ))
        .bind(&name)
        .bind(&query.business_line)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter().map(Cluster::from).collect(),
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// Replaces a cluster's writable fields.
    pub async fn update_cluster(&self, id: i64, change: &ClusterChange) -> Result<Cluster> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "update clusters set name = $1, description = $2, business_line = $3, updated_at = $4 \
             where id = $5 returning {COLUMNS}"
        ))
        .bind(&change.name)
        .bind(&change.description)
        .bind(&change.business_line)
        .bind(now_millis())
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        row.map(Cluster::from)
            .ok_or(Error::NotFound { what: "cluster" })
    }

    /// Deletes a cluster; [`Error::InUse`] while anything references it.
    pub async fn delete_cluster(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("cluster", DEPENDENTS, id).await?;
        let done = sqlx::query("delete from clusters where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "cluster" });
        }
        Ok(())
    }
}
