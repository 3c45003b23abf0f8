//! The store: DCP's durable state, on SQLite (the embedded default) or
//! PostgreSQL (when several replicas share work).
//!
//! Both backends sit behind one [`Store`] with one set of runtime-checked
//! queries (sqlx's `Any` driver); each backend has its own embedded
//! migrations, applied at start. Queries use `$N` placeholders, which SQLite
//! understands too, and only portable SQL; where a backend needs its own SQL
//! it is chosen by [`Backend`]. See `docs/adr/0001-store.md`.

mod auth;
mod builds;
mod clouds;
mod clusters;
mod commands;
mod discovery;
mod executions;
mod host_keys;
mod machines;
mod overview;
mod plugins;
mod registry;
mod releases;
mod services;
mod tasks;

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    AnyPool, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
};
use time::OffsetDateTime;

pub use self::{
    auth::{SessionRecord, TokenRecord, UserRecord},
    builds::{BuildEnd, BuildRecord, NewBuild, ProjectChange, ProjectRecord},
    clouds::{AccountChange, AccountRecord, TemplateChange, TemplateRecord},
    clusters::{Cluster, ClusterChange, ClusterQuery},
    commands::{CommandChange, CommandRecord, GroupChange, GroupRecord},
    discovery::{
        AccountLbNode, AppliedChange, BindingChange, BindingRecord, ChangeQuery, ChangeRecord,
        LbGroupRecord, LbNodeRecord, LbUnitRecord, NewChange, NodeHost, PushTarget, UnitChange,
        UpstreamRecord, UpstreamStateRecord,
    },
    executions::{
        ExecutionRecord, HostRecord, HostReport, NewExecution, NewHost, StoredOutput, overall_state,
    },
    host_keys::HostKeyRecord,
    machines::{MachineEventRecord, MachineQuery, MachineRecord, MachineUpdate, NewMachine},
    overview::{
        Activity, ExecutionBriefRecord, FleetCountRecord, PoolHealthRecord, QuotaTotalsRecord,
        TaskBriefRecord,
    },
    plugins::{NewPluginVersion, PluginStatus, PluginVersionRecord},
    registry::{CleanupRecord, RetentionRecord},
    releases::{AppKeyRecord, ConfigFileRecord, ReleaseNodeRecord, ReleaseRecord},
    services::{
        NewNode, NodeRecord, PoolChange, PoolRecord, ServiceChange, ServiceRecord, TaskTemplates,
    },
    tasks::{
        NewTask, TaskNodeRecord, TaskRecord, TaskStepRecord, TaskTemplateChange, TaskTemplateRecord,
    },
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The result type of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The row asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What kind of thing was looked up, e.g. `"cluster"`.
        what: &'static str,
    },
    /// A unique field already has this value.
    #[error("{field} {value:?} is already taken")]
    Conflict {
        /// The field that must be unique.
        field: &'static str,
        /// The value that is taken.
        value: String,
    },
    /// A unique field has this value in another row, named so the caller
    /// can go to it (one server is one machine).
    #[error("{field} {value} is already machine {}", .machine.map_or_else(|| "(released since)".to_owned(), |id| id.to_string()))]
    Claimed {
        /// The field that must be unique.
        field: &'static str,
        /// The value, as compared.
        value: String,
        /// The row that has it; `None` when it went before it could be read.
        machine: Option<i64>,
    },
    /// The row is still referenced by others, so it may not be deleted.
    #[error("{what} is still used by {}", .by.join(", "))]
    InUse {
        /// What was to be deleted, e.g. `"cluster"`.
        what: &'static str,
        /// What still uses it, e.g. `["service web", "service api"]`.
        by: Vec<String>,
    },
    /// The database cannot be reached.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database URL is not one DCP understands.
    #[error("unsupported database URL {0:?}: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value DCP cannot read (written by a newer version?).
    #[error("unreadable {column} {value:?}")]
    Corrupt {
        /// The table and column.
        column: &'static str,
        /// The value found.
        value: String,
    },
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => Self::Unavailable(err),
            sqlx::Error::Database(ref db) if is_connection_lost(db.code().as_deref()) => {
                Self::Unavailable(err)
            }
            other => Self::Database(other),
        }
    }
}

/// PostgreSQL's class 08 (connection exception) and 57P (operator
/// intervention, e.g. the database was dropped or the server shuts down).
fn is_connection_lost(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "3D000")
}

/// Whether the database refused a write for a unique index.
fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Maps a unique violation to [`Error::Conflict`] on `field`; other errors pass through.
fn conflict_on(field: &'static str, value: &str) -> impl FnOnce(sqlx::Error) -> Error {
    move |err| match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict {
            field,
            value: value.to_owned(),
        },
        _ => Error::from(err),
    }
}

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(Error::UnsupportedUrl(redact_url(url)))
        }
    }
}

/// A database URL with any password replaced, fit for errors and logs:
/// the one in the user info and any credential in the query
/// (`?password=`, `sslpassword=`, `sslkey=`…).
#[must_use]
pub fn redact_url(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &base[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***{}", &base[..scheme_end], &base[at..])
        }
        _ => base.to_owned(),
    };
    if query.is_empty() {
        return base;
    }
    let query: Vec<String> = query
        .split('&')
        .map(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            let secret = ["password", "pass", "pwd", "secret", "token", "key"]
                .iter()
                .any(|word| key.to_ascii_lowercase().contains(word));
            if secret && pair.contains('=') {
                format!("{key}=***")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// One page of rows to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// How many rows at most.
    pub limit: u32,
    /// How many rows to skip.
    pub offset: u64,
}

impl Window {
    /// This window of a list held whole in memory, cut as a query's
    /// `limit`/`offset` would.
    #[must_use]
    pub fn cut<T>(self, all: Vec<T>) -> Vec<T> {
        all.into_iter()
            .skip(usize::try_from(self.offset).unwrap_or(usize::MAX))
            .take(usize::try_from(self.limit).unwrap_or(usize::MAX))
            .collect()
    }

    fn limit(self) -> i64 {
        i64::from(self.limit)
    }

    fn offset(self) -> i64 {
        i64::try_from(self.offset).unwrap_or(i64::MAX)
    }
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    /// Every write and every transaction. On a SQLite file it is one
    /// connection: SQLite takes one writer at a time anyway, and writers
    /// queued in the pool wait their turn in order, where writers on
    /// several connections would each hold a connection while sleeping in
    /// SQLite's busy handler (up to 100 ms past the lock's release), and
    /// fail with "database is locked" after its timeout.
    pool: AnyPool,
    /// Reads that stand alone (no transaction), on connections of their
    /// own, so writes waiting for a lock (a 1000-node expand's burst, on
    /// SQLite's one writer or PostgreSQL's row locks) never hold every
    /// connection while the API's reads and `/readyz` wait. On SQLite they
    /// are read-only, and WAL runs them beside the writer.
    reads: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://…`) and applies
    /// pending migrations. A SQLite file and its directory are created if missing.
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to `url` without migrating.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut url = url.to_owned();
        if backend == Backend::Sqlite {
            url = prepare_sqlite_url(&url)?;
        }
        let options = AnyConnectOptions::from_str(&url).map_err(Error::Database)?;
        let (writers, readers) = match backend {
            Backend::Sqlite => (1, 4),
            Backend::Postgres => (16, 8),
        };
        let pool = pool_options(backend, writers, Role::Writer)
            .connect_with(options.clone())
            .await?;
        // Each connection to an in-memory database is a database of its own.
        let reads = if url.contains(":memory:") || url.contains("mode=memory") {
            pool.clone()
        } else {
            pool_options(backend, readers, Role::Reader)
                .connect_with(options)
                .await?
        };
        Ok(Self {
            pool,
            reads,
            backend,
        })
    }

    /// Applies the pending migrations of this backend.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Which database engine this store uses.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.reads.execute("select 1").await?;
        Ok(())
    }

    /// Closes every connection; later calls fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
        self.reads.close().await;
    }

    /// A window of every row of `table`, as `select` reads them in `order`
    /// (stable: it ends on a unique column), and how many rows there are.
    async fn page<R>(
        &self,
        select: &str,
        table: &str,
        order: &str,
        window: Window,
    ) -> Result<(Vec<R>, u64)>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let (total,): (i64,) = sqlx::query_as(&format!("select count(*) from {table}"))
            .fetch_one(&self.reads)
            .await?;
        let rows = sqlx::query_as(&format!("{select} order by {order} limit $1 offset $2"))
            .bind(window.limit())
            .bind(window.offset())
            .fetch_all(&self.reads)
            .await?;
        Ok((rows, u64::try_from(total).unwrap_or_default()))
    }

    /// Refuses with [`Error::InUse`] when any of `dependents` references `id`.
    async fn ensure_unreferenced(
        &self,
        what: &'static str,
        dependents: &[Dependent],
        id: i64,
    ) -> Result<()> {
        let mut by = Vec::new();
        for dependent in dependents {
            let names: Vec<(String,)> = sqlx::query_as(dependent.names_sql)
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
            by.extend(
                names
                    .into_iter()
                    .map(|(name,)| format!("{} {name}", dependent.kind)),
            );
        }
        if by.is_empty() {
            Ok(())
        } else {
            Err(Error::InUse { what, by })
        }
    }
}

/// A table whose rows reference another row and so keep it from being deleted.
///
/// Each module that adds such a table adds a `Dependent` to the list of the
/// table it references (e.g. services to `clusters::DEPENDENTS`), so a delete
/// is refused with a message naming what still uses the row. Foreign keys
/// with `on delete restrict` back this up against races.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dependent {
    /// What a referencing row is called in messages, e.g. `"service"`.
    kind: &'static str,
    /// Selects the names of up to a few referencing rows; `$1` is the referenced id.
    names_sql: &'static str,
}

/// What a pool's connections are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Writes and transactions.
    Writer,
    /// Reads alone: its connections refuse to write.
    Reader,
}

/// How the pools of `backend` connect: `max` connections for `role`.
fn pool_options(backend: Backend, max: u32, role: Role) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        // An embedded SQLite is never down, only busy: a caller waits its
        // turn (a 1000-node expand queues thousands of writes on two busy
        // cores) instead of failing after 5 s as a PostgreSQL caller does
        // when the server is gone.
        .acquire_timeout(if backend == Backend::Sqlite {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(5)
        })
        .acquire_slow_threshold(Duration::from_secs(5))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                match (backend, role) {
                    // WAL lets readers run beside the writer.
                    (Backend::Sqlite, Role::Writer) => {
                        conn.execute("pragma journal_mode = wal").await?;
                    }
                    (Backend::Sqlite, Role::Reader) => {
                        conn.execute("pragma query_only = on").await?;
                    }
                    (Backend::Postgres, Role::Reader) => {
                        conn.execute("set default_transaction_read_only = on")
                            .await?;
                    }
                    (Backend::Postgres, Role::Writer) => {}
                }
                if backend == Backend::Sqlite {
                    // Only another process (a second dcp on the same file,
                    // the sqlite3 shell) makes a connection wait for a lock.
                    conn.execute("pragma busy_timeout = 5000").await?;
                    conn.execute("pragma foreign_keys = on").await?;
                    conn.execute("pragma synchronous = normal").await?;
                }
                Ok(())
            })
        })
}

/// Makes sure a SQLite database file can be created: its directory exists and
/// the URL asks for create-if-missing.
fn prepare_sqlite_url(url: &str) -> Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(url.to_owned());
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        crate::data_dir::ensure_dir(dir).map_err(|e| Error::Unavailable(sqlx::Error::Io(e)))?;
    }
    let creates = !url.contains("mode=") || url.contains("mode=rwc");
    if creates {
        // Created here rather than by SQLite so that it, its journal and
        // its WAL are private (0600) from the first byte.
        crate::data_dir::touch_private(Path::new(path))
            .map_err(|e| Error::Unavailable(sqlx::Error::Io(e)))?;
    }
    Ok(if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

/// The current time in the store's representation: milliseconds since the epoch.
pub(crate) fn now_millis() -> i64 {
    millis(OffsetDateTime::now_utc())
}

fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A stored timestamp as a date-time; out-of-range values clamp to the epoch.
pub(crate) fn datetime(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A stored enum name (e.g. a state) as its type.
pub(crate) fn parse_name<T: serde::de::DeserializeOwned>(
    column: &'static str,
    value: &str,
) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_owned())).map_err(|_| {
        Error::Corrupt {
            column,
            value: value.to_owned(),
        }
    })
}

/// `$start, $start+1, …` for `n` values of an `in (…)` list.
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Escapes `%`, `_` and `\` for a `like … escape '\'` substring pattern.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://dcp:s3cret@db:5432/dcp"),
            "postgres://dcp:***@db:5432/dcp"
        );
        assert_eq!(redact_url("sqlite://data/dcp.db"), "sqlite://data/dcp.db");
        assert_eq!(
            redact_url("postgres://db/dcp?user=dcp&password=s3cret&sslmode=require&sslpassword=x"),
            "postgres://db/dcp?user=dcp&password=***&sslmode=require&sslpassword=***"
        );
        assert_eq!(
            redact_url("postgres://dcp:pw@db/dcp?password=s3cret"),
            "postgres://dcp:***@db/dcp?password=***"
        );
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    #[test]
    fn sqlite_urls_create_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data/x.db");
        let url = format!("sqlite://{}", db.display());
        assert_eq!(prepare_sqlite_url(&url).unwrap(), format!("{url}?mode=rwc"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&db), 0o600, "the database is private from the start");
            assert_eq!(mode(db.parent().unwrap()), 0o700);
        }
        let read_only = dir.path().join("y.db");
        let url = format!("sqlite://{}?mode=ro", read_only.display());
        assert_eq!(prepare_sqlite_url(&url).unwrap(), url);
        assert!(!read_only.exists(), "a read-only URL creates nothing");
    }

    #[test]
    fn unknown_schemes_are_refused() {
        assert!(matches!(
            Backend::from_url("mysql://u:p@h/db"),
            Err(Error::UnsupportedUrl(u)) if u == "mysql://u:***@h/db"
        ));
    }
}
