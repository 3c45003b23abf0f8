//! Executions: one run of a command or group on many hosts, with each
//! host's state and output, kept as history.

use std::collections::BTreeMap;

use dcp_api_types::{ExecutionState, HostCounts, HostState, OutputStream};
use sqlx::FromRow;
use time::OffsetDateTime;

use super::{Error, Result, Store, Window, datetime, millis, now_millis, parse_name, placeholders};

/// What a new execution runs and where; credentials are not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExecution {
    /// What ran, for lists.
    pub title: String,
    /// The stored command, if one ran.
    pub command_id: Option<i64>,
    /// The stored group, if one ran.
    pub group_id: Option<i64>,
    /// The resolved steps (JSON).
    pub steps: String,
    /// The parameter values (JSON).
    pub params: String,
    /// Hosts run at once.
    pub forks: u32,
    /// Per-host time limit.
    pub timeout_secs: u32,
    /// Who started it.
    pub created_by: String,
    /// The DCP process that runs it.
    pub owner: String,
    /// The hosts, in order.
    pub hosts: Vec<NewHost>,
}

/// A host of a new execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHost {
    /// Address.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
}

/// A stored execution without its hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// What ran.
    pub title: String,
    /// Where it stands.
    pub state: ExecutionState,
    /// Hosts per state.
    pub counts: HostCounts,
    /// The stored command, if one ran.
    pub command_id: Option<i64>,
    /// The stored group, if one ran.
    pub group_id: Option<i64>,
    /// The resolved steps (JSON).
    pub steps: String,
    /// The parameter values (JSON).
    pub params: String,
    /// Hosts run at once.
    pub forks: u32,
    /// Per-host time limit.
    pub timeout_secs: u32,
    /// Who started it.
    pub created_by: String,
    /// When it was accepted.
    pub created_at: OffsetDateTime,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

/// A stored host of an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    /// 0-based position.
    pub position: u32,
    /// Address.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// What happened so far (a page of hosts leaves the output empty).
    pub report: HostReport,
    /// Bytes of standard output stored.
    pub stdout_bytes: u64,
    /// Bytes of standard error stored.
    pub stderr_bytes: u64,
}

/// One host's whole stored output stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutput {
    /// The bytes.
    pub text: String,
    /// Whether output was cut.
    pub truncated: bool,
    /// Whether the host has ended (no more output will come).
    pub done: bool,
}

/// The changing part of an execution host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    /// Where it stands.
    pub state: HostState,
    /// Exit code of the last step.
    pub exit_code: Option<i32>,
    /// Standard output, capped.
    pub stdout: String,
    /// Standard error, capped.
    pub stderr: String,
    /// Whether output was cut.
    pub truncated: bool,
    /// Why it did not end `ok`.
    pub message: String,
    /// When it started.
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

impl HostReport {
    /// A host that has not started.
    #[must_use]
    pub fn pending() -> Self {
        Self {
            state: HostState::Pending,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            message: String::new(),
            started_at: None,
            finished_at: None,
        }
    }

    /// Why the host failed, in one line: the last line it wrote to stderr
    /// that says something (see [`meaningful_line`]), else DCP's message.
    #[must_use]
    pub fn failure(&self) -> String {
        meaningful_line(&self.stderr).map_or_else(|| self.message.clone(), str::to_owned)
    }
}

/// The line of a failed command's stderr that says what went wrong: the
/// last non-blank one (a failing script stops at its error), passing over
/// the usage hints command-line tools print after it — Docker ends every
/// error with "Run 'docker run --help' for more information" (older:
/// "See 'docker run --help'.") and, for a bad flag, a "Usage:" line.
#[must_use]
fn meaningful_line(stderr: &str) -> Option<&str> {
    let hint = |line: &str| {
        line.starts_with("Usage:")
            || ((line.starts_with("Run '") || line.starts_with("See '")) && line.contains("--help"))
    };
    stderr
        .lines()
        .map(str::trim)
        .rev()
        .find(|line| !line.is_empty() && !hint(line))
}

#[derive(FromRow)]
struct ExecutionRow {
    id: i64,
    title: String,
    state: String,
    command_id: Option<i64>,
    group_id: Option<i64>,
    steps: String,
    params: String,
    forks: i64,
    timeout_secs: i64,
    created_by: String,
    created_at: i64,
    finished_at: Option<i64>,
}

#[derive(FromRow)]
struct HostRow {
    position: i64,
    address: String,
    port: i64,
    login: String,
    state: String,
    exit_code: Option<i64>,
    stdout: String,
    stderr: String,
    truncated: i64,
    message: String,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    stdout_bytes: i64,
    stderr_bytes: i64,
}

impl TryFrom<HostRow> for HostRecord {
    type Error = Error;

    fn try_from(row: HostRow) -> Result<Self> {
        Ok(Self {
            position: u32::try_from(row.position).unwrap_or(u32::MAX),
            address: row.address,
            port: u16::try_from(row.port).unwrap_or(22),
            user: row.login,
            stdout_bytes: u64::try_from(row.stdout_bytes).unwrap_or_default(),
            stderr_bytes: u64::try_from(row.stderr_bytes).unwrap_or_default(),
            report: HostReport {
                state: parse_name("execution_hosts.state", &row.state)?,
                exit_code: row.exit_code.and_then(|c| i32::try_from(c).ok()),
                stdout: row.stdout,
                stderr: row.stderr,
                truncated: row.truncated != 0,
                message: row.message,
                started_at: row.started_at.map(datetime),
                finished_at: row.finished_at.map(datetime),
            },
        })
    }
}

const EXECUTION_COLUMNS: &str = "id, title, state, command_id, group_id, steps, params, forks, \
                                 timeout_secs, created_by, created_at, finished_at";
const HOST_COLUMNS: &str = "position, address, port, login, state, exit_code, \
                            stdout, stderr, truncated, message, started_at, finished_at, \
                            cast(octet_length(stdout) as bigint) as stdout_bytes, cast(octet_length(stderr) as bigint) as stderr_bytes";
/// The host columns without the output itself: a page of 200 hosts stays
/// small however much they printed.
const HOST_LINE_COLUMNS: &str = "position, address, port, login, state, exit_code, \
                                 '' as stdout, '' as stderr, truncated, message, started_at, \
                                 finished_at, cast(octet_length(stdout) as bigint) as stdout_bytes, \
                                 cast(octet_length(stderr) as bigint) as stderr_bytes";
const NOT_FINAL: &str = "('pending', 'running')";

impl Store {
    /// Records a new execution with its hosts, all pending; returns its id.
    pub async fn create_execution(&self, new: &NewExecution) -> Result<i64> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        let (id,): (i64,) = sqlx::query_as(
            "insert into executions (title, state, command_id, group_id, steps, params, forks, \
             timeout_secs, created_by, created_at, owner, heartbeat_at) \
             values ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $10, $9) returning id",
        )
        .bind(&new.title)
        .bind(new.command_id)
        .bind(new.group_id)
        .bind(&new.steps)
        .bind(&new.params)
        .bind(i64::from(new.forks))
        .bind(i64::from(new.timeout_secs))
        .bind(&new.created_by)
        .bind(now)
        .bind(&new.owner)
        .fetch_one(&mut *tx)
        .await?;
        for (position, host) in new.hosts.iter().enumerate() {
            sqlx::query(
                "insert into execution_hosts (execution_id, position, address, port, login, state) \
                 values ($1, $2, $3, $4, $5, 'pending')",
            )
            .bind(id)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(&host.address)
            .bind(i64::from(host.port))
            .bind(&host.user)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// The execution with this id, without its hosts.
    pub async fn execution(&self, id: i64) -> Result<ExecutionRecord> {
        let row: Option<ExecutionRow> = sqlx::query_as(&format!(
            "select {EXECUTION_COLUMNS} from executions where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        let row = row.ok_or(Error::NotFound { what: "execution" })?;
        Ok(self.with_counts(vec![row]).await?.remove(0))
    }

    /// The hosts of an execution, in order.
    pub async fn execution_hosts(&self, id: i64) -> Result<Vec<HostRecord>> {
        let rows: Vec<HostRow> = sqlx::query_as(&format!(
            "select {HOST_COLUMNS} from execution_hosts where execution_id = $1 order by position"
        ))
        .bind(id)
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(HostRecord::try_from).collect()
    }

    /// One window of an execution's hosts in order, optionally only those
    /// in `state`, without their output; and how many match in all.
    pub async fn execution_host_page(
        &self,
        id: i64,
        state: Option<HostState>,
        window: Window,
    ) -> Result<(Vec<HostRecord>, u64)> {
        const FILTER: &str = "execution_id = $1 and ($2 is null or state = $2)";
        let state = state.map(HostState::as_str);
        let (total,): (i64,) = sqlx::query_as(&format!(
            "select count(*) from execution_hosts where {FILTER}"
        ))
        .bind(id)
        .bind(state)
        .fetch_one(&self.reads)
        .await?;
        let rows: Vec<HostRow> = sqlx::query_as(&format!(
            "select {HOST_LINE_COLUMNS} from execution_hosts where {FILTER} \
             order by position limit $3 offset $4"
        ))
        .bind(id)
        .bind(state)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter()
                .map(HostRecord::try_from)
                .collect::<Result<_>>()?,
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// One host of an execution without its output.
    pub async fn execution_host(&self, id: i64, position: u32) -> Result<HostRecord> {
        let row: Option<HostRow> = sqlx::query_as(&format!(
            "select {HOST_LINE_COLUMNS} from execution_hosts \
             where execution_id = $1 and position = $2"
        ))
        .bind(id)
        .bind(i64::from(position))
        .fetch_optional(&self.reads)
        .await?;
        row.ok_or(Error::NotFound {
            what: "execution host",
        })?
        .try_into()
    }

    /// One output stream of one host of an execution, whole (the per-host
    /// cap bounds it).
    pub async fn host_output(
        &self,
        id: i64,
        position: u32,
        stream: OutputStream,
    ) -> Result<StoredOutput> {
        let column = match stream {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        };
        let row: Option<(String, i64, String)> = sqlx::query_as(&format!(
            "select {column}, truncated, state from execution_hosts \
             where execution_id = $1 and position = $2"
        ))
        .bind(id)
        .bind(i64::from(position))
        .fetch_optional(&self.reads)
        .await?;
        let (text, truncated, state) = row.ok_or(Error::NotFound {
            what: "execution host",
        })?;
        let state: HostState = parse_name("execution_hosts.state", &state)?;
        Ok(StoredOutput {
            text,
            truncated: truncated != 0,
            done: state.is_final(),
        })
    }

    /// Deletes the executions that ended before `cutoff`, with their hosts
    /// and output; running ones are never touched. Safe to run on several
    /// replicas at once. Returns how many were deleted.
    pub async fn delete_executions_ended_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        const OLD: &str = "select id from executions where state not in ('pending', 'running') \
                           and finished_at is not null and finished_at < $1";
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "delete from execution_hosts where execution_id in ({OLD})"
        ))
        .bind(millis(cutoff))
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(&format!("delete from executions where id in ({OLD})"))
            .bind(millis(cutoff))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// One window of executions, newest first, and how many match in all.
    pub async fn list_executions(
        &self,
        state: Option<ExecutionState>,
        window: Window,
    ) -> Result<(Vec<ExecutionRecord>, u64)> {
        const FILTER: &str = "($1 is null or state = $1)";
        let state = state.map(ExecutionState::as_str);
        let (total,): (i64,) =
            sqlx::query_as(&format!("select count(*) from executions where {FILTER}"))
                .bind(state)
                .fetch_one(&self.reads)
                .await?;
        let rows: Vec<ExecutionRow> = sqlx::query_as(&format!(
            "select {EXECUTION_COLUMNS} from executions where {FILTER} \
             order by id desc limit $2 offset $3"
        ))
        .bind(state)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            self.with_counts(rows).await?,
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// Sets an execution's state; a final state also sets its end time.
    pub async fn set_execution_state(&self, id: i64, state: ExecutionState) -> Result<()> {
        let finished = state.is_final().then(now_millis);
        sqlx::query("update executions set state = $1, finished_at = $2 where id = $3")
            .bind(state.as_str())
            .bind(finished)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records what happened on one host so far.
    pub async fn report_host(&self, id: i64, position: u32, report: &HostReport) -> Result<()> {
        sqlx::query(
            "update execution_hosts set state = $1, exit_code = $2, stdout = $3, stderr = $4, \
             truncated = $5, message = $6, started_at = $7, finished_at = $8 \
             where execution_id = $9 and position = $10",
        )
        .bind(report.state.as_str())
        .bind(report.exit_code.map(i64::from))
        .bind(&report.stdout)
        .bind(&report.stderr)
        .bind(i64::from(report.truncated))
        .bind(&report.message)
        .bind(report.started_at.map(millis))
        .bind(report.finished_at.map(millis))
        .bind(id)
        .bind(i64::from(position))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Says that the executions `ids` are still being run.
    pub async fn heartbeat_executions(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "update executions set heartbeat_at = $1 where state in {NOT_FINAL} and id in ({})",
            placeholders(2, ids.len())
        );
        let mut query = sqlx::query(&sql).bind(now_millis());
        for id in ids {
            query = query.bind(id);
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Unfinished executions whose runner has not said it is alive since
    /// `before` (its process died): their unfinished hosts end `failed` with
    /// `message`, and the execution gets the state its hosts imply.
    /// Returns the ids of the executions ended.
    pub async fn end_abandoned_executions(
        &self,
        before: OffsetDateTime,
        message: &str,
    ) -> Result<Vec<i64>> {
        let ids: Vec<(i64,)> = sqlx::query_as(&format!(
            "select id from executions where state in {NOT_FINAL} and heartbeat_at < $1"
        ))
        .bind(millis(before))
        .fetch_all(&self.pool)
        .await?;
        let now = now_millis();
        for &(id,) in &ids {
            sqlx::query(&format!(
                "update execution_hosts set state = 'failed', message = $1, finished_at = $2 \
                 where execution_id = $3 and state in {NOT_FINAL}"
            ))
            .bind(message)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
            let counts = self.execution(id).await?.counts;
            self.set_execution_state(id, overall_state(&counts, false))
                .await?;
        }
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// Attaches host counts to executions with one query.
    async fn with_counts(&self, rows: Vec<ExecutionRow>) -> Result<Vec<ExecutionRecord>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "select execution_id, state, count(*) from execution_hosts \
             where execution_id in ({}) group by execution_id, state",
            placeholders(1, rows.len())
        );
        let mut query = sqlx::query_as::<_, (i64, String, i64)>(&sql);
        for row in &rows {
            query = query.bind(row.id);
        }
        let mut counts: BTreeMap<i64, HostCounts> = BTreeMap::new();
        for (id, state, n) in query.fetch_all(&self.reads).await? {
            let state: HostState = parse_name("execution_hosts.state", &state)?;
            counts
                .entry(id)
                .or_default()
                .add(state, u32::try_from(n).unwrap_or(u32::MAX));
        }
        rows.into_iter()
            .map(|row| {
                Ok(ExecutionRecord {
                    counts: counts.remove(&row.id).unwrap_or_default(),
                    state: parse_name("executions.state", &row.state)?,
                    id: row.id,
                    title: row.title,
                    command_id: row.command_id,
                    group_id: row.group_id,
                    steps: row.steps,
                    params: row.params,
                    forks: u32::try_from(row.forks).unwrap_or(u32::MAX),
                    timeout_secs: u32::try_from(row.timeout_secs).unwrap_or(u32::MAX),
                    created_by: row.created_by,
                    created_at: datetime(row.created_at),
                    finished_at: row.finished_at.map(datetime),
                })
            })
            .collect()
    }
}

/// The state an execution's host counts imply once no host runs: success
/// only when every host is `ok`, never when some failed.
#[must_use]
pub fn overall_state(counts: &HostCounts, cancelled: bool) -> ExecutionState {
    if cancelled {
        ExecutionState::Cancelled
    } else if counts.ok == counts.total {
        ExecutionState::Succeeded
    } else if counts.ok == 0 {
        ExecutionState::Failed
    } else {
        ExecutionState::PartiallyFailed
    }
}

#[cfg(test)]
mod tests {
    use super::meaningful_line;

    #[test]
    fn dockers_error_line_is_chosen_over_its_usage_hints() {
        // Real stderr of Docker 28 (client) on 20.10 (daemon), and of older clients.
        let port_taken = "docker: Error response from daemon: driver failed programming external \
            connectivity on endpoint dcp-web-3 (62e06ad8818d): Bind for 127.0.0.1:18999 failed: \
            port is already allocated\n\nRun 'docker run --help' for more information\n";
        assert!(
            meaningful_line(port_taken)
                .unwrap()
                .ends_with("port is already allocated")
        );
        let bad_flag = "invalid argument \"abc\" for \"--cpus\" flag: failed to parse abc as a \
            rational number\n\nUsage:  docker run [OPTIONS] IMAGE [COMMAND] [ARG...]\n\n\
            Run 'docker run --help' for more information\n";
        assert!(
            meaningful_line(bad_flag)
                .unwrap()
                .starts_with("invalid argument \"abc\" for \"--cpus\"")
        );
        let name_taken = "docker: Error response from daemon: Conflict. The container name \
            \"/dcp-web-3\" is already in use by container \"37ca7e15f1ba\".\n\
            See 'docker run --help'.\n";
        assert!(
            meaningful_line(name_taken)
                .unwrap()
                .starts_with("docker: Error response from daemon: Conflict.")
        );
        let gone = "Error response from daemon: No such container: dcp-web-3\n";
        assert_eq!(
            meaningful_line(gone),
            Some("Error response from daemon: No such container: dcp-web-3")
        );
        // Anything else: its last line.
        assert_eq!(
            meaningful_line("warning: low disk\ndisk /data is missing\n\n"),
            Some("disk /data is missing")
        );
        assert_eq!(meaningful_line(" \n"), None);
    }
}
