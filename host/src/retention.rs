//! Retention: old history is deleted so the database does not grow without
//! bound. Executions (with every host's output) and task step logs that
//! ended longer ago than the configured age are removed by a periodic
//! sweep. Every replica may sweep: the deletes only touch rows that ended
//! before a cutoff, so running them twice or at once is harmless, and
//! nothing still running ever matches.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{Config, store::Store};

/// How often the sweep runs.
const EVERY: Duration = Duration::from_secs(3600);

/// How long history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Finished executions older than this are deleted; `None` keeps them.
    pub executions: Option<Duration>,
    /// Step logs of finished tasks older than this are cleared; `None` keeps them.
    pub task_logs: Option<Duration>,
}

impl Settings {
    /// The retention the configuration asks for (0 days keeps forever).
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let days = |d: u32| (d > 0).then(|| Duration::from_secs(u64::from(d) * 86_400));
        Self {
            executions: days(config.execution_retention_days),
            task_logs: days(config.task_log_retention_days),
        }
    }
}

/// Deletes what `settings` no longer keeps as of `now`; returns how many
/// executions were deleted and how many tasks' logs were cleared.
pub async fn sweep_once(
    store: &Store,
    settings: Settings,
    now: OffsetDateTime,
) -> Result<(u64, u64), crate::store::Error> {
    let executions = match settings.executions {
        Some(age) => store.delete_executions_ended_before(now - age).await?,
        None => 0,
    };
    let tasks = match settings.task_logs {
        Some(age) => store.clear_task_logs_ended_before(now - age).await?,
        None => 0,
    };
    Ok((executions, tasks))
}

/// Sweeps every [`EVERY`] until `shutdown`.
pub(crate) async fn sweep(store: Store, settings: Settings, shutdown: CancellationToken) {
    if settings.executions.is_none() && settings.task_logs.is_none() {
        return;
    }
    loop {
        match sweep_once(&store, settings, OffsetDateTime::now_utc()).await {
            Ok((0, 0)) => {}
            Ok((executions, tasks)) => {
                tracing::info!(executions, tasks, "deleted history past its retention");
            }
            Err(e) => tracing::warn!("deleting old history failed: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
