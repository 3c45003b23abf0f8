//! Runs an execution: every host under the fork limit, each step a
//! sandboxed plugin call whose `ssh` import reaches only that host.

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use dcp_api_types::{ExecutionEvent, HostState};
use time::OffsetDateTime;
use tokio::{
    sync::{Semaphore, broadcast},
    task::JoinSet,
    time::{Instant, timeout_at},
};
use tokio_util::sync::CancellationToken;

use super::{Remote, SHELL_PLUGIN, Step, ssh};
use crate::{
    lock,
    plugins::{
        ErrorKind, ExecOutput, Failure, Grants, PluginError, RemoteCommand as _, SshChannel,
        WasmPlugin,
    },
    store::{HostReport, overall_state},
};

/// How often a runner says its executions are alive.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Executions whose runner was silent this long are ended as abandoned.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);
/// How long a cancelled or timed-out plugin call has to wind down (its
/// kill takes the transport's grace) before it is dropped.
const WIND_DOWN: Duration = Duration::from_secs(5);
/// How often a running host's new output is first stored and sent.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Kept output after which a host's flushes slow down by one more
/// `FLUSH_EVERY`: each store rewrites the host's row, output included.
const FLUSH_SLOWER_PER: usize = 64 << 10;
/// The slowest flush is this many `FLUSH_EVERY`s apart.
const FLUSH_SLOWEST: u32 = 20;

/// One execution to run.
pub(super) struct Run {
    pub(super) id: i64,
    pub(super) steps: Vec<Step>,
    pub(super) targets: Vec<ssh::Target>,
    pub(super) forks: u32,
    pub(super) timeout: Duration,
    pub(super) cancel: CancellationToken,
    pub(super) events: broadcast::Sender<ExecutionEvent>,
    /// Output bytes the execution may still keep, all hosts together.
    pub(super) output_budget: Arc<AtomicUsize>,
}

/// Runs `run` to its end and records everything on the way.
pub(super) async fn run(remote: Arc<Remote>, run: Run) {
    let id = run.id;
    if let Err(e) = remote
        .store
        .set_execution_state(id, dcp_api_types::ExecutionState::Running)
        .await
    {
        tracing::error!(execution = id, "recording the start failed: {e}");
    }
    remote.announce_execution(id, &run.events).await;
    let forks = Arc::new(Semaphore::new(usize::try_from(run.forks).unwrap_or(1)));
    let steps = Arc::new(run.steps);
    let mut hosts = JoinSet::new();
    for (index, target) in run.targets.into_iter().enumerate() {
        let host = Host {
            remote: remote.clone(),
            execution: id,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            target,
            steps: steps.clone(),
            timeout: run.timeout,
            cancel: run.cancel.clone(),
            events: run.events.clone(),
            output_budget: run.output_budget.clone(),
        };
        let forks = forks.clone();
        hosts.spawn(async move {
            let permit = tokio::select! {
                permit = forks.acquire_owned() => permit.ok(),
                () = host.cancel.cancelled() => None,
            };
            let report = match permit {
                Some(_permit) => host.run().await,
                None => HostReport {
                    state: HostState::Cancelled,
                    message: "cancelled before it started".to_owned(),
                    finished_at: Some(OffsetDateTime::now_utc()),
                    ..HostReport::pending()
                },
            };
            host.record(&report).await;
        });
    }
    while hosts.join_next().await.is_some() {}
    let counts = match remote.store.execution(id).await {
        Ok(execution) => execution.counts,
        Err(e) => {
            // No longer marked alive, the execution is ended by the
            // abandoned-execution sweep once the store answers again.
            tracing::error!(execution = id, "reading the result failed: {e}");
            remote.live_map().remove(&id);
            return;
        }
    };
    let state = overall_state(&counts, run.cancel.is_cancelled());
    if let Err(e) = remote.store.set_execution_state(id, state).await {
        tracing::error!(execution = id, "recording the end failed: {e}");
    }
    remote.live_map().remove(&id);
    remote.announce_execution(id, &run.events).await;
    tracing::info!(
        execution = id,
        state = state.as_str(),
        ok = counts.ok,
        total = counts.total,
        "execution ended"
    );
}

impl Remote {
    async fn announce_execution(&self, id: i64, events: &broadcast::Sender<ExecutionEvent>) {
        if let Ok(execution) = self.store.execution(id).await {
            let _ = events.send(ExecutionEvent::Execution(super::summary_to_api(execution)));
        }
    }
}

/// One host of an execution.
struct Host {
    remote: Arc<Remote>,
    execution: i64,
    index: u32,
    target: ssh::Target,
    steps: Arc<Vec<Step>>,
    timeout: Duration,
    cancel: CancellationToken,
    events: broadcast::Sender<ExecutionEvent>,
    output_budget: Arc<AtomicUsize>,
}

impl Host {
    /// Runs every step in order, stopping at the first that fails.
    async fn run(&self) -> HostReport {
        let started = OffsetDateTime::now_utc();
        let deadline = Instant::now() + self.timeout;
        let mut report = HostReport {
            state: HostState::Running,
            started_at: Some(started),
            ..HostReport::pending()
        };
        self.record(&report).await;
        let channel = Arc::new(Channel::standalone(
            self.remote.transport.clone(),
            self.target.clone(),
            target_id(self.index),
            deadline,
            self.cancel.clone(),
        ));
        for (n, step) in self.steps.iter().enumerate() {
            // The built-in shell module's result is exactly what its one
            // command printed, so that is shown while it runs, and kept
            // when the command is cancelled or times out.
            let live = step.plugin == SHELL_PLUGIN;
            *lock(&channel.live) = live.then(LiveOutput::default);
            let result = self.step_live(step, &channel, deadline, &mut report).await;
            self.take_live(&channel, &mut report, true);
            let (state, message) = classify(&channel, &self.cancel, &result, self.timeout);
            let message = if state == HostState::Cancelled && self.remote.stopping() {
                "cancelled: DCP shut down; its processes were killed".to_owned()
            } else {
                message
            };
            if let Ok(out) = &result {
                if !live {
                    report.truncated |= keep(&self.output_budget, &mut report.stdout, &out.stdout);
                    report.truncated |= keep(&self.output_budget, &mut report.stderr, &out.stderr);
                }
                report.exit_code = Some(out.exit_code);
            }
            report.truncated |= channel.truncated();
            if state != HostState::Ok {
                report.state = state;
                report.message = if self.steps.len() > 1 {
                    format!("step {} ({}): {message}", n + 1, step.name)
                } else {
                    message
                };
                report.finished_at = Some(OffsetDateTime::now_utc());
                return report;
            }
            if n + 1 < self.steps.len() {
                // Watchers see each step's output as it ends.
                self.record(&report).await;
            }
        }
        report.state = HostState::Ok;
        report.finished_at = Some(OffsetDateTime::now_utc());
        report
    }

    /// [`Host::step`], storing and sending the output the host prints
    /// while it runs.
    async fn step_live(
        &self,
        step: &Step,
        channel: &Arc<Channel>,
        deadline: Instant,
        report: &mut HostReport,
    ) -> Result<crate::plugins::Outcome, Failure> {
        let call = self.step(step, channel, deadline);
        tokio::pin!(call);
        loop {
            let kept = report.stdout.len() + report.stderr.len();
            let slower = u32::try_from(kept / FLUSH_SLOWER_PER).unwrap_or(u32::MAX);
            let every = FLUSH_EVERY * slower.saturating_add(1).min(FLUSH_SLOWEST);
            tokio::select! {
                result = &mut call => return result,
                () = tokio::time::sleep(every) => {
                    if self.take_live(channel, report, false) {
                        self.record(report).await;
                    }
                }
            }
        }
    }

    /// Moves the output the channel received into `report`; unless `last`,
    /// a character still arriving stays behind. Says whether any moved.
    fn take_live(&self, channel: &Channel, report: &mut HostReport, last: bool) -> bool {
        let mut live = lock(&channel.live);
        let Some(live) = live.as_mut() else {
            return false;
        };
        let mut moved = false;
        for (buffer, kept) in [
            (&mut live.stdout, &mut report.stdout),
            (&mut live.stderr, &mut report.stderr),
        ] {
            let end = if last {
                buffer.len()
            } else {
                whole_characters(buffer)
            };
            if end > 0 {
                let text = String::from_utf8_lossy(&buffer[..end]);
                report.truncated |= keep(&self.output_budget, kept, &text);
                buffer.drain(..end);
                moved = true;
            }
        }
        moved
    }

    /// One plugin call, bounded by the host's deadline and the cancel.
    async fn step(
        &self,
        step: &Step,
        channel: &Arc<Channel>,
        deadline: Instant,
    ) -> Result<crate::plugins::Outcome, Failure> {
        let Some(active) = self.remote.plugins.active(&step.plugin) else {
            return Err(Failure::Host(format!(
                "plugin {} is no longer active",
                step.plugin
            )));
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut args = step.args.clone();
        if step.plugin == SHELL_PLUGIN {
            args["timeout_secs"] = remaining.as_secs().max(1).into();
        }
        let mut limits = active.limits;
        // The call may last as long as the host may; the channel ends its
        // commands at the deadline, this margin lets it report that.
        limits.timeout = limits.timeout.max(remaining + WIND_DOWN);
        let plugin = WasmPlugin::new(
            active.plugin.clone(),
            Grants {
                targets: vec![channel.id.clone()],
                ssh: Some(channel.clone()),
                limits,
                ..Grants::default()
            },
        );
        let args = args.to_string();
        let call = async {
            plugin
                .run(&step.module, &channel.id, &args)
                .await
                .map_err(|e| e.failure)
        };
        tokio::pin!(call);
        tokio::select! {
            result = timeout_at(deadline + WIND_DOWN, &mut call) => {
                result.unwrap_or(Err(Failure::Timeout(self.timeout)))
            }
            () = self.cancel.cancelled() => {
                // The channel kills the remote command; give it the time to.
                timeout_at(Instant::now() + WIND_DOWN, &mut call)
                    .await
                    .unwrap_or(Err(Failure::Host("cancelled".to_owned())))
            }
        }
    }

    /// Stores the host's report and tells the listeners.
    async fn record(&self, report: &HostReport) {
        if let Err(e) = self
            .remote
            .store
            .report_host(self.execution, self.index, report)
            .await
        {
            tracing::error!(
                execution = self.execution,
                host = self.index,
                "recording a host failed: {e}"
            );
        }
        let record = crate::store::HostRecord {
            position: self.index,
            address: self.target.endpoint.address.clone(),
            port: self.target.endpoint.port,
            user: self.target.endpoint.user.clone(),
            stdout_bytes: report.stdout.len() as u64,
            stderr_bytes: report.stderr.len() as u64,
            report: report.clone(),
        };
        let _ = self
            .events
            .send(ExecutionEvent::Host(super::host_to_api(record)));
    }
}

/// Appends to `kept` as much of `new` as the execution's output budget
/// still allows (whole characters only); returns whether some was cut.
fn keep(budget: &AtomicUsize, kept: &mut String, new: &str) -> bool {
    let mut granted = 0;
    let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
        let mut take = left.min(new.len());
        while !new.is_char_boundary(take) {
            take -= 1;
        }
        granted = take;
        Some(left - take)
    });
    kept.push_str(&new[..granted]);
    granted < new.len()
}

/// How much of `bytes` ends on a character boundary: a UTF-8 sequence cut
/// short at the end waits for its remaining bytes, so converting piece by
/// piece gives what converting the whole would.
fn whole_characters(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(4) {
        let byte = bytes[len - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: its lead is further back
        }
        let needs = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if back < needs { len - back } else { len };
    }
    len
}

/// The id a plugin call knows its host by.
fn target_id(index: u32) -> String {
    format!("host-{index}")
}

/// What a step's result means for the host. The channel's own record of
/// what went wrong on the wire wins over what the plugin made of it, so a
/// module cannot turn an unreachable host into a failed command or back.
fn classify(
    channel: &Channel,
    cancel: &CancellationToken,
    result: &Result<crate::plugins::Outcome, Failure>,
    timeout: Duration,
) -> (HostState, String) {
    if cancel.is_cancelled() {
        return (
            HostState::Cancelled,
            "cancelled by a user; its processes were killed".to_owned(),
        );
    }
    if let Some(failure) = channel.failure() {
        let state = match failure {
            Wire::Timeout => HostState::TimedOut,
            Wire::Unreachable(_) => HostState::Unreachable,
            Wire::Other(_) => HostState::Failed,
        };
        let message = match failure {
            Wire::Timeout => format!(
                "timed out after {} s; its processes were killed",
                timeout.as_secs()
            ),
            Wire::Unreachable(m) | Wire::Other(m) => m,
        };
        return (state, message);
    }
    match result {
        Ok(outcome) if outcome.exit_code == 0 => (HostState::Ok, String::new()),
        Ok(outcome) if outcome.exit_code < 0 => (
            HostState::Failed,
            "the command was killed by a signal".to_owned(),
        ),
        Ok(outcome) => (
            HostState::Failed,
            format!("exited with status {}", outcome.exit_code),
        ),
        Err(Failure::Timeout(_)) => (
            HostState::TimedOut,
            format!("timed out after {} s", timeout.as_secs()),
        ),
        Err(failure) => (HostState::Failed, failure.to_string()),
    }
}

/// What went wrong on the wire, as the channel saw it.
#[derive(Debug, Clone)]
enum Wire {
    Timeout,
    Unreachable(String),
    Other(String),
}

/// The `ssh` import of one host's plugin calls: only that host, only
/// until its deadline, killed on cancel.
#[derive(Debug)]
pub(super) struct Channel {
    transport: Arc<ssh::Transport>,
    target: ssh::Target,
    id: String,
    deadline: Instant,
    cancel: CancellationToken,
    failure: Mutex<Option<Wire>>,
    truncated: AtomicBool,
    /// What the running step's commands printed and the report does not
    /// hold yet; `None` when the step's output is its plugin's result.
    live: Mutex<Option<LiveOutput>>,
}

/// Output received and not yet in the host's report.
#[derive(Debug, Default)]
struct LiveOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Channel {
    /// A channel for plugin calls outside executions (a balancer push):
    /// only `target`, known to the plugin as `id`.
    pub(super) fn standalone(
        transport: Arc<ssh::Transport>,
        target: ssh::Target,
        id: String,
        deadline: Instant,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            transport,
            target,
            id,
            deadline,
            cancel,
            failure: Mutex::new(None),
            truncated: AtomicBool::new(false),
            live: Mutex::new(None),
        }
    }

    fn failure(&self) -> Option<Wire> {
        lock(&self.failure).clone()
    }

    fn truncated(&self) -> bool {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Keeps the first wire failure and turns it into the plugin's error.
    fn fail(&self, err: &ssh::Error) -> PluginError {
        let (wire, kind) = match &err {
            ssh::Error::Timeout(_) => (Wire::Timeout, ErrorKind::Timeout),
            ssh::Error::Unreachable { .. } => {
                (Wire::Unreachable(err.to_string()), ErrorKind::Unavailable)
            }
            ssh::Error::AuthFailed { .. } | ssh::Error::HostKeyChanged { .. } => {
                (Wire::Other(err.to_string()), ErrorKind::Unauthorized)
            }
            ssh::Error::NoCredential(_) => (Wire::Other(err.to_string()), ErrorKind::InvalidInput),
            _ => (Wire::Other(err.to_string()), ErrorKind::Unavailable),
        };
        let mut failure = lock(&self.failure);
        if failure.is_none() && !matches!(err, ssh::Error::Cancelled) {
            *failure = Some(wire);
        }
        PluginError {
            kind,
            message: err.to_string(),
            provider_code: None,
            request_id: None,
            retryable: false,
        }
    }

    fn check(&self, target: &str) -> Result<Duration, PluginError> {
        if target != self.id {
            return Err(self.fail(&ssh::Error::Session {
                host: target.to_owned(),
                reason: "not a target of this call".to_owned(),
            }));
        }
        Ok(self.deadline.saturating_duration_since(Instant::now()))
    }
}

#[async_trait]
impl SshChannel for Channel {
    async fn exec(
        &self,
        target: &str,
        command: &str,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecOutput, PluginError> {
        let remaining = self.check(target)?;
        let watch = |stream: ssh::Stream, data: &[u8]| {
            if let Some(live) = lock(&self.live).as_mut() {
                match stream {
                    ssh::Stream::Stdout => live.stdout.extend_from_slice(data),
                    ssh::Stream::Stderr => live.stderr.extend_from_slice(data),
                }
            }
        };
        let out = self
            .transport
            .exec_watched(
                &self.target,
                command,
                stdin,
                timeout.min(remaining),
                max_output,
                &self.cancel,
                &watch,
            )
            .await
            .map_err(|e| self.fail(&e))?;
        self.truncated.fetch_or(out.truncated, Ordering::Relaxed);
        Ok(out)
    }

    async fn put_file(
        &self,
        target: &str,
        path: &str,
        content: Vec<u8>,
        mode: u32,
    ) -> Result<(), PluginError> {
        let remaining = self.check(target)?;
        self.transport
            .put_file(&self.target, path, content, mode, remaining, &self.cancel)
            .await
            .map_err(|e| self.fail(&e))
    }
}

/// Marks the executions of `remote` alive, and ends executions whose
/// process stopped marking (it died), until `remote` is dropped.
pub(super) async fn keep_alive(remote: Weak<Remote>) {
    loop {
        {
            let Some(remote) = remote.upgrade() else {
                return;
            };
            let live: Vec<i64> = remote.live_map().keys().copied().collect();
            if let Err(e) = remote.store.heartbeat_executions(&live).await {
                tracing::warn!("marking executions alive failed: {e}");
            }
            let before = OffsetDateTime::now_utc() - ABANDONED_AFTER;
            match remote
                .store
                .end_abandoned_executions(
                    before,
                    "DCP stopped while this host ran; what happened on the host is unknown",
                )
                .await
            {
                Ok(ended) if !ended.is_empty() => {
                    tracing::warn!(?ended, "ended executions abandoned by a stopped DCP");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("ending abandoned executions failed: {e}"),
            }
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_converted_piece_by_piece_reads_as_the_whole() {
        let whole = "héllo → wörld 🚀 done\n".as_bytes().to_vec();
        let mut invalid = whole.clone();
        invalid.insert(3, 0xFF);
        invalid.extend_from_slice(&[0xE2, 0x82]);
        for bytes in [whole, invalid] {
            for size in 1..=5 {
                let (mut text, mut pending) = (String::new(), Vec::new());
                for piece in bytes.chunks(size) {
                    pending.extend_from_slice(piece);
                    let end = whole_characters(&pending);
                    text.push_str(&String::from_utf8_lossy(&pending[..end]));
                    pending.drain(..end);
                }
                text.push_str(&String::from_utf8_lossy(&pending));
                assert_eq!(text, String::from_utf8_lossy(&bytes), "pieces of {size}");
            }
        }
    }
}
