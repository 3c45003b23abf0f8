//! A node's container, looked at over SSH: its state, its health (the
//! service's check, asked once) and its log. The scripts here are also what
//! `start_service` runs its health check with, so a deploy and the pool
//! page judge a container alike.

use std::time::Duration;

use dcp_api_types::{ContainerSpec, HealthCheck, HealthProbe, PortProtocol};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    remote::{self, Remote, shell_quote, ssh},
    store::{self, NodeRecord, Store},
    validate::Invalid,
};

/// How long a look at a container may take, the health check included.
const LOOK_TIME: Duration = Duration::from_secs(30);
/// The most log lines one answer holds.
pub const TAIL_MAX: u32 = 5000;
/// The log lines an answer holds when the caller names no number.
pub const TAIL_DEFAULT: u32 = 200;
/// The most log bytes one answer holds.
const LOG_BYTES_MAX: usize = 1 << 20;

/// Why a look failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field breaks a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The store failed, or the pool or node is not there.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The node could not be asked.
    #[error(transparent)]
    Remote(#[from] remote::Error),
    /// The node has no container of the service.
    #[error("{0}")]
    Missing(String),
}

/// The name of the container DCP runs for `service` on node `node_id`.
#[must_use]
pub fn container_name(service: &str, node_id: i64) -> String {
    format!("dcp-{service}-{node_id}")
}

/// A node's container now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Its name.
    pub name: String,
    /// Docker's state, or `missing`.
    pub state: String,
    /// The image it runs.
    pub image: Option<String>,
    /// When it last started.
    pub started_at: Option<OffsetDateTime>,
    /// Docker's restarts of it.
    pub restart_count: Option<u32>,
    /// Its last exit code.
    pub exit_code: Option<i32>,
    /// `healthy` or `unhealthy`, when the service has a check and it runs.
    pub health: Option<String>,
    /// What a failed check said.
    pub health_detail: String,
}

/// Lines of a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLog {
    /// The container.
    pub name: String,
    /// (time as Docker wrote it, text), oldest first.
    pub lines: Vec<(String, String)>,
    /// Cut at the size limit.
    pub truncated: bool,
}

/// The node `node_id` of pool `pool_id`, its service's container name and
/// spec.
async fn locate(
    store: &Store,
    pool_id: i64,
    node_id: i64,
) -> Result<(NodeRecord, String, ContainerSpec), Error> {
    let pool = store.pool_record(pool_id).await?;
    let node = store
        .pool_nodes(pool.id)
        .await?
        .into_iter()
        .find(|n| n.id == node_id)
        .ok_or(store::Error::NotFound { what: "node" })?;
    let service = store.service(pool.service_id).await?;
    let spec = serde_json::from_str(&service.container).map_err(|_| store::Error::Corrupt {
        column: "services.container",
        value: service.container.clone(),
    })?;
    Ok((node, container_name(&service.name, node_id), spec))
}

/// What `script` printed on the node, and whether it was cut at `max`.
async fn look(
    remote: &Remote,
    node: &NodeRecord,
    script: &str,
    max: usize,
) -> Result<(String, bool), Error> {
    let endpoint = ssh::Endpoint {
        address: node.address.clone(),
        port: node.port,
        user: node.user.clone(),
    };
    let out = remote
        .look(node.machine_id, endpoint, script, LOOK_TIME, max)
        .await?;
    if out.exit_code != Some(0) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no error output");
        return Err(remote::Error::Unreachable(format!(
            "asking {} about its container failed: {why}",
            node.address
        ))
        .into());
    }
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.truncated,
    ))
}

/// The state of the service's container on a node, with its health check
/// asked once.
pub async fn status(
    store: &Store,
    remote: &Remote,
    pool_id: i64,
    node_id: i64,
) -> Result<ContainerStatus, Error> {
    let (node, name, spec) = locate(store, pool_id, node_id).await?;
    let mut script = format!(
        "dcp_name={}\n\
         if ! docker inspect \"$dcp_name\" >/dev/null 2>&1; then echo missing; exit 0; fi\n\
         docker inspect -f '{{{{.State.Status}}}}|{{{{.Config.Image}}}}|{{{{.State.StartedAt}}}}|{{{{.RestartCount}}}}|{{{{.State.ExitCode}}}}' \"$dcp_name\"\n",
        shell_quote(&name)
    );
    if let Some(check) = &spec.health_check {
        let (_, probe) = probe_script(&node.address, &spec, check);
        script.push_str(&format!(
            "dcp_probe() {{\n  {probe}\n}}\n\
             if [ \"$(docker inspect -f '{{{{.State.Status}}}}' \"$dcp_name\")\" = running ]; then\n\
             \x20 if last=$(dcp_probe 2>&1); then echo healthy; else\n\
             \x20   echo \"unhealthy|$(printf '%s\\n' \"$last\" | grep -v '^[[:space:]]*$' | tail -n 1)\"; fi\n\
             fi\n"
        ));
    }
    let (out, _) = look(remote, &node, &script, 64 << 10).await?;
    Ok(parse_status(name, &out))
}

fn parse_status(name: String, out: &str) -> ContainerStatus {
    let mut lines = out.lines();
    let mut status = ContainerStatus {
        name,
        state: "missing".to_owned(),
        image: None,
        started_at: None,
        restart_count: None,
        exit_code: None,
        health: None,
        health_detail: String::new(),
    };
    let Some(first) = lines.next().filter(|l| *l != "missing") else {
        return status;
    };
    let mut fields = first.splitn(5, '|');
    let mut next = || fields.next().map(str::trim).filter(|f| !f.is_empty());
    status.state = next().unwrap_or("unknown").to_owned();
    status.image = next().map(str::to_owned);
    // Docker's zero time: never started.
    status.started_at = next()
        .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
        .filter(|at| at.year() > 1);
    status.restart_count = next().and_then(|n| n.parse().ok());
    status.exit_code = next().and_then(|n| n.parse().ok());
    if let Some(health) = lines.next() {
        let (verdict, detail) = health.split_once('|').unwrap_or((health, ""));
        status.health = Some(verdict.trim().to_owned());
        status.health_detail = detail.trim().to_owned();
    }
    status
}

/// The last `tail` lines of the container's log, or those after `since`.
pub async fn log(
    store: &Store,
    remote: &Remote,
    pool_id: i64,
    node_id: i64,
    tail: Option<u32>,
    since: Option<&str>,
) -> Result<ContainerLog, Error> {
    let tail = tail.unwrap_or(TAIL_DEFAULT);
    if !(1..=TAIL_MAX).contains(&tail) {
        return Err(Invalid::new("tail", format!("must be between 1 and {TAIL_MAX}")).into());
    }
    let since = since
        .map(|at| {
            OffsetDateTime::parse(at, &Rfc3339).map_err(|_| {
                Invalid::new(
                    "since",
                    "must be an RFC 3339 time, e.g. 2026-12-06T03:04:05.123Z",
                )
            })
        })
        .transpose()?;
    let (node, name, _) = locate(store, pool_id, node_id).await?;
    // Docker's --since takes a Unix time with nanoseconds; lines at that
    // very time come again and are dropped below.
    let since_arg = since.map_or_else(String::new, |at| {
        format!(" --since {}.{:09}", at.unix_timestamp(), at.nanosecond())
    });
    let script = format!(
        "dcp_name={}\n\
         if ! docker inspect \"$dcp_name\" >/dev/null 2>&1; then echo missing; exit 0; fi\n\
         echo found\n\
         docker logs --timestamps --tail {tail}{since_arg} \"$dcp_name\" 2>&1\n",
        shell_quote(&name)
    );
    let (out, truncated) = look(remote, &node, &script, LOG_BYTES_MAX).await?;
    let mut rows = out.lines();
    if rows.next() != Some("found") {
        return Err(Error::Missing(format!(
            "node {} has no container {name}",
            node.address
        )));
    }
    let lines = rows
        .filter_map(|row| {
            let (at, text) = row.split_once(' ').unwrap_or((row, ""));
            let when = OffsetDateTime::parse(at, &Rfc3339).ok()?;
            since
                .is_none_or(|s| when > s)
                .then(|| (at.to_owned(), text.to_owned()))
        })
        .collect();
    Ok(ContainerLog {
        name,
        lines,
        truncated,
    })
}

/// `(what it asks, a shell function body)` for one check of `check` on a
/// container of `spec` on the node at `address`: exit status 0 is healthy.
/// The body finds the container as `$dcp_name`.
#[must_use]
pub fn probe_script(address: &str, spec: &ContainerSpec, check: &HealthCheck) -> (String, String) {
    let timeout = check.timeout_secs;
    match &check.probe {
        HealthProbe::Http { path, port } => {
            let published = spec
                .ports
                .iter()
                .find(|p| p.container_port == *port && p.protocol == PortProtocol::Tcp)
                .map_or(*port, |p| p.host_port.unwrap_or(p.container_port));
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.to_owned()
            };
            let target = format!("http://{host}:{published}{path}");
            let url = shell_quote(&target);
            (
                format!("GET {target}"),
                format!(
                    "if command -v curl >/dev/null 2>&1; then curl -fsS -o /dev/null --max-time {timeout} {url}\n\
                     \x20 elif command -v wget >/dev/null 2>&1; then timeout {timeout} wget -q -O /dev/null {url}\n\
                     \x20 elif command -v busybox >/dev/null 2>&1; then timeout {timeout} busybox wget -q -O /dev/null {url}\n\
                     \x20 else echo 'the node has no curl, wget or busybox for the HTTP check'; return 1; fi"
                ),
            )
        }
        HealthProbe::Exec { command } => {
            let quoted: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
            (
                format!("the command {}", command.join(" ")),
                format!(
                    "timeout {timeout} docker exec \"$dcp_name\" {}",
                    quoted.join(" ")
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_inspect_reads_as_a_status() {
        let s = parse_status(
            "dcp-web-3".into(),
            "running|shop/web:2|2026-12-06T03:04:05.123456789Z|2|0\nunhealthy|wget: server returned error: HTTP/1.0 404 Not Found\n",
        );
        assert_eq!(s.state, "running");
        assert_eq!(s.image.as_deref(), Some("shop/web:2"));
        assert_eq!(s.started_at.map(|t| t.second()), Some(5));
        assert_eq!(s.restart_count, Some(2));
        assert_eq!(s.exit_code, Some(0));
        assert_eq!(s.health.as_deref(), Some("unhealthy"));
        assert!(s.health_detail.contains("404"), "{}", s.health_detail);
        let never = parse_status("x".into(), "created|web:1|0001-01-01T00:00:00Z|0|0\n");
        assert_eq!(never.started_at, None);
        assert_eq!(never.health, None);
        assert_eq!(parse_status("x".into(), "missing\n").state, "missing");
    }
}
